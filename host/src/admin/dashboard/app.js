// The stavka dashboard: polls the admin API with the operator's token.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("stavka-token") || "", timer: null, policiesAt: 0 };

function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  return fetch(path, Object.assign({}, options, { headers })).then(async (resp) => {
    if (resp.status === 401) throw new Error("a token is required");
    if (resp.status === 403) throw new Error("the token is wrong");
    const type = resp.headers.get("content-type") || "";
    const body = type.includes("json") ? await resp.json() : await resp.text();
    if (!resp.ok) throw new Error((body && body.error) || String(body) || resp.statusText);
    return body;
  });
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}
const ratio = (r) => (r == null ? "–" : (r * 100).toFixed(1) + " %");
const num = (n, digits = 1) => (n == null ? "–" : Number(n).toFixed(digits));

function setStatus(text, ok) {
  const s = $("status");
  s.textContent = text;
  s.className = ok ? "ok" : "error";
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// A line chart of `values` (null = gap) scaled to `max`.
function chart(canvas, values, max, color) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 18;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#d5dae0";
  ctx.fillStyle = "#5b6570";
  ctx.font = "11px system-ui";
  ctx.beginPath();
  ctx.moveTo(pad, pad); ctx.lineTo(pad, h - pad); ctx.lineTo(w - 4, h - pad);
  ctx.stroke();
  ctx.fillText(max >= 10 ? Math.round(max) : max.toFixed(2), 2, pad - 4);
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  const step = values.length > 1 ? (w - pad - 4) / (values.length - 1) : 0;
  let drawing = false;
  values.forEach((v, i) => {
    if (v == null) { drawing = false; return; }
    const x = pad + i * step, y = h - pad - (v / (max || 1)) * (h - 2 * pad);
    if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    drawing = true;
  });
  ctx.stroke();
  canvas.dataset.points = String(values.filter((v) => v != null).length);
  canvas.dataset.last = values.length ? String(values[values.length - 1]) : "";
}

function showStats(s) {
  const r = s.rates["10s"] || {};
  $("rps").textContent = num(r.requests_per_second);
  $("hit-ratio").textContent = ratio(r.hit_ratio);
  $("requests-total").textContent = String(s.totals.requests);
  $("bytes-rate").textContent = r.bytes_per_second
    ? bytes(r.bytes_per_second.cache) + " · " + bytes(r.bytes_per_second.origin) : "–";
  $("origin-latency").textContent = r.origin_mean_latency_ms == null ? "–" : num(r.origin_mean_latency_ms, 2) + " ms";
  $("policy-calls").textContent = s.totals.policy.calls + " · " + s.totals.policy.failures;

  const rps = s.series.map((p) => p.requests_per_second);
  chart($("chart-rps"), rps, Math.max(1, ...rps), "#1f6feb");
  chart($("chart-hit"), s.series.map((p) => p.hit_ratio), 1, "#2e7d32");

  const body = $("tiers").tBodies[0];
  body.replaceChildren();
  for (const [name, t] of [["memory", s.store.memory], ["disk", s.store.disk]]) {
    const row = body.insertRow();
    row.dataset.tier = name;
    cell(row, name);
    cell(row, String(t.objects), "num");
    cell(row, bytes(t.bytes), "num");
    cell(row, bytes(t.capacity_bytes), "num");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = Math.min(100, (100 * t.bytes) / (t.capacity_bytes || 1)).toFixed(1) + "%";
    bar.append(fill);
    row.insertCell().append(bar);
  }
  $("catalog").textContent = `Catalog: ${s.store.catalog.objects} objects, ${s.store.catalog.tags} distinct tags; `
    + `${s.totals.evictions.objects} evicted, ${s.totals.collapsed_requests} collapsed requests.`;
}

// The heaviest URLs lately (GET /top): one table per measure.
function showTop(t) {
  for (const [id, list] of [["top-requests", t.requests], ["top-misses", t.misses]]) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    for (const u of list) {
      const row = body.insertRow();
      cell(row, u.url);
      cell(row, String(u.count), "num");
    }
  }
}

function showPolicies(p) {
  const body = $("policies").tBodies[0];
  body.replaceChildren();
  for (const m of p.modules) {
    const row = body.insertRow();
    row.dataset.module = m.name;
    cell(row, m.name);
    cell(row, m.status, m.status === "serving" ? "ok" : "error");
    cell(row, m.hash ? m.hash.slice(0, 12) : "–");
    cell(row, m.mode || "–");
    cell(row, m.loaded_at || "–");
    const c = m.counters || { calls: 0, failures: {} };
    cell(row, String(c.calls), "num");
    cell(row, Object.entries(c.failures).map(([k, v]) => `${k} ${v}`).join(", ") || "–");
    cell(row, m.last_error || "", m.last_error ? "error" : "");
    const button = document.createElement("button");
    button.textContent = "Reload";
    button.addEventListener("click", () =>
      api(`/policies/${encodeURIComponent(m.name)}/reload`, { method: "POST" })
        .then(refreshPolicies).catch((e) => setStatus(e.message, false)));
    row.insertCell().append(button);
  }
}

function refreshPolicies() {
  state.policiesAt = Date.now();
  return api("/policies").then(showPolicies);
}

function tick() {
  api("/stats")
    .then((s) => { showStats(s); setStatus("live", true); })
    .then(() => api("/top?n=10"))
    .then(showTop)
    .then(() => (Date.now() - state.policiesAt > 5000 ? refreshPolicies() : null))
    .catch((e) => setStatus(e.message, false));
}

function connect(event) {
  if (event) event.preventDefault();
  state.token = $("token").value;
  sessionStorage.setItem("stavka-token", state.token);
  state.policiesAt = 0;
  clearInterval(state.timer);
  tick();
  state.timer = setInterval(tick, 1000);
}

$("auth").addEventListener("submit", connect);

$("purge").addEventListener("submit", (event) => {
  event.preventDefault();
  const result = $("purge-result");
  const request = { [$("purge-kind").value]: $("purge-value").value, soft: $("purge-soft").checked };
  result.textContent = "purging…";
  result.className = "";
  api("/purge", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) })
    .then((r) => {
      result.textContent = `${r.mode} purge by ${r.selector}: matched ${r.matched}, purged ${r.purged} (${r.took_ms.toFixed(1)} ms)`;
      result.className = "ok";
      result.dataset.purged = String(r.purged);
    })
    .catch((e) => { result.textContent = e.message; result.className = "error"; });
});

$("inspect").addEventListener("submit", (event) => {
  event.preventDefault();
  const out = $("inspect-result");
  api("/inspect?url=" + encodeURIComponent($("inspect-url").value))
    .then((r) => {
      out.replaceChildren();
      const summary = document.createElement("p");
      summary.textContent = `${r.entries.length} entr${r.entries.length === 1 ? "y" : "ies"} for ${r.target} on ${r.host} (site ${r.site})`;
      out.append(summary);
      if (!r.entries.length) return;
      const table = document.createElement("table");
      table.id = "inspect-entries";
      const head = table.createTHead().insertRow();
      for (const h of ["Variant", "Status", "State", "Age", "TTL", "SWR / SIE", "Tags", "Size", "Tier", "Headers"]) {
        const th = document.createElement("th");
        th.textContent = h;
        head.append(th);
      }
      const body = table.createTBody();
      for (const e of r.entries) {
        const row = body.insertRow();
        cell(row, e.variant ? e.variant.slice(0, 12) : "primary");
        cell(row, String(e.status), "num");
        cell(row, e.state);
        cell(row, e.age_seconds + " s", "num");
        cell(row, e.ttl_seconds + " s", "num");
        cell(row, `${e.stale_while_revalidate_seconds} s / ${e.stale_if_error_seconds} s`);
        cell(row, e.tags.join(" "));
        cell(row, bytes(e.size_bytes), "num");
        cell(row, e.tier);
        const pre = document.createElement("pre");
        pre.textContent = e.headers.map(([k, v]) => `${k}: ${v}`).join("\n");
        row.insertCell().append(pre);
      }
      out.append(table);
    })
    .catch((e) => { out.textContent = e.message; out.className = "error"; });
});

$("token").value = state.token;
connect();
