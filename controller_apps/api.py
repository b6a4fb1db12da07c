"""The controller's REST API: Ryu's ofctl_rest endpoints, re-served with Flask, plus `/state`.

Why re-implement ofctl_rest: os-ken dropped Ryu's WSGI framework and every REST app on it, but
tools and notebooks written for Ryu call `/stats/flow/<dpid>` and friends. The conversions between
OpenFlow messages and Ryu's JSON are still in os-ken (`os_ken.lib.ofctl_v1_x`), so the same JSON
shapes come out: this module only adds the HTTP layer and the reply plumbing (`waiters`) that
ofctl_rest kept in its app.

Two halves:
- `RestStatsApp`, an os-ken app the runner always loads: tracks datapaths in `STATE.datapaths`,
  asks each new switch (and each switch whose ports changed) for its port descriptions
  (`STATE.switch_enter`), and hands multipart replies to the Flask thread waiting for them.
- `create_app()`, the Flask application: ofctl_rest's routes, `/state`, `/state/events`, any
  blueprint another app passed to `register_blueprint()` at construction, and the routes Ryu REST
  apps registered through `ryu.app.wsgi` (`controller_apps.wsgi_bridge`).

Unlike Ryu's API, this one is authenticated: `picloud.httpguard.Guard` stands in front of the whole
WSGI app, so every state-changing request (any method but GET/HEAD/OPTIONS, on any route, including
those a Ryu REST app registers through the `ryu.app.wsgi` shim) needs the run's token in the
`X-PiCloud-Token` header, a JSON body, a Host naming the bound address and no foreign Origin.
Reads stay open (loopback by default). `--api-open` drops the token requirement, as Ryu had it;
the Host, Origin and content-type checks stay. See docs/API.md "Authentication".
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request
from flask.json.provider import DefaultJSONProvider
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import ofctl_v1_0, ofctl_v1_2, ofctl_v1_3, ofctl_v1_4, ofctl_v1_5
from os_ken.ofproto import ofproto_v1_0, ofproto_v1_2, ofproto_v1_3, ofproto_v1_4, ofproto_v1_5
from werkzeug.serving import BaseWSGIServer, make_server

from controller_apps import stats_wait, wsgi_bridge
from controller_apps.state import STATE, ControllerState
from picloud import httpguard

LOG = logging.getLogger(__name__)

OFCTL = {
    ofproto_v1_0.OFP_VERSION: ofctl_v1_0,
    ofproto_v1_2.OFP_VERSION: ofctl_v1_2,
    ofproto_v1_3.OFP_VERSION: ofctl_v1_3,
    ofproto_v1_4.OFP_VERSION: ofctl_v1_4,
    ofproto_v1_5.OFP_VERSION: ofctl_v1_5,
}

# Handed to os-ken's ofctl functions as their `waiters` argument; stays empty: replies are
# collected by controller_apps.stats_wait (its docstring says why).
WAITERS: dict[int, dict[int, tuple[Any, list[Any]]]] = {}

# Kept under their old names: tests and other modules import them from here.
StatsTimeout = stats_wait.StatsTimeout
SwitchRefused = stats_wait.SwitchRefused


def _reply_events() -> list[Any]:
    """Every os-ken event of a message a switch sends in answer to a request, any version (the
    port-desc reply has its own handler), so a request from any app ends however it is answered."""
    names = sorted(n for n in dir(ofp_event) if n.startswith("EventOFP") and n.endswith("Reply")
                   and n != "EventOFPPortDescStatsReply")
    return [getattr(ofp_event, n) for n in names] + [ofp_event.EventOFPSwitchFeatures]


_extra_blueprints: list[Blueprint] = []
_extra_lock = threading.Lock()


def register_blueprint(bp: Blueprint) -> None:
    """Serve `bp` from the controller API too. Call it from an app's constructor: the runner
    builds the Flask app after every app is constructed. A later blueprint of the same name
    replaces the earlier one (a re-created app serves its own state)."""
    with _extra_lock:
        _extra_blueprints[:] = [b for b in _extra_blueprints if b.name != bp.name] + [bp]


class RestStatsApp(app_manager.OSKenApp):
    """Datapath bookkeeping and multipart-reply delivery for the REST API."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: ControllerState = STATE

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change_handler(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id  # dpid by name: mypy narrows dp in `get(dpid) is dp`
        if dpid is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self.state.datapaths[dpid] = dp
            if dp.ofproto.OFP_VERSION >= ofproto_v1_3.OFP_VERSION:
                dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))
            else:
                self.state.switch_enter(dpid, [])
        elif self.state.datapaths.get(dpid) is dp:
            self.state.switch_leave(dpid)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status_handler(self, ev: Any) -> None:
        """Ports come and go at run time (a container added to a Pi): ask for the full list again
        rather than patching it, so STATE's port list is always what the switch says."""
        dp = ev.msg.datapath
        if dp.ofproto.OFP_VERSION >= ofproto_v1_3.OFP_VERSION:
            dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc_handler(self, ev: Any) -> None:
        msg = ev.msg
        if self._deliver(msg):
            return
        ofp = msg.datapath.ofproto
        ports = [
            {"port_no": p.port_no, "name": _text(p.name), "hw_addr": p.hw_addr,
             "up": not (p.state & ofp.OFPPS_LINK_DOWN or p.config & ofp.OFPPC_PORT_DOWN)}
            for p in msg.body if p.port_no <= ofp.OFPP_MAX
        ]
        self.state.switch_enter(msg.datapath.id, ports)

    @set_ev_cls(_reply_events(), MAIN_DISPATCHER)
    def stats_reply_handler(self, ev: Any) -> None:
        self._deliver(ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def error_handler(self, ev: Any) -> None:
        """A switch refusing a request some REST call waits for ends that call now (502)."""
        stats_wait.deliver_error(ev.msg)

    @staticmethod
    def _deliver(msg: Any) -> bool:
        """Hand a reply to the waiting REST call; True when one was waiting for it."""
        return stats_wait.deliver(msg)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- Flask ---------------------------------------------------------------------------------------
stats = Blueprint("stats", __name__)
state_bp = Blueprint("state", __name__)


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _datapath(dpid: str) -> tuple[Any, Any]:
    """The datapath and its ofctl module for a dpid path segment (decimal or 0x-hex, as Ryu)."""
    try:
        value = int(dpid, 0)
    except ValueError:
        abort(_error(400, f"dpid {dpid!r}: invalid (a decimal or 0x-hex datapath id)"))
    dp = STATE.datapaths.get(value)
    if dp is None:
        abort(_error(404, f"dpid {dpid}: no such connected switch"))
    ofctl = OFCTL.get(dp.ofproto.OFP_VERSION)
    if ofctl is None:
        abort(_error(501, f"dpid {dpid}: OpenFlow version {dp.ofproto.OFP_VERSION:#x} unsupported"))
    return dp, ofctl


def _body() -> dict[str, Any]:
    """The JSON request body (its content type is JSON, or the guard refused it already)."""
    raw = request.get_data(as_text=True)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        abort(_error(400, "request body: invalid JSON"))
    if not isinstance(body, dict):
        abort(_error(400, "request body: expected a JSON object"))
    return body


@stats.get("/stats/switches")
def switches() -> Response:
    return jsonify(sorted(STATE.datapaths))


@stats.get("/stats/desc/<dpid>")
def desc(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_desc_stats(dp, WAITERS))


@stats.route("/stats/flow/<dpid>", methods=["GET", "POST"])
def flow(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    flt = _body() if request.method == "POST" else {}
    return jsonify(ofctl.get_flow_stats(dp, WAITERS, flt))


@stats.route("/stats/aggregateflow/<dpid>", methods=["GET", "POST"])
def aggregate_flow(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    flt = _body() if request.method == "POST" else {}
    return jsonify(ofctl.get_aggregate_flow_stats(dp, WAITERS, flt))


@stats.get("/stats/table/<dpid>")
def table(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_table_stats(dp, WAITERS))


@stats.get("/stats/port/<dpid>")
@stats.get("/stats/port/<dpid>/<port>")
def port(dpid: str, port: str | None = None) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_port_stats(dp, WAITERS, port))


@stats.get("/stats/portdesc/<dpid>")
def portdesc(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_port_desc(dp, WAITERS))


@stats.get("/stats/group/<dpid>")
@stats.get("/stats/group/<dpid>/<group_id>")
def group(dpid: str, group_id: str | None = None) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_group_stats(dp, WAITERS, group_id))


@stats.get("/stats/groupdesc/<dpid>")
def groupdesc(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_group_desc(dp, WAITERS))


@stats.get("/stats/meter/<dpid>")
@stats.get("/stats/meter/<dpid>/<meter_id>")
def meter(dpid: str, meter_id: str | None = None) -> Response:
    dp, ofctl = _datapath(dpid)
    return jsonify(ofctl.get_meter_stats(dp, WAITERS, meter_id))


@stats.post("/stats/flowentry/<cmd>")
def flowentry(cmd: str) -> Response:
    commands = {"add": "OFPFC_ADD", "modify": "OFPFC_MODIFY", "modify_strict": "OFPFC_MODIFY_STRICT",
                "delete": "OFPFC_DELETE", "delete_strict": "OFPFC_DELETE_STRICT"}
    if cmd not in commands:
        return _error(404, f"flowentry/{cmd}: unknown command (one of {', '.join(commands)})")
    body = _body()
    if "dpid" not in body:
        return _error(400, "request body: missing 'dpid' (ofctl_rest needs the target switch)")
    dp, ofctl = _datapath(str(body["dpid"]))
    try:
        ofctl.mod_flow_entry(dp, body, getattr(dp.ofproto, commands[cmd]))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return _error(400, f"flowentry/{cmd}: invalid flow entry ({exc})")
    return Response(status=200)


@stats.delete("/stats/flowentry/clear/<dpid>")
def flowentry_clear(dpid: str) -> Response:
    dp, ofctl = _datapath(dpid)
    ofctl.mod_flow_entry(dp, {"table_id": dp.ofproto.OFPTT_ALL}, dp.ofproto.OFPFC_DELETE)
    return Response(status=200)


@state_bp.get("/state")
def state() -> Response:
    return jsonify(STATE.snapshot())


@state_bp.get("/state/events")
def events() -> Response:
    try:
        since = float(request.args.get("since", "0"))
    except ValueError:
        return _error(400, f"since={request.args.get('since')!r}: not a number (seconds since the epoch)")
    return jsonify(STATE.events(since))


@state_bp.get("/state/openflow")
def openflow_state() -> Response:
    """What `picloud up` needs to say which switch connected at which version, or why not: the
    versions the apps accept (wire numbers and labels), each connected datapath's negotiated version,
    and the handshakes os-ken refused."""
    wants = STATE.options.get("of_versions", [])
    return jsonify({
        "versions": wants,
        "switches": {f"{dpid:016x}": dp.ofproto.OFP_VERSION for dpid, dp in list(STATE.datapaths.items())},
        "refused": [e["text"] for e in STATE.events() if e["kind"] == "openflow"],
    })


MAX_BODY = httpguard.MIB  # a flow entry is a few hundred bytes; a whole tenants plan is not sent here


class _JSONInOrder(DefaultJSONProvider):
    sort_keys = False  # documents keep the order they are built in


def create_app(policy: httpguard.Policy | None = None) -> Flask:
    """The API's Flask app: ofctl_rest routes, /state, and every registered blueprint, behind the
    guard. `policy` None: loopback names, a fresh random token (tests pass their own)."""
    app = Flask("picloud-controller")
    app.json = _JSONInOrder(app)
    stats_wait.install()
    app.register_error_handler(StatsTimeout, lambda exc: _error(504, str(exc)))
    app.register_error_handler(SwitchRefused, lambda exc: _error(502, str(exc)))
    stats_rules = [(wsgi_bridge.shape(r), {"GET"}) for r in _rules_of(stats)]
    if wsgi_bridge.takes_over_stats(stats_rules):
        LOG.info("controller API: /stats/* served by the app that registered it (Ryu's ofctl_rest)")
    else:
        app.register_blueprint(stats)
    app.register_blueprint(state_bp)
    with _extra_lock:
        for bp in _extra_blueprints:
            app.register_blueprint(bp)
    if policy is None:
        import secrets

        policy = api_policy("127.0.0.1", token=secrets.token_urlsafe(24))
    wsgi_bridge.mount(app)  # ryu.app.wsgi routes, lowest priority, behind the same guard
    # Last, so it wraps whatever else was mounted on app.wsgi_app: nothing bypasses it.
    httpguard.install(app, policy)
    return app


def api_policy(host: str, token: str | None, names: tuple[str, ...] = ()) -> httpguard.Policy:
    """The controller API's guard: Host names of `host` (+ `names`), JSON bodies, `token` needed
    for changes (None: --api-open). No CSP: the API serves JSON, never a page."""
    return httpguard.Policy(hosts=httpguard.host_names(host, names), body_types=httpguard.JSON_TYPES,
                            max_body=MAX_BODY, token=token, csp=True)


def _rules_of(bp: Blueprint) -> list[str]:
    """The URL rules a blueprint declares (Flask keeps them as deferred functions until registered)."""
    probe = Flask("probe")
    probe.register_blueprint(bp)
    return [rule.rule for rule in probe.url_map.iter_rules() if rule.endpoint != "static"]


class ApiServer:
    """The Flask app served by werkzeug in a daemon thread (stopped by `stop()`).

    `token` None means --api-open: anyone who can reach the port may change flow tables."""

    def __init__(self, host: str, port: int, token: str | None = None, names: tuple[str, ...] = ()) -> None:
        app = create_app(api_policy(host, token, names))
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="picloud-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
