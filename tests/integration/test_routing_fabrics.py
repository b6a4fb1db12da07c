"""Discovery + routing make other looped fabrics work out of the box: every ordered container
pair connects over TCP on a leaf-spine and on the Pi-cloud racks topology, first try."""

from __future__ import annotations

import time

import pytest

from picloud.controller_client import routed
from picloud.testbed import Testbed
from topology.effects import netns as netns_effects

pytestmark = pytest.mark.root


def _settled(tb: Testbed) -> bool:
    state = tb._controller_get("/state")
    if state["diff"]["missing"] or state["diff"]["unexpected"]:
        return False
    return routed(state, len(tb.containers), since_match=True)


@pytest.mark.parametrize(("spec", "per_pi"), [("leafspine:2,4,2", 1), ("picloud:2,3", 3)])
def test_every_pair_connects_over_tcp(spec, per_pi):
    """Three containers per Pi: consecutive addresses, so masked block rules (forwarding and ARP
    answers, routing_rules' "Address blocks") carry the traffic on real OVS."""
    with Testbed(spec, containers_per_pi=per_pi, controller=["discovery", "routing"]) as tb:
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


def test_a_container_added_at_run_time_is_learned_and_routed():
    """Its ARP request is answered by the bridge and copied to the controller: discovery learns it
    from that copy and routing installs its paths, so replies to it find their way."""
    with Testbed("leafspine:2,2,1", controller=["discovery", "routing"]) as tb:
        deadline = time.monotonic() + 30
        while not _settled(tb):
            assert time.monotonic() < deadline, "discovery/routing did not settle in 30s"
            time.sleep(0.05)
        pi = tb.pis[-1]
        mac = "02:00:00:00:00:32"
        port = tb.fabric.add_container("late", pi, "10.0.0.50", mac, 8, None)
        old = tb.topology.containers[0]
        endpoints = {c: (tb.fabric.netns(c), tb.container_ip(c)) for c in ("late", old)}
        matrix = netns_effects.tcp_matrix(endpoints, retries=0, timeout=30.0)
        assert matrix == {"late": {old: 0.0}, old: {"late": 0.0}}
        hosts = {h["mac"]: h for h in tb._controller_get("/state")["hosts"]}
        assert hosts[mac]["ip"] == "10.0.0.50" and hosts[mac]["port"] == port
        assert hosts[mac]["dpid"] == f"{tb.topology.dpid(pi):016x}"
