/**
 * Command-line flags for moekit's programs (the `mod.ts` commands and the examples): `node:util`'s
 * `parseArgs`, strict, whose errors come back as a {@link UsageError} in moekit's words — the flag, what is
 * wrong with it, and the flags the program accepts — instead of Node's message (whose unknown-option hint
 * has unbalanced quotes). Every program reports a usage error the same way ({@link usageErrorText}): one
 * line naming the flag, the bad value and what is allowed, then a hint to run with `--help`, exit 2; the
 * full usage text is printed only for `--help` (stdout, exit 0). Internal: not re-exported by the barrels.
 * @module
 */

import { parseArgs } from "node:util";
import type { ParseArgsConfig } from "node:util";
import { MoekitError } from "../core/errors.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * A mistake on the command line — an unknown flag, a bad or missing value, a missing or extra argument —
 * as opposed to a problem with the files the program reads or writes. A program prints it with
 * {@link usageErrorText} and exits 2.
 *
 * @example
 * ```ts
 * import { UsageError } from "./args.ts";
 * import { MoekitError } from "../core/errors.ts";
 * import assert from "node:assert/strict";
 * const e = new UsageError(`--seed "x": use an integer`);
 * assert.ok(e instanceof MoekitError);
 * assert.equal(e.name, "UsageError");
 * ```
 */
export class UsageError extends MoekitError {}

/**
 * What a program prints on stderr for a usage error: `error: <message>` (its first line only) and a hint
 * that `<command> --help` lists every option — never the whole usage text, which buries the one line
 * that matters.
 *
 * @example
 * ```ts
 * import { usageErrorText } from "./args.ts";
 * import assert from "node:assert/strict";
 * assert.equal(
 *   usageErrorText(`--seed "x": use an integer`, "deno run -A mod.ts merge"),
 *   `error: --seed "x": use an integer\nrun "deno run -A mod.ts merge --help" for all options`,
 * );
 * ```
 */
export function usageErrorText(message: string, command: string): string {
  return `error: ${message.split("\n")[0]}\nrun "${command} --help" for all options`;
}

/**
 * `parseArgs(config)` with `strict: true`; a bad command line throws a {@link UsageError} (see the module).
 *
 * @example
 * ```ts
 * import { parseCommandLine, UsageError } from "./args.ts";
 * import assert from "node:assert/strict";
 * const options = { seed: { type: "string" }, help: { type: "boolean" } } as const;
 * assert.equal(parseCommandLine({ args: ["--seed", "3"], options }).values.seed, "3");
 * assert.throws(
 *   () => parseCommandLine({ args: ["--sed", "3"], options }),
 *   (e: Error) => e instanceof UsageError && e.message === "unknown option --sed; the options are --seed, --help",
 * );
 * ```
 */
export function parseCommandLine<const C extends ParseArgsConfig & { readonly options: Options }>(
  config: C,
): ReturnType<typeof parseArgs<C & { strict: true }>> {
  try {
    return parseArgs({ ...config, strict: true as const });
  } catch (e) {
    const message = parseArgsMessage(e, config.options, config.allowPositionals ?? false);
    if (message === undefined) throw e;
    throw new UsageError(message);
  }
}

/** The flags a program accepts, for messages: `--a, --b, …`. */
function flagList(options: Options): string {
  return Object.keys(options).map((name) => `--${name}`).join(", ");
}

/**
 * The message for a `parseArgs` error (`ERR_PARSE_ARGS_*`), or undefined for any other error. Node names
 * the flag in single quotes (`'--x'`, `'--x <value>'`, `'-h, --help'`); the message names it bare.
 */
function parseArgsMessage(e: unknown, options: Options, positionals: boolean): string | undefined {
  const code = (e as { code?: unknown })?.code;
  if (typeof code !== "string" || !code.startsWith("ERR_PARSE_ARGS")) return undefined;
  const text = (e as Error).message;
  const quoted = /'([^']*)'/.exec(text)?.[1] ?? "";
  const flag = quoted.replace(/ <value>$/, "").split(", ").pop()!;
  const accepted = `the options are ${flagList(options)}`;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const dash = positionals ? `; an argument that starts with "-" goes after "--"` : "";
    return `unknown option ${flag}; ${accepted}${dash}`;
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    if (/ argument missing/.test(text)) return `${flag} needs a value: ${flag} <value>`;
    if (/ ambiguous/.test(text)) return `${flag} needs a value; write one that starts with "-" as ${flag}=-…`;
    if (/ does not take an argument/.test(text)) return `${flag} takes no value (it is a switch): drop "=…"`;
  }
  if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
    return `unexpected argument ${JSON.stringify(quoted)}: this program takes only options; ${accepted}`;
  }
  return text.split(/\.\s/)[0];
}
