"""Shared fixtures for integration tests: they prove a test left nothing of its own behind."""

from __future__ import annotations

import json
import subprocess

import pytest

from picloud.runstate import list_runs


def system_objects(prefix: str) -> dict[str, list[str]]:
    """Every netns, link and OVS bridge whose name starts with a run prefix and its kind letter."""
    def names(argv: list[str], key: str) -> list[str]:
        out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        return [e[key] for e in json.loads(out)] if out else []

    starts = tuple(prefix + k for k in "spct")
    netns = [n for n in names(["ip", "-j", "netns", "list"], "name") if n.startswith(starts)]
    links = [n for n in names(["ip", "-j", "link", "show"], "ifname") if n.startswith(starts)]
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    return {"netns": netns, "links": links, "bridges": [b for b in bridges if b.startswith(starts)]}


@pytest.fixture(name="system_objects")
def system_objects_fixture():
    return system_objects


@pytest.fixture
def leaves_nothing():
    """Yields a list the test appends its run prefixes to; afterwards none of their objects exist."""
    prefixes: list[str] = []
    before = set(list_runs())
    yield prefixes
    for prefix in prefixes:
        left = system_objects(prefix)
        assert not any(left.values()), f"run {prefix} left objects behind: {left}"
        assert prefix not in set(list_runs()) - before, f"run {prefix} left its state file"
