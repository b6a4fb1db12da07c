"""The controller's fast path for PiCloud's own apps: packet-ins read from their header bytes and
answered with pre-serialised messages, sent once per switch per receive.

Why: under cbench load (bench/cbench.py, controller pinned to one core) the default pipeline spent
its time in os-ken's machinery, not in its decisions: parsing every packet-in into an OFPPacketIn
and an OFPMatch (OXM fields through netaddr), queueing the event to each app's thread (a lock
handoff per app per packet), a full os-ken packet parse per app, building an OFPPacketOut object
and serialising it, and one queue put plus one `sendall` per answer. The decisions themselves (is
this host known, is its destination's rule installed) are a few dictionary lookups.

What changes, only when a loaded app offers `fast_packet_in(dp, packet_in, out)` (ours do):
- The datapath's receive loop reads what the socket has (up to RECV_BYTES) instead of one message
  at a time, and hands each OpenFlow 1.3 packet-in, as a `PacketIn` read with `struct`, straight to
  the fast handlers on the receiving thread. Handlers append wire bytes to `out`; after the whole
  read is processed, `out` goes to the switch as one buffer (one queue put, one `sendall`): the
  batch per datapath per event-loop turn.
- Apps without a fast handler that observe packet-ins (a user's Ryu app loaded next to ours) still
  get os-ken's parsed `EventOFPPacketIn` through os-ken's event system, as before; every other
  message takes os-ken's path unchanged. A Ryu app run alone never sees this module.
- Fast handlers run one switch's read at a time (`HANDLERS`), as os-ken ran each app's handlers on
  one thread, so app state sees no new concurrency and background work (routing's recomputation)
  is not starved by a thread per switch contending for the GIL.
- A fast handler runs on the thread that reads the switch, so it must never wait for anything that
  waits for a switch: no app lock that is held while sending (a full send queue drains only while
  the switch's own messages are read; OVS stops reading ours when its replies back up). Ours read
  routing's `installed` and tenancy's plan without their locks, as values replaced whole.
- Nothing is logged per packet; a handler's exception is logged (it is our bug) and the switch
  connection lives on, as os-ken's event loop does.

The byte encoders produce exactly what os-ken serialises for the same message (tests compare them
byte for byte), so a switch cannot tell the paths apart. Frame parsing is defensive: every read is
bounds-checked, and a frame too short for a field is "not that protocol", never an exception.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

LOG = logging.getLogger(__name__)

OFP_VERSION_13 = 0x04
OFPT_PACKET_IN = 10
OFPT_PACKET_OUT = 13
OFPT_FLOW_MOD = 14
OFP_NO_BUFFER = 0xFFFFFFFF
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_FLOOD = 0xFFFFFFFB
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPCML_MAX = 0xFFE5  # os-ken's OFPActionOutput default max_len
OFPCML_NO_BUFFER = 0xFFFF
OFPXMC_OPENFLOW_BASIC = 0x8000
OFPR_NO_MATCH = 0  # packet-in reason: a table miss
ARP_REQUEST, ARP_REPLY = 1, 2  # ARP opcodes (RFC 826)
OXM_IN_PORT = 0
RECV_BYTES = 1 << 18  # one read: up to 256 KiB of queued messages (about 2,500 cbench packet-ins)

HEADER = struct.Struct("!BBHI")
PACKET_IN = struct.Struct("!IHBBQHH")  # buffer_id, total_len, reason, table_id, cookie, match type, length
PACKET_OUT = struct.Struct("!BBHIIIH6x")
ACTION_OUTPUT = struct.Struct("!HHIH6x")
FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_8021Q = 0x8100
ETH_TYPE_8021AD = 0x88A8
ETH_TYPE_LLDP = 0x88CC
ETH_TYPE_IPV6 = 0x86DD
ETH_MIN_LEN = 60


# --- packet-in ----------------------------------------------------------------------------------
class PacketIn(NamedTuple):
    """An OpenFlow 1.3 packet-in as the apps need it (OF1.3 section 7.4.1)."""

    buffer_id: int
    total_len: int
    reason: int
    table_id: int
    cookie: int
    in_port: int | None  # None when the match carries no OXM in_port
    data: bytes


def parse_packet_in(msg: bytes | bytearray | memoryview, offset: int = 0, length: int | None = None) -> PacketIn | None:
    """The packet-in at `offset` of `msg` (its OpenFlow header included), or None when it is not a
    well-formed one: a short body, a match that is not OXM or runs past the message, an OXM whose
    length overruns the match. `data` is cut to `total_len` as os-ken does (the message may be padded)."""
    end = offset + (HEADER.unpack_from(msg, offset)[2] if length is None else length)
    if end > len(msg) or end - offset < 8 + PACKET_IN.size:
        return None
    buffer_id, total_len, reason, table_id, cookie, match_type, match_len = PACKET_IN.unpack_from(msg, offset + 8)
    match_start = offset + 24
    match_end = match_start + match_len
    data_start = match_start + ((match_len + 7) & ~7) + 2  # match padded to 8 bytes, then 2 pad bytes
    if match_type != 1 or match_len < 4 or data_start > end:
        return None
    in_port = None
    pos = match_start + 4
    while pos + 4 <= match_end:
        oxm_class, field, oxm_len = struct.unpack_from("!HBB", msg, pos)
        if pos + 4 + oxm_len > match_end:
            return None
        if oxm_class == OFPXMC_OPENFLOW_BASIC and field >> 1 == OXM_IN_PORT and oxm_len == 4 and in_port is None:
            in_port = struct.unpack_from("!I", msg, pos + 4)[0]
        pos += 4 + oxm_len
    data = bytes(msg[data_start:min(end, data_start + total_len)])
    return PacketIn(buffer_id, total_len, reason, table_id, cookie, in_port, data)


# --- Ethernet frames ----------------------------------------------------------------------------
class Frame(NamedTuple):
    """The Ethernet header of a frame: addresses as 6 bytes, the first 802.1Q tag's VLAN id (None
    when there is none), whether any tag is present, the ethertype after the tags and where that
    payload starts."""

    dst: bytes
    src: bytes
    vid: int | None
    tagged: bool  # any 802.1Q or 802.1ad tag
    ethertype: int
    payload: int


def parse_frame(data: bytes) -> Frame | None:
    """The Ethernet header of `data`, or None for a runt (under 14 bytes) or a tag cut short.

    Stacked 802.1Q/802.1ad tags are walked as os-ken's packet parser walks them (any stacking, the
    loop bounded by the frame), and `vid` is the first 802.1Q tag's, the one os-ken's
    `get_protocol(vlan.vlan)` returns, so the apps decide on exactly what they decided on before."""
    if len(data) < 14:
        return None
    ethertype = (data[12] << 8) | data[13]
    offset, vid = 14, None
    while ethertype in (ETH_TYPE_8021Q, ETH_TYPE_8021AD):
        if len(data) < offset + 4:
            return None
        if ethertype == ETH_TYPE_8021Q and vid is None:
            vid = ((data[offset] << 8) | data[offset + 1]) & 0x0FFF
        ethertype = (data[offset + 2] << 8) | data[offset + 3]
        offset += 4
    return Frame(bytes(data[0:6]), bytes(data[6:12]), vid, offset > 14, ethertype, offset)


class Arp(NamedTuple):
    """The fields of an ARP packet at the fixed Ethernet/IPv4 offsets (RFC 826), as os-ken reads them."""

    opcode: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


ARP = struct.Struct("!HHBBH6s4s6s4s")


def parse_arp(data: bytes, frame: Frame) -> Arp | None:
    """The ARP packet of a frame whose ethertype is ARP, or None (another protocol, or cut short)."""
    if frame.ethertype != ETH_TYPE_ARP or len(data) < frame.payload + ARP.size:
        return None
    _, _, _, _, opcode, sha, spa, tha, tpa = ARP.unpack_from(data, frame.payload)
    return Arp(opcode, sha, spa, tha, tpa)


def arp_reply_frame(dst_mac: bytes, src_mac: bytes, sender_mac: bytes, sender_ip: bytes, target_mac: bytes,
                    target_ip: bytes) -> bytes:
    """An untagged ARP reply (Ethernet, IPv4), byte for byte what os-ken serialises for
    ethernet(dst, src, ARP) / arp(opcode=REPLY, src_mac, src_ip, dst_mac, dst_ip): padded with
    zeros to Ethernet's 60-byte minimum (FCS excluded)."""
    frame = dst_mac + src_mac + b"\x08\x06" + ARP.pack(1, ETH_TYPE_IP, 6, 4, ARP_REPLY, sender_mac, sender_ip,
                                                       target_mac, target_ip)
    return frame.ljust(ETH_MIN_LEN, b"\x00")


def mac_text(raw: bytes) -> str:
    return raw.hex(":")


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# --- checksums ----------------------------------------------------------------------------------
# OVS 3.1's userspace datapath with userspace TSO sends packet-ins of TCP/UDP packets whose checksum
# the sending veth left to offload (see the runner's "packet-in checksum repair"). A packet sent
# back out must carry a finished checksum; `packet_out` finishes it, so the fast path pays for the
# repair only on frames that actually go back to a switch.

def _sum16(data: bytes, start: int = 0) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def repair_partial_checksum(frame: bytes) -> bytes | None:
    """The frame with its TCP/UDP checksum finished when the field holds an offload partial sum
    (the folded pseudo-header sum); None when the checksum is valid, absent or simply wrong."""
    offset, ethertype = 14, struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
    if ethertype == 0x8100 and len(frame) >= 18:
        offset, ethertype = 18, struct.unpack_from("!H", frame, 16)[0]
    if ethertype == 0x0800 and len(frame) >= offset + 20:
        ihl = (frame[offset] & 0x0F) * 4
        total, frag, proto = struct.unpack_from("!H2xH1xB", frame, offset + 2)
        if frag & 0x3FFF or total < ihl:
            return None  # a fragment carries no complete segment to check
        l4, end = offset + ihl, offset + total
        pseudo = frame[offset + 12:offset + 20] + struct.pack("!BBH", 0, proto, total - ihl)
    elif ethertype == 0x86DD and len(frame) >= offset + 40:
        length, proto = struct.unpack_from("!HB", frame, offset + 4)
        l4, end = offset + 40, offset + 40 + length
        pseudo = frame[offset + 8:offset + 40] + struct.pack("!IxxxB", length, proto)
    else:
        return None
    field = {6: 16, 17: 6}.get(proto)
    if field is None or end > len(frame) or end - l4 < field + 2:
        return None
    stored = struct.unpack_from("!H", frame, l4 + field)[0]
    if proto == 17 and stored == 0:
        return None  # UDP over IPv4 without a checksum
    segment = frame[l4:end]
    if _sum16(segment, _sum16(pseudo)) == 0xFFFF:
        return None  # already valid
    if stored != _sum16(pseudo):
        return None  # not an offload partial sum: leave a corrupt packet corrupt
    zeroed = segment[:field] + b"\x00\x00" + segment[field + 2:]
    value = ~_sum16(zeroed, _sum16(pseudo)) & 0xFFFF
    if proto == 17 and value == 0:
        value = 0xFFFF
    return frame[:l4 + field] + struct.pack("!H", value) + frame[l4 + field + 2:]


# --- messages -----------------------------------------------------------------------------------
def next_xid(dp: Any) -> int:
    """The datapath's next transaction id, from the counter os-ken's `set_xid` uses."""
    dp.xid = (dp.xid + 1) & 0xFFFFFFFF
    return dp.xid


def packet_out(xid: int, buffer_id: int, in_port: int, outputs: Iterable[tuple[int, int]], data: bytes | None) -> bytes:
    """OFPT_PACKET_OUT with one output action per (port, max_len); `data` only when unbuffered, as
    os-ken asserts, its TCP/UDP checksum finished if offload left it partial."""
    actions = b"".join(ACTION_OUTPUT.pack(0, 16, port, max_len) for port, max_len in outputs)
    body = b""
    if data is not None:
        fixed = repair_partial_checksum(data) if data else None
        body = data if fixed is None else fixed
    length = PACKET_OUT.size + len(actions) + len(body)
    head = PACKET_OUT.pack(OFP_VERSION_13, OFPT_PACKET_OUT, length, xid, buffer_id, in_port, len(actions))
    return head + actions + body


OXM_IN_PORT_HEADER = b"\x80\x00\x00\x04"
OXM_ETH_DST_HEADER = b"\x80\x00\x06\x06"
OXM_ETH_SRC_HEADER = b"\x80\x00\x08\x06"


def output_flow_mod(xid: int, cookie: int, table_id: int, priority: int, in_port: int, eth_dst: bytes,
                    eth_src: bytes, out_port: int, buffer_id: int = OFP_NO_BUFFER) -> bytes:
    """OFPFC_ADD of (in_port, eth_dst, eth_src) -> output(out_port): a learning switch's flow, as
    os-ken serialises `flows.flow_mod` of it (OXMs in field order, output max_len 0)."""
    oxms = OXM_IN_PORT_HEADER + in_port.to_bytes(4, "big") + OXM_ETH_DST_HEADER + eth_dst + OXM_ETH_SRC_HEADER + eth_src
    match = struct.pack("!HH", 1, 4 + len(oxms)) + oxms
    match += bytes(-len(match) % 8)
    actions = ACTION_OUTPUT.pack(0, 16, out_port, OFPCML_NO_BUFFER if out_port == OFPP_CONTROLLER else 0)
    instructions = struct.pack("!HH4x", 4, 8 + len(actions)) + actions  # OFPIT_APPLY_ACTIONS
    length = FLOW_MOD.size + len(match) + len(instructions)
    head = FLOW_MOD.pack(OFP_VERSION_13, OFPT_FLOW_MOD, length, xid, cookie, 0, table_id, 0, 0, 0, priority,
                         buffer_id, OFPP_ANY, OFPG_ANY, 0)
    return head + match + instructions


def with_xid(message: bytes, xid: int) -> bytes:
    """`message` (serialised once, any xid) with its transaction id replaced."""
    return message[:4] + xid.to_bytes(4, "big") + message[8:]


def serialized(dp: Any, msg: Any) -> bytes:
    """An os-ken message's wire bytes with the datapath's next xid (os-ken's `send_msg` without
    the send)."""
    if msg.xid is None:
        msg.set_xid(next_xid(dp))
    msg.serialize()
    return bytes(msg.buf)


def send(dp: Any, messages: list[bytes]) -> None:
    """Queue `messages` to the switch as one buffer (one queue put, one `sendall`)."""
    if messages:
        dp.send(messages[0] if len(messages) == 1 else b"".join(messages))


def sends_bytes(dp: Any) -> bool:
    """Whether `dp` is a real os-ken datapath that takes raw bytes (a recording fake in unit tests
    takes os-ken messages only, and gets them)."""
    from os_ken.controller.controller import Datapath

    return isinstance(dp, Datapath)


# --- dispatch -----------------------------------------------------------------------------------
FastHandler = Callable[[Any, PacketIn, list[bytes]], None]


class Dispatcher:
    """Which apps answer packet-ins on the fast path and which still get os-ken's event.

    Derived from os-ken's own observer table for EventOFPPacketIn, so it follows what os-ken would
    have done: the same apps, in the same dispatcher state. Checked once per read, recomputed only
    when that table changes."""

    def __init__(self) -> None:
        self._key: Any = None
        self.fast: list[tuple[str, FastHandler]] = []
        self.slow: list[str] = []

    def refresh(self, brick: Any, state: Any) -> None:
        from os_ken.base import app_manager
        from os_ken.controller import ofp_event

        observers = brick.observers.get(ofp_event.EventOFPPacketIn, {})
        key = (state, tuple((name, frozenset(states)) for name, states in observers.items()))
        if key == self._key:
            return
        fast, slow = [], []
        for name, states in observers.items():
            if states and state not in states:
                continue
            handler = getattr(app_manager.SERVICE_BRICKS.get(name), "fast_packet_in", None)
            if handler is not None:
                fast.append((name, handler))
            else:
                slow.append(name)
        self.fast, self.slow, self._key = fast, slow, key


CLOSING = threading.Event()
"""Set by the runner's shutdown: every switch connection stops reading. Otherwise 57 switches'
queued replies (flow statistics of 109,000 flows in a 1,000-container run) kept every app's event
queue full, and the shutdown's own stop event waited behind them until the 10 s bound."""

HANDLERS = threading.Lock()
"""Held while fast handlers run: one switch's packet-ins at a time, as os-ken ran each app's handlers
on one thread. It also keeps the controller's other threads from starving: with a thread per switch
all contending for the GIL, routing's recomputation got one seventeenth of the core under cbench
load (97 hosts took 12.8 s); with one switch's packet-ins runnable at a time it gets about half.
Sends (a full switch queue blocks) and everything else happen outside it."""


def _recv_loop(self: Any) -> None:
    """os-ken's Datapath._recv_loop (os-ken 4.2.2), reading what the socket has at once and taking
    OpenFlow 1.3 packet-ins in MAIN_DISPATCHER down the fast path (module docstring). Every other
    message is parsed and dispatched exactly as os-ken does."""
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER
    from os_ken.ofproto import ofproto_parser

    dispatcher = Dispatcher()
    buf = bytearray()
    while self.state != DEAD_DISPATCHER and not CLOSING.is_set():
        try:
            ret = self.socket.recv(RECV_BYTES)
        except TimeoutError:  # socket.timeout since Python 3.10
            continue
        except ssl.SSLError:
            continue  # an SSL read timeout, as os-ken retries it
        except (EOFError, OSError):
            break
        if not ret:
            break
        buf += ret
        offset, end = 0, len(buf)
        out: list[bytes] = []
        if self.ofp_brick is not None:
            dispatcher.refresh(self.ofp_brick, MAIN_DISPATCHER)  # once per read: apps rarely come and go
        held = False  # HANDLERS, held across a run of packet-ins, never while dispatching anything else
        try:
            while end - offset >= 8 and not CLOSING.is_set():
                version, msg_type, msg_len, xid = HEADER.unpack_from(buf, offset)
                if msg_len < 8:
                    msg_len = 8  # someone is not playing nicely: os-ken's "something sane"
                if end - offset < msg_len:
                    break
                state = self.state
                if msg_type == OFPT_PACKET_IN and version == OFP_VERSION_13 and state == MAIN_DISPATCHER:
                    brick = self.ofp_brick
                    if brick is not None:
                        if dispatcher.fast:
                            if not held:
                                HANDLERS.acquire()
                                held = True
                            _fast(self, dispatcher.fast, buf, offset, msg_len, out)
                        if dispatcher.slow:
                            if held:
                                HANDLERS.release()  # an app's full event queue may block us here
                                held = False
                            msg = ofproto_parser.msg(self, version, msg_type, msg_len, xid,
                                                     buf[offset:offset + msg_len])
                            if msg:
                                ev = ofp_event.ofp_msg_to_ev(msg)
                                for name in dispatcher.slow:
                                    brick.send_event(name, ev, state)
                else:
                    if held:
                        HANDLERS.release()
                        held = False
                    if out:  # answers so far go first: a handler of this message may send too
                        send(self, out)
                        out = []
                    msg = ofproto_parser.msg(self, version, msg_type, msg_len, xid, buf[offset:offset + msg_len])
                    if msg:
                        ev = ofp_event.ofp_msg_to_ev(msg)
                        if self.ofp_brick is not None:
                            self.ofp_brick.send_event_to_observers(ev, self.state)

                            def dispatchers(x: Any, ev: Any = ev) -> Any:
                                return x.callers[ev.__class__].dispatchers

                            for handler in [h for h in self.ofp_brick.get_handlers(ev)
                                            if self.state in dispatchers(h)]:
                                handler(ev)
                offset += msg_len
        finally:
            if held:
                HANDLERS.release()
        del buf[:offset]
        send(self, out)


def _fast(dp: Any, handlers: list[tuple[str, FastHandler]], buf: bytearray, offset: int, length: int,
          out: list[bytes]) -> None:
    pin = parse_packet_in(buf, offset, length)
    if pin is None:
        return  # malformed: os-ken's parser would have raised; nothing to answer
    for name, handler in handlers:
        try:
            handler(dp, pin, out)
        except Exception:  # our bug: log it, as os-ken's event loop does, and keep the switch
            LOG.exception("%s: fast packet-in handler failed", name)


_installed = False


def install() -> None:
    """Take OpenFlow 1.3 packet-ins down the fast path (idempotent; the runner calls it when an
    app it loads has a fast handler)."""
    global _installed
    if _installed:
        return
    from os_ken.controller import controller

    controller.Datapath._recv_loop = controller._deactivate(_recv_loop)  # closes the socket at the end, as os-ken's
    _installed = True


def wants_fast_path(apps: Iterable[type]) -> bool:
    return any(callable(getattr(cls, "fast_packet_in", None)) for cls in apps)

