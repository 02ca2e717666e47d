/**
 * Flag handling the example scripts share, the same as the `mod.ts` commands (lib/cli/args.ts): a usage
 * error prints one line, `error: …` naming the flag, the bad value and what is allowed, then a hint to
 * run with `--help`, on stderr, and exits 2 (no stack trace, not the whole usage text); `--help` prints
 * the usage on stdout and exits 0. Integer flags are checked before any work starts.
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import { MoekitError } from "../lib/core/errors.ts";
import { parseCommandLine, usageErrorText } from "../lib/cli/args.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * The flags of `Deno.args` (no positionals): an unknown or malformed flag is a usage error, and `--help`
 * (which `options` must declare) prints the usage and exits 0.
 */
export function parseFlags<const O extends Options>(usage: string, options: O) {
  return parseCommand(usage, options, 0).values;
}

/**
 * The flags of `Deno.args` and up to `maxPositionals` arguments besides them (more is a usage error), as
 * {@link parseFlags} does.
 */
export function parseCommand<const O extends Options>(usage: string, options: O, maxPositionals: number) {
  let parsed;
  try {
    parsed = parseCommandLine({ args: Deno.args, allowPositionals: maxPositionals > 0, options });
  } catch (e) {
    if (!(e instanceof MoekitError)) throw e;
    usageError(usage, e.message);
  }
  if ((parsed.values as Record<string, unknown>).help) {
    console.log(usage);
    Deno.exit(0);
  }
  if (parsed.positionals.length > maxPositionals) {
    const extra = parsed.positionals[maxPositionals];
    usageError(
      usage,
      `unexpected argument ${JSON.stringify(extra)}: this program takes at most ${maxPositionals} (${
        usage.split("\n")[0].replace(/^usage: /, "")
      })`,
    );
  }
  return parsed;
}

/** The command a usage text is for: its first line without `usage: ` and the arguments (`deno run examples/x.ts`). */
function commandOf(usage: string): string {
  return usage.split("\n")[0].replace(/^usage:\s*/, "").replace(/\s+[[<].*$/, "");
}

/**
 * Prints `error: <message>` and a hint to run with `--help` on stderr (lib/cli/args.ts's
 * `usageErrorText`, with the command taken from the usage's first line), then exits with status 2.
 */
export function usageError(usage: string, message: string): never {
  console.error(usageErrorText(message, commandOf(usage)));
  Deno.exit(2);
}

/**
 * Prints `error: <message>` on stderr and exits with status 2, without the `--help` hint: for a problem
 * with a file or a permission (an existing output, a folder that is a file), where the options are right
 * and the message says what to do.
 */
export function refuse(message: string): never {
  console.error(`error: ${message}`);
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
