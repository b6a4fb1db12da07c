"""Web UI benchmark: API latency, first render in a real browser, and the live update rate.

    .venv/bin/python bench/ui_bench.py [--spec fattree:8] [--flows 10000] [--requests 50] [--loads 5]
                                       [--stream-seconds 10] [--record]

The data source is synthetic (`webui.sources.StaticSource`): fattree:8 is 80 switches, 128 Pis,
128 containers and 384 links, more than this box can emulate as real bridges in a benchmark, and
the UI code paths are the same ones a real fabric drives (layout, sampler, SSE, rendering). Every
link carries traffic so every link is recoloured on every update. 10,000 flow entries sit on one
switch: the worst case for the Switch page.

1. `/api/topology` over real HTTP: the first request (layout computed) and the median/p95 of the
   rest (layout cached). Target: under 100 ms.
2. First render in Debian's Chromium (Playwright): navigation start to the SVG drawn, and to the
   first live sample applied, median of `--loads` fresh page loads. Target: under 2 s.
3. The Switch page with 10,000 flows: the flows API (2,000 rows) and the time to a filled table.
4. Live updates: frames received on `/api/stream` in `--stream-seconds`, the gaps between them, and
   the sampler's cost per sample. Target: at least one update a second.

Prints one JSON object and a Markdown summary; `--record` also writes the "## Web UI" section of
bench/RESULTS.md (the table and how it was measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topology.builders import build  # noqa: E402
from webui.app import live  # noqa: E402
from webui.server import UIServer  # noqa: E402
from webui.sources import StaticSource  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def synthetic_source(spec: str, flows: int) -> StaticSource:
    topo = build(spec)
    switch = topo.switches[0]
    def mac(i: int) -> str:
        return "0a:00:00:" + ":".join(f"{i >> shift & 255:02x}" for shift in (16, 8, 0))

    entries = [{"priority": 100 + i % 500, "table_id": i % 4, "cookie": (i % 7) << 48,
                "match": {"in_port": 1 + i % 8, "eth_dst": mac(i)},
                "actions": [f"OUTPUT:{1 + i % 8}"], "packet_count": i * 3, "byte_count": i * 4500,
                "duration_sec": i % 3600} for i in range(flows)]
    tenants = {"tenants": [{"name": "red", "id": 1, "members": [{"name": c} for c in topo.containers[0::4]]},
                           {"name": "blue", "id": 2, "members": [{"name": c} for c in topo.containers[1::4]]}]}
    source = StaticSource(topo, flows={switch: entries}, tenants=tenants)
    for i, ln in enumerate(topo.links):
        source.set_rate(ln.a, ln.b, 1e6 * (1 + i % 900))
    return source


def get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
    return (time.perf_counter() - t0) * 1000, body


def api_latency(server: UIServer, requests: int) -> dict:
    first, body = get(server.url + "api/topology")
    rest = sorted(get(server.url + "api/topology")[0] for _ in range(requests))
    return {"first_ms": round(first, 1), "median_ms": round(statistics.median(rest), 1),
            "p95_ms": round(rest[int(0.95 * (len(rest) - 1))], 1), "bytes": len(body),
            "nodes": len(json.loads(body)["nodes"])}


def render(server: UIServer, loads: int, switch: str) -> dict:
    from playwright.sync_api import sync_playwright

    drawn, live_ms, flows_ms = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for _ in range(loads):
                context = browser.new_context(viewport={"width": 1920, "height": 1080})
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(server.url, wait_until="commit")
                page.wait_for_selector("#topo[data-ready='1']", timeout=30_000)
                drawn.append((time.perf_counter() - t0) * 1000)
                page.wait_for_function("document.querySelector('#live').classList.contains('on')", timeout=30_000)
                live_ms.append((time.perf_counter() - t0) * 1000)
                elements = page.evaluate("document.querySelectorAll('#topo *').length")
                context.close()
            context = browser.new_context(viewport={"width": 1920, "height": 1080})
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_selector("#topo[data-ready='1']")
            page.wait_for_timeout(1500)
            Path("artifacts").mkdir(exist_ok=True)
            page.screenshot(path="artifacts/ui-bench-fattree8.png")
            for _ in range(3):
                t0 = time.perf_counter()
                page.goto(server.url + f"switches/{switch}", wait_until="commit")
                page.wait_for_function("document.querySelectorAll('#flows tbody tr').length >= 2000", timeout=30_000)
                flows_ms.append((time.perf_counter() - t0) * 1000)
            context.close()
        finally:
            browser.close()
    return {"svg_drawn_ms": round(statistics.median(drawn), 1), "svg_drawn_max_ms": round(max(drawn), 1),
            "first_live_ms": round(statistics.median(live_ms), 1), "svg_elements": elements,
            "switch_page_2000_rows_ms": round(statistics.median(flows_ms), 1)}


def stream(server: UIServer, seconds: float) -> dict:
    arrivals = []
    sizes = []
    t0 = time.monotonic()
    with urllib.request.urlopen(server.url + "api/stream", timeout=30) as resp:
        for raw in resp:
            if raw.startswith(b"data: "):
                arrivals.append(time.monotonic())
                sizes.append(len(raw))
            if time.monotonic() - t0 >= seconds:
                break
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {"frames": len(arrivals), "seconds": round(time.monotonic() - t0, 2),
            "rate_hz": round(len(gaps) / (arrivals[-1] - arrivals[0]), 2) if len(arrivals) > 1 else 0.0,
            "gap_max_s": round(max(gaps), 3) if gaps else None, "frame_bytes": int(statistics.median(sizes))}


def sampler_cost(server: UIServer, samples: int = 10) -> dict:
    view = live(server.app)
    costs = []
    for _ in range(samples):
        time.sleep(view.interval / 2 + 0.01)
        t0 = time.perf_counter()
        view._sample()  # the work, without the minimum spacing that guards against noise
        costs.append((time.perf_counter() - t0) * 1000)
    return {"sample_median_ms": round(statistics.median(costs), 1), "links": len(view.latest()["links"])}


def record(table: str, args: argparse.Namespace) -> None:
    import os

    from bench.run_all import record_section

    body = (f"Synthetic data source (`webui.sources.StaticSource`, every link carrying traffic), real HTTP on "
            f"loopback, Debian Chromium {args.loads} fresh page loads at 1920x1080; load average "
            f"{os.getloadavg()[0]:.1f} on this machine while measuring. `python bench/ui_bench.py`.\n\n"
            f"{table}\n\n"
            "The live path on a real fabric (fattree:4, PiCloud's controller, iperf3 between two pods) is "
            "checked by tests/browser/test_ui_live.py: the page shows the flow (target: within 3 s of the "
            "client starting; the test prints the time) and a cut link as down.\n\n")
    record_section("## Web UI", body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="fattree:8")
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--stream-seconds", type=float, default=10.0)
    ap.add_argument("--record", action="store_true", help="write the '## Web UI' section of bench/RESULTS.md")
    args = ap.parse_args()
    source = synthetic_source(args.spec, args.flows)
    topo = source.topology()
    server = UIServer(source, port=0)
    try:
        out = {"spec": args.spec, "counts": topo.counts(), "flow_entries": args.flows,
               "api_topology": api_latency(server, args.requests)}
        t_flows, body = get(server.url + f"api/switches/{topo.switches[0]}/flows?limit=2000")
        out["api_flows"] = {"ms": round(t_flows, 1), "total": json.loads(body)["total"], "bytes": len(body)}
        t_filter, body = get(server.url + f"api/switches/{topo.switches[0]}/flows?q=table=2%20OUTPUT:3&limit=100")
        out["api_flows_filtered"] = {"ms": round(t_filter, 1), "matched": json.loads(body)["matched"]}
        out["render"] = render(server, args.loads, topo.switches[0])
        out["stream"] = stream(server, args.stream_seconds)
        out["sampler"] = sampler_cost(server)
    finally:
        server.stop()
    print(json.dumps(out, indent=1))
    a, r, s, c = out["api_topology"], out["render"], out["stream"], out["counts"]
    rows = [
        (f"{args.spec}: {c['switches']} switches, {c['pis']} Pis, {c['containers']} containers, {c['links']} links, "
         f"{args.flows} flow entries", "measured", "target"),
        ("---", "---", "---"),
        ("`/api/topology` first (layout computed) / median / p95",
         f"{a['first_ms']} / {a['median_ms']} / {a['p95_ms']} ms ({a['bytes'] // 1024} KiB)", "< 100 ms"),
        (f"first render: SVG drawn / first live sample applied (median of {args.loads})",
         f"{r['svg_drawn_ms']} / {r['first_live_ms']} ms", "< 2 s"),
        (f"Switch page, 2,000 of {args.flows} flows in the table",
         f"{r['switch_page_2000_rows_ms']} ms (API {out['api_flows']['ms']} ms)", ""),
        ("flow filter on the server (`table=2 OUTPUT:3`)", f"{out['api_flows_filtered']['ms']} ms", ""),
        ("live updates over SSE",
         f"{s['rate_hz']} /s, max gap {s['gap_max_s']} s, {s['frame_bytes'] // 1024} KiB/frame", ">= 1 /s"),
        (f"sampler cost per update ({out['sampler']['links']} links)", f"{out['sampler']['sample_median_ms']} ms", ""),
    ]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    print()
    print(table)
    if args.record:
        record(table, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
