"""Flow completion times and delivered bytes as a packet capture saw them, against the engine's.

For each agent connection (TCP to the agent port) on each captured interface: the client's SYN
time, the time of the server's last payload packet (the 8-byte application acknowledgement that
ends the engine's FCT), the bytes the client sent (highest sequence number reached minus the
initial one, so retransmissions are not counted twice) and the flow id, read from the first 16
bytes of the client's payload (`traffic.agent.HEADER`). Each flow is judged on the interface that
saw its SYN first, the one nearest its client. Pure except `read_packets` (scapy's pcapng reader).
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
    flow_id: int | None
    iface: str
    syn: float
    isn: int
    end: float | None = None  # the server's last payload packet
    high: int = 0  # highest client sequence number + length

    @property
    def client_bytes(self) -> int:
        return max(0, self.high - self.isn - 1)

    @property
    def fct_us(self) -> float | None:
        return None if self.end is None else (self.end - self.syn) * 1e6


def read_packets(path: str | Path) -> list[Packet]:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapNgReader

    out = []
    with PcapNgReader(str(path)) as reader:
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
    """Every agent connection per interface (see module doc)."""
    seen: dict[tuple[str, str, int], Seen] = {}
    for p in sorted(packets, key=lambda p: p.t):
        if p.dport == port:
            key = (p.iface, p.src, p.sport)
            if p.flags & 0x02 and not p.flags & 0x10:  # SYN
                seen.setdefault(key, Seen(None, p.iface, p.t, p.seq, high=p.seq + 1))
                continue
            s = seen.get(key)
            if s is None:
                continue
            if p.length:
                s.high = max(s.high, (p.seq + p.length) if p.seq >= s.isn else p.seq + p.length + (1 << 32))
                if p.seq == s.isn + 1 and s.flow_id is None and len(p.payload) >= HEADER_BYTES:
                    s.flow_id = int.from_bytes(p.payload[:8], "big")
        elif p.sport == port and p.length:
            s = seen.get((p.iface, p.dst, p.dport))
            if s is not None:
                s.end = p.t
    return list(seen.values())


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


def compare(flows: Sequence[Any], seen: Sequence[Seen]) -> dict[str, Any]:
    """Per captured flow: engine FCT, capture FCT, their difference; and the p50/p99 |difference|."""
    nearest: dict[int, Seen] = {}
    for s in seen:
        if s.flow_id is not None and (s.flow_id not in nearest or s.syn < nearest[s.flow_id].syn):
            nearest[s.flow_id] = s
    rows = []
    for f in flows:
        s = nearest.get(f.id)
        if s is None:
            continue
        diff = None if f.fct_us is None or s.fct_us is None else f.fct_us - s.fct_us
        rows.append({"id": f.id, "engine_fct_us": f.fct_us, "capture_fct_us": s.fct_us,
                     "diff_us": diff, "engine_bytes": f.bytes_received, "capture_bytes": s.client_bytes - HEADER_BYTES,
                     "iface": s.iface})
    diffs = sorted(abs(r["diff_us"]) for r in rows if r["diff_us"] is not None)
    p99 = diffs[min(len(diffs) - 1, int(round(0.99 * (len(diffs) - 1))))] if diffs else None
    return {"flows": rows, "compared": len(diffs),
            "abs_diff_us": {"p50": statistics.median(diffs) if diffs else None, "p99": p99,
                            "max": diffs[-1] if diffs else None}}
