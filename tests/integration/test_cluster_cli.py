"""The cluster commands end to end, as a user types them: emulate, check, up, health, down, stop."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from topology.backends.cluster import EmulatedCluster
from topology.effects import ip

pytestmark = pytest.mark.root


def picloud(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "picloud", *args], capture_output=True, text=True, timeout=timeout)


def test_cluster_commands_drive_an_emulated_cluster(tmp_path):
    inventory = tmp_path / "pcclt.yaml"
    prefix = None
    try:
        done = picloud("cluster", "emulate", "start", "pcclt", "--pis", "2", "--subnet", "172.29.2.0/24",
                       "--inventory", str(inventory))
        assert done.returncode == 0, done.stderr
        done = picloud("cluster", "check", str(inventory))
        assert done.returncode == 0 and done.stdout.count(" ok ") == 2, done.stdout
        done = picloud("up", "single:2", "--cluster", str(inventory), "--controller", "none", "--detach")
        assert done.returncode == 0, done.stderr
        prefix = re.search(r"run (pc\d+) up", done.stdout + done.stderr).group(1)
        done = picloud("ping", "--run", prefix)
        assert "tcp: 2/2 ordered pairs reachable" in done.stdout, done.stdout + done.stderr
        # these emulated Pis have no container engine: a capture there is refused in one line naming
        # the Pi, before anything starts (tests/integration/test_cluster_emulated.py captures on Pis
        # that have one)
        done = picloud("capture", "pi2-c1", "--run", prefix, "--seconds", "1", "--out", str(tmp_path / "c.pcapng"))
        assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
        assert re.search(r"pi 'pi\d' has no container engine", done.stderr), done.stderr
        assert not (tmp_path / "c.pcapng").exists()
        EmulatedCluster.load("pcclt").restart_ovs(1, wipe=True)
        done = picloud("cluster", "health", "--run", prefix)
        assert done.returncode == 1 and "differs" in done.stdout
        done = picloud("cluster", "repair", "--run", prefix)
        assert done.returncode == 0 and "repaired: pi2" in done.stdout, done.stdout + done.stderr
    finally:
        if prefix:
            picloud("down", "--run", prefix)
        picloud("cluster", "emulate", "stop", "pcclt")
    assert not {"pcclth", "pcclte0", "pcclte1"} & ip.netns_list()
    done = picloud("cluster", "emulate", "stop", "pcclt")
    assert done.returncode == 2 and "not running" in done.stderr
