import pc from "picocolors";
import type { CliIo } from "./cli-io.js";

/**
 * Colours for human output: real colours only when stdout is a terminal and `NO_COLOR` is unset
 * (https://no-color.org) and `--no-color` was not given; identity functions otherwise.
 *
 * @example
 * ```ts
 * const style = createStyle(io, { color: true })
 * io.stdout.write(style.green("SUCCEEDED"))
 * ```
 */
export interface Style {
  readonly enabled: boolean;
  bold(text: string): string;
  dim(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
  /** Colours a run or attempt status by what it means (green done, red failed, yellow in flight). */
  status(status: string): string;
}

/** Builds the {@link Style} for an io and the `--color`/`--no-color` flag. */
export function createStyle(io: Pick<CliIo, "stdout" | "env">, options: { color: boolean }): Style {
  const noColor = io.env.NO_COLOR !== undefined && io.env.NO_COLOR !== "";
  const enabled = options.color && io.stdout.isTTY === true && !noColor;
  const c = pc.createColors(enabled);
  return {
    enabled,
    bold: c.bold,
    dim: c.dim,
    red: c.red,
    green: c.green,
    yellow: c.yellow,
    cyan: c.cyan,
    status(status) {
      switch (status) {
        case "SUCCEEDED":
        case "WINNER":
        case "DELETED":
          return c.green(status);
        case "FAILED":
        case "exhausted":
          return c.red(status);
        case "LOSER":
          return c.dim(status);
        default:
          return c.yellow(status);
      }
    },
  };
}
