"""Run state: the record `picloud clean` trusts after a crash. Pure file work, no root."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from picloud.errors import FabricError
from picloud.runstate import RunState, allocate_prefix, api_port, list_runs, of_port


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def ports_free(monkeypatch):
    """Numbering tests must not depend on which ports live runs on this machine hold."""
    monkeypatch.setattr("picloud.runstate._ports_free", lambda n: True)


def test_a_freed_prefix_is_not_handed_out_again_until_the_others_were(state_dir, ports_free):
    """A run that has ended is checked for leftovers under its prefix; the next run on the host
    must not take that prefix at once (round robin, not lowest free)."""
    a, b = allocate_prefix(), allocate_prefix()
    assert (a.prefix, b.prefix) == ("pc1", "pc2")
    a.delete()
    assert allocate_prefix().prefix == "pc3"
    assert list_runs() == ["pc2", "pc3"]


def test_prefixes_wrap_after_999_and_skip_taken_ones(state_dir, ports_free):
    allocate_prefix(wanted="pc1")
    (state_dir / ".last-prefix").write_text("998\n")
    assert [allocate_prefix().prefix for _ in range(3)] == ["pc999", "pc2", "pc3"]
    (state_dir / ".last-prefix").write_text("garbage")
    assert allocate_prefix().prefix == "pc4"  # an unreadable cursor starts from the lowest free


def test_runs_sort_numerically(state_dir, ports_free):
    for n in (1, 2, 10, 3):
        allocate_prefix(wanted=f"pc{n}")
    assert list_runs() == ["pc1", "pc2", "pc3", "pc10"]


def _claim(_):
    return allocate_prefix().prefix


def test_concurrent_claims_never_share_a_prefix(state_dir):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        got = pool.map(_claim, range(24))
    assert len(set(got)) == 24


def test_wanted_prefix_rules(state_dir):
    allocate_prefix(wanted="pc7")
    with pytest.raises(FabricError, match="already in use"):
        allocate_prefix(wanted="pc7")
    for bad in ("pc0", "xx1", "pc1000", "pc-1", "pc01"):
        with pytest.raises(FabricError, match="invalid"):
            allocate_prefix(wanted=bad)


def test_intent_is_on_disk_before_the_object_exists(state_dir, ports_free):
    state = allocate_prefix(owner={"pid": 1, "start_ticks": 1, "argv0": "x", "role": "t"})
    state.intend("netns", ["pc1c0", "pc1c1"])
    on_disk = json.loads(state.path.read_text())
    assert on_disk["objects"]["netns"] == ["pc1c0", "pc1c1"]
    assert on_disk["extra"]["owner"]["pid"] == 1
    state.intend("netns", ["pc1c1", "pc1c2"])
    state.forget("netns", ["pc1c0"])
    assert RunState.load("pc1").objects["netns"] == ["pc1c1", "pc1c2"]


def test_delete_removes_every_file_of_the_run_and_only_those(state_dir, ports_free):
    one, ten = allocate_prefix(wanted="pc1"), allocate_prefix(wanted="pc10")
    for name in ("pc1.tenants.yaml", "pc1.controller.log", "pc1.tenants.yaml.lock", "pc10.controller.log"):
        (state_dir / name).write_text("x")
    one.delete()
    assert sorted(p.name for p in state_dir.iterdir() if not p.name.startswith(".")) == [
        "pc10.controller.log", "pc10.json"]
    assert ten.path.exists()


def test_load_errors_are_one_line(state_dir):
    with pytest.raises(FabricError, match="no state file"):
        RunState.load("pc3")
    (state_dir / "pc3.json").write_text("{not json")
    with pytest.raises(FabricError, match="unreadable run state") as err:
        RunState.load("pc3")
    assert "\n" not in str(err.value)


def test_ports_per_run_never_collide():
    assert (of_port("pc1"), api_port("pc1")) == (6701, 8201)
    assert len({of_port(f"pc{n}") for n in range(1, 1000)} | {api_port(f"pc{n}") for n in range(1, 1000)}) == 1998


def test_a_prefix_whose_ports_are_taken_is_skipped(state_dir):
    import socket

    from picloud.runstate import _ports_free

    n = next(i for i in range(1, 100) if _ports_free(i))
    with socket.socket() as squatter:  # e.g. a stray controller of a crashed run
        squatter.bind(("127.0.0.1", 6700 + n))
        squatter.listen()
        got = allocate_prefix().prefix
    assert got != f"pc{n}" and _ports_free(int(got[2:]))
