"""Topology builders: one small, deterministic, cited function per data-centre family.

`build("fattree:4", containers_per_pi=2)` is what the CLI, files and the Testbed call. Each family
adds its switches, Pis and fabric links first and the containers last, so the port numbers a
builder assigns are the ones `Topology.from_dict(topo.to_dict())` reproduces.

Names are short and say where a node sits: `core1`, `agg2-1` (pod 2, aggregation 1), `edge2-1`,
`tor3`, `pi3-7` (rack 3, Pi 7), `pi3-7-c1` (its first container). Every family also knows its
exact bisection width (links to cut to split the Pis into two halves), used by `picloud topo show`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from picloud.errors import TopologyError
from topology.model import Topology

MAX_NODES = 100_000  # switches + Pis + containers; larger models do not fit one machine anyway
_NUMBER_RE = re.compile(r"\A[0-9]+\Z")


@dataclass(frozen=True)
class Family:
    """A builder family: its spec syntax, how to build it and its exact bisection width."""

    name: str
    params: tuple[str, ...]
    defaults: tuple[int, ...]  # values for trailing params that may be left out
    build: Callable[..., Topology]
    bisection: Callable[..., int | None]
    bisection_rule: str
    citation: str

    @property
    def usage(self) -> str:
        """`leafspine:SPINES,LEAVES,PIS`, `single[:PIS]`: the syntax shown in error messages."""
        required = len(self.params) - len(self.defaults)
        text = self.name + (":" + ",".join(self.params[:required]) if required else "")
        for param in self.params[required:]:
            text += f"[{',' if required else ':'}{param}]"
            required += 1
        return text


# --- helpers ----------------------------------------------------------------------------------------
def _add_containers(topo: Topology, per_pi: int) -> None:
    """Containers go last so every Pi's uplinks take its low port numbers (1, 2, ...)."""
    for pi in topo.pis:
        for j in range(1, per_pi + 1):
            topo.add_container(f"{pi}-c{j}", pi)


def _check_size(spec: str, switches: int, pis: int, per_pi: int) -> None:
    total = switches + pis + pis * per_pi
    if total > MAX_NODES:
        raise TopologyError(
            f"topology spec {spec!r}: {switches} switches, {pis} Pis and {pis * per_pi} containers "
            f"(at most {MAX_NODES} nodes)"
        )


def two_tier_bisection(tops: int, racks: int, per_rack: int) -> int:
    """Exact bisection width of `racks` rack switches, each linked to all `tops` top switches and
    to `per_rack` single-homed Pis (leaf-spine, the Glasgow Pi Cloud, a single switch).

    A partition is fixed by how many tops sit on side A (only the count matters: every rack sees
    every top) and, per rack, how many of its Pis are on side A (a), its own side chosen at best.
    A rack's cost min(tops_on_B + per_rack - a, tops_on_A + a) is concave in a, so the minimum
    of their sum under sum(a) = floor(Pis/2) lies at a vertex of that polytope: every rack has
    all or none of its Pis on A except at most one. That leaves one candidate per top count.
    """
    pis = racks * per_rack
    if pis < 2:
        return 0
    half = pis // 2
    full, rest = divmod(half, per_rack)
    best = None
    for tops_a in range(tops + 1):
        tops_b = tops - tops_a

        def rack_cost(a: int, tops_a: int = tops_a, tops_b: int = tops_b) -> int:
            return min(tops_b + per_rack - a, tops_a + a)

        cost = full * rack_cost(per_rack) + (rack_cost(rest) if rest else 0)
        cost += (racks - full - (1 if rest else 0)) * rack_cost(0)
        best = cost if best is None else min(best, cost)
    return int(best or 0)


# --- families ---------------------------------------------------------------------------------------
def single(spec: str, per_pi: int, pis: int) -> Topology:
    """One switch with PIS Pis: Mininet's SingleSwitchTopo with Pis in place of hosts."""
    _check_size(spec, 1, pis, per_pi)
    topo = Topology(name=spec)
    topo.add_switch("s1", role="tor")
    for i in range(1, pis + 1):
        topo.add_pi(f"pi{i}")
        topo.add_link("s1", f"pi{i}")
    _add_containers(topo, per_pi)
    return topo


def linear(spec: str, per_pi: int, n: int) -> Topology:
    """N switches in a chain, one Pi on each: Mininet's LinearTopo(k=N, n=1)."""
    _check_size(spec, n, n, per_pi)
    topo = Topology(name=spec)
    for i in range(1, n + 1):
        topo.add_switch(f"s{i}", role="edge")
        topo.add_pi(f"pi{i}")
    for i in range(1, n + 1):
        topo.add_link(f"s{i}", f"pi{i}")
        if i > 1:
            topo.add_link(f"s{i - 1}", f"s{i}")
    _add_containers(topo, per_pi)
    return topo


def tree(spec: str, per_pi: int, depth: int, fanout: int) -> Topology:
    """A complete tree of switches DEPTH levels deep, FANOUT children each, Pis at the leaves.

    As Mininet's TreeTopo (mininet/topolib.py): switches and Pis are numbered in depth-first
    pre-order (s1 is the root; s2 its first child), so names match a Mininet run of the same
    tree. Roles: the root is core, the last switch level edge, the levels between aggregation.
    """
    pis = 1
    for _ in range(depth):
        pis *= fanout
        if pis > MAX_NODES:
            raise TopologyError(
                f"topology spec {spec!r}: {fanout}^{depth} Pis (at most {MAX_NODES} nodes)"
            )
    switches = depth if fanout == 1 else (pis - 1) // (fanout - 1)
    _check_size(spec, switches, pis, per_pi)
    topo = Topology(name=spec)
    counters = {"s": 0, "pi": 0}

    def add(level: int) -> str:
        if level == depth:
            counters["pi"] += 1
            return topo.add_pi(f"pi{counters['pi']}")
        counters["s"] += 1
        role = "edge" if level == depth - 1 else ("core" if level == 0 else "aggregation")
        node = topo.add_switch(f"s{counters['s']}", role=role)
        for _ in range(fanout):
            topo.add_link(node, add(level + 1))
        return node

    add(0)
    _add_containers(topo, per_pi)
    return topo


def tree_bisection(depth: int, fanout: int) -> int | None:
    """Even FANOUT: cut FANOUT/2 of the root's links. No balanced cut is cheaper: the Pis on the
    side without the root hang below cut links, at most FANOUT**(DEPTH-1) Pis per cut. One level
    is a star: floor(FANOUT/2). Odd FANOUT deeper than one level has no closed form here."""
    if fanout == 1:
        return 0
    if fanout % 2 == 0 or depth == 1:
        return fanout // 2
    return None


def fattree(spec: str, per_pi: int, k: int) -> Topology:
    """The k-ary fat-tree of Al-Fares, Loukissas and Vahdat, "A Scalable, Commodity Data Center
    Network Architecture", SIGCOMM 2008, section 3.2: K pods of K/2 edge and K/2 aggregation
    switches, (K/2)^2 core switches, K/2 Pis per edge switch (K^3/4 in all). Aggregation switch
    i of every pod links to core switches i*K/2+1 .. (i+1)*K/2, so each core reaches every pod once.
    """
    if k % 2:
        raise TopologyError(f"topology spec {spec!r}: K={k} is odd (fattree:K needs an even K >= 2)")
    half = k // 2
    _check_size(spec, half * half + k * k, k * half * half, per_pi)
    topo = Topology(name=spec)
    for c in range(1, half * half + 1):
        topo.add_switch(f"core{c}", role="core")
    for p in range(1, k + 1):
        for i in range(1, half + 1):
            topo.add_switch(f"agg{p}-{i}", role="aggregation")
        for i in range(1, half + 1):
            topo.add_switch(f"edge{p}-{i}", role="edge")
        for e in range(1, half + 1):
            for h in range(1, half + 1):
                topo.add_pi(f"pi{p}-{e}-{h}", rack=(p - 1) * half + e)
    for p in range(1, k + 1):
        for i in range(1, half + 1):
            for j in range(1, half + 1):
                topo.add_link(f"core{(i - 1) * half + j}", f"agg{p}-{i}")
    for p in range(1, k + 1):
        for e in range(1, half + 1):
            for i in range(1, half + 1):
                topo.add_link(f"agg{p}-{i}", f"edge{p}-{e}")
            for h in range(1, half + 1):
                topo.add_link(f"edge{p}-{e}", f"pi{p}-{e}-{h}")
    _add_containers(topo, per_pi)
    return topo


def leafspine(spec: str, per_pi: int, spines: int, leaves: int, pis: int) -> Topology:
    """A two-tier leaf-spine (folded Clos) fabric: every leaf linked to every spine, PIS Pis per
    leaf (Alizadeh and Edsall, "On the Data Path Performance of Leaf-Spine Datacenter Fabrics",
    IEEE HOTI 2013). Each leaf is a rack: its Pis carry `rack` = the leaf number."""
    _check_size(spec, spines + leaves, leaves * pis, per_pi)
    topo = Topology(name=spec)
    for s in range(1, spines + 1):
        topo.add_switch(f"spine{s}", role="spine")
    for leaf in range(1, leaves + 1):
        topo.add_switch(f"leaf{leaf}", role="leaf")
        for i in range(1, pis + 1):
            topo.add_pi(f"pi{leaf}-{i}", rack=leaf)
    for leaf in range(1, leaves + 1):
        for s in range(1, spines + 1):
            topo.add_link(f"spine{s}", f"leaf{leaf}")
        for i in range(1, pis + 1):
            topo.add_link(f"leaf{leaf}", f"pi{leaf}-{i}")
    _add_containers(topo, per_pi)
    return topo


def picloud(spec: str, per_pi: int, racks: int, pis: int) -> Topology:
    """The Glasgow Raspberry Pi Cloud (Tso, White, Jouet, Singer and Pezaros, "The Glasgow
    Raspberry Pi Cloud: A Scale Model for Cloud Computing Infrastructures", ICDCS Workshops 2013):
    RACKS racks of PIS Pis, one top-of-rack switch each, every ToR linked to both aggregation
    switches. `picloud:4,14` is the real 56-Pi machine."""
    _check_size(spec, racks + 2, racks * pis, per_pi)
    topo = Topology(name=spec)
    for a in (1, 2):
        topo.add_switch(f"agg{a}", role="aggregation")
    for r in range(1, racks + 1):
        topo.add_switch(f"tor{r}", role="tor")
        for i in range(1, pis + 1):
            topo.add_pi(f"pi{r}-{i}", rack=r)
    for r in range(1, racks + 1):
        for a in (1, 2):
            topo.add_link(f"agg{a}", f"tor{r}")
        for i in range(1, pis + 1):
            topo.add_link(f"tor{r}", f"pi{r}-{i}")
    _add_containers(topo, per_pi)
    return topo


_TWO_TIER = "exact: best split of the top switches, every rack whole but one"
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("single", ("PIS",), (2,), single, lambda pis: pis // 2,
               "exact: floor(PIS/2) Pi links", "Mininet SingleSwitchTopo"),
        Family("linear", ("N",), (), linear, lambda n: 1 if n > 1 else 0,
               "exact: 1 switch link in the middle of the chain", "Mininet LinearTopo"),
        Family("tree", ("DEPTH", "FANOUT"), (), tree, tree_bisection,
               "exact: floor(FANOUT/2) links below the root", "Mininet TreeTopo"),
        Family("fattree", ("K",), (), fattree, lambda k: k**3 // 8,
               "exact: K^3/8, full bisection bandwidth", "Al-Fares et al., SIGCOMM 2008"),
        Family("leafspine", ("SPINES", "LEAVES", "PIS"), (), leafspine,
               lambda s, leaves, p: two_tier_bisection(s, leaves, p), _TWO_TIER,
               "Alizadeh and Edsall, HOTI 2013"),
        Family("picloud", ("RACKS", "PIS"), (), picloud,
               lambda r, p: two_tier_bisection(2, r, p), _TWO_TIER,
               "Tso et al., ICDCS Workshops 2013"),
    )
}


def parse_spec(spec: str) -> tuple[Family, tuple[int, ...]]:
    """`fattree:4` -> (the fattree family, (4,)); every number a positive integer."""
    if not isinstance(spec, str):
        raise TopologyError(f"topology spec {spec!r}: not a string (specs look like fattree:4)")
    family_name, _, arg_text = spec.strip().partition(":")
    family = FAMILIES.get(family_name.lower())
    if family is None:
        known = ", ".join(f.usage for f in FAMILIES.values())
        raise TopologyError(f"topology spec {spec!r}: unknown family {family_name!r} (one of {known})")
    texts = [t.strip() for t in arg_text.split(",")] if arg_text.strip() else []
    required = len(family.params) - len(family.defaults)
    if not required <= len(texts) <= len(family.params):
        count = str(len(family.params)) if not family.defaults else f"at most {len(family.params)}"
        raise TopologyError(
            f"topology spec {spec!r}: expected {count} number(s), got {len(texts)} ({family.usage})"
        )
    values = []
    for param, text in zip(family.params, texts, strict=False):
        if not _NUMBER_RE.match(text):
            raise TopologyError(
                f"topology spec {spec!r}: {param}={text!r} is not a whole number ({family.usage})"
            )
        value = int(text)
        if value < 1:
            raise TopologyError(
                f"topology spec {spec!r}: {param}={value} must be at least 1 ({family.usage})"
            )
        if value > MAX_NODES:
            raise TopologyError(f"topology spec {spec!r}: {param}={value} is too large (at most {MAX_NODES})")
        values.append(value)
    values.extend(family.defaults[len(values) - required:])
    return family, tuple(values)


def check_containers_per_pi(value: object, where: str) -> int:
    """Zero is allowed: a bare fabric whose containers come later (tenant members)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TopologyError(f"{where}: containers per Pi {value!r} must be a whole number >= 0")
    return value


def build(spec: str, containers_per_pi: int = 1, pi_model: str | None = None,
          bw: float | None = None) -> Topology:
    """Build the topology a spec names; the topology's name is the spec as given (trimmed).

    `pi_model` shapes every Pi uplink to that model's NIC rate (`picloud:` defaults to Model B, the
    Glasgow Pi Cloud's board: 100 Mbit/s); `bw` sets every switch-to-switch link (Mbit/s)."""
    from topology import rates

    family, values = parse_spec(spec)
    per_pi = check_containers_per_pi(containers_per_pi, f"topology spec {spec!r}")
    if pi_model is not None:
        rates.model(pi_model)  # refuse an unknown model before building
    topo = family.build(spec.strip(), per_pi, *values)
    return rates.apply(topo, pi_model or rates.DEFAULT_PI_MODEL.get(family.name), bw)


def bisection_links(spec: str) -> tuple[int, str] | None:
    """(exact bisection width in links, how it is known) for a builder spec, or None when the
    family has no closed form for these parameters. Containers do not change it."""
    family, values = parse_spec(spec)
    width = family.bisection(*values)
    if width is None:
        return None
    return width, family.bisection_rule
