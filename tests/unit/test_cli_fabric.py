"""CLI errors that must be refused before anything is built (no root needed to prove that)."""

from __future__ import annotations

import pytest

from picloud.cli import main


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("argv, needle", [
    (["up", "fattree:3"], "odd"),
    (["up", "torus:4"], "torus"),
    (["up", "linear:2", "--controller", "udp:x"], "controller"),
    (["up", "linear:2", "--controller", "tcp:127.0.0.1:6653", "--apps", "l2_learning"], "choose one"),
    (["up", "linear:2", "--image", "x"], "--image"),
    (["up", "linear:2", "--tenants", "/nonexistent/t.yaml"], "tenants"),
    (["up", "linear:2", "--containers-per-pi", "-3"], "containers"),
    (["down"], "no PiCloud run is up"),
    (["exec", "c1", "--", "true"], "no PiCloud run is up"),
    (["down", "--run", "pc9"], "pc9"),
])
def test_bad_input_one_line_exit_2_nothing_created(argv, needle, capsys, state_dir):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("picloud: error:") and needle in err[0], err
    assert not list(state_dir.glob("pc*.json"))


def test_status_with_no_runs(capsys):
    assert main(["status"]) == 0
    assert "no PiCloud runs" in capsys.readouterr().out


@pytest.mark.parametrize("content, needle", [
    ("tenants: [\n", "not valid YAML"),
    ("tenants:\n  - {name: blue, subnet: 10.0.0.0/24, colour: blue}\n", "unknown key 'colour'"),
    ("tenants:\n  - {name: blue, subnet: 10.0.0.0/24, count: 2, placement: 'pi9-9'}\n", "pi9-9"),
    ("tenants:\n  - {name: blue, subnet: 10.0.0.0/30, count: 5}\n", "blue"),
    ("wrong: 1\n", "wrong"),
])
def test_a_bad_tenants_file_is_refused_before_anything_is_built(content, needle, tmp_path, capsys, state_dir,
                                                                  monkeypatch):
    """No run is allocated, no controller started, no bridge made: the file is read first."""
    import picloud.testbed

    def no_building(*args, **kwargs):
        raise AssertionError("a run was allocated for a bad tenants file")

    monkeypatch.setattr(picloud.testbed, "allocate_prefix", no_building)
    path = tmp_path / "t.yaml"
    path.write_text(content)
    assert main(["up", "linear:2", "--tenants", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("picloud: error:") and needle in err[0], err
    assert not list(state_dir.glob("pc*.json"))


def test_a_tenants_file_without_the_tenancy_app_is_refused_first(tmp_path, capsys, state_dir):
    path = tmp_path / "t.yaml"
    path.write_text("tenants:\n  - {name: blue, subnet: 10.0.0.0/24, count: 2}\n")
    for extra in (["--controller", "none"], ["--apps", "l2_learning"]):
        assert main(["up", "linear:2", "--tenants", str(path), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "tenancy" in err[0], err
    assert not list(state_dir.glob("pc*.json"))


def _typed_options(parser, path=()):
    """Every (subcommand path, option string, type) with an int or float type, over all subparsers."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _typed_options(sub, (*path, name))
        elif action.option_strings and action.type in (int, float):
            yield path, action.option_strings[-1], action.type


def test_every_type_error_in_every_subcommand_is_one_line_and_exit_2(capsys):
    """e.g. `picloud up tree:2,2 --containers-per-pi abc`, `picloud traffic run --load abc`."""
    from picloud.cli import build_parser

    cases = list(_typed_options(build_parser()))
    assert (("up",), "--containers-per-pi", int) in cases and any(c[:2] == (("traffic", "run"), "--load")
                                                                   for c in cases)
    for path, option, kind in cases:
        with pytest.raises(SystemExit) as exit_:
            main([*path, option, "abc"])
        assert exit_.value.code == 2, (path, option)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"picloud: error: {' '.join(path)}: argument {option}"), err
        assert f"invalid {kind.__name__} value: 'abc'" in err[0], err


def test_a_huge_failed_command_is_reported_in_one_short_line():
    """The 1,000-container build's single ovs-vsctl transaction timed out with a 100 KB argv."""
    import subprocess

    from topology.backends.local import brief

    argv = ["ovs-vsctl", "--timeout=300", "--"] + ["add-port", "pc3p1", "pc3p1p2"] * 5000
    line = brief(subprocess.TimeoutExpired(argv, 310))
    assert line == "'ovs-vsctl --timeout=300 -- ...' (15003 arguments) timed out after 310s"
    long = brief(RuntimeError("x" * 10_000 + "\nsecond line"))
    assert "\n" not in long and len(long) < 400 and long.endswith("(10012 characters)")
