"""What ClusterFabric would write to each Pi, computed without connecting to any."""

from __future__ import annotations

import pytest

from picloud.errors import FabricError
from picloud.runstate import RunState
from topology.backends.cluster import ClusterFabric, controller_address
from topology.builders import build
from topology.inventory import parse_inventory


def inventory(controller: str | None = "172.29.0.1"):
    data = {"pis": [{"name": f"pi{i}", "management": f"172.29.0.{10 + i}", "ovsdb": f"tcp:172.29.0.{10 + i}:6640",
                     "docker": "none", "netns": f"emu{i}", "underlay": f"172.29.0.{10 + i}"} for i in (1, 2)]}
    if controller:
        data["controller"] = controller
    return parse_inventory(data)


def fabric(controllers=None, inv=None) -> ClusterFabric:
    return ClusterFabric(build("single:2", 1), RunState(prefix="pc7", backend="cluster"), controllers,
                         inventory=inv or inventory())


def test_loopback_controller_is_rewritten_to_the_address_the_pis_reach():
    f = fabric(["tcp:127.0.0.1:6707"])
    assert f.controllers == ["tcp:172.29.0.1:6707"]
    assert controller_address({"inventory": inventory()}) == "172.29.0.1"


def test_external_controller_is_kept():
    assert fabric(["tcp:10.9.9.9:6653"]).controllers == ["tcp:10.9.9.9:6653"]


def test_loopback_controller_without_an_inventory_address_is_refused():
    with pytest.raises(FabricError, match="no 'controller' address"):
        fabric(["tcp:127.0.0.1:6707"], inventory(controller=None))


def test_bridge_specs_carry_model_ports_tunnels_and_containers():
    f = fabric(["tcp:127.0.0.1:6707"])
    topo = f.topology
    assert f.placement == {"pi1": "pi1", "pi2": "pi2", "s1": "pi1"}
    (pi2,) = f.bridge_specs("pi2")
    assert pi2.name == f.bridge("pi2") and pi2.datapath_type == "netdev"
    assert pi2.dpid == f"{topo.dpid('pi2'):016x}"
    assert pi2.controllers == ["tcp:172.29.0.1:6707"]
    assert pi2.listeners == [f"ptcp:{f._ofctl_port('pi2')}:172.29.0.12"]
    ports = {p.name: p for p in pi2.ports}
    tunnel = next(p for p in ports.values() if p.type == "vxlan")
    assert tunnel.ofport == topo.port("pi2", "s1")
    assert tunnel.options == {"remote_ip": "172.29.0.11", "key": "2"}
    container = next(p for p in ports.values() if p.type == "")
    assert container.ofport == topo.port("pi2", "pi2-c1")
    specs = {s.name: s for s in f.bridge_specs("pi1")}
    switch = specs[f.bridge("s1")]
    kinds = sorted(p.type for p in switch.ports)
    assert kinds == ["patch", "vxlan"]


def test_ofctl_listeners_differ_per_bridge_and_run():
    f = fabric()
    ports = {f._ofctl_port(n) for n in f.topology.bridges}
    assert len(ports) == len(f.topology.bridges)
    assert f.ofctl_target("s1") == f"tcp:172.29.0.11:{f._ofctl_port('s1')}"


def test_pi_model_option_overrides_the_inventory_and_is_validated():
    f = ClusterFabric(build("single:2", 1), RunState(prefix="pc7"), None, inventory=inventory(), pi_model="b+")
    assert f.model_override.memory_mb == 512
    with pytest.raises(FabricError, match=r"--pi-model: pi model 'zero': unknown"):
        ClusterFabric(build("single:2", 1), RunState(prefix="pc7"), None, inventory=inventory(), pi_model="zero")


def test_containers_on_a_remote_docker_pi_have_no_local_namespace():
    data = {"pis": [{"name": "pi1", "management": "10.1.0.1", "ovsdb": "tcp:10.1.0.1:6640",
                     "docker": "ssh://pi@10.1.0.1", "underlay": "10.1.0.1"}]}
    f = ClusterFabric(build("single:1", 1), RunState(prefix="pc7"), None, inventory=parse_inventory(data))
    assert f.container_name("pi1-c1") == "pc7-pi1-c1"
    with pytest.raises(FabricError, match="not on this machine"):
        f.netns("pi1-c1")


def test_an_ovs_without_tunnels_or_datapath_gets_one_line_per_missing_feature():
    from topology.backends.cluster import feature_problems

    ok = {"ovs_version": "3.1.0", "iface_types": ["internal", "patch", "vxlan"], "datapath_types": ["system"]}
    assert feature_problems("pi1", ok) == []
    old = {"ovs_version": "2.3.0", "iface_types": ["internal", "patch"], "datapath_types": []}
    assert feature_problems("pi1", old) == [
        "pi 'pi1': OVS 2.3.0 lacks interface types vxlan (PiCloud needs vxlan tunnels and patch ports)",
        "pi 'pi1': OVS offers no system or netdev datapath (none)",
    ]


def test_run_time_container_ports_are_part_of_the_plan_so_repair_keeps_them():
    f = fabric()
    f.state.extra["containers"] = {"t1": {"pi": "pi2", "port": 9, "iface": "pc7p1p9", "netns": "pc7t0"}}
    (pi2,) = f.bridge_specs("pi2")
    assert ("pc7p1p9", 9) in [(p.name, p.ofport) for p in pi2.ports]
    assert f.netns("t1") == "pc7t0" and f.container_port("t1") == 9
