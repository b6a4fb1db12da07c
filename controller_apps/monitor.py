"""Link utilisation from OpenFlow counters: poll port and flow statistics every second.

The algorithm: every POLL_INTERVAL seconds each connected switch is asked for all its port
counters (OFPPortStatsRequest) and flow counters (OFPFlowStatsRequest; less often on fabrics with
tens of thousands of flows, see FLOW_ENTRIES_PER_SECOND). A port's rate is the byte
counter difference between two replies divided by the time between them (the switch's own
duration fields would be more exact, but OVS reports them per port since creation, which is the
same thing at one-second resolution). A link's load is its busier direction: direction a->b is
what a's port transmitted, or, when a is not a switch we poll (a container), what b's port
received. Utilisation is that load over the link's capacity: the topology's `bw` (Mbit/s) when
given, else DEFAULT_CAPACITY_BPS (1 Gbit/s, what a Raspberry Pi 4's port and a typical top-of-rack
port offer; veths and OVS's userspace ports report no meaningful speed). Results go to
`STATE.set_link_util`; port status changes become state events (unless discovery runs and
reports them itself).

Flow counters are kept per switch with their byte rates and served at `/monitor/flows` (matches
in ofctl_rest's notation; port rates at `/monitor/ports`) for the web UI and scripts.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub, ofctl_v1_3
from os_ken.ofproto import ofproto_v1_3

from controller_apps import api
from controller_apps.state import STATE, ControllerState
from topology.model import Topology
from topology.stalls import OVS_STALL_S

POLL_INTERVAL = 1.0
DEFAULT_CAPACITY_BPS = 1e9
# os-ken parses a flow-stats entry in about 40 us; fattree:8 under routing holds about 45,000
# entries, which polled every second would take the controller's whole CPU. Flow counters are
# polled so that at most this many entries are parsed per second (port counters, which give the
# link utilisation, stay at one second).
FLOW_ENTRIES_PER_SECOND = 5000
# One flow-stats request per switch at a time, presumed lost after the longest OVS stall. Without
# it, a 1,000-container fabric being routed was asked every second (the interval above sizes
# itself from replies that had not yet arrived) for replies growing to 2,000 entries per bridge:
# parsing them held each switch's receive thread, and the packet-ins queued behind them, LLDP
# probes included, were read up to 33 s late, so links were discovered late, routing recomputed
# for each, and bring-up took 23-49 s instead of 10.
FLOW_REPLY_TIMEOUT = OVS_STALL_S


def may_ask_flows(asked_at: float | None, now: float, timeout: float = FLOW_REPLY_TIMEOUT) -> bool:
    """Whether to ask a switch for its flow counters now: not while its last request (asked at
    `asked_at`) is unanswered, unless that is older than `timeout`."""
    return asked_at is None or now - asked_at >= timeout


def flow_poll_interval(flow_entries: int) -> float:
    """Seconds between flow-stats polls: POLL_INTERVAL until the fabric holds more flow entries
    than FLOW_ENTRIES_PER_SECOND, then proportionally longer."""
    return max(POLL_INTERVAL, flow_entries / FLOW_ENTRIES_PER_SECOND)


@dataclass(frozen=True)
class PortSample:
    """One reading of a port's byte counters, at controller time `t` (seconds)."""

    t: float
    tx_bytes: int
    rx_bytes: int


def port_rates(prev: PortSample, cur: PortSample) -> tuple[float, float]:
    """(tx bit/s, rx bit/s) between two samples; 0 after a counter reset or with no time between."""
    dt = cur.t - prev.t
    if dt <= 0:
        return 0.0, 0.0
    tx = max(0, cur.tx_bytes - prev.tx_bytes) * 8 / dt
    rx = max(0, cur.rx_bytes - prev.rx_bytes) * 8 / dt
    return tx, rx


def link_load(rates: dict[tuple[str, int], tuple[float, float]], a: tuple[str, int],
              b: tuple[str, int]) -> float | None:
    """The busier direction's bit/s for link a-b from per-port (tx, rx) rates keyed by
    (node, port); None when neither end has been measured yet."""
    ra, rb = rates.get(a), rates.get(b)
    if ra is None:  # one measured end gives both directions: its tx and its rx
        return None if rb is None else max(rb)
    if rb is None:
        return max(ra)
    return max(ra[0], rb[0])  # each end's tx


def link_capacity(topo: Topology | None, a: str, b: str) -> float:
    """Capacity in bit/s: the topology's bw for this link, else DEFAULT_CAPACITY_BPS."""
    if topo is not None and a in topo and b in topo and topo.graph.has_edge(a, b):
        bw = topo.link(a, b).bw
        if bw:
            return bw * 1e6
    return DEFAULT_CAPACITY_BPS


def measured_links(state: ControllerState) -> list[tuple[str, int, str, int]]:
    """Every link worth measuring: discovered fabric links plus the intended topology's links
    (container links included; LLDP never sees those)."""
    def key(a: tuple[str, int], b: tuple[str, int]) -> tuple[tuple[str, int], tuple[str, int]]:
        return (a, b) if a <= b else (b, a)

    seen: dict[tuple[tuple[str, int], tuple[str, int]], None] = {}
    for ln in state.links():
        seen[key((ln["a"], ln["a_port"]), (ln["b"], ln["b_port"]))] = None
    topo = state.intended
    if topo is not None:
        for link in topo.links:
            seen[key((link.a, link.port_a), (link.b, link.port_b))] = None
    return [(a[0], a[1], b[0], b[1]) for a, b in seen]


class Monitor(app_manager.OSKenApp):
    """Polls counters; writes link utilisation and port events to STATE."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: ControllerState = STATE
        self.datapaths: dict[int, Any] = {}
        self.samples: dict[tuple[str, int], PortSample] = {}
        self.rates: dict[tuple[str, int], tuple[float, float]] = {}
        self.flows: dict[str, list[dict[str, Any]]] = {}  # switch name -> flows with rates
        self._flow_parts: dict[tuple[int, int], list[Any]] = {}  # (dpid, xid) -> bodies so far
        # switch name -> (table, priority, match) -> (time, byte count) of the last reply
        self._flow_bytes: dict[str, dict[tuple[int, int, str], tuple[float, int]]] = {}
        self._flows_asked: dict[int, float] = {}  # dpid -> when its unanswered flow-stats request went out
        self._lock = threading.Lock()
        self._stop = threading.Event()
        api.register_blueprint(self._blueprint())

    def start(self) -> None:
        super().start()
        self.threads.append(hub.spawn(self._poll_loop))

    def stop(self) -> None:
        self._stop.set()
        super().stop()

    def close(self) -> None:
        self._stop.set()

    # --- polling --------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        next_flows = 0.0
        while not self._stop.wait(POLL_INTERVAL):
            now = time.monotonic()
            with_flows = now >= next_flows
            if with_flows:
                next_flows = now + flow_poll_interval(sum(len(rows) for rows in self.flows.values()))
            for dp in list(self.datapaths.values()):
                self.request_stats(dp, flows=with_flows, now=now)

    def request_stats(self, dp: Any, flows: bool = True, now: float | None = None) -> None:
        """Port counters, and flow counters when `flows` and the switch has answered the last
        flow-stats request (may_ask_flows)."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY))
        if not flows:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if not may_ask_flows(self._flows_asked.get(dp.id), now):
                return
            self._flows_asked[dp.id] = now
        dp.send_msg(parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change_handler(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id  # dpid by name: mypy narrows dp in `get(dpid) is dp`
        if dpid is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self.datapaths[dpid] = dp
        elif self.datapaths.get(dpid) is dp:
            del self.datapaths[dpid]
            name = self.state.name_of(dpid)
            with self._lock:
                for key in [k for k in self.samples if k[0] == name]:
                    self.samples.pop(key, None)
                    self.rates.pop(key, None)
                self.flows.pop(name, None)
                self._flow_bytes.pop(name, None)
                self._flows_asked.pop(dpid, None)  # a reconnected switch is asked afresh

    # --- replies --------------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def port_stats_handler(self, ev: Any) -> None:
        msg = ev.msg
        now = time.monotonic()
        name = self.state.name_of(msg.datapath.id)
        max_port = msg.datapath.ofproto.OFPP_MAX
        touched = set()
        with self._lock:
            for stat in msg.body:
                if stat.port_no > max_port:
                    continue  # OFPP_LOCAL: the bridge's own interface, not a link
                key = (name, stat.port_no)
                sample = PortSample(now, stat.tx_bytes, stat.rx_bytes)
                prev = self.samples.get(key)
                self.samples[key] = sample
                if prev is not None:
                    self.rates[key] = port_rates(prev, sample)
                    touched.add(key)
            rates = dict(self.rates)
        if touched:
            self.update_links(rates, touched)

    def update_links(self, rates: dict[tuple[str, int], tuple[float, float]],
                     touched: set[tuple[str, int]]) -> None:
        """Recompute the links with an end among the ports just measured."""
        topo = self.state.intended
        for a, a_port, b, b_port in measured_links(self.state):
            if (a, a_port) not in touched and (b, b_port) not in touched:
                continue
            load = link_load(rates, (a, a_port), (b, b_port))
            if load is not None:
                self.state.set_link_util(a, a_port, b, b_port, load, link_capacity(topo, a, b))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats_handler(self, ev: Any) -> None:
        if not self.is_active:  # shutting down: the replies still queued (109,000 flows of a
            return  # 1,000-container run) took the event loop seconds to convert, and shutdown joins it
        msg = ev.msg
        dp = msg.datapath
        key = (dp.id, msg.xid)
        parts = self._flow_parts.setdefault(key, [])
        parts.extend(msg.body)
        if msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            return
        del self._flow_parts[key]
        with self._lock:
            self._flows_asked.pop(dp.id, None)
        now = time.monotonic()
        name = self.state.name_of(dp.id)
        flows = []
        current: dict[tuple[int, int, str], tuple[float, int]] = {}
        with self._lock:
            previous = self._flow_bytes.get(name, {})
            for stat in parts:
                match = ofctl_v1_3.match_to_str(stat.match)
                ident = (stat.table_id, stat.priority, json.dumps(match, sort_keys=True))
                prev = previous.get(ident)
                bps = (stat.byte_count - prev[1]) * 8 / (now - prev[0]) if prev and now > prev[0] else 0.0
                current[ident] = (now, stat.byte_count)
                flows.append({"table_id": stat.table_id, "priority": stat.priority, "cookie": stat.cookie,
                              "match": match, "packet_count": stat.packet_count,
                              "byte_count": stat.byte_count, "bps": max(0.0, bps)})
            self.flows[name] = flows
            self._flow_bytes[name] = current  # replaced whole: removed flows do not pile up

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status_handler(self, ev: Any) -> None:
        """A port changed: its counters may restart, so forget its last sample; and, unless the
        discovery app runs (it reports port changes itself), record the change as an event."""
        msg = ev.msg
        ofp = msg.datapath.ofproto
        desc = msg.desc
        key = (self.state.name_of(msg.datapath.id), desc.port_no)
        with self._lock:
            self.samples.pop(key, None)
            self.rates.pop(key, None)
        if app_manager.lookup_service_brick("Discovery") is not None:
            return
        reason = {ofp.OFPPR_ADD: "added", ofp.OFPPR_DELETE: "deleted", ofp.OFPPR_MODIFY: "modified"}.get(
            msg.reason, f"reason {msg.reason}")
        down = desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN
        port_name = desc.name.decode(errors="replace") if isinstance(desc.name, bytes) else desc.name
        self.state.event("port", f"port {self.state.name_of(msg.datapath.id)}:{desc.port_no} ({port_name}) "
                                 f"{reason}, {'down' if down else 'up'}")

    # --- API ------------------------------------------------------------------------------------
    def _blueprint(self) -> Blueprint:
        bp = Blueprint("monitor", __name__)

        @bp.get("/monitor/ports")
        def ports() -> Any:
            with self._lock:
                rows = [{"switch": k[0], "port": k[1], "tx_bps": v[0], "rx_bps": v[1]}
                        for k, v in sorted(self.rates.items())]
            return jsonify(rows)

        @bp.get("/monitor/flows")
        def flows() -> Any:
            with self._lock:
                return jsonify({name: list(rows) for name, rows in sorted(self.flows.items())})

        return bp
