"""Arrival processes: Poisson rate at a target load, on/off keeps the mean rate, closed loop chains."""

from __future__ import annotations

import numpy as np
import pytest

from picloud.errors import TrafficError
from traffic import arrivals, trace, workloads


def test_rate_formula_uses_the_documented_overhead() -> None:
    # 50% of 1 Gbit/s with 1 MB flows: 0.5e9 / (8e6 * 1500/1460) flows per second.
    assert arrivals.poisson_rate(0.5, 1e9, 1e6) == pytest.approx(0.5e9 / 8e6 * 1460 / 1500)


@pytest.mark.parametrize("rate", [5.0, 200.0, 3000.0])
def test_poisson_rate_within_three_percent(rate: float) -> None:
    times = arrivals.poisson(np.random.default_rng(1), rate, 200_000 / rate)
    assert len(times) / (200_000 / rate) == pytest.approx(rate, rel=0.03)
    gaps = np.diff(times)
    assert gaps.min() >= 0
    # Exponential gaps: coefficient of variation 1.
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


def test_poisson_stays_inside_the_window() -> None:
    times = arrivals.poisson(np.random.default_rng(2), 1000.0, 2.0, start=5.0)
    assert times.min() >= 5.0 and times.max() < 7.0


def test_on_off_keeps_the_long_run_rate_and_is_bursty() -> None:
    rng = np.random.default_rng(3)
    times = arrivals.on_off(rng, 100.0, 2000.0, on_mean=0.5, off_mean=1.5)
    assert len(times) / 2000.0 == pytest.approx(100.0, rel=0.05)
    counts = np.bincount((times / 0.25).astype(int))
    assert counts.var() / counts.mean() > 5  # Poisson would give ~1


@pytest.mark.parametrize("load", [0.0, -0.1, 1.01, 2])
def test_load_outside_zero_one_is_refused(load: float) -> None:
    with pytest.raises(TrafficError, match=r"load: .* outside \(0, 1\]"):
        arrivals.check_load(load)


def test_trace_arrival_rate_matches_lambda_per_sender() -> None:
    hosts = [f"h{i}" for i in range(4)]
    w = workloads.get("homa_w3")
    t = trace.generate(hosts, w, 0.5, "all-to-all", 20.0, 1, 100e6)
    lam = arrivals.poisson_rate(0.5, 100e6, w.mean)
    per_src = {h: sum(1 for f in t.flows if f.src == h) for h in hosts}
    for count in per_src.values():
        assert count / 20.0 == pytest.approx(lam, rel=0.03)
    # Offered bytes match the load too (sizes are drawn independently of times).
    offered = sum(f.size for f in t.flows) * 8 * arrivals.OVERHEAD / (4 * 100e6 * 20.0)
    assert offered == pytest.approx(0.5, rel=0.05)


def test_closed_loop_chains_each_sender() -> None:
    t = trace.generate(["a", "b", "c"], workloads.get("homa_w2"), 1.0, "permutation", 0.05, 4, 100e6,
                       arrival="closed", concurrency=2)
    by_src = t.by_source()
    for flows in by_src.values():
        heads = [f for f in flows if f.after < 0]
        assert len(heads) == 2  # one chain per concurrent slot
        ids = {f.id for f in flows}
        assert all(f.after in ids for f in flows if f.after >= 0)
