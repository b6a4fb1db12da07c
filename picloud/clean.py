"""`picloud clean`: remove exactly what PiCloud runs made, and nothing else.

The evidence is the run-state files (written before each object existed) and the `picloud-run`
label on OVS bridges and Docker containers. Nothing is matched by a loose name pattern, and no
process is killed by name: only recorded PIDs whose start time still matches.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from picloud.runstate import PREFIX_RE, RunState, list_runs, state_dir
from topology.effects import ovs, proc, rcu

log = logging.getLogger(__name__)


def live_reason(state: RunState) -> str | None:
    """Why a run is still in use, or None when it is not (then its objects are leftovers).

    A run is live while the process that owns it (`picloud up`, a script's Testbed) is alive; a
    detached run has no owner, and is live while a process it recorded (its controller, its UI)
    is, or, when it recorded none (`--controller none`), until `picloud down`. A run whose owner
    was killed is not live, even if its controller still runs: that controller is a leftover."""
    owner = state.extra.get("owner")
    if owner and proc.is_ours(proc.ProcessRecord.from_dict(owner)):
        return f"in use by PID {owner['pid']}"
    if state.extra.get("detached"):
        alive = [r["pid"] for r in state.objects.get("pids", []) if proc.is_ours(proc.ProcessRecord.from_dict(r))]
        if alive:
            return f"detached, its PID {alive[0]} alive"
        if not state.objects.get("pids"):
            return "detached (stop it with picloud down)"
    return None


def clean(prefixes: list[str] | None = None, force: bool = False) -> list[str]:
    """Clean the given runs (default: every run with a state file, and labelled orphans). Live runs
    (see `live_reason`) are left alone, with a warning, unless `force`."""
    from picloud.errors import FabricError

    runs = prefixes if prefixes is not None else list_runs()
    cleaned = []
    for prefix in runs:
        try:
            state = RunState.load(prefix)
        except FabricError:
            if prefixes is not None:
                raise
            continue
        why = None if force else live_reason(state)
        if why and state.extra.get("captures"):
            _reap_captures(state)
        if why:
            log.warning("picloud: run %s is %s: left alone (picloud clean --run %s --force removes it)",
                        prefix, why, prefix)
            continue
        clean_state(state)
        cleaned.append(prefix)
    if prefixes is None:
        orphans = [b for b in ovs.bridges_labelled() if not _has_state(b)] if ovs.running() else []
        if orphans:
            ovs.delete_bridges(orphans)
            cleaned.append(f"{len(orphans)} orphan bridge(s)")
        for tmp in state_dir().glob("pc*.tmp") if state_dir().is_dir() else []:
            tmp.unlink(missing_ok=True)
        if rcu.restore_leftover(state_dir() / rcu.SAVED_NAME):
            cleaned.append("the kernel's rcu_expedited setting a killed teardown left on")
        stale = stale_controller_tokens()
        for token in stale:
            token.unlink(missing_ok=True)
        if stale:
            cleaned.append(f"{len(stale)} stale controller token file(s)")
    return cleaned


def listening_ports(tables: list[str]) -> set[int]:
    """TCP ports in LISTEN state (st 0A) in /proc/net/tcp{,6} texts."""
    ports = set()
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def stale_controller_tokens() -> list[Path]:
    """Token files of standalone controllers (`controller-APIPORT.api-token`, made by
    `picloud controller` / `ryu-manager` without a run) whose API port no longer listens: the
    controller removes its file at a clean exit, but a killed one cannot."""
    if not state_dir().is_dir():
        return []
    tables = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            tables.append(Path(name).read_text())
        except OSError:
            continue
    live = listening_ports(tables)
    stale = []
    for token in state_dir().glob("controller-*.api-token"):
        port = token.name[len("controller-"):-len(".api-token")]
        if port.isdigit() and int(port) not in live:
            stale.append(token)
    return stale


def _has_state(bridge: str) -> bool:
    label = ovs.vsctl("get", "Bridge", bridge, f"external_ids:{ovs.RUN_LABEL}", check=False).strip('"')
    return bool(PREFIX_RE.match(label)) and (state_dir() / f"{label}.json").exists()


def clean_state(state: RunState) -> None:
    for rec in state.objects.get("pids", []):
        proc.terminate(proc.ProcessRecord.from_dict(rec))
    state.objects["pids"] = []
    _remove_labelled_containers(state.prefix)
    _remove_cgroups(state)
    if state.backend == "cluster" and state.topology:
        try:
            from picloud.testbed import Testbed

            Testbed.attach(state.prefix).down()
            return
        except Exception as exc:  # a dead remote Pi must not stop local clean-up
            log.warning("cluster clean-up of %s incomplete: %s", state.prefix, exc)
    from topology.backends.local import remove_objects

    remove_objects(state)
    state.delete()


def _reap_captures(state: RunState) -> None:
    """A live cluster run can hold capture containers whose owner was killed (`picloud capture`
    interrupted hard): they would stream to nobody until the run goes down. Remove those now."""
    from picloud.testbed import Testbed
    from topology.effects import docker_engine
    from traffic.capture import forget_sidecars, orphans

    dead, removed = orphans(state), []
    if not dead:
        return
    try:
        fabric: Any = Testbed.attach(state.prefix).fabric  # a ClusterFabric: captures are recorded only there
        for name, entry in dead.items():
            docker_engine.remove(fabric.engine(entry["pi"]), name)
            if entry.get("mirror"):  # the OVS mirror a patch or VXLAN port was captured on
                fabric.remove_capture_mirror(entry["pi"], entry["mirror"]["bridge"], entry["mirror"]["name"])
            removed.append(name)
    except Exception as exc:  # an unreachable Pi keeps its records for the next clean
        log.warning("run %s: orphaned capture containers not removed: %s", state.prefix, exc)
    forget_sidecars(state, removed)
    if removed:
        log.warning("picloud: run %s: removed %d capture container(s) whose owner is gone: %s", state.prefix,
                    len(removed), ", ".join(removed))


def _remove_cgroups(state: RunState) -> None:
    """Per-Pi cgroups of a Docker run with --pi-model (recorded in extra["cgroups"])."""
    cgroups = state.extra.get("cgroups") or []
    if cgroups:
        from topology.effects.docker_engine import pi_cgroup_remove

        for parent in cgroups:
            pi_cgroup_remove(parent)


def _remove_labelled_containers(prefix: str) -> None:
    """Docker containers carry the label picloud.run=PREFIX (see topology.backends.docker)."""
    if not shutil.which("docker"):
        return
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=picloud.run={prefix}"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120)
