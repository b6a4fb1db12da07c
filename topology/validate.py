"""Whole-topology rules, checked before anything is built.

The model already refuses what a single call can get wrong (bad names, duplicate names, links to
unknown nodes, self-loops, bad rates). These are the rules that need the whole graph. Each problem
is one line, `WHERE: WHAT (RULE)`; `validate` raises the first as a TopologyError, `problems`
lists them all (for tests and for tools that want every mistake at once).
"""

from __future__ import annotations

import ipaddress

import networkx as nx

from picloud.errors import TopologyError
from topology.model import IFNAMSIZ, NAME_RE, SWITCH_ROLES, Topology

LONGEST_PREFIX = "pc999"  # run prefixes are `pc` + a number, at most 5 bytes (CONTRACTS.md)


def _names(topo: Topology, where: str) -> list[str]:
    out = []
    for name in topo.graph.nodes:
        if not isinstance(name, str) or not NAME_RE.match(name):
            out.append(f"{where}: node {name!r}: invalid name (names are 1-32 characters of [a-z0-9-], "
                       "starting with a letter or digit)")
    for name in topo.switches:
        if topo.node(name).role not in SWITCH_ROLES:
            out.append(f"{where}: switch {name!r}: unknown role {topo.node(name).role!r} "
                       f"(one of {', '.join(SWITCH_ROLES)})")
    return out


def _pis_present(topo: Topology, where: str) -> list[str]:
    if topo.pis:
        return []
    return [f"{where}: no pis (a topology needs at least one pi to run containers)"]


def _containers_on_pis(topo: Topology, where: str) -> list[str]:
    out = []
    for name in topo.containers:
        pi = topo.node(name).pi
        if pi is None or pi not in topo or topo.kind(pi) != "pi":
            out.append(f"{where}: container {name!r}: runs on {pi!r}, which is not a pi "
                       "(containers run on a declared pi)")
            continue
        peers = list(topo.graph.neighbors(name))
        if peers != [pi]:
            out.append(f"{where}: container {name!r}: linked to {', '.join(map(repr, peers)) or 'nothing'} "
                       f"(a container has exactly one link, to its pi {pi!r})")
    return out


def _connected(topo: Topology, where: str) -> list[str]:
    if topo.graph.number_of_nodes() < 2 or nx.is_connected(topo.graph):
        return []
    parts = sorted(nx.connected_components(topo.graph), key=len, reverse=True)
    main = parts[0]
    stray = min((n for part in parts[1:] for n in part), key=lambda n: (topo.kind(n) == "container", n))
    anchor = next(n for n in topo.bridges + topo.containers if n in main)
    return [f"{where}: {topo.kind(stray)} {stray!r} cannot reach {topo.kind(anchor)} {anchor!r}: "
            f"{len(parts)} separate parts (the topology must be one connected graph)"]


def _dpids(topo: Topology, where: str) -> list[str]:
    out = []
    seen: dict[int, str] = {}
    for name in topo.bridges:
        value = topo.dpid(name)
        if value in seen:
            out.append(f"{where}: {seen[value]!r} and {name!r} share datapath id {value:016x} "
                       "(datapath ids must be unique: rename one)")
        seen.setdefault(value, name)
    return out


def _addresses(topo: Topology, where: str) -> list[str]:
    out = []
    ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    macs: dict[str, str] = {}
    for name in topo.containers:
        node = topo.node(name)
        assert node.ip is not None  # Topology.add_container gives every container an address
        iface = ipaddress.ip_interface(node.ip)
        if iface.network.prefixlen < iface.max_prefixlen - 1 and iface.ip in (
            iface.network.network_address, iface.network.broadcast_address
        ):
            out.append(f"{where}: container {name!r}: ip {node.ip} is the network or broadcast address "
                       "(a container needs a host address)")
        if iface.ip in ips:
            out.append(f"{where}: container {name!r}: ip {iface.ip} is also {ips[iface.ip]!r}'s "
                       "(container addresses must be unique)")
        ips.setdefault(iface.ip, name)
        mac = node.mac or ""
        if int(mac.split(":")[0], 16) & 1:
            out.append(f"{where}: container {name!r}: mac {mac} is a multicast address "
                       "(the first byte must be even)")
        if mac in macs:
            out.append(f"{where}: container {name!r}: mac {mac} is also {macs[mac]!r}'s "
                       "(container MACs must be unique)")
        macs.setdefault(mac, name)
    return out


def _interface_names(topo: Topology, where: str) -> list[str]:
    """The longest host-side name a run can give a node's port must fit IFNAMSIZ (15 bytes)."""
    out = []
    for name in topo.bridges + topo.containers:
        ports = topo.ports(name)
        longest = f"{LONGEST_PREFIX}{topo.short_id(name)}p{max(ports) if ports else 0}"
        if len(longest.encode()) > IFNAMSIZ:
            out.append(f"{where}: {topo.kind(name)} {name!r}: interface name {longest!r} is "
                       f"{len(longest)} bytes (Linux allows {IFNAMSIZ}; use fewer nodes or ports)")
    return out


RULES = (_names, _pis_present, _containers_on_pis, _connected, _dpids, _addresses, _interface_names)


def problems(topo: Topology, where: str) -> list[str]:
    """Every rule's findings, in rule order."""
    return [line for rule in RULES for line in rule(topo, where)]


def validate(topo: Topology, where: str) -> Topology:
    """Raise the first problem as a TopologyError; return the topology unchanged when it is sound."""
    found = problems(topo, where)
    if found:
        more = f" [and {len(found) - 1} more]" if len(found) > 1 else ""
        raise TopologyError(found[0] + more)
    return topo
