"""Stats requests end however the switch answers: replies, errors, replies os-ken cannot parse,
and the two OpenFlow 1.5 answers of OVS 3.1 that os-ken did not expect (issue 18: Ryu's
ofctl_rest `/stats/flow` and `/stats/meterfeatures` waited on 1.5 switches until they gave up).

The datapath is a fake that answers the way OVS 3.1 does on the wire, with real os-ken messages;
the conversions under test are os-ken's own ofctl_v1_5, called as Ryu's ofctl_rest calls them."""

from __future__ import annotations

import time

import pytest
from os_ken.lib import ofctl_v1_3, ofctl_v1_5
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp13
from os_ken.ofproto import ofproto_v1_3_parser as parser13
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from controller_apps import api, stats_wait
from controller_apps.state import STATE

# OVS 3.1's answer to an OpenFlow 1.5 meter-features request, as captured from the shared
# ovs-vswitchd (xid 0x78a2d45b): a 16-byte body, the OpenFlow 1.3 layout.
OVS_METER_FEATURES_V15 = bytes.fromhex("06130020 78a2d45b 000b0000 00000000 00040000 00000002 0000000f 08000000")


class Ovs15Datapath:
    """An OpenFlow 1.5 switch answering like OVS 3.1: OFPMP_FLOW_STATS refused with
    OFPBRC_BAD_MULTIPART, OFPMP_FLOW_DESC answered (in two parts)."""

    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, dpid: int) -> None:
        self.id = dpid
        self.xid = 0
        self.sent: list = []

    def set_xid(self, msg) -> None:
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg) -> None:
        self.sent.append(msg)
        if type(msg) is parser.OFPFlowStatsRequest:
            error = parser.OFPErrorMsg(self, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART)
            error.xid = msg.xid
            stats_wait.deliver_error(error)
        elif type(msg) is parser.OFPFlowDescStatsRequest:
            for i, flags in enumerate((ofp.OFPMPF_REPLY_MORE, 0)):
                stats = parser.OFPStats(duration=(7, 5), idle_time=(1, 0), packet_count=3 + i, byte_count=300)
                match = parser.OFPMatch(in_port=1 + i)
                for part in (stats, match):
                    part.serialize(bytearray(), 0)  # sets .length, as parsing the switch's bytes does
                desc = parser.OFPFlowDesc(table_id=0, priority=10 + i, idle_timeout=0, hard_timeout=0, flags=0,
                                          importance=0, cookie=0, match=match, stats=stats, instructions=[])
                reply = parser.OFPFlowDescStatsReply(self, body=[desc], flags=flags)
                reply.xid = msg.xid
                assert stats_wait.deliver(reply)


@pytest.fixture(autouse=True)
def installed():
    stats_wait.install()
    yield
    assert stats_wait.pending() == {}  # every request is filed away however it ended


def test_v15_flow_stats_refused_by_the_switch_are_answered_from_flow_desc():
    dp = Ovs15Datapath(1)
    flows = ofctl_v1_5.get_flow_stats(dp, {}, {})["1"]
    # Asked once as OpenFlow 1.5 flow stats, refused, asked again as flow desc with the same filter.
    assert [type(m).__name__ for m in dp.sent] == ["OFPFlowStatsRequest", "OFPFlowDescStatsRequest"]
    assert [f["priority"] for f in flows] == [10, 11]
    assert [f["match"] for f in flows] == [{"in_port": 1}, {"in_port": 2}]
    assert [f["stats"]["packet_count"] for f in flows] == [3, 4]
    assert all(f["reason"] == ofp.OFPFSR_STATS_REQUEST and f["table_id"] == 0 for f in flows)
    # ofp_flow_stats on the wire: 8 bytes, the match (12) padded to 16, the stats (4 + duration 12 +
    # idle_time 12 + packet_count 12 + byte_count 12 = 52) padded to 56.
    assert flows[0]["length"] == 8 + 16 + 56


def test_the_fallback_keeps_the_requests_filter():
    dp = Ovs15Datapath(1)
    ofctl_v1_5.get_flow_stats(dp, {}, {"table_id": 3, "cookie": 9, "cookie_mask": 15, "match": {"in_port": 2}})
    first, second = dp.sent
    for field in ("table_id", "out_port", "out_group", "cookie", "cookie_mask", "flags"):
        assert getattr(first, field) == getattr(second, field)
    assert second.match.to_jsondict() == first.match.to_jsondict()


class RefusingDatapath(Ovs15Datapath):
    """Refuses every request with OFPBRC_BAD_TYPE."""

    def send_msg(self, msg) -> None:
        self.sent.append(msg)
        error = parser.OFPErrorMsg(self, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)
        error.xid = msg.xid
        stats_wait.deliver_error(error)


def test_a_refused_request_ends_at_once_with_the_errors_names():
    started = time.monotonic()
    with pytest.raises(stats_wait.SwitchRefused, match=r"switch 0000000000000002 refused the request: "
                       r"OFPET_BAD_REQUEST\(1\) OFPBRC_BAD_TYPE\(1\)"):
        ofctl_v1_5.get_port_stats(RefusingDatapath(2), {})
    assert time.monotonic() - started < stats_wait.STATS_REPLY_TIMEOUT / 2  # not the timeout


def test_meter_features_in_the_13_layout_ovs_sends_on_15_parse():
    (version, msg_type, msg_len, xid) = ofproto_parser.header(OVS_METER_FEATURES_V15)
    msg = ofproto_parser.msg(Ovs15Datapath(1), version, msg_type, msg_len, xid, OVS_METER_FEATURES_V15)
    assert msg is not None, "os-ken could not parse OVS's 1.5 meter-features reply"
    (features,) = msg.body
    assert (features.max_meter, features.band_types, features.capabilities, features.max_bands,
            features.max_color, features.features) == (0x40000, 2, 0xF, 8, 0, 0)
    assert features.length == 16


def test_meter_features_in_the_15_layout_still_parse():
    body = bytes.fromhex("00000010 00000002 0000000f 08000000 00000003 00000000")
    data = bytes.fromhex("06130028 00000001 000b0000 00000000") + body
    msg = ofproto_parser.msg(Ovs15Datapath(1), *ofproto_parser.header(data), data)
    (features,) = msg.body
    assert (features.max_meter, features.features, features.length) == (16, 3, 24)


class GarblingDatapath(Ovs15Datapath):
    """Answers a port-stats request with a reply os-ken cannot parse (a truncated body)."""

    def send_msg(self, msg) -> None:
        self.sent.append(msg)
        data = bytearray.fromhex("06130020 00000000 00040000 00000000 00000001 00000000 00000000 00000000")
        data[4:8] = msg.xid.to_bytes(4, "big")
        assert ofproto_parser.msg(self, *ofproto_parser.header(bytes(data)), bytes(data)) is None


def test_a_reply_os_ken_cannot_parse_ends_the_request_at_once():
    with pytest.raises(stats_wait.SwitchRefused, match="sent a reply os-ken 4.2.2 cannot parse"):
        ofctl_v1_5.get_port_stats(GarblingDatapath(4), {})


class Ovs13Datapath:
    """A 1.3 switch answering flow stats in two parts."""

    ofproto = ofp13
    ofproto_parser = parser13

    def __init__(self) -> None:
        self.id, self.xid = 5, 0

    def set_xid(self, msg) -> None:
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg) -> None:
        for i, flags in enumerate((ofp13.OFPMPF_REPLY_MORE, 0)):
            flow = parser13.OFPFlowStats(table_id=0, duration_sec=1, duration_nsec=0, priority=i, idle_timeout=0,
                                         hard_timeout=0, flags=0, cookie=0, packet_count=0, byte_count=0,
                                         match=parser13.OFPMatch(), instructions=[])
            reply = parser13.OFPFlowStatsReply(self, body=[flow], flags=flags)
            reply.xid = msg.xid
            assert api.RestStatsApp._deliver(reply)


def test_an_apps_own_waiters_stay_empty_so_its_handler_never_delivers_twice():
    """Ryu's ofctl_rest passes its `self.waiters` and has its own reply handler; it must find
    nothing there, or every part would be appended twice."""
    waiters: dict = {}
    flows = ofctl_v1_3.get_flow_stats(Ovs13Datapath(), waiters, {})["5"]
    assert [f["priority"] for f in flows] == [0, 1]
    assert waiters in ({}, {5: {}})


def test_the_api_answers_502_naming_the_refusal():
    STATE.reset()
    STATE.datapaths[2] = RefusingDatapath(2)
    try:
        client = api.create_app(api.api_policy("127.0.0.1", "t")).test_client()
        response = client.get("/stats/port/2")
        assert response.status_code == 502
        assert "OFPBRC_BAD_TYPE" in response.get_json()["error"]
    finally:
        STATE.reset()
