"""Traffic control: the only caller of `tc`. What to run is decided by the pure
`topology.tcplan.plan` (TBF for rate, a netem child for delay/jitter/loss; see there for why);
this module runs it, and probes whether the kernel has netem before anything is built."""

from __future__ import annotations

import functools
import re
import uuid

from topology.effects.proc import run
from topology.tcplan import Command, Shape, plan


def apply(commands: list[Command]) -> None:
    for cmd in commands:
        run(list(cmd.argv), check=cmd.check)


def batches(commands: list[Command]) -> list[tuple[list[str], str, bool]]:
    """(argv, stdin, check) of the `tc -batch` runs that carry `commands`: per namespace, commands
    that may fail (deleting an absent qdisc) in a forced batch first, then the rest in plan order in a
    batch that stops at its first failure. Each end's deletes precede its adds in a plan, and ends are
    independent, so hoisting the deletes keeps every end's order."""
    by_ns: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for cmd in commands:
        argv = list(cmd.argv)
        if argv[0] != "tc":
            raise ValueError(f"not a tc command: {argv}")
        ns = tuple(argv[1:3]) if argv[1:2] == ["-n"] else ()
        optional, required = by_ns.setdefault(ns, ([], []))
        (required if cmd.check else optional).append(" ".join(argv[1 + len(ns):]))
    out = []
    for ns, (optional, required) in by_ns.items():
        if optional:
            out.append((["tc", *ns, "-force", "-batch", "-"], "\n".join(optional) + "\n", False))
        if required:
            out.append((["tc", *ns, "-batch", "-"], "\n".join(required) + "\n", True))
    return out


def apply_many(commands: list[Command]) -> None:
    """Many links' plans in a few `tc -batch` processes instead of one `tc` per command: a
    picloud:5,10 fabric shapes every Pi uplink at build, and a process each costs seconds there."""
    for argv, stdin, check in batches(commands):
        run(argv, input=stdin, check=check, timeout=300)


def shape(iface: str, bw_mbit: float | None, queue: int | None = None, netns: str | None = None,
          delay: str | None = None, jitter: str | None = None, loss: float | None = None,
          replace: bool = True) -> None:
    """Give one link end its shape (replacing whatever it had)."""
    apply(plan(iface, Shape(bw_mbit, delay, jitter, loss, queue), netns, replace=replace))


def unshape(iface: str, netns: str | None = None) -> None:
    apply(plan(iface, Shape(), netns, replace=True))


def stats(iface: str, netns: str | None = None) -> str:
    """`tc -s qdisc show` of one interface (drops, overlimits), for the fidelity monitor."""
    ns = ["-n", netns] if netns else []
    return run(["tc", *ns, "-s", "qdisc", "show", "dev", iface], check=False).stdout


@functools.cache
def netem_available() -> bool:
    """Try netem on a throwaway dummy interface in a throwaway namespace: the only honest test."""
    ns = f"pcprobe{uuid.uuid4().hex[:6]}"
    if run(["ip", "netns", "add", ns], check=False).returncode != 0:
        return False
    try:
        run(["ip", "-n", ns, "link", "add", "d0", "type", "dummy"], check=False)
        return run(["tc", "-n", ns, "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"],
                   check=False).returncode == 0
    finally:
        run(["ip", "netns", "del", ns], check=False)


def kernel() -> str:
    import platform

    return platform.release()


_QDISC_RE = re.compile(r"^qdisc (\S+) (\S+) dev (\S+) (root|parent \S+).*?\n Sent (\d+) bytes (\d+) pkt "
                       r"\(dropped (\d+), overlimits (\d+)", re.M)


def root_counters(netns: str | None = None) -> dict[str, dict[str, int]]:
    """Root-qdisc counters of every interface of a namespace in one `tc -s qdisc show`: the root's
    drops are the modelled queue's (a netem child's own random loss is not counted there)."""
    ns = ["-n", netns] if netns else []
    text = run(["tc", *ns, "-s", "qdisc", "show"], check=False, timeout=30).stdout
    out = {}
    for m in _QDISC_RE.finditer(text):
        kind, _handle, dev, where = m.group(1), m.group(2), m.group(3), m.group(4)
        if where == "root" and kind in ("tbf", "netem", "htb"):
            out[dev] = {"sent_packets": int(m.group(6)), "dropped": int(m.group(7)), "overlimits": int(m.group(8))}
    return out
