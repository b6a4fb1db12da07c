"""eventlet's timeout semantics on os-ken's native hub (controller_apps.native_hub): the pattern
stplib's port timers use, Event.wait's own timeout, and Timeout(seconds, False) in a `with`.
Bounds are wide: they separate "expired" from "waited for ever" (the native hub's behaviour)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from os_ken.lib import hub

from controller_apps import native_hub


@pytest.fixture(autouse=True)
def installed():
    native_hub.install()
    yield
    assert native_hub._ARMED.get(threading.get_ident()) is None  # nothing left armed


def test_stplib_pattern_an_armed_timeout_interrupts_an_event_wait():
    started = time.monotonic()
    timeout = hub.Timeout(0.2)
    with pytest.raises(hub.Timeout) as info:
        try:
            hub.Event().wait()
        finally:
            timeout.cancel()
    assert info.value is timeout
    assert 0.15 < time.monotonic() - started < 10


def test_event_wait_with_a_timeout_returns_the_flag_after_it():
    started = time.monotonic()
    assert hub.Event().wait(timeout=0.2) is False
    assert 0.15 < time.monotonic() - started < 10


def test_a_set_event_wakes_its_waiter_and_a_cancelled_timeout_never_fires():
    event = hub.Event()
    timeout = hub.Timeout(0.3)
    timeout.cancel()
    threading.Timer(0.1, event.set).start()
    assert event.wait() is True
    hub.sleep(0.4)  # past the cancelled deadline: nothing raised


def test_timeout_false_in_a_with_block_is_swallowed_and_ends_a_sleep():
    started = time.monotonic()
    with hub.Timeout(0.2, False):
        hub.sleep(30)
    assert time.monotonic() - started < 10


def test_timeout_with_an_exception_raises_that_exception():
    with pytest.raises(OSError), hub.Timeout(0.1, OSError):
        hub.Event().wait()


def test_timeouts_belong_to_the_thread_that_armed_them():
    """Another thread's expired timer does not interrupt this thread's wait."""
    def arm_and_leave():
        native_hub.Timeout(0.05)

    other = threading.Thread(target=arm_and_leave)
    other.start()
    other.join()
    time.sleep(0.1)
    assert hub.Event().wait(timeout=0.2) is False
    native_hub._ARMED.clear()


def _forever(event):
    while True:
        event.wait()
        event.clear()


def _sleeper():
    while True:
        hub.sleep(2)


@pytest.mark.parametrize("target", ["event", "sleep"])
def test_kill_then_joinall_ends_a_thread_looping_for_ever(target):
    """stplib's PortThread.stop: `hub.kill(t); hub.joinall([t])` on its looping port threads. The
    native hub's kill did nothing, so the join never returned and froze the STP app."""
    thread = hub.spawn(_forever, hub.Event()) if target == "event" else hub.spawn(_sleeper)
    time.sleep(0.1)
    started = time.monotonic()
    hub.kill(thread)
    finisher = threading.Thread(target=hub.joinall, args=([thread],), daemon=True)
    finisher.start()
    finisher.join(10)
    assert not finisher.is_alive(), "joinall did not return after kill"
    assert time.monotonic() - started < 10
    assert thread.ident not in native_hub._KILLED  # bookkeeping left with the thread


def test_an_app_catching_exception_does_not_swallow_a_kill():
    ended = threading.Event()

    def stubborn():
        try:
            while True:
                with contextlib.suppress(Exception):  # what app code does; Killed is not an Exception
                    hub.sleep(5)
        finally:
            ended.set()

    thread = hub.spawn(stubborn)
    time.sleep(0.1)
    hub.kill(thread)
    assert ended.wait(10)


def test_an_exception_in_a_handler_is_logged_and_the_apps_event_loop_goes_on(caplog):
    """With the native hub's TaskExit = Exception, os-ken's event loop re-raised every handler
    exception as a 'task exit': the app's loop ended silently at the first bad event."""
    from os_ken.base import app_manager
    from os_ken.controller import event as osken_event
    from os_ken.controller.handler import register_instance, set_ev_cls

    class Ping(osken_event.EventBase):
        def __init__(self, fail: bool) -> None:
            super().__init__()
            self.fail = fail

    handled: list[bool] = []

    class Fragile(app_manager.OSKenApp):
        @set_ev_cls(Ping)
        def on_ping(self, ev):
            handled.append(ev.fail)
            if ev.fail:
                raise NameError("name 'buffer' is not defined")

    app = Fragile()
    register_instance(app)  # what AppManager does when it instantiates an app
    app.start()
    try:
        for fail in (True, False):
            app._send_event(Ping(fail), None)
        deadline = time.monotonic() + 10
        while len(handled) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handled == [True, False], "the event after the failing one was never handled"
        assert "name 'buffer' is not defined" in caplog.text
    finally:
        app.stop()
