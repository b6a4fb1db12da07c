"""`Testbed`: the Python API for experiments, and the only thing the CLI talks to.

    with Testbed("fattree:4") as tb:
        print(tb.ping_all(tcp=True))

Entering builds the fabric and starts the controller; leaving tears everything down, also on an
exception or Ctrl-C. Domain packages (tenants, traffic, web UI) implement their parts; this class
only forwards, so there is one implementation of each thing and the CLI cannot drift from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picloud.controller_client import ControllerClient, routed
from picloud.errors import ControllerError, FabricError, PiCloudError
from picloud.progress import silent
from picloud.runstate import RunState, allocate_prefix, api_port, list_runs, of_port
from topology import openflow
from topology.backends.base import Fabric, fabric_of, state_of
from topology.effects import netns as netns_effects
from topology.effects import ovs, proc
from topology.model import Link, Topology
from topology.stalls import OVS_STALL_S

if TYPE_CHECKING:
    from tenants.handle import TenantHandle
    from tenants.verify import IsolationReport
    from traffic.capture import Capture
    from traffic.results import Results
    from traffic.scenario_run import BoundScenario
    from webui.server import UIServer

log = logging.getLogger(__name__)
BACKENDS = ("local", "docker", "cluster")
CONTROLLER_READY_TIMEOUT = 60.0  # seconds, plus READY_PER_BRIDGE for each bridge
EXTERNAL_READY_TIMEOUT = 30.0  # an external controller is already running when `picloud up` starts
READY_PER_BRIDGE = 0.25  # 400 bridges on 2 busy cores took over a minute to connect
# Routing sends every container's paths to every bridge before the run is ready: one full computation
# for 1,000 containers on 57 bridges sent 112,567 messages in 28.9 s at load 10 (0.5 ms per
# (container, bridge) pair). 2 ms per pair allows two full computations (a link event during
# bring-up starts another) with a margin of two. A fixed 60 s made the 1,000-container run fail once
# in three ("0 of 57 switches did not connect": all had; the fabric was not yet routed).
READY_PER_HOST_BRIDGE = 0.002
# One readiness probe of the controller's API. Its /state document for 1,000 hosts is built under the
# state lock while routing holds the GIL for its recomputation: a 2 s probe timed out again and again
# on a loaded host, which looked like no progress. The deadline above bounds the whole wait.
READY_PROBE_TIMEOUT = 10.0
# A switch-answered read (flows, port stats): the controller waits OVS_STALL_S for the switch and
# then answers 504 naming it; we wait a little longer, so that answer, not a bare ReadTimeout, is
# what a stalled switch gives (at equal timeouts the client always gave up first).
STATS_READ_S = OVS_STALL_S + 5.0


def load_topology(source: str | Path | Topology, containers_per_pi: int = 1, pi_model: str | None = None,
                  bw: float | None = None) -> Topology:
    if isinstance(source, Topology) and pi_model is None and bw is None:
        return source
    from topology.loader import load_topology as load

    return load(source, containers_per_pi=containers_per_pi, pi_model=pi_model, bw=bw)


_UNSET: Any = object()


@dataclass
class LinkHandle:
    """`tb.link(a, b)`: the operations a user does to a link while an experiment runs."""

    testbed: Testbed
    a: str
    b: str

    def down(self) -> None:
        fabric_of(self.testbed).set_link(self.a, self.b, up=False)

    def up(self) -> None:
        fabric_of(self.testbed).set_link(self.a, self.b, up=True)

    def shape(self, bw: Any = _UNSET, *, delay: Any = _UNSET, jitter: Any = _UNSET, loss: Any = _UNSET,
              queue: Any = _UNSET) -> Link:
        """Re-shape the link while the run is up: `shape(10)`, `shape(100, delay="5ms", loss=1)`,
        `shape(None)` to remove the rate. delay/jitter like "2ms", loss in percent, queue in packets;
        an attribute left out keeps its value, None removes it. delay/jitter/loss need the kernel's
        sch_netem and are refused without it. Returns the link as it now is."""
        from topology.backends.local import KEEP

        given = {"delay": delay, "jitter": jitter, "loss": loss, "queue": queue}
        impairments = {k: v for k, v in given.items() if v is not _UNSET}
        link = fabric_of(self.testbed).shape_link(self.a, self.b, KEEP if bw is _UNSET else bw, **impairments)
        return link if isinstance(link, Link) else self.testbed.topology.link(self.a, self.b)


class Testbed:
    __test__ = False  # not a pytest test class, despite the name
    def __init__(self, topology: str | Path | Topology, *, containers_per_pi: int = 1,
                 controller: str | list[str] | None = None, tenants: str | Path | None = None,
                 backend: str = "local", prefix: str | None = None, api_open: bool = False,
                 progress: Callable[[str, int, int], None] | None = None,
                 of_versions: str | list[str] | None = None, **backend_options: Any):
        # progress(stage, done, total) hears each step of up(); picloud.progress draws it on a terminal
        self._progress = progress or silent
        if backend not in BACKENDS:
            raise FabricError(f"backend {backend!r}: unknown (one of {', '.join(BACKENDS)})")
        if isinstance(containers_per_pi, bool) or not isinstance(containers_per_pi, int) or containers_per_pi < 0:
            raise FabricError(f"containers_per_pi {containers_per_pi!r}: must be a whole number >= 0")
        if isinstance(controller, str) and controller != "none" and not controller.startswith(("tcp:", "ssl:")):
            raise ControllerError(f"controller {controller!r}: expected 'none', tcp:IP:PORT, ssl:IP:PORT "
                                  "or a list of apps")
        if tenants is not None and not Path(tenants).is_file():
            raise FabricError(f"tenants file {str(tenants)!r}: not found")
        # A Pi model shapes every Pi uplink to its NIC rate on every backend (and sets the Docker
        # and cluster backends' CPU/memory limits); `bw` sets the fabric links (topology.rates).
        bw = backend_options.pop("bw", None)
        pi_model = backend_options.get("pi_model")
        if backend == "local":
            backend_options.pop("pi_model", None)
        self.topology = load_topology(topology, containers_per_pi, pi_model=pi_model, bw=bw)
        self.of_versions = openflow.parse_versions(of_versions)  # what every bridge offers
        self.handshake: dict[str, Any] = {}  # after up(): {"switches": N, "versions": {"1.3": N}}
        # Where up()'s time went, in seconds: "fabric" (namespaces, veths, bridges, shaping) and
        # "ready" (switches connected, fabric discovered and routed); a phase that failed is absent.
        self.timings: dict[str, float] = {}
        if tenants is not None:  # validated before anything is built: a bad file costs no fabric
            from tenants.handle import plan_tenants_file

            apps = [] if isinstance(controller, str) else controller or []
            if controller is not None and not any("tenancy" in str(a) for a in apps):
                raise FabricError(f"tenants file {str(tenants)!r}: needs PiCloud's controller with the tenancy "
                                  f"app (controller is {controller!r})")
            plan_tenants_file(self.topology, tenants)
        self.controller = controller
        self.tenants_source = Path(tenants) if tenants is not None else None
        self.backend = backend
        self.backend_options = backend_options
        self._wanted_prefix = prefix
        self.api_open = bool(api_open)  # True: the controller API takes changes without the token
        self.state: RunState | None = None
        self.fabric: Fabric | None = None  # the backend's (topology.backends.base.Fabric)
        self._controller_proc: subprocess.Popen | None = None
        self._controller_argv: list[str] | None = None  # what kill_controller() saw, for a restart
        self._attached = False
        self._ui: UIServer | None = None  # the one `ui()` started, for `detach()`

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def prefix(self) -> str:
        if self.state is None:
            raise FabricError("testbed is not up (use 'with Testbed(...) as tb:' or tb.up())")
        return self.state.prefix

    @property
    def controller_api(self) -> str | None:
        return (self.state.controller.get("api") if self.state else None) or None

    @property
    def controller_client(self) -> ControllerClient | None:
        """The one client for this run's controller API (None without one of ours)."""
        return ControllerClient.of_run(self.state.controller if self.state else None)

    def _client(self) -> ControllerClient:
        client = self.controller_client
        if client is None:
            raise ControllerError(f"run {self.prefix}: no PiCloud controller API (controller is "
                                  f"{self.state.controller.get('mode') if self.state else None!r})")
        return client

    @property
    def controller_token(self) -> str | None:
        """The run's controller API token (read from its 0600 file); None for an open API or none."""
        client = self.controller_client
        return client.token if client else None

    def controller_headers(self) -> dict[str, str]:
        """Headers for a state-changing controller API request: the token, when the API has one."""
        client = self.controller_client
        return client.headers() if client else {}

    def controller_request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Send a request to this run's controller API with its token (a JSON body when `body` is
        not None); the decoded JSON reply (None when empty). ControllerError on failure."""
        return self._client().request(method, path, body, timeout=timeout)

    def kill_controller(self) -> int:
        """Kill the run's controller as a crash would (SIGKILL: no goodbye to the switches) and reap
        it; returns its PID. Its command line is kept for `restart_controller()`."""
        from picloud import controller_process

        pid, argv = controller_process.kill(state_of(self), self._controller_proc)
        self._controller_argv = argv or self._controller_argv
        return pid

    def restart_controller(self) -> int:
        """Start the run's controller again as it was (killing it first if it still runs); its PID."""
        from picloud import controller_process

        rec = controller_process.record_of(state_of(self))
        if rec is not None and proc.is_ours(proc.ProcessRecord.from_dict(rec)):
            self.kill_controller()
        child = controller_process.restart(state_of(self), self._controller_argv)
        if self._controller_proc is not None:
            self._controller_proc = child
        return child.pid

    def up(self) -> Testbed:
        if self.state is not None:
            raise FabricError(f"run {self.state.prefix}: already up")
        t0 = time.monotonic()
        self.state = allocate_prefix(self.backend, self._wanted_prefix, proc.own_record("testbed").to_dict())
        # SIGTERM tears down like Ctrl-C does, for the whole life of the run, so `kill PID` of an
        # experiment script never leaves a fabric behind (restored by down()).
        self._previous_sigterm = _sigterm_as_interrupt()
        try:
            self.state.topology = self.topology.to_dict()
            self.state.save()
            targets = self._start_controller()
            self.fabric = self._make_fabric(targets)
            if hasattr(self.fabric, "progress"):
                self.fabric.progress = self._progress
            self.fabric.up()
            self.timings["fabric"] = time.monotonic() - t0
            if self._controller_proc is not None:
                self._wait_for_switches()
            elif self.state.controller.get("targets"):
                self._wait_for_external()
            self.timings["ready"] = time.monotonic() - t0 - self.timings["fabric"]
            if self.tenants_source is not None:
                from tenants.handle import load_tenants_file

                load_tenants_file(self, self.tenants_source)
        except BaseException:
            self.down()
            raise
        self.build_seconds = time.monotonic() - t0
        return self

    def down(self) -> None:
        if self.state is None:
            return
        state = self.state
        state.reload()  # other processes may have added containers or processes to this run
        try:
            if self._attached and self.fabric is None:
                self.fabric = self._make_fabric([])
            # Every helper is asked to stop first and winds down while the fabric goes (the
            # controller of a 1,000-container run takes 1-2 s to close its apps), then is ended
            # for sure (SIGKILL past a grace).
            records = [proc.ProcessRecord.from_dict(rec) for rec in state.objects.get("pids", [])]
            for rec in records:
                proc.ask_to_stop(rec)
            try:
                if self.fabric is not None:
                    self.fabric.down()
                else:
                    from topology.backends.local import remove_objects

                    remove_objects(state)
            finally:
                for rec in records:
                    proc.terminate(rec)
                state.objects["pids"] = []
            state.delete()
        finally:
            if self._controller_proc is not None:
                self._controller_proc.poll()
            self.state = None
            _restore_sigterm(getattr(self, "_previous_sigterm", None))
            self._previous_sigterm = None

    @classmethod
    def attach(cls, prefix: str | None = None) -> Testbed:
        """The Testbed of a run started elsewhere (`picloud up --detach`), from its state file."""
        runs = list_runs()
        if prefix is None:
            if not runs:
                raise FabricError("no PiCloud run is up (start one with 'picloud up SPEC --detach')")
            if len(runs) > 1:
                raise FabricError(f"{len(runs)} runs are up ({', '.join(runs)}): choose one with --run PREFIX")
            prefix = runs[0]
        state = RunState.load(prefix)
        if not state.topology:
            raise FabricError(f"run {prefix}: its state has no topology yet (still starting, or crashed: "
                              "'picloud clean')")
        tb = cls(Topology.from_dict(state.topology), backend=state.backend,
                 controller=state.controller.get("mode"))
        tb.state = state
        tb._attached = True
        tb.fabric = tb._make_fabric(state.controller.get("targets", []))
        return tb

    def _make_fabric(self, targets: list[str]) -> Fabric:
        assert self.state is not None
        if self.backend == "local":
            from topology.backends.local import LocalFabric

            return LocalFabric(self.topology, self.state, targets, of_versions=self.of_versions,
                               **self.backend_options)
        if self.backend == "docker":
            from topology.backends.docker import DockerFabric

            return DockerFabric(self.topology, self.state, targets, of_versions=self.of_versions,
                                **self.backend_options)
        from topology.backends.cluster.fabric import ClusterFabric

        return ClusterFabric(self.topology, self.state, targets, of_versions=self.of_versions,
                             **self.backend_options)

    # --- controller ---------------------------------------------------------------------------
    def _start_controller(self) -> list[str]:
        assert self.state is not None
        mode = self.controller
        if mode == "none":
            self.state.controller = {"mode": "none", "targets": []}
            self.state.save()
            return []
        if isinstance(mode, str):  # an external controller: tcp:IP:PORT
            self.state.controller = {"mode": mode, "target": mode, "targets": [mode]}
            self.state.save()
            return [mode]
        prefix = self.state.prefix
        host = "127.0.0.1"
        if self.backend == "cluster":
            # Real (or emulated) Pis must reach the controller: listen on the inventory's
            # controller address; the API stays on loopback.
            from topology.backends.cluster.check import controller_address

            host = controller_address(self.backend_options) or host
        listen, api = f"{host}:{of_port(prefix)}", f"127.0.0.1:{api_port(prefix)}"
        argv = [sys.executable, "-m", "controller_apps.runner", *(mode or []), "--listen", listen,
                "--api", api, "--topology", str(self.state.path)]
        scheme = "tcp"
        if self.backend == "cluster":
            from topology.backends.cluster.check import openflow_tls

            tls = openflow_tls(self.backend_options)
            if tls is not None:
                argv += ["--tls-key", tls["key"], "--tls-cert", tls["cert"], "--tls-ca", tls["ca"]]
                scheme = "ssl"
        token_file = None
        if self.api_open:
            argv.append("--api-open")
        else:
            from picloud.runstate import api_token_path
            from picloud.secrets_files import write_token

            token_file = api_token_path(prefix)
            write_token(token_file)  # a fresh token per run, 0600, before the controller reads it
            argv += ["--api-token-file", str(token_file)]
        if mode is None or "tenancy" in mode:
            # Every run of the default app set has a tenants file (empty at first), so tenancy runs
            # from the start and tenants can be created on the live fabric.
            from tenants.store import run_tenants_path

            self.state.tenants_file = str(run_tenants_path(self.state))
            argv += ["--tenants", self.state.tenants_file]
        from controller_apps.runner import DEFAULT_APPS

        log_path = self.state.path.with_suffix(".controller.log")
        apps = list(mode) if mode is not None else [*DEFAULT_APPS, "tenancy"]  # what the runner loads
        self.state.controller = {"mode": None if mode is None else list(mode), "apps": apps,
                                 "target": f"{scheme}:{listen}",
                                 "targets": [f"{scheme}:{listen}"], "api": f"http://{api}", "log": str(log_path),
                                 "token_file": str(token_file) if token_file else None}
        self.state.save()
        from picloud.secrets_files import open_private

        with open_private(log_path, "ab") as logf:
            self._controller_proc = proc.spawn_helper(argv, stdout=logf)
        self.state.intend("pids", [proc.record(self._controller_proc, "controller").to_dict()])
        return [f"{scheme}:{listen}"]

    def _controller_get(self, path: str, timeout: float = 5.0) -> Any:
        return self._client().get(path, timeout=timeout)

    def _wait_for_switches(self) -> None:
        """Until every bridge has completed the OpenFlow handshake with our controller and the
        fabric is routed. A version the apps and the bridges cannot agree on fails at once, one
        line per switch; a switch still unconnected at the deadline gets OVS's view of why."""
        names = {self.topology.dpid(n): n for n in self.topology.bridges}
        want = set(names)
        limit = (CONTROLLER_READY_TIMEOUT + READY_PER_BRIDGE * len(want)
                 + READY_PER_HOST_BRIDGE * len(self.topology.containers) * len(want))
        deadline = time.monotonic() + limit
        seen: set[int] = set()
        of_state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self._controller_proc is not None
            if self._controller_proc.poll() is not None:
                raise ControllerError(f"controller exited with code {self._controller_proc.returncode}: "
                                      f"{_tail(state_of(self).controller.get('log'))}")
            try:
                of_state = self._controller_get("/state/openflow", timeout=2)
            except ControllerError:
                time.sleep(0.2)
                continue
            wants = of_state.get("versions") or []
            if wants:
                reasons = [r for n in self.topology.bridges
                           if (r := openflow.mismatch_reason(n, wants, self.of_versions))]
                if reasons:
                    raise ControllerError(_switch_lines(reasons, len(names)))
            seen = {int(d, 16) for d in of_state.get("switches", {})}
            self._progress("switches connected" if not want <= seen else "discovery and routing",
                           len(want & seen), len(want))
            if want <= seen and self._controller_ready():
                self._record_handshake(of_state, names)
                return
            time.sleep(0.2)
        if not want <= seen:
            lines = self._why_unconnected([names[d] for d in sorted(want - seen)], of_state)
            raise ControllerError(_switch_lines(lines, len(names), f"within {limit:.0f}s (log: "
                                                f"{state_of(self).controller.get('log')})"))
        raise ControllerError(f"controller: the fabric was not discovered and routed within {limit:.0f}s "
                              f"(log: {state_of(self).controller.get('log')})")

    def _record_handshake(self, of_state: dict[str, Any], names: dict[int, str]) -> None:
        versions: dict[str, int] = {}
        for dpid, wire in of_state.get("switches", {}).items():
            if int(dpid, 16) in names:
                key = openflow.label(int(wire))
                versions[key] = versions.get(key, 0) + 1
        self.handshake = {"switches": len(names), "versions": versions}

    def _why_unconnected(self, nodes: list[str], of_state: dict[str, Any]) -> list[str]:
        """One line per switch that has not completed the handshake, from OVS's Controller rows
        (is_connected, state, last_error) and the handshakes the controller refused."""
        assert self.fabric is not None
        links = ovs.controller_links([self.fabric.bridge(n) for n in nodes]) if self.backend != "cluster" else {}
        refused = of_state.get("refused") or []
        lines = []
        for node in nodes:
            rows = links.get(self.fabric.bridge(node), []) if self.backend != "cluster" else []
            if not rows:
                lines.append(f"{node}: did not complete the OpenFlow handshake (no controller status from OVS)")
                continue
            row = rows[0]
            state, error = row.status.get("state", "?"), row.status.get("last_error")
            if row.is_connected:
                why = (f"connected to {row.target} but the controller never finished the handshake"
                       + (f" (controller: {refused[-1]})" if refused else ""))
            else:
                why = f"not connected to {row.target} (OVS: state {state}" + \
                      (f", last error {error!r})" if error else ")")
            lines.append(f"{node}: {why}")
        return lines

    def _wait_for_external(self) -> None:
        """An external controller's switches: OVS must hold an established connection to it on
        every bridge, twice in a row a second apart (a controller that refuses the version closes
        the connection right after the hello, so one sample could catch it open)."""
        assert self.fabric is not None and self.state is not None
        if self.backend == "cluster":
            return  # the Pis' OVS is remote: the cluster backend checks its own controller probe
        bridges = {self.fabric.bridge(n): n for n in self.topology.bridges}
        limit = EXTERNAL_READY_TIMEOUT + READY_PER_BRIDGE * len(bridges)
        deadline = time.monotonic() + limit
        stable = refused = 0
        links: dict[str, list[ovs.ControllerLink]] = {}
        while time.monotonic() < deadline:
            links = ovs.controller_links(bridges)
            live = [b for b in bridges
                    if any(r.is_connected and r.status.get("state") in ("ACTIVE", "IDLE") for r in links.get(b, []))]
            up = len(live) == len(bridges)
            self._progress("switches connected", len(live), len(bridges))
            stable = stable + 1 if up else 0
            if stable >= 2:
                self.handshake = {"switches": len(bridges), "versions": {}}
                return
            # A refused version does not heal: three polls of only that and we say so at once.
            down = [r for b in bridges for r in links.get(b, [])[:1] if not r.is_connected]
            refused = refused + 1 if down and all(r.status.get("last_error") == "Protocol error" for r in down) else 0
            if refused >= 3:
                break
            time.sleep(1.0)
        lines = []
        offers = openflow.labels(self.of_versions)
        for bridge, node in sorted(bridges.items(), key=lambda kv: kv[1]):
            rows = links.get(bridge, [])
            row = rows[0] if rows else None
            if row is None or (row.is_connected and row.status.get("state") in ("ACTIVE", "IDLE")):
                continue
            state, error = row.status.get("state", "?"), row.status.get("last_error")
            if error == "Protocol error":
                peer = ovs.refused_versions(row.target)
                speaks = _peer_versions(peer) if peer else "none of them"
                why = f"the controller at {row.target} speaks OpenFlow {speaks}, the bridge offers {offers}"
            elif error in (None, "End of file") and "sec_since_connect" in row.status:
                why = (f"{row.target} accepts the connection and then closes it (OVS: state {state}); "
                       f"a controller whose apps want a version the bridge does not offer ({offers}) does that")
            else:
                why = f"not connected to {row.target} (OVS: state {state}" + \
                      (f", last error {error!r})" if error else ")")
            lines.append(f"{node}: {why}")
        raise ControllerError(_switch_lines(lines or ["the connections kept dropping"], len(bridges)))

    def _runs(self, app: str) -> bool:
        return self.controller is None or app in self.controller

    def _controller_ready(self) -> bool:
        """Ready means traffic can flow at once: discovery sees every intended fabric link with
        nothing missing, and routing has installed paths for every container on every bridge (its
        hosts and bridges in /state "ready"). Without our discovery/routing (a user's app set),
        every switch connected is all there is to wait for."""
        if not self._runs("discovery"):
            return True
        try:
            state = self._controller_get("/state", timeout=READY_PROBE_TIMEOUT)
        except ControllerError:
            return False
        fabric = {frozenset((ln.a, ln.b)) for ln in self.topology.fabric_links()}
        seen = {frozenset((ln["a"], ln["b"])) for ln in state.get("links", []) if ln.get("up", True)}
        if not fabric <= seen or (state.get("diff") or {}).get("missing"):
            return False
        if not self._runs("routing") or not self.topology.containers:
            return True  # no routing, or nothing to route yet
        # Routing's last full computation (with every bridge connected) routed at least every
        # container (tenant members may be routed already too): its "ready" facts in /state.
        return routed(state, len(self.topology.containers), len(self.topology.bridges))

    # --- what users read ----------------------------------------------------------------------
    @property
    def containers(self) -> list[str]:
        extra = list(self.state.extra.get("containers", {})) if self.state else []
        return self.topology.containers + extra

    @property
    def pis(self) -> list[str]:
        return self.topology.pis

    @property
    def switches(self) -> list[str]:
        return self.topology.switches

    @property
    def links(self) -> list[Link]:
        return self.topology.fabric_links()

    def container_ip(self, container: str) -> str:
        """The container's address without prefix length (topology or run-time container)."""
        extra = self.state.extra.get("containers", {}) if self.state else {}
        if container in extra:
            return extra[container]["ip"]
        if container not in self.topology or self.topology.kind(container) != "container":
            raise FabricError(f"container {container!r}: no such container")
        return str(self.topology.node(container).ip).split("/")[0]

    # --- doing things -------------------------------------------------------------------------
    def _require_up(self) -> None:
        state_of(self)
        fabric_of(self)

    def exec(self, container: str, cmd: str | list[str], timeout: float | None = None) -> tuple[int, str]:
        self._require_up()
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return fabric_of(self).exec(container, argv, timeout=timeout)

    def popen(self, container: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
        self._require_up()
        return fabric_of(self).popen(container, argv, **popen_kwargs)

    def ping_all(self, tcp: bool = False, containers: list[str] | None = None,
                 timeout: float = 3.0) -> dict[str, dict[str, float]]:
        """Loss matrix src -> dst -> fraction lost. ICMP by default; tcp=True proves the path carries
        TCP, which ping does not (a checksum-offload fault passes ping and breaks TCP)."""
        self._require_up()
        fabric = fabric_of(self)
        names = containers if containers is not None else self.containers
        for name in names:
            fabric.netns(name)
        if tcp:
            endpoints = {c: (fabric.netns(c), self.container_ip(c)) for c in names}
            return netns_effects.tcp_matrix(endpoints, timeout=timeout)
        pairs = [(s, d) for s in names for d in names if s != d]

        def one(pair: tuple[str, str]) -> tuple[str, str, float]:
            s, d = pair
            ok = any(fabric.exec(s, ["ping", "-c1", "-W", str(max(1, int(timeout))), "-q",
                                          self.container_ip(d)])[0] == 0 for _ in range(2))
            return s, d, 0.0 if ok else 1.0

        matrix: dict[str, dict[str, float]] = {s: {} for s in names}
        with ThreadPoolExecutor(max_workers=16) as pool:
            for s, d, loss in pool.map(one, pairs):
                matrix[s][d] = loss
        return matrix

    def link(self, a: str, b: str) -> LinkHandle:
        self._require_up()
        self.topology.link(a, b)
        return LinkHandle(self, a, b)

    def flows(self, switch: str) -> list[dict]:
        """Flow entries of a switch or Pi bridge, in Ryu ofctl_rest's shape. The switch itself
        answers (the controller waits for its stats reply), so this waits as long as an
        ovs-vswitchd stall may last (topology/stalls.py), not the 5 s of a controller-only read."""
        self._require_up()
        dpid = self.topology.dpid(switch)
        return self._controller_get(f"/stats/flow/{dpid}", timeout=STATS_READ_S).get(str(dpid), [])

    def port_stats(self, switch: str) -> list[dict]:
        """Port counters of a switch or Pi bridge, in Ryu ofctl_rest's shape. The switch answers,
        so this waits as long as an ovs-vswitchd stall may last, as `flows` does: with the 5 s of
        a controller-only read, fattree_ecmp_failover.py failed at load 15 (ReadTimeout)."""
        self._require_up()
        dpid = self.topology.dpid(switch)
        return self._controller_get(f"/stats/port/{dpid}", timeout=STATS_READ_S).get(str(dpid), [])

    def tenant(self, name: str, subnet: str | None = None, rate: float | None = None) -> TenantHandle:
        self._require_up()
        from tenants.handle import TenantHandle

        return TenantHandle(self, name, subnet=subnet, rate=rate)

    def verify_isolation(self) -> IsolationReport:
        self._require_up()
        from tenants.verify import verify

        return verify(self)

    def traffic(self, **kwargs: Any) -> Results:
        """`traffic.engine.run` on this run; the live view is recorded into the results (timeline.json
        for replay in the UI) unless `recorder=None` is given."""
        self._require_up()
        from traffic.engine import run
        from webui.record import Recorder

        kwargs.setdefault("recorder", Recorder)
        return run(self, **kwargs)

    def scenario(self, entries: Any, seed: int | None = None) -> BoundScenario:
        """A validated scenario timeline (entries or a YAML file) for `traffic(scenario=...)` or
        `.run(out)`; see `traffic.scenario`."""
        self._require_up()
        from traffic.scenario_run import BoundScenario

        return BoundScenario(self, entries, seed)

    def calibrate(self, seconds: float = 2.0) -> dict[str, Any]:
        """Measure goodput, RTT and loss per configured link class and the unshaped ceiling
        (traffic.calibrate); stored with the run, so its traffic runs stand on it."""
        self._require_up()
        from traffic import calibrate

        result = calibrate.measure(self, seconds=seconds)
        calibrate.store(self, result)
        return result

    def capture(self, targets: list[str], bpf: str | None = None, out: str | Path | None = None) -> Capture:
        """`with tb.capture(["link:A,B", "port:tor1:3", "web1"]) as cap:` one pcapng of many points;
        `cap.result` after the block (see `traffic.capture`)."""
        self._require_up()
        from traffic.capture import Capture

        return Capture(self, targets, bpf, out)

    def ui(self, port: int = 8080, host: str = "127.0.0.1", host_names: tuple[str, ...] = (),
           token: str | None = None) -> UIServer:
        """Serve the web UI; `host_names`: more names browsers use for it (checked Host headers);
        `token`: the one actions need (a fresh random one by default)."""
        self._require_up()
        from webui.server import UIServer

        self._ui = UIServer(self, host=host, port=port, host_names=tuple(host_names), token=token)
        return self._ui

    def detach_ui(self) -> int:
        """Move the UI `ui()` started into its own `picloud ui` process that outlives this one
        (same address and token, recorded in the run state); returns its PID."""
        self._require_up()
        if self._ui is None:
            raise PiCloudError("no web UI to detach (start one with tb.ui())")
        from picloud.uiprocess import detach_ui

        ui, self._ui = self._ui, None
        return detach_ui(ui, state_of(self))

    def detach(self) -> int | None:
        """Leave the run up after this process exits (`picloud up --detach`): its web UI, if
        `ui()` started one, moves to its own process; `picloud down` attaches to the run by its
        state file, and `picloud clean` leaves it alone while its controller runs. Returns the
        detached UI's PID, if any."""
        self._require_up()
        assert self.state is not None
        pid = self.detach_ui() if self._ui is not None else None
        self.state.extra.pop("owner", None)
        self.state.extra["detached"] = True
        self.state.save()
        self.state = None
        return pid


def _peer_versions(text: str) -> str:
    """OVS's 'version 0x04 and earlier' / 'versions 0x01, 0x04' -> '1.3 and earlier' / '1.0, 1.3'."""
    def one(m: re.Match[str]) -> str:
        wire = int(m.group(0), 16)
        return openflow.label(wire) if wire in openflow.WIRE.values() else m.group(0)

    return re.sub(r"0x[0-9a-fA-F]+", one, re.sub(r"^versions? ", "", text.strip()))


def _switch_lines(lines: list[str], total: int, when: str = "") -> str:
    """ "N of M bridges did not connect[ when]:" and one line per switch (at most 10 shown)."""
    shown = lines[:10] + ([f"... and {len(lines) - 10} more"] if len(lines) > 10 else [])
    return "\n".join([f"{len(lines)} of {total} bridges did not connect{' ' + when if when else ''}:", *shown])


def _tail(path: str | None, lines: int = 3) -> str:
    if not path or not os.path.exists(path):
        return "(no log)"
    with open(path, errors="replace") as f:
        text = f.read().strip().splitlines()
    return " | ".join(text[-lines:]) or "(empty log)"


def _sigterm_as_interrupt():
    """Only where nobody else handles SIGTERM yet (a web server, a test runner may)."""
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)


__all__ = ["LinkHandle", "PiCloudError", "Testbed"]
