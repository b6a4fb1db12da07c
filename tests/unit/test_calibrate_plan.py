"""Calibration planning (pure) and the link rate a run stands on, with where it comes from."""

from __future__ import annotations

from types import SimpleNamespace

from topology.builders import build
from topology.model import Topology
from traffic import calibrate, engine


def test_picloud_has_one_shaped_class_and_no_unshaped_path():
    topo = build("picloud:4,4")
    p = calibrate.plan(topo, topo.containers)
    assert [(c["bw_mbit"], c["rtt_ms"], c["loss"]) for c in p["classes"]] == [(100.0, 0.0, 0.0)]
    assert p["classes"][0]["hops"] == 6  # the longest path of the class: rack to rack through an agg
    assert p["ceiling"] is None


def test_unshaped_fabric_gets_its_longest_path_for_the_ceiling():
    topo = build("fattree:4")
    p = calibrate.plan(topo, topo.containers)
    assert p["classes"] == [] and p["ceiling"]["hops"] == 8  # container-pi-edge-agg-core-agg-edge-pi-container


def test_classes_by_rate_delay_and_loss():
    topo = Topology("t")
    topo.add_switch("s1")
    topo.add_switch("s2")
    topo.add_link("s1", "s2", bw=10, delay="5ms", loss=1)
    for i, sw in ((1, "s1"), (2, "s1"), (3, "s2")):
        topo.add_pi(f"p{i}")
        topo.add_link(sw, f"p{i}", bw=100)
        topo.add_container(f"c{i}", f"p{i}")
    p = calibrate.plan(topo, topo.containers)
    got = [(c["bw_mbit"], c["rtt_ms"], round(c["loss"], 4), c["pair"]) for c in p["classes"]]
    # across s1-s2: 10 Mbit/s, 5 ms each way, 1 % each way (a round trip survives 0.99^2)
    assert got == [(10.0, 10.0, 0.0199, ["c1", "c3"]), (100.0, 0.0, 0.0, ["c1", "c2"])]


def test_a_run_never_calibrated_stores_its_configured_classes_unmeasured():
    topo = build("picloud:1,2")
    state = SimpleNamespace(extra={}, reload=lambda: None)
    tb = SimpleNamespace(topology=topo, containers=topo.containers, state=state)
    rec = calibrate.for_run(tb)
    assert rec["measured"] is False and rec["configured"]["classes"][0]["bw_mbit"] == 100.0
    tb.state.extra["calibration"] = {"classes": [], "ceiling": {"goodput_mbps": 900.0}}
    assert calibrate.for_run(tb)["measured"] is True


def test_link_rate_says_where_it_comes_from():
    topo = build("picloud:1,2")
    state = SimpleNamespace(extra={"containers": {"red-1": {"pi": "pi1-1"}}}, reload=lambda: None)
    tb = SimpleNamespace(topology=topo, state=state)
    assert engine.link_rate(tb, ["red-1"], None) == (100e6, engine.link_rate(tb, ["pi1-1-c1"], None)[1])
    assert engine.link_rate(tb, ["pi1-1-c1"], None)[1].startswith("shaped access links")
    flat = build("single:2")
    tb = SimpleNamespace(topology=flat, state=SimpleNamespace(extra={}, reload=lambda: None))
    bps, source = engine.link_rate(tb, flat.containers, None)
    assert bps == 100e6 and source.startswith("assumed 100 Mbit/s: the fabric has no shaped access link")
    tb.state.extra["calibration"] = {"ceiling": {"goodput_mbps": 1234.0}}
    assert engine.link_rate(tb, flat.containers, None) == (1234e6, engine.link_rate(tb, flat.containers, None)[1])
    assert engine.link_rate(tb, flat.containers, None)[1].startswith("calibrated unshaped ceiling")
    assert engine.link_rate(tb, flat.containers, 40)[1] == "link_mbps given"
