"""`ControllerClient`: the one HTTP client for a run's controller API (no os-ken import).

Why one: the facade, the tenants package and the web UI each talked to the API with their own
client, so a change to the API (the token header on state-changing routes, a timeout, an error
shape) had three places to go wrong. This one knows the API's address, reads the run's token from
its 0600 file for requests that change something (reads stay open), and turns every failure into
one `ControllerError` line naming the route. It lives in picloud's shared kernel so the domain
packages can use it without importing the facade.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from picloud.errors import ControllerError, PiCloudError
from picloud.httpguard import SAFE_METHODS, TOKEN_HEADER
from picloud.secrets_files import read_token


class ControllerHTTPError(ControllerError):
    """The controller answered with an error status (kept in `.status`, e.g. 404: no such app)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ControllerClient:
    """`ControllerClient(api, token_file)`; `.get(path)`, `.post(path, body)`, `.request(...)`."""

    def __init__(self, api: str, token_file: str | None = None, timeout: float = 10.0) -> None:
        self.api = api.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout

    @classmethod
    def of_run(cls, controller: Mapping[str, Any] | None) -> ControllerClient | None:
        """The client for a run's `state.controller` record; None when the run has no API of ours
        (no controller, or an external one)."""
        api = (controller or {}).get("api")
        return cls(api, (controller or {}).get("token_file")) if api else None

    @property
    def token(self) -> str | None:
        """The run's API token, read at each use (None for an open API)."""
        if not self.token_file:
            return None
        try:
            return read_token(self.token_file, "controller API token file")
        except PiCloudError as exc:
            raise ControllerError(str(exc)) from None

    def headers(self, method: str = "POST") -> dict[str, str]:
        """The token header for a state-changing request, when the API has a token."""
        token = None if method.upper() in SAFE_METHODS else self.token  # reads are open
        return {TOKEN_HEADER: token} if token else {}

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """The decoded JSON reply (None when empty); ControllerError when unreachable, and
        ControllerHTTPError for a status of 300 or more."""
        import requests

        kwargs: dict[str, Any] = {"headers": self.headers(method), "timeout": timeout or self.timeout}
        if body is not None:
            kwargs["json"] = body
        try:
            resp = requests.request(method, self.api + path, **kwargs)
        except requests.RequestException as exc:
            raise ControllerError(f"controller API {self.api}{path}: unreachable ({type(exc).__name__})") from None
        if resp.status_code >= 300:
            try:
                detail = resp.json().get("error", resp.text)
            except (ValueError, AttributeError):
                detail = resp.text
            raise ControllerHTTPError(f"controller API {method.upper()} {path}: HTTP {resp.status_code}: "
                                      f"{str(detail)[:200]}", resp.status_code)
        try:
            return resp.json() if resp.content else None
        except ValueError:
            raise ControllerError(f"controller API {method.upper()} {path}: not JSON") from None

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self.request("POST", path, body, timeout=timeout)


def routed(state: Mapping[str, Any], hosts: int, bridges: int = 0, since_match: bool = False) -> bool:
    """Readiness from a `/state` document's "ready" facts (no log text): routing's last full
    computation served at least `hosts` hosts on at least `bridges` bridges; with `since_match`,
    it also ran after discovery last came to match the intended fabric (so paths reflect every
    link discovery knows)."""
    ready = state.get("ready") or {}
    routing, discovery = ready.get("routing") or {}, ready.get("discovery") or {}
    if not routing or routing.get("hosts", 0) < hosts or routing.get("bridges", 0) < bridges:
        return False
    if since_match:
        matched = discovery.get("matched_at")
        return matched is not None and routing.get("at", 0) >= matched
    return True
