"""`picloud tenant ...` against a running run (found with --run PREFIX, as a detached run is)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from picloud.runstate import RunState
from picloud.testbed import Testbed
from tenants.handle import current_plan

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def picloud(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picloud", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def run(tmp_path):
    spec = tmp_path / "tenants.yaml"
    spec.write_text("tenants: []\n")
    with Testbed("tree:2,2", containers_per_pi=1, tenants=spec) as tb:
        try:
            yield tb
        finally:
            # The CLI processes recorded their containers in the state file, not in this process's
            # copy of it: tear down from the file, as a second terminal would.
            picloud("down", "--run", tb.prefix)


def run_time_containers(tb) -> list[str]:
    """Containers created at run time, from the state file the CLI processes write."""
    return sorted(RunState.load(tb.prefix).extra.get("containers", {}))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "blue", "--subnet", "10.0.0/24"], "invalid CIDR '10.0.0/24'"),
        (["create", "blue", "--subnet", "10.0.0.0/24", "--subnet", "10.0.0.128/25"], "overlap"),
        (["create", "blue", "--subnet", "10.0.0.0/24", "--rate", "-3"], "must be a positive number"),
        (["create", "blue", "--subnet", "10.0.0.0/24", "--rate", "fast"], "is not a number"),
        (["add", "nobody", "--count", "1"], "no such tenant"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(run, args, message):
    before = (current_plan(run), run_time_containers(run))
    result = picloud("tenant", *args, "--run", run.prefix)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("picloud: error: ") and message in lines[0], result.stderr
    assert (current_plan(run), run_time_containers(run)) == before


def test_create_add_show_list_verify_remove(run):
    p = run.prefix
    assert picloud("tenant", "create", "blue", "--subnet", "10.0.0.0/24", "--run", p).returncode == 0
    assert picloud("tenant", "create", "red", "--subnet", "10.0.0.0/24", "--rate", "50", "--run", p).returncode == 0
    dup = picloud("tenant", "create", "red", "--subnet", "10.5.0.0/24", "--run", p)
    assert dup.returncode == 2 and "duplicate tenant" in dup.stderr
    pis = run.pis
    added = picloud("tenant", "add", "blue", "--count", "2", "--on", f"{pis[0]},{pis[-1]}", "--run", p)
    assert added.returncode == 0, added.stderr
    assert [line.split("\t")[1] for line in added.stdout.splitlines()] == [pis[0], pis[-1]]
    bad_pi = picloud("tenant", "add", "red", "--count", "1", "--on", "nope", "--run", p)
    assert bad_pi.returncode == 2 and "unknown pi 'nope'" in bad_pi.stderr
    assert picloud("tenant", "add", "red", "--count", "2", "--pack", "--run", p).returncode == 0

    listed = json.loads(picloud("tenant", "list", "--json", "--run", p).stdout)
    assert [(t["name"], t["members"]) for t in listed] == [("blue", 2), ("red", 2)]
    shown = json.loads(picloud("tenant", "show", "red", "--json", "--run", p).stdout)
    assert shown["rate"] == 50 and len({m["pi"] for m in shown["members"]}) == 1  # packed on one Pi
    assert all(m["port"] for m in shown["members"])
    text = picloud("tenant", "show", "blue", "--run", p).stdout
    assert "blue-1" in text and "10.0.0.2" in text

    verified = picloud("tenant", "verify", "--json", "--run", p)
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["ok"], verified.stdout[-2000:]
    assert report["matrix"] == {"blue": {"red": 0}, "red": {"blue": 0}}

    removed = picloud("tenant", "remove", "blue", "blue-1", "--run", p)
    assert removed.returncode == 0 and "blue-1" in removed.stdout
    assert run_time_containers(run) == ["blue-2", "red-1", "red-2"]
    assert picloud("tenant", "delete", "red", "--run", p).returncode == 0
    assert [t.name for t in current_plan(run).tenants] == ["blue"]
    assert run_time_containers(run) == ["blue-2"]
