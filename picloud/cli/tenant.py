"""`picloud tenant create|add|remove|delete|peer|list|show|verify`: tenants on a running run.

A thin layer over `Testbed.attach()` and `tenants.handle.TenantHandle`: every check happens there,
before anything changes, and a bad request ends as one `picloud: error:` line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from picloud.errors import TenantError

if TYPE_CHECKING:
    from picloud.testbed import Testbed
    from tenants.handle import TenantHandle


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("tenant", help="multi-tenant virtual networks on a running fabric")
    tsub = group.add_subparsers(dest="tenant_command", metavar="ACTION", required=True)

    def parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = tsub.add_parser(name, help=help_text)
        p.add_argument("--run", default=None, metavar="PREFIX", help="the run (default: the only one up)")
        return p

    p = parser("create", "create an empty tenant")
    p.add_argument("name")
    p.add_argument("--subnet", action="append", required=True, metavar="CIDR",
                   help="IPv4 subnet (repeat for several; subnets of different tenants may overlap)")
    p.add_argument("--rate", default=None, metavar="MBIT", help="rate limit per Pi in Mbit/s (OpenFlow meter)")
    p.set_defaults(func=_create)

    p = parser("add", "add members (containers) to a tenant")
    p.add_argument("name")
    p.add_argument("--count", type=int, required=True, metavar="N")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--spread", dest="placement", action="store_const", const="spread",
                       help="round-robin across racks, then Pis (default)")
    where.add_argument("--pack", dest="placement", action="store_const", const="pack",
                       help="fewest Pis, at most --capacity containers per Pi")
    where.add_argument("--on", dest="pis", metavar="PI,...", help="round-robin over these Pis")
    p.add_argument("--capacity", type=int, default=8, metavar="N", help="containers per Pi for --pack")
    p.add_argument("--subnet", default=None, metavar="CIDR", help="allocate from this subnet of the tenant")
    p.set_defaults(func=_add, placement="spread")

    p = parser("remove", "remove members (all when none are named)")
    p.add_argument("name")
    p.add_argument("members", nargs="*", metavar="MEMBER")
    p.set_defaults(func=_remove)

    p = parser("delete", "remove a tenant and all its members")
    p.add_argument("name")
    p.set_defaults(func=_delete)

    p = parser("peer", "allow traffic between two tenants through their virtual gateways")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=_peer)

    p = parser("list", "list tenants")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = parser("show", "show one tenant and its members")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show)

    p = parser("verify", "probe isolation between all tenants (exit 1 on any leak or missing path)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="keep probing for S seconds")
    p.set_defaults(func=_verify)


def _testbed(args: argparse.Namespace) -> Testbed:
    from picloud.testbed import Testbed

    return Testbed.attach(args.run)


def _handle(tb: Testbed, name: str) -> TenantHandle:
    from tenants.handle import TenantHandle

    return TenantHandle(tb, name)


def _create(args: argparse.Namespace) -> int:
    from tenants.handle import TenantHandle, current_plan

    tb = _testbed(args)
    if current_plan(tb).has(args.name):
        raise TenantError(f"tenant {args.name!r}: duplicate tenant (tenant names must be unique)")
    handle = TenantHandle(tb, args.name, subnet=args.subnet, rate=args.rate)
    tenant = handle.tenant
    print(f"tenant {tenant.name}: id {tenant.id}, subnets {', '.join(s.cidr for s in tenant.subnets)}"
          + (f", rate {tenant.rate:g} Mbit/s" if tenant.rate else ""))
    return 0


def _add(args: argparse.Namespace) -> int:
    placement: Any = args.placement
    if args.pis is not None:
        placement = [p.strip() for p in args.pis.split(",") if p.strip()]
    tb = _testbed(args)
    members = _handle(tb, args.name).add(args.count, placement=placement, subnet=args.subnet,
                                         capacity=args.capacity)
    for m in members:
        print(f"{m.name}\t{m.pi}\t{m.ip}\t{m.mac}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    gone = _handle(_testbed(args), args.name).remove(*args.members)
    print(f"removed {len(gone)} member(s): {' '.join(m.name for m in gone) or '-'}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    _handle(_testbed(args), args.name).delete()
    print(f"tenant {args.name}: deleted")
    return 0


def _peer(args: argparse.Namespace) -> int:
    _handle(_testbed(args), args.a).peer(args.b)
    print(f"peering {args.a} <-> {args.b}: added")
    return 0


def _list(args: argparse.Namespace) -> int:
    from tenants.handle import current_plan

    plan = current_plan(_testbed(args))
    if args.json:
        print(json.dumps([_summary(t) for t in plan.tenants], indent=1))
        return 0
    print(f"{'TENANT':16} {'ID':>4} {'MEMBERS':>7} {'RATE':>8}  SUBNETS")
    for t in plan.tenants:
        rate = f"{t.rate:g}M" if t.rate else "-"
        print(f"{t.name:16} {t.id:>4} {len(t.members):>7} {rate:>8}  {', '.join(s.cidr for s in t.subnets)}")
    for a, b in plan.peerings:
        print(f"peering: {a} <-> {b}")
    return 0


def _summary(t: Any) -> dict[str, Any]:
    return {"name": t.name, "id": t.id, "subnets": [s.to_dict() for s in t.subnets], "rate": t.rate,
            "members": len(t.members), "pis": sorted({m.pi for m in t.members})}


def _show(args: argparse.Namespace) -> int:
    from tenants.handle import current_plan, drop_counts

    tb = _testbed(args)
    plan = current_plan(tb)
    tenant = plan.tenant(args.name)
    drops = drop_counts(tb).get(tenant.name, 0) if tb.controller_api else None
    if args.json:
        data = tenant.to_dict()
        data["peers"] = plan.peers(tenant.name)
        data["dropped_packets"] = drops
        print(json.dumps(data, indent=1))
        return 0
    rate = f"{tenant.rate:g} Mbit/s per Pi" if tenant.rate else "none"
    print(f"tenant {tenant.name} (id/VLAN {tenant.id}), rate limit: {rate}, peers: "
          f"{', '.join(plan.peers(tenant.name)) or '-'}, dropped at the edge: {drops if drops is not None else '?'}")
    for s in tenant.subnets:
        print(f"  subnet {s.cidr} gateway {s.gateway} ({tenant.gateway_mac(s.cidr)})")
    print(f"  {'MEMBER':20} {'PI':12} {'IP':15} {'MAC':17} PORT")
    for m in tenant.members:
        print(f"  {m.name:20} {m.pi:12} {m.ip:15} {m.mac:17} {m.port if m.port is not None else '-'}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from tenants.verify import verify

    report = verify(_testbed(args), duration=args.duration)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.summary())
    return 0 if report.ok else 1
