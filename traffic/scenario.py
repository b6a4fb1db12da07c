"""Scenario timelines: what happens to the fabric during an experiment, and when (pure).

A scenario is a list of timed entries, read from YAML (`scenario:` key) or given as dicts:

    scenario:
      - {at: 5, action: link-down, link: [agg1, tor1]}
      - {at: 8, action: link-up, link: [agg1, tor1]}
      - {at: 2, action: link-flap, link: [agg2, tor1], period: 1, duty: 0.5, until: 6}
      - {at: 3, action: shape, link: [agg1, tor2], bw: 10}
      - {at: 9, action: node-down, node: pi3}
      - {at: 12, action: node-up, node: pi3}
      - {at: 4, action: controller-kill}
      - {at: 6, action: controller-restart}
      - {at: 7, action: tenant-add, tenant: red, count: 1}
      - {at: 9, action: tenant-remove, tenant: red, member: red-9}
      - {action: random-failures, links: aggregation-tor, mtbf: 20, mttr: 2, from: 0, until: 60}

`expand(entries, topology, seed, horizon)` validates every entry against the topology and returns
the concrete `Step`s, sorted by time: flapping and random failures become plain link-down/link-up
steps here, so the scheduler has one kind of thing to apply and the same seed always gives the
same event log (random draws come from `random.Random` seeded by the scenario seed and the link's
name, which is stable across Python processes, unlike `hash()`).

Why "duty" is the fraction of each period the link is *down*: a flapping link is described by how
much of the time it is broken, which is the quantity its cost scales with.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picloud.errors import TrafficError

if TYPE_CHECKING:
    from topology.model import Topology

ACTIONS = ("link-down", "link-up", "link-flap", "shape", "node-down", "node-up", "controller-kill",
           "controller-restart", "tenant-add", "tenant-remove", "random-failures")
# Keys each action accepts besides `at` and `action`; the first group is required.
_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "link-down": (("link",), ()),
    "link-up": (("link",), ()),
    "link-flap": (("link", "period", "until"), ("duty",)),
    "shape": (("link",), ("bw", "delay", "loss")),
    "node-down": (("node",), ()),
    "node-up": (("node",), ()),
    "controller-kill": ((), ()),
    "controller-restart": ((), ()),
    "tenant-add": (("tenant",), ("count", "placement")),
    "tenant-remove": (("tenant", "member"), ()),
    "random-failures": (("links", "mtbf", "mttr"), ("from", "until", "seed")),
}
MAX_STEPS = 100_000  # a guard against a typo (mtbf: 0.0001) producing an endless timeline


@dataclass(frozen=True)
class Step:
    """One thing the scheduler does at time `t` seconds after the run's t0."""

    t: float
    action: str  # link-down, link-up, shape, node-down, node-up, controller-kill, ...
    target: str  # "a~b" for a link, a node name, "controller", a tenant name
    params: tuple[tuple[str, Any], ...] = ()
    source: int = 0  # index of the scenario entry it came from

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.params)

    def link(self) -> tuple[str, str]:
        a, b = self.target.split("~")
        return a, b

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.action} {self.target}{' ' + extra if extra else ''}"


@dataclass
class Scenario:
    """Validated entries plus the seed and horizon; `steps` is the expanded timeline."""

    entries: list[dict[str, Any]]
    seed: int = 0
    steps: list[Step] = field(default_factory=list)
    where: str = "scenario"

    @property
    def needs_netem(self) -> bool:
        return any(s.action == "shape" and ("delay" in s.args or "loss" in s.args) for s in self.steps)

    @property
    def end(self) -> float:
        return max((s.t for s in self.steps), default=0.0)

    def log(self) -> list[tuple[float, str, str, str]]:
        """The planned event log: what two runs with the same seed must agree on."""
        return [(round(s.t, 6), s.action, s.target, " ".join(f"{k}={v}" for k, v in s.params))
                for s in self.steps]


def load_file(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Entries and seed of a scenario file: a mapping with `scenario:` (and optional `seed:`), or a
    bare list."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise TrafficError(f"{p}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TrafficError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, list):
        return data, 0
    if not isinstance(data, dict) or "scenario" not in data:
        raise TrafficError(f"{p}: expected a 'scenario:' list (see 'picloud traffic run --help')")
    unknown = sorted(set(data) - {"scenario", "seed"})
    if unknown:
        raise TrafficError(f"{p}: unknown key(s) {', '.join(unknown)} (allowed: scenario, seed)")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TrafficError(f"{p}: seed {seed!r} (must be an integer)")
    if not isinstance(data["scenario"], list):
        raise TrafficError(f"{p}: scenario must be a list of entries")
    for i, entry in enumerate(data["scenario"]):
        _check_keys(f"{p} entry {i + 1}", entry)
    return data["scenario"], seed


def _check_keys(w: str, entry: Any) -> str:
    """The checks that need no topology: a mapping, a known action, known and required keys."""
    if not isinstance(entry, Mapping):
        raise TrafficError(f"{w}: {entry!r} (each entry is a mapping with 'action')")
    action = entry.get("action")
    if action not in ACTIONS:
        raise TrafficError(f"{w}: action {action!r} (one of {', '.join(ACTIONS)})")
    w = f"{w} ({action})"
    required, optional = _KEYS[action]
    allowed = {"at", "action", *required, *optional}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise TrafficError(f"{w}: unknown key(s) {', '.join(map(str, unknown))} (allowed: "
                           f"{', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in entry]
    if missing:
        raise TrafficError(f"{w}: missing {', '.join(missing)}")
    if action == "random-failures":
        if "at" in entry:
            raise TrafficError(f"{w}: use from/until, not at")
    elif "at" not in entry:
        raise TrafficError(f"{w}: missing at (seconds after the run starts)")
    return action


def _number(where: str, key: str, value: Any, *, positive: bool = False, lo: float | None = None,
            hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrafficError(f"{where}: {key} {value!r} (must be a number)")
    v = float(value)
    if positive and not v > 0:
        raise TrafficError(f"{where}: {key} {value!r} (must be positive)")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise TrafficError(f"{where}: {key} {value!r} (must be in [{lo}, {hi}])")
    return v


def _link(where: str, topology: Topology, value: Any) -> str:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(x, str) for x in value)):
        raise TrafficError(f"{where}: link {value!r} (must be a pair of node names, e.g. [agg1, tor1])")
    a, b = value
    for n in (a, b):
        if n not in topology:
            raise TrafficError(f"{where}: link {a}-{b}: unknown node {n!r}")
    if not topology.graph.has_edge(a, b):
        raise TrafficError(f"{where}: link {a}-{b}: no such link in the topology")
    ln = topology.link(a, b)
    return f"{ln.a}~{ln.b}"


def link_class(topology: Topology, a: str, b: str) -> str:
    """A link's class: its two ends' roles (a switch's role, else `pi` or `container`), sorted."""
    def role(n: str) -> str:
        node = topology.node(n)
        return node.role if node.kind == "switch" and node.role is not None else node.kind
    return "-".join(sorted((role(a), role(b))))


def _links_of_class(where: str, topology: Topology, value: Any) -> list[str]:
    if not isinstance(value, str):
        raise TrafficError(f"{where}: links {value!r} (a link class such as aggregation-tor, or 'fabric')")
    if value == "fabric":
        return [f"{ln.a}~{ln.b}" for ln in topology.fabric_links()]
    want = "-".join(sorted(value.split("-")))
    chosen = [f"{ln.a}~{ln.b}" for ln in topology.links if link_class(topology, ln.a, ln.b) == want]
    if not chosen:
        classes = sorted({link_class(topology, ln.a, ln.b) for ln in topology.links})
        raise TrafficError(f"{where}: links {value!r}: no link of that class (classes here: "
                           f"{', '.join(classes)}, or fabric)")
    return chosen


def _node_links(topology: Topology, node: str) -> list[str]:
    return [f"{ln.a}~{ln.b}" for ln in topology.links if node in (ln.a, ln.b)]


def expand(entries: Sequence[Mapping[str, Any]], topology: Topology, seed: int = 0, horizon: float | None = None,
           where: str = "scenario") -> Scenario:
    """Validate `entries` against `topology` and expand them into sorted Steps (see module doc).
    `horizon` (seconds) bounds every event and is the default end of random failures."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TrafficError(f"{where}: seed {seed!r} (must be an integer)")
    if not isinstance(entries, list | tuple):
        raise TrafficError(f"{where}: must be a list of entries")
    steps: list[Step] = []
    for i, entry in enumerate(entries):
        w = f"{where} entry {i + 1}"
        action = _check_keys(w, entry)
        w = f"{w} ({action})"
        at = _number(w, "at", entry.get("at", entry.get("from", 0.0)), lo=0.0)
        if horizon is not None and at > horizon:
            raise TrafficError(f"{w}: at {at:g} s is after the run's end ({horizon:g} s)")
        new = _expand_one(w, i, action, entry, at, topology, seed, horizon)
        steps.extend(new)
        if len(steps) > MAX_STEPS:
            raise TrafficError(f"{w}: the timeline exceeds {MAX_STEPS} steps (check mtbf/period)")
    steps.sort(key=lambda s: (s.t, s.source))
    return Scenario(entries=[dict(e) for e in entries], seed=seed, steps=steps, where=where)


def _expand_one(w: str, i: int, action: str, e: Mapping[str, Any], at: float, topology: Topology, seed: int,
                horizon: float | None) -> list[Step]:
    if action in ("link-down", "link-up"):
        return [Step(at, action, _link(w, topology, e["link"]), (), i)]
    if action == "link-flap":
        link = _link(w, topology, e["link"])
        period = _number(w, "period", e["period"], positive=True)
        duty = _number(w, "duty", e.get("duty", 0.5), lo=0.0, hi=1.0)
        until = _number(w, "until", e["until"], lo=0.0)
        if until <= at:
            raise TrafficError(f"{w}: until {until:g} s is not after at {at:g} s")
        if horizon is not None and until > horizon:
            raise TrafficError(f"{w}: until {until:g} s is after the run's end ({horizon:g} s)")
        if not 0 < duty < 1:
            raise TrafficError(f"{w}: duty {duty:g} (strictly between 0 and 1: the share of each period "
                               "the link is down)")
        out, t = [], at
        while t < until - 1e-9:
            out.append(Step(round(t, 6), "link-down", link, (), i))
            out.append(Step(round(min(t + duty * period, until), 6), "link-up", link, (), i))
            t += period
        return out
    if action == "shape":
        link = _link(w, topology, e["link"])
        params: list[tuple[str, Any]] = []
        if not any(k in e for k in ("bw", "delay", "loss")):
            raise TrafficError(f"{w}: give at least one of bw, delay, loss")
        if "bw" in e:
            bw = e["bw"]
            params.append(("bw", None if bw in (None, "none") else _number(w, "bw", bw, positive=True)))
        if "delay" in e:
            d = e["delay"]
            if isinstance(d, int | float) and not isinstance(d, bool):
                d = f"{d}ms"
            if not (isinstance(d, str) and d.rstrip("ms").replace(".", "", 1).isdigit() and d.endswith("ms")):
                raise TrafficError(f"{w}: delay {e['delay']!r} (milliseconds, e.g. 5 or '5ms')")
            params.append(("delay", d))
        if "loss" in e:
            params.append(("loss", _number(w, "loss", e["loss"], lo=0.0, hi=100.0)))
        return [Step(at, action, link, tuple(params), i)]
    if action in ("node-down", "node-up"):
        node = e["node"]
        if not isinstance(node, str) or node not in topology:
            raise TrafficError(f"{w}: node {node!r}: not in the topology")
        if topology.kind(node) not in ("pi", "switch"):
            raise TrafficError(f"{w}: node {node!r} is a {topology.kind(node)} (a Pi or a switch fails)")
        return [Step(at, action, node, (), i)]
    if action in ("controller-kill", "controller-restart"):
        return [Step(at, action, "controller", (), i)]
    if action == "tenant-add":
        tenant = e["tenant"]
        if not isinstance(tenant, str):
            raise TrafficError(f"{w}: tenant {tenant!r} (a tenant name)")
        count = e.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TrafficError(f"{w}: count {count!r} (a whole number >= 1)")
        placement = e.get("placement", "spread")
        if not isinstance(placement, str):
            raise TrafficError(f"{w}: placement {placement!r} (a placement name such as spread)")
        return [Step(at, action, tenant, (("count", count), ("placement", placement)), i)]
    if action == "tenant-remove":
        tenant, member = e["tenant"], e["member"]
        if not isinstance(tenant, str) or not isinstance(member, str):
            raise TrafficError(f"{w}: tenant and member must be names")
        return [Step(at, action, tenant, (("member", member),), i)]
    # random-failures
    links = _links_of_class(w, topology, e["links"])
    mtbf = _number(w, "mtbf", e["mtbf"], positive=True)
    mttr = _number(w, "mttr", e["mttr"], positive=True)
    end = e.get("until", horizon)
    if end is None:
        raise TrafficError(f"{w}: missing until (no run duration to default to)")
    until = _number(w, "until", end, lo=0.0)
    if horizon is not None and until > horizon:
        raise TrafficError(f"{w}: until {until:g} s is after the run's end ({horizon:g} s)")
    if until <= at:
        raise TrafficError(f"{w}: until {until:g} s is not after from {at:g} s")
    sub_seed = e.get("seed", seed)
    if isinstance(sub_seed, bool) or not isinstance(sub_seed, int):
        raise TrafficError(f"{w}: seed {sub_seed!r} (must be an integer)")
    return random_failures(links, mtbf, mttr, at, until, sub_seed, i)


def random_failures(links: Iterable[str], mtbf: float, mttr: float, start: float, until: float, seed: int,
                    source: int = 0) -> list[Step]:
    """Alternating exponential up (mean `mtbf`) and down (mean `mttr`) periods per link, each link
    from its own stream seeded by (seed, link). A failure still open at `until` is repaired there,
    so every scenario leaves the fabric as it found it."""
    out: list[Step] = []
    for link in links:
        rng = random.Random(f"{seed}:{link}")
        t = start
        while True:
            t += rng.expovariate(1.0 / mtbf)
            if t >= until:
                break
            out.append(Step(round(t, 6), "link-down", link, (), source))
            t += rng.expovariate(1.0 / mttr)
            out.append(Step(round(min(t, until), 6), "link-up", link, (), source))
            if len(out) > MAX_STEPS:
                raise TrafficError(f"random-failures: more than {MAX_STEPS} steps (mtbf {mtbf:g} s too small "
                                   "for the window)")
    return out


def node_links(topology: Topology, node: str) -> list[tuple[str, str]]:
    """Every link of a Pi or switch (for a Pi also its containers' links): what its failure cuts."""
    return [(a, b) for a, _, b in (x.partition("~") for x in _node_links(topology, node))]
