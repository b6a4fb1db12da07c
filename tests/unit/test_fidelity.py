"""The fidelity verdict (traffic.fidelity), on counter samples recorded from real runs
(tests/fixtures/fidelity, provenance there) and on edits of them that isolate one check each."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from topology.builders import build
from topology.model import Topology
from traffic import fidelity, workloads
from traffic.results import FlowRecord, Results, read_flows, summarize

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fidelity"


def recorded(name: str) -> tuple[Topology, list[FlowRecord], dict, dict]:
    d = FIXTURES / name
    meta = json.loads((d / "meta.json").read_text())
    samples = json.loads((d / "fidelity.json").read_text())["samples"]
    return Topology.from_dict(meta["topology"]), read_flows(d / "flows.csv"), meta, samples


def test_recorded_loaded_run_is_degraded_for_each_of_its_reasons():
    v = fidelity.assess_recorded(FIXTURES / "loaded-picloud-2x4")
    assert v["verdict"] == "degraded"
    assert v["checks"] == {"observed": "ok", "core_busy": "failed", "steal": "ok", "ovs_cpu": "ok",
                           "datapath_lost": "ok", "port_drops": "ok", "socket_drops": "n/a",
                           "unexplained_retrans": "failed", "lateness_p99_us": "failed", "ks": "ok",
                           "offered_sigma": "ok", "carried": "failed", "impossible_fct": "ok"}
    n = v["numbers"]
    assert n["cpu"]["busy"] == [1.0, 0.9995]
    assert n["tcp"]["retrans"] == 1453 and n["tcp"]["out_segs"] == 4443 and n["qdisc"]["dropped"] == 0
    assert n["ks"] == {"n": 159, "distance": pytest.approx(n["ks"]["distance"]), "critical_1pct": 0.1278}
    assert n["ks"]["distance"] < 0.1278
    assert any(r.startswith("host CPU saturated: busiest core 100% busy") for r in v["reasons"])
    assert fidelity.line(v).startswith("fidelity: degraded (host CPU saturated")


def test_recorded_datapath_losses_are_a_reason():
    v = fidelity.assess_recorded(FIXTURES / "loaded-picloud-1x2")
    assert v["checks"]["datapath_lost"] == "failed"
    assert "datapath lost 20 upcalls (threshold 0)" in v["reasons"]


def test_recorded_socket_drops_explain_the_retransmissions_without_qdisc_drops():
    """Recorded before ovs-vswitchd's socket buffers were sized (topology.effects.ovs_sockets): the
    retransmissions match the packets its receive sockets dropped, with no drop in any modelled queue."""
    v = fidelity.assess_recorded(FIXTURES / "unsized-sockets-picloud-2x4")
    n = v["numbers"]
    assert v["checks"]["socket_drops"] == "failed" and v["checks"]["unexplained_retrans"] == "failed"
    assert n["socket_drops"] == 3715 and n["qdisc"]["dropped"] == 0 and n["tcp"]["retrans"] == 3938
    assert "3715 packets dropped by ovs-vswitchd's receive sockets, outside any modelled queue (threshold 0)" \
        in v["reasons"]


def test_recorded_sized_sockets_drop_nothing():
    """The same run with the buffers sized: no socket drop and retransmissions under 1 % of segments,
    on a host at load 14 (so degraded, for the CPU and what it did to the flows, not for losses)."""
    v = fidelity.assess_recorded(FIXTURES / "sized-sockets-picloud-2x4")
    n = v["numbers"]
    assert n["socket_drops"] == 0 and v["checks"]["socket_drops"] == "ok"
    assert v["checks"]["unexplained_retrans"] == "ok" and n["tcp"]["retrans"] < 0.01 * n["tcp"]["out_segs"]
    assert v["checks"]["core_busy"] == "failed"


def quiet(samples: dict, busy: float = 0.3) -> dict:
    """The recorded samples with the CPU counters rewritten to `busy` on every core, the datapath
    and drop counters left unchanged in between: one check isolated."""
    s = copy.deepcopy(samples)
    for k, sample in enumerate(s["cpu"]):
        total = 100 * k
        sample["cores"] = [[int(total * busy), 0, 0, total - int(total * busy), 0, 0, 0, 0] for _ in sample["cores"]]
    for name in ("datapath",):
        s[name] = [dict(s[name][0]), dict(s[name][0])]
    for c in s["tcp"].values():
        c["end"] = dict(c["start"], OutSegs=c["start"]["OutSegs"] + 10_000, RetransSegs=c["start"]["RetransSegs"] + 5)
    return s


def faithful_flows(topo: Topology, meta: dict, flows: list[FlowRecord]) -> list[FlowRecord]:
    """The recorded flows as a network that kept up would have finished them: every byte delivered,
    FCT twice the bottleneck bound, no lateness."""
    bound = fidelity.bottlenecks(topo, {(r.src, r.dst) for r in flows})
    out = []
    for r in flows:
        rate = bound[(r.src, r.dst)] or 100e6
        out.append(FlowRecord(**{**r.__dict__, "status": "done", "bytes_received": r.size, "lateness_us": 100.0,
                                 "fct_us": 2 * r.size * 8 / rate * 1e6}))
    return out


def test_a_run_the_host_kept_up_with_is_faithful():
    topo, flows, meta, samples = recorded("sized-sockets-picloud-2x4")
    v = fidelity.assess_run(topo, faithful_flows(topo, meta, flows), meta, quiet(samples))
    assert v["verdict"] == "faithful", v["reasons"]
    assert v["reasons"] == [] and set(v["checks"].values()) == {"ok"}
    assert fidelity.line(v) == "fidelity: faithful"


def test_each_check_alone_degrades_a_faithful_run():
    topo, flows, meta, samples = recorded("sized-sockets-picloud-2x4")
    good_flows, good = faithful_flows(topo, meta, flows), quiet(samples)

    def reasons(samples=good, flows=good_flows, meta=meta):
        v = fidelity.assess_run(topo, flows, meta, samples)
        return [k for k, state in v["checks"].items() if state == "failed"]

    assert reasons(quiet(samples, busy=0.95)) == ["core_busy"]
    stolen = copy.deepcopy(good)
    stolen["cpu"][-1]["cores"] = [[c[0], 0, 0, c[3] - 800, 0, 0, 0, 800] for c in stolen["cpu"][-1]["cores"]]
    assert reasons(stolen) == ["steal"]
    hot_ovs = copy.deepcopy(good)
    hot_ovs["ovs_cpu"][-1]["ticks"] = hot_ovs["ovs_cpu"][0]["ticks"] + int(100 * 0.95 * (
        hot_ovs["ovs_cpu"][-1]["t"] - hot_ovs["ovs_cpu"][0]["t"]))
    assert reasons(hot_ovs) == ["ovs_cpu"]
    lost = copy.deepcopy(good)
    lost["datapath"][-1]["lost"] += 1
    assert reasons(lost) == ["datapath_lost"]
    dropped = copy.deepcopy(good)
    port = next(iter(dropped["ports"].values()))
    port["end"]["tx_dropped"] = port["start"]["tx_dropped"] + 3
    assert reasons(dropped) == ["port_drops"]
    unread = copy.deepcopy(good)
    sock = next(iter(unread["sockets"].values()))
    sock["end"]["dropped"] = sock["start"]["dropped"] + 1
    assert reasons(unread) == ["socket_drops"]
    retrans = copy.deepcopy(good)
    for c in retrans["tcp"].values():
        c["end"]["RetransSegs"] += 200
    assert reasons(retrans) == ["unexplained_retrans"]
    explained = copy.deepcopy(retrans)  # the same retransmissions, matched by drops in the modelled queues
    q = next(iter(explained["qdiscs"].values()))
    q["end"]["dropped"] = q["start"]["dropped"] + 8 * 205
    assert reasons(explained) == []
    late = [FlowRecord(**{**r.__dict__, "lateness_us": 20_000.0}) for r in good_flows]
    assert reasons(flows=late) == ["lateness_p99_us"]
    half = [FlowRecord(**{**r.__dict__, "bytes_received": r.size // 2}) for r in good_flows]
    assert reasons(flows=half) == ["carried"]
    too_fast = [FlowRecord(**{**r.__dict__, "fct_us": r.fct_us / 2.2}) for r in good_flows]
    assert reasons(flows=too_fast) == ["impossible_fct"]
    assert reasons(meta={**meta, "load": 0.9, "wire_load": 0.9}) == ["offered_sigma"]
    wrong = [FlowRecord(**{**r.__dict__, "size": 100}) for r in good_flows]  # 100-byte flows are not websearch
    assert "ks" in reasons(flows=wrong)


def with_threads(samples: dict, cores: dict[str, float]) -> dict:
    """SAMPLES with ovs-vswitchd per-thread ticks giving each thread CORES over the run."""
    out = copy.deepcopy(samples)
    t0, t1 = out["ovs_cpu"][0]["t"], out["ovs_cpu"][-1]["t"]
    out["ovs_threads"] = [{"t": t0, "ticks": {k: 1000 for k in cores}},
                          {"t": t1, "ticks": {k: 1000 + round(100 * c * (t1 - t0)) for k, c in cores.items()}}]
    return out


def test_ovs_check_is_the_busiest_thread_not_the_process_total():
    topo, flows, meta, samples = recorded("sized-sockets-picloud-2x4")
    good_flows, good = faithful_flows(topo, meta, flows), quiet(samples)
    # Two pmd threads at 0.6 of a core each: 1.2 cores in all, but no thread is a queue.
    spread = with_threads(good, {"100:ovs-vswitchd": 0.05, "101:pmd-c00/id:2": 0.6, "102:pmd-c01/id:3": 0.6})
    spread["ovs_cpu"][-1]["ticks"] = spread["ovs_cpu"][0]["ticks"] + int(100 * 1.25 * (
        spread["ovs_cpu"][-1]["t"] - spread["ovs_cpu"][0]["t"]))
    v = fidelity.assess_run(topo, good_flows, meta, spread)
    assert v["checks"]["ovs_cpu"] == "ok" and v["numbers"]["ovs_thread_max"] == {"thread": "pmd-c00/id:2",
                                                                                 "cores": 0.6}
    # The main thread at 0.95 fails it, named, though the process total is under the threshold.
    hot = with_threads(good, {"100:ovs-vswitchd": 0.95, "103:revalidator4": 0.01})
    hot["ovs_cpu"][-1]["ticks"] = hot["ovs_cpu"][0]["ticks"]
    v = fidelity.assess_run(topo, good_flows, meta, hot)
    assert [k for k, s in v["checks"].items() if s == "failed"] == ["ovs_cpu"]
    assert v["reasons"] == ["ovs-vswitchd's busiest thread (ovs-vswitchd) used 0.95 cores (threshold 0.9)"]
    # A thread that started or ended mid-run is left out, not read as a jump.
    late = copy.deepcopy(hot)
    late["ovs_threads"][0]["ticks"].pop("100:ovs-vswitchd")
    assert fidelity.counters(late)["ovs_thread_max"]["thread"] == "revalidator4"


def test_unassessable_checks_say_so():
    topo = build("single:2", 1)  # unshaped: no bottleneck to bound an FCT by
    flows = [FlowRecord(0, "pi1-c1", "pi2-c1", "", 1000, 1.0, -1, "done", 1.0, 10.0, 50.0, 1000, 1000, False, 80.0)]
    v = fidelity.assess_run(topo, flows, {"duration": 2, "link_bps": 1e8, "load": 0.1, "hosts": ["pi1-c1"],
                                          "workload": "websearch"}, {})
    assert v["checks"]["impossible_fct"] == "n/a" and v["checks"]["core_busy"] == "n/a"
    assert v["verdict"] == "degraded"  # unobserved is not certified
    assert v["reasons"] == ["the monitor recorded no CPU samples, so nothing vouches for this run"]


def test_ks_distance_against_every_published_cdf_holds_its_level():
    """Our own sampler must pass its own certification: at the 1 % level, about 1 % of honest
    samples fail; 200 samples of 300 per workload, expected 22 failures at most by 3 sigma."""
    fails = 0
    for name in workloads.names():
        w = workloads.get(name)
        for seed in range(200):
            sizes = w.sample(np.random.default_rng(seed), 300)
            fails += fidelity.ks_distance(sizes, w.sizes, w.cdf) > fidelity.ks_critical(300)
    assert fails <= 22 + 3 * 5
    ws, dm = workloads.get("websearch"), workloads.get("datamining")
    assert fidelity.ks_distance(dm.sample(np.random.default_rng(1), 300), ws.sizes, ws.cdf) > 0.5


def test_ks_critical_value_at_one_percent():
    assert fidelity.ks_critical(100) == pytest.approx(1.6276 / (10 + 0.12 + 0.011), rel=1e-4)


def test_summary_report_and_results_carry_the_verdict(tmp_path):
    _, flows, meta, samples = recorded("loaded-picloud-1x2")
    verdict = fidelity.assess_recorded(FIXTURES / "loaded-picloud-1x2")
    res = Results.save(tmp_path, flows, {**meta, "fidelity": verdict})
    assert res.fidelity["verdict"] == "degraded"
    assert json.loads((tmp_path / "summary.json").read_text())["fidelity"]["reasons"] == verdict["reasons"]
    assert Results.load(tmp_path).fidelity["checks"] == verdict["checks"]
    text = res.report()
    assert "fidelity" in text and "datapath lost 20 upcalls" in text
    assert "fidelity" not in summarize(flows, {k: v for k, v in meta.items() if k != "fidelity"})


def test_thresholds_each_carry_a_reason():
    for name, t in fidelity.THRESHOLDS.items():
        assert len(t.reason) > 60, name


def test_report_recomputes_the_verdict_from_recorded_samples():
    res = Results.load(FIXTURES / "loaded-picloud-1x2")  # its meta.json carries no verdict, fidelity.json does
    assert res.fidelity["verdict"] == "degraded"
    assert "datapath lost 20 upcalls (threshold 0)" in res.report()
