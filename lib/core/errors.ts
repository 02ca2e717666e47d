/**
 * Typed errors. Every error moekit throws is a {@link MoekitError}; the subclasses say which kind of
 * problem it is, and the message names the offending shape, index or value and what to do about it.
 * @module
 */

/**
 * Base class of every error moekit throws.
 *
 * @example
 * ```ts
 * import { matrix, MoekitError, ShapeError } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * assert.throws(() => matrix.fromArrays([[1, 2], [3]]), MoekitError);
 * assert.ok(new ShapeError("x", [1], [2]) instanceof MoekitError);
 * ```
 */
export class MoekitError extends Error {
  /** Creates the error with a message that names the problem. */
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * Two shapes do not fit together (matrix product, gate width, weight layout).
 *
 * @example
 * ```ts
 * import { ShapeError } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const e = new ShapeError("gate W", [8, 16], [8, 32]);
 * assert.equal(e.message, "gate W: expected shape [8,16], got [8,32]");
 * ```
 */
export class ShapeError extends MoekitError {
  /** The expected shape (use -1 for "any"). */
  readonly expected: readonly number[];
  /** The shape that was given. */
  readonly actual: readonly number[];
  /** Builds the message from the array's name, both shapes and an optional hint on how to fix it. */
  constructor(what: string, expected: readonly number[], actual: readonly number[], hint = "") {
    const fmt = (s: readonly number[]) => `[${s.map((v) => (v < 0 ? "*" : String(v))).join(",")}]`;
    super(`${what}: expected shape ${fmt(expected)}, got ${fmt(actual)}${hint ? `; ${hint}` : ""}`);
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * An input holds NaN or ±Infinity. The message names the array and the first bad (row, col).
 *
 * @example
 * ```ts
 * import { matrix, NonFiniteError } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const x = matrix.zeros(4, 2);
 * x.data[3 * 2 + 1] = NaN;
 * assert.throws(() => matrix.assertFinite("hidden states X", x), (e: NonFiniteError) => e.row === 3 && e.col === 1);
 * ```
 */
export class NonFiniteError extends MoekitError {
  /** Row of the first non-finite entry. */
  readonly row: number;
  /** Column of the first non-finite entry. */
  readonly col: number;
  /** Builds the message from the array's name, the position and the bad value. */
  constructor(what: string, row: number, col: number, value: number) {
    super(
      `${what}: non-finite value ${value} at row ${row}, col ${col}; ` +
        `clean the input (or check the upstream layer for overflow) before routing`,
    );
    this.row = row;
    this.col = col;
  }
}

/**
 * An option or argument is out of range or inconsistent (k > E, capacity ≤ 0, unknown policy).
 *
 * @example
 * ```ts
 * import { OptionError } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const e = new OptionError("k", 9, "k must be in 1..E = 8");
 * assert.equal(e.message, "k = 9: k must be in 1..E = 8");
 * assert.equal(e.option, "k");
 * ```
 */
export class OptionError extends MoekitError {
  /** The option's name. */
  readonly option: string;
  /** Builds the message from the option's name, the given value and the rule it breaks. */
  constructor(option: string, value: unknown, rule: string) {
    super(`${option} = ${typeof value === "string" ? JSON.stringify(value) : String(value)}: ${rule}`);
    this.option = option;
  }
}
