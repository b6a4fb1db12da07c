"""Pure rule computation for the routing app: fabric graph and hosts in, OpenFlow rules out.

Faucet-style: nothing here talks to a switch. `desired_state` turns a view of the fabric (bridges,
links, which links are up) and the known hosts into the complete set of flows and groups each
bridge should hold; `diff` compares that with what a bridge holds now and returns only the
changes; `encode` turns a change into os-ken messages for one datapath. The routing app is then a
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
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from controller_apps import pipeline
from controller_apps.pipeline import COOKIE_ROUTING, TABLE_ARP, TABLE_EGRESS, TABLE_FORWARD
from topology.model import Topology

GROUP_BASE = 0x40000000  # routing's group ids live in [GROUP_BASE, GROUP_BASE + GROUP_SPAN)
GROUP_SPAN = 1 << 28
HASH_SLOTS = 16  # OVS's dp_hash table size for up to 16 equal-weight buckets
ETH_TYPE_ARP = 0x0806
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
PRIORITY_HOST = pipeline.PRIORITY_DEFAULT
PRIORITY_ARP_ANSWER = pipeline.PRIORITY_DEFAULT + 10  # above eth_dst rules: unicast re-probes too
PRIORITY_ARP_OTHER = pipeline.PRIORITY_DEFAULT - 10
PRIORITY_MULTICAST_DROP = pipeline.PRIORITY_DEFAULT - 10
OFPVID_NONE = 0x0000  # OXM vlan_vid value meaning "no VLAN tag" (OpenFlow 1.3, 7.2.3.8)

Match = tuple[tuple[str, Any], ...]
# Actions are small tuples, encoded by `encode`:
#   ("output", port) / ("output", "in_port") / ("output", "controller") / ("group", group_id)
#   ("set_field", oxm_name, value) / ("move", src_oxm, dst_oxm, n_bits)
Action = tuple[Any, ...]


@dataclass(frozen=True)
class Host:
    """A container (or any end host) attached to bridge `dpid` at `port`."""

    mac: str
    ip: str | None
    dpid: int
    port: int
    tenant: str | int | None = None


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    cookie: int = COOKIE_ROUTING

    @property
    def key(self) -> tuple[int, int, Match]:
        """What identifies a flow in a switch (OFPFC_*_STRICT semantics)."""
        return (self.table, self.priority, self.match)


@dataclass(frozen=True)
class Bucket:
    port: int  # output port, also the watched port

    @property
    def watch_port(self) -> int:
        return self.port


@dataclass(frozen=True)
class Group:
    group_id: int
    type: str  # "select" or "ff"
    buckets: tuple[Bucket, ...]


@dataclass
class SwitchRules:
    """Everything routing wants on one bridge, keyed so two states compare cheaply."""

    flows: dict[tuple[int, int, Match], Flow] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)

    def add(self, flow: Flow) -> None:
        self.flows[flow.key] = flow


@dataclass
class Change:
    """The messages needed to turn one bridge's installed rules into the desired ones."""

    add_groups: list[Group] = field(default_factory=list)
    modify_groups: list[Group] = field(default_factory=list)
    delete_groups: list[int] = field(default_factory=list)
    add_flows: list[Flow] = field(default_factory=list)
    modify_flows: list[Flow] = field(default_factory=list)
    delete_flows: list[Flow] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(x) for x in (self.add_groups, self.modify_groups, self.delete_groups,
                                    self.add_flows, self.modify_flows, self.delete_flows))


# --- the fabric graph ----------------------------------------------------------------------------
def fabric_graph(bridges: Iterable[int], links: Iterable[tuple[int, int, int, int, bool]]) -> nx.MultiGraph:
    """The routing view: nodes are bridge DPIDs, one edge per fabric link with `ports` ({dpid: port})
    and `up`. A MultiGraph, because two bridges joined by two cables give two equal-cost hops.
    Links touching a bridge not in `bridges` (not connected) are left out."""
    graph = nx.MultiGraph()
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
def arp_responder_match(ip: str) -> Match:
    return (("eth_type", ETH_TYPE_ARP), ("vlan_vid", OFPVID_NONE), ("arp_op", 1), ("arp_tpa", ip))


def _arp_responder(host: Host) -> Flow:
    """Answer `who-has host.ip` with `host.mac` in the data plane: turn the request into the reply
    and send it back out of the port it came in on (the Neutron ARP-responder recipe)."""
    match = arp_responder_match(host.ip)
    actions: tuple[Action, ...] = (
        ("move", "eth_src", "eth_dst", 48),
        ("set_field", "eth_src", host.mac),
        ("set_field", "arp_op", 2),
        ("move", "arp_sha", "arp_tha", 48),
        ("move", "arp_spa", "arp_tpa", 32),
        ("set_field", "arp_sha", host.mac),
        ("set_field", "arp_spa", host.ip),
        ("output", "in_port"),
    )
    return Flow(TABLE_FORWARD, PRIORITY_ARP_ANSWER, match, actions)


def _known_sender(host: Host) -> Flow:
    """ARP from a host we know, where we know it: no need to tell the controller."""
    match = (("eth_type", ETH_TYPE_ARP), ("vlan_vid", OFPVID_NONE), ("in_port", host.port),
             ("eth_src", host.mac))
    return Flow(TABLE_ARP, PRIORITY_HOST, match, goto=TABLE_FORWARD)


def usable_hosts(graph: nx.MultiGraph, hosts: Iterable[Host]) -> list[Host]:
    """Hosts routing can serve: one per MAC (the last one wins, as a moved host's newest place),
    not sitting on a fabric port (that would be a mis-learned address), sorted for determinism."""
    fabric_ports = {(d, p) for _, _, data in graph.edges(data=True) for d, p in data["ports"].items()}
    by_mac: dict[str, Host] = {}
    for host in hosts:
        if (host.dpid, host.port) not in fabric_ports:
            by_mac[host.mac.lower()] = host
    return [by_mac[m] for m in sorted(by_mac)]


def desired_state(graph: nx.MultiGraph, hosts: Iterable[Host]) -> dict[int, SwitchRules]:
    """All routing rules for every bridge in `graph`, from scratch (idempotent: same input, same
    output), so the app never has to reason about event order."""
    hosts = usable_hosts(graph, hosts)
    state = {dpid: SwitchRules() for dpid in graph.nodes}
    for rules in state.values():
        rules.add(Flow(TABLE_FORWARD, PRIORITY_MULTICAST_DROP, (("eth_dst", MULTICAST),)))
    by_bridge: dict[int, list[Host]] = {}
    for host in hosts:
        by_bridge.setdefault(host.dpid, []).append(host)
    ids = group_ids(by_bridge)
    adjacency = up_adjacency(graph)
    arp_hosts = [h for h in hosts if h.tenant is None and h.ip]
    for dpid in by_bridge:
        if dpid not in state:
            continue
        rules = state[dpid]
        rules.add(Flow(TABLE_ARP, PRIORITY_ARP_OTHER, (("eth_type", ETH_TYPE_ARP), ("vlan_vid", OFPVID_NONE)),
                       (("output", "controller"),), goto=TABLE_FORWARD))
        for host in by_bridge[dpid]:
            if host.tenant is None:
                rules.add(_known_sender(host))
        for host in arp_hosts:
            rules.add(_arp_responder(host))
    for destination, attached in by_bridge.items():
        group_id = ids[destination]
        if destination in state:
            rules = state[destination]
            for host in attached:
                rules.add(Flow(TABLE_FORWARD, PRIORITY_HOST, (("eth_dst", host.mac),), goto=TABLE_EGRESS))
                if host.tenant is None:
                    rules.add(Flow(TABLE_EGRESS, PRIORITY_HOST, (("eth_dst", host.mac),),
                                   (("output", host.port),)))
        hops = next_hops(graph, destination, adjacency) if destination in graph else {}
        for dpid, rules in state.items():
            if dpid == destination:
                continue
            primary, alternates, distance = hops.get(dpid, ([], [], 0))
            rules.groups[group_id] = group_for(group_id, primary, alternates, distance)
            for host in attached:
                rules.add(Flow(TABLE_FORWARD, PRIORITY_HOST, (("eth_dst", host.mac),),
                               (("group", group_id),)))
    return state


# --- incremental host changes --------------------------------------------------------------------
def host_flows(graph: nx.MultiGraph, host: Host, host_bridges: Iterable[int]) -> dict[int, list[Flow]]:
    """The flows `desired_state` holds for `host` alone, per bridge, given the set of bridges that
    have hosts (`host_bridges`, which must include host.dpid): its forward and egress rules on its
    own bridge, its known-sender ARP rule there, a forward rule to its bridge's group everywhere
    else, and its ARP answer on every bridge with hosts."""
    group_id = group_ids(host_bridges)[host.dpid]
    arp_bridges = [d for d in host_bridges if d in graph] if host.tenant is None and host.ip else []
    out: dict[int, list[Flow]] = {}
    for dpid in graph.nodes:
        if dpid == host.dpid:
            flows = [Flow(TABLE_FORWARD, PRIORITY_HOST, (("eth_dst", host.mac),), goto=TABLE_EGRESS)]
            if host.tenant is None:
                flows += [Flow(TABLE_EGRESS, PRIORITY_HOST, (("eth_dst", host.mac),), (("output", host.port),)),
                          _known_sender(host)]
        else:
            flows = [Flow(TABLE_FORWARD, PRIORITY_HOST, (("eth_dst", host.mac),), (("group", group_id),))]
        out[dpid] = flows
    for dpid in arp_bridges:
        out[dpid].append(_arp_responder(host))
    return out


def host_changes(graph: nx.MultiGraph, routed: dict[str, Host],
                 updates: dict[str, Host | None]) -> tuple[dict[int, Change], dict[str, Host]] | None:
    """The change per bridge that takes the rules `desired_state(graph, routed.values())` holds to
    those of the hosts after `updates` (MAC -> its new Host, or None when it is gone), computed
    from the updated hosts alone, and the new routed map. `routed` maps lower-case MACs to usable
    hosts (what `usable_hosts` returned for the last full computation on `graph`).

    Why: a host joining an already-served Pi needs a handful of flows per bridge and no group
    change, while a full recomputation walks every host on every bridge. The result equals
    `diff(desired_state(before), desired_state(after))` exactly (unit tests prove it), under the
    conditions checked here; otherwise None, and the caller recomputes everything: the set of
    bridges with hosts changes (groups, ARP punts and answers placement follow it), or an updated
    host's IP is shared with another untenanted host (ARP answers are keyed by IP)."""
    fabric_ports = {(d, p) for _, _, data in graph.edges(data=True) for d, p in data["ports"].items()}
    after = dict(routed)
    for mac, host in updates.items():
        mac = mac.lower()
        if host is None or (host.dpid, host.port) in fabric_ports:
            after.pop(mac, None)
        else:
            after[mac] = host
    touched = {mac.lower() for mac in updates if routed.get(mac.lower()) != after.get(mac.lower())}
    bridges = {h.dpid for h in routed.values()}
    if not touched:
        return {}, after
    if {h.dpid for h in after.values()} != bridges:
        return None
    for source in (routed, after):
        ips: dict[str, int] = {}
        for host in source.values():
            if host.tenant is None and host.ip:
                ips[host.ip] = ips.get(host.ip, 0) + 1
        for mac in touched:
            host = source.get(mac)
            if host is not None and host.tenant is None and host.ip and ips[host.ip] > 1:
                return None  # an updated host's IP is shared: ARP answers are keyed by IP
    old: dict[int, dict[tuple[int, int, Match], Flow]] = {}
    new: dict[int, dict[tuple[int, int, Match], Flow]] = {}
    for mac in sorted(touched):
        for source, target in ((routed, old), (after, new)):
            if (host := source.get(mac)) is not None:
                for dpid, flows in host_flows(graph, host, bridges).items():
                    target.setdefault(dpid, {}).update((f.key, f) for f in flows)
    changes: dict[int, Change] = {}
    for dpid in sorted(set(old) | set(new)):
        change = diff(SwitchRules(flows=old.get(dpid, {})), SwitchRules(flows=new.get(dpid, {})))
        if len(change):
            changes[dpid] = change
    return changes, after


def apply_change(rules: SwitchRules, change: Change) -> None:
    """Record in `rules` (what a bridge was sent) that `change` (flows only) was sent too."""
    for flow in change.add_flows + change.modify_flows:
        rules.add(flow)
    for flow in change.delete_flows:
        rules.flows.pop(flow.key, None)


# --- diff ----------------------------------------------------------------------------------------
def diff(installed: SwitchRules | None, desired: SwitchRules) -> Change:
    """The minimal change from `installed` (None: unknown, install everything) to `desired`.
    A changed group is modified in place, so flows pointing at it never see it missing."""
    change = Change()
    old = installed or SwitchRules()
    for gid, group in sorted(desired.groups.items()):
        if gid not in old.groups:
            change.add_groups.append(group)
        elif old.groups[gid] != group:
            change.modify_groups.append(group)
    change.delete_groups = sorted(set(old.groups) - set(desired.groups))
    for key, flow in desired.flows.items():  # insertion order: deterministic, as desired_state is
        if key not in old.flows:
            change.add_flows.append(flow)
        elif old.flows[key] != flow:
            change.modify_flows.append(flow)
    change.delete_flows = [flow for key, flow in old.flows.items() if key not in desired.flows]
    return change


# --- encoding ------------------------------------------------------------------------------------
def _action(dp: Any, action: Action) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    kind = action[0]
    if kind == "output":
        port = {"in_port": ofp.OFPP_IN_PORT, "controller": ofp.OFPP_CONTROLLER}.get(action[1], action[1])
        return parser.OFPActionOutput(port, ofp.OFPCML_NO_BUFFER if port == ofp.OFPP_CONTROLLER else 0)
    if kind == "group":
        return parser.OFPActionGroup(action[1])
    if kind == "set_field":
        return parser.OFPActionSetField(**{action[1]: action[2]})
    if kind == "move":
        return parser.NXActionRegMove(src_field=action[1], dst_field=action[2], n_bits=action[3])
    raise ValueError(f"routing_rules: unknown action {action!r}")


PARTS_KEPT = 1 << 16  # encoded matches and instructions kept for reuse
_parts: dict[tuple[Any, Flow], tuple[Any, list[Any]]] = {}


def _flow_parts(dp: Any, flow: Flow) -> tuple[Any, list[Any]]:
    """The os-ken match and instructions of `flow`, built once and shared by every flow-mod that
    carries the same flow: a host's rule towards its Pi's group and its ARP answer are the same on
    every bridge, and building the match (MAC and IP text to bytes and back) was most of the cost
    of answering a new host. os-ken only reads these objects when it serialises a message (it
    sets their length fields, to the same value each time), so sharing them is safe."""
    key = (dp.ofproto_parser, flow)
    parts = _parts.get(key)
    if parts is None:
        inst = []
        if flow.actions:
            inst.append(pipeline.apply(dp, [_action(dp, a) for a in flow.actions]))
        if flow.goto is not None:
            inst.append(pipeline.goto(dp, flow.goto))
        if len(_parts) >= PARTS_KEPT:
            _parts.clear()
        parts = _parts[key] = (dp.ofproto_parser.OFPMatch(**dict(flow.match)), inst)
    return parts


def _flow_mod(dp: Any, flow: Flow, command: int) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    match, inst = _flow_parts(dp, flow)
    return parser.OFPFlowMod(
        datapath=dp, cookie=flow.cookie, table_id=flow.table, command=command, priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=match, instructions=inst,
    )


def _group_mod(dp: Any, group: Group, command: int) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    kind = ofp.OFPGT_SELECT if group.type == "select" else ofp.OFPGT_FF
    buckets = [parser.OFPBucket(weight=1 if group.type == "select" else 0, watch_port=b.watch_port,
                                watch_group=ofp.OFPG_ANY, actions=[parser.OFPActionOutput(b.port)])
               for b in group.buckets]
    return parser.OFPGroupMod(dp, command, kind, group.group_id, buckets)


def encode(dp: Any, change: Change) -> list[Any]:
    """os-ken messages for `change`, in a safe order: groups exist before flows point at them, and
    flows stop pointing at a group before it is deleted."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    msgs: list[Any] = []
    msgs += [_group_mod(dp, g, ofp.OFPGC_ADD) for g in change.add_groups]
    msgs += [_group_mod(dp, g, ofp.OFPGC_MODIFY) for g in change.modify_groups]
    msgs += [_flow_mod(dp, f, ofp.OFPFC_ADD) for f in change.add_flows]
    msgs += [_flow_mod(dp, f, ofp.OFPFC_MODIFY_STRICT) for f in change.modify_flows]
    msgs += [_flow_mod(dp, f, ofp.OFPFC_DELETE_STRICT) for f in change.delete_flows]
    msgs += [parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, gid, [])
             for gid in change.delete_groups]
    return msgs


def resync_messages(dp: Any, desired: SwitchRules) -> list[Any]:
    """A full install on a (re)connected bridge whose contents are unknown, without removing
    anything first: a restarted controller must not interrupt established flows.

    Each group is sent as ADD then MODIFY: whichever of the two fails (the group exists, or it does
    not), the group ends up exactly as desired and is never missing. Flows are sent as ADD, which
    replaces an entry with the same match and priority in place. Routing flows a previous controller
    installed for hosts that have since gone are not found this way; they only match those hosts'
    MACs, and the next change to such a host replaces them."""
    ofp = dp.ofproto
    msgs: list[Any] = []
    for group in desired.groups.values():
        msgs += [_group_mod(dp, group, ofp.OFPGC_ADD), _group_mod(dp, group, ofp.OFPGC_MODIFY)]
    msgs += [_flow_mod(dp, f, ofp.OFPFC_ADD) for f in desired.flows.values()]
    return msgs
