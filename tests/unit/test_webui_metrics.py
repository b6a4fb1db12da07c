"""Link utilisation from two samples of port counters."""

from __future__ import annotations

from topology.model import Topology
from webui.metrics import counters_by_port, down_links_from_state, link_rates


def _topo() -> Topology:
    t = Topology("m")
    t.add_switch("s1", role="tor")
    t.add_pi("p1")
    t.add_link("s1", "p1", bw=100)  # s1 port 1, p1 port 1
    t.add_container("c1", "p1")  # p1 port 2
    return t


def _c(**kw):
    return {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0, "rx_dropped": 0,
            "tx_dropped": 0, "rx_errors": 0, "tx_errors": 0} | kw


def test_counters_by_port_skips_local_and_parses_numbers():
    stats = [{"port_no": 1, "rx_bytes": 10, "tx_bytes": "20"}, {"port_no": "LOCAL", "tx_bytes": 5},
             {"port_no": "3", "tx_bytes": 7}, {"port_no": 0xFFFFFFFE, "tx_bytes": 9}]
    out = counters_by_port(stats)
    assert set(out) == {1, 3}
    assert out[1]["tx_bytes"] == 20 and out[1]["rx_errors"] == 0
    assert out[3]["tx_bytes"] == 7


def test_busier_direction_sets_the_rate_and_bw_sets_capacity():
    topo = _topo()
    prev = {"s1": {1: _c()}, "p1": {1: _c(), 2: _c()}}
    now = {"s1": {1: _c(tx_bytes=1_000_000)}, "p1": {1: _c(tx_bytes=2_500_000), 2: _c()}}
    rates = {r["id"]: r for r in link_rates(topo, now, prev, 2.0)}
    fabric = rates["s1:p1"]
    assert fabric["bps"] == 8 * 2_500_000 / 2.0  # p1 -> s1 is the busier direction
    assert fabric["util"] == round(10e6 / 100e6, 4)
    assert fabric["up"] is True
    assert [e["node"] for e in fabric["ends"]] == ["s1", "p1"]


def test_container_links_are_measured_on_the_pi_port_both_ways():
    topo = _topo()
    prev = {"s1": {1: _c()}, "p1": {1: _c(), 2: _c()}}
    now = {"s1": {1: _c()}, "p1": {1: _c(), 2: _c(rx_bytes=125_000)}}  # the container sends
    rates = {r["id"]: r for r in link_rates(topo, now, prev, 1.0)}
    assert rates["c1:p1"]["bps"] == 1e6
    assert rates["c1:p1"]["sent_bps"] == 1e6, "what the container sent: the offered load"
    assert "sent_bps" not in rates["s1:p1"]
    assert rates["c1:p1"]["util"] == 1e6 / 1e9  # no bw: gigabit default
    assert [e["node"] for e in rates["c1:p1"]["ends"]] == ["p1"]


def test_counter_reset_and_first_sample_give_zero_not_negative():
    topo = _topo()
    now = {"s1": {1: _c(tx_bytes=10)}, "p1": {1: _c(), 2: _c()}}
    prev = {"s1": {1: _c(tx_bytes=10_000)}, "p1": {1: _c(), 2: _c()}}
    assert all(r["bps"] == 0 for r in link_rates(topo, now, prev, 1.0))
    assert all(r["bps"] == 0 for r in link_rates(topo, now, {}, 0.0))


def test_down_links_report_zero_and_down():
    topo = _topo()
    prev = {"s1": {1: _c()}, "p1": {1: _c(), 2: _c()}}
    now = {"s1": {1: _c(tx_bytes=1000)}, "p1": {1: _c(), 2: _c()}}
    rates = {r["id"]: r for r in link_rates(topo, now, prev, 1.0, down={"s1:p1"})}
    assert rates["s1:p1"]["up"] is False and rates["s1:p1"]["bps"] == 0
    assert rates["c1:p1"]["up"] is True


def test_runtime_container_ports_override_model_numbering():
    topo = _topo()
    prev = {"s1": {}, "p1": {9: _c()}}
    now = {"s1": {}, "p1": {2: _c(tx_bytes=999_999), 9: _c(tx_bytes=1000)}}
    rates = {r["id"]: r for r in link_rates(topo, now, prev, 1.0, pi_ports={"c1": 9})}
    assert rates["c1:p1"]["bps"] == 8000
    assert rates["c1:p1"]["ends"][0]["port"] == 9


def test_controller_state_down_links_in_topology_orientation():
    topo = _topo()
    state = {"links": [{"a": "p1", "b": "s1", "up": False}, {"a": "s1", "b": "ghost", "up": False},
                       {"a": "s1", "b": "p1", "up": True}]}
    assert down_links_from_state(topo, state) == {"s1:p1"}
    assert down_links_from_state(topo, None) == set()


def test_each_bridge_uses_its_own_interval():
    topo = _topo()
    prev = {"s1": {1: _c()}, "p1": {1: _c(), 2: _c()}}
    now = {"s1": {1: _c(tx_bytes=1000)}, "p1": {1: _c(tx_bytes=1000), 2: _c()}}
    rates = {r["id"]: r for r in link_rates(topo, now, prev, {"s1": 1.0, "p1": 4.0})}
    assert rates["s1:p1"]["bps"] == 8000, "s1 sent 1000 B in 1 s; p1 the same bytes over 4 s"
    assert link_rates(topo, now, prev, {})[0]["bps"] == 0, "no interval, no rate"
