"""Where the UI's data comes from: one small interface, two implementations.

`TestbedSource` reads a running fabric through the `Testbed` facade (port and flow stats, link
actions, tenants, traffic) and the controller's JSON API (`/state`, groups, meters).
`StaticSource` serves fixed, in-memory data: unit tests feed it exact inputs and the benchmark
feeds it a synthetic fat-tree with thousands of flows, with no fabric and no root. Routes and
the live monitor only ever talk to `DataSource`, so both paths run the same UI code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from picloud.errors import ControllerError, PiCloudError, UIError
from topology.backends.base import state_of
from topology.model import Topology
from topology.stalls import OVS_STALL_S

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)
CONTROLLER_TIMEOUT = 1.0  # seconds; the UI must keep drawing while a controller is slow
# A switch page's group and meter tables: the switch answers through the controller, and the
# page shows what it got, so the read waits as long as an ovs-vswitchd stall may last (1 s made
# the page show "no groups" for a switch that has them whenever OVS stalled; topology/stalls.py).
TABLE_TIMEOUT = OVS_STALL_S


class DataSource(Protocol):
    """What the UI reads and, with a valid token, asks to change."""

    def topology(self) -> Topology: ...

    def runtime_containers(self) -> dict[str, dict[str, Any]]:
        """Containers added at run time (tenant members): name -> {pi, port, ip, mac}."""
        ...

    def port_stats(self, node: str) -> list[dict[str, Any]]: ...

    def flows(self, node: str) -> Any: ...

    def groups(self, node: str) -> Any:
        """Group stats and descriptions: `{"stats": ofctl_rest /stats/group, "desc": /stats/groupdesc}`."""
        ...

    def meters(self, node: str) -> Any: ...

    def controller_state(self) -> dict[str, Any] | None:
        """The controller's `/state` JSON, or None without a (reachable) controller."""
        ...

    def tenants(self) -> Any:
        """The tenants file's content (YAML parsed), or None."""
        ...

    def results_dir(self) -> Path | None: ...

    def set_link(self, a: str, b: str, up: bool) -> None: ...

    def start_bulk(self, src: str, dst: str, seconds: float) -> dict[str, Any]: ...

    def stop_bulk(self, flow_id: str) -> dict[str, Any]: ...

    def bulk_flows(self) -> list[dict[str, Any]]: ...

    def add_members(self, tenant: str, count: int, placement: str) -> list[str]: ...

    def remove_member(self, tenant: str, member: str) -> None: ...

    def verify(self) -> dict[str, Any]:
        """Probe tenant isolation now (slow: seconds); the report as `IsolationReport.to_dict()`
        plus its text `summary`."""
        ...


class BulkFlows:
    """iperf3 bulk flows between two containers, started and stopped from the UI.

    Why iperf3 rather than the traffic engine: a button on a projector wants one long flow that
    makes a path glow and can be stopped at any moment; workload runs belong to `picloud traffic`.
    """

    def __init__(self, popen: Callable[..., Any], port_base: int = 5201) -> None:
        self._popen = popen
        self._lock = threading.Lock()
        self._flows: dict[str, dict[str, Any]] = {}
        self._next = 1
        self._port_base = port_base

    def start(self, src: str, dst: str, seconds: float, dst_ip: str) -> dict[str, Any]:
        import subprocess

        with self._lock:
            fid = f"bulk{self._next}"
            port = self._port_base + self._next
            self._next += 1
        from traffic.iperf import start_server

        server = start_server(self._popen, dst, ["iperf3", "-s", "-1", "-p", str(port)])
        client = self._popen(src, ["iperf3", "-c", dst_ip, "-p", str(port), "-t", f"{seconds:g}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        record = {"id": fid, "src": src, "dst": dst, "seconds": seconds, "started": time.time(),
                  "procs": [client, server]}
        with self._lock:
            self._flows[fid] = record
        return self._public(record)

    def stop(self, fid: str) -> dict[str, Any]:
        with self._lock:
            record = self._flows.get(fid)
        if record is None:
            raise KeyError(fid)
        for proc in record["procs"]:
            if proc.poll() is None:
                proc.terminate()
        for proc in record["procs"]:
            try:
                proc.wait(timeout=3)
            except Exception:  # noqa: BLE001 - a stuck iperf3 is killed, whatever wait raised
                proc.kill()
                proc.wait()
        return self._public(record)

    def stop_all(self) -> None:
        for fid in list(self._flows):
            self.stop(fid)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._public(r) for r in self._flows.values()]

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        running = record["procs"][0].poll() is None
        return {k: v for k, v in record.items() if k != "procs"} | {"running": running}


class TestbedSource:
    """A running fabric, through `picloud.testbed.Testbed` and the controller's API."""

    def __init__(self, testbed: Run, results: Path | str | None = "results") -> None:
        self.testbed = testbed
        self._results = Path(results) if results is not None else None
        self._bulk = BulkFlows(testbed.popen)

    # --- reading ------------------------------------------------------------------------------
    def topology(self) -> Topology:
        return self.testbed.topology

    def runtime_containers(self) -> dict[str, dict[str, Any]]:
        return dict(state_of(self.testbed).extra.get("containers") or {})

    def port_stats(self, node: str) -> list[dict[str, Any]]:
        return list(self.testbed.port_stats(node))

    def flows(self, node: str) -> Any:
        return self.testbed.flows(node)

    def _controller(self, path: str, timeout: float = CONTROLLER_TIMEOUT) -> Any:
        """A read of the controller API, None when it cannot answer (the page shows no data)."""
        client = self.testbed.controller_client
        if client is None:
            return None
        try:
            return client.get(path, timeout=timeout)
        except ControllerError as exc:
            log.debug("controller %s%s: %s", client.api, path, exc)
            return None

    def groups(self, node: str) -> Any:
        dpid = self.testbed.topology.dpid(node)
        return {"stats": self._controller(f"/stats/group/{dpid}", TABLE_TIMEOUT),
                "desc": self._controller(f"/stats/groupdesc/{dpid}", TABLE_TIMEOUT)}

    def meters(self, node: str) -> Any:
        return self._controller(f"/stats/meter/{self.testbed.topology.dpid(node)}", TABLE_TIMEOUT)

    def controller_state(self) -> dict[str, Any] | None:
        state = self._controller("/state")
        return state if isinstance(state, dict) else None

    def tenants(self) -> Any:
        from tenants.store import run_tenants_path

        state = state_of(self.testbed)
        path = state.tenants_file or run_tenants_path(state)
        if not Path(path).is_file():
            return None
        import yaml

        try:
            return yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            log.warning("tenants file %s unreadable: %s", path, exc)
            return None

    def results_dir(self) -> Path | None:
        return self._results

    # --- actions ------------------------------------------------------------------------------
    def set_link(self, a: str, b: str, up: bool) -> None:
        handle = self.testbed.link(a, b)
        handle.up() if up else handle.down()

    def capture_link(self, a: str, b: str, seconds: float) -> Any:
        """Both ends of a link for `seconds`, into RESULTS/captures/ (`traffic.capture`)."""
        from datetime import UTC, datetime

        from traffic.capture import capture_for

        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out = (self._results or Path("results")) / "captures" / f"capture-{stamp}-{a}-{b}.pcapng"
        return capture_for(self.testbed, [f"link:{a},{b}"], seconds, out=out)

    def _ip(self, container: str) -> str:
        try:
            return str(self.testbed.container_ip(container))
        except PiCloudError:
            raise UIError(f"traffic: unknown container {container!r} (pick one from /api/topology)") from None

    def start_bulk(self, src: str, dst: str, seconds: float) -> dict[str, Any]:
        dst_ip = self._ip(dst)
        self._ip(src)
        return self._bulk.start(src, dst, seconds, dst_ip)

    def stop_bulk(self, flow_id: str) -> dict[str, Any]:
        return self._bulk.stop(flow_id)

    def bulk_flows(self) -> list[dict[str, Any]]:
        return self._bulk.list()

    def add_members(self, tenant: str, count: int, placement: str) -> list[str]:
        return [m.name for m in self.testbed.tenant(tenant).add(count, placement=placement)]

    def remove_member(self, tenant: str, member: str) -> None:
        self.testbed.tenant(tenant).remove(member)

    def verify(self) -> dict[str, Any]:
        report = self.testbed.verify_isolation()
        return report.to_dict() | {"summary": report.summary()}

    def close(self) -> None:
        self._bulk.stop_all()


class StaticSource:
    """Fixed data in memory. Port counters grow at the configured link rates from a clock, so a
    test (or the benchmark) sees utilisation without any traffic; actions change the data."""

    def __init__(
        self,
        topology: Topology,
        *,
        flows: Mapping[str, list[dict[str, Any]]] | None = None,
        groups: Mapping[str, list[dict[str, Any]]] | None = None,
        meters: Mapping[str, list[dict[str, Any]]] | None = None,
        tenants: Any = None,
        runtime: Mapping[str, dict[str, Any]] | None = None,
        results: Path | None = None,
        controller: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topology = topology
        self._flows = dict(flows or {})
        self._groups = dict(groups or {})
        self._meters = dict(meters or {})
        self._tenants = tenants
        self._runtime = {k: dict(v) for k, v in (runtime or {}).items()}
        self._results = results
        self._controller = controller
        self._clock = clock
        self._t0 = clock()
        self._rates: dict[tuple[str, int], float] = {}  # (bridge, port) -> tx bytes/s
        self._offset: dict[tuple[str, int], float] = {}  # (bridge, port) -> bytes at elapsed 0
        self._down: set[tuple[str, str]] = set()
        self._events: list[dict[str, Any]] = []
        self._bulk: dict[str, dict[str, Any]] = {}

    def set_rate(self, a: str, b: str, bps: float) -> None:
        """Make link a-b carry `bps` bits/s, sent by every bridge end (counters grow from now)."""
        now = self._clock() - self._t0
        for node, peer in ((a, b), (b, a)):
            if self._topology.kind(node) == "container":
                continue
            port = self._topology.port(node, peer)
            base = self._counter(node, port, now)
            self._rates[(node, port)] = bps / 8
            self._offset[(node, port)] = base - bps / 8 * now

    def _counter(self, node: str, port: int, elapsed: float) -> float:
        return self._offset.get((node, port), 0.0) + self._rates.get((node, port), 0.0) * elapsed

    # --- reading ------------------------------------------------------------------------------
    def topology(self) -> Topology:
        return self._topology

    def runtime_containers(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._runtime.items()}

    def port_stats(self, node: str) -> list[dict[str, Any]]:
        elapsed = self._clock() - self._t0
        out: list[dict[str, Any]] = []
        ports = list(self._topology.ports(node)) + [
            int(v["port"]) for v in self._runtime.values() if v.get("pi") == node]
        for port in ports:
            tx = int(self._counter(node, port, elapsed))
            out.append({"port_no": port, "tx_bytes": tx, "rx_bytes": tx, "tx_packets": tx // 1500,
                        "rx_packets": tx // 1500, "rx_dropped": 0, "tx_dropped": 0,
                        "rx_errors": 0, "tx_errors": 0})
        out.append({"port_no": "LOCAL", "tx_bytes": 0, "rx_bytes": 0})
        return out

    def flows(self, node: str) -> Any:
        return {str(self._topology.dpid(node)): list(self._flows.get(node, []))}

    def groups(self, node: str) -> Any:
        return {"stats": [], "desc": {str(self._topology.dpid(node)): list(self._groups.get(node, []))}}

    def meters(self, node: str) -> Any:
        return {str(self._topology.dpid(node)): list(self._meters.get(node, []))}

    def controller_state(self) -> dict[str, Any] | None:
        if not self._controller:
            return None
        topo = self._topology
        return {
            "switches": [{"dpid": f"{topo.dpid(n):016x}", "name": n, "connected": True, "ports": []}
                         for n in topo.bridges],
            "links": [{"a": ln.a, "a_port": ln.port_a, "b": ln.b, "b_port": ln.port_b,
                       "up": (ln.a, ln.b) not in self._down, "bps": 0, "util": 0,
                       "capacity_bps": 1e9} for ln in topo.fabric_links()],
            "hosts": [],
            "diff": {"missing": [], "unexpected": []},
            "events": list(self._events),
        }

    def tenants(self) -> Any:
        return self._tenants

    def results_dir(self) -> Path | None:
        return self._results

    # --- actions ------------------------------------------------------------------------------
    def set_link(self, a: str, b: str, up: bool) -> None:
        try:
            ln = self._topology.link(a, b)
        except PiCloudError:
            raise UIError(f"link {a!r}-{b!r}: no such link") from None
        (self._down.discard if up else self._down.add)((ln.a, ln.b))
        self._events.append({"t": time.time(), "kind": "link", "text": f"link {ln.a}-{ln.b} {'up' if up else 'down'}"})

    def start_bulk(self, src: str, dst: str, seconds: float) -> dict[str, Any]:
        for c in (src, dst):
            if c not in self._topology or self._topology.kind(c) != "container":
                raise UIError(f"traffic: unknown container {c!r} (pick one from /api/topology)")
        fid = f"bulk{len(self._bulk) + 1}"
        self._bulk[fid] = {"id": fid, "src": src, "dst": dst, "seconds": seconds, "started": time.time(),
                           "running": True}
        self.set_rate(src, self._topology.pi_of(src), 5e8)
        return dict(self._bulk[fid])

    def stop_bulk(self, flow_id: str) -> dict[str, Any]:
        record = self._bulk[flow_id]  # KeyError: the route answers 404
        record["running"] = False
        self.set_rate(record["src"], self._topology.pi_of(record["src"]), 0)
        return dict(record)

    def bulk_flows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._bulk.values()]

    def add_members(self, tenant: str, count: int, placement: str) -> list[str]:
        tenants = self._tenant_list()
        entry = next((t for t in tenants if t.get("name") == tenant), None)
        if entry is None:
            entry = {"name": tenant, "members": []}
            tenants.append(entry)
        pis = self._topology.pis
        added = []
        for i in range(count):
            name = f"{tenant}-{len(entry['members']) + 1}"
            pi = pis[i % len(pis)] if placement == "spread" else pis[0]
            entry["members"].append({"name": name, "pi": pi})
            added.append(name)
        return added

    def remove_member(self, tenant: str, member: str) -> None:
        entry = next((t for t in self._tenant_list() if t.get("name") == tenant), None)
        if entry is None or not any(m.get("name") == member for m in entry["members"]):
            raise UIError(f"tenant {tenant!r}: no member {member!r}")
        entry["members"] = [m for m in entry["members"] if m.get("name") != member]

    def verify(self) -> dict[str, Any]:
        """A clean report over the tenants it holds: every member pair reached, no leak."""
        names = [t["name"] for t in self._tenant_list()]
        pairs = {t["name"]: len(t["members"]) * (len(t["members"]) - 1) for t in self._tenant_list()}
        return {"ok": True, "tenants": names, "matrix": {a: {b: 0 for b in names if b != a} for a in names},
                "leaks": [], "reachability": {t: {"pairs": n, "failed": []} for t, n in pairs.items()},
                "probes": 0, "seconds": 0.0, "summary": "OK: no leak, every intra-tenant pair reached"}

    def _tenant_list(self) -> list[dict[str, Any]]:
        if self._tenants is None:
            self._tenants = {"tenants": []}
        return self._tenants["tenants"]

    def close(self) -> None:
        return None
