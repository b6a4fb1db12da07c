"""pcapng interface naming and counting, and the capture-side FCT/bytes of agent connections (pure)."""

from __future__ import annotations

import struct

import pytest

from traffic import capture_check, pcapng
from traffic.capture_check import Packet
from traffic.results import FlowRecord


def _block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(order + "II", btype, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))


def _opt(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _file(order: str = "<", drops: int = 3) -> bytes:
    shb = _block(pcapng.SHB, struct.pack(order + "IHHq", pcapng.BYTE_ORDER_MAGIC, 1, 0, -1), order)
    idb = lambda name: _block(pcapng.IDB, struct.pack(order + "HHI", 1, 0, 262144)  # noqa: E731
                              + _opt(2, name, order) + _opt(9, b"\x09", order) + _opt(0, b"", order), order)
    epb = lambda if_id, n: _block(pcapng.EPB, struct.pack(order + "IIIII", if_id, 0, 1, n, n)  # noqa: E731
                                  + b"\xaa" * n, order)
    isb = _block(pcapng.ISB, struct.pack(order + "III", 1, 0, 2) + _opt(4, struct.pack(order + "Q", 5), order)
                 + _opt(5, struct.pack(order + "Q", drops), order) + _opt(0, b"", order), order)
    return shb + idb(b"eth0") + idb(b"eth0") + epb(0, 60) + epb(1, 61) + epb(1, 100) + isb


@pytest.mark.parametrize("order", ["<", ">"])
def test_rename_gives_each_interface_its_name_and_keeps_everything_else(order):
    data = _file(order)
    before = pcapng.interfaces(data)
    assert [i.name for i in before] == ["eth0", "eth0"]
    renamed = pcapng.rename_interfaces(data, [("web1", "container web1"), ("tor1:3", "port 3 of tor1")])
    after = pcapng.interfaces(renamed)
    assert [(i.name, i.description) for i in after] == [("web1", "container web1"), ("tor1:3", "port 3 of tor1")]
    assert [(i.packets, i.bytes) for i in after] == [(1, 60), (2, 161)]
    assert after[1].received == 5 and after[1].dropped == 3 and after[0].dropped is None
    # other IDB options (if_tsresol, code 9) survive the rewrite
    assert b"\x09\x00\x01\x00\x09" in renamed if order == "<" else b"\x00\x09\x00\x01\x09" in renamed


def test_truncated_or_corrupt_files_are_refused():
    data = _file()
    with pytest.raises(pcapng.PcapngError):
        pcapng.interfaces(data[:-3])
    with pytest.raises(pcapng.PcapngError):
        pcapng.interfaces(data[:4] + struct.pack("<I", 13) + data[8:])


def _message(iface: str, t: float, sport: int, isn: int, offset: int, flow_id: int, size: int,
             retransmit: bool = False) -> list[Packet]:
    """One flow on an open connection: header + payload from `offset` of the client stream, then the
    server's 16-byte acknowledgement naming the flow."""
    header = flow_id.to_bytes(8, "big") + size.to_bytes(8, "big")
    first = min(1448 - 16, size)
    seq = isn + 1 + offset
    pkts = [Packet(t, iface, "10.0.0.1", "10.0.0.2", sport, 5301, 0x18, seq, header, 16 + first)]
    sent, t = first, t + 0.0001
    while sent < size:
        n = min(1448, size - sent)
        pkts.append(Packet(t, iface, "10.0.0.1", "10.0.0.2", sport, 5301, 0x10, seq + 16 + sent, b"", n))
        if retransmit and sent == first:
            pkts.append(Packet(t + 0.0005, iface, "10.0.0.1", "10.0.0.2", sport, 5301, 0x10, seq + 16 + sent, b"", n))
        sent += n
        t += 0.0001
    ack = flow_id.to_bytes(8, "big") + size.to_bytes(8, "big")
    pkts.append(Packet(t + 0.001, iface, "10.0.0.2", "10.0.0.1", 5301, sport, 0x18, 1, ack, 16))
    return pkts


def _conn(iface: str, t0: float, sport: int, flow_id: int, size: int, retransmit: bool = False) -> list[Packet]:
    isn = 1000
    return [Packet(t0, iface, "10.0.0.1", "10.0.0.2", sport, 5301, 0x02, isn, b"", 0),
            *_message(iface, t0 + 0.001, sport, isn, 0, flow_id, size, retransmit)]


def test_connections_count_bytes_once_and_time_first_byte_to_answer():
    pkts = _conn("a", 1.0, 40000, 7, 10_000, retransmit=True) + _conn("b", 1.0004, 40000, 7, 10_000)
    seen = capture_check.connections(pkts, 5301)
    by_iface = {s.iface: s for s in seen}
    assert by_iface["a"].flow_id == 7 and by_iface["a"].client_bytes == 10_016  # the retransmission counted once
    # first byte (the header packet at 1.001) to the acknowledgement: 6 more data packets, then 1 ms
    assert by_iface["a"].fct_us == pytest.approx((7 * 0.0001 + 0.001) * 1e6, rel=1e-6)
    flow = FlowRecord(id=7, src="a", dst="b", tenant="", size=10_000, scheduled=0, job=-1, status="done",
                      start=0.0, lateness_us=0, fct_us=by_iface["a"].fct_us + 250, sent=10_000,
                      bytes_received=10_000, warmup=False, ideal_us=800)
    out = capture_check.compare([flow], seen)
    assert out["compared"] == 1 and out["flows"][0]["iface"] == "a"  # judged where the first byte was seen first
    assert out["abs_diff_us"]["p99"] == pytest.approx(250)
    assert out["flows"][0]["capture_bytes"] == 10_000


def _pcap(order: str, nsec: bool, records: list[tuple[int, int, bytes, int]]) -> bytes:
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, 1)
    for sec, frac, data, orig in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), orig) + data
    return out


@pytest.mark.parametrize(("order", "nsec"), [("<", False), (">", False), ("<", True)])
def test_a_pcap_stream_becomes_one_named_section_with_its_counts(order, nsec, tmp_path):
    from scapy.utils import PcapNgReader

    frames = [(1_700_000_000, 123_456, b"\x01" * 60, 60), (1_700_000_001, 999_999, b"\x02" * 64, 1514)]
    conv = pcapng.from_pcap(_pcap(order, nsec, frames), "pi2-c1", "container pi2-c1, eth0", received=7,
                            dropped=1)
    assert conv.packets == 2 and conv.cut_bytes == 0
    (st,) = pcapng.interfaces(conv.data)
    assert (st.name, st.description, st.packets, st.bytes) == ("pi2-c1", "container pi2-c1, eth0", 2, 60 + 1514)
    assert (st.received, st.dropped, st.os_dropped) == (7, 1, None)
    # an independent reader (scapy) agrees on the frames, their interface and their timestamps
    path = tmp_path / "x.pcapng"
    path.write_bytes(conv.data)
    with PcapNgReader(str(path)) as reader:
        pkts = list(reader)
    assert [bytes(p) for p in pkts] == [f[2] for f in frames]
    scale = 1e9 if nsec else 1e6
    assert [float(p.time) for p in pkts] == pytest.approx([s + f / scale for s, f, _d, _o in frames], abs=1e-6)
    assert {p.sniffed_on for p in pkts} == {"pi2-c1"}


def test_a_pcap_stream_cut_inside_a_record_keeps_the_whole_ones_and_says_how_much_was_cut():
    data = _pcap("<", False, [(1, 0, b"\x01" * 60, 60), (2, 0, b"\x02" * 60, 60)])
    conv = pcapng.from_pcap(data[:-10], "x", "y")
    assert conv.packets == 1 and conv.cut_bytes == 16 + 50
    assert pcapng.interfaces(conv.data)[0].dropped is None  # unknown, not zero
    with pytest.raises(pcapng.PcapngError, match="not a pcap stream"):
        pcapng.from_pcap(b"\0" * 40, "x", "y")
    with pytest.raises(pcapng.PcapngError, match="shorter than"):
        pcapng.from_pcap(b"\xd4\xc3\xb2\xa1", "x", "y")


def test_sequence_coverage_counts_each_byte_once_and_a_missed_packet_as_a_gap():
    isn = (1 << 32) - 100  # the sequence space wraps inside the connection
    syn = Packet(0.0, "a", "10.0.0.1", "10.0.0.2", 40000, 5999, 0x02, isn, b"", 0)

    def data(t: float, off: int, n: int, iface: str = "a") -> Packet:
        return Packet(t, iface, "10.0.0.1", "10.0.0.2", 40000, 5999, 0x10, (isn + 1 + off) % (1 << 32), b"", n)

    ack = Packet(0.5, "a", "10.0.0.2", "10.0.0.1", 5999, 40000, 0x10, 7, b"", 0)
    pkts = [syn, data(0.1, 0, 1000), data(0.2, 1000, 1000), data(0.3, 1000, 1000), data(0.4, 500, 2000), ack]
    assert capture_check.sequence_coverage(pkts, 5999) == {"a": 2500}  # retransmissions and overlap once
    gap = [syn, data(0.1, 0, 1000), data(0.3, 2000, 1000)]
    assert capture_check.sequence_coverage(gap, 5999) == {"a": 2000}
    # data on an interface that never saw the SYN is not attributed to any connection
    assert capture_check.sequence_coverage([syn, data(0.1, 0, 1000, iface="b")], 5999) == {}


@pytest.mark.parametrize("order", ["<", ">"])
def test_statistics_are_added_for_interfaces_a_merge_left_without(order):
    data = _file(order)  # interface 1 has a statistics block, interface 0 none
    named = pcapng.rename_interfaces(data, [("a", "x"), ("b", "y")])
    added = pcapng.add_statistics(named, {"a": (10, 2, None), "b": (99, 99, 99), "c": (1, 1, 1)})
    a, b = pcapng.interfaces(added)
    assert (a.received, a.dropped, a.os_dropped, a.packets) == (10, 2, None, 1)
    assert (b.received, b.dropped) == (5, 3)  # its own block is kept, not overwritten
    assert pcapng.add_statistics(added, {"a": (10, 2, None)}) == added  # nothing twice


def test_flows_on_one_persistent_connection_are_told_apart_by_stream_offset():
    """Three flows in turn on one connection whose sequence numbers wrap: each is found at the offset
    where the previous message ended, timed from its own first byte to its own acknowledgement."""
    isn = (1 << 32) - 5_000  # the stream wraps inside the first flow
    pkts = [Packet(0.5, "a", "10.0.0.1", "10.0.0.2", 40001, 5301, 0x02, isn, b"", 0)]
    offset, t = 0, 1.0
    for flow_id, size in ((3, 20_000), (4, 1_000), (5, 0)):
        pkts += _message("a", t, 40001, isn, offset, flow_id, size)
        offset += 16 + size
        t += 0.1
    # a stray payload packet from the server that names no flow of this connection changes nothing
    pkts.append(Packet(1.05, "a", "10.0.0.2", "10.0.0.1", 5301, 40001, 0x18, 1, (99).to_bytes(8, "big") * 2, 16))
    seen = {s.flow_id: s for s in capture_check.connections(pkts, 5301)}
    assert sorted(seen) == [3, 4, 5]
    assert [seen[i].client_bytes for i in (3, 4, 5)] == [20_016, 1_016, 16]
    assert seen[3].fct_us == pytest.approx((14 * 0.0001 + 0.001) * 1e6, rel=1e-6)
    assert seen[4].fct_us == pytest.approx((0.0001 + 0.001) * 1e6, rel=1e-6)
    assert seen[4].start == pytest.approx(1.1)


def test_a_flow_that_opened_its_own_connection_is_timed_from_the_syn():
    pkts = _conn("a", 2.0, 40002, 9, 1_000)  # SYN at 2.0, header at 2.001, acknowledgement at 2.0021
    seen = capture_check.connections(pkts, 5301)
    assert seen[0].syn == pytest.approx(2.0) and seen[0].start == pytest.approx(2.001)
    flow = FlowRecord(id=9, src="a", dst="b", tenant="", size=1_000, scheduled=0, job=-1, status="done",
                      start=0.0, lateness_us=0, fct_us=2_100.0, sent=1_000, bytes_received=1_000, warmup=False,
                      ideal_us=80, handshake=True)
    out = capture_check.compare([flow], seen)
    assert out["flows"][0]["capture_fct_us"] == pytest.approx(2_100.0)
    assert out["abs_diff_us"]["max"] == pytest.approx(0.0, abs=1e-6)


def test_a_flow_seen_only_along_its_path_is_reported_apart_from_the_sender_check():
    # Flow 7 from "a" is captured at "a" and at a link end; flow 8 from "c" only at that link end,
    # 30 ms after its sender sent it (a queue before the link): that is path delay, not clock error.
    pkts = (_conn("a", 1.0, 40000, 7, 10_000) + _conn("agg1>tor1", 1.0004, 40000, 7, 10_000)
            + _conn("agg1>tor1", 1.5, 40001, 8, 1_000))
    seen = capture_check.connections(pkts, 5301)
    at = {(s.flow_id, s.iface): s for s in seen}
    f7 = FlowRecord(id=7, src="a", dst="b", tenant="", size=10_000, scheduled=0, job=-1, status="done",
                    start=0.0, lateness_us=0, fct_us=at[(7, "a")].fct_us + 100, sent=10_000,
                    bytes_received=10_000, warmup=False, ideal_us=800)
    f8 = FlowRecord(id=8, src="c", dst="b", tenant="", size=1_000, scheduled=0, job=-1, status="done",
                    start=0.0, lateness_us=0, fct_us=at[(8, "agg1>tor1")].fct_us + 30_000, sent=1_000,
                    bytes_received=1_000, warmup=False, ideal_us=80)
    out = capture_check.compare([f7, f8], seen)
    assert out["compared"] == 1 and out["abs_diff_us"]["max"] == pytest.approx(100)
    assert [r["at_sender"] for r in out["flows"]] == [True, False]
    assert out["midpath"]["compared"] == 1 and out["midpath"]["abs_diff_us"]["p50"] == pytest.approx(30_000)
