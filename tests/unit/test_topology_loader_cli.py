"""load_topology (specs, files, Mininet file:NAME, Topology objects) and `picloud topo show|export`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from picloud.cli import main
from picloud.errors import TopologyError
from topology.builders import build
from topology.formats import read_file
from topology.loader import load_topology
from topology.model import Topology

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "topologies"


def test_spec_file_and_object_sources() -> None:
    assert load_topology("fattree:4", containers_per_pi=3).counts()["containers"] == 48
    assert load_topology(FIXTURES / "two_racks.yaml").name == "two-racks"
    assert load_topology(str(FIXTURES / "star.graphml")).containers == ["app1", "app2"]
    topo = build("single:2")
    assert load_topology(topo) is topo


def test_files_without_containers_get_containers_per_pi() -> None:
    topo = load_topology(FIXTURES / "bare_rack.json", containers_per_pi=2)
    assert topo.containers == ["pi1-c1", "pi1-c2", "pi2-c1", "pi2-c2", "pi3-c1", "pi3-c2"]
    assert topo.ports("pi2") == {1: "tor1", 2: "pi2-c1", 3: "pi2-c2"}
    # A file that lists any container is complete as written.
    assert len(load_topology(FIXTURES / "two_racks.yaml", containers_per_pi=5).containers) == 2


def test_mininet_files_with_and_without_a_selector() -> None:
    assert load_topology(FIXTURES / "mininet_two_switch.py").pis == ["s3", "s4"]
    dc = load_topology(f"{FIXTURES}/mininet_datacenter.py:dc,racks=4,hosts=1")
    assert dc.pis == ["tor-1", "tor-2", "tor-3", "tor-4"] and len(dc.containers) == 4


def test_loaded_topologies_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "split.yaml"
    path.write_text("pis: [{name: a}, {name: b}]\n")
    with pytest.raises(TopologyError, match=r"split\.yaml: pi 'b' cannot reach pi 'a'"):
        load_topology(path)
    lonely = Topology(name="lonely")
    lonely.add_switch("s1")
    with pytest.raises(TopologyError, match=r"^lonely: no pis"):
        load_topology(lonely)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.yaml", "missing.yaml: no such file (give a topology file or a spec like fattree:4)"),
        ("dir/fattree.json", "dir/fattree.json: no such file"),
        ("mesh:4", "topology spec 'mesh:4': unknown family 'mesh'"),
        ("fattree:5", "K=5 is odd"),
    ],
)
def test_bad_sources(source: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        load_topology(source)
    assert message in str(err.value)


def test_containers_per_pi_is_checked_for_files_too() -> None:
    with pytest.raises(TopologyError, match="containers per Pi -1 must be a whole number >= 0"):
        load_topology(FIXTURES / "bare_rack.json", containers_per_pi=-1)


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", "show", "fattree:4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["topology", "fattree:4"]
    assert out[1] == "switches     20  (core 4, aggregation 8, edge 8)"
    assert out[2] == "pis          16  (in 8 racks)"
    assert out[3] == "containers   16  (1 per Pi)"
    assert out[4] == "links        48 fabric + 16 container attachments"
    assert out[5].startswith("diameter     6 links")
    assert out[6] == "bisection    8 links (exact: K^3/8, full bisection bandwidth)"


def test_cli_show_json_for_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", "show", str(FIXTURES / "bare_rack.json"), "--containers-per-pi", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["switches"], data["pis"], data["containers"]) == (1, 3, 6)
    assert data["bisection"] == {"links": 1, "exact": True,
                                 "method": "exact: dynamic programme over the tree-shaped fabric"}


def test_cli_export_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pc.json"
    assert main(["topo", "export", "picloud:2,3", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["name"] == "picloud:2,3"
    assert read_file(out).to_dict() == build("picloud:2,3").to_dict()
    assert main(["topo", "export", str(FIXTURES / "mininet_two_switch.py"), "--format", "yaml"]) == 0
    assert "- {a: s3, b: s4}" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", "show", "fattree:3"]) == 2
    err = capsys.readouterr().err
    assert err == "picloud: error: topology spec 'fattree:3': K=3 is odd (fattree:K needs an even K >= 2)\n"
    assert main(["topo", "export", "single", "-o", str(tmp_path / "t.txt")]) == 2
    assert "t.txt: cannot tell the format to write" in capsys.readouterr().err
    assert not (tmp_path / "t.txt").exists()


def test_show_of_a_mininet_python_file_warns_once_that_it_runs_code(tmp_path, capsys) -> None:
    """Issue 19 finding 9: loading a .py topology executes it (as root under `picloud up`); only a
    docstring said so."""
    from topology import loader

    source = tmp_path / "mine.py"
    source.write_text((FIXTURES / "mininet_two_switch.py").read_text())
    loader._warned.discard(str(source.resolve()))
    assert main(["topo", "show", str(source)]) == 0
    assert main(["topo", "show", str(source)]) == 0
    err = capsys.readouterr().err
    assert err.count("RUNS it as code") == 1 and "load only files you trust" in err
    assert main(["topo", "show", str(FIXTURES / "two_racks.yaml")]) == 0
    assert "RUNS it as code" not in capsys.readouterr().err
