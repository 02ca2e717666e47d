/**
 * Synthetic data: topic-switching token streams.
 * @module
 */

export * from "../core/mod.ts";
export * from "./synthetic.ts";
