#!/usr/bin/env python3
# A user's own Ryu app on a leaf-spine: examples/apps/shortest_path_switch.py is written against
# `ryu.*` only (LLDP discovery with ryu.lib.packet, shortest-path trees, flooding to edge ports);
# PiCloud runs it instead of its own controller apps. The script shows that every pair of
# containers reaches every other over TCP, that a bulk transfer crosses the spines, and that
# broadcasts do not loop (an idle fabric stays idle), then prints the app's flows on one leaf.
# Run (as root, from the repository root): .venv/bin/python examples/ryu_app_leafspine.py
# Exits 1 if a pair cannot reach another, the transfer fails, or the spines see a storm.
import sys
import time
from pathlib import Path

from picloud import Testbed
from traffic.iperf import bulk

APP = Path(__file__).resolve().parent / "apps" / "shortest_path_switch.py"
SPINES = ["spine1", "spine2"]


def spine_packets(tb: Testbed) -> int:
    return sum(p["rx_packets"] for s in SPINES for p in tb.port_stats(s) if isinstance(p["port_no"], int))


with Testbed("leafspine:2,2,2", controller=[str(APP)]) as tb:
    print(f"{tb.prefix}: {len(tb.switches)} switches, {len(tb.containers)} containers, app {APP.name}")
    deadline = time.monotonic() + 60  # the app learns links, then hosts, as frames arrive
    while True:
        matrix = tb.ping_all(tcp=True)
        failed = [(s, d) for s, row in matrix.items() for d, loss in row.items() if loss]
        if not failed or time.monotonic() > deadline:
            break
        time.sleep(1)
    pairs = sum(len(row) for row in matrix.values())
    print(f"TCP reachability: {pairs - len(failed)}/{pairs} pairs")

    before = spine_packets(tb)
    result = bulk(tb, "pi1-1-c1", "pi2-2-c1", duration=3)  # leaf1 -> a spine -> leaf2
    time.sleep(1.5)  # OVS refreshes port counters about once a second
    crossed = spine_packets(tb) - before
    print(f"bulk pi1-1-c1 -> pi2-2-c1: {result['goodput_mbps']:.0f} Mbit/s, "
          f"{crossed} packets through the spines")

    idle_before = spine_packets(tb)
    time.sleep(3)
    idle = spine_packets(tb) - idle_before
    print(f"idle fabric: {idle} packets through the spines in 3 s (LLDP probes; a loop would be millions)")

    flows = tb.flows("leaf1")
    print(f"leaf1 holds {len(flows)} flows of the app, for example:")
    for table in (0, 1):
        for flow in sorted((f for f in flows if f["table_id"] == table), key=lambda f: -f["priority"])[:2]:
            print(f"  table {table} priority {flow['priority']:>2} {flow['match']} -> {flow['actions']}")

ok = not failed and result["goodput_mbps"] > 0 and crossed > 1000 and idle < 1000
print("OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
