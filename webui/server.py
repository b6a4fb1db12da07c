"""`UIServer`: the web UI running in a background thread of the calling process.

Why a thread and not a subprocess: `Testbed.ui()` hands the UI the live `Testbed` object, so
actions (cut a link, add a member) go through the very facade the script is using, with its
state, rather than through a second attached copy. Werkzeug's threaded server handles the
long-lived Server-Sent Events streams alongside ordinary requests.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from picloud.errors import UIError
from webui.app import create_app, live
from webui.sources import DataSource, TestbedSource

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _as_source(target: Any, results: Path | str | None) -> tuple[DataSource, Any]:
    """A DataSource and, if there is one, the Testbed behind it.

    `target` is a Testbed, a RunState or run prefix (attached through `Testbed.attach`), or
    already a DataSource (the benchmark's synthetic one)."""
    if hasattr(target, "port_stats") and hasattr(target, "runtime_containers"):
        return target, None
    if hasattr(target, "fabric") and hasattr(target, "topology"):
        return TestbedSource(target, results), target
    from picloud.testbed import Testbed

    prefix = getattr(target, "prefix", target)
    if prefix is not None and not isinstance(prefix, str):
        raise UIError(f"web UI: cannot show {target!r} (give a Testbed, a RunState or a run prefix)")
    testbed = Testbed.attach(prefix)
    return TestbedSource(testbed, results), testbed


class UIServer:
    """Start at construction; `.url`, `.token`, `.stop()`. Port 0 picks a free port (tests)."""

    def __init__(self, target: Any, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None,
                 results: Path | str | None = "results", interval: float = 1.0) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise UIError(f"web UI: port {port!r} (must be 0..65535)")
        if not is_loopback(host):
            log.warning("web UI: listening on %s, reachable from other machines; reads need no token, "
                        "actions do", host)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request on the console
        self.source, self.testbed = _as_source(target, results)
        self.app = create_app({"SOURCE": self.source, "TOKEN": token, "INTERVAL": interval})
        self.token: str = self.app.config["TOKEN"]
        try:
            self._server = make_server(host, port, self.app, threaded=True)
        except (OSError, socket.gaierror) as exc:
            raise UIError(f"web UI: cannot listen on {host}:{port}: {exc} (pick another --port)") from None
        except SystemExit:  # Werkzeug exits the process when the port is taken; we are a library
            raise UIError(f"web UI: cannot listen on {host}:{port}: address in use (pick another --port)") from None
        self.host, self.port = host, self._server.server_port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webui-server", daemon=True)
        self._thread.start()
        self._token_file: Path | None = None
        self._record()

    def _record(self) -> None:
        """Name the UI in the run state (url + a 0600 token file) so `picloud status` can show it."""
        state = getattr(self.testbed, "state", None)
        if state is None or not hasattr(state, "save"):
            return
        from picloud.runstate import state_dir

        path = state_dir() / f"{state.prefix}.ui-token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        self._token_file = path
        state.ui = {"url": self.url, "token_file": str(path)}
        state.save()

    def stop(self) -> None:
        """Idempotent: stop streams and the sampler, then the server; forget the run-state entry."""
        if self._thread is None:
            return
        live(self.app).stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._thread = None
        close = getattr(self.source, "close", None)
        if close:
            close()
        if self._token_file is not None:
            self._token_file.unlink(missing_ok=True)
            state = self.testbed.state
            if state.path.exists():
                state.ui = {}
                state.save()

    def __enter__(self) -> UIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
