"""A child process that a test sends SIGINT must have the default disposition."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """preexec_fn for a child that a test will send SIGINT: the default disposition, as a shell on a
    terminal gives it. A suite started as a background job of a non-interactive shell (`cmd &`)
    inherits SIGINT ignored, and Python then keeps it ignored in every child, so a SIGINT test would
    measure how the suite was launched instead of how picloud answers Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
