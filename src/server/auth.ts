import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import { describeError, ValidationError } from "../errors.js";
import { idSchema } from "../events/identifiers.js";
import { parseWithSchema } from "../validation.js";

/**
 * A token's scope: `read` (views, events, audit) < `write` (runs and attempts of its datasets) <
 * `admin` (datasets, publish, cleanup, gc, retry-failed). A higher scope can do everything a lower
 * one can.
 *
 * @internal
 */
export type Scope = "read" | "write" | "admin";

const SCOPE_RANK: Record<Scope, number> = { read: 0, write: 1, admin: 2 };

/** The tokens file (`--tokens FILE`, or the JSON itself in `SHARDLEDGER_TOKENS`). */
const tokensFileSchema = z.strictObject({
  tokens: z
    .array(
      z.strictObject({
        token: z.string().min(1).max(4096),
        scope: z.enum(["read", "write", "admin"]),
        datasets: z.union([z.literal("*"), z.array(idSchema).min(1)]),
        /** A name for logs (never the token itself). */
        name: z.string().min(1).max(128).optional(),
      }),
    )
    .min(1),
});

/**
 * One configured token, kept as the SHA-256 of its text: requests are matched by comparing
 * hashes in constant time, and the text itself is never kept or logged.
 *
 * @internal
 */
export interface TokenEntry {
  readonly hash: Buffer;
  readonly scope: Scope;
  readonly datasets: "*" | ReadonlySet<string>;
  readonly name: string;
}

/**
 * Who a request is: a token's grant, or `open` (no tokens configured: everything is admin).
 *
 * @internal
 */
export interface Principal {
  readonly scope: Scope;
  readonly datasets: "*" | ReadonlySet<string>;
  readonly name: string;
}

/** @internal the principal of a server that runs without tokens. */
export const OPEN_PRINCIPAL: Principal = { scope: "admin", datasets: "*", name: "open" };

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest();

/**
 * Validates the tokens JSON. `source` names where it came from (`--tokens`, `SHARDLEDGER_TOKENS`)
 * and prefixes the field of a {@link ValidationError} (`--tokens: tokens.0.scope: …`).
 *
 * @internal
 */
export function parseTokens(text: string, source: string): TokenEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ValidationError(source, `is not JSON: ${describeError(e)}`);
  }
  let parsed: z.output<typeof tokensFileSchema>;
  try {
    parsed = parseWithSchema(tokensFileSchema, json, "tokens");
  } catch (e) {
    if (e instanceof ValidationError) {
      throw new ValidationError(`${source}: ${e.field}`, e.message.slice(e.field.length + 2));
    }
    throw e;
  }
  const seen = new Set<string>();
  return parsed.tokens.map((t, i) => {
    const hash = sha256(t.token);
    const key = hash.toString("hex");
    if (seen.has(key)) throw new ValidationError(`${source}: tokens.${i}.token`, "is listed twice");
    seen.add(key);
    return {
      hash,
      scope: t.scope,
      datasets: t.datasets === "*" ? "*" : new Set(t.datasets),
      name: t.name ?? `token#${i}`,
    };
  });
}

/**
 * The tokens to serve with: from `--tokens FILE`, else from the env `SHARDLEDGER_TOKENS`, else
 * none (an open server).
 *
 * @internal
 */
export function loadTokens(options: { file?: string; env?: string }): TokenEntry[] {
  if (options.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.file, "utf8");
    } catch (e) {
      throw new ValidationError("--tokens", `cannot read ${options.file}: ${describeError(e)}`);
    }
    return parseTokens(text, "--tokens");
  }
  if (options.env !== undefined && options.env !== "") return parseTokens(options.env, "SHARDLEDGER_TOKENS");
  return [];
}

/**
 * The token a bearer header carries, matched against every configured token in constant time
 * (each comparison runs, whichever matches), or `undefined`.
 *
 * @internal
 */
export function authenticate(
  tokens: readonly TokenEntry[],
  header: string | undefined,
): Principal | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) return undefined;
  const presented = sha256(match[1] as string);
  let found: TokenEntry | undefined;
  for (const entry of tokens) {
    if (timingSafeEqual(entry.hash, presented) && found === undefined) found = entry;
  }
  return found;
}

/** @internal whether a principal's scope reaches `needed`. */
export function scopeAllows(principal: Principal, needed: Scope): boolean {
  return SCOPE_RANK[principal.scope] >= SCOPE_RANK[needed];
}

/** @internal whether a principal may write to a dataset (read sees every dataset). */
export function datasetAllowed(principal: Principal, datasetId: string): boolean {
  return principal.datasets === "*" || principal.datasets.has(datasetId);
}

/**
 * Whether a host is a loopback address (`127.0.0.0/8`, `::1`, `localhost`): the only addresses
 * an open server (no tokens) may listen on.
 *
 * @internal
 */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
