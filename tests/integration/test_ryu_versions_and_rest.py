"""Users' Ryu apps on every OpenFlow version, the Ryu book's subclass and REST patterns, and
`ryu-manager` driving a fabric, on real OVS with ping and TCP between containers.

Every app here is a fixture written for these tests in the style users write (tests/fixtures/
ryu_apps/of10_switch.py, of14_switch.py, of15_switch.py, monitor_switch.py, mac_table_rest.py).
Reactive learning switches forward the first packets of every flow through a Python controller on
a machine other tests share, so reachability is waited for (up to REACH_DEADLINE) instead of
sampled once: the assertion is that the fabric forwards, not how fast a loaded host does it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from picloud.testbed import Testbed

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "ryu_apps"
REACH_DEADLINE = 150.0  # s; a packet-in round trip took up to ~30 s on the shared, loaded test host
# One probe's wait: pings through installed flows took 4.3-7.5 s there, because the userspace
# datapath polls veth ports on ovs-vswitchd's main thread, which stalled 3-12 s at a time.
PROBE_WAIT = 15

TCP_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 5401)); srv.listen(8); srv.settimeout(float(sys.argv[2]))
print("listening", flush=True)
while True:
    conn, _ = srv.accept(); data = b""
    while not data.endswith(b"\\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    conn.sendall(data[::-1]); conn.close()
"""

TCP_CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], 5401), timeout=float(sys.argv[2]))
sock.sendall(b"picloud-ryu\\n"); reply = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    reply += chunk
print(reply.decode()[::-1].strip())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(tb: Testbed, src: str, dst: str, within: float = REACH_DEADLINE) -> None:
    deadline = time.monotonic() + within
    while True:
        rc, out = tb.exec(src, ["ping", "-c1", f"-W{PROBE_WAIT}", tb.container_ip(dst)])
        if rc == 0:
            return
        assert time.monotonic() < deadline, f"{src} -> {dst}: no ping reply within {within:.0f}s: {out}"


def wait_tcp(tb: Testbed, src: str, dst: str, within: float = REACH_DEADLINE) -> None:
    """A TCP exchange src -> dst (connect, send a line, read it back reversed) until it works."""
    server = tb.popen(dst, [sys.executable, "-c", TCP_SERVER, tb.container_ip(dst), str(within + 30)],
                      stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        deadline = time.monotonic() + within
        while True:
            rc, out = tb.exec(src, [sys.executable, "-c", TCP_CLIENT, tb.container_ip(dst), str(PROBE_WAIT)],
                              timeout=4 * PROBE_WAIT)
            if rc == 0 and out.strip().endswith("picloud-ryu"):
                return
            assert time.monotonic() < deadline, f"{src} -> {dst}: no TCP exchange within {within:.0f}s: {out}"
            time.sleep(1)
    finally:
        server.kill()
        server.wait()


def forwards(tb: Testbed, within: float = REACH_DEADLINE) -> None:
    """Ping and TCP both ways between the first and the last container, each within `within`."""
    a, b = tb.containers[0], tb.containers[-1]
    wait_ping(tb, a, b, within)
    wait_ping(tb, b, a, within)
    wait_tcp(tb, a, b, within)
    wait_tcp(tb, b, a, within)


@pytest.mark.parametrize(("app", "version"), [("of10_switch.py", "1.0"), ("of14_switch.py", "1.4"),
                                              ("of15_switch.py", "1.5")])
def test_app_of_each_openflow_version_forwards(leaves_nothing, app, version):
    with Testbed("linear:2", controller=[str(FIXTURES / app)]) as tb:
        leaves_nothing.append(tb.prefix)
        bridges = len(tb.topology.bridges)
        assert tb.handshake == {"switches": bridges, "versions": {version: bridges}}
        forwards(tb)


def test_simple_switch_13_subclass_with_monitor_thread_forwards_and_logs_port_stats(leaves_nothing):
    with Testbed("linear:2", controller=[str(FIXTURES / "monitor_switch.py")]) as tb:
        leaves_nothing.append(tb.prefix)
        assert tb.handshake["versions"] == {"1.3": len(tb.topology.bridges)}
        forwards(tb)
        log = Path(tb.state.controller["log"])
        dpid = f"{tb.topology.dpid('s1'):016x}"
        deadline = time.monotonic() + 60
        while f"portwatch dpid={dpid}" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "no port statistics logged for s1 within 60 s"
            time.sleep(1)
        # The inherited learning switch did the forwarding: SimpleSwitch13's mac_to_port-driven flows.
        learned = [f for f in tb.flows("s1") if f["priority"] == 1]
        macs = {tb.topology.node(c).mac for c in tb.containers}
        assert {f["match"]["dl_dst"] for f in learned} == macs


def test_controllerbase_rest_app_get_put_and_requirements(leaves_nothing):
    with Testbed("linear:2", controller=[str(FIXTURES / "mac_table_rest.py")]) as tb:
        leaves_nothing.append(tb.prefix)
        forwards(tb)  # the learning switch under the REST app works, and filled its table
        dpid = f"{tb.topology.dpid('s1'):016x}"
        table = requests.get(f"{tb.controller_api}/mactable/{dpid}", timeout=10)
        assert table.status_code == 200
        macs = {tb.topology.node(c).mac for c in tb.containers}
        assert macs <= set(table.json())
        put = tb.controller_request("PUT", f"/mactable/{dpid}", {"mac": "02:00:00:00:99:99", "port": 7})
        assert put["02:00:00:00:99:99"] == 7
        assert requests.get(f"{tb.controller_api}/mactable/{dpid}", timeout=10).json()["02:00:00:00:99:99"] == 7
        # The route's requirement (16 hex digits) is enforced before the app runs: 404, not a crash.
        assert requests.get(f"{tb.controller_api}/mactable/s1", timeout=10).status_code == 404
        assert requests.get(f"{tb.controller_api}/mactable/{'0' * 15}", timeout=10).status_code == 404
        # A state-changing Ryu route is behind the API's token like ours are.
        anonymous = requests.put(f"{tb.controller_api}/mactable/{dpid}", json={"mac": "02:00:00:00:99:98",
                                                                               "port": 8}, timeout=10)
        assert anonymous.status_code in (401, 403)
        # ...and ours still answer next to it on the same port.
        assert requests.get(f"{tb.controller_api}/state", timeout=10).status_code == 200


def _ryu_manager() -> list[str]:
    """The installed console script (CI's setup installs it); the module in a checkout that has not
    been reinstalled since the script was added."""
    script = Path(sys.executable).with_name("ryu-manager")
    if script.exists() or os.environ.get("CI") == "true":
        return [str(script)]
    return [sys.executable, "-m", "controller_apps.ryu_manager"]


def test_ryu_manager_drives_picloud_up_with_an_external_controller(leaves_nothing, tmp_path):
    with open(tmp_path / "ryu-manager.log", "wb") as log:
        _drive_with_ryu_manager(leaves_nothing, tmp_path, log)


def _drive_with_ryu_manager(leaves_nothing: list[str], tmp_path: Path, log) -> None:
    of_port, api_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    manager = subprocess.Popen([*_ryu_manager(), "--ofp-tcp-listen-port", str(of_port), "--wsapi-port",
                                str(api_port), "--api-token-file", str(tmp_path / "token"),
                                str(FIXTURES / "mac_table_rest.py")], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=ROOT, start_new_session=True)
    prefix = None
    try:
        deadline = time.monotonic() + 60
        while b"picloud controller ready" not in (tmp_path / "ryu-manager.log").read_bytes():
            assert manager.poll() is None, (tmp_path / "ryu-manager.log").read_text()
            assert time.monotonic() < deadline, "ryu-manager did not get ready within 60 s"
            time.sleep(0.5)
        up = subprocess.run([sys.executable, "-m", "picloud", "up", "linear:2", "--controller",
                             f"tcp:127.0.0.1:{of_port}", "--detach"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
        assert up.returncode == 0, up.stderr
        ready = up.stdout.strip().splitlines()[-1]
        prefix = ready.split()[2]
        leaves_nothing.append(prefix)
        assert f"controller tcp:127.0.0.1:{of_port} (4 of 4 bridges connected" in ready
        tb = Testbed.attach(prefix)
        forwards(tb)
        # The external controller's REST API (ryu-manager --wsapi-port) knows the fabric's switches.
        dpid = f"{tb.topology.dpid('s1'):016x}"
        assert requests.get(f"http://127.0.0.1:{api_port}/mactable/{dpid}", timeout=10).status_code == 200
        versions = requests.get(f"http://127.0.0.1:{api_port}/state/openflow", timeout=10).json()
        assert versions["switches"][dpid] == 0x04
    finally:
        stop_external(prefix, manager, env)


def stop_external(prefix: str | None, manager: subprocess.Popen, env: dict[str, str]) -> None:
    """Tear down a run attached to an external ryu-manager, then that manager's process group."""
    if prefix is not None:
        subprocess.run([sys.executable, "-m", "picloud", "down", "--run", prefix], env=env, cwd=ROOT,
                       capture_output=True, timeout=300)
    if manager.poll() is None:
        os.killpg(manager.pid, signal.SIGTERM)
    manager.wait(timeout=30)


def test_version_mismatch_is_one_line_per_switch_and_nonzero_exit():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    up = subprocess.run([sys.executable, "-m", "picloud", "up", "single:1", "--apps", str(FIXTURES / "of14_switch.py"),
                         "--of-versions", "13", "--detach"], capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=300)
    assert up.returncode != 0
    assert "picloud: run" not in up.stdout  # never a ready line over a dead control plane
    assert "s1: the app wants OpenFlow 1.4, the bridge offers 1.3" in up.stderr.splitlines()
    assert "pi1: the app wants OpenFlow 1.4, the bridge offers 1.3" in up.stderr.splitlines()


def test_ryu_manager_is_installed_with_picloud():
    if os.environ.get("CI") != "true" and not Path(sys.executable).with_name("ryu-manager").exists():
        pytest.skip("this checkout's venv predates the ryu-manager script (make setup installs it)")
    assert shutil.which("ryu-manager", path=str(Path(sys.executable).parent))
