"""The `picloud` command: a dispatcher over one module per command group.

Each module in this package defines `register(subparsers)` and sets `func` on its parsers; the
function receives the parsed arguments and returns an exit code. All real work happens in the
`Testbed` API and the domain packages; this layer only parses and prints.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from picloud.errors import PiCloudError

# Command groups, in the order `picloud --help` lists them. A module that does not exist yet is
# skipped, so groups can land one at a time.
GROUPS = ["fabric", "topo", "controller", "tenant", "traffic", "calibrate", "capture", "ui", "cluster", "image",
          "demo"]


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad input is one line naming the problem and exit 2, for every subcommand (argparse's own
    error prints the whole usage block first). Subparsers inherit this class from their parent."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("picloud").strip()
        print(f"picloud: error: {command + ': ' if command else ''}{message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="picloud", description="PiCloud SDN testbed: a Raspberry Pi Cloud on one box or many."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        try:
            module = importlib.import_module(f"picloud.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"picloud.cli.{group}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s" if not args.verbose else "%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PiCloudError as exc:
        print(f"picloud: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
