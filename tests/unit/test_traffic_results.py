"""Results: the summary's definitions, the run directory round trip, the report and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from picloud.cli import main
from traffic.results import FlowRecord, Results, summarize

META = {"workload": "websearch", "pattern": "all-to-all", "seed": 1, "load": 0.5, "wire_load": 0.5,
        "duration": 10.0, "warmup": 1.0, "link_bps": 100e6, "overhead": 1.0, "hosts": ["a", "b"]}


def _rec(i: int, size: int, fct_us: float | None, scheduled: float = 2.0, status: str = "done",
         received: int | None = None, job: int = -1) -> FlowRecord:
    return FlowRecord(id=i, src="a" if i % 2 else "b", dst="b" if i % 2 else "a", tenant="", size=size,
                      scheduled=scheduled, job=job, status=status, start=scheduled + 0.001,
                      lateness_us=100.0 + i, fct_us=fct_us, sent=size,
                      bytes_received=size if received is None else received, warmup=scheduled < 1.0,
                      ideal_us=size * 8 / 100e6 * 1e6)


def _records() -> list[FlowRecord]:
    return [
        _rec(0, 10_000, 1600.0),  # ideal 800 us: slowdown 2
        _rec(1, 50_000, 8000.0),  # ideal 4000 us: slowdown 2
        _rec(2, 1_000_000, 160_000.0),  # ideal 80 ms: slowdown 2
        _rec(3, 20_000_000, 3_200_000.0),  # ideal 1.6 s: slowdown 2
        _rec(4, 5_000, 999.0, scheduled=0.5),  # warm-up: excluded
        _rec(5, 2_000_000, None, status="unfinished", received=700_000),
    ]


def test_summary_buckets_slowdown_warmup_and_unfinished() -> None:
    s = summarize(_records(), META)
    assert s["flows"] == 6 and s["measured_flows"] == 5 and s["unfinished"] == 1
    assert s["buckets"]["small"]["flows"] == 2 and s["buckets"]["medium"]["flows"] == 1
    assert s["buckets"]["large"]["flows"] == 1
    assert s["buckets"]["small"]["fct_us"]["mean"] == pytest.approx(4800.0)
    assert s["all"]["slowdown"]["p50"] == pytest.approx(2.0)
    assert s["all"]["slowdown"]["max"] == pytest.approx(2.0)
    received = 10_000 + 50_000 + 1_000_000 + 20_000_000 + 700_000  # partial bytes count, warm-up does not
    assert s["bytes_received"] == received
    assert s["goodput_mbps"] == pytest.approx(received * 8 / 9.0 / 1e6)
    assert s["achieved_load"] == pytest.approx(received * 8 / (2 * 100e6 * 9.0))
    assert s["lateness_us"]["max"] == pytest.approx(105.0)


def test_job_completion_is_the_slowest_flow_of_the_job() -> None:
    recs = [_rec(0, 1000, 500.0, job=7), _rec(1, 1000, 2500.0, job=7)]
    s = summarize(recs, META)
    assert s["jobs"]["count"] == 1 and s["jobs"]["completion_us"]["max"] == pytest.approx(2500.0)


def test_directory_round_trip_and_side_by_side_report(tmp_path: Path) -> None:
    a = Results.save(tmp_path / "a", _records(), META)
    b = Results.save(tmp_path / "b", _records()[:3], {**META, "workload": "datamining"})
    back = Results.load(tmp_path / "a")
    assert back.summary == json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [r.fct_us for r in back.flows] == [r.fct_us for r in a.flows]
    text = a.report(b)
    assert str(tmp_path / "a") in text.splitlines()[0] and str(tmp_path / "b") in text.splitlines()[0]
    assert "websearch / all-to-all" in text and "datamining / all-to-all" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("unfinished"))
    assert "1 / 0" in line and "0 / 0" in line


def test_plots_are_png(tmp_path: Path) -> None:
    r = Results.save(tmp_path / "p", _records(), META)
    paths = r.plots()
    assert [p.name for p in paths] == ["fct_cdf.png", "slowdown.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_cli_report_one_and_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Results.save(tmp_path / "a", _records(), META)
    Results.save(tmp_path / "b", _records(), META)
    assert main(["traffic", "report", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "FCT < 100 KB" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["traffic", "run", "--workload", "nope"], "workload 'nope': unknown"),
    (["traffic", "run", "--load", "1.5"], r"--load: 1.5 outside (0, 1]"),
    (["traffic", "run", "--load", "0"], r"--load: 0.0 outside (0, 1]"),
    (["traffic", "report", "/nonexistent-dir"], "/nonexistent-dir: no flows.csv, meta.json"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("picloud: error: ") and message in err and err.count("\n") == 1


def test_cli_malformed_cdf_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.cdf"
    path.write_text("1000 0\n2000 0.5\n1500 1\n")
    assert main(["traffic", "run", "--workload", str(path)]) == 2
    assert f"{path}:3: size 1500 below the previous 2000" in capsys.readouterr().err


def test_cli_workloads_lists_citations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["traffic", "workloads"]) == 0
    out = capsys.readouterr().out
    for name in ("websearch", "datamining", "fb_hadoop", "homa_w5", "benson"):
        assert name in out
    assert "SIGCOMM 2010" in out and "1,665,831" in out
