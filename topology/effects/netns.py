"""Network namespaces from inside this Python process: the only caller of setns(2).

A socket belongs to the namespace its creating thread was in, and keeps it afterwards. So one
process can open sockets in hundreds of container namespaces (switching its thread briefly into
each) and then probe all pairs at once: an all-pairs TCP check costs milliseconds per pair
instead of a process per pair.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import socket
import time
from collections.abc import Iterable
from contextlib import contextmanager

from topology.stalls import OVS_STALL_S

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def entered(netns: str):
    """Run the body with this thread in `netns`; always returns the thread to where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def socket_in(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
              proto: int = 0) -> socket.socket:
    with entered(netns):
        return socket.socket(family, type, proto)


def set_sysctl(netns: str, key: str, value: int | str) -> None:
    """Write one `net.` sysctl inside `netns`: /proc/sys/net shows the namespace of the thread that
    opens it, so no `ip netns exec sysctl` process is needed."""
    if not key.startswith("net."):
        raise ValueError(f"sysctl {key}: only net.* keys are per namespace")
    with entered(netns), open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(str(value))


def exec_argv(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def tcp_matrix(endpoints: dict[str, tuple[str, str]], port: int = 5399, timeout: float = 3.0,
               pairs: Iterable[tuple[str, str]] | None = None, retries: int | None = None,
               within: float = OVS_STALL_S) -> dict[str, dict[str, float]]:
    """All-pairs TCP connect check. endpoints: name -> (netns, ip). Returns name -> name -> loss
    (0.0 connected, 1.0 not). Each source connects to every destination's listener, each attempt
    waiting `timeout`; the pairs that failed are tried again (first packets may wait for the
    controller to learn a path, and the userspace datapath stops forwarding while ovs-vswitchd's
    main loop stalls: see topology/stalls.py) until `within` seconds have passed since the first
    attempt, or `retries` more rounds when that is given. Each further round is logged."""
    listeners = {}
    for name, (ns, ip) in endpoints.items():
        sock = socket_in(ns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(1024)
        sock.setblocking(False)
        listeners[name] = sock
    names = list(endpoints)
    todo = list(pairs) if pairs is not None else [(s, d) for s in names for d in names if s != d]
    result: dict[str, dict[str, float]] = {s: {} for s in names}
    started = time.monotonic()
    try:
        attempt = 0
        while True:
            failed = _connect_round(endpoints, listeners, todo, port, timeout)
            for s, d in todo:
                result[s][d] = 1.0 if (s, d) in failed else 0.0
            todo = sorted(failed)
            if not todo or attempt == retries or (retries is None and time.monotonic() - started >= within):
                break
            attempt += 1
            log.info("tcp check: %d pair(s) not connected after %.1f s (first %s -> %s), round %d",
                     len(todo), time.monotonic() - started, *todo[0], attempt + 1)
            time.sleep(0.5)
    finally:
        for sock in listeners.values():
            sock.close()
    return result


def _connect_round(endpoints, listeners, pairs, port, timeout) -> set[tuple[str, str]]:
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, tuple[str, str]] = {}
    failed: set[tuple[str, str]] = set()
    for ls in listeners.values():
        sel.register(ls, selectors.EVENT_READ, ("listen", ls))  # the socket kept as such, not as a file object
    for s, d in pairs:
        sock = socket_in(endpoints[s][0])
        sock.setblocking(False)
        err = sock.connect_ex((endpoints[d][1], port))
        if err not in (0, 115):  # EINPROGRESS
            failed.add((s, d))
            sock.close()
            continue
        pending[sock] = (s, d)
        sel.register(sock, selectors.EVENT_WRITE, ("connect", sock))
    deadline = time.monotonic() + timeout
    accepted = []
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            role, sock = key.data
            if role == "listen":
                try:
                    conn, _ = sock.accept()
                    accepted.append(conn)
                except BlockingIOError:
                    pass
                continue
            pair = pending.pop(sock)
            sel.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                failed.add(pair)
            sock.close()
    for sock, pair in pending.items():
        failed.add(pair)
        sock.close()
    for conn in accepted:
        conn.close()
    sel.close()
    return failed
