"""Process launch and PID bookkeeping: the only place PiCloud runs or ends a process.

Every command is an argument list (never a shell string). Processes we start are recorded with
their start time from /proc, so `picloud clean` can prove a PID is still the process we made
before it signals it: PIDs are reused, and ending a stranger's process is the worst clean-up bug.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

log = logging.getLogger(__name__)


class CommandError(RuntimeError):
    """A system command failed; carries the argv and its stderr for the caller to phrase."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        first = self.stderr.splitlines()[0] if self.stderr else f"exit {returncode}"
        super().__init__(f"{argv[0]}: {first}")


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: the kernel kills this child when its parent dies. Without it a `kill -9` of
    PiCloud leaves an `ip -batch` running that keeps creating objects while `clean` removes them."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = 60) -> subprocess.CompletedProcess[str]:
    log.debug("run %s", " ".join(argv[:8]) + (" ..." if len(argv) > 8 else ""))
    result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                            preexec_fn=die_with_parent)
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stderr or result.stdout)
    return result


@dataclass(frozen=True)
class ProcessRecord:
    """What we know of a process we started: enough to recognise it later, even from another run."""

    pid: int
    start_ticks: int
    argv0: str
    role: str

    def to_dict(self) -> dict:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "argv0": self.argv0, "role": self.role}

    @classmethod
    def from_dict(cls, data: dict) -> ProcessRecord:
        return cls(int(data["pid"]), int(data["start_ticks"]), str(data["argv0"]), str(data.get("role", "")))


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start ticks) from /proc/PID/stat: fields 3 and 22, read in one go."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rfind(")") + 2:].split()
    return rest[0], int(rest[19])


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: the process start time in clock ticks since boot."""
    fields = _stat(pid)
    return None if fields is None else fields[1]


def record(proc: subprocess.Popen, role: str) -> ProcessRecord:
    ticks = start_ticks(proc.pid)
    argv = proc.args if isinstance(proc.args, list | tuple) else [str(proc.args)]
    return ProcessRecord(proc.pid, ticks if ticks is not None else -1, os.path.basename(str(argv[0])), role)


def own_record(role: str) -> ProcessRecord:
    """This process, so a run can say who is using it (clean leaves live owners' runs alone)."""
    ticks = start_ticks(os.getpid())
    return ProcessRecord(os.getpid(), ticks if ticks is not None else -1, "python", role)


def is_ours(rec: ProcessRecord) -> bool:
    """The recorded process, still running. A zombie is not running: it has exited and waits for its
    parent to collect it, which for a controller that `picloud up` started and `picloud down` (another
    process) ends may be never, or only once init adopts it. Counting it as alive made every such
    teardown wait out the grace, SIGKILL and KILL_WAIT_S (13 s). Its PID cannot be reused until it is
    collected, so the check stays exact."""
    if rec.start_ticks < 0:
        return False
    fields = _stat(rec.pid)
    return fields is not None and fields[1] == rec.start_ticks and fields[0] not in ("Z", "X")


KILL_WAIT_S = 10.0  # after SIGKILL, how long to wait for the process to be gone (exited and reaped)


def ask_to_stop(rec: ProcessRecord) -> None:
    """SIGTERM without waiting, only if the PID is still the recorded process: a caller with other
    work to do (a fabric to tear down) lets the process wind down meanwhile, then `terminate`s it."""
    if is_ours(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)


def terminate(rec: ProcessRecord, grace: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; only if the PID is still the recorded process."""
    reap(rec.pid)  # our own child that has exited already: collected, not left a zombie
    if not is_ours(rec):
        return False
    try:
        os.kill(rec.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(rec.pid)
        if not is_ours(rec):
            return True
        time.sleep(0.05)
    if is_ours(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGKILL)
        # SIGKILL is delivered, not done: a many-threaded process on a loaded host takes a while
        # to exit and then be reaped, and until then it is still in /proc with its start time.
        # Returning at once let a caller's "nothing of the run is left" check see it.
        deadline = time.monotonic() + KILL_WAIT_S
        while is_ours(rec) and time.monotonic() < deadline:
            time.sleep(0.05)
        reap(rec.pid)
    return True


def reap(pid: int) -> None:
    """Collect our own child so it does not linger as a zombie (which still has a start time)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


AUTOGROUP_SWITCH = "/proc/sys/kernel/sched_autogroup_enabled"


def spawn_helper(argv: Sequence[str], *, stdout: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a long-lived helper (the controller, a detached web UI): its own process group, so a
    terminal's Ctrl-C reaches only `picloud up`, which then ends the helper in order; but the
    caller's session, so a kernel with sched_autogroup counts it in the caller's CPU share. In a
    session of its own (its own autogroup) the controller, 70 threads runnable, got no CPU for 22 s
    while two busy loops ran (load 30): stats requests timed out and failover stalled. In the
    caller's session its longest wait was 0.5 s."""
    return subprocess.Popen(list(argv), stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, process_group=0)


def autogroup_nice(pid: int, nice: int) -> bool:
    """Give a process's autogroup (its session's CPU group) a nice value; False where the kernel
    has no autogroups, the process is gone, or we may not. Under autogroups a task's own nice
    counts only against its session's other tasks, so a daemon started at nice -10 in a session
    of its own competes with a busy loop's session as an equal."""
    try:
        with open(AUTOGROUP_SWITCH) as f:
            if f.read().strip() != "1":
                return False
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError as exc:
        log.debug("autogroup of %s unchanged: %s", pid, exc)
        return False
    return True


def realtime(policy: int, priority: int, tid: int = 0) -> bool:
    """Put a task (0: the calling thread) under a real-time policy (os.SCHED_FIFO or SCHED_RR), its
    children reset to ordinary on fork; False where the kernel refuses (no CAP_SYS_NICE, a container
    without it, an out-of-range priority)."""
    try:
        os.sched_setscheduler(tid, policy | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.debug("task %s stays ordinary: %s", tid or "self", exc)
        return False
    return True
