// The panel end to end, as a user's session: a real botmox, a real agent, real bot processes,
// real Chromium. Started by tests/tests/panel (which owns the processes and answers the `@@`
// requests on stdin); every wait is for something the page shows, never a sleep.
//
// env: PANEL_URL, ADMIN_PASSWORD, BOT_SCRIPT (a program that logs a line a second),
//      ARTIFACTS (screenshots), CHROMIUM (default /usr/bin/chromium)
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { axe, launch } from "./browser.mjs";

const BASE = required("PANEL_URL");
const PASSWORD = required("ADMIN_PASSWORD");
const BOT_SCRIPT = required("BOT_SCRIPT");
const ARTIFACTS = process.env.ARTIFACTS ?? "target/artifacts/panel";
const WAIT = 20_000;
mkdirSync(ARTIFACTS, { recursive: true });

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (this script is run by tests/tests/panel)`);
  return value;
}

// The harness protocol: "@@ <request>" on stdout, one answer line on stdin.
const stdin = createInterface({ input: process.stdin });
const answers = stdin[Symbol.asyncIterator]();
async function ask(request) {
  console.log(`@@ ${request}`);
  const { value, done } = await answers.next();
  if (done || !value.startsWith("ok")) throw new Error(`the harness refused "${request}": ${value}`);
  return value.slice(2).trim();
}

let stepNo = 0;
const started = Date.now();
let current = null; // the page a failure is shown from
async function step(name, body) {
  stepNo += 1;
  const t = Date.now();
  try {
    await body();
  } catch (error) {
    console.log(`step ${stepNo} FAILED: ${name}`);
    if (current) {
      await current.screenshot({ path: `${ARTIFACTS}/failure-step-${stepNo}.png`, fullPage: true }).catch(() => undefined);
      const text = await current.evaluate(() => document.body.innerText).catch(() => "");
      console.log(`the page (${current.url()}) said:\n${text.slice(0, 3000)}`);
    }
    throw error;
  }
  console.log(`step ${stepNo} ok (${Date.now() - t} ms): ${name}`);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// The API straight from node, for set-up a test does not click through (e.g. two more bots).
async function apiLogin(username, password) {
  const r = await fetch(`${BASE}/api/v1/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password }) });
  check(r.ok, `API login ${r.status}`);
  const token = (await r.json()).access_token;
  return async (method, path, body) => {
    const res = await fetch(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
    const text = await res.text();
    check(res.ok, `${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

const browser = await launch();
const violations = [];
const cspErrors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "light" });
  const page = await context.newPage();
  current = page;
  page.setDefaultTimeout(WAIT);
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) cspErrors.push(m.text());
  });
  page.on("pageerror", (e) => cspErrors.push(`page error: ${e.message}`));
  const heading = (name) => page.getByRole("heading", { level: 1, name }).waitFor();
  const nav = async (label, title = label) => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: label, exact: true }).click();
    await heading(title);
  };

  await step("an anonymous visit lands on the login page", async () => {
    await page.goto(BASE + "/bots");
    await page.waitForURL(/\/login\?next=%2Fbots/);
    await heading("Sign in to botmox");
  });

  await step("the admin logs in and sees the onboarding checklist, live", async () => {
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await heading("Bots"); // back where they were going
    await nav("Overview");
    await page.getByRole("heading", { name: "Get started" }).waitFor();
    await page.locator('[data-stream="live"]').waitFor();
  });

  let agentName = "";
  await step("pair a real agent with the command the dialog shows; the dialog announces it", async () => {
    await nav("Agents");
    await page.getByRole("button", { name: "Pair agent" }).click();
    await page.getByLabel("Agent name (optional)").fill("e2e-host");
    await page.getByRole("button", { name: "Create pairing code" }).click();
    const line = await page.locator('[data-command-line="Linux / macOS"]').textContent();
    check(/^botmox-agent pair --server http:\/\/\S+ --code [A-Z0-9-]+$/.test(line ?? ""), `command line: ${line}`);
    await ask(`agent ${line}`);
    const connected = page.locator("[data-connected]");
    await connected.waitFor();
    agentName = (await connected.getAttribute("data-connected")) ?? "";
    check(agentName === "e2e-host", `connected agent ${agentName}`);
    await page.getByRole("button", { name: "Done" }).click();
    await page.locator('[data-agent="e2e-host"] [data-status="online"]').waitFor();
  });

  let botUrl = "";
  await step("create a bot through the form: a bad name is refused on its field, then it is created", async () => {
    await nav("Bots");
    await page.getByRole("link", { name: "New bot" }).click();
    await heading("New bot");
    await page.getByLabel("Name").fill("bad name!");
    await page.getByLabel("Program").fill(BOT_SCRIPT);
    await page.getByLabel("Agent").selectOption({ label: "e2e-host (online)" });
    await page.getByRole("button", { name: "Create bot" }).click();
    const nameError = page.locator(".field", { has: page.getByLabel("Name") }).locator(".error");
    await nameError.waitFor();
    check(/letters, digits/.test((await nameError.textContent()) ?? ""), "the name's error explains the rule");
    check((await page.getByLabel("Name").getAttribute("aria-invalid")) === "true", "the name input is marked invalid");
    await page.getByLabel("Name").fill("farmer-01");
    await page.getByLabel("Tags").fill("e2e, farm");
    await page.getByRole("button", { name: "Create bot" }).click();
    await heading("farmer-01");
    botUrl = page.url();
  });

  const botState = (state) => page.locator(`[data-bot-state="${state}"]`).waitFor();
  let pid = 0;
  await step("start it and see it running, then its live log, without a reload", async () => {
    await page.getByRole("button", { name: "Start", exact: true }).click();
    await botState("running");
    pid = Number(await page.locator("[data-pid]").getAttribute("data-pid"));
    check(pid > 0, `pid ${pid}`);
    await page.getByRole("log").getByText("hello from bot").waitFor();
    await page.getByRole("log").getByText(/tick 2/).waitFor();
    // stderr only: the bot's `warn` lines stay, its stdout `tick` lines go.
    await page.getByLabel("Which output").selectOption("stderr");
    await page.getByRole("log").getByText(/tick \d/).first().waitFor({ state: "detached" });
    check((await page.getByRole("log").getByText(/warn \d/).count()) > 0, "stderr lines are shown");
    // Paused, new lines are held back and counted; resumed, they appear.
    await page.getByRole("button", { name: "Pause" }).click();
    await page.getByText(/new lines held/).waitFor();
    await page.getByRole("button", { name: "Resume" }).click();
    await page.getByLabel("Which output").selectOption("all");
    await page.locator("[data-log-status=following]").waitFor();
  });

  await step("kill its process: crashed, then running again with a new pid", async () => {
    process.kill(pid, "SIGKILL");
    await page.waitForFunction(() => ["crashed", "backoff"].includes(document.querySelector("[data-bot-state]")?.getAttribute("data-bot-state") ?? ""));
    await botState("running");
    const again = Number(await page.locator("[data-pid]").getAttribute("data-pid"));
    check(again > 0 && again !== pid, `new pid ${again} after ${pid}`);
  });

  await step("stop it", async () => {
    await page.getByRole("button", { name: "Stop", exact: true }).click();
    await botState("stopped");
  });

  const api = await apiLogin("admin", PASSWORD);
  await step("bulk-stop a filter: the confirmation names the count, every matching bot stops", async () => {
    const agents = await api("GET", "/api/v1/agents");
    const agentId = agents.find((a) => a.name === "e2e-host").id;
    for (const name of ["bulk-a", "bulk-b"]) {
      await api("POST", "/api/v1/bots", { name, agent_id: agentId, exec: { program: BOT_SCRIPT }, tags: ["bulk"], desired_state: "running" });
    }
    await page.goto(`${BASE}/bots?tag=bulk`);
    await heading("Bots");
    // "/" focuses the search box.
    await page.locator("h1").click();
    await page.keyboard.press("/");
    check(await page.getByLabel(/Search bots by name/).evaluate((el) => el === document.activeElement), "/ focuses the search");
    // View settings are remembered across a reload: hide the PID column.
    await page.getByText("View", { exact: true }).click();
    await page.getByRole("checkbox", { name: "PID" }).uncheck();
    await page.reload();
    await heading("Bots");
    await page.locator('[data-bot="bulk-a"][data-state="running"]').waitFor();
    await page.locator('[data-bot="bulk-b"][data-state="running"]').waitFor();
    check((await page.getByRole("columnheader", { name: "Name" }).count()) === 1, "the table has its headers");
    check((await page.getByRole("columnheader", { name: "PID" }).count()) === 0, "the hidden PID column stays hidden");
    await page.getByRole("button", { name: "Stop all" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByText("2 bots").first().waitFor();
    check((await dialog.locator("[data-confirm-count]").getAttribute("data-confirm-count")) === "2", "the confirmation counts 2");
    await dialog.getByRole("button", { name: "Stop 2 bots" }).click();
    await page.locator('[data-bot="bulk-a"][data-state="stopped"]').waitFor();
    await page.locator('[data-bot="bulk-b"][data-state="stopped"]').waitFor();
  });

  await step("drain the agent from its page: its running bot stops and stays wanted; undrain starts it again", async () => {
    const agent = (await api("GET", "/api/v1/agents")).find((a) => a.name === "e2e-host");
    const bot = botUrl.split("/").pop();
    await api("POST", `/api/v1/bots/${bot}/start`);
    await page.goto(botUrl);
    await botState("running");
    await page.goto(`${BASE}/agents/${agent.id}`);
    await heading("e2e-host");
    await page.getByRole("button", { name: "Drain", exact: true }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Drain agent" }).click();
    await page.locator('.page-head [data-status="draining"]').waitFor();
    await page.getByRole("status").filter({ hasText: "Draining" }).waitFor();
    await page.goto(botUrl);
    await botState("stopped");
    check((await api("GET", `/api/v1/bots/${bot}`)).desired_state === "running", "a drain keeps the desired state");
    await page.goto(`${BASE}/agents/${agent.id}`);
    await heading("e2e-host");
    await page.getByRole("button", { name: "Undrain" }).click();
    await page.locator('.page-head [data-status="online"]').waitFor();
    await page.goto(botUrl);
    await botState("running");
    await api("POST", `/api/v1/bots/${bot}/stop`);
    await botState("stopped");
  });

  await step("acknowledge the crash incident", async () => {
    await nav("Incidents");
    const row = page.locator('[data-incident="bot_crashed"]').first();
    await row.getByRole("button", { name: "Acknowledge" }).click();
    await row.getByRole("button", { name: "Acknowledge" }).waitFor({ state: "detached" });
  });

  await step("create an API token: the secret is shown once", async () => {
    await nav("API tokens");
    await page.getByLabel("Name").fill("ci-deploy");
    await page.getByRole("button", { name: "Create token" }).click();
    const secret = (await page.locator("[data-token-secret]").textContent()) ?? "";
    check(secret.startsWith("bmx_"), `secret ${secret.slice(0, 4)}…`);
    await page.getByRole("button", { name: "I have copied it" }).click();
    await page.locator('[data-token="ci-deploy"]').waitFor();
    check(!(await page.content()).includes(secret), "the secret is gone from the page");
  });

  await step("set a secret: its name is listed, its value never shown", async () => {
    await nav("Secrets");
    await page.getByLabel("Name").fill("db-password");
    await page.getByLabel("Value").fill("hunter2-e2e");
    await page.getByRole("button", { name: "Save secret" }).click();
    await page.locator('[data-secret="db-password"]').waitFor();
    check(!(await page.content()).includes("hunter2-e2e"), "the value is not in the page");
  });

  await step("add a viewer", async () => {
    await nav("Users");
    await page.getByLabel("Username").fill("viewer1");
    await page.getByLabel("Password").fill("viewer1-password");
    await page.getByLabel("Role", { exact: true }).selectOption("viewer");
    await page.getByRole("button", { name: "Add user" }).click();
    await page.locator('[data-user-row="viewer1"]').waitFor();
  });

  await step("the session survives a reload (the token was only in memory)", async () => {
    await page.reload();
    await heading("Users");
    await page.locator('[data-user="admin"]').waitFor();
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    check(!/eyJ|bmx_/.test(stored), `no token in storage: ${stored}`);
  });

  await step("a viewer sees no write controls", async () => {
    const viewerContext = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const v = await viewerContext.newPage();
    v.setDefaultTimeout(WAIT);
    await v.goto(BASE + "/login");
    await v.getByLabel("Username").fill("viewer1");
    await v.getByLabel("Password").fill("viewer1-password");
    await v.getByRole("button", { name: "Sign in" }).click();
    await v.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    const navLinks = await v.getByRole("navigation", { name: "Main" }).getByRole("link").allTextContents();
    check(!navLinks.includes("Users") && !navLinks.includes("Secrets"), `viewer nav: ${navLinks}`);
    await v.goto(botUrl);
    await v.getByRole("heading", { level: 1, name: "farmer-01" }).waitFor();
    check(await v.getByRole("button", { name: "Start", exact: true }).isDisabled(), "Start is disabled for a viewer");
    check((await v.getByRole("link", { name: "Edit" }).count()) === 0, "no Edit for a viewer");
    await v.goto(BASE + "/bots");
    await v.getByRole("heading", { level: 1, name: "Bots" }).waitFor();
    check(await v.getByRole("button", { name: "New bot" }).isDisabled(), "New bot is disabled for a viewer");
    check((await v.getByRole("button", { name: "Stop all" }).count()) === 0, "no bulk actions for a viewer");
    await v.goto(BASE + "/agents");
    await v.locator('[data-agent="e2e-host"]').waitFor();
    check(await v.getByRole("button", { name: "Pair agent" }).isDisabled(), "Pair agent is disabled for a viewer");
    check((await v.getByRole("button", { name: "Revoke" }).count()) === 0, "no Revoke for a viewer");
    const host = (await api("GET", "/api/v1/agents")).find((a) => a.name === "e2e-host");
    await v.goto(`${BASE}/agents/${host.id}`);
    await v.getByRole("heading", { level: 1, name: "e2e-host" }).waitFor();
    check((await v.getByRole("button", { name: /Drain|Undrain|Revoke/ }).count()) === 0, "no Drain or Revoke for a viewer");
    await viewerContext.close();
  });

  await step("the event stream recovers after the server restarts", async () => {
    await page.goto(botUrl);
    await heading("farmer-01");
    await page.locator('[data-stream="live"]').waitFor();
    const connects = Number(await page.locator("[data-stream-connects]").getAttribute("data-stream-connects"));
    await ask("restart-server");
    // The old stream broke with the server and a new one is up (its health said so in between).
    await page.locator(`[data-stream="live"][data-stream-connects="${connects + 1}"]`).waitFor({ timeout: 30_000 });
    // A change after the restart reaches the page through the new stream.
    const bot = botUrl.split("/").pop();
    await api("POST", `/api/v1/bots/${bot}/start`);
    await botState("running");
  });

  await step("screenshots (light, dark, 375 px) and axe on every page", async () => {
    const agents = await api("GET", "/api/v1/agents");
    const pages = [
      ["overview", "/", "Overview"],
      ["agents", "/agents", "Agents"],
      ["agent", `/agents/${agents[0].id}`, "e2e-host"],
      ["bots", "/bots", "Bots"],
      ["bot-new", "/bots/new", "New bot"],
      ["bot", new URL(botUrl).pathname, "farmer-01"],
      ["commands", "/commands", "Commands"],
      ["incidents", "/incidents", "Incidents"],
      ["audit", "/audit", "Audit log"],
      ["secrets", "/secrets", "Secrets"],
      ["tokens", "/tokens", "API tokens"],
      ["users", "/users", "Users"],
    ];
    for (const [scheme, width] of [["light", 1280], ["dark", 1280], ["light", 375]]) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.setViewportSize({ width, height: width === 375 ? 812 : 860 });
      const suffix = width === 375 ? "375" : scheme;
      for (const [name, path, title] of pages) {
        await page.goto(BASE + path);
        await heading(title);
        await page.locator(".empty[role=status]", { hasText: /^Loading/ }).waitFor({ state: "detached" });
        await page.screenshot({ path: `${ARTIFACTS}/${name}-${suffix}.png`, fullPage: width !== 375 });
        if (width !== 375) for (const v of await axe(page)) violations.push({ page: `${name} (${scheme})`, ...v });
      }
    }
    const login = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const lp = await login.newPage();
    await lp.goto(BASE + "/login");
    await lp.getByRole("heading", { name: "Sign in to botmox" }).waitFor();
    await lp.screenshot({ path: `${ARTIFACTS}/login-light.png` });
    for (const v of await axe(lp)) violations.push({ page: "login", ...v });
    await login.close();
    check(violations.length === 0, `axe: ${violations.length} serious/critical violations:\n${JSON.stringify(violations, null, 1)}`);
    check(cspErrors.length === 0, `CSP or page errors: ${cspErrors.join("\n")}`);
  });
  console.log(`panel e2e: ${stepNo} steps passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await ask("done");
} finally {
  stdin.close();
  await browser.close();
}
