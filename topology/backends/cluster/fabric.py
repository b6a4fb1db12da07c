"""`ClusterFabric`: the topology on a rack of Pis, driven only through their OVSDB endpoints.

See the package docstring (topology.backends.cluster) for placement, wiring and containers.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picloud.errors import ClusterError, FabricError
from picloud.runstate import RunState
from topology import fabric_plan, openflow
from topology.backends.cluster.check import feature_problems, load_inventory
from topology.effects import ethtool, ip, netns
from topology.effects.ovsdb_remote import BridgeSpec, PortSpec, Remote
from topology.effects.proc import CommandError
from topology.fabric_plan import CONTAINER_IFACE, FabricPlan
from topology.inventory import Inventory, PiModel, Wire, pi_model, place, wiring
from topology.model import Topology

log = logging.getLogger(__name__)

OVERLAY_MTU = 1450  # 1500 minus the 50 bytes of VXLAN/UDP/IP/Ethernet headers (RFC 7348)


def _model_option(key: str | None) -> PiModel | None:
    if key in (None, "", "none"):
        return None
    try:
        return pi_model(key)
    except ClusterError as exc:
        raise FabricError(f"--pi-model: {exc}") from None



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


@dataclass(frozen=True)
class CaptureSite:
    """Where one capture point is on a cluster: the Pi whose engine runs its capture container,
    the Docker network mode that puts that container in the right namespace, and the interface."""

    pi: str
    iface: str
    network_mode: str  # "container:NAME" or "host"
    netns: str | None  # an emulated Pi's namespace, entered from its engine host's (None on a real Pi)
    bridge: str | None = None  # a patch or VXLAN port: its bridge, and
    mirror_of: str | None = None  # the port, copied to a mirror port made for the capture (iface "")


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
        self._plan: FabricPlan | None = None

    # --- names --------------------------------------------------------------------------------
    @property
    def plan(self) -> FabricPlan:
        """Names, container attachments (MAC, overlay MTU) and bridges, as the local backend plans
        them; the links between bridges are the Pis' wiring (patch or VXLAN by placement) instead."""
        if self._plan is None:
            self._plan = fabric_plan.plan_fabric(self.topology, self.prefix, mtu=OVERLAY_MTU,
                                                 controllers=self.controllers, of_versions=self.of_versions)
        return self._plan

    def bridge(self, node: str) -> str:
        return self.plan.bridge(node).name

    def host(self, node: str) -> str:
        """The inventory Pi a bridge (or a container's Pi) runs on."""
        if self.topology.kind(node) == "container":
            node = self.topology.pi_of(node)
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
        return self.plan.namespace(container).name

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
        return self.plan.container_link(container).bridge_end.iface

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
        attaches = []
        for c in containers:
            ns, lp = self.plan.namespace(c), self.plan.container_link(c)
            attaches.append(_Attach(c, lp.bridge_end.iface, str(lp.end(c).mac), ns.address, ns.gateway, ns.pi,
                                    ns.name if self.inventory.pi(pi).netns else None))
        self._start_docker(pi, attaches)

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
            host_iface = self._container_host_iface(c)
            pi_ns = str(self.inventory.pi(self.host(c)).netns)
            lines += ip.container_veth_lines(self.plan.container_link(c), None, host_netns=pi_ns)
            by_pi_ns.setdefault(pi_ns, []).append(f"link set {host_iface} up")
        ip.batch(lines)
        ip.batch_in_namespaces(by_pi_ns)
        ip.batch_in_namespaces({
            self.netns(c): ["link set lo up",
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
            bridge = self.plan.bridge(node)
            specs[node] = BridgeSpec(bridge.name, bridge.dpid, datapath,
                                     controllers=list(self.plan.controllers), listeners=[listener],
                                     external_ids={"picloud-node": node}, protocols=list(self.plan.protocols))
        for wire in self.wires:
            if wire.host == pi:
                specs[wire.node].ports.append(self._wire_port(wire))
        for c in topo.containers:
            its_pi = topo.pi_of(c)
            if self.placement[its_pi] == pi:
                specs[its_pi].ports.append(PortSpec(self._container_host_iface(c), topo.port(its_pi, c)))
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
        link = fabric_plan.model_link(self.topology, self.prefix, a, b)
        if "container" in (self.topology.kind(a), self.topology.kind(b)):
            raise FabricError(f"link {a!r}-{b!r}: container links cannot be set down in cluster mode")
        return [w for w in self.wires if (w.node, w.port) in ((link.a, link.port_a), (link.b, link.port_b))]

    def link_devices(self, a: str, b: str) -> list[tuple[str, str | None]] | None:
        """None: a cluster link's state is its ports on the Pis' bridges, set over OVSDB."""
        return None

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
        extra = self._extra()
        new = fabric_plan.plan_runtime_container(self.topology, self.prefix, extra,
                                                 int(self.state.extra.get("next_container", 0)),
                                                 self.state.extra.get("max_port", {}), name, pi)
        host = self.inventory.pi(self.host(pi))
        docker = self._docker_pi(host.name)
        port, host_iface = new.port, new.iface
        ns = new.netns if host.netns else None  # a container on a real Pi has no namespace on this machine
        extra[name] = {"pi": pi, "port": port, "ip": ip_addr, "mac": mac, "prefixlen": prefixlen,
                       "gateway": gateway, "netns": ns, "iface": host_iface, "docker": docker}
        self.state.extra["next_container"] = new.counter + 1
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
                      *ip.container_veth_lines(new.veth(self.bridge(pi), mac, OVERLAY_MTU), None,
                                               host_netns=host.netns)])
            ip.batch([f"link set {host_iface} up"], netns=host.netns)
            route = f"route add default via {gateway}" if gateway else f"route add default dev {CONTAINER_IFACE}"
            ip.batch(["link set lo up",
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
        fabric_plan.check_removable(self.topology, self.prefix, self._extra(), name)
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
        return self.topology.port(self.topology.pi_of(container), container)

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

    # --- capture --------------------------------------------------------------------------------
    def capture_site(self, node: str, peer: str | None = None) -> CaptureSite:
        """Where to capture a container's eth0 (`peer` None) or the port of bridge `node` facing
        `peer`. The controller machine cannot see a Pi's interfaces, so every point is captured by
        a container the Pi's own engine runs: a Pi without one is refused, naming it. A link
        between bridges is an OVS patch or VXLAN port with no kernel interface: it is captured on
        an OVS mirror of that port (`add_capture_mirror`)."""
        topo = self.topology
        if peer is None:
            if node not in self._extra() and (node not in topo or topo.kind(node) != "container"):
                raise FabricError(f"no container {node!r} in run {self.prefix}")
            pi = self._docker_host(node)
            if pi is None:
                extra = self._extra().get(node)
                host = self.host(extra["pi"] if extra else node)
                raise FabricError(f"capture at {node}: pi {host!r} has no container engine (docker: none in the "
                                  "inventory), so nothing on it can run a capture")
            return CaptureSite(pi, CONTAINER_IFACE, f"container:{self.container_name(node)}", None)
        pi = self.host(node)
        link = topo.link(node, peer)
        port = link.port_a if link.a == node else link.port_b
        if not self._docker_pi(pi):
            raise FabricError(f"capture at {node} port {port} (to {peer}): pi {pi!r} has no container engine "
                              "(docker: none in the inventory), so nothing on it can run a capture")
        if topo.kind(peer) != "container":
            wire = next(w for w in self.wires if (w.node, w.port) == (node, port))
            return CaptureSite(pi, "", "host", self.inventory.pi(pi).netns, self.bridge(node), wire.ifname)
        return CaptureSite(pi, self._container_host_iface(peer), "host", self.inventory.pi(pi).netns)

    def add_capture_mirror(self, pi: str, bridge: str, port: str, name: str) -> None:
        """An internal port `name` on `bridge` that gets a copy of every frame through `port`, ready
        (attached by the Pi's vswitchd, so its device exists) when this returns."""
        remote = self.remote(pi)
        remote.add_mirror(bridge, name, port, name, {"picloud-run": self.prefix})
        deadline = time.monotonic() + self.timeout
        while remote.ofports(bridge).get(name, -1) <= 0:
            if time.monotonic() > deadline:
                raise ClusterError(f"pi {pi!r}: mirror port {name} on {bridge} not attached within "
                                   f"{self.timeout:.0f} s")
            remote.refresh()
            time.sleep(0.05)

    def remove_capture_mirror(self, pi: str, bridge: str, name: str) -> None:
        self.remote(pi).remove_mirror(bridge, name)

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
