"""The fabric plan (topology.fabric_plan) and its renderings, checked without root: what the
kernel and OVS would be asked to create, before anything is created."""

from __future__ import annotations

import pytest

from picloud.errors import FabricError
from topology import tcplan
from topology.builders import build
from topology.effects import ip, ovs
from topology.fabric_plan import FabricPlan, check_removable, plan_fabric, plan_runtime_container
from topology.model import IFNAMSIZ, Topology

SPECS = ["single:3", "linear:4", "tree:2,3", "fattree:4", "leafspine:2,3,2", "picloud:2,3"]


def shaped() -> Topology:
    topo = Topology("shaped")
    topo.add_switch("s1")
    topo.add_pi("pi1")
    topo.add_pi("pi2")
    topo.add_link("s1", "pi1", bw=10, queue=20)
    topo.add_link("s1", "pi2", bw=100, delay="2ms", loss=1)
    topo.add_container("c1", "pi1", link={"bw": 5})
    topo.add_container("c2", "pi2")
    return topo


@pytest.mark.parametrize(("spec", "kind"), [(s, "veth") for s in SPECS] + [(s, "patch") for s in SPECS[:-1]]
                         + [(s, "auto") for s in SPECS])
def test_every_name_fits_ifnamsiz_carries_the_prefix_and_is_unique(spec: str, kind: str) -> None:
    plan = plan_fabric(build(spec, 2), "pc999", fabric_links=kind)  # picloud:R,P shapes its uplinks: veth only
    names = plan.interface_names()
    assert names and len(names) == len(set(names))
    assert all(len(n.encode()) <= IFNAMSIZ and n.startswith("pc999") for n in names)
    inner = [e for lp in plan.links for e in lp.ends if e.netns is not None]
    assert inner and all(e.iface == "eth0" and e.bridge is None for e in inner)


@pytest.mark.parametrize("spec", SPECS)
def test_ofports_are_the_model_ports_unique_per_bridge(spec: str) -> None:
    topo = build(spec, 2)
    plan = plan_fabric(topo, "pc7")
    assert [b.node for b in plan.bridges] == topo.bridges
    for bridge in plan.bridges:
        ofports = [p.ofport for p in bridge.ports]
        assert ofports == sorted(set(ofports))
        assert ofports == sorted(topo.ports(bridge.node))
        for port in bridge.ports:
            peer = topo.ports(bridge.node)[port.ofport]
            assert plan.link(bridge.node, peer).end(bridge.node).iface == port.name


def test_plans_are_stable_across_computations() -> None:
    assert plan_fabric(build("fattree:4", 1), "pc3") == plan_fabric(build("fattree:4", 1), "pc3")


def test_container_macs_are_unique_locally_administered_unicast() -> None:
    plan = plan_fabric(build("picloud:3,4", 3), "pc7")
    macs = [e.mac for lp in plan.links for e in lp.ends if e.mac is not None]
    assert len(macs) == len(plan.namespaces) == 36 == len(set(macs))
    first_octets = [int(m.split(":")[0], 16) for m in macs]
    assert all(o & 0b10 and not o & 0b01 for o in first_octets)  # locally administered, unicast
    host_ends = [e for lp in plan.links for e in lp.ends if e.netns is None]
    assert all(e.mac is None for e in host_ends)  # the kernel picks: random and locally administered


def test_namespaces_carry_the_containers_addresses() -> None:
    topo = build("single:2", 2)
    plan = plan_fabric(topo, "pc7")
    assert [(ns.container, ns.address, ns.iface) for ns in plan.namespaces] == [
        (c, topo.node(c).ip, "eth0") for c in topo.containers]
    assert plan.namespace(topo.containers[0]).name == "pc7" + topo.short_id(topo.containers[0])


def test_shapes_are_tcplans_on_both_ends() -> None:
    topo = shaped()
    plan = plan_fabric(topo, "pc7")
    want = []
    for link in topo.links:
        lp = plan.link(link.a, link.b)
        assert lp.shape == tcplan.Shape.of(link)
        if not lp.shape.empty:
            for e in lp.ends:
                want += tcplan.plan(e.iface, lp.shape, e.netns)
    assert plan.tc_commands() == want
    container_end = plan.link("c1", "pi1").end("c1")
    assert ("tc", "-n", container_end.netns, "qdisc", "add", "dev", "eth0", "root") == want[-2].argv[:8]
    assert len(want) == 2 + 4 + 2  # s1-pi1 TBF; s1-pi2 TBF + netem; c1-pi1 TBF


def test_shaped_link_with_patch_fabric_links_is_refused() -> None:
    with pytest.raises(FabricError, match=r"\Alink 's1'-'pi1': shaped, but fabric_links=patch [^\n]*\Z"):
        plan_fabric(shaped(), "pc7", fabric_links="patch")


def test_patch_links_join_bridges_only_and_name_their_peers() -> None:
    plan = plan_fabric(build("linear:3", 1), "pc7", fabric_links="patch")
    for lp in plan.links:
        assert lp.kind == ("veth" if lp.to_container else "patch")
    ports = {p.name: p for b in plan.bridges for p in b.ports}
    for port in ports.values():
        if port.type == "patch":
            assert ports[str(port.peer)].peer == port.name
    assert set(plan.root_ifaces) == {p.name for p in ports.values() if p.type == ""}


@pytest.mark.parametrize("prefix", ["pc1000", "pc", "xx1", "pc01", "pc1;rm", "pc1 "])
def test_bad_prefix_is_refused_in_one_line(prefix: str) -> None:
    with pytest.raises(FabricError, match=r"\Aprefix .*: invalid \(a run prefix is 'pc' and a number 1-999[^\n]*\Z"):
        plan_fabric(build("single:1", 1), prefix)


def test_long_node_names_never_reach_interface_names() -> None:
    topo = Topology("long")
    switch = topo.add_switch("s" * 32)
    for i in range(3):
        pi = topo.add_pi(f"{i}" + "p" * 31)
        topo.add_link(switch, pi)
        topo.add_container(f"{i}" + "c" * 31, pi)
    names = plan_fabric(topo, "pc999").interface_names()
    assert max(len(n) for n in names) <= len("pc999s0p3")


def test_a_name_longer_than_ifnamsiz_is_refused_before_anything_is_built() -> None:
    """Pi number 10,000 (short id p10000) with 1,000 containers: its port 1000 end needs 16 bytes
    under a 5-byte prefix, and fits under a 3-byte one."""
    topo = Topology("wide")
    for i in range(10001):
        topo.add_pi(f"pi{i}")
    for i in range(1000):
        topo.add_container(f"c{i}", "pi10000")
    plan = plan_fabric(topo, "pc9")
    assert max(len(n.encode()) for n in plan.interface_names()) == len("pc9p10000p1000") <= IFNAMSIZ
    with pytest.raises(FabricError, match=r"\Arun pc999: interface name 'pc999p10000p1000': 16 bytes "
                                          r"\(Linux allows 15\); use fewer [^\n]*\Z"):
        plan_fabric(topo, "pc999")


def test_auto_fabric_links_are_patch_ports_where_unshaped_and_veth_pairs_where_shaped() -> None:
    """picloud:R,P: the Pi uplinks carry the Pi's NIC rate (veth, shaped), ToR-aggregation links
    none (patch: one datapath pass for the whole switch fabric)."""
    topo = build("picloud:2,4", 1)
    plan = plan_fabric(topo, "pc7", fabric_links="auto")
    assert plan.fabric_links == "auto"
    kinds = {frozenset((lp.a.node, lp.b.node)): lp.kind for lp in plan.links}
    for ln in topo.links:
        kind = kinds[frozenset((ln.a, ln.b))]
        if "container" in (topo.kind(ln.a), topo.kind(ln.b)):
            assert kind == "veth"
        elif topo.kind(ln.a) == topo.kind(ln.b) == "switch":
            assert ln.bw is None and kind == "patch", ln
        else:
            assert ln.bw == 100 and kind == "veth", ln
    assert sum(lp.kind == "patch" for lp in plan.links) == 4  # 2 ToRs x 2 aggregation switches
    assert plan.tc_commands() == plan_fabric(topo, "pc7", fabric_links="veth").tc_commands()


def test_fabric_links_must_be_veth_patch_or_auto() -> None:
    with pytest.raises(FabricError, match=r"\Afabric_links 'vxlan': one of veth, patch, auto\Z"):
        plan_fabric(build("single:1", 1), "pc7", fabric_links="vxlan")


# --- renderings ---------------------------------------------------------------------------------
def test_ip_lines_create_every_planned_device_once() -> None:
    plan = plan_fabric(build("tree:2,2", 1), "pc7")
    group = ip.run_group("pc7")
    lines = ip.veth_lines(plan)
    adds = [ln for ln in lines if ln.startswith("link add ")]
    assert len(adds) == len(plan.links)
    for lp in plan.links:
        host = next(e for e in lp.ends if e.netns is None)
        line = next(ln for ln in adds if ln.startswith(f"link add {host.iface} group {group} "))
        for e in lp.ends:
            assert f" {e.iface} " in line + " "
            if e.netns:
                assert f"address {e.mac} netns {e.netns}" in line
    assert ip.namespace_lines(plan) == [f"netns add {ns.name}" for ns in plan.namespaces]


def test_ip_lines_give_the_container_end_the_plans_mtu() -> None:
    plan = plan_fabric(build("single:1", 1), "pc7", mtu=1450)
    (line, last) = ip.container_veth_lines(plan.link("pi1-c1", "pi1"), None, host_netns="emu1")
    assert line == "link add pc7p0p2 type veth peer name eth0 address 02:00:00:00:00:01 mtu 1450 netns pc7c0"
    assert last == "link set pc7p0p2 netns emu1"


def test_one_ovsdb_transaction_holds_every_bridge_and_port_with_its_ofport() -> None:
    plan: FabricPlan = plan_fabric(build("linear:2", 1), "pc7", datapath="dummy", fabric_links="patch",
                                   controllers=["tcp:127.0.0.1:6707"], of_versions=["13"])
    txn = ovs.Transaction()
    ports = ovs.add_fabric(txn, plan, inactivity_probe_ms=3000)
    assert ports == sum(len(b.ports) for b in plan.bridges)
    cmds = txn.commands
    for bridge in plan.bridges:
        settings = next(c for c in cmds if c[:3] == ["set", "Bridge", bridge.name] and len(c) > 4)
        assert {"datapath_type=dummy", "protocols=OpenFlow13", "fail_mode=secure",
                f"other-config:datapath-id={bridge.dpid}", "external_ids:picloud-run=pc7"} <= set(settings)
        for port in bridge.ports:
            assert ["add-port", bridge.name, port.name] in cmds
            assert ["set", "Interface", port.name, f"ofport_request={port.ofport}"] in cmds
    assert sum(1 for c in cmds if "inactivity_probe=3000" in c) == len(plan.bridges)


# --- run-time containers ------------------------------------------------------------------------
def test_runtime_container_ports_are_never_reused_within_a_run() -> None:
    topo = build("single:2", 1)
    extra = {"m1": {"pi": "pi1", "port": 3}}
    new = plan_runtime_container(topo, "pc7", extra, counter=4, max_ports={"pi1": 5}, container="m2", pi="pi1")
    assert (new.port, new.netns, new.iface, new.counter) == (6, "pc7t4", "pc7p0p6", 4)
    lp = new.veth("pc7p0", "0a:00:00:00:00:01")
    assert lp.end("m2").netns == "pc7t4" and lp.end("pi1").bridge == "pc7p0"


@pytest.mark.parametrize(("name", "pi", "message"), [
    ("m1", "pi1", r"container 'm1': already exists in run pc7"),
    ("pi1-c1", "pi1", r"container 'pi1-c1': already exists in run pc7"),
    ("m2", "s1", r"container 'm2': unknown pi 's1'"),
])
def test_runtime_container_refusals(name: str, pi: str, message: str) -> None:
    with pytest.raises(FabricError, match=rf"\A{message}\Z"):
        plan_runtime_container(build("single:2", 1), "pc7", {"m1": {"pi": "pi1", "port": 3}}, 0, {}, name, pi)


def test_only_runtime_containers_are_removable() -> None:
    topo = build("single:2", 1)
    check_removable(topo, "pc7", {"m1": {}}, "m1")
    with pytest.raises(FabricError, match="part of the topology"):
        check_removable(topo, "pc7", {}, "pi1-c1")
    with pytest.raises(FabricError, match="no such run-time container in run pc7"):
        check_removable(topo, "pc7", {}, "m9")


def test_bridge_lookup_refuses_containers_and_strangers() -> None:
    plan = plan_fabric(build("single:1", 1), "pc7")
    assert plan.bridge("s1").name == "pc7s0"
    with pytest.raises(FabricError, match=r"\A'pi1-c1': a container has no bridge\Z"):
        plan.bridge("pi1-c1")
    with pytest.raises(FabricError, match=r"\A'nope': not a switch or Pi of run pc7"):
        plan.bridge("nope")
