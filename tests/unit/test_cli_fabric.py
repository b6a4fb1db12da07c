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
