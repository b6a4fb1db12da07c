"""Crash paths of `picloud up` with its controller running: kill -9 then `picloud clean`, a real
SIGINT, and a detached run that `picloud clean` must leave alone unless --force.

Each test cleans only its own run (`--run PREFIX`): the machine may carry other people's runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from picloud.errors import FabricError
from picloud.runstate import RunState
from tests.integration.sigint import default_sigint
from topology.effects import proc

pytestmark = pytest.mark.root
PICLOUD = [sys.executable, "-m", "picloud"]
SPEC = ["up", "linear:2"]  # two switches, PiCloud's controller with its default apps


def start_up(*extra: str) -> tuple[subprocess.Popen, str]:
    """`picloud up` in the foreground; returns once it printed that the run is up (controller ready)."""
    child = subprocess.Popen(PICLOUD + SPEC + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True, preexec_fn=default_sigint)
    line = child.stdout.readline()  # "picloud: run pcN up: ..." once the controller holds every switch
    if "up:" not in line:
        child.kill()
        _, err = child.communicate(timeout=60)
        pytest.fail(f"picloud up did not come up: {line!r} {err[-2000:]}")
    return child, line.split("run ")[1].split()[0]


def identity(prefix: str) -> tuple:
    """What tells this run from a later one under the same prefix: its creation stamp and owner."""
    state = RunState.load(prefix)
    return state.created, state.extra.get("owner")


def force_clean_if_still_ours(prefix: str, created: tuple) -> None:
    """`picloud clean --run PREFIX --force`, only while PREFIX still names the run this test made
    (same `identity`): once that run is gone, the prefix may be another checkout's live run on
    the same host, which a blind --force would tear down under it."""
    try:
        still = identity(prefix) == created
    except FabricError:
        return  # no state file: nothing of ours left under that name
    if still:
        subprocess.run(PICLOUD + ["clean", "--run", prefix, "--force"], capture_output=True, timeout=180)


def run_processes(prefix: str) -> list[proc.ProcessRecord]:
    return [proc.ProcessRecord.from_dict(r) for r in RunState.load(prefix).objects.get("pids", [])]


def ovs_interfaces(prefix: str) -> list[str]:
    out = subprocess.run(["ovs-vsctl", "--bare", "--columns=name", "list", "Interface"], capture_output=True,
                         text=True).stdout.split()
    return [n for n in out if n.startswith(tuple(prefix + k for k in "spct"))]


def assert_gone(prefix: str, processes: list[proc.ProcessRecord], system_objects) -> None:
    left = system_objects(prefix)
    assert not any(left.values()), f"run {prefix} left {left}"
    assert ovs_interfaces(prefix) == [], f"run {prefix} left OVS ports {ovs_interfaces(prefix)}"
    alive = [r for r in processes if proc.is_ours(r)]
    assert not alive, f"run {prefix} left processes {alive}"


def test_kill_9_of_up_with_its_controller_running_then_clean_leaves_nothing(leaves_nothing, system_objects):
    child, prefix = start_up()
    leaves_nothing.append(prefix)
    processes, created = run_processes(prefix), identity(prefix)
    try:
        assert any(r.role == "controller" for r in processes) and all(proc.is_ours(r) for r in processes)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert any(proc.is_ours(r) for r in processes), "the controller should outlive its killed parent"
        res = subprocess.run(PICLOUD + ["clean", "--run", prefix], capture_output=True, text=True, timeout=180)
        assert res.returncode == 0 and prefix in res.stdout, res.stdout + res.stderr
        assert_gone(prefix, processes, system_objects)
    finally:
        force_clean_if_still_ours(prefix, created)


def test_a_real_sigint_to_up_tears_the_run_down(leaves_nothing, system_objects):
    child, prefix = start_up()
    leaves_nothing.append(prefix)
    processes, created = run_processes(prefix), identity(prefix)
    try:
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        assert "tearing down" in out
        assert_gone(prefix, processes, system_objects)
    finally:
        if child.poll() is None:
            child.kill()
        force_clean_if_still_ours(prefix, created)


def test_clean_leaves_a_live_detached_run_alone_unless_forced(leaves_nothing, system_objects):
    res = subprocess.run(PICLOUD + SPEC + ["--detach"], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    prefix = res.stdout.split("run ")[1].split()[0]
    leaves_nothing.append(prefix)
    processes, created = run_processes(prefix), identity(prefix)
    objects = system_objects(prefix)
    try:
        # `--run` only: a bare `picloud clean` here would also remove other checkouts' runs on this
        # host that are dead on purpose (a crash-path test between its kill and its own clean).
        # The bare form's choice of live runs is tests/unit/test_clean_liveness.py's, on its own state dir.
        res = subprocess.run(PICLOUD + ["clean", "--run", prefix], capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr
        assert prefix not in res.stdout and f"run {prefix} is detached" in res.stderr, res.stdout + res.stderr
        # Left alone: every object and process of the run is still there, and its state file.
        assert system_objects(prefix) == objects and all(proc.is_ours(r) for r in processes)
        assert RunState.load(prefix).objects.get("pids")
        res = subprocess.run(PICLOUD + ["clean", "--run", prefix, "--force"], capture_output=True, text=True,
                             timeout=180)
        assert res.returncode == 0 and prefix in res.stdout, res.stdout + res.stderr
        assert_gone(prefix, processes, system_objects)
    finally:
        force_clean_if_still_ours(prefix, created)
