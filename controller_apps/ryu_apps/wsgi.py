"""`ryu.app.wsgi` for apps written on Ryu's REST layer, served by PiCloud's controller API.

Why: os-ken dropped Ryu's WSGI framework, yet every Ryu REST app (ofctl_rest, rest_firewall,
rest_router, rest_qos, rest_topology, the Ryu book's simple_switch_rest_13) and most users' own
REST apps are written on it. This module is the interface they program against, written from
Ryu's API documentation:

- `WSGIApplication`: the `wsgi` context (`_CONTEXTS = {'wsgi': WSGIApplication}`); `register(
  controller, data)` connects the controller's `@route` methods, `mapper` is a Routes mapper for
  apps that call `mapper.connect(...)` themselves, `registory` (sic, Ryu's spelling) holds the
  data handed to each controller class.
- `ControllerBase(req, link, data, **config)`: one instance per request; the matched route's
  action method is called as `method(req, **url_variables)`.
- `route(name, path, methods=None, requirements=None)`: `{var}` in the path, `requirements` maps
  a variable to the regular expression it must match (a request that does not match is a 404).
- `Request` (WebOb, UTF-8 by default) and `Response` (WebOb; a `str` body is accepted as Ryu's was).

There is no server here: the one HTTP server of the controller process (`controller_apps.api`,
Flask) serves these routes next to `/stats/*` and `/state`, through its own request checks
(`controller_apps.wsgi_bridge`). Ryu's WebSocket RPC (`websocket`, `WebSocketRPCServer`,
`rpc_public`) is not provided: importing it is a one-line error.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import routes
import webob
import webob.dec

from picloud.errors import ControllerError

HEX16 = "[0-9a-f]{16}"  # the dpid pattern Ryu apps' requirements usually use (ryu.lib.dpid.DPID_PATTERN)

_ROUTE_ATTR = "routing_info"
NOT_PROVIDED = {
    "websocket": "WebSocket routes are",
    "WebSocketRPCServer": "WebSocket RPC is",
    "WebSocketRegistrationWrapper": "WebSocket RPC is",
    "WebSocketServerTransport": "WebSocket RPC is",
    "WebSocketDisconnectedError": "WebSocket RPC is",
    "rpc_public": "WebSocket RPC is",
    "WSGIServer": "a WSGI server of its own is",
    "start_service": "a WSGI server of its own is",
}


class Request(webob.Request):
    """The request a controller method receives (`req.json`, `req.body`, `req.GET`, `req.urlvars`)."""

    default_charset = "UTF-8"


class Response(webob.Response):
    """WebOb's response, UTF-8 by default; like Ryu's, `body` may be `str` as well as `bytes`."""

    default_charset = "UTF-8"

    def __init__(self, body: str | bytes | None = None, *args: Any, charset: str = "UTF-8", **kwargs: Any) -> None:
        if isinstance(body, str):
            kwargs["text"] = body
            body = None
        kwargs["charset"] = charset
        super().__init__(body, *args, **kwargs)


def route(name: str, path: str, methods: list[str] | None = None,
          requirements: dict[str, str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a ControllerBase method as the handler of `path` (see the module docstring)."""

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        setattr(method, _ROUTE_ATTR, {"name": name, "path": path, "methods": methods,
                                      "requirements": requirements or {}})
        return method

    return mark


class ControllerBase:
    """Base of REST controllers: built per request with the data the app registered."""

    special_vars = ["action", "controller"]

    def __init__(self, req: Request, link: WSGIApplication, data: Any, **config: Any) -> None:
        self.req = req
        self.link = link
        self.data = data
        self.parent = link
        for key, value in config.items():
            setattr(self, key, value)

    def __call__(self, req: Request) -> webob.Response:
        urlvars = dict(req.urlvars)
        action = urlvars.get("action", "index")
        for var in self.special_vars:
            urlvars.pop(var, None)
        method = getattr(self, action, None)
        if method is None:
            return Response(status=404, json_body={"error": f"no action {action!r} on {type(self).__name__}"})
        return method(req, **urlvars)


class WSGIApplication:
    """The `wsgi` context: every app that lists it in `_CONTEXTS` gets the same instance."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.mapper = routes.Mapper()
        self.registory: dict[str, Any] = {}
        self.owners: dict[int, str] = {}  # id(route) -> the controller class that registered it
        APPLICATIONS.append(self)

    def register(self, controller: type[ControllerBase], data: Any = None) -> None:
        """Connect every `@route` method of `controller`; `data` is passed to each instance."""
        if not (inspect.isclass(controller) and issubclass(controller, ControllerBase)):
            raise ControllerError(f"wsgi.register({controller!r}): not a ControllerBase subclass")
        for action, method in inspect.getmembers(controller, callable):
            info = getattr(method, _ROUTE_ATTR, None)
            if info is None:
                continue
            conditions = {"method": list(info["methods"])} if info["methods"] else {}
            self.mapper.connect(info["name"], info["path"], controller=controller, action=action,
                                conditions=conditions, requirements=info["requirements"])
        if data is not None:
            self.registory[controller.__name__] = data

    def controller_of(self, route_obj: Any) -> str:
        target = route_obj.defaults.get("controller")
        return getattr(target, "__name__", str(target))

    @webob.dec.wsgify(RequestClass=Request)
    def __call__(self, req: Request) -> webob.Response:
        """Serve one request (the bridge calls this for paths the mapper knows)."""
        match = self.mapper.match(environ=req.environ)
        if match is None:
            return Response(status=404, json_body={"error": f"{req.path}: no such route"})
        req.urlvars = match
        controller = match["controller"]
        data = self.registory.get(getattr(controller, "__name__", ""))
        return controller(req, self, data, **self.config)(req)


# Every WSGIApplication made in this process (os-ken creates the context once per name).
APPLICATIONS: list[WSGIApplication] = []
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """Ryu's names this module does not provide: one line naming the part and what to use."""
    part = NOT_PROVIDED.get(name)
    if part is None:
        raise AttributeError(f"module 'ryu.app.wsgi' has no attribute {name!r}")
    from controller_apps.ryu_compat import RyuPartMissing

    raise RyuPartMissing(f"ryu.app.wsgi.{name}: {part} not provided by PiCloud's wsgi layer "
                         "(routes are served by the controller API; use ControllerBase with @route)",
                         name=f"ryu.app.wsgi.{name}")
