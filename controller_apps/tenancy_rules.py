"""Tenancy's OpenFlow rules as a pure function of (tenant plan, topology) -> rules per datapath.

The handlers in `controller_apps.tenancy` only send the difference between what is installed and
what is wanted (Faucet's approach: config in, messages out). Rules are `controller_apps.flows`
values, the representation routing uses too, so tests compare them, diff them, and run packets
through tenancy's and routing's rules together on one fake flow table.

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

Routing carries the tagged frames on (vlan_vid, eth_dst): a tenant is a network of its own, as the
default network is (docs/CONTRACTS.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller_apps import flows as fl
from controller_apps.flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    OFPVID_NONE,
    OFPVID_PRESENT,
    Flow,
    Match,
    Meter,
    SwitchRules,
)
from controller_apps.pipeline import (
    COOKIE_APP_MASK,
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

MULTICAST_BIT = fl.MULTICAST

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
TAGGED = (OFPVID_PRESENT, OFPVID_PRESENT)  # vlan_vid value/mask: any VLAN tag


def vid(tenant_id: int) -> int:
    return OFPVID_PRESENT | tenant_id


def _attached(tenant: Tenant) -> list[Member]:
    return [m for m in tenant.members if m.port is not None]


def _port(member: Member) -> int:
    """The port of an attached member (one `_attached` returned)."""
    assert member.port is not None
    return member.port


def _rule(tenant_id: int, table: int, priority: int, match: Match, actions: tuple[fl.Action, ...] = (),
          goto: int | None = None, meter: int | None = None) -> Flow:
    """A tenancy flow; its cookie carries the tenant id (0: the tenant-independent guards)."""
    return Flow(table, priority, match, actions, goto, meter, cookie(COOKIE_TENANCY, tenant_id))


def member_rules(tenant: Tenant, member: Member) -> list[Flow]:
    """Classify and egress rules at one member's port."""
    port, tid = _port(member), tenant.id
    tag = (fl.PUSH_VLAN, fl.set_field("vlan_vid", vid(tid)))
    meter = tid if tenant.rate is not None else None
    return [
        _rule(tid, TABLE_CLASSIFY, PRI_ALLOW,
              Match(in_port=port, vlan_vid=OFPVID_NONE, eth_src=member.mac, eth_type=ETH_TYPE_IP,
                    ipv4_src=member.ip),
              tag, TABLE_ARP, meter),
        _rule(tid, TABLE_CLASSIFY, PRI_ALLOW,
              Match(in_port=port, vlan_vid=OFPVID_NONE, eth_src=member.mac, eth_type=ETH_TYPE_ARP,
                    arp_spa=member.ip, arp_sha=member.mac),
              tag, TABLE_ARP),
        _rule(tid, TABLE_CLASSIFY, PRI_MEMBER_DROP, Match(in_port=port)),
        _rule(tid, TABLE_EGRESS, PRI_ALLOW, Match(vlan_vid=vid(tid), eth_dst=member.mac),
              (fl.POP_VLAN, fl.output(port))),
        _rule(tid, TABLE_EGRESS, PRI_MEMBER_DROP, Match(eth_dst=member.mac)),
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


def tenant_pi_rules(plan: TenantPlan, tenant: Tenant) -> list[Flow]:
    """Table-1 rules of one tenant on each Pi that hosts some of its members."""
    tid, tag = tenant.id, vid(tenant.id)
    rules = [
        _rule(tid, TABLE_ARP, PRI_ALLOW, Match(vlan_vid=tag, eth_type=ETH_TYPE_ARP), (fl.TO_CONTROLLER,)),
        _rule(tid, TABLE_ARP, PRI_MEMBER_DROP, Match(vlan_vid=tag, eth_dst=MULTICAST_BIT)),
    ]
    for subnet in tenant.subnets:
        rules.append(_rule(tid, TABLE_ARP, PRI_GATEWAY_DROP,
                           Match(vlan_vid=tag, eth_dst=tenant.gateway_mac(subnet.cidr))))
    for src_cidr, dst_tenant, member in routed_destinations(plan, tenant):
        actions = [fl.set_field("eth_src", dst_tenant.gateway_mac(member.subnet)),
                   fl.set_field("eth_dst", member.mac), fl.DEC_TTL]
        if dst_tenant.id != tid:
            actions.append(fl.set_field("vlan_vid", vid(dst_tenant.id)))
        rules.append(_rule(tid, TABLE_ARP, PRI_ROUTE,
                           Match(vlan_vid=tag, eth_dst=tenant.gateway_mac(src_cidr), eth_type=ETH_TYPE_IP,
                                 ipv4_dst=member.ip),
                           tuple(actions), TABLE_FORWARD))
    return rules


def pi_guard_rules(topology: Topology, pi: str, member_ports: Iterable[int]) -> list[Flow]:
    """Tenant-independent guards on every Pi: no tagged frame enters from, or leaves to, a
    container that is not a tenant member (cookie tenant 0)."""
    rules = [_rule(0, TABLE_EGRESS, PRI_TAGGED_DROP, Match(vlan_vid=TAGGED))]
    members = set(member_ports)
    for port, peer in topology.ports(pi).items():
        if topology.kind(peer) == "container" and port not in members:
            rules.append(_rule(0, TABLE_CLASSIFY, PRI_TAGGED_DROP, Match(in_port=port, vlan_vid=TAGGED)))
    return rules


def compute(plan: TenantPlan, topology: Topology) -> dict[int, SwitchRules]:
    """Every tenancy flow and meter, by datapath id. Pis without members still get the guards;
    switches get nothing (tagged frames cross them by routing's eth_dst rules)."""
    rules: dict[int, SwitchRules] = {dpid(pi): SwitchRules() for pi in topology.pis}
    member_ports: dict[str, list[int]] = {pi: [] for pi in topology.pis}
    for tenant in plan.tenants:
        pis = []
        for member in _attached(tenant):
            if member.pi not in member_ports:
                continue  # a Pi the topology does not have: validation reports it, rules skip it
            rules[dpid(member.pi)].extend(member_rules(tenant, member))
            member_ports[member.pi].append(_port(member))
            if member.pi not in pis:
                pis.append(member.pi)
        shared = tenant_pi_rules(plan, tenant) if pis else []
        for pi in pis:
            rules[dpid(pi)].extend(shared)
            if tenant.rate is not None:
                kbps = max(1, round(tenant.rate * 1000))
                burst = max(METER_MIN_BURST_KBIT, round(kbps * METER_BURST_S))
                rules[dpid(pi)].meters[tenant.id] = Meter(tenant.id, kbps, burst)
    for pi in topology.pis:
        rules[dpid(pi)].extend(pi_guard_rules(topology, pi, member_ports[pi]))
    return rules


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


def counts(rules: dict[int, SwitchRules]) -> dict[int, int]:
    """Flows per tenant id (0: the tenant-independent guards)."""
    out: dict[int, int] = {}
    for per_dp in rules.values():
        for flow in per_dp.flows.values():
            out[flow.tenant_id] = out.get(flow.tenant_id, 0) + 1
    return out


def drop_counts(plan: TenantPlan, flows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Packets each tenant's members sent that the edge dropped (spoofed source, IPv6, 802.1Q...):
    the packet counters of the per-member drop rules among `flows` (as ofctl reports them), summed
    by the tenant id in the cookie."""
    by_id = {t.id: t.name for t in plan.tenants}
    out = {t.name: 0 for t in plan.tenants}
    for flow in flows:
        ck = int(flow.get("cookie", 0))
        if (ck & COOKIE_APP_MASK == COOKIE_TENANCY and flow.get("table_id") == TABLE_CLASSIFY
                and flow.get("priority") == PRI_MEMBER_DROP and cookie_tenant(ck) in by_id):
            out[by_id[cookie_tenant(ck)]] += int(flow.get("packet_count", 0))
    return out
