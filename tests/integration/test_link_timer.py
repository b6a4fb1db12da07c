"""traffic.link_timer: a scenario's link cuts from a process of their own, on real kernel devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces (CI runs as root)")


def _up(name: str, ns: str | None) -> bool:
    argv = ["ip", "-j", "link", "show", name]
    if ns:
        argv = ["ip", "-n", ns, *argv[1:]]
    info = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)[0]
    return "UP" in info["flags"]


@pytest.fixture
def veth():
    """A veth pair with one end in the root namespace and one in a namespace, both up."""
    ns, a, b = "ltimn0", "ltimv0a", "ltimv0b"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns], check=True)
        subprocess.run(["ip", "link", "set", a, "up"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", b, "up"], check=True)
        yield [(a, None), (b, ns)]
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _timer() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "traffic.link_timer"], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_steps_are_applied_in_time_order_never_early_and_reported(veth) -> None:
    devices = [list(d) for d in veth]
    steps = [{"i": 0, "t": 0.3, "up": False, "devices": devices},
             {"i": 2, "t": 0.9, "up": False, "devices": devices[:1]},
             {"i": 1, "t": 0.6, "up": True, "devices": devices}]
    timer = _timer()
    timer.stdin.write(json.dumps({"steps": steps}) + "\n")
    timer.stdin.flush()
    ready = json.loads(timer.stdout.readline())
    assert ready["ready"] is True and ready["realtime"] is True  # root may ask for SCHED_FIFO
    t0 = time.monotonic() + 0.2
    timer.stdin.write(json.dumps({"t0": t0}) + "\n")
    timer.stdin.flush()
    first = json.loads(timer.stdout.readline())
    # After the first step both ends are down (nothing else touches these devices).
    assert first["i"] == 0 and first["error"] is None
    assert not _up(*veth[0]) and not _up(*veth[1])
    rest = [json.loads(timer.stdout.readline()) for _ in range(3)]
    assert timer.wait(30) == 0
    assert [m.get("i") for m in rest] == [1, 2, None] and rest[-1] == {"end": True}
    for msg, step in zip([first, *rest[:2]], sorted(steps, key=lambda s: s["t"]), strict=True):
        assert msg["applied"] >= t0 + step["t"]  # never before its planned time
        assert msg["done"] >= msg["applied"]
    assert not _up(*veth[0]) and _up(*veth[1])  # step 2 took only the root end down again


def test_a_missing_device_is_that_steps_error_and_the_timeline_goes_on(veth) -> None:
    steps = [{"i": 0, "t": 0.1, "up": False, "devices": [["ltimnone", None]]},
             {"i": 1, "t": 0.2, "up": False, "devices": [list(veth[0])]}]
    timer = _timer()
    timer.stdin.write(json.dumps({"steps": steps}) + "\n" + json.dumps({"t0": time.monotonic()}) + "\n")
    timer.stdin.flush()
    out = timer.communicate(timeout=30)[0].splitlines()
    msgs = [json.loads(x) for x in out[1:]]
    assert "ltimnone" in msgs[0]["error"] and msgs[1]["error"] is None and msgs[2] == {"end": True}
    assert not _up(*veth[0])


def test_closing_stdin_before_t0_applies_nothing(veth) -> None:
    timer = _timer()
    out, _ = timer.communicate(json.dumps({"steps": [{"i": 0, "t": 0.0, "up": False,
                                                       "devices": [list(veth[0])]}]}) + "\n", timeout=30)
    assert timer.returncode == 0 and json.loads(out.splitlines()[0])["ready"] is True
    assert _up(*veth[0])
