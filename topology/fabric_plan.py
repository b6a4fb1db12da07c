"""The objects a topology becomes on one machine, decided without touching it (pure).

Why a plan: a backend used to decide every name, OpenFlow port number, MAC and link shape inside
the functions that ran `ip`, OVSDB and `tc`, so none of those decisions could be tested without
root. `plan_fabric` makes them all, from the topology, the run prefix and the fabric options;
the effects (`topology.effects.ip`, `ovs`, `rtnl`, `tc`) render the plan, each in its own syntax.
Everything that can be refused (a name Linux would refuse, a shaped link with no device to shape)
is refused here, before the first object exists.

Naming (docs/CONTRACTS.md): a bridge is `PREFIX + short_id`, the host end of a link
`PREFIX + short_id + "p" + port`, a container's namespace `PREFIX + short_id`, its interface
`eth0`. Ports keep the model's numbers, so a bridge's OpenFlow port is its topology port.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from picloud.errors import FabricError, TopologyError
from picloud.runstate import PREFIX_RE
from topology import openflow, tcplan
from topology.model import IFNAMSIZ, Link, Topology, dpid_str, ifname
from topology.tcplan import Shape

CONTAINER_IFACE = "eth0"
LinkKind = Literal["veth", "patch"]
LinkMode = Literal["veth", "patch", "auto"]  # how bridge-to-bridge links are built; auto: patch where unshaped
LINK_MODES: tuple[LinkMode, ...] = ("veth", "patch", "auto")


@dataclass(frozen=True)
class End:
    """One end of a link as the system sees it: an interface, in a namespace or on a bridge."""

    iface: str
    netns: str | None  # None: root namespace
    bridge: str | None  # the OVS bridge it is a port of, if any
    port: int  # the model's port number: the OpenFlow port on a bridge
    node: str = ""
    mac: str | None = None  # None: the kernel picks one (random, locally administered)


@dataclass(frozen=True)
class Namespace:
    """A container's network namespace and what its interface carries."""

    name: str
    container: str
    pi: str
    address: str  # "10.0.0.1/8"
    gateway: str | None = None  # None: the default route goes out of the interface itself
    iface: str = CONTAINER_IFACE


@dataclass(frozen=True)
class LinkPlan:
    """One model link: a veth pair, or (bridge to bridge, fabric_links="patch") a patch port pair."""

    a: End
    b: End
    kind: LinkKind
    shape: Shape
    mtu: int | None = None  # of the container end; None: the kernel's default

    @property
    def ends(self) -> tuple[End, End]:
        return self.a, self.b

    @property
    def to_container(self) -> bool:
        return self.a.netns is not None or self.b.netns is not None

    @property
    def bridge_end(self) -> End:
        """A container link's end on the Pi's bridge (the veth's host end)."""
        return self.b if self.a.netns else self.a

    def end(self, node: str) -> End:
        if node == self.a.node:
            return self.a
        if node == self.b.node:
            return self.b
        raise FabricError(f"link {self.a.node!r}-{self.b.node!r}: {node!r} is not one of its ends")

    def tc_commands(self, replace: bool = False) -> list[tcplan.Command]:
        """tcplan's commands for both ends (its own syntax: tc argv)."""
        return [cmd for e in self.ends for cmd in tcplan.plan(e.iface, self.shape, e.netns, replace=replace)]


@dataclass(frozen=True)
class Port:
    name: str
    ofport: int
    type: str = ""  # "": a kernel device; "patch": an OVS patch port
    peer: str | None = None  # a patch port's peer


@dataclass(frozen=True)
class BridgePlan:
    node: str
    name: str
    dpid: str  # 16 hex digits, other-config:datapath-id
    ports: tuple[Port, ...]  # sorted by OpenFlow port


@dataclass(frozen=True)
class FabricPlan:
    prefix: str
    datapath: str  # OVS datapath_type: system, netdev (dummy in tests)
    fabric_links: LinkMode
    namespaces: tuple[Namespace, ...]
    links: tuple[LinkPlan, ...]
    bridges: tuple[BridgePlan, ...]
    controllers: tuple[str, ...] = ()  # OpenFlow targets of every bridge; none: standalone switches
    protocols: tuple[str, ...] = ()  # OVS spelling (OpenFlow13); empty: OVS's default

    @property
    def fail_mode(self) -> str:
        return "secure" if self.controllers else "standalone"

    @functools.cached_property
    def _by_bridge(self) -> dict[str, BridgePlan]:
        return {b.node: b for b in self.bridges}

    @functools.cached_property
    def _by_link(self) -> dict[frozenset[str], LinkPlan]:
        return {frozenset((lp.a.node, lp.b.node)): lp for lp in self.links}

    @functools.cached_property
    def _by_container(self) -> dict[str, Namespace]:
        return {ns.container: ns for ns in self.namespaces}

    def bridge(self, node: str) -> BridgePlan:
        try:
            return self._by_bridge[node]
        except KeyError:
            if node in self._by_container:
                raise FabricError(f"{node!r}: a container has no bridge") from None
            raise FabricError(f"{node!r}: not a switch or Pi of run {self.prefix} (only they have a bridge)") from None

    def namespace(self, container: str) -> Namespace:
        try:
            return self._by_container[container]
        except KeyError:
            raise FabricError(f"container {container!r}: no such container in run {self.prefix}") from None

    def container_link(self, container: str) -> LinkPlan:
        """The link between a container and its Pi."""
        return self.link(container, self.namespace(container).pi)

    def link(self, a: str, b: str) -> LinkPlan:
        try:
            return self._by_link[frozenset((a, b))]
        except KeyError:
            raise FabricError(f"link {a!r}-{b!r}: no such link in run {self.prefix}") from None

    @property
    def root_ifaces(self) -> list[str]:
        """Kernel devices in the root namespace (the veth ends on bridges): what teardown deletes."""
        return [e.iface for lp in self.links if lp.kind == "veth" for e in lp.ends if e.netns is None]

    def interface_names(self) -> list[str]:
        """Every name this plan gives the kernel or OVS (bridges, ports, namespaces), with repeats."""
        return ([b.name for b in self.bridges] + [p.name for b in self.bridges for p in b.ports]
                + [ns.name for ns in self.namespaces])

    def tc_commands(self) -> list[tcplan.Command]:
        return [cmd for lp in self.links if not lp.shape.empty for cmd in lp.tc_commands()]


def check_prefix(prefix: str) -> None:
    if not PREFIX_RE.match(prefix):
        raise FabricError(f"prefix {prefix!r}: invalid (a run prefix is 'pc' and a number 1-999, so every "
                          f"interface name fits Linux's {IFNAMSIZ} bytes)")


def name(prefix: str, short: str, port: int | None = None) -> str:
    """ifname, refused as a FabricError: the run cannot be built, whatever the topology file says."""
    try:
        return ifname(prefix, short, port)
    except TopologyError as exc:
        raise FabricError(f"run {prefix}: {exc}; use fewer nodes per kind or fewer ports per node") from None


def plan_fabric(topology: Topology, prefix: str, datapath: str = "netdev", fabric_links: str = "veth",
                mtu: int | None = None, controllers: Sequence[str] = (),
                of_versions: Iterable[str] | None = None) -> FabricPlan:
    """The whole fabric of `topology` for run `prefix`. `mtu` is set on each container's interface
    (an overlay's smaller MTU); `fabric_links` is how two bridges are joined (see LocalFabric);
    `of_versions` what every bridge offers (all six when None)."""
    check_prefix(prefix)
    if fabric_links not in LINK_MODES:
        raise FabricError(f"fabric_links {fabric_links!r}: one of {', '.join(LINK_MODES)}")
    mode: LinkMode = fabric_links  # checked just above
    topo = topology
    namespaces = tuple(Namespace(name(prefix, topo.short_id(c)), c, str(topo.node(c).pi), str(topo.node(c).ip))
                       for c in topo.containers)
    netns_of = {ns.container: ns.name for ns in namespaces}
    bridge_of = {node: name(prefix, topo.short_id(node)) for node in topo.bridges}

    def end(node: str, port: int) -> End:
        if node in netns_of:
            return End(CONTAINER_IFACE, netns_of[node], None, port, node, topo.node(node).mac)
        return End(name(prefix, topo.short_id(node), port), None, bridge_of[node], port, node)

    links = []
    for link in topo.links:
        a, b = end(link.a, link.port_a), end(link.b, link.port_b)
        container_link = a.netns is not None or b.netns is not None
        shape = Shape.of(link)
        link_kind: LinkKind = ("veth" if container_link or mode == "veth" or (mode == "auto" and not shape.empty)
                               else "patch")
        if link_kind == "patch" and not shape.empty:
            raise FabricError(f"link {link.a!r}-{link.b!r}: shaped, but fabric_links=patch builds bridge-to-bridge "
                              "links without a kernel device to shape (use fabric_links=veth)")
        links.append(LinkPlan(a, b, link_kind, shape, mtu if container_link else None))
    ports: dict[str, list[Port]] = {node: [] for node in topo.bridges}
    for lp in links:
        for e, peer in ((lp.a, lp.b), (lp.b, lp.a)):
            if e.bridge is not None:
                patch = lp.kind == "patch"
                ports[e.node].append(Port(e.iface, e.port, "patch" if patch else "", peer.iface if patch else None))
    bridges = tuple(BridgePlan(node, bridge_of[node], dpid_str(topo.dpid(node)),
                               tuple(sorted(ports[node], key=lambda p: p.ofport)))
                    for node in topo.bridges)
    protocols = tuple(openflow.ovs_protocols(openflow.parse_versions(of_versions)))
    plan = FabricPlan(prefix, datapath, mode, namespaces, tuple(links), bridges, tuple(controllers), protocols)
    _check_unique(plan)
    return plan


def _check_unique(plan: FabricPlan) -> None:
    """Names and ports can only repeat through a bug in the naming, never through user input: a
    repeat would make the kernel or OVS refuse half-way through a build, so it is refused first."""
    seen: set[str] = set()
    for item in plan.interface_names():
        if item in seen:
            raise FabricError(f"run {plan.prefix}: the plan names {item!r} twice (a PiCloud bug)")
        seen.add(item)
    for bridge in plan.bridges:
        ofports = [p.ofport for p in bridge.ports]
        if len(set(ofports)) != len(ofports):
            raise FabricError(f"run {plan.prefix}: bridge {bridge.name} has a port number twice (a PiCloud bug)")


# --- run-time containers (tenant members) ------------------------------------------------------
@dataclass(frozen=True)
class RuntimeContainer:
    """Where a container added while the run is up goes: a new port on its Pi, never reused within
    the run, a namespace named by a run-wide counter, and the veth's host end."""

    name: str
    pi: str
    port: int
    netns: str
    iface: str
    counter: int  # the next counter value is counter + 1

    def veth(self, bridge: str, mac: str, mtu: int | None = None) -> LinkPlan:
        """Its veth pair: the host end on the Pi's bridge, eth0 with `mac` in its namespace."""
        return LinkPlan(End(self.iface, None, bridge, self.port, self.pi),
                        End(CONTAINER_IFACE, self.netns, None, 1, self.name, mac), "veth", Shape(), mtu)


def plan_runtime_container(topology: Topology, prefix: str, extra: Mapping[str, Mapping[str, Any]],
                           counter: int, max_ports: Mapping[str, int], container: str, pi: str) -> RuntimeContainer:
    """`extra`: the run's run-time containers (state.extra["containers"]); `counter` and `max_ports`:
    the state's next_container and max_port, which only grow."""
    if pi not in topology or topology.kind(pi) != "pi":
        raise FabricError(f"container {container!r}: unknown pi {pi!r}")
    if container in extra or container in topology:
        raise FabricError(f"container {container!r}: already exists in run {prefix}")
    used = [int(c["port"]) for c in extra.values() if c["pi"] == pi]
    port = max([*topology.ports(pi), *used, int(max_ports.get(pi, 0))]) + 1
    return RuntimeContainer(container, pi, port, name(prefix, f"t{counter}"),
                            name(prefix, topology.short_id(pi), port), counter)


def check_removable(topology: Topology, prefix: str, extra: Mapping[str, object], container: str) -> None:
    """Only run-time containers can be removed; the topology's are part of the model."""
    if container in extra:
        return
    if container in topology:
        raise FabricError(f"container {container!r}: part of the topology; only run-time containers can be removed")
    raise FabricError(f"container {container!r}: no such run-time container in run {prefix}")


def model_link(topology: Topology, prefix: str, a: str, b: str) -> Link:
    """The topology's link a-b, or the run's one-line refusal."""
    try:
        return topology.link(a, b)
    except TopologyError:
        raise FabricError(f"link {a!r}-{b!r}: no such link in run {prefix}") from None
