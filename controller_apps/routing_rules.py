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
  address block of D's hosts in table `forward`: `eth_dst=block -> group` (see "Address blocks").
  Since flows only name the group, a link change rewrites groups (OFPGC_MODIFY, no window without
  a rule) and never touches flows.
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

Address blocks. A rule per host per bridge made a 1,000-container picloud:5,10 cost 109,107 flows
(57,000 towards hosts, 50,000 ARP answers), and sending them was most of the controller's 5.6 s
start. Containers get consecutive addresses (the contract: container k has 10.0.0.0/8 host k+1 and
MAC 02:00:00 + k+1), so a Pi's hosts are runs of consecutive MACs. Each run is cut into the fewest
aligned power-of-two blocks (`aligned_blocks`), and each block is one masked `eth_dst` rule. A
block holds only the MACs of that Pi's known hosts in that network, never an unknown address, so
the rules match exactly the packets the per-host rules did: an unknown destination still misses
to the controller. ARP answers are cut the same way across all hosts: a block of IPs whose MACs are
the IPs plus one constant, aligned on both sides, is answered by one rule that writes the MAC's
low bits from the requested IP's (NXM moves of `bits` bits). Hosts outside the pattern (a
user's own MAC, a learned host) are blocks of one: the per-host rules as before.

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

import bisect
import functools
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from controller_apps import fastpath, pipeline
from controller_apps import flows as fl
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


# --- address blocks ------------------------------------------------------------------------------
MAC_BITS = 48
IP_BITS = 32
MAC_ALL = (1 << MAC_BITS) - 1
IP_ALL = (1 << IP_BITS) - 1


def aligned_blocks(values: Iterable[int], max_bits: int) -> list[tuple[int, int]]:
    """(base, bits) blocks of 2**bits consecutive values aligned on 2**bits (bits <= max_bits) that
    cover exactly `values`: nothing outside them. Greedy per run of consecutive values, the
    largest aligned block that fits at each step, which is the fewest blocks for a run (a prefix
    can never span a gap, so runs are independent)."""
    out: list[tuple[int, int]] = []
    ordered = sorted(set(values))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        low, high = ordered[i], ordered[j]
        while low <= high:
            bits = 0
            while bits < max_bits and low % (2 << bits) == 0 and low + (2 << bits) - 1 <= high:
                bits += 1
            out.append((low, bits))
            low += 1 << bits
        i = j + 1
    return out


@functools.lru_cache(maxsize=1 << 17)
def mac_int(mac: str) -> int:
    return int.from_bytes(fastpath.mac_bytes(mac), "big")


def mac_text(value: int) -> str:
    return fastpath.mac_text(value.to_bytes(6, "big"))


def _trailing_zeros(value: int, limit: int) -> int:
    return limit if value == 0 else min(limit, (value & -value).bit_length() - 1)


@functools.lru_cache(maxsize=1 << 16)
def block_match(base: int, bits: int, vlan_vid: int = OFPVID_NONE) -> Match:
    """The `forward` match of a MAC block in one network (a block of one is `forward_match`)."""
    if bits == 0:
        return forward_match(mac_text(base), vlan_vid)
    return Match(vlan_vid=vlan_vid, eth_dst=(mac_text(base), mac_text(MAC_ALL ^ ((1 << bits) - 1))))


def forward_blocks(members: Iterable[Host]) -> list[tuple[int, int, int]]:
    """(vlan_vid, base, bits) per block of one destination bridge's hosts, network by network."""
    by_vid: dict[int, list[int]] = {}
    for host in members:
        by_vid.setdefault(host.vlan_vid, []).append(mac_int(host.mac))
    return [(vv, base, bits) for vv in sorted(by_vid) for base, bits in aligned_blocks(by_vid[vv], MAC_BITS)]


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


@functools.lru_cache(maxsize=1 << 16)
def arp_block_match(ip_base: int, bits: int) -> Match:
    """The match of an ARP answer for a block of IPs (a block of one is `arp_responder_match`)."""
    ip = ip_text(ip_base)
    if bits == 0:
        return arp_responder_match(ip)
    mask = ip_text(IP_ALL ^ ((1 << bits) - 1))
    return Match(eth_type=ETH_TYPE_ARP, vlan_vid=OFPVID_NONE, arp_op=1, arp_tpa=(ip, mask))


@functools.lru_cache(maxsize=1 << 16)
def _arp_block_responder(ip_base: int, mac_base: int, bits: int) -> Flow:
    """`_arp_responder` for 2**bits hosts at once: host ip_base + i has MAC mac_base + i, both bases
    aligned, so the answer's MAC is the block's MAC with the requested IP's low `bits` bits moved
    in (and the answer's sender IP the block's base with the same bits moved back)."""
    mac, ip = mac_text(mac_base), ip_text(ip_base)
    actions = (
        fl.move("eth_src", "eth_dst", 48),
        fl.set_field("eth_src", mac),
        fl.move("arp_tpa", "eth_src", bits),
        fl.set_field("arp_op", 2),
        fl.move("arp_sha", "arp_tha", 48),
        fl.move("arp_spa", "arp_tpa", 32),
        fl.set_field("arp_spa", ip),
        fl.move("eth_src", "arp_spa", bits),
        fl.move("eth_src", "arp_sha", 48),
        fl.output("in_port"),
    )
    return _route(TABLE_FORWARD, PRIORITY_ARP_ANSWER, arp_block_match(ip_base, bits), actions)


@functools.lru_cache(maxsize=1 << 17)
def ip_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def ip_text(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


Answered = Iterable[tuple[int, Host]]  # (IP, the host whose MAC answers it)


def _answered(hosts: Iterable[Host]) -> dict[int, Host]:
    """IP -> the default-network host whose MAC answers it: the last in `hosts` order when several
    claim one IP (as when each host had its own rule and the last one written won)."""
    return {ip_int(h.ip): h for h in hosts if not h.tag and h.ip}


def _arp_blocks(answered: Answered) -> list[tuple[int, int, int, Host]]:
    """(ip_base, mac_base, bits, host at the base) per ARP answer block: IPs grouped by their
    host's MAC - IP, each group cut into aligned IP blocks no larger than that difference's
    alignment allows. A block never spans an IP nobody answers, so the blocks of a stretch of
    answered IPs between two unanswered ones are those of the whole set within it."""
    by_offset: dict[int, list[int]] = {}
    hosts: dict[int, Host] = {}
    for ip, host in answered:
        hosts[ip] = host
        by_offset.setdefault((mac_int(host.mac) - ip) & MAC_ALL, []).append(ip)
    out = []
    for offset, ips in by_offset.items():
        for base, bits in aligned_blocks(ips, _trailing_zeros(offset, IP_BITS)):
            out.append((base, (base + offset) & MAC_ALL, bits, hosts[base]))
    return sorted(out, key=lambda block: block[0])


def _answer(block: tuple[int, int, int, Host]) -> Flow:
    ip, mac, bits, host = block
    return _arp_responder(host) if bits == 0 else _arp_block_responder(ip, mac, bits)


def arp_answers(hosts: Iterable[Host]) -> list[Flow]:
    """The data-plane ARP answers for the default network's hosts, a rule per block."""
    return [_answer(block) for block in _arp_blocks(_answered(hosts).items())]


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
def _egress(host: Host) -> Flow:
    return _route(TABLE_EGRESS, PRIORITY_HOST, forward_match(host.mac, host.vlan_vid), (fl.output(host.port),))


def _into_egress(members: Iterable[Host]) -> list[Flow]:
    """On a destination bridge: its hosts' blocks go on to `egress`."""
    return [_route(TABLE_FORWARD, PRIORITY_HOST, block_match(base, bits, vv), goto=TABLE_EGRESS)
            for vv, base, bits in forward_blocks(members)]


def _towards(members: Iterable[Host], group_id: int) -> list[Flow]:
    """Everywhere else: its hosts' blocks go to the destination bridge's group."""
    return [_route(TABLE_FORWARD, PRIORITY_HOST, block_match(base, bits, vv), (fl.group(group_id),))
            for vv, base, bits in forward_blocks(members)]


def _block_flows(graph: nx.MultiGraph, destination: int, members: list[Host],
                 group_id: int) -> dict[int, list[Flow]]:
    """Per bridge, the `forward` rules of one destination bridge's hosts: their blocks into egress
    on the destination, towards its group everywhere else. They depend on these hosts alone."""
    towards = _towards(members, group_id)
    return {dpid: _into_egress(members) if dpid == destination else towards for dpid in graph.nodes}


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
    answers = [(f.key, f) for f in arp_answers(hosts)]
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
            rules.extend(_into_egress(attached))
            rules.extend(_egress(h) for h in attached if not h.tag)
        hops = next_hops(graph, destination, adjacency) if destination in graph else {}
        towards = [(f.key, f) for f in _towards(attached, group_id)]
        for dpid, rules in state.items():
            if dpid == destination:
                continue
            primary, alternates, distance = hops.get(dpid, ([], [], 0))
            rules.groups[group_id] = group_for(group_id, primary, alternates, distance)
            rules.flows.update(towards)
    return state


# --- incremental host changes --------------------------------------------------------------------
FlowKey = fl.FlowKey


class Routed:
    """The hosts routing serves (what `usable_hosts` returned, then kept up to date by
    `host_changes`), with what a change needs to cost the hosts it touches rather than all of
    them: hosts per bridge, default-network hosts per IP, and the rule keys that serve each
    destination MAC and answer each IP (which the routing app reads on packet-ins)."""

    def __init__(self, hosts: Iterable[Host] = ()) -> None:
        self.hosts: dict[HostKey, Host] = {}
        self.on_bridge: dict[int, dict[HostKey, Host]] = {}
        self.claims: dict[int, dict[HostKey, Host]] = {}  # IP -> default hosts with it
        self.forward_key: dict[HostKey, FlowKey] = {}
        self.arp_key: dict[str, FlowKey] = {}
        for host in hosts:
            self._put(host)
        for dpid in self.on_bridge:
            self._index_bridge(dpid)
        self._index_answers(_arp_blocks(self.answered(self.claims)), ())

    # the mapping of hosts
    def __contains__(self, key: object) -> bool:
        return key in self.hosts

    def __len__(self) -> int:
        return len(self.hosts)

    def get(self, key: HostKey) -> Host | None:
        return self.hosts.get(key)

    def values(self) -> Iterable[Host]:
        return self.hosts.values()

    def _put(self, host: Host) -> None:
        self.hosts[host.key] = host
        self.on_bridge.setdefault(host.dpid, {})[host.key] = host
        if not host.tag and host.ip:
            self.claims.setdefault(ip_int(host.ip), {})[host.key] = host

    def _drop(self, key: HostKey) -> None:
        host = self.hosts.pop(key)
        members = self.on_bridge[host.dpid]
        del members[key]
        if not members:
            del self.on_bridge[host.dpid]
        if not host.tag and host.ip:
            ip = ip_int(host.ip)
            del self.claims[ip][key]
            if not self.claims[ip]:
                del self.claims[ip]

    def members(self, dpid: int) -> list[Host]:
        """A bridge's hosts in key order (usable_hosts' order, as desired_state sees them)."""
        members = self.on_bridge.get(dpid, {})
        return [members[k] for k in sorted(members)]

    def answered(self, ips: Iterable[int]) -> list[tuple[int, Host]]:
        """(IP, the host answering it) for those of `ips` someone claims: the claimant last in key
        order, as desired_state's last-written rule."""
        return [(ip, claim[max(claim)]) for ip in ips if (claim := self.claims.get(ip))]

    def _index_bridge(self, dpid: int) -> None:
        members = self.members(dpid)
        blocks = forward_blocks(members)
        starts = [(vv, base) for vv, base, _ in blocks]
        for host in members:
            vv, base, bits = blocks[bisect.bisect_right(starts, (host.vlan_vid, mac_int(host.mac))) - 1]
            self.forward_key[host.key] = (TABLE_FORWARD, PRIORITY_HOST, block_match(base, bits, vv))

    def _index_answers(self, blocks: list[tuple[int, int, int, Host]], region: Iterable[int]) -> None:
        for ip in region:
            self.arp_key.pop(ip_text(ip), None)
        for ip, _, bits, _ in blocks:
            key = (TABLE_FORWARD, PRIORITY_ARP_ANSWER, arp_block_match(ip, bits))
            for value in range(ip, ip + (1 << bits)):
                self.arp_key[ip_text(value)] = key


def _stretch(routed: Routed, ips: set[int]) -> list[int]:
    """`ips` and every IP joined to one of them by a run of claimed IPs (claimed now, or in `ips`,
    the IPs that change): ARP blocks never cross an IP claimed neither before nor after, so the
    answers of this stretch can be recomputed alone."""
    out = set(ips)
    for ip in ips:
        for step in (-1, 1):
            other = ip + step
            while other not in out and (other in routed.claims or other in ips) and 0 <= other <= IP_ALL:
                out.add(other)
                other += step
    return sorted(out)


def host_changes(graph: nx.MultiGraph, routed: Routed,
                 updates: dict[HostKey, Host | None]) -> tuple[dict[int, Change], Routed] | None:
    """The change per bridge that takes the rules `desired_state(graph, routed.values())` holds to
    those of the hosts after `updates` ((tag, MAC) -> its new Host, or None when it is gone), and
    `routed` updated in place to the hosts after them. `routed` holds usable hosts (from the last
    full computation on `graph`, kept up to date by this function).

    Why: a host joining an already-served Pi changes only that Pi's blocks (on every bridge) and
    the ARP answers of its stretch of consecutive IPs, while a full recomputation walks every host
    on every bridge. So only the destination bridges whose hosts change are recomputed, and the
    ARP answers of the stretches around the changed IPs. The result equals
    `diff(desired_state(before), desired_state(after))` exactly (unit tests prove it), unless the
    set of bridges with hosts changes (groups, ARP punts and answer placement follow it): then
    None, `routed` is left as it was, and the caller recomputes everything."""
    fabric_ports = {(d, p) for _, _, data in graph.edges(data=True) for d, p in data["ports"].items()}
    new: dict[HostKey, Host | None] = {}
    for key, host in updates.items():
        new[key] = None if host is None or (host.dpid, host.port) in fabric_ports else host
    touched = sorted(key for key in new if routed.get(key) != new[key])
    if not touched:
        return {}, routed
    counts: dict[int, int] = {}
    for key in touched:
        old_host, new_host = routed.get(key), new[key]
        if old_host is not None:
            counts[old_host.dpid] = counts.get(old_host.dpid, len(routed.on_bridge.get(old_host.dpid, {}))) - 1
        if new_host is not None:
            counts[new_host.dpid] = counts.get(new_host.dpid, len(routed.on_bridge.get(new_host.dpid, {}))) + 1
    if any((count > 0) != (dpid in routed.on_bridge) for dpid, count in counts.items()):
        return None
    bridges = sorted(routed.on_bridge)
    ids = group_ids(bridges)
    destinations = sorted(counts)
    ips = {ip_int(h.ip) for key in touched for h in (routed.get(key), new[key])
           if h is not None and not h.tag and h.ip}
    region = _stretch(routed, ips)
    flows: tuple[dict[int, dict[FlowKey, Flow]], dict[int, dict[FlowKey, Flow]]] = ({}, {})
    blocks: list[tuple[int, int, int, Host]] = []
    for side, target in enumerate(flows):
        if side == 1:
            for key in touched:
                if key in routed.hosts:
                    routed._drop(key)
                if (host := new[key]) is not None:
                    routed._put(host)
        for destination in destinations:  # their blocks (the other hosts' own rules stay as they are)
            its = _block_flows(graph, destination, routed.members(destination), ids[destination])
            for dpid, block_flows in its.items():
                target.setdefault(dpid, {}).update((f.key, f) for f in block_flows)
        for key in touched:  # the changed hosts' own rules on their bridge
            if (host := routed.get(key)) is not None and not host.tag and host.dpid in graph:
                target.setdefault(host.dpid, {}).update((f.key, f) for f in (_egress(host), _known_sender(host)))
        blocks = _arp_blocks(routed.answered(region))
        answers = [_answer(block) for block in blocks]
        for dpid in bridges:
            if dpid in graph:
                target.setdefault(dpid, {}).update((f.key, f) for f in answers)
    for destination in destinations:
        routed._index_bridge(destination)
    for key in touched:
        if new[key] is None:
            routed.forward_key.pop(key, None)
    routed._index_answers(blocks, region)
    changes: dict[int, Change] = {}
    old_flows, new_flows = flows
    for dpid in sorted(set(old_flows) | set(new_flows)):
        change = fl.diff(SwitchRules(flows=old_flows.get(dpid, {})), SwitchRules(flows=new_flows.get(dpid, {})))
        if len(change):
            changes[dpid] = change
    return changes, routed
