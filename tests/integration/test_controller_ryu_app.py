"""Unmodified Ryu apps (written against `ryu.*`) run under PiCloud's controller on real OVS and
forward TCP between containers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from picloud.testbed import Testbed

pytestmark = pytest.mark.root

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ryu_apps"

SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 5400)); srv.listen(1); srv.settimeout(20)
print("listening", flush=True)
conn, _ = srv.accept(); total = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    total += len(data)
conn.sendall(str(total).encode()); conn.close(); print(total, flush=True)
"""

CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], 5400), timeout=10)
sock.sendall(b"x" * int(sys.argv[2])); sock.shutdown(socket.SHUT_WR)
print(sock.recv(64).decode())
"""


def bulk_tcp(tb: Testbed, src: str, dst: str, size: int) -> int:
    """Send `size` bytes over one TCP connection from src to dst; the bytes dst counted."""
    server = tb.popen(dst, [sys.executable, "-c", SERVER, tb.container_ip(dst)], stdout=-1, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        rc, out = tb.exec(src, [sys.executable, "-c", CLIENT, tb.container_ip(dst), str(size)], timeout=30)
        assert rc == 0, out
        return int(out.strip().splitlines()[-1])
    finally:
        server.kill()
        server.wait()


def all_reach(matrix: dict[str, dict[str, float]]) -> bool:
    return all(loss == 0.0 for row in matrix.values() for loss in row.values())


def test_ryu_sample_learning_switch_forwards_tcp(leaves_nothing):
    """Ryu's own simple_switch_13.py, unmodified, as `picloud controller FILE` would run it."""
    with Testbed("single:2", controller=[str(FIXTURES / "simple_switch_13.py")]) as tb:
        leaves_nothing.append(tb.prefix)
        matrix = tb.ping_all(tcp=True)
        assert all_reach(matrix), matrix
        a, b = tb.containers
        assert bulk_tcp(tb, a, b, 2_000_000) == 2_000_000
        # The Ryu sample learnt both containers and installed its exact-match flows on s1.
        learned = [f for f in tb.flows("s1") if f["priority"] == 1]
        assert {f["match"]["dl_dst"] for f in learned} == {tb.topology.node(c).mac for c in tb.containers}
        assert all(len(f["actions"]) == 1 and f["actions"][0].startswith("OUTPUT:") for f in learned)


@pytest.fixture(scope="module")
def hub_testbed():
    with Testbed("single:2", controller=[str(FIXTURES / "ryu_hub.py")]) as tb:
        yield tb


def test_own_ryu_hub_forwards_every_packet_through_the_controller(hub_testbed):
    tb = hub_testbed
    matrix = tb.ping_all()
    assert all_reach(matrix), matrix
    flows = tb.flows("s1")
    assert [f["actions"] for f in flows] == [["OUTPUT:CONTROLLER"]]  # a hub installs nothing else
    assert flows[0]["packet_count"] > 0


def test_own_ryu_hub_forwards_tcp(hub_testbed):
    """Every packet of a hub goes through a packet-in and a packet-out. On OVS's userspace TSO
    datapath the packet-in's TCP checksum is only the offload partial sum; without the runner's
    repair (controller_apps.fastpath.repair_partial_checksum) no connection would come up. Data
    stays small: every segment takes three controller round trips (one per bridge), so a bulk
    transfer through a Python hub would measure the machine's load more than the hub."""
    tb = hub_testbed
    assert all_reach(tb.ping_all(tcp=True))
    a, b = tb.containers
    assert bulk_tcp(tb, a, b, 1000) == 1000


def test_ryu_app_needing_a_dropped_part_fails_the_run_with_one_line(leaves_nothing, tmp_path):
    from picloud.errors import ControllerError

    tb = Testbed("single:1", controller=[str(FIXTURES / "needs_websocket.py")])
    with pytest.raises(ControllerError) as info:
        tb.up()
    assert "ryu.app.wsgi.websocket: WebSocket routes are not provided" in str(info.value)
