"""Builders: node, link and port counts per family, names, roles, determinism and spec errors."""

from __future__ import annotations

from collections import Counter

import pytest

from picloud.errors import TopologyError
from topology.builders import FAMILIES, MAX_NODES, build, parse_spec
from topology.model import NAME_RE, Topology


def roles(topo: Topology) -> Counter:
    return Counter(topo.node(s).role for s in topo.switches)


def degree(topo: Topology, name: str) -> int:
    return len(topo.ports(name))


# spec -> (switches, pis, fabric links)
SIZES = {
    "single": (1, 2, 2),
    "single:5": (1, 5, 5),
    "linear:1": (1, 1, 1),
    "linear:4": (4, 4, 7),
    "tree:1,2": (1, 2, 2),
    "tree:2,3": (4, 9, 12),
    "tree:3,2": (7, 8, 14),
    "fattree:2": (5, 2, 6),
    "fattree:4": (20, 16, 48),
    "fattree:6": (45, 54, 162),
    "leafspine:2,4,3": (6, 12, 20),
    "picloud:4,14": (6, 56, 64),
    "picloud:1,1": (3, 1, 3),
}


@pytest.mark.parametrize("spec", sorted(SIZES))
def test_counts(spec: str) -> None:
    switches, pis, links = SIZES[spec]
    topo = build(spec, containers_per_pi=2)
    assert topo.counts() == {"switches": switches, "pis": pis, "containers": 2 * pis, "links": links}
    assert len(topo.links) == links + 2 * pis


@pytest.mark.parametrize("spec", sorted(SIZES))
def test_deterministic_and_well_formed(spec: str) -> None:
    one, two = build(spec, 2), build(spec, 2)
    assert one.to_dict() == two.to_dict()
    assert [(ln.a, ln.b, ln.port_a, ln.port_b) for ln in one.links] == [
        (ln.a, ln.b, ln.port_a, ln.port_b) for ln in two.links
    ]
    for name in one.graph.nodes:
        assert NAME_RE.match(name) and len(name) <= 32
        ports = one.ports(name)
        assert sorted(ports) == list(range(1, len(ports) + 1)), f"{name}: ports not 1..n"
    for pi in one.pis:
        # Containers come last, so every uplink has a lower port number than every container.
        uplinks = [p for p, peer in one.ports(pi).items() if one.kind(peer) != "container"]
        containers = [p for p, peer in one.ports(pi).items() if one.kind(peer) == "container"]
        assert max(uplinks) < min(containers)
        assert one.containers_on(pi) == [f"{pi}-c1", f"{pi}-c2"]


def test_fattree_4_matches_al_fares() -> None:
    topo = build("fattree:4")
    assert roles(topo) == {"core": 4, "aggregation": 8, "edge": 8}
    assert all(degree(topo, s) == 4 for s in topo.switches), "every switch has K ports"
    # Each core switch reaches every pod exactly once; aggregation i of a pod uses cores i*K/2+1..
    for core in [s for s in topo.switches if topo.node(s).role == "core"]:
        pods = sorted(int(peer[3]) for peer in topo.ports(core).values())
        assert pods == [1, 2, 3, 4]
    assert set(topo.ports("agg2-1").values()) == {"core1", "core2", "edge2-1", "edge2-2"}
    assert set(topo.ports("agg3-2").values()) == {"core3", "core4", "edge3-1", "edge3-2"}
    assert set(topo.ports("edge1-2").values()) == {"agg1-1", "agg1-2", "pi1-2-1", "pi1-2-2"}
    assert topo.node("pi4-2-2").rack == 8


def test_fattree_ports_follow_link_order() -> None:
    topo = build("fattree:4")
    assert topo.ports("core1") == {1: "agg1-1", 2: "agg2-1", 3: "agg3-1", 4: "agg4-1"}
    assert topo.ports("pi1-1-1") == {1: "edge1-1", 2: "pi1-1-1-c1"}
    assert topo.port("pi1-1-1-c1", "pi1-1-1") == 1


def test_tree_is_numbered_like_mininet_treetopo() -> None:
    topo = build("tree:2,2", containers_per_pi=0)
    # Mininet's TreeTopo numbers depth first: s1 root, s2 with h1 h2, s3 with h3 h4.
    assert topo.ports("s1") == {1: "s2", 2: "s3"}
    assert set(topo.ports("s2").values()) == {"s1", "pi1", "pi2"}
    assert set(topo.ports("s3").values()) == {"s1", "pi3", "pi4"}
    assert roles(build("tree:3,2")) == {"core": 1, "aggregation": 2, "edge": 4}


def test_linear_is_a_chain() -> None:
    topo = build("linear:4")
    assert [set(topo.ports(s).values()) - set(topo.pis) for s in topo.switches] == [
        {"s2"}, {"s1", "s3"}, {"s2", "s4"}, {"s3"}
    ]


def test_leafspine_is_a_full_bipartite_fabric() -> None:
    topo = build("leafspine:3,4,2")
    assert roles(topo) == {"spine": 3, "leaf": 4}
    for leaf in (s for s in topo.switches if s.startswith("leaf")):
        assert {p for p in topo.ports(leaf).values() if p.startswith("spine")} == {"spine1", "spine2", "spine3"}
    assert topo.node("pi3-2").rack == 3


def test_picloud_is_the_glasgow_machine() -> None:
    topo = build("picloud:4,14")
    assert roles(topo) == {"aggregation": 2, "tor": 4}
    assert len(topo.pis) == 56
    for r in range(1, 5):
        assert set(topo.ports(f"tor{r}").values()) == {"agg1", "agg2"} | {f"pi{r}-{i}" for i in range(1, 15)}
        assert {topo.node(f"pi{r}-{i}").rack for i in range(1, 15)} == {r}
    assert "pi4-14-c1" in topo.containers


def test_zero_containers_is_a_bare_fabric() -> None:
    assert build("picloud:2,2", containers_per_pi=0).containers == []


def test_default_container_addresses_follow_the_contract() -> None:
    topo = build("single:3", containers_per_pi=1)
    assert [topo.node(c).ip for c in topo.containers] == ["10.0.0.1/8", "10.0.0.2/8", "10.0.0.3/8"]
    assert topo.node("pi3-c1").mac == "02:00:00:00:00:03"


def test_every_family_has_a_usage_line() -> None:
    assert [f.usage for f in FAMILIES.values()] == [
        "single[:PIS]", "linear:N", "tree:DEPTH,FANOUT", "fattree:K", "leafspine:SPINES,LEAVES,PIS",
        "picloud:RACKS,PIS",
    ]
    assert parse_spec("single")[1] == (2,)
    assert parse_spec(" FatTree:4 ")[1] == (4,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mesh:3", "topology spec 'mesh:3': unknown family 'mesh' (one of single[:PIS], linear:N"),
        ("fattree:3", "topology spec 'fattree:3': K=3 is odd (fattree:K needs an even K >= 2)"),
        ("fattree:0", "topology spec 'fattree:0': K=0 must be at least 1 (fattree:K)"),
        ("linear:x", "topology spec 'linear:x': N='x' is not a whole number (linear:N)"),
        ("linear:2.5", "N='2.5' is not a whole number"),
        ("picloud:-1,2", "RACKS='-1' is not a whole number (picloud:RACKS,PIS)"),
        ("tree:2", "topology spec 'tree:2': expected 2 number(s), got 1 (tree:DEPTH,FANOUT)"),
        ("linear", "expected 1 number(s), got 0 (linear:N)"),
        ("single:1,2", "expected at most 1 number(s), got 2 (single[:PIS])"),
        ("leafspine:1,0,1", "LEAVES=0 must be at least 1"),
        ("fattree:64", "5120 switches, 65536 Pis and 65536 containers (at most 100000 nodes)"),
        ("tree:40,2", "2^40 Pis (at most 100000 nodes)"),
        ("linear:9999999", "N=9999999 is too large (at most 100000)"),
    ],
)
def test_spec_errors_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        build(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_containers_per_pi_must_be_a_whole_number(bad: object) -> None:
    with pytest.raises(TopologyError, match=r"containers per Pi .* must be a whole number >= 0"):
        build("single", containers_per_pi=bad)  # type: ignore[arg-type]


def test_size_limit_counts_containers() -> None:
    with pytest.raises(TopologyError, match="at most 100000 nodes"):
        build("picloud:4,14", containers_per_pi=MAX_NODES)
