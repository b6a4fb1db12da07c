"""The runner finishes TCP/UDP checksums that OVS's userspace TSO leaves partial in packet-ins,
and leaves every other packet exactly as it came."""

from __future__ import annotations

import struct

import pytest
from os_ken.lib.packet import ethernet, ipv4, ipv6, packet, tcp, udp, vlan
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller_apps.fastpath import _sum16, repair_partial_checksum
from controller_apps.runner import install_checksum_repair

A, B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def frame(l3, l4, payload: bytes = b"hello, a payload long enough: no padding", tagged: bool = False) -> bytes:
    pkt = packet.Packet()
    if tagged:
        pkt.add_protocol(ethernet.ethernet(dst=B, src=A, ethertype=0x8100))
        pkt.add_protocol(vlan.vlan(vid=7, ethertype=0x0800 if isinstance(l3, ipv4.ipv4) else 0x86DD))
    else:
        pkt.add_protocol(ethernet.ethernet(dst=B, src=A, ethertype=0x0800 if isinstance(l3, ipv4.ipv4) else 0x86DD))
    pkt.add_protocol(l3)
    pkt.add_protocol(l4)
    pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data)


def partial(data: bytes, l4_offset: int, field: int, pseudo: bytes) -> bytes:
    """What a sender with checksum offload puts on the wire: the folded pseudo-header sum."""
    return data[:l4_offset + field] + struct.pack("!H", _sum16(pseudo)) + data[l4_offset + field + 2:]


def tcp4(tagged: bool = False) -> tuple[bytes, int]:
    data = frame(ipv4.ipv4(src="10.0.0.1", dst="10.0.0.2", proto=6), tcp.tcp(src_port=1234, dst_port=80, bits=0x02),
                 tagged=tagged)
    return data, 18 if tagged else 14


def test_partial_tcp_checksum_is_finished_to_what_the_stack_would_compute():
    good, eth_len = tcp4()
    seg_len = len(good) - eth_len - 20
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6]) + struct.pack("!H", seg_len)
    bad = partial(good, eth_len + 20, 16, pseudo)
    assert bad != good
    assert repair_partial_checksum(bad) == good


def test_vlan_tagged_and_ipv6_and_udp_are_repaired_too():
    good, _ = tcp4(tagged=True)
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6]) + struct.pack("!H", len(good) - 18 - 20)
    assert repair_partial_checksum(partial(good, 38, 16, pseudo)) == good

    good6 = frame(ipv6.ipv6(src="fd00::1", dst="fd00::2", nxt=17), udp.udp(src_port=5, dst_port=6))
    seg_len = len(good6) - 14 - 40
    import socket

    pseudo6 = (socket.inet_pton(socket.AF_INET6, "fd00::1") + socket.inet_pton(socket.AF_INET6, "fd00::2")
               + struct.pack("!IxxxB", seg_len, 17))
    assert repair_partial_checksum(partial(good6, 54, 6, pseudo6)) == good6


@pytest.mark.parametrize("case", ["valid", "corrupt", "udp-no-checksum", "fragment", "arp", "short"])
def test_everything_else_is_left_alone(case):
    good, _ = tcp4()
    if case == "valid":
        data = good
    elif case == "corrupt":
        data = good[:50] + b"\x12\x34" + good[52:]  # a wrong checksum that is not a partial sum
    elif case == "udp-no-checksum":
        data = frame(ipv4.ipv4(src="10.0.0.1", dst="10.0.0.2", proto=17), udp.udp(src_port=1, dst_port=2))
        data = data[:40] + b"\x00\x00" + data[42:]
    elif case == "fragment":
        data = good[:20] + b"\x20\x00" + good[22:]  # more-fragments set
    elif case == "arp":
        data = good[:12] + b"\x08\x06" + good[14:]
    else:
        data = good[:30]
    assert repair_partial_checksum(data) is None


def test_installed_parser_hands_apps_the_repaired_frame():
    good, eth_len = tcp4()
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6]) + struct.pack("!H", len(good) - eth_len - 20)
    bad = partial(good, eth_len + 20, 16, pseudo)
    match = struct.pack("!HHHBBI", 1, 12, 0x8000, 0, 4, 3) + bytes(4)
    body = struct.pack("!IHBBQ", ofp.OFP_NO_BUFFER, len(bad), 0, 0, 0) + match + b"\x00\x00" + bad
    raw = struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, 8 + len(body), 1) + body

    class Datapath:
        ofproto, ofproto_parser = ofp, parser

    install_checksum_repair()
    install_checksum_repair()  # idempotent: wrapping twice would still work, but must not stack
    msg = ofproto_parser.msg(Datapath(), ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, len(raw), 1, raw)
    assert msg.match["in_port"] == 3 and msg.data == good
    assert getattr(parser._MSG_PARSERS[ofp.OFPT_PACKET_IN], "picloud_repair", False)


def test_ethernet_padding_is_not_part_of_the_segment():
    good = frame(ipv4.ipv4(src="10.0.0.1", dst="10.0.0.2", proto=6), tcp.tcp(src_port=1, dst_port=2, bits=0x10),
                 payload=b"hi")
    assert len(good) == 60  # padded to the Ethernet minimum
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6]) + struct.pack("!H", 20 + 2)
    assert repair_partial_checksum(partial(good, 34, 16, pseudo)) == good


@pytest.mark.parametrize("version", ["ofproto_v1_0", "ofproto_v1_3", "ofproto_v1_5"])
def test_features_reply_sets_datapath_id_before_apps_see_it(version):
    """A Ryu app's EventOFPSwitchFeatures handler reads datapath.id (simple_switch_rest_13 keys its
    tables by it); with native threads os-ken's own handler may not have set it yet."""
    import importlib

    from os_ken.ofproto import ofproto_parser

    ofp_mod = importlib.import_module(f"os_ken.ofproto.{version}")
    parser_mod = importlib.import_module(f"os_ken.ofproto.{version}_parser")

    class Datapath:
        ofproto, ofproto_parser = ofp_mod, parser_mod
        id = None

    body = struct.pack("!QIBB2xII", 0x1234, 0, 1, 0, 0, 0)
    raw = struct.pack("!BBHI", ofp_mod.OFP_VERSION, ofp_mod.OFPT_FEATURES_REPLY, 8 + len(body), 7) + body
    install_checksum_repair()
    dp = Datapath()
    msg = ofproto_parser.msg(dp, ofp_mod.OFP_VERSION, ofp_mod.OFPT_FEATURES_REPLY, len(raw), 7, raw)
    assert msg.datapath_id == 0x1234 and dp.id == 0x1234
