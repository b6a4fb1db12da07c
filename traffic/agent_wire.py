"""The traffic agent's wire format and socket constants, shared by its client, its server and the
capture check (see `traffic.agent` for the protocol)."""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("!QQ")  # flow id, payload size: opens each message on a connection
ACK = struct.Struct("!QQ")  # flow id, payload bytes received: the server's answer to one message
# 256 KiB writes: on the shared userspace datapath 4 MiB writes measured slower in interleaved A/B
# rounds (bigger bursts into a lossy path); on loopback the CPU per GB is the same.
CHUNK = 256 * 1024
RECV_BUFFER = 1 << 20  # one scratch buffer per server process: payload is counted, never kept
WARM_UP_ID = (1 << 64) - 1
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35  # Linux asm-generic/socket.h; Python does not export them
TIMESPEC = struct.Struct("@qq")
CMSG_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


def receive_stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time (CLOCK_REALTIME, ns) of the last segment a recvmsg() returned."""
    stamp = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack(payload[: TIMESPEC.size])
            stamp = seconds * 1_000_000_000 + nanoseconds
    return stamp
