"""The REST API with Flask's test client: Ryu ofctl_rest's JSON shapes, /state, errors.

The datapath is a fake that answers each multipart request at once with a real os-ken reply
message, delivered the way the os-ken event thread would (RestStatsApp._deliver), so the
conversion code under test is os-ken's own ofctl_v1_3."""

from __future__ import annotations

import pytest
from flask import Blueprint
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller_apps import api, stats_wait
from controller_apps.state import STATE


class AnsweringDatapath:
    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, dpid: int, split_flows: bool = False) -> None:
        self.id = dpid
        self.xid = 0
        self.sent: list = []
        self.split_flows = split_flows

    def set_xid(self, msg) -> None:
        self.xid += 1
        msg.set_xid(self.xid)

    def _reply(self, cls, body, xid, flags=0):
        reply = cls(self)
        reply.body, reply.xid, reply.flags = body, xid, flags
        api.RestStatsApp._deliver(reply)

    def send_msg(self, msg) -> None:
        self.sent.append(msg)
        if isinstance(msg, parser.OFPFlowStatsRequest):
            flows = [parser.OFPFlowStats(
                table_id=0, duration_sec=3, duration_nsec=5, priority=10 + i, idle_timeout=0,
                hard_timeout=0, flags=0, cookie=7, packet_count=2, byte_count=128,
                match=parser.OFPMatch(in_port=1, eth_dst="02:00:00:00:00:02"),
                instructions=[parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(2)])]) for i in range(2)]
            if self.split_flows:  # a multipart reply in two messages
                self._reply(parser.OFPFlowStatsReply, flows[:1], msg.xid, ofp.OFPMPF_REPLY_MORE)
                self._reply(parser.OFPFlowStatsReply, flows[1:], msg.xid)
            else:
                self._reply(parser.OFPFlowStatsReply, flows, msg.xid)
        elif isinstance(msg, parser.OFPPortStatsRequest):
            stats = [parser.OFPPortStats(port_no=1, rx_packets=9, tx_packets=6, rx_bytes=738, tx_bytes=252,
                                         rx_dropped=0, tx_dropped=0, rx_errors=0, tx_errors=0,
                                         rx_frame_err=0, rx_over_err=0, rx_crc_err=0, collisions=0,
                                         duration_sec=12, duration_nsec=9)]
            self._reply(parser.OFPPortStatsReply, stats, msg.xid)
        elif isinstance(msg, parser.OFPGroupStatsRequest):
            stats = [parser.OFPGroupStats(length=56, group_id=1, ref_count=1, packet_count=0, byte_count=0,
                                          duration_sec=1, duration_nsec=2,
                                          bucket_stats=[parser.OFPBucketCounter(0, 0)])]
            self._reply(parser.OFPGroupStatsReply, stats, msg.xid)
        elif isinstance(msg, parser.OFPMeterStatsRequest):
            stats = [parser.OFPMeterStats(meter_id=1, flow_count=0, packet_in_count=0, byte_in_count=0,
                                          duration_sec=1, duration_nsec=2,
                                          band_stats=[parser.OFPMeterBandStats(0, 0)])]
            stats[0].len = 56
            self._reply(parser.OFPMeterStatsReply, stats, msg.xid)


TOKEN = "unit-test-token"


@pytest.fixture
def client():
    """A client that sends the API token, as `Testbed.controller_request` does."""
    STATE.reset()
    api.WAITERS.clear()
    client = api.create_app(api.api_policy("127.0.0.1", TOKEN)).test_client()
    client.environ_base["HTTP_X_PICLOUD_TOKEN"] = TOKEN
    yield client
    STATE.reset()
    api.WAITERS.clear()


def test_switches_lists_connected_dpids_as_integers(client):
    STATE.datapaths[5] = AnsweringDatapath(5)
    STATE.datapaths[2] = AnsweringDatapath(2)
    assert client.get("/stats/switches").get_json() == [2, 5]


@pytest.mark.parametrize("split", [False, True])
def test_flow_stats_have_ofctl_rest_shape(client, split):
    STATE.datapaths[1] = AnsweringDatapath(1, split_flows=split)
    body = client.get("/stats/flow/1").get_json()
    assert list(body) == ["1"]  # keyed by the decimal dpid string, as ofctl_rest
    assert len(body["1"]) == 2
    flow = body["1"][0]
    assert set(flow) >= {"priority", "cookie", "idle_timeout", "hard_timeout", "actions", "match",
                         "byte_count", "duration_sec", "duration_nsec", "packet_count", "length",
                         "flags", "table_id"}
    assert flow["actions"] == ["OUTPUT:2"]
    assert flow["match"] == {"in_port": 1, "dl_dst": "02:00:00:00:00:02"}
    assert stats_wait.pending() == {}  # the request is filed away once the last part arrived


def test_port_group_meter_stats_shapes(client):
    STATE.datapaths[1] = AnsweringDatapath(1)
    port = client.get("/stats/port/1").get_json()["1"][0]
    assert port["port_no"] == 1 and port["rx_bytes"] == 738 and port["tx_packets"] == 6
    assert {"rx_dropped", "tx_errors", "rx_crc_err", "collisions", "duration_nsec"} <= set(port)
    group = client.get("/stats/group/1").get_json()["1"][0]
    assert group["group_id"] == 1 and group["bucket_stats"] == [{"packet_count": 0, "byte_count": 0}]
    meter = client.get("/stats/meter/1").get_json()["1"][0]
    assert meter["meter_id"] == 1 and meter["band_stats"] == [{"packet_band_count": 0, "byte_band_count": 0}]


def test_port_stats_for_one_port_asks_the_switch_for_that_port(client):
    dp = AnsweringDatapath(1)
    STATE.datapaths[1] = dp
    client.get("/stats/port/1/3")
    assert dp.sent[-1].port_no == 3


def test_flowentry_add_sends_the_flow_mod_ryu_would(client):
    dp = AnsweringDatapath(0x10)
    STATE.datapaths[0x10] = dp
    entry = {"dpid": 16, "table_id": 2, "priority": 11, "cookie": 3,
             "match": {"in_port": 1, "dl_type": 2048, "nw_dst": "10.0.0.2"},
             "actions": [{"type": "OUTPUT", "port": 2}]}
    response = client.post("/stats/flowentry/add", json=entry)
    assert response.status_code == 200
    mod = dp.sent[-1]
    assert isinstance(mod, parser.OFPFlowMod) and mod.command == ofp.OFPFC_ADD
    assert (mod.table_id, mod.priority, mod.cookie) == (2, 11, 3)
    assert mod.match["in_port"] == 1 and mod.match["ipv4_dst"] == "10.0.0.2"
    assert mod.instructions[0].actions[0].port == 2


def test_flowentry_delete_uses_delete_command(client):
    dp = AnsweringDatapath(1)
    STATE.datapaths[1] = dp
    response = client.post("/stats/flowentry/delete", data='{"dpid": 1, "match": {"in_port": 4}}',
                           content_type="application/json")
    assert response.status_code == 200
    assert dp.sent[-1].command == ofp.OFPFC_DELETE and dp.sent[-1].match["in_port"] == 4


def test_a_body_without_json_content_type_is_refused_before_parsing(client):
    """Issue 19 finding 1: text/plain is what a web page may POST cross-origin without a preflight;
    Ryu parsed any body. Was 200 and an OFPFlowMod sent."""
    dp = AnsweringDatapath(1)
    STATE.datapaths[1] = dp
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        response = client.post("/stats/flowentry/add", data='{"dpid": 1, "priority": 65535}', content_type=ctype)
        assert response.status_code == 415, (ctype, response.status_code)
    assert dp.sent == []


def test_errors_are_json_with_ryu_status_codes(client):
    assert client.get("/stats/flow/99").status_code == 404
    assert client.get("/stats/flow/notanumber").status_code == 400
    STATE.datapaths[1] = AnsweringDatapath(1)
    assert client.post("/stats/flowentry/add", data="{bad json", content_type="application/json").status_code == 400
    missing = client.post("/stats/flowentry/add", json={"match": {}})
    assert missing.status_code == 400 and "dpid" in missing.get_json()["error"]
    assert client.post("/stats/flowentry/explode", json={"dpid": 1}).status_code == 404


def test_state_and_events_since(client):
    STATE.event("test", "first")
    STATE.event("test", "second")
    snap = client.get("/state").get_json()
    assert set(snap) == {"switches", "links", "hosts", "diff", "events", "ready"}
    first_t = snap["events"][0]["t"]
    later = client.get(f"/state/events?since={first_t}").get_json()
    assert [e["text"] for e in later] == ["second"]
    assert client.get("/state/events?since=yesterday").status_code == 400


def test_registered_blueprints_are_served():
    bp = Blueprint("extra_test", __name__)
    bp.add_url_rule("/extra/ping", "ping", lambda: {"pong": True})
    api.register_blueprint(bp)
    try:
        client = api.create_app().test_client()
        assert client.get("/extra/ping").get_json() == {"pong": True}
        # ...and behind the same guard: a change through a registered route needs the token too.
        bp_post = Blueprint("extra_test_post", __name__)
        hit = []
        bp_post.add_url_rule("/extra/poke", "poke", lambda: hit.append(1) or {"ok": True}, methods=["POST", "PUT"])
        api.register_blueprint(bp_post)
        client = api.create_app(api.api_policy("127.0.0.1", TOKEN)).test_client()
        assert client.post("/extra/poke", json={}).status_code == 401
        assert client.put("/extra/poke", json={}, headers={"X-PiCloud-Token": "nope"}).status_code == 403
        assert hit == []
        assert client.post("/extra/poke", json={}, headers={"X-PiCloud-Token": TOKEN}).status_code == 200
    finally:
        api._extra_blueprints[:] = [b for b in api._extra_blueprints if not b.name.startswith("extra_test")]


def test_port_status_refreshes_the_port_list_in_state():
    from os_ken.controller import ofp_event

    STATE.reset()
    app = api.RestStatsApp()
    dp = AnsweringDatapath(0x42)
    desc = parser.OFPPort(port_no=3, hw_addr="02:00:00:00:00:09", name=b"pc1p0p3", config=0, state=0,
                          curr=0, advertised=0, supported=0, peer=0, curr_speed=0, max_speed=0)
    app.port_status_handler(ofp_event.EventOFPPortStatus(parser.OFPPortStatus(dp, ofp.OFPPR_ADD, desc)))
    request = dp.sent[-1]
    assert isinstance(request, parser.OFPPortDescStatsRequest)
    reply = parser.OFPPortDescStatsReply(dp)
    reply.body, reply.xid, reply.flags = [desc], 1, 0
    app.port_desc_handler(ofp_event.EventOFPPortDescStatsReply(reply))
    (switch,) = STATE.snapshot()["switches"]
    assert switch["ports"] == [{"port_no": 3, "name": "pc1p0p3", "hw_addr": "02:00:00:00:00:09", "up": True}]
    STATE.reset()


class SilentDatapath(AnsweringDatapath):
    """A switch that never answers (it left, or its reply was lost)."""

    def send_msg(self, msg) -> None:
        self.sent.append(msg)


def test_a_switch_that_never_answers_costs_the_call_a_bounded_wait_and_a_504(client, monkeypatch):
    # os-ken's own wait (a hub.Event under the native hub) ignored its timeout: this call hung.
    monkeypatch.setattr(stats_wait, "STATS_REPLY_TIMEOUT", 0.2)
    STATE.datapaths[3] = SilentDatapath(3)
    response = client.get("/stats/flow/3")
    assert response.status_code == 504
    assert "did not answer a stats request within" in response.get_json()["error"]
    assert stats_wait.pending() == {}  # the abandoned request is gone: a late reply is dropped
