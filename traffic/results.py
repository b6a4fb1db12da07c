"""Per-run results: flow records, the summary a researcher quotes, and the run directory on disk.

A run directory holds `trace.csv` (what was planned), `flows.csv` (what happened, one row per
planned flow: unfinished and failed flows are kept, never dropped), `summary.json` (computed from
flows.csv by `summarize`) and `meta.json` (topology, tenants, controller apps, versions, seed,
command line). `Results.load(DIR)` reads one back.

Definitions used in the summary:
- FCT: microseconds from the flow's first packet (its header on an idle pooled persistent
  connection, or, `handshake`, the SYN of a connection it had to open) to the receiver's
  application-level acknowledgement of the last byte (see traffic.agent).
- ideal FCT: the payload at line rate, size * 8 * OVERHEAD / C; slowdown = FCT / ideal. The ideal
  leaves out propagation and the acknowledgement's trip back, so tiny flows show large slowdowns on
  any real stack.
- measured flows: status done/unfinished/error with a scheduled start at or after the warm-up;
  warm-up flows are recorded in flows.csv (`warmup`=1) but excluded from every statistic.
- goodput: bytes received by servers for measured flows, over the measured interval.
- achieved load: those bytes times OVERHEAD, per sender link, over the measured interval, compared
  with the target wire load (rho * scale_size / scale_time).
- size buckets: < 100 KB, 100 KB - 10 MB, > 10 MB (10^3 / 10^6 bytes, as the literature uses).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from picloud.errors import TrafficError

BUCKETS = (("small", "< 100 KB", 0, 100_000), ("medium", "100 KB - 10 MB", 100_000, 10_000_000),
           ("large", "> 10 MB", 10_000_000, float("inf")))
STATUSES = ("done", "unfinished", "error", "not_started")


@dataclass
class FlowRecord:
    id: int
    src: str
    dst: str
    tenant: str
    size: int
    scheduled: float  # seconds after t0 (closed loop: think time after the predecessor)
    job: int
    status: str
    start: float | None  # when its first packet went out (header or SYN), seconds after t0
    lateness_us: float | None
    fct_us: float | None
    sent: int
    bytes_received: int
    warmup: bool
    ideal_us: float
    error: str = ""
    handshake: bool = False  # it opened its own connection: its FCT includes the handshake

    @property
    def slowdown(self) -> float | None:
        return None if self.fct_us is None or self.ideal_us <= 0 else self.fct_us / self.ideal_us

    @property
    def measured(self) -> bool:
        return not self.warmup and self.status != "not_started"


FLOW_FIELDS = [f.name for f in fields(FlowRecord)] + ["slowdown"]


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}


def summarize(records: list[FlowRecord], meta: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run, from its flow records and metadata (pure)."""
    counts = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    measured = [r for r in records if r.measured]
    done = [r for r in measured if r.status == "done" and r.fct_us is not None]
    buckets = {}
    for key, label, lo, hi in BUCKETS:
        inside = [r for r in done if lo <= r.size < hi]
        buckets[key] = {"label": label, "flows": len(inside),
                        "fct_us": _stats([r.fct_us for r in inside if r.fct_us is not None]),
                        "slowdown": _stats([s for r in inside if (s := r.slowdown) is not None])}
    duration = float(meta.get("duration", 0.0))
    warmup = float(meta.get("warmup", 0.0))
    interval = max(duration - warmup, 1e-9)
    received = sum(r.bytes_received for r in measured)
    senders = max(1, len(meta.get("hosts") or {r.src for r in records}))
    link_bps = float(meta.get("link_bps", 0.0)) or 1.0
    overhead = float(meta.get("overhead", 1.0))
    lateness = [r.lateness_us for r in measured if r.lateness_us is not None]
    jobs: dict[int, list[FlowRecord]] = {}
    for r in done:
        if r.job >= 0:
            jobs.setdefault(r.job, []).append(r)
    job_times = []
    for flows in jobs.values():
        spans = [(f.start, f.start + f.fct_us / 1e6) for f in flows if f.start is not None and f.fct_us is not None]
        if len(spans) == len(flows):  # a job's time is known once every flow of it finished
            job_times.append((max(end for _, end in spans) - min(start for start, _ in spans)) * 1e6)
    out: dict[str, Any] = {
        "workload": meta.get("workload"), "pattern": meta.get("pattern"), "seed": meta.get("seed"),
        "duration_s": duration, "warmup_s": warmup, "flows": len(records), "measured_flows": len(measured),
        "status": counts, "unfinished": sum(1 for r in measured if r.status != "done"),
        "buckets": buckets,
        "all": {"flows": len(done), "fct_us": _stats([r.fct_us for r in done if r.fct_us is not None]),
                "slowdown": _stats([s for r in done if (s := r.slowdown) is not None])},
        "goodput_mbps": received * 8 / interval / 1e6,
        "bytes_received": received,
        "target_load": meta.get("load"), "target_wire_load": meta.get("wire_load", meta.get("load")),
        "achieved_load": received * 8 * overhead / (senders * link_bps * interval),
        "senders": senders, "link_bps": link_bps,
        "lateness_us": _stats(lateness),
    }
    if job_times:
        out["jobs"] = {"count": len(job_times), "completion_us": _stats(job_times)}
    verdict = meta.get("fidelity")
    if verdict:  # traffic.fidelity: the verdict and its reasons (the samples stay in fidelity.json)
        out["fidelity"] = {k: verdict.get(k) for k in ("verdict", "reasons", "checks", "numbers")}
    return out


def write_flows(records: list[FlowRecord], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FLOW_FIELDS)
        for r in records:
            row = asdict(r)
            row["warmup"] = int(r.warmup)
            row["handshake"] = int(r.handshake)
            row["slowdown"] = r.slowdown
            writer.writerow(["" if row[k] is None else row[k] for k in FLOW_FIELDS])


def read_flows(path: Path) -> list[FlowRecord]:
    def opt(value: str, cast: Any) -> Any:
        return None if value == "" else cast(value)

    records = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                records.append(FlowRecord(
                    int(row["id"]), row["src"], row["dst"], row["tenant"], int(row["size"]),
                    float(row["scheduled"]), int(row["job"]), row["status"], opt(row["start"], float),
                    opt(row["lateness_us"], float), opt(row["fct_us"], float), int(row["sent"]),
                    int(row["bytes_received"]), row["warmup"] in ("1", "True"), float(row["ideal_us"]),
                    row.get("error") or "", row.get("handshake") in ("1", "True")))
            except (KeyError, TypeError, ValueError):
                raise TrafficError(f"{path}:{line}: malformed flow record (written by another "
                                   "version?)") from None
    return records


class Results:
    """One run's results: `.flows`, `.summary`, `.meta`, `.directory`, `.report()`, `.plots()`."""

    def __init__(self, directory: Path, flows: list[FlowRecord], summary: dict[str, Any],
                 meta: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.flows = flows
        self.summary = summary
        self.meta = meta

    @classmethod
    def save(cls, directory: Path, flows: list[FlowRecord], meta: dict[str, Any]) -> Results:
        directory.mkdir(parents=True, exist_ok=True)
        summary = summarize(flows, meta)
        write_flows(flows, directory / "flows.csv")
        (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return cls(directory, flows, summary, meta)

    @classmethod
    def load(cls, directory: str | Path) -> Results:
        directory = Path(directory)
        missing = [n for n in ("flows.csv", "meta.json") if not (directory / n).is_file()]
        if missing:
            raise TrafficError(f"{directory}: no {', '.join(missing)} (not a traffic results directory)")
        meta = json.loads((directory / "meta.json").read_text())
        flows = read_flows(directory / "flows.csv")
        if "fidelity" not in meta and (directory / "fidelity.json").is_file():
            # A run whose verdict was not kept in meta.json (an older version, a trimmed copy): the
            # samples are there, so the verdict is recomputed from them (traffic.fidelity).
            try:
                from traffic.fidelity import assess_recorded

                meta["fidelity"] = assess_recorded(directory)
            except (KeyError, ValueError, TypeError, OSError):
                pass
        return cls(directory, flows, summarize(flows, meta), meta)

    @property
    def fidelity(self) -> dict[str, Any] | None:
        """`{"verdict": "faithful"|"degraded", "reasons": [...], "checks", "numbers"}` of the run
        (traffic.fidelity), or None for a run recorded before the monitor existed."""
        return self.summary.get("fidelity")

    def report(self, other: Results | None = None) -> str:
        from traffic.report import render

        return render([self] if other is None else [self, other])

    def plots(self) -> list[Path]:
        from traffic.report import plots

        return plots(self)
