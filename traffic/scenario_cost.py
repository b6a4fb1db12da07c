"""What each scenario event cost the traffic (pure: applied events, flow records, counter samples).

For every applied event:
- `port_drops`: packets the fabric's OVS ports dropped (tx_dropped + rx_dropped + tx_errors over
  every bridge) between this event and the next one (or the end of the run);
- `tcp_retrans`: TCP segments the traffic agents' stacks retransmitted over the same window,
  from each participating container's /proc/net/snmp: packets the agents lost;
- `flows_in_flight`: flows that had started and not finished when the event was applied;
- `fct_inflation`: median slowdown (FCT / ideal FCT) of those flows divided by the median slowdown
  of the flows that no event touched, in the same size buckets as the report (None without both);
- `stalled_flows` / `first_packet_ms`: flows whose longest receive silence spans the event, and
  the median time from the event to the end of that silence: the first data over the new path.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from traffic.results import BUCKETS, FlowRecord

# A flow stalled by an event was last heard from before it: allow the packets already in flight
# (a few RTTs of a loaded userspace datapath) between its last read and the event's application.
STALL_SLACK_S = 0.05


def _bucket(size: int) -> str:
    for key, _label, lo, hi in BUCKETS:
        if lo <= size < hi:
            return key
    return "other"


def _in_flight(f: FlowRecord, t: float) -> bool:
    if f.start is None or f.start > t:
        return False
    return f.fct_us is None or f.start + f.fct_us / 1e6 > t


def counter_delta(samples: Sequence[tuple[float, Mapping[str, float]]], t0: float, t1: float,
                  key: str) -> float | None:
    """Increase of counter `key` between the last sample at or before t0 and the last sample at
    or before t1 (samples sorted by time); None when there is no sample to bound either end."""
    before = [s for t, s in samples if t <= t0 + 1e-9 and key in s]
    after = [s for t, s in samples if t <= t1 + 1e-9 and key in s]
    if not before or not after:
        return None
    return max(0.0, after[-1][key] - before[-1][key])


def costs(applied: Sequence[Mapping[str, Any]], flows: Sequence[FlowRecord],
          gaps: Mapping[int, tuple[float, float]], samples: Sequence[tuple[float, Mapping[str, float]]],
          end: float) -> list[dict[str, Any]]:
    """One cost record per applied event (times in seconds after t0; `gaps` flow id -> (gap s,
    gap end s); `samples` (t, {"port_drops", "tcp_retrans"}) cumulative counters)."""
    times = [float(e["applied"]) for e in applied if e.get("applied") is not None]
    touched = {f.id for f in flows for t in times if _in_flight(f, t)}
    quiet: dict[str, list[float]] = {}
    for f in flows:
        if f.id not in touched and (s := f.slowdown) is not None:
            quiet.setdefault(_bucket(f.size), []).append(s)
    out: list[dict[str, Any]] = []
    for i, e in enumerate(applied):
        t = e.get("applied")
        if t is None:
            out.append({})
            continue
        later = [float(x["applied"]) for x in applied[i + 1:] if x.get("applied") is not None]
        t_next = later[0] if later else end
        inflight = [f for f in flows if _in_flight(f, t)]
        ratios = []
        for f in inflight:
            base = quiet.get(_bucket(f.size))
            if f.slowdown is not None and base:
                ratios.append(f.slowdown / statistics.median(base))
        stalls = []
        for f in inflight:
            gap = gaps.get(f.id)
            if gap and gap[1] - gap[0] <= t + STALL_SLACK_S and gap[1] >= t:
                stalls.append((gap[1] - t) * 1e3)
        drops = counter_delta(samples, t, t_next, "port_drops")
        retrans = counter_delta(samples, t, t_next, "tcp_retrans")
        out.append({
            "port_drops": None if drops is None else int(drops),
            "tcp_retrans": None if retrans is None else int(retrans),
            "flows_in_flight": len(inflight),
            "fct_inflation": round(statistics.median(ratios), 3) if ratios else None,
            "stalled_flows": len(stalls),
            "first_packet_ms": round(statistics.median(stalls), 2) if stalls else None,
        })
    return out


def render_events(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-event table of a report: when planned and applied, what it was, what it cost."""
    head = ("planned", "applied", "err ms", "event", "status", "drops", "retrans", "in flight",
            "FCT x", "stalled", "1st pkt ms")
    table = [head]
    for r in rows:
        def cell(k: str, r: Mapping[str, Any] = r) -> str:
            v = r.get(k)
            return "-" if v in (None, "") else str(v)
        event = f"{r.get('action')} {r.get('target')}{' ' + str(r['params']) if r.get('params') else ''}"
        table.append((cell("planned_s"), cell("applied_s"), cell("error_ms"), event, cell("status"),
                      cell("port_drops"), cell("tcp_retrans"), cell("flows_in_flight"), cell("fct_inflation"),
                      cell("stalled_flows"), cell("first_packet_ms")))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)
