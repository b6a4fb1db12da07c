"""Tenants and their members as plain data (pure, no I/O).

A tenant is a virtual network: a numeric id (carried on fabric links as the VLAN id, see
docs/CONTRACTS.md "Hosts and tenants in the pipeline"), one or more subnets each with a gateway
address the controller answers for, an optional rate limit and the containers that belong to it.
Addresses of different tenants may overlap; MAC addresses never do, because routing forwards on
the destination MAC alone. So every MAC here is derived from the tenant id and the member's index,
is locally administered and unicast, and never starts with 02:00:00 (the default network's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import netaddr

from picloud.errors import TenantError

NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")
MAX_NAME = 32  # topology node names: 1..32 characters
MIN_TENANT_ID, MAX_TENANT_ID = 1, 4094  # usable 802.1Q VLAN ids
# First octets: 0x0a and 0x0e have the locally-administered bit (0x02) set and the group bit
# (0x01) clear, so they are valid unicast host addresses that no vendor OUI can collide with.
MEMBER_MAC_OCTET = 0x0A
GATEWAY_MAC_OCTET = 0x0E
MAX_MEMBER_INDEX = 0xFFFFFF  # 24 bits of the MAC
MAX_SUBNETS = 256  # one byte of the gateway MAC


def check_name(name: Any, what: str) -> str:
    """Tenant and member names become topology node names, so they obey the same rule."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TenantError(
            f"{what} {name!r}: invalid name (1-32 characters of [a-z0-9-], starting with a letter or digit)"
        )
    return name


def member_name(tenant: str, index: int) -> str:
    """Container name of a tenant's index-th member: `<tenant>-<index>`, at most 32 characters."""
    name = f"{tenant}-{index}"
    if len(name) > MAX_NAME:
        raise TenantError(
            f"tenant {tenant!r}: member name {name!r} has {len(name)} characters "
            f"(container names are at most {MAX_NAME}; use a shorter tenant name)"
        )
    return name


def member_mac(tenant_id: int, index: int) -> str:
    """0a:TT:TT:II:II:II: tenant id in two bytes, member index in three, so unique fabric-wide."""
    if not 0 < index <= MAX_MEMBER_INDEX:
        raise TenantError(f"tenant id {tenant_id}: member index {index} out of range (1..{MAX_MEMBER_INDEX})")
    octets = [MEMBER_MAC_OCTET, tenant_id >> 8, tenant_id & 0xFF,
              index >> 16 & 0xFF, index >> 8 & 0xFF, index & 0xFF]
    return ":".join(f"{o:02x}" for o in octets)


def gateway_mac(tenant_id: int, subnet_index: int) -> str:
    """0e:TT:TT:00:00:SS: the virtual gateway of one subnet of one tenant."""
    octets = [GATEWAY_MAC_OCTET, tenant_id >> 8, tenant_id & 0xFF, 0, 0, subnet_index & 0xFF]
    return ":".join(f"{o:02x}" for o in octets)


def parse_subnet(cidr: Any, where: str) -> netaddr.IPNetwork:
    """An IPv4 subnet given by its network address; /31 and /32 are refused (no room for hosts
    besides the gateway)."""
    if not isinstance(cidr, str):
        raise TenantError(f"{where}: subnet {cidr!r} is not a CIDR string (like 10.0.0.0/24)")
    try:
        if "/" not in cidr:
            raise ValueError(cidr)
        net = netaddr.IPNetwork(cidr)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise TenantError(f"{where}: invalid CIDR {cidr!r} (write it like 10.0.0.0/24)") from None
    if net.version != 4:
        raise TenantError(f"{where}: subnet {cidr}: only IPv4 subnets are supported")
    if net.ip != net.network:
        raise TenantError(f"{where}: subnet {cidr} has host bits set (did you mean {net.cidr}?)")
    if net.prefixlen > 30:
        raise TenantError(f"{where}: subnet {cidr} is too small (at most /30: a gateway and one member)")
    return net


@dataclass(frozen=True)
class Subnet:
    """One IPv4 subnet of a tenant and its virtual gateway address."""

    cidr: str
    gateway: str

    @property
    def network(self) -> netaddr.IPNetwork:
        return netaddr.IPNetwork(self.cidr)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def contains(self, ip: str) -> bool:
        return netaddr.IPAddress(ip) in self.network

    def to_dict(self) -> dict[str, Any]:
        return {"cidr": self.cidr, "gateway": self.gateway}


def make_subnet(cidr: Any, gateway: Any = None, where: str = "subnet") -> Subnet:
    """Validate a subnet and its gateway; the gateway defaults to the first host address."""
    net = parse_subnet(cidr, where)
    if gateway is None:
        gw = netaddr.IPAddress(net.first + 1)
    else:
        try:
            gw = netaddr.IPAddress(str(gateway))
        except (netaddr.AddrFormatError, ValueError):
            raise TenantError(f"{where}: invalid gateway {gateway!r}") from None
        if gw not in net or gw in (net.network, net.broadcast):
            raise TenantError(f"{where}: gateway {gw} is not a host address of {net.cidr}")
    return Subnet(str(net.cidr), str(gw))


@dataclass(frozen=True)
class Member:
    """One container of a tenant. `port` is the container's port on its Pi's bridge, filled in
    once the fabric has created it (the controller needs it; the plan does not)."""

    name: str
    pi: str
    ip: str
    mac: str
    subnet: str  # the CIDR of the tenant subnet the address belongs to
    port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "pi": self.pi, "ip": self.ip, "mac": self.mac,
                               "subnet": self.subnet}
        if self.port is not None:
            out["port"] = self.port
        return out


@dataclass(frozen=True)
class Tenant:
    """A virtual network. `next_index` only grows, so a removed member's name and MAC are never
    handed to a different container later (stale rules or ARP caches cannot point at it)."""

    name: str
    id: int
    subnets: tuple[Subnet, ...]
    rate: float | None = None  # Mbit/s, enforced per Pi by an OpenFlow meter
    members: tuple[Member, ...] = ()
    next_index: int = 1

    def subnet_of(self, ip: str) -> Subnet | None:
        for subnet in self.subnets:
            if subnet.contains(ip):
                return subnet
        return None

    def subnet_index(self, cidr: str) -> int:
        for i, subnet in enumerate(self.subnets):
            if subnet.cidr == cidr:
                return i
        raise TenantError(f"tenant {self.name!r}: no subnet {cidr}")

    def gateway_mac(self, cidr: str) -> str:
        return gateway_mac(self.id, self.subnet_index(cidr))

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise TenantError(f"tenant {self.name!r}: no member {name!r} (members: "
                          f"{', '.join(m.name for m in self.members) or 'none'})")

    def with_members(self, members: tuple[Member, ...], next_index: int | None = None) -> Tenant:
        index = self.next_index if next_index is None else next_index
        return replace(self, members=members, next_index=index)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "id": self.id,
                               "subnets": [s.to_dict() for s in self.subnets]}
        if self.rate is not None:
            out["rate"] = self.rate
        out["next_index"] = self.next_index
        out["members"] = [m.to_dict() for m in self.members]
        return out


@dataclass(frozen=True)
class TenantPlan:
    """Every tenant of one run plus the explicit peerings between them (pairs of tenant names,
    stored sorted). Immutable: plan functions return a new plan, so a failed validation leaves
    the old one untouched."""

    tenants: tuple[Tenant, ...] = ()
    peerings: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def tenant(self, name: str) -> Tenant:
        for t in self.tenants:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tenants) or "none"
        raise TenantError(f"tenant {name!r}: no such tenant (tenants: {known})")

    def has(self, name: str) -> bool:
        return any(t.name == name for t in self.tenants)

    def by_id(self, tenant_id: int) -> Tenant | None:
        for t in self.tenants:
            if t.id == tenant_id:
                return t
        return None

    @property
    def members(self) -> list[tuple[Tenant, Member]]:
        return [(t, m) for t in self.tenants for m in t.members]

    def peers(self, name: str) -> list[str]:
        return sorted({b if a == name else a for a, b in self.peerings if name in (a, b)})

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "tenants": [t.to_dict() for t in self.tenants],
                "peerings": [list(p) for p in self.peerings]}
