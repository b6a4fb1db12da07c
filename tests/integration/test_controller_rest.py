"""The controller's REST API against real OVS: Ryu ofctl_rest's shapes, flow entries that really
change forwarding, and /state with live utilisation from the monitor app."""

from __future__ import annotations

import sys
import time

import pytest
import requests

from controller_apps.pipeline import COOKIE_L2
from picloud.testbed import Testbed
from topology.stalls import OVS_STALL_S

pytestmark = pytest.mark.root

PORT_STATS_KEYS = {"port_no", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped",
                   "rx_errors", "tx_errors", "rx_frame_err", "rx_over_err", "rx_crc_err", "collisions",
                   "duration_sec", "duration_nsec"}
FLOW_KEYS = {"priority", "cookie", "idle_timeout", "hard_timeout", "actions", "match", "byte_count",
             "duration_sec", "duration_nsec", "packet_count", "length", "flags", "table_id"}


@pytest.fixture(scope="module")
def tb():
    with Testbed("single:2", controller=["l2_learning", "monitor"]) as testbed:
        yield testbed


def get(tb: Testbed, path: str):
    # /stats/* wait for the switch's reply, and so for an ovs-vswitchd stall (topology/stalls.py)
    response = requests.get(tb.controller_api + path, timeout=OVS_STALL_S)
    assert response.status_code == 200, response.text
    return response.json()


def post(tb: Testbed, path: str, body: dict) -> None:
    response = requests.post(tb.controller_api + path, json=body, headers=tb.controller_headers(), timeout=5)
    assert response.status_code == 200, response.text


def tcp_ok(tb: Testbed, src: str, dst: str, timeout: float = 3.0) -> bool:
    return tb.ping_all(tcp=True, containers=[src, dst], timeout=timeout)[src][dst] == 0.0


def eventually(check, seconds: float = 8.0) -> bool:
    """True once check() is; OVS revalidates cached datapath flows a moment after a flow-mod, so
    a connection right after the change may still take the old path (seen under load)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_switches_and_stats_have_ryu_shapes(tb):
    dpids = sorted(tb.topology.dpid(n) for n in tb.topology.bridges)
    assert get(tb, "/stats/switches") == dpids
    assert eventually(lambda: tcp_ok(tb, *tb.containers))
    s1 = tb.topology.dpid("s1")
    flows = get(tb, f"/stats/flow/{s1}")
    assert list(flows) == [str(s1)]
    assert all(set(f) == FLOW_KEYS for f in flows[str(s1)])
    assert {f["cookie"] for f in flows[str(s1)]} == {COOKIE_L2}  # all of them l2_learning's
    ports = get(tb, f"/stats/port/{s1}")[str(s1)]
    assert {p["port_no"] for p in ports} >= {1, 2}
    assert all(set(p) >= PORT_STATS_KEYS for p in ports)
    assert sum(p["rx_packets"] for p in ports if p["port_no"] in (1, 2)) > 0
    assert get(tb, f"/stats/group/{s1}") == {str(s1): []}
    assert get(tb, f"/stats/meter/{s1}") == {str(s1): []}
    assert get(tb, f"/stats/desc/{s1}")[str(s1)]["mfr_desc"] == "Nicira, Inc."


def test_flowentry_add_and_delete_change_forwarding(tb):
    a, b = tb.containers
    s1 = tb.topology.dpid("s1")
    port_from_a = tb.topology.port("s1", tb.topology.node(a).pi)
    drop = {"dpid": s1, "table_id": 0, "priority": 60000, "cookie": 0xBEEF,
            "match": {"in_port": port_from_a, "dl_type": 0x0800, "nw_proto": 6}, "actions": []}
    post(tb, "/stats/flowentry/add", drop)
    try:
        flows = get(tb, f"/stats/flow/{s1}")[str(s1)]
        (mine,) = [f for f in flows if f["cookie"] == 0xBEEF]
        assert mine["priority"] == 60000 and mine["actions"] == []
        assert mine["match"] == {"in_port": port_from_a, "dl_type": 0x0800, "nw_proto": 6}
        # TCP from a's side is dropped at s1 (the drop rule counts the attempts) ...
        assert eventually(lambda: not tcp_ok(tb, a, b, timeout=1.0))
        (mine,) = [f for f in get(tb, f"/stats/flow/{s1}")[str(s1)] if f["cookie"] == 0xBEEF]
        assert mine["packet_count"] > 0
        assert tb.ping_all(containers=[a, b])[a][b] == 0.0  # ... ICMP still passes
    finally:
        post(tb, "/stats/flowentry/delete", {"dpid": s1, "cookie": 0xBEEF, "cookie_mask": 0xFFFF, "table_id": 255})
    assert not [f for f in get(tb, f"/stats/flow/{s1}")[str(s1)] if f["cookie"] == 0xBEEF]
    assert eventually(lambda: tcp_ok(tb, a, b))


STREAM = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], 5401), timeout=float(sys.argv[3]))
end = time.time() + float(sys.argv[2]); chunk = b"x" * 65536
while time.time() < end:
    sock.sendall(chunk)
"""
SINK = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 5401)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept()
while conn.recv(1 << 20):
    pass
"""


def test_state_reports_connected_switches_and_live_link_utilisation(tb):
    state = get(tb, "/state")
    assert {s["name"] for s in state["switches"] if s["connected"]} == set(tb.topology.bridges)
    s1 = next(s for s in state["switches"] if s["name"] == "s1")
    assert {p["port_no"] for p in s1["ports"]} == {1, 2}
    assert any(e["kind"] == "switch" for e in state["events"])

    a, b = tb.containers
    access = frozenset((a, tb.topology.node(a).pi))
    sink = tb.popen(b, [sys.executable, "-c", SINK, tb.container_ip(b)], stdout=-1, text=True)
    best = 0.0
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        stream = tb.popen(a, [sys.executable, "-c", STREAM, tb.container_ip(b), "3.5", str(OVS_STALL_S)],
                          stdout=-1, stderr=-1)
        # The monitor polls every second and publishes a rate when a port stats reply arrives; the
        # replies (and the stream itself: the userspace datapath) wait while ovs-vswitchd's main
        # loop stalls, so the busy sample may come after the stream ended. Watch /state from the
        # stream's start until a busy sample shows, for up to the stream plus the longest stall a
        # healthy run survives (topology/stalls.py); 1.5 s after the end was shorter than measured stalls.
        deadline = time.monotonic() + 3.5 + OVS_STALL_S
        while time.monotonic() < deadline and best <= 1e6:
            links = {frozenset((ln["a"], ln["b"])): ln for ln in get(tb, "/state")["links"]}
            best = max(best, links[access]["bps"])
            time.sleep(0.3)
        assert stream.wait(timeout=OVS_STALL_S + 15) == 0, stream.stderr.read() if stream.stderr else ""
    finally:
        sink.kill()
        sink.wait()
    links = {frozenset((ln["a"], ln["b"])): ln for ln in get(tb, "/state")["links"]}
    ports = get(tb, "/monitor/ports")
    assert ports and {"switch", "port", "tx_bps", "rx_bps"} == set(ports[0])
    link = links[frozenset(("s1", tb.topology.node(a).pi))]
    assert link["capacity_bps"] == 1e9 and 0.0 <= link["util"] <= 1.0
    # Idle, these links carry nothing (no discovery app here); the stream moves tens of Mbit/s on
    # a quiet machine and a few under heavy load, so 1 Mbit/s tells the two apart either way.
    assert best > 1e6, (best, link)
