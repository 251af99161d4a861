/**
 * The archive of a run stream in the object store (SPEC "Object-store layout", issue 16): where it
 * lives under the dataset root, how its content and its completion marker are encoded, and how a
 * reader checks one against the other. Pure: no I/O.
 *
 * `<root>/_archive/run-<runId>.jsonl` holds the stream's events exactly as the hot log stored
 * them (one JSON envelope per line: global position, stream version, type, the schema version and
 * data as stored — not upcast —, metadata, recordedAt), in stream order. `<root>/_archive/run-<runId>.complete`
 * is written after it, and removed before it is touched again: marker present ⇒ content complete.
 */
import { createHash } from "node:crypto";
import type { EventMetadata } from "../events/envelope.js";
import { runStream } from "../events/streams.js";

/**
 * An event as the hot log stores it: its type's schema version and data as written, before any
 * upcast. What an archive holds, so that reading it through upcasts exactly as the hot log did.
 *
 * @internal
 */
export interface StoredEvent {
  globalPosition: number;
  eventId: string;
  streamId: string;
  streamVersion: number;
  type: string;
  schemaVersion: number;
  data: unknown;
  metadata: EventMetadata;
  recordedAt: Date;
}

/**
 * The completion marker of an archive: the content's sha256 and its event count, and which stream
 * and positions it holds.
 *
 * @internal
 */
export interface ArchiveMarker {
  format: typeof ARCHIVE_FORMAT;
  runId: string;
  streamId: string;
  events: number;
  checksum: string;
  bytes: number;
  firstPosition: number | null;
  lastPosition: number | null;
}

/** @internal */
const ARCHIVE_FORMAT = "shardledger.archive/1";

/** Where a run stream's archive lives (SPEC: `<root>/_archive/<streamId>.jsonl + .complete`). */
const archiveBase = (runId: string): string => `_archive/${runStream(runId)}`;
/** The archive's content: `_archive/run-<runId>.jsonl`. @internal */
export const archiveContentKey = (runId: string): string => `${archiveBase(runId)}.jsonl`;
/** The archive's completion marker, written last: `_archive/run-<runId>.complete`. @internal */
export const archiveMarkerKey = (runId: string): string => `${archiveBase(runId)}.complete`;

/** sha256 of bytes or text, lowercase hex. @internal */
export function sha256Hex(body: string | Uint8Array): string {
  return createHash("sha256").update(body).digest("hex");
}

/**
 * The content of an archive and its marker. Deterministic: the same stored events give the same
 * bytes, so a pass that resumes after a crash rewrites exactly what the first one wrote.
 *
 * @internal
 */
export function encodeArchive(
  runId: string,
  streamId: string,
  events: readonly StoredEvent[],
): { body: string; marker: ArchiveMarker } {
  let body = "";
  for (const e of events) {
    body += `${JSON.stringify({
      globalPosition: e.globalPosition,
      eventId: e.eventId,
      streamId: e.streamId,
      streamVersion: e.streamVersion,
      type: e.type,
      schemaVersion: e.schemaVersion,
      data: e.data,
      metadata: e.metadata,
      recordedAt: e.recordedAt.toISOString(),
    })}\n`;
  }
  return {
    body,
    marker: {
      format: ARCHIVE_FORMAT,
      runId,
      streamId,
      events: events.length,
      checksum: sha256Hex(body),
      bytes: Buffer.byteLength(body),
      firstPosition: events[0]?.globalPosition ?? null,
      lastPosition: events.at(-1)?.globalPosition ?? null,
    },
  };
}

/**
 * Why an archive cannot be read as complete and intact: `missing` (no marker, or a marker without
 * its content) or `corrupt` (unparseable, a checksum or count that disagrees, a stream that is not
 * the run's or not dense from version 1).
 *
 * @internal
 */
export interface ArchiveDefect {
  kind: "missing" | "corrupt";
  reason: string;
}

/** The marker's JSON, or a defect. @internal */
export function parseArchiveMarker(bytes: Uint8Array | null): ArchiveMarker | ArchiveDefect {
  if (bytes === null) return { kind: "missing", reason: "the .complete marker is missing" };
  try {
    const m = JSON.parse(new TextDecoder().decode(bytes)) as Partial<ArchiveMarker>;
    if (
      m.format !== ARCHIVE_FORMAT ||
      typeof m.runId !== "string" ||
      typeof m.streamId !== "string" ||
      !Number.isSafeInteger(m.events) ||
      typeof m.checksum !== "string" ||
      !/^[0-9a-f]{64}$/.test(m.checksum)
    )
      return { kind: "corrupt", reason: "the .complete marker is not a shardledger.archive/1 marker" };
    return m as ArchiveMarker;
  } catch {
    return { kind: "corrupt", reason: "the .complete marker is not JSON" };
  }
}

/** Whether a parse result is a defect. @internal */
export const isArchiveDefect = (v: unknown): v is ArchiveDefect =>
  typeof v === "object" && v !== null && "kind" in v && "reason" in v && !("format" in v);

/**
 * Checks an archive's content against its marker and, when given, against what the log recorded
 * (`expected`: the `Archived` event's checksum and count), then decodes it. Returns the events or
 * the first defect found.
 *
 * @internal
 */
export function verifyArchive(
  runId: string,
  streamId: string,
  marker: ArchiveMarker,
  content: Uint8Array | null,
  expected?: { checksum: string | null; events: number },
): StoredEvent[] | ArchiveDefect {
  if (content === null)
    return { kind: "missing", reason: "the marker is present but the content (.jsonl) is missing" };
  if (marker.runId !== runId || marker.streamId !== streamId)
    return { kind: "corrupt", reason: `the marker names ${marker.streamId}, not ${streamId}` };
  if (expected && expected.checksum !== null && expected.checksum !== marker.checksum)
    return {
      kind: "corrupt",
      reason: `the marker's checksum ${marker.checksum} is not the recorded ${expected.checksum}`,
    };
  if (expected && expected.events !== marker.events)
    return {
      kind: "corrupt",
      reason: `the marker counts ${marker.events} event(s), the log recorded ${expected.events}`,
    };
  const actual = sha256Hex(content);
  if (actual !== marker.checksum)
    return {
      kind: "corrupt",
      reason: `the content (.jsonl) has sha256 ${actual}, the marker says ${marker.checksum}`,
    };
  const events: StoredEvent[] = [];
  const text = new TextDecoder().decode(content);
  const lines = text.length === 0 ? [] : text.slice(0, -1).split("\n");
  if (text.length > 0 && !text.endsWith("\n"))
    return { kind: "corrupt", reason: "the content (.jsonl) does not end with a newline" };
  for (const [i, line] of lines.entries()) {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return { kind: "corrupt", reason: `line ${i + 1} of the content (.jsonl) is not JSON` };
    }
    if (e.streamId !== streamId || e.streamVersion !== i + 1)
      return { kind: "corrupt", reason: `line ${i + 1} is not version ${i + 1} of ${streamId}` };
    events.push({
      globalPosition: e.globalPosition as number,
      eventId: e.eventId as string,
      streamId,
      streamVersion: i + 1,
      type: e.type as string,
      schemaVersion: e.schemaVersion as number,
      data: e.data,
      metadata: e.metadata as EventMetadata,
      recordedAt: new Date(e.recordedAt as string),
    });
  }
  if (events.length !== marker.events)
    return {
      kind: "corrupt",
      reason: `the content (.jsonl) holds ${events.length} event(s), the marker says ${marker.events}`,
    };
  return events;
}
