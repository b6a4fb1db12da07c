"""A run's controller process as a crash and a restart see it: what `Testbed.kill_controller()` and
`Testbed.restart_controller()` do (a scenario's `controller-kill` / `controller-restart`).

Why in the facade: the process is the facade's own child when it started it (`Testbed` keeps the
`Popen`, which must reap it and then follow the new one), and the run state's PID records are
the facade's to change. Domain code asks through the `Run` protocol and never touches either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from picloud.errors import ControllerError
from picloud.runstate import RunState
from topology.effects import proc

REAP_S = 5.0  # a SIGKILLed process is gone within milliseconds; this only bounds a stuck wait


def record_of(state: RunState) -> dict[str, Any] | None:
    """The run state's record of its controller process (the newest), if any."""
    recs = [r for r in state.objects.get("pids", []) if r.get("role") == "controller"]
    return recs[-1] if recs else None


def kill(state: RunState, own: subprocess.Popen | None) -> tuple[int, list[str] | None]:
    """SIGKILL the run's controller (a crash, not a shutdown: no goodbye to the switches) and reap
    it; `own` is the facade's Popen of it, if it started it. (PID, its command line)."""
    rec = record_of(state)
    if rec is None:
        raise ControllerError("controller-kill: no controller process recorded in this run")
    record = proc.ProcessRecord.from_dict(rec)
    if not proc.is_ours(record):
        raise ControllerError(f"controller-kill: PID {record.pid} is not running (already killed?)")
    argv = None
    with contextlib.suppress(OSError):
        argv = Path(f"/proc/{record.pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    os.kill(record.pid, signal.SIGKILL)
    if own is not None and own.pid == record.pid:
        own.wait(REAP_S)
    else:
        deadline = time.monotonic() + REAP_S
        while proc.is_ours(record) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.reap(record.pid)  # ours: collected; another process's: a zombie for its parent
    return record.pid, argv


def restart(state: RunState, argv: list[str] | None) -> subprocess.Popen:
    """Start the controller again with the command line it had, logging where it logged, and
    replace its PID record; the new process is this process's child."""
    if not argv:
        raise ControllerError("controller-restart: the controller's command line is unknown (kill it first)")
    log_path = (state.controller or {}).get("log") or os.devnull
    with open(log_path, "ab") as logf:
        child = proc.spawn_helper(argv, stdout=logf)
    with state.transaction():  # from the file: a concurrent step's change to the run is kept
        rec = record_of(state)
        if rec is not None:
            state.forget("pids", [rec])
        state.intend("pids", [proc.record(child, "controller").to_dict()])
    return child
