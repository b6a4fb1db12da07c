"""Tenants and experiments as the UI lists them: normalisation of files other packages write.

Tenants come from the run's tenants YAML (written by `tenants.store`), experiments from traffic
result directories (`summary.json`, `flows.csv`, `*.png`, written by `traffic.results`). Both
formats belong to other packages, so this module reads them defensively: it accepts the shapes
those packages document and ignores keys it does not know, so a new field there never breaks
the UI. Functions here read files but change nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# High-contrast colours that read on a dark projector background. A tenant named after one of
# them gets it (the demo's "red" and "blue" tenants are red and blue); others get one by hash.
PALETTE = {
    "red": "#ef4444", "blue": "#3b82f6", "green": "#22c55e", "orange": "#f97316",
    "purple": "#a855f7", "yellow": "#eab308", "cyan": "#06b6d4", "pink": "#ec4899",
    "teal": "#14b8a6", "lime": "#84cc16", "indigo": "#6366f1", "amber": "#f59e0b",
}
_COLOURS = list(PALETTE.values())
EXPERIMENT_FILES = (".png", ".csv", ".json", ".txt", ".svg")


def tenant_colour(name: str) -> str:
    if name in PALETTE:
        return PALETTE[name]
    return _COLOURS[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(_COLOURS)]


def _members(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, Mapping):
        raw = [{"name": k, **(v if isinstance(v, Mapping) else {})} for k, v in raw.items()]
    out = []
    for m in raw or []:
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, Mapping) or "name" not in m:
            continue
        out.append({k: m.get(k) for k in ("name", "pi", "ip", "mac", "rack", "port")} | {"name": str(m["name"])})
    return out


def normalise_tenants(data: Any) -> list[dict[str, Any]]:
    """Tenants YAML (`{"tenants": [...]}`, `{"tenants": {name: ...}}`, or a bare list/mapping)
    to a list of {name, id, subnet, rate, colour, members, verify}, sorted by name."""
    if isinstance(data, Mapping) and "tenants" in data:
        data = data["tenants"]
    if isinstance(data, Mapping):
        data = [{"name": k, **(v if isinstance(v, Mapping) else {})} for k, v in data.items()]
    tenants = []
    for t in data or []:
        if not isinstance(t, Mapping) or "name" not in t:
            continue
        name = str(t["name"])
        verify = t.get("verify", t.get("last_verify"))
        subnets = t.get("subnets") or ([t["subnet"]] if t.get("subnet") else [])
        tenants.append({
            "name": name,
            "id": t.get("id", t.get("vlan", t.get("tid"))),
            "subnet": ", ".join(str(s.get("cidr")) if isinstance(s, Mapping) else str(s) for s in subnets) or None,
            "rate": t.get("rate"),
            "colour": tenant_colour(name),
            "members": _members(t.get("members")),
            "verify": dict(verify) if isinstance(verify, Mapping) else None,
        })
    tenants.sort(key=lambda t: t["name"])
    return tenants


def membership(tenants: list[dict[str, Any]]) -> dict[str, str]:
    """Container name -> tenant name."""
    return {m["name"]: t["name"] for t in tenants for m in t["members"]}


def tenant_verdicts(report: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per tenant, from an isolation report (`tenants.verify.IsolationReport.to_dict()`): leaks out
    of and into it, intra-tenant pairs reached, and ok when there are neither leaks nor misses."""
    if not report:
        return {}
    matrix = report.get("matrix") or {}
    reach = report.get("reachability") or {}
    out = {}
    for t in report.get("tenants") or []:
        leaks_out = sum((matrix.get(t) or {}).values())
        leaks_in = sum((row or {}).get(t, 0) for a, row in matrix.items() if a != t)
        r = reach.get(t) or {"pairs": 0, "failed": []}
        failed = len(r.get("failed") or [])
        out[t] = {"ok": leaks_out == 0 and leaks_in == 0 and failed == 0, "leaks_out": leaks_out,
                  "leaks_in": leaks_in, "pairs": r.get("pairs", 0), "reached": r.get("pairs", 0) - failed,
                  "time": report.get("time")}
    return out


def experiment_id(root: Path, directory: Path) -> str:
    """The directory relative to the results root, '/'-separated: stable and readable in URLs."""
    return directory.relative_to(root).as_posix()


def find_experiments(root: Path | None, max_depth: int = 3) -> list[dict[str, Any]]:
    """Every directory under `root` (to `max_depth`) holding a `summary.json`, newest first."""
    if root is None or not root.is_dir():
        return []
    found = []
    frontier = [(root, 0)]
    while frontier:
        directory, depth = frontier.pop()
        if (directory / "summary.json").is_file() and directory != root:
            found.append(directory)
        if depth < max_depth:
            frontier.extend((d, depth + 1) for d in directory.iterdir() if d.is_dir() and not d.is_symlink())
    found.sort(key=lambda d: (d / "summary.json").stat().st_mtime, reverse=True)
    return [experiment_summary(root, d) for d in found]


def inside_file(directory: Path, name: str) -> Path | None:
    """`directory/name` when it is a regular file that is no symlink and resolves inside
    `directory`; None otherwise. A results directory is written by experiments, possibly by other
    users: a `leak.txt -> /etc/shadow` symlink in it must not make the UI (running as root) a
    file server for the whole machine."""
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        return None
    path = directory / name
    try:
        if path.is_symlink() or not path.is_file():
            return None
        if path.resolve().parent != directory.resolve():
            return None
    except OSError:
        return None
    return path


def open_inside(directory: Path, name: str, mode: str = "rb") -> Any:
    """Open a file `inside_file` admits, with O_NOFOLLOW so a symlink swapped in after the check
    still fails; FileNotFoundError when it is not admitted."""
    import os
    import stat

    path = inside_file(directory, name)
    if path is None:
        raise FileNotFoundError(f"{name}: not a regular file inside the experiment directory")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(f"{name}: not a regular file")
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, newline="")


def experiment_summary(root: Path, directory: Path) -> dict[str, Any]:
    try:
        with open_inside(directory, "summary.json", "r") as f:
            summary = json.loads(f.read())
    except (OSError, ValueError) as exc:
        summary = {"error": f"summary.json unreadable: {exc}"}
    files = sorted(p.name for p in directory.iterdir()
                   if p.suffix in EXPERIMENT_FILES and inside_file(directory, p.name) is not None)
    eid = experiment_id(root, directory)
    return {
        "id": eid,
        "name": directory.name,
        "modified": (directory / "summary.json").stat().st_mtime,
        "summary": summary,
        "headline": headline(summary),
        "fidelity": fidelity_badge(summary),
        "files": files,
        "plots": [f for f in files if f.endswith(".png")],
        "flows_csv": "flows.csv" if "flows.csv" in files else None,
    }


HEADLINE = (  # (label, path into summary.json, scale)
    ("workload", ("workload",), 1), ("pattern", ("pattern",), 1), ("flows", ("flows",), 1),
    ("unfinished", ("unfinished",), 1), ("goodput Mbit/s", ("goodput_mbps",), 1),
    ("target load", ("target_load",), 1), ("achieved load", ("achieved_load",), 1),
    ("FCT p50 ms", ("all", "fct_us", "p50"), 1e-3), ("FCT p99 ms", ("all", "fct_us", "p99"), 1e-3),
    ("slowdown p99", ("all", "slowdown", "p99"), 1),
)


def fidelity_badge(summary: Mapping[str, Any]) -> dict[str, Any]:
    """`{"verdict": "faithful"|"degraded"|"not assessed", "reasons": [...]}` of a run's
    `traffic.fidelity` verdict, for the badge on its card (older runs have none)."""
    verdict = summary.get("fidelity") if isinstance(summary, Mapping) else None
    if not isinstance(verdict, Mapping) or verdict.get("verdict") not in ("faithful", "degraded"):
        return {"verdict": "not assessed", "reasons": []}
    return {"verdict": verdict["verdict"], "reasons": [str(r) for r in verdict.get("reasons") or []]}


def headline(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The few numbers an experiment card shows, from `traffic.results.summarize` output;
    absent keys are skipped, so older or partial summaries still show what they have."""
    out = []
    for label, path, scale in HEADLINE:
        value: Any = summary
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and scale != 1:
            value = value * scale
        if value is not None and not isinstance(value, Mapping | list):
            out.append((label, round(value, 3) if isinstance(value, float) else value))
    return out


def resolve_experiment(root: Path | None, eid: str) -> Path | None:
    """The directory for an id, or None if unknown or outside the root (no `..` escapes)."""
    if root is None or not eid:
        return None
    directory = (root / eid).resolve()
    if not directory.is_relative_to(root.resolve()) or not (directory / "summary.json").is_file():
        return None
    return directory


def read_flows_csv(path: Path, limit: int = 200) -> dict[str, Any]:
    """The first `limit` rows of flows.csv, for the experiment page's table (no symlinks)."""
    import csv

    with open_inside(path.parent, path.name, "r") as f:
        reader = csv.DictReader(f)
        rows: list[dict[str, str]] = []
        total = 0
        for row in reader:
            total += 1
            if len(rows) < limit:
                rows.append(row)
        return {"columns": reader.fieldnames or [], "rows": rows, "total": total}
