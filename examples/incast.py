#!/usr/bin/env python3
# Incast: goodput versus fan-in. An aggregator asks N workers at once for a fixed-size response
# (partition/aggregate, as in a search back end); all N answers converge on the aggregator's one
# link. As N grows the synchronised bursts overflow the queue in front of it and the time for the
# slowest answer (job completion) grows faster than the bytes, so goodput per job stops scaling:
# TCP incast (Vasudevan et al., SIGCOMM 2009). One switch, nine Pis; fan-in 2, 4 and 8 in turn.
# Run (as root, from the repository root): .venv/bin/python examples/incast.py
# Exits 1 if a fan-in completed no job.
import sys
import time
from pathlib import Path

from picloud import Testbed

OUT = Path("results/examples/incast")
FANINS = [2, 4, 8]
RESPONSE = 64_000  # bytes each worker returns per job
AGGREGATOR = "pi9-c1"

rows = []
with Testbed("single:9") as tb:
    deadline = time.monotonic() + 30  # measure once routing carries TCP between every pair
    while any(loss for row in tb.ping_all(tcp=True).values() for loss in row.values()):
        if time.monotonic() > deadline:
            sys.exit("the containers do not reach each other over TCP")
        time.sleep(1)
    for fanin in FANINS:
        res = tb.traffic(workload="websearch", load=0.2, pattern="incast", fanin=fanin, response=RESPONSE,
                         aggregator=AGGREGATOR, duration=5, seed=1, drain=5, out=OUT / f"fanin{fanin}")
        jobs = res.summary.get("jobs", {"count": 0, "completion_us": {"p50": None, "p99": None}})
        rows.append((fanin, jobs["count"], jobs["completion_us"]["p50"], jobs["completion_us"]["p99"],
                     res.summary["unfinished"]))

print(f"incast to {AGGREGATOR}, {RESPONSE // 1000} KB per worker per job")
print(f"{'fan-in':>6} {'jobs':>5} {'job p50':>10} {'job p99':>10} {'goodput p50':>12} {'unfinished':>10}")
for fanin, count, p50, p99, unfinished in rows:
    if count:
        goodput = fanin * RESPONSE * 8 / p50  # bits per microsecond = Mbit/s
        print(f"{fanin:>6} {count:>5} {p50 / 1e3:>8.1f}ms {p99 / 1e3:>8.1f}ms {goodput:>7.0f} Mbit/s "
              f"{unfinished:>10}")
    else:
        print(f"{fanin:>6} {count:>5} {'-':>10} {'-':>10} {'-':>12} {unfinished:>10}")
sys.exit(0 if all(count for _, count, *_ in rows) else 1)
