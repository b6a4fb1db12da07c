"""Token and log files in the state directory (issue 19 items 1 and 4): 0600 files, 0700 directory."""

from __future__ import annotations

import stat

import pytest

from picloud import secrets_files
from picloud.errors import PiCloudError


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_file_is_0600_in_a_0700_directory(tmp_path):
    path = tmp_path / "state" / "pc1.api-token"
    token = secrets_files.write_token(path)
    assert len(token) >= 32 and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert secrets_files.read_token(path) == token
    assert secrets_files.ensure_token(path) == token


def test_a_token_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "t"
    secrets_files.write_token(path)
    path.chmod(0o644)
    with pytest.raises(PiCloudError, match="readable by other users"):
        secrets_files.read_token(path)


def test_private_log_is_narrowed_to_0600_and_symlinks_are_not_followed(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("old\n")
    log.chmod(0o644)
    with secrets_files.open_private(log) as f:
        f.write(b"new\n")
    assert mode(log) == 0o600 and log.read_text() == "old\nnew\n"
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "link.log").symlink_to(target)
    with pytest.raises(OSError):
        secrets_files.open_private(tmp_path / "link.log")


def test_state_dir_is_made_0700(tmp_path, monkeypatch):
    from picloud import runstate

    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path / "run"))
    state = runstate.allocate_prefix(wanted="pc777")
    assert mode(tmp_path / "run") == 0o700 and mode(state.path) == 0o600


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runner_creates_the_api_token_file_or_runs_open(tmp_path, monkeypatch):
    import argparse

    from controller_apps import runner
    from picloud.errors import ControllerError

    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    of, api = free_port(), free_port()
    base = ["l2_learning", "--listen", f"127.0.0.1:{of}", "--api", f"127.0.0.1:{api}"]
    opts = runner.options_from(parser.parse_args(base))
    assert opts.api_token_file == str(tmp_path / f"controller-{api}.api-token") and not opts.api_open
    assert mode(tmp_path / f"controller-{api}.api-token") == 0o600
    opts = runner.options_from(parser.parse_args(base + ["--api-open"]))
    assert opts.api_open and opts.api_token_file is None
    with pytest.raises(ControllerError, match="choose one"):
        runner.options_from(parser.parse_args(base + ["--api-open", "--api-token-file", "x"]))
    with pytest.raises(ControllerError, match="--api-host"):
        runner.options_from(parser.parse_args(base + ["--api-host", "a\nb"]))
