"""Traffic patterns: who sends to whom, over a given set of hosts (all containers, or one tenant's members).

Two shapes:
- per-sender patterns (`all-to-all`, `permutation`, `stride`, `hotspot`): every host runs its own
  arrival process and each flow picks a destination with `destination(rng, src)`;
- job patterns (`incast`, `shuffle`): jobs arrive, and each job is a set of flows that start together
  (`job(rng)` returns the (src, dst) pairs). Load is then defined on the most loaded receiver link:
  `receiver_flows` is how many flows of one job land on one receiver, and `receivers` how many
  distinct receivers the jobs spread over on average.

Everything is pure and seeded by the numpy Generator the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from picloud.errors import TrafficError

PATTERNS = ("all-to-all", "permutation", "stride", "hotspot", "incast", "shuffle")


def _need(name: str, hosts: list[str], count: int, why: str = "") -> None:
    if len(hosts) < count:
        raise TrafficError(
            f"pattern {name!r}: {len(hosts)} host(s) (needs at least {count}{why})"
        )


def derangement(rng: np.random.Generator, n: int) -> list[int]:
    """A uniformly random permutation with no fixed point (rejection sampling; ~e tries on average)."""
    if n < 2:
        raise TrafficError(f"pattern 'permutation': {n} host(s) (needs at least 2)")
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return [int(v) for v in perm]


@dataclass
class Pattern:
    """A pattern bound to its hosts. `kind` is "sender" or "job"."""

    name: str
    hosts: list[str]
    kind: str = "sender"
    params: dict[str, Any] = field(default_factory=dict)  # the builder's arguments, as given
    # per-sender state
    _partner: dict[str, str] = field(default_factory=dict)
    _hot: list[str] = field(default_factory=list)

    @property
    def senders(self) -> list[str]:
        return list(self.hosts)

    def destination(self, rng: np.random.Generator, src: str) -> str:
        n = len(self.hosts)
        if self.name == "all-to-all":
            i = self.hosts.index(src)
            j = int(rng.integers(n - 1))
            return self.hosts[j + 1 if j >= i else j]
        if self.name in ("permutation", "stride"):
            return self._partner[src]
        if self.name == "hotspot":
            fraction = float(self.params["fraction"])
            hot = [h for h in self._hot if h != src]
            if hot and rng.random() < fraction:
                return hot[int(rng.integers(len(hot)))]
            others = [h for h in self.hosts if h != src]
            return others[int(rng.integers(len(others)))]
        raise TrafficError(f"pattern {self.name!r}: has no per-sender destinations (it is a job pattern)")

    # job patterns --------------------------------------------------------------------------------
    @property
    def receiver_flows(self) -> int:
        """Flows of one job arriving at one receiver (the fan-in that defines the load)."""
        if self.name == "incast":
            return int(self.params["fanin"])
        if self.name == "shuffle":
            return int(self.params["mappers"])
        return 1

    @property
    def receivers(self) -> int:
        """Distinct receivers that jobs spread over (aggregators are drawn uniformly from the hosts)."""
        if self.name == "incast":
            return 1 if self.params.get("aggregator") else len(self.hosts)
        if self.name == "shuffle":
            return len(self.hosts)
        return len(self.hosts)

    def job(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """The (src, dst) flows of one job."""
        n = len(self.hosts)
        if self.name == "incast":
            fanin = int(self.params["fanin"])
            agg = self.params.get("aggregator") or self.hosts[int(rng.integers(n))]
            workers = [h for h in self.hosts if h != agg]
            chosen = rng.choice(len(workers), size=fanin, replace=False)
            return [(workers[int(k)], str(agg)) for k in sorted(chosen)]
        if self.name == "shuffle":
            m, r = int(self.params["mappers"]), int(self.params["reducers"])
            picked = [self.hosts[int(k)] for k in rng.choice(n, size=m + r, replace=False)]
            mappers, reducers = picked[:m], picked[m:]
            return [(a, b) for a in mappers for b in reducers]
        raise TrafficError(f"pattern {self.name!r}: is not a job pattern")


def make(name: str, hosts: list[str], rng: np.random.Generator, **args: object) -> Pattern:
    """Bind pattern `name` to `hosts`, validating its arguments before anything runs.

    Arguments: stride (`stride`=i, 1 <= i < n), hotspot (`hotspots`=1, `fraction`=0.5: the share of
    flows sent to a hotspot), incast (`fanin`=N, `response`=bytes or None to draw sizes from the
    workload, `aggregator`=host or None for a random one per job), shuffle (`mappers`=M,
    `reducers`=R, disjoint, M + R <= hosts).
    """
    hosts = list(dict.fromkeys(hosts))
    known = {
        "all-to-all": set(), "permutation": set(), "stride": {"stride"},
        "hotspot": {"hotspots", "fraction"}, "incast": {"fanin", "response", "aggregator"},
        "shuffle": {"mappers", "reducers"},
    }
    if name not in known:
        raise TrafficError(f"pattern {name!r}: unknown (one of {', '.join(PATTERNS)})")
    args = {k: v for k, v in args.items() if v is not None}
    extra = set(args) - known[name]
    if extra:
        raise TrafficError(
            f"pattern {name!r}: unexpected argument(s) {', '.join(sorted(extra))} "
            f"(takes {', '.join(sorted(known[name])) or 'none'})"
        )
    _need(name, hosts, 2)
    p = Pattern(name, hosts)
    n = len(hosts)
    if name == "permutation":
        perm = derangement(rng, n)
        p._partner = {hosts[i]: hosts[perm[i]] for i in range(n)}
    elif name == "stride":
        stride = _int(name, "stride", args.get("stride", 1))
        if not 1 <= stride < n or stride % n == 0:
            raise TrafficError(f"pattern 'stride': stride {stride} with {n} hosts (needs 1 <= stride < {n})")
        p._partner = {hosts[i]: hosts[(i + stride) % n] for i in range(n)}
        p.params["stride"] = stride
    elif name == "hotspot":
        count = _int(name, "hotspots", args.get("hotspots", 1))
        fraction = _number(name, "fraction", args.get("fraction", 0.5))
        if not 1 <= count < n:
            raise TrafficError(f"pattern 'hotspot': hotspots {count} with {n} hosts (needs 1 <= "
                               f"hotspots < {n})")
        if not 0.0 <= fraction <= 1.0:
            raise TrafficError(f"pattern 'hotspot': fraction {fraction} (a share in [0, 1])")
        p._hot = [hosts[int(k)] for k in sorted(rng.choice(n, size=count, replace=False))]
        p.params.update(hotspots=count, fraction=fraction, hot=list(p._hot))
    elif name == "incast":
        p.kind = "job"
        fanin = _int(name, "fanin", args.get("fanin", min(8, n - 1)))
        _need(name, hosts, fanin + 1, f": fan-in {fanin} plus an aggregator")
        if fanin < 1:
            raise TrafficError(f"pattern 'incast': fanin {fanin} (needs at least 1)")
        agg = args.get("aggregator")
        if agg is not None and agg not in hosts:
            raise TrafficError(f"pattern 'incast': aggregator {agg!r} is not one of the hosts")
        response = args.get("response")
        if response is not None:
            response = _int(name, "response", response)
            if response < 1:
                raise TrafficError(f"pattern 'incast': response {response} B (needs at least 1 byte)")
        p.params.update(fanin=fanin, response=response, aggregator=agg)
    elif name == "shuffle":
        p.kind = "job"
        m = _int(name, "mappers", args.get("mappers", max(1, n // 2)))
        r = _int(name, "reducers", args.get("reducers", max(1, n - max(1, n // 2))))
        if m < 1 or r < 1:
            raise TrafficError(f"pattern 'shuffle': mappers {m}, reducers {r} (each at least 1)")
        _need(name, hosts, m + r, f": {m} mappers and {r} reducers on distinct hosts")
        p.params.update(mappers=m, reducers=r)
    return p


def _number(pattern: str, key: str, value: object) -> float:
    try:  # whatever the caller gave (a CLI string, a numpy number): float() itself is the check
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TrafficError(f"pattern {pattern!r}: {key} {value!r} is not a number") from None


def _int(pattern: str, key: str, value: object) -> int:
    number = _number(pattern, key, value)
    if number != int(number):
        raise TrafficError(f"pattern {pattern!r}: {key} {value!r} (a whole number)")
    return int(number)
