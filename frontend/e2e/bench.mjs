// The panel's benchmark (SPEC §9), run by `cargo xtask bench -- --only panel` against a
// release botmox with 10,000 bots on 1,000 simulated agents (tests/src/bench/panel.rs). Prints
// progress, then one line `@@ result {json}` with the figures. Times are wall-clock from the
// node side: each includes a little DevTools-protocol overhead, so they err on the slow side.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { launch } from "./browser.mjs";

const BASE = process.env.PANEL_URL;
const PASSWORD = process.env.ADMIN_PASSWORD;
const CHANGES = Number(process.env.CHANGES ?? 40);
if (!BASE || !PASSWORD) throw new Error("PANEL_URL and ADMIN_PASSWORD are set by tests/src/bench/panel.rs");

/** The entry script, its preloaded chunks and CSS of dist/index.html, gzipped (level 9). */
function initialJsGzip() {
  const dist = new URL("../dist/", import.meta.url);
  const html = readFileSync(new URL("index.html", dist), "utf8");
  const files = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.js)"/g)].map((m) => m[1]);
  return files.reduce((sum, f) => sum + gzipSync(readFileSync(new URL(f, dist)), { level: 9 }).length, 0);
}

const api = await (async () => {
  const r = await fetch(`${BASE}/api/v1/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: "admin", password: PASSWORD }) });
  const token = (await r.json()).access_token;
  return async (method, path) => {
    const res = await fetch(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status}`);
    return res.json();
  };
})();

const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${BASE}/login`);
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
  await page.locator('[data-stream="live"]').waitFor();

  // First rows: a full load of /bots (session restored through the refresh cookie).
  let t = performance.now();
  await page.goto(`${BASE}/bots`);
  await page.locator("tr[data-bot]").first().waitFor();
  const first_rows_ms = performance.now() - t;
  console.log(`first rows: ${first_rows_ms.toFixed(0)} ms`);
  await page.locator('[data-stream="live"]').waitFor();
  const total = await page.evaluate(() => Number(document.querySelector("[data-total]")?.getAttribute("data-total") ?? 0));
  const rows_in_dom = await page.locator("tr[data-bot]").count();

  // State filter → table: every bot is pending; `stopped` matches none, `pending` all.
  t = performance.now();
  await page.getByLabel("Filter by state").selectOption("stopped");
  await page.getByText("No bot matches these filters").waitFor();
  const state_filter_ms = performance.now() - t;
  await page.getByLabel("Filter by state").selectOption("");
  await page.locator("tr[data-bot]").first().waitFor();

  // Name search → table, including the search box's typing pause.
  t = performance.now();
  await page.getByLabel(/Search bots by name/).fill("bench-bot-00420-07");
  await page.waitForFunction(() => {
    const rows = document.querySelectorAll("tr[data-bot]");
    return rows.length === 1 && rows[0]?.getAttribute("data-bot") === "bench-bot-00420-07";
  }, null, { polling: "raf" });
  const name_filter_ms = performance.now() - t;
  await page.getByLabel(/Search bots by name/).fill("");
  await page.locator("tr[data-bot]").nth(5).waitFor();

  // State changes: start a bot whose row is on screen; time until the row says running.
  const visible = await page.locator("tr[data-bot]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-bot")));
  const page1 = await api("GET", "/api/v1/bots?limit=100");
  const byName = new Map(page1.items.map((b) => [b.name, b.id]));
  const state_change_ms = [];
  for (const name of visible.slice(0, CHANGES)) {
    const id = byName.get(name);
    if (!id) continue;
    const started = performance.now();
    await api("POST", `/api/v1/bots/${id}/start`);
    await page.waitForSelector(`tr[data-bot="${name}"][data-state="running"]`, { state: "attached", timeout: 10_000 });
    state_change_ms.push(performance.now() - started);
  }
  console.log(`state changes timed: ${state_change_ms.length}`);
  const result = { first_rows_ms, state_filter_ms, name_filter_ms, total, rows_in_dom, state_change_ms, initial_js_gzip_bytes: initialJsGzip() };
  console.log(`@@ result ${JSON.stringify(result)}`);
} finally {
  await browser.close();
}
