"""Planning tenants (pure): ids, subnets, address and MAC allocation, placement on Pis.

Every function takes a `TenantPlan` (and, where Pis matter, the `Topology`) and returns a new
plan, validating everything first, so a rejected request changes nothing. The Testbed/CLI layer
(`tenants.handle`) then realises the difference on the fabric.

Placement policies:
- `spread`: round-robin across racks first, then across the Pis of each rack, always choosing the
  Pi with the fewest members of this tenant (then the fewest containers overall). Spreading a
  tenant over failure domains is what a cloud scheduler does for availability.
- `pack`: the fewest Pis: fill Pis that already hold this tenant, then the fullest Pis that still
  have room, never exceeding `capacity` containers per Pi (bin packing, first-fit decreasing).
- a list of Pi names: round-robin over exactly those Pis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import netaddr

from picloud.errors import TenantError
from tenants.model import (
    MAX_MEMBER_INDEX,
    MAX_SUBNETS,
    MAX_TENANT_ID,
    MIN_TENANT_ID,
    Member,
    Subnet,
    Tenant,
    TenantPlan,
    check_name,
    make_subnet,
    member_mac,
    member_name,
)
from topology.model import Topology

DEFAULT_CAPACITY = 8  # containers per Pi for `pack`: a Raspberry Pi 4 runs about this many comfortably
PLACEMENTS = ("spread", "pack")


def parse_rate(rate: Any, where: str) -> float | None:
    """A rate limit in Mbit/s: a positive finite number, or None for no limit."""
    if rate is None:
        return None
    try:
        if isinstance(rate, bool):
            raise ValueError
        value = float(rate)
    except (TypeError, ValueError):
        raise TenantError(f"{where}: rate {rate!r} is not a number (Mbit/s, a positive number)") from None
    if not value > 0 or value == float("inf"):
        raise TenantError(f"{where}: rate {rate!r} must be a positive number of Mbit/s")
    return value


def _check_no_overlap(subnets: Sequence[Subnet], where: str) -> None:
    for i, a in enumerate(subnets):
        for b in subnets[i + 1:]:
            if a.network.first <= b.network.last and b.network.first <= a.network.last:
                raise TenantError(f"{where}: subnets {a.cidr} and {b.cidr} overlap "
                                  "(the subnets of one tenant must be disjoint)")


def _next_id(plan: TenantPlan) -> int:
    used = {t.id for t in plan.tenants}
    for tid in range(MIN_TENANT_ID, MAX_TENANT_ID + 1):
        if tid not in used:
            return tid
    raise TenantError(f"tenants: all {MAX_TENANT_ID} tenant ids are in use (one VLAN id per tenant)")


def create_tenant(plan: TenantPlan, name: str, subnets: str | Sequence[str] | None, rate: Any = None,
                  tenant_id: int | None = None, topology: Topology | None = None) -> TenantPlan:
    """A new, empty tenant. Subnets of different tenants may overlap; within one they may not."""
    check_name(name, "tenant")
    where = f"tenant {name!r}"
    if plan.has(name):
        raise TenantError(f"{where}: duplicate tenant (tenant names must be unique)")
    if topology is not None and name in topology:
        raise TenantError(f"{where}: name is already a node of the topology (names must be unique)")
    member_name(name, 1)  # the shortest member name must fit too
    if not subnets:
        raise TenantError(f"{where}: no subnet (give at least one, like --subnet 10.0.0.0/24)")
    cidrs = [subnets] if isinstance(subnets, str) else list(subnets)
    parsed = tuple(make_subnet(c, where=where) for c in cidrs)
    if len(parsed) > MAX_SUBNETS:
        raise TenantError(f"{where}: {len(parsed)} subnets (at most {MAX_SUBNETS})")
    _check_no_overlap(parsed, where)
    value = parse_rate(rate, where)
    if tenant_id is None:
        tenant_id = _next_id(plan)
    elif isinstance(tenant_id, bool) or not isinstance(tenant_id, int) or not (
            MIN_TENANT_ID <= tenant_id <= MAX_TENANT_ID):
        raise TenantError(f"{where}: id {tenant_id!r} out of range "
                          f"({MIN_TENANT_ID}..{MAX_TENANT_ID}, a VLAN id)")
    elif (holder := plan.by_id(tenant_id)) is not None:
        raise TenantError(f"{where}: id {tenant_id} is already used by tenant {holder.name!r}")
    tenant = Tenant(name=name, id=tenant_id, subnets=parsed, rate=value)
    return replace(plan, tenants=plan.tenants + (tenant,))


def _replace_tenant(plan: TenantPlan, tenant: Tenant) -> TenantPlan:
    return replace(plan, tenants=tuple(tenant if t.name == tenant.name else t for t in plan.tenants))


def add_subnet(plan: TenantPlan, name: str, cidr: str, gateway: str | None = None) -> TenantPlan:
    tenant = plan.tenant(name)
    where = f"tenant {name!r}"
    subnet = make_subnet(cidr, gateway, where=where)
    subnets = tenant.subnets + (subnet,)
    if len(subnets) > MAX_SUBNETS:
        raise TenantError(f"{where}: {len(subnets)} subnets (at most {MAX_SUBNETS})")
    _check_no_overlap(subnets, where)
    _check_peerings(replace(plan, tenants=()), [replace(tenant, subnets=subnets)], plan)
    return _replace_tenant(plan, replace(tenant, subnets=subnets))


def set_rate(plan: TenantPlan, name: str, rate: Any) -> TenantPlan:
    tenant = plan.tenant(name)
    return _replace_tenant(plan, replace(tenant, rate=parse_rate(rate, f"tenant {name!r}")))


def delete_tenant(plan: TenantPlan, name: str) -> TenantPlan:
    plan.tenant(name)
    return TenantPlan(tenants=tuple(t for t in plan.tenants if t.name != name),
                      peerings=tuple(p for p in plan.peerings if name not in p))


def _free_addresses(tenant: Tenant, subnet: Subnet) -> Iterable[str]:
    """Host addresses of the subnet, lowest first, skipping network, broadcast, gateway and used."""
    net = subnet.network
    taken = {m.ip for m in tenant.members} | {subnet.gateway}
    for value in range(net.first + 1, net.last):
        ip = str(netaddr.IPAddress(value))
        if ip not in taken:
            yield ip


def _allocate_ips(tenant: Tenant, count: int, cidr: str | None) -> list[tuple[str, str]]:
    where = f"tenant {tenant.name!r}"
    if cidr is not None:
        canonical = make_subnet(cidr, where=where).cidr
        subnets = [s for s in tenant.subnets if s.cidr == canonical]
        if not subnets:
            known = ", ".join(s.cidr for s in tenant.subnets)
            raise TenantError(f"{where}: no subnet {cidr} (subnets: {known})")
    else:
        subnets = list(tenant.subnets)
    out: list[tuple[str, str]] = []
    for subnet in subnets:
        for ip in _free_addresses(tenant, subnet):
            if len(out) == count:
                return out
            out.append((ip, subnet.cidr))
    if len(out) < count:
        free = len(out)
        raise TenantError(f"{where}: {count} new members do not fit in {', '.join(s.cidr for s in subnets)} "
                          f"({free} free addresses; network, broadcast and gateway are reserved)")
    return out


def _racks(topology: Topology, pis: Sequence[str]) -> list[list[str]]:
    """Pis grouped by rack in order of first appearance; a Pi without a rack is its own rack."""
    groups: dict[Any, list[str]] = {}
    for pi in pis:
        rack = topology.node(pi).rack
        groups.setdefault(("rack", rack) if rack is not None else ("pi", pi), []).append(pi)
    return list(groups.values())


def _interleave(racks: list[list[str]]) -> list[str]:
    out: list[str] = []
    depth = max((len(r) for r in racks), default=0)
    for i in range(depth):
        out.extend(r[i] for r in racks if i < len(r))
    return out


def pi_load(plan: TenantPlan, topology: Topology) -> dict[str, int]:
    """Containers per Pi: the topology's own plus every tenant member (counted once, even when the
    fabric has also added the member to the topology)."""
    members = {m.name for _, m in plan.members}
    load = {pi: 0 for pi in topology.pis}
    for c in topology.containers:
        if c not in members:
            load[topology.pi_of(c)] = load.get(topology.pi_of(c), 0) + 1
    for _, m in plan.members:
        load[m.pi] = load.get(m.pi, 0) + 1
    return load


def place(plan: TenantPlan, topology: Topology, tenant: Tenant, count: int,
          placement: str | Sequence[str], capacity: int = DEFAULT_CAPACITY) -> list[str]:
    """The Pi of each of `count` new members of `tenant`, in order."""
    where = f"tenant {tenant.name!r}"
    pis = topology.pis
    if not pis:
        raise TenantError(f"{where}: the topology has no pis to place members on")
    load = pi_load(plan, topology)
    mine = {pi: 0 for pi in pis}
    for m in tenant.members:
        mine[m.pi] = mine.get(m.pi, 0) + 1
    if isinstance(placement, str) and placement not in PLACEMENTS:
        raise TenantError(f"{where}: unknown placement {placement!r} (spread, pack, or a list of pis)")
    if isinstance(placement, str) and placement == "spread":
        order = {pi: i for i, pi in enumerate(_interleave(_racks(topology, pis)))}
        out = []
        for _ in range(count):
            pi = min(pis, key=lambda p: (mine[p], load[p], order[p]))
            out.append(pi)
            mine[pi] += 1
            load[pi] += 1
        return out
    if isinstance(placement, str):  # pack
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise TenantError(f"{where}: capacity {capacity!r} must be a positive whole number "
                              "of containers per pi")
        room = {pi: max(0, capacity - load[pi]) for pi in pis}
        if sum(room.values()) < count:
            raise TenantError(f"{where}: {count} members do not fit on {len(pis)} pis with capacity "
                              f"{capacity} ({sum(room.values())} free places)")
        index = {pi: i for i, pi in enumerate(pis)}
        out = []
        for _ in range(count):
            candidates = [p for p in pis if room[p] > 0]
            # Pis already holding this tenant first, then the one with most room: fewest Pis used.
            pi = min(candidates, key=lambda p: (mine[p] == 0, -room[p], index[p]))
            out.append(pi)
            mine[pi] += 1
            room[pi] -= 1
        return out
    chosen = list(placement)
    if not chosen:
        raise TenantError(f"{where}: empty list of pis (name at least one pi)")
    for pi in chosen:
        if pi not in topology or topology.kind(pi) != "pi":
            raise TenantError(f"{where}: unknown pi {pi!r} (pis: {', '.join(pis)})")
    return [chosen[i % len(chosen)] for i in range(count)]


def add_members(plan: TenantPlan, topology: Topology, name: str, count: Any,
                placement: str | Sequence[str] = "spread", subnet: str | None = None,
                capacity: int = DEFAULT_CAPACITY) -> tuple[TenantPlan, list[Member]]:
    """Allocate `count` new members: names `<tenant>-<n>`, the lowest free addresses, MACs from
    the tenant id and member index, Pis by placement. Returns the new plan and the new members."""
    tenant = plan.tenant(name)
    where = f"tenant {name!r}"
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TenantError(f"{where}: count {count!r} must be a positive whole number")
    last = tenant.next_index + count - 1
    if last > MAX_MEMBER_INDEX:
        raise TenantError(f"{where}: member index {last} out of range "
                          f"(at most {MAX_MEMBER_INDEX} members ever)")
    names = [member_name(name, tenant.next_index + i) for i in range(count)]
    taken = {m.name for _, m in plan.members} | set(topology.graph.nodes)
    for n in names:
        if n in taken and n not in {m.name for m in tenant.members}:
            raise TenantError(f"{where}: member name {n!r} is already a node of the topology "
                              "(names must be unique)")
    addresses = _allocate_ips(tenant, count, subnet)
    pis = place(plan, topology, tenant, count, placement, capacity)
    new = [
        Member(name=n, pi=pi, ip=ip, mac=member_mac(tenant.id, tenant.next_index + i), subnet=cidr)
        for i, (n, pi, (ip, cidr)) in enumerate(zip(names, pis, addresses, strict=True))
    ]
    tenant = tenant.with_members(tenant.members + tuple(new), next_index=last + 1)
    return _replace_tenant(plan, tenant), new


def remove_members(plan: TenantPlan, name: str,
                   members: Sequence[str] | None = None) -> tuple[TenantPlan, list[Member]]:
    """Remove the named members (all when none are named). Unknown names are an error and
    nothing is removed."""
    tenant = plan.tenant(name)
    if not members:
        gone = list(tenant.members)
    else:
        if len(set(members)) != len(members):
            raise TenantError(f"tenant {name!r}: a member is named twice")
        gone = [tenant.member(m) for m in members]
    names = {m.name for m in gone}
    tenant = tenant.with_members(tuple(m for m in tenant.members if m.name not in names))
    return _replace_tenant(plan, tenant), gone


def set_port(plan: TenantPlan, member: str, port: int | None) -> TenantPlan:
    """Record where the fabric attached a member (its port on the Pi's bridge)."""
    for tenant in plan.tenants:
        if any(m.name == member for m in tenant.members):
            members = tuple(replace(m, port=port) if m.name == member else m for m in tenant.members)
            return _replace_tenant(plan, tenant.with_members(members))
    raise TenantError(f"member {member!r}: no such member")


def _check_peerings(plan: TenantPlan, changed: Sequence[Tenant], full: TenantPlan) -> None:
    """Peered tenants route to each other through their gateways by destination address, so
    their subnets must not overlap."""
    for t in changed:
        for other_name in full.peers(t.name):
            other = full.tenant(other_name)
            _check_no_overlap(list(t.subnets) + list(other.subnets),
                              f"peering {t.name!r}-{other_name!r}")


def add_peering(plan: TenantPlan, a: str, b: str) -> TenantPlan:
    """An explicit rule letting tenants a and b reach each other through their virtual gateways."""
    ta, tb = plan.tenant(a), plan.tenant(b)
    where = f"peering {a!r}-{b!r}"
    if a == b:
        raise TenantError(f"{where}: a tenant cannot peer with itself")
    pair = (a, b) if a <= b else (b, a)
    if pair in plan.peerings:
        raise TenantError(f"{where}: duplicate peering")
    _check_no_overlap(list(ta.subnets) + list(tb.subnets), where)
    return replace(plan, peerings=plan.peerings + (pair,))


def remove_peering(plan: TenantPlan, a: str, b: str) -> TenantPlan:
    pair = (a, b) if a <= b else (b, a)
    if pair not in plan.peerings:
        raise TenantError(f"peering {a!r}-{b!r}: no such peering")
    return replace(plan, peerings=tuple(p for p in plan.peerings if p != pair))


def validate(plan: TenantPlan, topology: Topology | None = None, where: str = "tenants") -> TenantPlan:
    """Check a plan as a whole (a loaded file, say): unique names, ids and MACs, addresses inside
    their tenant's subnets and unique within the tenant, members on known Pis, peerings sound."""
    names: set[str] = set()
    ids: set[int] = set()
    macs: dict[str, str] = {}
    for t in plan.tenants:
        w = f"{where}: tenant {t.name!r}"
        check_name(t.name, f"{where}: tenant")
        if t.name in names:
            raise TenantError(f"{w}: duplicate tenant (tenant names must be unique)")
        names.add(t.name)
        if isinstance(t.id, bool) or not isinstance(t.id, int) or not MIN_TENANT_ID <= t.id <= MAX_TENANT_ID:
            raise TenantError(f"{w}: id {t.id!r} out of range ({MIN_TENANT_ID}..{MAX_TENANT_ID}, a VLAN id)")
        if t.id in ids:
            raise TenantError(f"{w}: duplicate id {t.id} (one VLAN id per tenant)")
        ids.add(t.id)
        if not t.subnets:
            raise TenantError(f"{w}: no subnet (each tenant needs at least one)")
        _check_no_overlap(t.subnets, w)
        parse_rate(t.rate, w)
        ips: set[str] = set()
        for m in t.members:
            wm = f"{w}: member {m.name!r}"
            check_name(m.name, f"{w}: member")
            if m.name in names:
                raise TenantError(f"{wm}: duplicate member (container names must be unique)")
            names.add(m.name)
            subnet = t.subnet_of(m.ip)
            if subnet is None or subnet.cidr != m.subnet:
                raise TenantError(f"{wm}: ip {m.ip} is not in its subnet {m.subnet}")
            net = subnet.network
            if netaddr.IPAddress(m.ip) in (net.network, net.broadcast) or m.ip == subnet.gateway:
                raise TenantError(f"{wm}: ip {m.ip} is reserved "
                                  f"(network, broadcast or gateway of {net.cidr})")
            if m.ip in ips:
                raise TenantError(f"{wm}: duplicate ip {m.ip} within the tenant")
            ips.add(m.ip)
            if m.mac in macs or m.mac.startswith("02:00:00"):
                raise TenantError(f"{wm}: mac {m.mac} is not unique (MACs are unique across the fabric)")
            macs[m.mac] = m.name
            if topology is not None and (m.pi not in topology or topology.kind(m.pi) != "pi"):
                raise TenantError(f"{wm}: unknown pi {m.pi!r}")
    for a, b in plan.peerings:
        if a not in names or b not in names:
            raise TenantError(f"{where}: peering {a!r}-{b!r}: unknown tenant")
        _check_no_overlap(list(plan.tenant(a).subnets) + list(plan.tenant(b).subnets),
                          f"{where}: peering {a!r}-{b!r}")
    return plan
