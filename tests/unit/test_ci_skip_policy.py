"""Under CI a skip for a missing component fails the run; only an allow-listed kernel feature may skip.

Runs pytest itself on a throw-away suite that uses this repository's tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SUITE = '''
import pytest

def test_passes():
    pass

def test_missing_component():
    pytest.skip("needs Debian's chromium: run 'make setup'")

def test_missing_kernel_feature():
    pytest.skip("kernel feature netem missing: sch_netem is not built for this kernel")

def test_unlisted_kernel_feature():
    pytest.skip("kernel feature teleport missing: not on the allow-list")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''


def run_suite(tmp_path: Path, ci: str | None, body: str = SUITE) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_without_ci_a_missing_component_skips(tmp_path: Path) -> None:
    run = run_suite(tmp_path, None)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in run.stdout


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_under_ci_a_missing_component_fails_and_a_kernel_feature_skips(tmp_path: Path, ci: str) -> None:
    run = run_suite(tmp_path, ci)
    assert run.returncode == 1, run.stdout
    assert "FAILED test_suite.py::test_missing_component" in run.stdout
    assert "FAILED test_suite.py::test_unlisted_kernel_feature" in run.stdout
    assert "SKIPPED" in run.stdout and "kernel feature netem missing" in run.stdout
    assert "2 failed, 1 passed, 1 skipped, 1 xfailed" in run.stdout


@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_ci_set_to_false_is_not_ci(tmp_path: Path, ci: str) -> None:
    assert run_suite(tmp_path, ci).returncode == 0


def test_under_ci_collecting_nothing_fails(tmp_path: Path) -> None:
    """pytest's exit code 5 (no tests) must not pass CI unnoticed; it becomes a plain failure."""
    assert run_suite(tmp_path, None, body="").returncode == pytest.ExitCode.NO_TESTS_COLLECTED
    assert run_suite(tmp_path, "true", body="").returncode == pytest.ExitCode.TESTS_FAILED


def test_ci_entry_point_updates_apt_then_runs_make_test_as_ci() -> None:
    script = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert "set -euo pipefail" in lines  # a failing step (pytest's exit 1 or 5) fails CI
    assert 'export CI="${CI:-true}"' in lines
    assert lines.index("apt-get update -qq") < lines.index("make test")
