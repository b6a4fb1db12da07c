"""The web UI of a detached run as its own process: `picloud ui --run PREFIX`, started by the facade.

Why here and not in `webui/`: a UI that outlives the script is a run-level decision (the run is
left up, its processes recorded in the run state so `picloud down` and `picloud clean` stop them).
`Testbed.detach()` owns it; `webui/` serves pages and never starts the CLI.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from picloud.errors import UIError
from picloud.secrets_files import open_private
from topology.effects import proc as proc_effects

if TYPE_CHECKING:
    from picloud.runstate import RunState
    from webui.server import UIServer

TOKEN_ENV = "PICLOUD_UI_TOKEN"  # how a detached UI inherits its token without showing it in `ps`


def detach_ui(server: UIServer, state: RunState, timeout: float = 15.0) -> int:
    """Keep `server` (a `webui.server.UIServer` of the run `state`) up after this process leaves:
    hand the same host, port and token to a `picloud ui --run PREFIX` process in its own session,
    recorded in the run state's PIDs. Returns its PID."""
    host, port, token, url = server.host, server.port, server.token, server.url
    server.stop()
    argv = [sys.executable, "-m", "picloud", "ui", "--run", state.prefix, "--host", host, "--port", str(port),
            "--interval", str(server.interval), "--no-record"]
    for name in server.host_names:
        argv += ["--host-name", name]
    if server.results is not None:
        argv += ["--results", str(Path(server.results).resolve())]
    log_path = state.path.with_suffix(".ui.log")
    # The child's stdout is this log, not a terminal, so it never prints the token (see
    # `UIServer.token_hint`); the log is 0600 anyway, in the 0700 state directory.
    with open_private(log_path, "ab") as logf:
        child = proc_effects.spawn_helper(argv, stdout=logf, env={**os.environ, TOKEN_ENV: token})
    state.intend("pids", [proc_effects.record(child, "webui").to_dict()])
    server.record_in(state, url, token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise UIError(f"web UI: the detached UI exited at once (see {log_path})")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return child.pid
        except OSError:
            time.sleep(0.1)
    child.terminate()
    raise UIError(f"web UI: the detached UI did not listen on {host}:{port} within {timeout:g} s "
                  f"(see {log_path})")
