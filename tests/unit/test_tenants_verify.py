"""The verifier's pure parts: who probes whom, what counts as a leak, how the report reads."""

from __future__ import annotations

import json

import pytest
from test_tenants_plan import racks_topology

from tenants import plan as P
from tenants import verify as V
from tenants.model import TenantPlan


@pytest.fixture
def plan() -> TenantPlan:
    topo = racks_topology()
    p = P.create_tenant(TenantPlan(), "blue", "10.0.0.0/24")
    p = P.create_tenant(p, "red", "10.0.0.0/24")
    p = P.create_tenant(p, "green", "10.9.0.0/24")
    for name, n in (("blue", 3), ("red", 2), ("green", 1)):
        p, members = P.add_members(p, topo, name, n)
        for i, m in enumerate(members):
            p = P.set_port(p, m.name, 10 + i)
    return p


def test_each_tenant_attacks_every_member_of_every_other_tenant(plan):
    specs = V.probe_specs(plan)
    assert sorted(specs) == ["blue-1", "green-1", "red-1"]
    blue = specs["blue-1"]
    assert sorted(v["name"] for v in blue["victims"]) == ["green-1", "red-1", "red-2"]
    assert all(v["tenant"] != "blue" for v in blue["victims"])
    # red uses blue's addresses: those are the overlapping-subnet probes; green's are not.
    assert blue["overlap"] == ["10.0.0.2", "10.0.0.3"]
    assert len(blue["peers"]) == 2 and blue["mac"] not in blue["peers"]
    json.dumps(specs)  # passed on a command line


def test_unattached_members_are_neither_attackers_nor_victims(plan):
    plan = P.set_port(plan, "red-1", None)
    specs = V.probe_specs(plan)
    assert "red-1" not in specs and "red-2" in specs
    assert "red-1" not in [v["name"] for v in specs["blue-1"]["victims"]]


def test_markers_from_other_tenants_are_leaks_own_tenant_broadcast_is_not(plan):
    red1 = plan.tenant("red").member("red-1")
    seen = {"markers": ["blue:unicast:blue-1", "red:broadcast:red-2", "green:overlap:green-1"],
            "arp_from": [], "ipv6_from": []}
    leaks = V.classify_sniff(plan, red1, seen)
    assert [(x["kind"], x["from_tenant"], x["to"]) for x in leaks] == [
        ("unicast", "blue", "red-1"), ("overlap", "green", "red-1")]


def test_spoofed_and_tagged_probes_are_leaks_even_inside_own_tenant(plan):
    blue2 = plan.tenant("blue").member("blue-2")
    seen = {"markers": ["blue:spoof:blue-1", "blue:vlan:blue-1", "blue:broadcast:blue-1"]}
    assert sorted(x["kind"] for x in V.classify_sniff(plan, blue2, seen)) == ["spoof", "vlan"]


def test_arp_and_ipv6_by_sender_mac(plan):
    red1 = plan.tenant("red").member("red-1")
    blue1 = plan.tenant("blue").member("blue-1")
    red2 = plan.tenant("red").member("red-2")
    seen = {"arp_from": [blue1.mac, red2.mac, "aa:bb:cc:dd:ee:ff"], "ipv6_from": [blue1.mac]}
    leaks = V.classify_sniff(plan, red1, seen)
    assert [(x["kind"], x["from_tenant"]) for x in leaks] == [("arp", "blue"), ("ipv6-ns", "blue")]


def test_arp_reply_with_another_tenants_mac_is_a_leak(plan):
    red1 = plan.tenant("red").member("red-1")
    blue2 = plan.tenant("blue").member("blue-2")
    replies = [{"ip": "10.0.0.3", "mac": plan.tenant("red").member("red-2").mac},
               {"ip": "10.0.0.3", "mac": blue2.mac.upper()}]
    leaks = V.classify_arp_replies(plan, red1.name, replies)
    assert [(x["kind"], x["from"], x["to"]) for x in leaks] == [("arp-reply", "blue-2", "red-1")]


def test_report_ok_summary_and_dict():
    report = V.IsolationReport(tenants=["blue", "red"], matrix={"blue": {"red": 0}, "red": {"blue": 0}},
                               reachability={"blue": {"pairs": 2, "failed": []},
                                             "red": {"pairs": 2, "failed": []}}, probes=10, seconds=1.5)
    assert report.ok and "OK" in report.summary() and "2/2" in report.summary()
    report.reachability["red"]["failed"] = [["red-1", "red-2"]]
    assert not report.ok and "1 unreachable pairs in red" in report.summary()
    report.reachability["red"]["failed"] = []
    report.leaks.append({"kind": "vlan", "from_tenant": "blue", "to_tenant": "red"})
    report.matrix["blue"]["red"] = 1
    text = report.summary()
    assert not report.ok and "1 vlan leaks" in text
    header, blue_row, red_row = text.splitlines()[1:4]
    assert header.split() == ["blue", "red"]
    assert blue_row.split() == ["blue", "2/2", "1"] and red_row.split() == ["red", "0", "2/2"]
    data = report.to_dict()
    assert data["ok"] is False and json.loads(json.dumps(data)) == data


def test_every_victim_gets_every_probe_kind(plan):
    from scapy.all import ARP, IP, Dot1Q, Ether, IPv6

    spec = V.probe_specs(plan)["blue-1"]
    frames = V.probe_frames(spec)
    me = plan.tenant("blue").member("blue-1")

    def kind(f) -> str:
        raw = bytes(f)
        at = raw.find(V.MARKER)
        return raw[at:].split(b":")[2].decode()

    for victim in spec["victims"]:
        to_victim = [f for f in frames if f[Ether].dst == victim["mac"] or
                     (ARP in f and f[ARP].pdst == victim["ip"] and f[ARP].hwsrc in (me.mac, victim["mac"]))]
        kinds = sorted(kind(f) for f in to_victim)
        direct = "overlap" if victim["ip"] in spec["overlap"] else "unicast"
        assert kinds == sorted([direct, "arp", "spoof", "spoof", "vlan", "vlan"]), (victim["name"], kinds)
        tagged = [f for f in to_victim if Dot1Q in f]
        assert {f[Dot1Q].vlan for f in tagged} == {victim["tenant_id"]}
        spoofed = [f for f in to_victim if kind(f) == "spoof"]
        assert all(f[Ether].src == victim["mac"] for f in spoofed)
        assert any(IP in f and f[IP].src == victim["ip"] for f in spoofed)
    # Spoofed frames into the attacker's own tenant, and the broadcast/multicast/IPv6 ones.
    own = [f for f in frames if f[Ether].dst in spec["peers"]]
    assert own and all(kind(f) == "spoof" and f[Ether].src != me.mac for f in own)
    kinds = [kind(f) for f in frames]
    assert kinds.count("broadcast") == 1 and kinds.count("multicast") == 1
    assert sum(1 for f in frames if IPv6 in f) == 2
    assert all(V.MARKER in bytes(f) for f in frames)
