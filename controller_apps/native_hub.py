"""Timeouts on os-ken's native hub with eventlet's meaning, so code written for Ryu's eventlet hub
keeps its timers (issue 18: Ryu's simple_switch_stp_13 never left LISTEN).

Ryu ran on eventlet: `t = hub.Timeout(15)` armed a timer at once, and when it expired the
`hub.Timeout` was raised inside whatever the creating green thread was blocked in
(`hub.Event().wait()`, `hub.sleep()`). os-ken 4.2.2's default hub runs native threads, where
neither holds: its Timeout starts only in `__enter__`, cannot interrupt a blocked thread, and its
`Event.wait(timeout)` waits for ever whatever the timeout. What that broke, in os-ken itself and
in apps run unmodified:
- stplib's port state machine (`timeout = hub.Timeout(forward_delay); state_event.wait()`): ports
  stayed in LISTEN for ever, so an STP bridge never forwarded; its BPDU max-age timer never fired
  either, so a failed root was never noticed;
- the topology app's `lldp_event.wait(timeout=...)` / `link_event.wait(timeout=...)`: LLDP probes
  were not repeated and dead links never expired;
- `ofctl_utils.send_stats_request` and Ryu's rest_router reply waits: a lost reply hung the caller.

And `hub.kill(thread)`: eventlet raised GreenletExit in the thread at its next wait; the native
hub's kill does nothing, so `hub.kill(t); hub.joinall([t])` on a thread that loops for ever
blocked the caller for ever. stplib stops and restarts its per-port threads that way on every
topology change, from its packet-in handler: the first superior BPDU froze the STP app, every
bridge stayed "designated" on every port, and a looped topology would have stormed.

And `hub.TaskExit`, "a thread is asked to end" (eventlet's GreenletExit): the native hub makes it
`Exception`. An app's event loop re-raises TaskExit from its handlers so that a kill ends it, so
there *every* exception a handler raised ended the app's event loop, silently (HubThread swallows
TaskExit): one bad packet, and the app never handled another event, with nothing in the log. With
TaskExit = Killed, a handler's exception is logged with its traceback and the loop goes on, as in
Ryu.

Here the native hub keeps every armed Timeout and every kill per thread, and the two places a
thread blocks for a hub (`hub.Event.wait`, `hub.sleep`) wait on a per-thread wake-up that
`Event.set`, an expiring Timeout and `kill` all reach: the thread raises the earliest expired
Timeout, or `Killed` (a BaseException, like GreenletExit, so an app's `except Exception` does
not swallow it; the hub thread ends quietly), exactly where eventlet would have. A thread blocked
elsewhere (a socket read, a queue) is still not interrupted; eventlet would have, but nothing here
relies on it. `Event.wait(timeout)` returns after `timeout` with the flag, as documented.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

LOG = logging.getLogger("os_ken.lib.hub")

_LOCK = threading.Lock()
_ARMED: dict[int, list[Timeout]] = {}  # thread ident -> its armed timeouts
_KILLED: set[int] = set()  # thread idents hub.kill asked to end
_WAKE: dict[int, threading.Event] = {}  # thread ident -> its wake-up


class Killed(BaseException):
    """Raised in a hub thread at its next hub wait after `hub.kill(thread)` (eventlet's GreenletExit)."""


def _wake(ident: int | None = None) -> threading.Event:
    ident = threading.get_ident() if ident is None else ident
    with _LOCK:
        return _WAKE.setdefault(ident, threading.Event())


class Timeout(BaseException):
    """eventlet.Timeout's contract on native threads: armed when created (with seconds), raised in
    the creating thread at its next hub wait after the deadline; `exception` False makes a `with`
    block swallow it, an exception (class or instance) is raised instead of the Timeout."""

    def __init__(self, seconds: float | None = None, exception: Any = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self.deadline: float | None = None
        self._owner = threading.get_ident()
        self.start()

    def start(self) -> Timeout:
        if self.seconds is not None and self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
            with _LOCK:
                _ARMED.setdefault(self._owner, []).append(self)
        return self

    @property
    def pending(self) -> bool:
        return self.deadline is not None

    def cancel(self) -> None:
        with _LOCK:
            armed = _ARMED.get(self._owner, [])
            if self in armed:
                armed.remove(self)
            if not armed:
                _ARMED.pop(self._owner, None)
        self.deadline = None

    def to_raise(self) -> BaseException:
        if self.exception is None or isinstance(self.exception, bool):
            return self
        if isinstance(self.exception, type):
            return self.exception()
        return self.exception

    def __enter__(self) -> Timeout:
        return self.start()

    def __exit__(self, typ: Any, value: Any, tb: Any) -> bool:
        self.cancel()
        return value is self and self.exception is False

    def __str__(self) -> str:
        return f"{self.seconds} seconds" if self.seconds is not None else "timeout"


def _earliest() -> Timeout | None:
    with _LOCK:
        armed = _ARMED.get(threading.get_ident())
        return min(armed, key=lambda t: t.deadline or 0.0) if armed else None


def _expire(timeout: Timeout) -> None:
    timeout.cancel()
    raise timeout.to_raise()


def _check_killed() -> None:
    with _LOCK:
        killed = threading.get_ident() in _KILLED
    if killed:
        raise Killed()


def _block(until: float | None) -> None:
    """Block this thread until its wake-up is set or `until` (monotonic) passes, then raise what
    is due: Killed, or an expired armed Timeout."""
    wake = _wake()
    armed = _earliest()
    ends = [d for d in (until, armed.deadline if armed else None) if d is not None]
    if ends:
        wake.wait(max(0.0, min(ends) - time.monotonic()))
    else:
        wake.wait()
    wake.clear()
    _check_killed()
    armed = _earliest()
    if armed is not None and armed.deadline is not None and armed.deadline <= time.monotonic():
        _expire(armed)


def sleep(seconds: float = 0) -> None:
    """`hub.sleep`: sleeps, unless this thread is killed or one of its timeouts expires first."""
    _check_killed()
    if seconds <= 0:
        time.sleep(0)
        return
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        _block(until)


def event_wait(self: Any, timeout: float | None = None) -> bool:
    """`hub.Event.wait`: until set, until `timeout` (returns the flag), until one of this thread's
    armed timeouts expires (raises it) or until the thread is killed (raises Killed)."""
    until = None if timeout is None else time.monotonic() + timeout
    wake = _wake()
    waiters = self.__dict__.setdefault("_picloud_waiters", set())
    waiters.add(wake)
    try:
        while True:
            _check_killed()
            if self._cond:
                return True
            if until is not None and time.monotonic() >= until:
                return bool(self._cond)
            _block(until)
    finally:
        waiters.discard(wake)


def _event_set(original: Any) -> Any:
    def event_set(self: Any) -> None:
        original(self)
        for wake in list(self.__dict__.get("_picloud_waiters", ())):
            wake.set()

    event_set.picloud_wakes = True  # type: ignore[attr-defined]
    return event_set


def kill(thread: Any) -> None:
    """`hub.kill`: a timer (spawn_after) is cancelled; a hub thread raises Killed at its next hub
    wait (at once if it is in one)."""
    if isinstance(thread, threading.Timer):
        thread.cancel()
        return
    ident = getattr(thread, "ident", None)
    if ident is None or not thread.is_alive():
        return
    with _LOCK:
        _KILLED.add(ident)
    _wake(ident).set()


def _thread_run(self: Any) -> None:
    """HubThread.run: as os-ken's (with TaskExit = Killed), and the thread's hub bookkeeping goes
    with it."""
    try:
        threading.Thread.run(self)
    except Killed:
        pass
    except BaseException:
        if self.raise_error:
            raise
        LOG.error("HubThread uncaught exception: %s", traceback.format_exc())
    finally:
        ident = threading.get_ident()
        with _LOCK:
            _KILLED.discard(ident)
            _ARMED.pop(ident, None)
            _WAKE.pop(ident, None)


def install() -> None:
    """Idempotent; only for the native hub (eventlet's own timeouts already behave so)."""
    from os_ken.lib import hub

    if hub.HUB_TYPE != "native" or hub.Timeout is Timeout:
        return
    hub.Timeout = Timeout
    hub.TaskExit = Killed
    hub.sleep = sleep
    hub.kill = kill
    hub.Event.wait = event_wait
    hub.Event.set = _event_set(hub.Event.set)
    hub.HubThread.run = _thread_run
