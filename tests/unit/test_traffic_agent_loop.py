"""The agent's epoll loop: timers in time order (cancelled ones skipped), readiness callbacks, and
a descriptor's reader and writer kept apart."""

from __future__ import annotations

import socket
import time

from traffic.agent_loop import Loop


def test_timers_fire_in_order_and_cancelled_ones_do_not():
    loop = Loop()
    fired: list[str] = []
    now = loop.time()
    loop.call_at(now + 0.02, fired.append, "late")
    loop.call_at(now + 0.01, fired.append, "early")
    loop.call_at(now + 0.015, fired.append, "cancelled").cancel()
    loop.call_at(now + 0.01, fired.append, "early-second")  # same time: in the order scheduled
    loop.run(lambda: len(fired) >= 3)
    assert fired == ["early", "early-second", "late"]
    assert loop.time() >= now + 0.02  # never before its time
    loop.close()


def test_reader_and_writer_on_one_descriptor():
    loop = Loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[bytes] = []
    writable: list[int] = []

    def on_write() -> None:
        writable.append(1)
        loop.remove_writer(a.fileno())  # the reader stays
        b.send(b"ping")

    loop.add_reader(a.fileno(), lambda: got.append(a.recv(16)))
    loop.add_writer(a.fileno(), on_write)
    loop.run(lambda: bool(got))
    assert got == [b"ping"] and writable == [1]
    assert loop.remove_reader(a.fileno()) and not loop.remove_reader(a.fileno())
    b.send(b"unheard")
    loop.call_at(time.monotonic() + 0.02, got.append, b"timer")
    loop.run(lambda: len(got) == 2)
    assert got == [b"ping", b"timer"]  # no reader left: the data waits in the socket
    a.close()
    b.close()
    loop.close()
