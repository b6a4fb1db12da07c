"""Every app's rules together on one fake flow table per bridge (flowtable.Fabric).

- Tenancy composes with routing: the default network and two tenants on the same 10.0.0.0/24 each
  reach all their own pairs and nothing of the others.
- The default network is a network like any tenant, with its own tag (untagged on the fabric) and
  its own address space: a default host and a tenant member with the same IP, and even the same
  MAC, each reach only their own peers, and ARP for that IP gets each network its own answer.
- The issue-12 sequence through the apps' handlers (discovery, routing, tenancy on fake datapaths):
  the default network's traffic is learned first, members appear, tenants come after; what the
  controller learned about the default network never shadows a member.
- What holds for other forwarding apps under tenancy (README, "Ryu apps"): a user's app that keeps
  to the pipeline (forwarding in table `forward`, containers reached only through table `egress`)
  keeps tenants isolated; one that outputs to containers itself, like the single-table
  l2_learning, does not, and these tests show the leak.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import networkx as nx
import pytest
from flowtable import Delivery, Fabric, FakeDatapath
from os_ken.controller.handler import MAIN_DISPATCHER
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from test_routing_handlers import features
from test_tenants_app import connect

from controller_apps import flows as fl
from controller_apps import pipeline
from controller_apps import routing_rules as rr
from controller_apps import tenancy_rules as T
from controller_apps.discovery import Discovery
from controller_apps.flows import Flow, Match, SwitchRules
from controller_apps.l2_learning import L2Learning
from controller_apps.routing import Routing
from controller_apps.state import STATE, ControllerState
from controller_apps.tenancy import BARRIER_TIMEOUT, Tenancy
from tenants import plan as P
from tenants import store
from tenants.model import TenantPlan
from topology.builders import build
from topology.model import Topology, dpid


# --- the fabric and its three networks ----------------------------------------------------------
def two_tenants(t: Topology, per_tenant: int = 4) -> TenantPlan:
    """red and blue on 10.0.0.0/24 (the default containers are 10.0.0.k/8: the same addresses),
    members spread over the Pis on ports after the topology's own."""
    plan = P.create_tenant(TenantPlan(), "red", "10.0.0.0/24")
    plan = P.create_tenant(plan, "blue", "10.0.0.0/24")
    plan, _ = P.add_members(plan, t, "red", per_tenant, placement="spread")
    plan, _ = P.add_members(plan, t, "blue", per_tenant, placement="spread")
    port = {pi: max(t.ports(pi)) + 1 for pi in t.pis}
    for _, m in plan.members:
        plan = P.set_port(plan, m.name, port[m.pi])
        port[m.pi] += 1
    return plan


def with_member(plan: TenantPlan, name: str, **changes: Any) -> TenantPlan:
    tenant = next(tn for tn, m in plan.members if m.name == name)
    members = tuple(replace(m, **changes) if m.name == name else m for m in tenant.members)
    return P._replace_tenant(plan, tenant.with_members(members))


def member_hosts(plan: TenantPlan) -> list[rr.Host]:
    """Members as routing sees them once tenancy registered them: hosts of their tenant's network."""
    return [rr.Host(m.mac, m.ip, dpid(m.pi), m.port, tn.name, tn.id) for tn, m in plan.members]


class Networks:
    """Who is where: every container (default and member) by name, with its network."""

    def __init__(self, t: Topology, plan: TenantPlan, fabric: Fabric):
        self.fabric = fabric
        self.at: dict[str, tuple[int, int, str, str, str]] = {}  # name -> (dpid, port, mac, ip, network)
        for c in t.containers:
            node = t.node(c)
            self.at[c] = (dpid(node.pi), t.port(node.pi, c), node.mac, node.ip.split("/")[0], "default")
        for tenant, m in plan.members:
            self.at[m.name] = (dpid(m.pi), m.port, m.mac, m.ip, tenant.name)
        self.by_place = {(d, p): name for name, (d, p, *_) in self.at.items()}

    def members(self, network: str) -> list[str]:
        return [n for n, v in self.at.items() if v[4] == network]

    def send_ip(self, src: str, dst: str) -> set[str]:
        """Where an IPv4 frame from `src` to `dst`'s MAC and IP ends up (container names)."""
        d, p, mac, ip, _ = self.at[src]
        _, _, dst_mac, dst_ip, _ = self.at[dst]
        frame = {"eth_src": mac, "eth_dst": dst_mac, "eth_type": fl.ETH_TYPE_IP, "ipv4_src": ip, "ipv4_dst": dst_ip,
                 "ttl": 64}
        ends = self.fabric.send(d, p, frame)
        return {self.by_place[(e.dpid, e.port)] for e in ends if isinstance(e, Delivery)}

    def assert_isolated_and_complete(self) -> int:
        """Every ordered pair inside each network is delivered exactly to its destination; a
        frame to another network's container never reaches that network (it may only reach the
        sender's own network, when that has a container with the same MAC)."""
        checked = 0
        for src, (*_, net) in self.at.items():
            for dst, (*_, dst_net) in self.at.items():
                if src == dst:
                    continue
                got = self.send_ip(src, dst)
                if net == dst_net:
                    assert got == {dst}, (src, dst, got)
                else:
                    assert all(self.at[n][4] == net for n in got), (src, dst, got)
                checked += 1
        return checked


def routed(t: Topology, plan: TenantPlan, *extra: rr.Host) -> dict[int, SwitchRules]:
    hosts = rr.hosts_from_topology(t) + member_hosts(plan) + list(extra)
    return rr.desired_state(rr.graph_from_topology(t), hosts)


@pytest.fixture
def picloud22() -> Topology:
    return build("picloud:2,2", containers_per_pi=2)


def test_tenancy_composes_with_routing_every_network_reaches_exactly_itself(picloud22):
    t = picloud22
    plan = two_tenants(t)
    nets = Networks(t, plan, Fabric(t, routed(t, plan), T.compute(plan, t)))
    assert {nets.at[m][3] for m in nets.members("red")} == {nets.at[m][3] for m in nets.members("blue")}
    assert {nets.at[m][3] for m in nets.members("red")} < {nets.at[c][3] for c in nets.members("default")}
    n = len(nets.at)
    assert nets.assert_isolated_and_complete() == n * (n - 1)


def test_a_default_host_and_a_tenant_member_with_the_same_ip_and_mac_each_reach_only_their_own_peers(picloud22):
    t = picloud22
    plan = two_tenants(t)
    # A red member and a default container on another Pi with the same address (10.0.0.k
    # overlap; the same address on one Pi is in the test above)...
    twin_of = {t.node(c).ip.split("/")[0]: c for c in t.containers}
    red1 = next(m for m in plan.tenant("red").members if t.node(twin_of[m.ip]).pi != m.pi)
    twin = twin_of[red1.ip]
    # ... and, worse, the member gets that container's MAC too: two networks, one MAC, one IP.
    plan = with_member(plan, red1.name, mac=t.node(twin).mac)
    fabric = Fabric(t, routed(t, plan), T.compute(plan, t))
    nets = Networks(t, plan, fabric)
    for peer in nets.members("default"):
        if peer != twin:
            assert nets.send_ip(peer, twin) == {twin}
    for peer in nets.members("red"):
        if peer != red1.name:
            assert nets.send_ip(peer, red1.name) == {red1.name}
    n = len(nets.at)
    assert nets.assert_isolated_and_complete() == n * (n - 1)
    # ARP for the shared address: the default network is answered in the data plane with the
    # default container's MAC; red's question goes, tagged, to tenancy, which answers from the plan.
    asker = next(c for c in nets.members("default") if c != twin)
    d, p, mac, ip, _ = nets.at[asker]
    request = {"eth_src": mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": fl.ETH_TYPE_ARP, "arp_op": 1,
               "arp_spa": ip, "arp_sha": mac, "arp_tpa": red1.ip}
    (reply,) = fabric.send(d, p, request)
    assert (reply.dpid, reply.port, reply.frame["eth_src"], reply.frame["arp_sha"]) == (d, p, t.node(twin).mac,
                                                                                         t.node(twin).mac)
    red2 = next(m for m in plan.tenant("red").members if m.name != red1.name)
    fabric.packet_ins.clear()
    assert fabric.send(dpid(red2.pi), red2.port, dict(request, eth_src=red2.mac, arp_sha=red2.mac,
                                                       arp_spa=red2.ip)) == ["controller"]
    (_, _, cookie, frame), = fabric.packet_ins
    red = plan.tenant("red")
    assert cookie == pipeline.cookie(pipeline.COOKIE_TENANCY, red.id) and frame["vlan_vid"] == fl.vid(red.id)
    assert T.arp_answer(plan, red.id, red2.ip, red1.ip) == t.node(twin).mac  # the member's MAC, inside red


# --- the issue-12 sequence through the apps' handlers -------------------------------------------
def arp_from(mac: str, ip: str, target: str) -> bytes:
    """An untagged ARP request, as the kernel sends before talking (what discovery learns from)."""
    eth = bytes.fromhex("ff" * 6) + bytes.fromhex(mac.replace(":", "")) + b"\x08\x06"
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + bytes.fromhex(mac.replace(":", "")) + \
        bytes(int(b) for b in ip.split(".")) + b"\x00" * 6 + bytes(int(b) for b in target.split("."))
    return eth + body


@pytest.fixture
def controller(tmp_path):
    """Discovery, routing and tenancy on the real STATE, one fake datapath per bridge of
    picloud:2,2 (2 containers per Pi), the fabric discovered, routing installed, no tenants yet."""
    t = build("picloud:2,2", containers_per_pi=2)
    path = tmp_path / "tenants.yaml"
    store.save(TenantPlan(), path)
    saved = dict(STATE.options)
    STATE.reset()
    STATE.set_intended(t)
    STATE.options.update(tenants_file=str(path))
    try:
        discovery, routing, tenancy = Discovery(state=STATE), Routing(state=STATE), Tenancy()
        dps = {}
        for bridge in t.bridges:
            dp = dps[bridge] = FakeDatapath(t.dpid(bridge), on_barrier=lambda m: tenancy.barrier_handler(
                SimpleNamespace(msg=m)))
            routing.switch_features(features(dp))
            tenancy.features_handler(features(dp))
            if bridge in t.pis:
                connect(tenancy, dp, meters=[], flows=[])
            else:
                tenancy.state_change_handler(SimpleNamespace(datapath=dp, state=MAIN_DISPATCHER))
        STATE.set_links([{"a": ln.a, "a_port": ln.port_a, "b": ln.b, "b_port": ln.port_b} for ln in t.fabric_links()])
        routing.recompute()
        yield t, path, discovery, routing, tenancy, dps
    finally:
        STATE.reset()
        STATE.options.clear()
        STATE.options.update(saved)


def test_what_the_controller_learned_about_the_default_network_never_shadows_a_tenant_member(controller):
    t, path, discovery, routing, tenancy, dps = controller
    # `picloud ping`: every default container talks; discovery learns each from its ARP.
    for c in t.containers:
        node = t.node(c)
        discovery.learn(t.dpid(node.pi), t.port(node.pi, c), arp_from(node.mac, node.ip.split("/")[0], "10.0.0.1"))
    routing.sync_hosts()
    # `tenant add`: the members' containers come up before tenancy's rules; a member that speaks in
    # that window is seen untagged, on its own port, with an address the default network also has.
    plan = two_tenants(t)
    early = plan.tenant("red").member("red-1")
    discovery.learn(dpid(early.pi), early.port, arp_from(early.mac, early.ip, "10.0.0.3"))
    routing.sync_hosts()
    assert STATE.host(early.mac) is not None  # learned as a default host: nothing told it otherwise yet
    store.save(plan, path)
    tenancy.reload()
    assert STATE.host(early.mac) is None  # its port is red's now: the default-network record is gone
    discovery.learn(dpid(early.pi), early.port, arp_from(early.mac, early.ip, "10.0.0.3"))
    assert STATE.host(early.mac) is None  # and is not learned again there
    assert STATE.host(early.mac, plan.tenant("red").id)["port"] == early.port
    routing.sync_hosts()
    fabric = Fabric(t, tables={dp.id: dp.table for dp in dps.values()})
    nets = Networks(t, plan, fabric)
    n = len(nets.at)
    assert nets.assert_isolated_and_complete() == n * (n - 1)
    # The default network still answers ARP for the shared address with its own container.
    twin = next(c for c in t.containers if t.node(c).ip.split("/")[0] == early.ip)
    asker = next(c for c in t.containers if t.node(c).pi == t.node(twin).pi and c != twin)
    d, p, mac, ip, _ = nets.at[asker]
    (reply,) = fabric.send(d, p, {"eth_src": mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": fl.ETH_TYPE_ARP,
                                  "arp_op": 1, "arp_spa": ip, "arp_sha": mac, "arp_tpa": early.ip})
    assert reply.frame["arp_sha"] == t.node(twin).mac


def test_tenant_reload_answers_only_once_routing_sent_the_members_paths_and_a_barrier_follows(controller):
    """`picloud tenant add` returns when the reload answers, and `tenant verify` probes at once: the
    members' paths are routing's, sent from its own worker thread (late on a loaded host), so the
    answer must wait for them, and each switch's barrier must come after them to confirm them."""
    t, path, discovery, routing, tenancy, dps = controller
    STATE.follow_hosts("routing")  # what routing.start() does; this test plays its worker thread
    try:
        plan = two_tenants(t)
        store.save(plan, path)
        for dp in dps.values():
            dp.take()
        outcome: list[Any] = []
        reload = threading.Thread(target=lambda: outcome.append(_call(tenancy.reload)))
        reload.start()
        reload.join(0.5)
        assert reload.is_alive() and not outcome  # routing has not sent the paths: no answer yet
        assert not any(isinstance(m, parser.OFPBarrierRequest) for dp in dps.values() for m in dp.sent)
        routing.sync_hosts()
        # The reload's own waits are bounded by BARRIER_TIMEOUT; a shorter join failed once at load
        # 20+ (10 s) while the reload was still working, so wait for its bound: a hang still fails.
        reload.join(BARRIER_TIMEOUT + 30)
        assert not reload.is_alive() and isinstance(outcome[0], dict), outcome
        routing_mods = 0
        for dp in dps.values():
            kinds = ["barrier" if isinstance(m, parser.OFPBarrierRequest) else
                     "routing" if getattr(m, "cookie", 0) & pipeline.COOKIE_APP_MASK == pipeline.COOKIE_ROUTING
                     else "other" for m in dp.sent]
            assert kinds[-1] == "barrier" and kinds.count("barrier") == 1, (hex(dp.id), kinds)
            routing_mods += kinds.count("routing")
        assert routing_mods > 0  # the members' paths went out before the barriers
        fabric = Fabric(t, tables={dp.id: dp.table for dp in dps.values()})
        nets = Networks(t, plan, fabric)
        n = len(nets.at)
        assert nets.assert_isolated_and_complete() == n * (n - 1)
    finally:
        STATE.unfollow_hosts("routing")


def test_a_follower_that_never_catches_up_is_named_after_the_timeout():
    state = ControllerState()
    state.follow_hosts("routing")
    state.hosts_sent("routing", 3)
    assert state.wait_hosts_sent(3, timeout=0) == []
    assert state.wait_hosts_sent(4, timeout=0.05) == ["routing"]
    state.unfollow_hosts("routing")
    assert state.wait_hosts_sent(4, timeout=0) == []


def _call(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # reported by the test's assertion, with the exception
        return exc


# --- other forwarding apps under tenancy ---------------------------------------------------------
USER = 0x0100 << pipeline.COOKIE_APP_SHIFT  # a cookie none of our apps uses


def user_forwarding(t: Topology, hosts: list[rr.Host], through_egress: bool) -> dict[int, SwitchRules]:
    """What a user's app replacing routing might install: shortest paths on eth_dst alone, knowing
    nothing of tenants. `through_egress`: it keeps to the pipeline's contract and reaches a
    container only through table `egress`; otherwise it outputs to the container from `forward`."""
    graph = nx.Graph([(ln.a, ln.b) for ln in t.fabric_links()])
    out = {t.dpid(b): SwitchRules() for b in t.bridges}
    for host in hosts:
        pi = next(p for p in t.pis if t.dpid(p) == host.dpid)
        match = Match(eth_dst=host.mac)
        for bridge in t.bridges:
            rules = out[t.dpid(bridge)]
            if bridge == pi and through_egress:
                rules.add(Flow(pipeline.TABLE_FORWARD, 100, match, goto=pipeline.TABLE_EGRESS, cookie=USER))
                rules.add(Flow(pipeline.TABLE_EGRESS, 100, match, (fl.output(host.port),), cookie=USER))
            elif bridge == pi:
                rules.add(Flow(pipeline.TABLE_FORWARD, 100, match, (fl.output(host.port),), cookie=USER))
            else:
                hop = nx.shortest_path(graph, bridge, pi)[1]
                rules.add(Flow(pipeline.TABLE_FORWARD, 100, match, (fl.output(t.port(bridge, hop)),), cookie=USER))
    return out


def test_a_users_forwarding_app_that_keeps_to_the_pipeline_keeps_tenants_isolated():
    t = build("tree:2,2", containers_per_pi=2)
    plan = two_tenants(t, per_tenant=3)
    hosts = rr.hosts_from_topology(t) + member_hosts(plan)
    for rules in user_forwarding(t, hosts, through_egress=True).values():
        for flow in rules.flows.values():
            fl.check_table(flow)  # what flows.encode would check before sending it
    nets = Networks(t, plan, Fabric(t, user_forwarding(t, hosts, through_egress=True), T.compute(plan, t)))
    n = len(nets.at)
    assert nets.assert_isolated_and_complete() == n * (n - 1)


def test_a_forwarding_app_that_outputs_to_containers_itself_bypasses_tenancy():
    t = build("tree:2,2", containers_per_pi=2)
    plan = two_tenants(t, per_tenant=3)
    hosts = rr.hosts_from_topology(t) + member_hosts(plan)
    nets = Networks(t, plan, Fabric(t, user_forwarding(t, hosts, through_egress=False), T.compute(plan, t)))
    red1 = plan.tenant("red").member("red-1")
    web = next(c for c in t.containers if t.node(c).pi != red1.pi)
    assert nets.send_ip(web, "red-1") == {"red-1"}  # the default network reaches into red: no isolation


def frame_bytes(frame: dict[str, Any]) -> bytes:
    """The Ethernet header (with its 802.1Q tag when tagged) of a fake-table frame: all that
    l2_learning reads of a packet-in."""
    head = bytes.fromhex(frame["eth_dst"].replace(":", "")) + bytes.fromhex(frame["eth_src"].replace(":", ""))
    if frame.get("vlan_vid", fl.OFPVID_NONE) & fl.OFPVID_PRESENT:
        head += struct.pack("!HH", fl.ETH_TYPE_8021Q, frame["vlan_vid"] & 0xFFF)
    return head + struct.pack("!H", frame.get("eth_type", fl.ETH_TYPE_IP)) + b"\x00" * 46


def test_l2_learning_under_tenancy_floods_a_members_frames_to_the_default_network():
    """l2_learning (one table, like simple_switch_13) learns and floods from the controller: the
    packet-out of a member's tagged frame goes out of every port, default containers' included.
    Tenancy cannot stop a packet-out; that is why README says isolation needs a pipeline app."""
    t = build("tree:2,2", containers_per_pi=1)  # loop-free: l2_learning floods
    plan = two_tenants(t, per_tenant=2)
    tenancy_rules = T.compute(plan, t)
    l2 = L2Learning()
    dps = {t.dpid(b): FakeDatapath(t.dpid(b)) for b in t.bridges}
    for dp in dps.values():
        pipeline.ensure_installed(dp)
        fl_msgs = fl.encode(dp, fl.resync(tenancy_rules.get(dp.id, SwitchRules())))
        for msg in fl_msgs:
            dp.send_msg(msg)
        l2.switch_features_handler(features(dp))  # its table-0 miss replaces the pipeline's
    fabric = Fabric(t, tables={d: dp.table for d, dp in dps.items()})
    nets = Networks(t, plan, fabric)
    red1, red2 = plan.tenant("red").member("red-1"), plan.tenant("red").member("red-2")
    frame = {"eth_src": red1.mac, "eth_dst": red2.mac, "eth_type": fl.ETH_TYPE_IP, "ipv4_src": red1.ip,
             "ipv4_dst": red2.ip, "ttl": 64}
    reached: set[str] = set()
    work = [(dpid(red1.pi), red1.port, frame)]
    for _ in range(100):  # each packet-in answered by the app, as the controller would
        if not work:
            break
        where, port, pkt = work.pop()
        fabric.packet_ins.clear()
        ends = fabric.send(where, port, pkt)
        reached |= {nets.by_place[(e.dpid, e.port)] for e in ends if isinstance(e, Delivery)}
        for d, _, _, seen in fabric.packet_ins:
            dp = dps[d]
            dp.take()
            msg = parser.OFPPacketIn(dp, ofp.OFP_NO_BUFFER, 0, ofp.OFPR_NO_MATCH, 0, 0,
                                     parser.OFPMatch(in_port=seen["in_port"]), frame_bytes(seen))
            l2.packet_in_handler(SimpleNamespace(msg=msg))
            for out in dp.take():
                if not isinstance(out, parser.OFPPacketOut):
                    continue
                ports = [p for p in t.ports(t.by_dpid()[d])] + [m.port for _, m in plan.members if dpid(m.pi) == d]
                targets = ports if out.actions[0].port == ofp.OFPP_FLOOD else [out.actions[0].port]
                for p in targets:
                    if p == seen["in_port"]:
                        continue
                    if (d, p) in fabric.peer:
                        work.append((*fabric.peer[(d, p)], dict(seen)))
                    else:
                        reached.add(nets.by_place[(d, p)])
    assert "red-2" in reached  # it does carry the tenant's traffic...
    assert any(nets.at[n][4] == "default" for n in reached)  # ...and floods it into the default network
