"""controller_apps.flows.encode against real OVS tables (the private dummy-datapath sandbox):
every app's rules install without an OFPT_ERROR and `dump-flows` holds exactly them, and packets
traced hop by hop through the real tables go where routing and tenancy say, and nowhere else."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from ovs_sandbox import OvsSandbox
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controller_apps import flows as fl
from controller_apps import pipeline
from controller_apps import routing_rules as rr
from controller_apps import tenancy_rules as T
from tenants import plan as P
from tenants.model import Member, TenantPlan
from topology.builders import build
from topology.effects import ovs as ovs_effects
from topology.fabric_plan import FabricPlan, plan_fabric, plan_runtime_container
from topology.model import Topology, dpid

PREFIX = "pc7"


class Run:
    """A leaf-spine fabric (ECMP between leaves and spines) whose bridge-to-bridge links are patch
    ports, so a packet received on one port crosses the whole fabric inside the one dummy
    datapath; two containers per Pi, a rate-limited tenant of four members (each on a port of its
    own, as run-time containers get), and every app's rules on every bridge."""

    def __init__(self, box: OvsSandbox) -> None:
        self.box = box
        self.topo: Topology = build("leafspine:2,2,2", containers_per_pi=2)
        target = f"unix:{box.dir / 'no-controller.sock'}"  # secure bridges: no flows but ours
        self.plan: FabricPlan = plan_fabric(self.topo, PREFIX, datapath="dummy", fabric_links="patch",
                                            controllers=[target])
        tenants = P.create_tenant(TenantPlan(), "red", "10.0.0.0/24", rate=20)
        tenants, members = P.add_members(tenants, self.topo, "red", 4, placement="spread")
        txn = ovs_effects.Transaction(db=box.db)
        ovs_effects.add_fabric(txn, self.plan)
        self.ifaces: dict[tuple[str, int], str] = {}  # (node, port) -> the interface a host sits on
        max_ports: dict[str, int] = {}
        for i, m in enumerate(members):
            new = plan_runtime_container(self.topo, PREFIX, {}, i, max_ports, m.name, m.pi)
            max_ports[m.pi] = new.port
            tenants = P.set_port(tenants, m.name, new.port)
            txn.add("add-port", self.plan.bridge(m.pi).name, new.iface).add(
                "set", "Interface", new.iface, f"ofport_request={new.port}")
            self.ifaces[(m.pi, new.port)] = new.iface
        txn.commit(timeout=60)
        for bridge in self.plan.bridges:
            for port in bridge.ports:
                if port.type == "":
                    self.ifaces[(bridge.node, port.ofport)] = port.name
        self.members: list[Member] = [m for _, m in tenants.members]
        hosts = rr.hosts_from_topology(self.topo) + [rr.Host(m.mac, m.ip, dpid(m.pi), int(m.port or 0), tn.name, tn.id)
                                                     for tn, m in tenants.members]
        routing = rr.desired_state(rr.graph_from_topology(self.topo), hosts)
        tenancy = T.compute(tenants, self.topo)
        self.rules = {node: [routing[dpid(node)], tenancy.get(dpid(node), fl.SwitchRules())]
                      for node in self.topo.bridges}

    def install(self) -> dict[str, list[tuple[int, int]]]:
        """Every app's rules on every bridge, as the apps send them; the switches' refusals."""
        refused = {}
        for node, apps in self.rules.items():
            with self.box.channel(self.plan.bridge(node).name) as dp:
                for msg in pipeline.install_messages(dp):
                    dp.send_msg(msg)
                for rules in apps:
                    for msg in fl.encode(dp, fl.diff(None, rules)):
                        dp.send_msg(msg)
                refused[node] = dp.barrier()
        return refused

    def counters(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(rx, tx) packets of every host-facing port, from the datapath in one call (OVSDB's
        statistics column lags by its 5 s update interval)."""
        names = {iface: key for key, iface in self.ifaces.items()}
        text = self.box.appctl("dpctl/show", "-s")
        out = {}
        for m in re.finditer(r"port \d+: (\S+)[^\n]*\n\s+RX packets:(\d+)[^\n]*\n\s+TX packets:(\d+)", text):
            if m.group(1) in names:
                out[names[m.group(1)]] = (int(m.group(2)), int(m.group(3)))
        return out

    def send(self, node: str, port: int, frame: bytes) -> set[tuple[str, int]]:
        """Receive `frame` on a host's port; the host ports it leaves the fabric at (empty: dropped).
        The dummy datapath handles a received frame in the same main-loop pass that counts it, so
        once the input port's rx counter has moved, every output has been counted too."""
        before = self.counters()
        self.box.appctl("netdev-dummy/receive", self.ifaces[(node, port)], frame.hex())
        deadline = time.monotonic() + 30
        while (after := self.counters())[(node, port)][0] == before[(node, port)][0]:
            assert time.monotonic() < deadline, "the dummy datapath never received the frame"
            time.sleep(0.02)
        return {key for key, (_, tx) in after.items() if tx != before[key][1]}


@pytest.fixture
def run(clean_ovs: OvsSandbox) -> Iterator[Run]:
    r = Run(clean_ovs)
    assert r.install() == {node: [] for node in r.topo.bridges}
    yield r


def flow_keys(lines: list[str]) -> Counter[tuple[int, int, int]]:
    out: Counter[tuple[int, int, int]] = Counter()
    for line in lines:
        fields = dict(re.findall(r"(cookie|table|priority)=(0x[0-9a-f]+|\d+)", line))
        out[(int(fields["cookie"], 0), int(fields.get("table", 0)), int(fields.get("priority", 32768)))] += 1
    return out


def test_every_apps_rules_install_and_dump_flows_holds_exactly_them(run: Run) -> None:
    for node, apps in run.rules.items():
        bridge = run.plan.bridge(node).name
        want: Counter[tuple[int, int, int]] = Counter((pipeline.COOKIE_PIPELINE, t.table_id, pipeline.PRIORITY_MISS)
                                                      for t in pipeline.TABLES)
        groups, meters = set(), set()
        for rules in apps:
            want.update((f.cookie, f.table, f.priority) for f in rules.flows.values())
            groups |= set(rules.groups)
            meters |= set(rules.meters)
        assert flow_keys(run.box.flow_lines(bridge)) == want
        dumped_groups = re.findall(r"group_id=(\d+)", run.box.ofctl("dump-groups", bridge))
        assert sorted(map(int, dumped_groups)) == sorted(groups)
        dumped_meters = re.findall(r"meter=(\d+)", run.box.ofctl("dump-meters", bridge))
        assert sorted(map(int, dumped_meters)) == sorted(meters)
    assert any(run.rules[pi][1].meters for pi in run.topo.pis)  # the tenant's rate: meters were tested


def frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip.split("/")[0], dst=dst_ip.split("/")[0])
                 / TCP(sport=40000, dport=80))


def test_a_default_host_reaches_every_other_container_and_only_it(run: Run) -> None:
    topo = run.topo
    pairs = [(topo.containers[0], c) for c in topo.containers[1:]] + [(topo.containers[-1], topo.containers[0])]
    for src, dst in pairs:
        s, d = topo.node(src), topo.node(dst)
        assert s.pi and s.mac and s.ip and d.pi and d.mac and d.ip
        reached = run.send(s.pi, topo.port(s.pi, src), frame(s.mac, d.mac, s.ip, d.ip))
        assert reached == {(d.pi, topo.port(d.pi, dst))}, f"{src} -> {dst}"


def test_tenant_members_reach_each_other_across_pis(run: Run) -> None:
    a, b = run.members[0], run.members[1]
    assert a.pi != b.pi
    assert run.send(a.pi, int(a.port or 0), frame(a.mac, b.mac, a.ip, b.ip)) == {(b.pi, int(b.port or 0))}


def test_a_default_host_never_reaches_a_tenant_member_nor_the_reverse(run: Run) -> None:
    topo = run.topo
    for member in run.members:
        for src in topo.containers:
            s = topo.node(src)
            assert s.pi and s.mac and s.ip
            assert run.send(s.pi, topo.port(s.pi, src), frame(s.mac, member.mac, s.ip, member.ip)) == set()
            assert run.send(member.pi, int(member.port or 0), frame(member.mac, s.mac, member.ip, s.ip)) == set()
