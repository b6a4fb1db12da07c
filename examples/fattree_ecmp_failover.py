#!/usr/bin/env python3
# ECMP and failover on a k=4 fat-tree. Eight concurrent TCP flows (iperf3) go from pod 1 to pod 3;
# PiCloud's routing app spreads them over the four core switches with OpenFlow select groups, which
# the core switches' port counters show. Mid-stream the busiest aggregation-core uplink is cut;
# the flows on it move to the surviving paths and every flow keeps delivering data.
# Run (as root, from the repository root): .venv/bin/python examples/fattree_ecmp_failover.py
# Exits 1 if fewer than two cores carried traffic or a flow stopped after the cut.
import json
import subprocess
import sys
import time

from picloud import Testbed

DURATION, CUT_AT, SETTLE = 15, 5, 3  # seconds: flow length, when the cut happens, grace after it
# (the window after the grace outlasts TCP's retransmission backoff for a flow whose packets the cut lost)
RATE = "20M"  # per flow, paced by iperf3: a modest total, so a busy host forwards every flow fairly
CORES = ["core1", "core2", "core3", "core4"]


def tx_bytes(tb: Testbed, switch: str) -> dict[int, int]:
    """Bytes sent so far by each port of a switch (OVS port counters, via the controller)."""
    return {p["port_no"]: p["tx_bytes"] for p in tb.port_stats(switch) if isinstance(p["port_no"], int)}


def uplink_bytes(tb: Testbed, uplinks: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    stats = {agg: tx_bytes(tb, agg) for agg in {a for a, _ in uplinks}}
    return {(agg, core): stats[agg][tb.topology.port(agg, core)] for agg, core in uplinks}


with Testbed("fattree:4") as tb:
    pod1 = [c for c in tb.containers if c.startswith("pi1-")]
    pod3 = [c for c in tb.containers if c.startswith("pi3-")]
    pairs = [(src, pod3[(i + k) % len(pod3)]) for i, src in enumerate(pod1) for k in range(2)]
    uplinks = [(agg, core) for agg in ("agg1-1", "agg1-2") for core in CORES
               if tb.topology.graph.has_edge(agg, core)]
    print(f"{tb.prefix}: {len(pairs)} TCP flows pod 1 -> pod 3 for {DURATION} s, cut at {CUT_AT} s")

    deadline = time.monotonic() + 60  # routing has installed every path once all pairs carry TCP
    while any(v for row in tb.ping_all(tcp=True, containers=pod1 + pod3).values() for v in row.values()):
        if time.monotonic() > deadline:
            sys.exit("pod 1 and pod 3 do not reach each other over TCP")
        time.sleep(1)

    servers, clients = [], []
    try:
        for i, (_src, dst) in enumerate(pairs):
            servers.append(tb.popen(dst, ["iperf3", "-s", "-1", "-p", str(5301 + i)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)  # servers listening
        core0 = {c: sum(tx_bytes(tb, c).values()) for c in CORES}
        for i, (src, dst) in enumerate(pairs):  # fixed source ports: the ECMP hash is repeatable
            clients.append(tb.popen(src, ["iperf3", "-c", tb.container_ip(dst), "-p", str(5301 + i),
                                          "--cport", str(42001 + i), "-t", str(DURATION), "-b", RATE, "-J"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        t0 = time.monotonic()
        time.sleep(CUT_AT - 2)
        up0 = uplink_bytes(tb, uplinks)
        time.sleep(2)
        up1 = uplink_bytes(tb, uplinks)
        busiest = max(uplinks, key=lambda ln: up1[ln] - up0[ln])
        tb.link(*busiest).down()
        cut_at = time.monotonic() - t0
        print(f"cut {busiest[0]}-{busiest[1]} at {cut_at:.1f} s")
        reports = [json.loads(c.communicate(timeout=DURATION + 60)[0]) for c in clients]
        time.sleep(1.5)  # OVS refreshes port counters about once a second
        carried = {c: sum(tx_bytes(tb, c).values()) - core0[c] for c in CORES}
    finally:
        for p in clients + servers:
            if p.poll() is None:
                p.kill()
            p.wait()

total = sum(carried.values())
print("bytes through each core switch: " + ", ".join(f"{c} {v / 1e6:.1f} MB ({v / total:.0%})"
                                                     for c, v in carried.items()))
stalled = []
for (src, dst), rep in zip(pairs, reports, strict=True):
    intervals = [iv["sum"] for iv in rep.get("intervals", [])]
    before = sum(iv["bytes"] for iv in intervals if iv["end"] <= cut_at) * 8 / cut_at / 1e6
    after = [iv for iv in intervals if iv["start"] >= cut_at + SETTLE]
    after_mbps = sum(iv["bytes"] for iv in after) * 8 / max(1e-9, sum(iv["seconds"] for iv in after)) / 1e6
    print(f"  {src} -> {dst}: {before:6.1f} Mbit/s before the cut, {after_mbps:6.1f} Mbit/s from "
          f"{SETTLE} s after it")
    if "error" in rep or after_mbps <= 0:
        stalled.append(f"{src}->{dst}")
used = [c for c, v in carried.items() if v > 0.1 * total / len(CORES)]
print(f"{len(used)} of {len(CORES)} cores carried traffic; flows stalled after the cut: {stalled or 'none'}")
sys.exit(0 if len(used) >= 2 and not stalled else 1)
