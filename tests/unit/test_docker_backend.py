"""Docker backend pieces that need no engine: limits from Pi presets, names, mounts, exec lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from picloud.errors import FabricError
from picloud.runstate import RunState
from topology.backends.docker import DockerFabric
from topology.builders import build
from topology.effects import docker_engine
from topology.inventory import PI_MODELS


def fabric(**options) -> DockerFabric:
    return DockerFabric(build("single:2", 2), RunState(prefix="pc42", backend="docker"), datapath="netdev",
                        **options)


def test_pi_b_plus_preset_becomes_engine_limits(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    limits = fabric(pi_model="b+").limits()
    assert limits == {"nano_cpus": int(PI_MODELS["b+"].cpus(2) * 1e9), "memory_mb": 512}
    assert limits["nano_cpus"] == 233_000_000


def test_no_model_means_no_limits():
    assert fabric(pi_model=None).limits() == {}


def test_unknown_model_is_refused_with_the_choices():
    with pytest.raises(FabricError, match=r"--pi-model: pi model 'zero': unknown \(one of b, b\+, 2, 3, 3b\+, 4, 5\)"):
        fabric(pi_model="zero")


def test_names_carry_the_run_prefix():
    f = fabric()
    assert f.container_name("pi1-c1") == "pc42-pi1-c1"
    assert f.cgroup_parent("pi2") == "/picloud/pc42-p1"
    # the namespace name is the local backend's, so its veth/address code applies unchanged
    assert f.netns("pi1-c1") == "pc42c0"


def test_runtime_mounts_are_read_only_at_the_same_paths():
    mounts = docker_engine.runtime_mounts()
    for host, spec in mounts.items():
        assert spec == {"bind": host, "mode": "ro"}
    covered = [Path(p) for p in mounts]
    for needed in (Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), docker_engine.REPO_ROOT):
        assert any(needed == p or p in needed.parents for p in covered)
    # no mount inside another one
    assert not any(a != b and Path(a) in Path(b).parents for a in mounts for b in mounts)


def test_exec_line_is_an_argument_list():
    assert docker_engine.exec_argv("pc1-c", ["sh", "-c", "echo $HOME"]) == [
        "docker", "exec", "-i", "pc1-c", "sh", "-c", "echo $HOME"]
    assert docker_engine.exec_argv("pc1-c", ["true"], interactive=False) == ["docker", "exec", "pc1-c", "true"]


def test_image_package_list_strips_comments():
    packages = docker_engine._packages()
    assert "python3" in packages and "busybox" in packages
    assert all(" " not in p and "#" not in p for p in packages)


def test_mounts_left_under_a_partial_rootfs_are_found_deepest_first(tmp_path):
    part = tmp_path / "rootfs my.partial"
    escaped = str(part).replace(" ", "\\040")
    mounts = "\n".join([
        "proc /proc proc rw 0 0",
        f"proc {escaped}/proc proc rw 0 0",
        f"devpts {escaped}/dev/pts devpts rw 0 0",
        f"tmpfs {tmp_path}/rootfs other tmpfs rw 0 0",  # a sibling sharing the prefix is not ours
        f"proc {escaped}x/proc proc rw 0 0",
    ])
    assert docker_engine.mounts_under(part, mounts) == [f"{part}/dev/pts", f"{part}/proc"]


def test_a_failed_debootstrap_names_its_error_line_not_its_last_progress_line():
    out = "I: Retrieving zlib1g\nE: Couldn't download packages: zlib1g\nI: Extracting zlib1g...\n"
    assert docker_engine._debootstrap_reason(out) == "E: Couldn't download packages: zlib1g"
    assert docker_engine._debootstrap_reason("I: only progress\n") == "I: only progress"
    assert docker_engine._debootstrap_reason("") == "no output"
