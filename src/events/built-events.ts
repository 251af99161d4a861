import type { NewEvent } from "./envelope.js";
import type { EventCatalogue } from "./event-catalogue.js";

/**
 * Events the library's own event builder (`EventBuilder.build` in src/machines/run-commands.ts)
 * made from data it had just validated against the default catalogue, each with the type and the
 * very data object it validated. The event log appends such an event without parsing its data a
 * second time; an event from any other writer of the EventLog port — or one whose type or data
 * was replaced after it was built — is not in here and is validated as always.
 *
 * Only run-commands.ts marks and only the PostgreSQL event log asks: dependency-cruiser
 * (`built-events-stay-private` in .dependency-cruiser.cjs) refuses any other importer, and the
 * module is not exported from src/index.ts. A WeakMap, so a marked event is garbage like any other.
 *
 * @internal
 */
const built = new WeakMap<
  object,
  { readonly type: string; readonly data: unknown; readonly catalogue: EventCatalogue }
>();

/**
 * Marks `event` as built from data validated against `catalogue` at its current version.
 *
 * @example
 * ```ts
 * const { data } = defaultCatalogue.validate("RunHeartbeat", { runId: "r1" })
 * const event = markBuilt({ type: "RunHeartbeat", data }, defaultCatalogue)
 * ```
 *
 * @internal only EventBuilder calls it.
 */
export function markBuilt<E extends NewEvent>(event: E, catalogue: EventCatalogue): E {
  built.set(event, { type: event.type, data: event.data, catalogue });
  return event;
}

/**
 * Whether `event` was built by the library's event builder from data validated against
 * `catalogue` at the current version, and still carries that type and that data object (so its
 * data need not be parsed again).
 *
 * @example
 * ```ts
 * const data = isBuilt(event, catalogue) ? event.data : catalogue.validate(event.type, event.data).data
 * ```
 *
 * @internal only the event log asks.
 */
export function isBuilt(event: NewEvent, catalogue: EventCatalogue): boolean {
  const mark = built.get(event);
  return (
    mark !== undefined &&
    mark.type === event.type &&
    mark.data === event.data &&
    mark.catalogue === catalogue &&
    event.schemaVersion === undefined
  );
}
