"""Discovery + routing make other looped fabrics work out of the box: every ordered container
pair connects over TCP on a leaf-spine and on the Pi-cloud racks topology, first try."""

from __future__ import annotations

import time

import pytest

from picloud.testbed import Testbed
from topology.effects import netns as netns_effects

pytestmark = pytest.mark.root


def _settled(tb: Testbed) -> bool:
    state = tb._controller_get("/state")
    if state["diff"]["missing"] or state["diff"]["unexpected"]:
        return False
    events = tb._controller_get("/state/events")
    last_link = max((e["t"] for e in events if e["kind"] == "link"), default=0)
    want = f"paths for {len(tb.containers)} hosts"
    return any(e["kind"] == "routing" and e["t"] > last_link and e["text"].startswith(want) for e in events)


@pytest.mark.parametrize("spec", ["leafspine:2,4,2", "picloud:2,3"])
def test_every_pair_connects_over_tcp(spec):
    with Testbed(spec, controller=["discovery", "routing"]) as tb:
        deadline = time.monotonic() + 30
        while not _settled(tb):
            assert time.monotonic() < deadline, f"{spec}: discovery/routing did not settle in 30s"
            time.sleep(0.05)
        endpoints = {c: (tb.fabric.netns(c), tb.container_ip(c)) for c in tb.containers}
        matrix = netns_effects.tcp_matrix(endpoints, retries=0, timeout=30.0)
        failed = [(s, d) for s, row in matrix.items() for d, loss in row.items() if loss]
        n = len(tb.containers)
        assert sum(len(row) for row in matrix.values()) == n * (n - 1)
        assert not failed, f"{spec}: {len(failed)} pairs failed, e.g. {failed[:4]}"
