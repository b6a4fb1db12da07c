"""Scenario timing, capture drops and per-event loss of a scheduled cut; writes "## Scenarios and capture".

    .venv/bin/python -m bench.scenario_bench [--quick] [--record]

Targets (tests assert correctness only; these are held here):
- scenario events are applied within 5 ms of their planned time at the 99th percentile;
- a capture of a 1 Gbit/s bulk flow on four points (both containers, both ends of the link)
  drops nothing in the kernel (the figure is the flow's real rate here, which is what is reported);
- a link cut applied by a scenario under ECMP with fast failover loses fewer than 50 packets of a
  1,000 packets/s UDP stream (the stream and cut choice are `bench.failover_bench`'s, when present,
  so both benchmarks measure the same thing; the cut here comes from the scheduler).
Needs root and a running Open vSwitch. Prints a Markdown section and the load average with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from picloud.testbed import Testbed
from topology.builders import build

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Scenarios and capture"
TIMING_TARGET_MS = 5.0
LOSS_TARGET = 50


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def timing(steps: int) -> dict:
    """A flapping link and a node failing on leafspine:2,2,1: |applied - planned| over every step."""
    period = 0.2
    entries = [
        {"at": 0.5, "action": "link-flap", "link": ["spine1", "leaf1"], "period": period, "duty": 0.5,
         "until": 0.5 + period * steps / 4},
        {"at": 0.6, "action": "link-flap", "link": ["spine2", "leaf2"], "period": period, "duty": 0.5,
         "until": 0.6 + period * steps / 4},
    ]
    with Testbed("leafspine:2,2,1") as tb, tempfile.TemporaryDirectory() as tmp:
        rows = tb.scenario(entries, seed=1).run(Path(tmp))
    errors = [abs(float(r["error_ms"])) for r in rows if r.get("error_ms") is not None]
    took = [float(r["took_ms"]) for r in rows if r.get("took_ms") is not None]
    return {"steps": len(rows), "p50_ms": _pct(errors, 0.5), "p99_ms": _pct(errors, 0.99), "max_ms": max(errors),
            "took_p50_ms": _pct(took, 0.5), "took_p99_ms": _pct(took, 0.99),
            "failed": sum(1 for r in rows if r["status"] != "ok")}


def capture(seconds: float) -> dict:
    """A bulk TCP flow between two containers while four points capture it."""
    from traffic import iperf

    with Testbed(build("single:2"), controller="none") as tb, tempfile.TemporaryDirectory() as tmp:
        src, dst = tb.containers
        tb.ping_all()
        result: dict = {}

        def flow() -> None:
            try:
                result.update(iperf.bulk(tb, src, dst, duration=seconds))
            except Exception as exc:  # noqa: BLE001 - reported in the section, with the load
                result["error"] = str(exc)

        with tb.capture([src, dst, "link:s1,pi2"], out=Path(tmp) / "bulk.pcapng") as cap:
            t = threading.Thread(target=flow)
            t.start()
            t.join()
        res = cap.result
        assert res is not None
        received = sum(i["received"] or 0 for i in res.interfaces)
        return {"mbps": result.get("goodput_mbps", 0.0), "points": len(res.interfaces), "packets": res.packets,
                "received": received, "dropped": res.dropped, "error": result.get("error"),
                "drop_rate": res.dropped / max(1, received + res.dropped)}


def failover(cuts: int) -> dict | None:
    """Per-event loss of scheduler-applied cuts under ECMP fast failover, with failover_bench's stream."""
    try:
        from bench import failover_bench as fb
    except ImportError:
        return None
    import types

    losses = []
    with Testbed("fattree:4", controller=fb.APPS) as tb:
        fb.wait_for(lambda: fb.routing_settled(tb), 60, "routing to settle")
        src, dst = fb.POD1[0], fb.POD3[0]
        for _ in range(cuts):
            link = fb.busiest(tb, fb.cut_candidates(tb, "uplink"), src, dst)
            # stream_and_cut asks `tb.link(a, b).down()`: hand it a scenario doing the cut instead, so
            # the time and cost are the scheduler's.
            sc = tb.scenario([{"at": 0.0, "action": "link-down", "link": list(link)}])

            def apply(sc=sc):
                with tempfile.TemporaryDirectory() as tmp:
                    sc.run(Path(tmp), settle=0.0)
            proxy = types.SimpleNamespace(
                link=lambda a, b: types.SimpleNamespace(down=apply, up=lambda a=a, b=b: tb.link(a, b).up()),
                fabric=tb.fabric, container_ip=tb.container_ip, topology=tb.topology)
            stream = fb.stream_and_cut(proxy, src, dst, link)
            losses.append(len(stream.missing))
            fb.wait_for(lambda: fb.routing_settled(tb), 60, "routing to settle after the restore")
    return {"cuts": len(losses), "losses": losses, "median": statistics.median(losses), "max": max(losses)}


def section(t: dict, c: dict, f: dict | None) -> str:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"Load average at the end: {load} (1/5/15 min). Targets are held here, not in tests.", "",
             "| measure | value | target | |", "| --- | --- | --- | --- |",
             f"| scenario step timing, {t['steps']} steps: p50 / p99 / max \\|applied - planned\\| | "
             f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} / {t['max_ms']:.2f} ms | p99 < {TIMING_TARGET_MS:g} ms | "
             f"{'met' if t['p99_ms'] < TIMING_TARGET_MS else 'NOT met'} |",
             f"| time to apply a link-down/up (ioctl on both ends): p50 / p99 | {t['took_p50_ms']:.3f} / "
             f"{t['took_p99_ms']:.3f} ms | | |",
             f"| capture of a bulk TCP flow on {c['points']} points | {c['mbps']:.0f} Mbit/s flow, {c['packets']} "
             f"packets, {c['dropped']} kernel drops ({100 * c['drop_rate']:.3f} %) | 0 drops at 1 Gbit/s | "
             f"{'no drops' if c['dropped'] == 0 else 'drops'}; the flow reached {c['mbps']:.0f} Mbit/s, "
             f"{'not ' if c['mbps'] < 1000 else ''}1 Gbit/s{' (' + c['error'] + ')' if c.get('error') else ''} |"]
    if f is None:
        lines.append("| scenario cut under ECMP fast failover, UDP 1,000 packets/s | not measured: "
                     "bench/failover_bench.py (its stream) is not in this tree | < 50 packets | |")
    else:
        lines.append(f"| scenario cut under ECMP fast failover, UDP 1,000 packets/s, {f['cuts']} cuts: median / "
                     f"max packets lost | {f['median']:g} / {f['max']} ({f['losses']}) | < {LOSS_TARGET} | "
                     f"{'met' if f['max'] < LOSS_TARGET else 'NOT met'} |")
    return "\n".join(lines)


def record(text: str) -> None:
    from bench.run_all import record_section

    record_section(SECTION, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, a shorter flow, one cut")
    parser.add_argument("--record", action="store_true", help=f"write the section into {RESULTS}")
    args = parser.parse_args(argv)
    t = timing(40 if args.quick else 200)
    c = capture(2.0 if args.quick else 5.0)
    f = failover(1 if args.quick else 5)
    text = section(t, c, f)
    print(SECTION + "\n\n" + text)
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
