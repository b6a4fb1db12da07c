"""Cluster mode: the topology on a rack of Pis, driven only through their OVSDB endpoints.

Every bridge (switch or Pi of the model) is placed on one inventory Pi (topology.inventory.place);
a link between bridges on one Pi is a pair of OVS patch ports, a link between Pis a pair of VXLAN
ports (one VNI per model link, see topology.inventory.wiring). Bridges and ports are created with
one OVSDB transaction per Pi (topology.effects.ovsdb_remote), so the controller sees the same
datapath ids and port numbers as on the local fabric and its apps run unchanged.

`up` connects to every Pi and checks its OVS before changing any of them: a cluster with one Pi
unreachable is refused whole, never started by half.

Containers: on a Pi with a Docker endpoint, each container is a Docker container made through
that Pi's engine (`network_mode=none`, limits from the Pi's model); its veth is made on the Pi by a
short-lived helper container sharing the Pi's network and PID namespaces, with NET_ADMIN,
SYS_ADMIN and SYS_PTRACE only (the Docker API is the only way in; no SSH), and the host end is
added to the Pi's bridge through OVSDB. On an
emulated Pi without Docker (`docker: none`) each container is a network namespace on this machine
whose veth's other end sits in the Pi's namespace. Run-time containers (tenant members) are
namespaces on emulated Pis only.

`EmulatedCluster` builds the test bed for all this on one machine: N Pis as network namespaces,
each with its own ovsdb-server and ovs-vswitchd (own database, sockets and pidfiles, userspace
datapath), reachable only over TCP (or TLS) on its underlay address, joined by a Linux bridge in
a hub namespace; Pis may list this machine's Docker engine as theirs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from picloud.errors import ClusterError, FabricError, TopologyError
from picloud.runstate import RunState
from topology import openflow
from topology.effects import ethtool, ip, netns, ovs, proc
from topology.effects.ovsdb_remote import BridgeSpec, PortSpec, Remote
from topology.effects.proc import CommandError
from topology.inventory import (
    Inventory,
    PiModel,
    Wire,
    check_underlay,
    parse_inventory,
    pi_model,
    place,
    wiring,
)
from topology.model import Topology, dpid_str, ifname

log = logging.getLogger(__name__)

CONTAINER_IFACE = "eth0"
OVERLAY_MTU = 1450  # 1500 minus the 50 bytes of VXLAN/UDP/IP/Ethernet headers (RFC 7348)
REQUIRED_IFACE_TYPES = ("vxlan", "patch")


def _model_option(key: str | None) -> PiModel | None:
    if key in (None, "", "none"):
        return None
    try:
        return pi_model(key)
    except ClusterError as exc:
        raise FabricError(f"--pi-model: {exc}") from None


def load_inventory(source: str | Path | Inventory) -> Inventory:
    if isinstance(source, Inventory):
        return source
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_inventory(data, str(path))


# --- cluster check -----------------------------------------------------------------------------
@dataclass
class PiReport:
    name: str
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_pi(pi: Any, controller: str | None = None, timeout: float = 5.0) -> PiReport:
    """What `picloud cluster check` reports for one Pi. Every problem is one line naming the Pi.

    The controller check runs on the Pi itself, through OVSDB only: a short-lived probe bridge
    gets the controller as target, and the Pi's own OVS reports whether it connected."""
    report = PiReport(pi.name)
    where = f"pi {pi.name!r}"
    try:
        with Remote(pi.ovsdb.raw, tls=pi.tls or None, timeout=timeout) as remote:
            info = remote.info()
            report.facts.update(info, reachable=True)
            report.problems += feature_problems(pi.name, info)
            if controller:
                connected = _probe_controller(remote, controller, info["datapath_types"], timeout)
                report.facts["controller"] = "connected" if connected else "unreachable"
                if not connected:
                    report.problems.append(f"{where}: controller {controller} not reachable from the Pi "
                                           "(check its listen address and the Pi's route to it)")
    except ClusterError as exc:
        report.facts["reachable"] = False
        report.problems.append(f"{where}: {exc}")
    if pi.docker.scheme == "none":
        report.facts["docker"] = "none (emulated Pi: containers are namespaces)"
    else:
        try:
            from topology.effects import docker_engine

            engine = docker_engine.client(pi.docker.raw, tls=pi.tls or None, timeout=int(timeout))
            report.facts["docker"] = docker_engine.engine_version(engine)
        except FabricError as exc:
            report.problems.append(f"{where}: {exc}")
    return report


def feature_problems(pi: str, info: dict[str, Any]) -> list[str]:
    """What a Pi's OVS lacks for PiCloud, one line each: vxlan tunnels, patch ports, a datapath."""
    problems = []
    missing = [t for t in REQUIRED_IFACE_TYPES if t not in info["iface_types"]]
    if missing:
        problems.append(f"pi {pi!r}: OVS {info['ovs_version']} lacks interface types {', '.join(missing)} "
                        "(PiCloud needs vxlan tunnels and patch ports)")
    if not {"system", "netdev"} & set(info["datapath_types"]):
        problems.append(f"pi {pi!r}: OVS offers no system or netdev datapath "
                        f"({', '.join(info['datapath_types']) or 'none'})")
    return problems


def _probe_controller(remote: Remote, target: str, datapath_types: list[str], timeout: float) -> bool:
    prefix = "probe"
    bridge = BridgeSpec("pcprobe", dpid_str(0xFFFF00000001), "netdev" if "netdev" in datapath_types else "system",
                        controllers=[target])
    remote.apply(prefix, [bridge])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remote.refresh()
            row = remote.bridges(prefix).get("pcprobe")
            if row is not None and any(c.is_connected for c in row.controller):
                return True
            time.sleep(0.2)
        return False
    finally:
        remote.remove_run(prefix)


def check_cluster(inventory: Inventory, controller: str | None = None, timeout: float = 5.0) -> list[PiReport]:
    """One Pi after the other: the `ovs` library keeps process-wide state (poller, SSL settings)
    and is not safe to drive from several threads."""
    return [check_pi(p, controller, timeout) for p in inventory.pis]


# --- the fabric --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Attach:
    """One Docker container to wire on a Pi: its veth's host end, address and default route."""

    key: str  # model or run-time container name
    host_iface: str
    mac: str
    cidr: str  # 10.0.0.1/8
    gateway: str | None
    pi: str  # the model Pi it hangs off
    netns: str | None  # its local namespace name, when the Pi is emulated on this machine


class ClusterFabric:
    """The Fabric protocol over a cluster of Pis (see the module docstring)."""

    def __init__(self, topology: Topology, state: RunState, controllers: list[str] | None = None,
                 inventory: str | Path | Inventory | None = None, image: str | None = None,
                 pi_model: str | None = None, timeout: float = 10.0, of_versions: list[str] | None = None,
                 openflow_tls: bool | None = None):
        # openflow_tls is the controller's business (Testbed starts it, see `openflow_tls()`); the
        # fabric only passes the ssl: targets it is given on to the Pis.
        if inventory is None:
            inventory = state.extra.get("cluster", {}).get("inventory")
        if inventory is None:
            raise FabricError("cluster backend: no inventory (picloud up SPEC --cluster INVENTORY)")
        from topology.effects import docker_engine

        self.image = image or docker_engine.DEFAULT_IMAGE
        self.of_versions = openflow.parse_versions(of_versions)  # what every bridge offers
        self.model_override = _model_option(pi_model)
        self._engines: dict[str, Any] = {}
        self.topology = topology
        self.state = state
        self.prefix = state.prefix
        self.inventory = load_inventory(inventory)
        self.inventory_source = str(inventory) if not isinstance(inventory, Inventory) else None
        self.timeout = timeout
        self.placement = place(topology, self.inventory)
        self.wires = wiring(topology, self.placement, self.inventory, self.prefix)
        self.controllers = [self._pi_reachable_target(t) for t in (controllers or [])]
        self._remotes: dict[str, Remote] = {}

    # --- names --------------------------------------------------------------------------------
    def bridge(self, node: str) -> str:
        if self.topology.kind(node) == "container":
            raise FabricError(f"{node!r}: a container has no bridge")
        return ifname(self.prefix, self.topology.short_id(node))

    def host(self, node: str) -> str:
        """The inventory Pi a bridge (or a container's Pi) runs on."""
        if self.topology.kind(node) == "container":
            node = self.topology.node(node).pi
        return self.placement[node]

    def ofctl_target(self, node: str) -> str:
        """A passive OpenFlow listener on the Pi's underlay address, so ovs-ofctl works remotely."""
        pi = self.inventory.pi(self.host(node))
        return f"tcp:{pi.underlay}:{self._ofctl_port(node)}"

    def _ofctl_port(self, node: str) -> int:
        run_number = int(self.prefix[2:]) if self.prefix[2:].isdigit() else 0
        return 16640 + (run_number % 64) * 256 + self.topology.bridges.index(node) % 256

    def netns(self, container: str) -> str:
        extra = self.state.extra.get("containers", {}).get(container)
        if extra and extra["netns"]:
            return extra["netns"]
        if extra:
            raise FabricError(f"container {container!r}: runs on a Pi that is not on this machine "
                              "(use exec/popen, which go through the Pi's Docker engine)")
        if container not in self.topology or self.topology.kind(container) != "container":
            raise FabricError(f"container {container!r}: no such container in run {self.prefix}")
        entry = self.inventory.pi(self.host(container))
        if not entry.netns:
            raise FabricError(f"container {container!r}: runs on Pi {entry.name!r}, which is not on this machine "
                              "(use exec/popen, which go through the Pi's Docker engine)")
        return ifname(self.prefix, self.topology.short_id(container))

    def container_name(self, container: str) -> str:
        """Docker's name for a container on a Docker Pi, as in the Docker backend."""
        return f"{self.prefix}-{container}"

    def _docker_pi(self, pi: str) -> bool:
        return self.inventory.pi(pi).docker.scheme != "none"

    def engine(self, pi: str) -> Any:
        from topology.effects import docker_engine

        if pi not in self._engines:
            entry = self.inventory.pi(pi)
            try:
                self._engines[pi] = docker_engine.client(entry.docker.raw, tls=entry.tls or None,
                                                         timeout=int(self.timeout))
            except FabricError as exc:
                raise ClusterError(f"pi {pi!r}: {exc}") from None
        return self._engines[pi]

    def _pi_reachable_target(self, target: str) -> str:
        """Our controller listens on loopback; a Pi reaches it at the inventory's controller address."""
        m = re.match(r"\A(tcp|ssl):([^:]+):(\d+)\Z", target)
        if m and ipaddress.ip_address(m.group(2)).is_loopback:
            if not self.inventory.controller:
                raise FabricError(f"{self.inventory.source}: no 'controller' address, and the Pis cannot reach "
                                  f"{m.group(2)} (add 'controller: ADDRESS-THE-PIS-REACH')")
            return f"{m.group(1)}:{self.inventory.controller}:{m.group(3)}"
        return target

    # --- connections --------------------------------------------------------------------------
    def remote(self, pi: str) -> Remote:
        if pi not in self._remotes:
            entry = self.inventory.pi(pi)
            self._remotes[pi] = Remote(entry.ovsdb.raw, tls=entry.tls or None, timeout=self.timeout)
        return self._remotes[pi]

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()
        self._remotes.clear()

    def used_pis(self) -> list[str]:
        return [p.name for p in self.inventory.pis if p.name in set(self.placement.values())]

    # --- build --------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse before the first change: every Pi reachable, with the OVS features we need."""
        from topology.effects import docker_engine

        for pi in self.used_pis():
            entry = self.inventory.pi(pi)
            if entry.netns and entry.netns not in ip.netns_list():
                raise FabricError(f"pi {pi!r}: namespace {entry.netns!r} does not exist on this machine")
        problems = []
        for pi in self.used_pis():
            try:
                problems += feature_problems(pi, self.remote(pi).info())
                if self._docker_pi(pi) and any(self.host(c) == pi for c in self.topology.containers):
                    engine = self.engine(pi)
                    if not docker_engine.image_exists(engine, self.image):
                        problems.append(f"pi {pi!r}: image {self.image!r} not found on its Docker engine "
                                        "(build it there with 'picloud image build', or docker save | docker load)")
                    elif docker_engine.list_run(engine, self.prefix):
                        problems.append(f"pi {pi!r}: containers of run {self.prefix} already exist there "
                                        f"('picloud clean --run {self.prefix}')")
            except ClusterError as exc:
                problems.append(str(exc))
        if problems:
            more = f" (+{len(problems) - 1} more: run 'picloud cluster check')" if len(problems) > 1 else ""
            raise FabricError(f"cluster: refusing to start half a cluster: {problems[0]}{more}")

    def up(self) -> None:
        self.check()
        self.state.extra["cluster"] = {"inventory": self.inventory_source, "placement": self.placement}
        self.state.intend("bridges", [self.bridge(n) for n in self.topology.bridges])
        self.state.intend("netns", [self.netns(c) for c in self.topology.containers
                                    if self.inventory.pi(self.host(c)).netns])
        try:
            self._make_containers(self.topology.containers)
            self._apply(self.used_pis())
            self._wait_attached(self.used_pis())
        except (CommandError, OSError, ClusterError) as exc:
            self.down()
            raise FabricError(f"run {self.prefix}: building the cluster fabric failed: {exc}") from exc
        except BaseException:
            self.down()
            raise

    def _pi_side_ends(self) -> dict[str, set[str]]:
        """The host ends of namespace containers' veths, which live in emulated Pis' namespaces."""
        ends: dict[str, set[str]] = {}
        for c in self.topology.containers:
            pi_ns = self.inventory.pi(self.host(c)).netns
            if pi_ns and not self._docker_pi(self.host(c)):
                ends.setdefault(pi_ns, set()).add(self._container_host_iface(c))
        for entry in self.state.extra.get("containers", {}).values():
            pi_ns = self.inventory.pi(self.host(entry["pi"])).netns
            if pi_ns and entry.get("iface"):
                ends.setdefault(pi_ns, set()).add(entry["iface"])
        return ends

    def _container_host_iface(self, container: str) -> str:
        pi = self.topology.node(container).pi
        return ifname(self.prefix, self.topology.short_id(pi), self.topology.port(pi, container))

    def _make_containers(self, containers: list[str]) -> None:
        docker_pis = sorted({self.host(c) for c in containers if self._docker_pi(self.host(c))})
        for pi in docker_pis:
            self._make_docker_containers(pi, [c for c in containers if self.host(c) == pi])
        self._make_namespace_containers([c for c in containers if not self._docker_pi(self.host(c))])

    def _limits(self, pi: str, engine: Any) -> dict[str, int]:
        entry = self.inventory.pi(pi)
        model = self.model_override or (pi_model(entry.model) if entry.model else None)
        if model is None:
            return {}
        host_cpus = int(engine.info().get("NCPU") or 1)
        return {"nano_cpus": int(model.cpus(host_cpus) * 1e9), "memory_mb": model.memory_mb}

    def _make_docker_containers(self, pi: str, containers: list[str]) -> None:
        topo = self.topology
        self._start_docker(pi, [
            _Attach(c, self._container_host_iface(c), topo.node(c).mac, topo.node(c).ip, None, topo.node(c).pi,
                    self.netns(c) if self.inventory.pi(pi).netns else None)
            for c in containers])

    def _start_docker(self, pi: str, attaches: list[_Attach]) -> None:
        """Containers through the Pi's Docker engine, wired by one helper run on the Pi."""
        from topology.effects import docker_engine

        entry, engine = self.inventory.pi(pi), self.engine(pi)
        self.state.intend("containers", [self.container_name(a.key) for a in attaches])
        limits = self._limits(pi, engine)
        pids = {}
        for a in attaches:
            docker_engine.run_container(
                engine, self.container_name(a.key), self.image, self.prefix, hostname=a.key,
                nano_cpus=limits.get("nano_cpus"), mem_limit_mb=limits.get("memory_mb"),
                extra_labels={"picloud.container": a.key, "picloud.pi": a.pi, "picloud.host": pi},
                mount_runtime=entry.docker.scheme == "unix")
            pids[a.key] = docker_engine.container_pid(engine, self.container_name(a.key))
        script = []
        for a in attaches:
            pid, inside = pids[a.key], f"nsenter -t {pids[a.key]} -n ip"
            route = f"via {a.gateway}" if a.gateway else f"dev {CONTAINER_IFACE}"
            script += [f"ip link add {a.host_iface} type veth peer name {CONTAINER_IFACE} address {a.mac} netns {pid}",
                       f"{inside} link set lo up", f"{inside} link set {CONTAINER_IFACE} mtu {OVERLAY_MTU}",
                       f"{inside} addr add {a.cidr} dev {CONTAINER_IFACE}", f"{inside} link set {CONTAINER_IFACE} up",
                       f"{inside} route add default {route}"]
            if entry.netns:  # emulated Pi: its OVS lives in a namespace, not in the host's
                script += [f"ip link set {a.host_iface} netns {entry.netns}",
                           f"ip -n {entry.netns} link set {a.host_iface} up"]
            else:
                script.append(f"ip link set {a.host_iface} up")
        docker_engine.run_helper(engine, self.image, self.prefix, "\n".join(script), mount_netns=bool(entry.netns))
        if entry.netns:  # the engine is on this machine: name the namespaces for ping_all and friends
            ip.batch([f"netns attach {a.netns} {pids[a.key]}" for a in attaches])
            ethtool.tx_offload_off([(a.netns, CONTAINER_IFACE) for a in attaches]
                                   + [(entry.netns, a.host_iface) for a in attaches])

    def _make_namespace_containers(self, containers: list[str]) -> None:
        if not containers:
            return
        topo = self.topology
        ip.batch([f"netns add {self.netns(c)}" for c in containers])
        by_pi_ns: dict[str, list[str]] = {}
        lines = []
        for c in containers:
            node = topo.node(c)
            host_iface = self._container_host_iface(c)
            pi_ns = self.inventory.pi(self.host(c)).netns
            lines += [f"link add {host_iface} type veth peer name {CONTAINER_IFACE} address {node.mac} "
                      f"netns {self.netns(c)}", f"link set {host_iface} netns {pi_ns}"]
            by_pi_ns.setdefault(pi_ns, []).append(f"link set {host_iface} up")
        ip.batch(lines)
        ip.batch_in_namespaces(by_pi_ns)
        ip.batch_in_namespaces({
            self.netns(c): ["link set lo up", f"link set {CONTAINER_IFACE} mtu {OVERLAY_MTU}",
                            f"addr add {topo.node(c).ip} dev {CONTAINER_IFACE}", f"link set {CONTAINER_IFACE} up",
                            f"route add default dev {CONTAINER_IFACE}"]
            for c in containers})
        # The Pis' userspace datapath does not segment TCP for tunnels: hand it finished frames.
        ethtool.tx_offload_off([(self.netns(c), CONTAINER_IFACE) for c in containers]
                               + [(self.inventory.pi(self.host(c)).netns, self._container_host_iface(c))
                                  for c in containers])

    def bridge_specs(self, pi: str) -> list[BridgeSpec]:
        """What Pi `pi` should hold for this run: its bridges with all their ports."""
        topo = self.topology
        datapath = "netdev" if self.inventory.pi(pi).netns else "system"
        specs = {}
        for node in topo.bridges:
            if self.placement[node] != pi:
                continue
            listener = f"ptcp:{self._ofctl_port(node)}:{self.inventory.pi(pi).underlay}"
            specs[node] = BridgeSpec(self.bridge(node), dpid_str(topo.dpid(node)), datapath,
                                     controllers=list(self.controllers), listeners=[listener],
                                     external_ids={"picloud-node": node},
                                     protocols=openflow.ovs_protocols(self.of_versions))
        for wire in self.wires:
            if wire.host == pi:
                specs[wire.node].ports.append(self._wire_port(wire))
        for c in topo.containers:
            node = topo.node(c)
            if self.placement[node.pi] == pi:
                specs[node.pi].ports.append(PortSpec(self._container_host_iface(c), topo.port(node.pi, c)))
        for entry in self.state.extra.get("containers", {}).values():  # run-time containers
            if self.placement[entry["pi"]] == pi:
                specs[entry["pi"]].ports.append(PortSpec(entry["iface"], int(entry["port"])))
        return list(specs.values())

    @staticmethod
    def _wire_port(wire: Wire) -> PortSpec:
        if wire.kind == "patch":
            return PortSpec(wire.ifname, wire.port, "patch", {"peer": wire.peer_ifname})
        return PortSpec(wire.ifname, wire.port, "vxlan", {"remote_ip": wire.remote_ip, "key": str(wire.key)})

    def _apply(self, pis: list[str]) -> None:
        for pi in pis:
            self.remote(pi).apply(self.prefix, self.bridge_specs(pi))

    def _wait_attached(self, pis: list[str]) -> None:
        """Until the Pis' vswitchd has given every port its requested OpenFlow number."""
        deadline = time.monotonic() + self.timeout
        while True:
            missing = self.health(pis)
            if not any(missing.values()):
                return
            if time.monotonic() > deadline:
                pi, problems = next((p, v) for p, v in missing.items() if v)
                raise ClusterError(f"pi {pi!r}: {problems[0]}")
            time.sleep(0.2)

    # --- health and repair ----------------------------------------------------------------------
    def health(self, pis: list[str] | None = None) -> dict[str, list[str]]:
        """Per Pi, what differs from the plan: unreachable, bridges or ports missing, ports with
        the wrong OpenFlow number. An OVS restarted with an empty database shows up here."""
        out: dict[str, list[str]] = {}
        for pi in pis or self.used_pis():
            problems: list[str] = []
            self._drop_remote(pi)  # a fresh session: a replica may not have seen a restart yet
            try:
                remote = self.remote(pi)
                present = remote.bridges(self.prefix)
                for spec in self.bridge_specs(pi):
                    if spec.name not in present:
                        problems.append(f"bridge {spec.name} missing")
                        continue
                    ofports = remote.ofports(spec.name)
                    for port in spec.ports:
                        if ofports.get(port.name) != port.ofport:
                            problems.append(f"port {port.name} on {spec.name}: OpenFlow port "
                                            f"{ofports.get(port.name, 'missing')}, want {port.ofport}")
            except ClusterError as exc:
                self._drop_remote(pi)
                problems.append(str(exc))
            out[pi] = problems
        return out

    def repair(self) -> list[str]:
        """Re-apply the plan to every Pi whose state differs; returns the Pis repaired."""
        broken = [pi for pi, problems in self.health().items() if problems]
        for pi in broken:
            self._drop_remote(pi)
            self.remote(pi).apply(self.prefix, self.bridge_specs(pi))
        if broken:
            self._wait_attached(broken)
        return broken

    def _drop_remote(self, pi: str) -> None:
        remote = self._remotes.pop(pi, None)
        if remote is not None:
            remote.close()

    # --- run-time changes ---------------------------------------------------------------------
    def _link_wires(self, a: str, b: str) -> list[Wire]:
        try:
            link = self.topology.link(a, b)
        except TopologyError:
            raise FabricError(f"link {a!r}-{b!r}: no such link in run {self.prefix}") from None
        if "container" in (self.topology.kind(a), self.topology.kind(b)):
            raise FabricError(f"link {a!r}-{b!r}: container links cannot be set down in cluster mode")
        return [w for w in self.wires if (w.node, w.port) in ((link.a, link.port_a), (link.b, link.port_b))]

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Down: both ends' ports leave their bridges (the controller sees port-delete); up: back."""
        for wire in self._link_wires(a, b):
            self.remote(wire.host).set_port(self.bridge(wire.node), self._wire_port(wire), up)

    def shape_link(self, a: str, b: str, bw: float | None = None, **impairments: object) -> None:
        raise FabricError(f"link {a!r}-{b!r}: shaping is not available in cluster mode (no tc over OVSDB)")

    def _extra(self) -> dict[str, dict]:
        return self.state.extra.setdefault("containers", {})

    def add_container(self, name: str, pi: str, ip_addr: str, mac: str, prefixlen: int,
                      gateway: str | None) -> int:
        # Under the run's lock, from the state on disk, as the local backend does: another process
        # (`picloud tenant add`) may change the same run.
        with self.state.transaction():
            return self._add_container(name, pi, ip_addr, mac, prefixlen, gateway)

    def _add_container(self, name: str, pi: str, ip_addr: str, mac: str, prefixlen: int,
                       gateway: str | None) -> int:
        """A run-time container (a tenant member): the same port allocation and state entry as the
        local backend; a Docker container through the Pi's engine on a Docker Pi, a namespace on
        an emulated Pi without Docker; its port added to the Pi's bridge through OVSDB."""
        if pi not in self.topology or self.topology.kind(pi) != "pi":
            raise FabricError(f"container {name!r}: unknown pi {pi!r}")
        extra = self._extra()
        if name in extra or name in self.topology:
            raise FabricError(f"container {name!r}: already exists in run {self.prefix}")
        host = self.inventory.pi(self.host(pi))
        docker = self._docker_pi(host.name)
        counter = int(self.state.extra.get("next_container", 0))
        used = [int(c["port"]) for c in extra.values() if c["pi"] == pi]
        port = max([*self.topology.ports(pi), *used, int(self.state.extra.get("max_port", {}).get(pi, 0))]) + 1
        ns = ifname(self.prefix, f"t{counter}")
        host_iface = ifname(self.prefix, self.topology.short_id(pi), port)
        if not host.netns:
            ns = None  # a container on a real Pi has no namespace on this machine
        extra[name] = {"pi": pi, "port": port, "ip": ip_addr, "mac": mac, "prefixlen": prefixlen,
                       "gateway": gateway, "netns": ns, "iface": host_iface, "docker": docker}
        self.state.extra["next_container"] = counter + 1
        self.state.extra.setdefault("max_port", {})[pi] = port
        if ns:
            self.state.intend("netns", [ns])
        try:
            if docker:
                self._start_docker(host.name, [_Attach(name, host_iface, mac, f"{ip_addr}/{prefixlen}", gateway,
                                                       pi, ns)])
                self.remote(host.name).set_port(self.bridge(pi), PortSpec(host_iface, port), True)
                return port
            ip.batch([f"netns add {ns}",
                      f"link add {host_iface} type veth peer name {CONTAINER_IFACE} address {mac} netns {ns}",
                      f"link set {host_iface} netns {host.netns}"])
            ip.batch([f"link set {host_iface} up"], netns=host.netns)
            route = f"route add default via {gateway}" if gateway else f"route add default dev {CONTAINER_IFACE}"
            ip.batch(["link set lo up", f"link set {CONTAINER_IFACE} mtu {OVERLAY_MTU}",
                      f"addr add {ip_addr}/{prefixlen} dev {CONTAINER_IFACE}", f"link set {CONTAINER_IFACE} up",
                      route], netns=ns)
            ethtool.tx_offload_off([(ns, CONTAINER_IFACE), (host.netns, host_iface)])
            self.remote(host.name).set_port(self.bridge(pi), PortSpec(host_iface, port), True)
        except (CommandError, OSError, ClusterError, FabricError) as exc:
            self._remove_extra(name)
            raise FabricError(f"container {name!r}: could not be created on {pi!r}: {exc}") from exc
        return port

    def remove_container(self, name: str) -> None:
        with self.state.transaction():
            self._remove_container(name)

    def _remove_container(self, name: str) -> None:
        if name not in self._extra():
            if name in self.topology:
                raise FabricError(f"container {name!r}: part of the topology; only run-time containers "
                                  "can be removed")
            raise FabricError(f"container {name!r}: no such run-time container in run {self.prefix}")
        self._remove_extra(name)

    def _remove_extra(self, name: str) -> None:
        entry = self._extra()[name]
        try:
            self.remote(self.host(entry["pi"])).set_port(self.bridge(entry["pi"]), PortSpec(entry["iface"]), False)
        except ClusterError as exc:
            log.warning("container %s: port not removed from its Pi: %s", name, exc)
        if entry.get("docker"):
            from topology.effects import docker_engine

            try:
                docker_engine.remove(self.engine(self.host(entry["pi"])), self.container_name(name))
                self.state.forget("containers", [self.container_name(name)])
            except ClusterError as exc:
                log.warning("container %s: not removed from its Pi's engine: %s", name, exc)
        if entry["netns"]:
            ip.delete_netns([entry["netns"]])  # the veth, with its end in the Pi's namespace, goes too
            self.state.forget("netns", [entry["netns"]])
        del self._extra()[name]

    def container_port(self, container: str) -> int:
        extra = self._extra().get(container)
        if extra:
            return int(extra["port"])
        return self.topology.port(self.topology.node(container).pi, container)

    # --- processes ------------------------------------------------------------------------------
    def exec(self, container: str, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        pi = self._docker_host(container)
        if pi is not None:
            from topology.effects import docker_engine

            entry = self.inventory.pi(pi)
            return docker_engine.exec_run(self.container_name(container), list(argv), timeout=timeout,
                                          endpoint=entry.docker.raw, tls=entry.tls or None)
        try:
            result = subprocess.run(netns.exec_argv(self.netns(container), list(argv)), capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return 124, out
        return result.returncode, result.stdout + result.stderr

    def popen(self, container: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
        pi = self._docker_host(container)
        if pi is not None:
            from topology.effects import docker_engine

            entry = self.inventory.pi(pi)
            return docker_engine.popen(self.container_name(container), list(argv), endpoint=entry.docker.raw,
                                       tls=entry.tls or None, **popen_kwargs)
        return subprocess.Popen(netns.exec_argv(self.netns(container), list(argv)), **popen_kwargs)

    def _docker_host(self, container: str) -> str | None:
        """The Docker Pi a container runs on (None: a namespace container)."""
        extra = self.state.extra.get("containers", {}).get(container)
        if extra:
            return self.host(extra["pi"]) if extra.get("docker") else None
        if container in self.topology and self.topology.kind(container) == "container":
            pi = self.host(container)
            return pi if self._docker_pi(pi) else None
        return None

    # --- tear down ------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove this run's bridges from every reachable Pi, then the local namespaces. A Pi that
        cannot be reached is named in the log; its bridges carry the run label for a later clean."""
        from topology.effects import docker_engine

        for pi in self.used_pis():
            try:
                self.remote(pi).remove_run(self.prefix)
            except ClusterError as exc:
                log.warning("pi %s: bridges of run %s not removed: %s", pi, self.prefix, exc)
            if self._docker_pi(pi):
                try:
                    docker_engine.remove_run(self.engine(pi), self.prefix)
                except (ClusterError, FabricError) as exc:
                    log.warning("pi %s: containers of run %s not removed: %s", pi, self.prefix, exc)
        self.state.objects["containers"] = []
        self.close()
        ends = self._pi_side_ends()
        ip.delete_netns(self.state.objects.get("netns", []))  # their veths (in the Pis' netns) go too
        _wait_until_gone(ends)
        self.state.objects["netns"] = []
        self.state.extra.pop("containers", None)
        self.state.objects["bridges"] = []
        self.state.save()


# --- a cluster of emulated Pis on one machine ------------------------------------------------------
DEFAULT_UNDERLAY = "172.29.0.0/24"
LOCAL_DOCKER = "unix:///var/run/docker.sock"
OVSDB_PORT = 6640
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
EMU_NAME_RE = re.compile(r"\A[a-z][a-z0-9]{1,7}\Z")


def make_ca(cert: Path, key: Path, name: str) -> None:
    proc.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={name}",
              "-keyout", str(key), "-out", str(cert)])


def issue_certificate(ca: Path, ca_key: Path, cert: Path, key: Path, name: str) -> None:
    csr = cert.with_suffix(".csr")
    proc.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key),
              "-out", str(csr)])
    proc.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
              "-CAcreateserial", "-days", "30", "-out", str(cert)])
    csr.unlink()


def _ovs_version() -> str:
    """What ovs-ctl records in the database on a real Pi (ovs-vswitchd itself does not)."""
    out = proc.run(["ovs-vswitchd", "--version"]).stdout.splitlines()[0]
    return out.split()[-1]


class EmulatedCluster:
    """N Pis as network namespaces, each with a private OVS reachable only over TCP.

    Per Pi `NAMEe<i>`: a namespace; a veth to the underlay bridge in the hub namespace `NAMEh`;
    ovsdb-server and ovs-vswitchd with their own database, sockets, pidfiles and run directory
    under WORKDIR (so they never meet the system OVS); the userspace datapath. As on a DPDK host,
    the underlay address lives on an OVS bridge (`underlay`) holding the Pi's NIC, because the
    userspace datapath sends VXLAN only out of its own ports. OVSDB listens on ptcp:6640 on that
    address (a Manager row, as `ovs-vsctl set-manager` makes), nowhere else reachable from outside.
    The underlay subnet is checked against the host's routes and refused when it overlaps one.
    """

    def __init__(self, name: str, count: int = 3, subnet: str = DEFAULT_UNDERLAY,
                 workdir: str | Path | None = None, tls: bool = False, docker_pis: tuple[int, ...] = ()):
        if not EMU_NAME_RE.match(name):
            raise ClusterError(f"emulated cluster {name!r}: invalid name (2-8 of [a-z0-9], starting with a letter)")
        if not 1 <= count <= 16:
            raise ClusterError(f"emulated cluster {name!r}: {count} pis (1 to 16)")
        self.name = name
        self.count = count
        self.subnet = ipaddress.IPv4Network(subnet, strict=False)
        self.workdir = Path(workdir or f"/run/picloud/emu-{name}")
        self.tls = tls
        self.docker_pis = tuple(docker_pis)  # these Pis list this machine's Docker engine as theirs
        self.records: dict[str, dict[str, dict]] = {}

    @classmethod
    def load(cls, name: str, workdir: str | Path | None = None) -> EmulatedCluster:
        """The emulated cluster `name` started earlier (by another process, e.g. the CLI)."""
        probe = cls(name, 1, workdir=workdir)
        meta = probe.workdir / "cluster.json"
        if not meta.exists():
            raise ClusterError(f"emulated cluster {name!r}: not running (no {meta})")
        data = json.loads(meta.read_text())
        return cls(name, int(data["count"]), data["subnet"], workdir=workdir, tls=bool(data.get("tls")))

    # --- names and addresses ------------------------------------------------------------------
    @property
    def hub_netns(self) -> str:
        return f"{self.name}h"

    @property
    def gateway_iface(self) -> str:
        return f"{self.name}g"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def pi_name(self, i: int) -> str:
        return f"pi{i + 1}"

    def pi_netns(self, i: int) -> str:
        return f"{self.name}e{i}"

    def address(self, i: int) -> str:
        return str(self.subnet.network_address + 11 + i)

    def underlay_mac(self, i: int) -> str:
        """A fixed MAC for the Pi's underlay port: after an OVS restart the neighbours' ARP caches
        still hold the right one (a fresh random MAC would leave the Pi unreachable for minutes)."""
        digest = hashlib.sha256(self.pi_netns(i).encode()).digest()
        return "0a:" + ":".join(f"{b:02x}" for b in digest[:5])

    def ovsdb_endpoint(self, i: int) -> str:
        return f"{'ssl' if self.tls else 'tcp'}:{self.address(i)}:{OVSDB_PORT}"

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    def client_tls(self) -> dict[str, str]:
        """The orchestrator's certificate, signed by this cluster's CA (what the inventory lists)."""
        return {"ca": str(self.tls_dir / "ca.pem"), "cert": str(self.tls_dir / "client.pem"),
                "key": str(self.tls_dir / "client-key.pem")}

    def pi_dir(self, i: int) -> Path:
        return self.workdir / f"e{i}"

    def inventory(self) -> dict[str, Any]:
        return {"controller": self.gateway, "pis": [
            {"name": self.pi_name(i), "management": self.address(i), "ovsdb": self.ovsdb_endpoint(i),
             "docker": LOCAL_DOCKER if i in self.docker_pis else "none", "netns": self.pi_netns(i),
             "underlay": self.address(i), "model": "3",
             **({"tls": self.client_tls()} if self.tls else {})}
            for i in range(self.count)]}

    def write_inventory(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.inventory(), sort_keys=False))
        return path

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> EmulatedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        routes = [str(n) for n in ip.host_routes() if n.version == 4]
        check_underlay(str(self.subnet), routes, where=f"emulated cluster {self.name}: underlay")
        if self.subnet.num_addresses < 16 + self.count:
            raise ClusterError(f"emulated cluster {self.name}: underlay {self.subnet} too small for {self.count} pis")
        for binary in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool"):
            if shutil.which(binary) is None:
                raise ClusterError(f"emulated cluster: {binary} not installed (run 'make setup')")
        existing = ip.netns_list()
        if (self.gateway_iface in ip.links() or {self.hub_netns, *map(self.pi_netns, range(self.count))} & existing
                or (self.workdir / "pids.json").exists()):
            raise ClusterError(f"emulated cluster {self.name}: already exists (stop it first)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cluster.json").write_text(json.dumps({"count": self.count, "subnet": str(self.subnet),
                                                               "tls": self.tls}))
        try:
            if self.tls:
                self._certificates()
            self._underlay()
            for i in range(self.count):
                self._start_ovs(i, fresh=True)
            for i in range(self.count):
                self._wait_reachable(i)
        except BaseException:
            self.stop()
            raise

    def _underlay(self) -> None:
        """The underlay switch is a Linux bridge inside its own namespace (`NAMEh`), not in the
        root one: with Docker installed, bridged IPv4 goes through the root namespace's iptables
        FORWARD chain (br_netfilter), whose policy Docker sets to DROP. The root namespace joins
        it through one veth (`NAMEg`) holding the gateway address the Pis reach the controller on."""
        hub = self.hub_netns
        lines = [f"netns add {hub}"] + [f"netns add {self.pi_netns(i)}" for i in range(self.count)]
        lines += [f"link add {self.gateway_iface} type veth peer name gw netns {hub}",
                  f"addr add {self.gateway}/{self.subnet.prefixlen} dev {self.gateway_iface}",
                  f"link set {self.gateway_iface} up"]
        lines += [f"link add nic0 netns {self.pi_netns(i)} type veth peer name e{i} netns {hub}"
                  for i in range(self.count)]
        ip.batch(lines)
        hub_lines = ["link set lo up", "link add br0 type bridge", "link set br0 up", "link set gw master br0",
                     "link set gw up"]
        for i in range(self.count):
            hub_lines += [f"link set e{i} master br0", f"link set e{i} up"]
        ip.batch(hub_lines, netns=hub)
        ip.batch_in_namespaces({self.pi_netns(i): ["link set lo up", "link set nic0 up"] for i in range(self.count)})
        ethtool.tx_offload_off([(None, self.gateway_iface), (hub, "gw")]
                               + [(hub, f"e{i}") for i in range(self.count)])

    def _certificates(self) -> None:
        """A CA, one server certificate per Pi and a client certificate, as provisioning/pi.yml makes."""
        d = self.tls_dir
        d.mkdir(parents=True, exist_ok=True)
        make_ca(d / "ca.pem", d / "ca-key.pem", "PiCloud emulated CA")
        for i in range(self.count):
            issue_certificate(d / "ca.pem", d / "ca-key.pem", d / f"e{i}.pem", d / f"e{i}-key.pem", self.pi_name(i))
        issue_certificate(d / "ca.pem", d / "ca-key.pem", d / "client.pem", d / "client-key.pem", "picloud")

    def _env(self, i: int) -> dict[str, str]:
        d = str(self.pi_dir(i))
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}

    def _spawn(self, i: int, role: str, argv: list[str]) -> None:
        log_file = open(self.pi_dir(i) / f"{role}.out", "ab")  # noqa: SIM115 (owned by the child)
        child = subprocess.Popen(netns.exec_argv(self.pi_netns(i), argv), stdout=log_file,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(i),
                                 start_new_session=True)
        log_file.close()
        self.records.setdefault(self.pi_netns(i), {})[role] = proc.record(child, role).to_dict()
        self._save_records()

    def _save_records(self) -> None:
        (self.workdir / "pids.json").write_text(json.dumps(self.records))

    def _start_ovs(self, i: int, fresh: bool) -> None:
        d = self.pi_dir(i)
        d.mkdir(parents=True, exist_ok=True)
        db, sock = d / "conf.db", d / "db.sock"
        if fresh or not db.exists():
            db.unlink(missing_ok=True)
            proc.run(["ovsdb-tool", "create", str(db), VSWITCH_SCHEMA])
        sock.unlink(missing_ok=True)
        tls = [f"--private-key={self.tls_dir / f'e{i}-key.pem'}", f"--certificate={self.tls_dir / f'e{i}.pem'}",
               f"--ca-cert={self.tls_dir / 'ca.pem'}"] if self.tls else []
        self._spawn(i, "ovsdb-server", [
            "ovsdb-server", str(db), f"--remote=punix:{sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options", *tls,
            f"--pidfile={d / 'ovsdb-server.pid'}", f"--unixctl={d / 'ovsdb-server.ctl'}",
            f"--log-file={d / 'ovsdb-server.log'}", "-vconsole:off"])
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise ClusterError(f"emulated pi {self.pi_netns(i)}: ovsdb-server did not start "
                                   f"(see {d / 'ovsdb-server.log'})")
            time.sleep(0.05)
        db_url = f"unix:{sock}"
        if fresh:
            # Provisioning, as the playbook does on a real Pi: the underlay bridge holding the NIC
            # and the address, and the OVSDB listener on that address only.
            ovs.vsctl("--no-wait", "init", "--", "add-br", "underlay", "--",
                      "set", "Bridge", "underlay", "datapath_type=netdev",
                      f"other_config:hwaddr={self.underlay_mac(i)}", "--",
                      "add-port", "underlay", "nic0", "--",
                      "set-manager", f"{'pssl' if self.tls else 'ptcp'}:{OVSDB_PORT}:{self.address(i)}", "--",
                      "set", "Open_vSwitch", ".", f"ovs_version={_ovs_version()}", db=db_url)
            if self.tls:
                # As the playbook's `ovs-vsctl set-ssl`: ovs-vswitchd's key for ssl: controllers.
                ovs.vsctl("--no-wait", "set-ssl", str(self.tls_dir / f"e{i}-key.pem"),
                          str(self.tls_dir / f"e{i}.pem"), str(self.tls_dir / "ca.pem"), db=db_url)
        self._spawn(i, "ovs-vswitchd", [
            "ovs-vswitchd", db_url, "--disable-system", f"--pidfile={d / 'ovs-vswitchd.pid'}",
            f"--unixctl={d / 'ovs-vswitchd.ctl'}", f"--log-file={d / 'ovs-vswitchd.log'}", "-vconsole:off"])
        deadline = time.monotonic() + 15
        while "underlay" not in ip.links(self.pi_netns(i)):
            if time.monotonic() > deadline:
                raise ClusterError(f"emulated pi {self.pi_netns(i)}: ovs-vswitchd did not start "
                                   f"(see {d / 'ovs-vswitchd.log'})")
            time.sleep(0.05)
        ip.batch([f"addr replace {self.address(i)}/{self.subnet.prefixlen} dev underlay", "link set underlay up"],
                 netns=self.pi_netns(i))
        # Without userspace TSO (it cannot be used with tunnels in OVS 3.1) the userspace datapath
        # forwards checksum-offloaded frames unfinished: every veth and tap it touches sends
        # complete ones instead.
        ethtool.tx_offload_off([(self.pi_netns(i), "nic0"), (self.pi_netns(i), "underlay")])

    def _wait_reachable(self, i: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.address(i), OVSDB_PORT), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"emulated pi {self.pi_netns(i)}: OVSDB not reachable on "
                                       f"{self.ovsdb_endpoint(i)}") from None
                time.sleep(0.1)

    def _load_records(self) -> None:
        """PIDs recorded by the process that started the cluster (the CLI may be another one)."""
        pids = self.workdir / "pids.json"
        if not self.records and pids.exists():
            self.records = json.loads(pids.read_text())

    def stop_ovs(self, i: int) -> None:
        self._load_records()
        for role in ("ovs-vswitchd", "ovsdb-server"):
            rec = self.records.get(self.pi_netns(i), {}).pop(role, None)
            if rec:
                proc.terminate(proc.ProcessRecord.from_dict(rec))
        self._save_records()

    def restart_ovs(self, i: int, wipe: bool = False) -> None:
        """Stop and start Pi i's OVS. wipe: with an empty database, as after a re-install; the Pi
        keeps its provisioning (underlay bridge, listener) but loses every run's bridges."""
        self.stop_ovs(i)
        self._start_ovs(i, fresh=wipe)
        self._wait_reachable(i)

    def stop(self) -> None:
        """Idempotent: processes we started (checked by start time), namespaces, bridge, files."""
        self._load_records()
        for ns, roles in list(self.records.items()):
            for role in ("ovs-vswitchd", "ovsdb-server"):
                if role in roles:
                    proc.terminate(proc.ProcessRecord.from_dict(roles.pop(role)))
            self.records.pop(ns, None)
        ip.delete_netns([self.hub_netns] + [self.pi_netns(i) for i in range(self.count)])
        ip.delete_links([self.gateway_iface])
        shutil.rmtree(self.workdir, ignore_errors=True)


def openflow_tls(backend_options: dict[str, Any]) -> dict[str, str] | None:
    """The TLS files (key, cert, ca; absolute paths) for our controller's OpenFlow listener, or None
    for plain TCP. `openflow_tls` option: True, False, or None (the default) for "wherever OVSDB
    already uses TLS": every Pi's ovsdb endpoint is ssl:. The controller presents the orchestrator's
    certificate, signed by the cluster's CA, and accepts only switches whose certificate that CA
    signed (each Pi's OVS uses its own key, set with `ovs-vsctl set-ssl` by provisioning)."""
    source = backend_options.get("inventory")
    wanted = backend_options.get("openflow_tls")
    if source is None or wanted is False:
        return None
    inventory = load_inventory(source)
    on_tls = [p for p in inventory.pis if p.ovsdb.scheme == "ssl"]
    if wanted is None and (not on_tls or len(on_tls) != len(inventory.pis)):
        return None
    files = next((p.tls for p in inventory.pis if p.tls and all(p.tls.get(k) for k in ("key", "cert", "ca"))), None)
    if files is None:
        raise FabricError(f"{inventory.source}: OpenFlow over TLS needs tls: ca, cert, key in the inventory "
                          "(the cluster's CA and the orchestrator's certificate)")
    return {k: str(Path(files[k]).resolve()) for k in ("key", "cert", "ca")}


def controller_address(backend_options: dict[str, Any]) -> str | None:
    """Where a cluster run's controller must listen so the Pis reach it: the inventory's
    `controller` address (Testbed starts the controller on 127.0.0.1 otherwise)."""
    source = backend_options.get("inventory")
    return load_inventory(source).controller if source is not None else None


def _wait_until_gone(ends: dict[str, set[str]], seconds: float = 5.0) -> None:
    """A deleted namespace takes its veths down asynchronously, their peers in the Pis' namespaces
    with them: wait for that (deleting stragglers), or the next run reusing the prefix finds the
    old names still there ("an interface with the same name exists in the target netns")."""
    deadline = time.monotonic() + seconds
    for pi_ns, names in ends.items():
        while pi_ns in ip.netns_list():
            left = names & ip.links(netns=pi_ns)
            if not left:
                break
            if time.monotonic() > deadline:
                ip.batch([f"link del {n}" for n in sorted(left)], netns=pi_ns, force=True)
                break
            time.sleep(0.05)
