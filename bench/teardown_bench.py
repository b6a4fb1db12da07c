"""Teardown floor: where a fabric's teardown time goes, measured on a private Open vSwitch.

    .venv/bin/python -m bench.teardown_bench [--ports 40] [--rounds 3] [--record]

Needs root and the Open vSwitch binaries; never touches the shared ovs-vswitchd: it starts its own
(`bench.private_ovs`), then measures, for one bridge of --ports veth ports:

1. the kernel floor: closing one bound AF_PACKET socket, which is what ovs-vswitchd does for every
   port it removes (netdev-linux receives on a packet socket). packet_release() waits for an RCU
   grace period (synchronize_net), so each close costs one grace period, one after another;
2. deleting the bridge in one OVSDB transaction (`del-br`: the ports go with it);
3. deleting every port in one transaction, then the bridge;
4. deleting the veths first (so the datapath sees its ports vanish), then the bridge;

each with the kernel's normal RCU grace periods and with expedited ones (`/sys/kernel/rcu_expedited`,
what PiCloud's teardown sets for its length: topology.effects.rcu), interleaved. It compares each
with ports x the floor, to show whether any order escapes the per-port cost. The
load average is printed with the figures (other runs share the machine). --record writes the
"## Teardown floor" section of bench/RESULTS.md (only `make bench` should pass it).
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.private_ovs import NS, PrivateOvs, arguments, loadavg, refuse_without_root, sh, utc_stamp
from bench.run_all import publish
from topology.effects import netns, rcu

SECTION = "## Teardown floor"


def packet_close_ms(iface: str, samples: int = 30) -> float:
    """Median time to close one AF_PACKET socket bound to iface (run inside NS by the caller)."""
    times = []
    for _ in range(samples):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        sock.bind((iface, 0))
        t0 = time.perf_counter()
        sock.close()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def veth_lines(ports: int) -> list[str]:
    return [line for i in range(ports) for line in (f"link add tdb{i}a type veth peer name tdb{i}b",
                                                     f"link set tdb{i}a up", f"link set tdb{i}b up")]


def build(ovs: PrivateOvs, ports: int) -> None:
    sh("ip", "-n", NS, "-batch", "-", input="\n".join(veth_lines(ports)) + "\n")
    args = ["--", "add-br", "tdbbr", "--", "set", "Bridge", "tdbbr", "datapath_type=netdev",
            "fail_mode=secure"]
    for i in range(ports):
        args += ["--", "add-port", "tdbbr", f"tdb{i}a"]
    ovs.vsctl(*args)


def delete_veths(ports: int) -> None:
    sh("ip", "-n", NS, "-force", "-batch", "-", input="".join(f"link del tdb{i}a\n" for i in range(ports)),
       check=False)


def one_round(ovs: PrivateOvs, ports: int, order: str) -> float:
    build(ovs, ports)
    time.sleep(0.5)  # let ovs-vswitchd settle after the build
    t0 = time.monotonic()
    if order == "del-br":
        ovs.vsctl("del-br", "tdbbr")
    elif order == "ports then bridge":
        args: list[str] = []
        for i in range(ports):
            args += ["--", "del-port", "tdbbr", f"tdb{i}a"]
        ovs.vsctl(*args, "--", "del-br", "tdbbr")
    elif order == "veths then del-br":
        delete_veths(ports)
        ovs.vsctl("del-br", "tdbbr")
    seconds = time.monotonic() - t0
    delete_veths(ports)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, SECTION, quick="one round")
    ap.add_argument("--ports", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if refuse_without_root("teardown_bench"):
        return 2
    rounds = 1 if args.quick else args.rounds
    load_before = loadavg()
    orders = ["del-br", "ports then bridge", "veths then del-br"]
    modes = ["normal", "expedited"]
    results: dict[tuple[str, str], list[float]] = {(o, m): [] for o in orders for m in modes}
    floor: dict[str, float] = {}
    saved = Path(tempfile.mkdtemp(prefix="tdb-rcu-")) / rcu.SAVED_NAME
    if rcu.KNOB.exists() and rcu.KNOB.read_text().strip() != "0":
        print(f"teardown_bench: {rcu.KNOB} is already on; the 'normal' column is expedited too", file=sys.stderr)

    def grace(mode: str) -> contextlib.AbstractContextManager:
        return rcu.expedited(saved) if mode == "expedited" else contextlib.nullcontext()

    with PrivateOvs() as ovs:
        sh("ip", "-n", NS, "link", "add", "tdbq0", "type", "veth", "peer", "name", "tdbq1")
        sh("ip", "-n", NS, "link", "set", "tdbq0", "up")
        for mode in modes:
            with netns.entered(NS), grace(mode):
                floor[mode] = packet_close_ms("tdbq0")
        for _ in range(rounds):
            for order in orders:  # interleaved, so load drifts hit every order and mode alike
                for mode in modes:
                    with grace(mode):
                        results[(order, mode)].append(one_round(ovs, args.ports, order))
    load_after = loadavg()
    lines = [
        f"Measured {utc_stamp()} by `python -m bench.teardown_bench` on a private ovs-vswitchd "
        f"({sh('ovs-vswitchd', '--version').splitlines()[0].split()[-1]}, userspace datapath, own namespace), "
        f"one bridge of {args.ports} veth ports, median of {rounds} round(s); load average {load_before} "
        f"before, {load_after} after.",
        "",
        f"Kernel floor: closing one bound AF_PACKET socket takes **{floor['normal']:.2f} ms** (median of 30): "
        "packet_release() waits for an RCU grace period, and ovs-vswitchd closes one such socket per "
        f"port it removes, one after another, so {args.ports} ports cost at least "
        f"{args.ports * floor['normal'] / 1000:.2f} s whatever the order. With expedited grace periods the "
        f"same close takes **{floor['expedited'] * 1000:.0f} us**.",
        "",
        "| order | seconds, normal RCU | ms per port | floor share | seconds, expedited RCU | ms per port |",
        "|---|---|---|---|---|---|",
    ]
    for order in orders:
        med = statistics.median(results[(order, "normal")])
        fast = statistics.median(results[(order, "expedited")])
        lines.append(f"| {order} | {med:.2f} | {med * 1000 / args.ports:.1f} | "
                     f"{min(1.0, args.ports * floor['normal'] / 1000 / med):.0%} | {fast:.2f} | "
                     f"{fast * 1000 / args.ports:.1f} |")
    lines += ["", "With normal grace periods no order escapes the per-port cost (the datapath still removes "
              "each port and closes its socket), and removing the veths first adds the kernel's own per-device "
              "unregistration before the same OVS work. PiCloud's teardown runs the OVS transaction "
              "concurrently with the kernel's share (namespaces, then one `link del group N` for the run's "
              "veths), with expedited grace periods for its length (topology.effects.rcu), and puts the "
              "kernel's setting back after."]
    return publish(SECTION, lines, args.record)


if __name__ == "__main__":
    sys.exit(main())
