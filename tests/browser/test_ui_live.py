"""The web UI in a real browser (Debian's headless Chromium, driven by Playwright) against a real
fabric: a k=4 fat-tree of OVS bridges and network namespaces under PiCloud's controller.

What a person at the projector must see: the right numbers of switches, Pis, containers and
links; links lighting up within 3 s of traffic starting; a cut link drawn as down. Screenshots go
to artifacts/ (gitignored) so a failing run can be looked at."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from picloud.controller_client import routed
from tenants.handle import RELOAD_TIMEOUT
from topology.stalls import OVS_STALL_S
from traffic.iperf import start_server

pytestmark = [pytest.mark.browser, pytest.mark.root]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-test-token"
# "Busy" is well above an idle link's control traffic (LLDP, ARP: a few kbit/s) and below what one
# iperf3 flow averages even when other test suites load the 2-core box so much that the fabric
# moves only a few hundred kbit/s in bursts (measured at load average 12).
BUSY_BPS = 5e4


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _controller(tb, path: str):
    with urllib.request.urlopen(tb.controller_api + path, timeout=5) as resp:
        return json.loads(resp.read())


def _routing_settled(tb) -> bool:
    """Discovery matches the intended fabric and routing has installed paths since the last link
    event: before that, first packets take the controller's slow path."""
    state = _controller(tb, "/state")
    return not any(state["diff"].values()) and routed(state, len(tb.containers), since_match=True)


def _up(tb):
    tb.up()
    _wait(lambda: _routing_settled(tb), 30, "discovery and routing to settle")
    return tb


@pytest.fixture(scope="module")
def testbed():
    from picloud.testbed import Testbed

    tb = Testbed("fattree:4")
    try:
        yield _up(tb)
    finally:
        tb.down()


@pytest.fixture
def tenant_run(tmp_path):
    """A second run, with the tenancy app: one tenant, no members yet (they come from the UI)."""
    import yaml

    from picloud.testbed import Testbed
    from webui.server import UIServer

    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"version": 1, "tenants": [
        {"name": "red", "id": 1, "subnets": [{"cidr": "10.9.0.0/24"}]}]}))
    tb = Testbed("fattree:4", tenants=tenants)
    server = None
    try:
        _up(tb)
        server = UIServer(tb, port=0, token=TOKEN)
        yield tb, server
    finally:
        if server is not None:
            server.stop()
        tb.down()


@pytest.fixture(scope="module")
def ui(testbed):
    from webui.server import UIServer

    server = UIServer(testbed, port=0, token=TOKEN)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# Playwright's wait_for_function polls by evaluating a string in the page, which the UI's
# Content-Security-Policy (no eval) forbids: the test harness bypasses it. That the UI itself runs
# under its CSP is checked without bypass in test_pages_run_under_their_content_security_policy.
CONTEXT = {"viewport": {"width": 1920, "height": 1080}, "bypass_csp": True}


@pytest.fixture
def page(browser, ui):
    context = browser.new_context(**CONTEXT)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


FLOWING_BPS = 1e6  # an iperf3 interval at or above this rate means the flow really runs


@pytest.fixture
def iperf(testbed):
    """Start an iperf3 flow between two containers; always stopped.

    `start()` returns an Event set at the first 0.2 s report interval in which the client moved at
    least FLOWING_BPS, and the monotonic time of that report in `flowing_at`: the UI's latency is
    measured from when traffic really runs, not from when a process was asked to start (on a
    loaded 2-core machine the fabric can take seconds to carry a new flow)."""
    procs: list[subprocess.Popen] = []
    flowing = threading.Event()
    flowing_at: list[float] = []

    def watch(client: subprocess.Popen) -> None:
        for line in client.stdout:
            m = re.search(r"sec\s+\S+\s+\S+\s+([\d.]+)\s+([KMG]?)bits/sec", line)
            rate = float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)] if m else 0.0
            if rate >= FLOWING_BPS and not flowing.is_set():
                flowing_at.append(time.monotonic())
                flowing.set()

    def start(src: str, dst: str, seconds: int = 20) -> threading.Event:
        procs.append(start_server(testbed.fabric.popen, dst, ["iperf3", "-s", "-1"]))
        client = testbed.fabric.popen(src, ["iperf3", "-c", testbed.container_ip(dst), "-t", str(seconds),
                                            "-i", "0.2", "--forceflush"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(client)
        threading.Thread(target=watch, args=(client,), daemon=True).start()
        return flowing

    start.flowing_at = flowing_at
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _open_topology(page, ui):
    page.goto(ui.url)
    page.wait_for_selector("#topo[data-ready='1']", timeout=10_000)
    page.wait_for_function("document.querySelector('#live').classList.contains('on')", timeout=10_000)


def test_pages_run_under_their_content_security_policy(browser, ui, testbed):
    """Issue 19: the CSP allows no inline script; every page must still boot (its own scripts run,
    the live stream connects, the topology draws) with no CSP violation reported."""
    context = browser.new_context(viewport={"width": 1920, "height": 1080})  # CSP enforced
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
        page.goto(ui.url)
        page.wait_for_selector("#topo[data-ready='1']", timeout=20_000)
        for path, ready in (("switches", "#switches tbody tr"), ("switches/core1", "#flows tbody tr"),
                            ("tenants", "#tenants:not(:has-text('loading'))"), ("events", "#events tbody tr"),
                            ("", "#live.on")):
            page.goto(ui.url + path)
            page.wait_for_selector(ready, state="attached", timeout=20_000)
            page.wait_for_selector("#live.on", state="attached", timeout=20_000)
        assert not problems, problems
    finally:
        context.close()


def test_topology_page_shows_the_fabric(page, ui, testbed):
    _open_topology(page, ui)
    counts = testbed.topology.counts()
    assert page.locator("#topo .node.switch").count() == counts["switches"] == 20
    assert page.locator("#topo .node.pi").count() == counts["pis"] == 16
    assert page.locator("#topo .node.container").count() == len(testbed.containers) == 16
    assert page.locator("#topo line.link.fabric").count() == counts["links"] == 48
    for key in ("switches", "pis", "containers", "links"):
        assert page.inner_text(f"#n-{key}") == str(counts[key])
    assert page.locator("#topo .rack").count() == 8
    assert page.inner_text("#n-down") == "0"
    page.screenshot(path=str(ARTIFACTS / "ui-topology.png"))


def test_utilisation_shows_the_traffic_and_thickens_busy_links(page, ui, testbed, iperf):
    """The page shows a flow once it runs. Bound: the UI samples every 0.75 s and OVS refreshes
    port counters about once a second, so an idle host shows it within 2-3 s; 30 s leaves a loaded
    two-core host ten times that. The 3 s target is bench/ui_bench.py's to hold."""
    _open_topology(page, ui)
    src, dst = "pi1-1-1-c1", "pi4-2-2-c1"
    attach = next(ln for ln in testbed.topology.links if src in (ln.a, ln.b))
    selector = f"line.link[data-id='{attach.a}:{attach.b}']"
    assert float(page.get_attribute(selector, "data-bps")) < BUSY_BPS / 2, "idle before the flow"
    idle_width = float(page.get_attribute(selector, "stroke-width"))
    flowing = iperf(src, dst)
    assert flowing.wait(60), "the fabric never carried the iperf3 flow (is the machine overloaded?)"
    page.wait_for_function(f"Number(document.querySelector(\"{selector}\").dataset.bps) > {BUSY_BPS}", timeout=30_000)
    print(f"the page showed the traffic {time.monotonic() - iperf.flowing_at[0]:.1f}s after it started to flow")
    page.wait_for_function(f"Number(document.querySelector('#throughput').dataset.bps) > {BUSY_BPS}", timeout=1_000)
    assert float(page.get_attribute(selector, "stroke-width")) > idle_width, "busy links are drawn thicker"
    # A pod-to-pod flow crosses Pi-edge, edge-aggregation and aggregation-core links on both sides
    # (a bursty flow on a loaded machine may miss one sample on some of them: wait a little).
    page.wait_for_function("[...document.querySelectorAll('#topo line.link.fabric')]"
                           f".filter(l => +l.dataset.bps > {BUSY_BPS}).length >= 4", timeout=5_000)
    page.screenshot(path=str(ARTIFACTS / "ui-traffic.png"))


def test_a_cut_link_shows_as_down(page, ui, testbed):
    link = testbed.topology.link("core1", "agg1-1")
    lid = f"{link.a}:{link.b}"
    _open_topology(page, ui)
    assert page.get_attribute(f"line.link[data-id='{lid}']", "data-up") == "true"
    testbed.link("core1", "agg1-1").down()
    try:
        page.wait_for_selector(f"line.link[data-id='{lid}'][data-up='false']", timeout=10_000)
        line = page.locator(f"line.link[data-id='{lid}']")
        assert line.get_attribute("stroke-dasharray"), "down links are dashed"
        assert line.get_attribute("stroke") == "#ef4444", "down links are red"
        assert page.inner_text("#n-down") == "1"
        page.screenshot(path=str(ARTIFACTS / "ui-link-down.png"))
    finally:
        testbed.link("core1", "agg1-1").up()
    page.wait_for_selector(f"line.link[data-id='{lid}'][data-up='true']", timeout=15_000)


def test_cut_and_restore_from_the_page_with_the_token(page, ui, testbed):
    link = testbed.topology.link("agg3-1", "edge3-1")
    lid = f"{link.a}:{link.b}"
    _open_topology(page, ui)
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    # A line has no area for Playwright's visibility check: point the mouse at its middle instead.
    box = page.eval_on_selector(f"g[data-id='{lid}'] line.hit",
                                "l => { const r = l.getBoundingClientRect(); "
                                "return [r.x + r.width / 2, r.y + r.height / 2]; }")
    # The tooltip shows the counters the page has when the pointer arrives; right after start-up the
    # first port statistics may still be on their way, so hover again until they are there (<= 10 s).
    text = ""
    for _ in range(20):
        page.mouse.move(*box)
        page.wait_for_selector("#hover:not([hidden])", timeout=5_000)
        text = page.inner_text("#hover")
        if "port" in text:
            break
        page.mouse.move(0, 0)
        page.wait_for_timeout(500)
    assert "agg3-1" in text and "port" in text, f"hover shows counters: {text!r}"
    page.screenshot(path=str(ARTIFACTS / "ui-hover.png"))
    page.mouse.click(*box)
    page.click("#cut")
    try:
        # "attached": a vertical line has no width, so Playwright never calls it visible.
        page.wait_for_selector(f"line.link[data-id='{lid}'][data-up='false']", state="attached", timeout=10_000)
    finally:
        page.click("#restore")
    page.wait_for_selector(f"line.link[data-id='{lid}'][data-up='true']", state="attached", timeout=15_000)


def test_switch_page_shows_the_real_flow_table(page, ui, testbed):
    page.goto(ui.url + "switches/edge1-1")
    page.wait_for_selector("#flows tbody tr", timeout=10_000)
    rows = page.locator("#flows tbody tr").count()
    assert rows == len(testbed.flows("edge1-1")) > 0
    page.fill("#flow-filter", "table=0")
    page.wait_for_function("document.querySelector('#flow-count').textContent.includes('match')", timeout=5_000)
    tables = page.eval_on_selector_all("#flows tbody tr td:first-child",
                                       "tds => [...new Set(tds.map(t => t.textContent))]")
    assert tables == ["0"]
    desc = _controller(testbed, f"/stats/groupdesc/{testbed.topology.dpid('edge1-1')}")
    groups = next(iter(desc.values()))
    page.wait_for_function(f"document.querySelectorAll('#groups tbody tr').length === {max(len(groups), 1)}",
                           timeout=10_000)
    if groups:
        types = page.eval_on_selector_all("#groups tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
        assert sorted(types) == sorted(g["type"] for g in groups), "type and buckets come from groupdesc"
    page.screenshot(path=str(ARTIFACTS / "ui-switch.png"), full_page=False)


def _post(ui, path: str, body: dict, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"X-PiCloud-Token": token} if token else {})
    req = urllib.request.Request(ui.url + path.lstrip("/"), data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_actions_reach_the_fabric_only_with_the_token(ui, testbed):
    status, _ = _post(ui, "/api/links/edge2-1/agg2-1", {"up": False}, token=None)
    assert status == 401
    status, body = _post(ui, "/api/links/edge2-1/agg2-1", {"up": False})
    assert status == 200, body
    try:
        def controller_says_down() -> bool:
            links = testbed._controller_get("/state")["links"]
            return any({x["a"], x["b"]} == {"edge2-1", "agg2-1"} and not x["up"] for x in links)

        _wait(controller_says_down, 10, "the controller to see the link cut from the UI")
    finally:
        assert _post(ui, "/api/links/edge2-1/agg2-1", {"up": True})[0] == 200


def test_bulk_traffic_started_from_the_ui_lights_the_path(ui, testbed):
    status, flow = _post(ui, "/api/traffic", {"src": "pi2-1-1-c1", "dst": "pi3-1-1-c1", "seconds": 15})
    assert status == 201, flow
    try:
        def busy() -> bool:
            with urllib.request.urlopen(ui.url + "api/links", timeout=5) as resp:
                links = json.loads(resp.read())["links"]
            return any(x["bps"] > BUSY_BPS and "pi2-1-1-c1" in x["id"] for x in links)

        # iperf3 can take seconds to start on a loaded box
        _wait(busy, 60, "the bulk flow to show on its container's link")
    finally:
        req = urllib.request.Request(ui.url + f"api/traffic/{flow['id']}", method="DELETE",
                                     headers={"X-PiCloud-Token": TOKEN})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["running"] is False


def test_tenant_members_from_the_ui_in_tenant_colours(browser, tenant_run):
    testbed, ui = tenant_run
    status, body = _post(ui, "/api/tenants/red/members", {"count": 2, "placement": "spread"})
    assert status == 201, body
    added = body["added"]
    assert len(added) == 2 and set(added) <= set(testbed.state.extra["containers"])
    context = browser.new_context(**CONTEXT)
    try:
        page = context.new_page()
        _open_topology(page, ui)
        assert page.inner_text("#n-containers") == "18"
        red = page.eval_on_selector_all("#topo .node.container rect",
                                        "rs => rs.filter(r => r.getAttribute('fill') === '#ef4444').length")
        assert red == 2
        page.screenshot(path=str(ARTIFACTS / "ui-tenants-topology.png"))

        page.goto(ui.url + "tenants")
        card = page.locator("[data-tenant='red']")
        card.wait_for(timeout=10_000)
        assert card.locator("tbody tr").count() == 2
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        card.locator(f"button[data-remove='{added[0]}']").click()
        page.wait_for_function("document.querySelectorAll(\"[data-tenant='red'] tbody tr\").length === 1",
                               timeout=15_000)
        # The page drops the row once the tenants file changes; the container goes after the
        # controller's reload (bounded by RELOAD_TIMEOUT: routing's paths and the barriers each wait
        # out an ovs-vswitchd stall) and the port's removal from OVS (one more stall at most).
        _wait(lambda: added[0] not in testbed.state.extra.get("containers", {}), RELOAD_TIMEOUT + OVS_STALL_S,
              "the member's container to go")
        page.click("#verify-now")  # the real probe run (tenants.verify), in the background
        card.locator(".verify-ok, .verify-bad").wait_for(timeout=90_000)
        assert card.locator(".verify-ok").count() == 1, card.inner_text()
        page.screenshot(path=str(ARTIFACTS / "ui-tenants.png"))
    finally:
        context.close()


def test_picloud_ui_command_serves_a_run_and_stops_on_sigterm(testbed):
    child = subprocess.Popen([sys.executable, "-m", "picloud", "ui", "--run", testbed.prefix, "--port", "0"],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        line = child.stdout.readline()
        assert f"web UI for run {testbed.prefix} at http://127.0.0.1:" in line and "token" in line, line
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/topology", timeout=10) as resp:
            assert json.loads(resp.read())["counts"]["switches"] == 20
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_detached_ui_outlives_its_server_and_is_recorded(testbed):
    from topology.effects import proc

    url = testbed.ui(port=0, token=TOKEN).url
    pid = testbed.detach_ui()
    rec = next(proc.ProcessRecord.from_dict(r) for r in testbed.state.objects["pids"] if r["pid"] == pid)
    try:
        assert rec.role == "webui" and proc.is_ours(rec)
        assert testbed.state.ui["url"] == url
        assert Path(testbed.state.ui["token_file"]).read_text().strip() == TOKEN
        with urllib.request.urlopen(url + "api/switches", timeout=10) as resp:
            assert len(json.loads(resp.read())["switches"]) == 36
        status, _ = _post(type("U", (), {"url": url})(), "/api/links/core1/agg1-1", {"up": "maybe"})
        assert status == 400, "the detached UI kept the token: a valid token reaches body validation"
    finally:
        assert proc.terminate(rec)
        testbed.state.forget("pids", [rec.to_dict()])
        token_file = testbed.state.ui.get("token_file")
        if token_file:
            Path(token_file).unlink(missing_ok=True)
        testbed.state.path.with_suffix(".ui.log").unlink(missing_ok=True)
