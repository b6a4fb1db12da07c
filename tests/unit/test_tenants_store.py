"""The YAML plan file: round trip, atomic save, and one-line errors that name the key."""

from __future__ import annotations

import pytest
from test_tenants_plan import racks_topology

from picloud.errors import TenantError
from tenants import plan as P
from tenants import store
from tenants.model import TenantPlan


def sample() -> TenantPlan:
    topo = racks_topology()
    plan = P.create_tenant(TenantPlan(), "blue", ["10.0.0.0/24", "10.0.1.0/24"], rate=20)
    plan = P.create_tenant(plan, "red", "10.0.0.0/24")
    plan = P.create_tenant(plan, "green", "10.7.0.0/24")
    plan, _ = P.add_members(plan, topo, "blue", 3)
    plan, _ = P.add_members(plan, topo, "red", 2, placement="pack")
    plan = P.set_port(plan, "red-1", 7)
    return P.add_peering(plan, "blue", "green")


def test_round_trip_is_identical(tmp_path):
    plan = sample()
    path = tmp_path / "pc1.tenants.yaml"
    store.save(plan, path)
    assert store.load(path) == plan
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_file_is_empty_plan(tmp_path):
    assert store.load(tmp_path / "none.yaml") == TenantPlan()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants: [{name: a, id: 1, subnets: [10.0.0/24]}]", r"tenant 'a': invalid CIDR '10.0.0/24'"),
        ("tenants: [{name: a, id: 1, subnets: [10.0.0.0/24], colour: red}]", r"unknown key 'colour'"),
        ("tenants: [{name: a, subnets: [10.0.0.0/24]}]", r"tenants\[0\]: missing key 'id'"),
        ("tenants: [{name: a, id: 1, subnets: [10.0.0.0/24]}, {name: a, id: 2, subnets: [10.1.0.0/24]}]",
         r"tenant 'a': duplicate tenant"),
        ("tenants: [{name: a, id: 1, subnets: [10.0.0.0/24]}, {name: b, id: 1, subnets: [10.1.0.0/24]}]",
         r"tenant 'b': duplicate id 1"),
        ("tenants: [{name: a, id: 1, subnets: [10.0.0.0/24], rate: -3}]", r"rate -3 must be a positive"),
        ("tenants: [{name: a, id: 1, subnets: [10.0.0.0/24], members: [{name: a-1, pi: p, ip: 10.9.0.2, "
         "mac: '0a:00:01:00:00:01'}]}]", r"member 'a-1': ip 10.9.0.2 is not in its subnet"),
        ("tenants: [{name: a, id: 1, subnets: [10.0.0.0/24]}]\npeerings: [[a, zz]]", r"peering 'a'-'zz': unknown"),
        ("tenants: [a: b: c", r"not valid YAML"),
        ("version: 2", r"version 2 is not supported"),
    ],
)
def test_bad_files_fail_with_one_line(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TenantError, match=message) as info:
        store.load(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_run_tenants_path_sits_beside_the_state_file(tmp_path):
    class State:
        prefix = "pc3"
        path = tmp_path / "pc3.json"

    path = store.run_tenants_path(State())
    assert path == tmp_path / "pc3.tenants.yaml"
    assert store.load(path) == TenantPlan() and path.exists()  # the controller may read it at once
    store.save(sample(), path)
    assert store.run_tenants_path(State()) == path and store.load(path) == sample()  # never overwritten
