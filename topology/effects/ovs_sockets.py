"""ovs-vswitchd's AF_PACKET sockets: their drop counters, and buffers sized for the model.

With the userspace datapath (datapath_type=netdev), ovs-vswitchd moves every packet of a `system`
port through AF_PACKET sockets (OVS 3.1 lib/netdev-linux.c):
- one receive socket per port, opened when the port is added, with the kernel's default buffer
  (net.core.rmem_default, 208 KiB). A container's TCP can put a whole window into its veth at
  once; with userspace TSO those are 64 KB aggregates, so the buffer holds three of them. When the
  single main thread, which serves every bridge of every run on the host, comes back to the port
  later than that, the kernel drops the packet (the socket's `sk_drops`). OVS counts it nowhere:
  its port statistics are the veth's, which did receive it.
- ONE send socket for every port of every bridge (`af_packet_sock()`, non-blocking, 208 KiB
  send buffer), opened on the daemon's first send: a fabric built on a fresh daemon first makes it
  send one inert frame (`ovs.open_send_socket`), or there is no socket yet to size. A packet
  waiting in a port's qdisc (a shaped link's TBF queue) is still charged to that socket, so the
  queues of all shaped links on the host share 208 KiB. When it is full,
  `sendmmsg` fails with EAGAIN and OVS frees the rest of the batch, again uncounted.

Both are losses the model does not have (a switch port of the model has no ingress buffer to
overflow, and a link's queue is its `queue`/tcplan limit, not a host-wide socket budget), and TCP
retransmits them. Measured here with the defaults: linear:2, s1-s2 shaped to 1 Gbit/s, one iperf3
flow: 20,335 retransmits, 0 qdisc drops, 504 receive-socket drops (about 40 segments each, 64 KB
aggregates), 470 of them on the sender's own port; a web-search run on picloud:2,4 (30 % load):
2,337 receive-socket drops, 0 qdisc drops, and the send socket over its 212,992 bytes in 19 of
327 samples. With the buffers sized: 0 receive-socket drops and 0 retransmits at 1 Gbit/s.

`size_buffers` gives the sockets of a run's ports, and the shared send socket, buffers sized for
the model's queues (see `rx_buffer`/`tx_buffer`), by duplicating ovs-vswitchd's descriptors with
pidfd_getfd(2) and setting SO_RCVBUFFORCE/SO_SNDBUFFORCE on them: the socket is shared with
ovs-vswitchd, so the setting is its own, without a restart. `drops` reads the receive sockets'
drop counters (`ss -0 -e -m -p`) for the fidelity monitor.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from topology.effects.proc import run

log = logging.getLogger(__name__)

SYS_PIDFD_OPEN = 434  # the same number on every architecture (syscalls added after 5.1 are unified)
SYS_PIDFD_GETFD = 438
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
# Kernel default (net.core.rmem_default / wmem_default on Debian and most distributions).
KERNEL_DEFAULT = 212_992
# The unshaped ceiling measured through OVS here is about 4 Gbit/s (bench/fidelity_bench.py); a
# receive buffer of RX_FLOOR holds 8 ms of it, a stall of ovs-vswitchd's main loop longer than any
# the fidelity monitor would still call faithful (ovs_cpu, lateness thresholds).
RX_FLOOR = 4 << 20
# skb truesize over length: a 1514-byte frame in a page fragment costs up to 4096 + ~700 bytes of
# socket buffer, a 64 KB aggregate ~1.05x. Queues are sized in bytes of frames, buffers in truesize.
TRUESIZE = 3.2


@dataclass(frozen=True)
class PacketSocket:
    iface: str | None  # None: unbound (the shared send socket)
    fd: int
    rcvbuf: int
    sndbuf: int
    wmem: int  # bytes charged to the socket now (skbs in qdiscs)
    drops: int


_SS_RE = re.compile(r"^p_raw\s.*?\s(\S+)\s+\*\s+users:\(\(\"ovs-vswitchd\",pid=(\d+),fd=(\d+)\)\).*?\n"
                    r"\s.*?skmem:\(r\d+,rb(\d+),t(\d+),tb(\d+),.*?d(\d+)\)", re.M)


def parse_ss(text: str, pid: int) -> list[PacketSocket]:
    """ovs-vswitchd's packet sockets from `ss -0 -a -e -m -p` (pure; local address `*:IFACE` for a
    bound socket, `[0]:*` for the unbound send socket)."""
    out = []
    for m in _SS_RE.finditer(text):
        local, owner = m.group(1), int(m.group(2))
        if owner != pid:
            continue
        iface = local.split(":", 1)[1] if local.startswith("*:") else None
        out.append(PacketSocket(iface, int(m.group(3)), int(m.group(4)), int(m.group(6)), int(m.group(5)),
                                int(m.group(7))))
    return out


def sockets(pid: int) -> list[PacketSocket]:
    return parse_ss(run(["ss", "-0", "-a", "-e", "-m", "-p"], check=False, timeout=30).stdout, pid)


def drops(pid: int | None, ifaces: Iterable[str]) -> dict[str, int]:
    """Receive-socket drops (packets; with TSO one can be a 64 KB aggregate) of the named ports."""
    if pid is None:
        return {}
    wanted = set(ifaces)
    return {s.iface: s.drops for s in sockets(pid) if s.iface in wanted}


def rx_buffer(queue_bytes: Iterable[int]) -> int:
    """Receive buffer of a port: the bytes that can be in flight towards it are the TCP windows of
    the flows entering it, and loss-based TCP grows a window to the bottleneck's queue plus its
    bandwidth-delay product, so the largest modelled queue, in truesize, bounds what can wait in
    the socket while ovs-vswitchd keeps up; at least RX_FLOOR for unshaped paths."""
    return max(RX_FLOOR, int(TRUESIZE * max(queue_bytes, default=0)))


def tx_buffer(queue_bytes: Iterable[int]) -> int:
    """The shared send socket must hold every shaped queue of the run at once, in truesize (a
    queue that fills past it turns into EAGAIN losses outside the model), plus RX_FLOOR in flight."""
    return RX_FLOOR + int(TRUESIZE * sum(queue_bytes))


def _set(libc: ctypes.CDLL, pidfd: int, fd: int, option: int, value: int) -> bool:
    """setsockopt on ovs-vswitchd's descriptor `fd`, through a duplicate (pidfd_getfd needs ptrace
    rights over it: root). The kernel doubles the value; it is passed halved."""
    dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if dup < 0:
        return False
    sock = socket.socket(fileno=dup)
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, value // 2)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def size_buffers(pid: int | None, ifaces: Iterable[str], queue_bytes: list[int],
                 open_send: Callable[[], None] | None = None) -> dict[str, int]:
    """Grow (never shrink) the receive buffers of the named ports' sockets and the shared send
    socket; returns {iface or "send": new size} for what it changed. A socket it cannot reach is
    left as it was, with a warning (the monitor then counts its drops). `open_send` makes
    ovs-vswitchd open its send socket when it has none yet (a fresh daemon: ovs.open_send_socket)."""
    if pid is None:
        return {}
    wanted = set(ifaces)
    rx, tx = rx_buffer(queue_bytes), tx_buffer(queue_bytes)
    found = sockets(pid)
    if open_send is not None and not any(s.iface is None for s in found):
        open_send()
        found = sockets(pid)
    todo = [("send", s.fd, SO_SNDBUFFORCE, tx) for s in found if s.iface is None and s.sndbuf < tx]
    todo += [(s.iface, s.fd, SO_RCVBUFFORCE, rx) for s in found if s.iface and s.iface in wanted and s.rcvbuf < rx]
    changed: dict[str, int] = {}
    failed: list[str] = []
    if not todo:
        return changed
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    try:
        for name, fd, option, size in todo:
            if pidfd >= 0 and _set(libc, pidfd, fd, option, size):
                changed[name] = size
            else:
                failed.append(name)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    if failed:
        log.warning("warning: could not size ovs-vswitchd's socket buffers for %s (pidfd_getfd refused): "
                    "their drops are counted by the fidelity monitor", ", ".join(failed[:5]))
    return changed
