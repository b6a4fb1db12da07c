"""The fabric benchmark's moving parts on real OVS: the Mininet peer builds, carries TCP and leaves nothing;
it refuses to start next to objects that carry its prefix; a PiCloud child reports its time split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is scripts, not an installed package

from bench import fabric_bench as fb  # noqa: E402
from topology.builders import build  # noqa: E402

PREFIX = "mnt"  # not the benchmark's "mnb": a test never touches a benchmark running at the same time

pytestmark = pytest.mark.root


def mininet_installed() -> bool:
    probe = subprocess.run([fb.MININET_PYTHON, "-c", "import mininet.net"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def peer():
    if not mininet_installed():
        pytest.skip("needs Debian's mininet (the benchmark installs it: python -m bench.fabric_bench)")
    yield
    fb.remove_mininet_leftovers(PREFIX, None)


def mininet_shells(prefix: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"mininet:{prefix}"], capture_output=True, text=True).stdout
    return out.split()


def test_mininet_peer_builds_carries_tcp_and_leaves_nothing(peer, tmp_path):
    graph = fb.mininet_graph(build("single:2").to_dict(), prefix=PREFIX, same=True)  # h - s - s - s - h
    result, whole = fb.one_mininet(graph, tmp_path, iperf_s=1.0, rounds=1)
    assert (result["switches"], result["hosts"]) == (3, 2)
    assert 0 < result["build_s"] < whole and result["down_s"] > 0
    assert result["iperf_mbps"][0] > 1.0  # TCP crossed three userspace bridges
    assert result["leftovers_removed"] == []
    assert fb.mininet_leftovers(PREFIX) == []
    assert mininet_shells(PREFIX) == []


def test_mininet_peer_refuses_next_to_prefixed_objects_and_leaves_them_alone(peer, tmp_path):
    subprocess.run(["ip", "link", "add", f"{PREFIX}x0", "type", "veth", "peer", "name", f"{PREFIX}x1"],
                   check=True)
    try:
        graph = fb.mininet_graph(build("single:2").to_dict(), prefix=PREFIX)
        with pytest.raises(RuntimeError, match="reserved for the peer"):
            fb.one_mininet(graph, tmp_path)
        assert set(fb.mininet_leftovers(PREFIX)) == {f"{PREFIX}x0", f"{PREFIX}x1"}  # untouched, nothing added
    finally:
        subprocess.run(["ip", "link", "del", f"{PREFIX}x0"], check=False)


def test_picloud_child_reports_build_and_teardown_inside_its_whole_time(system_objects):
    result, whole = fb.picloud_child("single:2", 1, "none")
    assert result["bridges"] == 3 and result["containers"] == 2
    assert result["datapath"] in ("netdev", "system")
    assert result["build_s"] > 0 and result["down_s"] > 0
    assert result["build_s"] + result["down_s"] < whole
    assert not any(system_objects(result["prefix"]).values())
