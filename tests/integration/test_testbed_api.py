"""The Testbed context manager against a real fabric: what users do in scripts and notebooks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from picloud.errors import FabricError
from picloud.testbed import Testbed
from tests.integration.sigint import default_sigint
from topology.model import Topology

pytestmark = pytest.mark.root


def test_normal_exit_leaves_nothing(leaves_nothing):
    with Testbed("linear:2") as tb:
        leaves_nothing.append(tb.prefix)
        assert tb.state.path.exists()
        pid = tb.state.objects["pids"][0]["pid"]
        assert os.path.exists(f"/proc/{pid}")
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_the_controller_runs_in_the_callers_session_in_its_own_process_group(leaves_nothing):
    """The caller's session: under sched_autogroup, a session of its own starved the controller
    for 22 s behind busy loops. Its own group: a terminal's Ctrl-C reaches only the caller, which
    ends the controller in order."""
    with Testbed("linear:2") as tb:
        leaves_nothing.append(tb.prefix)
        pid = tb.state.objects["pids"][0]["pid"]
        assert os.getsid(pid) == os.getsid(0)
        assert os.getpgid(pid) == pid != os.getpgid(0)


def test_ovs_vswitchd_autogroup_has_the_daemons_priority(leaves_nothing):
    """ovs-ctl starts ovs-vswitchd at nice -10 in a session of its own; under sched_autogroup that
    nice counts only inside its session, so `up` gives the session the same nice."""
    if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
        pytest.skip("kernel: sched_autogroup is off, so a task's nice already counts host-wide")
    pid = int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text())
    nice = os.getpriority(os.PRIO_PROCESS, pid)
    assert nice < 0, f"ovs-vswitchd runs at nice {nice}; ovs-ctl's default is -10"
    with Testbed("linear:2", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == str(nice)


def test_exception_inside_the_block_tears_down(leaves_nothing):
    with pytest.raises(ZeroDivisionError), Testbed("linear:2", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        1 / 0  # noqa: B018


def test_keyboard_interrupt_inside_the_block_tears_down(leaves_nothing):
    with pytest.raises(KeyboardInterrupt), Testbed("linear:2", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        raise KeyboardInterrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_of_a_script_tears_down(signum, tmp_path, leaves_nothing, system_objects):
    script = tmp_path / "exp.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from picloud.testbed import Testbed
        with Testbed("linear:3", controller="none") as tb:
            print(tb.prefix, flush=True)
            time.sleep(120)
    """))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             preexec_fn=default_sigint)
    prefix = child.stdout.readline().strip()
    assert prefix.startswith("pc")
    leaves_nothing.append(prefix)
    assert system_objects(prefix)["bridges"]
    child.send_signal(signum)
    assert child.wait(timeout=60) != 0


def test_methods_on_a_running_fabric(leaves_nothing):
    topo = Topology("api")
    topo.add_switch("sw")
    for i in range(3):
        topo.add_pi(f"pi{i}")
        topo.add_link("sw", f"pi{i}")
        topo.add_container(f"c{i}", f"pi{i}")
    with Testbed(topo) as tb:
        leaves_nothing.append(tb.prefix)
        assert tb.containers == ["c0", "c1", "c2"] and tb.pis == ["pi0", "pi1", "pi2"] and tb.switches == ["sw"]
        assert len(tb.links) == 3
        rc, out = tb.exec("c1", "ip -br addr show eth0")
        assert rc == 0 and "10.0.0.2/8" in out
        rc, out = tb.exec("c1", ["sh", "-c", "exit 7"])
        assert rc == 7
        assert all(v == 0 for row in tb.ping_all().values() for v in row.values())
        tb.link("sw", "pi0").down()
        matrix = tb.ping_all(tcp=True, timeout=1.0)
        assert matrix["c1"]["c0"] == 1.0 and matrix["c1"]["c2"] == 0.0
        tb.link("sw", "pi0").up()
        time.sleep(1.0)
        assert tb.ping_all(tcp=True)["c1"]["c0"] == 0.0
        flows = tb.flows("sw")
        assert flows and {"priority", "match", "actions", "packet_count"} <= set(flows[0])
        ports = tb.port_stats("pi1")
        assert any(p["port_no"] == 1 for p in ports)
        with pytest.raises(FabricError):
            tb.exec("nope", "true")


def test_attach_while_the_owner_runs(leaves_nothing):
    with Testbed("linear:2", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        other = Testbed.attach(tb.prefix)
        assert other.containers == tb.containers
        assert other.exec(tb.containers[0], "true")[0] == 0


def test_bad_arguments_are_one_line_errors_before_anything_exists():
    for kwargs, needle in [
        ({"backend": "k8s"}, "backend"),
        ({"containers_per_pi": -1}, "containers_per_pi"),
        ({"controller": "udp:1.2.3.4:5"}, "controller"),
        ({"tenants": "/nonexistent.yaml"}, "tenants"),
    ]:
        with pytest.raises(FabricError if needle != "controller" else Exception, match=needle) as err:
            Testbed("linear:2", **kwargs)
        assert "\n" not in str(err.value)


def test_down_is_idempotent_and_usable_from_another_thread(leaves_nothing):
    tb = Testbed("linear:2", controller="none").up()
    leaves_nothing.append(tb.prefix)
    worker = threading.Thread(target=tb.down)
    worker.start()
    worker.join(60)
    tb.down()
