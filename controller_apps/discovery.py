"""Topology discovery: LLDP links, port status and host learning, written into STATE.

The algorithm:
1. On connect, every bridge gets a rule in table 0 that traps LLDP to the controller (above any
   classification rule, so tenancy's anti-spoofing cannot eat it).
2. Once a bridge's ports are known, the controller sends an LLDP frame out of every live port
   (a packet-out), naming the sending bridge (chassis id `dpid:<16 hex>`) and port (port id, 4
   bytes). A frame arriving at another bridge comes back as a packet-in: sender (dpid, port) to
   receiver (dpid, in_port) is one end-to-end observation of a link. Each new bridge also
   triggers a re-probe of all bridges, since frames sent before the newcomer's trap rule existed
   were lost; so a fat-tree is known within a few round trips of its last bridge connecting.
3. Probes repeat every LLDP_INTERVAL seconds; a link not confirmed for LINK_TIMEOUT seconds, and
   missing from the replies to the last MISSED_ROUNDS probe rounds, is gone (a silent failure).
   Counting rounds, not only seconds, is what keeps a stalled controller (a loaded host starves
   its threads for seconds, then the prober wakes before the queued probes are read) from
   declaring every link of the fabric dead at once. A port going down removes its links at once (the port-status
   message), which is what routing's fast recomputation hangs on; a port coming up is probed at
   once.
4. Hosts: the intended topology's containers are declared up front (MAC, IP, Pi port), so routing
   can install paths before any traffic; others are learned from untagged packet-ins that arrive
   on non-fabric ports (tagged ones are tenancy's).

The result goes into STATE: `set_links` (its events say "link ... up/down"), `add_host`, and an
event when the discovered fabric first matches the intended one. STATE computes the intended
versus discovered difference for the API. `LinkTable` and the LLDP codec are pure and unit tested.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.lib.packet import ether_types, ethernet, lldp, packet
from os_ken.ofproto import ofproto_v1_3

from controller_apps import fastpath, pipeline
from controller_apps.fastpath import ETH_TYPE_LLDP
from controller_apps.state import STATE, ControllerState

LOG = logging.getLogger(__name__)

LLDP_INTERVAL = 1.0  # seconds between probe rounds
LINK_TIMEOUT = 3.5  # a link unconfirmed this long is gone (three lost probes and a margin)...
MISSED_ROUNDS = 3  # ...if it also missed the replies to this many consecutive probe rounds
STALE_DOWN = 1.0  # a probe through a port marked down this long ago proves the mark stale
LLDP_TTL = 5  # seconds, the TTL TLV (informative: we expire links ourselves)
SYSTEM_NAME = b"picloud"  # marks our probes, so frames from other LLDP speakers are ignored
PRIORITY_LLDP = pipeline.PRIORITY_SECURITY + 100
CHASSIS_PREFIX = b"dpid:"

Endpoint = tuple[int, int]  # (dpid, port)


# --- LLDP codec (pure) ----------------------------------------------------------------------------
def lldp_frame(dpid: int, port: int, hw_addr: str, sent: float | None = None) -> bytes:
    """The probe sent out of (dpid, port): destination 01:80:c2:00:00:0e, which bridges never
    forward, so a frame can only ever reach the directly attached neighbour. `sent` (the controller's
    monotonic clock) rides in the system description, so a reply read late is known to be old."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=hw_addr,
                                       ethertype=ether_types.ETH_TYPE_LLDP))
    tlvs = (
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                       chassis_id=CHASSIS_PREFIX + b"%016x" % dpid),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=struct.pack("!I", port)),
        lldp.TTL(ttl=LLDP_TTL),
        lldp.SystemName(system_name=SYSTEM_NAME),
        *([lldp.SystemDescription(system_description=b"sent=%.6f" % sent)] if sent is not None else []),
        lldp.End(),
    )
    pkt.add_protocol(lldp.lldp(tlvs))
    pkt.serialize()
    return bytes(pkt.data)


def parse_lldp(data: bytes) -> Endpoint | None:
    """(dpid, port) of the sender if `data` is one of our probes, else None."""
    try:
        pkt = packet.Packet(data)
    except Exception:  # a truncated or odd frame is simply not ours
        return None
    frame = pkt.get_protocol(lldp.lldp)
    if frame is None:
        return None
    tlvs = frame.tlvs
    chassis = next((t for t in tlvs if isinstance(t, lldp.ChassisID)), None)
    port = next((t for t in tlvs if isinstance(t, lldp.PortID)), None)
    name = next((t for t in tlvs if isinstance(t, lldp.SystemName)), None)
    if chassis is None or port is None or name is None or name.system_name != SYSTEM_NAME:
        return None
    cid = chassis.chassis_id
    if chassis.subtype != lldp.ChassisID.SUB_LOCALLY_ASSIGNED or not cid.startswith(CHASSIS_PREFIX):
        return None
    if port.subtype != lldp.PortID.SUB_PORT_COMPONENT or len(port.port_id) != 4:
        return None
    try:
        dpid = int(cid[len(CHASSIS_PREFIX):], 16)
    except ValueError:
        return None
    return dpid, struct.unpack("!I", port.port_id)[0]


def probe_sent_at(data: bytes) -> float | None:
    """When our probe in `data` was sent (see `lldp_frame`), or None if it carries no time."""
    try:
        frame = packet.Packet(data).get_protocol(lldp.lldp)
    except Exception:
        return None
    desc = next((t for t in frame.tlvs if isinstance(t, lldp.SystemDescription)), None) if frame else None
    if desc is None or not desc.system_description.startswith(b"sent="):
        return None
    try:
        return float(desc.system_description[5:])
    except ValueError:
        return None


# --- the link table (pure) ------------------------------------------------------------------------
class LinkTable:
    """Directed LLDP observations (sender end -> receiver end) with the time last seen, folded into
    undirected links. Either direction is enough to believe a link; a down port removes its links
    at once and keeps probes that were in flight from resurrecting them. A probe arriving through a
    port marked down more than STALE_DOWN ago is no longer in flight: it proves the port works (a
    port-status "up" can be lost between connection and the port-description reply), so it counts."""

    def __init__(self) -> None:
        self.seen: dict[tuple[Endpoint, Endpoint], float] = {}
        self._ports: frozenset[Endpoint] | None = None  # fabric_ports, until `seen` gains or loses a key
        self.down: dict[Endpoint, float] = {}  # end -> when it was marked down
        self.rounds: collections.deque[float] = collections.deque(maxlen=MISSED_ROUNDS)  # last rounds sent
        self.sent: dict[tuple[Endpoint, Endpoint], float] = {}  # when the newest reply read was sent
        self.answered = float("-inf")  # the newest send time of any reply read: how current we are

    def observe(self, sender: Endpoint, receiver: Endpoint, now: float, sent: float | None = None) -> bool:
        """Record one probe read at `now` that was sent at `sent` (default: now); True when the
        set of links changed."""
        sent = now if sent is None else sent
        self.answered = max(self.answered, sent)
        if sender[0] == receiver[0]:
            return False
        for end in (sender, receiver):
            if end in self.down:
                if now - self.down[end] < STALE_DOWN:
                    return False
                del self.down[end]
        before = self.links()
        # a port has one neighbour: an observation contradicting an older one replaces it
        for key in [k for k in self.seen if (sender in k or receiver in k) and k != (sender, receiver)
                    and k != (receiver, sender)]:
            del self.seen[key]
            self._ports = None
        if (sender, receiver) not in self.seen:
            self._ports = None
        self.seen[(sender, receiver)] = now
        self.sent[(sender, receiver)] = max(sent, self.sent.get((sender, receiver), sent))
        return self.links() != before

    def port_down(self, end: Endpoint, now: float) -> bool:
        self.down[end] = now
        return self._drop(lambda k: end in k)

    def port_up(self, end: Endpoint) -> None:
        self.down.pop(end, None)

    def switch_gone(self, dpid: int) -> bool:
        self.down = {e: t for e, t in self.down.items() if e[0] != dpid}
        return self._drop(lambda k: dpid in (k[0][0], k[1][0]))

    def probed(self, now: float) -> None:
        """A probe round went out of every live port at `now`."""
        self.rounds.append(now)

    def expire(self, now: float, timeout: float = LINK_TIMEOUT) -> bool:
        """Drop links unconfirmed for `timeout` that also missed the last MISSED_ROUNDS rounds
        (no reply sent since the oldest of them has been read). Call before sending the next round.

        Only once a reply to the newest of those rounds has been read (from any link): until then
        the controller is behind its own probes (a 1,000-container fabric's routing held it for
        seconds on a loaded host, the replies queued, and links expired that were fine; their
        "down" made routing recompute again, and the fabric never settled), and a missing reply
        proves nothing."""
        if len(self.rounds) < MISSED_ROUNDS or self.answered < self.rounds[-1]:
            return False
        oldest = self.rounds[0]
        return self._drop(lambda k: now - self.seen[k] > timeout and self.sent.get(k, self.seen[k]) < oldest)

    def _drop(self, doomed: Any) -> bool:
        before = self.links()
        for key in [k for k in self.seen if doomed(k)]:
            del self.seen[key]
            self._ports = None
            self.sent.pop(key, None)
        return self.links() != before

    def links(self) -> list[tuple[Endpoint, Endpoint]]:
        """Undirected links, each as (lower end, higher end), sorted."""
        return sorted({(min(s, r), max(s, r)) for s, r in self.seen})

    def fabric_ports(self) -> frozenset[Endpoint]:
        """Both ends of every link seen (kept between changes: host learning asks on every packet-in)."""
        if self._ports is None:
            self._ports = frozenset(end for key in self.seen for end in key)
        return self._ports


# --- host learning (pure) -------------------------------------------------------------------------
def host_from_packet(data: bytes) -> tuple[str, str | None] | None:
    """(mac, ip) of an untagged unicast sender worth learning, or None (LLDP, tagged, multicast
    source, or not an Ethernet frame). The IP comes from ARP or IPv4 when present. Reads the few
    header fields directly: this runs on every packet-in, and a full os-ken parse of the frame was
    a tenth of the controller's time under cbench load."""
    if len(data) < 14:
        return None
    src, ethertype = data[6:12], int.from_bytes(data[12:14], "big")
    if ethertype in (ether_types.ETH_TYPE_LLDP, ether_types.ETH_TYPE_8021Q) or src[0] & 1 or not any(src):
        return None
    raw = None
    if ethertype == ether_types.ETH_TYPE_ARP and len(data) >= 42:
        raw = data[28:32]
    elif ethertype == ether_types.ETH_TYPE_IP and len(data) >= 34 and data[14] >> 4 == 4:
        raw = data[26:30]
    # 0.0.0.0 (a probe's sender) and multicast (224.0.0.0/4) are nobody's address
    ip = None if raw is None or raw == b"\x00\x00\x00\x00" or raw[0] >> 4 == 0xE else socket.inet_ntoa(raw)
    return src.hex(":"), ip


def intended_hosts(state: ControllerState) -> list[dict[str, Any]]:
    """The intended topology's containers as add_host keyword arguments."""
    topo = state.intended
    if topo is None:
        return []
    out = []
    for name in topo.containers:
        node = topo.node(name)
        assert node.pi is not None and node.mac is not None
        ip = str(ipaddress.ip_interface(node.ip).ip) if node.ip else None
        out.append({"mac": node.mac, "ip": ip, "dpid": topo.dpid(node.pi), "port": topo.port(node.pi, name),
                    "name": name})
    return out


def intended_fabric_ports(state: ControllerState) -> set[Endpoint]:
    topo = state.intended
    if topo is None:
        return set()
    return {(topo.dpid(end), port) for ln in topo.fabric_links()
            for end, port in ((ln.a, ln.port_a), (ln.b, ln.port_b))}


# --- the app --------------------------------------------------------------------------------------
class Discovery(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: ControllerState = kwargs.get("state", STATE)
        self.lock = threading.RLock()
        self.table = LinkTable()
        self.datapaths: dict[int, Any] = {}
        self.ports: dict[int, dict[int, dict[str, Any]]] = {}  # dpid -> port_no -> {hw_addr, up}
        self.wake = threading.Event()
        self.probe_all = False
        self.running = False
        self.matched_intended = False
        self.published: list[tuple[Endpoint, Endpoint]] = []
        self.intended_ports: set[Endpoint] = set()
        self.container_ports: set[Endpoint] = set()  # never probed: a container is not a bridge
        self.state.subscribe(self._state_changed)
        self.declare_intended_hosts()

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Any:
        thread = super().start()
        self.running = True
        self.threads.append(hub.spawn(self._prober))
        return thread

    def stop(self) -> None:
        self.running = False
        self.wake.set()
        super().stop()

    def _prober(self) -> None:
        """Periodic probes and expiry; also wakes at once when a new bridge asks for a re-probe."""
        next_round = time.monotonic()
        while self.running:
            self.wake.wait(max(0.0, next_round - time.monotonic()))
            self.wake.clear()
            if not self.running:
                break
            now = time.monotonic()
            if self.probe_all or now >= next_round:
                self.probe_all = False
                next_round = now + LLDP_INTERVAL
                with self.lock:
                    self.table.expire(now)
                    self.table.probed(now)
                for dpid in list(self.datapaths):
                    self.probe(dpid)
                self.publish(force=True)

    def _state_changed(self, kind: str) -> None:
        if kind == "intended":
            self.declare_intended_hosts()

    def declare_intended_hosts(self) -> None:
        hosts = intended_hosts(self.state)
        self.intended_ports = intended_fabric_ports(self.state)
        self.container_ports = {(h["dpid"], h["port"]) for h in hosts}
        for host in hosts:
            self.state.add_host(**host)

    # --- OpenFlow handlers ------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        pipeline.ensure_installed(dp)
        parser, ofp = dp.ofproto_parser, dp.ofproto
        trap = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        dp.send_msg(pipeline.flow_mod(dp, pipeline.TABLE_CLASSIFY, PRIORITY_LLDP,
                                      {"eth_type": ether_types.ETH_TYPE_LLDP}, actions=trap,
                                      cookie_value=pipeline.COOKIE_DISCOVERY))
        dpid = ev.msg.datapath_id  # not dp.id: os-ken's handler that sets it may not have run yet
        with self.lock:
            self.datapaths[dpid] = dp
            self.table.switch_gone(dpid)  # a reconnect starts from what LLDP says now

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id  # dpid by name: mypy narrows dp in `get(dpid) is dp`
        if ev.state != DEAD_DISPATCHER or dpid is None:
            return
        with self.lock:
            if self.datapaths.get(dpid) is not dp:
                return
            del self.datapaths[dpid]
            self.ports.pop(dpid, None)
            changed = self.table.switch_gone(dpid)
        if changed:
            self.publish()

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc(self, ev: Any) -> None:
        dp = ev.msg.datapath
        ofp = dp.ofproto
        ports = {p.port_no: {"hw_addr": p.hw_addr, "up": _port_up(ofp, p)}
                 for p in ev.msg.body if p.port_no <= ofp.OFPP_MAX}
        LOG.debug("port desc %s %s", self.state.name_of(dp.id), {p: i["up"] for p, i in ports.items()})
        with self.lock:
            self.ports[dp.id] = ports
            for port_no, info in ports.items():
                if not info["up"]:
                    self.table.port_down((dp.id, port_no), time.monotonic())
        self.probe(dp.id)
        self.probe_all = True  # the others' earlier probes to this bridge hit no trap rule
        self.wake.set()

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev: Any) -> None:
        msg = ev.msg
        dp, ofp, desc = msg.datapath, msg.datapath.ofproto, msg.desc
        end = (dp.id, desc.port_no)
        LOG.debug("port status %s:%s reason %s state %s config %s", self.state.name_of(dp.id), desc.port_no,
                  msg.reason, desc.state, desc.config)
        up = msg.reason != ofp.OFPPR_DELETE and _port_up(ofp, desc)
        with self.lock:
            ports = self.ports.setdefault(dp.id, {})
            was = ports.get(desc.port_no, {}).get("up")
            if msg.reason == ofp.OFPPR_DELETE:
                ports.pop(desc.port_no, None)
            else:
                ports[desc.port_no] = {"hw_addr": desc.hw_addr, "up": up}
            if up:
                self.table.port_up(end)
                changed = False
            else:
                changed = self.table.port_down(end, time.monotonic())
        if was != up:
            where = f"{self.state.name_of(dp.id)}:{desc.port_no}"
            self.state.event("port", f"port {where} {'up' if up else 'down'}")
        if changed:
            self.publish()
        if up:
            self.probe(dp.id, [desc.port_no])

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        self.received(msg.datapath.id, msg.match["in_port"], msg.data)

    def fast_packet_in(self, dp: Any, pin: fastpath.PacketIn, out: list[bytes]) -> None:
        """The fast path's packet_in (controller_apps.fastpath): the same, from the header bytes."""
        if pin.in_port is not None:
            self.received(dp.id, pin.in_port, pin.data)

    def received(self, dpid: int, in_port: int, data: bytes) -> None:
        """A frame from (dpid, in_port): one of our probes is a link, anything else may be a host.
        Only a frame whose ethertype (after any VLAN tags) is LLDP can be a probe, so only those
        get os-ken's full parse."""
        frame = fastpath.parse_frame(data)
        sender = parse_lldp(data) if frame is not None and frame.ethertype == ETH_TYPE_LLDP else None
        if sender is not None:
            with self.lock:
                changed = self.table.observe(sender, (dpid, in_port), time.monotonic(), probe_sent_at(data))
            if changed:
                self.publish()
            return
        self.learn(dpid, in_port, data)

    # --- actions ----------------------------------------------------------------------------------
    def probe(self, dpid: int, port_nos: Iterable[int] | None = None) -> None:
        """Send our LLDP probe out of the given (default: all) ports of one bridge, except the
        intended topology's container ports (their captures stay clean). Ports believed down are
        probed too: if the belief is stale, the probe is what corrects it."""
        with self.lock:
            dp = self.datapaths.get(dpid)
            ports = self.ports.get(dpid, {})
            wanted = sorted(ports) if port_nos is None else port_nos
            chosen = [(p, ports[p]) for p in wanted if p in ports and (dpid, p) not in self.container_ports]
        if dp is None:
            return
        parser, ofp = dp.ofproto_parser, dp.ofproto
        sent = time.monotonic()
        for port_no, info in chosen:
            dp.send_msg(parser.OFPPacketOut(
                datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                actions=[parser.OFPActionOutput(port_no)], data=lldp_frame(dpid, port_no, info["hw_addr"], sent)))

    def publish(self, force: bool = False) -> None:
        """Hand the current links to STATE (it emits the up/down events and wakes routing only on
        a change). `force` re-sends even when our table did not change: STATE also drops links on
        its own when a bridge disconnects, and a probe round must restore what LLDP still sees."""
        with self.lock:
            links = self.table.links()
            if links == self.published and not force:
                return
            self.published = links
        self.state.set_links([{"a": a[0], "a_port": a[1], "b": b[0], "b_port": b[1]} for a, b in links])
        self._check_intended(links)

    def _check_intended(self, links: list[tuple[Endpoint, Endpoint]]) -> None:
        topo = self.state.intended
        if topo is None:
            return
        want = {tuple(sorted(((topo.dpid(ln.a), ln.port_a), (topo.dpid(ln.b), ln.port_b))))
                for ln in topo.fabric_links()}
        matched = want == set(links)
        if matched and not self.matched_intended:
            self.state.event("discovery", f"fabric matches the intended topology ({len(want)} links)")
        self.matched_intended = matched

    def learn(self, dpid: int, port: int, data: bytes) -> None:
        """Learn an untagged sender on a non-fabric port as a default-network host (STATE ignores
        one on a tenant member's port); keeps what others declared about it."""
        seen = host_from_packet(data)
        if seen is None:
            return
        mac, ip = seen
        end = (dpid, port)
        with self.lock:
            fabric = end in self.table.fabric_ports() or end in self.intended_ports
        if fabric:
            return
        known = self.state.host(mac)
        if known is not None and (known["dpid"], known["port"]) == (dpid, port) and (known["ip"] or not ip):
            return
        self.state.add_host(mac, ip or (known or {}).get("ip"), dpid, port, name=(known or {}).get("name"))


def _port_up(ofp: Any, desc: Any) -> bool:
    return not (desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN)
