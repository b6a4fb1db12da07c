"""Issue 19's adversarial suite against live servers: a real fabric (OVS bridges, namespaces,
PiCloud's controller with its API) and the web UI serving it, attacked the way a web page in the
user's browser, a DNS-rebinding site, a hostile results directory and another local user would.

Every attack must be refused, and the fabric's flow tables (`ovs-ofctl dump-flows` on every
bridge, counters left out) must be exactly what they were before the attacks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.root

EVIL = "http://evil.example"
# A flow a web page would love to add: top priority, drop everything on the switch.
ATTACK_FLOW = {"priority": 65535, "cookie": 0xBAD, "match": {}, "actions": [], "table_id": 0}
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, out of nobody's reach


def dump_flows(tb) -> dict[str, list[str]]:
    """Every bridge's flow table as ovs-ofctl prints it, without counters or ages."""
    out = {}
    for bridge in tb.topology.bridges:
        text = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows",
                               tb.fabric.ofctl_target(bridge)], capture_output=True, text=True, check=True).stdout
        out[bridge] = sorted(line.strip() for line in text.splitlines() if line.strip() and "reply" not in line)
    return out


def stable_flows(tb, seconds: float = 60.0) -> dict[str, list[str]]:
    """The flow tables once two dumps 3 s apart agree (discovery and routing have settled)."""
    deadline = time.monotonic() + seconds
    last = dump_flows(tb)
    while time.monotonic() < deadline:
        time.sleep(3)
        now = dump_flows(tb)
        if now == last:
            return now
        last = now
    raise AssertionError("the flow tables never settled before the attacks")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fabric with the default controller (token-protected API) and a UI with a results dir."""
    from picloud.testbed import Testbed
    from webui.server import UIServer

    results = tmp_path_factory.mktemp("results")
    exp = results / "exp1"
    exp.mkdir()
    (exp / "summary.json").write_text(json.dumps({"workload": "websearch", "flows": 1}))
    (exp / "flows.csv").write_text("src,dst,fct_us\na,b,1\n")
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("TOPSECRET-outside-the-results\n")
    (exp / "leak.txt").symlink_to(secret)
    (exp / "plot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("/api/verify",'
                                  '{method:"POST"})</script></svg>')
    with Testbed("single:2") as tb:
        ui = UIServer(tb, port=0, results=results)
        try:
            before = stable_flows(tb)
            yield tb, ui, before
            assert dump_flows(tb) == before, "an attack changed a flow table"
        finally:
            ui.stop()


def api(tb) -> str:
    return tb.controller_api


def dpid(tb) -> int:
    return tb.topology.dpid(tb.topology.bridges[0])


# --- a web page in the user's browser -----------------------------------------------------------
def test_text_plain_post_from_a_foreign_origin_is_refused(run):
    """Finding 1: `flowentry/add` took a text/plain body from any Origin, no token: 200 and a flow-mod."""
    tb, ui, before = run
    body = json.dumps(ATTACK_FLOW | {"dpid": dpid(tb)})
    for headers in ({"Content-Type": "text/plain", "Origin": EVIL}, {"Content-Type": "text/plain"},
                    {"Content-Type": "application/x-www-form-urlencoded", "Origin": EVIL},
                    {"Content-Type": "application/json"}):  # JSON, but no token
        for path in ("/stats/flowentry/add", "/stats/flowentry/modify", "/stats/flowentry/delete"):
            resp = requests.post(api(tb) + path, data=body, headers=headers, timeout=10)
            assert resp.status_code in (401, 403, 415), (path, headers, resp.status_code)
    resp = requests.delete(f"{api(tb)}/stats/flowentry/clear/{dpid(tb)}", headers={"Origin": EVIL}, timeout=10)
    assert resp.status_code in (401, 403)
    # the UI's actions, even with the right token, refuse a foreign origin and a non-JSON body
    resp = requests.post(ui.url + "api/links/s1/pi1", data='{"up": false}',
                         headers={"Content-Type": "text/plain", "X-PiCloud-Token": ui.token}, timeout=10)
    assert resp.status_code == 415
    resp = requests.post(ui.url + "api/verify", json={}, headers={"Origin": EVIL, "X-PiCloud-Token": ui.token},
                         timeout=10)
    assert resp.status_code == 403
    assert dump_flows(tb) == before


def test_dns_rebinding_host_is_refused_by_both_servers(run):
    """Finding 5: with `Host: attacker.example:PORT`, the UI and the controller's /state answered 200."""
    tb, ui, _ = run
    ui_port, api_port = urllib.parse.urlsplit(ui.url).port, urllib.parse.urlsplit(api(tb)).port
    for url, port in ((api(tb) + "/state", api_port), (api(tb) + "/stats/switches", api_port),
                      (ui.url, ui_port), (ui.url + "api/topology", ui_port),
                      (ui.url + "api/experiments/exp1/files/flows.csv", ui_port)):
        resp = requests.get(url, headers={"Host": f"attacker.example:{port}"}, timeout=10)
        assert resp.status_code == 400, (url, resp.status_code)
        assert "DNS-rebinding" in resp.json()["message"]
        assert requests.get(url, timeout=10).status_code == 200  # the real name still works


def test_ui_cannot_be_framed_and_runs_no_inline_script(run):
    """Findings 4 and 6: no CSP and no X-Frame-Options."""
    _, ui, _ = run
    resp = requests.get(ui.url, timeout=10)
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    assert resp.headers["X-Frame-Options"] == "DENY"


# --- a hostile results directory ----------------------------------------------------------------
def test_a_symlinked_results_file_is_not_served(run):
    """Finding 3: leak.txt -> a file outside the results was served with 200."""
    _, ui, _ = run
    resp = requests.get(ui.url + "api/experiments/exp1/files/leak.txt", timeout=10)
    assert resp.status_code == 404 and b"TOPSECRET" not in resp.content
    assert "leak.txt" not in requests.get(ui.url + "api/experiments/exp1", timeout=10).json()["files"]


def test_an_svg_with_script_is_a_download(run):
    """Finding 4: plot.svg was served inline as image/svg+xml, its script in the UI's origin."""
    _, ui, _ = run
    resp = requests.get(ui.url + "api/experiments/exp1/files/plot.svg", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert "svg" not in resp.headers["Content-Type"] and "sandbox" in resp.headers["Content-Security-Policy"]


# --- floods -------------------------------------------------------------------------------------
def _raw_post(url: str, path: str, length: int, send: int, ctype: str) -> bytes:
    """Announce a `length`-byte body, send only `send` bytes of it, and read the reply's head: the
    refusal must come from the announced length alone. (Werkzeug then reads and discards what the
    client still sends, 10 MB at a time, so that the client sees the 413; nothing is parsed.)"""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"x" * send)
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in reply and (chunk := sock.recv(65536)):
                reply += chunk
    return reply


def test_a_64_mib_body_is_refused_before_it_is_read(run):
    """Finding 7: a 64 MiB multipart POST with no token was parsed and spooled to disk before its 401."""
    tb, ui, _ = run
    size = 64 << 20
    for url, path, ctype in ((ui.url, "/api/links/s1/pi1", "multipart/form-data; boundary=x"),
                             (api(tb), "/stats/flowentry/add", "application/json")):
        reply = _raw_post(url, path, size, 1 << 20, ctype)  # 1 MiB sent of the 64 announced
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert requests.get(ui.url + "api/topology", timeout=10).status_code == 200


def test_300_stream_connections_get_a_clear_503_past_the_cap(run):
    """Finding 7: /api/stream had no cap: 200 connections held 206 threads."""
    from webui import stream

    _, ui, _ = run
    parts = urllib.parse.urlsplit(ui.url)
    threads_before = threading.active_count()
    socks, statuses = [], []
    try:
        for _ in range(300):
            s = socket.create_connection((parts.hostname, parts.port), timeout=30)
            s.sendall(f"GET /api/stream HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n\r\n".encode())
            socks.append(s)
        for s in socks:
            head = b""
            while b"\r\n" not in head:
                head += s.recv(256)
            statuses.append(int(head.split()[1]))
            if statuses[-1] == 503:
                s.settimeout(10)
                rest = head
                while b"live streams" not in rest:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    rest += chunk
                assert b"live streams" in rest
        served = statuses.count(200)
        assert served <= stream.MAX_STREAMS_PER_CLIENT and statuses.count(503) == 300 - served, statuses
        assert threading.active_count() - threads_before <= stream.MAX_STREAMS + 20
        assert requests.get(ui.url + "api/topology", timeout=10).status_code == 200
    finally:
        for s in socks:
            s.close()
    # the slots come back once the server notices the closed streams (next sample or keepalive)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and requests.get(ui.url + "api/stream?once=1", timeout=30).status_code != 200:
        time.sleep(1)
    assert requests.get(ui.url + "api/stream?once=1", timeout=30).status_code == 200


# --- another local user ---------------------------------------------------------------------------
NOBODY_SCRIPT = r"""
import json, sys, urllib.request, urllib.error
api, dpid, token_file, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}
for name, path in (("token", token_file), ("log", log)):
    try:
        open(path).read()
        out[name] = "read"
    except PermissionError:
        out[name] = "denied"
def call(path, body=None, token=None):
    req = urllib.request.Request(api + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-PiCloud-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
flow = {"dpid": dpid, "priority": 65535, "cookie": 2989, "match": {}, "actions": [], "table_id": 0}
out["add"] = call("/stats/flowentry/add", flow)
out["add_guess"] = call("/stats/flowentry/add", flow, token="guess")
out["delete"] = call("/stats/flowentry/delete", {"dpid": dpid})
out["reload"] = call("/tenants/reload", {})
out["state"] = call("/state")
print(json.dumps(out))
"""


def test_a_local_unprivileged_user_cannot_change_the_fabric(run):
    """Finding 1 (local side): any local user could POST flow changes to 127.0.0.1. `nobody` can
    still read (loopback reads stay open) but neither read the token nor change anything."""
    tb, _, before = run
    token_file = tb.state.controller["token_file"]
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON,
                             "-c", NOBODY_SCRIPT, api(tb), str(dpid(tb)), token_file, tb.state.controller["log"]],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["token"] == "denied" and out["log"] == "denied"
    assert out["add"] == 401 and out["delete"] == 401 and out["reload"] == 401 and out["add_guess"] == 403
    assert out["state"] == 200
    assert dump_flows(tb) == before


def test_secrets_live_in_0600_files_of_a_0700_state_dir(run):
    """Finding 2: the UI token reached a 0644 log in a 0755 directory."""
    from picloud.runstate import state_dir

    tb, ui, _ = run
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(state_dir()) == 0o700
    for path in (tb.state.controller["token_file"], tb.state.controller["log"], tb.state.path):
        assert mode(path) == 0o600, path
    log = Path(tb.state.controller["log"]).read_text()
    assert Path(tb.state.controller["token_file"]).read_text().strip() not in log
    assert ui.token not in log
