// Drives the stavka dashboard in a real headless Chromium. Started by
// tests/tests/dashboard.rs, which runs the origin, the proxy and the
// traffic; this script only looks and clicks, and exits non-zero (with the
// reason) when the page does not do what an operator needs.
//
// Environment: ADMIN (admin base URL), TOKEN, PURGE_URL (a cached URL to
// purge through the form), INSPECT_URL (a cached URL to inspect),
// SCREENSHOT (optional PNG path), CHROMIUM (default /usr/bin/chromium).
// Playwright gives the browser a fresh, empty profile of its own.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const admin = env("ADMIN");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  // The smallest screen the dashboard is made for.
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") console.error(`console: ${m.text()}`); });
  await page.goto(`${admin}/dashboard`);

  // Without the token the API refuses, and the page says so.
  await page.locator("#status", { hasText: "token is required" }).waitFor({ timeout: 10_000 });

  await page.fill("#token", env("TOKEN"));
  await page.click("#connect");
  await page.locator("#status", { hasText: "live" }).waitFor({ timeout: 10_000 });

  // Live numbers change on their own as traffic flows.
  const total = async () => Number(await page.textContent("#requests-total"));
  const first = await total();
  await page.waitForFunction(
    (before) => Number(document.getElementById("requests-total").textContent) > before,
    first, { timeout: 15_000 });
  await page.waitForFunction(
    () => Number(document.getElementById("chart-rps").dataset.points || 0) >= 2, null, { timeout: 15_000 });
  const rps = Number(await page.textContent("#rps"));
  if (!(rps > 0)) failures.push(`requests/s shows ${rps}`);
  const hit = await page.textContent("#hit-ratio");
  if (!hit.endsWith("%")) failures.push(`hit ratio shows ${hit}`);
  const prefetch = await page.textContent("#prefetch");
  if (!/^\d+ · \d+ · \d+/.test(prefetch)) failures.push(`prefetch shows ${prefetch}`);
  const diskObjects = await page.textContent("#tiers tr[data-tier=disk] td:nth-child(2)");
  if (!(Number(diskObjects) >= 2)) failures.push(`disk tier shows ${diskObjects} objects`);

  // The heaviest URLs: the hot path leads by requests and by bytes; the
  // uncached path leads the origin fetches.
  for (const [table, url] of [["top-requests", "/hot"], ["top-bytes", "/hot"], ["top-misses", "/live"]]) {
    const row = page.locator(`#${table} tbody tr`).first();
    await row.waitFor({ timeout: 10_000 });
    const text = await row.textContent();
    if (!text.includes(url)) failures.push(`${table} first row: ${text}`);
  }

  // Every chart draws live points: status classes and latency too.
  for (const id of ["chart-status", "chart-latency", "chart-hit"]) {
    await page.waitForFunction(
      (id) => Number(document.getElementById(id).dataset.points || 0) >= 2, id, { timeout: 15_000 })
      .catch(() => failures.push(`${id} drew no live points`));
  }

  // Per-site traffic: the test site answers 2xx with hits; the site whose
  // origin is down answers 5xx, and its origin is failing while the test
  // site's is healthy.
  const siteCells = async (table, site) =>
    page.locator(`#${table} tr[data-site="${site}"] td`).allTextContents();
  await page.waitForFunction(() => {
    const row = (t, s) => document.querySelector(`#${t} tr[data-site="${s}"]`);
    return row("sites", "test") && row("sites", "down") && row("origins", "test")
      && row("origins", "test").cells[1].textContent === "healthy"
      && row("origins", "down").cells[1].textContent === "failing";
  }, null, { timeout: 15_000 }).catch(() => failures.push("the site and origin tables never showed both sites"));
  const test = await siteCells("sites", "test");
  if (!(Number(test[1]) > 0) || !test[2].endsWith("%") || !(Number(test[3]) > 0)) failures.push(`site test: ${test}`);
  const down = await siteCells("sites", "down");
  if (!(Number(down[6]) > 0)) failures.push(`site down answers no 5xx: ${down}`);
  const origin = await siteCells("origins", "test");
  if (!(Number(origin[2]) > 0) || !(Number(origin[5]) > 0)) failures.push(`origin test: ${origin}`);
  const failing = await siteCells("origins", "down");
  if (!(Number(failing[3]) > 0)) failures.push(`origin down shows no errors: ${failing}`);
  const clientLatency = await page.textContent("#client-latency");
  if (!/\d/.test(clientLatency)) failures.push(`client latency shows ${clientLatency}`);
  const errors = await page.textContent("#errors-rate");
  if (!(Number(errors.split("·")[1]) > 0)) failures.push(`4xx · 5xx shows ${errors}`);

  // The TLS certificate and when it expires (rcgen's default: 4096-01-01).
  const certRow = page.locator("#certificates tr[data-certificate=default]");
  await certRow.waitFor({ timeout: 10_000 }).catch(() => failures.push("no certificate row"));
  const certText = await certRow.textContent().catch(() => "");
  if (!certText.includes("4096-01-01") || !certText.includes("d.pem")) failures.push(`certificate row: ${certText}`);

  // The event log shows the module's load.
  await page.locator("#events tr[data-kind=policy-loaded]", { hasText: "p" }).first()
    .waitFor({ timeout: 10_000 }).catch(() => failures.push("no policy-loaded event"));

  // Charts survive gaps: a missing value and a hole in time each end a
  // segment rather than draw across it, and a lone point still shows.
  const runs = await page.evaluate(() => {
    const canvas = document.createElement("canvas");
    document.body.append(canvas);
    const count = (times, values) => {
      chart(canvas, times, [{ values, color: "red" }], 10);
      return [Number(canvas.dataset.points), Number(canvas.dataset.runs)];
    };
    const result = [
      count([100, 101, 102, 103, 104], [1, 2, null, 4, 5]),
      count([100, 101, 110, 111], [1, 2, 3, 4]),
      count([100, 101, 102], [null, 3, null]),
    ];
    canvas.remove();
    return result;
  });
  if (JSON.stringify(runs) !== "[[4,2],[4,2],[1,1]]") failures.push(`chart runs with gaps: ${JSON.stringify(runs)}`);

  // Nothing is wider than the screen.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 1280) failures.push(`the page is ${width} px wide at 1280×800`);

  // The policy module and its status.
  const module = page.locator("#policies tr[data-module=p]");
  await module.waitFor({ timeout: 10_000 });
  const moduleText = await module.textContent();
  if (!moduleText.includes("serving")) failures.push(`policy row: ${moduleText}`);

  // The inspector shows the entry.
  await page.fill("#inspect-url", env("INSPECT_URL"));
  await page.click("#inspect-submit");
  const entry = page.locator("#inspect-entries tbody tr").first();
  await entry.waitFor({ timeout: 10_000 });
  const entryText = await entry.textContent();
  if (!entryText.includes("fresh") || !entryText.includes("200")) failures.push(`inspector row: ${entryText}`);

  // A hard purge by URL from the form, and its event.
  await page.selectOption("#purge-kind", "url");
  await page.fill("#purge-value", env("PURGE_URL"));
  await page.click("#purge-submit");
  await page.locator("#purge-result", { hasText: "purged 1" }).waitFor({ timeout: 10_000 });
  await page.locator("#events tr[data-kind=purge]", { hasText: "matched 1, purged 1" })
    .waitFor({ timeout: 10_000 }).catch(() => failures.push("no purge event"));

  const shot = process.env.SCREENSHOT;
  if (shot) await page.screenshot({ path: shot, fullPage: true });

  // Dark mode: the page follows the system's scheme and keeps drawing.
  await page.emulateMedia({ colorScheme: "dark" });
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  if (background !== "rgb(15, 20, 25)") failures.push(`dark mode background: ${background}`);
  const before = await page.textContent("#requests-total");
  await page.waitForFunction(
    (b) => document.getElementById("requests-total").textContent !== b, before, { timeout: 10_000 })
    .catch(() => failures.push("the page stopped updating in dark mode"));
  if (shot) await page.screenshot({ path: shot.replace(/\.png$/, "-dark.png"), fullPage: true });
} catch (e) {
  failures.push(e.message);
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("dashboard: ok");
