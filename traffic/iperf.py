"""iperf3 bulk flows between two containers: the reference for what a path can carry.

The server runs `iperf3 -s -1` (one test, then exit) in the destination container; the client runs
`iperf3 -c ... -J` in the source and its JSON is parsed. Goodput is the receiver's figure
(`end.sum_received`), the number comparable with the engine's bytes acknowledged by the receiver.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

from picloud.errors import TrafficError

if TYPE_CHECKING:
    from topology.backends.base import Run

IPERF_PORT = 5201


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
    server = testbed.fabric.popen(dst, ["iperf3", "-s", "-1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        argv = ["iperf3", "-c", dst_ip, "-p", str(port), "-t", f"{duration:g}", "-P", str(parallel), "-J"]
        if omit > 0:
            argv += ["-O", f"{omit:g}"]
        for _attempt in range(20):  # the server needs a moment to listen
            rc, output = testbed.fabric.exec(src, argv, timeout=duration + 30)
            data = _parse(output)
            if rc == 0 and data is not None and "error" not in data:
                break
            time.sleep(0.1)
        else:
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
