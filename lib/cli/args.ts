/**
 * Command-line flags for moekit's programs (the `mod.ts` commands and the examples): `node:util`'s
 * `parseArgs`, strict, whose errors come back as a {@link MoekitError} in moekit's words — the flag, what is
 * wrong with it, and the flags the program accepts — instead of Node's message (whose unknown-option hint
 * has unbalanced quotes). Internal: not re-exported by the barrels.
 * @module
 */

import { parseArgs } from "node:util";
import type { ParseArgsConfig } from "node:util";
import { MoekitError } from "../core/errors.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** `parseArgs(config)` with `strict: true`; a bad command line throws a {@link MoekitError} (see the module). */
export function parseCommandLine<const C extends ParseArgsConfig & { readonly options: Options }>(
  config: C,
): ReturnType<typeof parseArgs<C & { strict: true }>> {
  try {
    return parseArgs({ ...config, strict: true as const });
  } catch (e) {
    const message = parseArgsMessage(e, config.options, config.allowPositionals ?? false);
    if (message === undefined) throw e;
    throw new MoekitError(message);
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
