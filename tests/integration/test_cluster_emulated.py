"""Cluster mode against three emulated Pis: namespaces with private OVS reachable only over TCP."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from picloud.errors import ClusterError, FabricError
from picloud.runstate import RunState
from picloud.testbed import Testbed
from topology.backends.cluster import (
    ClusterFabric,
    EmulatedCluster,
    check_cluster,
    issue_certificate,
    load_inventory,
    make_ca,
)
from topology.builders import build
from topology.effects import ip
from topology.effects.ovsdb_remote import Remote
from topology.inventory import parse_inventory

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS_LOCK = Path("/run/picloud/.emulated-clusters.lock")


def own_cluster(base: str, count: int, **options) -> EmulatedCluster:
    """A started emulated cluster whose names and underlay no other run on this host uses.

    Another checkout's suite may run these tests at the same time: with fixed names its fixture's
    stop() removed our namespaces (or ours theirs), and with a fixed subnet the second start was
    refused (the first one's route overlaps it). So the name is `base` plus a number from our PID
    (skipping one whose namespace or work directory exists), and the underlay the first
    172.29.N.0/24 no host route covers; chosen and started under a host-wide lock, so two starts
    never pick the same one (a started cluster's gateway route then marks its subnet taken)."""
    digits = 8 - len(base)
    CLUSTERS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(CLUSTERS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = ip.netns_list()
        routes = [n for n in ip.host_routes() if n.version == 4 and n.prefixlen > 0]
        start = os.getpid() % 10 ** digits
        name = next(f"{base}{n:0{digits}d}" for n in (
            (start + k) % 10 ** digits for k in range(10 ** digits))
            if f"{base}{n:0{digits}d}h" not in taken and not Path(f"/run/picloud/emu-{base}{n:0{digits}d}").exists())
        subnet = next(net for n in range(256) if not any(
            (net := ipaddress.IPv4Network(f"172.29.{n}.0/24")).overlaps(r) for r in routes))
        emu = EmulatedCluster(name, count, subnet=str(subnet), **options)
        emu.start()  # stops what it built if it fails
        return emu


@pytest.fixture(scope="module")
def emulated():
    emu = own_cluster("pcit", 3)
    try:
        yield emu
    finally:
        emu.stop()
        left = {emu.hub_netns, *(emu.pi_netns(i) for i in range(3))} & ip.netns_list()
        assert not left, f"emulated cluster left namespaces {left}"


@pytest.fixture
def inventory(emulated, tmp_path) -> Path:
    return emulated.write_inventory(tmp_path / "inventory.yaml")


@pytest.fixture
def openflow_listener(emulated):
    """A real OpenFlow controller on the underlay gateway, where the Pis can reach it."""
    port = 16971
    ctl = subprocess.Popen(["ovs-testcontroller", f"ptcp:{port}:{emulated.gateway}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10  # it listens a moment after it starts: wait for that
        while time.monotonic() < deadline:
            try:
                socket.create_connection((emulated.gateway, port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"tcp:{emulated.gateway}:{port}"
    finally:
        ctl.terminate()
        ctl.wait(timeout=10)


def _run_bridges(emulated, prefix: str) -> dict[str, list[str]]:
    out = {}
    for i in range(emulated.count):
        with Remote(emulated.ovsdb_endpoint(i)) as remote:
            out[emulated.pi_name(i)] = sorted(remote.bridges(prefix))
    return out


def test_check_reports_each_pi_and_the_controller_seen_from_the_pi(emulated, openflow_listener):
    reports = check_cluster(parse_inventory(emulated.inventory()), controller=openflow_listener)
    assert [r.name for r in reports] == ["pi1", "pi2", "pi3"]
    for report in reports:
        assert report.ok, report.problems
        assert report.facts["ovs_version"][0].isdigit()
        assert report.facts["datapath_types"] == ["netdev"]
        assert {"vxlan", "patch"} <= set(report.facts["iface_types"])
        assert report.facts["controller"] == "connected"
    # the probe bridge is gone again
    assert all(not names for names in _run_bridges(emulated, "probe").values())


def test_check_gives_one_line_per_problem(emulated):
    data = emulated.inventory()
    ghost = str(emulated.subnet.network_address + 99)  # in the underlay, where no Pi is
    data["pis"].append({"name": "ghost", "management": ghost, "ovsdb": f"tcp:{ghost}:6640",
                        "docker": "none", "netns": f"{emulated.name}ghost", "underlay": ghost})
    reports = check_cluster(parse_inventory(data), controller=f"tcp:{emulated.gateway}:16972", timeout=2)
    by_name = {r.name: r for r in reports}
    assert by_name["ghost"].problems and by_name["ghost"].problems[0].startswith(
        f"pi 'ghost': tcp:{ghost}:6640: OVSDB not reachable")
    for name in ("pi1", "pi2", "pi3"):
        (line,) = by_name[name].problems
        assert line == (f"pi {name!r}: controller tcp:{emulated.gateway}:16972 not reachable from the Pi "
                        "(check its listen address and the Pi's route to it)")


def test_each_pi_answers_arp_for_its_underlay_address_once_with_the_underlay_mac(emulated):
    """A Pi's kernel also sees the frames on nic0 (the userspace datapath reads it with a packet
    socket) and used to answer ARP there with nic0's MAC as well. A peer OVS that kept that answer
    tunnelled to a MAC the underlay bridge never decaps: one Pi cut off, seen under load."""
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp

    for i in range(emulated.count):
        answered, _ = srp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=emulated.address(i)),
                          iface=emulated.gateway_iface, timeout=1.5, multi=True, verbose=False)
        macs = [reply[ARP].hwsrc for _, reply in answered]
        assert macs == [emulated.underlay_mac(i)], f"{emulated.pi_name(i)}: ARP answers {macs}"


def test_cluster_run_reaches_across_pis_over_vxlan_and_cleans_up(emulated, inventory):
    tb = Testbed(build("single:3", 2), controller="none", backend="cluster", inventory=str(inventory))
    try:
        tb.up()
        prefix, fabric = tb.prefix, tb.fabric
        hosts = {fabric.host(c) for c in tb.containers}
        assert hosts == {"pi1", "pi2", "pi3"}
        matrix = tb.ping_all(tcp=True)
        assert all(loss == 0.0 for row in matrix.values() for loss in row.values()), matrix
        # links between Pis are VXLAN ports with one VNI per model link, ports numbered as the model
        with Remote(emulated.ovsdb_endpoint(1)) as remote:
            bridge = fabric.bridge("pi2")
            spec = next(s for s in fabric.bridge_specs("pi2") if s.name == bridge)
            tunnel = next(p for p in spec.ports if p.type == "vxlan")
            assert tunnel.options["remote_ip"] == emulated.address(0)
            assert remote.ofports(bridge)[tunnel.name] == tb.topology.port("pi2", "s1")
    finally:
        tb.down()
    assert all(not names for names in _run_bridges(emulated, prefix).values())
    assert not {fabric.netns(c) for c in tb.topology.containers} & ip.netns_list()


def test_restarted_pi_ovs_is_detected_and_repaired(emulated, inventory):
    with Testbed(build("single:3", 1), controller="none", backend="cluster", inventory=str(inventory)) as tb:
        assert tb.fabric.health() == {"pi1": [], "pi2": [], "pi3": []}
        emulated.restart_ovs(2, wipe=True)  # pi3 comes back with an empty database
        health = tb.fabric.health()
        assert health["pi3"] == [f"bridge {tb.fabric.bridge('pi3')} missing"]
        assert health["pi1"] == health["pi2"] == []
        assert tb.fabric.repair() == ["pi3"]
        assert tb.fabric.health()["pi3"] == []
        matrix = tb.ping_all(tcp=True)
        assert all(loss == 0.0 for row in matrix.values() for loss in row.values()), matrix


def test_up_refuses_half_a_cluster_and_touches_no_pi(emulated, inventory):
    emulated.stop_ovs(1)
    try:
        tb = Testbed(build("single:3", 1), controller="none", backend="cluster", inventory=str(inventory))
        with pytest.raises(FabricError, match=r"refusing to start half a cluster: tcp:172\.29\.0\.12:6640"):
            tb.up()
        for i in (0, 2):
            with Remote(emulated.ovsdb_endpoint(i)) as remote:
                assert not [b for b in remote.bridges() if b != "underlay"]
    finally:
        emulated.restart_ovs(1, wipe=False)


def test_our_controller_address_must_be_reachable_from_the_pis(emulated, tmp_path):
    data = emulated.inventory()
    del data["controller"]
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FabricError, match="no 'controller' address"):
        ClusterFabric(build("single:3", 1), RunState(prefix="pc99"), ["tcp:127.0.0.1:6799"],
                      inventory=load_inventory(path))


def test_underlay_overlapping_a_host_route_is_refused_before_anything_exists():
    route = next(str(n) for n in ip.host_routes() if n.version == 4)
    emu = EmulatedCluster("pcov", 2, subnet=route)
    with pytest.raises(ClusterError, match=r"overlaps the host route .* \(pick a subnet no route covers\)"):
        emu.start()
    assert not {"pcovh", "pcove0", "pcove1"} & ip.netns_list()


@pytest.fixture
def controller_on_underlay(emulated, tmp_path):
    """PiCloud's own controller (discovery, routing), listening where the Pis reach it."""
    topo = build("leafspine:2,3,1", 2)
    topo_file = tmp_path / "topology.json"
    topo_file.write_text(json.dumps(topo.to_dict()))
    of_port, api_port = 16980, 16981
    log = open(tmp_path / "controller.log", "wb")  # noqa: SIM115 (closed in finally)
    ctl = subprocess.Popen([sys.executable, "-m", "controller_apps.runner", "--listen", f"{emulated.gateway}:{of_port}",
                            "--api", f"127.0.0.1:{api_port}", "--topology", str(topo_file)],
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        yield topo, f"tcp:{emulated.gateway}:{of_port}", f"http://127.0.0.1:{api_port}"
    finally:
        ctl.terminate()
        ctl.wait(timeout=15)
        log.close()


def test_controller_apps_run_unchanged_on_a_looped_fabric_across_pis(emulated, inventory, controller_on_underlay):
    topo, target, api = controller_on_underlay
    with Testbed(topo, controller=target, backend="cluster", inventory=str(inventory)) as tb:
        want = {topo.dpid(n) for n in topo.bridges}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if want <= set(requests.get(f"{api}/stats/switches", timeout=2).json()):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        assert want <= set(requests.get(f"{api}/stats/switches", timeout=2).json())
        assert {tb.fabric.host(n) for n in topo.switches} >= {"pi1", "pi2"}  # the fabric spans Pis

        def all_reach() -> bool:
            matrix = tb.ping_all(tcp=True)
            return all(loss == 0.0 for row in matrix.values() for loss in row.values())

        assert _eventually(all_reach, 20)
        # a spine link goes down (its VXLAN ports leave the bridges): routing finds the other spine
        spine_link = next(ln for ln in topo.fabric_links() if "spine1" in (ln.a, ln.b)
                          and tb.fabric.host(ln.a) != tb.fabric.host(ln.b))
        tb.fabric.set_link(spine_link.a, spine_link.b, up=False)
        health = tb.fabric.health()
        assert health[tb.fabric.host(spine_link.a)] and health[tb.fabric.host(spine_link.b)]
        assert _eventually(all_reach, 20)
        tb.fabric.set_link(spine_link.a, spine_link.b, up=True)
        assert tb.fabric.health() == {"pi1": [], "pi2": [], "pi3": []}


def _eventually(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def test_tls_pis_accept_our_certificate_and_refuse_a_stranger(tmp_path):
    emu = own_cluster("pcts", 2, tls=True)
    try:
        assert emu.ovsdb_endpoint(0).startswith("ssl:")
        good = check_cluster(parse_inventory(emu.inventory()))
        assert all(r.ok for r in good), [r.problems for r in good]
        make_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem", "stranger")
        issue_certificate(tmp_path / "ca.pem", tmp_path / "ca-key.pem", tmp_path / "c.pem", tmp_path / "k.pem", "x")
        data = emu.inventory()
        for pi in data["pis"]:
            pi["tls"] = {**pi["tls"], "cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")}
        for report in check_cluster(parse_inventory(data), timeout=3):
            (line,) = report.problems
            assert line.startswith(f"pi {report.name!r}: ssl:") and "TLS refused" in line
        inventory = emu.write_inventory(tmp_path / "inventory.yaml")
        with Testbed(build("single:2", 1), controller="none", backend="cluster", inventory=str(inventory)) as tb:
            assert tb.ping_all(tcp=True) == {"pi1-c1": {"pi2-c1": 0.0}, "pi2-c1": {"pi1-c1": 0.0}}
    finally:
        emu.stop()
    assert not {emu.hub_netns, emu.pi_netns(0), emu.pi_netns(1)} & ip.netns_list()


def test_run_time_container_joins_a_pi_and_leaves_cleanly(emulated, inventory):
    with Testbed(build("single:3", 1), controller="none", backend="cluster", inventory=str(inventory)) as tb:
        fabric = tb.fabric
        port = fabric.add_container("member1", "pi3", "10.0.0.50", "12:00:00:00:00:50", 8, None)
        assert port == max(tb.topology.ports("pi3")) + 1
        with Remote(emulated.ovsdb_endpoint(2)) as remote:
            assert remote.ofports(fabric.bridge("pi3"))[fabric.state.extra["containers"]["member1"]["iface"]] == port
        assert fabric.health()["pi3"] == []
        rc, out = fabric.exec("pi1-c1", ["ping", "-c", "1", "-W", "3", "10.0.0.50"])
        assert rc == 0, out
        ns = fabric.netns("member1")
        fabric.remove_container("member1")
        assert ns not in ip.netns_list()
        assert fabric.health()["pi3"] == []


@pytest.mark.docker
def test_docker_pis_get_containers_through_their_engine_wired_by_a_helper(tmp_path):
    from topology.effects import docker_engine

    engine = docker_engine.client()
    if not docker_engine.image_exists(engine, docker_engine.DEFAULT_IMAGE):
        docker_engine.build_base_image(engine)
    emu = own_cluster("pcdk", 3, docker_pis=(0, 1))  # pi3 stays namespaces
    prefix = None
    try:
        inventory = emu.write_inventory(tmp_path / "inventory.yaml")
        with Testbed(build("single:3", 2), controller="none", backend="cluster", inventory=str(inventory)) as tb:
            prefix, fabric = tb.prefix, tb.fabric
            names = docker_engine.list_run(engine, prefix)
            assert names == sorted(fabric.container_name(c) for c in tb.containers if fabric.host(c) != "pi3")
            # limits from the inventory's model (Pi 3: 4 x 1.2 GHz, 1 GB), read back from the engine
            applied = docker_engine.limits(engine, fabric.container_name("pi1-c1"))
            assert applied["memory"] == 1024 * 1024 * 1024 and applied["nano_cpus"] > 0
            rc, out = tb.exec("pi2-c2", ["ip", "-o", "-4", "addr", "show", "eth0"])  # docker exec
            assert rc == 0 and "10.0.0.4/8" in out
            matrix = tb.ping_all(tcp=True)
            assert all(loss == 0.0 for row in matrix.values() for loss in row.values()), matrix
            # a run-time container (tenant member) on a Docker Pi is a Docker container too
            fabric.add_container("member1", "pi2", "10.0.0.60", "12:00:00:00:00:60", 8, None)
            assert fabric.container_name("member1") in docker_engine.list_run(engine, prefix)
            rc, out = tb.exec("pi3-c1", ["ping", "-c", "1", "-W", "3", "10.0.0.60"])
            assert rc == 0, out
            assert fabric.health()["pi2"] == []
            fabric.remove_container("member1")
            assert fabric.container_name("member1") not in docker_engine.list_run(engine, prefix)
    finally:
        emu.stop()
    assert prefix and docker_engine.list_run(engine, prefix) == []


def test_overlapping_tenants_across_pis_under_the_default_controller(emulated, inventory):
    """The issue's acceptance run: PiCloud's own controller (listening on the inventory's
    controller address), two tenants on the same subnet spread over three Pis."""
    with Testbed(build("single:3", 1), backend="cluster", inventory=str(inventory)) as tb:
        assert tb.state.controller["target"].startswith(f"tcp:{emulated.gateway}:")
        for name in ("red", "blue"):
            tb.tenant(name, subnet="10.1.0.0/24").add(3, placement="spread")
        assert {tb.fabric.host(m.pi) for m in tb.tenant("red").members} == {"pi1", "pi2", "pi3"}
        report = tb.verify_isolation()
        assert report.ok, report.summary()
        red = [m.name for m in tb.tenant("red").members]
        matrix = tb.ping_all(tcp=True, containers=red)
        assert all(loss == 0.0 for row in matrix.values() for loss in row.values()), matrix


def test_openflow_runs_over_tls_with_the_clusters_ca_where_ovsdb_does(tmp_path):
    """Issue 19 finding 10: cluster OpenFlow was plain TCP over the underlay. With TLS Pis, our
    controller listens ssl: only (the orchestrator's certificate, the cluster's CA required of every
    switch), the Pis connect with their own keys, and a plain-TCP OpenFlow hello gets no answer."""
    import struct

    emu = own_cluster("pcof", 2, tls=True)
    try:
        inventory = emu.write_inventory(tmp_path / "inventory.yaml")
        with Testbed(build("single:2", 1), backend="cluster", inventory=str(inventory)) as tb:
            target = tb.state.controller["target"]
            assert target.startswith("ssl:"), target
            assert tb.ping_all(tcp=True) == {"pi1-c1": {"pi2-c1": 0.0}, "pi2-c1": {"pi1-c1": 0.0}}
            switches = requests.get(tb.controller_api + "/stats/switches", timeout=5).json()
            assert sorted(switches) == sorted(tb.topology.dpid(n) for n in tb.topology.bridges)
            _, host, port = target.split(":")
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(struct.pack("!BBHI", 4, 0, 8, 1))  # OFPT_HELLO, OpenFlow 1.3, in clear
                sock.settimeout(5)
                try:
                    reply = sock.recv(64)
                except (ConnectionResetError, TimeoutError):
                    reply = b""
            assert not reply.startswith(b"\x04\x00"), "the controller answered OpenFlow in clear text"
        with Testbed(build("single:2", 1), backend="cluster", inventory=str(inventory), openflow_tls=False) as tb:
            assert tb.state.controller["target"].startswith("tcp:")  # the documented opt-out
    finally:
        emu.stop()
    assert not {emu.hub_netns, emu.pi_netns(0), emu.pi_netns(1)} & ip.netns_list()


# A TCP flow of exactly FLOW_BYTES from one container to another; the server answers with the
# byte count it read, after the client's FIN, so the client knows every byte arrived.
FLOW_PORT, FLOW_BYTES = 5999, 2_000_000
FLOW_SERVER = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {FLOW_PORT}))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.sendall(n.to_bytes(8, "big"))
c.close()
print(n, flush=True)
"""
FLOW_CLIENT = f"""
import socket, sys
c = socket.create_connection((sys.argv[1], {FLOW_PORT}), timeout=60)
c.sendall(b"Z" * {FLOW_BYTES})
c.shutdown(socket.SHUT_WR)
got = b""
while len(got) < 8:
    b = c.recv(8 - len(got))
    if not b:
        break
    got += b
print(int.from_bytes(got, "big"))
"""


def _image_with_tcpdump(engine) -> None:
    """The base image as images/base/packages now lists it (tcpdump included), built if the engine's
    copy predates it."""
    from topology.effects import docker_engine

    if docker_engine.image_exists(engine, docker_engine.DEFAULT_IMAGE):
        found = engine.containers.run(docker_engine.DEFAULT_IMAGE, ["sh", "-c", "command -v tcpdump || true"],
                                      remove=True, network_mode="none")
        if found.strip():
            return
    docker_engine.build_base_image(engine)


def _capture_containers(engine, prefix: str) -> list[str]:
    from topology.effects import docker_engine

    return sorted(c.name for c in engine.containers.list(all=True, filters={
        "label": [f"{docker_engine.LABEL}={prefix}", f"picloud.role={docker_engine.CAPTURE_ROLE}"]}))


@pytest.mark.docker
def test_capture_runs_on_each_pi_through_its_engine_and_sees_a_flow_at_every_point(tmp_path):
    """Issue 16 on the cluster: a flow between containers on two emulated Pis, captured at both
    containers, at both ends of one container's link (one end is the Pi's side of the veth, inside
    the Pi's namespace) and at both ends of the VXLAN link it crosses (OVS mirrors of the tunnel
    ports), each point by a capture container its Pi's engine runs."""
    from picloud.clean import clean
    from picloud.errors import TrafficError
    from topology.effects import docker_engine
    from traffic import capture_check, pcapng

    engine = docker_engine.client()
    _image_with_tcpdump(engine)
    emu = own_cluster("pccap", 3, docker_pis=(0, 1))  # pi3: no engine
    prefix = None
    try:
        inventory = emu.write_inventory(tmp_path / "inventory.yaml")
        with Testbed(build("single:3", 1), controller="none", backend="cluster", inventory=str(inventory)) as tb:
            prefix, fabric = tb.prefix, tb.fabric
            src, dst = "pi1-c1", "pi2-c1"
            assert (fabric.host(src), fabric.host(dst), fabric.host("s1")) == ("pi1", "pi2", "pi1")

            def s1_ports() -> set[str]:  # a fresh session: what the Pi's OVSDB holds now
                with Remote(emu.ovsdb_endpoint(0)) as remote:
                    return set(remote.ofports(fabric.bridge("s1")))

            before = s1_ports()
            # refused before anything starts, one line naming the Pi or the port
            with pytest.raises(TrafficError, match=r"pi 'pi3' has no container engine"):
                tb.capture([src, "pi3-c1"])
            with pytest.raises(TrafficError, match=r"capture at pi3 port \d+ \(to s1\): pi 'pi3' has no container"):
                tb.capture(["link:s1,pi3"])
            assert _capture_containers(engine, prefix) == [] and not tb.state.extra.get("captures")

            server = tb.popen(dst, ["python3", "-c", FLOW_SERVER], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              text=True)
            try:
                assert server.stdout.readline().strip() == "listening"
                with tb.capture([src, dst, f"link:pi2,{dst}", "link:s1,pi2"], bpf=f"tcp port {FLOW_PORT}",
                                out=tmp_path / "cluster.pcapng") as cap:
                    sidecars = _capture_containers(engine, prefix)
                    assert len(sidecars) == 6 and all(n.startswith(f"{prefix}-cap") for n in sidecars)
                    assert sorted(tb.state.extra["captures"]) == sidecars  # recorded, so clean finds them
                    rc, out = tb.exec(src, ["python3", "-c", FLOW_CLIENT, tb.container_ip(dst)], timeout=120)
                    assert rc == 0 and out.split()[-1] == str(FLOW_BYTES), out
                assert server.wait(30) == 0 and server.stdout.read().split() == [str(FLOW_BYTES)]
            finally:
                if server.poll() is None:
                    server.kill()
            result = cap.result
            assert _capture_containers(engine, prefix) == [] and not tb.state.extra.get("captures")
            names = [i["name"] for i in result.interfaces]
            assert sorted(names) == sorted([src, dst, f"pi2>{dst}", f"{dst}>pi2", "s1>pi2", "pi2>s1"])
            assert s1_ports() == before  # the mirror ports are gone
            in_file = pcapng.interfaces(result.path.read_bytes())
            assert sorted(i.name for i in in_file) == sorted(names), "mergecap lost or folded interface names"
            by_name = {i["name"]: i for i in result.interfaces}
            assert by_name[f"pi2>{dst}"]["pi"] == "pi2" and by_name[f"pi2>{dst}"]["netns"] == emu.pi_netns(1)
            assert (by_name["s1>pi2"]["pi"], by_name["pi2>s1"]["pi"]) == ("pi1", "pi2")
            # Kernel drop counts are reported for every point: a number, never hidden.
            assert all(i["dropped"] is not None and i["os_dropped"] is not None for i in result.interfaces), \
                result.interfaces
            # The kernel could not have dropped any: each point's 8 MiB ring (CAPTURE_RING_KIB) holds
            # the whole flow, both directions with headers (about 2.3 MB), even had tcpdump read none
            # of it until the end; and the stream back is a byte stream that loses nothing.
            assert all(i["dropped"] == 0 and i["stream_lost"] == 0 for i in result.interfaces), result.summary()
            assert [i.dropped for i in in_file] == [0] * 6  # in the file too, for Wireshark's statistics
            # Every payload byte the server counted crossed each point (each lies on the flow's only
            # path), so each holds exactly FLOW_BYTES of its sequence space, retransmissions counted
            # once: a block of packets tcpdump had not yet read when it was stopped would be a gap.
            covered = capture_check.sequence_coverage(capture_check.read_packets(result.path), FLOW_PORT)
            assert covered == dict.fromkeys(names, FLOW_BYTES), (covered, result.summary())

            # A capture whose owner is killed leaves its container streaming to nobody: picloud
            # clean finds it in the run state and removes it, and leaves the live run alone.
            owner = subprocess.Popen(
                [sys.executable, "-c", "import sys, time\nfrom picloud.testbed import Testbed\n"
                 f"Testbed.attach({prefix!r}).capture(['port:s1:{tb.topology.port('s1', 'pi2')}']).start()\n"
                 "print('started', flush=True)\n"
                 "time.sleep(600)\n"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            try:
                assert owner.stdout.readline().strip() == "started"
            finally:
                owner.kill()
                owner.wait(10)
            (orphan,) = _capture_containers(engine, prefix)
            assert len(s1_ports() - before) == 1  # its mirror port
            clean([prefix])
            assert _capture_containers(engine, prefix) == []
            assert s1_ports() == before
            tb.state.reload()
            assert not tb.state.extra.get("captures") and orphan not in tb.state.objects["containers"]
            assert tb.ping_all(tcp=True, containers=[src, dst])[src][dst] == 0.0  # the run itself is untouched
    finally:
        emu.stop()
    assert prefix and docker_engine.list_run(engine, prefix) == []
