"""Routing rules, pure: paths, ECMP groups, failover buckets and diff minimality on real builder
topologies, checked with the fake flow table (flowtable.Fabric) that answers "where does this
packet go" over every ECMP choice, and asserts the negatives: never out of another port, never a
loop, never flooded."""

from __future__ import annotations

import pytest
from flowtable import Delivery, FakeDatapath
from flowtable import Fabric as FakeFabric

from controller_apps import flows as fl
from controller_apps import pipeline
from controller_apps import routing_rules as rr
from controller_apps.flows import Match
from topology.builders import build
from topology.model import Topology


def container_end(topo: Topology, name: str) -> Delivery:
    pi = topo.node(name).pi
    return Delivery(topo.dpid(pi), topo.port(pi, name))


def assert_all_pairs_delivered(topo: Topology, fabric: FakeFabric) -> int:
    """Every container reaches every other one on every ECMP choice, and only there."""
    checked = 0
    for src in topo.containers:
        start = container_end(topo, src)
        for dst in topo.containers:
            if dst == src:
                continue
            pkt = {"eth_dst": topo.node(dst).mac, "eth_type": 0x0800}
            results = fabric.send(start.dpid, start.port, pkt)
            assert results and set(results) == {container_end(topo, dst)}, (src, dst, results)
            checked += 1
    return checked


def state_for(topo: Topology, down=()) -> dict[int, fl.SwitchRules]:
    return rr.desired_state(rr.graph_from_topology(topo, down), rr.hosts_from_topology(topo))


@pytest.mark.parametrize("spec", ["fattree:4", "leafspine:2,4,2", "picloud:2,3", "tree:2,2"])
def test_every_pair_is_delivered_only_to_its_destination(spec):
    topo = build(spec)
    n = len(topo.containers)
    assert assert_all_pairs_delivered(topo, FakeFabric(topo, state_for(topo))) == n * (n - 1)


def test_containers_sharing_a_pi_reach_each_other_inside_it():
    topo = build("leafspine:2,2,1", containers_per_pi=3)
    state = state_for(topo)
    n = len(topo.containers)
    assert assert_all_pairs_delivered(topo, FakeFabric(topo, state)) == n * (n - 1)
    first, second = topo.containers_on(topo.pis[0])[:2]
    hosts = {h.mac: h for h in rr.hosts_from_topology(topo)}
    key = rr.Routed(hosts.values()).forward_key[hosts[topo.node(second).mac].key]
    assert state[topo.dpid(topo.pis[0])].flows[key].goto == pipeline.TABLE_EGRESS  # never leaves the Pi


def test_fattree_edge_spreads_over_both_aggregations_and_aggregation_over_both_cores():
    topo = build("fattree:4")
    state = state_for(topo)
    dst_pi = topo.node(topo.containers[-1]).pi  # pod 4
    gid = rr.group_ids([topo.dpid(dst_pi)])[topo.dpid(dst_pi)]
    edge = topo.node(topo.containers[0]).pi and "edge1-1"
    group = state[topo.dpid(edge)].groups[gid]
    assert group.type == "select"
    assert {topo.ports(edge)[b.port] for b in group.buckets} == {"agg1-1", "agg1-2"}
    agg = state[topo.dpid("agg1-1")].groups[gid]
    assert len({topo.ports("agg1-1")[b.port] for b in agg.buckets}) == 2
    assert all(topo.node(topo.ports("agg1-1")[b.port]).role == "core" for b in agg.buckets)
    # downstream, in the destination pod, there is exactly one way down
    core = state[topo.dpid("core1")].groups[gid]
    assert len({b.port for b in core.buckets}) == 1


def test_consecutive_ecmp_hops_read_different_hash_bits():
    """Edge and aggregation must not make the same choice from the same hash (polarisation):
    over the 16 hash slots, all 4 (aggregation, core) combinations occur equally often."""
    topo = build("fattree:4")
    state = state_for(topo)
    dst = topo.dpid(topo.node(topo.containers[-1]).pi)
    gid = rr.group_ids([dst])[dst]
    edge_buckets = state[topo.dpid("edge1-1")].groups[gid].buckets
    combos = {}
    for slot in range(rr.HASH_SLOTS):
        agg = topo.ports("edge1-1")[edge_buckets[slot].port]
        agg_buckets = state[topo.dpid(agg)].groups[gid].buckets
        core = topo.ports(agg)[agg_buckets[slot].port]
        combos[(agg, core)] = combos.get((agg, core), 0) + 1
    assert len(combos) == 4 and set(combos.values()) == {4}


def test_stale_rules_survive_any_upward_link_failure_in_the_data_plane():
    """Fast failover: with the rules computed before the failure, cutting any edge-aggregation
    or aggregation-core link still delivers the traffic that climbs through it (dead buckets are
    skipped), before the controller recomputes anything."""
    topo = build("fattree:4")
    state = state_for(topo)
    src = topo.containers[0]  # pod 1
    start = container_end(topo, src)
    for link in [("edge1-1", "agg1-1"), ("agg1-1", "core1"), ("agg1-2", "core3")]:
        fabric = FakeFabric(topo, state, dead={frozenset(link)})
        for dst in topo.containers[4:]:  # other pods: upward traffic from pod 1
            pkt = {"eth_dst": topo.node(dst).mac, "eth_type": 0x0800}
            assert set(fabric.send(start.dpid, start.port, pkt)) == {container_end(topo, dst)}, (link, dst)


def test_recomputation_routes_around_a_downward_failure():
    topo = build("fattree:4")
    cut = frozenset(("core1", "agg4-1"))
    stale = FakeFabric(topo, state_for(topo), dead={cut})
    dst = topo.containers[-1]
    pkt = {"eth_dst": topo.node(dst).mac, "eth_type": 0x0800}
    start = container_end(topo, topo.containers[0])
    # bipartite: core1 has no loop-free alternate, its only bucket is dead, so it drops
    assert "drop" in stale.send(start.dpid, start.port, pkt)
    fresh = FakeFabric(topo, state_for(topo, down=[tuple(cut)]), dead={cut})
    assert assert_all_pairs_delivered(topo, fresh) == 16 * 15


def test_single_next_hop_gets_a_loop_free_alternate_where_one_exists():
    """A triangle a-b-c with hosts on c: a's only shortest hop is c; b is as far from c as a, so it
    is a loop-free alternate, and cutting a-c in the data plane still delivers via b."""
    topo = Topology()
    for name in ("a", "b", "c"):
        topo.add_switch(name)
    topo.add_pi("pa")
    topo.add_pi("pc")
    topo.add_link("a", "b")
    topo.add_link("b", "c")
    topo.add_link("a", "c")
    topo.add_link("pa", "a")
    topo.add_link("pc", "c")
    topo.add_container("x", "pa")
    topo.add_container("y", "pc")
    state = state_for(topo)
    dst = topo.dpid("pc")
    group = state[topo.dpid("a")].groups[rr.group_ids([dst])[dst]]
    assert group.type == "ff"
    assert [b.port for b in group.buckets] == [topo.port("a", "c"), topo.port("a", "b")]
    fabric = FakeFabric(topo, state, dead={frozenset(("a", "c"))})
    start = container_end(topo, "x")
    pkt = {"eth_dst": topo.node("y").mac, "eth_type": 0x0800}
    assert fabric.send(start.dpid, start.port, pkt) == [container_end(topo, "y")]


def test_unknown_unicast_goes_to_the_controller_and_broadcast_is_never_forwarded():
    topo = build("leafspine:2,4,2")
    fabric = FakeFabric(topo, state_for(topo))
    start = container_end(topo, topo.containers[0])
    unknown = {"eth_dst": "02:99:00:00:00:01", "eth_type": 0x0800}
    assert fabric.send(start.dpid, start.port, unknown) == ["controller"]
    broadcast = {"eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0800}
    assert fabric.send(start.dpid, start.port, broadcast) == ["drop"]
    multicast = {"eth_dst": "33:33:00:00:00:01", "eth_type": 0x86DD}
    assert fabric.send(start.dpid, start.port, multicast) == ["drop"]


def test_arp_requests_are_answered_in_place_and_only_unknown_senders_reach_the_controller():
    topo = build("leafspine:2,4,2")
    fabric = FakeFabric(topo, state_for(topo))
    sender = topo.containers[0]
    start = container_end(topo, sender)
    target = topo.containers[5]
    ip = topo.node(target).ip.split("/")[0]
    request = {"eth_dst": "ff:ff:ff:ff:ff:ff", "eth_src": topo.node(sender).mac, "eth_type": 0x0806,
               "arp_op": 1, "arp_tpa": ip}
    assert fabric.send(start.dpid, start.port, request) == [start]  # the reply goes back in_port
    mine = {"eth_src": topo.node(sender).mac, "arp_sha": topo.node(sender).mac,
            "arp_spa": topo.node(sender).ip.split("/")[0]}
    blocks = set()
    for name in topo.containers:  # every host's answer, block rules included, is its own
        asked = topo.node(name).ip.split("/")[0]
        [reply] = fabric.send(start.dpid, start.port, dict(request, **mine, arp_tpa=asked))
        theirs = topo.node(name).mac
        assert reply == start and reply.frame == {
            **request, "in_port": start.port, "vlan_vid": fl.OFPVID_NONE, "arp_op": 2, "eth_dst": mine["eth_src"],
            "eth_src": theirs, "arp_sha": theirs, "arp_spa": asked, "arp_tha": mine["arp_sha"],
            "arp_tpa": mine["arp_spa"]}, name
        blocks.add(fabric.lookup(start.dpid, pipeline.TABLE_FORWARD, dict(request, arp_tpa=asked)).key)
    assert len(blocks) < len(topo.containers)  # consecutive addresses share answers
    unicast_reprobe = dict(request, eth_dst=topo.node(target).mac)  # the kernel's reachability check
    assert fabric.send(start.dpid, start.port, unicast_reprobe) == [start]
    newcomer = dict(request, eth_src="02:00:00:00:00:63")  # a container the controller does not know
    assert fabric.send(start.dpid, start.port, newcomer) == ["controller", start]
    unknown = dict(request, arp_tpa="10.9.9.9")
    assert fabric.send(start.dpid, start.port, unknown) == ["drop"]  # nobody to answer, never flooded
    tagged = dict(request, vlan_vid=fl.vid(5), in_port=start.port)  # tenancy's: routing leaves it alone
    assert fabric.lookup(start.dpid, pipeline.TABLE_ARP, tagged).cookie == pipeline.COOKIE_PIPELINE
    assert fabric.send(start.dpid, start.port, tagged) == ["drop"]  # neither answered nor flooded


def test_tenant_hosts_are_routed_but_egress_and_arp_are_left_to_tenancy():
    topo = build("leafspine:2,2,1")
    graph = rr.graph_from_topology(topo)
    pi = topo.dpid(topo.pis[1])
    member = rr.Host("0a:00:00:00:00:07", "10.1.0.7", pi, 9, tenant="t7", tag=7)
    state = rr.desired_state(graph, [*rr.hosts_from_topology(topo), member])
    key = (pipeline.TABLE_FORWARD, rr.PRIORITY_HOST, rr.forward_match(member.mac, fl.vid(7)))
    assert state[pi].flows[key].goto == pipeline.TABLE_EGRESS
    assert not any(f.table == pipeline.TABLE_EGRESS and ("eth_dst", member.mac) in f.match
                   for f in state[pi].flows.values())
    assert not any(("arp_tpa", "10.1.0.7") in f.match
                   for rules in state.values() for f in rules.flows.values())
    other = topo.dpid(topo.pis[0])
    assert state[other].flows[key].actions == (fl.group(rr.group_ids([pi])[pi]),)


def test_hosts_learned_on_fabric_ports_are_ignored():
    topo = build("leafspine:2,2,1")
    graph = rr.graph_from_topology(topo)
    leaf = topo.dpid("leaf1")
    bogus = rr.Host("02:aa:00:00:00:01", "10.7.7.7", leaf, topo.port("leaf1", "spine1"))
    assert bogus not in rr.usable_hosts(graph, [bogus])


def test_recomputation_is_idempotent_and_a_link_failure_only_modifies_groups():
    topo = build("fattree:4")
    before = state_for(topo)
    assert all(len(fl.diff(before[d], rules)) == 0 for d, rules in state_for(topo).items())
    after = state_for(topo, down=[("core1", "agg4-1")])
    changes = {d: fl.diff(before[d], after[d]) for d in before}
    touched = {topo.by_dpid()[d] for d, c in changes.items() if len(c)}
    for change in changes.values():
        assert not (change.add_flows or change.modify_flows or change.delete_flows)
        assert not (change.add_groups or change.delete_groups)
    # only bridges whose choices towards pod 4 (or towards core1/agg4-1's own sides) changed
    assert "core1" in touched and "agg4-1" in touched
    assert not any(n.startswith("pi") for n in touched)
    total = sum(len(c) for c in changes.values())
    assert total <= 40, total  # ~ groups towards the 4 Pis of pod 4 and pods 1-3 via agg4-1


def test_a_new_host_adds_only_its_own_flows():
    topo = build("leafspine:2,2,1")
    graph = rr.graph_from_topology(topo)
    hosts = rr.hosts_from_topology(topo)
    before = rr.desired_state(graph, hosts)
    pi = topo.dpid(topo.pis[0])
    newcomer = rr.Host("02:00:00:00:00:63", "10.0.0.99", pi, 7)
    after = rr.desired_state(graph, [*hosts, newcomer])
    for dpid in before:
        change = fl.diff(before[dpid], after[dpid])
        assert not (change.modify_flows or change.delete_flows)
        assert not (change.modify_groups or change.delete_groups)
        assert all(("eth_dst", newcomer.mac) in f.match or ("arp_tpa", newcomer.ip) in f.match
                   or ("eth_src", newcomer.mac) in f.match for f in change.add_flows)
    assert len(fl.diff(before[pi], after[pi]).add_flows) == 4  # forward, egress, ARP answer, known sender


def test_group_ids_are_stable_when_bridges_join_and_unique_on_collision():
    ids = rr.group_ids([5, 9])
    assert rr.group_ids([5, 9, 77])[5] == ids[5]
    clash = rr.group_ids([3, 3 + rr.GROUP_SPAN])
    assert len(set(clash.values())) == 2
    assert all(rr.GROUP_BASE <= g < rr.GROUP_BASE + rr.GROUP_SPAN for g in clash.values())


def test_encode_orders_groups_before_flows_and_deletes_last():
    from os_ken.ofproto import ofproto_v1_3 as ofp

    topo = build("leafspine:2,2,1")
    desired = state_for(topo)[topo.dpid("leaf1")]
    change = fl.diff(None, desired)
    change.delete_groups = [rr.GROUP_BASE + 1]
    change.delete_flows = [fl.Flow(2, 100, Match(eth_dst="02:00:00:00:00:77"), (fl.output(1),))]
    dp = FakeDatapath(1)
    msgs = fl.encode(dp, change)
    kinds = [type(m).__name__ for m in msgs]
    first_flow = kinds.index("OFPFlowMod")
    assert all(k == "OFPGroupMod" for k in kinds[:first_flow])
    assert msgs[-1].command == ofp.OFPGC_DELETE and msgs[-2].command == ofp.OFPFC_DELETE_STRICT
    for msg in msgs:  # every message serialises (real os-ken encoding, no mock)
        dp.send_msg(msg)


# --- incremental host changes ---------------------------------------------------------------------
def _routed(graph, hosts) -> rr.Routed:
    return rr.Routed(rr.usable_hosts(graph, hosts))


def _same_routed(got: rr.Routed, want: rr.Routed) -> None:
    """Hosts and every index equal: what host_changes kept up to date is what a full build gives."""
    assert got.hosts == want.hosts
    assert got.on_bridge == want.on_bridge and got.claims == want.claims
    assert got.forward_key == want.forward_key and got.arp_key == want.arp_key


def _flow_set(flows) -> set:
    return {(f.key, f) for f in flows}


def _incremental_matches_full(topo: Topology, hosts: list[rr.Host], updates: dict[rr.HostKey, rr.Host | None]):
    """host_changes from `hosts` with `updates` must equal the diff of two full computations, and
    applying it to the old rules must give exactly the new desired rules."""
    graph = rr.graph_from_topology(topo)
    before = rr.desired_state(graph, hosts)
    after_hosts = [h for h in hosts if h.key not in updates] + [h for h in updates.values() if h is not None]
    after = rr.desired_state(graph, after_hosts)
    result = rr.host_changes(graph, _routed(graph, hosts), updates)
    assert result is not None
    changes, routed = result
    _same_routed(routed, _routed(graph, after_hosts))
    for dpid in before:
        full = fl.diff(before[dpid], after[dpid])
        got = changes.get(dpid, fl.Change())
        assert not (full.add_groups or full.modify_groups or full.delete_groups)
        assert not (got.add_groups or got.modify_groups or got.delete_groups)
        assert _flow_set(got.add_flows) == _flow_set(full.add_flows), topo.by_dpid()[dpid]
        assert _flow_set(got.modify_flows) == _flow_set(full.modify_flows), topo.by_dpid()[dpid]
        assert _flow_set(got.delete_flows) == _flow_set(full.delete_flows), topo.by_dpid()[dpid]
        assert (dpid in changes) == bool(len(full))
        installed = fl.SwitchRules(dict(before[dpid].flows), dict(before[dpid].groups))
        fl.apply_change(installed, got)
        assert installed.flows == after[dpid].flows
    return before, after


def _newcomer(topo: Topology, pi: str, n: int) -> rr.Host:
    """A host on an unused port of an already-served Pi, as discovery would learn it."""
    return rr.Host(f"02:aa:00:00:00:{n:02x}", f"10.9.0.{n}", topo.dpid(pi), 40 + n)


@pytest.mark.parametrize("spec", ["fattree:4", "leafspine:2,4,2"])
def test_incremental_host_addition_equals_a_full_recomputation_and_is_delivered(spec):
    topo = build(spec)
    hosts = rr.hosts_from_topology(topo)
    one = _newcomer(topo, topo.pis[0], 1)
    _, after = _incremental_matches_full(topo, hosts, {one.key: one})
    # the newcomer is reached from every container, and only at its own port
    fabric = FakeFabric(topo, after)
    for src in topo.containers:
        start = container_end(topo, src)
        assert set(fabric.send(start.dpid, start.port, {"eth_dst": one.mac, "eth_type": 0x0800})) == \
            {Delivery(one.dpid, one.port)}
    two = [_newcomer(topo, topo.pis[-1], 2), _newcomer(topo, topo.pis[1], 3)]
    _incremental_matches_full(topo, [*hosts, one], {h.key: h for h in two})


@pytest.mark.parametrize("spec", ["fattree:4", "leafspine:2,4,2"])
def test_incremental_removal_move_and_readdress_equal_a_full_recomputation(spec):
    topo = build(spec, containers_per_pi=2)
    hosts = rr.hosts_from_topology(topo)
    first, second = hosts[0], hosts[-1]
    _incremental_matches_full(topo, hosts, {first.key: None})  # its Pi keeps its other container
    moved = rr.Host(first.mac, first.ip, second.dpid, 60)
    _incremental_matches_full(topo, hosts, {first.key: moved})
    readdressed = rr.Host(first.mac, "10.9.9.9", first.dpid, first.port)
    _incremental_matches_full(topo, hosts, {first.key: readdressed})
    member = rr.Host(first.mac, first.ip, hosts[1].dpid, 70, tenant="t7", tag=7)  # same MAC and IP, a tenant's
    _incremental_matches_full(topo, hosts, {member.key: member})
    unchanged = _routed(rr.graph_from_topology(topo), hosts)
    assert rr.host_changes(rr.graph_from_topology(topo), unchanged, {first.key: first}) == ({}, unchanged)
    _same_routed(unchanged, _routed(rr.graph_from_topology(topo), hosts))


def test_incremental_host_changes_defer_to_a_full_recomputation_when_the_bridges_with_hosts_change():
    topo = build("leafspine:2,2,1")
    graph = rr.graph_from_topology(topo)
    hosts = rr.hosts_from_topology(topo)
    routed = _routed(graph, hosts)
    spine = topo.dpid("spine1")
    assert rr.host_changes(graph, routed, {(0, "02:aa:00:00:00:09"): rr.Host("02:aa:00:00:00:09", None, spine, 9)}) \
        is None  # the spine's first host: every bridge needs a new group
    assert rr.host_changes(graph, routed, {hosts[0].key: None}) is None  # its Pi's last host
    _same_routed(routed, _routed(graph, hosts))  # a refusal changes nothing
    on_fabric = rr.Host("02:aa:00:00:00:0b", None, topo.dpid("leaf1"), topo.port("leaf1", "spine1"))
    assert rr.host_changes(graph, routed, {on_fabric.key: on_fabric}) == ({}, routed)  # mis-learned: ignored


def test_flow_mods_sharing_a_flow_encode_identically_on_every_bridge():
    topo = build("leafspine:2,2,1")
    host = rr.hosts_from_topology(topo)[0]
    flows = [f for rules in state_for(topo).values() for f in rules.flows.values()
             if ("arp_tpa", host.ip) in f.match or ("eth_dst", host.mac) in f.match]
    wires = {}
    for dpid in (1, 2):
        dp = FakeDatapath(dpid)
        for msg in fl.encode(dp, fl.Change(add_flows=flows)):
            msg.xid = 7
            dp.send_msg(msg)
            wires.setdefault(dpid, []).append(bytes(msg.buf))
    assert wires[1] == wires[2] and len(set(wires[1])) == len({f.key + (f.actions,) for f in flows})
    dp = FakeDatapath(3)
    fresh = fl.encode(dp, fl.Change(add_flows=[fl.Flow(2, 100, Match(eth_dst=host.mac), (fl.output(9),))]))
    fresh[0].xid = 7
    dp.send_msg(fresh[0])
    assert bytes(fresh[0].buf) not in wires[1]  # a different flow is not served from the cache


# --- address blocks ------------------------------------------------------------------------------
def _fewest_blocks(values: set[int], low: int, high: int) -> int:
    """Brute force: the fewest aligned blocks covering exactly `values` within [low, high)."""
    best = {high: 0}
    for x in range(high - 1, low - 1, -1):
        if x not in values:
            best[x] = best[x + 1]
            continue
        options = []
        bits = 0
        while x % (1 << bits) == 0 and x + (1 << bits) <= high:
            if all(v in values for v in range(x, x + (1 << bits))):
                options.append(1 + best[x + (1 << bits)])
            bits += 1
        best[x] = min(options)
    return best[low]


def test_aligned_blocks_cover_exactly_the_values_with_the_fewest_blocks():
    import random

    rng = random.Random(5)
    for _ in range(300):
        values = {v for v in range(64) if rng.random() < rng.choice((0.3, 0.7, 0.95))}
        blocks = rr.aligned_blocks(values, rr.MAC_BITS)
        covered = [v for base, bits in blocks for v in range(base, base + (1 << bits))]
        assert sorted(covered) == sorted(values)  # each value once, nothing else
        assert all(base % (1 << bits) == 0 for base, bits in blocks)
        assert len(blocks) == _fewest_blocks(values, 0, 64)
    assert rr.aligned_blocks(range(21, 41), 48) == [(21, 0), (22, 1), (24, 3), (32, 3), (40, 0)]
    assert rr.aligned_blocks(range(0, 16), 2) == [(0, 2), (4, 2), (8, 2), (12, 2)]  # max_bits holds


def test_blocks_serve_exactly_the_known_hosts_of_a_pi():
    """Five consecutive containers per Pi: fewer rules than hosts, every pair still delivered, and
    a MAC between two Pis' blocks that no host has still misses to the controller."""
    topo = build("picloud:2,3", containers_per_pi=5)
    state = state_for(topo)
    n = len(topo.containers)
    fabric = FakeFabric(topo, state)
    assert assert_all_pairs_delivered(topo, fabric) == n * (n - 1)
    core = topo.dpid(topo.switches[0])
    towards = [f for f in state[core].flows.values() if f.table == pipeline.TABLE_FORWARD and f.actions
               and f.actions[0].kind == "group"]
    assert len(towards) < n
    answers = [f for f in state[core].flows.values() if f.priority == rr.PRIORITY_ARP_ANSWER]
    assert answers == []  # no hosts on the core: no answers there
    pi = topo.dpid(topo.pis[0])
    answers = [f for f in state[pi].flows.values() if f.priority == rr.PRIORITY_ARP_ANSWER]
    assert len(answers) == len(rr.aligned_blocks(range(1, n + 1), 32)) == 8  # 30 consecutive addresses
    start = container_end(topo, topo.containers[0])
    stranger = rr.mac_text(rr.mac_int(topo.node(topo.containers[-1]).mac) + 1)  # next to the last block
    assert fabric.send(start.dpid, start.port, {"eth_dst": stranger, "eth_type": 0x0800}) == ["controller"]


def test_arp_blocks_answer_each_ip_with_its_own_mac_whatever_the_addressing():
    """Hosts whose MAC is not IP + a constant, or whose constant is badly aligned, or who share an
    IP: every answer is still the host's own MAC (the last host of a shared IP, as before)."""
    topo = build("leafspine:2,2,1")
    graph = rr.graph_from_topology(topo)
    pi = topo.dpid(topo.pis[0])
    hosts = [rr.Host(f"02:00:00:00:01:{i + 3:02x}", f"10.1.0.{i}", pi, 10 + i) for i in range(12)]  # odd offset
    hosts += [rr.Host(f"0e:00:00:00:00:{i:02x}", f"10.2.0.{i}", pi, 30 + i) for i in range(16)]  # aligned
    hosts += [rr.Host("0e:00:00:00:99:01", "10.2.0.5", pi, 60)]  # shares 10.2.0.5 (sorts last: wins)
    fabric = FakeFabric(topo, rr.desired_state(graph, hosts))
    start = Delivery(pi, 10)
    request = {"eth_dst": "ff:ff:ff:ff:ff:ff", "eth_src": hosts[0].mac, "eth_type": 0x0806, "arp_op": 1,
               "arp_sha": hosts[0].mac, "arp_spa": hosts[0].ip}
    expect = {h.ip: h.mac for h in sorted(hosts, key=lambda h: h.key)}
    for ip, mac in expect.items():
        [reply] = fabric.send(start.dpid, start.port, dict(request, arp_tpa=ip))
        assert (reply.frame["eth_src"], reply.frame["arp_sha"], reply.frame["arp_spa"]) == (mac, mac, ip)
    keys = rr.Routed(hosts).arp_key
    assert len(set(keys.values())) < len(expect) and set(keys) == set(expect)


@pytest.mark.parametrize(("spec", "per_pi"), [("fattree:4", 3), ("leafspine:2,4,2", 4)])
def test_incremental_changes_that_merge_and_split_blocks_equal_a_full_recomputation(spec, per_pi):
    topo = build(spec, containers_per_pi=per_pi)
    hosts = rr.hosts_from_topology(topo)
    on_pi = [h for h in hosts if h.dpid == hosts[4].dpid]
    middle = on_pi[1]  # MAC 5 of 4-6 (fattree: blocks 4-5, 6) or MAC 6 of 5-8 (leafspine: 5, 6-7, 8)
    _incremental_matches_full(topo, hosts, {middle.key: None})  # splits its Pi's block
    rest = [h for h in hosts if h.key != middle.key]
    _, after = _incremental_matches_full(topo, rest, {middle.key: middle})  # and back: merged again
    n = len(topo.containers)
    if spec.startswith("leafspine"):  # (all pairs of fattree:4's 48 hosts take seconds)
        assert assert_all_pairs_delivered(topo, FakeFabric(topo, after)) == n * (n - 1)
    moved = rr.Host(middle.mac, middle.ip, hosts[0].dpid, 77)  # into another Pi's run of addresses
    _incremental_matches_full(topo, hosts, {middle.key: moved})
    after_last = rr.mac_text(rr.mac_int(on_pi[-1].mac) + 1)
    newcomer = rr.Host(after_last, "10.9.0.1", middle.dpid, 78)  # the next MAC: extends the block
    _incremental_matches_full(topo, hosts, {newcomer.key: newcomer})


def test_a_run_of_random_host_changes_keeps_rules_and_indexes_equal_to_full_computations():
    """One Routed carried through 60 changes (joins next to a Pi's block or anywhere, leaves, moves,
    new IPs, IPs shared across Pis, tenant members): after each, the rules the changes built and
    every index equal a full computation's."""
    import random

    rng = random.Random(11)
    topo = build("leafspine:2,4,2", containers_per_pi=3)
    graph = rr.graph_from_topology(topo)
    hosts = {h.key: h for h in rr.hosts_from_topology(topo)}
    pis = [topo.dpid(p) for p in topo.pis]
    installed = rr.desired_state(graph, hosts.values())
    routed = _routed(graph, hosts.values())
    for step in range(60):
        some = rng.choice(sorted(hosts))
        kind = rng.choice(["join", "join", "leave", "move", "readdress", "share", "member"])
        n = 40 + step
        if kind == "join":
            mac = rr.mac_text(rr.mac_int(hosts[some].mac) + 1) if rng.random() < 0.5 else f"02:00:00:00:01:{n:02x}"
            update = rr.Host(mac, f"10.0.0.{rng.randrange(1, 200)}", rng.choice(pis), 50 + n)
        elif kind == "leave":
            update = None
        elif kind == "move":
            update = rr.Host(hosts[some].mac, hosts[some].ip, rng.choice(pis), 50 + n, hosts[some].tenant,
                             hosts[some].tag)
        elif kind == "readdress":
            update = rr.Host(hosts[some].mac, f"10.0.0.{rng.randrange(1, 200)}", hosts[some].dpid,
                             hosts[some].port, hosts[some].tenant, hosts[some].tag)
        elif kind == "share":
            other = hosts[rng.choice(sorted(hosts))]
            update = rr.Host(f"02:00:00:00:02:{n:02x}", other.ip, rng.choice(pis), 50 + n)
        else:
            update = rr.Host(f"0a:00:00:00:00:{n:02x}", "10.1.0.1", rng.choice(pis), 50 + n, "t", 7)
        key = some if kind in ("leave", "move", "readdress") else update.key  # type: ignore[union-attr]
        after = dict(hosts)
        if update is None:
            del after[key]
        else:
            after[key] = update
        result = rr.host_changes(graph, routed, {key: update})
        if result is None:  # a Pi's first or last host: the app recomputes everything
            assert {h.dpid for h in after.values()} != {h.dpid for h in hosts.values()}
            routed = _routed(graph, after.values())
            installed = rr.desired_state(graph, after.values())
        else:
            changes, routed = result
            for dpid, change in changes.items():
                fl.apply_change(installed[dpid], change)
        hosts = after
        want = rr.desired_state(graph, hosts.values())
        assert all(installed[d].flows == want[d].flows for d in want), (step, kind)
        _same_routed(routed, _routed(graph, hosts.values()))
