"""Every route of the web UI through Flask's test client, on a StaticSource: the JSON shapes,
the JSON errors (404 for unknown ids, 400 for bad bodies) and the token rule for actions."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from topology.builders import build
from webui.app import create_app, live
from webui.sources import StaticSource

TOKEN = "s3cret-token"
FLOWS = [{"priority": p, "table_id": t, "match": {"in_port": p}, "actions": [f"OUTPUT:{p}"], "packet_count": p,
          "byte_count": 10 * p, "duration_sec": 5} for t in (0, 2) for p in range(1, 6)]


@pytest.fixture
def topo():
    return build("fattree:4")


@pytest.fixture
def source(topo, tmp_path):
    results = tmp_path / "results"
    run = results / "demo"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"workload": "websearch", "flows": 2}))
    (run / "flows.csv").write_text("src,dst,fct_us\na,b,1\n")
    (run / "fct.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    tenants = {"tenants": [{"name": "red", "id": 1, "subnets": [{"cidr": "10.9.0.0/24"}],
                            "members": [{"name": topo.containers[0]}, {"name": topo.containers[4]}]}]}
    src = StaticSource(topo, flows={"core1": FLOWS}, tenants=tenants, results=results,
                       groups={"core1": [{"group_id": 1, "type": "SELECT", "buckets": []}]},
                       meters={"edge1-1": [{"meter_id": 3, "bands": [{"type": "DROP", "rate": 100}]}]})
    yield src
    src.close()


@pytest.fixture
def app(source):
    app = create_app({"SOURCE": source, "TOKEN": TOKEN, "INTERVAL": 0.05})
    yield app
    live(app).stop()


@pytest.fixture
def client(app):
    return app.test_client()


def auth(**kw):
    return {"headers": {"X-PiCloud-Token": TOKEN}, **kw}


def error(resp, code):
    assert resp.status_code == code, resp.data
    assert resp.is_json, "API errors are JSON"
    body = resp.get_json()
    assert body["error"] and body["message"]
    return body["message"]


# --- reading -------------------------------------------------------------------------------------
def test_topology_has_layout_counts_and_tenant_colours(client, topo):
    data = client.get("/api/topology").get_json()
    assert data["counts"] == topo.counts()
    assert len(data["nodes"]) == 20 + 16 + 16
    assert data["tenants"] == [{"name": "red", "colour": "#ef4444"}]
    tenants = {n["id"]: n["tenant"] for n in data["nodes"] if n["kind"] == "container"}
    assert tenants[topo.containers[0]] == "red" and tenants[topo.containers[1]] is None


def test_switches_list_every_bridge_with_dpid(client, topo):
    rows = client.get("/api/switches").get_json()["switches"]
    assert [r["name"] for r in rows] == topo.bridges
    assert rows[0]["dpid"] == f"{topo.dpid(rows[0]['name']):016x}"
    assert all(r["connected"] is True for r in rows), "the controller's view, from the first request on"


@pytest.mark.parametrize("ident", ["core1", "hex", "dec"])
def test_switch_by_name_or_dpid(client, topo, ident):
    key = {"core1": "core1", "hex": f"{topo.dpid('core1'):016x}", "dec": str(topo.dpid("core1"))}[ident]
    data = client.get(f"/api/switches/{key}").get_json()
    assert data["name"] == "core1" and data["role"] == "core"
    assert [p["peer"] for p in data["ports"]] == list(topo.ports("core1").values())


@pytest.mark.parametrize("path", ["/api/switches/nope", "/api/switches/nope/flows", "/api/switches/ffff/groups",
                                  "/api/switches/123/meters", "/api/experiments/nope", "/api/nothing-here"])
def test_unknown_ids_are_json_404(client, topo, path):
    error(client.get(path), 404)


def test_containers_are_not_switches(client, topo):
    error(client.get(f"/api/switches/{topo.containers[0]}"), 404)


def test_flows_are_filtered_and_paged_on_the_server(client):
    data = client.get("/api/switches/core1/flows?q=table=2&limit=2&offset=1").get_json()
    assert data["total"] == 10 and data["matched"] == 5 and len(data["flows"]) == 2
    assert [f["priority"] for f in data["flows"]] == [4, 3]
    assert data["flows"][0]["match"] == "in_port=4" and data["flows"][0]["actions"] == "OUTPUT:4"
    assert "limit" in error(client.get("/api/switches/core1/flows?limit=abc"), 400)


def test_groups_and_meters(client):
    assert client.get("/api/switches/core1/groups").get_json()["groups"][0]["type"] == "SELECT"
    assert client.get("/api/switches/edge1-1/meters").get_json()["meters"][0]["meter_id"] == 3
    assert client.get("/api/switches/core2/groups").get_json()["groups"] == []


def test_links_carry_live_rates(client, source, topo):
    ln = topo.fabric_links()[0]
    source.set_rate(ln.a, ln.b, 8e8)
    client.get("/api/links")  # starts the sampler
    deadline = time.monotonic() + 3
    rate = 0.0
    while time.monotonic() < deadline and rate == 0:
        time.sleep(0.1)
        links = {x["id"]: x for x in client.get("/api/links").get_json()["links"]}
        rate = links[f"{ln.a}:{ln.b}"]["bps"]
    assert 6e8 < rate < 1e9
    assert links[f"{ln.a}:{ln.b}"]["util"] > 0.6
    other = topo.fabric_links()[1]
    assert links[f"{other.a}:{other.b}"]["bps"] == 0
    assert len(links) == len(topo.links)


def test_tenants_with_placement(client, topo):
    red = client.get("/api/tenants").get_json()["tenants"][0]
    first = red["members"][0]
    assert first["pi"] == topo.node(topo.containers[0]).pi and first["ip"] == topo.node(topo.containers[0]).ip
    assert red["subnet"] == "10.9.0.0/24"


def test_experiments_list_detail_and_files(client):
    exps = client.get("/api/experiments").get_json()["experiments"]
    assert [e["id"] for e in exps] == ["demo"]
    detail = client.get("/api/experiments/demo").get_json()
    assert detail["flows"]["rows"] == [{"src": "a", "dst": "b", "fct_us": "1"}]
    png = client.get("/api/experiments/demo/files/fct.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    error(client.get("/api/experiments/demo/files/nope.png"), 404)
    error(client.get("/api/experiments/demo/files/summary.exe"), 404)
    error(client.get("/api/experiments/..%2F..%2Fetc/files/passwd.txt"), 404)


def test_events_validate_their_query(client):
    assert client.get("/api/events?since=0").get_json() == {"events": []}
    error(client.get("/api/events?since=yesterday"), 400)
    error(client.get("/api/events?kind=nonsense"), 400)


def test_stream_sends_link_frames(client, source, topo):
    resp = client.get("/api/stream?once=1")
    assert resp.mimetype == "text/event-stream"
    text = b"".join(resp.response).decode()
    m = re.search(r"^event: links\ndata: (.*)$", text, re.M)
    assert m, text
    frame = json.loads(m.group(1))
    assert {x["id"] for x in frame["links"]} == {f"{ln.a}:{ln.b}" for ln in topo.links}
    assert frame["seq"] >= 1 and "totals" in frame
    end = dict(zip(frame["end_keys"], frame["links"][0]["ends"][0], strict=True))
    assert end["node"] in topo and isinstance(end["tx_bytes"], int)


def test_wrong_method_is_json_405(client):
    error(client.delete("/api/topology"), 405)


# --- the token rule ------------------------------------------------------------------------------
ACTIONS = [("post", "/api/links/core1/agg1-1", {"up": False}),
           ("post", "/api/links/core1/agg1-1/capture", {"seconds": 1}),
           ("post", "/api/verify", {}),
           ("post", "/api/tenants/red/members", {"count": 1}),
           ("delete", "/api/tenants/red/members/x", None),
           ("post", "/api/traffic", {"src": "a", "dst": "b"}),
           ("delete", "/api/traffic/bulk1", None)]


@pytest.mark.parametrize("method,path,body", ACTIONS)
def test_actions_need_the_token(client, source, method, path, body):
    before = source.controller_state()
    assert "token" in error(getattr(client, method)(path, json=body), 401)
    assert "wrong" in error(getattr(client, method)(path, json=body, headers={"X-PiCloud-Token": "guess"}), 403)
    assert source.controller_state() == before, "a refused action changes nothing"


def test_cut_and_restore_a_link(client, app, topo):
    ln = next(x for x in topo.fabric_links() if x.a == "core1")
    resp = client.post(f"/api/links/{ln.a}/{ln.b}", **auth(json={"up": False}))
    assert resp.get_json() == {"id": f"{ln.a}:{ln.b}", "up": False}
    live(app).sample()
    time.sleep(0.06)
    links = {x["id"]: x for x in client.get("/api/links").get_json()["links"]}
    assert links[f"{ln.a}:{ln.b}"]["up"] is False
    texts = [e["text"] for e in client.get("/api/events").get_json()["events"]]
    assert any("down" in t and ln.a in t for t in texts)
    client.post(f"/api/links/{ln.b}/{ln.a}", **auth(json={"up": True}))
    time.sleep(0.06)
    live(app).sample()
    links = {x["id"]: x for x in client.get("/api/links").get_json()["links"]}
    assert links[f"{ln.a}:{ln.b}"]["up"] is True


def test_token_as_form_field(client):
    resp = client.post("/api/links/core1/agg1-1", data={"token": TOKEN, "up": "false"},
                       content_type="multipart/form-data")
    assert resp.status_code == 200 and resp.get_json()["up"] is False


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "text/plain"])
def test_a_body_a_web_page_can_send_without_preflight_is_refused(client, source, ctype):
    """Issue 19: a cross-site <form> or no-cors fetch sends these types; even with the token, refused."""
    before = source.controller_state()
    resp = client.post("/api/links/core1/agg1-1", data=f"token={TOKEN}&up=false", content_type=ctype)
    assert resp.status_code == 415
    assert source.controller_state() == before


@pytest.mark.parametrize("body,status", [({}, 400), ({"up": "maybe"}, 400), ([1], 400), ("up", 400)])
def test_link_action_bad_bodies(client, body, status):
    kwargs = {"json": body} if not isinstance(body, str) else {"data": body, "content_type": "application/json"}
    error(client.post("/api/links/core1/agg1-1", **auth(**kwargs)), status)


def test_link_action_unknown_link_or_container_link(client, topo):
    error(client.post("/api/links/core1/core2", **auth(json={"up": False})), 404)
    c = topo.containers[0]
    error(client.post(f"/api/links/{c}/{topo.node(c).pi}", **auth(json={"up": False})), 404)


def test_tenant_members_add_and_remove(client):
    resp = client.post("/api/tenants/red/members", **auth(json={"count": 2, "placement": "spread"}))
    assert resp.status_code == 201
    added = resp.get_json()["added"]
    assert len(added) == 2
    names = [m["name"] for m in client.get("/api/tenants").get_json()["tenants"][0]["members"]]
    assert set(added) <= set(names)
    assert client.delete(f"/api/tenants/red/members/{added[0]}", **auth()).status_code == 200
    names = [m["name"] for m in client.get("/api/tenants").get_json()["tenants"][0]["members"]]
    assert added[0] not in names
    error(client.delete("/api/tenants/red/members/ghost", **auth()), 404)
    error(client.delete("/api/tenants/ghost/members/x", **auth()), 404)


@pytest.mark.parametrize("body", [{"count": 0}, {"count": "many"}, {"count": 1000}, {"placement": "random"}])
def test_tenant_members_bad_bodies(client, body):
    error(client.post("/api/tenants/red/members", **auth(json=body)), 400)


def test_bulk_traffic_start_list_stop(client, topo):
    a, b = topo.containers[0], topo.containers[9]
    resp = client.post("/api/traffic", **auth(json={"src": a, "dst": b, "seconds": 5}))
    assert resp.status_code == 201
    flow = resp.get_json()
    assert (flow["src"], flow["dst"], flow["running"]) == (a, b, True)
    assert client.get("/api/traffic").get_json()["flows"][0]["id"] == flow["id"]
    stopped = client.delete(f"/api/traffic/{flow['id']}", **auth()).get_json()
    assert stopped["running"] is False
    error(client.delete("/api/traffic/bulk99", **auth()), 404)


@pytest.mark.parametrize("body", [{"src": "x"}, {"src": "a", "dst": "a"}, {"src": "pi1-1-1-c1", "dst": "core1"},
                                  {"src": "pi1-1-1-c1", "dst": "pi1-1-2-c1", "seconds": 0},
                                  {"src": "pi1-1-1-c1", "dst": "pi1-1-2-c1", "seconds": "soon"}])
def test_bulk_traffic_bad_bodies(client, body):
    error(client.post("/api/traffic", **auth(json=body)), 400)


# --- pages and assets ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/switches", "/switches/core1", "/tenants", "/experiments",
                                  "/experiments/demo", "/events"])
def test_pages_render(client, path):
    resp = client.get(path)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert b"PiCloud" in resp.data


def test_unknown_pages_are_404(client):
    assert client.get("/switches/nope").status_code == 404
    assert client.get("/experiments/nope").status_code == 404


def test_every_asset_is_local():
    """No CDN, no web font, no analytics: the demo laptop may have no internet at all."""
    root = Path(__file__).resolve().parents[2] / "webui"
    for path in list((root / "templates").glob("*.html")) + list((root / "static").glob("*")):
        text = path.read_text()
        urls = re.findall(r"https?://[^\s\"'`)]+", text)
        assert all(u.startswith("http://www.w3.org/") for u in urls), (path.name, urls)


def test_static_assets_are_served(client):
    for name in ("picloud.js", "topology.js", "picloud.css", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200


def test_config_is_validated():
    from picloud.errors import UIError

    with pytest.raises(UIError, match="data source"):
        create_app({})
    with pytest.raises(UIError, match="interval"):
        create_app({"SOURCE": object(), "INTERVAL": 0})


def test_isolation_check_runs_in_the_background_and_marks_tenants(client):
    assert client.get("/api/verify").get_json() == {"running": False, "report": None, "error": None}
    assert client.get("/api/tenants").get_json()["tenants"][0]["verify"] is None
    assert client.post("/api/verify", **auth(json={})).status_code == 202
    deadline = time.monotonic() + 5
    while client.get("/api/verify").get_json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    state = client.get("/api/verify").get_json()
    assert state["report"]["ok"] is True and state["error"] is None
    red = client.get("/api/tenants").get_json()["tenants"][0]
    assert red["verify"]["ok"] is True and red["verify"]["pairs"] == 2 and red["verify"]["reached"] == 2
    assert any("isolation check" in e["text"] for e in client.get("/api/events").get_json()["events"])


def test_flow_tables_without_a_controller_are_503(topo):
    from picloud.errors import ControllerError

    class NoController(StaticSource):
        def flows(self, node):
            raise ControllerError("run pc9: no PiCloud controller API (controller is 'none')")

    app = create_app({"SOURCE": NoController(topo, controller=False), "TOKEN": TOKEN})
    try:
        assert "no PiCloud controller" in error(app.test_client().get("/api/switches/core1/flows"), 503)
    finally:
        live(app).stop()


def test_link_capture_checks_its_request_before_capturing(client, topo):
    assert "seconds" in error(client.post("/api/links/core1/agg1-1/capture", **auth(json={"seconds": 0})), 400)
    assert "seconds" in error(client.post("/api/links/core1/agg1-1/capture", **auth(json={"seconds": "5"})), 400)
    error(client.post("/api/links/core1/core2/capture", **auth(json={"seconds": 1})), 404)
    # a recorded or static source has no fabric to capture on: said so, not a traceback
    assert "no live fabric" in error(client.post("/api/links/core1/agg1-1/capture", **auth(json={"seconds": 1})),
                                     501)
