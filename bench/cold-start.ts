import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type BenchReport,
  type BenchRow,
  fmt,
  isMain,
  loadNow,
  machineFacts,
  printReport,
  scaled,
  withBenchDatabase,
} from "./support.js";

/*
 * Cold start of the `shardledger` CLI: whole processes, from spawn to exit, side by side with
 * `node -e 0` (the floor no Node CLI can go below) in interleaved rounds, so that load from
 * elsewhere on the machine hits every command alike. Wall time of the process and its CPU time
 * (user + system, from /usr/bin/time when present). Runs what ships: `npm run build` first.
 *
 *   --help                    the bundled bin (dist/bin/shardledger.js) and, for comparison,
 *                             tsc's unbundled output (dist/cli/main.js) — same code, no bundle
 *   attempt succeed (PG)      one attempt report on a PostgreSQL server, a new shard each time
 *   attempt succeed (PGlite)  the same on the embedded default
 *
 * Targets (issue 13): --help < 0.2 s; one attempt succeed on PostgreSQL < 0.35 s.
 *
 * COLD_START_BEFORE=<an older build's dist/cli/main.js> adds its --help and PostgreSQL attempt
 * report to the same rounds, for a before/after in one run (e.g. `git archive <commit> | tar -x`
 * into a scratch directory, link node_modules, `tsc -p tsconfig.build.json`).
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(ROOT, "dist", "bin", "shardledger.js");
const UNBUNDLED = join(ROOT, "dist", "cli", "main.js");
const ROUNDS = scaled(15);

interface Sample {
  wallMs: number;
  cpuMs: number | null;
}

const TIME = "/usr/bin/time";
const hasTime = existsSync(TIME);

/** Runs a command to completion; wall time measured here, CPU time by /usr/bin/time. */
function timed(argv: readonly string[]): Sample {
  const [cmd, ...args] = hasTime ? [TIME, "-f", "CPU %U %S", ...argv] : argv;
  const started = performance.now();
  const r = spawnSync(cmd as string, args, { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  const wallMs = performance.now() - started;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}: ${r.stderr}`);
  const cpu = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr ?? "");
  return { wallMs, cpuMs: cpu ? (Number(cpu[1]) + Number(cpu[2])) * 1000 : null };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

interface Case {
  name: string;
  target?: { ms: number; label: string };
  argv: (round: number) => string[];
}

export async function run(): Promise<BenchReport> {
  if (!existsSync(BIN) || !existsSync(UNBUNDLED)) throw new Error("run `npm run build` first");
  return withBenchDatabase(async (url) => {
    const machine = await machineFacts(url);
    const load = loadNow();
    const scratch = mkdtempSync(join(tmpdir(), "shardledger-cold-"));
    try {
      const lake = join(scratch, "lake");
      mkdirSync(lake);
      const pgArgs = ["--database", url];
      const pgliteArgs = ["--database", `pglite:${join(scratch, "db")}`];
      const setup = (db: string[]) => {
        for (const args of [
          ["migrate"],
          ["dataset", "create", "cold", "--root", `file://${lake}`],
          ["run", "start", "cold", "--shards", "100000", "--run-id", "r1"],
        ]) {
          timed([process.execPath, BIN, ...db, ...args]);
        }
      };
      setup(pgArgs);
      setup(pgliteArgs);
      const report = (db: string[], shard: number) => [
        process.execPath,
        BIN,
        ...db,
        "attempt",
        "succeed",
        "r1",
        "--shard",
        String(shard),
        "--attempt",
        "0",
        "--url",
        `file://${lake}/data/r1/shard=${String(shard).padStart(5, "0")}/attempt=00`,
        "--json",
      ];
      const cases: Case[] = [
        { name: "node -e 0 (floor)", argv: () => [process.execPath, "-e", "0"] },
        {
          name: "shardledger --help (bundled bin)",
          target: { ms: 200, label: "< 200 ms" },
          argv: () => [process.execPath, BIN, "--help"],
        },
        {
          name: "shardledger --help (tsc output, unbundled)",
          argv: () => [process.execPath, UNBUNDLED, "--help"],
        },
        {
          name: "attempt succeed, PostgreSQL",
          target: { ms: 350, label: "< 350 ms" },
          argv: (round) => report(pgArgs, round),
        },
        { name: "attempt succeed, PGlite", argv: (round) => report(pgliteArgs, 50_000 + round) },
      ];
      const before = process.env.COLD_START_BEFORE;
      if (before) {
        cases.push(
          { name: "before: --help", argv: () => [process.execPath, before, "--help"] },
          {
            name: "before: attempt succeed, PostgreSQL",
            argv: (round) => [process.execPath, before, ...report(pgArgs, 20_000 + round).slice(2)],
          },
        );
      }
      // One warm-up of each (file cache, the server's plan cache), then interleaved rounds.
      for (const c of cases) timed(c.argv(ROUNDS + 1));
      const samples = new Map<string, Sample[]>(cases.map((c) => [c.name, []]));
      for (let round = 0; round < ROUNDS; round++) {
        for (const c of cases) samples.get(c.name)?.push(timed(c.argv(round)));
      }
      const floor = median((samples.get(cases[0]?.name as string) ?? []).map((s) => s.wallMs));
      const rows: BenchRow[] = cases.map((c) => {
        const s = samples.get(c.name) ?? [];
        const wall = median(s.map((x) => x.wallMs));
        const cpu = s.every((x) => x.cpuMs !== null) ? median(s.map((x) => x.cpuMs as number)) : Number.NaN;
        return {
          command: c.name,
          runs: s.length,
          "wall p50 ms": fmt(wall),
          "wall min ms": fmt(Math.min(...s.map((x) => x.wallMs))),
          "cpu p50 ms": Number.isNaN(cpu) ? "" : fmt(cpu),
          "× node -e 0": fmt(wall / floor),
          target: c.target ? `${c.target.label} ${wall < c.target.ms ? "pass" : "MISS"}` : "",
        };
      });
      return {
        name: "cold-start",
        machine,
        rows,
        notes: [
          `${ROUNDS} interleaved rounds after one warm-up each; load average (1, 5, 15 min) at start ${load}.`,
          "wall = spawn to exit measured by the bench; cpu = user + system of the process (/usr/bin/time).",
          "attempt succeed reports a new shard each round (one append each) to a run of 100,000 shards.",
        ],
      };
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });
}

if (isMain(import.meta.url)) printReport(await run());
