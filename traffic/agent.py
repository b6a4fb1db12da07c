"""The traffic agent: one process per participating container, a TCP flow server and a flow client.

    python -m traffic.agent --port PORT

The engine writes one JSON line to stdin: `{"t0": MONOTONIC, "deadline": MONOTONIC, "last_start":
MONOTONIC, "flows": [...]}`
(each flow `{"id", "dst", "port", "size", "start", "after"}`), and later `stop` (or closes stdin).
CLOCK_MONOTONIC is shared by every network namespace of a host, so t0 means the same instant to
every agent. Reports are JSON lines on stdout:

- `{"ev": "ready", "port": P}` once the server listens;
- `{"ev": "flow", "id", "status": "done"|"unfinished"|"error"|"not_started", "lateness_us", "start",
  "fct_us", "sent"}` per client flow (start is monotonic seconds; fct_us is null unless done);
- `{"ev": "client_done", "late_p99_us"}` when every client flow is settled;
- `{"ev": "recv", "id", "bytes", "complete", "gap_us", "gap_end"}` per flow the server received (once
  complete, or at `stop`); `gap_us` is the longest silence between two reads of that flow,
  `gap_end` (monotonic) its end;
- `{"ev": "bye"}` last.

Wire protocol: persistent TCP connections, pooled per destination, as the published traffic
generators use (no handshake per flow). A connection carries one flow at a time: the client sends a
16-byte header (flow id, payload size; network order) then `size` bytes; the server, once it holds
all of them, answers with a 16-byte acknowledgement (flow id, bytes received). Only then may the
client start another flow on that connection; a flow that finds no idle connection gets a new one
(`traffic.agent_client`), so one slow flow never holds up the next (no head-of-line blocking).

Flow completion time runs from the moment the client hands the header's first byte to the kernel
to the arrival of the acknowledgement (its kernel receive timestamp), i.e. until the receiver has
acknowledged the last byte at application level. FCT is exact on a shared connection because the
connection is idle when the flow starts: the previous flow's acknowledgement has arrived, so none of
its bytes are queued ahead (its TCP-level ACKs travelled with that acknowledgement), and each
acknowledgement names its flow. A connection carries TCP state (its congestion window) from one flow
to the next, as in those generators; the kernel restarts the window after an idle period
(tcp_slow_start_after_idle). Scheduling lateness is the time between a flow's scheduled start and its
first byte, including any wait for a connection. One asyncio loop runs everything, with plain
reader/writer callbacks (no thread, process, task or buffer per flow).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

from traffic.agent_client import Client
from traffic.agent_server import Server
from traffic.agent_wire import ACK, CHUNK, HEADER, WARM_UP_ID

__all__ = ["ACK", "CHUNK", "HEADER", "WARM_UP_ID", "Client", "Server", "main"]

_pending: list[str] = []
FLUSH_EVERY = 0.05  # seconds


def emit(record: dict[str, Any], now: bool = False) -> None:
    """Queue a report line; per-flow lines go out in batches (one write per FLUSH_EVERY instead of
    one per flow, which matters at thousands of flows per second), control lines at once."""
    _pending.append(json.dumps(record, separators=(",", ":")))
    if now:
        flush()


def flush() -> None:
    if _pending:
        sys.stdout.write("\n".join(_pending) + "\n")
        _pending.clear()
        sys.stdout.flush()


async def flusher() -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        flush()


async def warm_up(port: int) -> None:
    """One flow to our own server before `ready`, through the same client: the first connect/send/
    receive of a fresh process runs cold code paths (about a millisecond) that would otherwise land
    in the first flow's lateness or FCT."""
    now = time.monotonic()
    flow = {"id": WARM_UP_ID, "dst": "127.0.0.1", "port": port, "size": 1, "start": 0.0, "after": -1}
    await Client([flow], now, now + 5.0, lambda _record: None).run()


def _more_descriptors() -> None:
    """Pools hold connections open for the whole run: allow as many descriptors as the host lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


async def main_async(port: int) -> None:
    loop = asyncio.get_running_loop()
    _more_descriptors()
    server = Server(port, loop, emit)
    await warm_up(server.port)
    emit({"ev": "ready", "port": server.port, "pid": os.getpid()}, now=True)
    flush_task = loop.create_task(flusher())
    reader = asyncio.StreamReader(limit=1 << 30)  # the flow list arrives as one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    client_task = None
    if line.strip() and line.strip() != b"stop":
        config = json.loads(line)
        client = Client(config.get("flows", []), float(config["t0"]), float(config["deadline"]), emit,
                        config.get("last_start"))

        async def run_client() -> None:
            await client.run()
            done = {"ev": "client_done", "late_p99_us": client.lateness_p99_us(), "flows": client.total}
            emit(done, now=True)

        client_task = loop.create_task(run_client())
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                break
    if client_task is not None and not client_task.done():
        client_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client_task
    server.stop()
    flush_task.cancel()
    emit({"ev": "bye"}, now=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traffic.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5201, help="TCP port of this agent's flow server")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
