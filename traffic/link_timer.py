"""The scenario's link cuts at their planned times, from a process of their own.

    python -m traffic.link_timer    (started by traffic.scenario_run; JSON lines on stdin/stdout)

Why a process: a scenario runs inside the traffic engine's process, whose Python threads (agent
readers, the counter sampler, the UI recorder) share one GIL. On a loaded host the thread holding
the GIL is preempted by other processes, and a step due meanwhile waits for it: we measured
|applied - planned| of 994 ms for link flaps during a web-search run at load 9 on 2 cores, 17.7 ms
with the whole process real-time. This process has no other thread, runs SCHED_FIFO where allowed
(reset on fork), opens one socket per network namespace before t0 (no setns at event time), and
applies each step with two ioctls per link end (SIOCGIFFLAGS, SIOCSIFFLAGS): what `ip link set`
does, without a process per step.

Protocol (one JSON object per line):
  in : {"steps": [{"i": 3, "t": 4.0, "up": false, "devices": [["pc1s0p1", null], ["pc1s2p1", "pc1n"]]}]}
  out: {"ready": true, "realtime": true}          sockets open, waiting for t0
  in : {"t0": 12345.678}                          CLOCK_MONOTONIC of the timeline's zero
  out: {"i": 3, "applied": 12349.678, "done": 12349.679, "error": null}   per step, in time order
  out: {"end": true}                              every step applied; the process exits
Closing stdin (or SIGTERM) before the end stops it; steps not applied are reported by nobody, and
the runner records them as skipped.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

from topology.effects.ip import set_iface_up
from topology.effects.netns import socket_in
from topology.effects.proc import realtime

SPIN_S = 0.002
RT_PRIORITY = 10


def die_with_parent() -> None:
    """A runner killed with -9 must not leave this process cutting links of a run being cleaned."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl
        raise SystemExit(0)


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    die_with_parent()
    plan = json.loads(sys.stdin.readline() or "{}")
    steps = sorted(plan.get("steps", []), key=lambda s: (s["t"], s["i"]))
    sockets: dict[str | None, socket.socket] = {}
    for step in steps:
        for _, ns in step["devices"]:
            if ns not in sockets:
                sockets[ns] = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) if ns else \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _say({"ready": True, "realtime": realtime(os.SCHED_FIFO, RT_PRIORITY)})
    line = sys.stdin.readline()
    if not line:
        return 0
    t0 = float(json.loads(line)["t0"])
    for step in steps:
        due = t0 + float(step["t"])
        if (left := due - time.monotonic() - SPIN_S) > 0:
            time.sleep(left)
        while time.monotonic() < due:
            pass  # SCHED_FIFO: a yield would not give the core to ordinary tasks anyway; 2 ms at most
        applied = time.monotonic()
        error = None
        for name, ns in step["devices"]:
            try:
                set_iface_up(sockets[ns], name, bool(step["up"]))
            except OSError as exc:
                error = f"{name}{' in ' + ns if ns else ''}: {exc.strerror}"
                break
        _say({"i": step["i"], "applied": applied, "done": time.monotonic(), "error": error})
    _say({"end": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
