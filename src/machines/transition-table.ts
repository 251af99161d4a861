import {
  type AnyMachineSnapshot,
  type AnyStateMachine,
  type EventFromLogic,
  initialTransition,
  type StateValue,
  transition,
} from "xstate";

/**
 * A state machine flattened into a lookup table: `next(state, event)` is the state the machine
 * goes to, or `undefined` when it refuses the event. Derived once from the XState machine with
 * its pure `transition()`, so the machine stays the single definition of behaviour while a fold
 * of hundreds of thousands of events pays one map lookup per event instead of a statechart
 * microstep.
 *
 * @example
 * ```ts
 * const table = deriveTransitionTable(machine, [{ type: "GO" }], (e) => e.type)
 * table.next(table.initial, "GO") // the target's key, or undefined when refused
 * ```
 */
export interface TransitionTable {
  /** Key of the initial state. */
  readonly initial: string;
  /** Every reachable state key, in discovery order. */
  readonly states: readonly string[];
  /** Every event key the table knows, in the order given. */
  readonly events: readonly string[];
  /** The state the machine goes to on `event` from `state`, or `undefined` when it refuses. */
  next(state: string, event: string): string | undefined;
  /** The snapshot the machine has in a state (for reading its value, tags or meta). */
  snapshot(state: string): AnyMachineSnapshot;
}

/**
 * A flat, stable key of a state value: `"STARTED"`, `"PUBLISHING.selecting"`, and for parallel
 * states the regions joined with `|` (`"outcome.SUCCEEDED|disposition.LOSER"`).
 *
 * @example
 * ```ts
 * stateValueKey({ PUBLISHING: "selecting" }) // "PUBLISHING.selecting"
 * ```
 */
function stateValueKey(value: StateValue): string {
  if (typeof value === "string") return value;
  const entries = Object.entries(value);
  if (entries.length === 1) {
    const [name, child] = entries[0] as [string, StateValue | undefined];
    return child === undefined || (typeof child === "object" && Object.keys(child).length === 0)
      ? name
      : `${name}.${stateValueKey(child)}`;
  }
  return entries
    .map(([name, child]) => (child === undefined ? name : `${name}.${stateValueKey(child)}`))
    .join("|");
}

/**
 * Explores every state reachable from the machine's initial state under the given sample events
 * (breadth first, with `snapshot.can()` and the pure `transition()`), and records the result as a
 * {@link TransitionTable}. Events whose guards read event fields are listed once per variant, each
 * with its own key. The machine must not depend on context: the table keys states by value only.
 *
 * @example
 * ```ts
 * const table = deriveTransitionTable(attemptMachine, ATTEMPT_EVENTS, attemptEventKey)
 * ```
 */
export function deriveTransitionTable<TMachine extends AnyStateMachine>(
  machine: TMachine,
  events: readonly EventFromLogic<TMachine>[],
  eventKey: (event: EventFromLogic<TMachine>) => string,
): TransitionTable {
  const logic: AnyStateMachine = machine;
  const keys = events.map(eventKey);
  if (new Set(keys).size !== keys.length) throw new Error("deriveTransitionTable: event keys must be unique");
  const [initialSnapshot] = initialTransition(logic) as [AnyMachineSnapshot, unknown];
  const initial = stateValueKey(initialSnapshot.value);
  const snapshots = new Map<string, AnyMachineSnapshot>([[initial, initialSnapshot]]);
  const rows = new Map<string, Map<string, string>>();
  const queue: string[] = [initial];
  for (let i = 0; i < queue.length; i++) {
    const key = queue[i] as string;
    const snapshot = snapshots.get(key) as AnyMachineSnapshot;
    const row = new Map<string, string>();
    rows.set(key, row);
    events.forEach((event, index) => {
      if (!snapshot.can(event)) return;
      const [next] = transition(logic, snapshot, event) as [AnyMachineSnapshot, unknown];
      const nextKey = stateValueKey(next.value);
      row.set(keys[index] as string, nextKey);
      if (!snapshots.has(nextKey)) {
        snapshots.set(nextKey, next);
        queue.push(nextKey);
      }
    });
  }
  return {
    initial,
    states: Object.freeze([...queue]),
    events: Object.freeze(keys),
    next: (state, event) => rows.get(state)?.get(event),
    snapshot: (state) => {
      const s = snapshots.get(state);
      if (!s) throw new Error(`unknown state ${JSON.stringify(state)}`);
      return s;
    },
  };
}
