/**
 * Flag handling the example scripts share: a usage error prints `error: …`, a blank line and the usage
 * text on stderr and exits 2 (no stack trace); integer flags are checked before any work starts.
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import { MoekitError } from "../lib/core/errors.ts";
import { parseCommandLine } from "../lib/cli/args.ts";

/**
 * The flags of `Deno.args` (no positionals): an unknown or malformed flag is a usage error, and `--help`
 * (which `options` must declare) prints the usage and exits 0.
 */
export function parseFlags<const O extends NonNullable<ParseArgsConfig["options"]>>(
  usage: string,
  options: O,
) {
  let parsed;
  try {
    parsed = parseCommandLine({ args: Deno.args, allowPositionals: false, options });
  } catch (e) {
    if (!(e instanceof MoekitError)) throw e;
    usageError(usage, e.message);
  }
  if ((parsed.values as Record<string, unknown>).help) {
    console.log(usage);
    Deno.exit(0);
  }
  return parsed.values;
}

/** Prints `error: <message>` and the usage on stderr, then exits with status 2. */
export function usageError(usage: string, message: string): never {
  console.error(`error: ${message}\n\n${usage}`);
  Deno.exit(2);
}

/** The integer value of `--name` (or `def` when absent); anything else, or below `min`, is a usage error. */
export function intFlag(
  usage: string,
  values: Record<string, unknown>,
  name: string,
  def: number,
  min: number,
): number {
  const raw = values[name];
  if (raw === undefined) return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) {
    usageError(usage, `--${name} must be an integer ≥ ${min}, got "${raw}"`);
  }
  return v;
}

/** The most float32 entries an example holds at once: 2²⁸ (1 GiB). */
export const MAX_EXAMPLE_FLOATS = 2 ** 28;

/**
 * Stops with a usage error, before any work, when the sizes asked for would hold more than
 * {@link MAX_EXAMPLE_FLOATS} float32 entries (`floats`, as the example computes it from `flags`): an
 * example is a demonstration, not a job that should run out of memory halfway.
 */
export function checkWorkSize(usage: string, flags: string, floats: number): void {
  if (floats <= MAX_EXAMPLE_FLOATS) return;
  usageError(
    usage,
    `${flags} would hold ${floats.toExponential(2)} float32 entries (${
      (floats * 4 / 2 ** 30).toFixed(1)
    } GiB); this example stops at 2^28 (1 GiB): lower them`,
  );
}
