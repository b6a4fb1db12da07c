"""bench/cbench.py's fake switch speaks valid OpenFlow 1.3 (os-ken's own parser reads its
messages), and l2_learning answers each of its buffered packet-ins with exactly one message, which
is what the benchmark's outstanding-window accounting assumes."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

from flowtable import FakeDatapath
from os_ken.controller import ofp_event
from os_ken.lib.packet import ipv4, packet, udp
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller_apps.l2_learning import L2Learning

_spec = importlib.util.spec_from_file_location("cbench", Path(__file__).resolve().parents[2] / "bench" / "cbench.py")
assert _spec is not None and _spec.loader is not None
cbench = importlib.util.module_from_spec(_spec)
sys.modules["cbench"] = cbench  # dataclasses look their module up while the class is built
_spec.loader.exec_module(cbench)




def parse(dp, raw: bytes):
    version, msg_type, length, xid = struct.unpack_from("!BBHI", raw)
    assert version == ofp.OFP_VERSION and length == len(raw)
    return ofproto_parser.msg(dp, version, msg_type, length, xid, raw)


def test_packet_in_parses_with_in_port_buffer_and_a_valid_udp_frame():
    dp = FakeDatapath()
    msg = parse(dp, cbench.packet_in(3, 5, 0x105))
    assert isinstance(msg, parser.OFPPacketIn)
    assert msg.buffer_id == 0x105 and msg.match["in_port"] == cbench.host_port(5)
    pkt = packet.Packet(msg.data)
    ip, transport = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(udp.udp)
    assert ip.src == "10.3.0.5" and ip.dst == "10.3.0.6" and transport.dst_port == 9
    assert cbench.checksum(msg.data[14:34]) == 0  # the IPv4 header checksum verifies


def test_features_and_port_desc_replies_parse():
    dp = FakeDatapath()
    features = parse(dp, cbench.features_reply(7, 0xCB0000000001))
    assert features.datapath_id == 0xCB0000000001 and features.xid == 7
    body = struct.pack("!HH4x", cbench.OFPMP_PORT_DESC, 0) + cbench.port_desc(2)
    reply = parse(dp, cbench.header(cbench.OFPT_MULTIPART_REPLY, 8 + len(body), 9) + body)
    assert [p.port_no for p in reply.body] == [1, 2, 3, 4]
    assert reply.body[0].name == b"cb2p1"


def test_l2_learning_answers_every_cbench_packet_in_with_one_message():
    app, dp = L2Learning(), FakeDatapath()
    for _ in range(2):
        for host in range(cbench.HOSTS_PER_SWITCH):
            before = len(dp.sent)
            msg = parse(dp, cbench.packet_in(0, host, 0x100 + host))
            app.packet_in_handler(ofp_event.EventOFPPacketIn(msg))
            assert len(dp.sent) == before + 1
    # Second round: every destination is known, so each answer is a buffered flow-mod.
    last = dp.sent[-cbench.HOSTS_PER_SWITCH:]
    assert all(isinstance(m, parser.OFPFlowMod) and m.buffer_id != ofp.OFP_NO_BUFFER for m in last)
