"""Packet capture at many points of a run into one pcapng file with named interfaces.

    with tb.capture(["link:agg1,tor1", "port:tor1:3", "web1"], bpf="tcp") as cap:
        ...
    print(cap.result.path, cap.result.interfaces)

Targets: `link:A,B` (both ends of a link), `port:NODE:N` (a bridge port of a switch or Pi),
`container:NAME` or just `NAME` (the container's eth0). A process sees only its own network
namespace's interfaces, so there is one `dumpcap` per namespace (several interfaces each), every
one recorded in the run state (`picloud clean` stops a capture its owner left behind). At the end
each file's interfaces are named after what they are (`traffic.pcapng`), the files are merged with
`mergecap -I none` (never folding two interfaces into one), and every interface's kernel drop
count is reported from dumpcap's statistics blocks.

Cluster backend: this machine cannot see a Pi's interfaces, so each point is captured on its Pi by
a capture container its engine runs (`docker_engine.capture_argv`): tcpdump in the target
container's namespace, or in the Pi's for the Pi's end of a container's link, its pcap streamed
back on the attached `docker run`'s stdout into a file per point, turned into a pcapng section
named like the local ones with tcpdump's own counts (`pcapng.from_pcap`), and merged the same way.
tcpdump, not dumpcap, because the image goes onto every Pi's SD card: 2 MB against 125 MB. The
containers are in the run state before they exist (`extra.captures`, with their owner):
`picloud down` removes them with the run's labelled containers, and `picloud clean` removes those
whose owner was killed (`orphans`). A link between two bridges is an OVS patch or VXLAN port with
no kernel interface: it is captured on an OVS mirror of the port, to an internal port made for the
capture (and in the run state with it). A point on a Pi without an engine is refused, naming it,
before anything starts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from picloud.errors import ClusterError, FabricError, TrafficError
from topology.backends.base import fabric_of, state_of
from traffic import pcapng

if TYPE_CHECKING:
    from picloud.runstate import RunState
    from topology.backends.base import Run
    from topology.backends.cluster.fabric import ClusterFabric

log = logging.getLogger(__name__)
START_TIMEOUT = 15.0
SIDECAR_START_TIMEOUT = 60.0  # a container created and started by a Pi 3's engine, several at once


@dataclass(frozen=True)
class Point:
    """One interface to capture on: where it is and what to call it in the file."""

    iface: str
    netns: str | None  # cluster: an emulated Pi's namespace, entered inside the capture container
    name: str  # if_name in the file, unique in the request
    description: str
    pi: str | None = None  # cluster: the Pi whose engine runs this point's capture container
    network_mode: str | None = None  # cluster: that container's Docker network mode
    bridge: str | None = None  # cluster: a patch or VXLAN port (no device) is captured on a mirror of
    mirror_of: str | None = None  # this port of this bridge, made for the capture


@dataclass
class CaptureResult:
    path: Path
    interfaces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def packets(self) -> int:
        return sum(i["packets"] for i in self.interfaces)

    @property
    def dropped(self) -> int:
        return sum(i["dropped"] or 0 for i in self.interfaces)

    def summary(self) -> str:
        lines = [f"{self.path}: {self.packets} packets on {len(self.interfaces)} interfaces, "
                 f"{self.dropped} dropped by the kernel"]
        for i in self.interfaces:
            drop = "unknown" if i["dropped"] is None else i["dropped"]
            lost = f"  {i['stream_lost']} lost on the way back from pi {i['pi']}" if i.get("stream_lost") else ""
            lines.append(f"  {i['name']:<28} {i['packets']:>8} packets  {drop} dropped{lost}  ({i['description']})")
        return "\n".join(lines)


def resolve(testbed: Run, targets: list[str]) -> list[Point]:
    """Capture points for target strings (see module doc); one-line errors for bad ones."""
    if not targets:
        raise TrafficError("capture: no target (give link:A,B, port:NODE:N or a container name)")
    topo, fabric = testbed.topology, cast(Any, fabric_of(testbed))  # local/Docker end(), cluster capture_site()
    cluster = getattr(testbed, "backend", "local") == "cluster"
    points: list[Point] = []

    def at(node: str, peer: str | None, name: str, what: str) -> Point:
        """The point at `node` (a container's eth0, or a bridge's port facing `peer`)."""
        if cluster:
            try:
                inside = topo.kind(node) == "container" if node in topo else True
                site = fabric.capture_site(node, None if inside else peer)
            except FabricError as exc:
                raise TrafficError(f"capture target {t!r}: {exc}") from None
            if site.mirror_of:
                return Point("", site.netns, name, f"{what} (mirror of {site.mirror_of} on pi {site.pi})", site.pi,
                             site.network_mode, site.bridge, site.mirror_of)
            return Point(site.iface, site.netns, name, f"{what} ({site.iface} on pi {site.pi})", site.pi,
                         site.network_mode)
        if peer is None:
            try:
                ns = fabric.netns(node)
            except Exception:
                raise TrafficError(f"capture target {t!r}: no container {node!r} in run {testbed.prefix}") from None
            return Point("eth0", ns, name, f"{what} (eth0, netns {ns})")
        end = fabric.end(node, topo.link(node, peer))
        return Point(end.iface, end.netns, name, f"{what} ({end.iface})")

    for t in targets:
        kind, _, rest = t.partition(":") if ":" in t else ("container", "", t)
        if kind == "link":
            a, _, b = rest.partition(",")
            if not (a and b) or a not in topo or b not in topo or not topo.graph.has_edge(a, b):
                raise TrafficError(f"capture target {t!r}: no such link (link:A,B with two adjacent nodes)")
            link = topo.link(a, b)
            for node, peer in ((link.a, link.b), (link.b, link.a)):
                points.append(at(node, peer, f"{node}>{peer}",
                                 f"link {link.a}-{link.b}, end at {node}"))
        elif kind == "port":
            node, _, num = rest.rpartition(":")
            if node not in topo or topo.kind(node) == "container" or not num.isdigit():
                raise TrafficError(f"capture target {t!r}: port:NODE:N with a switch or Pi and a port number")
            ports = topo.ports(node)
            if int(num) not in ports:
                raise TrafficError(f"capture target {t!r}: {node} has no port {num} (ports "
                                   f"{', '.join(map(str, sorted(ports)))})")
            peer = ports[int(num)]
            points.append(at(node, peer, f"{node}:{num}", f"port {num} of {node}, facing {peer}"))
        elif kind == "container":
            points.append(at(rest, None, rest, f"container {rest}"))
        else:
            raise TrafficError(f"capture target {t!r}: unknown kind {kind!r} (link:A,B, port:NODE:N, "
                               "container:NAME)")
    names = [p.name for p in points]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TrafficError(f"capture: {', '.join(dup)} requested twice")
    return points


def check_filter(bpf: str | None) -> None:
    """A BPF filter dumpcap cannot compile is refused before anything starts."""
    if not bpf:
        return
    if shutil.which("dumpcap") is None:
        raise TrafficError("capture: dumpcap is not installed (apt-get install wireshark-common)")
    proc = subprocess.run(["dumpcap", "-d", "-f", bpf, "-i", "lo"], capture_output=True, text=True, timeout=20)
    # dumpcap 4.0 exits 0 for a bad filter too: its compiled program on stdout is what says it parsed.
    if proc.returncode != 0 or not proc.stdout.strip():
        why = next((ln for ln in proc.stderr.splitlines() if "can't parse" in ln or "syntax" in ln),
                   "not a valid capture filter")
        raise TrafficError(f"capture filter {bpf!r}: {why.strip()}")


def default_out() -> Path:
    return Path("results") / f"capture-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}" / "capture.pcapng"


class Capture:
    """A running capture (see module doc); `stop()` returns the CaptureResult, also `.result`."""

    def __init__(self, testbed: Run, targets: list[str], bpf: str | None = None, out: str | Path | None = None,
                 snaplen: int | None = None) -> None:
        self.points = resolve(testbed, list(targets))
        check_filter(bpf)
        if snaplen is not None and not (isinstance(snaplen, int) and snaplen > 0):
            raise TrafficError(f"capture: snaplen {snaplen!r} (a positive number of bytes)")
        self.testbed, self.bpf, self.snaplen = testbed, bpf, snaplen
        self.out = Path(out) if out is not None else default_out()
        if self.out.suffix != ".pcapng":
            raise TrafficError(f"capture: --out {self.out} (must end in .pcapng)")
        self.result: CaptureResult | None = None
        self._runners: list[_Dumpcap | _Sidecar] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Capture:
        local: dict[str | None, list[Point]] = {}
        remote = [p for p in self.points if p.pi is not None]
        for p in self.points:
            if p.pi is None:
                local.setdefault(p.netns, []).append(p)
        if remote:
            _check_engines(self.testbed, remote)  # every Pi answers and has the image, before anything starts
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.testbed.prefix}-capture-")
        os.chmod(self._tmp.name, 0o755)  # dumpcap may write as another user
        tmp = Path(self._tmp.name)
        try:
            for i, pts in enumerate(local.values()):
                self._runners.append(_Dumpcap(self.testbed, pts, tmp / f"part{i}.pcapng", self.bpf, self.snaplen))
            for i, p in enumerate(remote):
                self._runners.append(_Sidecar(self.testbed, p, tmp / f"point{i}.pcap", self.bpf, self.snaplen))
            started = time.monotonic()
            for runner in self._runners:
                runner.wait_started(started + runner.start_timeout)
        except BaseException:
            for runner in self._runners:
                runner.kill()
            raise
        return self

    def _settle(self, limit: float = 15.0) -> None:
        """Wait until no file grows for the runners' `quiet` s: on a loaded host dumpcap reads the
        kernel's ring late, and a stop signal ends it without draining the ring; what was in it
        would be lost and counted nowhere (neither captured nor dropped). We measured that on a
        1.5 MB flow. A capture container's tcpdump gets a part-filled block of its ring up to a
        second late, and its packets then cross the engine's stream: it needs longer."""
        quiet = max((r.quiet for r in self._runners), default=0.6)
        end, sizes, since = time.monotonic() + limit, None, time.monotonic()
        while time.monotonic() < end:
            now = [r.path.stat().st_size if r.path.exists() else 0 for r in self._runners]
            if now != sizes:
                sizes, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def stop(self) -> CaptureResult:
        if self.result is not None:
            return self.result
        self._settle()
        for runner in self._runners:
            runner.signal_stop()
        parts, stats = [], []
        try:
            for runner in self._runners:
                runner.wait_stopped()
            for runner in self._runners:
                path, found = runner.finish()
                parts.append(path)
                stats += found
        finally:
            for runner in self._runners:
                runner.kill()
        if len(parts) == 1:
            shutil.copyfile(parts[0], self.out)
        else:
            subprocess.run(["mergecap", "-I", "none", "-w", str(self.out), *map(str, parts)], check=True,
                           capture_output=True, timeout=300)
            counts = {i["name"]: (i["received"], i["dropped"], i["os_dropped"]) for i in stats}
            self.out.write_bytes(pcapng.add_statistics(self.out.read_bytes(), counts))
        if self._tmp is not None:
            self._tmp.cleanup()
        self.result = CaptureResult(self.out, stats)
        return self.result


def _stats(p: Point, st: pcapng.InterfaceStats, stream_lost: int = 0, iface: str | None = None) -> dict[str, Any]:
    return {"name": p.name, "description": p.description, "iface": iface or p.iface, "netns": p.netns, "pi": p.pi,
            "packets": st.packets, "bytes": st.bytes, "received": st.received, "dropped": st.dropped,
            "os_dropped": st.os_dropped, "stream_lost": stream_lost}


def _errors(lines: list[str]) -> str:
    return " ".join(ln.strip() for ln in list(lines) if "Running as" not in ln)[:300]


class _Dumpcap:
    """One dumpcap for the points of one network namespace on this machine."""

    start_timeout = START_TIMEOUT
    quiet = 0.6

    def __init__(self, testbed: Run, points: list[Point], path: Path, bpf: str | None, snaplen: int | None):
        from topology.effects import proc

        self.testbed, self.points, self.path = testbed, points, path
        ns = points[0].netns
        argv = ["dumpcap", "-q", "-n", "-w", str(path)]
        for p in points:
            argv += ["-i", p.iface]
        if bpf:
            argv += ["-f", bpf]
        if snaplen:
            argv += ["-s", str(snaplen)]
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]  # execs dumpcap: signals reach it directly
        self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.rec = proc.record(self.child, "capture").to_dict()
        state_of(testbed).intend("pids", [self.rec])
        self.lines: list[str] = []
        threading.Thread(target=_drain, args=(self.child, self.lines), daemon=True).start()

    def where(self) -> str:
        return ", ".join(p.name for p in self.points)

    def wait_started(self, deadline: float) -> None:
        while not any("Capturing on" in ln for ln in list(self.lines)):
            if self.child.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)
                raise TrafficError(f"capture on {self.where()}: dumpcap did not start "
                                   f"({_errors(self.lines) or 'no output'})")
            time.sleep(0.02)

    def signal_stop(self) -> None:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)  # dumpcap then writes its statistics blocks

    def wait_stopped(self) -> None:
        try:
            self.child.wait(15)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(5)

    def kill(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait(5)
        with contextlib.suppress(Exception):
            state_of(self.testbed).forget("pids", [self.rec])

    def finish(self) -> tuple[Path, list[dict[str, Any]]]:
        if not self.path.is_file():
            raise TrafficError(f"capture on {self.where()}: no file written "
                               f"(dumpcap exit {self.child.returncode}: {_errors(self.lines)})")
        data = pcapng.rename_interfaces(self.path.read_bytes(), [(p.name, p.description) for p in self.points])
        self.path.write_bytes(data)
        return self.path, [_stats(p, st) for p, st in zip(self.points, pcapng.interfaces(data), strict=False)]


_sidecar_numbers = itertools.count()
TCPDUMP_COUNT = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel|dropped by interface)",
                           re.M)


def tcpdump_counts(stderr: str) -> dict[str, int]:
    """The counts tcpdump prints when it stops: captured (written), received (by the filter,
    libpcap's ps_recv), dropped (by the kernel: ps_drop, what dumpcap writes as isb_ifdrop) and
    ifdropped (by the interface; printed only when not zero)."""
    keys = {"captured": "captured", "received by filter": "received", "dropped by kernel": "dropped",
            "dropped by interface": "ifdropped"}
    return {keys[m.group(2)]: int(m.group(1)) for m in TCPDUMP_COUNT.finditer(stderr)}


class _Sidecar:
    """One capture container on a cluster Pi, started through its engine, for one point: tcpdump
    in the target's namespace, its pcap coming back on the attached `docker run`'s stdout (see
    `docker_engine.capture_argv`). Its name carries the run's prefix and it is in the run state
    (`extra.captures`, with this process as its owner) before it exists: `picloud down` removes it
    with the run's labelled containers, `picloud clean` once its owner is gone (`orphans`)."""

    start_timeout = SIDECAR_START_TIMEOUT
    quiet = 2.0  # docker_engine.CAPTURE_BLOCK_SECONDS, then the way back through the engine, with margin

    def __init__(self, testbed: Run, point: Point, path: Path, bpf: str | None, snaplen: int | None):
        from topology.effects import docker_engine, proc

        assert point.pi is not None and point.network_mode is not None
        self.testbed, self.point, self.path = testbed, point, path
        fabric = cast("ClusterFabric", fabric_of(testbed))  # sidecars are the cluster backend's
        self.fabric, self.image = fabric, fabric.image
        self.engine = fabric.engine(point.pi)
        number = next(_sidecar_numbers)
        self.name = f"{testbed.prefix}-cap{os.getpid()}-{number}"
        self.iface, self.mirror = point.iface, None
        record: dict[str, Any] = {"pi": point.pi, "owner": proc.own_record("capture").to_dict()}
        if point.mirror_of:  # an interface name: the run's prefix, "m", a number unique on this machine
            self.iface = f"{testbed.prefix}m{_base36(os.getpid() * 64 + number % 64)}"[:15]
            self.mirror = record["mirror"] = {"bridge": point.bridge, "name": self.iface}
        entry = fabric.inventory.pi(point.pi)
        argv = docker_engine.capture_argv(self.name, fabric.image, testbed.prefix, point.network_mode, self.iface,
                                          point.netns, bpf, snaplen, endpoint=entry.docker.raw,
                                          tls=entry.tls or None, labels={"picloud.host": point.pi},
                                          bring_up=self.mirror is not None)
        state = state_of(testbed)
        with state.transaction():
            state.extra.setdefault("captures", {})[self.name] = record
            state.objects.setdefault("containers", []).append(self.name)
        self.lines: list[str] = []
        try:
            if self.mirror:
                assert point.bridge is not None and point.mirror_of is not None  # resolve() gives a mirror both
                fabric.add_capture_mirror(point.pi, point.bridge, point.mirror_of, self.iface)
            with open(path, "wb") as sink:
                self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE,
                                              text=True, start_new_session=True)
        except BaseException as exc:
            self._remove_mirror()
            forget_sidecars(state, [self.name])
            if isinstance(exc, ClusterError):
                raise TrafficError(f"capture on {self.where()}: {exc}") from None
            raise
        threading.Thread(target=_drain, args=(self.child, self.lines), daemon=True).start()

    def where(self) -> str:
        return f"{self.point.name} (pi {self.point.pi!r})"

    def wait_started(self, deadline: float) -> None:
        while not any("listening on" in ln for ln in list(self.lines)):
            if self.child.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)
                err = _errors(self.lines)
                if "tcpdump" in err and ("not found" in err or "no such file" in err.lower()):
                    err = (f"image {self.image!r} on that Pi has no tcpdump: rebuild it there "
                           "with 'picloud image build'")
                raise TrafficError(f"capture on {self.where()}: the capture container did not start "
                                   f"({err or 'no output'})")
            time.sleep(0.05)

    def signal_stop(self) -> None:
        from topology.effects import docker_engine

        if self.child.poll() is None:  # through the engine: the Pi's tcpdump, not our docker client
            with contextlib.suppress(Exception):
                docker_engine.signal_container(self.engine, self.name, "SIGINT")

    def wait_stopped(self) -> None:
        try:
            self.child.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        from topology.effects import docker_engine

        if self.child.poll() is None:
            with contextlib.suppress(Exception):
                docker_engine.remove(self.engine, self.name)
            try:
                self.child.wait(10)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(5)
        self._remove_mirror()
        if self.mirror is None and self.testbed.state is not None:  # else its record stays, for clean or down
            forget_sidecars(self.testbed.state, [self.name])

    def _remove_mirror(self) -> None:
        if self.mirror is None:
            return
        assert self.point.pi is not None  # a sidecar's point is on a Pi (checked at start)
        try:
            self.fabric.remove_capture_mirror(self.point.pi, self.mirror["bridge"], self.mirror["name"])
        except Exception as exc:  # on an unreachable Pi; its bridge goes with the run
            log.warning("capture on %s: mirror %s not removed: %s", self.where(), self.mirror["name"], exc)
            return
        self.mirror = None

    def finish(self) -> tuple[Path, list[dict[str, Any]]]:
        data = self.path.read_bytes() if self.path.is_file() else b""
        if len(data) < 24:
            raise TrafficError(f"capture on {self.where()}: no packets came back (docker run exit "
                               f"{self.child.returncode}: {_errors(self.lines) or 'no output'})")
        counts = tcpdump_counts("".join(self.lines))
        ifdrop = counts.get("ifdropped", 0 if "dropped" in counts else None)
        p = self.point
        conv = pcapng.from_pcap(data, p.name, p.description, received=counts.get("received"),
                                dropped=counts.get("dropped"), os_dropped=ifdrop)
        lost = max(0, counts.get("captured", conv.packets) - conv.packets)
        if lost or conv.cut_bytes:
            log.warning("capture on %s: %d packets tcpdump wrote did not come back whole (%d bytes cut)",
                        self.where(), lost, conv.cut_bytes)
        out = self.path.with_suffix(".pcapng")
        out.write_bytes(conv.data)
        (st,) = pcapng.interfaces(conv.data)
        return out, [_stats(p, st, stream_lost=lost, iface=self.iface)]


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _check_engines(testbed: Run, points: list[Point]) -> None:
    """Each Pi a point needs answers on its engine and holds the image; one line naming the Pi."""
    from picloud.errors import ClusterError
    from topology.effects import docker_engine

    if shutil.which("docker") is None:
        raise TrafficError("capture on the cluster backend: the docker client is not installed here "
                           "(it streams each Pi's capture back)")
    fabric = cast("ClusterFabric", fabric_of(testbed))  # called for cluster points only
    for pi in sorted({p.pi for p in points if p.pi}):
        try:
            engine = fabric.engine(pi)
            present = docker_engine.image_exists(engine, fabric.image)
        except ClusterError as exc:
            raise TrafficError(f"capture: {exc}") from None
        if not present:
            raise TrafficError(f"capture: pi {pi!r}: image {fabric.image!r} not on its engine ('picloud image "
                               "build' there)")


def forget_sidecars(state: RunState, names: list[str]) -> None:
    with contextlib.suppress(Exception), state.transaction():
        captures = state.extra.get("captures") or {}
        for name in names:
            captures.pop(name, None)
        if not captures:
            state.extra.pop("captures", None)
        state.objects["containers"] = [c for c in state.objects.get("containers", []) if c not in names]


def orphans(state: RunState) -> dict[str, dict[str, Any]]:
    """The capture containers of a cluster run whose owner (the process that started the capture)
    is gone, by name, with their Pi: a killed `picloud capture` cannot stop its own, and nothing
    else would until the run goes down (`picloud clean` removes them, then `forget_sidecars`)."""
    from topology.effects import proc

    return {name: entry for name, entry in (state.extra.get("captures") or {}).items()
            if not proc.is_ours(proc.ProcessRecord.from_dict(entry["owner"]))}


def _drain(child: subprocess.Popen, lines: list[str]) -> None:
    assert child.stderr is not None
    for line in child.stderr:
        lines.append(line)


def capture_for(testbed: Run, targets: list[str], seconds: float, bpf: str | None = None,
                out: str | Path | None = None) -> CaptureResult:
    """Capture for `seconds` and return the result (what `picloud capture` and the UI do)."""
    if not (isinstance(seconds, int | float) and 0 < seconds <= 3600):
        raise TrafficError(f"capture: seconds {seconds!r} (between 0 and 3600)")
    cap = Capture(testbed, targets, bpf, out)
    cap.start()
    try:
        time.sleep(seconds)
    finally:
        result = cap.stop()
    return result
