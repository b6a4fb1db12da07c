"""The sandbox's claim that it needs no root (tests/ovs_sandbox.py), checked: run as root, the
suite starts a second sandbox whose daemons run as user `nobody` and builds a plan's bridges in
it; run unprivileged, the session's own sandbox already is the proof."""

from __future__ import annotations

import os
import pwd
import shutil

import pytest
from ovs_sandbox import OvsSandbox, sandbox

from topology.builders import build
from topology.effects import ovs as ovs_effects
from topology.fabric_plan import plan_fabric


def test_the_sandbox_daemons_run_without_root(ovs: OvsSandbox) -> None:
    if os.geteuid() != 0:
        assert set(ovs.daemon_uids().values()) == {os.geteuid()}
        return
    if shutil.which("runuser") is None:
        pytest.skip("needs runuser (util-linux) to drop root: run 'make setup'")
    nobody = pwd.getpwnam("nobody").pw_uid
    plan = plan_fabric(build("single:2", 1), "pc7", datapath="dummy")
    with sandbox(as_user="nobody") as box:
        assert box.daemon_uids() == {"ovsdb-server": nobody, "ovs-vswitchd": nobody}
        txn = ovs_effects.Transaction(db=box.db)
        ovs_effects.add_fabric(txn, plan)
        txn.commit(timeout=60)
        for bridge in plan.bridges:
            assert box.ofports(bridge.name) == {p.name: p.ofport for p in bridge.ports}
