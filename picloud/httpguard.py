"""The request guard both PiCloud HTTP servers (the controller API and the web UI) run first.

Why one guard in front of each whole WSGI app rather than checks in each route: every route a
later app registers (a tenancy blueprint, a Ryu REST app through the `ryu.app.wsgi` shim, a new
UI action) is covered without remembering to opt in. The guard answers before Flask routes the
request or reads its body, so a refused request costs no parsing and changes nothing.

What it refuses, and against whom (README "Security"):
- a `Host` that is not a name the server was bound to: DNS rebinding, a web page whose own name
  now resolves to 127.0.0.1, reading the API as if it were same-origin;
- a state-changing request (any method but GET/HEAD/OPTIONS) with a foreign `Origin` or
  `Sec-Fetch-Site: cross-site`, or with a body whose content type is not JSON (or, for the UI's
  forms, multipart): the requests a web page can send cross-origin without a CORS preflight;
- a body larger than `max_body` (413 from its `Content-Length`, before one byte is read);
- with a token configured: a state-changing request without it (401) or with a wrong one (403),
  compared in constant time. Reads stay open: both servers bind loopback by default.
Every response carries a Content-Security-Policy without inline script and with
`frame-ancestors 'none'`, `X-Frame-Options: DENY` and `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_HEADER = "X-PiCloud-Token"
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/json", "multipart/form-data")
MIB = 1024 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def host_names(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a client may put in `Host` (and `Origin`) for a server bound to `bind`.

    Loopback (and the wildcard addresses, which include loopback) admit `localhost`, 127.0.0.1
    and ::1; the wildcard also admits this machine's host name. Any other name must be given
    explicitly (`--host NAME`): a name we cannot vouch for is exactly what rebinding uses."""
    names = {_norm(bind)} | {_norm(n) for n in extra if n}
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        address = None
    if bind == "localhost" or (address is not None and (address.is_loopback or address.is_unspecified)):
        names |= {"localhost", "127.0.0.1", "::1"}
    if address is not None and address.is_unspecified:
        names |= {_norm(socket.gethostname()), _norm(socket.getfqdn())}
    return frozenset(names)


def _norm(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def split_host(value: str) -> str | None:
    """The host name of a `Host` header value ('name', 'name:port', '[v6]:port'); None if malformed."""
    value = value.strip()
    if not value or any(c.isspace() or ord(c) < 32 for c in value) or "@" in value or "/" in value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not value[end + 1:].startswith(":")):
            return None
        host, port = value[1:end], value[end + 2:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None
    if port and not port.isdigit():
        return None
    return _norm(host) or None


def origin_host(origin: str) -> str | None:
    """The host of an `Origin` header; None for 'null' (sandboxed frames, file: pages) or junk."""
    if origin.strip() == "null":
        return None
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _norm(parts.hostname)


@dataclass
class Policy:
    """What one server accepts. `token` is None for no token (the UI checks its own per route,
    the controller API with --api-open); `body_types` the content types a state-changing body may
    have."""

    hosts: frozenset[str]
    body_types: tuple[str, ...] = JSON_TYPES
    max_body: int = MIB
    token: str | None = None
    csp: bool = True
    extra_headers: dict[str, str] = field(default_factory=dict)

    def refusal(self, environ: dict[str, Any]) -> tuple[int, str] | None:
        """(status, one-line reason) if the request must be refused, else None. Pure: the WSGI
        environ in, a verdict out; nothing of the body is read."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        host = split_host(environ.get("HTTP_HOST") or "")
        if host is None or host not in self.hosts:
            shown = (environ.get("HTTP_HOST") or "(none)")[:100]
            return 400, (f"Host {shown!r} is not a name this server answers to (allowed: "
                         f"{', '.join(sorted(self.hosts))}; add a name with --host): DNS-rebinding guard")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400, "Content-Length is not a number"
        if length > self.max_body:
            return 413, f"request body of {length} bytes is over this server's limit of {self.max_body} bytes"
        if method in SAFE_METHODS:
            return None
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin_host(origin) not in self.hosts:
            return 403, f"Origin {origin[:100]!r} is foreign: state-changing requests come from this server's own pages"
        if (environ.get("HTTP_SEC_FETCH_SITE") or "").lower() == "cross-site":
            return 403, "a cross-site request (Sec-Fetch-Site) may not change state"
        has_body = length > 0 or "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
        ctype = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if has_body and ctype not in self.body_types:
            return 415, (f"Content-Type {ctype or '(none)'!r}: a state-changing request sends "
                         f"{' or '.join(self.body_types)}")
        if self.token is not None:
            given = environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_")) or ""
            auth = environ.get("HTTP_AUTHORIZATION") or ""
            if not given and auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
            if not given:
                return 401, (f"this request changes the fabric: send the run's API token in the {TOKEN_HEADER} "
                             "header (see docs/API.md; the token file is in the run's state directory)")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 403, "wrong API token"
        return None

    def headers(self) -> list[tuple[str, str]]:
        out = dict(SECURITY_HEADERS) if self.csp else {"X-Content-Type-Options": "nosniff"}
        out.update(self.extra_headers)
        return list(out.items())


class Guard:
    """WSGI middleware applying a `Policy` in front of `app` (which is never called for a refused
    request) and adding the security headers to every response."""

    def __init__(self, app: Callable[..., Any], policy: Policy) -> None:
        self.app = app
        self.policy = policy

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        extra = self.policy.headers()
        verdict = self.policy.refusal(environ)
        if verdict is not None:
            status, message = verdict
            body = json.dumps({"error": _REASONS.get(status, "refused"), "message": message}).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            if status == 413 or status == 400:
                headers.append(("Connection", "close"))  # do not read what is left of the body
            start_response(f"{status} {_REASONS.get(status, 'Refused').title()}", headers + extra)
            return [body]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            have = {k.lower() for k, _ in headers}
            return start_response(status, headers + [(k, v) for k, v in extra if k.lower() not in have], exc_info)

        return self.app(environ, start)


_REASONS = {400: "bad request", 401: "unauthorized", 403: "forbidden", 413: "payload too large",
            415: "unsupported media type"}


def install(app: Any, policy: Policy) -> Policy:
    """Put `policy` in front of the Flask `app` (and set Flask's own body limit to match, which
    also bounds a chunked body that has no Content-Length)."""
    app.config["MAX_CONTENT_LENGTH"] = policy.max_body
    app.wsgi_app = Guard(app.wsgi_app, policy)
    app.extensions["picloud_guard"] = policy
    return policy
