"""The server-side layout: a data centre drawn top-down by role, racks of Pis at the bottom."""

from __future__ import annotations

from topology.builders import build
from topology.model import Topology
from webui.layout import compute_layout, link_id


def _by_id(drawn):
    return {n["id"]: n for n in drawn["nodes"]}


def test_layers_are_ordered_core_above_aggregation_above_edge_above_pis():
    topo = build("fattree:4")
    drawn = compute_layout(topo)
    nodes = _by_id(drawn)
    y = {role: {n["y"] for n in drawn["nodes"] if n["role"] == role} for role in ("core", "aggregation", "edge", "pi")}
    assert all(len(v) == 1 for v in y.values()), "each role is one horizontal layer"
    assert y["core"].pop() < y["aggregation"].pop() < y["edge"].pop() < y["pi"].pop()
    for c in topo.containers:
        assert nodes[c]["y"] > nodes[topo.node(c).pi]["y"], "containers hang below their Pi"


def test_every_node_and_link_is_drawn_once_with_counts():
    topo = build("fattree:4", containers_per_pi=2)
    drawn = compute_layout(topo)
    assert len(drawn["nodes"]) == len(topo.switches) + len(topo.pis) + len(topo.containers)
    assert [ln["id"] for ln in drawn["links"]] == [link_id(ln.a, ln.b) for ln in topo.links]
    assert drawn["counts"] == {"switches": 20, "pis": 16, "containers": 32, "links": 48}
    kinds = {ln["kind"] for ln in drawn["links"]}
    assert kinds == {"fabric", "attach"}
    assert sum(ln["kind"] == "attach" for ln in drawn["links"]) == 32


def test_tor_sits_above_its_rack_and_racks_do_not_overlap():
    topo = build("picloud:3,4")
    drawn = compute_layout(topo)
    nodes = _by_id(drawn)
    racks = drawn["racks"]
    assert len(racks) == 3
    for left, right in zip(racks, racks[1:], strict=False):
        assert left["x"] + left["w"] < right["x"], "racks are separated"
    for rack in racks:
        pis_x = [nodes[p]["x"] for p in rack["pis"]]
        tors = {s for p in rack["pis"] for s in topo.graph.neighbors(p) if topo.kind(s) == "switch"}
        assert len(tors) == 1
        tor = nodes[tors.pop()]
        assert min(pis_x) <= tor["x"] <= max(pis_x), "a ToR is drawn over its own rack"
        assert rack["x"] <= min(pis_x) and max(pis_x) <= rack["x"] + rack["w"]


def test_pis_without_rack_numbers_group_by_their_switch():
    topo = Topology("two-racks")
    topo.add_switch("s1", role="tor")
    topo.add_switch("s2", role="tor")
    for i, sw in enumerate(["s1", "s2", "s1", "s2"]):
        topo.add_pi(f"p{i}")
        topo.add_link(f"p{i}", sw)
    drawn = compute_layout(topo)
    assert [r["pis"] for r in drawn["racks"]] == [["p0", "p2"], ["p1", "p3"]]


def test_layout_is_deterministic_and_inside_the_canvas():
    topo = build("leafspine:2,4,2", containers_per_pi=3)
    a, b = compute_layout(topo), compute_layout(topo)
    assert a == b
    for n in a["nodes"]:
        assert n["x"] - n["w"] / 2 >= 0 and n["x"] + n["w"] / 2 <= a["width"]
        assert n["y"] - n["h"] / 2 >= 0 and n["y"] + n["h"] / 2 <= a["height"]


def test_containers_carry_their_tenant():
    topo = build("single:2", containers_per_pi=2)
    c = topo.containers
    drawn = compute_layout(topo, {c[0]: "red", c[3]: "blue"})
    tenants = {n["id"]: n.get("tenant") for n in drawn["nodes"] if n["kind"] == "container"}
    assert tenants == {c[0]: "red", c[1]: None, c[2]: None, c[3]: "blue"}
