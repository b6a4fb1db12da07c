/* PiCloud web UI: shared helpers and the list/table pages. No framework, no build step:
   the scripts are served as they are written, so the UI works offline on a demo laptop. */
"use strict";

const PiCloud = (() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  function fmtBps(bps) {
    if (!bps) return "0 bit/s";
    const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let i = 0;
    while (bps >= 1000 && i < units.length - 1) { bps /= 1000; i++; }
    return `${bps.toFixed(bps < 10 ? 1 : 0)} ${units[i]}`;
  }
  function fmtNum(n) {
    if (n === undefined || n === null) return "–";
    if (n < 10000) return String(n);
    const units = ["", "k", "M", "G", "T"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return `${n.toFixed(1)}${units[i]}`;
  }
  function fmtAge(s) {
    if (s < 60) return `${s.toFixed(0)} s`;
    if (s < 3600) return `${(s / 60).toFixed(0)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  // The action token lives in this browser only (localStorage), never in a URL.
  const tokenKey = "picloud-token";
  function token() { return localStorage.getItem(tokenKey) || ""; }
  function initToken() {
    const input = $("#token");
    if (!input) return;
    input.value = token();
    input.classList.toggle("set", !!input.value);
    $("#token-form").addEventListener("submit", (e) => e.preventDefault());
    input.addEventListener("change", () => {
      localStorage.setItem(tokenKey, input.value.trim());
      input.classList.toggle("set", !!input.value.trim());
    });
  }

  function toast(text, bad = false) {
    const el = $("#toast");
    el.textContent = text;
    el.className = bad ? "toast bad" : "toast";
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  async function getJSON(url) {
    const r = await fetch(url, {headers: {Accept: "application/json"}});
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }
  async function act(method, url, body) {
    const r = await fetch(url, {
      method, headers: {"Content-Type": "application/json", "X-PiCloud-Token": token()},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { toast(data.message || `${r.status}`, true); throw new Error(data.message); }
    return data;
  }

  // A state-changing request whose answer is a file (a capture): saved under the name the server gives.
  async function download(url, body) {
    const r = await fetch(url, {
      method: "POST", headers: {"Content-Type": "application/json", "X-PiCloud-Token": token()},
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      const data = await r.json().catch(() => ({}));
      toast(data.message || `${r.status}`, true);
      throw new Error(data.message);
    }
    const name = (/filename="?([^";]+)"?/.exec(r.headers.get("Content-Disposition") || "") || [])[1] || "capture.pcapng";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await r.blob());
    link.download = name;
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    return {name, dropped: r.headers.get("X-PiCloud-Capture-Dropped"), packets: r.headers.get("X-PiCloud-Capture-Packets")};
  }

  // One EventSource per page; pages register listeners for each sample.
  const listeners = [];
  let source = null;
  function onLive(fn) {
    listeners.push(fn);
    if (source) return;
    source = new EventSource("/api/stream");
    const live = $("#live"), text = $("#live-text");
    source.addEventListener("links", (e) => {
      const data = JSON.parse(e.data);
      live.className = "live on";
      text.textContent = `live · ${new Date(data.time * 1000).toLocaleTimeString()}`;
      live.dataset.seq = data.seq;
      for (const fn of listeners) fn(data);
    });
    source.onerror = () => { live.className = "live off"; text.textContent = "reconnecting"; };
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  function cells(row) { return row.map((c) => `<td${c.num ? ' class="num"' : ""}>${c.html ?? esc(c)}</td>`).join(""); }
  const num = (v) => ({num: true, html: esc(fmtNum(v))});

  // --- Switches list -------------------------------------------------------------------------
  function switchList() {
    onLive((data) => {
      for (const tr of document.querySelectorAll("#switches tbody tr")) {
        const c = data.switches[tr.dataset.name];
        const td = $(".conn", tr);
        td.textContent = c === undefined ? "–" : c ? "connected" : "disconnected";
        td.style.color = c === undefined ? "" : c ? "var(--ok)" : "var(--bad)";
      }
    });
  }

  // --- One switch: ports, flows (filtered on the server), groups, meters ----------------------
  function switchPage(name) {
    const base = `/api/switches/${encodeURIComponent(name)}`;
    const filter = $("#flow-filter");
    let pending = null;
    async function loadFlows() {
      const q = encodeURIComponent(filter.value.trim());
      const data = await getJSON(`${base}/flows?limit=2000&q=${q}`);
      $("#flow-count").textContent = data.matched === data.total
        ? `${data.total} entries` : `${data.matched} of ${data.total} entries match`;
      $("#flows tbody").innerHTML = data.flows.map((f) => `<tr>${cells([
        {num: true, html: f.table}, {num: true, html: f.priority}, f.match, f.actions, num(f.packets), num(f.bytes),
        {num: true, html: fmtAge(f.age)}, {html: `<span class="mono dim">${esc(f.cookie)}</span>`}])}</tr>`).join("")
        + (data.matched > data.flows.length ? `<tr><td colspan="8" class="dim">… ${data.matched - data.flows.length} more; narrow the filter</td></tr>` : "");
    }
    async function loadPorts() {
      const data = await getJSON(base);
      $("#ports tbody").innerHTML = data.ports.map((p) => {
        const c = p.counters || {};
        return `<tr>${cells([{num: true, html: p.port}, {html: `<a href="/switches/${esc(p.peer)}">${esc(p.peer)}</a>`},
          num(c.rx_bytes), num(c.tx_bytes), num(c.rx_packets), num(c.tx_packets),
          num((c.rx_dropped || 0) + (c.tx_dropped || 0)), num((c.rx_errors || 0) + (c.tx_errors || 0))])}</tr>`;
      }).join("");
    }
    async function loadGroupsMeters() {
      const g = await getJSON(`${base}/groups`);
      $("#groups tbody").innerHTML = g.groups.map((x) => `<tr>${cells([{num: true, html: x.group_id}, x.type,
        {html: `<span class="mono">${esc(x.buckets.map((b) => `${b.weight !== undefined ? `w${b.weight} ` : ""}${b.actions}${b.packets !== undefined ? ` (${fmtNum(b.packets)} pkts)` : ""}`).join(" | "))}</span>`}, num(x.packets), num(x.bytes)])}</tr>`).join("")
        || `<tr><td colspan="5" class="dim">none</td></tr>`;
      const m = await getJSON(`${base}/meters`);
      $("#meters tbody").innerHTML = m.meters.map((x) => `<tr>${cells([{num: true, html: x.meter_id}, x.flags,
        {html: `<span class="mono">${esc(x.bands.map((b) => Object.entries(b).map(([k, v]) => `${k}=${v}`).join(",")).join(" | "))}</span>`},
        num(x.packets), num(x.bytes)])}</tr>`).join("") || `<tr><td colspan="5" class="dim">none</td></tr>`;
    }
    filter.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(loadFlows, 200); });
    loadFlows(); loadPorts(); loadGroupsMeters();
    setInterval(() => { if ($("#flow-auto").checked) { loadFlows(); loadGroupsMeters(); } }, 3000);
    onLive(() => loadPorts());
  }

  // --- Tenants --------------------------------------------------------------------------------
  async function tenantsPage() {
    const root = $("#tenants");
    async function load() {
      const data = await getJSON("/api/tenants");
      if (!data.tenants.length) { root.innerHTML = '<p class="dim">No tenants in this run.</p>'; return; }
      root.innerHTML = data.tenants.map((t) => {
        const v = t.verify;
        const detail = v && v.pairs !== undefined
          ? `${v.leaks_out} leaks out, ${v.leaks_in} in, ${v.reached}/${v.pairs} member pairs reached` : (v && v.summary) || "";
        const verify = v ? `<p class="${v.ok ? "verify-ok" : "verify-bad"}">last verify: ${v.ok ? "isolated ✓" : "FAILED ✗"} · ${esc(detail)}</p>`
          : '<p class="dim">not verified yet</p>';
        const racks = new Set(t.members.map((m) => m.rack ?? m.pi));
        return `<div class="card tenant" data-tenant="${esc(t.name)}">
          <h2><span class="swatch" style="background:${esc(t.colour)}"></span>${esc(t.name)}
            <span class="dim">${esc([t.id != null ? `id ${t.id}` : "", t.subnet || ""].filter(Boolean).join(" · "))}</span></h2>
          <p class="dim">${plural(t.members.length, "member")} on ${plural(racks.size, "rack")}${t.rate ? ` · rate ${esc(t.rate)}` : ""}</p>
          ${verify}
          <table class="grid"><thead><tr><th>member</th><th>address</th><th>Pi</th><th>rack</th><th></th></tr></thead><tbody>
          ${t.members.map((m) => `<tr>${cells([m.name, {html: `<span class="mono">${esc(m.ip || "")}</span>`}, m.pi || "", m.rack ?? "",
            {html: `<button class="danger" data-remove="${esc(m.name)}">remove</button>`}])}</tr>`).join("")}
          </tbody></table>
          <p><button class="go" data-add="1">add member</button></p></div>`;
      }).join("");
    }
    root.addEventListener("click", async (e) => {
      const card = e.target.closest("[data-tenant]");
      if (!card) return;
      const name = card.dataset.tenant;
      if (e.target.dataset.remove) {
        await act("DELETE", `/api/tenants/${encodeURIComponent(name)}/members/${encodeURIComponent(e.target.dataset.remove)}`);
        toast(`removed ${e.target.dataset.remove}`);
      } else if (e.target.dataset.add) {
        const r = await act("POST", `/api/tenants/${encodeURIComponent(name)}/members`, {count: 1, placement: "spread"});
        toast(`added ${r.added.join(", ")}`);
      } else return;
      load();
    });
    async function loadVerify() {
      const v = await getJSON("/api/verify");
      $("#verify-state").textContent = v.running ? "probing…" : v.error ? `failed: ${v.error}`
        : v.report ? `last run ${new Date(v.report.time * 1000).toLocaleTimeString()}` : "";
      const pre = $("#verify-summary");
      pre.hidden = !v.report;
      if (v.report) pre.textContent = v.report.summary || "";
      $("#verify-now").disabled = v.running;
      return v.running;
    }
    $("#verify-now").addEventListener("click", async () => {
      await act("POST", "/api/verify", {});
      toast("isolation check started");
      const poll = setInterval(async () => { if (!(await loadVerify())) { clearInterval(poll); load(); } }, 1000);
      loadVerify();
    });
    await load();
    loadVerify();
    setInterval(load, 5000);
  }

  // --- Events ---------------------------------------------------------------------------------
  async function eventsPage() {
    const body = $("#events tbody");
    const row = (e) => `<tr class="k-${esc(e.kind)}">${cells([new Date(e.t * 1000).toLocaleTimeString(), e.kind, e.text, e.source])}</tr>`;
    const data = await getJSON("/api/events?since=0");
    body.innerHTML = data.events.slice().reverse().map(row).join("");
    let last = data.events.length ? data.events[data.events.length - 1].t : 0;
    onLive((d) => {
      for (const e of d.events) if (e.t > last) { body.insertAdjacentHTML("afterbegin", row(e)); last = e.t; }
    });
  }

  // Every page shows whether the live stream is connected.
  // Pages name their script in <body data-boot data-arg>: the Content-Security-Policy allows no
  // inline <script>, so nothing a template (or an injected string) writes can run.
  const pages = {switchList, switchPage, tenantsPage, eventsPage};
  document.addEventListener("DOMContentLoaded", () => {
    initToken();
    onLive(() => {});
    const boot = document.body.dataset.boot;
    if (boot && Object.hasOwn(pages, boot)) pages[boot](document.body.dataset.arg);
  });
  return {$, esc, fmtBps, fmtNum, toast, getJSON, act, download, onLive, switchList, switchPage, tenantsPage, eventsPage};
})();
