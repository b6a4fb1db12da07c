"""Trace: same seed same trace, CSV round trip, scaling, and validation before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from picloud.errors import TrafficError
from traffic import trace, workloads

HOSTS = ["a", "b", "c", "d"]


def _gen(**kw):
    args = dict(hosts=HOSTS, workload=workloads.get("websearch"), load=0.3, pattern="all-to-all",
                duration=10.0, seed=1, link_bps=100e6)
    args.update(kw)
    return trace.generate(**args)


def test_same_seed_same_trace_and_different_seed_differs() -> None:
    assert _gen().flows == _gen().flows
    assert _gen().flows != _gen(seed=2).flows


def test_csv_round_trip(tmp_path: Path) -> None:
    t = _gen()
    t.to_csv(tmp_path / "trace.csv")
    back = trace.Trace.from_csv(tmp_path / "trace.csv")
    assert [(f.id, f.src, f.dst, f.size, f.job, f.after) for f in back.flows] == \
        [(f.id, f.src, f.dst, f.size, f.job, f.after) for f in t.flows]
    assert all(abs(a.start - b.start) < 1e-8 for a, b in zip(back.flows, t.flows, strict=True))


def test_flows_are_in_start_order_with_ids_in_order() -> None:
    t = _gen()
    assert [f.id for f in t.flows] == list(range(len(t.flows)))
    assert all(a.start <= b.start for a, b in zip(t.flows, t.flows[1:], strict=False))
    assert all(0 <= f.start < 10.0 for f in t.flows)


def test_scaling_sizes_and_time() -> None:
    base = _gen()
    small = _gen(scale_size=0.01)
    assert [f.start for f in small.flows] == [f.start for f in base.flows]
    assert all(s.size == max(1, round(b.size * 0.01)) for s, b in zip(small.flows, base.flows, strict=True))
    slow = _gen(scale_time=2.0, duration=20.0)
    assert [f.size for f in slow.flows] == [f.size for f in base.flows]
    assert all(abs(s.start - 2 * b.start) < 1e-9 for s, b in zip(slow.flows, base.flows, strict=True))
    assert slow.meta["wire_load"] == pytest.approx(0.15)


@pytest.mark.parametrize(("kw", "message"), [
    ({"load": 0}, r"load: 0 outside \(0, 1\]"),
    ({"load": 1.5}, r"load: 1.5 outside \(0, 1\]"),
    ({"duration": 0}, r"duration: 0 s"),
    ({"arrival": "bursty"}, r"arrival 'bursty': unknown"),
    ({"hosts": ["a"]}, r"pattern 'all-to-all': 1 host\(s\) \(needs at least 2\)"),
])
def test_bad_requests_raise_one_line(kw: dict, message: str) -> None:
    with pytest.raises(TrafficError, match=message):
        _gen(**kw)


def test_malformed_trace_csv(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("id,src,dst,size,start,job,after\n0,a,b,notanumber,0.1,-1,-1\n")
    with pytest.raises(TrafficError, match=r"trace.csv:2: malformed trace row"):
        trace.Trace.from_csv(path)
