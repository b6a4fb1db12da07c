"""The main job, end to end: `picloud demo --duration 30` exits 0 and leaves nothing behind, on its
own and right after the ping and tenant sequence that once broke it (issue 12) on the same host
and Open vSwitch.

The demo is run as the user runs it (a `picloud` process), on a free UI port and its own results
directory, so it does not collide with other runs on a shared machine."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from picloud.runstate import list_runs

pytestmark = [pytest.mark.root, pytest.mark.slow]
PICLOUD = [sys.executable, "-m", "picloud"]
DEMO_TIMEOUT_S = 1500  # measured 3-6 min on this two-core host; the demo itself bounds its steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(out: Path, system_objects) -> str:
    """Run the demo, assert it passed and left nothing; returns its output."""
    before = set(list_runs())
    child = subprocess.Popen(PICLOUD + ["demo", "--duration", "30", "--out", str(out), "--port", str(free_port())],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = child.communicate(timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
        pytest.fail(f"the demo ran over {DEMO_TIMEOUT_S} s:\n{output[-4000:]}")
    tail = "\n".join(output.splitlines()[-40:])
    assert child.returncode == 0, f"demo exit {child.returncode}:\n{tail}"
    assert "FAILED" not in output, tail
    prefix = re.search(r"prefix (pc\d+)", output)
    assert prefix, f"the demo never named its run:\n{tail}"
    prefix = prefix.group(1)
    assert prefix not in set(list_runs()) - before, f"the demo left its run {prefix}'s state file"
    left = system_objects(prefix)
    assert not any(left.values()), f"the demo left {left}"
    ui = subprocess.run(["pgrep", "-f", f"picloud ui --run {prefix}( |$)"], capture_output=True, text=True).stdout
    assert not ui.strip(), f"the demo left its UI process(es) {ui.split()}"
    return output


def test_demo_end_to_end(tmp_path, system_objects):
    output = run_demo(tmp_path / "demo", system_objects)
    assert "verify tenant isolation" in output
    # The scale model is shaped like its hardware, and the run says whether its numbers can be trusted.
    assert "Pi uplinks shaped to 100 Mbit/s (Raspberry Pi Model B NIC)" in output
    assert re.search(r"fidelity: (faithful|degraded)", output), output[-3000:]
    # The link cut is a scenario: both events applied and logged, and the run recorded for replay.
    events = (tmp_path / "demo" / "events.csv").read_text().splitlines()
    assert len(events) == 3 and all(",ok," in line for line in events[1:]), events
    assert (tmp_path / "demo" / "timeline.json").is_file()


def test_demo_right_after_ping_and_tenants_on_the_same_host(tmp_path, system_objects):
    """What `make demo` after `make test` did: the default network's hosts learned by an all-pairs
    check, then tenants overlapping them, then tear down and run the demo."""
    up = subprocess.run(PICLOUD + ["up", "picloud:4,4", "--containers-per-pi", "2", "--detach"],
                        capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stderr
    prefix = up.stdout.split("run ")[1].split()[0]
    try:
        ping = subprocess.run(PICLOUD + ["ping", "--run", prefix], capture_output=True, text=True, timeout=600)
        print(ping.stdout)  # it learns the default network's hosts; its verdict is the fabric tests'
        steps = [["tenant", "create", "red", "--subnet", "10.0.0.0/24", "--run", prefix],
                 ["tenant", "add", "red", "--count", "8", "--spread", "--run", prefix],
                 ["tenant", "create", "blue", "--subnet", "10.0.0.0/24", "--run", prefix],
                 ["tenant", "add", "blue", "--count", "8", "--spread", "--run", prefix]]
        for argv in steps:
            res = subprocess.run(PICLOUD + argv, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, (argv, res.stdout[-2000:], res.stderr[-2000:])
        verify = subprocess.run(PICLOUD + ["tenant", "verify", "--run", prefix], capture_output=True, text=True,
                                timeout=600)
        print(verify.stdout)  # its verdict is the rules tests' to assert; the demo's is this test's
    finally:
        subprocess.run(PICLOUD + ["down", "--run", prefix], capture_output=True, timeout=600)
    assert not any(system_objects(prefix).values())
    run_demo(tmp_path / "demo", system_objects)


def test_demo_stops_on_sigint_even_when_started_with_it_ignored(tmp_path, system_objects):
    """`make demo &` from a script starts the demo with SIGINT ignored (POSIX, for background jobs of
    a non-interactive shell); the demo waits for Ctrl-C at its end, so it restores SIGINT itself
    and `kill -INT` tears it down, as Ctrl-C in a terminal does."""
    child = subprocess.Popen(PICLOUD + ["demo", "--duration", "30", "--out", str(tmp_path / "demo"), "--port",
                                        str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: list[str] = []
    prefix = None
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        assert child.stdout is not None
        while prefix is None and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"prefix (pc\d+)", line)
            prefix = found.group(1) if found else None
        assert prefix, "".join(lines[-40:])
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    output = "".join(lines) + rest
    assert child.returncode == 130, output[-3000:]
    assert "interrupted: tearing down" in output
    left = system_objects(prefix)
    assert not any(left.values()), f"the interrupted demo left {left}"
