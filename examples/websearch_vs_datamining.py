#!/usr/bin/env python3
# Web search vs data mining: the two classic data-centre workloads (Alizadeh et al., DCTCP 2010;
# Greenberg et al., VL2 2009) replayed on the same leaf-spine with the same seed, load and pattern.
# Data mining is mostly tiny flows with a very heavy tail, web search is mid-sized flows, so their
# flow-completion-time distributions differ in shape. Prints the two summaries side by side and
# writes each run's FCT CDF and slowdown plots plus one comparison plot (compare_fct_cdf.png).
# Short, low-load runs so it finishes in about a minute; raise DURATION and LOAD for real numbers.
# Run (as root, from the repository root): .venv/bin/python examples/websearch_vs_datamining.py
# Exits 1 if a run completed no flow or a plot is missing.
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from picloud import Testbed  # noqa: E402

OUT = Path("results/examples/websearch_vs_datamining")
DURATION, LOAD, SEED = 8, 0.1, 1

with Testbed("leafspine:2,2,2", containers_per_pi=2) as tb:
    runs = {wl: tb.traffic(workload=wl, load=LOAD, pattern="all-to-all", duration=DURATION, seed=SEED,
                           drain=5, out=OUT / wl)
            for wl in ("websearch", "datamining")}

web, mining = runs["websearch"], runs["datamining"]
print(web.report(mining))
plots = web.plots() + mining.plots()

fig, ax = plt.subplots(figsize=(6.4, 4.2))
for name, res in runs.items():
    fct = np.sort([f.fct_us / 1e3 for f in res.flows if f.measured and f.status == "done" and f.fct_us])
    if len(fct):
        ax.step(fct, np.arange(1, len(fct) + 1) / len(fct), where="post", label=f"{name} ({len(fct)} flows)")
ax.set_xscale("log")
ax.set_xlabel("flow completion time (ms)")
ax.set_ylabel("CDF")
ax.set_title(f"all-to-all at load {LOAD}, {DURATION} s, seed {SEED}")
ax.grid(True, which="both", alpha=0.3)
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(OUT / "compare_fct_cdf.png", dpi=110)
plots.append(OUT / "compare_fct_cdf.png")
print("plots:\n  " + "\n  ".join(str(p) for p in plots))

done = {name: res.summary["all"]["flows"] for name, res in runs.items()}
sys.exit(0 if all(done.values()) and all(p.is_file() for p in plots) else 1)
