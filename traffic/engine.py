"""Run a traffic experiment on a running testbed and collect per-flow results.

`run(testbed, workload, load, pattern, duration, seed, ...)`:
1. validates everything and computes the trace (pure, seeded) before touching the fabric;
2. starts one `traffic.agent` per participating container with `testbed.fabric.popen` (server and
   client in one process) and hands each its flows on stdin, all keyed to one CLOCK_MONOTONIC t0;
3. gathers JSON-line reports until every client has settled its flows or the deadline
   (t0 + duration + drain) passes; flows still running then are reported as unfinished;
4. writes trace.csv, flows.csv, summary.json, meta.json into the run directory and returns Results.

The nominal link rate C (for load and ideal FCT) is `link_mbps`, else the container's access link
bandwidth in the topology (its own link, else its Pi's uplinks), else 100 Mbit/s: the Raspberry Pi
Cloud's Pis had 100 Mbit/s Ethernet, and it keeps a 2-core host able to carry the offered load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from picloud.errors import TrafficError
from topology.backends.base import fabric_of, state_of
from traffic import arrivals, calibrate, workloads
from traffic.monitor import Monitor
from traffic.monitor import assess as assess_fidelity
from traffic.results import FlowRecord, Results
from traffic.trace import Trace, generate

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)

DEFAULT_LINK_MBPS = 100.0
AGENT_PORT = 5301
READY_TIMEOUT = 20.0
REPO_ROOT = Path(__file__).resolve().parent.parent


class LiveRecorder(Protocol):
    """Something that samples the live run while its flows run and writes what it saw beside the
    results (the web UI's timeline, `webui.record.Recorder`). Handed in by the caller, so the
    engine does not depend on the UI that reads its results."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def write(self, directory: Path, t0: float, flows: Sequence[FlowRecord], scenario: Sequence[Mapping[str, Any]],
              meta: Mapping[str, Any]) -> Path: ...


def resolve_hosts(testbed: Run, tenant: str | None) -> tuple[list[str], dict[str, str]]:
    """Participating containers and the address each is reached at (default network or tenant)."""
    if tenant is None:
        hosts = list(testbed.topology.containers)
        return hosts, {h: testbed.container_ip(h) for h in hosts}
    try:
        from tenants import store
    except ImportError:
        raise TrafficError(f"tenant {tenant!r}: the tenants package is not installed (run without "
                           "--tenant)") from None
    state = state_of(testbed)
    path = Path(state.tenants_file) if state.tenants_file else store.run_tenants_path(state)
    plan = store.load(path)
    if not plan.has(tenant):
        known = ", ".join(t.name for t in plan.tenants) or "none"
        raise TrafficError(f"tenant {tenant!r}: unknown in run {state.prefix} (tenants: {known})")
    members = plan.tenant(tenant).members
    return [m.name for m in members], {m.name: m.ip.split("/")[0] for m in members}


def link_rate_bps(testbed: Run, hosts: list[str], link_mbps: float | None) -> float:
    return link_rate(testbed, hosts, link_mbps)[0]


def link_rate(testbed: Run, hosts: list[str], link_mbps: float | None) -> tuple[float, str]:
    """The nominal access rate C and where it comes from: explicit, else the slowest shaped access
    among the hosts (a container's own link, else its Pi's uplinks, which the Pi's NIC is; a
    run-time container, such as a tenant member, sits on its Pi like any other), else the run's
    calibrated unshaped ceiling, else 100 Mbit/s, said so in meta.json (`link_rate_source`)."""
    if link_mbps is not None:
        if not link_mbps > 0:
            raise TrafficError(f"link_mbps: {link_mbps} (must be positive)")
        return float(link_mbps) * 1e6, "link_mbps given"
    rates = []
    topo = testbed.topology
    extra = (getattr(getattr(testbed, "state", None), "extra", None) or {}).get("containers", {})
    for h in hosts:
        if h in topo and topo.kind(h) == "container":
            pi, own = topo.pi_of(h), topo.link(h, topo.pi_of(h)).bw
        elif h in extra and extra[h].get("pi") in topo:
            pi, own = extra[h]["pi"], None
        else:
            continue
        peers = [peer for peer in topo.ports(pi).values() if topo.kind(peer) != "container"]
        uplinks = [topo.link(pi, peer).bw for peer in peers]
        shaped = [float(bw) for bw in [own, *uplinks] if bw]
        if shaped:
            rates.append(min(shaped) if own is None else float(own))
    if rates:
        return min(rates) * 1e6, "shaped access links (the slowest of the hosts' own links and Pi uplinks)"
    ceiling = calibrate.ceiling_bps(calibrate.stored(testbed)) if getattr(testbed, "state", None) else None
    if ceiling:
        return ceiling, "calibrated unshaped ceiling (picloud calibrate): the fabric has no shaped access link"
    return DEFAULT_LINK_MBPS * 1e6, ("assumed 100 Mbit/s: the fabric has no shaped access link, no --link-mbps "
                                     "was given and the run is not calibrated (picloud calibrate); load and "
                                     "slowdown are relative to a rate no link enforces")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("picloud", "os-ken", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True, timeout=5).stdout
        out["openvswitch"] = text.splitlines()[0].split()[-1] if text else "unknown"
    return out


def _run_meta(testbed: Run, tenant: str | None) -> dict[str, Any]:
    state = state_of(testbed)
    meta: dict[str, Any] = {
        "run_prefix": getattr(state, "prefix", None), "backend": getattr(state, "backend", None),
        "topology": testbed.topology.to_dict(), "controller": getattr(state, "controller", None),
        "tenant": tenant, "versions": _versions(), "command_line": sys.argv,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    meta["controller_apps"] = _controller_apps(meta["controller"] or {})
    tenants_file = getattr(state, "tenants_file", None)
    if tenants_file and Path(tenants_file).is_file():
        with contextlib.suppress(Exception):
            from tenants import store

            meta["tenants"] = store.load(tenants_file).to_dict()
    return meta


def _controller_apps(controller: dict[str, Any]) -> list[str] | str:
    """The apps the run's controller runs, as the facade recorded them when it started ours, or
    what kind of controller it is when it is not ours."""
    if controller.get("apps") is not None:
        return list(controller["apps"])
    mode = controller.get("mode")
    if isinstance(mode, list):
        return mode
    return "default" if mode is None and controller.get("api") else str(mode or "none")


class _Inbox:
    """The agents' records in arrival order. Reader threads hand them over one pipe read at a time:
    one queue operation (lock, wake-up, GIL hand-over) per batch instead of per line, which at
    thousands of flows per second is CPU the agents and the datapath need on a 2-core host."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, list[dict[str, Any]]]] = queue.Queue()
        self.pending: deque[tuple[str, dict[str, Any]]] = deque()

    def put(self, container: str, records: list[dict[str, Any]]) -> None:
        self.queue.put((container, records))

    def get(self, timeout: float | None = None) -> tuple[str, dict[str, Any]]:
        """The next record; raises queue.Empty after `timeout` (None: do not wait)."""
        while not self.pending:
            container, records = self.queue.get_nowait() if timeout is None else self.queue.get(timeout=timeout)
            self.pending.extend((container, r) for r in records)
        return self.pending.popleft()

    def get_nowait(self) -> tuple[str, dict[str, Any]]:
        return self.get(None)


class _Agent:
    """One agent process and the thread that turns its stdout into queued records."""

    def __init__(self, testbed: Run, container: str, port: int, log_path: Path, events: _Inbox,
                 realtime: bool = False) -> None:
        self.container = container
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.log = log_path.open("w")
        self.proc: subprocess.Popen = fabric_of(testbed).popen(
            container, [sys.executable, "-m", "traffic.agent", "--port", str(port),
                        *(["--realtime"] if realtime else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            cwd=str(REPO_ROOT),
        )
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events: _Inbox) -> None:
        assert self.proc.stdout is not None
        pipe = self.proc.stdout.buffer  # type: ignore[attr-defined]
        rest = b""
        while True:
            chunk = pipe.read1(1 << 16)  # what the pipe holds now (the agent writes a batch per 50 ms)
            if not chunk:
                break
            *lines, rest = (rest + chunk).split(b"\n")
            records = []
            for line in lines:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.debug("agent %s: %r", self.container, line)
            if records:
                events.put(self.container, records)
        events.put(self.container, [{"ev": "exit"}])

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()

    def stop(self, timeout: float = 5.0) -> None:
        self.send("stop")
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.thread.join(timeout=5)
        self.log.close()


class _Progress:
    def __init__(self, total: int, duration: float, enabled: bool) -> None:
        self.total, self.duration, self.enabled = total, duration, enabled
        self.last = 0.0

    def show(self, settled: int, elapsed: float, force: bool = False) -> None:
        if not self.enabled or (not force and time.monotonic() - self.last < 0.5):
            return
        self.last = time.monotonic()
        frac = min(1.0, max(elapsed / self.duration if self.duration else 1.0, settled / max(1, self.total)))
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {elapsed:6.1f}s  {settled}/{self.total} flows settled")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()


def default_out(workload: str, pattern: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"traffic-{stamp}-{Path(workload).stem}-{pattern}"


def run(
    testbed: Run, workload: str = "websearch", load: float = 0.1, pattern: str = "all-to-all",
    duration: float = 10.0, seed: int = 1, tenant: str | None = None, out: str | Path | None = None,
    progress: bool = False, warmup: float | None = None, scale_size: float = 1.0, scale_time: float = 1.0,
    arrival: str = "poisson", link_mbps: float | None = None, drain: float = 10.0, port: int = AGENT_PORT,
    concurrency: int = 1, think: float = 0.0, scenario: Any = None, capture: list[str] | None = None,
    realtime_agents: bool = False, recorder: Callable[[Run], LiveRecorder] | None = None,
    **pattern_args: Any,
) -> Results:
    """Replay a seeded trace on the testbed; see the module docstring. Returns the run's Results."""
    # --- everything that can be wrong with the request, before any side effect -----------------
    wl = workloads.get(workload)
    arrivals.check_load(load)
    if not (isinstance(duration, int | float) and duration > 0):
        raise TrafficError(f"duration: {duration!r} s (must be positive)")
    warmup = 0.1 * duration if warmup is None else float(warmup)
    if not 0 <= warmup < duration:
        raise TrafficError(f"warmup: {warmup} s with duration {duration} s (0 <= warmup < duration)")
    if drain < 0:
        raise TrafficError(f"drain: {drain} s (must be >= 0)")
    if getattr(testbed, "fabric", None) is None or getattr(testbed, "state", None) is None:
        raise TrafficError("testbed: not up (start it first: 'with Testbed(...) as tb' or 'picloud up')")
    hosts, ips = resolve_hosts(testbed, tenant)
    if tenant is not None and len(hosts) < 2:
        raise TrafficError(f"tenant {tenant!r}: {len(hosts)} member(s) (pattern {pattern!r} needs at "
                           "least 2)")
    link_bps, link_source = link_rate(testbed, hosts, link_mbps)
    trace = generate(hosts, wl, load, pattern, duration, seed, link_bps, arrival=arrival,
                     scale_size=scale_size, scale_time=scale_time, concurrency=concurrency, think=think,
                     **pattern_args)
    trace.meta.update(warmup=warmup, drain=drain, tenant=tenant, link_rate_source=link_source)
    return replay(testbed, trace, out if out is not None else default_out(wl.name, pattern), tenant=tenant,
                  progress=progress, port=port, addresses=(hosts, ips), scenario=scenario, capture=capture,
                  realtime_agents=realtime_agents, recorder=recorder)


def replay(testbed: Run, trace: Trace, out: str | Path, tenant: str | None = None, progress: bool = False,
           port: int = AGENT_PORT, addresses: tuple[list[str], dict[str, str]] | None = None,
           scenario: Any = None, capture: list[str] | None = None, realtime_agents: bool = False,
           recorder: Callable[[Run], LiveRecorder] | None = None) -> Results:
    """Replay a given trace (from `generate`, a saved trace.csv, or built by hand, as the benchmark
    does) and write the run directory. Missing metadata gets the engine's defaults. `scenario` (a
    file, a list of entries or a `traffic.scenario.Scenario`) is applied during the replay.
    `realtime_agents` runs the agents SCHED_RR (`traffic.agent --realtime`: starts on time on a
    loaded host, at the userspace datapath's expense; meta.json `agents_realtime`).
    `recorder(testbed)` makes a `LiveRecorder` that samples while the agents run and writes its file
    into the run directory (`Testbed.traffic` passes the web UI's, `webui.record.Recorder`)."""
    hosts, ips = addresses if addresses is not None else resolve_hosts(testbed, tenant)
    unknown = sorted({h for f in trace.flows for h in (f.src, f.dst)} - set(ips))
    if unknown:
        raise TrafficError(f"trace: host(s) {', '.join(unknown)} not in the "
                           f"run{' tenant ' + tenant if tenant else ''}")
    meta0 = trace.meta
    duration = float(meta0.get("duration") or max((f.start for f in trace.flows), default=0.0) + 1e-3)
    meta0.setdefault("duration", duration)
    meta0.setdefault("warmup", 0.0)
    meta0.setdefault("drain", 10.0)
    meta0.setdefault("hosts", sorted({h for f in trace.flows for h in (f.src, f.dst)}))
    meta0.setdefault("link_bps", link_rate_bps(testbed, hosts, None))
    meta0.setdefault("overhead", arrivals.OVERHEAD)
    meta0.setdefault("load", None)
    meta0["tenant"] = tenant
    runner = None
    if scenario is not None:  # validated against the run before anything starts
        from traffic import scenario_run

        runner = scenario_run.prepare(testbed, scenario, duration, meta0["hosts"])
    directory = Path(out)
    cap = None
    if capture:  # targets checked now; the capture itself brackets the replay
        from traffic.capture import Capture

        cap = Capture(testbed, list(capture), bpf=f"tcp port {port}", out=directory / "capture.pcapng")
    directory.mkdir(parents=True, exist_ok=True)
    trace.to_csv(directory / "trace.csv")
    meta = {**meta0, **_run_meta(testbed, tenant), "addresses": ips}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (directory / "calibration.json").write_text(json.dumps(calibrate.for_run(testbed), indent=1) + "\n")
    live = recorder(testbed) if recorder is not None else None
    if live is not None:
        live.start()
    if cap is not None:
        cap.start()
    try:
        records = _replay(testbed, trace, ips, directory, port, progress, runner, realtime_agents)
    finally:
        if live is not None:
            live.stop()
        if cap is not None:
            cap.stop()
    flows = _records(trace, records, tenant or "", float(meta0["warmup"]), float(meta0["link_bps"]))
    if cap is not None and cap.result is not None:
        from traffic import capture_check

        check = capture_check.compare(flows, capture_check.connections(
            capture_check.read_packets(cap.result.path), port))
        meta["capture"] = {"path": str(cap.result.path), "interfaces": cap.result.interfaces, "check": check}
    meta["lateness_p99_by_agent_us"] = records.get("_late", {})
    # Whether each agent ran at real-time priority (realtime_agents; traffic.agent._realtime): without
    # it a loaded host's other work delays flow starts, which the lateness figures then show.
    meta["agents_realtime"] = records.get("_realtime", {})
    meta["fidelity"] = assess_fidelity(testbed, trace, flows, meta, records.get("_samples"), directory)
    if runner is not None:
        meta["scenario"] = runner.finish(directory, flows, records, duration + float(meta0["drain"]))
    results = Results.save(directory, flows, meta)
    if live is not None and "t0" in records:
        live.write(directory, records["t0"], flows, meta.get("scenario") or [],
                       {"name": directory.name, "duration": duration, "summary": results.summary})
    return results


def _replay(testbed: Run, trace: Trace, ips: dict[str, str], directory: Path, port: int,
            progress: bool, runner: Any = None, realtime: bool = False) -> dict[Any, Any]:
    """Run the agents; returns {"t0", flow id -> client record, ("recv", id) -> server record}."""
    events = _Inbox()
    logs = directory / "agents"
    logs.mkdir(exist_ok=True)
    participants = trace.meta["hosts"]
    agents: dict[str, _Agent] = {}
    out: dict[Any, Any] = {"_late": {}, "_realtime": {}}
    monitor: Monitor | None = None
    duration, drain = float(trace.meta["duration"]), float(trace.meta["drain"])
    try:
        for c in participants:
            agents[c] = _Agent(testbed, c, port, logs / f"{c}.log", events, realtime)
        ready: set[str] = set()
        limit = time.monotonic() + READY_TIMEOUT
        while len(ready) < len(agents):
            try:
                container, rec = events.get(timeout=max(0.01, limit - time.monotonic()))
            except queue.Empty:
                missing = sorted(set(agents) - ready)
                raise TrafficError(f"agents: {', '.join(missing)} not ready after {READY_TIMEOUT:.0f}s "
                                   f"(see {logs})") from None
            if rec["ev"] == "ready":
                ready.add(container)
                out["_realtime"][container] = bool(rec.get("realtime"))
            elif rec["ev"] == "exit":
                raise TrafficError(f"agent {container}: exited at start (see {logs / (container + '.log')})")
        monitor = Monitor(testbed, {c: a.proc.pid for c, a in agents.items()}).start()  # traffic.monitor
        by_source = trace.by_source()
        # Time for every agent to parse its flows before the first one is due.
        t0 = time.monotonic() + 0.5 + len(trace.flows) / 50_000
        deadline = t0 + duration + drain
        out["t0"] = t0
        for c, agent in agents.items():
            flows = [{"id": f.id, "dst": ips[f.dst], "port": port, "size": f.size, "start": f.start,
                      "after": f.after} for f in by_source.get(c, [])]
            config = {"t0": t0, "deadline": deadline, "last_start": t0 + duration, "flows": flows}
            agent.send(json.dumps(config, separators=(",", ":")))
        if runner is not None:
            runner.start(t0)
        bar = _Progress(len(trace.flows), duration, progress)
        clients_done: set[str] = set()
        settled = 0
        while len(clients_done) < len(agents) and time.monotonic() < deadline + 15:
            try:
                container, rec = events.get(timeout=0.2)
            except queue.Empty:
                bar.show(settled, time.monotonic() - t0)
                continue
            if rec["ev"] == "flow":
                out[rec["id"]] = rec
                settled += 1
            elif rec["ev"] == "recv":
                out[("recv", rec["id"])] = rec
            elif rec["ev"] == "client_done":
                clients_done.add(container)
                out["_late"][container] = rec.get("late_p99_us")
            elif rec["ev"] == "exit":
                clients_done.add(container)
                log.warning("agent %s exited early (see %s)", container, logs / f"{container}.log")
            bar.show(settled, max(0.0, time.monotonic() - t0))
        bar.show(settled, max(0.0, time.monotonic() - t0), force=True)
    finally:
        if runner is not None:
            if sys.exc_info()[0] is not None:
                runner.stop()
            else:
                runner.wait()
        if monitor is not None:
            out["_samples"] = monitor.stop()  # before the agents exit: their /proc holds the TCP counters
        for agent in agents.values():
            agent.stop()
    while True:  # server records flushed at stop
        try:
            _container, rec = events.get_nowait()
        except queue.Empty:
            break
        if rec["ev"] == "recv":
            out[("recv", rec["id"])] = rec
        elif rec["ev"] == "flow":
            out[rec["id"]] = rec
    return out


def _records(trace: Trace, got: dict[Any, Any], tenant: str, warmup: float,
             link_bps: float) -> list[FlowRecord]:
    t0 = got.get("t0", 0.0)
    overhead = float(trace.meta.get("overhead", arrivals.OVERHEAD))
    records = []
    for f in trace.flows:
        rec = got.get(f.id) or {"status": "not_started", "start": None, "lateness_us": None, "fct_us": None,
                                "sent": 0, "error": "no report from the agent"}
        recv = got.get(("recv", f.id), {})
        start = None if rec.get("start") is None else float(rec["start"]) - t0
        began = f.start if f.after < 0 else start
        records.append(FlowRecord(
            id=f.id, src=f.src, dst=f.dst, tenant=tenant, size=f.size, scheduled=f.start, job=f.job,
            status=rec["status"], start=start, lateness_us=rec.get("lateness_us"), fct_us=rec.get("fct_us"),
            sent=int(rec.get("sent") or 0), bytes_received=int(recv.get("bytes", 0)),
            warmup=began is not None and began < warmup,
            ideal_us=f.size * 8 * overhead / link_bps * 1e6, error=rec.get("error", ""),
            handshake=bool(rec.get("handshake")),
        ))
    return records
