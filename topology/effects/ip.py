"""iproute2: the only caller of `ip`. Work is batched: one `ip -batch` process for many objects.

`ip -batch` cannot switch namespaces per line, so work inside a namespace is one batch per
namespace, run concurrently; see `batch_in_namespaces`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from topology.effects.proc import CommandError, run
from topology.fabric_plan import FabricPlan, LinkPlan


def batch(lines: Sequence[str], netns: str | None = None, force: bool = False) -> None:
    """Run many `ip` commands in one process. Without force, the first failing line stops it and
    raises; with force every line runs and failures are left to the caller to check."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    run(argv, input="\n".join(lines) + "\n", timeout=300, check=not force)


def batch_in_namespaces(work: dict[str, list[str]], workers: int = 8) -> None:
    """One batch per namespace, several at once: namespaces are independent."""
    errors: list[Exception] = []

    def one(item: tuple[str, list[str]]) -> None:
        try:
            batch(item[1], netns=item[0])
        except CommandError as exc:
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, work.items()))
    if errors:
        raise errors[0]


NETNS_DIR = "/run/netns"  # iproute2's NETNS_RUN_DIR: a named namespace is a bind mount here


def netns_list() -> set[str]:
    """Named namespaces: the entries `ip netns list` prints, read without a process."""
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def links(netns: str | None = None) -> set[str]:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-j", "link", "show"]
    out = run(argv, check=False).stdout.strip()
    return {entry["ifname"] for entry in json.loads(out)} if out else set()


def _delete_until_gone(names: Iterable[str], present, line: str, what: str) -> None:
    """Delete, then check; namespace teardown in the kernel is asynchronous, so a name can linger
    a moment after its namespace went: look again before calling it a failure."""
    names = set(names)
    for attempt in range(20):
        todo = names & present()
        if not todo:
            return
        if attempt:
            time.sleep(0.05)
        batch([line.format(n) for n in sorted(todo)], force=True)
    time.sleep(0.05)  # the last batch gets the same moment to settle as every other
    left = names & present()
    if left:
        raise CommandError(["ip", what, "del"], 1, f"could not delete {', '.join(sorted(left))}")


GROUP_BASE = 0x50430000  # "PC" << 16: device groups of PiCloud runs


def run_group(prefix: str) -> int:
    """The device group (IFLA_GROUP) a run's root-namespace veths carry: one per run prefix, so a
    whole run's links go in one `link del group N`. The kernel then unregisters them all in one
    batch with one RCU grace period, instead of one grace period (~16 ms here) per device."""
    return GROUP_BASE + int(prefix[2:])


TAP_GROUP_BASE = 0x50540000  # "PT" << 16: a run's bridge tap devices, for one batched delete


def tap_group(prefix: str) -> int:
    return TAP_GROUP_BASE + int(prefix[2:])


def namespace_lines(plan: FabricPlan) -> list[str]:
    """The plan's container namespaces, as `ip -batch` lines."""
    return [f"netns add {ns.name}" for ns in plan.namespaces]


def veth_lines(plan: FabricPlan) -> list[str]:
    """The plan's veth pairs as `ip -batch` lines: bridge-to-bridge pairs, then container pairs
    whose inner end is made inside the container's namespace with its MAC (and MTU). Root-namespace
    ends carry the run's device group (see run_group). Patch links have no kernel device."""
    group = run_group(plan.prefix)
    lines = []
    for lp in plan.links:
        if lp.kind == "veth" and not lp.to_container:
            lines += [f"link add {lp.a.iface} group {group} type veth peer name {lp.b.iface} group {group}",
                      f"link set {lp.a.iface} up", f"link set {lp.b.iface} up"]
    for lp in plan.links:
        if lp.to_container:
            lines += container_veth_lines(lp, group)
    return lines


def container_veth_lines(lp: LinkPlan, group: int | None, host_netns: str | None = None) -> list[str]:
    """One container's veth pair. host_netns: the host end moves there (an emulated Pi's
    namespace), where the caller sets it up; a move would take it down again."""
    host = lp.bridge_end
    inner = lp.b if host is lp.a else lp.a
    in_group = f" group {group}" if group is not None else ""
    peer = " ".join([f"peer name {inner.iface}", *([f"address {inner.mac}"] if inner.mac else []),
                     *([f"mtu {lp.mtu}"] if lp.mtu else []), f"netns {inner.netns}"])
    last = f"link set {host.iface} netns {host_netns}" if host_netns else f"link set {host.iface} up"
    return [f"link add {host.iface}{in_group} type veth {peer}", last]


def group_links(group: int) -> set[str]:
    # iproute2 prints an empty object for every device outside the group: skip those.
    out = run(["ip", "-j", "link", "show", "group", str(group)], check=False).stdout.strip()
    return {entry["ifname"] for entry in json.loads(out) if "ifname" in entry} if out else set()


def delete_links(names: Iterable[str], group: int | None = None) -> None:
    """Deleting one veth end deletes its peer; missing names are fine (idempotent clean-up).
    With the run's group: one kernel batch for all of them, but only when every device in the
    group is one of `names` (a stranger who happened to pick the same group keeps its devices)."""
    names = set(names)
    if group is not None and names:
        members = group_links(group)
        if members and members <= names:
            batch([f"link del group {group}"], force=True)
    _delete_until_gone(names, links, "link del {}", "link")


def delete_as_one_batch(names: Iterable[str], group: int) -> None:
    """Devices others made for a run (ovs-vswitchd's bridge taps), unregistered in one kernel
    batch: they join `group` and one `link del group` takes them, in one `ip` process. Deleted one
    by one, by their owner, each costs an rcu_barrier (~20 ms here). Only when `group` is empty
    first: a stranger's device in it is left alone, and then so are these (their owner deletes them)."""
    names = sorted(names)
    if names and not group_links(group):
        batch([*(f"link set dev {n} group {group}" for n in names), f"link del group {group}"], force=True)


def is_tap(name: str) -> bool:
    """A tun/tap device of the root namespace (sysfs shows tun_flags only for those)."""
    return os.path.exists(f"/sys/class/net/{name}/tun_flags")


def delete_netns(names: Iterable[str]) -> None:
    _delete_until_gone(names, netns_list, "netns del {}", "netns")


def set_link(name: str, up: bool, netns: str | None = None) -> None:
    batch([f"link set {name} {'up' if up else 'down'}"], netns=netns)


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def set_iface_up(sock: socket.socket, name: str, up: bool) -> None:
    """IFF_UP of `name` on or off through `sock` (any AF_INET socket of the device's namespace): the
    two ioctls `ip link set` makes, without a process. Raises OSError."""
    import fcntl
    import struct

    req = struct.pack("16sh22x", name.encode(), 0)
    flags = struct.unpack("16sh22x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]
    flags = (flags | IFF_UP) if up else (flags & ~IFF_UP)
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", name.encode(), flags))


def set_links_now(ends: Sequence[tuple[str, str | None]], up: bool) -> None:
    """Interfaces (name, netns) up or down with the SIOCSIFFLAGS ioctl, no process started: what
    `ip link set` does, in microseconds. A scenario's timed link cut must not wait for an `ip`
    process to start (we measured 150-900 ms per `ip` at load average 12 on the shared 2 cores)."""
    from topology.effects import netns as netns_effects

    for name, ns in ends:
        if ns:
            sock = netns_effects.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            try:
                set_iface_up(sock, name, up)
            except OSError as exc:
                raise CommandError(["ioctl", "SIOCSIFFLAGS", name, "up" if up else "down"], exc.errno or 1,
                                   f"{name}{' in ' + ns if ns else ''}: {exc.strerror}") from None


def host_routes() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every destination the root namespace routes, so we never add an overlapping subnet."""
    nets = []
    for family in ("-4", "-6"):
        out = run(["ip", family, "-j", "route", "show", "table", "all"], check=False).stdout.strip()
        for entry in json.loads(out) if out else []:
            dst = entry.get("dst")
            if not dst or dst == "default" or entry.get("type") in ("broadcast", "local", "multicast"):
                continue
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    return nets
