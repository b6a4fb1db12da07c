"""A one-line progress bar for a long bring-up, on a terminal only.

`picloud up` of 1,000 containers takes tens of seconds, most of it in a few batched steps, and a
silent terminal for that long looks like a hang. The bar appears only when the bring-up has already
taken `delay` seconds (a small fabric stays silent) and only when the stream is a terminal (logs,
pipes and CI output stay clean). Steps report (stage, done, total); a thread redraws the line,
because the longest steps (one OVSDB transaction, the controller's discovery) report nothing while
they run, and the elapsed time still has to move.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

WIDTH = 24


def silent(stage: str, done: int = 0, total: int = 0) -> None:
    """The progress callback of a bring-up nobody watches."""


def render(stage: str, done: int, total: int, elapsed: float, width: int = WIDTH) -> str:
    """The bar's text: stage, a bar filled to done/total, the counts and the time so far."""
    frac = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
    filled = int(frac * width)
    count = f" {done}/{total}" if total > 0 else ""
    return f"[{'#' * filled}{'.' * (width - filled)}] {stage}{count}  {elapsed:.1f}s"


class BringUpProgress:
    """Callable as progress(stage, done, total); `close()` erases the line. Thread-safe."""

    def __init__(self, stream: TextIO | None = None, delay: float = 3.0, interval: float = 0.25,
                 enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self._is_tty(self.stream) if enabled is None else enabled
        self.delay, self.interval = delay, interval
        self.t0 = time.monotonic()
        self.state = ("starting", 0, 0)
        self.shown = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="picloud-progress", daemon=True)
            self._thread.start()

    @staticmethod
    def _is_tty(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        with self._lock:
            self.state = (stage, done, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self) -> None:
        elapsed = time.monotonic() - self.t0
        if not self.enabled or elapsed < self.delay:
            return
        with self._lock:
            line = render(*self.state, elapsed)
            self.stream.write("\r" + line + "\033[K")
            self.stream.flush()
            self.shown = True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
