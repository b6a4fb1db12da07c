"""Tenants benchmark: live tenant changes, rules per tenant, flow-table size at 100 tenants, meters.

    .venv/bin/python -m bench.tenants_bench [--quick] [--record]

Needs root and a running Open vSwitch. One fattree:4 run (20 switches, 16 Pis, no default
containers), PiCloud's controller with tenancy. Four parts:

1. Add a 32-member tenant (spread) to the running fabric with `TenantHandle.add`: the wall time
   until the call returns (32 namespaces and veths created, plan saved, controller reloaded and
   every Pi's barrier answered), then the time until all 992 ordered member pairs connect over
   TCP, and the time to remove the 32 again.
2. Rules per tenant: tenancy's flows read back from the switches (REST flow stats, by the
   tenant id in the cookie) against what `tenancy_rules.compute` predicts.
3. 100 tenants of 8 members (quick: 20), all on 10.0.0.0/24: the control plane only. Members are
   written into the plan with Pi ports but without containers (creating 800 namespaces measures
   the kernel, which part 1 already prices per member), then one `POST /tenants/reload`: the time
   until every Pi confirmed, and the flow-table size per Pi and in total.
4. Meter accuracy on the userspace datapath: a 20 Mbit/s tenant offered 30 Mbit/s of UDP, and a
   TCP stream through the same meter.

The peer is the design's own arithmetic (rules predicted by the pure module) and the configured
rate; results print as Markdown, --record writes the "## Tenants" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller_apps import tenancy_rules as R  # noqa: E402
from controller_apps.pipeline import COOKIE_APP_MASK, COOKIE_TENANCY, cookie  # noqa: E402
from picloud.testbed import Testbed  # noqa: E402
from tenants import plan as planner  # noqa: E402
from tenants import store  # noqa: E402
from tenants.handle import current_plan, locked_plan, reload  # noqa: E402
from tenants.model import TenantPlan  # noqa: E402
from topology.effects import ovs  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Tenants"
SPEC = "fattree:4"


def tenancy_flows(tb, tenant_ids: list[int]) -> dict[int, int]:
    """Tenancy flows on all Pis for each tenant id (0 = the tenant-independent guards), counted by
    the exact cookie."""
    return {tid: sum(total_flows(tb, {"cookie": cookie(COOKIE_TENANCY, tid), "cookie_mask": 2**64 - 1}).values())
            for tid in tenant_ids}


def total_flows(tb, cookie_filter: dict | None = None) -> dict[str, int]:
    """Flow count per Pi, read from the switches themselves (`ovs-ofctl dump-aggregate` through the
    effects module): with hundreds of new hosts the controller is busy recomputing routes and its
    REST API may not answer for minutes, and the switch is the truth anyway."""
    where = []
    if cookie_filter:
        where = [f"cookie={cookie_filter['cookie']:#x}/{cookie_filter['cookie_mask']:#x}"]
    out = {}
    for pi in tb.pis:
        text = ovs.ofctl("dump-aggregate", *where, bridge=tb.fabric.bridge(pi))
        out[pi] = int(re.search(r"flow_count=(\d+)", text).group(1))
    return out


def settled_flows(tb, cookie_filter: dict | None = None, timeout: float = 180) -> dict[str, int]:
    """Flow counts once two readings 3 s apart agree (routing works through the new hosts), or the
    last reading at the timeout."""
    deadline = time.monotonic() + timeout
    last = total_flows(tb, cookie_filter)
    while time.monotonic() < deadline:
        time.sleep(3.0)
        now = total_flows(tb, cookie_filter)
        if now == last:
            return now
        last = now
    return last


def part_add(tb, rows: list[str]) -> None:
    t0 = time.perf_counter()
    big = tb.tenant("big", subnet="10.1.0.0/24")
    created = time.perf_counter() - t0
    t0 = time.perf_counter()
    added = big.add(32, placement="spread")
    add_s = time.perf_counter() - t0
    # add() returns once tenancy's rules are confirmed; routing then installs paths to the 32 new
    # MACs on every bridge. Time until every ordered pair connects over TCP (all-pairs rounds).
    t0 = time.perf_counter()
    deadline = t0 + 180
    while True:
        matrix = tb.ping_all(tcp=True, containers=[m.name for m in added])
        ok = sum(1 for row in matrix.values() for loss in row.values() if loss == 0)
        if ok == 992 or time.perf_counter() > deadline:
            break
    reach_s = time.perf_counter() - t0
    predicted = R.counts(R.compute(current_plan(tb), tb.topology))
    tid = big.id
    measured = tenancy_flows(tb, [tid, 0])
    rows.append(f"| create empty tenant (plan + reload) | {created:.2f} s | |")
    rows.append(f"| add 32 members, spread over {len({m.pi for m in added})} Pis (containers + rules) | "
                f"{add_s:.2f} s | {add_s / 32 * 1000:.0f} ms per member |")
    rows.append(f"| then until all 992 ordered pairs connect over TCP | {reach_s:.2f} s | {ok}/992 pairs "
                "connected (includes routing installing paths to the new MACs) |")
    rows.append(f"| tenancy rules of the 32-member tenant | {measured.get(tid, 0)} on the switches | "
                f"{predicted.get(tid, 0)} predicted (5 per member + 3 per Pi used) |")
    rows.append(f"| tenant-independent guard rules | {measured.get(0, 0)} | {predicted.get(0, 0)} predicted |")
    t0 = time.perf_counter()
    big.delete()
    rows.append(f"| remove the 32 members and the tenant | {time.perf_counter() - t0:.2f} s | |")


def part_scale(tb, tenants: int, rows: list[str]) -> None:
    """Many tenants of 8 members, rules only (see the module docstring)."""
    with locked_plan(tb) as path:
        plan = store.load(path)
        next_port = {pi: 1000 for pi in tb.pis}
        t0 = time.perf_counter()
        for i in range(tenants):
            name = f"s{i}"
            plan = planner.create_tenant(plan, name, "10.0.0.0/24", topology=tb.topology)
            plan, new = planner.add_members(plan, tb.topology, name, 8, "spread")
            for m in new:
                plan = planner.set_port(plan, m.name, next_port[m.pi])
                next_port[m.pi] += 1
        plan_s = time.perf_counter() - t0
        store.save(plan, path)
        before = sum(settled_flows(tb).values())
        t0 = time.perf_counter()
        summary = reload(tb)
        reload_s = time.perf_counter() - t0
    tenancy_only = sum(total_flows(tb, {"cookie": COOKIE_TENANCY, "cookie_mask": COOKIE_APP_MASK}).values())
    t0 = time.perf_counter()
    flows = settled_flows(tb)
    routing_s = time.perf_counter() - t0
    per_pi = sorted(flows.values())
    rows.append(f"| {tenants} tenants x 8 members: plan (allocation, placement) | {plan_s * 1000:.0f} ms | "
                "pure Python, no I/O |")
    rows.append(f"| {tenants} tenants x 8 members: one reload until every Pi confirmed | {reload_s:.2f} s | "
                f"{summary['add']} flows added |")
    rows.append(f"| tenancy flows, all 16 Pis | {tenancy_only} | {summary['add']} sent by the reload |")
    rows.append(f"| flow-table size, all 16 Pis, once routing settled | {sum(per_pi)} flows | {before} before "
                f"the {tenants} tenants; routing's paths to {tenants * 8} more MACs took {routing_s:.1f} s more |")
    rows.append(f"| flow-table size per Pi | median {per_pi[len(per_pi) // 2]}, max {per_pi[-1]} | |")
    with locked_plan(tb) as path:
        store.save(TenantPlan(tuple(t for t in store.load(path).tenants if not re.match(r"^s\d+$", t.name))),
                   path)
        t0 = time.perf_counter()
        summary = reload(tb)
    rows.append(f"| withdraw them again (one reload) | {time.perf_counter() - t0:.2f} s | "
                f"{summary['delete']} flows deleted |")


def _iperf(tb, client: str, server: str, ip: str, seconds: int, udp_rate: str | None) -> float | None:
    """Received Mbit/s, or None when iperf3 could not run (a busy host may miss the server start)."""
    for _ in range(3):
        srv = tb.popen(server, ["iperf3", "-s", "-1", "-p", "5311"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        udp = ["-u", "-b", udp_rate, "-l", "1400"] if udp_rate else []
        rc, out = tb.exec(client, ["iperf3", "-c", ip, "-p", "5311", *udp, "-t", str(seconds), "-J"],
                          timeout=seconds + 30)
        if srv.poll() is None:
            srv.kill()
        srv.wait(timeout=10)
        try:
            end = json.loads(out)["end"]
        except (ValueError, KeyError):
            continue
        if udp_rate is None:
            return end["sum_received"]["bits_per_second"] / 1e6
        return end["sum"]["bits_per_second"] * (1 - end["sum"]["lost_percent"] / 100) / 1e6
    return None


def part_meter(tb, rows: list[str], seconds: int) -> None:
    """A 20 Mbit/s tenant beside an unlimited one on the same kind of path. The unlimited run comes
    first: when it cannot carry the offered UDP load the host is saturated and the pair is measured
    again (up to 3 times), because a busy userspace datapath loses packets before any meter."""
    lim = tb.tenant("lim", subnet="10.2.0.0/24", rate=20)
    free = tb.tenant("free", subnet="10.2.0.0/24")
    a, b = lim.add(2, placement=["pi1-1-1", "pi3-1-1"])
    c, d = free.add(2, placement=["pi1-1-2", "pi3-1-2"])
    kinds = ((f"UDP offered at 30 Mbit/s ({seconds} s)", "30M", 27.0), (f"one TCP stream ({seconds} s)", None, 40.0))
    for label, udp_rate, carried in kinds:
        attempt = 0
        while attempt < 3:
            attempt += 1
            unlimited = _iperf(tb, c.name, d.name, d.ip, seconds, udp_rate)
            limited = _iperf(tb, a.name, b.name, b.ip, seconds, udp_rate)
            if unlimited is not None and unlimited >= carried:
                break
        shown = "-" if limited is None else f"{limited:.1f} Mbit/s"
        peer = "-" if unlimited is None else f"{unlimited:.1f} Mbit/s"
        rows.append(f"| 20 Mbit/s meter (drop band, burst 0.3 s), {label} | {shown} | same path without "
                    f"a limit: {peer} (attempt {attempt}) |")
    lim.delete()
    free.delete()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 tenants instead of 100, shorter iperf")
    parser.add_argument("--record", action="store_true", help=f"write the results into {RESULTS}")
    args = parser.parse_args(argv)
    tenants, seconds = (20, 3) if args.quick else (100, 6)
    load_before = os.getloadavg()[0]
    rows = ["| measurement | result | note |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "tenants.yaml"
        spec.write_text("tenants: []\n")
        t0 = time.perf_counter()
        with Testbed(SPEC, containers_per_pi=0, tenants=spec) as tb:
            rows.append(f"| {SPEC} up with the tenancy app | {time.perf_counter() - t0:.2f} s | "
                        "20 switches, 16 Pis |")
            part_add(tb, rows)
            part_meter(tb, rows, seconds)
            part_scale(tb, tenants, rows)  # last: routing is busy with its hosts for a long time
    load_after = os.getloadavg()[0]
    text = "\n".join(rows) + (
        f"\n\n{SPEC}, OVS userspace datapath, load average {load_before:.1f} before and {load_after:.1f} after "
        "(two cores shared with the other benchmarks and tests). Part 3 installs rules for members that have a "
        "Pi port but no container; container creation is priced per member by the 32-member row."
        + (" Quick run." if args.quick else ""))
    print(f"{SECTION}\n\n{text}")
    if args.record:
        record(text)
    return 0


def record(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md (other sections belong to others)."""
    from bench.run_all import record_section

    record_section(SECTION, text)


if __name__ == "__main__":
    sys.exit(main())
