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
