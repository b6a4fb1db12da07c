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

Local and Docker backends. The cluster backend's containers live on other machines: capturing there
needs a capture container in each target's namespace on its Pi and a copy of the file back, which
is not built yet; it is refused with that reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picloud.errors import TrafficError
from traffic import pcapng

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Point:
    """One interface to capture on: where it is and what to call it in the file."""

    iface: str
    netns: str | None
    name: str  # if_name in the file, unique in the request
    description: str


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
            lines.append(f"  {i['name']:<28} {i['packets']:>8} packets  {drop} dropped  ({i['description']})")
        return "\n".join(lines)


def resolve(testbed: Run, targets: list[str]) -> list[Point]:
    """Capture points for target strings (see module doc); one-line errors for bad ones."""
    if getattr(testbed, "backend", "local") == "cluster":
        raise TrafficError("capture: not available on the cluster backend yet (containers are on other "
                           "machines; it needs a capture container per Pi and a copy of the file back)")
    if not targets:
        raise TrafficError("capture: no target (give link:A,B, port:NODE:N or a container name)")
    topo, fabric = testbed.topology, testbed.fabric
    points: list[Point] = []
    for t in targets:
        kind, _, rest = t.partition(":") if ":" in t else ("container", "", t)
        if kind == "link":
            a, _, b = rest.partition(",")
            if not (a and b) or a not in topo or b not in topo or not topo.graph.has_edge(a, b):
                raise TrafficError(f"capture target {t!r}: no such link (link:A,B with two adjacent nodes)")
            link = topo.link(a, b)
            for node, peer in ((link.a, link.b), (link.b, link.a)):
                end = fabric.end(node, link)
                points.append(Point(end.iface, end.netns, f"{node}>{peer}",
                                    f"link {link.a}-{link.b}, end at {node} ({end.iface})"))
        elif kind == "port":
            node, _, num = rest.rpartition(":")
            if node not in topo or topo.kind(node) == "container" or not num.isdigit():
                raise TrafficError(f"capture target {t!r}: port:NODE:N with a switch or Pi and a port number")
            ports = topo.ports(node)
            if int(num) not in ports:
                raise TrafficError(f"capture target {t!r}: {node} has no port {num} (ports "
                                   f"{', '.join(map(str, sorted(ports)))})")
            peer = ports[int(num)]
            end = fabric.end(node, topo.link(node, peer))
            points.append(Point(end.iface, end.netns, f"{node}:{num}", f"port {num} of {node}, facing {peer} "
                                                                       f"({end.iface})"))
        elif kind == "container":
            try:
                ns = fabric.netns(rest)
            except Exception:
                raise TrafficError(f"capture target {t!r}: no container {rest!r} in run {testbed.prefix}") from None
            points.append(Point("eth0", ns, rest, f"container {rest}, eth0 (netns {ns})"))
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
        self._procs: list[tuple[subprocess.Popen, list[Point], Path, list[str], dict]] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Capture:
        from topology.effects import proc

        groups: dict[str | None, list[Point]] = {}
        for p in self.points:
            groups.setdefault(p.netns, []).append(p)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.testbed.prefix}-capture-")
        os.chmod(self._tmp.name, 0o755)  # dumpcap may write as another user
        try:
            for i, (ns, pts) in enumerate(groups.items()):
                path = Path(self._tmp.name) / f"part{i}.pcapng"
                argv = ["dumpcap", "-q", "-n", "-w", str(path)]
                for p in pts:
                    argv += ["-i", p.iface]
                if self.bpf:
                    argv += ["-f", self.bpf]
                if self.snaplen:
                    argv += ["-s", str(self.snaplen)]
                if ns:
                    argv = ["ip", "netns", "exec", ns, *argv]  # execs dumpcap: signals reach it directly
                child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, start_new_session=True)
                rec = proc.record(child, "capture").to_dict()
                self.testbed.state.intend("pids", [rec])
                lines: list[str] = []
                threading.Thread(target=_drain, args=(child, lines), daemon=True).start()
                self._procs.append((child, pts, path, lines, rec))
            self._wait_started()
        except BaseException:
            self._kill()
            raise
        return self

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for child, pts, _path, lines, _rec in self._procs:
            while sum("Capturing on" in ln for ln in list(lines)) < 1:
                if child.poll() is not None or time.monotonic() > deadline:
                    time.sleep(0.1)
                    err = " ".join(ln.strip() for ln in lines if "Running as" not in ln)[:300]
                    raise TrafficError(f"capture on {', '.join(p.name for p in pts)}: dumpcap did not start "
                                       f"({err or 'no output'})")
                time.sleep(0.02)

    def _kill(self) -> None:
        for child, *_rest in self._procs:
            if child.poll() is None:
                child.kill()
                child.wait(5)
        self._forget()

    def _forget(self) -> None:
        recs = [rec for *_x, rec in self._procs]
        if recs:
            with contextlib.suppress(Exception):
                self.testbed.state.forget("pids", recs)

    def _settle(self, quiet: float = 0.6, limit: float = 15.0) -> None:
        """Wait until no file grows for `quiet` s: on a loaded host dumpcap reads the kernel's ring
        late, and a stop signal ends it without draining the ring; what was in it would be lost
        and counted nowhere (neither captured nor dropped). We measured that on a 1.5 MB flow."""
        end, sizes, since = time.monotonic() + limit, None, time.monotonic()
        while time.monotonic() < end:
            now = [path.stat().st_size if path.exists() else 0 for _c, _p, path, _l, _r in self._procs]
            if now != sizes:
                sizes, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def stop(self) -> CaptureResult:
        if self.result is not None:
            return self.result
        self._settle()
        for child, *_rest in self._procs:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)  # dumpcap then writes its statistics blocks
        for child, *_rest in self._procs:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        self._forget()
        parts, stats = [], []
        for child, pts, path, lines, _rec in self._procs:
            if not path.is_file():
                err = " ".join(ln.strip() for ln in lines if "Running as" not in ln)[:300]
                raise TrafficError(f"capture on {', '.join(p.name for p in pts)}: no file written "
                                   f"(dumpcap exit {child.returncode}: {err})")
            data = pcapng.rename_interfaces(path.read_bytes(), [(p.name, p.description) for p in pts])
            path.write_bytes(data)
            parts.append(path)
            for p, st in zip(pts, pcapng.interfaces(data), strict=False):
                stats.append({"name": p.name, "description": p.description, "iface": p.iface, "netns": p.netns,
                              "packets": st.packets, "bytes": st.bytes, "received": st.received,
                              "dropped": st.dropped, "os_dropped": st.os_dropped})
        if len(parts) == 1:
            shutil.copyfile(parts[0], self.out)
        else:
            subprocess.run(["mergecap", "-I", "none", "-w", str(self.out), *map(str, parts)], check=True,
                           capture_output=True, timeout=300)
        if self._tmp is not None:
            self._tmp.cleanup()
        self.result = CaptureResult(self.out, stats)
        return self.result


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
