"""The local fabric against the real thing: OVS bridges, namespaces, veths, TCP through them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from picloud.errors import FabricError, TopologyError
from picloud.runstate import RunState, list_runs
from picloud.testbed import Testbed
from topology.builders import build
from topology.model import Topology

pytestmark = pytest.mark.root
PICLOUD = [sys.executable, "-m", "picloud"]


def iperf3(tb: Testbed, client: str, server: str, seconds: int = 3) -> float:
    """Goodput in bit/s of one TCP flow, measured by iperf3 at the receiver."""
    srv = tb.popen(server, ["iperf3", "-s", "-1", "-p", "5301"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if tb.exec(server, ["sh", "-c", "ss -ltn | grep -q :5301"])[0] == 0:
                break
            time.sleep(0.1)
        # -O 1: leave slow start and the shaper's initial bucket out of the average.
        rc, out = tb.exec(client, ["iperf3", "-c", tb.container_ip(server), "-p", "5301", "-t", str(seconds),
                                   "-O", "1", "-J"], timeout=seconds + 20)
        assert rc == 0, out[-500:]
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait()


def test_tree_pingall_has_no_loss(leaves_nothing):
    with Testbed(build("tree:2,2"), controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        icmp = tb.ping_all()
        tcp = tb.ping_all(tcp=True)
    assert len(icmp) == 4
    assert all(loss == 0 for row in icmp.values() for loss in row.values()), icmp
    assert all(loss == 0 for row in tcp.values() for loss in row.values()), tcp


def test_fattree_builds_and_tears_down_completely(leaves_nothing, system_objects):
    topo = build("fattree:4")
    # With a controller the fabric is built fail-secure. The smallest app set (no discovery or
    # routing to wait for): `up` waits for every bridge's handshake, so a target nobody listens on
    # (tcp:127.0.0.1:1, used here before that wait existed) fails the build by design.
    with Testbed(topo, controller=["l2_learning"]) as tb:
        leaves_nothing.append(tb.prefix)
        objects = system_objects(tb.prefix)
        assert len(objects["bridges"]) == 20 + 16
        assert len(objects["netns"]) == 16
        bridge = tb.fabric.bridge("core1")
        protocols = subprocess.run(["ovs-vsctl", "get", "Bridge", bridge, "protocols", "fail_mode",
                                    "other-config:datapath-id"], capture_output=True, text=True).stdout
        assert "OpenFlow13" in protocols and "secure" in protocols
        assert f"{topo.dpid('core1'):016x}" in protocols
        pi = topo.pis[0]
        edge = next(n for n in topo.graph.neighbors(pi) if topo.kind(n) == "switch")
        iface = tb.fabric.end(edge, topo.link(edge, pi)).iface
        ports = subprocess.run(["ovs-vsctl", "--columns=name,ofport", "--format=csv", "--no-headings", "find",
                                "Interface", f"name={iface}"], capture_output=True, text=True).stdout
        assert ports.strip().endswith(f",{topo.port(edge, pi)}")


def test_tcp_through_three_switches(leaves_nothing):
    topo = build("linear:3")
    with Testbed(topo, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        first, last = tb.containers[0], tb.containers[-1]
        bps = iperf3(tb, first, last)
    # Bulk TCP must flow: a checksum-offload fault passes ping and carries ~0 here. Speed itself
    # (6 Gbit/s across three bridges with userspace TSO) is measured in bench/, not asserted here.
    assert bps > 10e6, f"TCP across linear:3 only {bps / 1e6:.1f} Mbit/s"


def test_shaped_link_holds_its_rate(leaves_nothing):
    topo = build("linear:2")
    with Testbed(topo, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        a, b = topo.switches
        tb.link(a, b).shape(10)
        bps = iperf3(tb, tb.containers[0], tb.containers[1], seconds=5)
        # The shaper never lets more through than its rate (+10 %: TBF's burst over 5 s): physical.
        # Less is host load as well as shaping (a starved userspace datapath carries less), so the
        # lower bound only says the link carries traffic at the shaped order of magnitude; the
        # within-10 % accuracy is bench/fidelity_bench.py's table.
        assert 5e6 <= bps <= 11e6, f"10 Mbit/s link carried {bps / 1e6:.2f} Mbit/s"
        tb.link(a, b).shape(None)
        unshaped = iperf3(tb, tb.containers[0], tb.containers[1], seconds=2)
        assert unshaped > 22e6, f"unshaped link still capped: {unshaped / 1e6:.1f} Mbit/s"  # 2x the old cap


def test_link_down_cuts_and_up_restores(leaves_nothing):
    topo = build("linear:2")
    with Testbed(topo, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        a, b = topo.switches
        c0, c1 = tb.containers
        tb.link(a, b).down()
        assert tb.ping_all(tcp=True, timeout=1.0)[c0][c1] == 1.0
        tb.link(a, b).up()
        time.sleep(0.5)
        assert tb.ping_all(tcp=True)[c0][c1] == 0.0


def test_loop_without_controller_is_refused_before_anything_exists():
    with pytest.raises(FabricError, match="loop .* without a controller"):
        Testbed(build("fattree:4"), controller="none").up()
    assert runs_owned_by(os.getpid()) == []


def runs_owned_by(pid: int) -> list[str]:
    owned = []
    for run in list_runs():
        try:
            if RunState.load(run).extra.get("owner", {}).get("pid") == pid:
                owned.append(run)
        except FabricError:
            continue
    return owned


def test_bad_input_is_one_line_exit_2_and_nothing_created():
    for argv, needle in [
        (["up", "fattree:3"], "fattree"),
        (["up", "linear:x"], "linear"),
        (["up", "/nonexistent/topo.yaml"], "topo.yaml"),
        (["up", "linear:2", "--controller", "udp:1.2.3.4"], "controller"),
    ]:
        child = subprocess.Popen(PICLOUD + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 2, (argv, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("picloud: error:") and needle in lines[0], err
        assert runs_owned_by(child.pid) == []


def test_delay_without_netem_is_refused_cleanly(leaves_nothing):
    from topology.effects import tc

    if tc.netem_available():
        pytest.skip("kernel feature netem present: the refusal path does not apply")
    topo = build("linear:2")
    t = Topology.from_dict({**topo.to_dict(), "links": [{**topo.to_dict()["links"][0], "delay": "2ms"}]})
    with pytest.raises(FabricError, match="netem"):
        Testbed(t, controller="none").up()
    assert runs_owned_by(os.getpid()) == []


def test_kill_9_during_up_then_clean_removes_exactly_ours(leaves_nothing, system_objects):
    foreign_br = foreign_ns = f"pcx9f{os.getpid()}"  # ours alone: another checkout may run this test now
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", foreign_br, "--", "set", "Bridge", foreign_br,
                    "datapath_type=netdev"], check=True)
    subprocess.run(["ip", "netns", "add", foreign_ns], check=True)
    try:
        child = subprocess.Popen(PICLOUD + ["up", "linear:40", "--containers-per-pi", "2", "--controller", "none"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        prefix = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and prefix is None:
            for run in list_runs():
                try:
                    state = RunState.load(run)
                except FabricError:
                    continue
                if state.extra.get("owner", {}).get("pid") == child.pid and state.objects.get("netns"):
                    prefix = run
            time.sleep(0.01)
        assert prefix, "the child never recorded its run"
        leaves_nothing.append(prefix)
        # Wait until objects exist on the system (mid-build), then kill at once.
        while time.monotonic() < deadline and not system_objects(prefix)["netns"]:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert any(system_objects(prefix).values()), "killed too late or too early: nothing to clean"
        # `--run`: a bare `picloud clean` would also remove other checkouts' dead-on-purpose runs
        res = subprocess.run(PICLOUD + ["clean", "--run", prefix], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert prefix in res.stdout
        assert not any(system_objects(prefix).values())
        assert foreign_br in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
        assert foreign_ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", foreign_br])
        subprocess.run(["ip", "netns", "del", foreign_ns])


def test_run_time_container_joins_and_leaves(leaves_nothing):
    topo = build("linear:2")
    with Testbed(topo, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        pi = topo.pis[1]
        port = tb.fabric.add_container("extra1", pi, "10.0.0.50", "0a:00:00:00:00:32", 8, None)
        assert port == max(topo.ports(pi)) + 1
        assert "extra1" in tb.containers
        m = tb.ping_all(tcp=True, containers=[tb.containers[0], "extra1"])
        assert m[tb.containers[0]]["extra1"] == 0.0
        tb.fabric.remove_container("extra1")
        assert "extra1" not in tb.containers
        with pytest.raises(FabricError, match="part of the topology"):
            tb.fabric.remove_container(tb.containers[0])


def test_attach_finds_a_detached_run_and_tears_it_down(leaves_nothing):
    res = subprocess.run(PICLOUD + ["up", "linear:2", "--controller", "none", "--detach"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    prefix = res.stdout.split("run ")[1].split()[0]
    leaves_nothing.append(prefix)
    try:
        status = json.loads(subprocess.run(PICLOUD + ["status", "--json"], capture_output=True, text=True).stdout)
        assert prefix in [r["prefix"] for r in status]
        ping = subprocess.run(PICLOUD + ["ping", "--run", prefix], capture_output=True, text=True, timeout=60)
        assert ping.returncode == 0 and "tcp: 2/2" in ping.stdout, ping.stdout + ping.stderr
        ex = subprocess.run(PICLOUD + ["exec", "--run", prefix, Topology.from_dict(
            RunState.load(prefix).topology).containers[0], "--", "ip", "-br", "addr"], capture_output=True,
            text=True, timeout=30)
        assert "10.0.0.1/8" in ex.stdout
    finally:
        down = subprocess.run(PICLOUD + ["down", "--run", prefix], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr


def test_unknown_topology_node_in_link_op_is_an_error(leaves_nothing):
    with Testbed(build("linear:2"), controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        with pytest.raises(TopologyError):
            tb.link("s1", "nope")


def test_containers_added_by_another_process_are_kept_and_removed(leaves_nothing):
    """A script's Testbed and a shell's `picloud tenant add` change one run: neither may erase the
    other's records, and the owner's teardown removes both."""
    topo = build("linear:2")
    with Testbed(topo, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        pi = topo.pis[0]
        code = ("from picloud.testbed import Testbed\n"
                f"tb = Testbed.attach({tb.prefix!r})\n"
                f"tb.fabric.add_container('other1', {pi!r}, '10.0.0.60', '0a:00:00:00:00:3c', 8, None)\n")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        port = tb.fabric.add_container("mine1", pi, "10.0.0.61", "0a:00:00:00:00:3d", 8, None)
        assert {"other1", "mine1"} <= set(tb.containers)
        assert port == max(topo.ports(pi)) + 2  # after the other process's port, never the same one
        assert tb.ping_all(tcp=True, containers=["other1", "mine1"])["mine1"]["other1"] == 0.0
