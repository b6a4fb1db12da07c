"""Link utilisation from port counters: pure arithmetic on two samples of OpenFlow port stats.

Why the UI computes this itself rather than only showing the controller's `util`: the projector
must show traffic within a second or two of it starting, with our controller, an external one or
none at all. Port counters exist in every case (the Testbed reads them from the switch), so two
samples a second apart are enough. When the controller does report a link as down, that wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from topology.model import Topology
from webui.layout import link_id

COUNTER_KEYS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_dropped", "tx_dropped",
                "rx_errors", "tx_errors")
DEFAULT_CAPACITY_BPS = 1e9  # a link without a `bw` attribute: the Pi's gigabit port

Counters = dict[int, dict[str, int]]  # port_no -> counter name -> value


def counters_by_port(stats: Iterable[Mapping[str, Any]]) -> Counters:
    """Ryu ofctl_rest port stats (a list of dicts with `port_no`) to {port: counters}.

    The LOCAL port ("LOCAL" or 0xfffffffe) is skipped: it is the bridge's own interface, never a link.
    """
    out: Counters = {}
    for entry in stats:
        port = entry.get("port_no")
        if isinstance(port, str):
            if not port.isdigit():
                continue
            port = int(port)
        if not isinstance(port, int) or port >= 0xFFFFFF00:
            continue
        out[port] = {k: int(entry.get(k) or 0) for k in COUNTER_KEYS}
    return out


def _rate(now: Counters, prev: Counters, port: int, key: str, dt: float) -> float:
    if port not in now or port not in prev or dt <= 0:
        return 0.0
    delta = now[port][key] - prev[port][key]
    return max(delta, 0) / dt  # a counter that went backwards was reset (port re-created)


def link_rates(
    topo: Topology,
    now: Mapping[str, Counters],
    prev: Mapping[str, Counters],
    dt: float | Mapping[str, float],
    down: Iterable[str] = (),
    pi_ports: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One record per topology link: bits per second in the busier direction, utilisation 0..1,
    up/down, and the current counters of each bridge end (for the hover card).

    Each direction of a link is measured where the frames are sent: a bridge's tx on its port
    toward the peer. A container is not a bridge, so its link is measured on the Pi's port
    (tx toward the container, rx from it). `dt` is the time between the two samples, one for all
    bridges or one per bridge (each bridge is read on its own clock). `down` holds link ids known
    to be down; `pi_ports` the real Pi port of each run-time container (the model's numbering
    does not apply to them).
    """
    down = set(down)
    pi_ports = pi_ports or {}
    out = []
    for ln in topo.links:
        ends = []
        directions = []
        sent = None  # container links: what the container sent (rx on the Pi's port), the offered load
        for node, port, peer in ((ln.a, ln.port_a, ln.b), (ln.b, ln.port_b, ln.a)):
            if topo.kind(node) == "container":
                continue
            port = pi_ports.get(peer, port)
            ends.append({"node": node, "port": port, **now.get(node, {}).get(port, {})})
            node_now, node_prev = now.get(node, {}), prev.get(node, {})
            node_dt = dt.get(node, 0.0) if isinstance(dt, Mapping) else dt
            directions.append(_rate(node_now, node_prev, port, "tx_bytes", node_dt))
            if "container" in (topo.kind(ln.a), topo.kind(ln.b)):
                sent = _rate(node_now, node_prev, port, "rx_bytes", node_dt)
                directions.append(sent)
        lid = link_id(ln.a, ln.b)
        bps = 8 * max(directions, default=0.0)
        capacity = (ln.bw * 1e6) if ln.bw else DEFAULT_CAPACITY_BPS
        is_up = lid not in down
        out.append({
            "id": lid,
            "up": is_up,
            "bps": round(bps, 1) if is_up else 0.0,
            "util": round(min(bps / capacity, 1.0), 4) if is_up else 0.0,
            "capacity_bps": capacity,
            "ends": ends,
        })
        if sent is not None:
            out[-1]["sent_bps"] = round(8 * sent, 1) if is_up else 0.0
    return out


def down_links_from_state(topo: Topology, state: Mapping[str, Any] | None) -> set[str]:
    """Link ids the controller's `/state` reports as down (`up: false`), in topology orientation."""
    if not state:
        return set()
    down = set()
    for entry in state.get("links") or []:
        a, b = entry.get("a"), entry.get("b")
        if entry.get("up", True) or a not in topo or b not in topo:
            continue
        if topo.graph.has_edge(a, b):
            ln = topo.link(a, b)
            down.add(link_id(ln.a, ln.b))
    return down
