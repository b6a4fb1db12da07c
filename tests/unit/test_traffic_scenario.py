"""Scenario timelines (pure): validation, expansion, determinism, and the per-event costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from picloud.errors import TrafficError
from topology.builders import build
from traffic import scenario
from traffic.results import FlowRecord
from traffic.scenario_cost import costs, counter_delta, render_events

REPO = Path(__file__).resolve().parents[2]
TOPO = build("picloud:2,2")  # tor1, tor2, agg1, agg2 (see topology.builders)

TEN_EVENTS = [  # ten entries, every action kind
    {"at": 0.5, "action": "link-down", "link": ["agg1", "tor1"]},
    {"at": 1.5, "action": "link-up", "link": ["agg1", "tor1"]},
    {"at": 1.0, "action": "link-flap", "link": ["agg2", "tor2"], "period": 0.4, "duty": 0.25, "until": 2.2},
    {"at": 2.0, "action": "shape", "link": ["agg1", "tor2"], "bw": 20},
    {"at": 3.0, "action": "node-down", "node": "pi1-1"},
    {"at": 3.5, "action": "node-up", "node": "pi1-1"},
    {"at": 2.5, "action": "controller-kill"},
    {"at": 4.0, "action": "controller-restart"},
    {"at": 4.5, "action": "shape", "link": ["agg1", "tor2"], "bw": None},
    {"action": "random-failures", "links": "aggregation-tor", "mtbf": 3, "mttr": 0.3, "from": 0, "until": 5},
]


def names() -> tuple[list[str], list[str]]:
    return [n for n in TOPO.switches], [n for n in TOPO.pis]


def test_topology_has_the_names_the_scenarios_use():
    switches, pis = names()
    assert {"agg1", "agg2", "tor1", "tor2"} <= set(switches) and "pi1-1" in pis


def test_same_seed_same_event_log_three_times_and_in_other_processes():
    logs = [scenario.expand(TEN_EVENTS, TOPO, seed=7, horizon=5).log() for _ in range(3)]
    assert logs[0] == logs[1] == logs[2]
    # The random stream must not depend on the process (str hashing is randomised per process).
    code = ("from topology.builders import build; from traffic import scenario; "
            "from tests.unit.test_traffic_scenario import TEN_EVENTS; "
            "print(scenario.expand(TEN_EVENTS, build('picloud:2,2'), seed=7, horizon=5).log())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={"PYTHONPATH": str(REPO), "PYTHONHASHSEED": "123"}).stdout
    assert out.strip() == str(logs[0])
    other = scenario.expand(TEN_EVENTS, TOPO, seed=8, horizon=5).log()
    assert other != logs[0], "a different seed must draw different random failures"


def test_timeline_is_sorted_and_flapping_expands_to_down_up_pairs():
    sc = scenario.expand(TEN_EVENTS, TOPO, seed=7, horizon=5)
    times = [s.t for s in sc.steps]
    assert times == sorted(times)
    flap = [(s.t, s.action) for s in sc.steps if s.source == 2]
    # period 0.4, 25 % down: down at 1.0, 1.4, 1.8; up 0.1 s later each
    assert flap == [(1.0, "link-down"), (1.1, "link-up"), (1.4, "link-down"), (1.5, "link-up"),
                    (1.8, "link-down"), (1.9, "link-up")]


def test_random_failures_alternate_and_end_repaired():
    steps = scenario.random_failures(["agg1~tor1", "agg2~tor1"], mtbf=1.0, mttr=0.5, start=0, until=20, seed=3)
    for link in ("agg1~tor1", "agg2~tor1"):
        mine = [s for s in steps if s.target == link]
        assert mine, "20 s at mtbf 1 s without a failure is a broken generator"
        assert [s.action for s in mine] == ["link-down", "link-up"] * (len(mine) // 2)
        assert all(0 <= s.t <= 20 for s in mine)
    downs = [s for s in steps if s.action == "link-down"]
    mean_up = 20 * 2 / len(downs)  # crude: expect about one failure per mtbf + mttr
    assert 0.5 < mean_up < 4, mean_up


def test_link_class_names_roles():
    assert scenario.link_class(TOPO, "agg1", "tor1") == "aggregation-tor"
    assert scenario.link_class(TOPO, "tor1", "pi1-1") == "pi-tor"


@pytest.mark.parametrize("entry, message", [
    ({"at": 1, "action": "explode"}, "action 'explode'"),
    ({"at": 1, "action": "link-down", "link": ["agg1", "tor9"]}, "unknown node 'tor9'"),
    ({"at": 1, "action": "link-down", "link": ["tor1", "tor2"]}, "no such link"),
    ({"at": 1, "action": "link-down", "link": "agg1-tor1"}, "pair of node names"),
    ({"at": 1, "action": "link-down"}, "missing link"),
    ({"action": "link-down", "link": ["agg1", "tor1"]}, "missing at"),
    ({"at": 99, "action": "link-down", "link": ["agg1", "tor1"]}, "after the run's end"),
    ({"at": -1, "action": "link-down", "link": ["agg1", "tor1"]}, "at -1"),
    ({"at": 1, "action": "link-down", "link": ["agg1", "tor1"], "bw": 3}, "unknown key(s) bw"),
    ({"at": 1, "action": "link-flap", "link": ["agg1", "tor1"], "period": 1, "until": 0.5}, "not after"),
    ({"at": 1, "action": "link-flap", "link": ["agg1", "tor1"], "period": 1, "until": 3, "duty": 1}, "duty"),
    ({"at": 1, "action": "shape", "link": ["agg1", "tor1"]}, "at least one of bw"),
    ({"at": 1, "action": "shape", "link": ["agg1", "tor1"], "bw": 0}, "bw 0"),
    ({"at": 1, "action": "shape", "link": ["agg1", "tor1"], "delay": "fast"}, "delay 'fast'"),
    ({"at": 1, "action": "node-down", "node": "nope"}, "node 'nope'"),
    ({"at": 1, "action": "node-down", "node": TOPO.containers[0]}, "is a container"),
    ({"at": 1, "action": "tenant-add", "tenant": "red", "count": 0}, "count 0"),
    ({"action": "random-failures", "links": "core-tor", "mtbf": 1, "mttr": 1}, "no link of that class"),
    ({"action": "random-failures", "links": "fabric", "mtbf": 0, "mttr": 1}, "mtbf 0"),
    ({"at": 1, "action": "random-failures", "links": "fabric", "mtbf": 1, "mttr": 1}, "from/until"),
])
def test_bad_entries_are_one_line_errors_naming_the_entry(entry, message):
    with pytest.raises(TrafficError) as err:
        scenario.expand([{"at": 0, "action": "controller-kill"}, entry], TOPO, horizon=10)
    text = str(err.value)
    assert "\n" not in text and "entry 2" in text and message in text, text


def test_load_file_errors(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("scenario: {at: 1}\n")
    with pytest.raises(TrafficError, match="must be a list"):
        scenario.load_file(bad)
    bad.write_text("events: []\n")
    with pytest.raises(TrafficError, match="scenario:"):
        scenario.load_file(bad)
    bad.write_text("scenario: [\n")
    with pytest.raises(TrafficError, match="not valid YAML"):
        scenario.load_file(bad)
    with pytest.raises(TrafficError, match="cannot read"):
        scenario.load_file(tmp_path / "missing.yaml")
    good = tmp_path / "g.yaml"
    good.write_text("seed: 4\nscenario:\n  - {at: 1, action: link-down, link: [agg1, tor1]}\n")
    entries, seed = scenario.load_file(good)
    assert seed == 4 and entries[0]["action"] == "link-down"


def test_delay_and_loss_mark_the_scenario_as_needing_netem():
    sc = scenario.expand([{"at": 1, "action": "shape", "link": ["agg1", "tor1"], "delay": 5}], TOPO)
    assert sc.needs_netem and sc.steps[0].args == {"delay": "5ms"}
    assert not scenario.expand([{"at": 1, "action": "shape", "link": ["agg1", "tor1"], "bw": 5}], TOPO).needs_netem


def test_node_links_cover_a_pis_containers_and_uplinks():
    links = scenario.node_links(TOPO, "pi1-1")
    peers = {b if a == "pi1-1" else a for a, b in links}
    assert set(TOPO.ports("pi1-1").values()) == peers


def _flow(i: int, start: float, fct_s: float | None, size: int = 50_000, ideal_us: float = 1000.0) -> FlowRecord:
    return FlowRecord(id=i, src="a", dst="b", tenant="", size=size, scheduled=start, job=-1,
                      status="done" if fct_s else "unfinished", start=start, lateness_us=0,
                      fct_us=None if fct_s is None else fct_s * 1e6, sent=size, bytes_received=size,
                      warmup=False, ideal_us=ideal_us)


def test_costs_count_flows_in_flight_inflation_stalls_and_counter_windows():
    flows = [_flow(0, 0.0, 0.01), _flow(1, 0.1, 0.01), _flow(2, 0.9, 0.4), _flow(3, 0.95, 0.02),
             _flow(4, 2.0, 0.01)]
    applied = [{"applied": 1.0}, {"applied": None}, {"applied": 3.0}]
    gaps = {2: (0.3, 1.25), 3: (0.001, 0.96)}  # flow 2 silent 0.95 .. 1.25: stalled by the event at 1.0
    samples = [(0.0, {"port_drops": 0, "tcp_retrans": 5}), (1.01, {"port_drops": 3, "tcp_retrans": 5}),
               (2.0, {"port_drops": 10, "tcp_retrans": 9}), (3.02, {"port_drops": 12, "tcp_retrans": 9}),
               (3.5, {"port_drops": 12, "tcp_retrans": 9})]
    out = costs(applied, flows, gaps, samples, end=4.0)
    assert out[0]["flows_in_flight"] == 1, out[0]  # only flow 2 (0.9 .. 1.3) spans t = 1.0
    # quiet flows 0, 1, 3, 4 all have slowdown 10 (FCT 10 ms / ideal 1 ms) except 3 (20): median 10
    assert out[0]["fct_inflation"] == pytest.approx(400 / 10)
    assert out[0]["stalled_flows"] == 1 and out[0]["first_packet_ms"] == pytest.approx(250)
    # event 1's window: the last sample at or before 1.0 (t = 0) to the last at or before 3.0 (t = 2)
    assert out[0]["port_drops"] == 10 and out[0]["tcp_retrans"] == 4
    assert out[1] == {}
    assert out[2]["flows_in_flight"] == 0 and out[2]["fct_inflation"] is None
    assert out[2]["port_drops"] == 2  # samples at 2.0 .. 3.5 (the end is 4.0)
    assert counter_delta(samples, -1, 2, "port_drops") is None
    table = render_events([{"planned_s": 1.0, "applied_s": 1.001, "error_ms": 1.0, "action": "link-down",
                            "target": "agg1-tor1", "params": "", "status": "ok", "port_drops": 10}])
    assert "link-down agg1-tor1" in table and "10" in table


def test_bad_scenario_file_fails_the_cli_before_looking_for_a_run(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("scenario:\n  - {at: 1, action: teleport}\n")
    proc = subprocess.run([sys.executable, "-m", "picloud", "traffic", "run", "--scenario", str(bad)],
                          capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO),
                                                                          "PICLOUD_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "action 'teleport'" in proc.stderr, proc.stderr


def test_example_scenario_file_is_valid_for_its_topology():
    entries, seed = scenario.load_file(REPO / "examples" / "scenarios" / "cut_and_flap.yaml")
    sc = scenario.expand(entries, TOPO, seed=seed, horizon=20)
    assert sc.steps[0].action == "link-down" and sc.end <= 20
