"""Tenancy rules through a fake flow table: where does a packet go, and where does it NOT go.

The fake runs each Pi's four tables the way OpenFlow 1.3 does (highest priority match, apply
actions, goto) with stand-ins for the other apps' rules: the pipeline's table-miss gotos and
routing's eth_dst forwarding, including routing's own egress output for every host, so the tests
prove tenancy's rules win where they must. Between Pis, a frame leaving the uplink arrives at the
uplink of the Pi that hosts its eth_dst (routing on eth_dst, as on the real fabric).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller_apps import tenancy_rules as R
from controller_apps.pipeline import COOKIE_TENANCY, TABLE_ARP, TABLE_CLASSIFY, TABLE_EGRESS, TABLE_FORWARD, cookie
from tenants import plan as P
from tenants.model import TenantPlan, gateway_mac
from topology.model import Topology, dpid

UPLINK = 1
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
    """The fake: tenancy rules plus stand-ins for the pipeline and routing."""

    def __init__(self, plan: TenantPlan, t: Topology):
        self.plan, self.topo = plan, t
        self.rules, self.meters = R.compute(plan, t)
        self.hosts: dict[str, tuple[str, int, str]] = {}  # mac -> (pi, port, name)
        for _, m in plan.members:
            self.hosts[m.mac] = (m.pi, m.port, m.name)
        for c in t.containers:
            self.hosts[t.node(c).mac] = (t.node(c).pi, t.port(t.node(c).pi, c), c)
        self.hits: list[R.Rule] = []
        self.to_controller: list[dict[str, Any]] = []

    def member(self, name: str):
        return next(m for _, m in self.plan.members if m.name == name)

    def _stand_ins(self, pi: str) -> list[R.Rule]:
        dp, ck = dpid(pi), 0
        out = [R.Rule(dp, TABLE_CLASSIFY, 0, (), (), TABLE_ARP, None, ck),
               R.Rule(dp, TABLE_ARP, 0, (), (), TABLE_FORWARD, None, ck),
               R.Rule(dp, TABLE_FORWARD, 0, (), (("controller",),), None, None, ck)]
        for mac, (hpi, port, _) in self.hosts.items():
            if hpi == pi:
                out.append(R.Rule(dp, TABLE_FORWARD, 100, R.make_match(eth_dst=mac), (), TABLE_EGRESS, None, ck))
                out.append(R.Rule(dp, TABLE_EGRESS, 100, R.make_match(eth_dst=mac), (("output", port),), None,
                                  None, ck))
            else:
                out.append(R.Rule(dp, TABLE_FORWARD, 100, R.make_match(eth_dst=mac), (("output", UPLINK),),
                                  None, None, ck))
        return out

    @staticmethod
    def _matches(rule: R.Rule, pkt: dict[str, Any]) -> bool:
        for field, want in rule.match:
            have = pkt.get(field)
            if have is None:
                return False
            if isinstance(want, tuple):
                value, mask = want
                if isinstance(value, str):
                    v = int(value.replace(":", ""), 16)
                    m = int(mask.replace(":", ""), 16)
                    if int(have.replace(":", ""), 16) & m != v & m:
                        return False
                elif have & mask != value & mask:
                    return False
            elif have != want:
                return False
        return True

    def run_pi(self, pi: str, pkt: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        rules = self.rules[dpid(pi)] + self._stand_ins(pi)
        pkt = dict(pkt)
        table, outputs = TABLE_CLASSIFY, []
        while table is not None:
            candidates = [r for r in rules if r.table == table and self._matches(r, pkt)]
            assert candidates, f"no rule in table {table} for {pkt}"
            best = max(r.priority for r in candidates)
            top = [r for r in candidates if r.priority == best]
            assert len(top) == 1, f"ambiguous rules at priority {best}: {top}"
            rule = top[0]
            self.hits.append(rule)
            if rule.meter is not None:
                pkt["meter"] = rule.meter
            for action in rule.actions:
                kind = action[0]
                if kind == "push_vlan":
                    pkt["vlan_vid"] = R.OFPVID_PRESENT
                elif kind == "set_vlan":
                    pkt["vlan_vid"] = R.OFPVID_PRESENT | action[1]
                elif kind == "pop_vlan":
                    pkt["vlan_vid"] = R.OFPVID_NONE
                elif kind == "set_eth_src":
                    pkt["eth_src"] = action[1]
                elif kind == "set_eth_dst":
                    pkt["eth_dst"] = action[1]
                elif kind == "dec_ttl":
                    pkt["ttl"] -= 1
                elif kind == "output":
                    outputs.append((action[1], dict(pkt)))
                elif kind == "controller":
                    self.to_controller.append(dict(pkt))
                else:
                    raise AssertionError(kind)
            table = rule.goto
        return outputs

    def send(self, src: str, **fields: Any) -> list[tuple[str, dict[str, Any]]]:
        """Inject a frame at container `src`'s port; return (container, frame) deliveries."""
        if src in self.topo:
            pi, port = self.topo.node(src).pi, self.topo.port(self.topo.node(src).pi, src)
        else:
            m = self.member(src)
            pi, port = m.pi, m.port
        pkt = {"vlan_vid": R.OFPVID_NONE, "ttl": 64, **fields, "in_port": port}
        delivered = []
        queue = [(pi, pkt)]
        while queue:
            here, frame = queue.pop()
            for out_port, out in self.run_pi(here, frame):
                if out_port == UPLINK:
                    target = self.hosts.get(out["eth_dst"])
                    if target and target[0] != here:
                        queue.append((target[0], {**out, "in_port": UPLINK}))
                    continue
                name = next(n for p_, port_, n in self.hosts.values() if p_ == here and port_ == out_port)
                delivered.append((name, out))
        return delivered


def ip_frame(src, dst_mac: str, dst_ip: str, **kw) -> dict[str, Any]:
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": R.ETH_TYPE_IP, "ipv4_src": src.ip,
            "ipv4_dst": dst_ip, **kw}


@pytest.fixture
def fab() -> Fabric:
    return Fabric(*build())


def test_intra_tenant_unicast_delivered_untagged_across_and_within_pis(fab):
    b1, b2 = fab.member("blue-1"), fab.member("blue-2")
    got = fab.send("blue-1", **ip_frame(b1, b2.mac, b2.ip))
    assert [(n, f["vlan_vid"]) for n, f in got] == [("blue-2", R.OFPVID_NONE)]
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
        frame = ip_frame(b1, b2.mac, b2.ip, vlan_vid=R.OFPVID_PRESENT | vid)
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
    assert [p["vlan_vid"] for p in fab.to_controller] == [R.OFPVID_PRESENT | fab.plan.tenant("blue").id]


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
    assert fab.send("web", **frame, **{"vlan_vid": R.OFPVID_PRESENT | fab.plan.tenant("blue").id}) == []
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
    rules, meters = R.compute(plan, t)
    blue = plan.tenant("blue")
    for pi in ("pa", "pb"):
        assert [(m.meter_id, m.rate_kbps) for m in meters[dpid(pi)]] == [(blue.id, 20000)]
    metered = [r for rs in rules.values() for r in rs if r.meter is not None]
    assert metered and all(r.fields()["eth_type"] == R.ETH_TYPE_IP and r.tenant_id == blue.id for r in metered)
    assert len(metered) == len(blue.members)


def test_unattached_members_get_no_rules_and_guards_stay():
    plan, t = build()
    plan = P.set_port(plan, "blue-1", None)
    rules, _ = R.compute(plan, t)
    b1 = plan.tenant("blue").member("blue-1")
    assert not any(r.fields().get("eth_src") == b1.mac or r.fields().get("eth_dst") == b1.mac
                   for rs in rules.values() for r in rs)
    guards = [r for r in rules[dpid("pa")] if r.tenant_id == 0]
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
    before, _ = R.compute(plan, t)
    plan2, _ = P.remove_members(plan, "red", ["red-2"])
    plan2 = P.set_rate(plan2, "blue", 5)
    after, _ = R.compute(plan2, t)
    pb = dpid("pb")
    d = R.diff(before[pb], after[pb])
    red2 = plan.tenant("red").member("red-2")
    assert d.delete and all(red2.mac in str(r.match) or red2.port in dict(r.match).values() or
                            r.tenant_id == plan.tenant("red").id for r in d.delete)
    assert {r.meter for r in d.modify} == {plan.tenant("blue").id}
    assert not d.add
    same = R.diff(after[pb], after[pb])
    assert len(same) == 0
    restart = R.diff(after[pb], after[pb], assume_same=False)
    assert len(restart.modify) == len(after[pb]) and not restart.add and not restart.delete


def test_rule_counts_per_tenant_grow_linearly():
    t = topo()
    plan = P.create_tenant(TenantPlan(), "a", "10.0.0.0/24")
    plan, _ = P.add_members(plan, t, "a", 4, placement=["pa", "pb"])
    for i, (_, m) in enumerate(plan.members):
        plan = P.set_port(plan, m.name, 10 + i)
    counts = R.counts(R.compute(plan, t)[0])
    # 5 per member (3 classify, 2 egress) + 3 table-1 rules per Pi used (ARP, multicast, gateway).
    assert counts[plan.tenant("a").id] == 4 * 5 + 2 * 3


def test_cookies_carry_tenant_ids():
    plan, t = build()
    rules, _ = R.compute(plan, t)
    ids = {r.tenant_id for rs in rules.values() for r in rs}
    assert ids == {0} | {tn.id for tn in plan.tenants}
    assert all(r.cookie >> 48 == COOKIE_TENANCY >> 48 for rs in rules.values() for r in rs)


def test_replace_member_port_moves_rules():
    plan, t = build()
    moved = P.set_port(plan, "blue-1", 42)
    rules, _ = R.compute(moved, t)
    ports = {r.fields().get("in_port") for r in rules[dpid("pa")] if r.tenant_id == plan.tenant("blue").id}
    assert 42 in ports and plan.tenant("blue").member("blue-1").port not in ports
    assert replace(plan) == plan
