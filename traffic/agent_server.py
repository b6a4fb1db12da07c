"""The traffic agent's flow server: counts each message's bytes and acknowledges it once complete.

Everything runs as reader callbacks on the agent's one event loop (`traffic.agent_loop`), with no
task, coroutine or buffer per connection or per flow: a readable connection gets one recv_into() of
up to RECV_BUFFER bytes into the process's single scratch buffer, which a small state machine walks
(header, then payload). At
thousands of flows per second a coroutine per connection and a fresh 1 MiB receive buffer per flow
(zeroed by the allocator) cost more than the flows themselves.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from traffic.agent_wire import ACK, HEADER, RECV_BUFFER, WARM_UP_ID

Emit = Callable[[dict[str, Any] | str], None]


class _Connection:
    """One accepted connection: the message in progress and its longest silence between reads."""

    __slots__ = ("server", "sock", "fd", "header", "flow_id", "size", "received", "last", "gap", "gap_end",
                 "out")

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server, self.sock, self.fd = server, sock, sock.fileno()
        self.header = bytearray()
        self.flow_id, self.size, self.received = -1, -1, 0  # size -1: waiting for a header
        # The longest silence between two reads of one message, and when it ended: a scenario's link
        # cut shows up as this gap, and its end is the first data to arrive over the new path.
        self.last = self.gap = self.gap_end = 0.0
        self.out = b""  # acknowledgements the kernel did not take yet (a full send buffer: rare)

    def readable(self) -> None:
        try:
            n = self.sock.recv_into(self.server.scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            self.close()
            return
        now = time.monotonic()
        if self.size >= 0 and now - self.last > self.gap:
            self.gap, self.gap_end = now - self.last, now
        self.last = now
        view, pos = self.server.view, 0
        while pos < n:
            if self.size < 0:
                take = min(HEADER.size - len(self.header), n - pos)
                self.header += view[pos:pos + take]
                pos += take
                if len(self.header) < HEADER.size:
                    break
                self.flow_id, self.size = HEADER.unpack(self.header)
                self.header.clear()
                self.received, self.gap, self.gap_end, self.last = 0, 0.0, 0.0, now
            else:
                take = min(self.size - self.received, n - pos)
                self.received += take
                pos += take
            if self.size >= 0 and self.received >= self.size:
                self._acknowledge()

    def _acknowledge(self) -> None:
        self.out += ACK.pack(self.flow_id, self.received)
        self._send()
        self._report(True)
        self.flow_id, self.size, self.received = -1, -1, 0

    def _send(self) -> None:
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        self.out = self.out[n:]
        loop = self.server.loop
        if self.out:
            loop.add_writer(self.fd, self._send)
        else:
            loop.remove_writer(self.fd)

    def _report(self, complete: bool) -> None:
        if 0 <= self.flow_id != WARM_UP_ID:  # formatted by hand: json.dumps costs more, once per flow
            self.server.emit(f'{{"ev":"recv","id":{self.flow_id},"bytes":{self.received},'
                             f'"complete":{"true" if complete else "false"},"gap_us":{self.gap * 1e6:.1f},'
                             f'"gap_end":{self.gap_end!r}}}')

    def close(self) -> None:
        """Also at `stop`: a message still in progress is reported with the bytes that arrived."""
        if self.size >= 0:
            self._report(False)
            self.flow_id, self.size = -1, -1
        loop = self.server.loop
        loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        self.sock.close()
        self.server.connections.discard(self)


class Server:
    """The listening socket and its connections, all driven by reader callbacks."""

    def __init__(self, port: int, loop: Any, emit: Emit) -> None:
        self.loop, self.emit = loop, emit
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.scratch = bytearray(RECV_BUFFER)
        self.view = memoryview(self.scratch)
        self.connections: set[_Connection] = set()
        loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, aborted handshake: the client sees its own error
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self.connections.add(conn)
            self.loop.add_reader(conn.fd, conn.readable)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for conn in list(self.connections):
            conn.close()
