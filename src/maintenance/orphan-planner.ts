import { effectiveSafetyWindowMs, writtenInsideWindow } from "../datasets/safety-window.js";
import { keyUnderRoot } from "../storage/dataset-url.js";

/** What decides whether a listed key under a live run's data area is an orphan. */
export interface OrphanFacts {
  /** The dataset's root URL. */
  root: string;
  /** The run's attempts (from its fold): every one with data that may still be there is kept. */
  attempts: Iterable<{ url: string | null; status: string }>;
  /** Keys of the dataset's items still awaiting cleanup ({@link keysUnderRoot}): their deletion is cleanup's job. */
  pendingKeys: ReadonlySet<string>;
  now: Date;
  /** Objects younger than this may belong to a writer still at work. */
  safetyWindowMs: number;
}

/** The root-relative keys of `urls`; a url that does not map under the root has none. */
export function keysUnderRoot(root: string, urls: Iterable<string>): Set<string> {
  const keys = new Set<string>();
  for (const url of urls) {
    try {
      keys.add(keyUnderRoot(root, url));
    } catch {}
  }
  return keys;
}

/**
 * Why a live published run gets no orphan collection, or null: a winner reported without a url
 * may have its data anywhere in the run's area.
 */
export function orphanCollectionRefusal(winners: Iterable<{ url: string | null }>): string | null {
  for (const w of winners) {
    if (w.url === null) {
      return "no orphan collection: a winner was reported without a url, so its data may lie anywhere in the run's area";
    }
  }
  return null;
}

/**
 * Why a run's orphans wait, or null: one of its attempts was reported inside the safety window.
 * Which attempt wrote an unreported file cannot be known (a writer may report a url other than
 * where it wrote, or none), so any report of the run counts as a writer still at work.
 */
export function writerAtWork(
  state: { runId: string | null; lastReportAt: Date | null },
  facts: { dataset: Parameters<typeof effectiveSafetyWindowMs>[0]; now: Date },
): string | null {
  if (state.lastReportAt === null) return null;
  const now = facts.now.getTime();
  const until = state.lastReportAt.getTime() + effectiveSafetyWindowMs(facts.dataset, now);
  if (now >= until) return null;
  return `an attempt of run ${state.runId} was reported at ${state.lastReportAt.toISOString()}, inside the safety window (until ${new Date(until).toISOString()}): a writer of the run may still be at work`;
}

/**
 * A predicate over the listing of a live published run's data area: true for a key under no
 * recorded attempt and under no item awaiting cleanup (a speculative attempt killed before it
 * reported, or one that kept writing after its prefix was cleaned), once older than the safety
 * window. Keys are kept exactly and as prefixes, so a stray file beside a winner's directory is
 * planned on its own and never widens into a prefix delete.
 */
export function orphanPredicate(
  facts: OrphanFacts,
): (object: { key: string; lastModified: Date }) => boolean {
  const keep = new Set<string>();
  for (const a of facts.attempts) {
    if (a.url === null || a.status === "DELETED") continue;
    try {
      keep.add(keyUnderRoot(facts.root, a.url));
    } catch {}
  }
  for (const k of facts.pendingKeys) keep.add(k);
  const kept = (key: string): boolean => {
    const bare = key.endsWith("/") ? key.slice(0, -1) : key;
    if (keep.has(bare)) return true;
    const parts = bare.split("/");
    for (let i = 1; i < parts.length; i++) if (keep.has(parts.slice(0, i).join("/"))) return true;
    return false;
  };
  const now = facts.now.getTime();
  return (o) => !kept(o.key) && !writtenInsideWindow(o.lastModified, facts.safetyWindowMs, now);
}
