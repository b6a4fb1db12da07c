"""The private dummy-datapath OVS (tests/ovs_sandbox.py), one per session: no root, never the
system's OVS. Without the OVS binaries the tests skip, which fails the run under CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ovs_sandbox import OvsSandbox, SandboxUnavailable, sandbox


@pytest.fixture(scope="session")
def ovs() -> Iterator[OvsSandbox]:
    try:
        with sandbox() as box:
            yield box
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def clean_ovs(ovs: OvsSandbox) -> Iterator[OvsSandbox]:
    """The sandbox, with every bridge a test made removed after it."""
    yield ovs
    for bridge in ovs.bridges():
        ovs.vsctl("--if-exists", "del-br", bridge)
