"""Flow, group and meter tables in the shapes the Switch page shows; pure.

Input is what Ryu's ofctl_rest returns (`/stats/flow/<dpid>` and friends, also what
`Testbed.flows()` returns), which comes either bare (a list) or keyed by the DPID in decimal.
Output rows are flat and sortable, with match and actions rendered as the compact text
researchers already read in `ovs-ofctl dump-flows`, so a filter can search them as strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from picloud.errors import UIError

MAX_LIMIT = 5000


def unwrap(raw: Any) -> list[dict[str, Any]]:
    """ofctl_rest answers `{"<dpid>": [...]}`; accept that, a bare list, or nothing."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        if len(raw) != 1:
            return []
        raw = next(iter(raw.values()))
    if not isinstance(raw, list):
        return []
    return [dict(r) for r in raw if isinstance(r, Mapping)]


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def _actions(flow: Mapping[str, Any]) -> str:
    """OF1.3 flows carry `instructions` or (ofctl_rest's flattening) `actions` strings."""
    if "actions" in flow:
        actions = flow["actions"]
        return _text(actions) if actions else "drop"
    parts = []
    for inst in flow.get("instructions") or []:
        if isinstance(inst, Mapping):
            kind = inst.get("type", "")
            if "actions" in inst:
                parts.append(f"{kind.lower()}({_text(inst['actions'])})" if kind else _text(inst["actions"]))
            elif "table_id" in inst:
                parts.append(f"GOTO_TABLE:{inst['table_id']}")
            else:
                parts.append(_text(inst))
        else:
            parts.append(str(inst))
    return ",".join(parts) or "drop"


def flow_row(flow: Mapping[str, Any]) -> dict[str, Any]:
    """One flow entry as a table row; `age` is seconds since the entry was installed."""
    match = flow.get("match") or {}
    age = float(flow.get("duration_sec") or 0) + float(flow.get("duration_nsec") or 0) / 1e9
    return {
        "table": int(flow.get("table_id") or 0),
        "priority": int(flow.get("priority") or 0),
        "cookie": f"{int(flow.get('cookie') or 0):#x}",
        "match": _text(match) if match else "*",
        "actions": _actions(flow),
        "packets": int(flow.get("packet_count") or 0),
        "bytes": int(flow.get("byte_count") or 0),
        "age": round(age, 3),
        "idle_timeout": int(flow.get("idle_timeout") or 0),
        "hard_timeout": int(flow.get("hard_timeout") or 0),
    }


def flow_rows(raw: Any) -> list[dict[str, Any]]:
    """Rows in pipeline order: by table, then highest priority first (the order OVS matches)."""
    rows = [flow_row(f) for f in unwrap(raw)]
    rows.sort(key=lambda r: (r["table"], -r["priority"], r["match"]))
    return rows


def group_row(group: Mapping[str, Any]) -> dict[str, Any]:
    buckets = group.get("buckets") or []
    return {
        "group_id": int(group.get("group_id") or 0),
        "type": str(group.get("type", "")),
        "buckets": [
            {k: (_text(v) if k == "actions" else v) for k, v in b.items()} for b in buckets
            if isinstance(b, Mapping)
        ],
        "packets": int(group.get("packet_count") or 0),
        "bytes": int(group.get("byte_count") or 0),
    }


def merge_groups(stats: Any, desc: Any) -> list[dict[str, Any]]:
    """Group rows from ofctl_rest's two halves: `/stats/groupdesc` (type, buckets and their
    actions) and `/stats/group` (packet and byte counters, per bucket too), joined on group_id."""
    by_id: dict[int, dict[str, Any]] = {}
    for entry in unwrap(desc):
        by_id.setdefault(int(entry.get("group_id") or 0), {}).update(entry)
    for entry in unwrap(stats):
        merged = by_id.setdefault(int(entry.get("group_id") or 0), {})
        merged.update({k: v for k, v in entry.items() if k != "buckets"})
    rows = []
    for gid in sorted(by_id):
        row = group_row(by_id[gid])
        for bucket, counts in zip(row["buckets"], by_id[gid].get("bucket_stats") or [], strict=False):
            if isinstance(counts, Mapping):
                bucket["packets"] = int(counts.get("packet_count") or 0)
        rows.append(row)
    return rows


def meter_row(meter: Mapping[str, Any]) -> dict[str, Any]:
    bands = meter.get("bands") or meter.get("band_stats") or []
    return {
        "meter_id": int(meter.get("meter_id") or 0),
        "flags": _text(meter.get("flags", "")),
        "bands": [dict(b) for b in bands if isinstance(b, Mapping)],
        "packets": int(meter.get("packet_in_count") or meter.get("packet_count") or 0),
        "bytes": int(meter.get("byte_in_count") or meter.get("byte_count") or 0),
        "age": float(meter.get("duration_sec") or 0),
    }


def matches(row: Mapping[str, Any], query: str) -> bool:
    """Every whitespace-separated term must occur in the row's text (case-insensitive);
    `table=2` or `priority=100` terms compare that column exactly."""
    text = f"table={row['table']} priority={row['priority']} cookie={row['cookie']} " \
           f"{row['match']} {row['actions']}".lower()
    for term in query.lower().split():
        key, sep, value = term.partition("=")
        if sep and key in ("table", "priority"):
            if str(row[key]) != value:
                return False
        elif term not in text:
            return False
    return True


def page_args(args: Mapping[str, str]) -> tuple[str, int, int]:
    """Validate `q`, `limit`, `offset` query arguments before touching any table."""
    query = args.get("q", "") or ""
    try:
        limit = int(args.get("limit", 1000))
        offset = int(args.get("offset", 0))
    except ValueError:
        raise UIError("query: limit and offset must be integers (for example ?limit=100&offset=0)") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise UIError(f"query: limit {limit}, offset {offset} (limit is 1..{MAX_LIMIT}, offset >= 0)")
    return query, limit, offset


def filter_page(rows: Iterable[dict[str, Any]], query: str, limit: int, offset: int) -> dict[str, Any]:
    rows = list(rows)
    selected = [r for r in rows if matches(r, query)] if query.strip() else rows
    return {
        "total": len(rows),
        "matched": len(selected),
        "offset": offset,
        "limit": limit,
        "flows": selected[offset:offset + limit],
    }
