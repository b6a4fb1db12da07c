"""The controller process itself: ready line, REST API up, clean exit on SIGTERM, one-line errors
with exit 2, and an os-ken app talking OpenFlow to a real OVS bridge of the run."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ryu_apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*args: str) -> tuple[subprocess.Popen, int, int]:
    of_port, api_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "controller_apps.runner", *args,
                             "--listen", f"127.0.0.1:{of_port}", "--api", f"127.0.0.1:{api_port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, of_port, api_port


def wait_ready(proc: subprocess.Popen, timeout: float = 15.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "picloud controller ready" in line:
            return lines
    raise AssertionError("no ready line:\n" + "".join(lines))


def test_runner_serves_api_and_exits_cleanly_on_sigterm():
    # As on a ryu-manager command line: Ryu's REST app next to the apps; our API serves it.
    proc, of_port, api_port = start("ryu.app.ofctl_rest", "l2_learning", str(FIXTURES / "ryu_hub.py"))
    try:
        lines = wait_ready(proc)
        assert f"openflow tcp:127.0.0.1:{of_port}" in lines[-1]
        assert any("ryu.app.ofctl_rest: served by PiCloud's controller API already" in line for line in lines)
        assert requests.get(f"http://127.0.0.1:{api_port}/stats/switches", timeout=5).json() == []
        assert requests.get(f"http://127.0.0.1:{api_port}/state", timeout=5).json()["switches"] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{api_port}/state", timeout=2)


@pytest.mark.parametrize(("app", "expected"), [
    (str(FIXTURES / "needs_websocket.py"), "ryu.app.wsgi.websocket: WebSocket routes are not provided"),
    (str(FIXTURES / "broken_syntax.py"), "broken_syntax.py:3: syntax error"),
    ("no_such_app", "no such built-in app or module"),
    ("/nonexistent/app.py", "no such file"),
])
def test_bad_app_is_one_line_and_exit_2(app, expected):
    result = subprocess.run([sys.executable, "-m", "controller_apps.runner", app, "--listen",
                             f"127.0.0.1:{free_port()}", "--api", "none"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert result.stderr.startswith("picloud controller: error: app ")


def test_busy_port_is_refused_before_starting():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "controller_apps.runner", "l2_learning", "--listen",
                                 f"127.0.0.1:{port}", "--api", "none"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "cannot listen" in result.stderr


def test_picloud_controller_cli_reports_errors_like_the_runner():
    result = subprocess.run([sys.executable, "-m", "picloud", "controller", "nope", "--api", "none"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("picloud: error: app 'nope': no such built-in app or module "
                                     "(built-ins: l2_learning, discovery, routing, monitor, tenancy)")


@pytest.mark.root
def test_l2_learning_run_by_testbed_fills_state_with_named_switches(leaves_nothing):
    from picloud.testbed import Testbed

    with Testbed("linear:3", controller=["l2_learning"]) as tb:
        leaves_nothing.append(tb.prefix)
        matrix = tb.ping_all(tcp=True)
        assert all(loss == 0.0 for row in matrix.values() for loss in row.values()), matrix
        state = requests.get(tb.controller_api + "/state", timeout=5).json()
        assert sorted(s["name"] for s in state["switches"] if s["connected"]) == sorted(tb.topology.bridges)
        # l2_learning runs alone: no pipeline, everything in table 0 under its cookie.
        assert {f["table_id"] for f in tb.flows("s2")} == {0}
