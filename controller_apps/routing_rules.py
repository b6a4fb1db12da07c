"""Pure rule computation for the routing app: fabric graph and hosts in, OpenFlow rules out.

Faucet-style: nothing here talks to a switch. `desired_state` turns a view of the fabric (bridges,
links, which links are up) and the known hosts into the complete set of flows and groups each
bridge should hold, in the controller's one flow representation (`controller_apps.flows`);
`flows.diff` compares that with what a bridge holds now and returns only the changes;
`flows.encode` turns a change into os-ken messages for one datapath. The routing app is then a
thin loop: recompute, diff, send. Host changes take a shortcut: `host_changes` derives the same
difference from the changed hosts alone (a host's flows depend only on it, the fabric and which
bridges have hosts), so a new container costs its own flows, not a pass over every host.

Algorithm (per destination bridge D that has hosts):
- Breadth-first distances to D over the links that are up (hop count: every fabric link costs the
  same, as in a fat-tree or leaf-spine).
- On every other bridge S, the next hops are the neighbours one hop closer to D (all of them:
  equal-cost multipath). S gets one group per destination bridge, `group_id(D)`, and one flow per
  host on D in table `forward`: `eth_dst=host -> group`. Since flows only name the group, a link
  change rewrites groups (OFPGC_MODIFY, no window without a rule) and never touches flows.
- Two or more next hops: a SELECT group whose buckets each watch their own port, so OVS skips a
  dead bucket in the data plane (fast failover for multipath hops) while the controller catches up.
- One next hop: if some neighbour N at the same distance as S exists, N is a loop-free alternate
  (its shortest paths to D cannot pass through S, which is farther from N's point of view: a
  strict LFA, RFC 5286 with unit costs); the group is FAST_FAILOVER with the primary first and the
  alternates after it. Without an alternate it is a one-bucket SELECT group. On bipartite fabrics
  (fat-tree, leaf-spine) no such alternate exists; there the controller's recomputation, fired by
  the port-status message, moves upstream groups off the dead link.
- On D itself: `eth_dst=host -> goto egress`, and in `egress` the output to the host's port
  (untenanted hosts only: tenancy owns egress for its members, see docs/CONTRACTS.md).

Why 16 buckets per select group: OVS (2.10 and later) picks a select bucket by `dp_hash` (a
symmetric 5-tuple hash with basis 0, the same on every bridge) through a 16-slot table filled
round-robin with the buckets. With the same hash on every hop, an edge switch choosing
aggregation switch `hash % 2` and the aggregation switch then choosing a core `hash % 2` would
make the same choice twice and use only half of the cores (ECMP polarisation). So every select
group lists 16 buckets, bucket i going to next hop `rotate(i, salt) % n`, where the salt is the
bridge's distance to D: consecutive hops read different bits of the hash and spread independently.

ARP never floods. On every bridge with attached hosts, table `arp` lets untagged ARP from a known
host (its port and MAC) through to `forward`, and copies any other untagged ARP to the controller
first, so a container added at run time is learned from its first ARP request without every
request costing a packet-in. In `forward`, ARP requests for known untenanted hosts are answered in
the data plane (rules the controller derives from its host table); the rest meet the broadcast
drop. The controller answers a copied request the bridge could not answer yet. Unknown
unicast misses to the controller (the pipeline's miss rule); broadcast and multicast that reach
`forward` are dropped. Nothing is ever flooded, so loops in the fabric are harmless.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from controller_apps import flows as fl
from controller_apps import pipeline
from controller_apps.flows import (
    ETH_TYPE_ARP,
    MULTICAST,
    OFPVID_NONE,
    Bucket,
    Change,
    Flow,
    Group,
    Match,
    SwitchRules,
)
from controller_apps.pipeline import COOKIE_ROUTING, TABLE_ARP, TABLE_EGRESS, TABLE_FORWARD
from topology.model import Topology

GROUP_BASE = 0x40000000  # routing's group ids live in [GROUP_BASE, GROUP_BASE + GROUP_SPAN)
GROUP_SPAN = 1 << 28
HASH_SLOTS = 16  # OVS's dp_hash table size for up to 16 equal-weight buckets
PRIORITY_HOST = pipeline.PRIORITY_DEFAULT
PRIORITY_ARP_ANSWER = pipeline.PRIORITY_DEFAULT + 10  # above eth_dst rules: unicast re-probes too
PRIORITY_ARP_OTHER = pipeline.PRIORITY_DEFAULT - 10
PRIORITY_MULTICAST_DROP = pipeline.PRIORITY_DEFAULT - 10


@dataclass(frozen=True)
class Host:
    """A container (or any end host) attached to bridge `dpid` at `port`."""

    mac: str
    ip: str | None
    dpid: int
    port: int
    tenant: str | int | None = None
    tag: int = 0  # its network: a tenant's VLAN id, 0 for the default network (untagged)

    @property
    def key(self) -> HostKey:
        """Hosts are told apart by network and MAC: each network is its own address space."""
        return (self.tag, self.mac.lower())

    @property
    def vlan_vid(self) -> int:
        """How its network's frames cross the fabric: untagged, or with the tenant's VLAN."""
        return fl.vid(self.tag) if self.tag else OFPVID_NONE


HostKey = tuple[int, str]  # (network tag, lower-case MAC)


# --- the fabric graph ----------------------------------------------------------------------------
def fabric_graph(bridges: Iterable[int], links: Iterable[tuple[int, int, int, int, bool]]) -> nx.MultiGraph:
    """The routing view: nodes are bridge DPIDs, one edge per fabric link with `ports` ({dpid: port})
    and `up`. A MultiGraph, because two bridges joined by two cables give two equal-cost hops.
    Links touching a bridge not in `bridges` (not connected) are left out."""
    graph: nx.MultiGraph[int] = nx.MultiGraph()
    graph.add_nodes_from(bridges)
    for a, a_port, b, b_port, up in links:
        if a in graph and b in graph and a != b:
            graph.add_edge(a, b, key=(min((a, a_port), (b, b_port)), max((a, a_port), (b, b_port))),
                           ports={a: a_port, b: b_port}, up=bool(up))
    return graph


def graph_from_topology(topo: Topology, down: Iterable[tuple[str, str]] = ()) -> nx.MultiGraph:
    """The graph a fully discovered `topo` gives, with the links in `down` marked down (tests,
    and what the intended topology predicts)."""
    dead = {frozenset(pair) for pair in down}
    links = [(topo.dpid(ln.a), ln.port_a, topo.dpid(ln.b), ln.port_b, frozenset((ln.a, ln.b)) not in dead)
             for ln in topo.fabric_links()]
    return fabric_graph([topo.dpid(n) for n in topo.bridges], links)


def hosts_from_topology(topo: Topology) -> list[Host]:
    """The topology's containers as hosts on their Pis."""
    out = []
    for name in topo.containers:
        node = topo.node(name)
        assert node.pi is not None and node.mac is not None
        ip = str(ipaddress.ip_interface(node.ip).ip) if node.ip else None
        out.append(Host(node.mac, ip, topo.dpid(node.pi), topo.port(node.pi, name)))
    return out


Adjacency = dict[int, dict[int, list[int]]]  # node -> neighbour -> ports on node (links that are up)


def up_adjacency(graph: nx.MultiGraph) -> Adjacency:
    """Who reaches whom over links that are up, and through which ports (parallel links give a
    neighbour several ports). Built once per computation and shared by every destination."""
    adjacency: Adjacency = {node: {} for node in graph.nodes}
    for a, b, data in graph.edges(data=True):
        if data["up"]:
            adjacency[a].setdefault(b, []).append(data["ports"][a])
            adjacency[b].setdefault(a, []).append(data["ports"][b])
    for neighbours in adjacency.values():
        for ports in neighbours.values():
            ports.sort()
    return adjacency


def _distances(adjacency: Adjacency, source: int) -> dict[int, int]:
    """Hop counts from `source` (breadth-first search)."""
    dist = {source: 0}
    frontier = [source]
    while frontier:
        following = []
        for node in frontier:
            for neighbour in adjacency[node]:
                if neighbour not in dist:
                    dist[neighbour] = dist[node] + 1
                    following.append(neighbour)
        frontier = following
    return dist


# --- groups --------------------------------------------------------------------------------------
def group_ids(destinations: Iterable[int]) -> dict[int, int]:
    """A stable group id per destination bridge, from its DPID alone (so a bridge joining never
    renumbers the others), with deterministic probing in DPID order on the rare collision."""
    taken: dict[int, int] = {}
    out: dict[int, int] = {}
    for dpid in sorted(set(destinations)):
        slot = dpid % GROUP_SPAN
        while slot in taken:
            slot = (slot + 1) % GROUP_SPAN
        taken[slot] = dpid
        out[dpid] = GROUP_BASE + slot
    return out


def _rotate(index: int, salt: int, bits: int = 4) -> int:
    salt %= bits
    mask = (1 << bits) - 1
    return ((index >> salt) | (index << (bits - salt))) & mask


def select_buckets(ports: list[int], salt: int) -> tuple[Bucket, ...]:
    """Buckets for an ECMP group over `ports`; see the module docstring for why 16 and the salt."""
    return _select_buckets(tuple(ports), salt % 4 if 1 < len(ports) <= HASH_SLOTS else 0)


@functools.lru_cache(maxsize=65536)
def _select_buckets(ports: tuple[int, ...], salt: int) -> tuple[Bucket, ...]:
    """Shared between groups (a fat-tree:8 has 26,000 groups and a handful of distinct ones)."""
    if len(ports) <= 1 or len(ports) > HASH_SLOTS:
        return tuple(Bucket(p) for p in ports)
    return tuple(Bucket(ports[_rotate(i, salt) % len(ports)]) for i in range(HASH_SLOTS))


def next_hops(graph: nx.MultiGraph, destination: int,
              adjacency: Adjacency | None = None) -> dict[int, tuple[list[int], list[int], int]]:
    """For every bridge that can reach `destination` (except itself): (ECMP ports, loop-free
    alternate ports, distance). Alternates are only computed where there is a single next hop."""
    adjacency = adjacency if adjacency is not None else up_adjacency(graph)
    dist = _distances(adjacency, destination)
    out: dict[int, tuple[list[int], list[int], int]] = {}
    for node, d in dist.items():
        if node == destination:
            continue
        primary: list[int] = []
        alternates: list[int] = []
        for neighbour, ports in adjacency[node].items():
            nd = dist.get(neighbour)
            if nd == d - 1:
                primary.extend(ports)
            elif nd == d:
                alternates.extend(ports)
        primary.sort()
        out[node] = (primary, sorted(alternates) if len(primary) == 1 else [], d)
    return out


def group_for(group_id: int, primary: list[int], alternates: list[int], distance: int) -> Group:
    """The group a bridge uses towards one destination (see the module docstring)."""
    if len(primary) == 1 and alternates:
        return Group(group_id, "ff", tuple(Bucket(p) for p in primary + alternates))
    return Group(group_id, "select", select_buckets(primary, distance))


# --- desired state -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 16)
def arp_responder_match(ip: str) -> Match:
    return Match(eth_type=ETH_TYPE_ARP, vlan_vid=OFPVID_NONE, arp_op=1, arp_tpa=ip)


def _route(table: int, priority: int, match: Match, actions: tuple[fl.Action, ...] = (),
           goto: int | None = None) -> Flow:
    return Flow(table, priority, match, actions, goto, None, COOKIE_ROUTING)


@functools.lru_cache(maxsize=1 << 17)
def _arp_responder(host: Host) -> Flow:
    """Answer `who-has host.ip` with `host.mac` in the data plane: turn the request into the reply
    and send it back out of the port it came in on (the Neutron ARP-responder recipe)."""
    assert host.ip is not None
    actions = (
        fl.move("eth_src", "eth_dst", 48),
        fl.set_field("eth_src", host.mac),
        fl.set_field("arp_op", 2),
        fl.move("arp_sha", "arp_tha", 48),
        fl.move("arp_spa", "arp_tpa", 32),
        fl.set_field("arp_sha", host.mac),
        fl.set_field("arp_spa", host.ip),
        fl.output("in_port"),
    )
    return _route(TABLE_FORWARD, PRIORITY_ARP_ANSWER, arp_responder_match(host.ip), actions)


@functools.lru_cache(maxsize=1 << 17)
def _known_sender(host: Host) -> Flow:
    """ARP from a host we know, where we know it: no need to tell the controller."""
    match = Match(eth_type=ETH_TYPE_ARP, vlan_vid=OFPVID_NONE, in_port=host.port, eth_src=host.mac)
    return _route(TABLE_ARP, PRIORITY_HOST, match, goto=TABLE_FORWARD)


@functools.lru_cache(maxsize=1 << 16)
def forward_match(mac: str, vlan_vid: int = OFPVID_NONE) -> Match:
    """The match of a host's rules in `forward` and `egress`: its network's tag and its MAC, so a
    default host and a tenant member with the same MAC are two destinations, never one."""
    return Match(vlan_vid=vlan_vid, eth_dst=mac)


@functools.lru_cache(maxsize=1 << 17)
def _to_egress(host: Host) -> Flow:
    return _route(TABLE_FORWARD, PRIORITY_HOST, forward_match(host.mac, host.vlan_vid), goto=TABLE_EGRESS)


@functools.lru_cache(maxsize=1 << 17)
def _egress(host: Host) -> Flow:
    return _route(TABLE_EGRESS, PRIORITY_HOST, forward_match(host.mac, host.vlan_vid), (fl.output(host.port),))


@functools.lru_cache(maxsize=1 << 17)
def _to_group(host: Host, group_id: int) -> Flow:
    return _route(TABLE_FORWARD, PRIORITY_HOST, forward_match(host.mac, host.vlan_vid), (fl.group(group_id),))


def usable_hosts(graph: nx.MultiGraph, hosts: Iterable[Host]) -> list[Host]:
    """Hosts routing can serve: one per MAC (the last one wins, as a moved host's newest place),
    not sitting on a fabric port (that would be a mis-learned address), sorted for determinism."""
    fabric_ports = {(d, p) for _, _, data in graph.edges(data=True) for d, p in data["ports"].items()}
    by_key: dict[HostKey, Host] = {}
    for host in hosts:
        if (host.dpid, host.port) not in fabric_ports:
            by_key[host.key] = host
    return [by_key[k] for k in sorted(by_key)]


def desired_state(graph: nx.MultiGraph, hosts: Iterable[Host]) -> dict[int, SwitchRules]:
    """All routing rules for every bridge in `graph`, from scratch (idempotent: same input, same
    output), so the app never has to reason about event order."""
    hosts = usable_hosts(graph, hosts)
    state = {dpid: SwitchRules() for dpid in graph.nodes}
    for rules in state.values():
        rules.add(_route(TABLE_FORWARD, PRIORITY_MULTICAST_DROP, Match(eth_dst=MULTICAST)))
    by_bridge: dict[int, list[Host]] = {}
    for host in hosts:
        by_bridge.setdefault(host.dpid, []).append(host)
    ids = group_ids(by_bridge)
    adjacency = up_adjacency(graph)
    # A flow that is the same on many bridges is built once and shared (with its key): the rule
    # towards a host's Pi and its ARP answer are the same everywhere, and building them per bridge
    # was most of a large fabric's computation.
    answers = [(f.key, f) for f in (_arp_responder(h) for h in hosts if not h.tag and h.ip)]
    punt = _route(TABLE_ARP, PRIORITY_ARP_OTHER, Match(eth_type=ETH_TYPE_ARP, vlan_vid=OFPVID_NONE),
                  (fl.TO_CONTROLLER,), goto=TABLE_FORWARD)
    for dpid in by_bridge:
        if dpid not in state:
            continue
        rules = state[dpid]
        rules.add(punt)
        for host in by_bridge[dpid]:
            if not host.tag:
                rules.add(_known_sender(host))
        rules.flows.update(answers)
    for destination, attached in by_bridge.items():
        group_id = ids[destination]
        if destination in state:
            rules = state[destination]
            for host in attached:
                rules.add(_to_egress(host))
                if not host.tag:
                    rules.add(_egress(host))
        hops = next_hops(graph, destination, adjacency) if destination in graph else {}
        towards = [(f.key, f) for f in (_to_group(host, group_id) for host in attached)]
        for dpid, rules in state.items():
            if dpid == destination:
                continue
            primary, alternates, distance = hops.get(dpid, ([], [], 0))
            rules.groups[group_id] = group_for(group_id, primary, alternates, distance)
            rules.flows.update(towards)
    return state


# --- incremental host changes --------------------------------------------------------------------
def host_flows(graph: nx.MultiGraph, host: Host, host_bridges: Iterable[int]) -> dict[int, list[Flow]]:
    """The flows `desired_state` holds for `host` alone, per bridge, given the set of bridges that
    have hosts (`host_bridges`, which must include host.dpid): its forward and egress rules on its
    own bridge, its known-sender ARP rule there, a forward rule to its bridge's group everywhere
    else, and its ARP answer on every bridge with hosts."""
    group_id = group_ids(host_bridges)[host.dpid]
    arp_bridges = [d for d in host_bridges if d in graph] if not host.tag and host.ip else []
    out: dict[int, list[Flow]] = {}
    for dpid in graph.nodes:
        if dpid == host.dpid:
            flows = [_to_egress(host)]
            if not host.tag:
                flows += [_egress(host), _known_sender(host)]
        else:
            flows = [_to_group(host, group_id)]
        out[dpid] = flows
    for dpid in arp_bridges:
        out[dpid].append(_arp_responder(host))
    return out


def host_changes(graph: nx.MultiGraph, routed: dict[HostKey, Host],
                 updates: dict[HostKey, Host | None]) -> tuple[dict[int, Change], dict[HostKey, Host]] | None:
    """The change per bridge that takes the rules `desired_state(graph, routed.values())` holds to
    those of the hosts after `updates` ((tag, MAC) -> its new Host, or None when it is gone),
    computed from the updated hosts alone, and the new routed map. `routed` maps host keys to
    usable hosts (what `usable_hosts` returned for the last full computation on `graph`).

    Why: a host joining an already-served Pi needs a handful of flows per bridge and no group
    change, while a full recomputation walks every host on every bridge. The result equals
    `diff(desired_state(before), desired_state(after))` exactly (unit tests prove it), under the
    conditions checked here; otherwise None, and the caller recomputes everything: the set of
    bridges with hosts changes (groups, ARP punts and answers placement follow it), or an updated
    default host's IP is shared with another default host (ARP answers are keyed by IP)."""
    fabric_ports = {(d, p) for _, _, data in graph.edges(data=True) for d, p in data["ports"].items()}
    after = dict(routed)
    for key, host in updates.items():
        if host is None or (host.dpid, host.port) in fabric_ports:
            after.pop(key, None)
        else:
            after[key] = host
    touched = {key for key in updates if routed.get(key) != after.get(key)}
    bridges = {h.dpid for h in routed.values()}
    if not touched:
        return {}, after
    if {h.dpid for h in after.values()} != bridges:
        return None
    for source in (routed, after):
        ips: dict[str, int] = {}
        for host in source.values():
            if not host.tag and host.ip:
                ips[host.ip] = ips.get(host.ip, 0) + 1
        for key in touched:
            host = source.get(key)
            if host is not None and not host.tag and host.ip and ips[host.ip] > 1:
                return None  # an updated host's IP is shared: ARP answers are keyed by IP
    old: dict[int, dict[fl.FlowKey, Flow]] = {}
    new: dict[int, dict[fl.FlowKey, Flow]] = {}
    for key in sorted(touched):
        for source, target in ((routed, old), (after, new)):
            if (host := source.get(key)) is not None:
                for dpid, flows in host_flows(graph, host, bridges).items():
                    target.setdefault(dpid, {}).update((f.key, f) for f in flows)
    changes: dict[int, Change] = {}
    for dpid in sorted(set(old) | set(new)):
        change = fl.diff(SwitchRules(flows=old.get(dpid, {})), SwitchRules(flows=new.get(dpid, {})))
        if len(change):
            changes[dpid] = change
    return changes, after
