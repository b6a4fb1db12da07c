"""The fabric plan rendered into a real OVS (the private dummy-datapath sandbox): what OVSDB and
ovs-vswitchd hold is what the plan says, port for port."""

from __future__ import annotations

import pytest
from ovs_sandbox import OvsSandbox

from topology.builders import build
from topology.effects import ovs as ovs_effects
from topology.fabric_plan import FabricPlan, plan_fabric


def render(box: OvsSandbox, plan: FabricPlan) -> None:
    txn = ovs_effects.Transaction(db=box.db)
    ovs_effects.add_fabric(txn, plan, inactivity_probe_ms=3000)
    txn.commit(timeout=60)


@pytest.mark.parametrize("kind", ["veth", "patch"])
def test_bridges_ports_and_ofports_are_the_plans(clean_ovs: OvsSandbox, kind: str) -> None:
    box = clean_ovs
    plan = plan_fabric(build("tree:2,2", 2), "pc7", datapath="dummy", fabric_links=kind, of_versions=["13", "14"])
    render(box, plan)
    assert box.bridges() == sorted(b.name for b in plan.bridges)
    for bridge in plan.bridges:
        assert box.ofports(bridge.name) == {p.name: p.ofport for p in bridge.ports}
        assert f"dpid:{bridge.dpid}" in box.ofctl("show", bridge.name)
        assert box.vsctl("get", "Bridge", bridge.name, "external_ids:picloud-run") == "pc7"
        assert box.vsctl("get", "Bridge", bridge.name, "protocols") == "[OpenFlow13, OpenFlow14]"
        assert box.vsctl("get", "Bridge", bridge.name, "fail_mode") == "standalone"
        for port in bridge.ports:
            if kind == "patch" and port.type == "patch":
                assert box.vsctl("get", "Interface", port.name, "type") == "patch"
                assert box.vsctl("get", "Interface", port.name, "options:peer") == port.peer
    patches = [p for b in plan.bridges for p in b.ports if p.type == "patch"]
    assert bool(patches) == (kind == "patch")


def test_controllers_make_secure_bridges_with_the_long_probe(clean_ovs: OvsSandbox) -> None:
    box = clean_ovs
    target = f"unix:{box.dir / 'no-controller.sock'}"  # never listened on: nothing to connect to
    plan = plan_fabric(build("single:1", 1), "pc7", datapath="dummy", controllers=[target])
    render(box, plan)
    for bridge in plan.bridges:
        assert box.vsctl("get", "Bridge", bridge.name, "fail_mode") == "secure"
        assert box.vsctl("get-controller", bridge.name) == target
    assert box.vsctl("--bare", "--columns=inactivity_probe", "list", "Controller").split() == ["3000"] * 2


def test_delete_bridges_removes_the_runs_bridges_only(clean_ovs: OvsSandbox) -> None:
    box = clean_ovs
    render(box, plan_fabric(build("linear:2", 1), "pc7", datapath="dummy"))
    render(box, plan_fabric(build("linear:2", 1), "pc8", datapath="dummy"))
    assert sorted(ovs_effects.bridges_labelled("pc7", db=box.db)) == ["pc7p0", "pc7p1", "pc7s0", "pc7s1"]
    ovs_effects.delete_bridges(ovs_effects.bridges_labelled("pc7", db=box.db), db=box.db)
    assert box.bridges() == ["pc8p0", "pc8p1", "pc8s0", "pc8s1"]


def test_delete_bridges_in_small_transactions_removes_them_all(clean_ovs: OvsSandbox) -> None:
    box = clean_ovs
    render(box, plan_fabric(build("tree:2,2", 2), "pc7", datapath="dummy"))
    render(box, plan_fabric(build("linear:2", 1), "pc8", datapath="dummy"))
    counts = ovs_effects.port_counts(db=box.db)
    mine = ovs_effects.bridges_labelled("pc7", db=box.db)
    assert sum(counts[b] for b in mine) > 12  # so a limit of 4 ports takes several transactions
    assert len(ovs_effects.deletion_batches(sorted(mine), counts, 4)) > 3
    ovs_effects.delete_bridges(sorted(mine), db=box.db, limit=4)
    assert box.bridges() == ["pc8p0", "pc8p1", "pc8s0", "pc8s1"]
