"""The traffic agent's event loop: one epoll set and one timer heap, nothing else.

asyncio's loop spends more per callback than a 1,000-byte flow costs the kernel: a Handle and a
contextvars run per dispatch, a selector key lookup and transport check per add/remove, a ready
queue per iteration. At thousands of flows per second per agent on two shared cores that overhead
is the difference between starting flows on time and falling behind, so the agent's hot path runs
here: readiness callbacks straight from epoll, timers from a heap. The method names are asyncio's
(`time`, `call_at`, `add_reader`, `remove_reader`, `add_writer`, `remove_writer`), so the client
and server code reads the same and runs on either.

Timers fire at most about a millisecond late on an idle host: epoll_wait() takes whole
milliseconds (CPython rounds the timeout up), and waking earlier to spin would burn a core that
the datapath and the other agents share.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import select
import time
from collections.abc import Callable
from typing import Any

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class Timer:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """Run with `run(until)`: returns once `until()` is true after a round of callbacks."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.readers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self.writers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self.masks: dict[int, int] = {}
        self.timers: list[tuple[float, int, Timer]] = []
        self.seq = itertools.count()

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(when, callback, args)
        heapq.heappush(self.timers, (when, next(self.seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(time.monotonic() + delay, callback, *args)

    def _update(self, fd: int, mask: int) -> None:
        old = self.masks.get(fd, 0)
        if mask == old:
            return
        if not mask:
            del self.masks[fd]
            with contextlib.suppress(OSError):  # already closed: the kernel dropped it from the set
                self.epoll.unregister(fd)
            return
        self.masks[fd] = mask
        if old:
            self.epoll.modify(fd, mask)
        else:
            self.epoll.register(fd, mask)

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self.readers[fd] = (callback, args)
        self._update(fd, self.masks.get(fd, 0) | _IN)

    def remove_reader(self, fd: int) -> bool:
        if self.readers.pop(fd, None) is None:
            return False
        self._update(fd, self.masks.get(fd, 0) & ~_IN)
        return True

    def add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self.writers[fd] = (callback, args)
        self._update(fd, self.masks.get(fd, 0) | _OUT)

    def remove_writer(self, fd: int) -> bool:
        if self.writers.pop(fd, None) is None:
            return False
        self._update(fd, self.masks.get(fd, 0) & ~_OUT)
        return True

    def run(self, until: Callable[[], bool]) -> None:
        timers, readers, writers, poll = self.timers, self.readers, self.writers, self.epoll.poll
        while not until():
            timeout = -1.0
            if timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            for fd, events in poll(timeout):
                # A writer first: a connect() completes as writable, and its callback installs the reader.
                if events & (_OUT | _ERR) and fd in writers:
                    callback, args = writers[fd]
                    callback(*args)
                if events & (_IN | _ERR) and fd in readers:
                    callback, args = readers[fd]
                    callback(*args)
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _when, _n, timer = heapq.heappop(timers)
                if not timer.cancelled:
                    timer.callback(*timer.args)

    def close(self) -> None:
        self.epoll.close()
