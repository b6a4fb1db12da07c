"""The scenario's timing threads run SCHED_FIFO, and what they spawn (`tc`, `ip`) does not."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from traffic.scenario_run import RT_PRIORITY, realtime_thread


def _in_thread(fn):
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(fn()))
    t.start()
    t.join(10)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs CAP_SYS_NICE (root); CI runs as root")
def test_the_calling_thread_becomes_fifo_and_its_children_ordinary() -> None:
    def body() -> dict:
        ok = realtime_thread()
        tid = threading.get_native_id()
        child = subprocess.run(["sh", "-c", "chrt -p $$"], capture_output=True, text=True, timeout=10).stdout
        return {"ok": ok, "policy": os.sched_getscheduler(tid), "prio": os.sched_getparam(tid).sched_priority,
                "child": child}

    got = _in_thread(body)
    assert got["ok"] is True
    assert got["policy"] & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO and got["prio"] == RT_PRIORITY
    assert "SCHED_OTHER" in got["child"], got["child"]
    # Only that thread: the process's main thread is still an ordinary one.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_refusal_leaves_the_thread_ordinary_and_says_false() -> None:
    got = _in_thread(lambda: {"ok": realtime_thread(priority=100)})  # 100 is out of SCHED_FIFO's 1-99
    assert got["ok"] is False
