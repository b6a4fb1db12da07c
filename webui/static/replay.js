/* Replay of a finished run: the topology as it was drawn live, link colours from the 1 Hz
   recording, a timeline with the scenario's events marked, flow counts and events at each second.
   Standalone on purpose (no PiCloud.* helpers, no fetch when the data is inline): the same file
   runs in the Experiments page and inside an exported offline HTML opened from file://. */
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const ROLE_COLOUR = {core: "#6d28d9", spine: "#6d28d9", aggregation: "#1e40af", leaf: "#0e7490",
    tor: "#0f766e", edge: "#0f766e", pi: "#be123c", container: "#64748b"};
  const IDLE_BPS = 20e3;

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(tag, attrs, parent, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function colour(l) {
    if (!l.up) return "#ef4444";
    if ((l.bps || 0) < IDLE_BPS) return "#475569";
    const u = Math.min(1, Math.max(0, l.util || 0));
    return `hsl(${140 - 110 * Math.sqrt(u)} 85% ${50 + 5 * u}%)`;
  }
  function fmtBps(b) {
    if (b >= 1e9) return (b / 1e9).toFixed(2) + " Gbit/s";
    if (b >= 1e6) return (b / 1e6).toFixed(1) + " Mbit/s";
    if (b >= 1e3) return (b / 1e3).toFixed(0) + " kbit/s";
    return Math.round(b || 0) + " bit/s";
  }

  function start(root, run) {
    root.textContent = "";
    const layout = run.layout || {nodes: [], links: [], width: 100, height: 100, racks: []};
    const samples = run.samples || [];
    const head = html("div", {class: "replay-head"}, root);
    const play = html("button", {type: "button", id: "replay-play"}, head, "Play");
    const slider = html("input", {type: "range", id: "replay-slider", min: "0",
      max: String(Math.max(0, samples.length - 1)), value: "0", step: "1"}, head);
    const clock = html("span", {id: "replay-time", class: "mono"}, head, "");
    const counts = html("span", {id: "replay-flows", class: "mono"}, head, "");

    const strip = el("svg", {id: "replay-strip", viewBox: "0 0 1000 28", preserveAspectRatio: "none",
      width: "100%", height: "28"}, root);
    const end = Math.max(samples.length ? samples[samples.length - 1].t : 0, run.duration || 0, 1e-3);
    el("rect", {x: 0, y: 10, width: 1000, height: 8, fill: "#1e293b"}, strip);
    const cursor = el("rect", {x: 0, y: 2, width: 3, height: 24, fill: "#e2e8f0"}, strip);
    for (const ev of run.scenario || []) {
      if (ev.t === null || ev.t === undefined || ev.t === "") continue;
      const x = 1000 * Math.max(0, Math.min(1, Number(ev.t) / end));
      const mark = el("rect", {class: "replay-event", x: x - 1.5, y: 0, width: 3, height: 28,
        fill: ev.status === "ok" ? "#f59e0b" : "#ef4444", "data-t": String(ev.t)}, strip);
      el("title", {}, mark).textContent = `${Number(ev.t).toFixed(2)} s: ${ev.action} ${ev.target} ${ev.params || ""}`;
    }

    const svg = el("svg", {id: "replay-topo", viewBox: `0 0 ${layout.width} ${layout.height}`,
      preserveAspectRatio: "xMidYMid meet", width: "100%"}, root);
    const lines = new Map();
    for (const l of layout.links) {
      lines.set(l.id, el("line", {x1: l.x1, y1: l.y1, x2: l.x2, y2: l.y2, stroke: "#475569",
        "stroke-width": l.kind === "attach" ? 1.5 : 3, "data-id": l.id, class: "replay-link"}, svg));
    }
    for (const n of layout.nodes) {
      el("rect", {x: n.x - n.w / 2, y: n.y - n.h / 2, width: n.w, height: n.h, rx: n.kind === "container" ? 3 : 6,
        fill: ROLE_COLOUR[n.role] || "#334155"}, svg);
      if (n.kind !== "container") {
        el("text", {x: n.x, y: n.y + 4, "text-anchor": "middle", fill: "#f8fafc", "font-size": 11}, svg)
          .textContent = n.id;
      }
    }
    const log = html("ol", {id: "replay-events", class: "replay-events"}, root);

    function show(i) {
      const s = samples[i];
      if (!s) { clock.textContent = "no samples recorded"; return; }
      slider.value = String(i);
      clock.textContent = `t = ${Number(s.t).toFixed(1)} s of ${end.toFixed(1)} s`;
      const f = s.flows || {};
      counts.textContent = `flows: ${f.in_flight ?? "-"} in flight, ${f.done ?? "-"} done of ${run.flows_total ?? "-"}`;
      cursor.setAttribute("x", String(1000 * Math.max(0, Math.min(1, s.t / end)) - 1.5));
      for (const l of s.links || []) {
        const line = lines.get(l.id);
        if (!line) continue;
        line.setAttribute("stroke", colour(l));
        line.setAttribute("stroke-dasharray", l.up ? "" : "6 4");
        line.dataset.util = String(l.util || 0);
        line.dataset.up = String(!!l.up);
        const t = line.querySelector("title") || el("title", {}, line);
        t.textContent = `${l.id.replace(":", " - ")}: ${l.up ? fmtBps(l.bps) : "down"}`;
      }
      log.textContent = "";
      const upto = (run.scenario || []).filter(e => e.t !== null && e.t !== "" && Number(e.t) <= s.t);
      for (const e of upto.slice(-8)) {
        html("li", {}, log, `${Number(e.t).toFixed(2)} s  ${e.action} ${e.target} ${e.params || ""} (${e.status})`);
      }
      root.dataset.index = String(i);
    }

    let timer = null;
    function stop() { clearInterval(timer); timer = null; play.textContent = "Play"; }
    play.addEventListener("click", () => {
      if (timer) { stop(); return; }
      if (Number(slider.value) >= samples.length - 1) show(0);
      play.textContent = "Pause";
      // One recorded second per 500 ms: a minute-long run replays in half a minute.
      timer = setInterval(() => {
        const next = Number(slider.value) + 1;
        if (next >= samples.length) { stop(); root.dataset.finished = "true"; return; }
        show(next);
      }, 500);
    });
    slider.addEventListener("input", () => show(Number(slider.value)));
    strip.addEventListener("click", (evt) => {
      const box = strip.getBoundingClientRect();
      const t = end * (evt.clientX - box.left) / box.width;
      let best = 0;
      samples.forEach((s, i) => { if (Math.abs(s.t - t) < Math.abs(samples[best].t - t)) best = i; });
      show(best);
    });
    show(0);
    root.dataset.ready = "true";
  }

  function boot() {
    const root = document.getElementById("replay");
    if (!root) return;
    const inline = document.getElementById("picloud-run");
    if (inline) { start(root, JSON.parse(inline.textContent)); return; }
    const url = root.dataset.timelineUrl;
    if (!url) return;
    fetch(url, {credentials: "same-origin"}).then(r => {
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.json();
    }).then(run => start(root, run)).catch(err => { root.textContent = `replay unavailable: ${err.message}`; });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
