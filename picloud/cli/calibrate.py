"""`picloud calibrate [--run P] [--json]`: what the running fabric delivers against its configured
links (traffic.calibrate), stored with the run for its traffic runs."""

from __future__ import annotations

import argparse
import json

from picloud.errors import TrafficError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure goodput, RTT and loss per link class and the unshaped ceiling")
    p.add_argument("--run", default=None, metavar="PREFIX")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each bulk flow (default 2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from picloud.testbed import Testbed
    from traffic.calibrate import render

    if not 0.5 <= args.seconds <= 60:
        raise TrafficError(f"--seconds: {args.seconds} (0.5 to 60)")
    result = Testbed.attach(args.run).calibrate(seconds=args.seconds)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0
