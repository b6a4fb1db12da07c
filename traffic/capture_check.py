"""Flow completion times and delivered bytes as a packet capture saw them, against the engine's.

The agents carry flows as messages on persistent connections (`traffic.agent`): a 16-byte header
(flow id, size) then the payload, answered by a 16-byte acknowledgement (flow id, bytes). For each
agent connection (TCP to the agent port) on each captured interface this walks the client's byte
stream from its SYN's initial sequence number: a message starts where the previous one ended, so
the packet that starts there carries the next header. Per flow: the time of the first packet
carrying its header (the flow's first byte, where the engine's FCT starts; for a flow that opened
its own connection, `handshake` in its record, FCT starts at that connection's SYN), the first
server packet carrying its acknowledgement (where the engine's FCT ends; a retransmitted copy comes
after the one the client took), and the bytes of the
message the client sent (highest sequence number reached within the message, so retransmissions
are not counted twice). Each flow is judged on the interface that saw its first byte first, the one
nearest its client. Pure except `read_packets` (scapy's pcap/pcapng reader).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER_BYTES = 16


@dataclass(frozen=True)
class Packet:
    t: float
    iface: str  # the interface's name in the capture
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int
    payload: bytes  # the first bytes are enough: a header, or the ack's 8 bytes
    length: int  # TCP payload length


@dataclass
class Seen:
    """One flow (one message) as one interface saw it."""

    flow_id: int | None
    iface: str
    start: float  # the first packet carrying the flow's header
    syn: float = 0.0  # its connection's SYN
    offset: int = 0  # where the message starts in the connection's client stream
    size: int = 0  # payload bytes the header announced
    end: float | None = None  # the first server packet carrying this flow's acknowledgement
    high: int = 0  # highest client stream offset reached within the message

    @property
    def client_bytes(self) -> int:
        """Header and payload bytes of this message that crossed the interface (each once)."""
        return max(0, self.high - self.offset)

    @property
    def fct_us(self) -> float | None:
        return None if self.end is None else (self.end - self.start) * 1e6


@dataclass
class _Stream:
    """A client connection's byte stream on one interface: where the next header is due."""

    isn: int
    syn: float = 0.0
    next_header: int = 0
    high: int = 0
    messages: dict[int, Seen] | None = None  # by offset
    by_id: dict[int, Seen] | None = None
    last: Seen | None = None


def _unwrap(seq: int, isn: int, near: int) -> int:
    """A 32-bit sequence number as a 64-bit offset into the client stream, the one nearest `near`."""
    rel = (seq - isn - 1) & 0xFFFFFFFF
    cand = (near & ~0xFFFFFFFF) | rel
    if cand - near > 1 << 31:
        cand -= 1 << 32
    elif near - cand > 1 << 31:
        cand += 1 << 32
    return cand


def read_packets(path: str | Path) -> list[Packet]:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    out = []
    with PcapReader(str(path)) as reader:  # pcapng or classic pcap, by the file's magic
        for pkt in reader:
            if IP not in pkt or TCP not in pkt:
                continue
            ip, tcp = pkt[IP], pkt[TCP]
            payload = bytes(tcp.payload)
            length = max(0, ip.len - ip.ihl * 4 - tcp.dataofs * 4)
            # scapy names the packet's interface after the IDB's if_name: ours are unique per file
            out.append(Packet(float(pkt.time), str(getattr(pkt, "sniffed_on", None) or ""), ip.src, ip.dst,
                              tcp.sport, tcp.dport, int(tcp.flags), tcp.seq, payload[:HEADER_BYTES], length))
    return out


def connections(packets: Iterable[Packet], port: int) -> list[Seen]:
    """Every flow on every agent connection per interface (see module doc)."""
    streams: dict[tuple[str, str, int], _Stream] = {}
    out: list[Seen] = []
    for p in sorted(packets, key=lambda p: p.t):
        if p.dport == port:
            key = (p.iface, p.src, p.sport)
            if p.flags & 0x02 and not p.flags & 0x10:  # SYN: a new connection (a retransmitted SYN keeps it)
                if key not in streams or streams[key].isn != p.seq:
                    streams[key] = _Stream(p.seq, p.t, messages={}, by_id={})
                continue
            st = streams.get(key)
            if st is None or not p.length:
                continue
            rel = _unwrap(p.seq, st.isn, st.high)
            if rel < 0:
                continue
            assert st.messages is not None and st.by_id is not None
            if rel == st.next_header and len(p.payload) >= HEADER_BYTES:
                flow_id = int.from_bytes(p.payload[:8], "big")
                size = int.from_bytes(p.payload[8:16], "big")
                seen = Seen(flow_id, p.iface, p.t, syn=st.syn, offset=rel, size=size, high=rel)
                st.messages[rel] = seen
                st.by_id[flow_id] = seen
                st.last = seen
                st.next_header = rel + HEADER_BYTES + size
                out.append(seen)
            st.high = max(st.high, rel + p.length)
            # One message at a time per connection: a packet belongs to the last message started,
            # or (a late retransmission) to the one at its offset.
            hit = st.last if st.last is not None and rel >= st.last.offset else st.messages.get(rel)
            if hit is not None:
                hit.high = max(hit.high, min(hit.offset + HEADER_BYTES + hit.size, rel + p.length))
        elif p.sport == port and p.length >= HEADER_BYTES and len(p.payload) >= 8:
            st = streams.get((p.iface, p.dst, p.dport))
            if st is not None and st.by_id is not None:
                hit = st.by_id.get(int.from_bytes(p.payload[:8], "big"))
                if hit is not None and hit.end is None:
                    hit.end = p.t
    return out


def sequence_coverage(packets: Iterable[Packet], port: int) -> dict[str, int]:
    """Per interface, the client-to-`port` payload bytes the capture holds, counted by TCP sequence
    number: the union of [seq, seq + length) over the packets of each connection (from its SYN), so
    a retransmitted byte counts once and a packet the capture missed leaves a gap."""
    isn: dict[tuple[str, str, int], int] = {}
    spans: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    for p in sorted(packets, key=lambda p: p.t):
        if p.dport != port:
            continue
        key = (p.iface, p.src, p.sport)
        if p.flags & 0x02 and not p.flags & 0x10:
            isn.setdefault(key, p.seq)
        elif key in isn and p.length:
            start = (p.seq - isn[key] - 1) % (1 << 32)
            spans.setdefault(key, []).append((start, start + p.length))
    covered: dict[str, int] = {}
    for key, ranges in spans.items():
        total, reach = 0, 0
        for a, b in sorted(ranges):
            if b > reach:
                total += b - max(a, reach)
                reach = b
        covered[key[0]] = covered.get(key[0], 0) + total
    return covered


def _stats(diffs: list[float]) -> dict[str, float | None]:
    diffs = sorted(diffs)
    p99 = diffs[min(len(diffs) - 1, int(round(0.99 * (len(diffs) - 1))))] if diffs else None
    return {"p50": statistics.median(diffs) if diffs else None, "p99": p99, "max": diffs[-1] if diffs else None}


def compare(flows: Sequence[Any], seen: Sequence[Seen]) -> dict[str, Any]:
    """Per captured flow: engine FCT, capture FCT, their difference; and the p50/p99 |difference|.

    `abs_diff_us` and `compared` cover the flows captured at their sender's own interface: there
    the engine's clock and the capture time the same packets, so the difference is measurement
    error (the 1 ms target). A flow seen only further along its path (a link or switch port) is in
    `midpath`: its first byte reaches that point after the queues before it (a 100 Mbit/s Pi uplink
    holds tens of ms), so its difference is the path's delay as well, reported apart, never mixed in."""
    nearest: dict[int, Seen] = {}
    for s in seen:
        if s.flow_id is not None and (s.flow_id not in nearest or s.start < nearest[s.flow_id].start):
            nearest[s.flow_id] = s
    by_point: dict[tuple[int, str], Seen] = {(s.flow_id, s.iface): s for s in seen if s.flow_id is not None}
    rows = []
    for f in flows:
        hit = by_point.get((f.id, getattr(f, "src", ""))) or nearest.get(f.id)
        if hit is None:
            continue
        captured = hit.fct_us
        if captured is not None and getattr(f, "handshake", False):  # FCT from its connection's SYN
            captured += (hit.start - hit.syn) * 1e6
        diff = None if f.fct_us is None or captured is None else f.fct_us - captured
        rows.append({"id": f.id, "engine_fct_us": f.fct_us, "capture_fct_us": captured,
                     "diff_us": diff, "engine_bytes": f.bytes_received,
                     "capture_bytes": hit.client_bytes - HEADER_BYTES, "iface": hit.iface,
                     "at_sender": hit.iface == getattr(f, "src", None)})
    at_sender = [abs(r["diff_us"]) for r in rows if r["diff_us"] is not None and r["at_sender"]]
    midpath = [abs(r["diff_us"]) for r in rows if r["diff_us"] is not None and not r["at_sender"]]
    return {"flows": rows, "compared": len(at_sender), "abs_diff_us": _stats(at_sender),
            "midpath": {"compared": len(midpath), "abs_diff_us": _stats(midpath)}}
