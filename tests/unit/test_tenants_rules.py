"""Tenancy rules through the fake flow table: where does a packet go, and where does it NOT go.

Every bridge runs the pipeline's, routing's and tenancy's rules together (flowtable.Fabric: OpenFlow
1.3 lookup, ECMP over every bucket), so these tests prove tenancy composes with routing: its rules
win where they must and routing still carries the tenants' frames.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import flowtable
import pytest

from controller_apps import flows as fl
from controller_apps import routing_rules as rr
from controller_apps import tenancy_rules as R
from controller_apps.flows import OFPVID_NONE, OFPVID_PRESENT, Flow
from controller_apps.pipeline import COOKIE_ROUTING, COOKIE_TENANCY, TABLE_CLASSIFY, TABLE_EGRESS, cookie
from tenants import plan as P
from tenants.model import TenantPlan, gateway_mac
from topology.model import Topology, dpid

BCAST = "ff:ff:ff:ff:ff:ff"


def topo() -> Topology:
    t = Topology("t")
    t.add_switch("tor", role="tor")
    for pi in ("pa", "pb"):
        t.add_pi(pi)
        t.add_link(pi, "tor")  # port 1 on each Pi: the uplink
    t.add_container("web", "pa")  # a default-network container, port 2 on pa
    return t


def build(peer: bool = False, rate: float | None = None) -> tuple[TenantPlan, Topology]:
    t = topo()
    plan = P.create_tenant(TenantPlan(), "blue", ["10.0.0.0/24", "10.0.1.0/24"], rate=rate)
    plan = P.create_tenant(plan, "red", "10.0.0.0/24")
    plan = P.create_tenant(plan, "green", "10.9.0.0/24")
    plan, _ = P.add_members(plan, t, "blue", 2, placement=["pa", "pb"])  # blue-1 pa, blue-2 pb
    plan, _ = P.add_members(plan, t, "blue", 1, placement=["pb"], subnet="10.0.1.0/24")  # blue-3
    plan, _ = P.add_members(plan, t, "red", 2, placement=["pa", "pb"])  # same addresses as blue-1/2
    plan, _ = P.add_members(plan, t, "green", 1, placement=["pa"])
    port = {"pa": 10, "pb": 10}
    for _, m in plan.members:
        plan = P.set_port(plan, m.name, port[m.pi])
        port[m.pi] += 1
    if peer:
        plan = P.add_peering(plan, "blue", "green")
    return plan, t


class Fabric:
    """Tenancy's rules with the pipeline's and routing's real rules on one fake flow table per
    bridge (flowtable.Fabric): members are routing hosts with their tenant, as tenancy registers
    them, and `web` is a default-network container."""

    def __init__(self, plan: TenantPlan, t: Topology):
        self.plan, self.topo = plan, t
        self.rules = R.compute(plan, t)
        members = [rr.Host(m.mac, m.ip, dpid(m.pi), m.port, tenant.name, tenant.id)
                   for tenant, m in plan.members if m.port is not None]
        self.routing = rr.desired_state(rr.graph_from_topology(t), rr.hosts_from_topology(t) + members)
        self.net = flowtable.Fabric(t, self.routing, self.rules)
        self.names = {(dpid(m.pi), m.port): m.name for _, m in plan.members if m.port is not None}
        for c in t.containers:
            pi = t.node(c).pi
            self.names[(dpid(pi), t.port(pi, c))] = c

    @property
    def hits(self) -> list[Flow]:
        return [flow for _, flow in self.net.hits]

    @property
    def to_controller(self) -> list[dict[str, Any]]:
        return [frame for _, _, _, frame in self.net.packet_ins]

    def member(self, name: str):
        return next(m for _, m in self.plan.members if m.name == name)

    def send(self, src: str, **fields: Any) -> list[tuple[str, dict[str, Any]]]:
        """Inject a frame at container `src`'s port; return (container, frame) deliveries."""
        if src in self.topo:
            pi, port = self.topo.node(src).pi, self.topo.port(self.topo.node(src).pi, src)
        else:
            m = self.member(src)
            pi, port = m.pi, m.port
        ends = self.net.send(dpid(pi), port, {"ttl": 64, **fields})
        return [(self.names[(d.dpid, d.port)], d.frame) for d in ends if isinstance(d, flowtable.Delivery)]


def ip_frame(src, dst_mac: str, dst_ip: str, **kw) -> dict[str, Any]:
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": R.ETH_TYPE_IP, "ipv4_src": src.ip,
            "ipv4_dst": dst_ip, **kw}


@pytest.fixture
def fab() -> Fabric:
    return Fabric(*build())


def test_intra_tenant_unicast_delivered_untagged_across_and_within_pis(fab):
    b1, b2 = fab.member("blue-1"), fab.member("blue-2")
    got = fab.send("blue-1", **ip_frame(b1, b2.mac, b2.ip))
    assert [(n, f["vlan_vid"]) for n, f in got] == [("blue-2", OFPVID_NONE)]
    back = fab.send("blue-2", **ip_frame(b2, b1.mac, b1.ip))
    assert [n for n, _ in back] == ["blue-1"]


def test_same_address_in_other_tenant_is_not_reachable(fab):
    r1, b2 = fab.member("red-1"), fab.member("blue-2")
    assert r1.ip == fab.member("blue-1").ip  # overlapping address spaces
    assert fab.send("red-1", **ip_frame(r1, b2.mac, b2.ip)) == []
    r2 = fab.member("red-2")
    assert [n for n, _ in fab.send("red-1", **ip_frame(r1, r2.mac, r2.ip))] == ["red-2"]


@pytest.mark.parametrize("spoof", ["mac", "ip", "both"])
def test_spoofed_source_dropped_and_counted_under_own_tenant(fab, spoof):
    r1, b1, b2 = fab.member("red-1"), fab.member("blue-1"), fab.member("blue-2")
    frame = ip_frame(r1, b2.mac, b2.ip)
    if spoof in ("mac", "both"):
        frame["eth_src"] = b1.mac
    if spoof in ("ip", "both"):
        frame["ipv4_src"] = b1.ip if spoof == "both" else "10.0.0.99"
    assert fab.send("red-1", **frame) == []
    last = fab.hits[-1]
    assert last.table == TABLE_CLASSIFY and last.priority == R.PRI_MEMBER_DROP
    assert last.cookie == cookie(COOKIE_TENANCY, fab.plan.tenant("red").id)


def test_tagged_frame_from_member_is_dropped_even_with_own_tenant_vlan(fab):
    b1, b2 = fab.member("blue-1"), fab.member("blue-2")
    for vid in (fab.plan.tenant("blue").id, fab.plan.tenant("red").id):
        frame = ip_frame(b1, b2.mac, b2.ip, vlan_vid=OFPVID_PRESENT | vid)
        assert fab.send("blue-1", **frame) == []


def test_ipv6_neighbour_solicitation_dropped(fab):
    b1 = fab.member("blue-1")
    assert fab.send("blue-1", eth_src=b1.mac, eth_dst="33:33:ff:00:00:03", eth_type=0x86DD) == []
    assert fab.hits[-1].priority == R.PRI_MEMBER_DROP


@pytest.mark.parametrize("dst", [BCAST, "01:00:5e:00:00:01"])
def test_broadcast_and_multicast_never_delivered(fab, dst):
    b1 = fab.member("blue-1")
    assert fab.send("blue-1", **ip_frame(b1, dst, "10.0.0.255")) == []
    assert fab.to_controller == []


def test_arp_goes_to_controller_tagged_with_the_tenant_and_never_to_members(fab):
    b1 = fab.member("blue-1")
    got = fab.send("blue-1", eth_src=b1.mac, eth_dst=BCAST, eth_type=R.ETH_TYPE_ARP, arp_spa=b1.ip,
                   arp_sha=b1.mac, arp_tpa="10.0.0.3")
    assert got == []
    assert [p["vlan_vid"] for p in fab.to_controller] == [OFPVID_PRESENT | fab.plan.tenant("blue").id]


def test_arp_with_spoofed_sender_is_dropped(fab):
    b1, r1 = fab.member("blue-1"), fab.member("red-1")
    fab.send("red-1", eth_src=r1.mac, eth_dst=BCAST, eth_type=R.ETH_TYPE_ARP, arp_spa=r1.ip,
             arp_sha=b1.mac, arp_tpa="10.0.0.3")
    assert fab.to_controller == []


def test_default_network_cannot_inject_into_a_tenant_nor_receive_from_it(fab):
    web = fab.topo.node("web")
    b1, b2 = fab.member("blue-1"), fab.member("blue-2")
    frame = {"eth_src": web.mac, "eth_dst": b2.mac, "eth_type": R.ETH_TYPE_IP, "ipv4_src": "10.0.0.1",
             "ipv4_dst": b2.ip}
    assert fab.send("web", **frame) == []
    assert fab.send("web", **frame, **{"vlan_vid": OFPVID_PRESENT | fab.plan.tenant("blue").id}) == []
    assert fab.send("blue-1", **ip_frame(b1, web.mac, "10.0.0.1")) == []


def test_virtual_gateway_routes_between_subnets_of_one_tenant(fab):
    b1, b3 = fab.member("blue-1"), fab.member("blue-3")
    blue = fab.plan.tenant("blue")
    got = fab.send("blue-1", **ip_frame(b1, blue.gateway_mac("10.0.0.0/24"), b3.ip))
    assert [n for n, _ in got] == ["blue-3"]
    frame = got[0][1]
    assert frame["eth_src"] == gateway_mac(blue.id, 1) and frame["eth_dst"] == b3.mac and frame["ttl"] == 63
    # The same gateway does not route into red's or green's addresses.
    green = fab.member("green-1")
    assert fab.send("blue-1", **ip_frame(b1, blue.gateway_mac("10.0.0.0/24"), green.ip)) == []


def test_peering_only_when_listed():
    plan, t = build(peer=False)
    fab = Fabric(plan, t)
    b1, g1 = fab.member("blue-1"), fab.member("green-1")
    gw = plan.tenant("blue").gateway_mac("10.0.0.0/24")
    assert fab.send("blue-1", **ip_frame(b1, gw, g1.ip)) == []
    assert fab.send("blue-1", **ip_frame(b1, g1.mac, g1.ip)) == []
    fab = Fabric(*build(peer=True))
    got = fab.send("blue-1", **ip_frame(b1, gw, g1.ip))
    assert [n for n, _ in got] == ["green-1"]
    assert got[0][1]["eth_src"] == plan.tenant("green").gateway_mac("10.9.0.0/24")
    ggw = plan.tenant("green").gateway_mac("10.9.0.0/24")
    assert [n for n, _ in fab.send("green-1", **ip_frame(g1, ggw, b1.ip))] == ["blue-1"]
    # red is not peered with green: its gateway has no route there.
    r1 = fab.member("red-1")
    assert fab.send("red-1", **ip_frame(r1, plan.tenant("red").gateway_mac("10.0.0.0/24"), g1.ip)) == []


def test_rate_limit_meters_ip_but_not_arp_on_every_pi_of_the_tenant():
    plan, t = build(rate=20)
    rules = R.compute(plan, t)
    blue = plan.tenant("blue")
    for pi in ("pa", "pb"):
        assert [(m.meter_id, m.rate_kbps) for m in rules[dpid(pi)].meters.values()] == [(blue.id, 20000)]
    metered = [r for rs in rules.values() for r in rs.flows.values() if r.meter is not None]
    assert metered and all(r.match.fields()["eth_type"] == R.ETH_TYPE_IP and r.tenant_id == blue.id
                           for r in metered)
    assert len(metered) == len(blue.members)


def test_unattached_members_get_no_rules_and_guards_stay():
    plan, t = build()
    plan = P.set_port(plan, "blue-1", None)
    rules = R.compute(plan, t)
    b1 = plan.tenant("blue").member("blue-1")
    assert not any(r.match.fields().get("eth_src") == b1.mac or r.match.fields().get("eth_dst") == b1.mac
                   for rs in rules.values() for r in rs.flows.values())
    guards = [r for r in rules[dpid("pa")].flows.values() if r.tenant_id == 0]
    assert {r.table for r in guards} == {TABLE_CLASSIFY, TABLE_EGRESS}


def test_arp_answers_only_within_tenant_and_subnet():
    plan, _ = build()
    blue, red = plan.tenant("blue"), plan.tenant("red")
    b1, b2, b3 = (blue.member(f"blue-{i}") for i in (1, 2, 3))
    assert R.arp_answer(plan, blue.id, b1.ip, b2.ip) == b2.mac
    assert R.arp_answer(plan, red.id, b1.ip, b2.ip) == red.member("red-2").mac  # same IP, red's MAC
    assert R.arp_answer(plan, blue.id, b1.ip, "10.0.0.1") == gateway_mac(blue.id, 0)
    assert R.arp_answer(plan, blue.id, b1.ip, b3.ip) is None  # other subnet: hosts ask the gateway
    assert R.arp_answer(plan, blue.id, b1.ip, b1.ip) is None  # duplicate-address probe
    assert R.arp_answer(plan, blue.id, b1.ip, "10.0.0.200") is None
    assert R.arp_answer(plan, 999, b1.ip, b2.ip) is None
    assert R.arp_answer(plan, blue.id, "10.0.1.2", "10.0.0.1") is None  # gateway of another subnet


def test_diff_adds_modifies_and_deletes_only_what_changed():
    plan, t = build()
    before = R.compute(plan, t)
    plan2, _ = P.remove_members(plan, "red", ["red-2"])
    plan2 = P.set_rate(plan2, "blue", 5)
    after = R.compute(plan2, t)
    pb = dpid("pb")
    d = fl.diff(before[pb], after[pb])
    red2 = plan.tenant("red").member("red-2")
    assert d.delete_flows and all(red2.mac in str(r.match) or red2.port in dict(r.match).values() or
                                  r.tenant_id == plan.tenant("red").id for r in d.delete_flows)
    assert {r.meter for r in d.modify_flows} == {plan.tenant("blue").id}
    assert [m.meter_id for m in d.add_meters] == [plan.tenant("blue").id]  # blue had no rate before
    assert not d.add_flows
    same = fl.diff(after[pb], after[pb])
    assert len(same) == 0
    restart = fl.diff(after[pb], after[pb], assume_same=False)
    assert len(restart.modify_flows) == len(after[pb].flows) and not restart.add_flows and not restart.delete_flows


def test_rule_counts_per_tenant_grow_linearly():
    t = topo()
    plan = P.create_tenant(TenantPlan(), "a", "10.0.0.0/24")
    plan, _ = P.add_members(plan, t, "a", 4, placement=["pa", "pb"])
    for i, (_, m) in enumerate(plan.members):
        plan = P.set_port(plan, m.name, 10 + i)
    counts = R.counts(R.compute(plan, t))
    # 5 per member (3 classify, 2 egress) + 3 table-1 rules per Pi used (ARP, multicast, gateway).
    assert counts[plan.tenant("a").id] == 4 * 5 + 2 * 3


def test_cookies_carry_tenant_ids():
    plan, t = build()
    rules = R.compute(plan, t)
    ids = {r.tenant_id for rs in rules.values() for r in rs.flows.values()}
    assert ids == {0} | {tn.id for tn in plan.tenants}
    assert all(r.cookie >> 48 == COOKIE_TENANCY >> 48 for rs in rules.values() for r in rs.flows.values())


def test_replace_member_port_moves_rules():
    plan, t = build()
    moved = P.set_port(plan, "blue-1", 42)
    rules = R.compute(moved, t)
    ports = {r.match.fields().get("in_port") for r in rules[dpid("pa")].flows.values()
             if r.tenant_id == plan.tenant("blue").id}
    assert 42 in ports and plan.tenant("blue").member("blue-1").port not in ports
    assert replace(plan) == plan


def test_drop_counts_sum_only_the_drop_rules_by_the_tenant_in_their_cookie(fab):
    """What `GET /tenants/drops` answers: the counters of tenancy's member drop rules, per tenant;
    other priorities, tables and apps' cookies, and unknown tenant ids do not count."""
    red, blue = fab.plan.tenant("red").id, fab.plan.tenant("blue").id
    drop = {"table_id": TABLE_CLASSIFY, "priority": R.PRI_MEMBER_DROP}
    flows = [
        {**drop, "cookie": cookie(COOKIE_TENANCY, red), "packet_count": 3},
        {**drop, "cookie": cookie(COOKIE_TENANCY, red), "packet_count": 4},
        {**drop, "cookie": cookie(COOKIE_TENANCY, blue), "packet_count": 1},
        {**drop, "cookie": cookie(COOKIE_TENANCY, 4000), "packet_count": 100},  # no such tenant
        {**drop, "cookie": cookie(COOKIE_ROUTING, red), "packet_count": 100},  # another app's cookie
        {**drop, "table_id": TABLE_EGRESS, "cookie": cookie(COOKIE_TENANCY, red), "packet_count": 100},
        {**drop, "priority": R.PRI_ALLOW, "cookie": cookie(COOKIE_TENANCY, blue), "packet_count": 100},
    ]
    everyone = {t.name: 0 for t in fab.plan.tenants}
    assert R.drop_counts(fab.plan, flows) == {**everyone, "blue": 1, "red": 7}
    assert R.drop_counts(fab.plan, []) == everyone
