#!/usr/bin/env python3
# First experiment in 10 lines: a k=4 fat-tree, two tenants sharing 10.0.0.0/24, a web-search
# workload inside one of them, and its flow-completion-time percentiles.
# Run (as root, from the repository root): .venv/bin/python examples/first_experiment.py
# Results (flows.csv, summary.json, meta.json) land in results/; exits 1 if no flow completed.
import sys

from picloud import Testbed

with Testbed("fattree:4") as tb:
    tb.tenant("red", subnet="10.0.0.0/24").add(4, placement="spread")
    tb.tenant("blue", subnet="10.0.0.0/24").add(4, placement="spread")
    res = tb.traffic(workload="websearch", load=0.1, pattern="all-to-all", duration=10, seed=1, tenant="red")
    fct = res.summary["all"]["fct_us"]
    print(f"red: {res.summary['all']['flows']} flows done, FCT p50 {fct['p50'] / 1e3:.1f} ms, "
          f"p99 {fct['p99'] / 1e3:.1f} ms ({res.directory})")
sys.exit(0 if res.summary["all"]["flows"] > 0 else 1)
