"""Patterns: destinations obey each pattern's definition, and bad arguments are refused up front."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from picloud.errors import TrafficError
from traffic import patterns, trace, workloads

HOSTS = [f"h{i}" for i in range(8)]


def _rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_all_to_all_never_self_and_uniform() -> None:
    p = patterns.make("all-to-all", HOSTS, _rng())
    rng = _rng(2)
    dsts = Counter(p.destination(rng, "h3") for _ in range(70_000))
    assert "h3" not in dsts and set(dsts) == set(HOSTS) - {"h3"}
    assert all(abs(c / 70_000 - 1 / 7) < 0.01 for c in dsts.values())


@pytest.mark.parametrize("seed", range(20))
def test_permutation_is_a_derangement(seed: int) -> None:
    p = patterns.make("permutation", HOSTS, _rng(seed))
    partners = [p.destination(_rng(), h) for h in HOSTS]
    assert sorted(partners) == sorted(HOSTS)  # a permutation: every host receives exactly once
    assert all(a != b for a, b in zip(HOSTS, partners, strict=True))  # no fixed point


def test_derangements_are_uniform_over_three_hosts() -> None:
    counts = Counter(tuple(patterns.derangement(np.random.default_rng(s), 3)) for s in range(2000))
    assert set(counts) == {(1, 2, 0), (2, 0, 1)}
    assert abs(counts[(1, 2, 0)] - 1000) < 120


def test_stride() -> None:
    p = patterns.make("stride", HOSTS, _rng(), stride=3)
    assert [p.destination(_rng(), h) for h in HOSTS] == [HOSTS[(i + 3) % 8] for i in range(8)]
    with pytest.raises(TrafficError, match=r"stride 8 with 8 hosts \(needs 1 <= stride < 8\)"):
        patterns.make("stride", HOSTS, _rng(), stride=8)


def test_hotspot_share() -> None:
    p = patterns.make("hotspot", HOSTS, _rng(), hotspots=1, fraction=0.6)
    hot = p.params["hot"][0]  # type: ignore[index]
    senders = [h for h in HOSTS if h != hot]
    rng = _rng(5)
    picks = [p.destination(rng, senders[i % 7]) for i in range(35_000)]
    # 60% to the hotspot, plus its uniform share of the other 40%.
    assert picks.count(hot) / len(picks) == pytest.approx(0.6 + 0.4 / 7, abs=0.01)
    assert all(d != s for d, s in zip(picks, [senders[i % 7] for i in range(35_000)], strict=True))


def test_incast_job_fans_in_to_one_aggregator() -> None:
    p = patterns.make("incast", HOSTS, _rng(), fanin=5)
    for seed in range(20):
        flows = p.job(_rng(seed))
        assert len(flows) == 5
        assert len({d for _, d in flows}) == 1
        agg = flows[0][1]
        assert len({s for s, _ in flows}) == 5 and agg not in {s for s, _ in flows}


def test_incast_trace_starts_a_job_together_with_fixed_responses() -> None:
    t = trace.generate(HOSTS, workloads.get("websearch"), 0.2, "incast", 20.0, 1, 100e6, fanin=4,
                       response=20_000, aggregator="h0")
    jobs: dict[int, list] = {}
    for f in t.flows:
        jobs.setdefault(f.job, []).append(f)
    assert jobs and all(len(v) == 4 for v in jobs.values())
    assert all(len({f.start for f in v}) == 1 and {f.dst for f in v} == {"h0"} for v in jobs.values())
    assert {f.size for f in t.flows} == {20_000}
    # Load at the aggregator's link: 4 x 20 kB per job at 20% of 100 Mbit/s.
    expected_jobs = 0.2 * 100e6 / (8 * 4 * 20_000 * 1500 / 1460) * 20.0
    assert len(jobs) == pytest.approx(expected_jobs, rel=0.1)


def test_shuffle_is_every_mapper_to_every_reducer() -> None:
    p = patterns.make("shuffle", HOSTS, _rng(), mappers=3, reducers=2)
    flows = p.job(_rng(4))
    mappers, reducers = {s for s, _ in flows}, {d for _, d in flows}
    assert len(flows) == 6 and len(mappers) == 3 and len(reducers) == 2 and not mappers & reducers
    with pytest.raises(TrafficError, match=r"8 host\(s\) \(needs at least 9: 5 mappers and 4 reducers"):
        patterns.make("shuffle", HOSTS, _rng(), mappers=5, reducers=4)


@pytest.mark.parametrize("name", ["all-to-all", "permutation", "stride", "hotspot", "incast", "shuffle"])
def test_one_host_is_refused_for_every_pattern(name: str) -> None:
    with pytest.raises(TrafficError, match=rf"pattern '{name}': 1 host\(s\) \(needs at least 2\)"):
        patterns.make(name, ["only"], _rng())


def test_unknown_pattern_and_argument() -> None:
    with pytest.raises(TrafficError, match="pattern 'ring': unknown"):
        patterns.make("ring", HOSTS, _rng())
    with pytest.raises(TrafficError, match=r"unexpected argument\(s\) fanin"):
        patterns.make("permutation", HOSTS, _rng(), fanin=3)


def test_restricting_to_a_tenant_keeps_traffic_inside() -> None:
    members = ["red-1", "red-2", "red-3"]
    t = trace.generate(members, workloads.get("homa_w2"), 0.3, "all-to-all", 1.0, 9, 100e6)
    assert {f.src for f in t.flows} | {f.dst for f in t.flows} <= set(members)
