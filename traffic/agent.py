"""The traffic agent: one process per participating container, a TCP flow server and a flow client.

    python -m traffic.agent --port PORT [--realtime]

The engine writes one JSON line to stdin: `{"t0": MONOTONIC, "deadline": MONOTONIC, "last_start":
MONOTONIC, "flows": [...]}`
(each flow `{"id", "dst", "port", "size", "start", "after"}`), and later `stop` (or closes stdin).
CLOCK_MONOTONIC is shared by every network namespace of a host, so t0 means the same instant to
every agent. Reports are JSON lines on stdout:

- `{"ev": "ready", "port": P, "pid", "realtime"}` once the server listens (realtime: `--realtime`
  was given and the agent runs SCHED_RR, see `_realtime`);
- `{"ev": "flow", "id", "status": "done"|"unfinished"|"error"|"not_started", "lateness_us", "start",
  "fct_us", "sent", "handshake"}` per client flow (start is monotonic seconds; fct_us is null unless
  done; handshake: the flow opened its own connection, so its FCT runs from the SYN);
- `{"ev": "client_done", "late_p99_us", "flows", "connections"}` when every client flow is settled
  (connections: how many the pools opened);
- `{"ev": "recv", "id", "bytes", "complete", "gap_us", "gap_end"}` per flow the server received (once
  complete, or at `stop`); `gap_us` is the longest silence between two reads of that flow,
  `gap_end` (monotonic) its end;
- `{"ev": "bye"}` last.

Wire protocol: persistent TCP connections, pooled per destination, as the published traffic
generators use (no handshake per flow). A connection carries one flow at a time: the client sends a
16-byte header (flow id, payload size; network order) then `size` bytes; the server, once it holds
all of them, answers with a 16-byte acknowledgement (flow id, bytes received). Only then may the
client start another flow on that connection. A flow that finds no idle connection opens one of its
own at once (`traffic.agent_client`), so no flow waits for another (no head-of-line blocking) and
flows start on schedule even when the path stalls.

Flow completion time runs from the flow's first packet to the arrival of its acknowledgement (its
kernel receive timestamp), i.e. until the receiver has acknowledged the last byte at application
level. The first packet is the header on an idle pooled connection (the client hands its first byte
to the kernel), or the SYN of the connection the flow opened (`"handshake": true` in its record; FCT
then includes the handshake, as one connection per flow always did). FCT is exact on a shared
connection because the connection is idle when the flow starts: the previous flow's acknowledgement
has arrived, so none of its bytes are queued ahead (its TCP-level ACKs travelled with that
acknowledgement), and each acknowledgement names its flow. A connection carries TCP state (its
congestion window) from one flow to the next, as in those generators; the kernel restarts the window
after an idle period (tcp_slow_start_after_idle). Scheduling lateness is the time between a flow's
scheduled start and its first packet. One epoll loop (`traffic.agent_loop`) runs everything with
plain reader/writer/timer callbacks: no thread, process, task or buffer per flow.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import select
import stat
import sys
import time
from typing import Any

from traffic.agent_client import Client
from traffic.agent_loop import Loop
from traffic.agent_server import Server
from traffic.agent_wire import ACK, CHUNK, HEADER, WARM_UP_ID

__all__ = ["ACK", "CHUNK", "HEADER", "WARM_UP_ID", "Agent", "Client", "Server", "main"]

_pending: list[str] = []
_unsent = b""
FLUSH_EVERY = 0.05  # seconds
PIPE_BYTES = 1 << 20  # stdout pipe capacity asked for: seconds of records at thousands of flows/s
# SCHED_RR 1-99: above every ordinary task, below the scenario's link timer (10) and the kernel's
# own real-time threads (50+); round-robin so agents on one core take turns under a bulk flow.
RT_PRIORITY = 5


def emit(record: dict[str, Any] | str, now: bool = False) -> None:
    """Queue a report line (a record, or one already formatted as JSON); per-flow lines go out in
    batches (one write per FLUSH_EVERY instead of one per flow, which matters at thousands of flows
    per second), control lines at once."""
    _pending.append(record if isinstance(record, str) else json.dumps(record, separators=(",", ":")))
    if now:
        flush()


def flush(block: bool = False) -> None:
    """Write the queued lines to stdout. Once the loop runs stdout is non-blocking: an engine whose
    reader threads wait for a loaded host's CPU fills the pipe, and a blocking write would stall
    every flow of this agent; what the pipe does not take goes with the next flush (`block`: the
    last one, which waits)."""
    global _unsent
    if _pending:
        _unsent += ("\n".join(_pending) + "\n").encode()
        _pending.clear()
    fd = sys.stdout.fileno()
    while _unsent:
        try:
            n = os.write(fd, _unsent)
        except BlockingIOError:
            if not block:
                return
            select.select([], [fd], [], 1.0)
            continue
        _unsent = _unsent[n:]


def _stdout_nonblocking() -> None:
    fd = sys.stdout.fileno()
    if stat.S_ISFIFO(os.fstat(fd).st_mode):  # never a terminal: the shell would inherit the flag
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(fd, False)


def _realtime() -> bool:
    """Run the agent at real-time priority (`--realtime`; root; children reset to ordinary). On a
    shared host an ordinary agent waits behind every other runnable task, and its flows start that
    much late: at 5,000 flows/s on loopback at load 22 on 2 cores, ordinary agents fell seconds
    behind and left most flows undone, real-time ones kept p99 lateness at 1.1 ms; on single:4 at
    2,000 flows/s at load 7-14, p99 lateness was 6-69 ms ordinary and 1.1-1.7 ms real-time. Not the
    default: real-time agents preempt ovs-vswitchd (an ordinary task) whenever a packet wakes them,
    and what that does to the userspace datapath could not be told apart on the shared host (FCT
    p50 ranged from 4 ms to 1.5 s in either mode, run to run); FCT is what a run measures, so the
    datapath keeps its share until a quiet-host measurement says otherwise."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(RT_PRIORITY))
    except (OSError, AttributeError):
        return False
    return True


class Agent:
    """The server, the client once its flows arrive, and the control pipe (stdin), on one loop."""

    def __init__(self, port: int, realtime: bool = False) -> None:
        self.realtime = realtime
        self.loop = Loop()
        self.server = Server(port, self.loop, emit)
        self.client: Client | None = None
        self.stopping = False
        self.inbox = b""

    def warm_up(self) -> None:
        """One flow to our own server before `ready`, through the same client: the first connect/
        send/receive of a fresh process runs cold code paths (about a millisecond) that would
        otherwise land in the first flow's lateness or FCT."""
        now = time.monotonic()
        flow = {"id": WARM_UP_ID, "dst": "127.0.0.1", "port": self.server.port, "size": 1, "start": 0.0,
                "after": -1}
        warm = Client([flow], now, now + 5.0, lambda _record: None)
        warm.start(self.loop, lambda: None)
        self.loop.run(lambda: warm.done)

    def run(self) -> None:
        realtime = _realtime() if self.realtime else False
        self.warm_up()
        emit({"ev": "ready", "port": self.server.port, "pid": os.getpid(), "realtime": realtime}, now=True)
        _stdout_nonblocking()
        os.set_blocking(sys.stdin.fileno(), False)
        self.loop.add_reader(sys.stdin.fileno(), self._control)
        self._flush_timer()
        self.loop.run(lambda: self.stopping)
        if self.client is not None:
            self.client.stop()
        self.server.stop()
        emit({"ev": "bye"})
        flush(block=True)

    def _flush_timer(self) -> None:
        flush()
        self.loop.call_later(FLUSH_EVERY, self._flush_timer)

    def _control(self) -> None:
        try:
            data = os.read(sys.stdin.fileno(), 1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._stop()
            return
        self.inbox += data
        while b"\n" in self.inbox:
            line, self.inbox = self.inbox.split(b"\n", 1)
            self._command(line.strip())

    def _command(self, line: bytes) -> None:
        if line == b"stop":
            self._stop()
        elif line and self.client is None and not self.stopping:
            config = json.loads(line)
            self.client = Client(config.get("flows", []), float(config["t0"]), float(config["deadline"]), emit,
                                 config.get("last_start"))
            self.client.start(self.loop, self._client_done)

    def _client_done(self) -> None:
        assert self.client is not None
        emit({"ev": "client_done", "late_p99_us": self.client.lateness_p99_us(), "flows": self.client.total,
              "connections": self.client.opened}, now=True)

    def _stop(self) -> None:
        self.stopping = True
        self.loop.remove_reader(sys.stdin.fileno())


def _more_descriptors() -> None:
    """Pools hold connections open for the whole run: allow as many descriptors as the host lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traffic.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5201, help="TCP port of this agent's flow server")
    parser.add_argument("--realtime", action="store_true",
                        help="run SCHED_RR where allowed (flow starts on time on a loaded host; see _realtime)")
    args = parser.parse_args(argv)
    _more_descriptors()
    Agent(args.port, args.realtime).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
