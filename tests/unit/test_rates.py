"""Pi-model NIC rates on Pi uplinks, `--bw` on fabric links, and impairments read from files."""

from __future__ import annotations

import textwrap

import pytest

from picloud.errors import TopologyError
from topology.builders import build
from topology.inventory import PI_MODELS
from topology.loader import load_topology


def uplink_rates(topo):
    return {topo.link(a, b).bw for a, b in
            [(ln.a, ln.b) for ln in topo.links if {topo.kind(ln.a), topo.kind(ln.b)} == {"pi", "switch"}]}


@pytest.mark.parametrize(("model", "mbit"), [("b", 100), ("b+", 100), ("2", 100), ("3", 100), ("3b+", 300),
                                             ("4", 1000), ("5", 1000)])
def test_each_pi_model_has_its_published_nic_rate(model, mbit):
    assert PI_MODELS[model].nic_mbit == mbit
    assert uplink_rates(build("fattree:2", 1, pi_model=model)) == {mbit}


def test_picloud_defaults_to_model_b_and_leaves_the_rest_unshaped():
    topo = build("picloud:2,3", 2)
    assert uplink_rates(topo) == {100.0}
    assert all(topo.link(ln.a, ln.b).bw is None for ln in topo.links
               if "container" in (topo.kind(ln.a), topo.kind(ln.b)) or topo.kind(ln.a) == topo.kind(ln.b))
    assert uplink_rates(build("picloud:2,3", 1, pi_model="4")) == {1000.0}


def test_other_builders_stay_unshaped_without_a_model():
    assert uplink_rates(build("leafspine:2,2,2")) == {None}


def test_bw_sets_every_switch_to_switch_link_only():
    topo = build("fattree:4", 1, bw=1000)
    for ln in topo.links:
        both_switches = topo.kind(ln.a) == topo.kind(ln.b) == "switch"
        assert (ln.bw == 1000.0) == both_switches, ln


def test_bad_model_and_bad_bw_are_refused():
    with pytest.raises(TopologyError, match=r"--pi-model: pi model 'zero': unknown \(one of b, b\+"):
        build("picloud:1,1", pi_model="zero")
    with pytest.raises(TopologyError, match=r"--bw: -1 must be a positive number of Mbit/s"):
        build("fattree:2", bw=-1)


def test_the_model_applies_to_files_too(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("switches: [{name: s1}]\npis: [{name: p1}, {name: p2}]\n"
                    "links: [{a: s1, b: p1}, {a: s1, b: p2, bw: 5}]\n")
    assert uplink_rates(load_topology(str(path))) == {None, 5.0}
    assert uplink_rates(load_topology(str(path), pi_model="3b+")) == {300.0}


def test_impairments_come_from_yaml_graphml_and_mininet_files(tmp_path):
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("switches: [{name: s1}, {name: s2}]\npis: [{name: p1}]\n"
                         "links: [{a: s1, b: s2, bw: 10, delay: 5ms, jitter: 1ms, loss: 2, queue: 30},"
                         " {a: s1, b: p1}]\n")
    link = load_topology(str(yaml_file)).link("s1", "s2")
    assert (link.bw, link.delay, link.jitter, link.loss, link.queue) == (10.0, "5ms", "1ms", 2.0, 30)

    graphml = tmp_path / "t.graphml"
    graphml.write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="UTF-8"?>
        <graphml xmlns="http://graphml.graphdrawing.org/xmlns">
          <key id="kind" for="node" attr.name="kind" attr.type="string"/>
          <key id="bw" for="edge" attr.name="bw" attr.type="double"/>
          <key id="delay" for="edge" attr.name="delay" attr.type="string"/>
          <key id="jitter" for="edge" attr.name="jitter" attr.type="string"/>
          <key id="loss" for="edge" attr.name="loss" attr.type="double"/>
          <key id="queue" for="edge" attr.name="queue" attr.type="int"/>
          <graph edgedefault="undirected">
            <node id="s1"><data key="kind">switch</data></node>
            <node id="s2"><data key="kind">switch</data></node>
            <node id="p1"><data key="kind">pi</data></node>
            <edge source="s1" target="s2"><data key="bw">20</data><data key="delay">3ms</data>
              <data key="jitter">1ms</data><data key="loss">1</data><data key="queue">40</data></edge>
            <edge source="s1" target="p1"/>
          </graph>
        </graphml>
        """))
    link = load_topology(str(graphml)).link("s1", "s2")
    assert (link.bw, link.delay, link.jitter, link.loss, link.queue) == (20.0, "3ms", "1ms", 1.0, 40)

    mn = tmp_path / "mn.py"
    mn.write_text(textwrap.dedent("""\
        from mininet.topo import Topo
        class T(Topo):
            def build(self):
                s1, s2 = self.addSwitch("s1"), self.addSwitch("s2")
                h = self.addHost("h1")
                self.addLink(s1, s2, bw=50, delay="4ms", jitter="1ms", loss=3, max_queue_size=60)
                self.addLink(h, s1)
        topos = {"t": T}
        """))
    link = load_topology(str(mn)).link("s1", "s2")
    assert (link.bw, link.delay, link.jitter, link.loss, link.queue) == (50.0, "4ms", "1ms", 3.0, 60)
