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
from dataclasses import replace
from typing import Any

import networkx as nx

from picloud.errors import FabricError, TopologyError
from picloud.progress import silent
from picloud.runstate import RunState, state_dir
from topology import fabric_plan, openflow, tcplan
from topology.effects import ethtool, ip, netns, ovs, ovs_sockets, rcu, rtnl, tc
from topology.effects.proc import CommandError
from topology.fabric_plan import CONTAINER_IFACE, End, FabricPlan
from topology.model import Link, Topology
from topology.stalls import OVS_STALL_S
from topology.tcplan import Shape

KEEP: Any = object()  # shape_link: leave this attribute as it is

log = logging.getLogger(__name__)
__all__ = ["CONTAINER_IFACE", "End", "LocalFabric", "remove_objects"]

INACTIVITY_PROBE_MS = int(OVS_STALL_S * 1000)  # see ovs.add_fabric and topology/stalls.py


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
        # no kernel device, so no tc shaping and no capture on those links. "auto": patch ports where
        # the link has no shape, veth pairs where it has one (picloud:R,P's shaped Pi uplinks; its
        # unshaped ToR-aggregation links). Opt-in; kept in the state so a process attaching to the
        # run later builds the same ends.
        mode = fabric_links or state.extra.get("fabric_links") or "veth"
        if mode not in fabric_plan.LINK_MODES:
            raise FabricError(f"fabric_links {mode!r}: one of {', '.join(fabric_plan.LINK_MODES)}")
        self.fabric_links = mode
        self.controllers = controllers or []
        self.datapath = datapath or ("system" if ovs.kernel_datapath_available() else "netdev")
        self.offload_off = False
        # progress(stage, done, total): told before each batched step (picloud.progress draws it)
        self.progress: Callable[[str, int, int], None] = silent
        self.of_versions = openflow.parse_versions(of_versions)  # what every bridge offers
        self._plan: FabricPlan | None = None

    # --- names --------------------------------------------------------------------------------
    @property
    def plan(self) -> FabricPlan:
        """Every name, port, MAC and shape of the topology's fabric (topology.fabric_plan), computed
        once per topology: shape_link, the one run-time change to the model, drops it."""
        if self._plan is None:
            self._plan = fabric_plan.plan_fabric(self.topology, self.prefix, self.datapath, self.fabric_links,
                                                 controllers=self.controllers, of_versions=self.of_versions)
        return self._plan

    def bridge(self, node: str) -> str:
        return self.plan.bridge(node).name

    def ofctl_target(self, node: str) -> str:
        return self.bridge(node)

    def netns(self, container: str) -> str:
        extra = self._extra().get(container)
        if extra:
            return str(extra["netns"])
        return self.plan.namespace(container).name

    def container_port(self, container: str) -> int:
        extra = self._extra().get(container)
        if extra:
            return int(extra["port"])
        return self.topology.port(self.topology.pi_of(container), container)

    def end(self, node: str, link: Link) -> End:
        return self.plan.link(link.a, link.b).end(node)

    def is_patch(self, link: Link) -> bool:
        """A bridge-to-bridge link built from OVS patch ports (fabric_links="patch")."""
        return self.plan.link(link.a, link.b).kind == "patch"

    def _extra(self) -> dict[str, dict]:
        return self.state.extra.setdefault("containers", {})

    # --- build --------------------------------------------------------------------------------
    def check(self) -> None:
        """Everything that can be refused is refused here, before the first object exists."""
        topo = self.topology
        self._plan = None
        plan = self.plan  # refuses names Linux would refuse, and shaped patch links
        impaired = [lp for lp in plan.links if lp.shape.needs_netem]
        if impaired and not tc.netem_available():
            bad = impaired[0]
            raise FabricError(f"link {bad.a.node!r}-{bad.b.node!r}: delay/jitter/loss need the kernel's sch_netem, "
                              f"which kernel {tc.kernel()} lacks ({len(impaired)} link(s); remove delay/jitter/loss, "
                              "or use a kernel with netem)")
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
        ovs.match_vswitchd_autogroup()
        plan = self.plan
        if self.fabric_links != "veth":
            self.state.extra["fabric_links"] = self.fabric_links
        # Intent first: the state file names every object before any of them exists.
        namespaces = [ns.name for ns in plan.namespaces]
        self.state.objects["netns"] = list(dict.fromkeys(self.state.objects.get("netns", []) + namespaces))
        self.state.objects["veth"] = list(dict.fromkeys(self.state.objects.get("veth", []) + plan.root_ifaces))
        self.state.intend("bridges", [b.name for b in plan.bridges])
        try:
            self._build(plan)
        except (CommandError, OSError, subprocess.TimeoutExpired) as exc:
            self.down()
            raise FabricError(f"run {self.prefix}: building the fabric failed: {brief(exc)}") from exc
        except BaseException:
            self.down()
            raise

    def _make_namespaces(self, plan: FabricPlan) -> None:
        """The containers' namespaces; the Docker backend starts containers and names theirs instead."""
        self.progress("namespaces", 0, len(plan.namespaces))
        ip.batch(ip.namespace_lines(plan))

    def _build(self, plan: FabricPlan) -> None:
        """Render the plan: namespaces and veths (ip -batch), container addresses (rtnl), bridges
        and ports (one OVSDB transaction), shapes (tc -batch)."""
        self._make_namespaces(plan)
        self.progress("veth pairs", 0, len(plan.links))
        ip.batch(ip.veth_lines(plan))
        for i, ns in enumerate(plan.namespaces):
            if i % 50 == 0:
                self.progress("container interfaces", i, len(plan.namespaces))
            rtnl.configure([rtnl.ContainerIface(ns.name, ns.address, ns.gateway, ns.iface)])
        if self.datapath == "netdev" and not ovs.userspace_tso_active():
            self.offload_off = True
            log.warning("notice: OVS userspace TSO is not active, so TX checksum offload is turned off on "
                        "every veth (about 1 Gbit/s per bridge instead of 12); set other_config:"
                        "userspace-tso-enable=true and restart ovs-vswitchd for full speed")
            ethtool.tx_offload_off([(e.netns, e.iface) for lp in plan.links for e in lp.ends])
        txn = ovs.Transaction()
        ports = ovs.add_fabric(txn, plan, INACTIVITY_PROBE_MS)
        self.progress(f"one OVSDB transaction: {len(plan.bridges)} bridges, {ports} ports", 0, 0)
        txn.commit(timeout=300)
        # Shapes only once the ports exist: OVS adding a port without QoS deletes a root qdisc with
        # handle 1: that it finds on the device (netdev_linux_set_qos; measured with OVS 3.1).
        self.progress("link shaping", 0, 0)
        tc.apply_many(plan.tc_commands())
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
            ifaces = [e.iface for lp in self.plan.links if lp.kind != "patch" for e in lp.ends if e.bridge]
            ifaces += [c["iface"] for c in self._extra().values()]
        end = self._inert_end()
        opener = (lambda: ovs.open_send_socket(*end)) if end else None
        ovs_sockets.size_buffers(ovs.vswitchd_pid(), ifaces, queues * 2, opener)

    def _inert_end(self) -> tuple[str, int] | None:
        """(bridge, OpenFlow port) of a veth link's bridge end to send one inert frame from: a
        container's access port if there is one (the container's kernel drops it), else any veth
        port of the run."""
        veths = [lp for lp in self.plan.links if lp.kind != "patch"]
        for lp in sorted(veths, key=lambda lp: not any(e.bridge is None for e in lp.ends)):
            for e in lp.ends:
                if e.bridge:
                    return e.bridge, e.port
        return None

    # --- run-time changes ---------------------------------------------------------------------
    def link_devices(self, a: str, b: str) -> list[tuple[str, str | None]] | None:
        """Both ends' kernel devices; None for patch ports (an OpenFlow port state, not a device)."""
        lp = self.plan.link(a, b)
        return None if lp.kind == "patch" else [(e.iface, e.netns) for e in lp.ends]

    def set_link(self, a: str, b: str, up: bool) -> None:
        devices = self.link_devices(a, b)
        if devices is None:
            for e in self.plan.link(a, b).ends:  # no kernel device: the OpenFlow port goes down, as a cut cable
                ovs.port_carries(str(e.bridge), e.iface, up)
            return
        ip.set_links_now(devices, up)

    def shape_link(self, a: str, b: str, bw: Any = KEEP, *, delay: Any = KEEP, jitter: Any = KEEP,
                   loss: Any = KEEP, queue: Any = KEEP) -> Link:
        """Re-shape a link while the run is up, as Mininet's `TCIntf.config`: each attribute given
        replaces the link's (None removes it), the others stay. Validated by the same rules as a
        topology file, and refused before any tc call where it needs netem and the kernel lacks it.
        The new shape is written into the run's topology, so load, slowdown and the fidelity
        monitor use the rate the link really has."""
        link = fabric_plan.model_link(self.topology, self.prefix, a, b)
        lp = self.plan.link(a, b)
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
        if lp.kind == "patch" and not shape.empty:
            raise FabricError(f"link {a!r}-{b!r}: built from OVS patch ports (fabric_links={self.fabric_links}), "
                              "which have no kernel device to shape (build the run with fabric_links=veth)")
        if shape.needs_netem and not tc.netem_available():
            raise FabricError(f"link {a!r}-{b!r}: delay/jitter/loss need the kernel's sch_netem, which kernel "
                              f"{tc.kernel()} lacks")
        tc.apply(replace(lp, shape=shape).tc_commands(replace=True))
        self.topology.graph.edges[link.a, link.b]["link"] = replace(link, **wanted)
        self._plan = None
        self.size_sockets([e.iface for e in self.plan.link(a, b).ends if e.bridge])
        with self.state.transaction():
            self.state.topology = self.topology.to_dict()
        return self.topology.link(a, b)

    def add_container(self, name: str, pi: str, ip_addr: str, mac: str, prefixlen: int,
                      gateway: str | None) -> int:
        with self.state.transaction():
            extra = self._extra()
            new = fabric_plan.plan_runtime_container(self.topology, self.prefix, extra,
                                                     int(self.state.extra.get("next_container", 0)),
                                                     self.state.extra.get("max_port", {}), name, pi)
            extra[name] = {"pi": pi, "port": new.port, "ip": ip_addr, "mac": mac, "prefixlen": prefixlen,
                           "gateway": gateway, "netns": new.netns, "iface": new.iface}
            self.state.extra["next_container"] = new.counter + 1
            self.state.extra.setdefault("max_port", {})[pi] = new.port
            self.state.objects["netns"].append(new.netns)
            self.state.intend("veth", [new.iface])
            veth = new.veth(self.bridge(pi), mac)
            try:
                self._make_namespace(name, new.netns)
                ip.batch(ip.container_veth_lines(veth, ip.run_group(self.prefix)))
                rtnl.configure([rtnl.ContainerIface(new.netns, f"{ip_addr}/{prefixlen}", gateway, CONTAINER_IFACE)])
                if self.offload_off:
                    ethtool.tx_offload_off([(e.netns, e.iface) for e in veth.ends])
                ovs.Transaction().add("add-port", self.bridge(pi), new.iface).add(
                    "set", "Interface", new.iface, f"ofport_request={new.port}").commit()
                self.size_sockets([new.iface])
            except (CommandError, OSError) as exc:
                self._remove_extra(name)
                raise FabricError(f"container {name!r}: could not be created on {pi!r}: {exc}") from exc
            except FabricError:
                self._remove_extra(name)
                raise
        return new.port

    def _make_namespace(self, container: str, netns_name: str) -> None:
        """The network namespace behind a run-time container; the Docker backend starts a
        container here instead and attaches its namespace under the same name."""
        ip.batch([f"netns add {netns_name}"])

    def remove_container(self, name: str) -> None:
        with self.state.transaction():
            fabric_plan.check_removable(self.topology, self.prefix, self._extra(), name)
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

    First the bridges' tap devices, in one kernel batch (ip.delete_as_one_batch). Then two batches
    that run at once: one OVSDB transaction for every bridge (ovs-vswitchd then spends one kernel
    RCU grace period per port closing its packet socket, ~16 ms each here, mostly asleep), and the
    kernel's share: namespaces (which take their veth ends and peers with them in one kernel
    batch), then one `link del group N` for the run's root-namespace veths. All with expedited RCU
    grace periods (topology.effects.rcu): each close then takes microseconds."""
    with rcu.expedited(state_dir() / rcu.SAVED_NAME), ThreadPoolExecutor(max_workers=1) as pool:
        # The userspace datapath makes each bridge's own port a tap device; closed by ovs-vswitchd,
        # each one would be unregistered alone (an rcu_barrier, ~20 ms: 0.45 s of tree:2,4's 0.68 s
        # teardown), so they go first, together, and the daemon then closes detached files.
        ip.delete_as_one_batch([b for b in state.objects.get("bridges", []) if ip.is_tap(b)],
                               ip.tap_group(state.prefix))
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
