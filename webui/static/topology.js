/* The topology page: draws the server's layout as SVG, then recolours links from the live stream.
   Drawing happens once per layout; a live sample only touches link attributes, so thousands of
   updates a minute stay cheap. */
"use strict";

(() => {
  const {$, esc, fmtBps, fmtNum, act, download, toast, getJSON, onLive} = PiCloud;
  const NS = "http://www.w3.org/2000/svg";
  const svg = $("#topo"), hover = $("#hover"), panel = $("#panel"), panelBody = $("#panel-body");
  // Switch colours are deep and muted so the bright tenant colours of containers stand apart.
  const ROLE_COLOUR = {core: "#6d28d9", spine: "#6d28d9", aggregation: "#1e40af", leaf: "#0e7490",
    tor: "#0f766e", edge: "#0f766e", pi: "#be123c"};
  let layout = null;
  const linkEls = new Map(); // id -> {line, mark, data}
  const nodeById = new Map();
  let latest = new Map(); // id -> sampled link
  let containers = [];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  // Utilisation to colour: idle grey, then green -> yellow -> orange as the link fills.
  // Red is kept for links that are down, so a cut is never mistaken for a busy link.
  // Control traffic (LLDP, ARP: a few kbit/s per link) stays grey: only data should glow.
  const IDLE_BPS = 20e3;
  function colour(link) {
    if (!link.up) return "#ef4444";
    if (link.bps < IDLE_BPS) return "#475569";
    const u = Math.min(1, Math.max(0, link.util));
    return `hsl(${140 - 110 * Math.sqrt(u)} 85% ${50 + 5 * u}%)`;
  }
  function width(link, kind) {
    const base = kind === "attach" ? 1.5 : 3;
    if (!link.up || link.bps < IDLE_BPS) return base;
    return base + (kind === "attach" ? 5 : 11) * Math.sqrt(Math.min(1, link.util)) + 1.5;
  }

  function draw(data) {
    layout = data;
    svg.innerHTML = "";
    linkEls.clear(); nodeById.clear();
    svg.setAttribute("viewBox", `0 0 ${data.width} ${data.height}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    for (const k of ["switches", "pis", "containers", "links"]) {
      svg.dataset[k] = data.counts[k];
      $(`#n-${k}`).textContent = data.counts[k];
    }
    const gLayers = el("g", {class: "layers"}, svg);
    for (const l of data.layers) el("text", {class: "layer", x: 4, y: l.y - 34}, gLayers).textContent = l.role;
    const gRacks = el("g", {class: "racks"}, svg);
    for (const r of data.racks) {
      const g = el("g", {class: "rack", "data-id": r.id}, gRacks);
      el("rect", {x: r.x, y: r.y, width: r.w, height: r.h, rx: 8}, g);
      el("text", {x: r.x + 8, y: r.y + 13}, g).textContent = r.label;
    }
    const gLinks = el("g", {class: "links"}, svg);
    for (const l of data.links) {
      const g = el("g", {"data-id": l.id}, gLinks);
      const hit = el("line", {class: "hit", x1: l.x1, y1: l.y1, x2: l.x2, y2: l.y2}, g);
      const line = el("line", {class: `link ${l.kind}`, x1: l.x1, y1: l.y1, x2: l.x2, y2: l.y2, "data-id": l.id,
        "data-up": "true", "data-bps": "0", "data-util": "0", stroke: "#475569",
        "stroke-width": l.kind === "attach" ? 1.5 : 3}, g);
      const mark = el("text", {class: "downmark", x: (l.x1 + l.x2) / 2, y: (l.y1 + l.y2) / 2, visibility: "hidden"}, g);
      mark.textContent = "✕";
      linkEls.set(l.id, {line, mark, data: l});
      hit.addEventListener("mousemove", (e) => showHover(e, linkCard(l.id)));
      hit.addEventListener("mouseleave", hideHover);
      hit.addEventListener("click", () => linkPanel(l.id));
    }
    const gNodes = el("g", {class: "nodes"}, svg);
    containers = [];
    for (const n of data.nodes) {
      nodeById.set(n.id, n);
      const g = el("g", {class: `node ${n.kind}`, "data-id": n.id, "data-role": n.role}, gNodes);
      const fill = n.kind === "container" ? (n.tenant ? tenantColour(n.tenant) : "#64748b") : ROLE_COLOUR[n.role] || "#64748b";
      el("rect", {x: n.x - n.w / 2, y: n.y - n.h / 2, width: n.w, height: n.h, rx: n.kind === "container" ? 3 : 7, fill}, g);
      if (n.kind !== "container") {
        const t = el("text", {x: n.x, y: n.y}, g);
        t.textContent = n.id.length > 10 ? n.id.slice(0, 9) + "…" : n.id;
      } else containers.push(n.id);
      g.addEventListener("mousemove", (e) => showHover(e, nodeCard(n)));
      g.addEventListener("mouseleave", hideHover);
      g.addEventListener("click", () => {
        if (n.kind === "container") containerPanel(n); else location.href = `/switches/${encodeURIComponent(n.id)}`;
      });
    }
    legend(data);
  }

  function tenantColour(name) {
    const t = (layout.tenants || []).find((x) => x.name === name);
    return t ? t.colour : "#64748b";
  }

  function legend(data) {
    const roles = [...new Set(data.nodes.filter((n) => n.kind !== "container").map((n) => n.role))];
    $("#legend").innerHTML = roles.map((r) => `<span><i style="background:${ROLE_COLOUR[r] || "#64748b"}"></i>${esc(r)}</span>`).join("")
      + (data.tenants || []).map((t) => `<span><i style="background:${esc(t.colour)}"></i>tenant ${esc(t.name)}</span>`).join("")
      + '<span><i class="ramp"></i>utilisation</span><span><i class="down"></i>down</span>';
  }

  let lastTotals = {};
  function update(data) {
    lastTotals = data.totals || lastTotals;
    if (data.end_keys) {  // ends arrive as arrays; name their fields once here
      for (const l of data.links) l.ends = l.ends.map((e) => Object.fromEntries(data.end_keys.map((k, i) => [k, e[i]])));
    }
    latest = new Map(data.links.map((l) => [l.id, l]));
    for (const l of data.links) {
      const e = linkEls.get(l.id);
      if (!e) continue;
      const kind = e.data.kind;
      e.line.setAttribute("stroke", colour(l));
      e.line.setAttribute("stroke-width", width(l, kind));
      e.line.setAttribute("stroke-dasharray", l.up ? "" : "10 7");
      e.line.dataset.up = String(l.up);
      e.line.dataset.bps = String(l.bps);
      e.line.dataset.util = String(l.util);
      e.mark.setAttribute("visibility", l.up ? "hidden" : "visible");
    }
    const t = data.totals || {};
    $("#throughput").textContent = fmtBps(t.sent_bps || 0);
    $("#throughput").dataset.bps = String(t.sent_bps || 0);
    $("#busiest").textContent = fmtBps(t.busiest_bps || 0);
    const down = $("#n-down");
    down.textContent = String(t.links_down || 0);
    down.classList.toggle("bad", (t.links_down || 0) > 0);
    ticker(data.events);
  }

  const recent = [];
  function ticker(events) {
    const box = $("#ticker");
    for (const e of events || []) recent.push(e);
    recent.splice(0, Math.max(0, recent.length - 3));
    box.innerHTML = recent.map((e) => `<div class="k-${esc(e.kind)}">${new Date(e.t * 1000).toLocaleTimeString()} ${esc(e.text)}</div>`).join("");
  }

  // --- hover cards and panels ----------------------------------------------------------------
  function showHover(evt, html) {
    hover.innerHTML = html;
    hover.hidden = false;
    const box = $(".canvas").getBoundingClientRect();
    let x = evt.clientX - box.left + 16, y = evt.clientY - box.top + 16;
    if (x + hover.offsetWidth > box.width) x = evt.clientX - box.left - hover.offsetWidth - 16;
    if (y + hover.offsetHeight > box.height) y = evt.clientY - box.top - hover.offsetHeight - 16;
    hover.style.left = `${x}px`; hover.style.top = `${y}px`;
  }
  function hideHover() { hover.hidden = true; }

  function linkCard(id) {
    const l = latest.get(id) || {up: true, bps: 0, util: 0, ends: []};
    const d = linkEls.get(id).data;
    const rows = (l.ends || []).map((e) => `<tr><th>${esc(e.node)} port ${e.port}</th><td>${fmtNum(e.rx_bytes)}</td><td>${fmtNum(e.tx_bytes)}</td>
      <td>${fmtNum(e.rx_packets)}</td><td>${fmtNum(e.tx_packets)}</td><td>${fmtNum((e.rx_dropped || 0) + (e.tx_dropped || 0))}</td></tr>`).join("");
    return `<b>${esc(d.a)} — ${esc(d.b)}</b> <span class="${l.up ? "state-up" : "state-down"}">${l.up ? "up" : "DOWN"}</span><br>
      ${fmtBps(l.bps)} · ${(100 * l.util).toFixed(1)} % of ${d.bw ? d.bw + " Mbit/s" : "1 Gbit/s"}
      <table><tr><th></th><th>rx B</th><th>tx B</th><th>rx pkt</th><th>tx pkt</th><th>drop</th></tr>${rows}</table>`;
  }
  function nodeCard(n) {
    if (n.kind === "container") {
      return `<b>${esc(n.id)}</b> container on ${esc(n.pi)}<br><span class="mono">${esc(n.ip || "")} ${esc(n.mac || "")}</span>
        ${n.tenant ? `<br>tenant <b style="color:${tenantColour(n.tenant)}">${esc(n.tenant)}</b>` : ""}`;
    }
    const ports = layout.links.filter((l) => l.a === n.id || l.b === n.id).length;
    return `<b>${esc(n.id)}</b> ${esc(n.role)}${n.rack != null ? ` · rack ${esc(n.rack)}` : ""}<br>
      <span class="mono">dpid ${esc(n.dpid)}</span> · ${ports} ports<br><span class="dim">click for flow table</span>`;
  }

  function openPanel(html) { panelBody.innerHTML = html; panel.hidden = false; }
  $("#panel-close").addEventListener("click", () => { panel.hidden = true; });

  function linkPanel(id) {
    const d = linkEls.get(id).data;
    if (d.kind !== "fabric") { openPanel(linkCard(id)); return; }
    const l = latest.get(id) || {up: true};
    openPanel(`${linkCard(id)}<p><button class="danger" id="cut">cut link</button> <button class="go" id="restore">restore link</button></p>
      <p>capture the next <input id="cap-secs" type="number" min="1" max="60" value="5" style="width:4rem"> s
      <button class="go" id="capture">capture</button></p>
      <p class="dim">actions need the token printed when the UI started</p>`);
    $("#capture").addEventListener("click", async () => {
      const seconds = Number($("#cap-secs").value);
      $("#capture").disabled = true;
      toast(`capturing ${d.a}-${d.b} for ${seconds} s`);
      try {
        const r = await download(`/api/links/${encodeURIComponent(d.a)}/${encodeURIComponent(d.b)}/capture`, {seconds});
        toast(`${r.name}: ${r.packets} packets, ${r.dropped} dropped by the kernel`);
      } finally { $("#capture").disabled = false; }
    });
    const set = async (up) => {
      await act("POST", `/api/links/${encodeURIComponent(d.a)}/${encodeURIComponent(d.b)}`, {up});
      toast(`link ${d.a}-${d.b} ${up ? "restored" : "cut"}`);
    };
    $("#cut").addEventListener("click", () => set(false));
    $("#restore").addEventListener("click", () => set(true));
    $("#cut").disabled = !l.up;
  }

  async function containerPanel(n) {
    const others = containers.filter((c) => c !== n.id);
    const flows = (await getJSON("/api/traffic")).flows.filter((f) => f.running);
    openPanel(`${nodeCard(n)}<h2>Bulk traffic</h2>
      <p>to <select id="dst">${others.map((c) => `<option>${esc(c)}</option>`).join("")}</select>
      for <input id="secs" type="number" min="1" max="3600" value="30" style="width:5rem"> s
      <button class="go" id="start">start</button></p>
      ${flows.map((f) => `<p>${esc(f.id)}: ${esc(f.src)} → ${esc(f.dst)} <button class="danger" data-stop="${esc(f.id)}">stop</button></p>`).join("")}`);
    $("#start").addEventListener("click", async () => {
      const r = await act("POST", "/api/traffic", {src: n.id, dst: $("#dst").value, seconds: Number($("#secs").value)});
      toast(`started ${r.id}: ${r.src} → ${r.dst}`);
      containerPanel(n);
    });
    for (const b of panelBody.querySelectorAll("[data-stop]")) {
      b.addEventListener("click", async () => { await act("DELETE", `/api/traffic/${b.dataset.stop}`); toast(`stopped ${b.dataset.stop}`); containerPanel(n); });
    }
  }

  // Redraw when the topology changes (members added or removed); otherwise only recolour.
  let shape = "";
  async function load() {
    const data = await getJSON("/api/topology");
    const key = `${data.nodes.length}/${data.links.length}/${data.nodes.map((n) => n.tenant || "").join(",")}`;
    if (key !== shape) {
      shape = key;
      draw(data);
      svg.dataset.ready = "1";
      if (latest.size) update({links: [...latest.values()], totals: lastTotals, events: []});
    }
  }
  load().then(() => onLive(update));
  setInterval(load, 5000);
})();
