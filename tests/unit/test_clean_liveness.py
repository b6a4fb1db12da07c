"""`picloud clean` leaves live runs alone: which runs count as live (real processes, no root)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from picloud.clean import live_reason
from picloud.runstate import RunState
from topology.effects import proc


@pytest.fixture
def alive():
    """A real process standing in for an owner or a controller, and its record."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.record(child, "controller").to_dict()
    child.kill()
    child.wait()


@pytest.fixture
def dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    record = proc.record(child, "controller").to_dict()
    child.wait()
    return record


def state(**kw) -> RunState:
    s = RunState(prefix="pc99")
    s.objects["pids"] = kw.pop("pids", [])
    s.extra.update(kw)
    return s


def test_a_run_whose_owner_lives_is_live(alive, dead):
    assert "in use by PID" in live_reason(state(owner=alive, pids=[dead]))


def test_a_killed_owner_leaves_a_leftover_even_with_its_controller_alive(alive, dead):
    """kill -9 of `picloud up`: its controller keeps running, but the run is debris."""
    assert live_reason(state(owner=dead, pids=[alive])) is None


def test_a_detached_run_is_live_while_its_controller_runs(alive, dead):
    assert "detached" in live_reason(state(detached=True, pids=[alive]))
    assert live_reason(state(detached=True, pids=[dead])) is None


def test_a_detached_run_without_processes_stays_until_picloud_down():
    assert "picloud down" in live_reason(state(detached=True))


def test_clean_leaves_a_live_run_and_force_removes_it(monkeypatch, tmp_path, alive):
    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path))
    import picloud.clean as clean_mod

    removed = []
    monkeypatch.setattr(clean_mod, "clean_state", lambda s: removed.append(s.prefix))
    monkeypatch.setattr(clean_mod.ovs, "running", lambda: False)
    s = state(detached=True, pids=[alive])
    s.save()
    assert clean_mod.clean() == [] and removed == []
    assert clean_mod.clean(["pc99"]) == [] and removed == []
    assert clean_mod.clean(["pc99"], force=True) == ["pc99"] and removed == ["pc99"]


def test_terminate_returns_only_once_a_process_that_ignores_sigterm_is_gone():
    """After the grace, SIGKILL; terminate waits until the process has exited and been reaped, so a
    check right after it ("no process of the run is left") cannot see it still dying."""
    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"  # SIGTERM is ignored from here on
        rec = proc.record(child, "controller")
        assert proc.terminate(rec, grace=0.2)
        assert not proc.is_ours(rec)
        assert proc.start_ticks(child.pid) is None  # our own child: collected, not left a zombie
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_zombie_of_another_process_is_not_alive_and_terminate_does_not_wait_for_it(monkeypatch):
    """`picloud down` in a second terminal ends the controller `picloud up` (another process)
    started; once it exits it is that process's zombie until collected. It is not running: terminate
    sends SIGTERM only and returns at once (it waited 13 s, the grace then SIGKILL then KILL_WAIT_S)."""
    parent = subprocess.Popen([sys.executable, "-c", "import os, time\npid = os.fork()\nif pid == 0:\n"
                               "    time.sleep(60)\nprint(pid, flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        rec = proc.ProcessRecord(pid, proc.start_ticks(pid) or -1, "python", "controller")
        assert proc.is_ours(rec)
        sent: list[int] = []
        kill = os.kill
        monkeypatch.setattr(proc.os, "kill", lambda p, sig: (sent.append(sig), kill(p, sig)))
        assert proc.terminate(rec, grace=5.0)  # returns within the grace: no SIGKILL below
        assert sent == [signal.SIGTERM]
        assert proc.start_ticks(pid) == rec.start_ticks  # still there, a zombie of `parent`...
        assert not proc.is_ours(rec)  # ...and not counted as running
    finally:
        parent.kill()
        parent.wait()
