"""Text reports (one run, or two side by side) and PNG plots of a run's results.

The text is what `picloud traffic report DIR [DIR2]` prints: FCT mean/p50/p99 per size bucket,
slowdown, goodput, achieved versus target load, lateness, flow status counts and the fidelity
verdict with its reasons (traffic.fidelity). Plots use
matplotlib's Agg backend (no display needed): the FCT CDF per bucket and the slowdown by flow size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from traffic.results import BUCKETS

if TYPE_CHECKING:
    from traffic.results import Results


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1e3:
        return f"{value / 1e3:.2f} ms"
    return f"{value:.0f} us"


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of one summary, in report order."""
    out: list[tuple[str, str]] = [
        ("workload / pattern", f"{summary.get('workload')} / {summary.get('pattern')}"),
        ("flows measured (total)", f"{summary['measured_flows']} ({summary['flows']})"),
        ("unfinished / error", f"{summary['status']['unfinished']} / {summary['status']['error']}"),
    ]
    for key, label, _lo, _hi in BUCKETS:
        b = summary["buckets"][key]
        f, s = b["fct_us"], b["slowdown"]
        out.append((f"FCT {label} ({b['flows']})",
                    f"mean {_us(f['mean'])}  p50 {_us(f['p50'])}  p99 {_us(f['p99'])}"))
        out.append((f"  slowdown {label}",
                    f"mean {_num(s['mean'])}  p50 {_num(s['p50'])}  p99 {_num(s['p99'])}"))
    a = summary["all"]["slowdown"]
    out.append(("slowdown all", f"mean {_num(a['mean'])}  p50 {_num(a['p50'])}  p99 {_num(a['p99'])}"))
    if "jobs" in summary:
        j = summary["jobs"]["completion_us"]
        out.append((f"job completion ({summary['jobs']['count']})",
                    f"mean {_us(j['mean'])}  p50 {_us(j['p50'])}  p99 {_us(j['p99'])}"))
    out.append(("goodput", f"{summary['goodput_mbps']:.1f} Mbit/s"))
    out.append(("load achieved / target",
                f"{summary['achieved_load']:.3f} / {_num(summary.get('target_wire_load'), '{:.3f}')} "
                f"of {summary['link_bps'] / 1e6:g} Mbit/s x {summary['senders']} senders"))
    late = summary["lateness_us"]
    out.append(("start lateness", f"p50 {_us(late['p50'])}  p99 {_us(late['p99'])}  max {_us(late['max'])}"))
    verdict = summary.get("fidelity") or {}
    out.append(("fidelity", verdict.get("verdict", "not assessed")
                + (f" ({len(verdict['reasons'])} reason(s) below)" if verdict.get("reasons") else "")))
    return out


def render(results: list[Results]) -> str:
    """One run, or runs side by side (same row labels, one column each)."""
    columns = [rows(r.summary) for r in results]
    labels = [label for label, _ in columns[0]]
    heads = [str(r.directory) for r in results]
    width_label = max(len(s) for s in labels)
    widths = [max(len(h), *(len(v) for _, v in col)) for h, col in zip(heads, columns, strict=True)]
    head = [h.ljust(w) for h, w in zip(heads, widths, strict=True)]
    lines = ["  ".join([" " * width_label] + head).rstrip()]
    for i, label in enumerate(labels):
        cells = [col[i][1].ljust(w) if i < len(col) else "".ljust(w)
                 for col, w in zip(columns, widths, strict=True)]
        lines.append("  ".join([label.ljust(width_label)] + cells).rstrip())
    for r in results:
        reasons = (r.summary.get("fidelity") or {}).get("reasons") or []
        if reasons:
            lines += ["", f"fidelity: degraded ({r.directory})", *(f"  - {why}" for why in reasons)]
    for r in results:
        cap = (r.meta or {}).get("capture")
        if cap:
            ifs = cap.get("interfaces", [])
            drops = [i.get("dropped") for i in ifs]
            dropped = "unknown" if any(d is None for d in drops) else str(sum(drops))
            check = cap.get("check") or {}
            diff = check.get("abs_diff_us") or {}
            lines += ["", f"capture {cap['path']}: {sum(i.get('packets', 0) for i in ifs)} packets on {len(ifs)} "
                          f"interfaces, {dropped} dropped by the kernel",
                      f"FCT engine vs capture at the sender: {check.get('compared', 0)} flows, |difference| p50 "
                      f"{_us(diff.get('p50'))}  p99 {_us(diff.get('p99'))}  max {_us(diff.get('max'))}"]
            mid = check.get("midpath") or {}
            if mid.get("compared"):
                md = mid.get("abs_diff_us") or {}
                lines.append(f"  {mid['compared']} more flows seen only along their path: |difference| p50 "
                             f"{_us(md.get('p50'))}  p99 {_us(md.get('p99'))} (includes the queues before "
                             "that point; capture the sender to check the engine's clock)")
        events = Path(r.directory) / "events.csv"
        if events.is_file():
            from traffic.scenario_cost import render_events
            from traffic.scenario_run import read_events

            lines += ["", f"scenario events ({events})", render_events(read_events(events))]
    return "\n".join(lines)


def plots(results: Results) -> list[Path]:
    """fct_cdf.png and slowdown.png in the run directory; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [r for r in results.flows if r.measured and r.status == "done" and r.fct_us is not None]
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for _key, label, lo, hi in BUCKETS:
        values = np.sort([fct / 1e3 for r in done if lo <= r.size < hi and (fct := r.fct_us) is not None])
        if len(values):
            # Start each curve at 0 so a bucket with one flow still shows as a step.
            ax.step(np.r_[values[0], values], np.r_[0.0, np.arange(1, len(values) + 1) / len(values)],
                    where="post", label=f"{label} ({len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("flow completion time (ms)")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{results.meta.get('workload')} at load {results.meta.get('load')}, "
                 f"{results.meta.get('pattern')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    path = results.directory / "fct_cdf.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pairs = sorted((r.size, r.slowdown) for r in done if r.slowdown is not None)
    if pairs:
        sizes = np.array([p[0] for p in pairs], dtype=float)
        slow = np.array([p[1] for p in pairs], dtype=float)
        edges = np.logspace(np.log10(sizes.min()), np.log10(sizes.max() + 1), 13)
        edges[0], edges[-1] = sizes.min(), sizes.max() + 1  # exact ends: rounding must not drop a flow
        edges = np.unique(edges)
        centres, p50, p99 = [], [], []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            inside = slow[(sizes >= a) & (sizes < b)]
            if len(inside):
                centres.append(np.sqrt(a * b))
                p50.append(np.percentile(inside, 50))
                p99.append(np.percentile(inside, 99))
        ax.scatter(sizes, slow, s=4, alpha=0.25, color="grey", label="flows")
        ax.plot(centres, p50, "o-", label="median")
        ax.plot(centres, p99, "s--", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("flow size (bytes)")
    ax.set_ylabel("slowdown (FCT / ideal at line rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    path = results.directory / "slowdown.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
