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
  const page = await browser.newPage();
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
  const diskObjects = await page.textContent("#tiers tr[data-tier=disk] td:nth-child(2)");
  if (!(Number(diskObjects) >= 2)) failures.push(`disk tier shows ${diskObjects} objects`);

  // The heaviest URLs: the hot path the traffic hits leads the list.
  const topRow = page.locator("#top-requests tbody tr").first();
  await topRow.waitFor({ timeout: 10_000 });
  const topText = await topRow.textContent();
  if (!topText.includes("/hot")) failures.push(`top URL row: ${topText}`);

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

  // A hard purge by URL from the form.
  await page.selectOption("#purge-kind", "url");
  await page.fill("#purge-value", env("PURGE_URL"));
  await page.click("#purge-submit");
  await page.locator("#purge-result", { hasText: "purged 1" }).waitFor({ timeout: 10_000 });

  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
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
