"""ryu.app.wsgi on the controller API: ControllerBase routes with requirements, served by the same
Flask app as /stats and /state, clashes refused with one line."""

from __future__ import annotations

import json

import pytest

from controller_apps import api, wsgi_bridge
from controller_apps.ryu_apps import wsgi
from picloud.errors import ControllerError
from picloud.httpguard import TOKEN_HEADER

DPID = "0000000000000001"


class TableController(wsgi.ControllerBase):
    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.app = data["app"]

    @wsgi.route("table", "/table/{dpid}", methods=["GET"], requirements={"dpid": wsgi.HEX16})
    def get_table(self, req, **kwargs):
        table = self.app.tables.get(kwargs["dpid"])
        if table is None:
            return wsgi.Response(status=404)
        return wsgi.Response(content_type="application/json", body=json.dumps(table))

    @wsgi.route("table", "/table/{dpid}", methods=["PUT"], requirements={"dpid": wsgi.HEX16})
    def put_table(self, req, **kwargs):
        entry = req.json if req.body else {}
        self.app.tables.setdefault(kwargs["dpid"], {}).update(entry)
        return wsgi.Response(content_type="application/json", body=json.dumps(self.app.tables[kwargs["dpid"]]))


class FakeApp:
    def __init__(self):
        self.tables = {DPID: {"02:00:00:00:00:01": 1}}


@pytest.fixture
def fresh():
    saved = list(wsgi.APPLICATIONS)
    wsgi.APPLICATIONS.clear()
    yield
    wsgi.APPLICATIONS[:] = saved


TOKEN = "t0ken-for-the-test"


def test_get_put_and_requirements(fresh):
    app = FakeApp()
    wsgi.WSGIApplication().register(TableController, {"app": app})
    client = api.create_app(api.api_policy("127.0.0.1", token=TOKEN)).test_client()
    got = client.get(f"/table/{DPID}")
    assert got.status_code == 200 and got.get_json() == {"02:00:00:00:00:01": 1}
    body = json.dumps({"02:00:00:00:00:02": 2})
    # A Ryu route changes state like ours do, so it passes the same guard: no token, no change.
    refused = client.put(f"/table/{DPID}", data=body, content_type="application/json")
    assert refused.status_code in (401, 403) and "02:00:00:00:00:02" not in app.tables[DPID]
    put = client.put(f"/table/{DPID}", data=body, content_type="application/json", headers={TOKEN_HEADER: TOKEN})
    assert put.status_code == 200 and put.get_json()["02:00:00:00:00:02"] == 2
    assert client.get("/table/not-a-dpid").status_code == 404  # requirement enforced by the route
    assert client.get("/table/0000000000000009").status_code == 404  # the app's own 404
    assert client.delete(f"/table/{DPID}", headers={TOKEN_HEADER: TOKEN}).status_code == 404  # no DELETE route
    assert client.get("/state").status_code == 200  # ours still served next to them


def test_contexts_convention_and_mapper_connect(fresh):
    ctx = wsgi.WSGIApplication()
    ctx.mapper.connect("table", "/t2/{dpid}", controller=TableController, action="get_table",
                       conditions={"method": ["GET"]}, requirements={"dpid": wsgi.HEX16})
    ctx.registory["TableController"] = {"app": FakeApp()}
    client = api.create_app().test_client()
    assert client.get(f"/t2/{DPID}").status_code == 200


def test_str_body_and_charset():
    response = wsgi.Response(status=400, body="bad rule")
    assert response.body == b"bad rule" and response.status_int == 400


def test_clash_with_our_route_is_one_line(fresh):
    class Clash(wsgi.ControllerBase):
        @wsgi.route("x", "/state", methods=["GET"])
        def mine(self, req, **kwargs):
            return wsgi.Response(body="x")

    wsgi.WSGIApplication().register(Clash)
    with pytest.raises(ControllerError, match=r"/state of Clash clashes with PiCloud's controller API") as info:
        api.create_app()
    assert "\n" not in str(info.value)


def test_ofctl_rest_takes_stats_over(fresh):
    class Stats(wsgi.ControllerBase):
        @wsgi.route("stats", "/stats/switches", methods=["GET"])
        def switches(self, req, **kwargs):
            return wsgi.Response(content_type="application/json", body="[42]")

    wsgi.WSGIApplication().register(Stats)
    client = api.create_app().test_client()
    assert client.get("/stats/switches").get_json() == [42]


def test_two_apps_same_route_clash(fresh):
    class One(wsgi.ControllerBase):
        @wsgi.route("a", "/same/{x}", methods=["GET"])
        def a(self, req, **kwargs):
            return wsgi.Response(body="1")

    class Two(wsgi.ControllerBase):
        @wsgi.route("b", "/same/{y}", methods=["GET", "POST"])
        def b(self, req, **kwargs):
            return wsgi.Response(body="2")

    ctx = wsgi.WSGIApplication()
    ctx.register(One)
    ctx.register(Two)
    with pytest.raises(ControllerError, match="of Two clashes with the same route of One"):
        api.create_app()


def test_websocket_part_is_a_one_line_import_error():
    with pytest.raises(ImportError, match=r"ryu.app.wsgi.websocket: .*not provided"):
        wsgi.__getattr__("websocket")


def test_shapes():
    assert wsgi_bridge.shape("/stats/flow/{dpid}") == wsgi_bridge.shape("/stats/flow/<dpid>") == "/stats/flow/*"
