"""Tenancy's OpenFlow rules as a pure function of (tenant plan, topology) -> rules per datapath.

The handlers in `controller_apps.tenancy` only turn these into messages and send the difference
between what is installed and what is wanted (Faucet's approach: config in, messages out). Rules
are plain frozen dataclasses so tests can compare them, diff them, and run packets through them
with a fake flow table.

What the rules enforce (docs/CONTRACTS.md, "Hosts and tenants in the pipeline"):

table 0 classify, at each member's port on its Pi
    (in_port, untagged, eth_src=own MAC, IPv4 from own IP)    -> [meter], push VLAN tid, goto arp
    (in_port, untagged, eth_src=own MAC, ARP spa/sha = own)   -> push VLAN tid, goto arp
    (in_port) anything else (spoofed MAC/IP, IPv6, 802.1Q)    -> drop, counted under the tenant's cookie
    (other container ports, tagged)                           -> drop (nobody injects a tenant's VLAN)
table 1 arp, on Pis that host the tenant
    (vlan tid, ARP)                                           -> controller (answers from the plan)
    (vlan tid, eth_dst=gateway, IPv4 to a routable member)    -> rewrite MACs, TTL-1, [peer VLAN], goto fwd
    (vlan tid, eth_dst=gateway)                               -> drop (nothing to route to)
    (vlan tid, broadcast or multicast)                        -> drop: broadcast never leaves the tenant
table 3 egress
    (vlan tid, eth_dst=member) on the member's Pi             -> pop VLAN, output to the member
    (eth_dst=member)                                          -> drop (untagged or another tenant)
    (any VLAN) on every Pi                                    -> drop (never to a non-member container)

Routing forwards the tagged frames on eth_dst alone; MACs are unique fabric-wide (tenants.model).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller_apps.pipeline import (
    COOKIE_TENANCY,
    PRIORITY_SECURITY,
    TABLE_ARP,
    TABLE_CLASSIFY,
    TABLE_EGRESS,
    TABLE_FORWARD,
    cookie,
    cookie_tenant,
)
from tenants.model import Member, Tenant, TenantPlan
from topology.model import Topology, dpid

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
OFPVID_PRESENT = 0x1000
OFPVID_NONE = 0x0000
MULTICAST_BIT = ("01:00:00:00:00:00", "01:00:00:00:00:00")

# Priorities above routing's (PRIORITY_HIGH and below), ordered within each table.
PRI_ALLOW = PRIORITY_SECURITY + 300
PRI_ROUTE = PRIORITY_SECURITY + 250
PRI_MEMBER_DROP = PRIORITY_SECURITY + 200
PRI_GATEWAY_DROP = PRIORITY_SECURITY + 150
PRI_TAGGED_DROP = PRIORITY_SECURITY + 100

# Meter burst: 300 ms at the configured rate (at least 64 kbit). OVS's userspace datapath reads
# packets in batches and, on a busy host, its thread may not run for a few hundred ms; a smaller
# bucket then drops the whole batch that arrives after such a gap and the tenant gets far less
# than its rate (measured: 0.1 s gave 9-17 Mbit/s of a 20 Mbit/s limit under load). Over a 6 s
# window the burst lets a tenant exceed its rate by at most 5%.
METER_BURST_S = 0.3
METER_MIN_BURST_KBIT = 64

Match = tuple[tuple[str, Any], ...]
Action = tuple[Any, ...]


def make_match(**fields: Any) -> Match:
    """A match as a sorted tuple of (OFPMatch field, value): hashable and comparable."""
    return tuple(sorted((k, normalise(v)) for k, v in fields.items()))


def normalise(value: Any) -> Any:
    """MACs lowercase; masked values as (value, mask) tuples; lists (from JSON/stats) to tuples."""
    if isinstance(value, list | tuple):
        return tuple(normalise(v) for v in value)
    if isinstance(value, str):
        return value.lower()
    return value


@dataclass(frozen=True)
class Rule:
    """One flow entry. No actions and no goto means drop."""

    dpid: int
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    meter: int | None = None
    cookie: int = COOKIE_TENANCY

    @property
    def key(self) -> tuple[int, int, int, Match]:
        """What OpenFlow identifies a flow by (strict match): the same key means the same flow."""
        return (self.dpid, self.table, self.priority, self.match)

    @property
    def tenant_id(self) -> int:
        return cookie_tenant(self.cookie)

    def fields(self) -> dict[str, Any]:
        return dict(self.match)


@dataclass(frozen=True)
class Meter:
    """A per-tenant rate limit on one Pi: meter id = tenant id, a drop band at `rate_kbps`."""

    dpid: int
    meter_id: int
    rate_kbps: int
    burst_kbit: int


def vid(tenant_id: int) -> int:
    return OFPVID_PRESENT | tenant_id


def _attached(tenant: Tenant) -> list[Member]:
    return [m for m in tenant.members if m.port is not None]


def member_rules(tenant: Tenant, member: Member) -> list[Rule]:
    """Classify and egress rules at one member's port."""
    assert member.port is not None
    dp, port, ck = dpid(member.pi), member.port, cookie(COOKIE_TENANCY, tenant.id)
    tag: tuple[Action, ...] = (("push_vlan",), ("set_vlan", tenant.id))
    meter = tenant.id if tenant.rate is not None else None
    return [
        Rule(dp, TABLE_CLASSIFY, PRI_ALLOW,
             make_match(in_port=port, vlan_vid=OFPVID_NONE, eth_src=member.mac, eth_type=ETH_TYPE_IP,
                        ipv4_src=member.ip),
             tag, TABLE_ARP, meter, ck),
        Rule(dp, TABLE_CLASSIFY, PRI_ALLOW,
             make_match(in_port=port, vlan_vid=OFPVID_NONE, eth_src=member.mac, eth_type=ETH_TYPE_ARP,
                        arp_spa=member.ip, arp_sha=member.mac),
             tag, TABLE_ARP, None, ck),
        Rule(dp, TABLE_CLASSIFY, PRI_MEMBER_DROP, make_match(in_port=port), (), None, None, ck),
        Rule(dp, TABLE_EGRESS, PRI_ALLOW, make_match(vlan_vid=vid(tenant.id), eth_dst=member.mac),
             (("pop_vlan",), ("output", port)), None, None, ck),
        Rule(dp, TABLE_EGRESS, PRI_MEMBER_DROP, make_match(eth_dst=member.mac), (), None, None, ck),
    ]


def routed_destinations(plan: TenantPlan, tenant: Tenant) -> list[tuple[str, Tenant, Member]]:
    """(source subnet CIDR, destination tenant, member) pairs the tenant's gateways route: members
    of its other subnets, and every member of a peered tenant."""
    out = []
    peers = [plan.tenant(p) for p in plan.peers(tenant.name)]
    for subnet in tenant.subnets:
        for member in _attached(tenant):
            if member.subnet != subnet.cidr:
                out.append((subnet.cidr, tenant, member))
        for peer in peers:
            for member in _attached(peer):
                out.append((subnet.cidr, peer, member))
    return out


def tenant_pi_rules(plan: TenantPlan, tenant: Tenant, pi: str) -> list[Rule]:
    """Table-1 rules of one tenant on one Pi that hosts some of its members."""
    dp, ck, tag = dpid(pi), cookie(COOKIE_TENANCY, tenant.id), vid(tenant.id)
    rules = [
        Rule(dp, TABLE_ARP, PRI_ALLOW, make_match(vlan_vid=tag, eth_type=ETH_TYPE_ARP),
             (("controller",),), None, None, ck),
        Rule(dp, TABLE_ARP, PRI_MEMBER_DROP, make_match(vlan_vid=tag, eth_dst=MULTICAST_BIT),
             (), None, None, ck),
    ]
    for subnet in tenant.subnets:
        gateway = make_match(vlan_vid=tag, eth_dst=tenant.gateway_mac(subnet.cidr))
        rules.append(Rule(dp, TABLE_ARP, PRI_GATEWAY_DROP, gateway, (), None, None, ck))
    for src_cidr, dst_tenant, member in routed_destinations(plan, tenant):
        actions: list[Action] = [("set_eth_src", dst_tenant.gateway_mac(member.subnet)),
                                 ("set_eth_dst", member.mac), ("dec_ttl",)]
        if dst_tenant.id != tenant.id:
            actions.append(("set_vlan", dst_tenant.id))
        rules.append(Rule(dp, TABLE_ARP, PRI_ROUTE,
                          make_match(vlan_vid=tag, eth_dst=tenant.gateway_mac(src_cidr), eth_type=ETH_TYPE_IP,
                                     ipv4_dst=member.ip),
                          tuple(actions), TABLE_FORWARD, None, ck))
    return rules


def pi_guard_rules(topology: Topology, pi: str, member_ports: Iterable[int]) -> list[Rule]:
    """Tenant-independent guards on every Pi: no tagged frame enters from, or leaves to, a
    container that is not a tenant member (cookie tenant 0)."""
    dp, ck = dpid(pi), cookie(COOKIE_TENANCY, 0)
    tagged = make_match(vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT))
    rules = [Rule(dp, TABLE_EGRESS, PRI_TAGGED_DROP, tagged, (), None, None, ck)]
    members = set(member_ports)
    for port, peer in topology.ports(pi).items():
        if topology.kind(peer) == "container" and port not in members:
            rules.append(Rule(dp, TABLE_CLASSIFY, PRI_TAGGED_DROP,
                              make_match(in_port=port, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT)),
                              (), None, None, ck))
    return rules


def compute(plan: TenantPlan, topology: Topology) -> tuple[dict[int, list[Rule]], dict[int, list[Meter]]]:
    """Every tenancy rule and meter, by datapath id. Pis without members still get the guards;
    switches get nothing (tagged frames cross them by routing's eth_dst rules)."""
    rules: dict[int, list[Rule]] = {dpid(pi): [] for pi in topology.pis}
    meters: dict[int, list[Meter]] = {dpid(pi): [] for pi in topology.pis}
    member_ports: dict[str, list[int]] = {pi: [] for pi in topology.pis}
    for tenant in plan.tenants:
        pis = []
        for member in _attached(tenant):
            if member.pi not in member_ports:
                continue  # a Pi the topology does not have: validation reports it, rules skip it
            rules[dpid(member.pi)].extend(member_rules(tenant, member))
            member_ports[member.pi].append(member.port)
            if member.pi not in pis:
                pis.append(member.pi)
        for pi in pis:
            rules[dpid(pi)].extend(tenant_pi_rules(plan, tenant, pi))
            if tenant.rate is not None:
                kbps = max(1, round(tenant.rate * 1000))
                burst = max(METER_MIN_BURST_KBIT, round(kbps * METER_BURST_S))
                meters[dpid(pi)].append(Meter(dpid(pi), tenant.id, kbps, burst))
    for pi in topology.pis:
        rules[dpid(pi)].extend(pi_guard_rules(topology, pi, member_ports[pi]))
    return rules, meters


@dataclass(frozen=True)
class Diff:
    """What to send to move a switch from `installed` to `wanted`: strict adds, strict modifies
    (same key, different instructions: replaced in place, no packet sees a gap), strict deletes."""

    add: tuple[Rule, ...]
    modify: tuple[Rule, ...]
    delete: tuple[Rule, ...]

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)


def diff(installed: Iterable[Rule], wanted: Iterable[Rule], assume_same: bool = True) -> Diff:
    """Rules are identified by key. With `assume_same`, a rule whose key is installed with the
    same instructions is left alone; when the installed side's instructions are unknown (read
    back from a switch after a restart), pass assume_same=False to modify every kept rule."""
    have = {r.key: r for r in installed}
    want = {r.key: r for r in wanted}
    add = tuple(r for k, r in want.items() if k not in have)
    modify = tuple(r for k, r in want.items() if k in have and (not assume_same or have[k] != r))
    delete = tuple(r for k, r in have.items() if k not in want)
    return Diff(add, modify, delete)


def arp_answer(plan: TenantPlan, tenant_id: int, sender_ip: str, target_ip: str) -> str | None:
    """The MAC the controller answers an ARP who-has with, or None for silence. Only within the
    asker's tenant and subnet: its gateway, or a member of the same subnet. Never the asker itself
    (a duplicate-address probe must see no owner) and never another tenant's address."""
    tenant = plan.by_id(tenant_id)
    if tenant is None or sender_ip == target_ip:
        return None
    subnet = tenant.subnet_of(sender_ip)
    if subnet is None or not subnet.contains(target_ip):
        return None
    if target_ip == subnet.gateway:
        return tenant.gateway_mac(subnet.cidr)
    for member in tenant.members:
        if member.ip == target_ip:
            return member.mac
    return None


def counts(rules: dict[int, list[Rule]]) -> dict[int, int]:
    """Rules per tenant id (0: the tenant-independent guards)."""
    out: dict[int, int] = {}
    for per_dp in rules.values():
        for rule in per_dp:
            out[rule.tenant_id] = out.get(rule.tenant_id, 0) + 1
    return out
