"""The local fabric: the whole scale model on one Linux box.

Every switch and Pi is an OVS bridge, every container a network namespace, every link a veth
pair. Work is batched (one `ip -batch` for all namespaces, one for all veths, one OVSDB
transaction for all bridges and ports) because per-object subprocesses dominate build time: that
is most of why Mininet takes 30 s for linear:200.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx

from picloud.errors import FabricError, TopologyError
from picloud.runstate import RunState
from topology import openflow, tcplan
from topology.effects import ethtool, ip, netns, ovs, ovs_sockets, rtnl, tc
from topology.effects.proc import CommandError
from topology.model import Link, Topology, dpid_str, ifname
from topology.stalls import OVS_STALL_S
from topology.tcplan import Shape

KEEP: Any = object()  # shape_link: leave this attribute as it is

log = logging.getLogger(__name__)
CONTAINER_IFACE = "eth0"


@dataclass(frozen=True)
class End:
    """One end of a link as the system sees it: an interface, in a namespace or on a bridge."""

    iface: str
    netns: str | None  # None: root namespace
    bridge: str | None  # the OVS bridge it is a port of, if any
    port: int


INACTIVITY_PROBE_MS = int(OVS_STALL_S * 1000)  # see _add_bridge and topology/stalls.py


class LocalFabric:
    def __init__(self, topology: Topology, state: RunState, controllers: list[str] | None = None,
                 datapath: str | None = None, of_versions: list[str] | None = None,
                 fabric_links: str | None = None):
        self.topology = topology
        self.state = state
        self.prefix = state.prefix
        # "patch": links between two bridges are OVS patch port pairs, not veth pairs. The userspace
        # datapath then resolves a path across bridges in one pass (a veth hop is one more AF_PACKET
        # send and receive on ovs-vswitchd's main thread), and teardown skips one kernel RCU grace
        # period per such port (see bench/RESULTS.md, "TCP paths" and "Teardown floor"). The price:
        # no kernel device, so no tc shaping and no capture on those links. Opt-in; kept in the state
        # so a process attaching to the run later builds the same ends.
        mode = fabric_links or state.extra.get("fabric_links") or "veth"
        if mode not in ("veth", "patch"):
            raise FabricError(f"fabric_links {mode!r}: one of veth, patch")
        self.fabric_links = mode
        self.controllers = controllers or []
        self.datapath = datapath or ("system" if ovs.kernel_datapath_available() else "netdev")
        self.offload_off = False
        # progress(stage, done, total): told before each batched step (picloud.progress draws it)
        self.progress: Callable[[str, int, int], None] = lambda stage, done=0, total=0: None
        self.of_versions = openflow.parse_versions(of_versions)  # what every bridge offers

    # --- names --------------------------------------------------------------------------------
    def bridge(self, node: str) -> str:
        if self.topology.kind(node) == "container":
            raise FabricError(f"{node!r}: a container has no bridge")
        return ifname(self.prefix, self.topology.short_id(node))

    def ofctl_target(self, node: str) -> str:
        return self.bridge(node)

    def netns(self, container: str) -> str:
        extra = self._extra().get(container)
        if extra:
            return extra["netns"]
        if container not in self.topology or self.topology.kind(container) != "container":
            raise FabricError(f"container {container!r}: no such container in run {self.prefix}")
        return ifname(self.prefix, self.topology.short_id(container))

    def container_port(self, container: str) -> int:
        extra = self._extra().get(container)
        if extra:
            return int(extra["port"])
        return self.topology.port(self.topology.node(container).pi, container)

    def end(self, node: str, link: Link) -> End:
        port = link.port_a if link.a == node else link.port_b
        if self.topology.kind(node) == "container":
            return End(CONTAINER_IFACE, self.netns(node), None, port)
        return End(ifname(self.prefix, self.topology.short_id(node), port), None, self.bridge(node), port)

    def is_patch(self, link: Link) -> bool:
        """A bridge-to-bridge link built from OVS patch ports (fabric_links="patch")."""
        return self.fabric_links == "patch" and all(self.topology.kind(n) != "container" for n in (link.a, link.b))

    def _extra(self) -> dict[str, dict]:
        return self.state.extra.setdefault("containers", {})

    # --- build --------------------------------------------------------------------------------
    def check(self) -> None:
        """Everything that can be refused is refused here, before the first object exists."""
        topo = self.topology
        for node in topo.bridges + topo.containers:
            self.bridge(node) if topo.kind(node) != "container" else self.netns(node)
        for link in topo.links:
            for node in (link.a, link.b):
                self.end(node, link)
        impaired = [ln for ln in topo.links if Shape.of(ln).needs_netem]
        if impaired and not tc.netem_available():
            bad = impaired[0]
            raise FabricError(f"link {bad.a!r}-{bad.b!r}: delay/jitter/loss need the kernel's sch_netem, which "
                              f"kernel {tc.kernel()} lacks ({len(impaired)} link(s); remove delay/jitter/loss, "
                              "or use a kernel with netem)")
        shaped_patch = next((ln for ln in topo.links if self.is_patch(ln) and not Shape.of(ln).empty), None)
        if shaped_patch is not None:
            raise FabricError(f"link {shaped_patch.a!r}-{shaped_patch.b!r}: shaped, but fabric_links=patch builds "
                              "bridge-to-bridge links without a kernel device to shape (use fabric_links=veth)")
        if not self.controllers:
            bridges = topo.graph.subgraph(topo.bridges)
            if not nx.is_forest(bridges):
                cycle = nx.find_cycle(bridges)
                raise FabricError(
                    f"topology {topo.name!r}: loop {' - '.join(e[0] for e in cycle)} without a controller "
                    "(standalone switches flood forever on loops; use the default controller)")
        if not ovs.running():
            raise FabricError("Open vSwitch is not running (run 'make setup', or start it with "
                              "/usr/share/openvswitch/scripts/ovs-ctl start)")

    def up(self) -> None:
        self.check()
        if self.datapath == "netdev":
            log.info("notice: no openvswitch kernel module: using the OVS userspace datapath (datapath_type=netdev)")
        topo = self.topology
        namespaces = [self.netns(c) for c in topo.containers]
        bridge_ends, container_ends = [], []
        for link in topo.links:
            ea, eb = self.end(link.a, link), self.end(link.b, link)
            (container_ends if ea.netns or eb.netns else bridge_ends).append((link, ea, eb))
        root_ifaces = [e.iface for link, ea, eb in bridge_ends + container_ends for e in (ea, eb)
                       if not e.netns and not self.is_patch(link)]
        if self.fabric_links != "veth":
            self.state.extra["fabric_links"] = self.fabric_links
        # Intent first: the state file names every object before any of them exists.
        self.state.objects["netns"] = list(dict.fromkeys(self.state.objects.get("netns", []) + namespaces))
        self.state.objects["veth"] = list(dict.fromkeys(self.state.objects.get("veth", []) + root_ifaces))
        self.state.intend("bridges", [self.bridge(n) for n in topo.bridges])
        try:
            self._build(namespaces, bridge_ends, container_ends)
        except (CommandError, OSError, subprocess.TimeoutExpired) as exc:
            self.down()
            raise FabricError(f"run {self.prefix}: building the fabric failed: {brief(exc)}") from exc
        except BaseException:
            self.down()
            raise

    def _build(self, namespaces, bridge_ends, container_ends) -> None:
        topo = self.topology
        self.progress("namespaces", 0, len(namespaces))
        ip.batch([f"netns add {ns}" for ns in namespaces])
        self.progress("veth pairs", 0, len(bridge_ends) + len(container_ends))
        lines = []
        group = ip.run_group(self.prefix)
        for link, ea, eb in bridge_ends:
            if self.is_patch(link):
                continue
            lines += [f"link add {ea.iface} group {group} type veth peer name {eb.iface} group {group}",
                      f"link set {ea.iface} up", f"link set {eb.iface} up"]
        for link, ea, eb in container_ends:
            host, inner = (ea, eb) if eb.netns else (eb, ea)
            container = link.a if ea.netns else link.b
            mac = topo.node(container).mac
            lines += [f"link add {host.iface} group {group} type veth peer name {inner.iface} address {mac} "
                      f"netns {inner.netns}",
                      f"link set {host.iface} up"]
        ip.batch(lines)
        for i, c in enumerate(topo.containers):
            if i % 50 == 0:
                self.progress("container interfaces", i, len(topo.containers))
            rtnl.configure([rtnl.ContainerIface(self.netns(c), topo.node(c).ip, None, CONTAINER_IFACE)])
        if self.datapath == "netdev" and not ovs.userspace_tso_active():
            self.offload_off = True
            log.warning("notice: OVS userspace TSO is not active, so TX checksum offload is turned off on "
                        "every veth (about 1 Gbit/s per bridge instead of 12); set other_config:"
                        "userspace-tso-enable=true and restart ovs-vswitchd for full speed")
            ethtool.tx_offload_off([(e.netns, e.iface) for _, ea, eb in bridge_ends + container_ends
                                    for e in (ea, eb)])
        txn = ovs.Transaction()
        for node in topo.bridges:
            self._add_bridge(txn, node)
        for link, ea, eb in bridge_ends + container_ends:
            patch = self.is_patch(link)
            for e, peer in ((ea, eb), (eb, ea)):
                if e.bridge:
                    txn.add("add-port", e.bridge, e.iface).add("set", "Interface", e.iface,
                                                               f"ofport_request={e.port}")
                    if patch:
                        txn.add("set", "Interface", e.iface, "type=patch", f"options:peer={peer.iface}")
        ports = sum(1 for _, ea, eb in bridge_ends + container_ends for e in (ea, eb) if e.bridge)
        self.progress(f"one OVSDB transaction: {len(topo.bridges)} bridges, {ports} ports", 0, 0)
        txn.commit(timeout=300)
        self.progress("link shaping", 0, 0)
        plans = []
        for link, ea, eb in bridge_ends + container_ends:
            shape = Shape.of(link)
            if not shape.empty:
                for e in (ea, eb):
                    plans += tcplan.plan(e.iface, shape, e.netns)
        tc.apply_many(plans)
        self.size_sockets()

    def size_sockets(self, ifaces: list[str] | None = None) -> None:
        """Give ovs-vswitchd's sockets of this run's ports (all, or `ifaces`) and its shared send
        socket buffers for the run's modelled queues (see topology.effects.ovs_sockets: with the
        kernel's defaults they drop packets outside the model, uncounted)."""
        if self.datapath != "netdev":
            return
        topo = self.topology
        queues = [tcplan.queue_bytes(Shape.of(ln)) for ln in topo.links if not Shape.of(ln).empty]
        if ifaces is None:
            ifaces = [e.iface for ln in topo.links if not self.is_patch(ln)
                      for e in (self.end(ln.a, ln), self.end(ln.b, ln)) if e.bridge]
            ifaces += [c["iface"] for c in self._extra().values()]
        ovs_sockets.size_buffers(ovs.vswitchd_pid(), ifaces, queues * 2)

    def _add_bridge(self, txn: ovs.Transaction, node: str) -> None:
        name = self.bridge(node)
        secure = bool(self.controllers)
        txn.add("add-br", name)
        txn.add("set", "Bridge", name, f"datapath_type={self.datapath}",
                "protocols=" + ",".join(openflow.ovs_protocols(self.of_versions)),
                f"fail_mode={'secure' if secure else 'standalone'}",
                f"other-config:datapath-id={dpid_str(self.topology.dpid(node))}",
                "other-config:disable-in-band=true", f"external_ids:{ovs.RUN_LABEL}={self.prefix}",
                f"external_ids:picloud-node={node}")
        if self.controllers:
            # Controller rows made here rather than by set-controller, to carry a longer inactivity
            # probe: OVS's default 5 s disconnects a healthy controller whenever ovs-vswitchd's own
            # main loop stalls longer than that (measured: 3-12 s "Unreasonably long poll interval"
            # stalls on a shared host with ~250 bridges), and every reactive app then loses packets.
            ids = []
            for i, target in enumerate(self.controllers):
                ids.append(f"@{name}c{i}")
                txn.add(f"--id={ids[-1]}", "create", "Controller", f'target="{target}"',
                        f"inactivity_probe={INACTIVITY_PROBE_MS}")
            txn.add("set", "Bridge", name, f"controller=[{','.join(ids)}]")

    # --- run-time changes ---------------------------------------------------------------------
    def _link_ends(self, a: str, b: str) -> tuple[End, End]:
        try:
            link = self.topology.link(a, b)
        except TopologyError:
            raise FabricError(f"link {a!r}-{b!r}: no such link in run {self.prefix}") from None
        return self.end(link.a, link), self.end(link.b, link)

    def link_devices(self, a: str, b: str) -> list[tuple[str, str | None]] | None:
        """Both ends' kernel devices; None for patch ports (an OpenFlow port state, not a device)."""
        ends = self._link_ends(a, b)
        if self.is_patch(self.topology.link(a, b)):
            return None
        return [(e.iface, e.netns) for e in ends]

    def set_link(self, a: str, b: str, up: bool) -> None:
        ends = self._link_ends(a, b)
        if self.is_patch(self.topology.link(a, b)):
            for e in ends:  # no kernel device: the OpenFlow port goes down and stops carrying, as a cut cable
                ovs.port_carries(e.bridge, e.iface, up)
            return
        ip.set_links_now([(e.iface, e.netns) for e in ends], up)

    def shape_link(self, a: str, b: str, bw: Any = KEEP, *, delay: Any = KEEP, jitter: Any = KEEP,
                   loss: Any = KEEP, queue: Any = KEEP) -> Link:
        """Re-shape a link while the run is up, as Mininet's `TCIntf.config`: each attribute given
        replaces the link's (None removes it), the others stay. Validated by the same rules as a
        topology file, and refused before any tc call where it needs netem and the kernel lacks it.
        The new shape is written into the run's topology, so load, slowdown and the fidelity
        monitor use the rate the link really has."""
        try:
            link = self.topology.link(a, b)
        except TopologyError:
            raise FabricError(f"link {a!r}-{b!r}: no such link in run {self.prefix}") from None
        wanted = {k: getattr(link, k) if v is KEEP else v for k, v in
                  (("bw", bw), ("delay", delay), ("jitter", jitter), ("loss", loss), ("queue", queue))}
        try:
            probe = Topology()
            for end in (link.a, link.b):
                probe.add_switch(end) if self.topology.kind(end) != "container" else probe.add_pi(end)
            new = probe.add_link(link.a, link.b, **wanted)
        except TopologyError as exc:
            raise FabricError(str(exc).replace("link ", f"run {self.prefix}: link ", 1)) from None
        shape = Shape.of(new)
        if self.is_patch(link) and not shape.empty:
            raise FabricError(f"link {a!r}-{b!r}: built from OVS patch ports (fabric_links=patch), which have no "
                              "kernel device to shape")
        if shape.needs_netem and not tc.netem_available():
            raise FabricError(f"link {a!r}-{b!r}: delay/jitter/loss need the kernel's sch_netem, which kernel "
                              f"{tc.kernel()} lacks")
        for e in self._link_ends(a, b):
            tc.apply(tcplan.plan(e.iface, shape, e.netns, replace=True))
        self.topology.graph.edges[link.a, link.b]["link"] = replace(link, **wanted)
        self.size_sockets([e.iface for e in self._link_ends(a, b) if e.bridge])
        with self.state.transaction():
            self.state.topology = self.topology.to_dict()
        return self.topology.link(a, b)

    def add_container(self, name: str, pi: str, ip_addr: str, mac: str, prefixlen: int,
                      gateway: str | None) -> int:
        if pi not in self.topology or self.topology.kind(pi) != "pi":
            raise FabricError(f"container {name!r}: unknown pi {pi!r}")
        with self.state.transaction():
            extra = self._extra()
            if name in extra or name in self.topology:
                raise FabricError(f"container {name!r}: already exists in run {self.prefix}")
            counter = int(self.state.extra.get("next_container", 0))
            used = [int(c["port"]) for c in extra.values() if c["pi"] == pi]
            highest = int(self.state.extra.get("max_port", {}).get(pi, 0))
            port = max([*self.topology.ports(pi), *used, highest]) + 1  # never reused within a run
            ns = ifname(self.prefix, f"t{counter}")
            host_iface = ifname(self.prefix, self.topology.short_id(pi), port)
            extra[name] = {"pi": pi, "port": port, "ip": ip_addr, "mac": mac, "prefixlen": prefixlen,
                           "gateway": gateway, "netns": ns, "iface": host_iface}
            self.state.extra["next_container"] = counter + 1
            self.state.extra.setdefault("max_port", {})[pi] = port
            self.state.objects["netns"].append(ns)
            self.state.intend("veth", [host_iface])
            try:
                self._make_namespace(name, ns)
                ip.batch([f"link add {host_iface} group {ip.run_group(self.prefix)} type veth peer name "
                          f"{CONTAINER_IFACE} address {mac} netns {ns}",
                          f"link set {host_iface} up"])
                rtnl.configure([rtnl.ContainerIface(ns, f"{ip_addr}/{prefixlen}", gateway, CONTAINER_IFACE)])
                if self.offload_off:
                    ethtool.tx_offload_off([(None, host_iface), (ns, CONTAINER_IFACE)])
                ovs.Transaction().add("add-port", self.bridge(pi), host_iface).add(
                    "set", "Interface", host_iface, f"ofport_request={port}").commit()
                self.size_sockets([host_iface])
            except (CommandError, OSError) as exc:
                self._remove_extra(name)
                raise FabricError(f"container {name!r}: could not be created on {pi!r}: {exc}") from exc
            except FabricError:
                self._remove_extra(name)
                raise
        return port

    def _make_namespace(self, container: str, netns_name: str) -> None:
        """The network namespace behind a run-time container; the Docker backend starts a
        container here instead and attaches its namespace under the same name."""
        ip.batch([f"netns add {netns_name}"])

    def remove_container(self, name: str) -> None:
        with self.state.transaction():
            if name not in self._extra():
                if name in self.topology:
                    raise FabricError(f"container {name!r}: part of the topology; only run-time containers "
                                      "can be removed")
                raise FabricError(f"container {name!r}: no such run-time container in run {self.prefix}")
            self._remove_extra(name)

    def _remove_extra(self, name: str) -> None:
        entry = self._extra()[name]
        ovs.Transaction().add("--if-exists", "del-port", self.bridge(entry["pi"]), entry["iface"]).commit()
        ip.delete_links([entry["iface"]])
        ip.delete_netns([entry["netns"]])
        del self._extra()[name]
        self.state.objects["netns"] = [n for n in self.state.objects["netns"] if n != entry["netns"]]
        self.state.forget("veth", [entry["iface"]])

    # --- processes inside containers ----------------------------------------------------------
    def exec(self, container: str, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        try:
            result = subprocess.run(netns.exec_argv(self.netns(container), list(argv)), capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return 124, out
        return result.returncode, result.stdout + result.stderr

    def popen(self, container: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        return subprocess.Popen(netns.exec_argv(self.netns(container), list(argv)), **popen_kwargs)

    # --- tear down ----------------------------------------------------------------------------
    def down(self) -> None:
        with self.state.transaction():
            remove_objects(self.state)


def remove_objects(state: RunState) -> None:
    """Remove every object a run's state names, plus bridges carrying its label. Idempotent; also
    the clean-up path after a crash, so it trusts only the state file and the label.

    Two batches that run at once: one OVSDB transaction for every bridge (ovs-vswitchd then spends
    one kernel RCU grace period per port closing its packet socket, ~16 ms each here, mostly asleep),
    and the kernel's share: namespaces (which take their veth ends and peers with them in one
    kernel batch), then one `link del group N` for the run's root-namespace veths."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        bridges_gone = pool.submit(_remove_bridges, state)
        ip.delete_netns(state.objects.get("netns", []))
        state.objects["netns"] = []
        ip.delete_links(state.objects.get("veth", []), group=ip.run_group(state.prefix))
        state.objects["veth"] = []
        bridges_gone.result()
    state.objects["bridges"] = []
    state.extra.pop("containers", None)
    state.save()


def _remove_bridges(state: RunState) -> None:
    bridges = set(state.objects.get("bridges", []))
    if ovs.running():
        bridges |= set(ovs.bridges_labelled(state.prefix))
        if bridges:
            ovs.delete_bridges(sorted(bridges))


def brief(exc: BaseException, limit: int = 300) -> str:
    """An error as one readable line: a batched command's argv can run to 100,000 characters (one
    ovs-vsctl transaction for a whole 1,000-container fabric), which must not become the message."""
    if isinstance(exc, subprocess.TimeoutExpired):
        cmd = [str(a) for a in exc.cmd] if isinstance(exc.cmd, list | tuple) else str(exc.cmd).split()
        return f"'{' '.join(cmd[:3])} ...' ({len(cmd)} arguments) timed out after {exc.timeout:.0f}s"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
