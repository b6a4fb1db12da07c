"""The demo's interrupt is remembered, not only raised: Python prints and swallows a KeyboardInterrupt
raised while the main thread runs a finaliser, and a CI run saw the demo go on to the end after one."""

from __future__ import annotations

import gc
import signal
from pathlib import Path

import pytest

from picloud.demo import DemoRun, _step


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_swallowed_interrupt_still_stops_the_demo_at_the_next_step(tmp_path: Path) -> None:
    run = DemoRun(duration=None, traffic_seconds=10, out=tmp_path)

    class Finaliser:
        def __del__(self) -> None:
            run.interrupt(signal.SIGINT, None)  # as if the signal arrived inside the finaliser

    def step() -> str:
        Finaliser()
        gc.collect()
        return "done"  # the KeyboardInterrupt was swallowed: the step itself completed

    with pytest.raises(KeyboardInterrupt):
        _step(run, "a step", step)
    ran: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _step(run, "the next step", lambda: ran.append("x") or None)
    assert ran == []


def test_an_uninterrupted_step_runs() -> None:
    run = DemoRun(duration=None, traffic_seconds=10, out=Path("."))
    _step(run, "a step", lambda: "ok")
    assert not run.interrupted
