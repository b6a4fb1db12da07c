"""The discovery and routing apps' handler glue, driven with real os-ken messages against a
fake datapath (flowtable.FakeDatapath: it keeps what the app sends and applies it to a fake flow
table), with a private ControllerState."""

from __future__ import annotations

import pytest
from flowtable import FakeDatapath
from os_ken.controller import ofp_event
from os_ken.lib.packet import arp, ether_types, ethernet, packet, vlan
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller_apps import discovery as disc
from controller_apps import pipeline
from controller_apps import routing_rules as rr
from controller_apps.routing import Routing
from controller_apps.state import ControllerState
from topology.builders import build


def features(dp) -> ofp_event.EventOFPSwitchFeatures:
    return ofp_event.EventOFPSwitchFeatures(parser.OFPSwitchFeatures(dp, datapath_id=dp.id))


def port(no: int, up: bool = True) -> parser.OFPPort:
    return parser.OFPPort(no, f"02:00:00:aa:00:{no:02x}", f"p{no}", 0, 0 if up else ofp.OFPPS_LINK_DOWN,
                          0, 0, 0, 0, 0, 0)


def packet_in(dp, in_port: int, data: bytes, table: int) -> ofp_event.EventOFPPacketIn:
    msg = parser.OFPPacketIn(dp, ofp.OFP_NO_BUFFER, len(data), ofp.OFPR_NO_MATCH, table, 0,
                             parser.OFPMatch(in_port=in_port), data)
    return ofp_event.EventOFPPacketIn(msg)


def arp_request(src_mac: str, src_ip: str, target_ip: str, vid: int | None = None) -> bytes:
    pkt = packet.Packet()
    if vid is None:
        pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src_mac, ether_types.ETH_TYPE_ARP))
    else:
        pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src_mac, ether_types.ETH_TYPE_8021Q))
        pkt.add_protocol(vlan.vlan(vid=vid, ethertype=ether_types.ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(src_mac=src_mac, src_ip=src_ip, dst_ip=target_ip))
    pkt.serialize()
    return bytes(pkt.data)


@pytest.fixture
def leafspine():
    """leafspine:2,2,1 known to a private STATE: intended topology, links as discovery reports
    them, and a connected routing app with one recording datapath per bridge."""
    topo = build("leafspine:2,2,1")
    state = ControllerState()
    state.set_intended(topo.to_dict())
    for host in disc.intended_hosts(state):
        state.add_host(**host)
    state.set_links([{"a": ln.a, "a_port": ln.port_a, "b": ln.b, "b_port": ln.port_b}
                     for ln in topo.fabric_links()])
    app = Routing(state=state)
    dps = {name: FakeDatapath(topo.dpid(name)) for name in topo.bridges}
    for dp in dps.values():
        app.switch_features(features(dp))
    return topo, state, app, dps


def test_connect_installs_pipeline_then_every_route_without_removing_anything(leafspine):
    """A (re)connected bridge may still carry a previous controller's rules and established flows:
    nothing is deleted; each group is ADDed then MODIFYed (one of them fails harmlessly) before any
    flow points at it, and every route is ADDed (replacing an identical entry in place)."""
    topo, state, app, dps = leafspine
    app.recompute()
    desired = rr.desired_state(*_inputs(topo, state))
    for name, dp in dps.items():
        sent = dp.take()
        tables = [m.table_id for m in sent if isinstance(m, parser.OFPFlowMod)
                  and m.cookie == pipeline.COOKIE_PIPELINE and m.command == ofp.OFPFC_ADD]
        assert tables == [0, 1, 2, 3], name  # the shared pipeline's miss rules, once
        deletes = [m for m in sent if (isinstance(m, parser.OFPFlowMod)
                                       and m.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT))
                   or (isinstance(m, parser.OFPGroupMod) and m.command == ofp.OFPGC_DELETE)]
        assert deletes == [], name
        rules = desired[topo.dpid(name)]
        group_mods = [(m.group_id, m.command) for m in sent if isinstance(m, parser.OFPGroupMod)]
        assert [g for g, c in group_mods if c == ofp.OFPGC_ADD] == list(rules.groups)
        assert [g for g, c in group_mods if c == ofp.OFPGC_MODIFY] == list(rules.groups)
        assert all(i < j for i, (_, c) in enumerate(group_mods) for j, (_, d) in enumerate(group_mods)
                   if c == ofp.OFPGC_ADD and d == ofp.OFPGC_MODIFY)  # ADD all, then MODIFY all
        assert dp.table.groups == rules.groups  # what the switch ends up holding
        assert {k: f for k, f in dp.table.flows.items() if f.cookie == pipeline.COOKIE_ROUTING} == rules.flows
        flows = [i for i, m in enumerate(sent) if isinstance(m, parser.OFPFlowMod)
                 and m.cookie == pipeline.COOKIE_ROUTING and m.command == ofp.OFPFC_ADD]
        assert len(flows) == len(rules.flows)
        last_group = max((i for i, m in enumerate(sent) if isinstance(m, parser.OFPGroupMod)), default=-1)
        assert all(i > last_group for i in flows), "a flow was sent before the group it points at"
    ready = state.snapshot()["ready"]["routing"]
    assert (ready["generation"], ready["hosts"], ready["bridges"]) == (1, 2, 6)
    app.recompute()  # nothing to send: still a computation, so readiness moves on
    assert state.snapshot()["ready"]["routing"]["generation"] == 2
    events = [e["text"] for e in state.events() if e["kind"] == "routing"]
    assert len(events) == 1 and events[0].startswith("paths for 2 hosts on 6 bridges")  # the UI's log


def _inputs(topo, state):
    from controller_apps.routing import inputs_from_state

    return inputs_from_state(state, sorted(topo.dpid(n) for n in topo.bridges))


def test_recomputing_without_a_change_sends_nothing(leafspine):
    _, _, app, dps = leafspine
    app.recompute()
    for dp in dps.values():
        dp.take()
    assert app.recompute() == 0
    assert all(not dp.sent for dp in dps.values())


def test_a_link_failure_sends_only_group_modifications(leafspine):
    topo, state, app, dps = leafspine
    app.recompute()
    for dp in dps.values():
        dp.take()
    kept = [ln for ln in topo.fabric_links() if {ln.a, ln.b} != {"spine1", "leaf2"}]
    state.set_links([{"a": ln.a, "a_port": ln.port_a, "b": ln.b, "b_port": ln.port_b} for ln in kept])
    assert app.wake.is_set()  # STATE told routing; the worker thread would recompute now
    assert app.recompute() > 0
    sent = [m for dp in dps.values() for m in dp.take()]
    assert sent and all(isinstance(m, parser.OFPGroupMod) and m.command == ofp.OFPGC_MODIFY for m in sent)
    # leaf1's group towards leaf2's Pi now only uses spine2
    leaf1 = dps["leaf1"]
    app.recompute()
    assert not leaf1.sent


def test_a_reconnected_switch_is_fully_reinstalled_without_deletes(leafspine):
    _, _, app, dps = leafspine
    app.recompute()
    dp = dps["leaf1"]
    dp.take()
    fresh = FakeDatapath(dp.id)
    app.switch_features(features(fresh))
    app.recompute()
    sent = fresh.take()
    assert not any(isinstance(m, parser.OFPFlowMod) and m.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
                   for m in sent)
    assert any(isinstance(m, parser.OFPGroupMod) and m.command == ofp.OFPGC_ADD for m in sent)
    assert any(isinstance(m, parser.OFPGroupMod) and m.command == ofp.OFPGC_MODIFY for m in sent)
    assert sum(isinstance(m, parser.OFPFlowMod) and m.cookie == pipeline.COOKIE_ROUTING for m in sent) > 0


def test_arp_the_data_plane_missed_is_answered_for_known_hosts_only(leafspine):
    topo, state, app, dps = leafspine
    pi = topo.pis[0]
    asker, target = topo.containers
    dp = dps[pi]
    in_port = topo.port(pi, asker)
    ip = topo.node(target).ip.split("/")[0]
    dp.take()
    request = arp_request(topo.node(asker).mac, "10.0.0.1", ip)
    app.packet_in(packet_in(dp, in_port, request, pipeline.TABLE_ARP))
    (out,) = dp.take()
    assert isinstance(out, parser.OFPPacketOut) and out.actions[0].port == in_port
    reply = packet.Packet(out.data).get_protocol(arp.arp)
    assert (reply.opcode, reply.src_mac, reply.src_ip, reply.dst_mac) == \
        (arp.ARP_REPLY, topo.node(target).mac, ip, topo.node(asker).mac)
    app.packet_in(packet_in(dp, in_port, arp_request(topo.node(asker).mac, "10.0.0.1", "10.9.9.9"), 1))
    app.packet_in(packet_in(dp, in_port, arp_request(topo.node(asker).mac, "10.0.0.1", ip, vid=5), 1))
    assert dp.take() == []  # unknown target: no answer and no flood; tagged: tenancy's
    app.recompute()
    dp.take()
    app.packet_in(packet_in(dp, in_port, request, pipeline.TABLE_ARP))
    assert dp.take() == []  # now the bridge answers itself; this was its copy for discovery


def test_discovery_traps_lldp_probes_live_ports_and_turns_probes_into_links():
    topo = build("leafspine:2,2,1")
    state = ControllerState()
    state.set_intended(topo.to_dict())
    app = disc.Discovery(state=state)
    dps = {name: FakeDatapath(topo.dpid(name)) for name in topo.bridges}
    for dp in dps.values():
        app.switch_features(features(dp))
    trap = [m for m in dps["leaf1"].take()
            if isinstance(m, parser.OFPFlowMod) and m.cookie == pipeline.COOKIE_DISCOVERY]
    assert len(trap) == 1 and trap[0].table_id == pipeline.TABLE_CLASSIFY
    assert trap[0].priority > pipeline.PRIORITY_SECURITY
    assert trap[0].match["eth_type"] == ether_types.ETH_TYPE_LLDP

    for name, dp in dps.items():
        ports = [port(no, up=not (name == "spine1" and no == 2)) for no in topo.ports(name)]
        app.port_desc(ofp_event.EventOFPPortDescStatsReply(parser.OFPPortDescStatsReply(dp, body=ports)))
    probes = {}
    for name, dp in dps.items():
        for m in dp.take():
            if isinstance(m, parser.OFPPacketOut):
                probes[(name, m.actions[0].port)] = m.data
    fabric_ports = {(n, p) for n in topo.bridges for p, peer in topo.ports(n).items() if peer in topo.bridges}
    assert set(probes) == fabric_ports  # down ones too, container ones never
    assert all(disc.parse_lldp(data) == (topo.dpid(n), p) for (n, p), data in probes.items())

    for (name, port_no), data in probes.items():  # deliver each probe to the far end, as OVS would
        if (name, port_no) == ("spine1", 2):
            continue  # it is down: nothing comes out of it
        peer = topo.ports(name)[port_no]
        app.packet_in(packet_in(dps[peer], topo.port(peer, name), data, pipeline.TABLE_CLASSIFY))
    links = {(ln["a"], ln["a_port"], ln["b"], ln["b_port"]) for ln in state.links()}
    want = {tuple(x for end in sorted(((ln.a, ln.port_a), (ln.b, ln.port_b))) for x in end)
            for ln in topo.fabric_links()}
    far = topo.ports("spine1")[2]
    down_link = tuple(x for end in sorted((("spine1", 2), (far, topo.port(far, "spine1")))) for x in end)
    assert links == want - {down_link}  # a down port's link is down both ways
    assert not any(e["kind"] == "discovery" for e in state.events())

    up = parser.OFPPortStatus(dps["spine1"], ofp.OFPPR_MODIFY, port(2))
    app.port_status(ofp_event.EventOFPPortStatus(up))
    (probe,) = dps["spine1"].take()  # probed at once, not at the next round
    peer = topo.ports("spine1")[2]
    app.packet_in(packet_in(dps[peer], topo.port(peer, "spine1"), probe.data, pipeline.TABLE_CLASSIFY))
    assert {(ln["a"], ln["a_port"], ln["b"], ln["b_port"]) for ln in state.links()} == want
    assert any(e["kind"] == "discovery" and "matches the intended" in e["text"] for e in state.events())

    desc = parser.OFPPort(2, "02:00:00:aa:00:02", "p2", 0, ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0, 0)
    app.port_status(ofp_event.EventOFPPortStatus(parser.OFPPortStatus(dps["leaf1"], ofp.OFPPR_MODIFY, desc)))
    assert len(state.links()) == len(want) - 1  # gone at once, not after the LLDP timeout
    assert any(e["text"] == "port leaf1:2 down" for e in state.events())


def test_discovery_declares_intended_hosts_and_learns_only_on_edge_ports():
    topo = build("leafspine:2,2,1")
    state = ControllerState()
    app = disc.Discovery(state=state)
    state.set_intended(topo.to_dict())
    assert {h["name"] for h in state.hosts()} == set(topo.containers)
    pi = topo.pis[0]
    dp = FakeDatapath(topo.dpid(pi))
    app.switch_features(features(dp))
    newcomer = "02:00:00:00:00:42"
    uplink = topo.port(pi, topo.ports(pi)[1])
    app.packet_in(packet_in(dp, uplink, arp_request(newcomer, "10.0.0.42", "10.0.0.1"), pipeline.TABLE_ARP))
    assert state.host(newcomer) is None  # never learn behind a fabric port
    app.packet_in(packet_in(dp, 9, arp_request(newcomer, "10.0.0.42", "10.0.0.1"), pipeline.TABLE_ARP))
    learned = state.host(newcomer)
    assert (learned["dpid"], learned["port"], learned["ip"]) == (dp.id, 9, "10.0.0.42")
    app.packet_in(packet_in(dp, 9, arp_request("0a:00:00:00:00:05", "10.1.0.5", "10.1.0.1", vid=5), 1))
    assert state.host("0a:00:00:00:00:05") is None  # tagged: tenancy's


def test_state_reports_which_hosts_changed_since_a_version():
    state = ControllerState()
    start = state.host_version
    state.add_host("02:AA:00:00:00:01", "10.9.0.1", 1, 1)
    state.add_host("02:aa:00:00:00:01", "10.9.0.1", 1, 1)  # no change: not logged
    state.add_host("02:aa:00:00:00:02", None, 1, 2)
    state.remove_host("02:aa:00:00:00:01")
    version, keys = state.host_changes(start)
    assert version == state.host_version == start + 3
    assert keys == [(0, "02:aa:00:00:00:01"), (0, "02:aa:00:00:00:02"), (0, "02:aa:00:00:00:01")]
    assert state.host_changes(version) == (version, [])
    assert state.host_changes(version + 1) == (version, None)  # a reader from the future starts over


def test_a_learned_host_costs_only_its_own_flow_mods_not_a_recomputation(leafspine):
    topo, state, app, dps = leafspine
    app.recompute()
    for dp in dps.values():
        dp.take()
    pi = topo.pis[0]
    state.add_host("02:aa:00:00:00:01", "10.9.0.1", topo.dpid(pi), 9)
    assert app.wake.is_set() and not app.full_needed  # a host change: the incremental path
    computed = app.last_compute_s
    assert app.sync_hosts() > 0
    assert app.last_compute_s == computed  # no full recomputation ran
    for name, dp in dps.items():
        sent = dp.take()
        assert sent and all(isinstance(m, parser.OFPFlowMod) and m.command == ofp.OFPFC_ADD for m in sent), name
        assert all("02:aa:00:00:00:01" in (m.match.get("eth_dst"), m.match.get("eth_src"))
                   or m.match.get("arp_tpa") == "10.9.0.1" for m in sent), name
    # what routing believes each bridge holds is exactly a full computation's result
    desired = rr.desired_state(*_inputs(topo, state))
    assert all(app.installed[d].flows == desired[d].flows for d in desired)
    assert app.recompute() == 0


def test_a_pis_first_host_falls_back_to_the_full_recomputation(leafspine):
    topo, state, app, dps = leafspine
    app.recompute()
    computed = app.last_compute_s
    state.add_host("02:aa:00:00:00:02", "10.9.0.2", topo.dpid("spine1"), 9)
    assert app.sync_hosts() > 0
    assert app.last_compute_s != computed
    assert any(isinstance(m, parser.OFPGroupMod) for m in dps["leaf1"].take())


def test_a_table_miss_for_an_installed_destination_goes_back_through_the_pipeline(leafspine):
    topo, state, app, dps = leafspine
    src, dst = topo.containers
    dp = dps[topo.node(src).pi]
    in_port = topo.port(topo.node(src).pi, src)

    def frame(dst_mac: str, ethertype: int = 0x0800) -> bytes:
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(dst_mac, topo.node(src).mac, ethertype))
        pkt.serialize()
        return bytes(pkt.data) + bytes(46)

    dst_mac = topo.node(dst).mac
    dp.take()  # the pipeline's miss rules
    app.packet_in(packet_in(dp, in_port, frame(dst_mac), pipeline.TABLE_FORWARD))
    assert dp.take() == []  # nothing installed yet: the packet is dropped, never flooded
    app.recompute()
    dp.take()
    app.packet_in(packet_in(dp, in_port, frame(dst_mac), pipeline.TABLE_FORWARD))
    (out,) = dp.take()
    assert isinstance(out, parser.OFPPacketOut) and out.in_port == in_port
    assert [a.port for a in out.actions] == [ofp.OFPP_TABLE] and out.data.startswith(frame(dst_mac)[:14])
    for data, table in ((frame("02:aa:00:00:00:77"), pipeline.TABLE_FORWARD),  # unknown destination
                        (frame("ff:ff:ff:ff:ff:ff"), pipeline.TABLE_FORWARD),  # broadcast
                        (frame(dst_mac, ether_types.ETH_TYPE_8021Q), pipeline.TABLE_FORWARD),  # tenancy's
                        (frame(dst_mac), pipeline.TABLE_EGRESS)):  # a miss after forward
        app.packet_in(packet_in(dp, in_port, data, table))
    assert dp.take() == []
    buffered = parser.OFPPacketIn(dp, 77, 60, ofp.OFPR_NO_MATCH, pipeline.TABLE_FORWARD, 0,
                                  parser.OFPMatch(in_port=in_port), frame("02:aa:00:00:00:77"))
    app.packet_in(ofp_event.EventOFPPacketIn(buffered))
    (out,) = dp.take()  # a switch holding the dropped packet is told to free its buffer
    assert (out.buffer_id, out.actions, out.data) == (77, [], None)


def test_features_before_os_ken_sets_the_datapath_id(leafspine):
    """os-ken runs each app's handlers on its own thread: ours can see a features reply before
    os-ken's own handler has set dp.id. The id comes from the message, so recomputation keeps
    working (a None key once made every recompute fail for the rest of the run)."""
    _, _, app, dps = leafspine
    app.recompute()
    dp = dps["leaf1"]
    fresh = FakeDatapath(dp.id)
    msg = parser.OFPSwitchFeatures(fresh, datapath_id=dp.id)
    fresh.id = None
    app.switch_features(ofp_event.EventOFPSwitchFeatures(msg))
    assert None not in app.datapaths and app.datapaths[dp.id] is fresh
    app.recompute()
    assert any(isinstance(m, parser.OFPGroupMod) for m in fresh.take())


def test_a_stopping_app_gives_up_a_full_computation_between_bridges(leafspine):
    """os-ken's shutdown joins the worker thread: a full pass over a 1,000-container run took seconds
    and held the controller's exit past its 10 s bound. A stopped app sends to no further bridge."""
    topo, state, app, dps = leafspine
    for dp in dps.values():
        dp.take()  # the pipeline, sent on connection
    first = min(dps.values(), key=lambda dp: dp.id)
    send = first.send_msg

    def then_stop(msg) -> None:  # the shutdown arrives while the first bridge is being sent to
        send(msg)
        app.stopping = True

    first.send_msg = then_stop
    assert 0 < app.recompute() == len(first.take())
    assert not any(dp.take() for dp in dps.values())
    assert app.generation == 0  # not a finished computation: readiness does not move on


def test_the_first_full_computation_waits_for_discovery_only_at_start_up(leafspine, monkeypatch):
    """Until discovery first matches the intended fabric (at most STARTUP_HOLD_S), the worker does
    not compute; once it has matched, and after the bound, it never waits again."""
    from controller_apps import routing

    topo, state, app, dps = leafspine
    links = [{"a": ln.a, "a_port": ln.port_a, "b": ln.b, "b_port": ln.port_b} for ln in topo.fabric_links()]
    state.set_links(links[:-1])  # one link not found yet
    assert not state.discovery_matched()
    assert app._holding()
    state.set_links(links)
    assert state.discovery_matched() and not app._holding()
    state.set_links(links[:-1])  # a failure later on: routing must react at once
    assert not app._holding()

    fresh = Routing(state=state)  # a never-matching fabric waits the bound, once
    clock = [1000.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    assert fresh._holding()
    clock[0] += routing.STARTUP_HOLD_S
    assert not fresh._holding()
    assert not Routing(state=ControllerState())._holding()  # no intended topology: nothing to wait for
