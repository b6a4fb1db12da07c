"""Run every benchmark in bench/ against its peer and rewrite bench/RESULTS.md (`make bench`).

    .venv/bin/python -m bench.run_all [--quick] [--only fabric,cbench] [--budget MINUTES]

Each benchmark script is run as its own process, one after the other (they share two cores and one
ovs-vswitchd, so running them together would measure each other). A script is free to have its own
options; this runner reads its `--help` and passes only what the script understands:
`--quick` (or, for scripts without it, the smaller settings listed below) and `--record` (the script
writes its own section of RESULTS.md). For a script that does not record itself, the Markdown table
lines it prints become its section. A missing script is skipped with a note, a failed or timed-out
one gets a note with its last output lines, and the overall run is bounded by --budget.

The file's header (everything above the first `## ` section) is rewritten with the date, the
machine (CPU model, cores, memory, kernel, Open vSwitch version and datapath) and the load average
before and after, since the numbers depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"


@dataclass(frozen=True)
class Bench:
    name: str
    script: str  # file name in bench/
    section: str  # the "## " heading of its RESULTS.md section
    peer: str  # what it is measured against, in the same run
    timeout: float  # seconds, full run
    quick_timeout: float
    quick_args: tuple[str, ...] = field(default_factory=tuple)  # for scripts without --quick


BENCHES = [
    Bench("fabric", "fabric_bench.py", "## Fabric", "Mininet 2.3.0 (Debian)", 1500, 300),
    Bench("teardown", "teardown_bench.py", "## Teardown floor", "kernel floor (packet-socket close)", 300, 120),
    Bench("tcp_paths", "tcp_paths_bench.py", "## TCP paths", "1 bridge (same run)", 300, 120),
    Bench("cbench", "cbench.py", "## Controller (cbench)",
          "Ryu's simple_switch_13 on os-ken, ovs-testcontroller", 300, 120),
    Bench("traffic", "traffic_bench.py", "## Traffic engine", "iperf3", 300, 120,
          ("--rounds", "1", "--seconds", "2", "--rates", "500,2000", "--rate-seconds", "2")),
    Bench("failover", "failover_bench.py", "## Failover", "(targets)", 600, 240),
    Bench("tenants", "tenants_bench.py", "## Tenants", "(see its section)", 480, 240),  # measured 3-5 / 2-3 min
    Bench("ui", "ui_bench.py", "## Web UI", "(targets)", 300, 120,
          ("--loads", "1", "--requests", "10", "--stream-seconds", "3")),
    Bench("pi_capacity", "pi_capacity.py", "## Containers and clusters",
          "bare process, network namespace, Docker", 300, 120, ("--servers", "20", "--seconds", "3")),
    Bench("scenarios", "scenario_bench.py", "## Scenarios and capture", "(targets)", 900, 300),
    # Last: it loads the machine on purpose (a CPU hog) and takes ~25 min in full (40 runs).
    Bench("fidelity", "fidelity_bench.py", "## Fidelity", "the same runs with a CPU hog", 2700, 1200),
]


# --- pure helpers (unit-tested) ---------------------------------------------------------------
def options_in_help(help_text: str) -> set[str]:
    """The long options a script's --help mentions."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))


def script_args(bench: Bench, options: set[str], quick: bool) -> list[str]:
    """What to pass: --quick if the script has it, else the quick settings it understands; --record."""
    args: list[str] = []
    if quick:
        if "--quick" in options:
            args.append("--quick")
        else:
            pairs = zip(bench.quick_args[::2], bench.quick_args[1::2], strict=True)
            args += [x for opt, value in pairs if opt in options for x in (opt, value)]
    if "--record" in options:
        args.append("--record")
    return args


def markdown_from_output(stdout: str) -> str:
    """A script's Markdown tables, in order, one blank line between two (without it Markdown reads
    two tables as one); blank when it printed none."""
    blocks: list[list[str]] = []
    inside = False
    for line in (raw.rstrip() for raw in stdout.splitlines()):
        if line.startswith("|"):
            if not inside:
                blocks.append([])
            blocks[-1].append(line)
        inside = line.startswith("|")
    return "\n\n".join("\n".join(block) for block in blocks)


def replace_header(document: str, header: str) -> str:
    """Swap the part above the first '## ' section for HEADER; the sections stay byte for byte."""
    match = re.search(r"^## ", document, re.M)
    rest = document[match.start():] if match else ""
    return header.rstrip("\n") + "\n\n" + rest


STAMP = re.compile(r"^<!-- written by make bench; sha256 ([0-9a-f]{16}) -->$", re.M)


def stamp(section: str, body: str) -> str:
    """The line that ends every section make bench writes: a digest of the heading and body, so a
    figure typed in by hand afterwards shows up (`edited_sections`, checked by a unit test)."""
    digest = hashlib.sha256(f"{section}\n\n{body.strip()}".encode()).hexdigest()[:16]
    return f"<!-- written by make bench; sha256 {digest} -->"


def replace_section(document: str, section: str, body: str) -> str:
    """Replace SECTION's block (up to the next '## ' heading), or append it; the block ends with
    its stamp. Nothing of the old block is kept: every word and figure comes from this run."""
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = f"{section}\n\n{body.strip()}\n\n{stamp(section, body)}\n\n"
    if pattern.search(document):
        return pattern.sub(lambda _: block, document)
    return document.rstrip("\n") + "\n\n" + block


def record_section(section: str, body: str) -> None:
    """Write one benchmark's SECTION into RESULTS.md (`--record`); every other section stays as it is."""
    document = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(replace_section(document, section, body))


def publish(section: str, lines: list[str], record: bool) -> int:
    """Print a benchmark's section text and, with `--record`, write it into RESULTS.md; exit status 0."""
    text = "\n".join(lines)
    print(text)
    if record:
        record_section(section, text)
    return 0


def sections(document: str) -> dict[str, str]:
    """'## ' heading -> the text up to the next one (the header above the first is not a section)."""
    parts = re.split(r"^(## .*)$", document, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def edited_sections(document: str) -> list[str]:
    """Sections whose text no longer matches their stamp (edited by hand), or that carry none."""
    bad = []
    for heading, text in sections(document).items():
        match = STAMP.search(text)
        if not match or stamp(heading, text[:match.start()]) != match.group(0):
            bad.append(heading)
    return bad


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def mem_total_gib(meminfo: str) -> float:
    match = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    return int(match.group(1)) / 2**20 if match else 0.0


# --- the machine --------------------------------------------------------------------------------
def ovs_description() -> str:
    """Open vSwitch version and the datapath PiCloud uses here (kernel module or userspace + TSO)."""
    try:
        from topology.effects import ovs

        version = ovs.vsctl("get", "Open_vSwitch", ".", "ovs_version").strip('"')
        if ovs.kernel_datapath_available():
            datapath = "kernel datapath"
        else:
            tso = "on" if ovs.userspace_tso_active() else "off"
            datapath = f"userspace datapath (netdev), userspace TSO {tso}"
        return f"Open vSwitch {version}, {datapath}"
    except Exception as exc:  # noqa: BLE001 - the header says what it could not find, the run goes on
        return f"Open vSwitch: unknown ({exc})"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    return (f"{cpu_model(cpuinfo)}, {os.cpu_count()} cores, {mem_total_gib(meminfo):.1f} GiB memory, "
            f"Linux {platform.release()}, Python {platform.python_version()}, {ovs_description()}")


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# --- running ------------------------------------------------------------------------------------
def run_script(argv: list[str], timeout: float, log: Path) -> tuple[int | None, str, float]:
    """Run one benchmark; its stderr (progress) passes through, stdout is kept. On timeout the whole
    process group it started gets SIGINT, then SIGKILL: scripts tear their fabrics down on SIGINT."""
    t0 = time.monotonic()
    with open(log, "w") as out:
        # SIGINT back to its default in the child, so Python turns it into KeyboardInterrupt even when
        # this runner was started as a background job (whose shell ignores SIGINT).
        child = subprocess.Popen(argv, cwd=ROOT, stdout=out, stdin=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            rc: int | None = child.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            rc = None
            for sig, grace in ((signal.SIGINT, 90), (signal.SIGTERM, 30), (signal.SIGKILL, None)):
                os.killpg(child.pid, sig)
                try:
                    child.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return rc, log.read_text(), time.monotonic() - t0


def run_bench(bench: Bench, quick: bool, budget_left: float, work: Path) -> tuple[str, str | None]:
    """Run one benchmark. Returns (status line for the summary, section body to write or None when
    the script wrote its own section)."""
    path = ROOT / "bench" / bench.script
    if not path.exists():
        return "skipped: not present", f"Skipped: `bench/{bench.script}` is not in the tree yet."
    module = f"bench.{path.stem}"  # as a module: scripts may import their neighbours (python -m bench.X)
    help_run = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    options = options_in_help(help_run.stdout)
    args = script_args(bench, options, quick)
    command = f"python -m {module} {' '.join(args)}".strip()
    timeout = min(bench.quick_timeout if quick else bench.timeout, budget_left)
    if timeout < 30:
        return "skipped: time budget spent", f"Skipped: the run's time budget was spent before `{command}`."
    before = RESULTS.read_text() if RESULTS.exists() else ""
    print(f"run_all: {command} (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
    rc, stdout, took = run_script([sys.executable, "-m", module, *args], timeout, work / f"{bench.name}.out")
    recorded = RESULTS.exists() and RESULTS.read_text() != before
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if rc == 0:
        status = f"ok, {took:.0f} s"
        if recorded:
            return status + " (recorded its own section)", None
        table = markdown_from_output(stdout)
        body = table or "```\n" + "\n".join(stdout.strip().splitlines()[-20:]) + "\n```"
        return status, f"Run {stamp}, `{command}`, {took:.0f} s; peer: {bench.peer}.\n\n{body}"
    status = f"timed out after {took:.0f} s" if rc is None else f"failed (exit {rc}) after {took:.0f} s"
    tail = "\n".join(stdout.strip().splitlines()[-10:])
    return status, f"Run {stamp}, `{command}`: {status}. Last output:\n\n```\n{tail}\n```"


def header(date: str, machine_text: str, load_before: str, load_after: str, quick: bool,
           statuses: list[tuple[Bench, str]]) -> str:
    rows = "\n".join(f"| {b.name} | `bench/{b.script}` | {b.peer} | {s} |" for b, s in statuses)
    return (f"# Benchmark results\n\nGenerated by `make bench` (`python -m bench.run_all"
            f"{' --quick' if quick else ''}`) on {date}.\n\n"
            f"Machine: {machine_text}.\n\n"
            f"Load average (1 / 5 / 15 min): {load_before} before, {load_after} after. The machine may be "
            "shared with other work; each section states its own run and load where the script "
            "reports it.\n\n"
            "| benchmark | script | peer (same run) | status |\n| --- | --- | --- | --- |\n" + rows + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="each benchmark's smoke settings (about 5 minutes)")
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(b.name for b in BENCHES))
    parser.add_argument("--budget", type=float, help="minutes for the whole run (default 30, quick 8)")
    args = parser.parse_args(argv)
    names = {n.strip() for n in args.only.split(",")} if args.only else {b.name for b in BENCHES}
    unknown = names - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"--only: unknown benchmark {sorted(unknown)[0]!r}")
    if os.geteuid() != 0:
        print("run_all: the benchmarks build real fabrics: run as root (make bench)", file=sys.stderr)
        return 2
    budget = 60 * (args.budget or (8 if args.quick else 30))
    deadline = time.monotonic() + budget
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before, machine_text = load(), machine()
    statuses: list[tuple[Bench, str]] = []
    with tempfile.TemporaryDirectory(prefix="picloud-bench-") as tmp:
        for bench in BENCHES:
            if bench.name not in names:
                statuses.append((bench, "not run this time (--only): its section is from an earlier run"))
                continue
            status, body = run_bench(bench, args.quick, deadline - time.monotonic(), Path(tmp))
            print(f"run_all: {bench.name}: {status}", file=sys.stderr, flush=True)
            statuses.append((bench, status))
            document = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
            if body is not None:
                document = replace_section(document, bench.section, body)
            RESULTS.write_text(document)
    document = RESULTS.read_text() if RESULTS.exists() else ""
    RESULTS.write_text(replace_header(document, header(date, machine_text, load_before, load(), args.quick,
                                                        statuses)))
    print(f"run_all: wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    failed = [b.name for b, s in statuses if s.startswith(("failed", "timed out"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
