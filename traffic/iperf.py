"""iperf3 bulk flows between two containers: the reference for what a path can carry.

The server runs `iperf3 -s -1` (one test, then exit) in the destination container; the client runs
`iperf3 -c ... -J` in the source and its JSON is parsed. Goodput is the receiver's figure
(`end.sum_received`), the number comparable with the engine's bytes acknowledged by the receiver.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from picloud.errors import TrafficError
from topology.backends.base import fabric_of

if TYPE_CHECKING:
    from topology.backends.base import Run

IPERF_PORT = 5201
# How long a starting `iperf3 -s` may take to listen before the start counts as broken. A bound,
# not a target: it listens within milliseconds on an idle host, and a fixed 0.3-0.4 s pause before
# the client lost that race at load 6-15 here (the client was refused and no flow ever ran).
LISTEN_TIMEOUT = 30.0


def start_server(popen: Callable[..., subprocess.Popen], container: str, argv: list[str]) -> subprocess.Popen:
    """Start an iperf3 server (`argv`, e.g. ["iperf3", "-s", "-1", "-p", "5201"]) with `popen(container,
    argv, **kwargs)` and return once it says it listens, so a client started next is never
    refused. Its later output is read and dropped (a long test would fill the pipe)."""
    server = popen(container, [*argv, "--forceflush"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert server.stdout is not None
    fd, seen = server.stdout.fileno(), b""
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while b"Server listening" not in seen:
        left = deadline - time.monotonic()
        chunk = os.read(fd, 4096) if left > 0 and select.select([fd], [], [], left)[0] else b""
        if not chunk:  # exited, or not listening by the deadline
            if server.poll() is None:
                server.kill()
            server.wait()
            text = seen.decode(errors="replace").strip()[-200:] or "no output"
            raise TrafficError(f"iperf3 server in {container}: did not listen (exited, or not within "
                               f"{LISTEN_TIMEOUT:g}s): {text}")
        seen += chunk
    threading.Thread(target=_drain, args=(fd,), daemon=True).start()
    return server


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass  # the pipe was closed with the process


def _ip(testbed: Run, container: str) -> str:
    return testbed.container_ip(container)


def bulk(testbed: Run, src: str, dst: str, duration: float = 10.0, parallel: int = 1,
         port: int = IPERF_PORT, omit: float = 0.0) -> dict[str, Any]:
    """One iperf3 test src -> dst; returns goodput_mbps, sent_mbps, retransmits, seconds. `omit`:
    seconds of slow start (and a shaper's initial bucket) left out of the figures (iperf3 -O)."""
    if not shutil.which("iperf3"):
        raise TrafficError("iperf: iperf3 is not installed (run 'make setup')")
    if src == dst:
        raise TrafficError(f"iperf: source and destination are both {src!r} (needs two containers)")
    if not 0 < duration <= 3600 or not 1 <= parallel <= 128:
        raise TrafficError(f"iperf: duration {duration} s, parallel {parallel} (0 < duration <= 3600, "
                           "1..128 streams)")
    dst_ip = _ip(testbed, dst)
    _ip(testbed, src)
    server = start_server(fabric_of(testbed).popen, dst, ["iperf3", "-s", "-1", "-p", str(port)])
    try:
        argv = ["iperf3", "-c", dst_ip, "-p", str(port), "-t", f"{duration:g}", "-P", str(parallel), "-J"]
        if omit > 0:
            argv += ["-O", f"{omit:g}"]
        rc, output = fabric_of(testbed).exec(src, argv, timeout=duration + 30)
        data = _parse(output)
        if rc != 0 or data is None or "error" in data:
            detail = (data or {}).get("error") if data else output.strip()[-200:]
            raise TrafficError(f"iperf {src} -> {dst}: iperf3 failed ({detail})")
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
    end = data["end"]
    received, sent = end["sum_received"], end["sum_sent"]
    return {
        "src": src, "dst": dst, "parallel": parallel,
        "goodput_mbps": received["bits_per_second"] / 1e6, "sent_mbps": sent["bits_per_second"] / 1e6,
        "bytes_received": received["bytes"], "seconds": received["seconds"],
        "retransmits": sent.get("retransmits", 0),
    }


def _parse(output: str) -> dict[str, Any] | None:
    start = output.find("{")
    if start < 0:
        return None
    try:
        return json.loads(output[start:])
    except json.JSONDecodeError:
        return None
