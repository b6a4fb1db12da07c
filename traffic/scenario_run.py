"""The scheduler that applies a scenario timeline to a live testbed, and writes events.csv.

`prepare(testbed, scenario, horizon)` validates the scenario against the run (topology, tenants,
controller, netem) before anything happens; `ScenarioRunner.start(t0)` applies its steps on a
thread at t0 + step.t (CLOCK_MONOTONIC, the clock the traffic agents share), `wait()` joins it and
`finish(...)` writes `events.csv` with planned and applied times and each event's cost
(`traffic.scenario_cost`).

Timing: link and node steps whose links are kernel devices on this machine (veth links of the
local and Docker backends) are applied by `traffic.link_timer`, a process of their own: a thread of
this process waits for the GIL whenever the thread holding it is preempted, which on a loaded host
costs up to a second (994 ms measured for link flaps during a web-search run at load 9; see that
module). The other steps (shapes, patch-port links, the cluster's OVSDB ports, the controller,
tenants) go through a dispatcher thread that sleeps until 2 ms before a step and spins (yielding)
the rest, then hands the step to the worker of its target (one per link, node, tenant, the
controller): steps on one target stay in order, and a slow action (a `tc` process, a controller
restart) delays nothing else. The applied time is taken just before the action starts; `took_ms`
is how long the action itself lasted. The dispatcher and the link and node workers run at
real-time priority (SCHED_FIFO, reset on fork so a `tc` child is an ordinary process) where the
process may ask for it; their actions are short, so they cannot starve the fabric, while the
controller and tenant workers, whose actions can run for seconds, stay ordinary. Where it is
refused (no CAP_SYS_NICE) the steps still run, and events.csv's error column shows what the host
did to them.
Counter samples for the costs are taken by a second thread, so sampling never delays a step.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picloud.errors import ControllerError, PiCloudError, TrafficError
from topology.backends.base import fabric_of, state_of
from traffic import scenario as model
from traffic.scenario_cost import costs

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)
SPIN_S = 0.002
SAMPLE_EVERY_S = 1.0
SWITCH_INTERVAL_S = 0.0005
RT_PRIORITY = 10  # SCHED_FIFO 1-99: above every ordinary task, below the kernel's own RT threads (50+)
EVENT_FIELDS = ["index", "planned_s", "applied_s", "error_ms", "took_ms", "action", "target", "params",
                "source", "status", "detail", "port_drops", "tcp_retrans", "flows_in_flight",
                "fct_inflation", "stalled_flows", "first_packet_ms"]


def as_scenario(testbed: Run, scenario: Any, horizon: float | None, seed: int | None = None) -> model.Scenario:
    """A Scenario from a file path, a list of entries or a Scenario, validated on the topology."""
    if isinstance(scenario, BoundScenario):
        scenario = scenario.scenario
    if isinstance(scenario, model.Scenario):
        if horizon is not None and scenario.end > horizon:
            raise TrafficError(f"{scenario.where}: last event at {scenario.end:g} s is after the run's end "
                               f"({horizon:g} s)")
        return scenario
    if isinstance(scenario, str | Path):
        entries, file_seed = model.load_file(scenario)
        return model.expand(entries, testbed.topology, file_seed if seed is None else seed, horizon,
                            where=str(scenario))
    return model.expand(list(scenario), testbed.topology, seed or 0, horizon)


def check(testbed: Run, sc: model.Scenario) -> None:
    """What the scenario needs of this run, checked before anything runs."""
    w = sc.where
    actions = {s.action for s in sc.steps}
    if sc.needs_netem:
        from topology.effects import tc

        if not tc.netem_available():
            step = next(s for s in sc.steps if s.action == "shape" and ({"delay", "loss"} & set(s.args)))
            raise TrafficError(f"{w} entry {step.source + 1}: delay/loss on {step.target.replace('~', '-')} "
                               "needs the netem qdisc, which this kernel lacks (bw alone works: tc tbf)")
    if actions & {"controller-kill", "controller-restart"}:
        if not testbed.controller_api:
            raise TrafficError(f"{w}: controller-kill/restart need PiCloud's own controller (this run has "
                               f"{(state_of(testbed).controller or {}).get('mode')!r})")
        if _controller_record(testbed) is None:
            raise TrafficError(f"{w}: controller-kill/restart: this run's controller process is not recorded")
    tenant_steps = [s for s in sc.steps if s.action.startswith("tenant-")]
    if tenant_steps:
        from tenants import handle

        plan = handle.current_plan(testbed)
        for s in tenant_steps:
            if not plan.has(s.target):
                known = ", ".join(t.name for t in plan.tenants) or "none"
                raise TrafficError(f"{w} entry {s.source + 1} ({s.action}): tenant {s.target!r} unknown in run "
                                   f"{testbed.prefix} (tenants: {known})")


def _controller_record(testbed: Run) -> dict[str, Any] | None:
    recs = [r for r in state_of(testbed).objects.get("pids", []) if r.get("role") == "controller"]
    return recs[-1] if recs else None


class ScenarioRunner:
    """Applies one expanded scenario on a thread; see the module docstring."""

    def __init__(self, testbed: Run, sc: model.Scenario, hosts: Sequence[str] = ()) -> None:
        self.testbed, self.scenario, self.hosts = testbed, sc, list(hosts)
        self.applied: list[dict[str, Any]] = []
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler: threading.Thread | None = None
        self._sample_requests: queue.Queue = queue.Queue()
        self._down_by_node: dict[str, list[tuple[str, str]]] = {}
        self._lanes: dict[str, tuple[queue.Queue, threading.Thread]] = {}
        self._switch_interval: float | None = None
        self._lock = threading.Lock()
        self._timer: subprocess.Popen | None = None
        self._timer_reader: threading.Thread | None = None
        self._timed: dict[int, str] = {}  # step index -> detail, for the steps the link timer applies
        self._spawn_timer()  # now, not at start(): a Python process takes ~1 s to start on a loaded host

    # --- running ------------------------------------------------------------------------------
    def start(self, t0: float) -> None:
        self.t0 = t0
        # CPython hands the GIL between threads every 5 ms by default: a step due while the sampler
        # or the engine's reader threads run Python would wait up to that long. 0.5 ms for the
        # run's duration (restored by wait()) keeps that wait well under the 5 ms timing target.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._sampler = threading.Thread(target=self._sample_loop, name="scenario-sampler", daemon=True)
        self._sampler.start()
        self._sample_requests.put(None)
        self._start_timer(t0)
        self._thread = threading.Thread(target=self._dispatch, name="scenario", daemon=True)
        self._thread.start()

    # --- link cuts from their own process (traffic.link_timer) ----------------------------------
    def _device_steps(self) -> list[dict[str, Any]]:
        """The link and node steps whose links are all kernel devices here, as link_timer steps."""
        fabric, out = self.testbed.fabric, []
        if fabric is None:
            return []
        for i, step in enumerate(self.scenario.steps):
            if step.action in ("link-down", "link-up"):
                links, detail = [step.link()], ""
            elif step.action in ("node-down", "node-up"):
                links = model.node_links(self.testbed.topology, step.target)
                detail = f"{len(links)} links {step.action.split('-')[1]}"
            else:
                continue
            devices = [fabric.link_devices(*ln) for ln in links]
            if any(d is None for d in devices):
                continue
            out.append({"i": i, "t": step.t, "up": step.action.endswith("-up"),
                        "devices": [list(d) for ds in devices if ds for d in ds]})
            self._timed[i] = detail
        return out

    def _spawn_timer(self) -> None:
        steps = self._device_steps()
        if not steps:
            return
        self._timer = subprocess.Popen(
            [sys.executable, "-m", "traffic.link_timer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=Path(__file__).resolve().parent.parent)
        assert self._timer.stdin is not None and self._timer.stdout is not None
        self._timer.stdin.write(json.dumps({"steps": steps}) + "\n")
        self._timer.stdin.flush()
        ready = json.loads(self._timer.stdout.readline() or "{}")
        if not ready.get("ready"):
            self._timer.kill()
            self._timer.wait()
            raise TrafficError("scenario: the link timer did not start (see the log above)")
        if not ready.get("realtime"):
            log.info("scenario: link timer runs at ordinary priority (no CAP_SYS_NICE); timing may suffer")

    def _start_timer(self, t0: float) -> None:
        if self._timer is None:
            return
        assert self._timer.stdin is not None
        self._timer.stdin.write(json.dumps({"t0": t0}) + "\n")
        self._timer.stdin.flush()
        self._timer_reader = threading.Thread(target=self._read_timer, name="scenario-timer", daemon=True)
        self._timer_reader.start()

    def _read_timer(self) -> None:
        assert self._timer is not None and self._timer.stdout is not None
        for line in self._timer.stdout:
            msg = json.loads(line)
            if msg.get("end"):
                break
            i = int(msg["i"])
            step = self.scenario.steps[i]
            status, detail = ("failed", msg["error"]) if msg.get("error") else ("ok", self._timed[i])
            if status == "failed":
                log.warning("scenario step %s failed: %s", step.describe(), detail)
            with self._lock:
                self.applied.append(self._row(i, step, float(msg["applied"]) - self.t0,
                                              (float(msg["done"]) - float(msg["applied"])) * 1e3, status, detail))
            self._sample_requests.put(None)

    def _stop_timer(self, timeout: float | None) -> None:
        if self._timer is None:
            return
        if self._stop.is_set() and self._timer.poll() is None:
            self._timer.terminate()
        if self._timer_reader is not None:
            self._timer_reader.join(timeout)
        try:
            self._timer.wait(5 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self._timer.kill()
            self._timer.wait()
        with self._lock:
            done = {r["index"] for r in self.applied}
            for i in sorted(set(self._timed) - done):
                self.applied.append(self._row(i, self.scenario.steps[i], None, None, "skipped",
                                              "stopped before its time"))
        self._timer = None

    def wait(self, timeout: float | None = None) -> None:
        """Until every step is applied (or `stop()`); then one last counter sample."""
        if self._thread is not None:
            self._thread.join(timeout)
        for lane in list(self._lanes.values()):
            lane[0].put(None)
        for lane in list(self._lanes.values()):
            lane[1].join(timeout)
        self._stop_timer(timeout)
        self._sample_requests.put(None)
        self._sample_requests.put("stop")
        if self._sampler is not None:
            self._sampler.join(30)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    def stop(self) -> None:
        self._stop.set()
        self.wait(10)

    @staticmethod
    def _lane_of(step: model.Step) -> str:
        """Steps on one target run in order on one worker; different targets never wait for each
        other (a slow `tc` or controller restart must not delay a link cut elsewhere)."""
        if step.action.startswith(("link-", "shape")):
            return "link:" + step.target
        if step.action.startswith("node-"):
            return "node:" + step.target
        if step.action.startswith("tenant-"):
            return "tenant:" + step.target
        return "controller"

    def _dispatch(self) -> None:
        realtime_thread()
        for i, step in enumerate(self.scenario.steps):
            if i in self._timed:
                continue
            due = self.t0 + step.t
            while (left := due - time.monotonic()) > SPIN_S:
                if self._stop.wait(left - SPIN_S):
                    break
            if self._stop.is_set():
                with self._lock:
                    self.applied.append(self._row(i, step, None, None, "skipped", "stopped before its time"))
                continue
            lane = self._lanes.get(self._lane_of(step))
            if lane is None:
                q: queue.Queue = queue.Queue()
                worker = threading.Thread(target=self._work, args=(q, self._lane_of(step).startswith(
                    ("link:", "node:"))), daemon=True, name=f"scenario-{self._lane_of(step)}")
                lane = self._lanes[self._lane_of(step)] = (q, worker)
                worker.start()
            while time.monotonic() < due:
                time.sleep(0)
            lane[0].put((i, step))

    def _work(self, q: queue.Queue, realtime: bool = False) -> None:
        if realtime:
            realtime_thread()
        while (item := q.get()) is not None:
            i, step = item
            applied = time.monotonic()
            try:
                detail = self._apply(step) or ""
                status = "ok"
            except Exception as exc:  # recorded as the event's outcome; the run goes on
                detail, status = str(exc).replace("\n", " "), "failed"
                log.warning("scenario step %s failed: %s", step.describe(), detail,
                            exc_info=not isinstance(exc, PiCloudError | OSError | subprocess.SubprocessError))
            done = time.monotonic()
            with self._lock:
                self.applied.append(self._row(i, step, applied - self.t0, (done - applied) * 1e3, status, detail))
            self._sample_requests.put(None)

    @staticmethod
    def _row(i: int, step: model.Step, applied: float | None, took: float | None, status: str,
             detail: str) -> dict[str, Any]:
        return {"index": i, "planned_s": step.t, "applied": applied,
                "applied_s": None if applied is None else round(applied, 6),
                "error_ms": None if applied is None else round((applied - step.t) * 1e3, 3),
                "took_ms": None if took is None else round(took, 3), "action": step.action,
                "target": step.target.replace("~", "-"),
                "params": " ".join(f"{k}={v}" for k, v in step.params), "source": step.source + 1,
                "status": status, "detail": detail}

    def _apply(self, step: model.Step) -> str | None:
        tb, a = self.testbed, step.action
        if a in ("link-down", "link-up"):
            fabric_of(tb).set_link(*step.link(), up=a == "link-up")
            return None
        if a == "shape":
            args = step.args
            handle = tb.link(*step.link())
            if set(args) <= {"bw"}:
                handle.shape(args["bw"])
            else:
                handle.shape(**args)
            return None
        if a == "node-down":
            links = model.node_links(tb.topology, step.target)
            self._down_by_node[step.target] = links
            self._set_links(links, up=False)
            return f"{len(links)} links down"
        if a == "node-up":
            links = self._down_by_node.pop(step.target, []) or model.node_links(tb.topology, step.target)
            self._set_links(links, up=True)
            return f"{len(links)} links up"
        if a == "controller-kill":
            return self._controller_kill()
        if a == "controller-restart":
            return self._controller_restart()
        if a == "tenant-add":
            args = step.args
            new = tb.tenant(step.target).add(int(args["count"]), placement=args["placement"])
            return "added " + " ".join(m.name for m in new)
        if a == "tenant-remove":
            gone = tb.tenant(step.target).remove(step.args["member"])
            if not gone:
                raise TrafficError(f"tenant {step.target!r}: no member {step.args['member']!r} to remove")
            return "removed " + " ".join(m.name for m in gone)
        raise TrafficError(f"scenario: action {a!r} has no implementation")  # expand() prevents this

    def _set_links(self, links: list[tuple[str, str]], up: bool) -> None:
        fabric = fabric_of(self.testbed)
        self._parallel([partial(fabric.set_link, a, b, up) for a, b in links])

    @staticmethod
    def _parallel(jobs: list[Callable[[], object]]) -> None:
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(jobs)))) as pool:
            for f in [pool.submit(j) for j in jobs]:
                f.result()

    # --- the controller -----------------------------------------------------------------------
    def _controller_kill(self) -> str:
        return f"killed PID {self.testbed.kill_controller()}"

    def _controller_restart(self) -> str:
        return f"started PID {self.testbed.restart_controller()}"

    # --- counters for the costs ---------------------------------------------------------------
    def _sample_loop(self) -> None:
        """One sample per request, coalescing requests that queued while a sample was taken (a
        sample of a loaded fabric can take a second), and one a second when nothing asks."""
        while True:
            try:
                req = self._sample_requests.get(timeout=SAMPLE_EVERY_S)
            except queue.Empty:
                req = None
            stop = req == "stop"
            while True:
                try:
                    stop = self._sample_requests.get_nowait() == "stop" or stop
                except queue.Empty:
                    break
            t = time.monotonic() - self.t0
            try:
                self.samples.append((t, self._counters()))
            except Exception as exc:  # a failed sample leaves a gap in the costs, never stops the run
                log.debug("scenario counter sample failed: %s", exc)
            if stop:
                return

    def _counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        drops = port_drops(self.testbed)
        if drops is not None:
            out["port_drops"] = drops
        retrans = tcp_retransmits(self.testbed, self.hosts)
        if retrans is not None:
            out["tcp_retrans"] = retrans
        return out

    # --- results ------------------------------------------------------------------------------
    def finish(self, directory: Path, flows: Sequence[Any], received: Mapping[Any, Any], end: float) -> list[dict]:
        """events.csv in `directory`; returns its rows (with costs)."""
        gaps = {}
        for key, rec in received.items():
            if isinstance(key, tuple) and key[0] == "recv" and rec.get("gap_end"):
                gaps[key[1]] = (float(rec["gap_us"]) / 1e6, float(rec["gap_end"]) - self.t0)
        rows = sorted(self.applied, key=lambda r: r["index"])
        for row, cost in zip(rows, costs(rows, flows, gaps, self.samples, end), strict=True):
            row.update(cost)
        write_events(directory / "events.csv", rows)
        return rows


def realtime_thread(priority: int = RT_PRIORITY) -> bool:
    """Put the calling thread (not the process) under SCHED_FIFO, children reset to ordinary; False
    where the kernel refuses (no CAP_SYS_NICE, a container without it, RT throttled to 0)."""
    from topology.effects.proc import realtime

    return realtime(os.SCHED_FIFO, priority, threading.get_native_id())


def write_events(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(EVENT_FIELDS)
        for r in rows:
            writer.writerow(["" if r.get(k) is None else r.get(k) for k in EVENT_FIELDS])


def read_events(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def port_drops(testbed: Run) -> float | None:
    """tx_dropped + rx_dropped + tx_errors summed over every port of the run's bridges, from the
    controller's live OpenFlow port stats (OVSDB's copy is refreshed only every 5 s, too coarse for
    one event's window); None while there is no controller to ask (killed by the scenario)."""
    client = testbed.controller_client
    if client is None:
        return None

    def one(node: str) -> float:
        reply = client.get(f"/stats/port/{testbed.topology.dpid(node)}", timeout=5)
        ports: list[dict[str, Any]] = next(iter(reply.values()), [])
        return float(sum(int(p.get(k, 0) or 0) for p in ports for k in ("tx_dropped", "rx_dropped", "tx_errors")))

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return float(sum(pool.map(one, testbed.topology.bridges)))
    except (ControllerError, ValueError):
        return None


def tcp_retransmits(testbed: Run, hosts: Sequence[str]) -> float | None:
    """RetransSegs summed over the containers' TCP stacks (each container's own /proc/net/snmp)."""
    if not hosts:
        return None
    from topology.effects import netns as netns_effects

    def one(container: str) -> float:
        try:
            ns = fabric_of(testbed).netns(container)
            with netns_effects.entered(ns), open("/proc/thread-self/net/snmp") as fh:
                text = fh.read()
        except (PiCloudError, OSError):
            rc, text = fabric_of(testbed).exec(container, ["cat", "/proc/net/snmp"], timeout=5)
            if rc != 0:
                return 0.0
        return _retrans_segs(text)

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        return float(sum(pool.map(one, hosts)))


def _retrans_segs(snmp: str) -> float:
    lines = [ln.split() for ln in snmp.splitlines() if ln.startswith("Tcp:")]
    if len(lines) < 2:
        return 0.0
    row = dict(zip(lines[0][1:], lines[1][1:], strict=False))
    return float(row.get("RetransSegs", 0))


def prepare(testbed: Run, scenario: Any, horizon: float | None, hosts: Sequence[str] = ()) -> ScenarioRunner:
    """Expand, validate and check a scenario for this run; nothing is applied yet."""
    sc = as_scenario(testbed, scenario, horizon)
    check(testbed, sc)
    return ScenarioRunner(testbed, sc, hosts)


class BoundScenario:
    """`tb.scenario([...])`: a validated timeline for one testbed. Pass it to `tb.traffic(...,
    scenario=...)`, or `.run(out)` it on its own (no traffic: events.csv with port-counter costs)."""

    def __init__(self, testbed: Run, scenario: Any, seed: int | None = None) -> None:
        self.testbed = testbed
        self.scenario = as_scenario(testbed, scenario, None, seed)
        check(testbed, self.scenario)

    @property
    def steps(self) -> list[model.Step]:
        return self.scenario.steps

    def log(self) -> list[tuple[float, str, str, str]]:
        return self.scenario.log()

    def run(self, out: str | Path, settle: float = 1.0) -> list[dict[str, Any]]:
        """Apply every step now (t0 = now + 0.2 s), wait `settle` s after the last, write events.csv."""
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        runner = ScenarioRunner(self.testbed, self.scenario)
        t0 = time.monotonic() + 0.2
        runner.start(t0)
        try:
            assert runner._thread is not None
            runner._thread.join()
            time.sleep(max(0.0, t0 + self.scenario.end + settle - time.monotonic()))
            runner.wait()
        except BaseException:
            runner.stop()
            raise
        return runner.finish(directory, [], {}, self.scenario.end + settle)
