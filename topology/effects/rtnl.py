"""rtnetlink from this process: the container side of a fabric without one `ip` process per container.

Setting up a container's interface is four kernel requests (lo up, address, eth0 up, default
route). Spawning `ip -n NS -batch` for them costs a fork+exec per container (tens of ms each on a
busy 2-core machine: most of a 1,000-container bring-up); a netlink socket opened inside the
namespace (see `netns.socket_in`) sends the same four messages in well under a millisecond. Only
the messages PiCloud needs are encoded here, each acknowledged, so an error names its namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from topology.effects import netns
from topology.effects.proc import CommandError

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
LOOPBACK_INDEX = 1  # lo is always ifindex 1 in a network namespace


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body


def link_up(index: int, seq: int) -> bytes:
    """RTM_NEWLINK on an existing device: set IFF_UP (as `ip link set DEV up`)."""
    return _message(RTM_NEWLINK, 0, seq, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP))


def add_address(index: int, interface: str, seq: int) -> bytes:
    """RTM_NEWADDR as `ip addr add ADDR/LEN dev DEV`: local and address both ADDR, global scope."""
    iface = ipaddress.ip_interface(interface)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    packed = iface.ip.packed
    body = struct.pack("=BBBBI", family, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    return _message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def add_default_route(index: int, gateway: str | None, seq: int, version: int = 4) -> bytes:
    """RTM_NEWROUTE as `ip route add default dev DEV` (link scope) or `... via GW` (universe)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = struct.pack("=BBBBBBBBI", family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
    if gateway:
        body += _attr(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    body += _attr(RTA_OIF, struct.pack("=I", index))
    return _message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def parse_acks(data: bytes) -> dict[int, int]:
    """seq -> errno (0 for success) of every NLMSG_ERROR message in a netlink datagram."""
    out: dict[int, int] = {}
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + 16)
            out[seq] = -error
        offset += (length + 3) & ~3
    return out


@dataclass(frozen=True)
class ContainerIface:
    """What one container's namespace gets: lo up, INTERFACE address on IFACE, IFACE up, a default route."""

    netns: str
    address: str  # "10.0.0.2/8"
    gateway: str | None = None
    iface: str = "eth0"


def configure(containers: Iterable[ContainerIface]) -> None:
    """Configure every container's interface, one netlink socket per namespace, from this thread.
    Raises CommandError naming the first namespace whose request failed."""
    for item in containers:
        _configure_one(item)


def _configure_one(item: ContainerIface) -> None:
    with netns.entered(item.netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            index = socket.if_nametoindex(item.iface)
        except OSError as exc:
            sock.close()
            raise CommandError(["rtnl", item.netns], 1, f"{item.netns}: no interface {item.iface}: {exc}") from exc
    try:
        version = ipaddress.ip_interface(item.address).version
        messages = [link_up(LOOPBACK_INDEX, 1), add_address(index, item.address, 2), link_up(index, 3),
                    add_default_route(index, item.gateway, 4, version)]
        what = {1: "link set lo up", 2: f"addr add {item.address} dev {item.iface}",
                3: f"link set {item.iface} up",
                4: f"route add default {'via ' + item.gateway if item.gateway else 'dev ' + item.iface}"}
        sock.bind((0, 0))
        for message in messages:  # one at a time: each request depends on the one before it
            sock.send(message)
            acks: dict[int, int] = {}
            seq = struct.unpack_from("=I", message, 8)[0]
            while seq not in acks:
                acks.update(parse_acks(sock.recv(65536)))
            if acks[seq]:
                code = acks[seq]
                reason = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
                raise CommandError(["rtnl", item.netns], 1, f"{item.netns}: {what[seq]}: {reason}")
    finally:
        sock.close()
