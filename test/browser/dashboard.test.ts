import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import type { RetentionFloor } from "../../src/projections/views.js";
import { parseTokens } from "../../src/server/auth.js";
import { type RunningServer, startServer } from "../../src/server/start-server.js";
import {
  type DashboardHistory,
  historyClock,
  historyLedgerOptions,
  historyStore,
  recordDashboardHistory,
  UNREACHABLE,
} from "../support/dashboard-history.js";
import { BACKEND } from "../support/database.js";
import { openTestLedger } from "../support/ledger.js";

/**
 * The dashboard as a person sees it: Debian's Chromium (driven by playwright-core, no browser
 * download) opens the page served by the real server over a demo-like history, is asked for a
 * token, and shows the datasets, runs, winners and losers, the pending item's error and the
 * floor's expiry. Saves a full-page screenshot of the dataset page to test-results/dashboard.png
 * (and to docs/dashboard.png with UPDATE_DOCS_SCREENSHOT=1), and of the overview and a run beside it.
 */
const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

if (!haveChromium && !process.env.CI) {
  console.warn(
    `\n*** SKIPPED test/browser/dashboard.test.ts: ${CHROMIUM} is missing, so the dashboard was NOT tested in a browser.\n*** Install it with \`apt-get install chromium\` (.ci/run does; with CI set this test fails instead of skipping).\n`,
  );
}

if (!haveChromium && process.env.CI) {
  throw new Error(
    `${CHROMIUM} is missing: CI must run the dashboard's browser test (apt-get install chromium)`,
  );
}

/** Where the screenshots go (test-results/ is not committed; docs/dashboard.png is). */
function shotPath(name: string): string {
  mkdirSync(join(repo, "test-results"), { recursive: true });
  return join(repo, "test-results", name);
}

const READ_TOKEN = "dashboard-read-0b7c4f";
const ADMIN_TOKEN = "dashboard-admin-93aa1e";
/** A failure reason with markup in it: the page must show it as text, never as HTML. */
const HOSTILE = `<img src=x onerror="document.body.dataset.injected='yes'"> writer crashed`;

describe.runIf(haveChromium)(`dashboard in a real browser (${BACKEND})`, () => {
  let t: Awaited<ReturnType<typeof openTestLedger>>;
  let history: DashboardHistory;
  let floors: RetentionFloor[];
  let server: RunningServer;
  let baseUrl: string;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    const clock = historyClock();
    const store = historyStore();
    t = await openTestLedger(historyLedgerOptions(clock, store, openObjectStore));
    history = await recordDashboardHistory(t.ledger, { dir: t.dir, root: t.root, clock, store });
    await t.ledger.startRun({ datasetId: history.datasetId, numShards: 1, runId: "run-0004" });
    await t.ledger.failRun("run-0004", HOSTILE);
    floors = await t.ledger.retentionFloors(history.datasetId);

    const tokens = parseTokens(
      JSON.stringify({
        tokens: [
          { token: READ_TOKEN, scope: "read", datasets: "*" },
          { token: ADMIN_TOKEN, scope: "admin", datasets: "*" },
        ],
      }),
      "test",
    );
    server = await startServer(t.ledger, { listen: "127.0.0.1:0", tokens });
    baseUrl = server.url;
    // The page never runs an audit; an operator did, in another process (`shardledger audit`):
    // this server has run none, and the page shows the one the ledger recorded.
    await t.ledger.audit();

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await t?.close();
  });

  it("asks for a token, refuses a wrong one, and keeps the read token for the tab", async () => {
    await page.goto(`${baseUrl}/`);
    await expect
      .poll(() => page.getByRole("heading", { name: "This server needs a token" }).isVisible())
      .toBe(true);
    await page.getByLabel("Read token").fill("not-a-token");
    await page.getByRole("button", { name: "Use token" }).click();
    await page.getByText("That token was not accepted (401)").waitFor();

    await page.getByLabel("Read token").fill(READ_TOKEN);
    await page.getByRole("button", { name: "Use token" }).click();
    await page.getByRole("heading", { name: "Overview", level: 1 }).waitFor();
    expect(await page.getByRole("heading", { name: "This server needs a token" }).isVisible()).toBe(false);
    expect(await page.evaluate("sessionStorage.getItem('shardledger.token')")).toBe(READ_TOKEN);

    // A reload in the same tab does not ask again.
    await page.reload();
    await page.getByRole("heading", { name: "Overview", level: 1 }).waitFor();
    expect(await page.getByRole("heading", { name: "This server needs a token" }).isVisible()).toBe(false);
  });

  it("shows each dataset with its current run, runs by status, pending cleanup and the last audit", async () => {
    await page.goto(`${baseUrl}/#/`);
    const datasets = page.getByRole("table", { name: "Datasets and their current runs" });
    await datasets.waitFor();
    const row = datasets.getByRole("row", { name: new RegExp(history.datasetId) });
    expect(await row.getByRole("link", { name: history.datasetId }).isVisible()).toBe(true);
    expect(await row.getByRole("link", { name: history.currentRunId }).isVisible()).toBe(true);
    expect(await row.innerText()).toContain("1 succeeded, 2 failed, 1 pruned");

    const pending = page.getByRole("table", { name: "Pending cleanup, every dataset" });
    expect(await pending.innerText()).toContain(`ECONNREFUSED: ${UNREACHABLE}`);
    expect(await pending.innerText()).toContain(history.loserUrl);

    const audit = page.getByRole("region", { name: "Last audit" });
    expect(await audit.innerText()).toContain("projections match the log");
    expect(await audit.innerText()).toContain("another process");
    // A plain audit: the page says the archives were not checked, and how to check them.
    expect(await audit.innerText()).toMatch(
      /archives\s+not checked \(shardledger audit --deep checks them\)/,
    );
    await page.screenshot({ path: shotPath("dashboard-overview.png"), fullPage: true });

    // An audit through this server (POST /v1/audit needs only read) is newer: shown as its own.
    const ran = await fetch(`${baseUrl}/v1/audit`, {
      method: "POST",
      headers: { authorization: `Bearer ${READ_TOKEN}` },
    });
    expect(ran.status).toBe(200);
    const { events } = (await ran.json()) as { events: number };
    await page.reload();
    await expect.poll(async () => (await audit.innerText()).includes("another process")).toBe(false);
    expect(await audit.innerText()).toContain(`events replayed\n${events}`);
  });

  it("shows a dataset's runs by status, its failed runs in the floor with their expiry, pending errors and rollups", async () => {
    await page.getByRole("link", { name: history.datasetId, exact: true }).first().click();
    await page.getByRole("heading", { name: `Dataset ${history.datasetId}`, level: 1 }).waitFor();
    expect(page.url()).toBe(`${baseUrl}/#/datasets/${history.datasetId}`);

    const counts = page.getByRole("table", { name: "Runs by status" });
    const count = async (status: string) =>
      (
        await counts
          .getByRole("row", { name: new RegExp(`^${status}\\b`) })
          .getByRole("cell")
          .innerText()
      ).trim();
    expect(await count("STARTED")).toBe("0");
    expect(await count("SUCCEEDED")).toBe("1");
    expect(await count("FAILED")).toBe("2");
    expect(await count("PRUNED")).toMatch(/^1\b/);

    const runs = page.getByRole("table", { name: `Runs of ${history.datasetId}, newest first` });
    const failed = runs.getByRole("row", { name: new RegExp(history.failedRunId) });
    expect(await failed.innerText()).toContain("FAILED");
    expect(await failed.innerText()).toContain("coverage");
    // Markup in a failure reason is text on the page, never an element.
    expect(await runs.getByRole("row", { name: /run-0004/ }).innerText()).toContain(HOSTILE);
    expect(await page.locator("img").count()).toBe(0);
    expect(await page.evaluate("document.body.dataset.injected")).toBeUndefined();

    const floor = page.getByRole("table", {
      name: "Inside the failed-retention floor, with when each expires",
    });
    for (const f of floors) {
      const expires = `${f.protectedUntil.toISOString().slice(0, 10)} ${f.protectedUntil.toISOString().slice(11, 19)}Z`;
      const line = await floor.getByRole("row", { name: new RegExp(f.runId) }).innerText();
      expect(line).toContain(expires);
      expect(line).toMatch(/in 6d 23h/);
    }
    expect(floors.map((f) => f.runId).sort()).toEqual([history.failedRunId, "run-0004"]);

    const pending = page.getByRole("table", { name: `Pending cleanup of ${history.datasetId}` });
    expect(await pending.innerText()).toContain(UNREACHABLE);
    expect(await pending.innerText()).toMatch(/in (9|10)m/);

    const rollups = page.getByRole("table", { name: "What gc pruned, by reason" });
    expect(await rollups.getByRole("row", { name: /failed_retention/ }).innerText()).toMatch(
      /failed_retention\s+1\s/,
    );

    const shot = shotPath("dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.UPDATE_DOCS_SCREENSHOT === "1") copyFileSync(shot, join(repo, "docs", "dashboard.png"));
    expect(existsSync(shot)).toBe(true);
  });

  it("shows one run's shards, winners and losers by url", async () => {
    await page
      .getByRole("table", { name: `Runs of ${history.datasetId}, newest first` })
      .getByRole("link", { name: history.currentRunId })
      .click();
    await page.getByRole("heading", { name: `Run ${history.currentRunId}`, level: 1 }).waitFor();
    expect(page.url()).toBe(`${baseUrl}/#/runs/${history.currentRunId}`);

    const winners = await page.getByRole("table", { name: "Winners (what the manifest lists)" }).innerText();
    expect(history.winnerUrls).toHaveLength(3);
    for (const url of history.winnerUrls) expect(winners).toContain(url);
    const losers = await page
      .getByRole("table", { name: "Losers (attempts that did not win; cleanup deletes their data)" })
      .innerText();
    expect(losers).toContain(history.loserUrl);
    for (const url of history.winnerUrls) expect(losers).not.toContain(url);

    const shards = page.getByRole("table", { name: "Shards: attempts and the winner of each" });
    expect(await shards.getByRole("row").count()).toBe(1 + 3);
    const retried = await shards.getByRole("row", { name: /^1\b/ }).innerText();
    expect(retried).toContain("#0 CLEANUP_PENDING, #1 WINNER, #2 CLEANUP_PENDING");
    await page.screenshot({ path: shotPath("dashboard-run.png"), fullPage: true });

    // A run that does not exist says so (the server's 404 message), with a way back.
    await page.goto(`${baseUrl}/#/runs/no-such-run`);
    await page.getByRole("heading", { name: "Not found", level: 1 }).waitFor();
    expect(await page.locator("main").innerText()).toContain("no-such-run");
    expect(await page.getByRole("link", { name: "Back to the datasets" }).isVisible()).toBe(true);
  });

  it("refreshes itself without rebuilding what did not change, and shows new data when it did", async () => {
    await page.goto(`${baseUrl}/#/datasets/${history.datasetId}`);
    const rollups = page.getByRole("region", { name: "Pruned (rollups)" });
    await rollups.waitFor();
    // (Strings, not functions: this file is type-checked without the DOM's types.)
    const rollupsNode = `document.querySelector('main > section[aria-labelledby="h-rollups"]')`;
    expect(await page.evaluate(`${rollupsNode}.marked = true`)).toBe(true);
    const before = await page.locator("#updated").innerText();
    expect(before).toMatch(/^updated \d\d:\d\d:\d\d$/);

    // A new run appears on the next refresh, without a reload.
    await t.ledger.startRun({ datasetId: history.datasetId, numShards: 2, runId: "run-0005" });
    await page
      .getByRole("table", { name: `Runs of ${history.datasetId}, newest first` })
      .getByRole("link", { name: "run-0005" })
      .waitFor({ timeout: 30_000 });
    expect(await page.locator("#updated").innerText()).not.toBe(before);
    // The rollups did not change: the very same element is still on the page (no flicker).
    expect(await page.evaluate(`${rollupsNode}.marked`)).toBe(true);
  });

  it("keeps showing what it had, and says why, when the server goes away", async () => {
    const runs = page.getByRole("table", { name: `Runs of ${history.datasetId}, newest first` });
    await runs.waitFor();
    await server.close();
    await page
      .getByText(/Could not refresh \(.*\); showing what was loaded before, retrying every 5 s\./)
      .waitFor({
        timeout: 30_000,
      });
    expect(await runs.getByRole("link", { name: history.currentRunId }).isVisible()).toBe(true);
  });
});
