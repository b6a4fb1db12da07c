"""Structural numbers of a topology: counts, diameter between Pis, bisection width.

Pure functions over the fabric graph (switches and Pis joined by fabric links); containers hang
off their Pi and change neither the diameter between Pis nor any cut between them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import networkx as nx
from networkx.algorithms.community import kernighan_lin_bisection

from topology.model import SWITCH_ROLES, Topology

KL_SEED = 0  # Kernighan-Lin starts from a random partition: a fixed seed keeps output stable


@dataclass(frozen=True)
class Bisection:
    """Links to cut to split the Pis into two halves (floor and ceil of Pis/2)."""

    links: int
    exact: bool
    method: str


def fabric_graph(topo: Topology) -> nx.Graph:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(topo.bridges)
    graph.add_edges_from((ln.a, ln.b) for ln in topo.fabric_links())
    return graph


def counts_by_role(topo: Topology) -> dict[str, int]:
    """Switch counts per role, in the model's role order, zero counts left out."""
    roles = Counter(topo.node(s).role for s in topo.switches)
    return {role: roles[role] for role in SWITCH_ROLES if roles[role]}


def pi_diameter(topo: Topology) -> int | None:
    """Longest shortest path, in links, between two Pis; None when Pis cannot reach each other.

    One breadth-first search per group of Pis with the same neighbours (a rack behind one ToR is
    one group), so the big fat-trees stay fast: members of a group are 2 links apart.
    """
    graph = fabric_graph(topo)
    pis = topo.pis
    if len(pis) < 2:
        return 0
    groups: dict[frozenset[str], list[str]] = {}
    for pi in pis:
        groups.setdefault(frozenset(graph.neighbors(pi)), []).append(pi)
    pi_set = set(pis)
    longest = 0
    for neighbours, members in groups.items():
        if len(members) > 1:
            longest = max(longest, 2 if neighbours else 0)
            if not neighbours:
                return None
        distances = nx.single_source_shortest_path_length(graph, members[0])
        reached = pi_set.intersection(distances)
        if len(reached) < len(pi_set):
            return None
        longest = max(longest, *(distances[p] for p in reached if p not in members), 0)
    return longest


def cut_size(graph: nx.Graph, side: set[str]) -> int:
    return sum(1 for a, b in graph.edges if (a in side) != (b in side))


def _gain(graph: nx.Graph, side: set[str], node: str) -> int:
    """How many cut links disappear if `node` changes side (negative: the cut grows)."""
    across = sum(1 for n in graph.neighbors(node) if (n in side) != (node in side))
    return 2 * across - graph.degree(node)


def _flip(side: set[str], node: str) -> None:
    if node in side:
        side.discard(node)
    else:
        side.add(node)


def _refine(graph: nx.Graph, side: set[str], pis: list[str]) -> None:
    """Greedy descent that keeps the Pi split: move a switch alone, or swap two Pis across."""
    pi_set = set(pis)
    improved = True
    while improved:
        improved = False
        for node in graph.nodes:
            if node not in pi_set and _gain(graph, side, node) > 0:
                _flip(side, node)
                improved = True
        on_a = [p for p in pis if p in side]
        on_b = [p for p in pis if p not in side]
        if on_a and on_b:
            best_a = max(on_a, key=lambda p: _gain(graph, side, p))
            best_b = max(on_b, key=lambda p: _gain(graph, side, p))
            before = cut_size(graph, side)
            _flip(side, best_a)
            _flip(side, best_b)
            if cut_size(graph, side) < before:
                improved = True
            else:
                _flip(side, best_a)
                _flip(side, best_b)


def kl_bisection(topo: Topology, seeds: int = 3) -> int:
    """An upper bound on the bisection width: a real balanced cut, found heuristically.

    networkx's Kernighan-Lin splits *all* nodes into halves; we then move Pis (cheapest first)
    from the side with too many to the other until the Pis split floor/ceil, and descend greedily
    (switch moves, Pi swaps) while the cut shrinks. The cut of that partition is a width some
    balanced partition achieves, so the true minimum is at most this number; the best of a few
    fixed seeds is reported, so the output is stable.
    """
    graph = fabric_graph(topo)
    pis = topo.pis
    if len(pis) < 2:
        return 0
    target = len(pis) // 2
    best = None
    for seed in range(KL_SEED, KL_SEED + seeds):
        side = set(kernighan_lin_bisection(graph, seed=seed)[0])
        on_a = sum(1 for p in pis if p in side)
        while on_a not in (target, len(pis) - target):
            moving_out = on_a > target
            candidates = [p for p in pis if (p in side) == moving_out]
            chosen = max(candidates, key=lambda p: _gain(graph, side, p))
            _flip(side, chosen)
            on_a += -1 if moving_out else 1
        _refine(graph, side, pis)
        cut = cut_size(graph, side)
        best = cut if best is None else min(best, cut)
    return int(best or 0)


TREE_DP_MAX_PIS = 2000  # the knapsack merge is quadratic in Pis; beyond this KL answers


def tree_bisection(topo: Topology) -> int | None:
    """Exact bisection width when the fabric is a tree, else None.

    Dynamic programme over the tree rooted anywhere: for each node and side, the fewest cut links
    inside its subtree for every count of its Pis on side A; children merge like a knapsack
    (O(Pis^2) in all), a child on the other side costing its one link.
    """
    graph = fabric_graph(topo)
    pis = set(topo.pis)
    if len(pis) < 2:
        return 0
    if len(pis) > TREE_DP_MAX_PIS or not nx.is_tree(graph):
        return None
    inf = float("inf")
    root = topo.bridges[0]
    table: dict[str, tuple[list[float], list[float]]] = {}
    for node in nx.dfs_postorder_nodes(graph, root):
        is_pi = node in pis
        on_b: list[float] = [0.0, inf] if is_pi else [0.0]  # index: Pis of the subtree on A
        on_a: list[float] = [inf, 0.0] if is_pi else [0.0]
        for child in graph.neighbors(node):
            if child not in table or child == node:
                continue
            child_b, child_a = table.pop(child)
            merged = []
            for mine, same, other in ((on_b, child_b, child_a), (on_a, child_a, child_b)):
                out = [inf] * (len(mine) + len(same) - 1)
                for i, cost in enumerate(mine):
                    if cost == inf:
                        continue
                    for j in range(len(same)):
                        best = min(same[j], other[j] + 1)
                        if cost + best < out[i + j]:
                            out[i + j] = cost + best
                merged.append(out)
            on_b, on_a = merged
        table[node] = (on_b, on_a)
    on_b, on_a = table[root]
    half = len(pis) // 2
    return int(min(on_b[half], on_a[half], on_b[len(pis) - half], on_a[len(pis) - half]))


def bisection(topo: Topology, spec: str | None = None) -> Bisection:
    """Exact width from the builder's formula or, for tree fabrics, a dynamic programme;
    otherwise the Kernighan-Lin upper bound."""
    if spec is not None:
        from topology.builders import bisection_links

        known = bisection_links(spec)
        if known is not None:
            return Bisection(known[0], True, known[1])
    exact = tree_bisection(topo)
    if exact is not None:
        return Bisection(exact, True, "exact: dynamic programme over the tree-shaped fabric")
    return Bisection(kl_bisection(topo), False, "upper bound: Kernighan-Lin partition, Pis rebalanced")


def summary(topo: Topology, spec: str | None = None) -> dict[str, Any]:
    """Everything `picloud topo show` prints, as JSON-ready data."""
    attachments = len(topo.links) - len(topo.fabric_links())
    on_pi = Counter(topo.node(c).pi for c in topo.containers)
    per_pi = Counter(on_pi[p] for p in topo.pis)
    cut = bisection(topo, spec)
    return {
        "name": topo.name,
        "switches": len(topo.switches),
        "switch_roles": counts_by_role(topo),
        "pis": len(topo.pis),
        "racks": len({topo.node(p).rack for p in topo.pis if topo.node(p).rack is not None}),
        "containers": len(topo.containers),
        "containers_per_pi": {str(k): v for k, v in sorted(per_pi.items())},
        "fabric_links": len(topo.fabric_links()),
        "container_links": attachments,
        "diameter": pi_diameter(topo),
        "bisection": {"links": cut.links, "exact": cut.exact, "method": cut.method},
    }
