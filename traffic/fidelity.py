"""Was this run a measurement of the modelled network, or of the host? The verdict (pure).

Container emulation is only faithful while the host keeps up: every packet of the model is carried
by the host's CPUs, one shared ovs-vswitchd and Python agents. Mininet-HiFi (Handigol et al.,
"Reproducible Network Experiments Using Container-Based Emulation", CoNEXT 2012) made the point that
an emulator must monitor itself to know when its results hold. `traffic.monitor` records counters
during a run; `assess` turns them, the trace and the flow records into

    {"verdict": "faithful" | "degraded", "reasons": [...], "numbers": {...}, "thresholds": {...}}

Every check is a threshold below, with the reason for its value. A run is `degraded` when any check
fails; each failed check adds one reason naming the number and the threshold. Checks whose input is
missing (no shaped link, a fixed response size) are reported as not applicable, never as passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from topology.model import Topology

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class Threshold:
    value: float
    reason: str


THRESHOLDS: dict[str, Threshold] = {
    "observed": Threshold(2, (
        "CPU samples the monitor must have (start and end at least): without them no check of the host "
        "ran, and an unobserved run is not certified")),
    "core_busy": Threshold(0.90, (
        "mean busy fraction of any core over the run. Above 90 % the run queue is rarely empty, so "
        "packets, timers and agents wait for a core and delays are the host's, not the model's (Mininet-HiFi "
        "checks the same: CPU time given vs. needed)")),
    "steal": Threshold(0.05, (
        "share of CPU time stolen by the hypervisor. 5 % of a core is 50 ms per second that no emulated "
        "Pi got, unannounced and bursty")),
    "ovs_cpu": Threshold(0.90, (
        "CPU of ovs-vswitchd's busiest thread, in cores (the whole process where a recording has no "
        "per-thread samples). The userspace datapath forwards on one thread per poller: the main thread "
        "for non-PMD ports (this host), a pmd thread each where pmd-cpu-mask gives them. A thread at 90 % "
        "of a core queues every packet it carries, for every bridge of every run at once; the process "
        "total is not the measure, since revalidators and PMDs on other cores add to it without "
        "delaying any one packet")),
    "datapath_lost": Threshold(0, (
        "upcalls the datapath lost (dpctl/show 'lost'): each is a packet dropped outside any modelled "
        "queue; no amount is faithful")),
    "port_drops": Threshold(0, (
        "rx/tx drops on the run's unshaped ports: an unshaped veth has no modelled queue, so any drop "
        "there is the host's")),
    "socket_drops": Threshold(0, (
        "packets ovs-vswitchd's receive sockets dropped on the run's ports because it did not read them in "
        "time (the socket's drop counter; OVS's own port statistics never see them). A port of the model has "
        "no ingress buffer to overflow, so any such drop is the host's")),
    "unexplained_retrans": Threshold(0.01, (
        "TCP retransmissions not explained by modelled losses (qdisc drops on shaped links, netem "
        "loss), as a share of segments sent. Above 1 % TCP is reacting to losses or delays the model "
        "does not have; a small absolute floor (see RETRANS_FLOOR) covers tail-loss probes")),
    "lateness_p99_us": Threshold(10_000, (
        "p99 of flow start lateness (agent scheduling). "
        "10 ms at a Pi's 100 Mbit/s is 125 KB of offered load moved in time, more than a median web-search "
        "flow: beyond it the arrivals are not the planned Poisson process")),
    "ks": Threshold(0.01, (
        "significance level of the Kolmogorov-Smirnov test of the trace's flow sizes against the "
        "workload's published CDF: a distance above the 1 % critical value for the trace's n means the "
        "workload run is not the one the paper describes")),
    "offered_sigma": Threshold(3.0, (
        "the trace's offered load against the target, in standard errors of a sum of its n sizes: a "
        "finite heavy-tailed trace misses its target by chance, by more than 3 standard errors only by "
        "mistake")),
    "carried": Threshold(0.95, (
        "bytes delivered over bytes offered by the measured flows: below 95 % the network did not carry "
        "the workload (unfinished or failed flows), so load and slowdown describe another run")),
    "impossible_fct": Threshold(0.05, (
        "tolerance of the physical bound FCT >= size / bottleneck rate of the path's shaped links (the "
        "tolerance covers TBF's initial bucket and timestamp granularity); a flow faster than its "
        "bottleneck means the rates that load and slowdown use are not the ones the packets met")),
}
RETRANS_FLOOR = 50  # segments: TCP tail-loss probes and the like, independent of the model


# --- the workload certification ----------------------------------------------------------------------
def ks_distance(samples: list[float] | np.ndarray, sizes: tuple[float, ...], cdf: tuple[float, ...]) -> float:
    """Two-sided KS distance between the samples' empirical CDF and the piecewise-linear reference
    CDF (the one `traffic.workloads` samples by inverse transform; sizes are whole bytes, so the
    reference is read at the sample's size)."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan")
    xs, fs = np.asarray(sizes, dtype=float), np.asarray(cdf, dtype=float)
    # Sizes are whole bytes, drawn as ceil(V) with V of the reference CDF F, so P(size <= k) = F(k)
    # and P(size < k) = F(k - 1): the empirical steps are compared with those two sides. (Reading F
    # at x alone would call a perfect sample 0.15 away at websearch's 15 % jump at 8,760 B, and
    # Homa W1's few-byte sizes 0.18 away.)
    right = _cdf_right(xs, fs, x)
    left = _cdf_right(xs, fs, x - 1)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - right), np.max(left - (i - 1) / n), 0.0))


def _cdf_right(xs: np.ndarray, fs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The right-continuous piecewise-linear CDF (a repeated size is a jump: take its top)."""
    top = np.searchsorted(xs, v, side="right") - 1  # last point at or below v
    below = top < 0
    top = np.clip(top, 0, len(xs) - 1)
    nxt = np.clip(top + 1, 0, len(xs) - 1)
    span = xs[nxt] - xs[top]
    frac = np.where(span > 0, (v - xs[top]) / np.where(span > 0, span, 1.0), 0.0)
    value = fs[top] + (fs[nxt] - fs[top]) * np.clip(frac, 0.0, 1.0)
    return np.where(below, 0.0, np.where(v >= xs[-1], 1.0, value))


def ks_critical(n: int, alpha: float = 0.01) -> float:
    """Critical KS distance for n samples at level alpha: c(alpha) / (sqrt(n) + 0.12 + 0.11/sqrt(n)),
    c = sqrt(-ln(alpha/2)/2) (Stephens 1970, the small-n correction of the asymptotic value;
    c = 1.628 at 1 %)."""
    c = math.sqrt(-math.log(alpha / 2) / 2)
    return c / (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n))


# --- counters to rates --------------------------------------------------------------------------------
def cpu_fractions(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-core busy and steal fractions between the first and last /proc/stat sample (each sample
    `{"t", "cores": [[user, nice, system, idle, iowait, irq, softirq, steal], ...]}`, clock ticks),
    and the worst interval's busiest core."""
    if len(samples) < 2:
        return {}

    def busy(a: list[int], b: list[int]) -> tuple[float, float]:
        d = [max(0, y - x) for x, y in zip(a, b, strict=False)]
        total = sum(d) or 1
        idle = d[3] + d[4]
        return (total - idle) / total, d[7] / total

    first, last = samples[0]["cores"], samples[-1]["cores"]
    per_core = [busy(a, b) for a, b in zip(first, last, strict=False)]
    worst = 0.0
    for s0, s1 in zip(samples, samples[1:], strict=False):
        worst = max([worst, *(busy(a, b)[0] for a, b in zip(s0["cores"], s1["cores"], strict=False))])
    return {"busy": [round(b, 4) for b, _ in per_core], "steal": [round(s, 4) for _, s in per_core],
            "busy_max_interval": round(worst, 4)}


def _delta(start: dict[str, Any] | None, end: dict[str, Any] | None, key: str) -> int:
    if not start or not end:
        return 0
    return max(0, int(end.get(key, 0)) - int(start.get(key, 0)))


def busiest_thread(samples: dict[str, Any]) -> dict[str, Any] | None:
    """ovs-vswitchd's busiest thread over the run: {"thread": name, "cores": mean cores}, from the
    first and last per-thread samples (threads that came or went in between are left out)."""
    threads = samples.get("ovs_threads") or []
    if len(threads) < 2 or threads[-1]["t"] <= threads[0]["t"]:
        return None
    hz = float(samples.get("clk_tck", 100))
    first, last = threads[0]["ticks"], threads[-1]["ticks"]
    span = threads[-1]["t"] - threads[0]["t"]
    both = [(key, (last[key] - first[key]) / hz / span) for key in last if key in first]
    if not both:
        return None
    key, cores = max(both, key=lambda kv: kv[1])
    return {"thread": key.split(":", 1)[-1], "cores": round(cores, 4)}


def counters(samples: dict[str, Any]) -> dict[str, Any]:
    """The numbers the verdict stands on, from a monitor's raw samples (see traffic.monitor)."""
    out: dict[str, Any] = {"interval_s": None}
    cpu = samples.get("cpu") or []
    if len(cpu) >= 2:
        out["interval_s"] = round(cpu[-1]["t"] - cpu[0]["t"], 3)
        out["cpu"] = cpu_fractions(cpu)
    ovs = samples.get("ovs_cpu") or []
    if len(ovs) >= 2 and ovs[-1]["t"] > ovs[0]["t"]:
        hz = float(samples.get("clk_tck", 100))
        out["ovs_cpu_cores"] = round((ovs[-1]["ticks"] - ovs[0]["ticks"]) / hz / (ovs[-1]["t"] - ovs[0]["t"]), 4)
    busiest = busiest_thread(samples)
    if busiest is not None:
        out["ovs_thread_max"] = busiest
    dp = samples.get("datapath") or []
    if len(dp) >= 2:
        out["datapath"] = {k: _delta(dp[0], dp[-1], k) for k in ("hit", "missed", "lost")}
    ports = samples.get("ports") or {}
    out["port_drops"] = sum(_delta(v.get("start"), v.get("end"), k) for v in ports.values()
                            for k in ("rx_dropped", "tx_dropped"))
    sockets = samples.get("sockets") or {}
    out["socket_drops"] = sum(_delta(v.get("start"), v.get("end"), "dropped") for v in sockets.values())
    qdiscs = samples.get("qdiscs") or {}
    out["qdisc"] = {k: sum(_delta(v.get("start"), v.get("end"), k) for v in qdiscs.values())
                    for k in ("sent_packets", "dropped", "overlimits")}
    out["shaped_ifaces"] = len(qdiscs)
    tcp = {c: v for c, v in (samples.get("tcp") or {}).items()
           if (v.get("start") or {}).get("netns") == (v.get("end") or {}).get("netns")}
    per = {c: {"retrans": _delta(v.get("start"), v.get("end"), "RetransSegs"),
               "out": _delta(v.get("start"), v.get("end"), "OutSegs")} for c, v in tcp.items()}
    out["tcp"] = {"retrans": sum(p["retrans"] for p in per.values()), "out_segs": sum(p["out"] for p in per.values()),
                  "per_container": per}
    return out


# --- the verdict ---------------------------------------------------------------------------------------
def assess(samples: dict[str, Any], flows: list[Any], meta: dict[str, Any],
           reference: tuple[tuple[float, ...], tuple[float, ...]] | None,
           bottleneck_bps: dict[tuple[str, str], float | None]) -> dict[str, Any]:
    """The run's verdict from the monitor's samples, its flow records (traffic.results.FlowRecord),
    its meta, the workload's reference CDF (sizes, cdf) or None when the sizes are not drawn from
    one, and the bottleneck rate of each (src, dst) path's shaped links (None: unshaped path)."""
    t = THRESHOLDS
    nums = counters(samples)
    reasons: list[str] = []
    checks: dict[str, str] = {}

    def check(name: str, ok: bool | None, why: str) -> None:
        checks[name] = "n/a" if ok is None else ("ok" if ok else "failed")
        if ok is False:
            reasons.append(why)

    cpu = nums.get("cpu") or {}
    busy = cpu.get("busy") or []
    # Nothing observed is nothing certified: a run without the host's CPU samples cannot be faithful.
    check("observed", bool(busy), "the monitor recorded no CPU samples, so nothing vouches for this run")
    check("core_busy", bool(busy) and max(busy) <= t["core_busy"].value if busy else None,
          f"host CPU saturated: busiest core {max(busy or [0]):.0%} busy over the run "
          f"(threshold {t['core_busy'].value:.0%})")
    steal = cpu.get("steal") or []
    check("steal", max(steal) <= t["steal"].value if steal else None,
          f"CPU steal {max(steal or [0]):.1%} (threshold {t['steal'].value:.0%})")
    thread = nums.get("ovs_thread_max")
    ovs = thread["cores"] if thread else nums.get("ovs_cpu_cores")
    who = f"ovs-vswitchd's busiest thread ({thread['thread']})" if thread else "ovs-vswitchd"
    check("ovs_cpu", None if ovs is None else ovs <= t["ovs_cpu"].value,
          f"{who} used {ovs if ovs is None else round(ovs, 2)} cores (threshold {t['ovs_cpu'].value})")
    dp = nums.get("datapath")
    check("datapath_lost", None if dp is None else dp["lost"] <= t["datapath_lost"].value,
          f"datapath lost {dp and dp['lost']} upcalls (threshold {t['datapath_lost'].value:g})")
    check("port_drops", nums["port_drops"] <= t["port_drops"].value if samples.get("ports") else None,
          f"{nums['port_drops']} packets dropped on unshaped ports (threshold {t['port_drops'].value:g})")

    check("socket_drops", nums["socket_drops"] <= t["socket_drops"].value if samples.get("sockets") else None,
          f"{nums['socket_drops']} packets dropped by ovs-vswitchd's receive sockets, outside any modelled queue "
          f"(threshold {t['socket_drops'].value:g})")

    tcp = nums["tcp"]
    expected_loss = sum(r.size for r in flows if r.measured) / 1448 * float(meta.get("path_loss", 0.0) or 0.0)
    unexplained = max(0.0, tcp["retrans"] - nums["qdisc"]["dropped"] - expected_loss)
    share = unexplained / tcp["out_segs"] if tcp["out_segs"] else 0.0
    nums["tcp"]["unexplained_retrans"] = round(unexplained)
    nums["tcp"]["unexplained_share"] = round(share, 5)
    check("unexplained_retrans",
          None if not samples.get("tcp") else (share <= t["unexplained_retrans"].value or unexplained <= RETRANS_FLOOR),
          f"{unexplained:.0f} TCP retransmissions not explained by modelled drops ({share:.2%} of "
          f"{tcp['out_segs']} segments; {nums['qdisc']['dropped']} qdisc drops; threshold "
          f"{t['unexplained_retrans'].value:.0%})")

    lateness = sorted(r.lateness_us for r in flows if r.measured and r.lateness_us is not None)
    p99 = float(np.percentile(lateness, 99)) if lateness else None
    nums["lateness_p99_us"] = None if p99 is None else round(p99, 1)
    check("lateness_p99_us", None if p99 is None else p99 <= t["lateness_p99_us"].value,
          f"flow starts late: p99 {(p99 or 0) / 1000:.1f} ms (threshold {t['lateness_p99_us'].value / 1000:g} ms): "
          "the agents could not keep to the arrival schedule on this host")

    # The workload: sizes against the published CDF, offered against target, carried against offered.
    scale = float(meta.get("scale_size", 1.0) or 1.0)
    sizes = [r.size / scale for r in flows]
    if reference is not None and len(sizes) >= 2:
        d, crit = ks_distance(sizes, *reference), ks_critical(len(sizes), t["ks"].value)
        nums["ks"] = {"n": len(sizes), "distance": round(d, 4), "critical_1pct": round(crit, 4)}
        check("ks", d <= crit, f"flow sizes do not follow the workload's CDF: KS distance {d:.3f} > "
                               f"{crit:.3f} (1 % critical value for n={len(sizes)})")
    else:
        check("ks", None, "")
    measured = [r for r in flows if r.measured]
    interval = max(float(meta.get("duration", 0)) - float(meta.get("warmup", 0)), 1e-9)
    link_bps = float(meta.get("link_bps") or 0)
    senders = max(1, len(meta.get("hosts") or []))
    overhead = float(meta.get("overhead", 1.0))
    target = meta.get("wire_load", meta.get("load"))
    if measured and link_bps and target:
        in_window = [r.size for r in measured if r.scheduled < float(meta.get("duration", 0))]
        offered = sum(in_window) * 8 * overhead / (senders * link_bps * interval)
        arr = np.asarray(in_window, dtype=float)
        # Standard error of a Poisson sum of n heavy-tailed sizes: sqrt(n * E[S^2]) / (n * E[S]) relative.
        rel_se = math.sqrt(float(np.mean(arr**2)) * len(arr)) / float(arr.sum()) if len(arr) else float("inf")
        sigma = abs(offered / float(target) - 1) / rel_se if rel_se else 0.0
        nums["load"] = {"target": float(target), "offered": round(offered, 4), "offered_sigma": round(sigma, 2),
                        "relative_se": round(rel_se, 4)}
        check("offered_sigma", sigma <= t["offered_sigma"].value,
              f"offered load {offered:.3f} misses the target {float(target):.3f} by {sigma:.1f} standard errors "
              f"(threshold {t['offered_sigma'].value:g})")
    else:
        check("offered_sigma", None, "")
    want = sum(r.size for r in measured)
    got = sum(min(r.bytes_received, r.size) for r in measured)
    if want:
        carried = got / want
        nums.setdefault("load", {})["carried"] = round(carried, 4)
        if "offered" in nums["load"]:
            nums["load"]["achieved"] = round(nums["load"]["offered"] * carried, 4)
        check("carried", carried >= t["carried"].value,
              f"only {carried:.1%} of the measured flows' bytes were delivered (threshold {t['carried'].value:.0%})")
    else:
        check("carried", None, "")

    # Physics: nothing faster than its path's bottleneck.
    bounded = impossible = 0
    worst = None
    for r in flows:
        rate = bottleneck_bps.get((r.src, r.dst))
        if r.status != "done" or r.fct_us is None or not rate:
            continue
        bounded += 1
        floor_us = r.size * 8 / rate * 1e6
        if r.fct_us < floor_us * (1 - t["impossible_fct"].value):
            impossible += 1
            ratio = r.fct_us / floor_us
            worst = ratio if worst is None else min(worst, ratio)
    nums["plausibility"] = {"flows_bounded": bounded, "impossible": impossible,
                            "worst_fct_over_bound": None if worst is None else round(worst, 3)}
    check("impossible_fct", None if bounded == 0 else impossible == 0,
          f"{impossible} flow(s) finished faster than their path's bottleneck allows (fastest at {worst} of the "
          f"bound; tolerance {t['impossible_fct'].value:.0%}): the link rates are not the ones assumed")

    return {"verdict": "degraded" if reasons else "faithful", "reasons": reasons, "checks": checks,
            "numbers": nums, "thresholds": {k: v.value for k, v in t.items()}}


# --- what the verdict needs from a run ------------------------------------------------------------------
def bottlenecks(topology: Topology, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], float | None]:
    """Bits/s of the slowest shaped link on the fastest shortest path of each pair (a lower bound
    on any flow's FCT); None when some shortest path has no shaped link or a host is not in the
    topology (a run-time container)."""
    import networkx as nx

    graph = topology.graph
    out: dict[tuple[str, str], float | None] = {}
    for src, dst in pairs:
        best: float | None = None
        if src in graph and dst in graph:
            try:
                for i, path in enumerate(nx.all_shortest_paths(graph, src, dst)):
                    shaped = [bw for a, b in zip(path, path[1:], strict=False) if (bw := topology.link(a, b).bw)]
                    if not shaped:
                        best = None
                        break
                    best = max(best or 0.0, min(shaped) * 1e6)
                    if i >= 15:
                        break
            except nx.NetworkXNoPath:
                best = None
        out[(src, dst)] = best
    return out


def reference_cdf(meta: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The CDF the sizes were drawn from, or None when they were not (a fixed incast response)."""
    from traffic import workloads

    if (meta.get("pattern_params") or {}).get("response") or not meta.get("workload"):
        return None
    try:
        wl = workloads.get(meta["workload"])
    except Exception:  # noqa: BLE001 - a workload file moved since: no certification, said as n/a
        return None
    return wl.sizes, wl.cdf


def assess_run(topology: Topology, flows: list[Any], meta: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """`assess` with what it needs worked out from the run's topology and meta."""
    losses = [(ln.loss or 0.0) / 100 for ln in topology.links]
    meta = {**meta, "path_loss": max(losses, default=0.0)}
    pairs = {(r.src, r.dst) for r in flows}
    return assess(samples, flows, meta, reference_cdf(meta), bottlenecks(topology, pairs))


def assess_recorded(directory: Any) -> dict[str, Any]:
    """Recompute a recorded run's verdict from its directory (flows.csv, meta.json, fidelity.json)."""
    import json
    from pathlib import Path

    from topology.model import Topology
    from traffic.results import read_flows

    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    samples = json.loads((directory / "fidelity.json").read_text()).get("samples") or {}
    return assess_run(Topology.from_dict(meta["topology"]), read_flows(directory / "flows.csv"), meta, samples)


def line(verdict: dict[str, Any] | None) -> str:
    """`fidelity: faithful` or `fidelity: degraded (reason; reason)` for reports and the demo."""
    if not verdict:
        return "fidelity: not assessed"
    if verdict.get("verdict") == "faithful":
        return "fidelity: faithful"
    return "fidelity: degraded (" + "; ".join(verdict.get("reasons") or ["no reason recorded"]) + ")"
