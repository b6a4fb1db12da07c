"""Traffic inside a tenant, and the `picloud traffic` CLI against a run started elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from picloud.testbed import Testbed
from topology.builders import build

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


def test_tenant_traffic_uses_member_addresses_only(tmp_path: Path) -> None:
    with Testbed(build("single:4")) as tb:
        red = tb.tenant("red", subnet="10.60.0.0/24")
        red.add(3)
        members = {m.name: m.ip.split("/")[0] for m in red.members}
        results = tb.traffic(workload="fb_webserver", load=0.05, pattern="all-to-all", duration=3, seed=2,
                             tenant="red", out=tmp_path / "red", link_mbps=100)
    assert results.meta["addresses"] == members
    assert {r.src for r in results.flows} | {r.dst for r in results.flows} <= set(members)
    assert {r.tenant for r in results.flows} == {"red"}
    # Every flow is accounted for and reached its member address. Not all need finish: on a loaded
    # host the tenant path can stall a flow past the drain time (reported as unfinished, never dropped).
    statuses = [r.status for r in results.flows]
    assert set(statuses) <= {"done", "unfinished"}, [r.error for r in results.flows if r.error][:3]
    assert statuses.count("done") > 0.5 * len(statuses)
    assert results.meta["tenants"]["tenants"][0]["name"] == "red"
    assert results.meta["controller_apps"] == ["discovery", "routing", "monitor", "tenancy"]


def test_cli_run_and_report_on_an_attached_run(tmp_path: Path) -> None:
    with Testbed(build("single:3"), controller="none") as tb:
        out = tmp_path / "cli"
        run = subprocess.run(
            [sys.executable, "-m", "picloud", "traffic", "run", "--run", tb.prefix, "--workload",
             "fb_webserver", "--load", "0.05", "--pattern", "permutation", "--duration", "2", "--seed", "4",
             "--out", str(out), "--plots", "--capture", "link:s1,pi1"],
            capture_output=True, text=True, cwd=REPO, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "flows settled" not in run.stderr  # the progress bar is for a terminal, not a pipe or log
        assert f"results: {out}" in run.stdout and (out / "fct_cdf.png").is_file()
        assert (out / "capture.pcapng").stat().st_size > 0
        assert json.loads((out / "meta.json").read_text())["capture"]["check"]
        bad = subprocess.run(
            [sys.executable, "-m", "picloud", "traffic", "run", "--run", tb.prefix, "--pattern", "stride",
             "--stride", "3", "--duration", "1"], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert bad.returncode == 2
        assert bad.stderr == ("picloud: error: pattern 'stride': stride 3 with 3 hosts "
                              "(needs 1 <= stride < 3)\n")
    report = subprocess.run([sys.executable, "-m", "picloud", "traffic", "report", str(out), str(out),
                             "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert report.returncode == 0
    summary = json.loads(report.stdout)[str(out)]
    assert summary["pattern"] == "permutation" and summary["unfinished"] == 0
