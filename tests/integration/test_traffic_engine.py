"""The traffic engine on a real fabric: complete result directories, and FCTs a packet capture confirms."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from picloud.errors import TrafficError
from picloud.testbed import Testbed
from topology.builders import build
from traffic import iperf
from traffic.engine import AGENT_PORT, replay
from traffic.results import Results
from traffic.trace import Flow, Trace

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def testbed():
    """single:4 without a controller: four containers behind one switch (loop-free, quick to build)."""
    with Testbed(build("single:4"), controller="none") as tb:
        # Resolve ARP everywhere first (and prove the fabric carries traffic at all), so a slow first
        # neighbour lookup on a busy host is not mistaken for the engine's doing.
        loss = tb.ping_all()
        assert all(v == 0 for row in loss.values() for v in row.values()), loss
        tb.path_mbps = iperf.bulk(tb, tb.containers[0], tb.containers[1], duration=1)["goodput_mbps"]
        yield tb


def _need_capacity(testbed, mbps: float) -> None:
    """A shared host can starve the userspace datapath (we measured 0.4 Mbit/s under other runs'
    load); a load test then measures the host, not the engine. Skip with the figure instead."""
    if testbed.path_mbps < mbps:
        why = (f"the fabric carries {testbed.path_mbps:.1f} Mbit/s right now (host overloaded); "
               f"this test offers {mbps:.0f} Mbit/s")
        if os.environ.get("CI"):  # CI has the machine to itself: a starved path there is a failure
            pytest.fail(why)
        pytest.skip(why)


def test_run_at_ten_percent_writes_every_file_and_finishes_every_flow(testbed, tmp_path: Path) -> None:
    _need_capacity(testbed, 40)  # 4 senders at 10% of 100 Mbit/s
    results = testbed.traffic(workload="websearch", load=0.1, pattern="all-to-all", duration=6, seed=3,
                              out=tmp_path / "run", link_mbps=100)
    for name in ("trace.csv", "flows.csv", "summary.json", "meta.json"):
        assert (results.directory / name).is_file(), name
    trace_rows = (results.directory / "trace.csv").read_text().splitlines()
    assert len(results.flows) == len(trace_rows) - 1 > 5  # every planned flow has a record
    assert {r.status for r in results.flows} == {"done"}, [r.error for r in results.flows if r.error]
    assert results.summary["unfinished"] == 0
    assert all(r.bytes_received == r.size for r in results.flows)
    meta = json.loads((results.directory / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["topology"]["name"] == "single:4" and "python" in meta["versions"]
    assert meta["controller_apps"] == "none" and meta["command_line"]
    # The run reads back identically, and plots are real PNG files.
    again = Results.load(results.directory)
    assert again.summary == json.loads((results.directory / "summary.json").read_text())
    for path in results.plots():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FCT < 100 KB" in results.report()


def test_unfinished_flows_are_reported_not_dropped(testbed, tmp_path: Path) -> None:
    """A flow far too big for its drain time must appear as unfinished, with its partial bytes."""
    _need_capacity(testbed, 5)  # the small flow must finish within the drain time
    a, b = testbed.containers[:2]
    trace = Trace([Flow(0, a, b, 50_000, 0.0), Flow(1, a, b, 20_000_000_000, 0.1)],
                  {"duration": 0.5, "drain": 3.0})
    results = replay(testbed, trace, tmp_path / "cut")
    status = {r.id: r for r in results.flows}
    assert status[0].status == "done"
    assert status[1].status == "unfinished" and 0 < status[1].bytes_received < 20_000_000_000
    assert results.summary["unfinished"] == 1


def test_unknown_tenant_is_refused_before_anything_runs(testbed, tmp_path: Path) -> None:
    with pytest.raises(TrafficError, match=r"tenant 'nobody': unknown in run"):
        testbed.traffic(workload="websearch", load=0.1, pattern="all-to-all", duration=2, seed=1,
                        tenant="nobody", out=tmp_path / "t")
    assert not (tmp_path / "t").exists()


def _capture_fcts(pcap: Path, server_ip: str, handshake: set[int]) -> dict[int, float]:
    """FCT per flow id as a capture saw it: from the first client packet that starts with the flow's
    16-byte header (id, size), or for a flow that opened its own connection (`handshake`) from that
    connection's SYN, to the first server packet that starts with its acknowledgement (the same id; a
    retransmitted copy comes after the one the client took), in microseconds. Independent of
    traffic.capture_check's stream walk on purpose."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    first: dict[int, float] = {}
    last: dict[int, float] = {}
    syn: dict[int, float] = {}  # client port -> its connection's SYN
    for pkt in rdpcap(str(pcap)):
        if IP not in pkt or TCP not in pkt:
            continue
        tcp, ip = pkt[TCP], pkt[IP]
        if ip.dst == server_ip and tcp.dport == AGENT_PORT and tcp.flags & 0x02 and not tcp.flags & 0x10:
            syn.setdefault(tcp.sport, float(pkt.time))
        payload = bytes(tcp.payload)
        if len(payload) < 16:
            continue
        flow_id = int.from_bytes(payload[:8], "big")
        if ip.dst == server_ip and tcp.dport == AGENT_PORT and flow_id < 1000 and flow_id not in first:
            first[flow_id] = syn[tcp.sport] if flow_id in handshake else float(pkt.time)
        if ip.src == server_ip and tcp.sport == AGENT_PORT:
            last.setdefault(flow_id, float(pkt.time))
    return {i: (last[i] - first[i]) * 1e6 for i in first if i in last}


def _wait_until_stable(path: Path, quiet: float = 0.7, limit: float = 10.0) -> None:
    end, size, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < end:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def test_fct_agrees_with_a_packet_capture(testbed, tmp_path: Path) -> None:
    _need_capacity(testbed, 10)
    src, dst = testbed.containers[0], testbed.containers[1]
    pcap = tmp_path / "client.pcap"
    # Resolve ARP first (a capture-independent delay the engine's pooled connections would meet first).
    assert testbed.exec(src, ["ping", "-c", "1", "-W", "2", testbed.container_ip(dst)])[0] == 0
    dump = testbed.fabric.popen(src, ["tcpdump", "-i", "eth0", "-U", "-n", "-s", "128", "-B", "8192", "-w",
                                      str(pcap), "tcp", "port", str(AGENT_PORT)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    try:
        assert dump.stderr is not None
        assert "listening" in dump.stderr.readline()
        time.sleep(0.5)  # "listening" comes a moment before the capture filter is attached
        # Several flows in turn on the pooled connections (payload bytes are zeros: a payload packet reads
        # as flow 0, whose header packet comes before any of them).
        sizes = [2_000, 100_000, 1_000_000, 3_000_000, 2_000, 2_000]
        flows = [Flow(i, src, dst, size, 0.3 * i) for i, size in enumerate(sizes)]
        results = replay(testbed, Trace(flows, {"duration": 1.9, "drain": 10.0}), tmp_path / "cap")
        _wait_until_stable(pcap)  # tcpdump may lag behind on a busy 2-core host
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    engine = {r.id: r.fct_us for r in results.flows}
    captured = _capture_fcts(pcap, testbed.container_ip(dst), {r.id for r in results.flows if r.handshake})
    states = {r.id: (r.status, r.error, r.bytes_received) for r in results.flows}
    assert sorted(captured) == list(range(len(sizes))) and None not in engine.values(), (states, engine, captured)
    # Physically: the engine's FCT starts at its agent's clock just before the first send and ends at
    # the kernel's receive timestamp of the acknowledgement; the capture sees the same two packets on
    # the wire. So the engine's FCT can never be shorter (1 ms for timestamp granularity), and is
    # longer only by how long the agent waited for a core between reading its clock and sending:
    # tens of ms on a loaded 2-core host at worst (CI measured 2.9 ms once). The 1 ms target is
    # the traffic bench's, never a test's.
    for i, theirs in captured.items():
        assert -1_000 < engine[i] - theirs < 20_000, (engine, captured)  # type: ignore[operator]
