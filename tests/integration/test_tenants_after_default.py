"""The sequence the demo runs (issue 12): the default network's containers talk to each other first
(`picloud ping`, so the controller has seen their traffic), then two tenants are created on the same
10.0.0.0/24 as the default containers' 10.0.0.k/8 and verified. Each network is its own address
space: what the controller knows about the default hosts must never cut a tenant member off.

Run through the CLI against a detached run, exactly as a user types it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def picloud(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picloud", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_tenants_created_after_the_default_network_talked_reach_all_their_pairs(leaves_nothing):
    up = picloud("up", "picloud:4,4", "--containers-per-pi", "2", "--detach")
    assert up.returncode == 0, up.stderr
    prefix = re.search(r"run (\S+) up", up.stdout + up.stderr).group(1)
    leaves_nothing.append(prefix)
    try:
        ping = picloud("ping", "--run", prefix)
        # TCP retries a pair that failed; it proves the default network works before tenants come.
        assert "tcp: 992/992 ordered pairs reachable" in ping.stdout + ping.stderr, ping.stdout + ping.stderr
        for tenant in ("red", "blue"):
            for args in (["create", tenant, "--subnet", "10.0.0.0/24"], ["add", tenant, "--count", "8", "--spread"]):
                result = picloud("tenant", *args, "--run", prefix)
                assert result.returncode == 0, result.stderr
        verify = picloud("tenant", "verify", "--json", "--run", prefix)
        report = json.loads(verify.stdout)
        assert report["leaks"] == [], report["leaks"]
        for tenant in ("red", "blue"):
            reach = report["reachability"][tenant]
            assert reach["pairs"] == 56 and reach["failed"] == [], (tenant, reach)
        assert verify.returncode == 0 and report["ok"]
    finally:
        down = picloud("down", "--run", prefix)
        assert down.returncode == 0, down.stderr
