"""`picloud demo`: the main job, what `make demo` runs after setup."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="bring the Raspberry Pi Cloud scale model to life end to end")
    p.add_argument("--duration", type=float, default=None,
                   help="end by itself after SECONDS (default: keep the UI up until Ctrl-C)")
    p.add_argument("--traffic-seconds", type=float, default=None, help="length of the workload run")
    p.add_argument("--out", default="results/demo", help="results directory")
    p.add_argument("--port", type=int, default=8080, help="web UI port")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from picloud.demo import run_demo

    return run_demo(duration=args.duration, traffic_seconds=args.traffic_seconds, out=args.out,
                    ui_port=args.port)
