"""`picloud capture TARGET... [--filter BPF] [--seconds N] --out FILE.pcapng`: one pcapng file of
many capture points of a running fabric (thin over `traffic.capture`)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="capture packets on links, switch ports and containers into one pcapng")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="link:A,B (both ends), port:NODE:N (a bridge port), or a container name")
    p.add_argument("--filter", default=None, metavar="BPF", help="a capture filter, e.g. 'tcp port 5301'")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to capture (default 10)")
    p.add_argument("--out", default=None, metavar="FILE.pcapng",
                   help="output file (default results/capture-STAMP/capture.pcapng)")
    p.add_argument("--run", default=None, metavar="PREFIX", help="which run, when several are up")
    p.add_argument("--json", action="store_true", help="print the per-interface counts as JSON")
    p.set_defaults(func=_capture)


def _capture(args: argparse.Namespace) -> int:
    from picloud.errors import TrafficError
    from picloud.testbed import Testbed
    from traffic.capture import capture_for, check_filter

    if not 0 < args.seconds <= 3600:
        raise TrafficError(f"--seconds {args.seconds:g}: between 0 and 3600")
    if args.out is not None and not str(args.out).endswith(".pcapng"):
        raise TrafficError(f"--out {args.out}: must end in .pcapng")
    check_filter(args.filter)
    testbed = Testbed.attach(args.run)
    result = capture_for(testbed, args.targets, args.seconds, bpf=args.filter, out=args.out)
    if args.json:
        print(json.dumps({"path": str(result.path), "interfaces": result.interfaces}, indent=2))
    else:
        print(result.summary())
    return 0
