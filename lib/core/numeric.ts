/**
 * Scalar numerics shared by routers and losses, all in float64: stable softmax, logsumexp, sigmoid,
 * softplus, the normal CDF and Python-style round-half-to-even.
 * @module
 */

/** `1 / (1 + e^{−x})`, stable for large |x|. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** `ln(1 + e^x)`, stable for large |x|. */
export function softplus(x: number): number {
  return x > 30 ? x : x < -30 ? Math.exp(x) : Math.log1p(Math.exp(x));
}

/** Largest of `a[off .. off+n)`. */
export function rowMax(a: ArrayLike<number>, off: number, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (a[off + i] > m) m = a[off + i];
  return m;
}

/** `ln Σ exp(a[off+i])` over n entries (−∞ when all are −∞). */
export function logSumExp(a: ArrayLike<number>, off: number, n: number): number {
  const m = rowMax(a, off, n);
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(a[off + i] - m);
  return m + Math.log(s);
}

/** Writes `softmax(a[off .. off+n))` into `out[outOff ..]` (float64 arithmetic). */
export function softmaxInto(
  a: ArrayLike<number>,
  off: number,
  n: number,
  out: Float64Array | Float32Array,
  outOff = 0,
): void {
  const m = rowMax(a, off, n);
  let s = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(a[off + i] - m);
    out[outOff + i] = e;
    s += e;
  }
  for (let i = 0; i < n; i++) out[outOff + i] /= s;
}

/** Python's `round`: to the nearest integer, halves to the even neighbour (JS `Math.round` rounds half up). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x), diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Standard normal CDF Φ(x) (via erfc, absolute error < 1.2e-7). */
export function normalCdf(x: number): number {
  return 0.5 * erfc(-x / Math.SQRT2);
}

function erfc(x: number): number {
  // Numerical Recipes erfcc (Chebyshev), fractional error < 1.2e-7.
  const z = Math.abs(x), t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(
    -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
                      t *
                        (0.27886807 +
                          t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
  );
  return x >= 0 ? r : 2 - r;
}
