"""The live view: one sampler per UI process turns port counters into link utilisation.

Why one sampler thread rather than work per request: every open page subscribes to the stream,
and a projector, two laptops and a test browser must not multiply the load on the switches.
The sampler reads every bridge's port stats once per interval, keeps the latest snapshot and
wakes the Server-Sent Events streams waiting on it. The layout is cached until the topology,
the run-time containers or tenant membership change.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from picloud.errors import PiCloudError
from topology.model import Topology
from webui import catalog, layout, metrics
from webui.sources import DataSource

log = logging.getLogger(__name__)
EVENTS_KEPT = 1000
# Below a second on purpose: the promise is an update at least once a second, and a loaded
# machine adds a few hundred milliseconds of jitter to each sample.
DEFAULT_INTERVAL = 0.75
STAT_WORKERS = 16  # parallel port-stats reads; each is a short HTTP call to the controller
STALE_INTERVALS = 5  # a bridge unread for this many intervals shows no rate rather than an old one


def display_topology(topo: Topology, runtime: dict[str, dict[str, Any]]) -> tuple[Topology, dict[str, int]]:
    """The topology plus containers added at run time (tenant members), which the fabric keeps in
    the run state, not in the topology. Returns it with {container: its real port on the Pi},
    because the model numbers ports by insertion and the fabric never reuses a removed port."""
    if not runtime:
        return topo, {}
    shown = Topology.from_dict(topo.to_dict())
    pi_ports = {}
    for name, entry in sorted(runtime.items(), key=lambda kv: (str(kv[1].get("pi")), int(kv[1].get("port", 0)))):
        if name in shown or entry.get("pi") not in shown:
            continue
        ip = entry.get("ip")
        if ip and "/" not in str(ip) and entry.get("prefixlen") is not None:
            ip = f"{ip}/{entry['prefixlen']}"
        shown.add_container(name, entry["pi"], ip=ip, mac=entry.get("mac"))
        pi_ports[name] = int(entry["port"])
    return shown, pi_ports


class EventLog:
    """Recent events from the controller and from this UI, deduplicated and in time order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self._seen: set[tuple[float, str, str]] = set()

    def add(self, kind: str, text: str, source: str = "ui", t: float | None = None) -> None:
        event: dict[str, Any] = {"t": time.time() if t is None else float(t), "kind": kind, "text": text,
                                 "source": source}
        key = (event["t"], kind, text)
        with self._lock:
            if key in self._seen:
                return
            if len(self._events) == self._events.maxlen:
                old = self._events[0]
                self._seen.discard((old["t"], old["kind"], old["text"]))
            self._seen.add(key)
            self._events.append(event)

    def merge(self, events: list[dict[str, Any]] | None) -> None:
        for e in events or []:
            if isinstance(e, dict) and "t" in e and "text" in e:
                self.add(str(e.get("kind", "controller")), str(e["text"]), source="controller", t=e["t"])

    def since(self, t: float, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            out = [e for e in self._events if e["t"] > t and (kind is None or e["kind"] == kind)]
        return sorted(out, key=lambda e: e["t"])


class LiveView:
    """Layout cache, sampler and event log over one DataSource."""

    def __init__(self, source: DataSource, interval: float = DEFAULT_INTERVAL) -> None:
        self.source = source
        self.interval = interval
        self.events = EventLog()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._layout_key: Any = None
        self._layout: dict[str, Any] | None = None
        self._display: tuple[Topology, dict[str, int]] | None = None
        # Each bridge keeps its own last two readings (time, counters): a slow switch delays
        # only its own links, never the whole picture.
        self._readings: dict[str, list[tuple[float, metrics.Counters]]] = {}
        self._in_flight: set[str] = set()
        self._readings_lock = threading.Lock()
        self._prev_t: float | None = None
        self._snapshot: dict[str, Any] = {"seq": 0, "links": [], "switches": {}, "totals": {}}
        self._down: set[str] | None = None
        self._connected: dict[str, bool] = {}
        self._thread: threading.Thread | None = None
        self.verification: dict[str, Any] = {"running": False, "report": None, "error": None}
        self._stop = threading.Event()
        self._sampling = threading.Lock()
        self._pool = ThreadPoolExecutor(STAT_WORKERS, thread_name_prefix="webui-stats")

    # --- topology and layout ------------------------------------------------------------------
    def tenants(self) -> list[dict[str, Any]]:
        return catalog.normalise_tenants(self.source.tenants())

    def display(self) -> tuple[Topology, dict[str, int], dict[str, Any]]:
        """(shown topology, real Pi ports of run-time containers, layout), rebuilt on change."""
        topo = self.source.topology()
        runtime = self.source.runtime_containers()
        members = catalog.membership(self.tenants())
        key = (id(topo), topo.graph.number_of_nodes(), topo.graph.number_of_edges(),
               tuple(sorted((k, str(v.get("pi")), str(v.get("port"))) for k, v in runtime.items())),
               tuple(sorted(members.items())))
        with self._lock:
            if key != self._layout_key or self._display is None or self._layout is None:
                shown, pi_ports = display_topology(topo, runtime)
                drawn = layout.compute_layout(shown, members)
                for link in drawn["links"]:
                    for end, other in (("a", "b"), ("b", "a")):
                        if link[end] in pi_ports:
                            link[f"{other}_port"] = pi_ports[link[end]]
                self._display, self._layout, self._layout_key = (shown, pi_ports), drawn, key
            return self._display[0], self._display[1], self._layout

    # --- sampling -----------------------------------------------------------------------------
    def _read_stats(self, node: str) -> None:
        counters = None
        try:
            counters = metrics.counters_by_port(self.source.port_stats(node))
        except Exception as exc:  # noqa: BLE001 - one unreadable switch must not blank the page
            log.debug("port stats %s: %s", node, exc)
        t = time.monotonic()
        with self._readings_lock:
            self._in_flight.discard(node)
            if counters is not None:
                history = self._readings.setdefault(node, [])
                history.append((t, counters))
                del history[:-2]

    def _read_all(self, bridges: list[str]) -> tuple[dict, dict, dict[str, float]]:
        """Start a read of every bridge not still busy with the previous one, wait for them up to
        most of an interval, and return (now, prev, dt) per bridge from the readings there are."""
        with self._readings_lock:
            todo = [b for b in bridges if b not in self._in_flight]
            self._in_flight.update(todo)
        futures.wait([self._pool.submit(self._read_stats, b) for b in todo], timeout=0.8 * self.interval)
        now_t = time.monotonic()
        now, prev, dt = {}, {}, {}
        with self._readings_lock:
            for b in bridges:
                history = self._readings.get(b, [])
                if history:
                    now[b] = history[-1][1]
                if len(history) == 2 and now_t - history[1][0] < STALE_INTERVALS * self.interval:
                    prev[b], dt[b] = history[0][1], history[1][0] - history[0][0]
        return now, prev, dt

    def sample(self) -> dict[str, Any]:
        """Read every bridge once, compute rates against the previous sample, publish.

        Samples closer together than half the interval are not taken (the latest is returned):
        counter deltas over a few milliseconds are mostly quantisation noise."""
        with self._sampling:
            if self._prev_t is not None and time.monotonic() - self._prev_t < self.interval / 2:
                return self.latest()
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        topo, pi_ports, _ = self.display()
        now_t = time.monotonic()
        bridges = topo.bridges
        counters, prev, dt = self._read_all(bridges)
        state = self.source.controller_state()
        if state is not None:
            self.events.merge(state.get("events"))
        down = metrics.down_links_from_state(topo, state)
        links = metrics.link_rates(topo, counters, prev, dt, down, pi_ports)
        connected = {}
        for sw in (state or {}).get("switches") or []:
            if isinstance(sw, dict) and sw.get("name"):
                connected[str(sw["name"])] = bool(sw.get("connected"))
        self._note_changes(down, connected)
        fabric = [ln for ln in links if "sent_bps" not in ln]
        snapshot = {
            "time": time.time(),
            "interval": self.interval,
            "controller": state is not None,
            "links": links,
            "switches": connected,
            "totals": {
                # Each flow is counted once, where it enters: at its sender's container link.
                "sent_bps": round(sum(ln.get("sent_bps", 0.0) for ln in links), 1),
                "busiest_bps": max((ln["bps"] for ln in fabric), default=0.0),
                "links_up": sum(1 for ln in fabric if ln["up"]),
                "links_down": sum(1 for ln in fabric if not ln["up"]),
            },
        }
        with self._changed:
            self._prev_t = now_t
            snapshot["seq"] = self._snapshot["seq"] + 1
            self._snapshot = snapshot
            self._changed.notify_all()
        return snapshot

    def _note_changes(self, down: set[str], connected: dict[str, bool]) -> None:
        if self._down is not None:
            for lid in sorted(down - self._down):
                self.events.add("link", f"link {lid.replace(':', '-')} down")
            for lid in sorted(self._down - down):
                self.events.add("link", f"link {lid.replace(':', '-')} up")
        for name, is_connected in connected.items():
            if self._connected.get(name, not is_connected) != is_connected and self._connected:
                self.events.add("switch", f"switch {name} {'connected' if is_connected else 'disconnected'}")
        self._down, self._connected = set(down), dict(connected)

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot

    def wait_newer(self, seq: int, timeout: float) -> dict[str, Any]:
        """Block until a snapshot newer than `seq` exists (or timeout); return the latest."""
        with self._changed:
            self._changed.wait_for(lambda: self._snapshot["seq"] > seq or self._stop.is_set(), timeout)
            return self._snapshot

    # --- isolation checks -----------------------------------------------------------------------
    def start_verify(self) -> bool:
        """Run the source's isolation check in the background; False if one is already running.
        Why in the background: probing every tenant pair takes seconds, longer than a request."""
        with self._lock:
            if self.verification["running"]:
                return False
            self.verification = {"running": True, "started": time.time(), "report": self.verification["report"],
                                 "error": None}
        threading.Thread(target=self._verify, name="webui-verify", daemon=True).start()
        return True

    def _verify(self) -> None:
        report, error = None, None
        try:
            report = self.source.verify() | {"time": time.time()}
        except Exception as exc:  # noqa: BLE001 - shown on the page; our bugs also get the log
            error = str(exc)
            if not isinstance(exc, PiCloudError):
                log.exception("isolation check")
        with self._lock:
            self.verification = {"running": False, "started": self.verification.get("started"),
                                 "report": report or self.verification["report"], "error": error}
        if report is not None:
            self.events.add("tenant", f"isolation check: {'OK' if report.get('ok') else 'FAILED'} "
                                      f"({report.get('probes', 0)} probes)")

    # --- the sampler thread -------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="webui-sampler", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - keep sampling; the log says what broke
                log.exception("web UI sampler")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
