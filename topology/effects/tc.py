"""Traffic control: the only caller of `tc`. Rate limits use HTB (shaping with a real queue, as
Mininet's TCLink does); delay and loss would need netem, which some kernels (this one) lack, so
its presence is probed before anything is built."""

from __future__ import annotations

import functools
import uuid

from topology.effects.proc import run


def shape(iface: str, bw_mbit: float, queue: int | None = None, netns: str | None = None) -> None:
    """Egress shaping at bw Mbit/s. Burst covers one GSO super-packet (64 KiB) so TSO traffic is
    shaped smoothly rather than stalled; the queue is the packets HTB may hold (default 1000)."""
    ns = ["-n", netns] if netns else []
    rate = f"{bw_mbit}mbit"
    burst = max(15000, int(bw_mbit * 1e6 / 8 / 250), 65536 + 1514)
    lines = [
        f"qdisc replace dev {iface} root handle 1: htb default 1",
        f"class replace dev {iface} parent 1: classid 1:1 htb rate {rate} ceil {rate} burst {burst} cburst {burst}",
        f"qdisc replace dev {iface} parent 1:1 handle 10: pfifo limit {queue or 1000}",
    ]
    run(["tc", *ns, "-batch", "-"], input="\n".join(lines) + "\n")


def unshape(iface: str, netns: str | None = None) -> None:
    ns = ["-n", netns] if netns else []
    run(["tc", *ns, "qdisc", "del", "dev", iface, "root"], check=False)


def shape_many(items: list[tuple[str, float, int | None]], netns: str | None = None) -> None:
    for iface, bw, queue in items:
        shape(iface, bw, queue, netns)


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
