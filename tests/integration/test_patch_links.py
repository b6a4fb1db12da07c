"""fabric_links="patch": switch-to-switch links as OVS patch ports carry TCP, go down and up like a
cut cable, refuse shaping, and leave nothing behind (and no veth for them)."""

from __future__ import annotations

import subprocess

import pytest

from picloud.errors import FabricError
from picloud.testbed import Testbed
from topology.builders import build


def _tcp_ok(tb: Testbed, a: str, b: str) -> bool:
    return tb.ping_all(tcp=True, containers=[a, b], timeout=5.0)[a][b] == 0.0


def test_patch_links_carry_tcp_cut_restore_and_leave_nothing(leaves_nothing, system_objects):
    topo = build("linear:3")
    with Testbed(topo, controller="none", fabric_links="patch") as tb:
        leaves_nothing.append(tb.prefix)
        a, z = tb.containers[0], tb.containers[-1]
        s1, s2 = topo.switches[0], topo.switches[1]
        iface = tb.fabric.end(s1, topo.link(s1, s2)).iface
        kind = subprocess.run(["ovs-vsctl", "get", "Interface", iface, "type"], capture_output=True,
                              text=True).stdout.strip()
        assert kind == "patch"
        assert iface not in system_objects(tb.prefix)["links"]  # no kernel device for it
        assert iface not in tb.state.objects["veth"]
        assert _tcp_ok(tb, a, z)
        tb.link(s1, s2).down()
        assert not _tcp_ok(tb, a, z)
        tb.link(s1, s2).up()
        assert _tcp_ok(tb, a, z)
        with pytest.raises(FabricError, match="patch ports"):
            tb.link(s1, s2).shape(10)


def test_patch_links_refuse_a_shaped_fabric_before_building(system_objects):
    with pytest.raises(FabricError, match="fabric_links=patch"):
        Testbed(build("linear:2"), controller="none", fabric_links="patch", bw=10).up()


def test_auto_fabric_links_shape_pi_uplinks_and_patch_the_switch_fabric(leaves_nothing, system_objects):
    """picloud:2,1 under the default controller: the Pi uplinks (Model B, 100 Mbit/s) stay shaped
    veth pairs, the ToR-aggregation links become patch ports, and routing repairs a cut one."""
    topo = build("picloud:2,1")
    with Testbed(topo, fabric_links="auto") as tb:
        leaves_nothing.append(tb.prefix)
        a, z = tb.containers[0], tb.containers[-1]
        uplink = tb.fabric.end("tor1", topo.link("tor1", "pi1-1")).iface
        fabric = tb.fabric.end("tor1", topo.link("tor1", "agg1")).iface
        assert uplink in system_objects(tb.prefix)["links"]
        assert "tbf" in subprocess.run(["tc", "qdisc", "show", "dev", uplink], capture_output=True,
                                       text=True).stdout
        assert fabric not in system_objects(tb.prefix)["links"]
        assert subprocess.run(["ovs-vsctl", "get", "Interface", fabric, "type"], capture_output=True,
                              text=True).stdout.strip() == "patch"
        assert _tcp_ok(tb, a, z)
        tb.link("tor1", "agg1").down()
        assert _tcp_ok(tb, a, z)  # routing moves the path to agg2
        tb.link("tor1", "agg2").down()
        assert not _tcp_ok(tb, a, z)  # rack 1 is cut off: the patch ports really are the cables
        tb.link("tor1", "agg1").up()
        assert _tcp_ok(tb, a, z)
