"""Diameter and bisection: every exact formula checked against exhaustive search on small cases."""

from __future__ import annotations

import pytest

from topology.builders import bisection_links, build, two_tier_bisection
from topology.metrics import (
    bisection,
    counts_by_role,
    cut_size,
    fabric_graph,
    kl_bisection,
    pi_diameter,
    summary,
    tree_bisection,
)
from topology.model import Topology


def brute_force_bisection(topo: Topology) -> int:
    """The definition itself: the fewest fabric links cut over every split of the bridges whose
    Pis divide floor/ceil. Exponential; fine up to ~16 bridges."""
    graph = fabric_graph(topo)
    nodes = list(graph.nodes)
    pis = set(topo.pis)
    halves = {len(pis) // 2, len(pis) - len(pis) // 2}
    best = None
    for mask in range(1 << (len(nodes) - 1)):  # the last node stays on side B: halves the work
        side = {nodes[i] for i in range(len(nodes) - 1) if mask >> i & 1}
        if len(side & pis) in halves:
            cut = cut_size(graph, side)
            best = cut if best is None else min(best, cut)
    return best or 0


SMALL = [
    "single:1", "single:4", "single:5", "linear:1", "linear:2", "linear:5", "tree:2,2", "tree:1,3",
    "tree:2,3", "fattree:2", "leafspine:2,2,2", "leafspine:3,3,1", "leafspine:1,3,3", "leafspine:2,3,2",
    "leafspine:4,2,1", "picloud:2,2", "picloud:3,1", "picloud:3,3", "picloud:1,5",
]


@pytest.mark.parametrize("spec", SMALL)
def test_exact_formulas_match_exhaustive_search(spec: str) -> None:
    topo = build(spec, containers_per_pi=0)
    truth = brute_force_bisection(topo)
    known = bisection_links(spec)
    result = bisection(topo, spec)
    assert result.exact
    assert result.links == truth
    if known is not None:
        assert known[0] == truth
    if spec.startswith(("linear", "tree", "single", "fattree:2")):
        assert tree_bisection(topo) == truth


@pytest.mark.parametrize("spec", SMALL)
def test_kernighan_lin_is_an_upper_bound(spec: str) -> None:
    topo = build(spec, containers_per_pi=0)
    assert kl_bisection(topo) >= brute_force_bisection(topo)


def test_known_widths_of_the_big_ones() -> None:
    assert bisection_links("fattree:4")[0] == 8  # K^3/8: 16 Pis, full bisection bandwidth
    assert bisection_links("fattree:8")[0] == 64
    assert bisection_links("picloud:4,14")[0] == 4  # two racks cut from both aggregation switches
    assert bisection_links("leafspine:4,8,16")[0] == 16  # four leaves cut from four spines
    assert two_tier_bisection(tops=2, racks=4, per_rack=1) == 2  # cheaper to cut Pi links than ToRs
    assert bisection_links("tree:2,3") is None  # odd fanout: the tree DP answers instead
    assert bisection(build("tree:2,3", 0)).method.startswith("exact: dynamic programme")


def test_non_tree_without_formula_falls_back_to_the_bound() -> None:
    topo = build("fattree:4", 0)
    result = bisection(topo)  # no spec: as for a file
    assert not result.exact and result.method.startswith("upper bound")
    assert result.links >= 8


def test_pi_diameter() -> None:
    assert pi_diameter(build("fattree:4")) == 6  # pi-edge-agg-core-agg-edge-pi
    assert pi_diameter(build("picloud:4,14")) == 4
    assert pi_diameter(build("linear:5")) == 6
    assert pi_diameter(build("single:3")) == 2
    assert pi_diameter(build("single:1")) == 0
    assert pi_diameter(build("tree:3,2")) == 6  # up three switch levels and down again


def test_pi_diameter_of_unreachable_pis_is_none() -> None:
    topo = Topology()
    topo.add_pi("a")
    topo.add_pi("b")
    assert pi_diameter(topo) is None


def test_summary_counts_by_kind_and_role() -> None:
    data = summary(build("fattree:4", 2), "fattree:4")
    assert data["switch_roles"] == {"core": 4, "aggregation": 8, "edge": 8}
    assert (data["switches"], data["pis"], data["containers"]) == (20, 16, 32)
    assert (data["fabric_links"], data["container_links"]) == (48, 32)
    assert data["containers_per_pi"] == {"2": 16}
    assert data["racks"] == 8
    assert data["diameter"] == 6
    assert data["bisection"] == {"links": 8, "exact": True, "method": "exact: K^3/8, full bisection bandwidth"}
    assert counts_by_role(build("linear:3")) == {"edge": 3}
