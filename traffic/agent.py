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
- `{"ev": "recv", "id", "bytes", "complete", "gap_us", "gap_end"}` per server connection (at its end,
  or at `stop`); `gap_us` is the longest silence between two reads, `gap_end` (monotonic) its end;
- `{"ev": "bye"}` last.

Wire protocol per flow (one TCP connection): the client sends a 16-byte header (flow id, payload
size; network order) then `size` bytes; the server, once it holds all of them, answers with the
8-byte count. Flow completion time runs from the moment the client issues connect() (the SYN is the
flow's first packet) to the arrival of that answer, i.e. until the receiver has acknowledged the
last byte at application level. Many flows run concurrently on one asyncio loop (no thread per
flow); a flow's scheduling lateness is the time between its scheduled start and its connect().
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct("!QQ")
ACK = struct.Struct("!Q")
# 256 KiB writes: on the shared userspace datapath 4 MiB writes measured slower in interleaved A/B
# rounds (bigger bursts into a lossy path); on loopback the CPU per GB is the same.
CHUNK = 256 * 1024
RECV_BUFFER = 1 << 20
WARM_UP_ID = (1 << 64) - 1
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35  # Linux asm-generic/socket.h; Python does not export them
TIMESPEC = struct.Struct("@qq")
CMSG_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


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


class Server:
    """Accepts flows, counts their bytes and acknowledges each once complete."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            conn.setblocking(False)
            task = loop.create_task(self.handle(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def handle(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        flow_id, size, received = -1, -1, 0
        view = memoryview(bytearray(RECV_BUFFER))
        # The longest silence between two reads, and when it ended: a scenario's link cut shows up
        # as this gap, and its end is the first data to arrive over the new path.
        last = gap = gap_end = 0.0
        try:
            header = b""
            while len(header) < HEADER.size:
                chunk = await loop.sock_recv(conn, HEADER.size - len(header))
                if not chunk:
                    return
                header += chunk
            flow_id, size = HEADER.unpack(header)
            last = time.monotonic()
            while received < size:
                n = await loop.sock_recv_into(conn, view[: min(RECV_BUFFER, size - received)])
                if n == 0:
                    break
                received += n
                now = time.monotonic()
                if now - last > gap:
                    gap, gap_end = now - last, now
                last = now
            if received >= size:
                await loop.sock_sendall(conn, ACK.pack(received))
        except OSError:
            pass
        finally:
            # Also runs when `stop` cancels this task: a partial flow is still reported.
            conn.close()
            if 0 <= flow_id != WARM_UP_ID:
                emit({"ev": "recv", "id": flow_id, "bytes": received, "complete": received >= size,
                      "gap_us": round(gap * 1e6, 1), "gap_end": gap_end})


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def recv_ack(sock: socket.socket) -> int:
    """Read the receiver's 8-byte acknowledgement; returns when it reached this host, in ns.

    The time comes from the kernel's receive timestamp (SO_TIMESTAMPNS), not from when this process
    got to run: on a busy host the wake-up can lag the packet by milliseconds, and a packet capture
    (which stamps at the same point) would disagree with us by that much."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    got = b""
    stamp = 0
    while len(got) < ACK.size:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(ACK.size - len(got), CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            ready = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            continue
        if not data:
            raise ConnectionError("server closed before acknowledging")
        got += data
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= TIMESPEC.size:
                seconds, nanoseconds = TIMESPEC.unpack(payload[: TIMESPEC.size])
                stamp = seconds * 1_000_000_000 + nanoseconds
    return stamp or time.time_ns()


class Client:
    """Starts each flow at its scheduled time; closed-loop successors start after their predecessor."""

    def __init__(self, flows: list[dict[str, Any]], t0: float, deadline: float,
                 last_start: float | None = None) -> None:
        # No flow starts at or after last_start (t0 + duration: closed-loop chains stop there);
        # the ones still running at the deadline are reported unfinished.
        self.t0, self.deadline = t0, deadline
        self.last_start = min(deadline, last_start if last_start is not None else deadline)
        self.open_loop = sorted((f for f in flows if f.get("after", -1) < 0), key=lambda f: f["start"])
        self.successors: dict[int, list[dict[str, Any]]] = {}
        for f in flows:
            if f.get("after", -1) >= 0:
                self.successors.setdefault(int(f["after"]), []).append(f)
        self.total = len(flows)
        self.settled: set[int] = set()
        self.running: dict[int, dict[str, Any]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.lateness: list[float] = []
        self.payload = memoryview(bytes(CHUNK))

    def _spawn(self, flow: dict[str, Any], scheduled: float) -> None:
        task = asyncio.get_running_loop().create_task(self.run_flow(flow, scheduled))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for flow in self.open_loop:
            when = self.t0 + flow["start"]
            if when >= self.last_start:
                break
            delay = when - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._spawn(flow, when)
        remaining = self.deadline - loop.time()
        while self.tasks and remaining > 0:
            await asyncio.wait(set(self.tasks), timeout=remaining)
            remaining = self.deadline - loop.time()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for flow_id, state in list(self.running.items()):
            self._report(state["flow"], "unfinished", state)
            self.running.pop(flow_id, None)
        self._report_never_started()

    def _report_never_started(self) -> None:
        pending = [f for f in self.open_loop if f["id"] not in self.settled]
        stack = list(pending)
        for chain in self.successors.values():
            stack.extend(chain)
        for f in stack:
            if f["id"] not in self.settled:
                self._report(f, "not_started", None)

    def _report(self, flow: dict[str, Any], status: str, state: dict[str, Any] | None, **extra: Any) -> None:
        if flow["id"] in self.settled:
            return
        self.settled.add(flow["id"])
        record: dict[str, Any] = {"ev": "flow", "id": flow["id"], "status": status, "lateness_us": None,
                                  "start": None, "fct_us": None, "sent": 0}
        if state is not None:
            record.update(lateness_us=round(state["lateness"] * 1e6, 1), start=state["start"],
                          sent=state["sent"])
        record.update(extra)
        emit(record)

    async def run_flow(self, flow: dict[str, Any], scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        state = {"flow": flow, "sent": 0, "start": None, "lateness": 0.0}
        self.running[flow["id"]] = state
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            start = time.monotonic()
            start_ns = time.time_ns()  # the kernel stamps packets with CLOCK_REALTIME
            state["start"], state["lateness"] = start, start - scheduled
            self.lateness.append(start - scheduled)
            await loop.sock_connect(sock, (flow["dst"], int(flow["port"])))
            size = int(flow["size"])
            await loop.sock_sendall(sock, HEADER.pack(int(flow["id"]), size))
            while state["sent"] < size:
                n = min(CHUNK, size - state["sent"])
                await loop.sock_sendall(sock, self.payload[:n])
                state["sent"] += n
                # sock_sendall returns without yielding when the kernel takes the whole chunk; yield
                # so one fast bulk flow cannot starve the scheduler and the other flows.
                await asyncio.sleep(0)
            end_ns = await recv_ack(sock)
            self.running.pop(flow["id"], None)
            self._report(flow, "done", state, fct_us=round((end_ns - start_ns) / 1e3, 1))
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            self.running.pop(flow["id"], None)
            self._report(flow, "error", state, error=f"{type(exc).__name__}: {exc}")
        finally:
            sock.close()
        for nxt in self.successors.pop(int(flow["id"]), []):
            when = loop.time() + float(nxt["start"])
            if when < self.last_start:
                await asyncio.sleep(max(0.0, when - loop.time()))
                self._spawn(nxt, when)
            else:
                self._report(nxt, "not_started", None)  # its own successors are reported at the end

    def lateness_p99_us(self) -> float | None:
        if not self.lateness:
            return None
        values = sorted(self.lateness)
        return round(values[min(len(values) - 1, int(0.99 * len(values)))] * 1e6, 1)


async def warm_up(port: int) -> None:
    """One flow to our own server before `ready`: the first connect/send/receive of a fresh process
    runs cold code paths (about a millisecond) that would otherwise land in the first flow's FCT."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, HEADER.pack(WARM_UP_ID, 1) + b"\0")
        await loop.sock_recv(sock, ACK.size)
    finally:
        sock.close()


async def main_async(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = Server(port)
    serve_task = loop.create_task(server.serve())
    await warm_up(server.port)
    emit({"ev": "ready", "port": server.port, "pid": os.getpid()}, now=True)
    flush_task = loop.create_task(flusher())
    reader = asyncio.StreamReader(limit=1 << 30)  # the flow list arrives as one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    client_task = None
    if line.strip() and line.strip() != b"stop":
        config = json.loads(line)
        client = Client(config.get("flows", []), float(config["t0"]), float(config["deadline"]),
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
    serve_task.cancel()
    for task in list(server.tasks):
        task.cancel()
    await asyncio.gather(*server.tasks, return_exceptions=True)
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
