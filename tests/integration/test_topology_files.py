"""Topology files realised on the real fabric: what a file says is what the namespaces get."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from picloud.errors import TopologyError
from picloud.runstate import list_runs
from picloud.testbed import Testbed
from topology.model import dpid

pytestmark = pytest.mark.root
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "topologies"


def no_loss(matrix: dict[str, dict[str, float]]) -> bool:
    return all(loss == 0 for row in matrix.values() for loss in row.values())


def test_mininet_custom_file_runs_and_reaches_all_pairs(leaves_nothing):
    with Testbed(FIXTURES / "mininet_two_switch.py", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        assert tb.containers == ["h1", "h2"] and tb.pis == ["s3", "s4"]
        icmp, tcp = tb.ping_all(), tb.ping_all(tcp=True)
        datapath = subprocess.run(["ovs-vsctl", "get", "Bridge", tb.fabric.bridge("s3"),
                                   "other-config:datapath-id"], capture_output=True, text=True).stdout
    assert no_loss(icmp) and no_loss(tcp), (icmp, tcp)
    assert datapath.strip().strip('"') == f"{dpid('s3'):016x}"


def test_selected_mininet_topology_with_arguments(leaves_nothing):
    with Testbed(f"{FIXTURES}/mininet_dumbbell_tc.py:star,3", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        assert tb.containers == ["h1", "h2", "h3"]
        assert no_loss(tb.ping_all())


def test_file_addresses_reach_the_namespaces(leaves_nothing, tmp_path: Path):
    # This kernel may lack netem: the same GraphML without its one delay, bandwidths kept (HTB).
    graphml = tmp_path / "star.graphml"
    graphml.write_text((FIXTURES / "star.graphml").read_text().replace('<data key="d6">2ms</data>', ""))
    with Testbed(graphml, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        rc, out = tb.exec("app1", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
    assert rc == 0 and "inet 10.1.0.1/16" in out, out


def test_bare_pis_in_a_file_get_containers_per_pi(leaves_nothing):
    with Testbed(FIXTURES / "bare_rack.json", containers_per_pi=2, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        assert len(tb.containers) == 6
        assert no_loss(tb.ping_all(containers=["pi1-c1", "pi2-c2", "pi3-c1"]))


def test_a_bad_file_creates_nothing(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("switches: [{name: s1}]\npis: [{name: p1}]\nlinks: [{a: s1, b: p9}]\n")
    runs = set(list_runs())
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
    with pytest.raises(TopologyError, match=r"bad\.yaml: link 's1'-'p9': unknown node 'p9'"):
        Testbed(bad, controller="none").up()
    assert set(list_runs()) == runs
    assert subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout == bridges
