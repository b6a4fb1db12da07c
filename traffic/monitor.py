"""The fidelity monitor: counters sampled while a traffic run runs, and the hook the engine calls.

`Monitor(testbed, agent_pids).start()` once the agents are up, `.stop()` before they exit (their
/proc entries carry each container's TCP counters: `/proc/PID/net/snmp` is the namespace's own).
Sampled:
- /proc/stat per core and ovs-vswitchd's CPU ticks, every SAMPLE_S (cheap file reads);
- `dpctl/show` lookups (hit/missed/lost), the run's unshaped OVS ports' rx/tx drops, the drops of
  ovs-vswitchd's receive socket of every port of the run (see topology.effects.ovs_sockets: a
  loss OVS itself counts nowhere), and the root qdisc counters of every shaped link end, at start
  and stop (one command each);
- each agent's namespace TCP counters (OutSegs, RetransSegs), at start and stop.

`assess(...)` turns them into the verdict with the pure `traffic.fidelity.assess`, after working
out what it needs from the run: the workload's reference CDF and each path's shaped bottleneck.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topology.backends.base import KernelLinks
from traffic import fidelity

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)
SAMPLE_S = 0.5


def read_cpu() -> list[list[int]]:
    cores = []
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0].startswith("cpu") and parts[0] != "cpu":
                cores.append([int(v) for v in parts[1:9]])
    return cores


def stat_ticks(text: str) -> int:
    """utime + stime (fields 14, 15 of stat(5)) from the text of a /proc/PID[/task/TID]/stat."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_ticks(stat_path: str) -> int | None:
    try:
        with open(stat_path) as f:
            return stat_ticks(f.read())
    except (OSError, IndexError, ValueError):
        return None


def read_ticks(pid: int | None) -> int | None:
    return None if pid is None else cpu_ticks(f"/proc/{pid}/stat")


def read_thread_ticks(pid: int | None) -> dict[str, int] | None:
    """utime + stime of each thread of PID, keyed "tid:name": the datapath forwards per thread (the
    main thread for non-PMD ports, pmd* threads where configured), so a saturated thread is a queue
    even when the process total is not."""
    if pid is None:
        return None
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: dict[str, int] = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
            out[f"{tid}:{text[text.find('(') + 1:text.rfind(')')]}"] = stat_ticks(text)
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between listing and reading
    return out


def read_tcp(pid: int) -> dict[str, Any] | None:
    """The TCP MIB of the network namespace process PID lives in."""
    try:
        with open(f"/proc/{pid}/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
    except OSError:
        return None
    if len(rows) < 2:
        return None
    values = dict(zip(rows[0][1:], rows[1][1:], strict=False))
    out: dict[str, Any] = {k: int(values.get(k, 0)) for k in ("OutSegs", "RetransSegs", "InSegs")}
    # Which namespace the counters are of: a process still in `ip netns exec` before its exec reads
    # the root namespace's; the verdict uses a container only when start and end agree.
    with contextlib.suppress(OSError):
        out["netns"] = os.readlink(f"/proc/{pid}/ns/net")
    return out


def shaped_ends(testbed: Run) -> list[tuple[str, str | None]]:
    """(iface, netns) of every link end that carries a qdisc of ours."""
    from topology.tcplan import Shape

    fabric, topo = testbed.fabric, testbed.topology
    out: list[tuple[str, str | None]] = []
    if not isinstance(fabric, KernelLinks):  # none yet, or the cluster's
        return out
    for link in topo.links:
        if not Shape.of(link).empty:
            for node in (link.a, link.b):
                e = fabric.end(node, link)
                out.append((e.iface, e.netns))
    return out


def bridge_ports(testbed: Run) -> list[str]:
    """Every OVS port of the run with a kernel device (link ends on a bridge, run-time containers)."""
    fabric, topo = testbed.fabric, testbed.topology
    if fabric is None or not hasattr(fabric, "end"):
        return []
    patch = getattr(fabric, "is_patch", lambda link: False)
    out = [e.iface for link in topo.links if not patch(link)
           for e in (fabric.end(link.a, link), fabric.end(link.b, link)) if e.bridge]
    extra = getattr(fabric, "_extra", None)
    if callable(extra):
        out += [c["iface"] for c in extra().values() if "iface" in c]
    return out


def unshaped_ports(testbed: Run) -> list[str]:
    from topology.tcplan import Shape

    fabric, topo = testbed.fabric, testbed.topology
    if not isinstance(fabric, KernelLinks):  # none yet, or the cluster's
        return []
    return [e.iface for link in topo.links if Shape.of(link).empty
            for e in (fabric.end(link.a, link), fabric.end(link.b, link)) if e.bridge]


class Monitor:
    """Samples in a daemon thread; never raises into the run (a counter it cannot read is left out
    and the check that needs it says n/a)."""

    def __init__(self, testbed: Run, agent_pids: dict[str, int]) -> None:
        from topology.effects import ovs

        self.testbed = testbed
        self.pids = dict(agent_pids)
        self.ovs_pid = ovs.vswitchd_pid()
        self.samples: dict[str, Any] = {"clk_tck": os.sysconf("SC_CLK_TCK"), "cpu": [], "ovs_cpu": [],
                                        "ovs_threads": [], "datapath": [], "ports": {}, "sockets": {},
                                        "qdiscs": {}, "tcp": {}}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fidelity-monitor", daemon=True)
        self._ends = shaped_ends(testbed)
        self._ports = unshaped_ports(testbed)
        self._all_ports = bridge_ports(testbed)

    def start(self) -> Monitor:
        self._edge("start")
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        self._tick()
        self._edge("end")
        return self.samples

    def _tick(self) -> None:
        t = time.monotonic()
        with contextlib.suppress(OSError, ValueError):
            self.samples["cpu"].append({"t": t, "cores": read_cpu()})
        ticks = read_ticks(self.ovs_pid)
        if ticks is not None:
            self.samples["ovs_cpu"].append({"t": t, "ticks": ticks})
        threads = read_thread_ticks(self.ovs_pid)
        if threads:
            self.samples["ovs_threads"].append({"t": t, "ticks": threads})

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._tick()

    def _edge(self, when: str) -> None:
        from topology.effects import ovs, ovs_sockets, tc

        if when == "start":
            self._tick()
        for name, pid in self.pids.items():
            counters = read_tcp(pid)
            if counters is not None:
                self.samples["tcp"].setdefault(name, {})[when] = counters
        try:
            self.samples["datapath"].append({"t": time.monotonic(), **ovs.datapath_counters()})
            for name, drops in ovs.interface_drops(self._ports).items():
                self.samples["ports"].setdefault(name, {})[when] = drops
            for name, dropped in ovs_sockets.drops(self.ovs_pid, self._all_ports).items():
                self.samples["sockets"].setdefault(name, {})[when] = {"dropped": dropped}
            by_ns: dict[str | None, list[str]] = {}
            for iface, netns in self._ends:
                by_ns.setdefault(netns, []).append(iface)
            for netns, ifaces in by_ns.items():
                counters = tc.root_counters(netns)
                for iface in ifaces:
                    if iface in counters:
                        self.samples["qdiscs"].setdefault(f"{netns or ''}/{iface}", {})[when] = counters[iface]
        except Exception as exc:  # noqa: BLE001 - a monitor that cannot read must not fail the run
            log.warning("fidelity monitor: %s", exc)


def assess(testbed: Run, trace: Any, flows: list[Any], meta: dict[str, Any], samples: dict[str, Any] | None,
           directory: Path | None = None) -> dict[str, Any]:
    """The verdict of a finished run; also writes fidelity.json (samples + verdict) when given a
    directory, so `fidelity.assess_recorded` can recompute it later."""
    verdict = fidelity.assess_run(testbed.topology, flows, {**trace.meta, **meta}, samples or {})
    if directory is not None:
        (Path(directory) / "fidelity.json").write_text(json.dumps({"verdict": verdict, "samples": samples},
                                                                  indent=1, default=str) + "\n")
    return verdict
