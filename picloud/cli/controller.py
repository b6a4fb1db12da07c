"""`picloud controller [APP_OR_FILE ...]`: run the controller (os-ken + Ryu apps + REST API) in the
foreground. Option parsing and validation are the runner's own, so both entry points agree."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller", help="run controller apps (built-in, os-ken or unmodified Ryu) in the foreground")
    from controller_apps.runner import add_arguments

    add_arguments(p)
    p.set_defaults(func=_controller)


def _controller(args: argparse.Namespace) -> int:
    # Lazy import: os-ken is heavy and `picloud --help` should stay quick.
    from controller_apps import runner

    options = runner.options_from(args)  # ControllerError -> "picloud: error: ..." exit 2
    return runner.serve(options)
