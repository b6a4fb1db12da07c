"""The test suite's one fake switch: OpenFlow 1.3 table lookup over `flows.Flow`, and one fake
datapath that decodes what an app sends into it.

- `FlowTable` is one switch: flows from any number of apps (the same key replaces, as an ADD does),
  groups and meters. `run` takes a packet through the pipeline the way OpenFlow 1.3 does: in each
  table the highest-priority matching flow (two different flows matching at the same top priority
  is undefined behaviour in OpenFlow, so the fake refuses it), its meter, its apply-actions in
  order (an output sends a copy of the packet as modified so far), then its goto; no goto ends the
  pipeline, no match in a table is a drop (OpenFlow 1.3's default without a table-miss flow).
- `Fabric` joins tables by the topology's links and follows a packet everywhere it can go: every
  bucket of a select group (ECMP: all choices are checked, not one), the first live bucket of a
  fast-failover group. It reports every end: a `Delivery` out of a non-fabric port, "controller",
  "drop", "lost" (out of a dead link) or "loop".
- `FakeDatapath` is what an app sees of a connected switch (id, ofproto modules, send_msg). Every
  message must serialise (real os-ken encoding); flow, group and meter mods are decoded back into
  `flows` values and applied to its `FlowTable`, so a test runs exactly what the app sent; barriers
  are answered at once through `on_barrier`.

Packets are dicts of OXM field -> value (MACs lower-case text, IPs text); "vlan_vid" is
OFPVID_NONE when untagged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as OFP
from os_ken.ofproto import ofproto_v1_3_parser as PARSER

from controller_apps import flows as fl
from controller_apps import pipeline
from controller_apps.flows import Flow, Group, Match, Meter, SwitchRules
from topology.model import Topology


@dataclass(frozen=True)
class Delivery:
    """A packet leaving bridge `dpid` out of non-fabric port `port` (compared by place only)."""

    dpid: int
    port: int
    frame: dict = field(default_factory=dict, compare=False, hash=False, repr=False)


def _as_int(value: Any) -> int:
    if isinstance(value, str):
        if ":" in value:
            return int(value.replace(":", ""), 16)
        if "." in value:
            return int.from_bytes(bytes(int(b) for b in value.split(".")), "big")
    return int(value)


def field_matches(want: Any, have: Any) -> bool:
    if have is None:
        return False
    if isinstance(want, tuple):
        value, mask = want
        return _as_int(have) & _as_int(mask) == _as_int(value) & _as_int(mask)
    if isinstance(want, str):
        return str(have).lower() == want
    return have == want


def matches(match: Match, pkt: Mapping[str, Any]) -> bool:
    return all(field_matches(want, pkt.get(name)) for name, want in match)


class FlowTable:
    """One switch's flow tables, groups and meters."""

    def __init__(self, dpid: int = 0, *rules: SwitchRules) -> None:
        self.dpid = dpid
        self.flows: dict[fl.FlowKey, Flow] = {}
        self.groups: dict[int, Group] = {}
        self.meters: dict[int, Meter] = {}
        for r in rules:
            self.install(r)

    def install(self, rules: SwitchRules) -> None:
        """Add everything in `rules`, replacing entries with the same key (OFPFC_ADD)."""
        self.flows.update(rules.flows)
        self.groups.update(rules.groups)
        self.meters.update(rules.meters)

    def lookup(self, table: int, pkt: Mapping[str, Any]) -> Flow | None:
        hits = [f for f in self.flows.values() if f.table == table and matches(f.match, pkt)]
        if not hits:
            return None
        top = max(f.priority for f in hits)
        best = [f for f in hits if f.priority == top]
        assert len(best) == 1, f"bridge {self.dpid:#x} table {table}: ambiguous at priority {top}: {best}"
        return best[0]

    def app_flows(self, cookie_app: int) -> list[Flow]:
        return [f for f in self.flows.values() if f.cookie & pipeline.COOKIE_APP_MASK == cookie_app]


FIELD_BITS = {"eth_src": 48, "eth_dst": 48, "arp_sha": 48, "arp_tha": 48, "arp_spa": 32, "arp_tpa": 32}


def _field_text(name: str, value: int) -> str:
    """A field's value written as packets here write it: MACs as text, IPv4 addresses dotted."""
    from controller_apps.routing_rules import ip_text, mac_text

    return mac_text(value) if FIELD_BITS[name] == 48 else ip_text(value)


def act(pkt: dict[str, Any], action: fl.Action) -> None:
    """Apply a header-changing action to `pkt` in place (outputs and groups are the caller's)."""
    kind, args = action
    if kind == "set_field":
        pkt[args[0]] = args[1]
    elif kind == "move":
        src, dst, n_bits = args[:3]
        if src in pkt:
            if n_bits == FIELD_BITS.get(src) == FIELD_BITS.get(dst):
                pkt[dst] = pkt[src]
            else:  # the low n_bits of src into the low n_bits of dst (NXM offsets 0)
                low = (1 << n_bits) - 1
                value = (_as_int(pkt.get(dst, 0)) & ~low) | (_as_int(pkt[src]) & low)
                pkt[dst] = _field_text(dst, value)
    elif kind == "push_vlan":
        pkt["vlan_vid"] = fl.OFPVID_PRESENT
    elif kind == "pop_vlan":
        pkt["vlan_vid"] = fl.OFPVID_NONE
    elif kind == "dec_ttl":
        pkt["ttl"] = pkt.get("ttl", 64) - 1
    else:
        raise AssertionError(f"not a header action: {action}")


class Fabric:
    """Bridges (`FlowTable`s) joined by the topology's fabric links."""

    def __init__(self, topo: Topology, *apps: Mapping[int, SwitchRules],
                 dead: Iterable[frozenset[str]] = (), tables: Mapping[int, FlowTable] | None = None) -> None:
        """The pipeline's miss flows and every app's rules on each bridge of `topo`; or, with
        `tables`, exactly what fake datapaths were sent (FakeDatapath.table)."""
        self.topo = topo
        if tables is not None:
            self.tables = dict(tables)
        else:
            self.tables = {topo.dpid(b): FlowTable(topo.dpid(b), pipeline_rules()) for b in topo.bridges}
        for rules in apps:
            for dpid, r in rules.items():
                self.tables[dpid].install(r)
        self.peer: dict[tuple[int, int], tuple[int, int]] = {}
        self.dead_ports: set[tuple[int, int]] = set()
        dead = set(dead)
        for ln in topo.fabric_links():
            a, b = (topo.dpid(ln.a), ln.port_a), (topo.dpid(ln.b), ln.port_b)
            self.peer[a], self.peer[b] = b, a
            if frozenset((ln.a, ln.b)) in dead:
                self.dead_ports |= {a, b}
        self.hits: list[tuple[int, Flow]] = []  # every flow a packet hit, in order
        self.packet_ins: list[tuple[int, int, int, dict[str, Any]]] = []  # (dpid, table, cookie, frame)

    def lookup(self, dpid: int, table: int, pkt: Mapping[str, Any]) -> Flow | None:
        return self.tables[dpid].lookup(table, {"vlan_vid": fl.OFPVID_NONE, **pkt})

    def send(self, dpid: int, in_port: int, pkt: Mapping[str, Any], table: int = pipeline.TABLE_CLASSIFY) -> list:
        """Every end of `pkt` entering bridge `dpid` at `in_port` (see the module docstring)."""
        frame = {"vlan_vid": fl.OFPVID_NONE, **pkt, "in_port": in_port}
        return self._run(dpid, in_port, frame, table, frozenset())

    def _run(self, dpid: int, in_port: int, pkt: dict[str, Any], table: int | None, seen: frozenset) -> list:
        if (dpid, in_port) in seen:
            return ["loop"]
        seen = seen | {(dpid, in_port)}
        pkt = dict(pkt, in_port=in_port)
        outs: list = []
        while table is not None:
            flow = self.lookup(dpid, table, pkt)
            if flow is None:
                return outs or ["drop"]
            self.hits.append((dpid, flow))
            if flow.meter is not None:
                assert flow.meter in self.tables[dpid].meters, f"meter {flow.meter} missing on {dpid:#x}"
                pkt["meter"] = flow.meter
            for action in flow.actions:
                if action.kind == "output":
                    outs += self._output(dpid, in_port, action.args[0], dict(pkt), seen, table, flow.cookie)
                elif action.kind == "group":
                    outs += self._group(dpid, in_port, action.args[0], dict(pkt), seen)
                else:
                    act(pkt, action)
            table = flow.goto
        return outs or ["drop"]

    def _group(self, dpid: int, in_port: int, group_id: int, pkt: dict[str, Any], seen: frozenset) -> list:
        grp = self.tables[dpid].groups[group_id]
        live = [b for b in grp.buckets if (dpid, b.watch_port) not in self.dead_ports]
        if not live:
            return ["drop"]
        chosen = live[:1] if grp.type == "ff" else sorted(set(live), key=lambda b: b.port)
        return [r for b in chosen for r in self._output(dpid, in_port, b.port, dict(pkt), seen, None, 0)]

    def _output(self, dpid: int, in_port: int, port: int | str, pkt: dict[str, Any], seen: frozenset,
                table: int | None, cookie: int) -> list:
        if port == "controller":
            self.packet_ins.append((dpid, table if table is not None else -1, cookie, pkt))
            return ["controller"]
        if port == "table":
            return self._run(dpid, in_port, pkt, pipeline.TABLE_CLASSIFY, seen - {(dpid, in_port)})
        if port == "in_port":
            port = in_port
        elif port == in_port:
            return ["drop"]  # OpenFlow never sends back out of the in_port unless told IN_PORT
        if (dpid, port) in self.dead_ports:
            return ["lost"]
        if (dpid, port) in self.peer:
            there, there_port = self.peer[(dpid, port)]
            return self._run(there, there_port, pkt, pipeline.TABLE_CLASSIFY, seen)
        return [Delivery(dpid, port, pkt)]


def pipeline_rules() -> SwitchRules:
    """The shared pipeline's table-miss flows, as `pipeline.install_messages` installs them."""
    rules = SwitchRules()
    for table in pipeline.TABLES:
        if table.miss == "next":
            flow = Flow(table.table_id, pipeline.PRIORITY_MISS, Match(), goto=pipeline.next_table(table.table_id))
        elif table.miss == "controller":
            flow = Flow(table.table_id, pipeline.PRIORITY_MISS, Match(), (fl.TO_CONTROLLER,))
        else:
            flow = Flow(table.table_id, pipeline.PRIORITY_MISS, Match())
        rules.add(Flow(flow.table, flow.priority, flow.match, flow.actions, flow.goto, None, pipeline.COOKIE_PIPELINE))
    return rules


# --- decoding what an app sent -------------------------------------------------------------------
_PORT_NAMES = {OFP.OFPP_IN_PORT: "in_port", OFP.OFPP_CONTROLLER: "controller", OFP.OFPP_TABLE: "table"}


def decode_action(action: Any) -> fl.Action:
    if isinstance(action, PARSER.OFPActionOutput):
        return fl.output(_PORT_NAMES.get(action.port, action.port))
    if isinstance(action, PARSER.OFPActionGroup):
        return fl.group(action.group_id)
    if isinstance(action, PARSER.OFPActionSetField):
        return fl.set_field(action.key, action.value)
    if isinstance(action, PARSER.NXActionRegMove):
        return fl.move(action.src_field, action.dst_field, action.n_bits)
    if isinstance(action, PARSER.OFPActionPushVlan):
        return fl.PUSH_VLAN
    if isinstance(action, PARSER.OFPActionPopVlan):
        return fl.POP_VLAN
    if isinstance(action, PARSER.OFPActionDecNwTtl):
        return fl.DEC_TTL
    raise AssertionError(f"the fake does not know {action!r}")


def decode_flow(msg: Any) -> Flow:
    """The `flows.Flow` an OFPFlowMod carries (apply-actions only: our apps write no others)."""
    actions: tuple[fl.Action, ...] = ()
    goto = meter = None
    for inst in msg.instructions:
        if isinstance(inst, PARSER.OFPInstructionActions):
            assert inst.type == OFP.OFPIT_APPLY_ACTIONS, "write-actions are not used by our apps"
            actions += tuple(decode_action(a) for a in inst.actions)
        elif isinstance(inst, PARSER.OFPInstructionGotoTable):
            goto = inst.table_id
        elif isinstance(inst, PARSER.OFPInstructionMeter):
            meter = inst.meter_id
        else:
            raise AssertionError(f"the fake does not know {inst!r}")
    return Flow(msg.table_id, msg.priority, Match(msg.match.items()), actions, goto, meter, msg.cookie)


def decode_group(msg: Any) -> Group:
    kind = "select" if msg.type == OFP.OFPGT_SELECT else "ff"
    return Group(msg.group_id, kind, tuple(fl.Bucket(b.actions[0].port) for b in msg.buckets))


class FakeDatapath:
    """A connected switch as an app sees it, keeping what it was sent in a `FlowTable`."""

    ofproto = OFP
    ofproto_parser = PARSER

    def __init__(self, dpid: int = 1, on_barrier: Callable[[Any], None] | None = None) -> None:
        self.id = dpid
        self.sent: list = []
        self.table = FlowTable(dpid)
        self.on_barrier = on_barrier
        self._xid = 0
        self.errors: list[str] = []  # what a real switch would have refused

    def set_xid(self, msg: Any) -> None:
        self._xid += 1
        msg.set_xid(self._xid)

    def send_msg(self, msg: Any) -> None:
        msg.datapath = self
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()  # every message must encode on the wire
        self.sent.append(msg)
        self._apply(msg)
        if isinstance(msg, PARSER.OFPBarrierRequest) and self.on_barrier is not None:
            self.on_barrier(msg)

    def take(self) -> list:
        sent, self.sent = self.sent, []
        return sent

    def flow_mods(self, command: int | None = None) -> list:
        return [m for m in self.sent if isinstance(m, PARSER.OFPFlowMod) and command in (None, m.command)]

    def _apply(self, msg: Any) -> None:
        t = self.table
        if isinstance(msg, PARSER.OFPFlowMod):
            self._flow_mod(msg)
        elif isinstance(msg, PARSER.OFPGroupMod):
            if msg.command == OFP.OFPGC_DELETE:
                t.groups.pop(msg.group_id, None)
            elif msg.command == OFP.OFPGC_ADD and msg.group_id in t.groups:
                self.errors.append(f"group {msg.group_id:#x} exists")
            elif msg.command == OFP.OFPGC_MODIFY and msg.group_id not in t.groups:
                self.errors.append(f"group {msg.group_id:#x} unknown")
            else:
                t.groups[msg.group_id] = decode_group(msg)
        elif isinstance(msg, PARSER.OFPMeterMod):
            if msg.command == OFP.OFPMC_DELETE:
                t.meters.pop(msg.meter_id, None)
            else:
                band = msg.bands[0]
                t.meters[msg.meter_id] = Meter(msg.meter_id, band.rate, band.burst_size)

    def _flow_mod(self, msg: Any) -> None:
        flows = self.table.flows
        if msg.command == OFP.OFPFC_ADD:
            flow = decode_flow(msg)
            flows[flow.key] = flow
            return
        key = (msg.table_id, msg.priority, Match(msg.match.items()))

        def cookie_ok(f: Flow) -> bool:
            return f.cookie & msg.cookie_mask == msg.cookie & msg.cookie_mask

        if msg.command == OFP.OFPFC_MODIFY_STRICT:
            new = decode_flow(msg)
            if key in flows and cookie_ok(flows[key]):
                old = flows[key]
                flows[key] = Flow(old.table, old.priority, old.match, new.actions, new.goto, new.meter, old.cookie)
        elif msg.command == OFP.OFPFC_DELETE_STRICT:
            if key in flows and cookie_ok(flows[key]):
                del flows[key]
        elif msg.command == OFP.OFPFC_DELETE:
            want = Match(msg.match.items())
            for k, f in list(flows.items()):
                if msg.table_id in (OFP.OFPTT_ALL, f.table) and cookie_ok(f) and set(want) <= set(f.match):
                    del flows[k]
        else:
            raise AssertionError(f"the fake does not know flow-mod command {msg.command}")
