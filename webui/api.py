"""The JSON API: everything the pages show, and the few actions that change the fabric.

Reads are open (the UI binds to loopback by default). Actions need the token printed when the
UI starts, in the `X-PiCloud-Token` header or a `token` form field: a page someone opens on a
shared projector must not be able to cut links by accident. Every body is validated before the
action runs, so a bad request changes nothing. Documented in docs/API.md.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, send_file

from picloud import httpguard
from picloud.errors import UIError
from topology.model import Topology, dpid_str
from webui import catalog, tables
from webui.layout import link_id
from webui.live import LiveView

bp = Blueprint("api", __name__, url_prefix="/api")
PLACEMENTS = ("spread", "pack")
MAX_MEMBERS = 64
MAX_BULK_SECONDS = 3600


def view() -> LiveView:
    return current_app.extensions["picloud"]


def sampled() -> dict[str, Any]:
    """The latest live sample; starts the sampler and takes a first sample if there is none yet,
    so the first request after start-up already shows counters and controller connections."""
    live = view()
    live.start()
    snap = live.latest()
    return live.sample() if snap["seq"] == 0 else snap


def check_token() -> Any:
    """Every state-changing request (any route, present or future) needs the token: 401 without,
    403 with a wrong one. Runs before the route; the guard has already bounded the body's size, so
    reading a form field here parses at most MAX_BODY bytes."""
    if request.method in httpguard.SAFE_METHODS or request.routing_exception is not None:
        return None  # a read, or no such route/method: Flask answers 404/405, nothing runs
    given = request.headers.get(httpguard.TOKEN_HEADER) or (request.form.get("token") if request.mimetype ==
                                                              "multipart/form-data" else None)
    if not given:
        return jsonify(error="unauthorized",
                       message="actions need the token printed when the UI started "
                               "(header X-PiCloud-Token or form field token)"), 401
    if not hmac.compare_digest(given.encode(), current_app.config["TOKEN"].encode()):
        return jsonify(error="forbidden", message="wrong token"), 403
    return None


def requires_token(func: Callable[..., Any]) -> Callable[..., Any]:
    """Marks an action (the app-wide `check_token` enforces it; this re-checks, so a route copied
    into another app without that hook still refuses)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        refused = check_token() if request.method not in httpguard.SAFE_METHODS else None
        return refused if refused is not None else func(*args, **kwargs)

    return wrapper


def body() -> dict[str, Any]:
    """The request's JSON object, or its form fields; 400 for anything else."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise UIError(f"{request.path}: body is not a JSON object")
        return data
    return {k: v for k, v in request.form.items() if k != "token"}


def _node(ident: str) -> tuple[Topology, str]:
    """A bridge by name, 16-hex DPID or decimal DPID; JSON 404 otherwise."""
    topo, _, _ = view().display()
    if ident in topo and topo.kind(ident) != "container":
        return topo, ident
    by_dpid = topo.by_dpid()
    for base in (16, 10):
        try:
            value = int(ident, base)
        except ValueError:
            continue
        if value in by_dpid:
            return topo, by_dpid[value]
    abort(404, description=f"switch {ident!r}: no such switch or Pi (use a name or a DPID from /api/switches)")


def _switch_record(topo: Topology, name: str, connected: dict[str, bool]) -> dict[str, Any]:
    node = topo.node(name)
    return {
        "name": name, "kind": node.kind, "role": node.role if node.kind == "switch" else "pi",
        "dpid": dpid_str(topo.dpid(name)), "ports": len(topo.ports(name)),
        "connected": connected.get(name),
    }


@bp.get("/topology")
def topology() -> Any:
    _, _, drawn = view().display()
    tenants = [{"name": t["name"], "colour": t["colour"]} for t in view().tenants()]
    return jsonify(drawn | {"tenants": tenants})


@bp.get("/switches")
def switches() -> Any:
    topo, _, _ = view().display()
    connected = sampled().get("switches", {})
    return jsonify(switches=[_switch_record(topo, n, connected) for n in topo.bridges])


@bp.get("/switches/<ident>")
def switch(ident: str) -> Any:
    topo, name = _node(ident)
    _, pi_ports, _ = view().display()
    snap = sampled()
    record = _switch_record(topo, name, snap.get("switches", {}))
    counters = {}
    for ln in snap.get("links", []):
        for end in ln.get("ends", []):
            if end.get("node") == name:
                counters[end["port"]] = end
    ports = []
    for port, peer in topo.ports(name).items():
        port = pi_ports.get(peer, port)
        ports.append({"port": port, "peer": peer, "counters": counters.get(port)})
    return jsonify(record | {"ports": ports})


@bp.get("/switches/<ident>/flows")
def flows(ident: str) -> Any:
    query, limit, offset = tables.page_args(request.args)
    topo, name = _node(ident)
    rows = tables.flow_rows(view().source.flows(name))
    return jsonify({"switch": name, "dpid": dpid_str(topo.dpid(name))} | tables.filter_page(rows, query, limit, offset))


@bp.get("/switches/<ident>/groups")
def groups(ident: str) -> Any:
    topo, name = _node(ident)
    raw = view().source.groups(name) or {}
    rows = tables.merge_groups(raw.get("stats"), raw.get("desc"))
    return jsonify(switch=name, dpid=dpid_str(topo.dpid(name)), groups=rows)


@bp.get("/switches/<ident>/meters")
def meters(ident: str) -> Any:
    topo, name = _node(ident)
    rows = [tables.meter_row(m) for m in tables.unwrap(view().source.meters(name))]
    return jsonify(switch=name, dpid=dpid_str(topo.dpid(name)), meters=rows)


def current_links() -> list[dict[str, Any]]:
    """Layout links joined with the latest sample; takes a first sample if none exists yet."""
    by_id = {ln["id"]: ln for ln in sampled()["links"]}
    _, _, drawn = view().display()
    out = []
    for ln in drawn["links"]:
        s = by_id.get(ln["id"], {})
        out.append({k: ln[k] for k in ("id", "a", "b", "kind", "a_port", "b_port", "bw")}
                   | {"up": s.get("up", True), "bps": s.get("bps", 0.0), "util": s.get("util", 0.0),
                      "ends": s.get("ends", [])})
    return out


@bp.get("/links")
def links() -> Any:
    return jsonify(links=current_links(), seq=view().latest()["seq"])


@bp.post("/links/<a>/<b>")
@requires_token
def set_link(a: str, b: str) -> Any:
    data = body()
    up = data.get("up")
    if isinstance(up, str) and up in ("true", "false"):
        up = up == "true"
    if not isinstance(up, bool):
        raise UIError(f"link {a}-{b}: body needs \"up\": true or false")
    topo, _, _ = view().display()
    if not topo.graph.has_edge(a, b) or "container" in (topo.kind(a), topo.kind(b)):
        abort(404, description=f"link {a}-{b}: no such fabric link (see /api/links)")
    view().source.set_link(a, b, up)
    ln = topo.link(a, b)
    view().events.add("link", f"link {ln.a}-{ln.b} set {'up' if up else 'down'} from the web UI")
    return jsonify(id=link_id(ln.a, ln.b), up=up)


MAX_CAPTURE_SECONDS = 60


@bp.post("/links/<a>/<b>/capture")
@requires_token
def capture_link(a: str, b: str) -> Any:
    """Capture both ends of a link for the next N seconds; answer with the pcapng file. It is also
    kept under the results directory (captures/), and its kernel drop count is in a header."""
    data = body()
    seconds = data.get("seconds", 5)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 1 <= seconds <= MAX_CAPTURE_SECONDS:
        raise UIError(f"capture: seconds {seconds!r} (1..{MAX_CAPTURE_SECONDS})")
    topo, _, _ = view().display()
    if not topo.graph.has_edge(a, b):
        abort(404, description=f"link {a}-{b}: no such link (see /api/links)")
    capture = getattr(view().source, "capture_link", None)
    if capture is None:
        abort(501, description="capture: this UI shows no live fabric")
    result = capture(a, b, float(seconds))
    view().events.add("capture", f"captured link {a}-{b} for {seconds:g} s: {result.packets} packets, "
                                 f"{result.dropped} dropped by the kernel")
    response = send_file(result.path, mimetype="application/x-pcapng", as_attachment=True,
                         download_name=result.path.name, max_age=0)
    response.headers["X-PiCloud-Capture-Packets"] = str(result.packets)
    response.headers["X-PiCloud-Capture-Dropped"] = str(result.dropped)
    return response


@bp.get("/tenants")
def tenants() -> Any:
    topo, _, _ = view().display()
    verdicts = catalog.tenant_verdicts(view().verification["report"])
    out = []
    for t in view().tenants():
        members = []
        for m in t["members"]:
            pi = m.get("pi") or (topo.node(m["name"]).pi if m["name"] in topo else None)
            rack = m.get("rack")
            if rack is None and pi is not None and pi in topo:
                rack = topo.node(pi).rack
            ip = m.get("ip") or (topo.node(m["name"]).ip if m["name"] in topo else None)
            members.append(m | {"pi": pi, "rack": rack, "ip": ip})
        out.append(t | {"members": members, "verify": verdicts.get(t["name"], t["verify"])})
    return jsonify(tenants=out)


@bp.post("/tenants/<name>/members")
@requires_token
def add_members(name: str) -> Any:
    data = body()
    count, placement = data.get("count", 1), data.get("placement", "spread")
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise UIError(f"tenant {name}: count {count!r} is not a whole number") from None
    if not 1 <= count <= MAX_MEMBERS:
        raise UIError(f"tenant {name}: count {count} (add 1..{MAX_MEMBERS} members at a time)")
    if placement not in PLACEMENTS:
        raise UIError(f"tenant {name}: placement {placement!r} (one of {', '.join(PLACEMENTS)})")
    added = view().source.add_members(name, count, placement)
    view().events.add("tenant", f"tenant {name}: added {', '.join(added) or 'no members'} from the web UI")
    return jsonify(tenant=name, added=added), 201


@bp.delete("/tenants/<name>/members/<member>")
@requires_token
def remove_member(name: str, member: str) -> Any:
    tenant = next((t for t in view().tenants() if t["name"] == name), None)
    if tenant is None:
        abort(404, description=f"tenant {name!r}: no such tenant")
    if not any(m["name"] == member for m in tenant["members"]):
        abort(404, description=f"tenant {name!r}: no member {member!r}")
    view().source.remove_member(name, member)
    view().events.add("tenant", f"tenant {name}: removed {member} from the web UI")
    return jsonify(tenant=name, removed=member)


@bp.get("/verify")
def verify_state() -> Any:
    return jsonify(view().verification)


@bp.post("/verify")
@requires_token
def verify() -> Any:
    if not view().start_verify():
        return jsonify(error="conflict", message="an isolation check is already running"), 409
    view().events.add("tenant", "isolation check started from the web UI")
    return jsonify(running=True), 202


@bp.get("/experiments")
def experiments() -> Any:
    return jsonify(experiments=catalog.find_experiments(view().source.results_dir()))


def _experiment(eid: str) -> Any:
    root = view().source.results_dir()
    directory = catalog.resolve_experiment(root, eid)
    if directory is None or root is None:
        abort(404, description=f"experiment {eid!r}: no such result directory (see /api/experiments)")
    return root, directory


# Results files the browser may show inline: they cannot run script in the UI's origin. Anything
# else (an SVG can carry <script>; HTML; unknown types) is a download, never rendered here.
INLINE_TYPES = {".png": "image/png", ".csv": "text/plain; charset=utf-8", ".json": "text/plain; charset=utf-8",
                ".txt": "text/plain; charset=utf-8"}


@bp.get("/experiments/<path:eid>/files/<fname>")
def experiment_file(eid: str, fname: str) -> Any:
    _, directory = _experiment(eid)
    try:
        if Path(fname).suffix not in catalog.EXPERIMENT_FILES:
            raise FileNotFoundError(fname)
        handle = catalog.open_inside(directory, fname)
    except OSError:
        abort(404, description=f"experiment {eid!r}: no file {fname!r} (symlinks and files outside the "
                               "experiment directory are not served)")
    inline = INLINE_TYPES.get(Path(fname).suffix)
    response = send_file(handle, mimetype=inline or "application/octet-stream", as_attachment=inline is None,
                         download_name=fname, max_age=0)
    # Even opened directly, a results file gets no script and no origin of its own.
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


@bp.get("/experiments/<path:eid>")
def experiment(eid: str) -> Any:
    root, directory = _experiment(eid)
    record = catalog.experiment_summary(root, directory)
    if record["flows_csv"]:
        record["flows"] = catalog.read_flows_csv(directory / "flows.csv")
    return jsonify(record)


@bp.get("/traffic")
def traffic() -> Any:
    return jsonify(flows=view().source.bulk_flows())


@bp.post("/traffic")
@requires_token
def start_traffic() -> Any:
    data = body()
    src, dst, seconds = data.get("src"), data.get("dst"), data.get("seconds", 30)
    if not isinstance(src, str) or not isinstance(dst, str) or src == dst:
        raise UIError("traffic: body needs \"src\" and \"dst\", two different container names")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise UIError(f"traffic: seconds {seconds!r} is not a number") from None
    if not 1 <= seconds <= MAX_BULK_SECONDS:
        raise UIError(f"traffic: seconds {seconds:g} (a bulk flow lasts 1..{MAX_BULK_SECONDS} s)")
    topo, _, _ = view().display()
    for c in (src, dst):
        if c not in topo or topo.kind(c) != "container":
            raise UIError(f"traffic: {c!r} is not a container (see /api/topology)")
    flow = view().source.start_bulk(src, dst, seconds)
    view().events.add("traffic", f"bulk flow {flow['id']} {src} -> {dst} for {seconds:g} s from the web UI")
    return jsonify(flow), 201


@bp.delete("/traffic/<flow_id>")
@requires_token
def stop_traffic(flow_id: str) -> Any:
    try:
        flow = view().source.stop_bulk(flow_id)
    except KeyError:
        abort(404, description=f"traffic {flow_id!r}: no such bulk flow (see /api/traffic)")
    view().events.add("traffic", f"bulk flow {flow_id} stopped from the web UI")
    return jsonify(flow)
