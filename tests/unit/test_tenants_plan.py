"""Tenant planning: ids, allocation, MACs, names, placement and the validation messages."""

from __future__ import annotations

import pytest

from picloud.errors import TenantError
from tenants import plan as P
from tenants.model import TenantPlan, gateway_mac, member_mac
from topology.model import Topology


def racks_topology(racks: int = 4, pis_per_rack: int = 2) -> Topology:
    topo = Topology("racks")
    topo.add_switch("core", role="core")
    for r in range(racks):
        tor = topo.add_switch(f"tor{r}", role="tor")
        topo.add_link("core", tor)
        for i in range(pis_per_rack):
            pi = topo.add_pi(f"pi{r}-{i}", rack=r)
            topo.add_link(tor, pi)
    return topo


def one(name: str = "blue", cidr: str | list[str] = "10.0.0.0/24", **kw) -> TenantPlan:
    return P.create_tenant(TenantPlan(), name, cidr, **kw)


def test_addresses_skip_network_broadcast_and_gateway():
    plan, members = P.add_members(one(cidr="10.0.0.0/29"), racks_topology(), "blue", 5)
    ips = [m.ip for m in members]
    assert ips == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert "10.0.0.0" not in ips and "10.0.0.1" not in ips and "10.0.0.7" not in ips
    with pytest.raises(TenantError, match=r"tenant 'blue': 1 new members do not fit in 10.0.0.0/29 \(0 free"):
        P.add_members(plan, racks_topology(), "blue", 1)


def test_custom_gateway_is_reserved_and_first_host_is_used():
    with pytest.raises(TenantError, match="no subnet"):
        P.create_tenant(TenantPlan(), "blue", [])
    from tenants.model import make_subnet

    s = make_subnet("10.1.0.0/30", "10.1.0.2")
    assert s.gateway == "10.1.0.2"
    with pytest.raises(TenantError, match="not a host address"):
        make_subnet("10.1.0.0/30", "10.1.0.3")


def test_removed_addresses_are_reused_but_names_and_macs_are_not():
    topo = racks_topology()
    plan, first = P.add_members(one(), topo, "blue", 3)
    plan, gone = P.remove_members(plan, "blue", ["blue-2"])
    assert [m.name for m in gone] == ["blue-2"]
    plan, again = P.add_members(plan, topo, "blue", 1)
    assert again[0].ip == first[1].ip  # the lowest free address comes back
    assert again[0].name == "blue-4" and again[0].mac != first[1].mac


def test_macs_are_deterministic_local_unicast_and_not_default_network():
    mac = member_mac(3, 258)
    assert mac == "0a:00:03:00:01:02"
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert not mac.startswith("02:00:00")
    assert gateway_mac(3, 1) == "0e:00:03:00:00:01"
    assert member_mac(4094, 1) != member_mac(4093, 1)


def test_overlapping_tenants_allowed_but_not_within_one():
    plan = one()
    plan = P.create_tenant(plan, "red", "10.0.0.0/24")
    assert [t.id for t in plan.tenants] == [1, 2]
    with pytest.raises(TenantError, match=r"tenant 'green': subnets 10.0.0.0/24 and 10.0.0.128/25 overlap"):
        P.create_tenant(plan, "green", ["10.0.0.0/24", "10.0.0.128/25"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Blue"}, r"^tenant 'Blue': invalid name"),
        ({"cidr": "10.0.0/24"}, r"^tenant 'x': invalid CIDR '10.0.0/24'"),
        ({"cidr": "10.0.0.5/24"}, r"host bits set \(did you mean 10.0.0.0/24\?\)"),
        ({"cidr": "10.0.0.0/31"}, r"too small"),
        ({"cidr": "fd00::/64"}, r"only IPv4"),
        ({"rate": 0}, r"^tenant 'x': rate 0 must be a positive number of Mbit/s$"),
        ({"rate": -5}, r"must be a positive"),
        ({"rate": "fast"}, r"rate 'fast' is not a number"),
        ({"name": "a" * 30}, r"member name 'a{30}-1' has 32|container names are at most"),
    ],
)
def test_bad_input_is_one_line_naming_where(kwargs, message):
    name = kwargs.pop("name", "x")
    cidr = kwargs.pop("cidr", "10.0.0.0/24")
    try:
        P.create_tenant(TenantPlan(), name, cidr, **kwargs)
    except TenantError as exc:
        assert "\n" not in str(exc)
        import re

        assert re.search(message, str(exc)), str(exc)
    else:
        assert name == "a" * 30 and len(f"{name}-1") <= 32  # 32 characters exactly is allowed


def test_name_longer_than_32_with_member_suffix_is_refused():
    with pytest.raises(TenantError, match="container names are at most 32"):
        P.create_tenant(TenantPlan(), "a" * 31, "10.0.0.0/24")


def test_duplicate_tenant_and_id_and_unknown_member():
    plan = one()
    with pytest.raises(TenantError, match="duplicate tenant"):
        P.create_tenant(plan, "blue", "10.9.0.0/24")
    with pytest.raises(TenantError, match="id 1 is already used by tenant 'blue'"):
        P.create_tenant(plan, "red", "10.9.0.0/24", tenant_id=1)
    with pytest.raises(TenantError, match="out of range"):
        P.create_tenant(plan, "red", "10.9.0.0/24", tenant_id=4095)
    with pytest.raises(TenantError, match="no member 'blue-9'"):
        P.remove_members(plan, "blue", ["blue-9"])
    with pytest.raises(TenantError, match="no such tenant"):
        P.add_members(plan, racks_topology(), "nope", 1)


def test_failed_request_leaves_plan_unchanged():
    topo = racks_topology()
    plan = one(cidr="10.0.0.0/29")
    before = plan
    with pytest.raises(TenantError):
        P.add_members(plan, topo, "blue", 99)
    assert plan == before and plan.tenant("blue").members == ()


def test_spread_visits_every_rack_before_reusing_one():
    topo = racks_topology(racks=4, pis_per_rack=2)
    plan, members = P.add_members(one(), topo, "blue", 8)
    racks = [topo.node(m.pi).rack for m in members]
    assert racks[:4] == [0, 1, 2, 3] and sorted(racks[4:]) == [0, 1, 2, 3]
    assert len({m.pi for m in members}) == 8


def test_spread_prefers_pis_this_tenant_does_not_use_yet():
    topo = racks_topology(racks=2, pis_per_rack=2)
    plan, first = P.add_members(one(), topo, "blue", 2)
    plan, second = P.add_members(plan, topo, "blue", 2)
    assert {m.pi for m in first}.isdisjoint({m.pi for m in second})


def test_pack_uses_fewest_pis_within_capacity():
    topo = racks_topology(racks=2, pis_per_rack=2)
    plan, members = P.add_members(one(), topo, "blue", 5, placement="pack", capacity=2)
    pis = [m.pi for m in members]
    assert len(set(pis)) == 3 and max(pis.count(p) for p in set(pis)) == 2
    with pytest.raises(TenantError, match="do not fit on 4 pis with capacity 2"):
        P.add_members(plan, topo, "blue", 4, placement="pack", capacity=2)


def test_pack_counts_other_tenants_and_topology_containers():
    topo = racks_topology(racks=1, pis_per_rack=2)
    topo.add_container("web", "pi0-0")
    plan = P.create_tenant(one(), "red", "10.0.0.0/24")
    plan, _ = P.add_members(plan, topo, "red", 1, placement=["pi0-1"])
    plan, members = P.add_members(plan, topo, "blue", 2, placement="pack", capacity=2)
    assert sorted(m.pi for m in members) == ["pi0-0", "pi0-1"]


def test_explicit_pis_round_robin_and_unknown_pi():
    topo = racks_topology()
    _, members = P.add_members(one(), topo, "blue", 3, placement=["pi1-0", "pi2-1"])
    assert [m.pi for m in members] == ["pi1-0", "pi2-1", "pi1-0"]
    with pytest.raises(TenantError, match=r"unknown pi 'tor1'"):
        P.add_members(one(), topo, "blue", 1, placement=["tor1"])
    with pytest.raises(TenantError, match="unknown placement"):
        P.add_members(one(), topo, "blue", 1, placement="random")


def test_member_names_must_not_clash_with_topology_nodes():
    topo = racks_topology()
    topo.add_container("blue-1", "pi0-0")
    with pytest.raises(TenantError, match="'blue-1' is already a node"):
        P.add_members(one(), topo, "blue", 1)


def test_count_must_be_positive_integer():
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(TenantError, match="count"):
            P.add_members(one(), racks_topology(), "blue", bad)


def test_second_subnet_and_explicit_subnet_allocation():
    plan = P.add_subnet(one(), "blue", "10.0.1.0/24")
    plan, members = P.add_members(plan, racks_topology(), "blue", 2, subnet="10.0.1.0/24")
    assert [m.ip for m in members] == ["10.0.1.2", "10.0.1.3"]
    assert all(m.subnet == "10.0.1.0/24" for m in members)
    with pytest.raises(TenantError, match="no subnet 10.0.2.0/24"):
        P.add_members(plan, racks_topology(), "blue", 1, subnet="10.0.2.0/24")
    with pytest.raises(TenantError, match="overlap"):
        P.add_subnet(plan, "blue", "10.0.1.0/25")


def test_peering_requires_disjoint_subnets_and_is_listed_once():
    plan = P.create_tenant(one(), "red", "10.0.0.0/24")
    with pytest.raises(TenantError, match=r"peering 'blue'-'red': subnets .* overlap"):
        P.add_peering(plan, "blue", "red")
    plan = P.create_tenant(plan, "green", "10.5.0.0/24")
    plan = P.add_peering(plan, "green", "blue")
    assert plan.peerings == (("blue", "green"),)
    with pytest.raises(TenantError, match="duplicate peering"):
        P.add_peering(plan, "blue", "green")
    assert P.delete_tenant(plan, "green").peerings == ()


def test_validate_rejects_reserved_and_duplicate_addresses():
    from dataclasses import replace

    plan, members = P.add_members(one(), racks_topology(), "blue", 2)
    tenant = plan.tenant("blue")
    bad = replace(tenant, members=(members[0], replace(members[1], ip=members[0].ip)))
    with pytest.raises(TenantError, match="duplicate ip 10.0.0.2"):
        P.validate(TenantPlan((bad,)))
    bad = replace(tenant, members=(replace(members[0], ip="10.0.0.1"),))
    with pytest.raises(TenantError, match="reserved"):
        P.validate(TenantPlan((bad,)))
    with pytest.raises(TenantError, match="unknown pi 'nope'"):
        P.validate(TenantPlan((replace(tenant, members=(replace(members[0], pi="nope"),)),)), racks_topology())
