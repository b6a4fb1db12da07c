"""l2_learning against a recording fake datapath: learn, flood unknown, install and forward known."""

from __future__ import annotations

from flowtable import FakeDatapath
from os_ken.controller import ofp_event
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller_apps.l2_learning import L2Learning
from controller_apps.pipeline import COOKIE_L2

A, B = "02:00:00:00:00:01", "02:00:00:00:00:02"




def frame(src: str, dst: str, ethertype: int = ether_types.ETH_TYPE_IP) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst, src=src, ethertype=ethertype))
    pkt.serialize()
    return bytes(pkt.data) + b"\x00" * 46


def packet_in(dp, in_port: int, data: bytes, buffer_id: int = ofp.OFP_NO_BUFFER):
    msg = parser.OFPPacketIn(dp, buffer_id=buffer_id, total_len=len(data), reason=ofp.OFPR_NO_MATCH,
                             table_id=0, cookie=0, match=parser.OFPMatch(in_port=in_port), data=data)
    return ofp_event.EventOFPPacketIn(msg)


def features(dp):
    msg = parser.OFPSwitchFeatures(dp)
    msg.datapath_id = dp.id
    return ofp_event.EventOFPSwitchFeatures(msg)


def test_connect_installs_table_miss_to_controller():
    app, dp = L2Learning(), FakeDatapath()
    app.switch_features_handler(features(dp))
    (mod,) = dp.sent
    assert isinstance(mod, parser.OFPFlowMod) and mod.priority == 0 and mod.table_id == 0
    assert mod.cookie == COOKIE_L2 and len(mod.match.fields) == 0
    action = mod.instructions[0].actions[0]
    assert action.port == ofp.OFPP_CONTROLLER and action.max_len == ofp.OFPCML_NO_BUFFER


def test_unknown_destination_floods_without_installing():
    app, dp = L2Learning(), FakeDatapath()
    app.packet_in_handler(packet_in(dp, 1, frame(A, B)))
    (out,) = dp.sent
    assert isinstance(out, parser.OFPPacketOut)
    assert [a.port for a in out.actions] == [ofp.OFPP_FLOOD] and out.in_port == 1
    assert out.data == frame(A, B)
    assert app.mac_to_port[1] == {A: 1}


def test_known_destination_installs_exact_flow_and_sends_out_that_port_only():
    app, dp = L2Learning(), FakeDatapath()
    app.packet_in_handler(packet_in(dp, 1, frame(A, B)))
    app.packet_in_handler(packet_in(dp, 2, frame(B, A)))
    mod, out = dp.sent[1:]
    assert isinstance(mod, parser.OFPFlowMod) and mod.priority == 1 and mod.cookie == COOKIE_L2
    assert dict(mod.match.items()) == {"in_port": 2, "eth_dst": A, "eth_src": B}
    assert [a.port for a in mod.instructions[0].actions] == [1]
    assert [a.port for a in out.actions] == [1]  # not flooded, not back out of port 2


def test_buffered_packet_is_released_by_the_flow_mod_alone():
    app, dp = L2Learning(), FakeDatapath()
    app.packet_in_handler(packet_in(dp, 1, frame(A, B)))
    dp.sent.clear()
    app.packet_in_handler(packet_in(dp, 2, frame(B, A), buffer_id=77))
    (mod,) = dp.sent
    assert mod.buffer_id == 77


def test_lldp_is_ignored_and_tables_are_per_switch():
    app, dp1, dp2 = L2Learning(), FakeDatapath(1), FakeDatapath(2)
    app.packet_in_handler(packet_in(dp1, 1, frame(A, "01:80:c2:00:00:0e", ether_types.ETH_TYPE_LLDP)))
    assert dp1.sent == [] and app.mac_to_port.get(1, {}) == {}
    app.packet_in_handler(packet_in(dp1, 3, frame(A, B)))
    app.packet_in_handler(packet_in(dp2, 1, frame(B, A)))
    assert [a.port for a in dp2.sent[-1].actions] == [ofp.OFPP_FLOOD]  # dp2 never learnt A
