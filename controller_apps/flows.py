"""One flow representation for every controller app: what a switch should hold (`SwitchRules` of
`Flow`, `Group` and `Meter`), the difference from what it holds (`diff` -> `Change`), and the
os-ken messages that make the difference (`encode`).

Why one: routing and tenancy write the same four tables (`pipeline.TABLES`) and a packet meets
both apps' rules on its way through them. With one representation, tests run every app's rules
together on one fake flow table (tests/unit/flowtable.py), so "tenancy composes with routing" is a
unit test rather than a hope; and one encoder checks every flow against the match fields its table
declares, so an app cannot quietly start matching on a field another app's table does not expect.

Faucet's approach: rule modules are pure (config and events in, `SwitchRules` out); apps diff and
send. Everything here is a frozen value: flows hash and compare, so a diff is set arithmetic.

The action vocabulary (one for all apps; `Action.kind` and its `args`):
    output(port)          port: a number, or "in_port", "controller", "table" (OFPP_*)
    group(group_id)
    set_field(field, v)   any OXM field, e.g. eth_src, vlan_vid (with OFPVID_PRESENT set)
    move(src, dst, bits)  NXActionRegMove, for data-plane ARP answers
    PUSH_VLAN, POP_VLAN, DEC_TTL
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from controller_apps import fastpath, pipeline

OFPVID_PRESENT = 0x1000  # OXM vlan_vid flag: "a VLAN tag is present" (OpenFlow 1.3, 7.2.3.8)
OFPVID_NONE = 0x0000  # OXM vlan_vid value meaning "no VLAN tag"
ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_8021Q = 0x8100
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")  # eth_dst value/mask: the group bit


def vid(tag: int) -> int:
    """The vlan_vid match/set_field value for VLAN id `tag` (1..4094)."""
    return OFPVID_PRESENT | tag


# --- match ---------------------------------------------------------------------------------------
def _normal(value: Any) -> Any:
    """MACs (and any text) lowercase; masked values and lists as tuples: one spelling per value,
    so matches built by different apps, or read back from a switch, compare equal."""
    if isinstance(value, list | tuple):
        return tuple(_normal(v) for v in value)
    if isinstance(value, str):
        return value.lower()
    return value


class Match(tuple):
    """OXM fields as sorted (field, value) pairs: hashable, comparable, one spelling per match.
    `Match(eth_dst=mac, vlan_vid=OFPVID_NONE)`, or `Match(pairs)` from (field, value) pairs or a
    mapping (an os-ken OFPMatch read back from a switch)."""

    __slots__ = ()

    def __new__(cls, pairs: Iterable[tuple[str, Any]] | Mapping[str, Any] = (), /, **fields: Any) -> Match:
        items = list(pairs.items() if isinstance(pairs, Mapping) else pairs) + list(fields.items())
        return super().__new__(cls, sorted((k, _normal(v)) for k, v in items))

    def fields(self) -> dict[str, Any]:
        return dict(self)

    def __repr__(self) -> str:
        return "Match(" + ", ".join(f"{k}={v!r}" for k, v in self) + ")"


# --- actions -------------------------------------------------------------------------------------
class Action(NamedTuple):
    kind: str
    args: tuple[Any, ...] = ()


ACTION_KINDS = frozenset({"output", "group", "set_field", "move", "push_vlan", "pop_vlan", "dec_ttl"})
PORT_NAMES = frozenset({"in_port", "controller", "table"})


def output(port: int | str) -> Action:
    if isinstance(port, str) and port not in PORT_NAMES:
        raise ValueError(f"flows: output to unknown port name {port!r}")
    return Action("output", (port,))


def group(group_id: int) -> Action:
    return Action("group", (group_id,))


def set_field(name: str, value: Any) -> Action:
    return Action("set_field", (name, _normal(value)))


def move(src: str, dst: str, n_bits: int) -> Action:
    return Action("move", (src, dst, n_bits))


PUSH_VLAN = Action("push_vlan")
POP_VLAN = Action("pop_vlan")
DEC_TTL = Action("dec_ttl")
TO_CONTROLLER = output("controller")


# --- flows, groups, meters -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Flow:
    """One flow entry. Instructions run in OpenFlow's order: meter, apply `actions`, goto. No
    actions and no goto means drop."""

    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    meter: int | None = None
    cookie: int = 0

    @property
    def key(self) -> tuple[int, int, Match]:
        """What a switch identifies a flow by (OFPFC_*_STRICT): the same key is the same entry."""
        return (self.table, self.priority, self.match)

    @property
    def tenant_id(self) -> int:
        return pipeline.cookie_tenant(self.cookie)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A group bucket that outputs to `port` and watches it (live while the port is up)."""

    port: int

    @property
    def watch_port(self) -> int:
        return self.port


@dataclass(frozen=True, slots=True)
class Group:
    group_id: int
    type: str  # "select" (ECMP) or "ff" (fast failover: the first live bucket)
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True, slots=True)
class Meter:
    """A rate limit: one drop band at `rate_kbps` with a `burst_kbit` bucket."""

    meter_id: int
    rate_kbps: int
    burst_kbit: int


FlowKey = tuple[int, int, Match]


@dataclass
class SwitchRules:
    """Everything one app wants on one switch, keyed so two states compare cheaply."""

    flows: dict[FlowKey, Flow] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)

    def add(self, flow: Flow) -> None:
        self.flows[flow.key] = flow

    def extend(self, flows: Iterable[Flow]) -> None:
        for flow in flows:
            self.flows[flow.key] = flow

    def __len__(self) -> int:
        return len(self.flows)


@dataclass
class Change:
    """The messages that turn one switch's installed rules into the desired ones."""

    add_flows: list[Flow] = field(default_factory=list)
    modify_flows: list[Flow] = field(default_factory=list)
    delete_flows: list[Flow] = field(default_factory=list)
    add_groups: list[Group] = field(default_factory=list)
    modify_groups: list[Group] = field(default_factory=list)
    delete_groups: list[int] = field(default_factory=list)
    add_meters: list[Meter] = field(default_factory=list)
    modify_meters: list[Meter] = field(default_factory=list)
    delete_meters: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.add_flows) + len(self.modify_flows) + len(self.delete_flows) + len(self.add_groups)
                + len(self.modify_groups) + len(self.delete_groups) + len(self.add_meters)
                + len(self.modify_meters) + len(self.delete_meters))


# --- diff ----------------------------------------------------------------------------------------
def _diff_by_id(old: Mapping[int, Any], new: Mapping[int, Any], assume_same: bool) -> tuple[list, list, list]:
    add = [v for k, v in sorted(new.items()) if k not in old]
    modify = [v for k, v in sorted(new.items()) if k in old and (not assume_same or old[k] != v)]
    return add, modify, sorted(k for k in old if k not in new)


def diff(installed: SwitchRules | None, desired: SwitchRules, assume_same: bool = True) -> Change:
    """The minimal change from `installed` (None: unknown, install everything) to `desired`.
    A flow or group whose key is installed with different contents is modified in place, so a
    packet never sees it missing. With `assume_same=False` every kept entry is modified anyway:
    for rules read back from a switch, whose instructions were not compared."""
    old = installed or SwitchRules()
    change = Change()
    change.add_groups, change.modify_groups, change.delete_groups = _diff_by_id(
        old.groups, desired.groups, assume_same)
    change.add_meters, change.modify_meters, change.delete_meters = _diff_by_id(
        old.meters, desired.meters, assume_same)
    for key, flow in desired.flows.items():  # insertion order: deterministic, as the rule modules are
        have = old.flows.get(key)
        if have is None:
            change.add_flows.append(flow)
        elif not assume_same or have != flow:
            change.modify_flows.append(flow)
    change.delete_flows = [flow for key, flow in old.flows.items() if key not in desired.flows]
    return change


def resync(desired: SwitchRules) -> Change:
    """Install `desired` on a (re)connected switch whose contents are unknown, removing nothing: a
    restarted controller must not interrupt established flows. Groups and meters are sent as ADD
    then MODIFY (whichever fails, the entry ends up as desired and is never missing); flows as ADD,
    which replaces an entry with the same key in place. Entries a previous controller installed
    that are no longer wanted are not found this way (apps that must find them read back)."""
    groups, meters = list(desired.groups.values()), list(desired.meters.values())
    return Change(add_flows=list(desired.flows.values()), add_groups=groups, modify_groups=groups,
                  add_meters=meters, modify_meters=meters)


def apply_change(rules: SwitchRules, change: Change) -> None:
    """Record in `rules` (what a switch was sent) that `change` was sent too."""
    for flow in change.add_flows + change.modify_flows:
        rules.flows[flow.key] = flow
    for flow in change.delete_flows:
        rules.flows.pop(flow.key, None)
    for grp in change.add_groups + change.modify_groups:
        rules.groups[grp.group_id] = grp
    for group_id in change.delete_groups:
        rules.groups.pop(group_id, None)
    for meter in change.add_meters + change.modify_meters:
        rules.meters[meter.meter_id] = meter
    for meter_id in change.delete_meters:
        rules.meters.pop(meter_id, None)


# --- encoding ------------------------------------------------------------------------------------
class TableContractError(ValueError):
    """A flow matches a field its table does not declare, or names a table nobody declared."""


def check_table(flow: Flow, tables: Mapping[int, pipeline.Table] = pipeline.TABLE_BY_ID) -> None:
    """Raise TableContractError unless `flow`'s table is declared and declares every field it matches."""
    table = tables.get(flow.table)
    if table is None:
        raise TableContractError(f"flow in undeclared table {flow.table}: {flow}")
    extra = {name for name, _ in flow.match} - table.match_fields
    if extra:
        raise TableContractError(f"table {table.name} does not match on {', '.join(sorted(extra))}: {flow}")


def _action(dp: Any, action: Action) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    kind, args = action
    if kind == "output":
        port = {"in_port": ofp.OFPP_IN_PORT, "controller": ofp.OFPP_CONTROLLER,
                "table": ofp.OFPP_TABLE}.get(args[0], args[0])
        return parser.OFPActionOutput(port, ofp.OFPCML_NO_BUFFER if port == ofp.OFPP_CONTROLLER else 0)
    if kind == "group":
        return parser.OFPActionGroup(args[0])
    if kind == "set_field":
        return parser.OFPActionSetField(**{args[0]: args[1]})
    if kind == "move":
        return parser.NXActionRegMove(src_field=args[0], dst_field=args[1], n_bits=args[2])
    if kind == "push_vlan":
        return parser.OFPActionPushVlan(ETH_TYPE_8021Q)
    if kind == "pop_vlan":
        return parser.OFPActionPopVlan()
    if kind == "dec_ttl":
        return parser.OFPActionDecNwTtl()
    raise ValueError(f"flows: unknown action {action!r}")


PARTS_KEPT = 1 << 16  # encoded matches and instructions kept for reuse
_parts: dict[tuple[Any, Any, Flow], tuple[Any, list[Any]]] = {}


def _flow_parts(dp: Any, flow: Flow, tables: Mapping[int, pipeline.Table]) -> tuple[Any, list[Any]]:
    """The os-ken match and instructions of `flow`, checked against its table and built once,
    then shared by every flow-mod that carries the same flow: a host's rule towards its Pi's group
    and its ARP answer are the same on every bridge, and building the match (MAC and IP text to
    bytes and back) was most of the cost of answering a new host. os-ken only reads these objects
    when it serialises a message (it sets their length fields, to the same value each time), so
    sharing them is safe."""
    key = (dp.ofproto_parser, id(tables), flow)
    parts = _parts.get(key)
    if parts is None:
        check_table(flow, tables)
        parser, ofp = dp.ofproto_parser, dp.ofproto
        inst: list[Any] = []
        if flow.meter is not None:
            inst.append(parser.OFPInstructionMeter(flow.meter, ofp.OFPIT_METER))
        if flow.actions:
            inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                     [_action(dp, a) for a in flow.actions]))
        if flow.goto is not None:
            inst.append(parser.OFPInstructionGotoTable(flow.goto))
        if len(_parts) >= PARTS_KEPT:
            _parts.clear()
        parts = _parts[key] = (parser.OFPMatch(**dict(flow.match)), inst)
    return parts


def flow_mod(dp: Any, flow: Flow, command: int, tables: Mapping[int, pipeline.Table] = pipeline.TABLE_BY_ID,
             buffer_id: int | None = None) -> Any:
    """The OFPFlowMod for `flow`. A strict delete carries the flow's cookie under a full mask, so
    an app only ever deletes its own entry, never another app's with the same key. `buffer_id`: a
    packet the switch buffered, released through the new flow."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    match, inst = _flow_parts(dp, flow, tables)
    delete = command == ofp.OFPFC_DELETE_STRICT
    return parser.OFPFlowMod(
        datapath=dp, cookie=flow.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF if delete else 0, table_id=flow.table,
        command=command, priority=flow.priority, buffer_id=ofp.OFP_NO_BUFFER if buffer_id is None else buffer_id,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match, instructions=[] if delete else inst)


def _group_mod(dp: Any, grp: Group, command: int) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    kind = ofp.OFPGT_SELECT if grp.type == "select" else ofp.OFPGT_FF
    buckets = [parser.OFPBucket(weight=1 if grp.type == "select" else 0, watch_port=b.watch_port,
                                watch_group=ofp.OFPG_ANY, actions=[parser.OFPActionOutput(b.port)])
               for b in grp.buckets]
    return parser.OFPGroupMod(dp, command, kind, grp.group_id, buckets)


def _meter_mod(dp: Any, meter: Meter, command: int) -> Any:
    parser, ofp = dp.ofproto_parser, dp.ofproto
    band = parser.OFPMeterBandDrop(rate=meter.rate_kbps, burst_size=meter.burst_kbit)
    return parser.OFPMeterMod(dp, command, ofp.OFPMF_KBPS | ofp.OFPMF_BURST, meter.meter_id, [band])


def encode(dp: Any, change: Change, tables: Mapping[int, pipeline.Table] = pipeline.TABLE_BY_ID) -> list[Any]:
    """os-ken messages for `change` on `dp`, in a safe order: meters and groups exist before a flow
    uses them; flows are added and modified before any is deleted (a changed member is never
    unprotected); flows stop using a group or meter before it is deleted. Every flow is checked
    against the match fields its table declares in `tables` (the shared pipeline by default)."""
    ofp = dp.ofproto
    msgs: list[Any] = []
    msgs += [_meter_mod(dp, m, ofp.OFPMC_ADD) for m in change.add_meters]
    msgs += [_meter_mod(dp, m, ofp.OFPMC_MODIFY) for m in change.modify_meters]
    msgs += [_group_mod(dp, g, ofp.OFPGC_ADD) for g in change.add_groups]
    msgs += [_group_mod(dp, g, ofp.OFPGC_MODIFY) for g in change.modify_groups]
    msgs += [flow_mod(dp, f, ofp.OFPFC_ADD, tables) for f in change.add_flows]
    msgs += [flow_mod(dp, f, ofp.OFPFC_MODIFY_STRICT, tables) for f in change.modify_flows]
    msgs += [flow_mod(dp, f, ofp.OFPFC_DELETE_STRICT, tables) for f in change.delete_flows]
    msgs += [dp.ofproto_parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, gid, [])
             for gid in change.delete_groups]
    msgs += [dp.ofproto_parser.OFPMeterMod(dp, ofp.OFPMC_DELETE, 0, mid, []) for mid in change.delete_meters]
    return msgs


# --- wire bytes ----------------------------------------------------------------------------------
WIRE_KEPT = 1 << 17  # serialised flow-mods kept for reuse
_wire: dict[tuple[Any, int, Flow, int], bytes] = {}


def flow_mod_bytes(dp: Any, flow: Flow, command: int,
                   tables: Mapping[int, pipeline.Table] = pipeline.TABLE_BY_ID) -> bytes:
    """`flow_mod(dp, flow, command, tables)` serialised, with the datapath's next xid. Serialised
    once per distinct (flow, command) and reused with a new xid: a host's rule towards its Pi and
    its ARP answer go to every bridge, and os-ken's serialisation (OXM values through netaddr) was
    most of the cost of sending them."""
    key = (dp.ofproto_parser, id(tables), flow, command)
    template = _wire.get(key)
    if template is None:
        msg = flow_mod(dp, flow, command, tables)
        msg.set_xid(0)
        msg.serialize()
        if len(_wire) >= WIRE_KEPT:
            _wire.clear()
        template = _wire[key] = bytes(msg.buf)
    return fastpath.with_xid(template, fastpath.next_xid(dp))


def encode_bytes(dp: Any, change: Change, tables: Mapping[int, pipeline.Table] = pipeline.TABLE_BY_ID) -> list[bytes]:
    """What `encode` returns, serialised, in the same order (flow-mods from templates)."""
    ofp = dp.ofproto
    out = [fastpath.serialized(dp, m) for m in encode(dp, Change(
        add_groups=change.add_groups, modify_groups=change.modify_groups, add_meters=change.add_meters,
        modify_meters=change.modify_meters))]
    out += [flow_mod_bytes(dp, f, ofp.OFPFC_ADD, tables) for f in change.add_flows]
    out += [flow_mod_bytes(dp, f, ofp.OFPFC_MODIFY_STRICT, tables) for f in change.modify_flows]
    out += [flow_mod_bytes(dp, f, ofp.OFPFC_DELETE_STRICT, tables) for f in change.delete_flows]
    out += [fastpath.serialized(dp, m) for m in encode(dp, Change(
        delete_groups=change.delete_groups, delete_meters=change.delete_meters))]
    return out


def send_change(dp: Any, change: Change, tables: Mapping[int, pipeline.Table] = pipeline.TABLE_BY_ID) -> int:
    """Send `change` to `dp` in `encode`'s order; returns the number of messages. A real os-ken
    datapath gets them as one buffer of pre-serialised bytes (one queue put, one write); anything
    else (a recording fake) gets the os-ken messages one by one."""
    if fastpath.sends_bytes(dp):
        messages = encode_bytes(dp, change, tables)
        fastpath.send(dp, messages)
        return len(messages)
    msgs = encode(dp, change, tables)
    for msg in msgs:
        dp.send_msg(msg)
    return len(msgs)
