"""Serve `ryu.app.wsgi` routes from the controller API's Flask app, next to `/stats/*` and `/state`.

Why inside Flask rather than a second server or a WSGI middleware in front of it: one port, as
Ryu had, and every request to a Ryu route passes through the same Flask request hooks as our own
routes (the API's auth and Host/Origin checks), so there is exactly one place that decides who
may change the network. A single lowest-priority rule (`/<path:...>`) hands whatever Flask's own
routes do not claim to the Routes mappers the apps filled; their `requirements` are enforced by
Routes, so a dpid that does not match is a 404.

Clashes are decided when the Flask app is built (after every app is constructed): a Ryu route with
the same shape and an overlapping method as one of ours is an error naming both, except Ryu's own
ofctl_rest re-registering `/stats/*`: PiCloud's `/stats/*` is a re-implementation of exactly that
app, so the real one takes the paths over (`takes_over_stats`).
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, request

from controller_apps.ryu_apps.wsgi import APPLICATIONS, Request
from picloud.errors import ControllerError

LOG = logging.getLogger(__name__)

ENDPOINT = "ryu_wsgi"
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
_VAR = re.compile(r"\{[^}]*\}|<[^>]*>")  # Routes' {name} / {name:regex}, Flask's <conv:name>


def shape(path: str) -> str:
    """A path template with every variable as '*': '/stats/flow/{dpid}' == '/stats/flow/<dpid>'."""
    return _VAR.sub("*", path).rstrip("/") or "/"


def _methods(methods: Any) -> set[str]:
    if not methods:
        return {"*"}
    return {m.upper() for m in methods} - {"HEAD", "OPTIONS"}


def _overlap(a: set[str], b: set[str]) -> bool:
    return "*" in a or "*" in b or bool(a & b)


def ryu_routes() -> list[tuple[str, set[str], str]]:
    """(shape, methods, owner) of every route the apps registered."""
    out = []
    for wsgi_app in APPLICATIONS:
        for r in wsgi_app.mapper.matchlist:
            out.append((shape(r.routepath), _methods((r.conditions or {}).get("method")),
                        wsgi_app.controller_of(r)))
    return out


def takes_over_stats(stats_rules: list[tuple[str, set[str]]]) -> bool:
    """True when a Ryu app (Ryu's ofctl_rest) registered one of our `/stats/*` paths."""
    ours = {s for s, _ in stats_rules}
    return any(s in ours for s, _, _ in ryu_routes())


def check_clashes(app: Flask) -> None:
    """ControllerError naming the first Ryu route that has the shape and a method of one of ours,
    or of a Ryu route registered by another controller class."""
    ours = [(shape(rule.rule), _methods(rule.methods), rule.rule) for rule in app.url_map.iter_rules()
            if rule.endpoint not in (ENDPOINT, "static")]
    seen: dict[tuple[str, frozenset[str]], str] = {}
    for path, methods, owner in ryu_routes():
        for other, other_methods, rule in ours:
            if path == other and _overlap(methods, other_methods):
                both = sorted((methods & other_methods) - {"*"}) or sorted(other_methods - {"*"}) or ["any"]
                raise ControllerError(
                    f"REST route {' '.join(both)} {rule} of {owner} clashes with PiCloud's controller API "
                    f"route {rule} (give the app's route another path)")
        for (seen_path, seen_methods), other_owner in seen.items():
            if seen_path == path and other_owner != owner and _overlap(methods, set(seen_methods)):
                raise ControllerError(f"REST route {path} of {owner} clashes with the same route of "
                                      f"{other_owner} (two apps registered it)")
        seen[(path, frozenset(methods))] = owner


def mount(app: Flask) -> None:
    """Add the lowest-priority rule that serves the apps' Ryu routes, after checking for clashes."""
    check_clashes(app)
    app.add_url_rule("/", ENDPOINT, _serve, methods=ALL_METHODS, defaults={"_path": ""})
    app.add_url_rule("/<path:_path>", ENDPOINT, _serve, methods=ALL_METHODS)
    routes_count = len(ryu_routes())
    if routes_count:
        LOG.info("controller API: serving %d ryu.app.wsgi routes", routes_count)


def _serve(_path: str) -> Response:
    body = request.get_data()  # the request hooks may have read the stream already: use Flask's copy
    environ = dict(request.environ)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    for wsgi_app in list(APPLICATIONS):
        if wsgi_app.mapper.match(environ=environ) is None:
            continue
        reply = Request(environ).get_response(wsgi_app)
        headers = [(k, v) for k, v in reply.headerlist if k.lower() not in ("content-length", "connection")]
        return Response(reply.body, status=reply.status, headers=headers)
    response = jsonify({"error": f"{request.method} {request.path}: no such route on the controller API"})
    response.status_code = 404
    return response
