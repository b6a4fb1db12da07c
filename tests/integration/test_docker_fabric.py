"""The Docker backend on the real engine and the real OVS: reachability, limits, clean-up."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from picloud.testbed import Testbed
from topology.builders import build
from topology.effects import docker_engine, ip, ovs
from topology.inventory import PI_MODELS

pytestmark = [pytest.mark.root, pytest.mark.docker]


@pytest.fixture(scope="module")
def image() -> str:
    engine = docker_engine.client()
    if not docker_engine.image_exists(engine, docker_engine.DEFAULT_IMAGE):
        docker_engine.build_base_image(engine)
    return docker_engine.DEFAULT_IMAGE


@pytest.fixture
def testbed(image):
    tb = Testbed(build("single:2", 2), controller="none", backend="docker", image=image, pi_model="b+")
    try:
        tb.up()
        yield tb
    finally:
        prefix = tb.state.prefix if tb.state else None
        tb.down()
        if prefix:
            assert docker_engine.list_run(docker_engine.client(), prefix) == []


def test_containers_are_docker_containers_on_the_fabric(testbed):
    engine = testbed.fabric.engine
    names = docker_engine.list_run(engine, testbed.prefix)
    assert names == sorted(f"{testbed.prefix}-{c}" for c in testbed.containers)
    attrs = engine.containers.get(names[0]).attrs
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    # the namespace the local tools use is the container's own
    pid = attrs["State"]["Pid"]
    ns = testbed.fabric.netns(testbed.containers[0])
    own = subprocess.run(["readlink", f"/proc/{pid}/ns/net"], capture_output=True, text=True).stdout.strip()
    named = subprocess.run(["ip", "netns", "exec", ns, "readlink", "/proc/self/ns/net"], capture_output=True,
                           text=True).stdout.strip()
    assert own == named


def test_tcp_between_containers_on_two_pis_through_a_web_server(testbed):
    server, client = testbed.containers[0], testbed.containers[-1]
    assert testbed.topology.node(server).pi != testbed.topology.node(client).pi
    rc, out = testbed.exec(server, ["sh", "-c", "mkdir -p /tmp/www && echo picloud-ok > /tmp/www/index.html && "
                                    "busybox httpd -p 8000 -h /tmp/www"])
    assert rc == 0, out
    address = testbed.container_ip(server)
    for _ in range(20):
        rc, out = testbed.exec(client, ["busybox", "wget", "-q", "-O", "-", f"http://{address}:8000/"], timeout=10)
        if rc == 0:
            break
        time.sleep(0.25)
    assert (rc, out.strip()) == (0, "picloud-ok")
    assert set(testbed.ping_all(tcp=True)[client].values()) == {0.0}


def test_limits_are_applied_and_read_back_from_the_engine(testbed):
    model = PI_MODELS["b+"]
    for container in testbed.containers:
        applied = docker_engine.limits(testbed.fabric.engine, testbed.fabric.container_name(container))
        assert applied["memory"] == model.memory_mb * 1024 * 1024
        assert applied["nano_cpus"] == int(model.cpus(os.cpu_count() or 1) * 1e9)
    # the process really runs inside that memory cgroup
    rc, out = testbed.exec(testbed.containers[0], ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    if rc == 0:  # cgroup v1 view inside the container
        assert int(out.split()[0]) == model.memory_mb * 1024 * 1024


def test_popen_runs_the_host_interpreter_inside_the_container(testbed):
    proc = testbed.popen(testbed.containers[1], [sys.executable, "-c",
                                                 "import socket, topology.model; print(socket.gethostname())"],
                         stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == testbed.containers[1]


def test_run_time_container_is_a_docker_container_and_is_removed(testbed):
    fabric = testbed.fabric
    port = fabric.add_container("extra1", "pi1", "10.9.0.1", "12:34:56:00:00:01", 8, None)
    assert port > max(testbed.topology.ports("pi1"))
    name = fabric.container_name("extra1")
    assert name in docker_engine.list_run(fabric.engine, testbed.prefix)
    rc, out = fabric.exec("extra1", ["ip", "-o", "-4", "addr", "show", "eth0"])
    assert rc == 0 and "10.9.0.1/8" in out
    fabric.remove_container("extra1")
    assert name not in docker_engine.list_run(fabric.engine, testbed.prefix)
    assert fabric.netns("pi1-c1") in ip.netns_list()


def test_down_removes_containers_netns_bridges_and_cgroups(image):
    tb = Testbed(build("single:2", 1), controller="none", backend="docker", image=image, pi_model="3")
    try:
        tb.up()
        prefix, namespaces = tb.prefix, [tb.fabric.netns(c) for c in tb.containers]
        cgroups = list(tb.state.extra["cgroups"])
    finally:
        tb.down()
    assert docker_engine.list_run(docker_engine.client(), prefix) == []
    assert not set(namespaces) & ip.netns_list()
    assert ovs.bridges_labelled(prefix) == []
    for parent in cgroups:
        assert not (docker_engine.CGROUP_ROOT / "memory" / parent.strip("/")).exists()


def test_missing_image_is_refused_before_anything_exists():
    from picloud.errors import FabricError

    tb = Testbed(build("single:2", 1), controller="none", backend="docker", image="picloud/none:absent")
    with pytest.raises(FabricError, match="picloud image build"):
        tb.up()
    assert tb.state is None


def test_docker_containers_work_under_our_controller_apps(image):
    with Testbed(build("single:2", 1), backend="docker", image=image) as tb:
        assert tb.controller_api
        matrix = tb.ping_all(tcp=True)
        assert all(loss == 0.0 for row in matrix.values() for loss in row.values()), matrix
        assert docker_engine.limits(tb.fabric.engine, tb.fabric.container_name(tb.containers[0])) == {
            "nano_cpus": 0, "memory": 0}  # no --pi-model: no limits
