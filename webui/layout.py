"""Server-side layout of a topology as a data centre: layers by role, racks of Pis at the bottom.

Pure: a Topology (plus tenant membership) in, coordinates out. Computing the layout on the server
keeps the browser's work to drawing, makes the picture identical for every viewer and lets unit
tests check geometry (a ToR sits above its rack) without a browser.

The method is the classic layered drawing of Sugiyama et al. (1981), simplified for data-centre
graphs, which are already layered by role: Pis are grouped into racks and placed left to right,
then each switch layer, bottom-up, is ordered by the barycentre of its already-placed neighbours
(which keeps crossings low for trees, fat-trees and leaf-spine) and spread evenly over the width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from topology.model import Topology, dpid_str

# Top to bottom. Roles absent from a topology take no space.
ROLE_LAYERS = ("core", "spine", "aggregation", "leaf", "tor", "edge")

MARGIN = 40.0
LAYER_GAP = 150.0
SWITCH_W, SWITCH_H = 96.0, 40.0
PI_W, PI_H = 64.0, 34.0
SLOT_W = 84.0  # horizontal space per Pi
RACK_GAP = 36.0  # extra space between racks
CONTAINER = 18.0  # container square side
CONTAINER_GAP = 4.0
CONTAINERS_PER_ROW = 3
RACK_PAD = 10.0
RACK_LABEL_H = 26.0
ASPECT = 0.4  # switch layers take up to this share of the width in height: near a projector's 16:9


def link_id(a: str, b: str) -> str:
    """Node names are [a-z0-9-], so ':' cannot appear in them and splits an id unambiguously."""
    return f"{a}:{b}"


def _rack_key(topo: Topology, pi: str) -> tuple[int, Any]:
    """A Pi's rack: its declared rack number, else the switch it hangs off (its ToR)."""
    rack = topo.node(pi).rack
    if rack is not None:
        return (0, rack)
    switches = [n for n in topo.graph.neighbors(pi) if topo.kind(n) == "switch"]
    return (1, min(switches) if switches else pi)


def compute_layout(topo: Topology, members: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Positions for every node and link of `topo`.

    `members` maps container name to tenant name, so containers are drawn in tenant colours.
    Coordinates are SVG user units (x right, y down); node (x, y) is the centre.
    """
    members = members or {}
    pis = topo.pis
    racks: dict[tuple[int, Any], list[str]] = {}
    for pi in pis:
        racks.setdefault(_rack_key(topo, pi), []).append(pi)
    # Numbered racks in number order, then ToR-derived ones in order of first appearance.
    rack_order = sorted(racks, key=lambda k: (k[0], k[1] if k[0] == 0 else pis.index(racks[k][0])))

    roles_present = [r for r in ROLE_LAYERS if any(topo.node(s).role == r for s in topo.switches)]
    x: dict[str, float] = {}
    spans = []
    cursor = MARGIN
    for key in rack_order:
        start = cursor
        for pi in racks[key]:
            x[pi] = cursor + SLOT_W / 2
            cursor += SLOT_W
        spans.append((key, start, cursor))
        cursor += RACK_GAP
    width = max(cursor - RACK_GAP + MARGIN, 2 * MARGIN + SWITCH_W)

    # Wide fabrics get taller layers, so the drawing keeps roughly a screen's proportions
    # instead of becoming a thin strip (fattree:8 is 128 Pis across).
    gap = max(LAYER_GAP, ASPECT * width / max(len(roles_present), 1))
    layer_y = {role: MARGIN + SWITCH_H / 2 + i * gap for i, role in enumerate(roles_present)}
    pi_y = MARGIN + SWITCH_H / 2 + len(roles_present) * gap
    max_rows = max((_rows(len(topo.containers_on(p))) for p in pis), default=0)
    containers_h = max_rows * (CONTAINER + CONTAINER_GAP)
    rack_boxes = [{
        "id": f"rack-{key[1]}",
        "label": f"rack {key[1]}",
        "x": start - RACK_PAD / 2,
        "y": pi_y - PI_H / 2 - RACK_LABEL_H - RACK_PAD,
        "w": end - start + RACK_PAD,
        "h": PI_H + containers_h + RACK_LABEL_H + 2 * RACK_PAD + CONTAINER_GAP,
        "pis": list(racks[key]),
    } for key, start, end in spans]

    # Switches whose role layer is known, bottom-up so each layer sees its placed neighbours.
    for role in reversed(roles_present):
        layer = [s for s in topo.switches if topo.node(s).role == role]
        order = {s: i for i, s in enumerate(layer)}

        def barycentre(s: str, order: dict[str, int] = order) -> tuple[float, int]:
            placed = [x[n] for n in topo.graph.neighbors(s) if n in x]
            return (sum(placed) / len(placed) if placed else width / 2, order[s])

        layer.sort(key=barycentre)
        span = width - 2 * MARGIN
        for i, s in enumerate(layer):
            x[s] = MARGIN + span * (i + 0.5) / len(layer)

    nodes: list[dict[str, Any]] = []
    for s in topo.switches:
        role = topo.node(s).role or "edge"
        nodes.append({
            "id": s, "kind": "switch", "role": role, "x": x[s], "y": layer_y[role],
            "w": SWITCH_W, "h": SWITCH_H, "dpid": dpid_str(topo.dpid(s)),
        })
    for pi in pis:
        nodes.append({
            "id": pi, "kind": "pi", "role": "pi", "x": x[pi], "y": pi_y, "w": PI_W, "h": PI_H,
            "dpid": dpid_str(topo.dpid(pi)), "rack": topo.node(pi).rack,
        })
        hosted = topo.containers_on(pi)
        row_w = min(len(hosted), CONTAINERS_PER_ROW) * (CONTAINER + CONTAINER_GAP) - CONTAINER_GAP
        for i, c in enumerate(hosted):
            row, col = divmod(i, CONTAINERS_PER_ROW)
            node = topo.node(c)
            nodes.append({
                "id": c, "kind": "container", "role": "container",
                "x": x[pi] - row_w / 2 + col * (CONTAINER + CONTAINER_GAP) + CONTAINER / 2,
                "y": pi_y + PI_H / 2 + CONTAINER_GAP + row * (CONTAINER + CONTAINER_GAP) + CONTAINER / 2
                + CONTAINER_GAP,
                "w": CONTAINER, "h": CONTAINER, "pi": pi, "ip": node.ip, "mac": node.mac,
                "tenant": members.get(c),
            })
            x[c] = nodes[-1]["x"]

    pos = {n["id"]: n for n in nodes}
    links = []
    for ln in topo.links:
        kind = "attach" if "container" in (topo.kind(ln.a), topo.kind(ln.b)) else "fabric"
        a, b = pos[ln.a], pos[ln.b]
        # Fabric links run from the bottom edge of the upper node to the top edge of the lower one.
        upper, lower = (a, b) if a["y"] <= b["y"] else (b, a)
        links.append({
            "id": link_id(ln.a, ln.b), "a": ln.a, "b": ln.b, "kind": kind,
            "a_port": ln.port_a, "b_port": ln.port_b, "bw": ln.bw,
            "x1": upper["x"], "y1": upper["y"] + upper["h"] / 2,
            "x2": lower["x"], "y2": lower["y"] - lower["h"] / 2,
        })
    height = pi_y + PI_H / 2 + containers_h + RACK_PAD + MARGIN + CONTAINER_GAP
    return {
        "name": topo.name,
        "width": round(width, 1),
        "height": round(height, 1),
        "layers": [{"role": r, "y": layer_y[r]} for r in roles_present] + [{"role": "pi", "y": pi_y}],
        "racks": rack_boxes,
        "nodes": nodes,
        "links": links,
        "counts": topo.counts(),
    }


def _rows(n: int) -> int:
    return -(-n // CONTAINERS_PER_ROW) if n else 0
