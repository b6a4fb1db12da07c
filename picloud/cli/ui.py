"""`picloud ui`: serve the web UI for a run that is up (the only one, or `--run PREFIX`)."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from picloud.uiprocess import TOKEN_ENV


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="serve the web UI (live topology, flows, tenants, experiments) for a run")
    p.add_argument("--run", default=None, metavar="PREFIX", help="the run to show (default: the only one up)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default loopback; anything else exposes the UI, with a warning)")
    p.add_argument("--host-name", action="append", default=[], metavar="NAME",
                   help="another name browsers use to reach the UI (the Host header is checked against the "
                        "bound address and these names, against DNS rebinding)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--results", default="results", metavar="DIR", help="where traffic result directories are")
    p.add_argument("--interval", type=float, default=0.75, metavar="S", help="seconds between live samples")
    p.add_argument("--no-record", action="store_true", help=argparse.SUPPRESS)  # set by picloud.uiprocess.detach_ui()
    p.set_defaults(func=_ui)
    usub = p.add_subparsers(dest="ui_command", metavar="[export]")
    e = usub.add_parser("export", help="write one self-contained offline HTML file that replays a run")
    e.add_argument("directory", metavar="RESULTS_DIR", help="a traffic run's results directory")
    e.add_argument("--out", required=True, metavar="FILE.html")
    e.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from webui.export import export

    path = export(args.directory, args.out)
    print(f"picloud: replay of {args.directory} written to {path} ({path.stat().st_size // 1024} KiB, offline)")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from picloud.testbed import Testbed
    from webui.server import UIServer

    testbed = Testbed.attach(args.run)
    # A non-loopback --host is logged as a warning by UIServer (library users get it too).
    server = UIServer(testbed, host=args.host, port=args.port, token=os.environ.get(TOKEN_ENV),
                      results=args.results, interval=args.interval, record=not args.no_record,
                      host_names=tuple(args.host_name))
    # The token itself only on a terminal: a detached UI's stdout is its log file.
    print(f"picloud: web UI for run {testbed.prefix} at {server.url}  (token for actions: {server.token_hint()})",
          flush=True)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0
