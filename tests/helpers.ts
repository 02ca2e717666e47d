// Shared test helpers.
import assert from "node:assert/strict";
import { type Mat, matrix } from "../mod.ts";

/** Asserts |a − b| ≤ tol elementwise. */
export function assertClose(
  actual: ArrayLike<number> | number,
  expected: ArrayLike<number> | number,
  tol = 5e-5,
): void {
  const a = typeof actual === "number" ? [actual] : Array.from(actual);
  const e = typeof expected === "number" ? [expected] : Array.from(expected);
  assert.equal(a.length, e.length, `length ${a.length} vs ${e.length}`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - e[i]) <= tol, `index ${i}: ${a[i]} vs ${e[i]} (tol ${tol})`);
  }
}

/** Hidden states whose logits through W = I are ln(probabilities): routes exactly the given probabilities. */
export function probsAsTokens(probs: number[][]): Mat {
  return matrix.fromArrays(probs.map((r) => r.map(Math.log)));
}

/** Logit-of-scores for sigmoid routers: sigmoid(x) = s. */
export function scoresAsTokens(scores: number[][]): Mat {
  return matrix.fromArrays(scores.map((r) => r.map((s) => Math.log(s / (1 - s)))));
}
