"""Test tiers: unit tests always run; root, browser and docker tests skip with a reason elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    return subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode == 0


def _docker_running() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    reasons = {}
    if os.geteuid() != 0:
        reasons["root"] = "needs root (network namespaces and OVS); CI runs as root"
    elif not _ovs_running():
        reasons["root"] = "needs a running Open vSwitch: run 'make setup' (starts ovs-vswitchd)"
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
        reasons["browser"] = "needs Debian's chromium: run 'make setup'"
    if any("docker" in item.keywords for item in items) and not _docker_running():
        reasons["docker"] = "needs a running Docker engine: run 'make setup' (starts dockerd)"
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
