"""ryu.app.simple_switch*: the Ryu book's learning behaviour on every version, with os-ken's real
message classes and a datapath that records what the app sends."""

from __future__ import annotations

import inspect

import pytest
from os_ken.controller import ofp_event
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import (
    ofproto_v1_0,
    ofproto_v1_0_parser,
    ofproto_v1_2,
    ofproto_v1_2_parser,
    ofproto_v1_3,
    ofproto_v1_3_parser,
    ofproto_v1_4,
    ofproto_v1_4_parser,
    ofproto_v1_5,
    ofproto_v1_5_parser,
)

from controller_apps.ryu_apps import (
    simple_switch,
    simple_switch_12,
    simple_switch_13,
    simple_switch_14,
    simple_switch_15,
)

A, B = "02:00:00:00:00:01", "02:00:00:00:00:02"
OXM = [
    (simple_switch_12.SimpleSwitch12, ofproto_v1_2, ofproto_v1_2_parser),
    (simple_switch_13.SimpleSwitch13, ofproto_v1_3, ofproto_v1_3_parser),
    (simple_switch_14.SimpleSwitch14, ofproto_v1_4, ofproto_v1_4_parser),
    (simple_switch_15.SimpleSwitch15, ofproto_v1_5, ofproto_v1_5_parser),
]


class RecordingDatapath:
    def __init__(self, ofproto, parser, dpid: int = 1) -> None:
        self.ofproto, self.ofproto_parser, self.id = ofproto, parser, dpid
        self.sent: list = []

    def send_msg(self, msg) -> None:
        self.sent.append(msg)


def frame(src: str, dst: str, ethertype: int = ether_types.ETH_TYPE_IP) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst, src=src, ethertype=ethertype))
    pkt.serialize()
    return bytes(pkt.data) + b"\x00" * 46


def oxm_packet_in(dp, in_port: int, data: bytes):
    parser, ofp = dp.ofproto_parser, dp.ofproto
    kwargs = dict(buffer_id=ofp.OFP_NO_BUFFER, total_len=len(data), table_id=0, match=parser.OFPMatch(in_port=in_port),
                  data=data, reason=ofp.OFPR_NO_MATCH if ofp.OFP_VERSION < 0x05 else ofp.OFPR_TABLE_MISS)
    if ofp.OFP_VERSION >= 0x04:
        kwargs["cookie"] = 0
    msg = parser.OFPPacketIn(dp, **kwargs)
    msg.msg_len = msg.total_len = len(data)
    return ofp_event.EventOFPPacketIn(msg)


def test_signatures_subclasses_rely_on():
    for cls in (simple_switch_13.SimpleSwitch13, simple_switch_14.SimpleSwitch14, simple_switch_15.SimpleSwitch15):
        params = list(inspect.signature(cls.add_flow).parameters)
        assert params == ["self", "datapath", "priority", "match", "actions", "buffer_id"]
        assert hasattr(cls, "_packet_in_handler") and hasattr(cls, "switch_features_handler")
    assert list(inspect.signature(simple_switch.SimpleSwitch.add_flow).parameters) == \
        ["self", "datapath", "in_port", "dst", "src", "actions"]
    assert simple_switch_14.SimpleSwitch14.OFP_VERSIONS == [ofproto_v1_4.OFP_VERSION]


@pytest.mark.parametrize(("cls", "ofp", "parser"), OXM)
def test_learn_flood_then_install_and_forward(cls, ofp, parser):
    app, dp = cls(), RecordingDatapath(ofp, parser)
    app._packet_in_handler(oxm_packet_in(dp, 1, frame(A, B)))
    (flood,) = dp.sent
    assert isinstance(flood, parser.OFPPacketOut) and flood.actions[0].port == ofp.OFPP_FLOOD
    assert app.mac_to_port == {1: {A: 1}}
    dp.sent.clear()
    app._packet_in_handler(oxm_packet_in(dp, 2, frame(B, A)))
    mod, out = dp.sent
    assert isinstance(mod, parser.OFPFlowMod) and mod.match["eth_dst"] == A and mod.match["in_port"] == 2
    assert mod.instructions[0].actions[0].port == 1 and out.actions[0].port == 1
    if ofp.OFP_VERSION >= ofproto_v1_5.OFP_VERSION:
        assert out.match["in_port"] == 2  # 1.5 carries in_port in the packet-out's match
    else:
        assert out.in_port == 2


@pytest.mark.parametrize(("cls", "ofp", "parser"), OXM[1:])
def test_table_miss_on_features_from_1_3(cls, ofp, parser):
    app, dp = cls(), RecordingDatapath(ofp, parser)
    msg = parser.OFPSwitchFeatures(dp)
    app.switch_features_handler(ofp_event.EventOFPSwitchFeatures(msg))
    (mod,) = dp.sent
    assert mod.priority == 0 and mod.instructions[0].actions[0].port == ofp.OFPP_CONTROLLER


def test_lldp_is_ignored():
    app, dp = simple_switch_13.SimpleSwitch13(), RecordingDatapath(ofproto_v1_3, ofproto_v1_3_parser)
    app._packet_in_handler(oxm_packet_in(dp, 1, frame(A, B, ether_types.ETH_TYPE_LLDP)))
    assert dp.sent == [] and app.mac_to_port == {}


def test_openflow_1_0_learning_switch():
    app, dp = simple_switch.SimpleSwitch(), RecordingDatapath(ofproto_v1_0, ofproto_v1_0_parser)

    def pin(in_port, data):
        msg = ofproto_v1_0_parser.OFPPacketIn(dp, buffer_id=ofproto_v1_0.OFP_NO_BUFFER, total_len=len(data),
                                              in_port=in_port, reason=ofproto_v1_0.OFPR_NO_MATCH, data=data)
        return ofp_event.EventOFPPacketIn(msg)

    app._packet_in_handler(pin(1, frame(A, B)))
    assert dp.sent[0].actions[0].port == ofproto_v1_0.OFPP_FLOOD
    dp.sent.clear()
    app._packet_in_handler(pin(2, frame(B, A)))
    mod, out = dp.sent
    assert isinstance(mod, ofproto_v1_0_parser.OFPFlowMod) and mod.match.in_port == 2 and mod.actions[0].port == 1
    assert out.in_port == 2
