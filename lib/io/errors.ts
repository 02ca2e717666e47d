/**
 * Typed errors of checkpoint reading and writing. Every message names the file or folder, and values
 * taken from a file (tensor names, header text) are cut to a bounded length, saying how much was cut.
 * @module
 */

import { MoekitError } from "../core/errors.ts";

/**
 * A checkpoint file or folder that cannot be read or written as asked: a missing or malformed index, an
 * output path that is an input, an existing output without `overwrite`. `path` is the file or folder.
 *
 * @example
 * ```ts
 * import { CheckpointError, MoekitError } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const e = new CheckpointError("out", "is a file; the output must be a folder");
 * assert.equal(e.message, "out: is a file; the output must be a folder");
 * assert.ok(e instanceof MoekitError);
 * ```
 */
export class CheckpointError extends MoekitError {
  /** The file or folder. */
  readonly path: string;
  /** Builds the message from the path and the problem. */
  constructor(path: string, problem: string) {
    super(`${clip(path, 400)}: ${problem}`);
    this.path = path;
  }
}

/**
 * A malformed or unreadable safetensors file. `rule` names the format rule that was broken (for example
 * `"utf8"`, `"json"`, `"integer"`, `"offsets"`), `offset` the byte offset in the file where it was found.
 *
 * @example
 * ```ts
 * import { CheckpointError, SafetensorsError } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const e = new SafetensorsError("a.safetensors", "header-length", "header length 999 exceeds the file (72 bytes)", 0);
 * assert.equal(e.message, "a.safetensors: header length 999 exceeds the file (72 bytes) [rule header-length, byte 0]");
 * assert.ok(e instanceof CheckpointError);
 * ```
 */
export class SafetensorsError extends CheckpointError {
  /** The broken rule, a short identifier (see the module documentation of `safetensors.ts`). */
  readonly rule: string;
  /** Byte offset in the file, when the problem is at one place. */
  readonly offset?: number;
  /** Builds the message from the file, the rule, the problem and the byte offset. */
  constructor(path: string, rule: string, problem: string, offset?: number) {
    super(path, `${problem} [rule ${rule}${offset === undefined ? "" : `, byte ${offset}`}]`);
    this.rule = rule;
    this.offset = offset;
  }
}

/**
 * Cuts a value taken from a file to at most `max` characters for an error message, saying how much was
 * cut: messages stay small whatever the file holds.
 */
export function clip(text: string, max = 120): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}… (${text.length - max} more characters cut)`;
}
