"""HTML pages: thin shells over the JSON API, drawn by the local scripts in `static/`.

Pages render server-side what does not change while one looks at it (tenants, experiments) and
leave live parts (topology, flow tables, events) to JavaScript that reads the same JSON routes the
tests check, so there is one source of truth for what the UI shows.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template

from webui import catalog
from webui.api import _node
from webui.live import LiveView

bp = Blueprint("pages", __name__)


def _live() -> LiveView:
    return current_app.extensions["picloud"]


@bp.get("/")
def topology() -> Any:
    _, _, drawn = _live().display()
    return render_template("topology.html", page="topology", counts=drawn["counts"], name=drawn["name"])


@bp.get("/switches")
def switches() -> Any:
    topo, _, _ = _live().display()
    rows = [{"name": n, "kind": topo.kind(n), "role": topo.node(n).role or "pi",
             "dpid": f"{topo.dpid(n):016x}", "ports": len(topo.ports(n))} for n in topo.bridges]
    return render_template("switches.html", page="switches", switches=rows)


@bp.get("/switches/<ident>")
def switch(ident: str) -> Any:
    topo, name = _node(ident)
    return render_template("switch.html", page="switches", name=name, dpid=f"{topo.dpid(name):016x}",
                           role=topo.node(name).role or "pi")


@bp.get("/tenants")
def tenants() -> Any:
    return render_template("tenants.html", page="tenants")


@bp.get("/experiments")
def experiments() -> Any:
    return render_template("experiments.html", page="experiments",
                           experiments=catalog.find_experiments(_live().source.results_dir()))


@bp.get("/experiments/<path:eid>")
def experiment(eid: str) -> Any:
    root = _live().source.results_dir()
    directory = catalog.resolve_experiment(root, eid)
    if directory is None or root is None:
        abort(404)
    record = catalog.experiment_summary(root, directory)
    flows = catalog.read_flows_csv(directory / "flows.csv", limit=50) if record["flows_csv"] else None
    return render_template("experiment.html", page="experiments", exp=record, flows=flows)


@bp.get("/events")
def events() -> Any:
    return render_template("events.html", page="events")
