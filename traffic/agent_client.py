"""The traffic agent's flow client: starts each flow at its scheduled time on a pooled connection.

Scheduling: the open-loop flows are sorted once; one timer at a time (loop.call_at) wakes for the
next due start and starts every flow whose time has come, so there is one timer per wake-up, not
one sleeping coroutine per flow. Closed-loop successors get a timer when their predecessor ends.

Connections: a pool per destination (address, port), a few opened before t0 (PREOPEN). A flow never
waits for another: it takes an idle connection (its first packet is its header), else it opens a
connection of its own at once (its first packet is the SYN, and its FCT includes the handshake:
`handshake` in its record). Either way it holds the connection alone until the server's
acknowledgement arrives, so a slow flow delays neither another flow's start nor its bytes (no
head-of-line blocking), and the arrival schedule is kept even when the path stalls: the stall shows
in FCT, where it happened, not as bunched starts. A pool whose last idle connection was taken opens
one spare in the background (SPARE), so at steady rates flows find a warm connection; connections
persist, so a pool grows only to the most flows it ever carried at once.

Everything is a plain callback (add_writer / add_reader / call_at) on the agent's loop
(`traffic.agent_loop.Loop`, or any loop with asyncio's method names), not a coroutine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from traffic.agent_wire import ACK, CHUNK, CMSG_SPACE, HEADER, SO_TIMESTAMPNS, receive_stamp_ns

Emit = Callable[[dict[str, Any] | str], None]
PREOPEN = 2  # connections per destination opened before t0
PREOPEN_BUDGET = 512  # at most this many in all, to the destinations with the most flows
SPARE = 1  # idle-or-connecting spares a pool keeps once its flows start using it


class _Flow:
    """A started flow: when it was due, when its first byte went out, and how far it got."""

    __slots__ = ("spec", "id", "size", "scheduled", "start", "start_ns", "lateness", "offset", "header",
                 "conn", "handshake")

    def __init__(self, spec: dict[str, Any], scheduled: float) -> None:
        self.spec, self.id, self.size = spec, int(spec["id"]), int(spec["size"])
        self.scheduled = scheduled
        self.start: float | None = None
        self.start_ns = 0
        self.lateness = 0.0
        self.offset = 0  # bytes of header + payload handed to the kernel
        self.header = HEADER.pack(self.id, self.size)
        self.conn: _Conn | None = None
        self.handshake = False  # it opened its own connection: FCT from the SYN

    @property
    def sent(self) -> int:
        return max(0, self.offset - HEADER.size)


class _Pool:
    __slots__ = ("key", "idle", "spares")

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.idle: list[_Conn] = []
        self.spares = 0  # connections opening with no flow of their own


class _Conn:
    """One persistent connection; carries at most one flow at a time."""

    __slots__ = ("client", "pool", "sock", "fd", "flow", "inbox", "connected", "writing", "stale")
    # flow: the flow it carries, or (while connecting) the flow that opened it; None: idle or a spare

    def __init__(self, client: Client, pool: _Pool) -> None:
        self.client, self.pool = client, pool
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.fd = self.sock.fileno()
        self.flow: _Flow | None = None
        self.inbox = b""
        self.connected = False
        self.writing = False
        self.stale = 0


class Client:
    """Runs one agent's flows: `start(loop, on_done)`; on_done runs once every flow is settled or the
    deadline passed (`stop()` settles them at once)."""

    def __init__(self, flows: list[dict[str, Any]], t0: float, deadline: float, emit: Emit,
                 last_start: float | None = None) -> None:
        # No flow starts at or after last_start (t0 + duration: closed-loop chains stop there);
        # the ones still running at the deadline are reported unfinished.
        self.t0, self.deadline, self.emit = t0, deadline, emit
        self.last_start = min(deadline, last_start if last_start is not None else deadline)
        self.open_loop = sorted((f for f in flows if f.get("after", -1) < 0), key=lambda f: f["start"])
        self.successors: dict[int, list[dict[str, Any]]] = {}
        for f in flows:
            if f.get("after", -1) >= 0:
                self.successors.setdefault(int(f["after"]), []).append(f)
        self.flows = flows
        self.total = len(flows)
        self.settled: set[int] = set()
        self.running: dict[int, _Flow] = {}
        self.pools: dict[tuple[str, int], _Pool] = {}
        self.conns: set[_Conn] = set()
        self.lateness: list[float] = []
        self.payload = memoryview(bytes(CHUNK))
        self.next = 0  # index of the next open-loop flow to start
        self.timers = 0  # successor start timers pending
        self.opened = 0  # connections opened (a pool's size is how many flows it ever held at once)
        self.loop: Any = None
        self.done = False
        self.on_done: Callable[[], None] = lambda: None
        self.deadline_timer: Any = None

    # --- schedule ------------------------------------------------------------------------------
    def start(self, loop: Any, on_done: Callable[[], None]) -> None:
        self.loop, self.on_done = loop, on_done
        self._preopen()
        loop.call_at(self.t0 + self.open_loop[0]["start"] if self.open_loop else self.t0, self._tick)
        self.deadline_timer = loop.call_at(self.deadline, self.stop)

    def _tick(self) -> None:
        """Start every open-loop flow that is due, then sleep until the next one."""
        loop = self.loop
        if self.done:
            return
        flows, t0 = self.open_loop, self.t0
        now = loop.time()
        while self.next < len(flows):
            when = t0 + flows[self.next]["start"]
            if when >= self.last_start:
                for f in flows[self.next:]:
                    self._report_spec(f, "not_started")
                self.next = len(flows)
                break
            if when > now:
                loop.call_at(when, self._tick)
                return
            self.next += 1
            self._start(flows[self.next - 1], when)
        self._maybe_done()

    def _start(self, spec: dict[str, Any], scheduled: float) -> None:
        flow = _Flow(spec, scheduled)
        self.running[flow.id] = flow
        key = (spec["dst"], int(spec["port"]))
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = _Pool(key)
        if pool.idle:
            self._begin(flow, pool.idle.pop())
        else:
            self._open(pool, flow)
        if not pool.idle and pool.spares < SPARE:
            self._open(pool, None)

    def _after(self, flow_id: int) -> None:
        """Closed loop: each successor starts its think time after its predecessor settled."""
        loop = self.loop
        for nxt in self.successors.pop(flow_id, []):
            when = loop.time() + float(nxt["start"])
            if when < self.last_start:
                self.timers += 1
                loop.call_at(when, self._successor_due, nxt, when)
            else:
                self._report_spec(nxt, "not_started")  # its own successors are reported at the end

    def _successor_due(self, spec: dict[str, Any], when: float) -> None:
        self.timers -= 1
        if not self.done:
            self._start(spec, when)

    def _maybe_done(self) -> None:
        if self.next >= len(self.open_loop) and not self.running and not self.timers and not self.done:
            self.stop()

    # --- connections ---------------------------------------------------------------------------
    def _preopen(self) -> None:
        counts = Counter((f["dst"], int(f["port"])) for f in self.flows)
        budget = PREOPEN_BUDGET
        for key, n in counts.most_common():
            pool = self.pools[key] = _Pool(key)
            for _ in range(min(PREOPEN, n, budget)):
                self._open(pool, None)
                budget -= 1

    def _open(self, pool: _Pool, flow: _Flow | None) -> None:
        """A new connection, for `flow` (which starts now: its SYN is its first packet) or a spare."""
        if flow is not None:
            flow.handshake = True
            self._started(flow)
            flow.start_ns = time.time_ns()
        try:
            conn = _Conn(self, pool)
        except OSError as exc:  # out of descriptors: this flow fails, the others keep their pools
            if flow is not None:
                self._fail(flow, exc)
            return
        err = conn.sock.connect_ex(pool.key)
        if err not in (0, errno.EINPROGRESS):
            conn.sock.close()
            if flow is not None:
                self._fail(flow, _os_error(err))
            return
        self.opened += 1
        self.conns.add(conn)
        conn.flow = flow
        if flow is None:
            pool.spares += 1
        else:
            flow.conn = conn
        self.loop.add_writer(conn.fd, self._connected, conn)

    def _connected(self, conn: _Conn) -> None:
        loop = self.loop
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err:
            try:
                conn.sock.getpeername()
            except OSError:  # still connecting: a stale event for a reused descriptor number
                conn.stale += 1
                if conn.stale < 3:
                    return
                err = errno.ENOTCONN  # writable yet never connected: failed, whatever the kernel says
        loop.remove_writer(conn.fd)
        flow = conn.flow
        if flow is None:
            conn.pool.spares -= 1
        if err:
            conn.flow = None
            self._drop(conn)
            if flow is not None:
                self._fail(flow, _os_error(err))
            return
        conn.connected = True
        loop.add_reader(conn.fd, self._readable, conn)
        if flow is not None:
            self._send(conn)
        else:
            conn.pool.idle.append(conn)

    def _drop(self, conn: _Conn) -> None:
        loop = self.loop
        with contextlib.suppress(ValueError):
            conn.pool.idle.remove(conn)
        if conn.connected:
            loop.remove_reader(conn.fd)
        loop.remove_writer(conn.fd)
        conn.writing = False
        conn.sock.close()
        self.conns.discard(conn)

    # --- one flow on one connection --------------------------------------------------------------
    def _begin(self, flow: _Flow, conn: _Conn) -> None:
        """On an idle connection FCT starts here: the first byte of the flow's header goes to the kernel."""
        flow.conn, conn.flow = conn, flow
        self._started(flow)
        flow.start_ns = time.time_ns()  # the kernel stamps packets with CLOCK_REALTIME
        self._send(conn)

    def _started(self, flow: _Flow) -> None:
        flow.start = time.monotonic()
        flow.lateness = flow.start - flow.scheduled
        self.lateness.append(flow.lateness)

    def _send(self, conn: _Conn) -> None:
        flow = conn.flow
        if flow is None:  # never spin on a writable socket with nothing to write (we run real-time)
            if conn.writing:
                conn.writing = False
                self.loop.remove_writer(conn.fd)
            return
        total = HEADER.size + flow.size
        try:
            if flow.offset < HEADER.size:
                n = conn.sock.sendmsg([flow.header[flow.offset:], self.payload[:min(CHUNK, flow.size)]])
            else:
                n = conn.sock.send(self.payload[:min(CHUNK, total - flow.offset)])
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._lost(conn, exc)
            return
        flow.offset += n
        # The rest when the socket is writable again: a bulk flow yields to the loop between chunks.
        if flow.offset < total and not conn.writing:
            conn.writing = True
            self.loop.add_writer(conn.fd, self._send, conn)
        elif flow.offset >= total and conn.writing:
            conn.writing = False
            self.loop.remove_writer(conn.fd)

    def _readable(self, conn: _Conn) -> None:
        try:
            data, ancillary, _flags, _addr = conn.sock.recvmsg(4096, CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, exc)
            return
        if not data:
            self._lost(conn, ConnectionError("server closed before acknowledging"))
            return
        conn.inbox += data
        while len(conn.inbox) >= ACK.size:
            flow_id, received = ACK.unpack_from(conn.inbox)
            conn.inbox = conn.inbox[ACK.size:]
            flow = conn.flow
            if flow is None or flow_id != flow.id:
                self._lost(conn, ConnectionError(f"acknowledgement for flow {flow_id} out of turn"))
                return
            stamp = receive_stamp_ns(ancillary) or time.time_ns()
            conn.flow, flow.conn = None, None
            self.running.pop(flow.id, None)
            if flow.id not in self.settled:  # the common case, formatted by hand: json.dumps costs more
                self.settled.add(flow.id)
                self.emit(f'{{"ev":"flow","id":{flow.id},"status":"done","fct_us":{(stamp - flow.start_ns) / 1e3:.1f},'
                          f'"lateness_us":{flow.lateness * 1e6:.1f},"start":{flow.start!r},"sent":{flow.sent},'
                          f'"handshake":{"true" if flow.handshake else "false"}}}')
            conn.pool.idle.append(conn)
            self._after(flow.id)
        self._maybe_done()

    def _lost(self, conn: _Conn, exc: BaseException) -> None:
        """The connection failed: its flow (if any) fails with it, the pool replaces it on demand."""
        flow = conn.flow
        self._drop(conn)
        if flow is not None:
            conn.flow = None
            self._fail(flow, exc)

    def _fail(self, flow: _Flow, exc: BaseException) -> None:
        self.running.pop(flow.id, None)
        if flow.start is None:  # it never got a connection: it started (late) when the attempt failed
            self._started(flow)
        self._report(flow, "error", error=f"{type(exc).__name__}: {exc}")
        self._after(flow.id)
        self._maybe_done()

    # --- reports -------------------------------------------------------------------------------
    def _report(self, flow: _Flow, status: str, **extra: Any) -> None:
        if flow.id in self.settled:
            return
        self.settled.add(flow.id)
        record: dict[str, Any] = {"ev": "flow", "id": flow.id, "status": status, "fct_us": None,
                                  "lateness_us": None if flow.start is None else round(flow.lateness * 1e6, 1),
                                  "start": flow.start, "sent": flow.sent, "handshake": flow.handshake}
        record.update(extra)
        self.emit(record)

    def _report_spec(self, spec: dict[str, Any], status: str) -> None:
        if int(spec["id"]) in self.settled:
            return
        self.settled.add(int(spec["id"]))
        self.emit({"ev": "flow", "id": int(spec["id"]), "status": status, "lateness_us": None, "start": None,
                   "fct_us": None, "sent": 0})

    def stop(self) -> None:
        """At the deadline (or once all is settled, or at `stop`): running flows are unfinished, the
        rest never started; every connection closes."""
        if self.done:
            return
        self.done = True
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        for flow in list(self.running.values()):
            self._report(flow, "unfinished")
        self.running.clear()
        for conn in list(self.conns):
            self._drop(conn)
        for spec in self.open_loop[self.next:]:
            self._report_spec(spec, "not_started")
        self.next = len(self.open_loop)
        for chain in self.successors.values():
            for spec in chain:
                self._report_spec(spec, "not_started")
        self.successors.clear()
        self.on_done()

    def lateness_p99_us(self) -> float | None:
        if not self.lateness:
            return None
        values = sorted(self.lateness)
        return round(values[min(len(values) - 1, int(0.99 * len(values)))] * 1e6, 1)


def _os_error(err: int) -> OSError:
    """The OSError subclass Python raises for errno (ConnectionRefusedError for ECONNREFUSED)."""
    return OSError(err, os.strerror(err))
