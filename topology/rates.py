"""Link rates of the scale model: a Pi model's NIC on every Pi uplink, `--bw` on fabric links.

A Pi's uplinks are its links to switches (its containers' links are inside the Pi, unshaped): the
rate there is the Pi's Ethernet port, so a model's published NIC rate is what they carry
(`topology.inventory.PI_MODELS`, sources there). Fabric links are the links between switches;
`--bw MBIT` sets them all, since a data-centre fabric is usually one link speed. Both are set on a
built or loaded topology before anything exists, so the tc plan, the traffic engine's link rate and
the UI all read the same `Link.bw`.
"""

from __future__ import annotations

from picloud.errors import ClusterError, TopologyError
from topology.inventory import PiModel
from topology.inventory import pi_model as lookup
from topology.model import Topology

DEFAULT_PI_MODEL = {"picloud": "b"}  # builder family -> the Pi it models by default


def model(key: str) -> PiModel:
    try:
        return lookup(key)
    except ClusterError as exc:
        raise TopologyError(f"--pi-model: {exc}") from None


def pi_uplinks(topo: Topology) -> list[tuple[str, str]]:
    return [(ln.a, ln.b) for ln in topo.links
            if {topo.kind(ln.a), topo.kind(ln.b)} == {"pi", "switch"}]


def fabric_links(topo: Topology) -> list[tuple[str, str]]:
    return [(ln.a, ln.b) for ln in topo.links if topo.kind(ln.a) == topo.kind(ln.b) == "switch"]


def apply(topo: Topology, pi_model: str | None = None, bw: float | None = None) -> Topology:
    """Set every Pi uplink to the model's NIC rate and every fabric link to `bw` Mbit/s (in place;
    returns the topology). Either may be None: those links keep what they had."""
    if pi_model is not None:
        rate = model(pi_model).nic_mbit
        for a, b in pi_uplinks(topo):
            topo.set_bw(a, b, rate)
    if bw is not None:
        if isinstance(bw, bool) or not isinstance(bw, int | float) or not bw > 0:
            raise TopologyError(f"--bw: {bw!r} must be a positive number of Mbit/s")
        for a, b in fabric_links(topo):
            topo.set_bw(a, b, float(bw))
    return topo
