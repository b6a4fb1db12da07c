"""The trace: every flow of a run (source, destination, size, start), computed before anything runs.

Pure and seeded: the same arguments give the same trace, so a run can be repeated or compared, and
the trace is saved as `trace.csv` next to the results. The engine only replays it.

Scaling (as MaxiNet offers for slow links): the trace is generated for the nominal link rate at
load rho; `scale_size` multiplies every size and `scale_time` stretches every start time. The load
then offered to the real link is rho * scale_size / scale_time (`wire_load` in the metadata), and
that is what achieved load is compared against. Both default to 1.

Arrivals: "poisson" (default), "onoff" (lognormal ON/OFF periods, same mean rate) and "closed"
(each sender keeps `concurrency` flows in flight: a flow's successor starts `think` seconds, drawn
from an exponential, after it completes; `after` names the predecessor and `start` is then the
think time). Job patterns (incast, shuffle) use Poisson job arrivals; all flows of a job share
its `job` id and start time.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picloud.errors import TrafficError
from traffic import arrivals, patterns
from traffic.workloads import Workload

ARRIVALS = ("poisson", "onoff", "closed")
FIELDS = ("id", "src", "dst", "size", "start", "job", "after")
MIN_FLOW_SECONDS = 100e-6  # a closed-loop flow takes at least about one RTT, whatever its size


@dataclass(frozen=True)
class Flow:
    id: int
    src: str
    dst: str
    size: int  # bytes
    start: float  # seconds after the run's t0 (closed loop: think time after `after` completes)
    job: int = -1
    after: int = -1


@dataclass
class Trace:
    flows: list[Flow]
    meta: dict[str, Any] = field(default_factory=dict)

    def by_source(self) -> dict[str, list[Flow]]:
        out: dict[str, list[Flow]] = {}
        for f in self.flows:
            out.setdefault(f.src, []).append(f)
        return out

    @property
    def hosts(self) -> list[str]:
        return sorted({f.src for f in self.flows} | {f.dst for f in self.flows})

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(FIELDS)
            for f in self.flows:
                writer.writerow([f.id, f.src, f.dst, f.size, f"{f.start:.9f}", f.job, f.after])
        return path

    @classmethod
    def from_csv(cls, path: str | Path, meta: dict[str, Any] | None = None) -> Trace:
        path = Path(path)
        flows = []
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise TrafficError(f"{path}:1: header {reader.fieldnames} (a trace has columns "
                                   f"{', '.join(FIELDS)})")
            for line, row in enumerate(reader, start=2):
                try:
                    flows.append(Flow(int(row["id"]), row["src"], row["dst"], int(row["size"]),
                                      float(row["start"]), int(row["job"]), int(row["after"])))
                except (TypeError, ValueError):
                    raise TrafficError(f"{path}:{line}: malformed trace row (columns "
                                       f"{', '.join(FIELDS)})") from None
        return cls(flows, dict(meta or {}))


def generate(
    hosts: list[str], workload: Workload, load: float, pattern: str, duration: float, seed: int,
    link_bps: float, arrival: str = "poisson", scale_size: float = 1.0, scale_time: float = 1.0,
    concurrency: int = 1, think: float = 0.0, on_mean: float = 1.0, off_mean: float = 1.0,
    **pattern_args: Any,
) -> Trace:
    """All flows of a run of `duration` seconds over `hosts`. Validates everything before drawing."""
    arrivals.check_load(load)
    if not duration > 0:
        raise TrafficError(f"duration: {duration} s (must be positive)")
    if arrival not in ARRIVALS:
        raise TrafficError(f"arrival {arrival!r}: unknown (one of {', '.join(ARRIVALS)})")
    if not (scale_size > 0 and scale_time > 0):
        raise TrafficError(f"scale: size {scale_size}, time {scale_time} (both must be positive)")
    if concurrency < 1:
        raise TrafficError(f"concurrency: {concurrency} (at least 1 flow in flight)")
    rng = np.random.default_rng(seed)
    pat = patterns.make(pattern, hosts, rng, **pattern_args)
    span = duration / scale_time  # trace time before stretching
    flows: list[Flow] = []

    def add(src: str, dst: str, size: int, start: float, job: int = -1, after: int = -1) -> int:
        fid = len(flows)
        flows.append(Flow(fid, src, dst, max(1, int(round(size * scale_size))), start, job, after))
        return fid

    if pat.kind == "job":
        response = pat.params.get("response")
        mean = float(response) if response else workload.mean
        per_job_bytes = mean * pat.receiver_flows
        rate = arrivals.poisson_rate(load, link_bps, per_job_bytes) * pat.receivers
        for job, t in enumerate(arrivals.poisson(rng, rate, span)):
            pairs = pat.job(rng)
            sizes = [int(response)] * len(pairs) if response else workload.sample(rng, len(pairs))
            for (src, dst), size in zip(pairs, sizes, strict=True):
                add(src, dst, int(size), float(t) * scale_time, job=job)
    elif arrival == "closed":
        seconds_per_byte = 8 * arrivals.OVERHEAD / link_bps
        for src in pat.senders:
            for _chain in range(concurrency):
                elapsed, prev = 0.0, -1
                while elapsed < span:
                    size = int(workload.sample(rng, 1)[0])
                    gap = float(rng.exponential(think)) if think > 0 else 0.0
                    prev = add(src, pat.destination(rng, src), size, gap * scale_time, after=prev)
                    elapsed += gap + max(MIN_FLOW_SECONDS, size * seconds_per_byte)
    else:
        rate = arrivals.poisson_rate(load, link_bps, workload.mean)
        per_src: list[tuple[float, str, int]] = []
        for src in pat.senders:
            if arrival == "onoff":
                times = arrivals.on_off(rng, rate, span, on_mean, off_mean)
            else:
                times = arrivals.poisson(rng, rate, span)
            sizes = workload.sample(rng, len(times))
            per_src.extend((float(t), src, int(s)) for t, s in zip(times, sizes, strict=True))
        per_src.sort()
        for t, src, size in per_src:
            add(src, pat.destination(rng, src), size, t * scale_time)
    meta = {
        "workload": workload.name, "workload_mean_bytes": workload.mean, "load": load, "pattern": pattern,
        "pattern_params": {k: v for k, v in pat.params.items()}, "duration": duration, "seed": seed,
        "link_bps": link_bps, "arrival": arrival, "scale_size": scale_size, "scale_time": scale_time,
        "wire_load": load * scale_size / scale_time, "hosts": list(pat.hosts), "overhead": arrivals.OVERHEAD,
    }
    if arrival == "closed":
        meta.update(concurrency=concurrency, think=think)
    return Trace(flows, meta)


def flow_dict(flow: Flow) -> dict[str, Any]:
    return asdict(flow)
