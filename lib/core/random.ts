/**
 * The seeded pseudo-random generator that every random choice in moekit uses (jitter, noise, Gumbel
 * samples, DARE masks, initialisation). xoshiro128** seeded through splitmix32, so the same seed gives
 * the same stream on every platform.
 * @module
 */

import { OptionError } from "./errors.ts";

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a hash of a string to 32 bits (used to derive sub-streams from labels). */
function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A seeded random number generator (xoshiro128**).
 *
 * @example
 * ```ts
 * import { Rng } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const a = new Rng(42), b = new Rng(42);
 * assert.equal(a.uniform(), b.uniform());
 * // an independent, reproducible sub-stream per label
 * assert.equal(new Rng(42).derive("layer.0.mlp", 1).normal(), new Rng(42).derive("layer.0.mlp", 1).normal());
 * assert.notEqual(new Rng(42).derive("layer.0").uniform(), new Rng(42).derive("layer.1").uniform());
 * assert.ok(a.int(10) >= 0 && a.int(10) < 10);
 * ```
 */
export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;
  #spare: number | undefined;
  /** The seed this generator was created with. */
  readonly seed: number;

  /** Creates a generator from any integer seed (taken modulo 2³²). */
  constructor(seed = 0) {
    if (!Number.isFinite(seed)) throw new OptionError("seed", seed, "the seed must be a finite integer");
    this.seed = seed;
    const st = { s: (seed >>> 0) ^ Math.floor(seed / 4294967296) };
    this.#s0 = splitmix32(st);
    this.#s1 = splitmix32(st);
    this.#s2 = splitmix32(st);
    this.#s3 = splitmix32(st);
  }

  /** A new generator whose stream depends only on this seed and the given labels. */
  derive(...labels: (string | number)[]): Rng {
    let h = this.seed >>> 0;
    for (const l of labels) h = Math.imul(h ^ hashString(String(l)), 0x9e3779b1) >>> 0;
    return new Rng(h);
  }

  /** Next raw 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextUint32() >>> 5, lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!(n >= 1) || !Number.isInteger(n)) throw new OptionError("n", n, "int(n) needs an integer n ≥ 1");
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal sample (Box–Muller, caching the second value). */
  normal(): number {
    if (this.#spare !== undefined) {
      const v = this.#spare;
      this.#spare = undefined;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Standard Gumbel sample `−ln(−ln U)`. */
  gumbel(): number {
    let u = 0;
    while (u === 0) u = this.uniform();
    return -Math.log(-Math.log(u));
  }

  /**
   * Counter-mode 32-bit words keyed by this generator's seed, for long streams drawn a buffer at a time
   * (DARE and DELLA masks): word `i` is splitmix32's output for the state `seed + (i + 1)·0x9e3779b9`
   * (mod 2³²), i.e. the `i`-th output of splitmix32 started at `seed`. Writes words `offset …
   * offset + out.length − 1` into `out`. Random access (any range can be drawn on its own, in any order) and
   * independent of {@link Rng.uniform}'s stream, which it does not advance.
   *
   * @example
   * ```ts
   * import { Rng } from "@moekit/moekit/core";
   * import assert from "node:assert/strict";
   * const all = new Rng(0).counterWordsInto(new Uint32Array(3));
   * assert.deepEqual(Array.from(all), [2462723854, 1020716019, 454327756]);
   * // words 1 and 2 on their own are the same
   * assert.deepEqual(Array.from(new Rng(0).counterWordsInto(new Uint32Array(2), 1)), [1020716019, 454327756]);
   * ```
   */
  counterWordsInto(out: Uint32Array, offset = 0): Uint32Array {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new OptionError("offset", offset, "counterWordsInto needs an integer offset ≥ 0");
    }
    // state before word 0 of out: seed + offset·golden (mod 2³²; imul wraps as the stream does)
    let s = ((this.seed >>> 0) + Math.imul(offset % 4294967296, 0x9e3779b9)) | 0;
    for (let i = 0; i < out.length; i++) {
      s = (s + 0x9e3779b9) | 0;
      let z = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      out[i] = z ^ (z >>> 16);
    }
    return out;
  }

  /** Fills `out` with uniforms in [lo, hi). */
  fillUniform(out: Float32Array | Float64Array, lo = 0, hi = 1): typeof out {
    for (let i = 0; i < out.length; i++) out[i] = lo + (hi - lo) * this.uniform();
    return out;
  }

  /** Fills `out` with normals of the given mean and standard deviation. */
  fillNormal(out: Float32Array | Float64Array, mean = 0, std = 1): typeof out {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
