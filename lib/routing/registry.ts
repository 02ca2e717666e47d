/**
 * The selector registry: serialisable selector descriptions (`{ kind, options }`) and the factories
 * that rebuild them, so a worker thread can rebuild the selector of a route call (see `backend.ts`,
 * "Threads"). Built-in selectors register themselves where they are defined.
 * @module
 */

import { OptionError } from "../core/errors.ts";
import type { Selector, SelectorSpec } from "./select.ts";

const factories = new Map<string, (options: Record<string, unknown>) => Selector>();

/** URL of this module; a worker imports it to call {@link createSelector}. */
export const SELECTOR_REGISTRY_URL: string = import.meta.url;

/**
 * Registers a selector factory under `kind`. A selector whose `spec()` returns `{ kind, options, module }`
 * can then run on worker threads: the worker imports `module` (which registers `kind` when it loads) and
 * calls `createSelector(spec)`.
 *
 * @example
 * ```ts
 * import { createSelector, registerSelector, softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * registerSelector("top1", () => softmaxTopK({ k: 1 }));
 * assert.equal(createSelector({ kind: "top1", options: {} }).k, 1);
 * ```
 */
export function registerSelector(
  kind: string,
  factory: (options: Record<string, unknown>) => Selector,
): void {
  if (typeof kind !== "string" || kind === "") {
    throw new OptionError("kind", kind, "must be a non-empty string");
  }
  factories.set(kind, factory);
}

/**
 * Rebuilds a selector from its description.
 *
 * @example
 * ```ts
 * import { createSelector, softmaxTopK } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const again = createSelector(softmaxTopK({ k: 2 }).spec!());
 * assert.equal(again.name, "softmax-topk");
 * ```
 */
export function createSelector(spec: SelectorSpec): Selector {
  const make = factories.get(spec.kind);
  if (!make) {
    throw new OptionError(
      "selector kind",
      spec.kind,
      `not registered; known: ${[...factories.keys()].join(", ")} (register it with registerSelector)`,
    );
  }
  return make(spec.options);
}
