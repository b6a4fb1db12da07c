"""YAML/JSON round trips, GraphML reading, and files that are not what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from picloud.errors import TopologyError
from topology.builders import build
from topology.formats import detect, dumps, parse_graphml, read_file, sniff, write_file
from topology.model import Topology

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "topologies"
SPECS = ["single:3", "linear:4", "tree:2,3", "fattree:4", "leafspine:2,3,2", "picloud:4,14"]


def wiring(topo: Topology) -> list[tuple]:
    return [(ln.a, ln.b, ln.port_a, ln.port_b, tuple(sorted(ln.attrs().items()))) for ln in topo.links]


def one_line_error(path: Path) -> str:
    with pytest.raises(TopologyError) as err:
        read_file(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ":"), message
    return message


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("spec", SPECS)
def test_builders_round_trip_with_the_same_ports(tmp_path: Path, spec: str, fmt: str) -> None:
    topo = build(spec, containers_per_pi=2)
    path = write_file(topo, tmp_path / f"t.{'yml' if fmt == 'yaml' else fmt}")
    again = read_file(path)
    assert again.to_dict() == topo.to_dict()
    assert wiring(again) == wiring(topo)
    assert [again.short_id(n) for n in again.bridges] == [topo.short_id(n) for n in topo.bridges]


def test_shaped_links_and_explicit_addresses_round_trip(tmp_path: Path) -> None:
    topo = read_file(FIXTURES / "two_racks.yaml")
    assert topo.link("core1", "tor2").attrs() == {"bw": 1000.0, "delay": "1ms", "loss": 0.5, "queue": 200}
    assert topo.node("web1").ip == "192.168.0.10/24"
    assert topo.node("db1").mac == "02:aa:00:00:00:01"
    assert topo.node("db1").ip == "10.0.0.2/8"  # defaults follow the container's index
    assert topo.link("db1", "pi2-1").attrs() == {"bw": 50.0}
    for fmt in ("yaml", "json"):
        again = read_file(write_file(topo, tmp_path / f"x.{fmt}"))
        assert again.to_dict() == topo.to_dict() and wiring(again) == wiring(topo)


def test_yaml_output_is_one_entry_per_line() -> None:
    text = dumps(build("single:2"), "yaml")
    assert "- {name: s1, role: tor}" in text.splitlines()


def test_write_needs_a_known_format(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"t\.txt: cannot tell the format to write"):
        write_file(build("single"), tmp_path / "t.txt")
    with pytest.raises(TopologyError, match="cannot write it"):
        dumps(build("single"), "graphml")
    assert not list(tmp_path.iterdir()), "a refused write leaves no file behind"


def test_json_without_containers_reads_as_bare_pis() -> None:
    topo = read_file(FIXTURES / "bare_rack.json")
    assert topo.pis == ["pi1", "pi2", "pi3"] and topo.containers == []


def test_graphml_is_read_with_kinds_and_attributes() -> None:
    topo = read_file(FIXTURES / "star.graphml")
    assert topo.switches == ["tor1"] and topo.node("tor1").role == "tor"
    assert topo.pis == ["pi1", "pi2"] and topo.node("pi1").rack == 1
    assert topo.containers == ["app1", "app2"]  # `host` is accepted for container
    assert topo.node("app1").pi == "pi1" and topo.node("app1").ip == "10.1.0.1/16"
    assert topo.link("app1", "pi1").attrs() == {"bw": 10.0}
    assert topo.link("tor1", "pi1").attrs() == {"bw": 100.0, "delay": "2ms"}
    assert topo.ports("pi1") == {1: "tor1", 2: "app1"}  # fabric links first, containers last


GRAPHML_HEAD = ('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                '<key id="k" for="node" attr.name="kind" attr.type="string"/>'
                '<key id="p" for="node" attr.name="pi" attr.type="string"/>'
                '<key id="b" for="edge" attr.name="bw" attr.type="string"/>'
                '<graph edgedefault="undirected">')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<node id="s1"/>', "x.graphml: node 's1': no 'kind' or 'type' attribute (GraphML nodes need kind=switch"),
        ('<node id="s1"><data key="k">router</data></node>',
         "x.graphml: node 's1': unknown kind 'router' (switch, pi or container)"),
        ('<node id="p1"><data key="k">pi</data></node><node id="p2"><data key="k">pi</data></node>'
         '<node id="c"><data key="k">container</data></node><edge source="c" target="p1"/>'
         '<edge source="c" target="p2"/>',
         "x.graphml: container 'c': 2 links (a container has exactly one link, to its pi)"),
        ('<node id="p1"><data key="k">pi</data></node><node id="c"><data key="k">container</data>'
         '<data key="p">p9</data></node><edge source="c" target="p1"/>',
         "x.graphml: container 'c': attribute pi='p9' but its link goes to 'p1'"),
        ('<node id="s1"><data key="k">switch</data></node><node id="p1"><data key="k">pi</data></node>'
         '<edge source="s1" target="p1"><data key="b">fast</data></edge>',
         "x.graphml: link 's1'-'p1': bw: 'fast' is not a number"),
        ('<node id="S_1"><data key="k">switch</data></node>', "x.graphml: switch 'S_1': invalid name"),
    ],
)
def test_graphml_errors_name_the_node(body: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse_graphml(GRAPHML_HEAD + body + "</graph></graphml>", "x.graphml")
    assert message in str(err.value)


def test_graphml_parallel_edges_are_refused(tmp_path: Path) -> None:
    body = ('<node id="s1"><data key="k">switch</data></node><node id="p1"><data key="k">pi</data></node>'
            '<edge source="s1" target="p1"/><edge source="s1" target="p1"/>')
    path = tmp_path / "multi.graphml"
    path.write_text(GRAPHML_HEAD + body + "</graph></graphml>")
    assert "parallel edges (one link per pair of nodes)" in one_line_error(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("claims.json", "name: x\nswitches: []\n", "the extension says JSON but the content is YAML"),
        ("page.graphml", "<html><body>404</body></html>", "the extension says GraphML but the content is XML"),
        ("t.yaml", "<graphml xmlns='http://graphml.graphdrawing.org/xmlns'/>",
         "the extension says YAML but the content is GraphML"),
        ("t.yaml", "from mininet.topo import Topo\n", "the extension says YAML but the content is Python"),
        ("t.graphml", "<graphml><graph>", "(not well-formed XML)"),
        ("t.graphml", "<graphml><unclosed></graphml>", "(not well-formed XML)"),
        ("t.graphml", "<foo><graphml/></foo>", "root element is <foo>, not <graphml>"),
        ("t.yaml", "switches: [a, b\n", "line 2: "),
        ("t.yaml", "- just\n- a list\n", "top level is list, expected a mapping"),
        ("t.yaml", "name: a\nname: b\n", "line 2: duplicate key 'name' (not valid YAML)"),
        ("t.json", '{"name": "a",\n "name": "b"}', "duplicate key 'name' (JSON keys must be unique)"),
        ("t.json", '{"name": "a",\n}', "line 2: "),
        ("t.json", "[1, 2]", "top level is a JSON list"),
        ("t.yaml", "switches: [{name: s1}]\nlinks: [{a: s1, b: s9}]\n",
         "link 's1'-'s9': unknown node 's9' (links must join declared nodes)"),
        ("t.yaml", "switches: [{name: s1}]\nracks: 3\n", "unknown key 'racks' (allowed: name, switches"),
        ("t.yaml", "pis: [{name: p1}]\ncontainers: [{name: c1, pi: p1, ip: banana}]\n",
         "container 'c1': invalid ip 'banana'"),
        ("t.yaml", "pis: [{name: p1, rack: first}]\n", "pi 'p1': rack 'first' must be a whole number >= 0"),
        ("t.yaml", "pis: [{name: p1}]\ncontainers: [{name: c1, pi: p1, link: {color: 1}}]\n",
         "container 'c1': 'link' takes only bw, delay, jitter, loss, queue"),
        ("t.txt", "<svg/>", "XML but not GraphML"),
    ],
)
def test_files_that_are_not_what_they_claim(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert message in one_line_error(path)


def test_binary_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "t.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    assert "binary content (topology files are text)" in one_line_error(binary)
    latin = tmp_path / "t.json"
    latin.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    assert "not UTF-8 text (byte 13" in one_line_error(latin)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert one_line_error(tmp_path / "nope.yaml").endswith("no such file")
    assert "is a directory" in one_line_error(tmp_path)


def test_unknown_extension_is_read_by_content(tmp_path: Path) -> None:
    path = tmp_path / "rack.topo"
    path.write_text(dumps(build("single:2"), "json"))
    assert read_file(path).pis == ["pi1", "pi2"]
    assert detect(path, path.read_text()) == "json"


def test_sniff() -> None:
    assert sniff("\ufeff  {\"a\": 1}") == "json"
    assert sniff("<?xml version='1.0'?><graphml>") == "graphml"
    assert sniff("<html/>") == "xml"
    assert sniff("import os\n") == "python"
    assert sniff("name: x\n") == "yaml"
    # JSON is YAML: a .yaml file holding JSON is fine.
    assert detect("t.yaml", '{"name": "x"}') == "yaml"
