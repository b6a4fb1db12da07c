"""`ryu-manager`: Ryu's command line, as tutorials type it, running apps the way `picloud controller` does.

    ryu-manager [--ofp-tcp-listen-port P] [--ofp-listen-host H] [--wsapi-host H] [--wsapi-port Q]
                [--observe-links] [--verbose] [--config-file FILE] APP [APP ...]

Why a command of ours: os-ken ships no manager, and a Mininet-era tutorial's first line is
`ryu-manager --observe-links ryu.app.simple_switch_13`. The flags map onto the runner's options
(`--ofp-*` -> `--listen`, `--wsapi-*` -> `--api`: ofctl_rest's `/stats/*`, `/state` and every
`ryu.app.wsgi` route are served there); APP is a .py file or a module name (`ryu.app.X` included).
Differences from Ryu, on purpose: both listeners default to 127.0.0.1 (Ryu listened on every
interface); state-changing REST requests need the API token (`--api-open` for Ryu's open API);
and an option Ryu has that we do not is a one-line error (exit 2) instead of a silently
different run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from picloud.errors import ControllerError

PROG = "ryu-manager"
RYU_OFP_PORT = 6653  # Ryu's --ofp-tcp-listen-port default (OpenFlow's IANA port)
RYU_WSAPI_PORT = 8080  # Ryu's --wsapi-port default


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            flags = message.split(":", 1)[1].split()
            message = (f"unknown option {flags[0]} (ryu-manager here takes --ofp-tcp-listen-port, "
                       "--ofp-listen-host, --wsapi-host, --wsapi-port, --observe-links, --verbose, "
                       "--config-file, PiCloud's --api-token-file and --api-open, and app files or module names)")
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog=PROG, description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("apps", nargs="*", metavar="APP", help="app .py file or module name (ryu.app.simple_switch_13)")
    p.add_argument("--ofp-tcp-listen-port", type=int, default=RYU_OFP_PORT, metavar="PORT")
    p.add_argument("--ofp-listen-host", default="127.0.0.1", metavar="IP")
    p.add_argument("--wsapi-host", default="127.0.0.1", metavar="IP")
    p.add_argument("--wsapi-port", type=int, default=RYU_WSAPI_PORT, metavar="PORT")
    p.add_argument("--observe-links", action="store_true", help="LLDP link discovery in ryu.topology.switches")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument("--config-file", metavar="FILE", help="oslo.config file for the apps")
    # PiCloud's own: the API takes changes only with the token (see docs/API.md "Authentication").
    p.add_argument("--api-token-file", metavar="FILE",
                   help="token for state-changing REST requests (default: controller-PORT.api-token in the "
                        "state directory, created 0600)")
    p.add_argument("--api-open", action="store_true",
                   help="no token for state-changing REST requests, as Ryu had it (warned at start)")
    return p


def runner_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """Ryu's flags as the runner's own parsed options (parsed by the runner's parser, so every
    option the runner has gets its default here too)."""
    from controller_apps import runner

    host = args.ofp_listen_host or "0.0.0.0"  # Ryu's '' meant every interface
    api_host = args.wsapi_host or "0.0.0.0"
    argv = [*args.apps, "--listen", f"{host}:{args.ofp_tcp_listen_port}", "--api", f"{api_host}:{args.wsapi_port}"]
    if args.config_file:
        argv += ["--config", args.config_file]
    if args.api_token_file:
        argv += ["--api-token-file", args.api_token_file]
    if args.api_open:
        argv.append("--api-open")
    if args.observe_links:
        argv.append("--observe-links")
    parser = _OneLineParser(prog=PROG)
    runner.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose or os.environ.get("PICLOUD_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from controller_apps import runner

    try:
        if not args.apps:
            raise ControllerError("no app given (name app files or modules, e.g. ryu-manager ryu.app.simple_switch_13)")
        for option, port in (("--ofp-tcp-listen-port", args.ofp_tcp_listen_port),
                             ("--wsapi-port", args.wsapi_port)):
            if not 0 < port < 65536:
                raise ControllerError(f"{option} {port}: not a TCP port (1-65535)")
        options = runner.options_from(runner_namespace(args))
    except ControllerError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return runner.serve(options)


if __name__ == "__main__":
    sys.exit(main())
