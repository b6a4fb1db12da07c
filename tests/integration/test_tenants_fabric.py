"""Tenants on a real fabric: OVS (userspace datapath) bridges, namespaces, our controller.

Each test builds its own fattree:4 (20 switches, 16 Pis, no default containers) with the tenants
it needs and tears it down, also when it fails (the Testbed context manager).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from controller_apps.pipeline import COOKIE_APP_MASK, COOKIE_TENANCY
from picloud.errors import TenantError
from picloud.runstate import api_port, of_port
from picloud.testbed import Testbed
from tenants.handle import current_plan, drop_counts
from tenants.verify import verify

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def two_tenants(tmp_path):
    """blue and red, both on 10.0.0.0/24, 8 members each spread over all pods."""
    spec = spec_file(tmp_path, "tenants:\n"
                     "  - {name: blue, subnet: 10.0.0.0/24, count: 8, placement: spread}\n"
                     "  - {name: red, subnet: 10.0.0.0/24, count: 8, placement: spread}\n")
    with Testbed("fattree:4", containers_per_pi=0, tenants=spec) as tb:
        yield tb


def members(tb, tenant: str) -> list:
    return [m for t, m in current_plan(tb).members if t.name == tenant]


def test_overlapping_tenants_reach_within_and_never_across(two_tenants):
    tb = two_tenants
    blue, red = members(tb, "blue"), members(tb, "red")
    assert sorted(m.ip for m in blue) == sorted(m.ip for m in red)  # the same address space
    pods = {m.pi.split("-")[0] for m in blue}
    assert pods == {"pi1", "pi2", "pi3", "pi4"}, "spread must cover every pod of fattree:4"
    report = tb.verify_isolation()
    assert report.ok, report.summary()
    assert report.matrix == {"blue": {"red": 0}, "red": {"blue": 0}}
    assert report.reachability["blue"] == {"pairs": 56, "failed": []}
    assert report.reachability["red"] == {"pairs": 56, "failed": []}
    assert report.probes > 100
    # The spoofed, IPv6 and tagged probes were dropped at the edge and counted per tenant.
    drops = drop_counts(tb)
    assert drops["blue"] > 0 and drops["red"] > 0


def test_verify_detects_a_broken_tenant_check(two_tenants):
    """The negative control: inject the bug 'the intruder tenant's frames for one member of the
    other tenant are carried as that tenant's' (a higher-priority rule on every Pi re-tagging them
    into the victim's VLAN before forwarding; routing and egress then deliver them as the victim's
    own); the same probes must report those leaks, and only those."""
    tb = two_tenants
    plan = current_plan(tb)
    for victim, intruder in (("blue-2", "red"), ("red-3", "blue")):
        m = next(m for _, m in plan.members if m.name == victim)
        owner = next(t for t, x in plan.members if x.name == victim)
        for pi in tb.pis:
            flow = {"dpid": tb.topology.dpid(pi), "table_id": 1, "priority": 3000,
                    "match": {"eth_dst": m.mac, "dl_vlan": plan.tenant(intruder).id},
                    "actions": [{"type": "SET_FIELD", "field": "vlan_vid", "value": 0x1000 | owner.id},
                                {"type": "GOTO_TABLE", "table_id": 2}]}
            requests.post(tb.controller_api + "/stats/flowentry/add", json=flow, headers=tb.controller_headers(),
                          timeout=10).raise_for_status()
    report = tb.verify_isolation()
    assert not report.ok and "FAIL" in report.summary()
    assert report.matrix["red"]["blue"] > 0 and report.matrix["blue"]["red"] > 0
    # The victims see the probes; their ICMP errors also carry the marker on to the member
    # owning the intruder's (overlapping) source address, which is a leak as well.
    assert {"blue-2", "red-3"} <= {leak["to"] for leak in report.leaks}
    assert {leak["kind"] for leak in report.leaks} <= {"unicast", "overlap"}


def test_members_added_and_removed_at_run_time(two_tenants):
    tb = two_tenants
    before = set(tb.containers)
    green = tb.tenant("green", subnet="10.0.0.0/24", rate=None)
    added = green.add(3, placement="pack")
    assert len({m.pi for m in added}) == 1  # pack: one Pi holds all three (capacity 8)
    assert set(tb.containers) == before | {m.name for m in added}
    matrix = tb.ping_all(tcp=True, containers=[m.name for m in added])
    assert all(loss == 0 for row in matrix.values() for loss in row.values()), matrix
    report = tb.verify_isolation()
    assert report.ok, report.summary()
    assert report.tenants == ["blue", "red", "green"]

    gone = green.remove(added[0].name)
    assert [m.name for m in gone] == [added[0].name]
    assert added[0].name not in tb.containers
    flows = tb.flows(added[0].pi)
    assert not any(added[0].mac in json.dumps(f["match"]) for f in flows), "removed member's rules stay"
    rest = [m.name for m in added[1:]]
    matrix = tb.ping_all(tcp=True, containers=rest)
    assert all(loss == 0 for row in matrix.values() for loss in row.values()), matrix

    # Bad input changes nothing: validation happens before any side effect.
    with pytest.raises(TenantError, match="do not fit"):
        green.add(300)
    with pytest.raises(TenantError, match="unknown pi 'nope'"):
        green.add(1, placement=["nope"])
    assert [m.name for m in green.members] == rest and set(tb.containers) == before | set(rest)

    green.delete()
    assert set(tb.containers) == before
    assert [t.name for t in current_plan(tb).tenants] == ["blue", "red"]


def _restart_controller(tb, log: Path) -> tuple[subprocess.Popen, float]:
    """The new controller, and the wall-clock time the old one was gone."""
    old = tb._controller_proc
    old.terminate()
    old.wait(timeout=20)
    gone = time.time()
    argv = [sys.executable, "-m", "controller_apps.runner", "--listen", f"127.0.0.1:{of_port(tb.prefix)}",
            "--api", f"127.0.0.1:{api_port(tb.prefix)}", "--topology", str(tb.state.path),
            "--tenants", tb.state.tenants_file]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True), gone


def _wait_switches(tb, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(requests.get(tb.controller_api + "/stats/switches", timeout=2).json()) >= count:
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"switches did not reconnect within {timeout}s")


def test_controller_restart_keeps_isolation_and_established_flows(two_tenants, tmp_path):
    tb = two_tenants
    blue = members(tb, "blue")
    pi = blue[0].pi
    tenancy_before = {(f["table_id"], f["priority"], json.dumps(f["match"], sort_keys=True)): f
                      for f in tb.flows(pi) if int(f["cookie"]) & COOKIE_APP_MASK == COOKIE_TENANCY}
    ping = tb.popen(blue[0].name, ["ping", "-D", "-i", "0.2", "-c", "150", "-W", "1", blue[5].ip],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = {}
    # Probes keep running for 20 s while the controller goes away and comes back.
    prober = threading.Thread(target=lambda: result.update(report=verify(tb, duration=20)))
    new = None
    try:
        time.sleep(1.0)
        prober_started = time.monotonic()
        prober.start()
        time.sleep(3)
        killed = time.time()
        new, gone = _restart_controller(tb, tmp_path / "controller2.log")
        _wait_switches(tb, len(tb.topology.bridges))
        back = time.time()
        prober.join(timeout=120)
        assert time.monotonic() - prober_started >= 20
        report = result["report"]
        assert report.ok, report.summary()
        out, _ = ping.communicate(timeout=60)
        # Nothing is removed on reconnect (tenancy keeps its rules, checked below; routing and the
        # pipeline re-ADD theirs in place), so an established flow keeps going. Measured 97-98 of 100
        # replies on a quiet host; a loss count is host load, so the test asserts what only a defect
        # breaks: replies while the controller was away (a flow whose rules went with the controller
        # gets none for the whole absence, which lasts seconds: terminate, interpreter start-up,
        # handshake), and most replies after it came back (a lost or re-added rule set gets none).
        stamps = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        # From the old controller's exit until every switch is back with the new one (an interpreter
        # importing os-ken, then handshakes: seconds), forwarding runs on the rules the switches kept.
        # That they were kept, not re-added, is proven by their durations and counters below.
        during = [t for t in stamps if gone < t < back]
        assert during, f"no reply in the {back - gone:.1f}s of the restart: it cut the flow"
        sent_after = max(0.0, killed - 4.0 + 30.0 - back) / 0.2  # ping ran 150 x 0.2 s from ~4 s before the kill
        if sent_after >= 10:
            after_back = [t for t in stamps if t > back]
            assert len(after_back) >= sent_after / 2, \
                f"{len(after_back)} replies of ~{sent_after:.0f} sent after the controller came back"
        after = {(f["table_id"], f["priority"], json.dumps(f["match"], sort_keys=True)): f
                 for f in tb.flows(pi) if int(f["cookie"]) & COOKIE_APP_MASK == COOKIE_TENANCY}
        assert set(after) == set(tenancy_before), "the restarted controller restores exactly the same rules"
        for key, flow in after.items():
            assert flow["cookie"] == tenancy_before[key]["cookie"]
            assert flow["duration_sec"] >= 20, f"rule was re-added, not kept: {flow}"
            assert flow["packet_count"] >= tenancy_before[key]["packet_count"], "counters were reset"
    finally:
        if ping.poll() is None:
            ping.kill()
        if new is not None:
            new.terminate()
            new.wait(timeout=20)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_iperf_left_behind():
    """A test that fails between starting two iperf3 jobs and collecting them must not leave the
    uncollected ones running (they outlive their namespace)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _iperf(tb, client: str, server: str, ip: str, port: int, seconds: int, udp_rate: str | None = None):
    srv = tb.popen(server, ["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    _STARTED.append(srv)
    time.sleep(0.3)
    udp = ["-u", "-b", udp_rate, "-l", "1400"] if udp_rate else []
    cli = tb.popen(client, ["iperf3", "-c", ip, "-p", str(port), *udp, "-t", str(seconds), "-J"],
                   stdout=subprocess.PIPE, text=True)
    _STARTED.append(cli)
    return srv, cli


def _received_mbit(job) -> float:
    srv, cli = job
    try:
        out, _ = cli.communicate(timeout=60)
        try:  # the client's JSON already holds the server's counts; a one-off UDP server that has
            srv.wait(timeout=10)  # not noticed the end (its last control segment late) is killed below
        except subprocess.TimeoutExpired:
            print(f"iperf3 server on port {srv.args[-1]} still running 10 s after its client ended: killed")
    finally:
        for proc in (cli, srv):  # never leave an iperf3 behind in a namespace about to go
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    end = json.loads(out)["end"]
    if "sum_received" in end:  # TCP
        return end["sum_received"]["bits_per_second"] / 1e6
    return end["sum"]["bits_per_second"] * (1 - end["sum"]["lost_percent"] / 100) / 1e6


def test_rate_limit_holds_and_other_tenant_unaffected(tmp_path):
    """The meter caps blue at its limit and leaves red alone. Rates are low enough (8 + 5 Mbit/s)
    that a loaded two-core host carries them; whether the userspace datapath holds 20 of 30 Mbit/s
    next to an unmetered 30 is bench/tenants_bench.py's measurement, not a correctness question."""
    spec = spec_file(tmp_path, "tenants:\n"
                     "  - {name: blue, subnet: 10.0.0.0/24, count: 2, placement: 'pi1-1-1,pi2-1-1', rate: 5}\n"
                     "  - {name: red, subnet: 10.0.0.0/24, count: 2, placement: 'pi1-1-2,pi2-1-2'}\n")
    with Testbed("fattree:4", containers_per_pi=0, tenants=spec) as tb:
        for pi in ("pi1-1-1", "pi2-1-1"):  # one meter per Pi hosting blue, none for red's Pis
            dpid = tb.topology.dpid(pi)
            stats = requests.get(f"{tb.controller_api}/stats/meter/{dpid}", timeout=10).json()[str(dpid)]
            assert [m["meter_id"] for m in stats] == [current_plan(tb).tenant("blue").id]
        dpid = tb.topology.dpid("pi1-1-2")
        assert requests.get(f"{tb.controller_api}/stats/meter/{dpid}", timeout=10).json()[str(dpid)] == []
        # Blue offers 8 Mbit/s against its 5 Mbit/s limit (the meter drops 3 in 8 packets; more would
        # also starve iperf3's own TCP control connection through the same meter); red (unmetered)
        # offers 5 Mbit/s on the same kind of path: red is the control for what the host carries right
        # now (on this shared two-core host at a load average of 13 it carried 1.4 of 5 Mbit/s). Correct: blue never
        # receives over its limit (10% for the meter's burst over a 6 s run); the meter does not drop
        # far below what the host could carry (a third of min(limit, what red's delivery ratio
        # gives blue's offer)); and red's packets never meet blue's meter.
        def meter(pi: str) -> dict:
            dpid = tb.topology.dpid(pi)
            return requests.get(f"{tb.controller_api}/stats/meter/{dpid}", timeout=10).json()[str(dpid)][0]

        blue = _received_mbit(_iperf(tb, "blue-1", "blue-2", "10.0.0.3", 5301, 6, udp_rate="8M"))
        after_blue = meter("pi1-1-1")
        red = _received_mbit(_iperf(tb, "red-1", "red-2", "10.0.0.3", 5302, 6, udp_rate="5M"))
        after_red = meter("pi1-1-1")
        carried = min(5.0, 8.0 * red / 5.0)
        print(f"blue received {blue:.1f} Mbit/s (limit 5, offered 8), red {red:.1f} Mbit/s (offered 5); "
              f"blue's meter {after_blue}")
        assert blue <= 5.5, f"blue received {blue:.1f} Mbit/s over its 5 Mbit/s limit"
        assert blue >= carried / 3, f"blue received {blue:.1f} Mbit/s where the host carries {carried:.1f}"
        assert after_blue["band_stats"][0]["packet_band_count"] > 0, f"blue's meter never dropped: {after_blue}"
        # Red is unaffected: its ~2,700 packets did not go through blue's meter (blue's own stragglers,
        # an ARP refresh or iperf3's closing control segments, may add a few), and it was carried.
        assert after_red["packet_in_count"] - after_blue["packet_in_count"] < 50, (after_blue, after_red)
        assert red > 0.5, f"red (no limit) received {red:.1f} of the 5 Mbit/s it offered"


def test_virtual_gateway_routes_subnets_and_peering_is_explicit(tmp_path):
    spec = spec_file(tmp_path, "tenants:\n"
                     "  - {name: blue, subnets: [10.1.0.0/24, 10.2.0.0/24], count: 1, placement: pi1-1-1}\n"
                     "  - {name: green, subnet: 10.9.0.0/24, count: 1, placement: pi3-1-1}\n")
    with Testbed("fattree:4", containers_per_pi=0, tenants=spec) as tb:
        blue = tb.tenant("blue")
        (b2,) = blue.add(1, placement=["pi2-1-1"], subnet="10.2.0.0/24")
        b1 = next(m for m in blue.members if m.name == "blue-1")
        assert (b1.ip, b2.ip) == ("10.1.0.2", "10.2.0.2")
        rc, out = tb.exec("blue-1", ["ping", "-c", "3", "-W", "2", b2.ip], timeout=30)
        assert rc == 0, out
        assert "ttl=63" in out  # one routed hop: the virtual gateway decremented the TTL
        rc, out = tb.exec("blue-1", ["ping", "-c", "2", "-W", "1", "10.9.0.2"], timeout=30)
        assert rc != 0, "green is reachable before any peering rule"
        blue.peer("green")
        rc, out = tb.exec("blue-1", ["ping", "-c", "3", "-W", "2", "10.9.0.2"], timeout=30)
        assert rc == 0, out
        report = tb.verify_isolation()
        assert report.ok, report.summary()  # direct L2 probes still fail: peering is routed only
