"""iperf3 bulk flows, the Raspberry Pi Cloud web experiment, and tenant checks, on a real fabric."""

from __future__ import annotations

from pathlib import Path

import pytest

from picloud.errors import TrafficError
from picloud.testbed import Testbed
from topology.builders import build
from topology.stalls import OVS_STALL_S
from traffic import iperf, web

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def testbed():
    with Testbed(build("single:3"), controller="none") as tb:
        yield tb


def test_iperf_bulk_flow_reports_receiver_goodput(testbed) -> None:
    a, b = testbed.containers[:2]
    result = iperf.bulk(testbed, a, b, duration=2)
    assert result["goodput_mbps"] > 0 and result["bytes_received"] > 100_000
    by_bytes = result["bytes_received"] * 8 / result["seconds"] / 1e6
    assert result["goodput_mbps"] == pytest.approx(by_bytes, rel=0.01)
    with pytest.raises(TrafficError, match="both 'pi1-c1'"):
        iperf.bulk(testbed, a, a)


def test_web_experiment_serves_every_request(testbed, tmp_path: Path) -> None:
    # Each request may wait as long as the shared ovs-vswitchd may stall (topology/stalls.py): with
    # 5 s, a loaded host timed new connections out (slow upcalls), and the test then allowed 10 %
    # of errors, a loss target. Within the stall bound a healthy fabric answers every request.
    result = web.run(testbed, servers=2, rate=50, duration=3, size=2048, timeout=OVS_STALL_S, out=tmp_path)
    assert result["requests"] == 150
    assert (result["replies"], result["error_count"]) == (150, 0), result["errors"]
    assert 0 < result["response_ms"]["p50"] < 1000
    assert set(result["server_cpu"]) == set(result["servers"]) and len(result["servers"]) == 2
    assert all(v["total_s"] > 0 for v in result["server_cpu"].values())
    assert (tmp_path / "web.json").is_file()
    assert "replies/s" in web.render(result)


def test_tenant_with_one_member_is_refused(testbed, tmp_path: Path) -> None:
    """The plan says tenant 'solo' has one member: no pattern can run in it, and nothing starts."""
    from tenants import plan as plan_mod
    from tenants import store
    from tenants.model import TenantPlan

    plan = plan_mod.create_tenant(TenantPlan(), "solo", "10.50.0.0/24")
    plan, _members = plan_mod.add_members(plan, testbed.topology, "solo", 1)
    path = store.run_tenants_path(testbed.state)
    store.save(plan, path)
    previous = testbed.state.tenants_file
    testbed.state.tenants_file = str(path)
    try:
        with pytest.raises(TrafficError, match=r"tenant 'solo': 1 member\(s\) \(pattern 'all-to-all' needs"):
            testbed.traffic(workload="websearch", load=0.1, pattern="all-to-all", duration=2, seed=1,
                            tenant="solo", out=tmp_path / "t")
    finally:
        testbed.state.tenants_file = previous
        path.unlink(missing_ok=True)
    assert not (tmp_path / "t").exists()
