"""`UIServer`: the web UI running in a background thread of the calling process.

Why a thread and not a subprocess: `Testbed.ui()` hands the UI the live `Testbed` object, so
actions (cut a link, add a member) go through the very facade the script is using, with its
state, rather than through a second attached copy. Werkzeug's threaded server handles the
long-lived Server-Sent Events streams alongside ordinary requests.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from werkzeug.serving import make_server

from picloud.errors import UIError
from webui.app import create_app, live
from webui.live import DEFAULT_INTERVAL
from webui.sources import DataSource, TestbedSource

if TYPE_CHECKING:
    from picloud.runstate import RunState
    from topology.backends.base import Run

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _as_source(target: Run | DataSource, results: Path | str | None) -> tuple[DataSource, Run | None]:
    """A DataSource and, if there is one, the Testbed behind it.

    `target` is a Testbed (the caller attaches one to a run started elsewhere: the UI never reaches
    for the facade) or already a DataSource (the benchmark's synthetic one)."""
    if hasattr(target, "port_stats") and hasattr(target, "runtime_containers"):
        return cast("DataSource", target), None
    if hasattr(target, "fabric") and hasattr(target, "topology"):
        run = cast("Run", target)
        return TestbedSource(run, results), run
    raise UIError(f"web UI: cannot show {target!r} (give a Testbed, e.g. Testbed.attach(prefix), or a DataSource)")


class UIServer:
    """Start at construction; `.url`, `.token`, `.stop()`. Port 0 picks a free port (tests)."""

    def __init__(self, target: Run | DataSource, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None,
                 results: Path | str | None = "results", interval: float = DEFAULT_INTERVAL,
                 record: bool = True, host_names: tuple[str, ...] = ()) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise UIError(f"web UI: port {port!r} (must be 0..65535)")
        if not is_loopback(host):
            log.warning("picloud: warning: the web UI listens on %s: anyone who can reach it can read the "
                        "run; actions still need the token", host)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request on the console
        self.source, self.testbed = _as_source(target, results)
        self.host_names = tuple(host_names)
        self.app = create_app({"SOURCE": self.source, "TOKEN": token, "INTERVAL": interval, "HOST": host,
                               "HOST_NAMES": self.host_names})
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
        thread = threading.Thread(target=self._server.serve_forever, name="webui-server", daemon=True)
        thread.start()
        self._thread: threading.Thread | None = thread
        self._token_file: Path | None = None
        self.results, self.interval = results, interval  # what a detached copy is given (picloud.uiprocess)
        if record:
            self._record()

    def _record(self) -> None:
        """Name the UI in the run state (url + a 0600 token file) so `picloud status` can show it."""
        state = getattr(self.testbed, "state", None)
        if state is not None and hasattr(state, "save"):
            self._token_file = self.record_in(state, self.url, self.token)

    def token_hint(self, stream: Any = None) -> str:
        """How to show the token on `stream` (stdout): the token itself on a terminal; where its file
        is otherwise. Output that is not a terminal ends up in log files and CI logs, which other
        people read: the 0600 token file is the one place the token lives."""
        stream = stream if stream is not None else sys.stdout
        if getattr(stream, "isatty", lambda: False)():
            return self.token
        state = getattr(self.testbed, "state", None)
        where = self._token_file or (Path(state.ui["token_file"]) if state is not None and
                                     state.ui.get("token_file") else None)
        return f"in {where}" if where else "not shown (output is not a terminal; UIServer.token has it)"

    @staticmethod
    def record_in(state: RunState, url: str, token: str) -> Path:
        """Name a UI serving `url` in the run state, its token in a 0600 file beside the state."""
        from picloud.runstate import ensure_state_dir
        from picloud.secrets_files import write_token

        path = ensure_state_dir() / f"{state.prefix}.ui-token"
        write_token(path, token)
        state.ui = {"url": url, "token_file": str(path)}
        state.save()
        return path

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
            state = self.testbed.state if self.testbed is not None else None  # a token file: a run's UI
            if state is not None and state.path.exists():
                state.ui = {}
                state.save()

    def __enter__(self) -> UIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
