"""Routing: proactive shortest-path forwarding with ECMP and fast failover on any looped fabric.

The algorithm lives in `routing_rules` (pure); this app only keeps it fed and sends its output:
1. A bridge connects: install the shared pipeline, forget what it held (routing's old flows and
   groups go) and mark it for a full install.
2. Anything that changes the fabric (a bridge, a link: STATE calls us back; discovery writes
   links there) wakes a worker thread, which recomputes the whole desired state and sends each
   bridge only the difference from what it was last sent (`routing_rules.diff`). Bursts
   coalesce: events arriving during a computation cause one more computation, not one each.
3. A host change (discovery learns hosts, tenancy writes its members) wakes the same worker, which
   reads only the hosts that changed since its last pass (`STATE.host_changes`) and sends only
   the rules they change (`routing_rules.host_changes`: their Pi's address blocks, their own
   rules, the ARP answers around their IPs): a new container on a Pi that already has one costs
   a few flows per bridge, instead of a recomputation over all hosts (that made a learned host
   wait behind work growing with the host count). A change the incremental path cannot express
   exactly (a Pi's first or last host: groups change) falls back to the full computation.
4. ARP from senders the bridge does not know comes to us as a copy (discovery learns the sender
   from it); if the bridge has no answer yet (a host learned a moment ago), we answer from the host
   table. A packet that missed the pipeline (its destination's rule was not there yet) comes back
   to the bridge through the pipeline (a packet-out to OFPP_TABLE) once the bridge has been sent a
   rule for its destination, instead of being lost; otherwise it is dropped (a switch buffering it
   is told to free the buffer). Nothing is ever flooded.

Because every known container's paths are installed as soon as the fabric is discovered, the
first packet between two containers already finds its flow: no reactive set-up delay.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from controller_apps import fastpath, pipeline
from controller_apps import flows as fl
from controller_apps import routing_rules as rr
from controller_apps.state import STATE, ControllerState

LOG = logging.getLogger(__name__)
# At start-up, the first full computation waits (at most this long) for discovery to find the
# intended fabric; see Routing._holding.
STARTUP_HOLD_S = 3.0
HOLD_STEP_S = 0.05


def node_dpid(state: ControllerState, end: str | int) -> int | None:
    """A STATE link end (node name, or 16-hex DPID when the topology does not know it) as a DPID."""
    if isinstance(end, int):
        return end
    value = state.dpid_of(end)
    if value is not None:
        return value
    try:
        return int(end, 16)
    except ValueError:
        return None


def inputs_from_state(state: ControllerState, connected: list[int]) -> tuple[Any, list[rr.Host]]:
    """routing_rules' inputs from STATE: the graph of `connected` bridges and the known hosts."""
    links = []
    for link in state.links():
        a, b = node_dpid(state, link["a"]), node_dpid(state, link["b"])
        if a is not None and b is not None:
            links.append((a, link["a_port"], b, link["b_port"], link.get("up", True)))
    graph = rr.fabric_graph(connected, links)
    return graph, [host_from_record(h) for h in state.hosts()]


def host_from_record(record: dict[str, Any]) -> rr.Host:
    return rr.Host(record["mac"], record["ip"], record["dpid"], record["port"], record.get("tenant"),
                   record.get("tag", 0))


def arp_reply(request: bytes, hosts: list[dict[str, Any]]) -> tuple[bytes, str, str] | None:
    """The reply to an ARP request without an 802.1Q tag for a known default-network host, the
    host's name or MAC (for the log) and the IP asked for, or None when the frame is not such a
    request. Reads the header bytes (`fastpath.parse_frame`/`parse_arp`) as os-ken's parser read
    them (tests/unit/test_controller_fastpath.py holds the old full parse as the oracle)."""
    frame = fastpath.parse_frame(request)
    req = fastpath.parse_arp(request, frame) if frame is not None and frame.vid is None else None
    if frame is None or req is None or req.opcode != fastpath.ARP_REQUEST:
        return None
    target = socket.inet_ntoa(req.tpa)
    host = next((h for h in hosts if h["ip"] == target and not h.get("tag")), None)
    if host is None:
        return None
    mac = fastpath.mac_bytes(host["mac"])
    reply = fastpath.arp_reply_frame(frame.src, mac, mac, socket.inet_aton(host["ip"]), req.sha, req.spa)
    return reply, host.get("name") or host["mac"], host["ip"]


class Routing(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: ControllerState = kwargs.get("state", STATE)
        self.lock = threading.Lock()  # one computation at a time; guards datapaths and installed
        self.datapaths: dict[int, Any] = {}
        self.installed: dict[int, fl.SwitchRules | None] = {}  # None: unknown, install everything
        self.graph: Any = None  # the fabric graph of the last full computation (None: none yet)
        self.routed = rr.Routed()  # the hosts as installed, and the rule keys serving each of them
        self.host_cursor = 0  # STATE's host change number that `routed` reflects
        self.full_needed = True  # the fabric changed: the next pass recomputes everything
        self.wake = threading.Event()
        self.running = False
        self.stopping = False  # set by stop(): a full computation in progress gives up between bridges
        self.last_compute_s = 0.0
        self.generation = 0  # full computations so far (/state "ready"["routing"])
        self.matched_once = False  # discovery has matched the intended fabric: no start-up hold
        self.hold_started: float | None = None  # when the start-up hold began
        self.state.subscribe(self._state_changed)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Any:
        thread = super().start()
        self.running = True
        self.state.follow_hosts("routing")  # tenancy's reload waits for the worker's host paths
        self.threads.append(hub.spawn(self._worker))
        return thread

    def stop(self) -> None:
        self.running = False
        self.stopping = True
        self.state.unfollow_hosts("routing")
        self.wake.set()
        super().stop()

    def _worker(self) -> None:
        while self.running:
            self.wake.wait()
            self.wake.clear()
            while self.running and self.full_needed and self._holding():
                time.sleep(HOLD_STEP_S)
            if self.running:
                try:
                    if self.full_needed:
                        self.recompute()
                    else:
                        self.sync_hosts()
                except Exception:  # our bug: log it and keep routing on the next change
                    LOG.exception("routing: recomputation failed")

    def _holding(self) -> bool:
        """Whether a full computation should wait: only at start-up, only while discovery has never
        matched the intended fabric, and for at most STARTUP_HOLD_S from the first wait. Why: a
        pass over a partly discovered fabric sends nearly every flow at once (23,000 messages for
        1,000 containers), and the LLDP probes that discovery still needs queue behind them on the
        same connections and in ovs-vswitchd's one thread. Measured on picloud:5,10 x 20: the last
        link was found 6 s after the bridges connected, with a routing pass for each new link;
        with the hold, discovery matched 0.4-0.7 s after the fabric was built, one pass followed,
        and `up` fell from 12.1-16.6 s (10 runs) to 10.7-12.8 s (7 runs on a warm daemon). After
        the first match (or the bound) routing reacts at once, as failover needs; a fabric that
        never matches its intended topology (a cabling mistake) costs the bound once."""
        if self.matched_once or self.state.intended is None:
            return False
        if self.state.discovery_matched():
            self.matched_once = True
            return False
        if self.hold_started is None:
            self.hold_started = time.monotonic()
        return time.monotonic() - self.hold_started < STARTUP_HOLD_S

    def _state_changed(self, kind: str) -> None:
        if kind in ("intended", "switch", "links"):
            self.full_needed = True
            self.wake.set()
        elif kind == "host":
            self.wake.set()

    # --- OpenFlow handlers ------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev: Any) -> None:
        dp, dpid = ev.msg.datapath, ev.msg.datapath_id
        # dp.id is set by os-ken's own features handler, which may run after this one (apps run on
        # their own threads): take the id from the message, or a None key breaks every recompute.
        pipeline.ensure_installed(dp)
        with self.lock:
            self.datapaths[dpid] = dp
            self.installed[dpid] = None
        self.full_needed = True
        self.wake.set()

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id  # dpid by name: mypy narrows dp in `get(dpid) is dp`
        if ev.state != DEAD_DISPATCHER or dpid is None:
            return
        with self.lock:
            if self.datapaths.get(dpid) is dp:
                del self.datapaths[dpid]
                self.installed.pop(dpid, None)
        self.full_needed = True
        self.wake.set()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        answer = self.answer(dp.id, msg.table_id, msg.reason, msg.buffer_id, msg.data)
        if answer is None:
            return
        in_port, ports, data = answer
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id if data is None else ofp.OFP_NO_BUFFER,
                                        in_port=msg.match["in_port"] if in_port is None else in_port,
                                        actions=[parser.OFPActionOutput(msg.match["in_port"] if p is None else p)
                                                 for p in ports],
                                        data=data))

    def fast_packet_in(self, dp: Any, pin: fastpath.PacketIn, out: list[bytes]) -> None:
        """The fast path's packet_in (controller_apps.fastpath): the same answer, as wire bytes."""
        if pin.in_port is None:
            return
        answer = self.answer(dp.id, pin.table_id, pin.reason, pin.buffer_id, pin.data)
        if answer is None:
            return
        in_port, ports, data = answer
        out.append(fastpath.packet_out(
            fastpath.next_xid(dp), pin.buffer_id if data is None else fastpath.OFP_NO_BUFFER,
            pin.in_port if in_port is None else in_port,
            [(pin.in_port if p is None else p, fastpath.OFPCML_MAX) for p in ports], data))

    def answer(self, dpid: int, table_id: int, reason: int, buffer_id: int,
               data: bytes) -> tuple[int | None, list[int | None], bytes | None] | None:
        """What to send for a packet-in, as (packet-out in_port, output ports, data), None standing
        for the packet-in's own in_port; None to send nothing. ARP copies from table `arp` are
        answered from the host table unless the bridge answers them itself (a copy for discovery
        to learn the sender from); misses before and in `forward` are resubmitted (`_resubmit`);
        nothing is flooded."""
        if table_id != pipeline.TABLE_ARP:
            if table_id <= pipeline.TABLE_FORWARD and reason == fastpath.OFPR_NO_MATCH:
                return self._resubmit(dpid, buffer_id, data)
            return None  # discovery learns the sender; we never flood
        reply = arp_reply(data, self.state.hosts())
        if reply is None or self._answered_in_data_plane(dpid, reply[2]):
            return None
        return fastpath.OFPP_CONTROLLER, [None], reply[0]

    def _resubmit(self, dpid: int, buffer_id: int, data: bytes) -> tuple[None, list[int | None], bytes | None] | None:
        """Send a packet that missed the pipeline back through it (OFPP_TABLE, from its own in_port)
        when this bridge has been sent a rule for its untagged unicast destination: the rule went
        out on the same connection before this packet-out, so the packet finds it rather than
        being lost while its route was being installed. Only table misses before `forward` and in
        it come here, and only known destinations are resubmitted, so nothing loops or floods. A
        buffered packet (OVS never buffers; other switches may) that is not resubmitted is
        released with an empty packet-out, since a dropped buffer would otherwise stay held.
        Reads `installed` without the lock (a dict lookup under the GIL) so that a packet never
        waits for a full recomputation."""
        if len(data) < 14 or data[0] & 1 or data[12:14] in (b"\x81\x00", b"\x88\xa8", b"\x88\xcc"):
            return None  # runt, multicast or broadcast, tagged (tenancy's), LLDP (discovery's)
        buffered = buffer_id != fastpath.OFP_NO_BUFFER
        rules = self.installed.get(dpid)
        key = self.routed.forward_key.get((0, data[:6].hex(":")))
        if rules is not None and key is not None and key in rules.flows:
            return None, [fastpath.OFPP_TABLE], None if buffered else data
        if buffered:
            return None, [], None  # dropped: a switch that buffers the packet is told to free the buffer
        return None

    def _answered_in_data_plane(self, dpid: int, ip: str) -> bool:
        """Reads `installed` without the lock, as `_resubmit` does: a packet-in never waits for a
        full recomputation (the fast path runs one switch's packet-ins at a time, so waiting here
        would hold up every switch's)."""
        rules = self.installed.get(dpid)
        key = self.routed.arp_key.get(ip)
        return rules is not None and key is not None and key in rules.flows

    # --- the computation --------------------------------------------------------------------------
    def recompute(self) -> int:
        """Bring every connected bridge to the desired state; returns the number of messages sent."""
        with self.lock:
            started = time.perf_counter()
            self.full_needed = False  # set before reading STATE: a change from now on is seen next pass
            version = self.state.host_version
            graph, hosts = inputs_from_state(self.state, sorted(self.datapaths))
            desired = rr.desired_state(graph, hosts)
            sent = 0
            for dpid, dp in sorted(self.datapaths.items()):
                if self.stopping:  # a full pass over 1,000 hosts takes seconds; shutdown joins this thread
                    LOG.info("routing: stopping, %d message(s) sent of a full computation", sent)
                    return sent
                rules = desired.get(dpid, fl.SwitchRules())
                old = self.installed.get(dpid)
                sent += fl.send_change(dp, fl.resync(rules) if old is None else fl.diff(old, rules))
                self.installed[dpid] = rules
            self.graph, self.host_cursor = graph, version
            self.routed = rr.Routed(rr.usable_hosts(graph, hosts))
            self.last_compute_s = time.perf_counter() - started
            self.generation += 1
            self.state.set_ready("routing", generation=self.generation, hosts=len(self.routed),
                                 bridges=len(desired), at=time.time())
            self.state.hosts_sent("routing", version)
        if sent:
            served = len(rr.usable_hosts(graph, hosts))
            self.state.event("routing", f"paths for {served} hosts on {len(desired)} "
                                        f"bridges: {sent} messages ({self.last_compute_s * 1e3:.0f} ms)")
        return sent

    def sync_hosts(self) -> int:
        """Send the flows of the hosts that changed since the last pass; the full computation when
        that cannot be done exactly. Returns the number of messages sent."""
        with self.lock:
            sent = self._sync_hosts_locked()
        return self.recompute() if sent is None else sent

    def _sync_hosts_locked(self) -> int | None:
        if self.graph is None or any(rules is None for rules in self.installed.values()):
            return None
        version, keys = self.state.host_changes(self.host_cursor)
        if keys is None:
            return None
        updates: dict[rr.HostKey, rr.Host | None] = {}
        for tag, mac in set(keys):
            record = self.state.host(mac, tag)
            updates[(tag, mac)] = None if record is None else host_from_record(record)
        try:
            result = rr.host_changes(self.graph, self.routed, updates)
        except Exception:
            self.full_needed = True  # `routed` may be half updated: the next pass starts afresh
            raise
        if result is None:
            return None
        changes, self.routed = result
        self.host_cursor = version
        sent = 0
        for dpid, change in changes.items():
            dp, rules = self.datapaths.get(dpid), self.installed.get(dpid)
            if dp is None or rules is None:
                continue  # gone since the last full computation, which is already due
            sent += fl.send_change(dp, change)
            fl.apply_change(rules, change)
        self.state.hosts_sent("routing", version)
        LOG.debug("routing: %d host change(s), %d messages", len(updates), sent)
        return sent
