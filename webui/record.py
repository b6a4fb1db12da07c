"""Record a run's live view at 1 Hz into its results directory, for replay without a fabric.

What the live UI shows (link utilisation and state, switch connections, events) is sampled by the
UI's own sampler (`webui.live.LiveView`, so a replay shows exactly what the live page showed) once
a second while a traffic run replays, and written with the drawing's layout, the scenario's events
and the flow counts per second (from the run's own flow records, which are exact: started, in
flight, done) as `timeline.json`. The Experiments page and `picloud ui export` play that file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)
TIMELINE = "timeline.json"
VERSION = 1
LINK_KEYS = ("id", "a", "b", "up", "bps", "util")


def flow_counts(flows: Sequence[Any], t: float) -> dict[str, int]:
    """Flows started, in flight and done at `t` seconds after t0 (pure)."""
    started = done = 0
    for f in flows:
        if f.start is None or f.start > t:
            continue
        started += 1
        if f.fct_us is not None and f.start + f.fct_us / 1e6 <= t:
            done += 1
    return {"started": started, "in_flight": started - done, "done": done}


def build_timeline(layout: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], flows: Sequence[Any],
                   scenario: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The replay file's content (pure): layout, samples with flow counts, scenario events."""
    out_samples = []
    for s in samples:
        out_samples.append({**s, "flows": flow_counts(flows, float(s["t"]))})
    events = [{"t": e.get("applied_s") if e.get("applied_s") not in (None, "") else e.get("planned_s"),
               "planned": e.get("planned_s"), "action": e.get("action"), "target": e.get("target"),
               "params": e.get("params") or "", "status": e.get("status")} for e in scenario]
    return {"version": VERSION, "name": meta.get("name", ""), "layout": dict(layout), "samples": out_samples,
            "scenario": events, "summary": dict(meta.get("summary") or {}),
            "duration": meta.get("duration"), "flows_total": len(flows)}


class Recorder:
    """Samples the live view every `interval` s from `start(t0)` to `stop()` (see module doc)."""

    def __init__(self, testbed: Run, interval: float = 1.0) -> None:
        from webui.live import LiveView
        from webui.sources import TestbedSource

        self.view = LiveView(TestbedSource(testbed, results=None), interval=interval)
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.layout: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample from now on; times are CLOCK_MONOTONIC until `write` makes them run-relative."""
        try:
            self.layout = self.view.display()[2]
        except Exception as exc:  # noqa: BLE001 - a run without a picture still runs
            log.warning("recording: no layout (%s)", exc)
        self._thread = threading.Thread(target=self._run, name="webui-record", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen_events = 0.0
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                snap = self.view.sample()
                events = self.view.events.since(seen_events)
                if events:
                    seen_events = max(float(e.get("t", 0)) for e in events)
                self.samples.append({
                    "t": time.monotonic(),
                    "links": [{k: ln.get(k) for k in LINK_KEYS} for ln in snap.get("links", [])],
                    "switches": snap.get("switches", {}), "totals": snap.get("totals", {}),
                    "events": [{"kind": e.get("kind"), "text": e.get("text")} for e in events],
                })
            except Exception as exc:  # noqa: BLE001 - one failed sample is a gap, not a failed run
                log.debug("recording sample failed: %s", exc)
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.view.stop()

    def write(self, directory: Path, t0: float, flows: Sequence[Any], scenario: Sequence[Mapping[str, Any]],
              meta: Mapping[str, Any]) -> Path:
        """timeline.json with sample times in seconds after the run's t0 (the flows' clock)."""
        path = Path(directory) / TIMELINE
        samples = [{**s, "t": round(float(s["t"]) - t0, 3)} for s in self.samples]
        data = build_timeline(self.layout, samples, flows, scenario, meta)
        path.write_text(json.dumps(data, separators=(",", ":"), default=str) + "\n")
        return path
