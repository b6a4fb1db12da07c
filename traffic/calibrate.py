"""Calibration: what the running fabric actually delivers against what its links are configured to.

`plan(topology, containers)` (pure) groups container pairs by the configured shape of their path:
the bottleneck rate, the round-trip delay (each link's netem delay once per direction) and the
round-trip loss. `measure(testbed)` then, per class, runs one iperf3 bulk flow and a burst of pings
between one pair of that class, and, for the unshaped ceiling, one bulk flow along the longest
unshaped container path. The result is stored in the run's state (`extra["calibration"]`) and every
traffic run copies the calibration it stands on into its `calibration.json` (the configured classes,
marked unmeasured, when the run was never calibrated).

Budget: under 20 s on picloud:4,4 (one shaped class; its ceiling is not measurable because every
container path crosses a shaped Pi uplink, which the record says).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import networkx as nx

from topology.backends.base import state_of
from topology.tcplan import seconds as tc_seconds

if TYPE_CHECKING:
    from topology.backends.base import Run
    from topology.model import Topology

CAL_PORT = 5209
PAIRS_PER_SOURCE = 64  # enough to meet every class of a regular topology, bounded for 1,000 containers


def path_shape(topology: Topology, src: str, dst: str) -> dict[str, Any]:
    """Configured shape of the (first) shortest path between two nodes of the topology."""
    path = nx.shortest_path(topology.graph, src, dst)
    links = [topology.link(a, b) for a, b in zip(path, path[1:], strict=False)]
    rates = [ln.bw for ln in links if ln.bw]
    delay = sum(tc_seconds(ln.delay) for ln in links if ln.delay)
    survive = math.prod((1 - (ln.loss or 0) / 100) for ln in links)
    return {"bw_mbit": min(rates) if rates else None, "rtt_ms": round(2 * delay * 1e3, 3),
            "loss": round(1 - survive**2, 6), "hops": len(links)}


def plan(topology: Topology, containers: list[str]) -> dict[str, Any]:
    """{"classes": [{shape..., "pair": [src, dst]}], "ceiling": {"pair", "hops"} | None}."""
    classes: dict[tuple, dict[str, Any]] = {}
    longest: tuple[int, list[str]] | None = None
    inside = [c for c in containers if c in topology.graph]
    sources = inside[:1] + inside[-1:] if len(inside) > 1 else inside
    for src in dict.fromkeys(sources):
        for dst in [c for c in inside if c != src][:PAIRS_PER_SOURCE]:
            shape = path_shape(topology, src, dst)
            key = (shape["bw_mbit"], shape["rtt_ms"], shape["loss"])
            if shape["bw_mbit"] or shape["rtt_ms"] or shape["loss"]:
                best = classes.get(key)
                if best is None or shape["hops"] > best["hops"]:  # the longest path of its class
                    classes[key] = {**shape, "pair": [src, dst]}
            elif longest is None or shape["hops"] > longest[0]:
                longest = (shape["hops"], [src, dst])
    ordered = sorted(classes.values(), key=lambda c: (c["bw_mbit"] or 0, c["rtt_ms"], c["loss"]))
    return {"classes": ordered, "ceiling": None if longest is None else {"pair": longest[1], "hops": longest[0]}}


def _ping(testbed: Run, src: str, dst: str, count: int) -> dict[str, Any]:
    rc, out = testbed.exec(src, ["ping", "-n", "-i", "0.01", "-W", "1", "-c", str(count), testbed.container_ip(dst)],
                           timeout=count * 0.05 + 10)
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    result: dict[str, Any] = {"count": count, "received": len(rtts)}
    if sent:
        result["loss"] = round(1 - int(sent[2]) / int(sent[1]), 4) if int(sent[1]) else None
    if rtts:
        result["rtt_ms"] = {"p50": rtts[len(rtts) // 2], "p99": rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))]}
    return result


def _bulk(testbed: Run, src: str, dst: str, seconds: float) -> dict[str, Any]:
    from traffic import iperf

    try:  # a port of its own: a user's iperf3 on 5201 or the engine's agents on 5301 may be running
        r = iperf.bulk(testbed, src, dst, duration=seconds, omit=min(1.0, seconds / 3), port=CAL_PORT)
    except Exception as exc:  # noqa: BLE001 - a failed measurement is recorded, it does not end the run
        return {"error": str(exc)}
    return {"goodput_mbps": round(r["goodput_mbps"], 3), "retransmits": r["retransmits"]}


def measure(testbed: Run, seconds: float = 2.0, pings: int = 50, budget: float = 60.0) -> dict[str, Any]:
    """Measure every class of `plan` and the ceiling; see the module docstring. Classes not reached
    within `budget` seconds (a host too loaded to start iperf3 promptly) are recorded as skipped."""
    t0 = time.monotonic()
    p = plan(testbed.topology, list(testbed.containers))
    out: dict[str, Any] = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
                           "load_average": [round(v, 2) for v in os.getloadavg()], "seconds_per_flow": seconds,
                           "classes": [], "ceiling": None}
    for cls in p["classes"]:
        src, dst = cls["pair"]
        if time.monotonic() - t0 > budget:
            out["classes"].append({**cls, "error": f"skipped: calibration budget of {budget:g} s spent"})
            continue
        row = {**cls, **_bulk(testbed, src, dst, seconds), "ping": _ping(testbed, src, dst, pings)}
        if cls["bw_mbit"] and "goodput_mbps" in row:
            row["goodput_ratio"] = round(row["goodput_mbps"] / cls["bw_mbit"], 4)
        out["classes"].append(row)
    if p["ceiling"] is None:
        out["ceiling"] = {"skipped": "every container path crosses a shaped link (the shaped classes above are "
                                     "the rates this run can offer)"}
    elif time.monotonic() - t0 > budget:
        out["ceiling"] = {**p["ceiling"], "error": f"skipped: calibration budget of {budget:g} s spent"}
    else:
        src, dst = p["ceiling"]["pair"]
        out["ceiling"] = {**p["ceiling"], **_bulk(testbed, src, dst, seconds)}
    out["elapsed_s"] = round(time.monotonic() - t0, 2)
    return out


def store(testbed: Run, calibration: dict[str, Any]) -> None:
    with state_of(testbed).transaction():
        state_of(testbed).extra["calibration"] = calibration


def stored(testbed: Run) -> dict[str, Any] | None:
    with contextlib.suppress(Exception):
        state_of(testbed).reload()
    return (getattr(testbed.state, "extra", None) or {}).get("calibration")


def ceiling_bps(calibration: dict[str, Any] | None) -> float | None:
    c = (calibration or {}).get("ceiling") or {}
    return c["goodput_mbps"] * 1e6 if c.get("goodput_mbps") else None


def for_run(testbed: Run) -> dict[str, Any]:
    """The calibration a traffic run stands on: the run's stored measurement, else the configured
    classes alone, marked unmeasured. Not measured on the fly: on a loaded host one bulk flow plus
    its iperf3 start-up took minutes, which no traffic run should silently add to itself."""
    found = stored(testbed)
    if found:
        return {**found, "measured": True}
    try:
        configured = plan(testbed.topology, list(testbed.containers))
    except Exception as exc:  # noqa: BLE001 - the run goes on; its calibration.json says why
        configured = {"error": str(exc)}
    return {"measured": False, "configured": configured,
            "note": "not measured: run 'picloud calibrate' (or Testbed.calibrate()) on this run first"}


def render(cal: dict[str, Any]) -> str:
    lines = [f"calibration ({cal.get('elapsed_s')} s, load average {cal.get('load_average')})"]
    for c in cal.get("classes", []):
        ping = c.get("ping", {})
        rtt = ping.get("rtt_ms") or {}
        lines.append(
            f"  {c['bw_mbit'] or 'unshaped'} Mbit/s, RTT {c['rtt_ms']} ms, loss {c['loss']:.2%} "
            f"({c['pair'][0]} -> {c['pair'][1]}, {c['hops']} hops): goodput "
            + (f"{c['goodput_mbps']:.1f} Mbit/s ({c.get('goodput_ratio', 0):.0%})" if "goodput_mbps" in c
               else f"failed ({c.get('error')})")
            + f", RTT p50 {rtt.get('p50')} ms p99 {rtt.get('p99')} ms, ping loss {ping.get('loss')}")
    ceil = cal.get("ceiling") or {}
    if "skipped" in ceil:
        lines.append(f"  unshaped ceiling: not measured: {ceil['skipped']}")
    else:
        got = f"{ceil['goodput_mbps']:.1f} Mbit/s" if "goodput_mbps" in ceil else f"failed ({ceil.get('error')})"
        lines.append(f"  unshaped ceiling ({ceil.get('hops')} hops): {got}")
    return "\n".join(lines)
