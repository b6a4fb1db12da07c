"""Traffic control: the only caller of `tc`. Rate limits use TBF (see `shape` for why not HTB,
which Mininet's TCLink uses); delay and loss would need netem, which some kernels (this one) lack, so
its presence is probed before anything is built."""

from __future__ import annotations

import functools
import uuid

from topology.effects.proc import run


def shape(iface: str, bw_mbit: float, queue: int | None = None, netns: str | None = None) -> None:
    """Egress shaping at bw Mbit/s with a token bucket filter.

    TBF, not HTB: with TSO on, packets reach the qdisc as GSO aggregates of up to a few hundred
    KB. HTB sends each whole (a 200 KB burst every 160 ms at 10 Mbit/s), so TCP sees wild RTT
    swings and retransmits spuriously (measured: 5.6-9.4 Mbit/s on a 10 Mbit/s link). TBF splits
    an aggregate larger than its bucket back into MTU packets (tbf_segment), so the shaped link
    behaves like a wire. The queue is about 100 ms at the link rate, or `queue` MTU packets when
    given (Mininet's max_queue_size)."""
    ns = ["-n", netns] if netns else []
    rate_bytes = bw_mbit * 1e6 / 8
    burst = max(10 * 1514, int(rate_bytes * 0.004))  # 4 ms of line rate, at least ten frames
    limit = queue * 1514 if queue else max(2 * burst, int(rate_bytes * 0.1))
    run(["tc", *ns, "qdisc", "replace", "dev", iface, "root", "tbf", "rate", f"{bw_mbit}mbit",
         "burst", str(burst), "limit", str(limit)])


def unshape(iface: str, netns: str | None = None) -> None:
    ns = ["-n", netns] if netns else []
    run(["tc", *ns, "qdisc", "del", "dev", iface, "root"], check=False)


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
