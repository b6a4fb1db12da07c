"""ethtool: the only caller. Used for one thing: turning veth TX checksum offload off where the
OVS userspace datapath would otherwise emit TCP segments with bad checksums (no userspace TSO)."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from topology.effects.proc import run


def tx_offload_off(ifaces: Iterable[tuple[str | None, str]], workers: int = 8) -> None:
    """(netns or None, iface) pairs; ethtool has no batch mode, so run a few at a time."""

    def one(item: tuple[str | None, str]) -> None:
        netns, iface = item
        prefix = ["ip", "netns", "exec", netns] if netns else []
        run([*prefix, "ethtool", "-K", iface, "tx", "off"], check=False)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, list(ifaces)))
