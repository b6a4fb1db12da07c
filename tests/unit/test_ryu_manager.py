"""`ryu-manager`: Ryu's flags are taken, anything else is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from controller_apps import ryu_manager

ROOT = Path(__file__).resolve().parents[2]


def test_installed_as_a_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ryu-manager"] == "controller_apps.ryu_manager:main"


def test_ryu_flags_parse():
    args = ryu_manager.build_parser().parse_args(
        ["--ofp-tcp-listen-port", "6633", "--ofp-listen-host", "127.0.0.1", "--wsapi-host", "127.0.0.1",
         "--wsapi-port", "8081", "--observe-links", "--verbose", "--config-file", "x.conf", "a.py", "ryu.app.b"])
    assert args.ofp_tcp_listen_port == 6633 and args.wsapi_port == 8081 and args.observe_links
    assert args.apps == ["a.py", "ryu.app.b"] and args.config_file == "x.conf"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--enable-debugger", "a.py"], "unknown option --enable-debugger"),
    ([], "no app given"),
    (["--wsapi-port", "0", "a.py"], "--wsapi-port 0"),
    (["missing_app_file.py"], "no such file"),
])
def test_errors_are_one_line_exit_2(argv, needle):
    result = subprocess.run([sys.executable, "-m", "controller_apps.ryu_manager", *argv], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ryu-manager: error: ") and needle in lines[0]


def test_ryu_flags_become_the_runners_options(tmp_path):
    """The flags reach the runner as its own parsed options (every runner option has its default),
    and the app named as a Ryu module is imported and checked."""
    import socket

    from controller_apps import runner

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    args = ryu_manager.build_parser().parse_args(
        ["--ofp-tcp-listen-port", str(ports[0]), "--wsapi-port", str(ports[1]), "--api-open",
         "ryu.app.simple_switch_14"])
    options = runner.options_from(ryu_manager.runner_namespace(args))
    assert options.listen == ("127.0.0.1", ports[0]) and options.api == ("127.0.0.1", ports[1])
    assert options.api_open and options.apps == ["ryu.app.simple_switch_14"]
