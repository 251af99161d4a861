import type { z } from "zod";
import { ValidationError } from "../errors.js";
import { acceptAttemptData } from "./attempt-fields.js";
import {
  CURRENT_SCHEMA_VERSIONS,
  EVENT_TYPES,
  EVENT_UPCASTERS,
  type EventType,
  eventDataSchemas,
  HISTORICAL_SCHEMAS,
} from "./catalogue.js";

/**
 * Turns the data of version `v` into the data of version `v + 1`. Pure; never touches storage.
 *
 * @example
 * ```ts
 * const titleToName: Upcaster = (data) => ({ name: (data as { title: string }).title })
 * ```
 */
export type Upcaster = (data: unknown) => unknown;

/**
 * One event type: its current schema version, the schema of its data at that version, and the
 * upcasters that carry older stored versions forward (keyed by the version they upcast *from*).
 * `historicalSchemas` lets tests and migrations write an old shape deliberately.
 *
 * @example
 * ```ts
 * import { z } from "zod"
 * const def: EventDefinition = {
 *   type: "Renamed", schemaVersion: 2, schema: z.object({ name: z.string() }),
 *   upcasters: { 1: (d) => ({ name: (d as { title: string }).title }) },
 * }
 * ```
 */
export interface EventDefinition {
  type: string;
  schemaVersion: number;
  schema: z.ZodType;
  upcasters?: Readonly<Record<number, Upcaster>>;
  historicalSchemas?: Readonly<Record<number, z.ZodType>>;
  /**
   * What `schema` answers for the common shape of the data, in plain code, or `undefined` to ask
   * the schema (see src/events/attempt-fields.ts); must never accept what the schema refuses, nor
   * answer differently.
   */
  accept?: (data: unknown) => unknown;
}

/**
 * The registry of event types: validates data on the way in, upcasts old versions on the way out.
 *
 * @example
 * ```ts
 * const { data } = defaultCatalogue.validate("RunStarted", { runId: "r1", datasetId: "d", numShards: 4 })
 * ```
 */
export class EventCatalogue {
  readonly #defs: ReadonlyMap<string, EventDefinition>;

  constructor(definitions: readonly EventDefinition[]) {
    const defs = new Map<string, EventDefinition>();
    for (const def of definitions) {
      if (!Number.isInteger(def.schemaVersion) || def.schemaVersion < 1) {
        throw new Error(`event ${def.type}: schemaVersion must be an integer ≥ 1`);
      }
      for (let v = 1; v < def.schemaVersion; v++) {
        if (!def.upcasters?.[v]) throw new Error(`event ${def.type}: missing upcaster from version ${v}`);
      }
      defs.set(def.type, def);
    }
    this.#defs = defs;
  }

  /** A catalogue with these definitions added (or replacing ones of the same type). */
  with(definitions: readonly EventDefinition[]): EventCatalogue {
    return new EventCatalogue([...this.#defs.values(), ...definitions]);
  }

  /** Whether the catalogue knows this event type. */
  has(type: string): boolean {
    return this.#defs.has(type);
  }

  /** The current schema version of a type. */
  currentVersion(type: string): number {
    return this.#definition(type).schemaVersion;
  }

  /**
   * Validates `data` for `type` (at `schemaVersion`, default the current one) and returns the
   * parsed data. Throws a {@link ValidationError} naming the event type and the field.
   */
  validate(type: string, data: unknown, schemaVersion?: number): { schemaVersion: number; data: unknown } {
    const def = this.#defs.get(type);
    if (!def) throw new ValidationError("type", `unknown event type ${JSON.stringify(type)}`);
    const version = schemaVersion ?? def.schemaVersion;
    const schema = version === def.schemaVersion ? def.schema : def.historicalSchemas?.[version];
    if (!schema) throw new ValidationError(`${type}.schemaVersion`, `no schema for version ${version}`);
    if (def.accept && schema === def.schema) {
      const accepted = def.accept(data);
      if (accepted !== undefined) return { schemaVersion: version, data: accepted };
    }
    const result = schema.safeParse(data);
    if (!result.success) {
      const issue = result.error.issues[0];
      const path = issue && issue.path.length > 0 ? `.${issue.path.map(String).join(".")}` : "";
      throw new ValidationError(`${type}.data${path}`, issue?.message ?? "invalid", {
        details: { eventType: type, issues: result.error.issues },
      });
    }
    return { schemaVersion: version, data: result.data };
  }

  /**
   * Carries stored data of an older version forward to the current version. Unknown types pass
   * through untouched (an older binary reading a newer log must not crash on replay).
   */
  upcast(type: string, schemaVersion: number, data: unknown): { schemaVersion: number; data: unknown } {
    const def = this.#defs.get(type);
    if (!def || schemaVersion >= def.schemaVersion) return { schemaVersion, data };
    let current = data;
    for (let v = schemaVersion; v < def.schemaVersion; v++) {
      const up = def.upcasters?.[v];
      if (!up) throw new Error(`event ${type}: no upcaster from version ${v}`);
      current = up(current);
    }
    return { schemaVersion: def.schemaVersion, data: current };
  }

  #definition(type: string): EventDefinition {
    const def = this.#defs.get(type);
    if (!def) throw new ValidationError("type", `unknown event type ${JSON.stringify(type)}`);
    return def;
  }
}

/** The event types whose data is also checked in plain code (the ones reported in bulk). */
const ACCEPT_IN_PLAIN_CODE: Partial<Record<EventType, (data: unknown) => unknown>> = {
  AttemptStarted: (data) => acceptAttemptData(data, false),
  AttemptSucceeded: (data) => acceptAttemptData(data, false),
  AttemptFailed: (data) => acceptAttemptData(data, true),
};

/**
 * The catalogue of every shardledger event at its current version.
 *
 * @example
 * ```ts
 * defaultCatalogue.has("WinnerSelected") // true
 * ```
 */
export const defaultCatalogue = new EventCatalogue(
  EVENT_TYPES.map((type) => ({
    type,
    schemaVersion: CURRENT_SCHEMA_VERSIONS[type],
    schema: eventDataSchemas[type] as z.ZodType,
    ...optional("upcasters", EVENT_UPCASTERS[type]),
    ...optional("historicalSchemas", HISTORICAL_SCHEMAS[type]),
    ...optional("accept", ACCEPT_IN_PLAIN_CODE[type]),
  })),
);

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return value === undefined ? {} : ({ [key]: value } as { [P in K]: V });
}
