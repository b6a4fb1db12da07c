"""The OpenFlow 1.3 table pipeline that PiCloud's apps share, declared once as data.

Why a pipeline: tenancy must classify (port -> tenant, anti-spoofing) before anything forwards,
and a user's forwarding app must be able to replace ours without switching isolation off. So each
concern owns a table and hands packets on with `goto_table`:

    0 classify  tenancy: port -> tenant, anti-spoofing; without tenancy one goto-next rule
    1 arp       controller-answered ARP
    2 forward   routing (or a user's app)
    3 egress    tenant check before output to a container

Every flow carries a cookie whose high 16 bits name the app that made it and whose low bits carry
the tenant id, so an app can delete exactly its own flows (`delete_app_flows`) and the UI can tell
who installed what.

The pipeline is installed only by our apps (`install_messages`); a user's single-table Ryu app run
alone never sees it and works as written against table 0.

Helpers here only build messages (given a datapath for its `ofproto`/`ofproto_parser`), they never
send, so they can be tested with a fake datapath and composed by pure rule modules.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    """One table of the pipeline: its number, name and what a miss does when nobody overrides it."""

    table_id: int
    name: str
    owner: str
    miss: str  # "next" (goto the next table), "controller" or "drop"
    purpose: str
    # The OXM fields our apps' flows in this table may match (flows.encode checks every flow):
    # the table's contract, so one app's flow never depends on a field another app does not expect.
    match_fields: frozenset[str] = frozenset()


TABLES: tuple[Table, ...] = (
    Table(0, "classify", "tenancy", "next", "port -> tenant, anti-spoofing",
          frozenset({"in_port", "vlan_vid", "eth_src", "eth_type", "ipv4_src", "arp_spa", "arp_sha"})),
    Table(1, "arp", "routing", "next", "controller-answered ARP",
          frozenset({"in_port", "vlan_vid", "eth_src", "eth_dst", "eth_type", "ipv4_dst"})),
    Table(2, "forward", "routing", "controller", "forwarding on (vlan_vid, eth_dst); a user's app may own it",
          frozenset({"vlan_vid", "eth_dst", "eth_type", "arp_op", "arp_tpa"})),
    Table(3, "egress", "routing", "drop", "tenant check before output to a container",
          frozenset({"vlan_vid", "eth_dst"})),
)
TABLE_CLASSIFY = 0
TABLE_ARP = 1
TABLE_FORWARD = 2
TABLE_EGRESS = 3
TABLE_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
TABLE_BY_ID: dict[int, Table] = {t.table_id: t for t in TABLES}

# Cookie layout: app id in bits 48..63, tenant id (VLAN id, 0 = untenanted) in the low bits.
COOKIE_APP_SHIFT = 48
COOKIE_APP_MASK = 0xFFFF << COOKIE_APP_SHIFT
COOKIE_TENANT_MASK = (1 << COOKIE_APP_SHIFT) - 1
COOKIE_PIPELINE = 0x0001 << COOKIE_APP_SHIFT
COOKIE_L2 = 0x0002 << COOKIE_APP_SHIFT
COOKIE_DISCOVERY = 0x0003 << COOKIE_APP_SHIFT
COOKIE_ROUTING = 0x0004 << COOKIE_APP_SHIFT
COOKIE_TENANCY = 0x0005 << COOKIE_APP_SHIFT
COOKIE_MONITOR = 0x0006 << COOKIE_APP_SHIFT
COOKIE_NAMES: dict[int, str] = {
    COOKIE_PIPELINE: "pipeline",
    COOKIE_L2: "l2_learning",
    COOKIE_DISCOVERY: "discovery",
    COOKIE_ROUTING: "routing",
    COOKIE_TENANCY: "tenancy",
    COOKIE_MONITOR: "monitor",
}

# Priorities every app agrees on, so rules from different apps order predictably within a table.
PRIORITY_MISS = 0
PRIORITY_DEFAULT = 100
PRIORITY_HIGH = 1000
PRIORITY_SECURITY = 2000

# Bytes of a packet sent to the controller on a table miss; OFPCML_NO_BUFFER is used so the switch
# never has to keep buffers around (OVS's userspace datapath does not buffer anyway).
MISS_SEND_LEN = 0xFFFF


def cookie(app: int, tenant: int = 0) -> int:
    """The cookie for `app` (a COOKIE_* constant) and `tenant` (0..4094)."""
    if app & ~COOKIE_APP_MASK:
        raise ValueError(f"cookie: app value {app:#x} has bits outside the app field")
    if not 0 <= tenant <= COOKIE_TENANT_MASK:
        raise ValueError(f"cookie: tenant {tenant} out of range")
    return app | tenant


def cookie_app(value: int) -> str:
    """Name of the app that made a flow with this cookie ("user" for anything not ours)."""
    return COOKIE_NAMES.get(value & COOKIE_APP_MASK, "user")


def cookie_tenant(value: int) -> int:
    return value & COOKIE_TENANT_MASK


def next_table(table_id: int) -> int | None:
    """The table after `table_id`, or None for the last one."""
    ids = [t.table_id for t in TABLES]
    index = ids.index(table_id)
    return ids[index + 1] if index + 1 < len(ids) else None


def goto(dp: Any, table_id: int) -> Any:
    """An OFPInstructionGotoTable to `table_id`."""
    return dp.ofproto_parser.OFPInstructionGotoTable(table_id)


def apply(dp: Any, actions: list[Any]) -> Any:
    """An OFPInstructionActions(APPLY_ACTIONS) wrapping `actions`."""
    return dp.ofproto_parser.OFPInstructionActions(dp.ofproto.OFPIT_APPLY_ACTIONS, actions)


def flow_mod(
    dp: Any,
    table_id: int,
    priority: int,
    match: Any | dict[str, Any] | None = None,
    actions: list[Any] | None = None,
    instructions: list[Any] | None = None,
    cookie_value: int = 0,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    flags: int = 0,
) -> Any:
    """An OFPFlowMod(ADD). `actions` become one apply-actions instruction placed before any
    `instructions` (typically a goto), which is the order OpenFlow executes them in anyway."""
    parser = dp.ofproto_parser
    if match is None:
        match = parser.OFPMatch()
    elif isinstance(match, dict):
        match = parser.OFPMatch(**match)
    inst: list[Any] = []
    if actions:
        inst.append(apply(dp, actions))
    inst.extend(instructions or [])
    return parser.OFPFlowMod(
        datapath=dp,
        cookie=cookie_value,
        table_id=table_id,
        command=dp.ofproto.OFPFC_ADD,
        idle_timeout=idle_timeout,
        hard_timeout=hard_timeout,
        priority=priority,
        buffer_id=dp.ofproto.OFP_NO_BUFFER,
        flags=flags,
        match=match,
        instructions=inst,
    )


def table_miss(dp: Any, table: Table) -> Any:
    """The priority-0 rule for `table`, doing what its `miss` says."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    if table.miss == "next":
        following = next_table(table.table_id)
        assert following is not None, f"table {table.name} is last and cannot miss to 'next'"
        return flow_mod(dp, table.table_id, PRIORITY_MISS, instructions=[goto(dp, following)],
                        cookie_value=COOKIE_PIPELINE)
    if table.miss == "controller":
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        return flow_mod(dp, table.table_id, PRIORITY_MISS, actions=actions, cookie_value=COOKIE_PIPELINE)
    if table.miss == "drop":
        return flow_mod(dp, table.table_id, PRIORITY_MISS, instructions=[], cookie_value=COOKIE_PIPELINE)
    raise ValueError(f"table {table.name}: unknown miss behaviour {table.miss!r}")


def delete_table_flows(dp: Any, table_id: int | None = None) -> Any:
    """Delete every flow in `table_id` (all tables when None): the clean slate an app installs on."""
    ofp = dp.ofproto
    return dp.ofproto_parser.OFPFlowMod(
        datapath=dp,
        table_id=ofp.OFPTT_ALL if table_id is None else table_id,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=dp.ofproto_parser.OFPMatch(),
    )


def delete_app_flows(dp: Any, app: int, tenant: int | None = None, table_id: int | None = None) -> Any:
    """Delete the flows one app (optionally one tenant of it) installed, in all tables by default."""
    ofp = dp.ofproto
    mask = COOKIE_APP_MASK if tenant is None else COOKIE_APP_MASK | COOKIE_TENANT_MASK
    return dp.ofproto_parser.OFPFlowMod(
        datapath=dp,
        cookie=cookie(app, tenant or 0),
        cookie_mask=mask,
        table_id=ofp.OFPTT_ALL if table_id is None else table_id,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=dp.ofproto_parser.OFPMatch(),
    )


def install_messages(dp: Any) -> list[Any]:
    """What a pipeline app sends when a switch connects: one miss rule per table, as ADDs that
    replace a previous controller's identical rules in place. Nothing is deleted first, so a
    restarted controller never opens a gap in which the switch drops established traffic."""
    return [table_miss(dp, t) for t in TABLES]


def send_all(dp: Any, messages: list[Any]) -> None:
    """Send messages in order, then a barrier so later packet-outs see the flows in place."""
    for msg in messages:
        dp.send_msg(msg)
    dp.send_msg(dp.ofproto_parser.OFPBarrierRequest(dp))


_installed: weakref.WeakSet[Any] = weakref.WeakSet()
_installed_lock = threading.Lock()


def ensure_installed(dp: Any) -> bool:
    """Install the pipeline on `dp` once per connection, whichever of our apps sees the switch
    first (discovery, routing and tenancy all call this from their switch-features handler).
    Returns True when this call sent it. A reconnect is a new Datapath object, so it reinstalls."""
    with _installed_lock:
        if dp in _installed:
            return False
        _installed.add(dp)
    send_all(dp, install_messages(dp))
    return True
