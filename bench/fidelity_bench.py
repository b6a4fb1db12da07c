"""Fidelity benchmark: does the verdict tell a run the host kept up with from one it did not, and
how accurate is link shaping?

    .venv/bin/python -m bench.fidelity_bench [--quick] [--runs N] [--seconds S] [--rates 1,10,100,1000]

1. Shaping accuracy: linear:2 without a controller, the s1-s2 link shaped to each rate in turn
   (traffic crosses it through OVS's userspace datapath with TSO, so the qdisc sees GSO segments);
   one iperf3 TCP flow, the first second omitted; goodput against the configured rate (target:
   within 10 %; TCP goodput is at most 1448/1514 = 0.956 of a TBF's frame rate), with the drops
   counted where they happen: in the link's TBFs (the modelled queue) or in ovs-vswitchd's receive
   sockets (the host's; see topology.effects.ovs_sockets).
2. Verdicts: on picloud:2,4 (Model B Pis, 100 Mbit/s uplinks; `--fabric-links` as `picloud up`'s,
   veth by default), N web-search runs at 30 % load
   interleaved with N runs under a CPU hog (one busy loop per core in the root namespace). Targets
   (issue 13): degraded in at least 19 of 20 hog runs, faithful in at least 19 of 20 quiet runs, no
   flow with a slowdown below 0.95 in a faithful run. Then --light-runs of each at --light-load (15 %),
   on the same fabric: on a host whose forwarding thread is near a core at 30 % (2 cores, userspace
   datapath: ovs-vswitchd's main thread carries every packet of the model, about 80,000 datapath
   passes per second at 30 %), the rows show the verdict telling the hog apart where the host can
   carry the model. Each row gives the busiest ovs-vswitchd thread, the number the ovs_cpu check reads.

Prints Markdown (`--record`, which make bench passes, writes it as the "## Fidelity" section of
RESULTS.md), each table with the load average at the time: on a shared machine "quiet" means
"without our hog", not idle.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.private_ovs import utc_stamp  # noqa: E402
from bench.run_all import publish  # noqa: E402
from picloud.testbed import Testbed  # noqa: E402
from topology.builders import build  # noqa: E402
from topology.fabric_plan import LINK_MODES  # noqa: E402

SECTION = "## Fidelity"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _iperf_ns(ns_server: str, ns_client: str, address: str, seconds: float) -> tuple[float, int]:
    """One iperf3 flow from one namespace to an address in another, bounded: five attempts with a
    3 s connect timeout (a starved datapath fails in seconds instead of minutes)."""
    from topology.effects import netns

    server = subprocess.Popen(netns.exec_argv(ns_server, ["iperf3", "-s", "-B", address, "-p", "5212"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        for _ in range(5):
            out = subprocess.run(netns.exec_argv(ns_client, ["iperf3", "-c", address, "-p", "5212", "-t",
                                                              f"{seconds:g}", "-O", "1", "-J",
                                                              "--connect-timeout", "3000"]),
                                 capture_output=True, text=True, timeout=seconds + 30).stdout
            data = json.loads(out[out.find("{"):]) if "{" in out else {}
            if "error" not in data and "end" in data:
                end = data["end"]
                return end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"].get("retransmits", 0)
            time.sleep(0.5)
        raise RuntimeError(f"iperf3 failed: {(data or {}).get('error', out[-80:])}")
    finally:
        server.kill()
        server.wait()


def shaping(rates: list[float], seconds: float) -> list[str]:
    """Per rate: through OVS (container - Pi bridge - s1 - [shaped s1-s2] - s2 - Pi - container,
    TSO segments on the shaped link) and over a direct shaped veth between two namespaces (the
    qdisc alone), so a shortfall can be told apart: the shaper's, or the host's datapath."""
    from topology import tcplan
    from topology.effects import ip, ovs, ovs_sockets, tc
    from traffic import monitor

    rows = ["| configured Mbit/s | through OVS, Mbit/s | / configured | within 10 % | retransmits | "
            "qdisc drops | OVS socket drops | direct veth, Mbit/s | / configured | load avg 1/5/15 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    with Testbed(build("linear:2"), controller="none") as tb:
        a, b = tb.containers[:2]
        na, nb = tb.fabric.netns(a), tb.fabric.netns(b)
        va, vb = f"{tb.prefix}fxa", f"{tb.prefix}fxb"  # in the run's namespaces: they go with them
        ip.batch([f"link add {va} netns {na} type veth peer name {vb} netns {nb}"])
        ip.batch([f"addr add 192.168.77.1/30 dev {va}", f"link set {va} up"], netns=na)
        ip.batch([f"addr add 192.168.77.2/30 dev {vb}", f"link set {vb} up"], netns=nb)
        tb.ping_all()
        pid, ports = ovs.vswitchd_pid(), monitor.bridge_ports(tb)
        link = tb.topology.link("s1", "s2")
        end = getattr(tb.fabric, "end")  # noqa: B009 - LocalFabric's, not on the Fabric protocol
        ends = [end(n, link).iface for n in (link.a, link.b)]

        def losses() -> tuple[int, int]:
            """(drops in the shaped link's TBFs, drops in ovs-vswitchd's receive sockets of the run)."""
            q = tc.root_counters(None)
            return (sum(q[e]["dropped"] for e in ends if e in q),
                    sum(ovs_sockets.drops(pid, ports).values()))

        for rate in [None, *rates]:
            label = "unshaped (ceiling now)" if rate is None else f"{rate:g}"
            tb.link("s1", "s2").shape(rate)
            for iface, ns in ((va, na), (vb, nb)):
                tc.apply(tcplan.plan(iface, tcplan.Shape(bw=rate), ns, replace=True))
            q0, s0 = losses()
            try:
                got, retrans = _iperf_ns(nb, na, tb.container_ip(b), seconds)
                ovs_text = f"{got:.2f}"
                ovs_ratio = got / rate if rate else None
            except Exception as exc:  # noqa: BLE001 - a failed measurement is a row, not a crash
                ovs_text, ovs_ratio, retrans = f"failed: {str(exc)[:60]}", None, "-"
            q1, s1 = losses()
            try:
                direct, _ = _iperf_ns(nb, na, "192.168.77.2", seconds)
                direct_text = f"{direct:.2f}"
                direct_ratio = f"{direct / rate:.3f}" if rate else "-"
            except Exception as exc:  # noqa: BLE001
                direct_text, direct_ratio = f"failed: {str(exc)[:60]}", "-"
            within = "-" if ovs_ratio is None else ("yes" if abs(ovs_ratio - 1) <= 0.10 else "no")
            rows.append(f"| {label} | {ovs_text} | {'-' if ovs_ratio is None else f'{ovs_ratio:.3f}'} | {within} | "
                        f"{retrans} | {q1 - q0} | {s1 - s0} | {direct_text} | {direct_ratio} | {load()} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


class Hog:
    """One busy loop per core in the root namespace, ended by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Hog:
        for _ in range(os.cpu_count() or 1):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=10)


def verdicts(spec: str, plan: list[tuple[float, int]], seconds: float, fabric_links: str) -> list[str]:
    """PLAN: (load, runs per condition), each load's quiet and hog runs interleaved, all on one fabric."""
    results: dict[tuple[float, str], list[dict]] = {}
    with Testbed(spec, fabric_links=fabric_links) as tb, tempfile.TemporaryDirectory(prefix="picloud-fidelity-") as tmp:
        for load_frac, runs in plan:
            for cond in ("quiet", "hog"):
                results[(load_frac, cond)] = []
            one_load(tb, Path(tmp), load_frac, runs, seconds, results)
    return table(results)


def one_load(tb: Testbed, tmp: Path, load_frac: float, runs: int, seconds: float,
             results: dict[tuple[float, str], list[dict]]) -> None:
    for i in range(runs):
        order = ("quiet", "hog") if i % 2 == 0 else ("hog", "quiet")  # interleaved, order alternating
        for cond in order:
            before = load()
            out = tmp / f"{load_frac:g}-{cond}-{i}"
            if cond == "hog":
                with Hog():
                    res = tb.traffic(workload="websearch", load=load_frac, duration=seconds, seed=100 + i,
                                     out=out, drain=10)
            else:
                res = tb.traffic(workload="websearch", load=load_frac, duration=seconds, seed=100 + i,
                                 out=out, drain=10)
            v = res.fidelity or {}
            slow = [r.slowdown for r in res.flows if r.measured and r.slowdown is not None]
            failed = [k for k, s in (v.get("checks") or {}).items() if s == "failed"]
            numbers = v.get("numbers") or {}
            busy = (numbers.get("cpu") or {}).get("busy")
            thread = (numbers.get("ovs_thread_max") or {}).get("cores")
            results[(load_frac, cond)].append({"verdict": v.get("verdict"), "failed": failed, "load": before,
                                               "busy": busy, "ovs_thread": thread,
                                               "min_slowdown": min(slow, default=None)})
            print(f"run {i} {cond} at {load_frac:.0%}: {v.get('verdict')} {failed} ovs thread {thread} "
                  f"load {before}", file=sys.stderr, flush=True)


def table(results: dict[tuple[float, str], list[dict]]) -> list[str]:
    rows = ["| web-search load | condition | runs | faithful | degraded | checks failed (runs) | "
            "min slowdown, faithful runs | busiest core (mean of runs) | busiest ovs-vswitchd thread, cores "
            "(mean / max of runs) | load avg at start (min-max) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (load_frac, cond), rs in results.items():
        faithful = [r for r in rs if r["verdict"] == "faithful"]
        counts = collections.Counter(c for r in rs for c in r["failed"])
        reasons = ", ".join(f"{k} ({n})" for k, n in counts.most_common()) or "-"
        slow = [r["min_slowdown"] for r in faithful if r["min_slowdown"] is not None]
        busy = [max(r["busy"]) for r in rs if r["busy"]]
        loads = sorted(float(r["load"].split("/")[0]) for r in rs)
        busy_text = f"{sum(busy) / len(busy):.0%}" if busy else "-"
        load_text = f"{loads[0]:.1f}-{loads[-1]:.1f}" if loads else "-"
        label = "CPU hog, one busy loop per core" if cond == "hog" else "no hog"
        threads = [r["ovs_thread"] for r in rs if r["ovs_thread"] is not None]
        thread_text = f"{sum(threads) / len(threads):.2f} / {max(threads):.2f}" if threads else "-"
        rows.append(f"| {load_frac:.0%} | {label} | {len(rs)} | {len(faithful)} | {len(rs) - len(faithful)} | "
                    f"{reasons} | "
                    f"{f'{min(slow):.3f}' if slow else '-'} | {busy_text} | {thread_text} | {load_text} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of each condition, 6 s, rates 10,100")
    parser.add_argument("--runs", type=int, default=20, help="runs per condition (default 20)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each traffic run")
    parser.add_argument("--load", type=float, default=0.3)
    parser.add_argument("--light-load", type=float, default=0.15,
                        help="a second load, run after the first on the same fabric (0: none), so the table shows "
                             "where this host's forwarding thread stops keeping up (default 0.15)")
    parser.add_argument("--light-runs", type=int, default=5, help="runs per condition at --light-load")
    parser.add_argument("--topology", default="picloud:2,4")
    parser.add_argument("--rates", default="1,10,100,1000", help="Mbit/s for the shaping table")
    parser.add_argument("--shape-seconds", type=float, default=5.0)
    parser.add_argument("--record", action="store_true", help=f"write the {SECTION!r} section of RESULTS.md")
    parser.add_argument("--fabric-links", default="veth", choices=LINK_MODES,
                        help="how switch-to-switch links are built for the verdict runs (default veth, as "
                             "picloud up; auto: patch ports where a link is unshaped)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.rates, args.shape_seconds, args.light_runs = 2, 6.0, "10,100", 3.0, 1
    rates = [float(r) for r in args.rates.split(",")]
    started, load_before = time.monotonic(), load()
    lines = [f"Shaping accuracy: one iperf3 TCP flow, {args.shape_seconds:g} s, first second omitted, over the "
             "TBF-shaped s1-s2 link of linear:2 (OVS userspace datapath, TSO segments) and over a direct shaped "
             "veth between the same two namespaces (the qdisc alone).", "", *shaping(rates, args.shape_seconds)]
    plan = [(args.load, args.runs)] + ([(args.light_load, args.light_runs)] if args.light_load > 0 else [])
    loads = " and ".join(f"{load:.0%} ({runs} run{'s' if runs != 1 else ''} per condition)" for load, runs in plan)
    lines += ["", f"Verdicts: {args.topology} (fabric links: {args.fabric_links}), web search at {loads}, "
              f"{args.seconds:g} s "
              "per run, quiet and hog runs interleaved. The ovs_cpu check reads the busiest thread of "
              "ovs-vswitchd (its main thread: the userspace datapath's one forwarding thread here).", "",
              *verdicts(args.topology, plan, args.seconds, args.fabric_links), "",
              f"Run {utc_stamp()}, `python -m bench.fidelity_bench{' --quick' if args.quick else ''}`, "
              f"{time.monotonic() - started:.0f} s; load average {load_before} before, {load()} after (1/5/15 min)."]
    publish(SECTION, lines, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
