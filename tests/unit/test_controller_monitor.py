"""monitor: rate arithmetic (pure) and the handlers against a recording fake datapath."""

from __future__ import annotations

import pytest
from flowtable import FakeDatapath
from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller_apps import api, monitor
from controller_apps.monitor import DEFAULT_CAPACITY_BPS, Monitor, PortSample, link_load, port_rates
from controller_apps.state import STATE
from topology.model import Topology, dpid


def topology() -> Topology:
    topo = Topology("m")
    topo.add_switch("s1")
    topo.add_pi("p1")
    topo.add_link("s1", "p1", bw=100)  # s1:1 - p1:1
    topo.add_container("c1", "p1")  # p1:2 - c1:1
    return topo


def port_reply(dp, counters: dict[int, tuple[int, int]]):
    msg = parser.OFPPortStatsReply(dp)
    msg.flags = 0
    msg.body = [parser.OFPPortStats(port_no=no, rx_packets=0, tx_packets=0, rx_bytes=rx, tx_bytes=tx,
                                    rx_dropped=0, tx_dropped=0, rx_errors=0, tx_errors=0, rx_frame_err=0,
                                    rx_over_err=0, rx_crc_err=0, collisions=0, duration_sec=0, duration_nsec=0)
                for no, (tx, rx) in counters.items()]
    return ofp_event.EventOFPPortStatsReply(msg)


@pytest.fixture
def app(monkeypatch):
    STATE.reset()
    STATE.set_intended(topology())
    clock = iter([100.0, 101.0, 102.0, 103.0, 104.0, 105.0])
    monkeypatch.setattr(monitor.time, "monotonic", lambda: next(clock))
    yield Monitor()
    STATE.reset()


def test_port_rates_and_counter_reset():
    assert port_rates(PortSample(0, 0, 0), PortSample(2, 250, 1000)) == (1000.0, 4000.0)
    assert port_rates(PortSample(0, 500, 500), PortSample(1, 100, 100)) == (0.0, 0.0)
    assert port_rates(PortSample(1, 0, 0), PortSample(1, 10, 10)) == (0.0, 0.0)


def test_link_load_takes_busier_direction_and_uses_rx_for_unpolled_end():
    rates = {("s1", 1): (10.0, 30.0), ("p1", 1): (30.0, 10.0), ("p1", 2): (5.0, 70.0)}
    assert link_load(rates, ("s1", 1), ("p1", 1)) == 30.0
    assert link_load(rates, ("p1", 2), ("c1", 1)) == 70.0  # the container sends 70 into p1:2
    assert link_load(rates, ("x", 1), ("y", 1)) is None


def test_poll_requests_port_and_flow_stats_for_all_ports_and_tables():
    dp = FakeDatapath(1)
    Monitor().request_stats(dp)
    port_req, flow_req = dp.sent
    assert isinstance(port_req, parser.OFPPortStatsRequest) and port_req.port_no == ofp.OFPP_ANY
    assert isinstance(flow_req, parser.OFPFlowStatsRequest) and flow_req.table_id == ofp.OFPTT_ALL
    dp.sent.clear()
    Monitor().request_stats(dp, flows=False)
    assert [type(m) for m in dp.sent] == [parser.OFPPortStatsRequest]


def test_flow_stats_are_asked_again_only_once_answered_or_presumed_lost(app):
    dp = FakeDatapath(dpid("s1"))
    app.request_stats(dp, now=10.0)
    app.request_stats(dp, now=11.0)  # the first is unanswered: ports only
    assert [type(m) for m in dp.sent] == [parser.OFPPortStatsRequest, parser.OFPFlowStatsRequest,
                                          parser.OFPPortStatsRequest]
    msg = parser.OFPFlowStatsReply(dp)
    msg.xid, msg.flags, msg.body = 1, 0, []
    app.flow_stats_handler(ofp_event.EventOFPFlowStatsReply(msg))
    dp.sent.clear()
    app.request_stats(dp, now=12.0)  # answered: asked again
    app.request_stats(dp, now=12.0 + monitor.FLOW_REPLY_TIMEOUT)  # unanswered that long: lost, asked again
    assert [type(m) for m in dp.sent].count(parser.OFPFlowStatsRequest) == 2
    assert monitor.may_ask_flows(None, 0.0) and not monitor.may_ask_flows(5.0, 6.0, timeout=30)


def test_flow_polling_slows_down_only_on_large_fabrics():
    assert monitor.flow_poll_interval(0) == monitor.POLL_INTERVAL
    assert monitor.flow_poll_interval(monitor.FLOW_ENTRIES_PER_SECOND) == monitor.POLL_INTERVAL
    assert monitor.flow_poll_interval(45_000) == 45_000 / monitor.FLOW_ENTRIES_PER_SECOND


def test_two_port_replies_give_link_utilisation_against_topology_bw(app):
    s1, p1 = FakeDatapath(dpid("s1")), FakeDatapath(dpid("p1"))
    app.port_stats_handler(port_reply(s1, {1: (0, 0)}))  # t=100
    app.port_stats_handler(port_reply(p1, {1: (0, 0), 2: (0, 0), ofp.OFPP_LOCAL: (0, 0)}))  # t=101
    app.port_stats_handler(port_reply(s1, {1: (2_500_000, 0)}))  # t=102: 10 Mbit/s s1 -> p1 over 2 s
    app.port_stats_handler(port_reply(p1, {1: (0, 2_500_000), 2: (0, 125_000_000)}))  # t=103
    links = {(ln["a"], ln["b"]): ln for ln in STATE.snapshot()["links"]}
    fabric = links[("p1", "s1")]
    assert fabric["bps"] == pytest.approx(10e6) and fabric["capacity_bps"] == 100e6
    assert fabric["util"] == pytest.approx(0.1)
    container = links[("c1", "p1")]
    assert container["bps"] == pytest.approx(500e6)  # c1 sent 125 MB in 2 s into p1:2
    assert container["capacity_bps"] == DEFAULT_CAPACITY_BPS and container["util"] == pytest.approx(0.5)
    assert all(key[0] != "p1" or key[1] != ofp.OFPP_LOCAL for key in app.rates)


def test_port_status_becomes_a_state_event_and_restarts_the_rate(app):
    dp = FakeDatapath(dpid("s1"))
    app.port_stats_handler(port_reply(dp, {1: (0, 0)}))
    app.port_stats_handler(port_reply(dp, {1: (1000, 0)}))
    assert ("s1", 1) in app.rates
    desc = parser.OFPPort(port_no=1, hw_addr="02:00:00:00:00:09", name=b"pc1s0p1", config=0,
                          state=ofp.OFPPS_LINK_DOWN, curr=0, advertised=0, supported=0, peer=0,
                          curr_speed=0, max_speed=0)
    app.port_status_handler(ofp_event.EventOFPPortStatus(parser.OFPPortStatus(dp, ofp.OFPPR_MODIFY, desc)))
    (event,) = [e for e in STATE.events() if e["kind"] == "port"]
    assert event["text"] == "port s1:1 (pc1s0p1) modified, down"
    assert ("s1", 1) not in app.rates and ("s1", 1) not in app.samples


def test_flow_stats_across_multipart_reply_served_with_rates(app):
    dp = FakeDatapath(dpid("s1"))

    def reply(byte_count: int, more: bool):
        msg = parser.OFPFlowStatsReply(dp)
        msg.xid, msg.flags = 9, ofp.OFPMPF_REPLY_MORE if more else 0
        msg.body = [parser.OFPFlowStats(table_id=2, duration_sec=0, duration_nsec=0, priority=100 + more,
                                        idle_timeout=0, hard_timeout=0, flags=0, cookie=1, packet_count=1,
                                        byte_count=byte_count, match=parser.OFPMatch(in_port=1 + more),
                                        instructions=[])]
        return ofp_event.EventOFPFlowStatsReply(msg)

    app.flow_stats_handler(reply(0, True))
    assert "s1" not in app.flows  # waits for the last part
    app.flow_stats_handler(reply(0, False))  # t=100
    app.flow_stats_handler(reply(1000, True))
    app.flow_stats_handler(reply(1000, False))  # t=101
    flows = api.create_app().test_client().get("/monitor/flows").get_json()["s1"]
    assert len(flows) == 2 and all(f["bps"] == pytest.approx(8000.0) for f in flows)
    assert {f["match"]["in_port"] for f in flows} == {1, 2}
