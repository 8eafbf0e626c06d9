// The candidate's whole path in a real browser: this starts the real
// controller (bin/controller, local provider, simulated interviewer, the
// demo page on) against a fresh database of the private PostgreSQL, and
// drives the demo page in Debian's headless Chromium with Playwright:
// create a position and a candidate, schedule the interview a minute ahead
// in a chosen region (the controller runs with a short PREWARM_LEAD), see
// its VM pre-warmed (machine_prewarmed in the timeline, no process yet),
// start it and see the start boot that VM (warm_start after the pre-warm),
// see ICE connect and the events channel open, type an answer and see it
// and the interviewer's next question in the live transcript (whose first
// stream is cut, to see the page resume it with Last-Event-ID), end the
// interview, see it completed and its insights (scores per competency,
// evidence linked to transcript lines), and check that no sessionvm
// process is left.
// Meanwhile a page on another origin (a tiny static server on another port,
// allowed by CORS_ORIGINS) follows the same live transcript with a plain
// EventSource authenticated by the interview's access token in the URL, and
// a preflighted fetch from it works, while a page on an origin not listed
// gets nothing.
//
// Run it with `make browser-test` (it builds the binaries, starts the test
// PostgreSQL and installs Chromium and the npm packages first; the database
// comes from `scripts/pg.sh url`, the test cluster when PG_CLUSTER=test, as
// the Makefile sets it). Settings: CHROMIUM (default /usr/bin/chromium),
// DEMO_SCREENSHOT (default e2e/out/demo.png; docs/demo.png refreshes the
// README's picture).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.join(root, "e2e", "out");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshot = path.resolve(root, process.env.DEMO_SCREENSHOT || "e2e/out/demo.png");
const sessionVM = path.join(root, "bin", "sessionvm");
const SECOND = 1000;

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / SECOND).toFixed(1).padStart(5)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// eventually polls cond until it returns a truthy value.
async function eventually(what, timeoutMs, cond) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / SECOND}s waiting for ${what}`);
    await sleep(200);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// psql finds the PostgreSQL client: on PATH, else next to the server.
function psqlBinary() {
  for (const dir of (process.env.PATH || "").split(":")) {
    if (dir && fs.existsSync(path.join(dir, "psql"))) return path.join(dir, "psql");
  }
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const p = path.join(base, v, "bin", "psql");
    if (fs.existsSync(p)) return p;
  }
  throw new Error("psql not found: run scripts/pg.sh start (it installs PostgreSQL)");
}

// database creates a fresh database on the private PostgreSQL and returns
// its URL and a function dropping it.
function database() {
  const devURL = new URL(execFileSync(path.join(root, "scripts", "pg.sh"), ["url"], { encoding: "utf8" }).trim());
  const name = `demo_e2e_${process.pid}_${Date.now()}`;
  const admin = new URL(devURL);
  admin.pathname = "/postgres";
  const psql = (sql) => execFileSync(psqlBinary(), [admin.href, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], { stdio: ["ignore", "pipe", "pipe"] });
  psql(`CREATE DATABASE "${name}"`);
  const url = new URL(devURL);
  url.pathname = "/" + name;
  return { url: url.href, drop: () => psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`) };
}

// vmPIDs lists the sessionvm processes of one interview, from /proc: the
// processes running bin/sessionvm whose environment names the session.
function vmPIDs(sessionID) {
  const pids = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readlinkSync(`/proc/${entry}/exe`) !== sessionVM) continue;
      const env = fs.readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (env.includes(`SESSION_ID=${sessionID}`)) pids.push(Number(entry));
    } catch {
      // the process ended meanwhile, or is not ours to read
    }
  }
  return pids;
}

// staticOrigin serves one empty HTML page on its own port: a page of
// another origin than the controller's.
async function staticOrigin() {
  const port = await freePort();
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>customer app</title><p>customer app</p>");
  });
  await new Promise((resolve) => srv.listen(port, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => srv.close(resolve)) };
}

// startController runs bin/controller serve and waits for /readyz.
async function startController(env) {
  const logPath = path.join(outDir, "controller.log");
  const logFile = fs.openSync(logPath, "w");
  const proc = spawn(path.join(root, "bin", "controller"), ["serve"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", logFile, logFile],
  });
  fs.closeSync(logFile);
  let exited = null;
  const exit = new Promise((resolve) => proc.on("exit", (code, signal) => resolve((exited = { code, signal }))));
  const base = `http://${env.LISTEN_ADDR}`;
  await eventually("the controller's /readyz", 60 * SECOND, async () => {
    if (exited) throw new Error(`the controller exited (${JSON.stringify(exited)}); see ${logPath}`);
    try {
      return (await fetch(`${base}/readyz`)).status === 200;
    } catch {
      return false;
    }
  });
  const stop = async () => {
    if (exited) return exited;
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 20 * SECOND);
    const r = await exit;
    clearTimeout(timer);
    return r;
  };
  return { base, pid: proc.pid, logPath, stop };
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  for (const bin of ["controller", "sessionvm"]) {
    assert.ok(fs.existsSync(path.join(root, "bin", bin)), `bin/${bin} is missing: run make build`);
  }
  assert.ok(fs.existsSync(chromiumPath), `${chromiumPath} is missing: scripts/deps.sh chromium installs it (make browser-test runs it)`);

  const cleanups = [];
  const pageErrors = [];
  let controller;
  let page;
  try {
    const db = database();
    cleanups.push(() => db.drop());
    const app = await staticOrigin(); // allowed by CORS_ORIGINS
    cleanups.push(() => app.close());
    const stranger = await staticOrigin(); // not listed
    cleanups.push(() => stranger.close());
    const jwtSecret = crypto.randomBytes(32).toString("base64url");
    const env = {
      CORS_ORIGINS: app.origin,
      DATABASE_URL: db.url,
      LISTEN_ADDR: `127.0.0.1:${await freePort()}`,
      PROVIDER: "local",
      REALTIME: "simulated",
      DEMO: "true",
      JWT_SECRET: jwtSecret,
      SESSIONVM_BIN: sessionVM,
      LOG_FORMAT: "json",
      // The interview is scheduled a minute ahead: with a two-minute lead
      // its VM is pre-warmed on the first pre-warm pass (every 500 ms).
      REGIONS: "local,lab",
      PREWARM_LEAD: "2m",
      RECONCILE_INTERVAL: "500ms",
    };
    controller = await startController(env);
    cleanups.push(() => controller.stop());
    log(`controller up at ${controller.base} (pid ${controller.pid}, database ${new URL(db.url).pathname.slice(1)})`);
    const token = execFileSync(path.join(root, "bin", "controller"),
      ["token", "-tenant", crypto.randomUUID(), "-role", "recruiter", "-ttl", "1h"],
      { env: { ...process.env, JWT_SECRET: jwtSecret }, encoding: "utf8" }).trim();

    const browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      // A new empty profile is Playwright's own temporary user data dir.
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        "--allow-loopback-in-peer-connection",
      ],
    });
    cleanups.push(() => browser.close());
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, permissions: ["microphone"] });
    page = await context.newPage();
    page.on("pageerror", (err) => pageErrors.push(`uncaught: ${err.message}`));
    const streams = []; // Last-Event-ID of each transcript stream request
    page.on("request", (req) => {
      if (req.url().endsWith("/transcript/stream")) streams.push(req.headers()["last-event-id"] || "");
    });
    // The page's first transcript stream breaks after its first segment, as
    // a network may: the page must resume with Last-Event-ID.
    await page.addInitScript(() => {
      const realFetch = window.fetch;
      let broken = false;
      window.fetch = async (input, init) => {
        const res = await realFetch(input, init);
        if (broken || !String(input).endsWith("/transcript/stream") || !res.ok) return res;
        broken = true;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        const chunks = [];
        for (let seen = ""; !/event: segment\ndata: .*\n\n/.test(seen);) {
          const { value, done } = await reader.read();
          if (done) break;
          chunks.push(value);
          seen += decoder.decode(value, { stream: true });
        }
        reader.cancel();
        const body = new ReadableStream({ start(c) { chunks.forEach((x) => c.enqueue(x)); c.close(); } });
        return new Response(body, { status: res.status, headers: res.headers });
      };
    });
    page.on("console", (msg) => {
      if (msg.type() === "error") pageErrors.push(`console: ${msg.text()}`);
    });
    const shows = (selector, re, timeout = 60 * SECOND) => page.locator(selector).filter({ hasText: re }).first().waitFor({ timeout });

    // The recruiter: token, position, candidate, interview.
    await page.goto(`${controller.base}/demo`);
    assert.equal(new URL(page.url()).pathname, "/demo/", "/demo redirects to /demo/");
    await page.fill("#token", "not-a-token");
    await page.click("#save-token");
    await page.click("#create-position");
    await shows("#error", /POST \/v1\/positions: 401 unauthenticated: .*paste a valid recruiter token/);
    await page.fill("#token", token);
    await page.click("#save-token");
    await shows("#token-state", /saved/);
    await page.fill("#position-title", "Backend engineer");
    const rows = page.locator("#competencies tr");
    assert.equal(await rows.count(), 2, "two competency rows to start with");
    await rows.nth(0).locator(".name").fill("Go");
    await rows.nth(0).locator(".weight").fill("3");
    await rows.nth(1).locator(".name").fill("PostgreSQL");
    await rows.nth(1).locator(".weight").fill("2");
    await page.click("#create-position");
    await shows("#position-out", /✓ Backend engineer .*Go 60%, PostgreSQL 40%/);
    await page.fill("#candidate-name", "Grace Hopper");
    await page.fill("#candidate-email", "grace@example.com");
    await page.click("#create-candidate");
    await shows("#candidate-out", /✓ Grace Hopper/);
    // Scheduled a minute ahead in the second region: its VM is pre-warmed
    // (created, not booted: no process) before anyone starts it.
    await shows("#prewarm-hint", /pre-warms .* up to 2 min before it \(PREWARM_LEAD\)/);
    assert.deepEqual(await page.$$eval("#region option", (os) => os.map((o) => o.value)), ["local", "lab"],
      "the page offers the controller's REGIONS");
    await page.fill("#schedule-in", "1");
    await page.selectOption("#region", "lab");
    await page.click("#schedule");
    await shows("#status", /^scheduled$/);
    const id = (await page.textContent("#interview-id")).trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    await shows("#scheduled", /^for \d\d:\d\d:\d\d in lab$/);
    await shows("#interview-out", /✓ Interview .* scheduled for \d\d:\d\d:\d\d in lab for Grace Hopper/);
    log(`position, candidate and interview ${id} (a minute ahead, region lab) created through the page`);
    await shows("#prewarmed", /^at \d\d:\d\d:\d\d: its VM is created, not booted/, 30 * SECOND);
    await shows("#timeline", /scheduled → scheduled \(machine_prewarmed\)/);
    await shows("#machine", / · created$/);
    assert.equal(vmPIDs(id).length, 0, "a pre-warmed local VM runs no process");
    const planned = await (await fetch(`${controller.base}/v1/interviews/${id}`, { headers: { Authorization: `Bearer ${token}` } })).json();
    assert.equal(planned.region, "lab");
    assert.ok(planned.scheduled_at && planned.prewarmed_at, `scheduled_at and prewarmed_at are set: ${JSON.stringify(planned)}`);
    log(`pre-warmed at ${planned.prewarmed_at} for ${planned.scheduled_at}: machine ${(await page.textContent("#machine")).trim()}, no process`);

    // The candidate joins: the pre-warmed VM boots, ICE, events channel.
    await page.click("#start");
    await shows("#connection", /^connected/);
    await shows("#channel", /^open$/);
    await shows("#status", /^in_progress$/);
    await shows("#mic", /^on/);
    await shows("#machine", /^interview-hybrid-[0-9a-f]{8}-[0-9a-f]{12} · /);
    const pids = vmPIDs(id);
    assert.equal(pids.length, 1, `one sessionvm process for the interview, found ${pids.length}`);
    const timeline = await page.locator("#timeline li").allTextContents();
    const prewarmedAt = timeline.findIndex((t) => /scheduled → scheduled \(machine_prewarmed\)/.test(t));
    const warmStart = timeline.findIndex((t) => /scheduled → provisioning \(warm_start\)/.test(t));
    assert.ok(prewarmedAt >= 0 && warmStart > prewarmedAt, `the timeline shows the pre-warm, then the warm start: ${JSON.stringify(timeline)}`);
    log(`ICE connected, events channel open, machine ${(await page.textContent("#machine")).trim()} (pid ${pids[0]})`);

    // The conversation: the first question, an answer, the next question.
    await shows("#transcript li.interviewer", /Tell me about a project where Go mattered/);
    await shows("#speaking", /Interviewer: .*Go mattered/);
    const answer = "I have written Go for six years, mostly network services.";
    await page.fill("#answer", answer);
    await page.press("#answer", "Enter");
    await shows("#transcript li.candidate", answer);
    await shows("#transcript li.interviewer", /Thank you\. What is the hardest Go problem you have solved/);
    const lines = await page.locator("#transcript li").evaluateAll((lis) => lis.map((li) => `${li.dataset.seq} ${li.className}`));
    assert.deepEqual(lines.slice(0, 3), ["1 interviewer", "2 candidate", "3 interviewer"], "transcript in conversation order, no line twice");
    assert.ok(streams.length >= 2 && streams[0] === "" && Number(streams[1]) >= 1,
      `the broken transcript stream was resumed with Last-Event-ID (requests: ${JSON.stringify(streams)})`);
    await shows("#stream-state", /^live$/);
    log(`the answer and the interviewer's next question are in the live transcript (stream resumed with Last-Event-ID: ${streams[1]})`);

    // Another origin: the customer's own app follows the live transcript
    // with a plain EventSource and the interview's access token in the URL.
    const startAnswer = await fetch(`${controller.base}/v1/interviews/${id}/start?wait=0`, {
      method: "POST", headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(startAnswer.status, 200, "start of a running interview answers its connect info again");
    const accessToken = (await startAnswer.json()).connect.access_token;
    const follow = async (origin) => {
      const p = await context.newPage();
      await p.goto(`${origin}/`);
      await p.evaluate(({ base, id, accessToken }) => {
        window.got = { segments: [], ended: false, errors: 0, opened: false };
        const es = new EventSource(`${base}/v1/interviews/${id}/transcript/stream?access_token=${encodeURIComponent(accessToken)}`);
        es.onopen = () => { window.got.opened = true; };
        es.onerror = () => { window.got.errors++; if (window.got.ended) es.close(); };
        es.addEventListener("segment", (ev) => window.got.segments.push({ id: ev.lastEventId, seg: JSON.parse(ev.data) }));
        es.addEventListener("end", () => { window.got.ended = true; es.close(); });
      }, { base: controller.base, id, accessToken });
      return p;
    };
    const appPage = await follow(app.origin);
    const got = await eventually("the other origin's EventSource to receive the first three segments", 30 * SECOND,
      async () => { const g = await appPage.evaluate(() => window.got); return g.segments.length >= 3 && g; });
    assert.deepEqual(got.segments.slice(0, 3).map((s) => s.id), ["1", "2", "3"], "segments in order, id = seq");
    assert.equal(got.segments[1].seg.speaker, "candidate", "the candidate's answer arrives on the other origin");
    // A preflighted request (Authorization header) from the allowed origin.
    const viaCORS = await appPage.evaluate(async ({ base, id, token }) => {
      const r = await fetch(`${base}/v1/interviews/${id}`, { headers: { Authorization: `Bearer ${token}` } });
      return { status: r.status, requestID: r.headers.get("X-Request-Id"), body: await r.json() };
    }, { base: controller.base, id, token });
    assert.equal(viaCORS.status, 200);
    assert.equal(viaCORS.body.id, id);
    assert.ok(viaCORS.requestID, "X-Request-Id is exposed to the other origin");
    // An origin that is not listed gets nothing.
    const strangerPage = await follow(stranger.origin);
    await eventually("the unlisted origin's EventSource to fail", 30 * SECOND,
      async () => (await strangerPage.evaluate(() => window.got)).errors > 0);
    const strangerGot = await strangerPage.evaluate(() => window.got);
    assert.equal(strangerGot.segments.length, 0, "an unlisted origin reads no segment");
    assert.equal(strangerGot.opened, false, "an unlisted origin's stream never opens");
    await strangerPage.close();
    const controllerLog = fs.readFileSync(controller.logPath, "utf8");
    assert.ok(!controllerLog.includes(accessToken), "the access token is not in the controller's log");
    log(`a page on ${app.origin} follows the live transcript with EventSource (?access_token=), ${stranger.origin} is refused`);

    // The end: completed, and no VM left.
    await page.click("#end");
    await shows("#status", /^completed$/);
    await shows("#end-reason", /ended_by_user/);
    await shows("#stream-state", /^complete$/);
    await shows("#timeline", /ending → completed/);
    await shows("#notice", /Interview ended: completed/);
    assert.ok(await page.isDisabled("#answer"), "the answer box is off once the interview ended");
    log("ended: completed (ended_by_user), transcript complete");

    // The insights: the simulated scorer's analysis appears, one score per
    // competency, and every quoted piece of evidence links to a transcript
    // line that holds it verbatim.
    await shows("#insights-state", /\(ready\)/);
    await shows("#insights-overall", /Overall \d\.\d\d \/ 5 .*simulated scorer/);
    const scored = await page.$$eval("#insights .competency strong", (els) => els.map((e) => e.textContent));
    assert.equal(scored.length, 2, `one score per competency: ${scored}`);
    for (const [i, name] of ["Go", "PostgreSQL"].entries()) {
      assert.match(scored[i], new RegExp(`^${name} \\(weight \\d+\\): [1-5]/5$`));
    }
    const quotes = await page.$$eval("#insights .evidence", (els) => els.map((a) => {
      const seg = document.querySelector(a.getAttribute("href"));
      return { quote: a.textContent.replace(/^“(.*)” \(line \d+\)$/s, "$1"), line: seg ? seg.textContent : null };
    }));
    for (const q of quotes) {
      assert.ok(q.line !== null, `the evidence links to a transcript line: ${JSON.stringify(q)}`);
      assert.ok(q.line.includes(q.quote), `the quote is verbatim in its line: ${JSON.stringify(q)}`);
    }
    await shows("#timeline", /completed → completed \(insights_ready\)/);
    log(`insights ready: ${scored.join("; ")}; ${quotes.length} quote(s), each in its transcript line`);
    await eventually("the other origin's EventSource to receive the end event", 30 * SECOND,
      async () => (await appPage.evaluate(() => window.got)).ended);
    await appPage.close();
    await eventually("no sessionvm process of the interview", 30 * SECOND, () =>
      vmPIDs(id).length === 0 && pids.every((p) => !fs.existsSync(`/proc/${p}`)));
    log("no sessionvm process left");

    assert.equal(await page.isHidden("#error"), true, `no error shown; the page shows: ${await page.textContent("#error")}`);
    const csp = pageErrors.filter((e) => /Content Security Policy/i.test(e));
    assert.deepEqual(csp, [], "no Content-Security-Policy violation");
    assert.deepEqual(pageErrors.filter((e) => e.startsWith("uncaught")), [], "no uncaught error in the page");

    await page.locator("#transcript").evaluate((el) => { el.scrollTop = 0; });
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    log(`screenshot: ${path.relative(root, screenshot)}`);
  } catch (err) {
    if (page) {
      await page.screenshot({ path: path.join(outDir, "failure.png"), fullPage: true }).catch(() => {});
    }
    console.error(`\nFAIL: ${err.stack || err}`);
    if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join("\n  ")}`);
    if (controller) {
      const lines = fs.readFileSync(controller.logPath, "utf8").trimEnd().split("\n");
      console.error(`controller log (last 40 lines of ${controller.logPath}):\n${lines.slice(-40).join("\n")}`);
    }
    process.exitCode = 1;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        console.error(`cleanup: ${err.message}`);
        process.exitCode = 1;
      }
    }
  }
  if (!process.exitCode) log("PASS: the demo page's whole path in headless Chromium");
}

await main();
