"""`picloud ui`: registered with the dispatcher, safe defaults, errors as one line."""

from __future__ import annotations

import pytest

from picloud.cli import build_parser, main


def test_ui_command_defaults_to_loopback_8080():
    args = build_parser().parse_args(["ui"])
    assert (args.host, args.port, args.run, args.results) == ("127.0.0.1", 8080, None, "results")
    assert args.interval < 1.0, "an update at least once a second"


def test_ui_without_a_run_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path))
    assert main(["ui"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("picloud: error: ") and err.count("\n") == 1


def test_ui_rejects_a_bad_port():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ui", "--port", "eighty"])
