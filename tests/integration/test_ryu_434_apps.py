"""Ryu 4.34's own apps, unmodified (fetched from the release, tests/integration/ryu_434.py), on
real OVS with ping and TCP between containers (issue 18's open items):

- simple_switch_stp_13 converges and forwards, on linear:3 and on a looped topology (a ring from a
  Mininet topology file), where it must block exactly one ring port and no broadcast storm follows;
- ofctl_rest's `/stats/*` and rest_topology's `/v1.0/topology/*` answer on OpenFlow 1.0, 1.4 and
  1.5, run the way Ryu's tutorials run them: `ryu-manager --observe-links ofctl_rest.py
  rest_topology.py simple_switch_1X.py` and a fabric pointed at it.

Spanning tree needs two forward delays (Ryu's default 15 s each) before a port forwards, plus a
max age (20 s) whenever a bridge learns of a better root; a learning switch's first packets then
go through the Python controller on a shared, loaded host (test_ryu_versions_and_rest.py's
REACH_DEADLINE). STP_DEADLINE is the sum with that slack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from picloud.testbed import Testbed
from tests.integration import ryu_434
from tests.integration.test_ryu_versions_and_rest import (
    REACH_DEADLINE,
    _ryu_manager,
    forwards,
    free_port,
    stop_external,
)

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
RING = ROOT / "tests" / "fixtures" / "topologies" / "mininet_ring3.py"
STP_DEADLINE = 2 * 15 + 20 + REACH_DEADLINE  # s: two forward delays + max age + a reactive path
OFPPC_NO_FWD = 1 << 5  # the port config bit stplib sets on a blocked port (OpenFlow 1.3)
STORM_WINDOW = 10.0  # s
# Packets all fabric ports may send in STORM_WINDOW on an idle, converged ring: a BPDU per
# designated port every 2 s (about 30 here) and a few neighbour/router solicitations. A broadcast
# loop re-sends every frame for ever, at whatever rate the datapath runs (thousands a second
# even on this loaded host), so 1,000 separates the two by far.
STORM_PACKETS = 1000


@pytest.fixture(scope="module")
def ryu(tmp_path_factory) -> Path:
    """The directory holding Ryu 4.34's ryu/app/*.py, each checked against SHA256SUMS."""
    return ryu_434.app_files(tmp_path_factory.mktemp("ryu-4.34-app"))


def fabric_ports(tb: Testbed) -> dict[str, set[int]]:
    """bridge -> its ports that lead to another bridge."""
    out: dict[str, set[int]] = {}
    for link in tb.topology.fabric_links():
        out.setdefault(link.a, set()).add(link.port_a)
        out.setdefault(link.b, set()).add(link.port_b)
    return out


def blocked_fabric_ports(tb: Testbed) -> list[tuple[str, int]]:
    blocked = []
    for bridge, ports in fabric_ports(tb).items():
        dpid = tb.topology.dpid(bridge)
        desc = requests.get(f"{tb.controller_api}/stats/portdesc/{dpid}", timeout=60).json()[str(dpid)]
        blocked += [(bridge, p["port_no"]) for p in desc if p["port_no"] in ports and p["config"] & OFPPC_NO_FWD]
    return blocked


def fabric_tx_packets(tb: Testbed) -> int:
    total = 0
    for bridge, ports in fabric_ports(tb).items():
        total += sum(p["tx_packets"] for p in tb.port_stats(bridge) if p["port_no"] in ports)
    return total


def test_stp_13_forwards_on_linear_3(leaves_nothing, ryu):
    with Testbed("linear:3", controller=[str(ryu / "simple_switch_stp_13.py")]) as tb:
        leaves_nothing.append(tb.prefix)
        assert tb.handshake["versions"] == {"1.3": len(tb.topology.bridges)}
        forwards(tb, within=STP_DEADLINE)
        assert blocked_fabric_ports(tb) == []  # a tree already: nothing to block


def test_stp_13_on_a_ring_blocks_one_port_forwards_and_does_not_storm(leaves_nothing, ryu):
    with Testbed(str(RING), controller=[str(ryu / "simple_switch_stp_13.py")]) as tb:
        leaves_nothing.append(tb.prefix)
        ring = fabric_ports(tb)
        assert len(tb.topology.fabric_links()) == 3 and len(ring) == 3  # the loop is there
        forwards(tb, within=STP_DEADLINE)
        # Forwarding can start before every bridge has heard the true root (a late BPDU on a
        # loaded host): the bridge that then learns it starts a topology change, and stplib puts
        # ports in LISTEN and LEARN (which set no OFPPC_NO_FWD bit) for two forward delays. A CI
        # run sampled that moment and saw no blocked port. So wait, within one more
        # reconvergence (the likely reading; the run kept no log), for the settled tree; a ring
        # that never blocks a port still fails.
        deadline = time.monotonic() + STP_DEADLINE
        while len(blocked := blocked_fabric_ports(tb)) != 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(blocked) == 1, f"spanning tree of a 3-bridge ring blocks exactly one port, not {blocked}"
        forwards(tb, within=STP_DEADLINE)  # forwarding again after any reconvergence
        before = fabric_tx_packets(tb)
        time.sleep(STORM_WINDOW)
        sent = fabric_tx_packets(tb) - before
        assert sent < STORM_PACKETS, f"{sent} packets on the ring's ports in {STORM_WINDOW:.0f} s idle: a storm"
        forwards(tb)  # and still forwarding after the idle window


# GET /stats/... endpoints of Ryu's ofctl_rest that must answer 200 per negotiated version. The
# others answer 200 or Ryu's own 501 ("Unsupported OF request in this version"): its ofctl_v1_0
# has no groups or meters, its ofctl_v1_5 no meterconfig/queueconfig (1.5 renamed them *desc).
# tablefeatures is left out: OVS describes 255 tables, a 13.7 MB answer that took 234 s of a
# 25 %-of-a-core controller at load 11 (measured); it answers, but is a benchmark, not a check.
MUST_ANSWER = {
    "1.0": ["desc", "flow", "aggregateflow", "port", "portdesc", "table", "queue"],
    "1.4": ["desc", "flow", "aggregateflow", "port", "portdesc", "table", "queue", "group", "groupdesc",
            "groupfeatures", "meter", "meterfeatures", "meterconfig", "queuedesc", "role"],
    "1.5": ["desc", "flow", "aggregateflow", "flowdesc", "port", "portdesc", "table", "queue", "group",
            "groupdesc", "groupfeatures", "meter", "meterfeatures", "meterdesc", "queuedesc", "role"],
}
ALL_GETS = ["desc", "flow", "aggregateflow", "flowdesc", "port", "portdesc", "table", "queue", "queueconfig",
            "queuedesc", "group", "groupdesc", "groupfeatures", "meter", "meterconfig", "meterdesc",
            "meterfeatures", "role"]
WIRE = {"1.0": 0x01, "1.4": 0x05, "1.5": 0x06}


@contextmanager
def fabric_under_ryu_manager(leaves_nothing: list[str], tmp_path: Path, apps: list[Path], spec: str,
                             versions: str) -> Iterator[tuple[Testbed, str, str]]:
    """`ryu-manager --observe-links APPS` and `picloud up SPEC --controller tcp:... --of-versions V`
    pointed at it: (testbed, API URL, API token)."""
    of_port, api_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log_path = tmp_path / "ryu-manager.log"
    with open(log_path, "wb") as log:
        manager = subprocess.Popen([*_ryu_manager(), "--observe-links", "--ofp-tcp-listen-port", str(of_port),
                                    "--wsapi-port", str(api_port), "--api-token-file", str(tmp_path / "token"),
                                    *map(str, apps)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   start_new_session=True)
    prefix = None
    try:
        deadline = time.monotonic() + 60
        while b"picloud controller ready" not in log_path.read_bytes():
            assert manager.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "ryu-manager did not get ready within 60 s"
            time.sleep(0.5)
        up = subprocess.run([sys.executable, "-m", "picloud", "up", spec, "--controller", f"tcp:127.0.0.1:{of_port}",
                             "--of-versions", versions, "--detach"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
        assert up.returncode == 0, up.stderr
        prefix = up.stdout.strip().splitlines()[-1].split()[2]
        leaves_nothing.append(prefix)
        yield Testbed.attach(prefix), f"http://127.0.0.1:{api_port}", (tmp_path / "token").read_text().strip()
    finally:
        stop_external(prefix, manager, env)


@pytest.mark.parametrize(("version", "switch_app"), [("1.0", "simple_switch.py"), ("1.4", "simple_switch_14.py"),
                                                     ("1.5", "simple_switch_15.py")])
def test_ofctl_rest_and_rest_topology_answer_on_each_version(leaves_nothing, tmp_path, ryu, version, switch_app):
    apps = [ryu / "ofctl_rest.py", ryu / "rest_topology.py", ryu / switch_app]
    with fabric_under_ryu_manager(leaves_nothing, tmp_path, apps, "linear:3", version.replace(".", "")) as (tb, api,
                                                                                                         token):
        dpids = {tb.topology.dpid(b) for b in tb.topology.bridges}
        negotiated = requests.get(f"{api}/state/openflow", timeout=10).json()["switches"]
        assert set(negotiated.values()) == {WIRE[version]} and len(negotiated) == len(dpids)
        forwards(tb)

        # ofctl_rest: a flow added through it is read back through it, then every GET answers.
        s1 = tb.topology.dpid("s1")
        added = requests.post(f"{api}/stats/flowentry/add", json={"dpid": s1, "priority": 4321, "table_id": 0,
                                                                  "match": {"in_port": 1}},
                              headers={"X-PiCloud-Token": token}, timeout=60)
        assert added.status_code == 200, added.text
        deadline = time.monotonic() + 60
        while True:
            flows = requests.get(f"{api}/stats/flow/{s1}", timeout=60)
            assert flows.status_code == 200, f"/stats/flow on OpenFlow {version}: {flows.status_code} {flows.text}"
            if any(f["priority"] == 4321 for f in flows.json()[str(s1)]):
                break
            assert time.monotonic() < deadline, f"the added flow is not in /stats/flow: {flows.json()}"
            time.sleep(1)
        for endpoint in ALL_GETS:
            reply = requests.get(f"{api}/stats/{endpoint}/{s1}", timeout=60)
            wanted = {200} if endpoint in MUST_ANSWER[version] else {200, 501}
            assert reply.status_code in wanted, f"/stats/{endpoint} on OpenFlow {version}: {reply.status_code}"
            if reply.status_code == 200:
                assert str(s1) in reply.json()

        # rest_topology: every bridge, every fabric link both ways (LLDP), every container as a host.
        switches = requests.get(f"{api}/v1.0/topology/switches", timeout=30).json()
        assert {int(s["dpid"], 16) for s in switches} == dpids
        expected_links = {(tb.topology.dpid(ln.a), tb.topology.dpid(ln.b)) for ln in tb.topology.fabric_links()}
        expected_links |= {(b, a) for a, b in expected_links}
        deadline = time.monotonic() + 60  # LLDP probes go out every few seconds
        while True:
            links = requests.get(f"{api}/v1.0/topology/links", timeout=30).json()
            seen = {(int(ln["src"]["dpid"], 16), int(ln["dst"]["dpid"], 16)) for ln in links}
            if seen == expected_links:
                break
            assert time.monotonic() < deadline, f"links {sorted(seen)} != fabric {sorted(expected_links)}"
            time.sleep(2)
        hosts = requests.get(f"{api}/v1.0/topology/hosts", timeout=30).json()
        macs = {tb.topology.node(c).mac for c in (tb.containers[0], tb.containers[-1])}  # the ones that talked
        assert macs <= {h["mac"] for h in hosts}
