/**
 * Hides a password in a connection URL before it is echoed (in an error, in the CLI's output).
 * A module of its own, with no driver import, so the CLI can use it without loading pg or PGlite.
 *
 * @example
 * ```ts
 * redactUrl("postgres://me:secret@db/x") // "postgres://me:***@db/x"
 * ```
 */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}
