"""The Flask application factory: configuration in, app out (Flask tutorial's `flaskr` shape).

Config keys: `SOURCE` (a `webui.sources.DataSource`, required), `TOKEN` (the action token; a
random one when absent), `INTERVAL` (seconds between live samples, default `live.DEFAULT_INTERVAL`),
`HOST` (the bound address, default loopback) and `HOST_NAMES` (more names clients may use for it).
Blueprints: `api` (JSON), `stream` (Server-Sent Events and the event log), `pages` (HTML).

The whole app sits behind `picloud.httpguard` (Host check against DNS rebinding, no foreign Origin
and only JSON or multipart bodies for actions, a 1 MiB body limit checked from Content-Length, CSP
without inline script and no framing), and every state-changing request needs the token, checked
once for all routes before the body is parsed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from picloud import httpguard
from picloud.errors import ControllerError, PiCloudError, UIError
from webui.live import DEFAULT_INTERVAL, LiveView

EXTENSION = "picloud"
MAX_BODY = httpguard.MIB  # the UI's actions send a few fields; nothing it accepts comes near this


def create_app(config: Mapping[str, Any]) -> Flask:
    if config.get("SOURCE") is None:
        raise UIError("web UI: no data source configured (pass SOURCE, for example a TestbedSource)")
    interval = float(config.get("INTERVAL", DEFAULT_INTERVAL))
    if not 0.05 <= interval <= 60:
        raise UIError(f"web UI: interval {interval} s (must be 0.05..60 seconds)")
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update({k: v for k, v in config.items() if k != "SOURCE"})
    app.config["TOKEN"] = config.get("TOKEN") or secrets.token_urlsafe(18)
    app.config["JSON_SORT_KEYS"] = False
    app.extensions[EXTENSION] = LiveView(config["SOURCE"], interval=interval)

    from webui import api, pages, stream

    app.register_blueprint(api.bp)
    app.register_blueprint(stream.bp)
    app.register_blueprint(pages.bp)
    app.before_request(api.check_token)
    httpguard.install(app, httpguard.Policy(
        hosts=httpguard.host_names(str(config.get("HOST") or "127.0.0.1"), tuple(config.get("HOST_NAMES") or ())),
        body_types=httpguard.FORM_TYPES, max_body=MAX_BODY, token=None))

    def _wants_json() -> bool:
        return request.path.startswith("/api/")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not _wants_json():
            return exc
        return jsonify(error=exc.name.lower(), message=exc.description), exc.code

    @app.errorhandler(PiCloudError)
    def user_error(exc: PiCloudError) -> Any:
        # A user's mistake (bad body, a fabric refusing an action): one line, no traceback.
        # No controller to ask (flow tables of a run without one) is the server's state: 503.
        if isinstance(exc, ControllerError):
            return jsonify(error="service unavailable", message=str(exc)), 503
        return jsonify(error="bad request", message=str(exc)), 400

    @app.after_request
    def no_store(response: Any) -> Any:
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def live(app: Flask) -> LiveView:
    return app.extensions[EXTENSION]
