"""The main job: the Raspberry Pi Cloud scale model brought to life end to end.

A demo is a list of named steps run in order; each prints one line with its elapsed time. If a
step fails, the demo says which and why, tears everything down and exits non-zero: a demo that
half-works on a projector is worse than one that stops with a clear reason.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from picloud.errors import PiCloudError
from topology.rates import pi_uplinks
from traffic.fidelity import line as fidelity_line

if TYPE_CHECKING:
    from picloud.testbed import Testbed
    from traffic.results import Results
    from webui.server import UIServer

DEMO_SPEC = "picloud:4,4"
DEMO_CONTAINERS_PER_PI = 2
DEMO_SUBNET = "10.0.0.0/24"
DEMO_MEMBERS = 8  # per tenant: two per rack with `spread`
DEMO_WORKLOAD = "websearch"
DEMO_LOAD = 0.4
DEMO_TRAFFIC_SECONDS = 60


class DemoStepFailed(PiCloudError):
    pass


@dataclass
class DemoRun:
    """What the steps share: the testbed, the UI handle, the results."""

    duration: float | None
    traffic_seconds: float
    out: Path
    started: float = field(default_factory=time.monotonic)
    testbed: Testbed | None = None
    ui: UIServer | None = None
    results: Results | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def interrupt(self, signum: int, frame: object) -> None:  # noqa: ARG002
        """SIGINT and SIGTERM: remembered as well as raised. A KeyboardInterrupt raised while the main
        thread runs a finaliser (`__del__`, a weakref callback) is printed and swallowed by Python, and a
        CI run saw the demo carry on to the end after one; the flag stops it at the next step."""
        self.interrupted = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


def _step(run: DemoRun, name: str, action: Callable[[], str | None]) -> None:
    run.check()
    t0 = time.monotonic()
    try:
        detail = action()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing step names itself; the traceback stays for our bugs
        run.say(f"FAILED {name}: {exc}")
        if not isinstance(exc, PiCloudError):
            import traceback

            traceback.print_exc()
        raise DemoStepFailed(f"demo step '{name}' failed: {exc}") from exc
    run.check()
    run.say(f"{name} ({time.monotonic() - t0:.1f}s){': ' + detail if detail else ''}")


def _agg_link(testbed: Testbed) -> tuple[str, str]:
    """An aggregation-to-ToR link: the one the demo cuts while traffic runs."""
    topo = testbed.topology
    for link in topo.fabric_links():
        roles = {topo.node(link.a).role, topo.node(link.b).role}
        if roles == {"aggregation", "tor"}:
            return link.a, link.b
    raise DemoStepFailed("no aggregation-ToR link to cut in the demo topology")


def run_demo(duration: float | None = None, traffic_seconds: float | None = None,
             out: str | Path = "results/demo", ui_port: int = 8080) -> int:
    from picloud.testbed import Testbed

    if duration is not None and duration <= 0:
        raise PiCloudError(f"--duration {duration}: must be a positive number of seconds")
    if traffic_seconds is None:
        traffic_seconds = DEMO_TRAFFIC_SECONDS
        if duration is not None:
            # Leave room for set-up, verification and tear-down inside the requested duration.
            traffic_seconds = max(10.0, min(DEMO_TRAFFIC_SECONDS, duration - 40.0))
    run = DemoRun(duration=duration, traffic_seconds=traffic_seconds, out=Path(out))
    previous = signal.signal(signal.SIGTERM, run.interrupt)
    # The demo waits for Ctrl-C at its end: started as a background job of a non-interactive shell
    # (`make demo &` in a script) it inherits SIGINT ignored, and `kill -INT` then did nothing.
    previous_int = signal.signal(signal.SIGINT, run.interrupt)
    try:
        return _run(run, Testbed, ui_port)
    except DemoStepFailed as exc:
        print(f"picloud: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        run.say("interrupted: tearing down")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _run(run: DemoRun, testbed_class: type[Testbed], ui_port: int) -> int:
    run.say(f"PiCloud demo: {DEMO_SPEC} with {DEMO_CONTAINERS_PER_PI} containers per Pi")
    testbed = testbed_class(DEMO_SPEC, containers_per_pi=DEMO_CONTAINERS_PER_PI)

    def build() -> str:
        testbed.__enter__()
        run.testbed = testbed
        c = testbed.topology.counts()
        topo = testbed.topology
        rates = sorted({bw for a, b in pi_uplinks(topo) if (bw := topo.link(a, b).bw) is not None})
        shaped = (f"Pi uplinks shaped to {', '.join(f'{r:g}' for r in rates)} Mbit/s (Raspberry Pi Model B NIC)"
                  if rates else "Pi uplinks unshaped")
        return (f"{c['switches']} switches, {c['pis']} Pis, {c['containers']} containers, "
                f"{c['links']} links, {shaped}, prefix {testbed.prefix}")

    def reach() -> str:
        matrix = testbed.ping_all(tcp=True)
        pairs = sum(len(row) for row in matrix.values())
        lost = [(s, d) for s, row in matrix.items() for d, loss in row.items() if loss > 0]
        if lost:
            raise DemoStepFailed(f"{len(lost)} of {pairs} container pairs unreachable over TCP, e.g. {lost[0]}")
        return f"all {pairs} ordered container pairs reach each other over TCP"

    def tenants() -> str:
        for name in ("red", "blue"):
            testbed.tenant(name, subnet=DEMO_SUBNET).add(DEMO_MEMBERS, placement="spread")
        return f"red and blue, both on {DEMO_SUBNET}, {DEMO_MEMBERS} members each spread over all racks"

    def verify() -> str:
        report = testbed.verify_isolation()
        if not report.ok:
            raise DemoStepFailed(f"isolation check failed: {report.summary()}")
        return report.summary()

    def ui() -> str:
        run.ui = server = testbed.ui(port=ui_port)
        return f"open {server.url}  (token for actions: {server.token_hint()})"

    def traffic() -> str:
        a, b = _agg_link(testbed)
        # The cut is a scenario like any user's: applied on time, logged in events.csv with its cost.
        cut = testbed.scenario([
            {"at": round(run.traffic_seconds * 0.4, 3), "action": "link-down", "link": [a, b]},
            {"at": round(run.traffic_seconds * 0.7, 3), "action": "link-up", "link": [a, b]},
        ])
        run.results = results = testbed.traffic(
            workload=DEMO_WORKLOAD, load=DEMO_LOAD, pattern="all-to-all",
            duration=run.traffic_seconds, seed=1, tenant="red", out=run.out, progress=sys.stderr.isatty(), scenario=cut,
        )
        events = results.meta.get("scenario") or []
        applied = ", ".join(f"{e['action']} {e['target']} at {e['applied_s']:.2f}s ({e['status']})"
                            for e in events if e.get("applied_s") is not None)
        return f"{len(results.flows)} flows, {applied}; results in {results.directory}"

    def summary() -> str:
        results = run.results
        assert results is not None  # the traffic step ran before this one
        print(results.report(), flush=True)
        plots = ", ".join(str(p) for p in results.plots())
        # The verdict: whether these numbers describe the modelled Pi network or the host (traffic.fidelity).
        return f"{fidelity_line(results.fidelity)}; plots: {plots}"

    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("build the scale model and start the controller", build),
        ("check all-pairs TCP reachability", reach),
        ("create tenants", tenants),
        ("verify tenant isolation", verify),
        ("start the web UI", ui),
        (f"run {DEMO_WORKLOAD} at {DEMO_LOAD:.0%} load for {run.traffic_seconds:.0f}s, "
         "cutting an aggregation link", traffic),
        ("summarise flow completion times and the fidelity verdict", summary),
    ]
    try:
        for name, action in steps:
            _step(run, name, action)
        if run.duration is None:
            run.say("running; the UI stays up until Ctrl-C")
            while True:
                run.check()
                time.sleep(1)
        remaining = run.duration - (time.monotonic() - run.started)
        if remaining > 0:
            run.say(f"keeping the UI up for {remaining:.0f}s more (--duration)")
            end = time.monotonic() + remaining
            while (left := end - time.monotonic()) > 0:
                run.check()
                time.sleep(min(1.0, left))
        run.check()
        return 0
    finally:
        t0 = time.monotonic()
        if run.ui is not None:
            run.ui.stop()
        if run.testbed is not None:
            testbed.__exit__(None, None, None)
        run.say(f"torn down ({time.monotonic() - t0:.1f}s)")
