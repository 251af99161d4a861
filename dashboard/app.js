// shardledger's read-only dashboard: a plain ES module, no framework, no build step (it ships as is
// in the npm package and `shardledger serve` serves it at / and /ui/*). It only ever calls GET
// endpoints of the v1 HTTP API (docs/dashboard.md). Every piece of data reaches the page as text
// (textContent / text nodes, never innerHTML), so a run id or an error message cannot inject markup.

const TOKEN_KEY = "shardledger.token";
const REFRESH_MS = 5_000;
/** Rows shown per table before "… and N more" (a run may have 100,000 shards). */
const MAX_ROWS = 500;

/** The API lives beside the page: `/` or `/ui/…` → `/v1/…` (also under a proxy's path prefix). */
const base = location.pathname.replace(/(?:ui\/)?[^/]*$/, "");

class HttpError extends Error {
  /**
   * @param {number} status
   * @param {{ error?: { code?: string; message?: string } } | null} body
   */
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code ?? null;
  }
}

/** GET one endpoint of the API (path without the leading slash, e.g. `v1/status`). */
async function get(path) {
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}${path}`, { headers, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

/** GET that answers `null` on 404 (the last audit before any audit ran). */
async function getOrNull(path) {
  try {
    return await get(path);
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) return null;
    throw e;
  }
}

const seg = (s) => encodeURIComponent(s);

// ---------------------------------------------------------------------------------------------
// DOM helpers: every string child becomes a text node.

/**
 * @param {string} tag
 * @param {Record<string, unknown> | null} [attrs]
 * @param {...unknown} children
 */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.append(c);
    else el.append(document.createTextNode(String(c)));
  }
}

const link = (href, text) => h("a", { href }, text);
const runLink = (runId) => h("a", { href: `#/runs/${seg(runId)}`, class: "id" }, runId);
const datasetLink = (datasetId) => h("a", { href: `#/datasets/${seg(datasetId)}`, class: "id" }, datasetId);
const code = (text) =>
  text === null || text === undefined ? h("span", { class: "none" }, "—") : h("code", null, text);

/** A status as a labelled badge (the word is always there; colour only repeats it). */
const badge = (status) => h("span", { class: `badge s-${String(status).toLowerCase()}` }, status);

const pad = (n) => String(n).padStart(2, "0");

/** An ISO date as `2026-11-30 16:31:05Z` in a <time>, with "(in 6d 23h)" / "(3m ago)" when asked. */
function time(iso, { relative = false } = {}) {
  if (iso === null || iso === undefined) return h("span", { class: "none" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const text = `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 19)}Z`;
  return h("time", { datetime: d.toISOString() }, text, relative ? ` (${fromNow(d)})` : null);
}

/**
 * "in 6d 23h", "3m ago", "in under a minute": to the minute, because a section is rebuilt only
 * when its data changed or a new minute began (see `commit`).
 */
function fromNow(date) {
  const ms = date.getTime() - Date.now();
  if (Math.abs(ms) < 60_000) return ms >= 0 ? "in under a minute" : "under a minute ago";
  const text = duration(Math.abs(ms), { minutes: true });
  return ms > 0 ? `in ${text}` : `${text} ago`;
}

/** The two largest units of a length of time: "6d 23h", "9m", "45s" (no seconds when `minutes`). */
function duration(ms, { minutes = false } = {}) {
  const units = [[86_400, "d"], [3_600, "h"], [60, "m"], ...(minutes ? [] : [[1, "s"]])];
  const parts = [];
  let rest = Math.floor(ms / 1000);
  for (const [size, unit] of units) {
    const n = Math.floor(rest / size);
    if (n > 0 || (parts.length === 0 && size === units[units.length - 1][0])) parts.push(`${n}${unit}`);
    rest -= n * size;
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

/** A policy duration: the text the CLI's JSON adds (`"7d"`), else formatted from the milliseconds. */
function policy(policies, name) {
  const text = policies?.[name];
  if (typeof text === "string") return text;
  const ms = policies?.[`${name}Ms`];
  return typeof ms === "number"
    ? ms % 86_400_000 === 0 && ms > 0
      ? `${ms / 86_400_000}d`
      : duration(ms)
    : "—";
}

/**
 * A table with a caption, column headers, and the first column as row headers.
 *
 * @param {string} caption
 * @param {string[]} columns
 * @param {unknown[][]} rows
 * @param {{ empty?: string; total?: number; className?: string }} [options]
 */
function table(caption, columns, rows, options = {}) {
  if (rows.length === 0) return h("p", { class: "empty" }, options.empty ?? `${caption}: none.`);
  const shown = rows.slice(0, MAX_ROWS);
  const total = options.total ?? rows.length;
  const t = h(
    "table",
    { class: options.className ?? null },
    h("caption", null, caption, total > shown.length ? ` (first ${shown.length} of ${total})` : null),
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        columns.map((c) => h("th", { scope: "col" }, c)),
      ),
    ),
    h(
      "tbody",
      null,
      shown.map((cells) =>
        h(
          "tr",
          null,
          cells.map((cell, i) => (i === 0 ? h("th", { scope: "row" }, cell) : h("td", null, cell))),
        ),
      ),
    ),
  );
  return h("div", { class: "scroll" }, t);
}

/** Key/value facts as a description list. */
function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
  );
}

const section = (id, title, ...body) =>
  h("section", { "aria-labelledby": `h-${id}` }, h("h2", { id: `h-${id}` }, title), body);

// ---------------------------------------------------------------------------------------------
// Views. Each returns { title, sections: [{ key, data, build, live? }] }; a section is rebuilt only
// when its data changed (or, for a `live` one showing relative times, a minute passed), so the refresh does not flicker, keeps focus, keeps the
// scroll position and keeps a text selection.

const RUN_STATUSES = ["STARTED", "PUBLISHING", "SUCCEEDED", "FAILED"];
const LOSER_STATUSES = new Set(["LOSER", "CLEANUP_PENDING", "DELETED"]);

function runsByStatusCells(runs) {
  return [
    ["started", runs.started],
    ["publishing", runs.publishing],
    ["succeeded", runs.succeeded],
    ["failed", runs.failed],
    ["pruned", runs.pruned],
  ]
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`)
    .join(", ");
}

function pendingSummary(p) {
  if (p.total === 0) return "none";
  const parts = [`${p.total} total`, `${p.dueNow} due now`, `${p.waiting} waiting`];
  if (p.exhausted > 0) parts.push(`${p.exhausted} exhausted (needs retry-failed)`);
  return parts.join(", ");
}

function pendingTable(caption, items, { withDataset }) {
  return table(
    caption,
    [
      "URL",
      ...(withDataset ? ["Dataset"] : []),
      "Run",
      "Reason",
      "State",
      "Tries",
      "Last error",
      "Last failure",
      "Next retry",
    ],
    items.map((p) => [
      code(p.url),
      ...(withDataset ? [datasetLink(p.datasetId)] : []),
      runLink(p.runId),
      p.reason,
      badge(p.state),
      String(p.tries),
      p.lastErrorCode === null && p.lastErrorMessage === null
        ? h("span", { class: "none" }, "—")
        : h(
            "span",
            { class: "error-text" },
            [p.lastErrorCode, p.lastErrorMessage].filter((x) => x !== null && x !== "").join(": "),
            p.transient === true ? " (transient)" : p.transient === false ? " (permanent)" : null,
          ),
      time(p.lastFailureAt),
      p.state === "exhausted" ? "exhausted: run retry-failed" : time(p.nextRetryAt, { relative: true }),
    ]),
    { empty: "Nothing is waiting for cleanup." },
  );
}

/**
 * The last audit to show: the one this server ran (with its differences), else the one the ledger
 * recorded, run by the CLI, the library or another server (with only how many differences it
 * found), whichever is newer. Every dataset's status carries that same record of the whole log.
 */
function lastAudit(ranHere, statuses) {
  const recorded = statuses.map((s) => s.lastAudit).find((a) => a != null) ?? null;
  if (ranHere === null) return recorded === null ? null : { ...recorded, recorded: true };
  if (recorded !== null && Date.parse(recorded.at) > Date.parse(ranHere.at))
    return { ...recorded, recorded: true };
  return ranHere;
}

function auditSection(audit) {
  if (audit === null) {
    return section("audit", "Last audit", h("p", { class: "empty" }, "No audit recorded yet."));
  }
  const diffs = Array.isArray(audit.differences) ? audit.differences : [];
  const differences = Array.isArray(audit.differences) ? diffs.length : Number(audit.differences);
  // A deep audit checks the archives too: this server's answer lists their problems, the recorded
  // one counts them (null: that audit did not look).
  const archiveProblems = audit.archives
    ? audit.archives.problems.length
    : audit.recorded && audit.deep
      ? Number(audit.archiveProblems ?? 0)
      : null;
  const found = [`${differences} difference(s)`];
  if (archiveProblems) found.push(`${archiveProblems} archive problem(s)`);
  return section(
    "audit",
    "Last audit",
    facts([
      ["when", time(audit.at, { relative: true })],
      ["events replayed", String(audit.events)],
      [
        "result",
        audit.match
          ? h("span", { class: "ok" }, "projections match the log")
          : h("span", { class: "error-text" }, `did not match: ${found.join(", ")}`),
      ],
      [
        "archives",
        archiveProblems === null
          ? "not checked (shardledger audit --deep checks them)"
          : archiveProblems === 0
            ? "checked"
            : h("span", { class: "error-text" }, `${archiveProblems} problem(s)`),
      ],
      ...(audit.recorded
        ? [
            [
              "run by",
              "another process (the CLI, the library or another server); `shardledger audit --json` lists any differences",
            ],
          ]
        : []),
    ]),
    diffs.length > 0
      ? table(
          "Differences between the live projections and a replay of the log",
          ["Table", "Key", "Column", "Live", "Replayed"],
          diffs.map((d) => [
            d.table,
            code(JSON.stringify(d.key)),
            d.column,
            code(JSON.stringify(d.live)),
            code(JSON.stringify(d.replayed)),
          ]),
        )
      : null,
  );
}

async function overview() {
  const [statuses, datasets, pending, ranHere] = await Promise.all([
    get("v1/status"),
    get("v1/datasets"),
    get("v1/pending"),
    getOrNull("v1/audit/last"),
  ]);
  const audit = lastAudit(ranHere, statuses);
  const byId = new Map(datasets.map((d) => [d.datasetId, d]));
  return {
    title: "Overview",
    sections: [
      {
        live: true,
        key: "datasets",
        data: [statuses, datasets],
        build: () =>
          section(
            "datasets",
            "Datasets",
            table(
              "Datasets and their current runs",
              [
                "Dataset",
                "Current run",
                "Current since",
                "Runs by status",
                "Pending cleanup",
                "In the failed floor",
                "Last maintenance",
                "Registered",
              ],
              statuses.map((s) => [
                datasetLink(s.datasetId),
                s.current ? runLink(s.current.runId) : h("span", { class: "none" }, "none yet"),
                s.current ? time(s.current.since, { relative: true }) : "—",
                runsByStatusCells(s.runs) || "no runs",
                pendingSummary(s.pending),
                s.floor.total === 0
                  ? "none"
                  : [
                      `${s.floor.total} item(s), next leaves `,
                      time(s.floor.nextLeavesAt, { relative: true }),
                    ],
                s.lastMaintenance
                  ? [
                      `${s.lastMaintenance.kind} ${s.lastMaintenance.outcome} `,
                      time(s.lastMaintenance.finishedAt),
                    ]
                  : "none yet",
                time(byId.get(s.datasetId)?.registeredAt ?? null),
              ]),
              { empty: "No datasets yet (shardledger dataset create …)." },
            ),
          ),
      },
      {
        live: true,
        key: "pending",
        data: pending,
        build: () =>
          section(
            "pending",
            "Pending cleanup",
            pendingTable("Pending cleanup, every dataset", pending, { withDataset: true }),
          ),
      },
      { live: true, key: "audit", data: audit, build: () => auditSection(audit) },
    ],
  };
}

async function pendingView() {
  const pending = await get("v1/pending");
  return {
    title: "Pending cleanup",
    sections: [
      {
        live: true,
        key: "pending",
        data: pending,
        build: () =>
          section(
            "pending",
            "Pending cleanup",
            h(
              "p",
              null,
              "Deletions that failed and wait for a later cleanup pass: the error, how many tries, and when the next try is due.",
            ),
            pendingTable("Pending cleanup, every dataset", pending, { withDataset: true }),
          ),
      },
    ],
  };
}

async function auditView() {
  const [ranHere, statuses] = await Promise.all([getOrNull("v1/audit/last"), get("v1/status")]);
  const audit = lastAudit(ranHere, statuses);
  return {
    title: "Audit",
    sections: [{ live: true, key: "audit", data: audit, build: () => auditSection(audit) }],
  };
}

async function datasetView(datasetId) {
  const id = seg(datasetId);
  const [status, runs, floors, rollups, pending] = await Promise.all([
    get(`v1/datasets/${id}/status`),
    get(`v1/datasets/${id}/runs`),
    get(`v1/datasets/${id}/floors`),
    get(`v1/datasets/${id}/rollups`),
    get(`v1/pending?datasetId=${id}`),
  ]);
  const counts = new Map(RUN_STATUSES.map((s) => [s, 0]));
  for (const r of runs) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  return {
    title: `Dataset ${datasetId}`,
    sections: [
      {
        live: true,
        key: "summary",
        data: status,
        build: () =>
          section(
            "summary",
            "Summary",
            facts([
              ["root", code(status.root)],
              ["current run", status.current ? runLink(status.current.runId) : "none yet"],
              ["current since", status.current ? time(status.current.since, { relative: true }) : "—"],
              ["current manifest", code(status.current?.manifestUrl ?? null)],
              ["keep runs", String(status.policies.keepRuns)],
              ["retention", policy(status.policies, "retention")],
              ["failed retention", policy(status.policies, "failedRetention")],
              ["stale after", policy(status.policies, "staleAfter")],
              ["safety window", policy(status.policies, "safetyWindow")],
              ["pending cleanup", pendingSummary(status.pending)],
              [
                "last maintenance",
                status.lastMaintenance
                  ? [
                      `${status.lastMaintenance.kind}: ${status.lastMaintenance.outcome}, deleted ${status.lastMaintenance.deleted}, failed ${status.lastMaintenance.failed}, pruned ${status.lastMaintenance.pruned}, `,
                      time(status.lastMaintenance.finishedAt, { relative: true }),
                      status.lastMaintenance.error ? ` — ${status.lastMaintenance.error}` : null,
                    ]
                  : "none yet",
              ],
            ]),
          ),
      },
      {
        key: "runs",
        data: [runs, status.runs.pruned],
        build: () =>
          section(
            "runs",
            "Runs",
            table(
              "Runs by status",
              ["Status", "Runs"],
              [
                ...[...counts].map(([s, n]) => [badge(s), String(n)]),
                [badge("PRUNED"), `${status.runs.pruned} (gone from the registry; see rollups)`],
              ],
              { className: "counts" },
            ),
            table(
              `Runs of ${datasetId}, newest first`,
              [
                "Run",
                "Status",
                "Shards",
                "Attempts",
                "Winners",
                "Losers",
                "Failed",
                "Started",
                "Updated",
                "Note",
              ],
              runs.map((r) => [
                runLink(r.runId),
                [badge(r.status), r.current ? h("span", { class: "current" }, " current") : null],
                String(r.numShards),
                String(r.attempts.total),
                String(r.attempts.winner),
                String(r.attempts.loser + r.attempts.cleanupPending + r.attempts.deleted),
                String(r.attempts.failed),
                time(r.startedAt),
                time(r.updatedAt),
                runNote(r),
              ]),
              { empty: "No runs yet." },
            ),
          ),
      },
      {
        live: true,
        key: "floor",
        data: floors,
        build: () =>
          section(
            "floor",
            "Failed-retention floor",
            h(
              "p",
              null,
              "Failed runs and failed deletions kept for inspection: nothing here is pruned until it expires.",
            ),
            table(
              "Inside the failed-retention floor, with when each expires",
              ["Run", "Kind", "URL", "Failed", "Expires"],
              floors.map((f) => [
                runLink(f.runId),
                f.kind === "failed_run" ? "failed run" : "failed cleanup",
                code(f.url),
                time(f.failedAt),
                time(f.protectedUntil, { relative: true }),
              ]),
              { empty: "Nothing is inside the failed-retention floor." },
            ),
          ),
      },
      {
        live: true,
        key: "pending",
        data: pending,
        build: () =>
          section(
            "pending",
            "Pending cleanup",
            pendingTable(`Pending cleanup of ${datasetId}`, pending, { withDataset: false }),
          ),
      },
      {
        key: "rollups",
        data: rollups,
        build: () =>
          section(
            "rollups",
            "Pruned (rollups)",
            table(
              "What gc pruned, by reason",
              ["Reason", "Runs", "Attempts", "Failed items", "Last pruned"],
              rollups.map((r) => [
                r.reason,
                String(r.prunedRuns),
                String(r.prunedAttempts),
                String(r.prunedFailedItems),
                time(r.lastPrunedAt),
              ]),
              { empty: "Nothing pruned yet." },
            ),
          ),
      },
    ],
  };
}

function runNote(r) {
  if (r.status === "FAILED") return [r.failureCause, r.failureReason].filter(Boolean).join(": ") || "failed";
  if (r.missingShards && r.missingShards.length > 0) return `missing shards ${r.missingShards.join(", ")}`;
  if (r.reopenedCount > 0) return `reopened ${r.reopenedCount}×`;
  return "";
}

async function runView(runId) {
  const shown = await get(`v1/runs/${seg(runId)}`);
  const { run, attempts, winners } = shown;
  const losers = attempts.filter((a) => LOSER_STATUSES.has(a.status));
  const byShard = new Map();
  for (const a of attempts) {
    const list = byShard.get(a.shard) ?? [];
    list.push(a);
    byShard.set(a.shard, list);
  }
  const winnerOf = new Map(winners.map((w) => [w.shard, w]));
  const shardRows = [];
  for (let shard = 0; shard < run.numShards && shardRows.length < MAX_ROWS; shard++) {
    const list = byShard.get(shard) ?? [];
    const w = winnerOf.get(shard);
    shardRows.push([
      String(shard),
      String(list.length),
      list.map((a) => `#${a.attempt} ${a.status}`).join(", ") || "no attempt yet",
      w ? `#${w.attempt}` : h("span", { class: "none" }, "—"),
      w ? code(w.url) : h("span", { class: "none" }, "—"),
    ]);
  }
  const a = run.attempts;
  return {
    title: `Run ${run.runId}`,
    sections: [
      {
        live: true,
        key: "summary",
        data: run,
        build: () =>
          section(
            "summary",
            "Summary",
            facts([
              ["dataset", datasetLink(run.datasetId)],
              [
                "status",
                [badge(run.status), run.current ? h("span", { class: "current" }, " current") : null],
              ],
              ["shards", String(run.numShards)],
              [
                "attempts",
                `${a.total} total, ${a.succeeded} succeeded, ${a.failed} failed, ${a.winner} winners, ${a.loser} losers, ${a.cleanupPending} cleanup pending, ${a.deleted} deleted`,
              ],
              ["started", time(run.startedAt)],
              ["heartbeat", time(run.heartbeatAt, { relative: true })],
              ["updated", time(run.updatedAt)],
              ["manifest", code(run.manifestUrl)],
              run.succeededAt ? ["succeeded", time(run.succeededAt)] : ["", undefined],
              run.failedAt ? ["failed", time(run.failedAt)] : ["", undefined],
              run.failedAt
                ? ["failure", [run.failureCause, run.failureReason].filter(Boolean).join(": ")]
                : ["", undefined],
              run.missingShards && run.missingShards.length > 0
                ? ["missing shards", run.missingShards.join(", ")]
                : ["", undefined],
              run.reopenedCount > 0 ? ["reopened", String(run.reopenedCount)] : ["", undefined],
            ]),
          ),
      },
      {
        key: "shards",
        data: [attempts, winners, run.numShards],
        build: () =>
          section(
            "shards",
            "Shards",
            table(
              "Shards: attempts and the winner of each",
              ["Shard", "Attempts", "Statuses", "Winner", "Winner URL"],
              shardRows,
              {
                total: run.numShards,
              },
            ),
          ),
      },
      {
        key: "winners",
        data: winners,
        build: () =>
          section(
            "winners",
            "Winners",
            table(
              "Winners (what the manifest lists)",
              ["Shard", "Attempt", "Task attempt", "URL"],
              winners.map((w) => [String(w.shard), String(w.attempt), code(w.taskAttemptId), code(w.url)]),
              { empty: "No winners selected (the run is not published)." },
            ),
          ),
      },
      {
        key: "losers",
        data: losers,
        build: () =>
          section(
            "losers",
            "Losers",
            table(
              "Losers (attempts that did not win; cleanup deletes their data)",
              ["Shard", "Attempt", "Task attempt", "Status", "URL"],
              losers.map((l) => [
                String(l.shard),
                String(l.attempt),
                code(l.taskAttemptId),
                badge(l.status),
                code(l.url),
              ]),
              { empty: "No losers." },
            ),
          ),
      },
      {
        key: "attempts",
        data: attempts,
        build: () =>
          section(
            "attempts",
            "Attempts",
            table(
              "Every attempt and how it was classified",
              ["Shard", "Attempt", "Task attempt", "Status", "Reported", "URL", "Error"],
              attempts.map((x) => [
                String(x.shard),
                String(x.attempt),
                code(x.taskAttemptId),
                badge(x.status),
                x.outcome,
                code(x.url),
                x.error ? h("span", { class: "error-text" }, x.error) : "",
              ]),
              { empty: "No attempts reported yet." },
            ),
          ),
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Routing, refresh, token.

/** `#/datasets/x` → { name: "dataset", id: "x" }. */
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "datasets" && parts[1]) return { name: "dataset", id: parts[1], key: `d/${parts[1]}` };
  if (parts[0] === "runs" && parts[1]) return { name: "run", id: parts[1], key: `r/${parts[1]}` };
  if (parts[0] === "pending") return { name: "pending", key: "pending" };
  if (parts[0] === "audit") return { name: "audit", key: "audit" };
  return { name: "overview", key: "overview" };
}

function load(r) {
  switch (r.name) {
    case "dataset":
      return datasetView(r.id);
    case "run":
      return runView(r.id);
    case "pending":
      return pendingView();
    case "audit":
      return auditView();
    default:
      return overview();
  }
}

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

let shownRouteKey = null;
/** The data each shown section was built from (JSON), by section key. */
let shownData = new Map();
let timer = null;
let generation = 0;

/** Puts a view on the page, rebuilding only the sections whose data changed. */
function commit(r, view) {
  const main = $("view");
  const routeChanged = shownRouteKey !== r.key;
  const navigated = routeChanged && shownRouteKey !== null;
  if (routeChanged) {
    main.replaceChildren();
    shownData = new Map();
  }
  const heading = h("h1", { id: "title" }, view.title);
  const existing = main.querySelector("h1");
  if (!existing) main.append(heading);
  else if (existing.textContent !== view.title) existing.replaceWith(heading);

  const nextData = new Map();
  const present = new Map([...main.querySelectorAll(":scope > [data-key]")].map((n) => [n.dataset.key, n]));
  let previous = main.querySelector("h1");
  // Relative times ("in 6d 23h") are to the minute: a new minute rebuilds the sections that show
  // them (`live`).
  const minute = Math.floor(Date.now() / 60_000);
  for (const s of view.sections) {
    const json = `${s.live ? minute : ""} ${JSON.stringify(s.data)}`;
    nextData.set(s.key, json);
    let node = present.get(s.key);
    if (!node || shownData.get(s.key) !== json) {
      const built = s.build();
      built.dataset.key = s.key;
      if (node) node.replaceWith(built);
      node = built;
    }
    if (previous.nextElementSibling !== node) previous.after(node);
    present.delete(s.key);
    previous = node;
  }
  for (const stale of present.values()) stale.remove();
  shownData = nextData;
  shownRouteKey = r.key;
  document.title = `${view.title} · shardledger`;
  // After following a link, move focus to the new page (screen readers announce it).
  if (navigated) main.focus();
}

/** `aria-current="page"` on the navigation link of the shown view. */
function markCurrentNav(r) {
  const current = { overview: "#/", pending: "#/pending", audit: "#/audit" }[r.name];
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function showProblem(message) {
  const box = $("problem");
  if (message === null) box.replaceChildren();
  else if (box.textContent !== message) box.replaceChildren(h("p", null, message));
}

function showTokenForm(message) {
  const form = $("token-form");
  $("token-error").textContent = message;
  if (form.hidden) {
    form.hidden = false;
    $("view").replaceChildren();
    shownRouteKey = null;
    $("token").focus();
  }
}

function updatedNow() {
  const d = new Date();
  $("updated").textContent = `updated ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  const r = route();
  try {
    const view = await load(r);
    if (mine !== generation) return;
    const wasAsking = !$("token-form").hidden;
    $("token-form").hidden = true;
    $("forget-token").hidden = sessionStorage.getItem(TOKEN_KEY) === null;
    showProblem(null);
    commit(r, view);
    markCurrentNav(r);
    // The token was accepted: move the focus from the vanished form to the page.
    if (wasAsking) $("view").focus();
    updatedNow();
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof HttpError && e.status === 401) {
      const had = sessionStorage.getItem(TOKEN_KEY) !== null;
      showTokenForm(had ? "That token was not accepted (401). Enter a token with the read scope." : "");
      showProblem(null);
    } else if (e instanceof HttpError && e.status === 403) {
      showTokenForm("That token may not read this (403). Enter a token with the read scope.");
    } else if (e instanceof HttpError && e.status === 404) {
      commit(r, {
        title: "Not found",
        sections: [
          {
            key: "missing",
            data: e.message,
            build: () =>
              h("section", null, h("p", null, e.message), h("p", null, link("#/", "Back to the datasets"))),
          },
        ],
      });
      showProblem(null);
      updatedNow();
    } else {
      const what = e instanceof HttpError ? `${e.code ?? e.status}: ${e.message}` : String(e?.message ?? e);
      showProblem(
        shownRouteKey === r.key
          ? `Could not refresh (${what}); showing what was loaded before, retrying every 5 s.`
          : `Could not load this page (${what}); retrying every 5 s.`,
      );
    }
  } finally {
    if (mine === generation) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($("token"));
    const token = input.value.trim();
    if (token === "") return;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    $("token-error").textContent = "checking…";
    refresh();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    refresh();
  });
  window.addEventListener("hashchange", () => refresh());
  refresh();
}

start();
