"""TCP through bridges: where three bridges lose against one, on a private Open vSwitch.

    .venv/bin/python -m bench.tcp_paths_bench [--seconds 4] [--rounds 2] [--record]

Needs root, iperf3 and the Open vSwitch binaries; never touches the shared ovs-vswitchd (it starts
its own, `bench.private_ovs`, in its own network namespace). Two hosts (network
namespaces) exchange one iperf3 TCP stream across, interleaved per round:

- 1 bridge;
- 3 bridges joined by veth pairs (what PiCloud and Mininet build for a switch-to-switch link);
- the same with MTU 9000 on every link and host;
- 3 bridges joined by OVS patch ports (no kernel device between bridges).

All bridges are userspace-datapath (netdev) standalone bridges with userspace TSO on. Why the
comparison: in the userspace datapath every veth between two bridges is one more trip out of
ovs-vswitchd through an AF_PACKET socket and back in through another, all on the one main thread
that polls non-PMD ports; a patch port is resolved inside a single datapath pass. MTU 9000 is
measured because data centres use it; with userspace TSO the segments crossing veths are already
up to 64 KiB, so little is expected from it. --record writes the "## TCP paths" section of
bench/RESULTS.md (only `make bench` should pass it).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from bench.private_ovs import NS, PrivateOvs, arguments, loadavg, refuse_without_root, sh, utc_stamp
from bench.run_all import publish

SECTION = "## TCP paths"
HOSTS = ("tdbh1", "tdbh2")
PATHS = ["1 bridge", "3 bridges, veth links", "3 bridges, veth links, MTU 9000", "3 bridges, patch ports"]
PORT = 5402


def hosts_up() -> None:
    for i, h in enumerate(HOSTS, start=1):
        sh("ip", "netns", "add", h)
        sh("ip", "-n", NS, "link", "add", f"{h}e", "type", "veth", "peer", "name", "eth0", "netns", h)
        sh("ip", "-n", h, "-batch", "-", input=f"addr add 10.77.0.{i}/24 dev eth0\nlink set eth0 up\nlink set lo up\n")
        sh("ip", "-n", NS, "link", "set", f"{h}e", "up")


def hosts_down() -> None:
    for h in HOSTS:
        subprocess.run(["ip", "netns", "del", h], capture_output=True)


def set_mtu(mtu: int) -> None:
    lines = [f"link set {n} mtu {mtu}" for n in ("tdbh1e", "tdbh2e", "tdbl1a", "tdbl1b", "tdbl2a", "tdbl2b")]
    sh("ip", "-n", NS, "-force", "-batch", "-", input="\n".join(lines) + "\n", check=False)
    for h in HOSTS:
        sh("ip", "-n", h, "link", "set", "eth0", "mtu", str(mtu))


def build(ovs: PrivateOvs, path: str) -> None:
    def br(name: str) -> list[str]:
        return ["--", "add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev"]

    if path == "1 bridge":
        ovs.vsctl(*br("tdbb1"), "--", "add-port", "tdbb1", "tdbh1e", "--", "add-port", "tdbb1", "tdbh2e")
        return
    args = br("tdbb1") + br("tdbb2") + br("tdbb3") + ["--", "add-port", "tdbb1", "tdbh1e",
                                                      "--", "add-port", "tdbb3", "tdbh2e"]
    if path.endswith("patch ports"):
        for a, b, pa, pb in (("tdbb1", "tdbb2", "tdbp12", "tdbp21"), ("tdbb2", "tdbb3", "tdbp23", "tdbp32")):
            args += ["--", "add-port", a, pa, "--", "set", "Interface", pa, "type=patch", f"options:peer={pb}",
                     "--", "add-port", b, pb, "--", "set", "Interface", pb, "type=patch", f"options:peer={pa}"]
    else:
        lines = [f"link add tdbl{i}a type veth peer name tdbl{i}b" for i in (1, 2)]
        lines += [f"link set {n} up" for n in ("tdbl1a", "tdbl1b", "tdbl2a", "tdbl2b")]
        sh("ip", "-n", NS, "-batch", "-", input="\n".join(lines) + "\n")
        if "MTU 9000" in path:
            set_mtu(9000)
        args += ["--", "add-port", "tdbb1", "tdbl1a", "--", "add-port", "tdbb2", "tdbl1b",
                 "--", "add-port", "tdbb2", "tdbl2a", "--", "add-port", "tdbb3", "tdbl2b"]
    ovs.vsctl(*args)


def clear(ovs: PrivateOvs) -> None:
    ovs.vsctl(*[x for b in ("tdbb1", "tdbb2", "tdbb3") for x in ("--", "--if-exists", "del-br", b)])
    sh("ip", "-n", NS, "-force", "-batch", "-", input="link del tdbl1a\nlink del tdbl2a\n", check=False)
    set_mtu(1500)


def iperf(seconds: int) -> float:
    out = sh("ip", "netns", "exec", HOSTS[0], "iperf3", "-c", "10.77.0.2", "-p", str(PORT), "-t", str(seconds),
             "-O", "1", "-J")
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, SECTION, quick="one round of 2 s")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    if refuse_without_root("tcp_paths_bench"):
        return 2
    rounds, seconds = (1, 2) if args.quick else (args.rounds, args.seconds)
    load_before = loadavg()
    results: dict[str, list[float]] = {p: [] for p in PATHS}
    server = None
    with PrivateOvs() as ovs:
        try:
            hosts_up()
            server = subprocess.Popen(["ip", "netns", "exec", HOSTS[1], "iperf3", "-s", "-p", str(PORT)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            for _ in range(rounds):
                for path in PATHS:  # interleaved, so load drifts hit every path alike
                    build(ovs, path)
                    time.sleep(1.0)  # MAC learning and the first upcalls settle
                    try:
                        results[path].append(iperf(seconds))
                    finally:
                        clear(ovs)
                    print(f"  {path}: {results[path][-1] / 1e9:.2f} Gbit/s", file=sys.stderr, flush=True)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
            hosts_down()
    load_after = loadavg()
    one = statistics.median(results["1 bridge"])
    lines = [f"Measured {utc_stamp()} by `python -m bench.tcp_paths_bench` on a private ovs-vswitchd "
             f"(userspace datapath, userspace TSO, own namespace): one iperf3 TCP stream, {seconds} s, median of "
             f"{rounds} interleaved round(s); load average {load_before} before, {load_after} after.", "",
             "| path | goodput | vs 1 bridge | rounds |", "|---|---|---|---|"]
    for path in PATHS:
        med = statistics.median(results[path])
        rounds_text = ", ".join(f"{v / 1e9:.2f}" for v in results[path])
        lines.append(f"| {path} | {med / 1e9:.2f} Gbit/s | {med / one:.2f}x | {rounds_text} |")
    lines += ["", "Why a veth between bridges can cost: it is one more AF_PACKET send and receive on ovs-vswitchd's "
              "single main thread (the userspace datapath polls non-PMD ports there, so handler/revalidator "
              "threads and pmd-cpu-mask do not touch this path), while a patch port is resolved inside one "
              "datapath pass. With userspace TSO the veths already carry segments of up to 64 KiB, so little is "
              "expected from MTU 9000. Read the rounds column before the medians: on a shared 2-core machine "
              "single rounds of the same path vary several-fold."]
    return publish(SECTION, lines, args.record)


if __name__ == "__main__":
    sys.exit(main())
