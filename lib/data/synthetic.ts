/**
 * Seeded synthetic token streams with topic structure, so routing, caching and compression have
 * something realistic to work on without downloading data.
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { OptionError } from "../core/errors.ts";
import { Rng } from "../core/random.ts";

/**
 * Options of {@link topicStream}.
 *
 * @example
 * ```ts
 * import { topicStream, type TopicStreamOptions } from "@moekit/moekit/data";
 * import assert from "node:assert/strict";
 * const o: TopicStreamOptions = { tokens: 512, dim: 8, topics: 6, skew: 0, seed: 7 };
 * assert.ok(topicStream(o).topics.every((c) => c >= 0 && c < 6));
 * ```
 */
export interface TopicStreamOptions {
  /** Number of tokens T. */
  readonly tokens: number;
  /** Hidden size d. */
  readonly dim: number;
  /** Number of topics (mixture components). Default 8. */
  readonly topics?: number;
  /** Mean length of a run of tokens on one topic (locality). Default 32. */
  readonly segmentLength?: number;
  /** Zipf exponent of topic popularity (0 = uniform). Default 1. */
  readonly skew?: number;
  /** Within-topic noise std per coordinate (centres are N(0,1)). Default 0.3. */
  readonly noise?: number;
  /** Token ids per topic (ids of topic c are `c·vocabPerTopic + i`). Default 64. */
  readonly vocabPerTopic?: number;
  /** Seed. Default 0. */
  readonly seed?: number;
}

/**
 * A synthetic token stream with topic structure.
 *
 * @example
 * ```ts
 * import { topicStream, type TopicStream } from "@moekit/moekit/data";
 * import assert from "node:assert/strict";
 * const s: TopicStream = topicStream({ tokens: 64, dim: 8, topics: 4, vocabPerTopic: 10, seed: 1 });
 * // token ids of topic c are c·vocabPerTopic + i
 * assert.ok(s.tokenIds.every((id, t) => Math.floor(id / 10) === s.topics[t]));
 * assert.deepEqual([s.centres.rows, s.centres.cols], [4, 8]);
 * ```
 */
export interface TopicStream {
  /** Hidden states `[T,d]`. */
  readonly hidden: Mat;
  /** Topic of each token `[T]`. */
  readonly topics: Int32Array;
  /** Token id of each token `[T]`. */
  readonly tokenIds: Int32Array;
  /** Topic centres `[topics, d]`. */
  readonly centres: Mat;
}

/**
 * Gaussian-mixture hidden states whose topics come in runs (geometric lengths) with Zipf popularity —
 * the structure that makes routers specialise and expert caches hit.
 *
 * @example
 * ```ts
 * import { topicStream } from "@moekit/moekit/data";
 * import assert from "node:assert/strict";
 * const s = topicStream({ tokens: 256, dim: 16, topics: 4, seed: 1 });
 * assert.deepEqual([s.hidden.rows, s.hidden.cols, s.topics.length], [256, 16, 256]);
 * assert.deepEqual(topicStream({ tokens: 256, dim: 16, topics: 4, seed: 1 }).hidden.data, s.hidden.data); // seeded
 * ```
 */
export function topicStream(options: TopicStreamOptions): TopicStream {
  const T = options.tokens, d = options.dim, K = options.topics ?? 8;
  for (const [name, v] of [["tokens", T], ["dim", d], ["topics", K]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new OptionError(name, v, "must be an integer ≥ 1");
  }
  const seg = options.segmentLength ?? 32, skew = options.skew ?? 1, noise = options.noise ?? 0.3;
  const vocab = options.vocabPerTopic ?? 64;
  if (!(seg >= 1)) throw new OptionError("segmentLength", seg, "must be ≥ 1");
  const rng = new Rng(options.seed ?? 0);
  const centres = matrix.randn(K, d, { seed: rng.derive("centres").nextUint32() });
  const popularity = Array.from({ length: K }, (_, c) => 1 / (c + 1) ** skew);
  const total = popularity.reduce((a, b) => a + b, 0);
  const pick = () => {
    let u = rng.uniform() * total;
    for (let c = 0; c < K; c++) if ((u -= popularity[c]) < 0) return c;
    return K - 1;
  };
  const hidden = matrix.zeros(T, d), topics = new Int32Array(T), tokenIds = new Int32Array(T);
  let topic = pick();
  for (let t = 0; t < T; t++) {
    if (t > 0 && rng.uniform() < 1 / seg) topic = pick();
    topics[t] = topic;
    tokenIds[t] = topic * vocab + rng.int(vocab);
    for (let j = 0; j < d; j++) hidden.data[t * d + j] = centres.data[topic * d + j] + noise * rng.normal();
  }
  return { hidden, topics, tokenIds, centres };
}
