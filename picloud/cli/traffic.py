"""`picloud traffic run|workloads|report|iperf|web`: data-centre traffic on a running fabric.

Thin over `traffic.engine` and friends: parse, find the run with `Testbed.attach()`, print.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from picloud.errors import TrafficError

if TYPE_CHECKING:
    from picloud.testbed import Testbed


def register(sub: argparse._SubParsersAction) -> None:
    traffic = sub.add_parser("traffic", help="published data-centre workloads, iperf3 and web experiments")
    tsub = traffic.add_subparsers(dest="traffic_command", metavar="SUBCOMMAND")
    traffic.set_defaults(func=lambda args: (traffic.print_help(), 2)[1])

    p = tsub.add_parser("run", help="replay a seeded workload trace on a running fabric")
    p.add_argument("--workload", default="websearch", help="a built-in name (see 'workloads') or a CDF file")
    p.add_argument("--load", type=float, default=0.1, help="target load of each sender's link, in (0, 1]")
    p.add_argument("--pattern", default="all-to-all",
                   help="all-to-all, permutation, stride, hotspot, incast, shuffle")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of flow arrivals")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tenant", default=None, help="only this tenant's members, at their tenant addresses")
    p.add_argument("--out", default=None, metavar="DIR", help="results directory (default "
                                                              "results/traffic-...)")
    p.add_argument("--run", default=None, metavar="PREFIX", help="which run, when several are up")
    p.add_argument("--arrival", default="poisson", choices=["poisson", "onoff", "closed"])
    p.add_argument("--concurrency", type=int, default=1, help="flows in flight per sender (closed loop)")
    p.add_argument("--warmup", type=float, default=None, help="seconds excluded from statistics (10%% "
                                                              "default)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds allowed after the last arrival")
    p.add_argument("--link-mbps", type=float, default=None,
                   help="nominal link rate for load and slowdown (default: the hosts' shaped access links, else "
                        "the run's calibrated ceiling, else an assumed 100, said so in meta.json)")
    p.add_argument("--scale-size", type=float, default=1.0, help="multiply every flow size (slow links)")
    p.add_argument("--scale-time", type=float, default=1.0, help="stretch every start time (slow links)")
    p.add_argument("--stride", type=int, default=None, help="stride pattern: i")
    p.add_argument("--hotspots", type=int, default=None, help="hotspot pattern: number of hot hosts")
    p.add_argument("--fraction", type=float, default=None, help="hotspot pattern: share of flows to them")
    p.add_argument("--fanin", type=int, default=None, help="incast: senders per request")
    p.add_argument("--response", type=int, default=None, help="incast: response bytes (default: the "
                                                              "workload)")
    p.add_argument("--aggregator", default=None, help="incast: fixed aggregator container")
    p.add_argument("--mappers", type=int, default=None, help="shuffle: M")
    p.add_argument("--reducers", type=int, default=None, help="shuffle: R")
    p.add_argument("--plots", action="store_true", help="also write fct_cdf.png and slowdown.png")
    p.add_argument("--scenario", default=None, metavar="FILE",
                   help="a YAML scenario (timed link cuts, flaps, shaping, node and controller failures, "
                        "tenant changes) applied during the run; events.csv records each event and its cost")
    p.add_argument("--capture", nargs="+", default=None, metavar="TARGET",
                   help="capture the run's flows at these points (link:A,B, port:NODE:N, container) into "
                        "capture.pcapng in the results; the report checks each captured flow's FCT against it")
    p.add_argument("--realtime-agents", action="store_true",
                   help="run the traffic agents at real-time priority: flows start on time on a loaded host, but "
                        "the agents then preempt the userspace datapath (see traffic.agent)")
    p.set_defaults(func=_run)

    p = tsub.add_parser("workloads", help="list the built-in flow-size distributions with citations")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_workloads)

    p = tsub.add_parser("report", help="summarise a results directory, or two side by side")
    p.add_argument("directories", nargs="+", metavar="DIR")
    p.add_argument("--plots", action="store_true", help="(re)write the PNG plots of each run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_report)

    p = tsub.add_parser("iperf", help="an iperf3 bulk flow between two containers")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--run", default=None, metavar="PREFIX")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_iperf)

    p = tsub.add_parser("web", help="the Raspberry Pi Cloud web experiment: httperf-style load on web "
                                    "servers")
    p.add_argument("--servers", type=int, default=None, help="number of server containers (default: all "
                                                             "but one)")
    p.add_argument("--client", default=None, help="client container (default: the last one)")
    p.add_argument("--rate", type=float, default=100.0, help="new requests per second, open loop")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=1024, help="bytes per reply")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds before a request counts as an error")
    p.add_argument("--out", default=None, metavar="DIR")
    p.add_argument("--run", default=None, metavar="PREFIX")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_web)


def _attach(prefix: str | None) -> Testbed:
    from picloud.testbed import Testbed

    return Testbed.attach(prefix)


def _run(args: argparse.Namespace) -> int:
    from traffic import arrivals, workloads

    # Check the request before looking for a run, so a typo is reported as such.
    workloads.get(args.workload)
    arrivals.check_load(args.load, "--load")
    if args.scenario is not None:
        from traffic.scenario import load_file

        load_file(args.scenario)  # a malformed file is reported before looking for a run
    testbed = _attach(args.run)
    if args.capture:
        from traffic.capture import resolve

        resolve(testbed, args.capture)  # an unknown target is reported before any flow starts
    pattern_args = {k: getattr(args, k) for k in ("stride", "hotspots", "fraction", "fanin", "response",
                                                   "aggregator", "mappers", "reducers")
                    if getattr(args, k) is not None}
    results = testbed.traffic(  # the facade's run: it also records the live view for replay
        workload=args.workload, load=args.load, pattern=args.pattern, duration=args.duration,
        seed=args.seed, tenant=args.tenant, out=args.out, progress=sys.stderr.isatty(),
        warmup=args.warmup, scale_size=args.scale_size, scale_time=args.scale_time, arrival=args.arrival,
        link_mbps=args.link_mbps, drain=args.drain, concurrency=args.concurrency, scenario=args.scenario,
        capture=args.capture, realtime_agents=args.realtime_agents, **pattern_args,
    )
    print(results.report())
    if args.plots:
        for path in results.plots():
            print(f"plot: {path}")
    print(f"results: {results.directory}")
    return 0


def _workloads(args: argparse.Namespace) -> int:
    from traffic import workloads

    rows = workloads.describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<17}{'mean (B)':>12}{'median':>10}{'p99':>12}  {'paper mean':>11}  title")
    for r in rows:
        print(f"{r['name']:<17}{r['mean_bytes']:>12,}{r['median_bytes']:>10,}{r['p99_bytes']:>12,}  "
              f"{r['published_mean_bytes']:>11,}  {r['title']}")
        print(f"{'':<17}{r['citation']}")
    print("\nmean: with linear interpolation between CDF points (how we sample); paper mean: what the "
          "paper's tools use (Homa's simulator samples steps).\nYour own table: --workload FILE with lines "
          "'SIZE_BYTES CDF_FRACTION' (see traffic/workloads.py).")
    return 0


def _report(args: argparse.Namespace) -> int:
    from traffic.report import render
    from traffic.results import Results

    if len(args.directories) > 2:
        raise TrafficError(f"report: {len(args.directories)} directories (one, or two side by side)")
    runs = [Results.load(d) for d in args.directories]
    if args.json:
        print(json.dumps({str(r.directory): r.summary for r in runs}, indent=2))
    else:
        print(render(runs))
    if args.plots:
        for r in runs:
            for path in r.plots():
                print(f"plot: {path}")
    return 0


def _iperf(args: argparse.Namespace) -> int:
    from traffic import iperf

    result = iperf.bulk(_attach(args.run), args.src, args.dst, duration=args.duration, parallel=args.parallel)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.src} -> {args.dst}: {result['goodput_mbps']:.1f} Mbit/s received, "
              f"{result['retransmits']} retransmits over {result['seconds']:.1f}s")
    return 0


def _web(args: argparse.Namespace) -> int:
    from traffic import web

    result = web.run(_attach(args.run), servers=args.servers, client=args.client, rate=args.rate,
                     duration=args.duration, size=args.size, timeout=args.timeout, out=args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(web.render(result))
    return 0
