import type { AttemptState, RunState } from "../machines/run-state.js";

/**
 * A scratch copy of a run state on which a group of attempt reports is decided and folded before
 * the group is appended, in O(reports) rather than O(attempts): `cloneRunState` copies every
 * attempt (about 40 ms at 100,000 attempts), which a group commit would pay once per group.
 *
 * Only attempt reports may be decided and folded on it. A report reads and writes the run's
 * scalars (version, phase, updatedAt) and ONE attempt, which `attempts.get` copies out of the base
 * on first touch; the base state is never written. Everything a report does not touch is guarded:
 * the winners, the cleanup records and the missing shards are read-only views of the base, and
 * iterating or counting the attempts throws, so a command that needs more than a report fails
 * loudly instead of deciding on a partial view.
 *
 * @internal
 */
export function reportScratch(base: RunState): RunState {
  return {
    ...base,
    attempts: new CopyOnReadMap(base.attempts, (a) => ({ ...a, cleanup: a.cleanup && { ...a.cleanup } })),
    winners: new ReadOnlyMap(base.winners),
    cleanup: new ReadOnlyMap(base.cleanup),
    missingShards: Object.freeze([...base.missingShards]),
  };
}

/**
 * `scratch` as if it had been taken of `base`, where `base` is what `scratch`'s own base has become
 * since (the previous group's events folded into the run's state): the run's scalars and the
 * attempts `scratch` itself touched are carried over; everything else is read from `base`. A group
 * decided while the previous group was being stored is rebased so, once that group has committed,
 * before the group after it is decided on it: scratches stay one level deep, and what the previous
 * group's scratch copied is released.
 *
 * @internal
 */
export function rebaseReportScratch(scratch: RunState, base: RunState): RunState {
  const own = scratch.attempts;
  if (!(own instanceof CopyOnReadMap)) throw new Error("rebaseReportScratch takes a report scratch state");
  const {
    attempts: _attempts,
    winners: _winners,
    cleanup: _cleanup,
    missingShards: _missing,
    ...scalars
  } = scratch;
  const rebased = { ...reportScratch(base), ...scalars };
  const attempts = rebased.attempts as CopyOnReadMap<string, AttemptState>;
  for (const [key, value] of own.ownEntries()) attempts.adopt(key, value);
  return rebased;
}

const notOnScratch = (what: string): never => {
  throw new Error(`a report scratch state does not support ${what}: only attempt reports are decided on it`);
};

/** Reads fall through to the base; the first read of a key stores a copy that the fold may change. */
class CopyOnReadMap<K, V> extends Map<K, V> {
  readonly #base: ReadonlyMap<K, V>;
  readonly #copy: (value: V) => V;

  constructor(base: ReadonlyMap<K, V>, copy: (value: V) => V) {
    super();
    this.#base = base;
    this.#copy = copy;
  }

  override get(key: K): V | undefined {
    const own = super.get(key);
    if (own !== undefined) return own;
    const found = this.#base.get(key);
    if (found === undefined) return undefined;
    const copy = this.#copy(found);
    super.set(key, copy);
    return copy;
  }

  override has(key: K): boolean {
    return super.has(key) || this.#base.has(key);
  }

  /** The entries this map holds itself (those read or written since it was made). */
  ownEntries(): MapIterator<[K, V]> {
    return super.entries();
  }

  /** Holds `value` for `key` itself, as if it had been read and changed here. */
  adopt(key: K, value: V): void {
    super.set(key, value);
  }

  override delete(): boolean {
    return notOnScratch("deleting attempts");
  }

  override clear(): void {
    notOnScratch("clearing attempts");
  }

  override get size(): number {
    return notOnScratch("counting attempts");
  }

  override forEach(): void {
    notOnScratch("iterating attempts");
  }

  override keys(): MapIterator<K> {
    return notOnScratch("iterating attempts");
  }

  override values(): MapIterator<V> {
    return notOnScratch("iterating attempts");
  }

  override entries(): MapIterator<[K, V]> {
    return notOnScratch("iterating attempts");
  }

  override [Symbol.iterator](): MapIterator<[K, V]> {
    return notOnScratch("iterating attempts");
  }
}

/** The base map, readable, never written. */
class ReadOnlyMap<K, V> extends Map<K, V> {
  readonly #base: ReadonlyMap<K, V>;

  constructor(base: ReadonlyMap<K, V>) {
    super();
    this.#base = base;
  }

  override get(key: K): V | undefined {
    return this.#base.get(key);
  }

  override has(key: K): boolean {
    return this.#base.has(key);
  }

  override get size(): number {
    return this.#base.size;
  }

  override set(): this {
    return notOnScratch("changing winners or cleanup");
  }

  override delete(): boolean {
    return notOnScratch("changing winners or cleanup");
  }

  override clear(): void {
    notOnScratch("changing winners or cleanup");
  }

  override forEach(fn: (value: V, key: K, map: Map<K, V>) => void): void {
    for (const [k, v] of this.#base) fn(v, k, this);
  }

  override keys(): MapIterator<K> {
    return this.#base.keys() as MapIterator<K>;
  }

  override values(): MapIterator<V> {
    return this.#base.values() as MapIterator<V>;
  }

  override entries(): MapIterator<[K, V]> {
    return this.#base.entries() as MapIterator<[K, V]>;
  }

  override [Symbol.iterator](): MapIterator<[K, V]> {
    return this.#base.entries() as MapIterator<[K, V]>;
  }
}
