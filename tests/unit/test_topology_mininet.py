"""Mininet-style Python topology files, loaded without Mininet installed."""

from __future__ import annotations

import logging
import sys
import textwrap
import types
from pathlib import Path

import pytest

from picloud.errors import TopologyError
from topology.mininet_files import load_file, natural, split_args

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "topologies"


def write(tmp_path: Path, body: str, name: str = "topo.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def load_error(path: Path, selector: str | None = None) -> str:
    with pytest.raises(TopologyError) as err:
        load_file(path, selector)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path) + ":"), message
    return message


def test_mininet_custom_example_two_switches() -> None:
    topo = load_file(FIXTURES / "mininet_two_switch.py")
    assert topo.name == "mytopo"
    assert topo.switches == [] and topo.pis == ["s3", "s4"]  # each switch has a host: both are Pis
    assert topo.containers == ["h1", "h2"]
    assert [topo.node(h).pi for h in topo.containers] == ["s3", "s4"]
    assert [topo.node(h).ip for h in topo.containers] == ["10.0.0.1/8", "10.0.0.2/8"]  # Mininet's defaults
    assert topo.ports("s3") == {1: "s4", 2: "h1"}


def test_tclink_parameters_ips_and_macs_are_honoured(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="topology.mininet_files"):
        topo = load_file(FIXTURES / "mininet_dumbbell_tc.py", "dumbbell")
    assert topo.pis == ["s1", "s2"]
    assert topo.link("s1", "s2").attrs() == {"bw": 10.0, "delay": "5ms", "loss": 1.0, "queue": 100}
    assert topo.link("h1", "s1").attrs() == {"bw": 100.0, "delay": "1ms"}
    assert topo.node("h2").ip == "192.168.1.2/24"
    assert topo.node("h3").mac == "00:00:00:00:01:03"
    assert "dpid (switch s2)" in caplog.text and "cpu (host h1)" in caplog.text
    assert "protocols" not in caplog.text  # Mininet plumbing is ignored quietly


def test_topos_arguments_as_mn_topo_passes_them() -> None:
    assert load_file(FIXTURES / "mininet_dumbbell_tc.py", "dumbbell,bw=5").link("s1", "s2").bw == 5.0
    star = load_file(FIXTURES / "mininet_dumbbell_tc.py", "star,5")
    assert star.pis == ["hub"] and len(star.containers) == 5
    assert split_args("dc,3,fanout=2,mode=fast,x=0.5") == ("dc", [3], {"fanout": 2, "mode": "fast", "x": 0.5})


def test_datacenter_names_are_sanitised_and_plain_switches_keep_a_role() -> None:
    topo = load_file(FIXTURES / "mininet_datacenter.py", "dc,racks=3")
    assert topo.switches == ["core1", "core2"] and {topo.node(s).role for s in topo.switches} == {"core"}
    assert topo.pis == ["tor-1", "tor-2", "tor-3"]
    assert topo.containers_on("tor-2") == ["rack2-host1", "rack2-host2"]
    assert topo.link("tor-1", "core2").bw == 1000.0


def test_several_topos_need_a_name() -> None:
    message = load_error(FIXTURES / "mininet_dumbbell_tc.py")
    assert "several topologies (dumbbell, star); pick one with" in message
    assert "no topology 'ring' (the file defines: dumbbell, star)" in load_error(
        FIXTURES / "mininet_dumbbell_tc.py", "ring"
    )


def test_a_host_on_two_switches_is_refused() -> None:
    assert "host 'h1': linked to 's1' and 's2' (a host becomes a container, linked to exactly one switch)" in (
        load_error(FIXTURES / "mininet_dual_homed.py")
    )


def test_stand_in_modules_exist_only_during_the_load() -> None:
    sentinel = types.ModuleType("mininet")
    sys.modules["mininet"] = sentinel
    try:
        load_file(FIXTURES / "mininet_two_switch.py")
        assert sys.modules["mininet"] is sentinel
        assert "mininet.topo" not in sys.modules
    finally:
        del sys.modules["mininet"]
    load_file(FIXTURES / "mininet_two_switch.py")
    assert not [m for m in sys.modules if m == "mininet" or m.startswith("mininet.")]
    assert str(FIXTURES) not in sys.path


def test_library_topologies_and_sibling_helpers(tmp_path: Path) -> None:
    write(tmp_path, "RACKS = 2\n", "site_params.py")
    path = write(tmp_path, """
        from mininet.topolib import TreeTopo
        from mininet.topo import LinearTopo, SingleSwitchTopo
        from site_params import RACKS
        topos = {'tree': lambda: TreeTopo(depth=2, fanout=RACKS), 'linear': LinearTopo,
                 'single': lambda: SingleSwitchTopo(k=3)}
    """)
    tree = load_file(path, "tree")
    assert tree.switches == ["s1"] and tree.pis == ["s2", "s3"]
    assert tree.containers == ["h1", "h2", "h3", "h4"] and tree.node("h3").pi == "s3"
    linear = load_file(path, "linear,3")
    assert linear.pis == ["s1", "s2", "s3"] and len(linear.fabric_links()) == 2
    assert len(load_file(path, "single").containers) == 3
    sys.modules.pop("site_params", None)


def test_topo_built_in_init_and_the_only_class_without_topos(tmp_path: Path) -> None:
    path = write(tmp_path, """
        from mininet.topo import Topo
        from mininet.net import Mininet

        class Old(Topo):
            "Pre-2.2 style: everything in __init__."
            def __init__(self, n=2, **opts):
                Topo.__init__(self, **opts)
                s = self.addSwitch('spine1')
                for i in range(n):
                    leaf = self.addSwitch('leaf%d' % i)
                    self.addLink(s, leaf)
                    self.addLink(self.addHost('h%d' % i), leaf, bw=10)

        if __name__ == '__main__':
            Mininet(topo=Old()).start()
    """)
    topo = load_file(path)
    assert topo.name == "Old"
    assert topo.switches == ["spine1"] and topo.node("spine1").role == "spine"
    assert topo.pis == ["leaf0", "leaf1"]
    assert topo.link("h1", "leaf1").bw == 10.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def broken(:\n", "line 1: invalid syntax (not valid Python)"),
        ("x = 1\n", "no Topo subclass and no 'topos' dict (not a Mininet topology file)"),
        ("topos = [1]\n", "'topos' is a list (Mininet files map names to topology constructors"),
        ("from mininet.net import Mininet\nnet = Mininet()\n",
         "Mininet(...) runs a Mininet network (PiCloud loads only the Topo"),
        ("import mininet.examples.linearbandwidth\n", "line 1: imports mininet.examples, which PiCloud's"),
        ("import sys\nsys.exit(1)\n", "line 2: the file called exit() while loading"),
        ("from mininet.topo import Topo\nclass A(Topo): pass\nclass B(Topo): pass\n",
         "several Topo classes (A, B) and no 'topos' dict; pick one with"),
        ("from mininet.topo import Topo\nclass T(Topo):\n    def build(self):\n        1 / 0\n",
         "line 4: ZeroDivisionError: division by zero (raised by the topology file)"),
        ("topos = {'t': lambda: 42}\n", "topology 't' built a int, not a mininet Topo"),
    ],
)
def test_file_errors_are_one_line(tmp_path: Path, body: str, message: str) -> None:
    assert message in load_error(write(tmp_path, body))


TOPO = "from mininet.topo import Topo\nclass T(Topo):\n    def build(self):\n"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ("h1 = self.addHost('h1'); h2 = self.addHost('h2'); self.addLink(h1, h2)",
         "link 'h1'-'h2': joins two hosts"),
        ("self.addSwitch('s1'); self.addHost('h1')", "host 'h1': not linked to any switch"),
        ("self.addSwitch('s1'); self.addLink('s1', 's9')", "link 's1'-'s9': unknown node 's9'"),
        ("s = self.addSwitch('s1'); h = self.addHost('h1'); self.addLink(h, s); self.addLink(s, h)",
         "link 's1'-'h1': parallel link (PiCloud has one link per pair of nodes)"),
        ("s = self.addSwitch('s1'); self.addLink(self.addHost('h_1'), s); self.addLink(self.addHost('h-1'), s)",
         "'h-1' and 'h_1' both become 'h-1' (node names must be unique)"),
        ("s = self.addSwitch('s1'); self.addLink(self.addHost('h@1'), s)",
         "host 'h@1': cannot become a PiCloud name (names are 1-32 characters of [a-z0-9-]"),
        ("s = self.addSwitch('s1'); self.addLink(self.addHost('h1'), s, delay='fast')",
         "link 'h1'-'s1': delay 'fast' must look like '2ms'"),
        ("s = self.addSwitch('s1'); self.addLink(self.addHost('h1', ip='10.0.0.300'), s)",
         "container 'h1': invalid ip '10.0.0.300'"),
    ],
)
def test_mapping_errors_name_the_node(tmp_path: Path, build: str, message: str) -> None:
    assert message in load_error(write(tmp_path, TOPO + "        " + build + "\ntopos = {'t': T}\n"))


def test_natural_order_matches_mininet() -> None:
    assert sorted(["h10", "h2", "h1"], key=natural) == ["h1", "h2", "h10"]
