"""Whole-topology validation: each rule, its one-line message, and sound topologies passing."""

from __future__ import annotations

import pytest

import topology.model
from picloud.errors import TopologyError
from topology.builders import FAMILIES, build
from topology.model import Node, Topology
from topology.validate import problems, validate


def rack(containers: int = 2) -> Topology:
    topo = Topology(name="rack")
    topo.add_switch("tor1", role="tor")
    for i in (1, 2):
        topo.add_pi(f"pi{i}")
        topo.add_link("tor1", f"pi{i}")
    for c in range(containers):
        topo.add_container(f"c{c}", "pi1")
    return topo


def replace_node(topo: Topology, name: str, **changes: object) -> None:
    """Simulate a topology changed behind the model's back (the rules must not trust add_*)."""
    old = topo.node(name)
    topo.graph.nodes[name]["node"] = Node(**{**old.__dict__, **changes})


def the_error(topo: Topology) -> str:
    with pytest.raises(TopologyError) as err:
        validate(topo, "topo.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("topo.yaml: ")
    return message


@pytest.mark.parametrize("spec", ["single", "linear:3", "tree:2,3", "fattree:4", "leafspine:2,3,2", "picloud:4,14"])
def test_every_builder_passes(spec: str) -> None:
    assert problems(build(spec, 2), spec) == []


def test_every_family_is_covered_above() -> None:
    assert set(FAMILIES) == {"single", "linear", "tree", "fattree", "leafspine", "picloud"}


def test_sound_topology_is_returned_unchanged() -> None:
    topo = rack()
    assert validate(topo, "x") is topo


def test_no_pis() -> None:
    topo = Topology()
    topo.add_switch("s1")
    assert the_error(topo) == "topo.yaml: no pis (a topology needs at least one pi to run containers)"


def test_disconnected_graph() -> None:
    topo = rack()
    topo.add_pi("island")
    assert the_error(topo) == (
        "topo.yaml: pi 'island' cannot reach switch 'tor1': 2 separate parts "
        "(the topology must be one connected graph)"
    )


def test_container_without_its_pi() -> None:
    topo = rack()
    replace_node(topo, "c0", pi="tor1")
    assert the_error(topo).startswith(
        "topo.yaml: container 'c0': runs on 'tor1', which is not a pi (containers run on a declared pi)"
    )
    topo = rack()
    replace_node(topo, "c1", pi="pi2")
    assert "container 'c1': linked to 'pi1' (a container has exactly one link, to its pi 'pi2')" in the_error(topo)


def test_dpid_collision(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 48-bit SHA-256 collision is out of reach; make two names collide instead.
    real = topology.model.dpid
    monkeypatch.setattr(topology.model, "dpid", lambda name: 7 if name in ("pi1", "pi2") else real(name))
    assert the_error(rack()) == (
        "topo.yaml: 'pi1' and 'pi2' share datapath id 0000000000000007 (datapath ids must be unique: rename one)"
    )


def test_duplicate_container_ip_and_mac() -> None:
    topo = rack(containers=1)
    topo.add_container("c9", "pi2", ip="10.0.0.1", mac="02:00:00:00:00:01")
    found = problems(topo, "topo.yaml")
    assert found == [
        "topo.yaml: container 'c9': ip 10.0.0.1 is also 'c0''s (container addresses must be unique)",
        "topo.yaml: container 'c9': mac 02:00:00:00:00:01 is also 'c0''s (container MACs must be unique)",
    ]
    assert the_error(topo) == found[0] + " [and 1 more]"


def test_network_address_and_multicast_mac() -> None:
    topo = rack(containers=0)
    topo.add_container("c0", "pi1", ip="192.168.1.0/24", mac="01:00:5e:00:00:01")
    assert problems(topo, "t") == [
        "t: container 'c0': ip 192.168.1.0/24 is the network or broadcast address (a container needs a host address)",
        "t: container 'c0': mac 01:00:5e:00:00:01 is a multicast address (the first byte must be even)",
    ]
    point_to_point = rack(containers=0)
    point_to_point.add_container("c0", "pi1", ip="10.9.9.0/31")
    assert problems(point_to_point, "t") == []


def test_invalid_name_and_role_behind_the_models_back() -> None:
    topo = rack()
    replace_node(topo, "tor1", role="router")
    assert "switch 'tor1': unknown role 'router' (one of core, aggregation" in the_error(topo)
    topo = rack()
    topo.graph.add_node("Bad_Name", node=Node("Bad_Name", "switch", role="edge"))
    assert "node 'Bad_Name': invalid name (names are 1-32 characters of [a-z0-9-]" in the_error(topo)


def test_interface_names_must_fit_ifnamsiz() -> None:
    topo = Topology()
    for i in range(1001):
        topo.add_switch(f"s{i}")  # the hub below is short id s1000
    for i in range(1000):
        topo.add_link("s1000", f"s{i}")
    topo.add_pi("p")
    topo.add_link("s1000", "p")
    for i in range(9000):
        topo.add_pi(f"x{i}")
        topo.add_link("s1000", f"x{i}")
    found = problems(topo, "big")
    assert found[0].startswith("big: ") and len(found) == 1
    assert (
        "switch 's1000': interface name 'pc999s1000p10001' is 16 bytes (Linux allows 15; use fewer nodes or ports)"
        in found[0]
    )
