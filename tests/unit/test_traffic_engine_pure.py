"""Engine helpers that need no fabric: nominal link rate, controller apps, validation before effects."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from picloud.errors import TrafficError
from picloud.testbed import Testbed
from topology.builders import build
from topology.model import Topology
from traffic import engine


def test_link_rate_is_the_slowest_shaped_pi_uplink_else_100_mbits() -> None:
    topo = Topology("t")
    topo.add_switch("s1")
    for i, bw in enumerate([50, 20, None], start=1):
        topo.add_pi(f"pi{i}")
        topo.add_link("s1", f"pi{i}", bw=bw)
        topo.add_container(f"c{i}", f"pi{i}")
    tb = SimpleNamespace(topology=topo)
    assert engine.link_rate_bps(tb, ["c1"], None) == 50e6
    assert engine.link_rate_bps(tb, ["c1", "c2", "c3"], None) == 20e6
    assert engine.link_rate_bps(tb, ["c3"], None) == 100e6
    assert engine.link_rate_bps(tb, ["red-1"], None) == 100e6  # a run-time member: not in the model
    assert engine.link_rate_bps(tb, ["c1"], 40) == 40e6
    with pytest.raises(TrafficError, match="link_mbps: 0"):
        engine.link_rate_bps(tb, ["c1"], 0)


def test_controller_apps_recorded_in_meta() -> None:
    """The list the facade recorded in the run state when it started the controller, verbatim."""
    recorded = {"mode": None, "apps": ["discovery", "routing", "monitor", "tenancy"], "api": "http://127.0.0.1:8201"}
    assert engine._controller_apps(recorded) == ["discovery", "routing", "monitor", "tenancy"]
    assert engine._controller_apps({"mode": ["l2_learning"], "api": "x"}) == ["l2_learning"]
    assert engine._controller_apps({"mode": "none"}) == "none"
    assert engine._controller_apps({"mode": "tcp:10.0.0.1:6653"}) == "tcp:10.0.0.1:6653"


@pytest.mark.parametrize(("kw", "message"), [
    ({"workload": "nope"}, "workload 'nope': unknown"),
    ({"load": 2.0}, r"load: 2.0 outside \(0, 1\]"),
    ({"duration": -1}, "duration: -1 s"),
    ({"warmup": 20}, r"warmup: 20.0 s with duration 10 s"),
    ({}, "testbed: not up"),
])
def test_bad_requests_fail_before_touching_the_testbed(kw: dict, message: str) -> None:
    tb = Testbed(build("single:2"))  # constructed, never brought up
    args = {"workload": "websearch", "load": 0.1, "pattern": "all-to-all", "duration": 10, "seed": 1}
    args.update(kw)
    with pytest.raises(TrafficError, match=message):
        engine.run(tb, **args)
    assert tb.state is None
