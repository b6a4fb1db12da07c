"""The batched set-up and teardown paths against the tools they replace: in-process rtnetlink must
leave a namespace exactly as `ip -batch` does, and `link del group N` must spare a stranger's device
that happens to carry a run's group number."""

from __future__ import annotations

import json
import subprocess

import pytest

from topology.effects import ip, rtnl
from topology.effects.proc import CommandError

NS_IP, NS_RTNL = "pftb0", "pftb1"  # this test's own names (never a run prefix: those start with pc)


def _ns_view(ns: str) -> tuple[list, list, list]:
    def j(*argv: str) -> list:
        return json.loads(subprocess.run(["ip", "-n", ns, "-j", *argv], capture_output=True, text=True,
                                         check=True).stdout or "[]")
    links = sorted((e["ifname"], "UP" in e["flags"]) for e in j("link", "show"))
    addrs = sorted((e["ifname"], a["local"], a["prefixlen"], a["scope"]) for e in j("addr", "show")
                   for a in e.get("addr_info", []) if a["family"] == "inet")
    routes = sorted((r["dst"], r.get("dev"), r.get("gateway"), r.get("scope"), r.get("protocol"))
                    for r in j("route", "show"))
    return links, addrs, routes


@pytest.fixture
def two_namespaces():
    try:
        for ns in (NS_IP, NS_RTNL):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
                           check=True)
        yield
    finally:
        ip.delete_netns([NS_IP, NS_RTNL])


@pytest.mark.parametrize("gateway", [None, "10.9.0.1"])
def test_rtnl_configures_a_namespace_as_ip_batch_does(two_namespaces, gateway):
    ip.batch(["link set lo up", "addr add 10.9.0.7/16 dev eth0", "link set eth0 up",
              f"route add default via {gateway}" if gateway else "route add default dev eth0"], netns=NS_IP)
    rtnl.configure([rtnl.ContainerIface(NS_RTNL, "10.9.0.7/16", gateway)])
    view = _ns_view(NS_RTNL)
    assert view == _ns_view(NS_IP)
    assert ("eth0", "10.9.0.7", 16, "global") in view[1] and any(r[:3] == ("default", "eth0", gateway)
                                                               for r in view[2])


def test_rtnl_names_the_namespace_and_request_that_failed(two_namespaces):
    rtnl.configure([rtnl.ContainerIface(NS_RTNL, "10.9.0.7/16")])
    with pytest.raises(CommandError, match=rf"{NS_RTNL}: addr add 10.9.0.7/16 dev eth0: File exists"):
        rtnl.configure([rtnl.ContainerIface(NS_RTNL, "10.9.0.7/16")])
    with pytest.raises(CommandError, match=rf"{NS_RTNL}: no interface eth9"):
        rtnl.configure([rtnl.ContainerIface(NS_RTNL, "10.9.0.8/16", iface="eth9")])


def test_group_delete_removes_a_runs_links_and_spares_a_stranger_in_the_group():
    group = ip.run_group("pc999")
    ours = ["pftbA0", "pftbB0"]
    try:
        ip.batch([f"link add {n} group {group} type veth peer name {n[:-1]}1 group {group}" for n in ours])
        ip.delete_links(ours + [n[:-1] + "1" for n in ours], group=group)
        assert not ip.group_links(group) and not {"pftbA0", "pftbB1"} & ip.links()
        ip.batch([f"link add {n} group {group} type veth peer name {n[:-1]}1 group {group}" for n in ours])
        ip.batch([f"link add pftbX0 group {group} type veth peer name pftbX1"])  # a stranger in the group
        ip.delete_links(ours, group=group)
        assert ip.group_links(group) == {"pftbX0"} and not {"pftbA0", "pftbB1"} & ip.links()
    finally:
        ip.delete_links(["pftbA0", "pftbB0", "pftbX0"])


def test_teardown_expedites_rcu_and_puts_the_knob_back(leaves_nothing, monkeypatch) -> None:
    """A real teardown turns /sys/kernel/rcu_expedited on for its length (each packet-socket close is
    then microseconds, not a 12-16 ms grace period) and leaves it as found, with nothing saved."""
    from pathlib import Path

    from picloud.runstate import state_dir
    from picloud.testbed import Testbed
    from topology.backends import local
    from topology.effects import rcu

    if not rcu.KNOB.exists():
        pytest.skip(f"the kernel has no {rcu.KNOB} (a kernel feature: nothing to expedite)")
    before = rcu.KNOB.read_text().strip()
    seen: list[str] = []
    remove = local.ip.delete_netns

    def watching(names: list[str]) -> None:  # the kernel's share of the teardown, inside the block
        seen.append(rcu.KNOB.read_text().strip())
        remove(names)

    monkeypatch.setattr(local.ip, "delete_netns", watching)
    with Testbed("single:2", controller="none"):
        pass
    assert seen == ["1"]
    assert rcu.KNOB.read_text().strip() == before
    assert not (state_dir() / rcu.SAVED_NAME).exists() and Path(state_dir()).is_dir()


def test_teardown_takes_the_bridges_tap_devices_into_one_kernel_batch(leaves_nothing, monkeypatch) -> None:
    """The userspace datapath makes each bridge's own port a tap device, which ovs-vswitchd would
    unregister alone on del-br (an rcu_barrier each, ~20 ms). A real teardown deletes them together
    first: when that batch returns, the taps are gone and OVS still has every bridge."""
    from picloud.testbed import Testbed
    from topology.backends import local
    from topology.effects import ovs

    seen: list[tuple[set[str], set[str]]] = []
    remove = local.ip.delete_as_one_batch

    def watching(names, group) -> None:  # noqa: ANN001 (ip.delete_as_one_batch's signature)
        remove(names, group)
        seen.append(({b for b in bridges if ip.is_tap(b)}, set(ovs.bridges_labelled(prefix)) & set(bridges)))

    monkeypatch.setattr(local.ip, "delete_as_one_batch", watching)
    with Testbed("single:2", controller="none") as tb:
        prefix, bridges = tb.prefix, list(tb.state.objects["bridges"])
        leaves_nothing.append(prefix)
        if tb.fabric.datapath != "netdev":
            pytest.skip(f"datapath {tb.fabric.datapath}: bridges' own ports are not tap devices")
        assert bridges and all(ip.is_tap(b) for b in bridges)
    assert seen == [(set(), set(bridges))]


def test_one_batch_delete_leaves_a_group_with_a_stranger_in_it_alone():
    group = ip.tap_group("pc998")
    try:
        ip.batch(["link add pftbT0 type veth peer name pftbT1", f"link add pftbS0 group {group} type veth "
                  "peer name pftbS1"])
        ip.delete_as_one_batch(["pftbT0"], group)  # a stranger (pftbS0) already uses the group
        assert {"pftbT0", "pftbS0"} <= ip.links() and ip.group_links(group) == {"pftbS0"}
        ip.delete_links(["pftbS0"])
        ip.delete_as_one_batch(["pftbT0"], group)
        assert not {"pftbT0", "pftbT1"} & ip.links() and not ip.group_links(group)
    finally:
        ip.delete_links(["pftbT0", "pftbS0"])
