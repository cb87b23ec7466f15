// The stavka dashboard: polls the admin API with the operator's token.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("stavka-token") || "", timer: null, policiesAt: 0, lastEvent: 0 };

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

// Chart colours come from the stylesheet, so they follow dark mode.
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// Seconds of history a chart spans, and the longest step between two
// points that is still drawn as one line.
const SPAN = 120, GAP = 2.5;

// A round number at least `n`, for an axis's top.
function ceiling(n) {
  if (!(n > 0)) return 1;
  const unit = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 2.5, 5, 10].map((m) => m * unit).find((m) => m >= n);
}

// A time-series chart of `lines` ([{ values, color }]) over `times` (Unix
// seconds), newest at the right edge. A missing value or a hole in time
// longer than GAP ends a segment instead of drawing across it, and a point
// alone between gaps is drawn as a dot: gaps stay visible, nothing is
// invented. Sized to its box and the screen's pixel ratio.
function chart(canvas, times, lines, max) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 40, top = 8, bottom = h - 16, right = w - 6;
  const end = times.length ? times[times.length - 1] : Date.now() / 1000;
  const x = (t) => left + ((t - (end - SPAN)) / SPAN) * (right - left);
  const y = (v) => bottom - (Math.min(v, max) / max) * (bottom - top);
  ctx.font = "11px system-ui";
  ctx.fillStyle = css("--muted");
  ctx.strokeStyle = css("--line");
  ctx.lineWidth = 1;
  for (const v of [0, max / 2, max]) {
    ctx.beginPath();
    ctx.moveTo(left, y(v)); ctx.lineTo(right, y(v));
    ctx.stroke();
    const label = max >= 10 ? String(Math.round(v)) : String(+v.toFixed(2));
    ctx.fillText(label, 2, y(v) + 4);
  }
  ctx.fillText(`−${SPAN} s`, left, h - 3);
  ctx.fillText("now", right - 22, h - 3);
  let points = 0, runs = 0;
  for (const line of lines) {
    ctx.strokeStyle = ctx.fillStyle = line.color;
    ctx.lineWidth = 2;
    let run = [];
    const flush = () => {
      if (run.length) runs++;
      if (run.length === 1) {
        ctx.beginPath();
        ctx.arc(run[0][0], run[0][1], 2, 0, 2 * Math.PI);
        ctx.fill();
      } else if (run.length > 1) {
        ctx.beginPath();
        run.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
        ctx.stroke();
      }
      run = [];
    };
    line.values.forEach((v, i) => {
      if (v == null || !Number.isFinite(v) || times[i] < end - SPAN) { flush(); return; }
      if (i > 0 && times[i] - times[i - 1] > GAP) flush();
      run.push([x(times[i]), y(v)]);
      points++;
    });
    flush();
  }
  canvas.dataset.points = String(points);
  canvas.dataset.runs = String(runs);
}

// A legend of keys coloured by stylesheet variables (so they follow dark
// mode): entries are [name, variable].
function legend(id, entries) {
  const el = $(id);
  if (el.childElementCount) return;
  for (const [name, variable] of entries) {
    const span = document.createElement("span");
    const key = document.createElement("i");
    key.style.background = `var(${variable})`;
    span.append(key, name);
    el.append(span);
  }
}

const CLASSES = ["2xx", "3xx", "4xx", "5xx"];
const PERCENTILES = [["p50", "p50_ms"], ["p95", "p95_ms"], ["p99", "p99_ms"]];
const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(0));
const pair = (a, b) => `${ms(a)} · ${ms(b)} ms`;

function showStats(s) {
  const r = s.rates["10s"] || {};
  $("rps").textContent = num(r.requests_per_second);
  $("hit-ratio").textContent = ratio(r.hit_ratio);
  $("requests-total").textContent = String(s.totals.requests);
  $("bytes-rate").textContent = r.bytes_per_second
    ? bytes(r.bytes_per_second.cache) + " · " + bytes(r.bytes_per_second.origin) : "–";
  const latency = r.latency || { client: {}, origin: {} };
  $("client-latency").textContent = pair(latency.client.p50_ms, latency.client.p99_ms);
  $("origin-latency").textContent = pair(latency.origin.p50_ms, latency.origin.p99_ms);
  const status = r.status_per_second || {};
  $("errors-rate").textContent = `${num(status["4xx"])} · ${num(status["5xx"])}`;
  $("policy-calls").textContent = s.totals.policy.calls + " · " + s.totals.policy.failures;
  const prefetch = s.totals.prefetch.by_outcome;
  $("prefetch").textContent = [prefetch.fetched, prefetch.used, prefetch.wasted]
    .map((n) => String(n || 0)).join(" · ")
    + (s.totals.prefetch.queued ? ` (${s.totals.prefetch.queued} queued)` : "");

  const times = s.series.map((p) => p.t);
  const rps = s.series.map((p) => p.requests_per_second);
  chart($("chart-rps"), times, [{ values: rps, color: css("--accent") }], ceiling(Math.max(...rps, 0)));
  chart($("chart-hit"), times, [{ values: s.series.map((p) => p.hit_ratio), color: css("--good") }], 1);
  const statusLines = CLASSES.map((c) => ({ values: s.series.map((p) => p.status_per_second[c]), color: css("--s" + c) }));
  legend("legend-status", CLASSES.map((c) => [c, "--s" + c]));
  chart($("chart-status"), times, statusLines,
    ceiling(Math.max(0, ...statusLines.flatMap((l) => l.values))));
  const latencyLines = PERCENTILES.map(([name, field]) => ({ values: s.series.map((p) => p.latency[field]), color: css("--" + name) }));
  legend("legend-latency", PERCENTILES.map(([name]) => [name, "--" + name]));
  chart($("chart-latency"), times, latencyLines,
    ceiling(Math.max(0, ...latencyLines.flatMap((l) => l.values.filter((v) => v != null)))));

  showSites(s.sites);
  showCertificates(s.certificates);

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
    + `${s.totals.evictions.objects} evicted, ${s.totals.collapsed_requests} collapsed requests; `
    + `disk reads: ${s.store.io_engine}.`;
}

// Each site's traffic, and its origin's health, over the last 10 s.
function showSites(sites) {
  const traffic = $("sites").tBodies[0], origins = $("origins").tBodies[0];
  traffic.replaceChildren();
  origins.replaceChildren();
  for (const site of sites) {
    const row = traffic.insertRow();
    row.dataset.site = site.site;
    cell(row, site.site);
    cell(row, num(site.requests_per_second), "num");
    cell(row, ratio(site.hit_ratio), "num");
    for (const c of CLASSES) cell(row, num(site.status_per_second[c]), "num");
    for (const [, field] of PERCENTILES) cell(row, ms(site.latency[field]), "num");

    const o = site.origin;
    const health = origins.insertRow();
    health.dataset.site = site.site;
    cell(health, site.site);
    cell(health, o.health, o.health);
    cell(health, num(o.requests_per_second), "num");
    cell(health, num(o.errors_per_second), "num");
    cell(health, num(o.timeouts_per_second), "num");
    for (const [, field] of PERCENTILES) cell(health, ms(o.latency[field]), "num");
  }
}

// Days a certificate may have left before it is shown as a warning, and
// as an error.
const CERT_WARN_DAYS = 21, CERT_BAD_DAYS = 7;

// The TLS certificates and when each expires; hidden without a TLS listener.
function showCertificates(certs) {
  $("certificates-panel").hidden = !certs.length;
  const body = $("certificates").tBodies[0];
  body.replaceChildren();
  for (const c of certs) {
    const row = body.insertRow();
    row.dataset.certificate = c.name;
    const days = c.expires_in_seconds / 86400;
    cell(row, c.name);
    cell(row, c.hosts.join(" "), "url");
    cell(row, c.cert_file, "url");
    cell(row, new Date(c.not_after * 1000).toISOString().slice(0, 10));
    cell(row, days < 0 ? "expired" : `${Math.floor(days)} d`,
      days < CERT_BAD_DAYS ? "num error" : days < CERT_WARN_DAYS ? "num warning" : "num");
    cell(row, c.last_error || "", c.last_error ? "error" : "");
  }
}

// The heaviest URLs lately (GET /top): one table per measure.
function showTop(t) {
  for (const [id, list, show] of [
    ["top-requests", t.requests, String],
    ["top-bytes", t.bytes, bytes],
    ["top-misses", t.misses, String],
  ]) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    for (const u of list) {
      const row = body.insertRow();
      cell(row, u.url, "url");
      cell(row, show(u.count), "num");
    }
  }
}

// Events kept on the page, newest first.
const EVENTS_SHOWN = 100;

function showEvents(answer) {
  const body = $("events").tBodies[0];
  for (const e of answer.events) {
    state.lastEvent = Math.max(state.lastEvent, e.id);
    const row = body.insertRow(0);
    row.dataset.kind = e.kind;
    if (e.warning) row.className = "warning";
    cell(row, new Date(e.at * 1000).toLocaleTimeString());
    cell(row, e.kind);
    cell(row, e.subject, "url");
    cell(row, e.detail);
  }
  while (body.rows.length > EVENTS_SHOWN) body.deleteRow(-1);
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
    .then(() => Promise.all([
      api("/top?n=10").then(showTop),
      api(`/events?after=${state.lastEvent}&n=${EVENTS_SHOWN}`).then(showEvents),
    ]))
    .then(() => (Date.now() - state.policiesAt > 5000 ? refreshPolicies() : null))
    .catch((e) => setStatus(e.message, false));
}

function connect(event) {
  if (event) event.preventDefault();
  state.token = $("token").value;
  sessionStorage.setItem("stavka-token", state.token);
  state.policiesAt = 0;
  state.lastEvent = 0;
  $("events").tBodies[0].replaceChildren();
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
