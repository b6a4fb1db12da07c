"""The one owner of the Docker engine: the `docker` SDK, the `docker exec` CLI and the base image.

Containers are made with no Docker networking (`network_mode=none`): PiCloud wires them into
OVS itself, as `ovs-docker` does, so the controller sees the same ports in every backend. Every
container carries the label `picloud.run=PREFIX`, and clean-up filters by that label only
(Kathara's habit), so nothing another user made is ever touched.

The base image (see images/base/README.md) is a debootstrapped Debian minbase imported with
`docker import`: no registry is reachable from a testbed, and a local Debian mirror is. The host's
Python runtime, virtualenv and the PiCloud source are bind-mounted read-only at their own paths,
so `Fabric.popen(container, [sys.executable, "-m", "traffic.agent"])` runs the same interpreter and
code inside a container as in a namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picloud.errors import FabricError

log = logging.getLogger(__name__)

LABEL = "picloud.run"
DEFAULT_IMAGE = "picloud/base:latest"
REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO_ROOT / "images" / "base"
CACHE_DIR = Path(os.environ.get("PICLOUD_IMAGE_CACHE", "/var/cache/picloud"))
DEBIAN_MIRROR = os.environ.get("PICLOUD_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def client(base_url: str | None = None, tls: dict[str, str] | None = None, timeout: int = 30) -> Any:
    """A Docker SDK client for the local engine or a Pi's (`ssh://`, `tcp://` with TLS)."""
    import docker  # lazy: `import picloud` stays cheap and machines without docker still plan

    try:
        if base_url is None:
            engine = docker.from_env(timeout=timeout)
        else:
            tls_config: Any = False
            if base_url.startswith("tcp://"):
                tls_config = docker.tls.TLSConfig(
                    client_cert=(tls["cert"], tls["key"]), ca_cert=tls["ca"], verify=True
                ) if tls else False
            engine = docker.DockerClient(
                base_url=base_url, tls=tls_config, timeout=timeout, use_ssh_client=base_url.startswith("ssh://")
            )
        engine.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "not reachable"
        where = base_url or "local docker engine"
        raise FabricError(
            f"{where}: Docker engine not reachable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}; "
            "is dockerd running? 'make setup' starts it)"
        ) from None
    return engine


def engine_version(engine: Any) -> str:
    return str(engine.version().get("Version", "?"))


# --- image -------------------------------------------------------------------------------------
def image_exists(engine: Any, tag: str) -> bool:
    import docker

    try:
        engine.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _packages() -> list[str]:
    lines = (IMAGE_DIR / "packages").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


@dataclass
class ImageBuild:
    tag: str
    image_id: str
    seconds_debootstrap: float
    seconds_import: float
    size_mb: float
    cached_rootfs: bool


def build_base_image(engine: Any, tag: str = DEFAULT_IMAGE, refresh: bool = False) -> ImageBuild:
    """debootstrap a Debian minbase with images/base/packages (cached), then `docker import` it.

    The root filesystem is cached under CACHE_DIR keyed by the package list, so a rebuild after a
    `docker rmi` takes seconds; `refresh` throws the cache away (new security updates)."""
    if shutil.which("debootstrap") is None:
        raise FabricError("image build: debootstrap is not installed (run 'make setup')")
    packages = _packages()
    suite = (IMAGE_DIR / "suite").read_text().strip()
    import hashlib

    key = hashlib.sha256((suite + " " + ",".join(packages)).encode()).hexdigest()[:12]
    rootfs = CACHE_DIR / f"rootfs-{suite}-{key}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # One build at a time on the host: two checkouts' test suites building at once both emptied and
    # debootstrapped into the same .partial directory, and each imported the other's half-built
    # tree. Whoever waited here finds the cache the other one just completed.
    with open(CACHE_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(engine, tag, refresh, suite, packages, key, rootfs)


def _build_locked(engine: Any, tag: str, refresh: bool, suite: str, packages: list[str], key: str,
                  rootfs: Path) -> ImageBuild:
    import docker

    cached = rootfs.is_dir() and (rootfs / ".picloud-complete").exists() and not refresh
    started = time.monotonic()
    if not cached:
        partial = rootfs.with_name(rootfs.name + ".partial")
        _release_mounts(partial)  # a debootstrap killed mid-run leaves its /proc mounted there
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(partial),
                DEBIAN_MIRROR]
        log.info("image: debootstrap %s, %d packages (about a minute, then cached)", suite, len(packages))
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            _release_mounts(partial)
            reason = _debootstrap_reason(done.stdout + done.stderr)[:160]
            raise FabricError(f"image build: debootstrap failed ({reason}; "
                              f"log: {partial / 'debootstrap' / 'debootstrap.log'})")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (partial / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        (partial / ".picloud-complete").write_text(key + "\n")
        partial.rename(rootfs)
    seconds_debootstrap = time.monotonic() - started
    started = time.monotonic()
    previous = engine.images.get(tag).id if image_exists(engine, tag) else None
    with tempfile.TemporaryDirectory(prefix="picloud-image-") as tmp:
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            for item in sorted(rootfs.iterdir()):
                if item.name != ".picloud-complete":
                    tar.add(item, arcname=item.name)
        repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        engine.api.import_image_from_file(
            str(archive), repository=repository, tag=version,
            changes=['CMD ["sleep", "infinity"]', "LABEL picloud.image=base", f"LABEL picloud.rootfs={key}"],
        )
    image = engine.images.get(tag)
    if previous and previous != image.id:  # the old image lost its tag: drop it unless a container uses it
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(previous)
    return ImageBuild(tag, image.id, seconds_debootstrap, time.monotonic() - started,
                      image.attrs.get("Size", 0) / 1e6, cached)


def _debootstrap_reason(output: str) -> str:
    """debootstrap's last line is usually progress ("I: Extracting ..."): its error is the last "E:" line."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or ["no output"])[-1]


def mounts_under(path: Path, mounts_text: str) -> list[str]:
    """Mount points at or below `path` in /proc/mounts text, deepest first (the order to unmount).

    /proc/mounts escapes spaces and other bytes as octal (\\040); paths are compared unescaped."""
    root = str(path.resolve())
    found = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if point == root or point.startswith(root + "/"):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _release_mounts(path: Path) -> None:
    """Lazily unmount what a killed debootstrap left mounted under `path` (its /proc, /sys, /dev/pts).

    debootstrap mounts /proc inside the target and unmounts it only on a clean exit; left mounted,
    the next debootstrap's own `rm -rf TARGET/proc` fails, and every later build with it."""
    try:
        text = Path("/proc/mounts").read_text()
    except OSError:
        return
    for point in mounts_under(path, text):
        done = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
        if done.returncode != 0:
            raise FabricError(f"image build: cannot unmount {point} left by an earlier debootstrap "
                              f"({done.stderr.strip()[:120]})")


# --- containers --------------------------------------------------------------------------------
def runtime_mounts() -> dict[str, dict[str, str]]:
    """Host paths mounted read-only at the same path: the interpreter, the venv, the source."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), REPO_ROOT}
    out: dict[str, dict[str, str]] = {}
    for path in sorted(paths):
        if not any(path != other and other in path.parents for other in paths):
            out[str(path)] = {"bind": str(path), "mode": "ro"}
    return out


def run_container(
    engine: Any,
    name: str,
    image: str,
    prefix: str,
    hostname: str,
    nano_cpus: int | None = None,
    mem_limit_mb: int | None = None,
    extra_labels: dict[str, str] | None = None,
    cgroup_parent: str | None = None,
    mount_runtime: bool = True,
) -> Any:
    """Start one container with no network, our label, and the given limits; returns the SDK object.

    `init=True` runs Docker's init as PID 1 so agents that exit are reaped and `stop` is quick.
    `mount_runtime` (only for an engine on this machine) mounts our Python and source read-only."""
    import docker

    labels = {LABEL: prefix, **(extra_labels or {})}
    kwargs: dict[str, Any] = {}
    if nano_cpus:
        kwargs["nano_cpus"] = int(nano_cpus)
    if cgroup_parent:
        kwargs["cgroup_parent"] = cgroup_parent
    if mem_limit_mb:
        kwargs["mem_limit"] = f"{int(mem_limit_mb)}m"
        kwargs["memswap_limit"] = f"{int(mem_limit_mb)}m"  # no swap beyond the Pi's RAM
    try:
        return engine.containers.run(
            image, name=name, hostname=hostname, detach=True, network_mode="none", labels=labels, init=True,
            volumes=runtime_mounts() if mount_runtime else {}, working_dir=str(REPO_ROOT) if mount_runtime else None,
            environment={"PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}, **kwargs,
        )
    except docker.errors.ImageNotFound:
        raise FabricError(f"container {name!r}: no image {image!r} (run 'picloud image build')") from None
    except docker.errors.APIError as exc:
        raise FabricError(f"container {name!r}: Docker refused ({exc.explanation or exc})") from None


def container_pid(engine: Any, name: str) -> int:
    container = engine.containers.get(name)
    pid = int(container.attrs["State"]["Pid"])
    if pid <= 0:
        raise FabricError(f"container {name!r}: not running (state {container.status})")
    return pid


def limits(engine: Any, name: str) -> dict[str, int]:
    """What the engine applied, read back: NanoCpus and Memory (bytes)."""
    host_config = engine.containers.get(name).attrs["HostConfig"]
    return {"nano_cpus": int(host_config.get("NanoCpus") or 0), "memory": int(host_config.get("Memory") or 0)}


def list_run(engine: Any, prefix: str | None = None) -> list[str]:
    """Names of containers carrying our label (for one run, or for any run)."""
    label = f"{LABEL}={prefix}" if prefix else LABEL
    return sorted(c.name for c in engine.containers.list(all=True, filters={"label": label}))


def remove(engine: Any, name: str) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        engine.containers.get(name).remove(force=True)


def remove_run(engine: Any, prefix: str) -> list[str]:
    """Force-remove every container labelled with this run; idempotent; returns what it removed."""
    import docker

    removed = []
    for container in engine.containers.list(all=True, filters={"label": f"{LABEL}={prefix}"}):
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    return removed


def _remote(endpoint: str | None, tls: dict[str, str] | None) -> list[str]:
    remote = ["-H", endpoint] if endpoint else []
    if endpoint and tls:
        remote += ["--tlsverify", "--tlscacert", tls["ca"], "--tlscert", tls["cert"], "--tlskey", tls["key"]]
    return remote


def exec_argv(name: str, argv: list[str], interactive: bool = True, endpoint: str | None = None,
              tls: dict[str, str] | None = None) -> list[str]:
    """`docker exec` command line: used for popen (the SDK cannot hand back a Popen). `endpoint`
    and `tls` address a Pi's engine instead of the local one."""
    return ["docker", *_remote(endpoint, tls), "exec", *(["-i"] if interactive else []), name, *argv]


CAPTURE_ROLE = "capture"
CAPTURE_RING_KIB = 8192  # the kernel ring per capture point: 8 MiB of a Pi 3's 1 GiB while it runs
CAPTURE_BLOCK_SECONDS = 1.0  # tcpdump's read timeout: the kernel hands on a part-filled block this late


def capture_argv(name: str, image: str, prefix: str, network_mode: str, iface: str, netns: str | None = None,
                 bpf: str | None = None, snaplen: int | None = None, endpoint: str | None = None,
                 tls: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                 bring_up: bool = False) -> list[str]:
    """`docker run` of a capture container on a Pi: tcpdump writing pcap to its stdout, which an
    attached `docker run` (no TTY) hands on byte for byte. The engine's attach stream is the only
    way back from a Pi (no SSH); `--log-driver none` keeps the stream off the Pi's SD card.

    `network_mode` is `container:NAME` (the target container's namespace) or `host` (the Pi's, for
    the host ends of its containers' veths); `netns` is an emulated Pi's namespace on the engine's
    machine, entered with nsenter (which needs SYS_ADMIN and /run/netns). NET_RAW opens the packet
    socket, NET_ADMIN sets promiscuous mode. Not `--immediate-mode`: with it libpcap falls back to
    TPACKET_V2, a ring of fixed frames each sized for the largest packet the interface may hand
    over, and a 2 MB flow's burst overflowed a 4 MiB one (1000 of 1800 packets dropped, measured
    on the emulated cluster); the default TPACKET_V3 ring packs packets into blocks, so its
    CAPTURE_RING_KIB hold thousands, and hands a block on when it is full or a second old (the
    caller waits for that before it stops the capture). `-U` writes each packet as soon as it is read, `-Z root`
    keeps tcpdump from switching to a user the image may not have. `bring_up` first sets `iface`
    up (an OVS mirror's internal port starts down, and libpcap refuses a down interface).
    `--init` passes the stop signal on to tcpdump, which then prints its counts and exits;
    `--rm` removes the container then, even when the `docker run` that started it is gone."""
    cmd = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    if bring_up:
        cmd += ["sh", "-c", 'ip link set dev "$0" up && exec "$@"', iface]
    cmd += ["tcpdump", "-i", iface, "-w", "-", "-U", "-n", "-Z", "root", "-B", str(CAPTURE_RING_KIB)]
    if snaplen:
        cmd += ["-s", str(int(snaplen))]
    if bpf:
        cmd.append(bpf)
    extra = ["--cap-add", "SYS_ADMIN", "-v", "/run/netns:/run/netns:ro"] if netns else []
    label_args = [a for k, v in {LABEL: prefix, "picloud.role": CAPTURE_ROLE, **(labels or {})}.items()
                  for a in ("--label", f"{k}={v}")]
    return ["docker", *_remote(endpoint, tls), "run", "--rm", "--init", "--name", name, *label_args,
            "--log-driver", "none", "--network", network_mode, "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN",
            *extra, image, *cmd]


def signal_container(engine: Any, name: str, signal: str) -> bool:
    """Send `signal` to a container's PID 1; False when it is already gone."""
    import docker

    try:
        engine.containers.get(name).kill(signal=signal)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:  # "is not running": it ended by itself
        if "not running" in str(exc).lower():
            return False
        raise
    return True


def popen(name: str, argv: list[str], endpoint: str | None = None, tls: dict[str, str] | None = None,
          **popen_kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(exec_argv(name, argv, endpoint=endpoint, tls=tls), **popen_kwargs)


def exec_run(name: str, argv: list[str], timeout: float | None = None, endpoint: str | None = None,
             tls: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(exec_argv(name, argv, interactive=False, endpoint=endpoint, tls=tls),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out
    return done.returncode, done.stdout + done.stderr


def run_helper(engine: Any, image: str, prefix: str, script: str, mount_netns: bool = False) -> str:
    """Run a shell script on a Pi's host through its Docker engine: a short-lived container
    sharing the host's network and PID namespaces (how veths reach containers on a Pi without
    SSH). Only the capabilities that needs (NET_ADMIN for links, SYS_ADMIN and SYS_PTRACE to enter
    a container's namespace), not --privileged, which also fails on hosts that lack a capability.
    `mount_netns` also mounts /run/netns, for emulated Pis' namespaces."""
    import docker

    volumes = {"/run/netns": {"bind": "/run/netns", "mode": "rw"}} if mount_netns else {}
    try:
        container = engine.containers.run(
            image, ["sh", "-ec", script], detach=True, network_mode="host", pid_mode="host",
            cap_add=["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"],
            labels={LABEL: prefix, "picloud.role": "wiring"}, volumes=volumes)
    except docker.errors.APIError as exc:
        raise FabricError(f"wiring helper: Docker refused ({exc.explanation or exc})") from None
    try:
        status = container.wait(timeout=120)
        output = container.logs().decode(errors="replace")
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    if status.get("StatusCode") != 0:
        last = (output.strip().splitlines() or ["no output"])[-1]
        raise FabricError(f"wiring helper: exit {status.get('StatusCode')} ({last[:160]})")
    return output


# --- one cgroup per emulated Pi ----------------------------------------------------------------
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def pi_cgroup_create(parent: str, cpus: float, memory_mb: int) -> str:
    """A cgroup that all containers of one Pi share (Docker's `cgroup_parent`), limited to the
    Pi's cores and RAM: 80 servers on a Pi B+ then share 512 MB, as on the real board, instead of
    each getting 512 MB. Returns the parent path to pass to Docker."""
    quota_period = 100_000
    quota = max(1000, int(cpus * quota_period))
    limit = int(memory_mb) * 1024 * 1024
    rel = parent.strip("/")
    if _cgroup_v2():
        path = CGROUP_ROOT / rel
        path.mkdir(parents=True, exist_ok=True)
        for ancestor in [CGROUP_ROOT, *(CGROUP_ROOT / p for p in reversed(Path(rel).parents[:-1]))]:
            with contextlib.suppress(OSError):  # already enabled, or delegated by systemd
                (ancestor / "cgroup.subtree_control").write_text("+cpu +memory")
        (path / "memory.max").write_text(str(limit))
        (path / "cpu.max").write_text(f"{quota} {quota_period}")
    else:
        memory, cpu = CGROUP_ROOT / "memory" / rel, CGROUP_ROOT / "cpu" / rel
        memory.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        (memory / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(OSError):  # absent when the kernel has no swap accounting
            (memory / "memory.memsw.limit_in_bytes").write_text(str(limit))
        (cpu / "cpu.cfs_period_us").write_text(str(quota_period))
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))
    return "/" + rel


def pi_cgroup_usage(parent: str) -> int:
    """Bytes of memory the Pi's containers use now (page cache included, as the kernel counts it)."""
    rel = parent.strip("/")
    if _cgroup_v2():
        return int((CGROUP_ROOT / rel / "memory.current").read_text())
    return int((CGROUP_ROOT / "memory" / rel / "memory.usage_in_bytes").read_text())


def pi_cgroup_remove(parent: str) -> None:
    """Remove the Pi cgroup and its empty ancestors below the root; idempotent. Docker removes
    the containers' own cgroups when they go."""
    rel = Path(parent.strip("/"))
    bases = [CGROUP_ROOT] if _cgroup_v2() else [CGROUP_ROOT / c for c in ("memory", "cpu", "cpuacct",
                                                                           "cpuset", "pids", "blkio",
                                                                           "devices", "freezer")]
    for base in bases:
        for path in [rel, *rel.parents[:-1]]:
            with contextlib.suppress(FileNotFoundError, OSError):
                (base / path).rmdir()


def host_pids(engine: Any, name: str, command: str) -> list[int]:
    """Host PIDs of the processes in container `name` whose command line contains `command`."""
    top = engine.containers.get(name).top(ps_args="-eo pid,args")
    titles = top.get("Titles", [])
    pid_col, cmd_col = titles.index("PID"), titles.index("COMMAND")
    return [int(row[pid_col]) for row in top.get("Processes") or [] if command in row[cmd_col]]
