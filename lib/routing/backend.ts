/**
 * Compute backends for the gate GEMM `logits = X·Wᵀ`: the interface a backend implements, and the
 * registry routers pick from. `routing/` owns this file; `lib/kernels/` implements it (WebAssembly SIMD
 * today, a native BLAS backend through FFI next) and imports nothing else from `routing/`. The plain-JS
 * backend is built in here, so routing works with no kernel at all.
 *
 * ## How a backend plugs in (for backend authors)
 *
 * 1. Implement {@link ComputeBackend}: a `name` (`"native"`, `"wasm"`, …), a `priority` (the highest
 *    *available* one wins `backend: "auto"`: js 0, wasm 10, native 20), `status()` (available or not,
 *    and why — e.g. "no BLAS library found (set MOEKIT_BLAS)" or "--allow-ffi not granted"; it must
 *    never throw and should be cheap after the first call), and `bind(weight)`.
 * 2. `bind(weight [E,d])` copies the weight once into the backend's memory and returns a
 *    {@link GateGemm}. Its one required method, `gemm(x, out)`, writes `x·Wᵀ` (no bias: routing adds it)
 *    into a caller-owned `out [x.rows, E]`. `x` and `out` are ordinary row-major float32 matrices, possibly
 *    sub-views (`data.byteOffset ≠ 0`) of larger buffers; every entry of `out` must be written.
 * 3. Optional fast paths, each used only when present:
 *    - `scratch(rows)`: a reusable `[rows, E]` buffer the backend writes fastest (e.g. inside its own
 *      memory); routing multiplies token tiles into it and selects from it right away, so the `[T,E]`
 *      logits are never built. Valid until the next `scratch` call on the same GateGemm.
 *    - `epilogue(kind, logits)`: a vectorised pass over a logits buffer from `scratch` (after routing added
 *      the bias): `"softmaxSums"` → one `Σ_e exp(l − max_e l)` per row (float32, relative error ≲ 1e-6),
 *      `"sigmoid"` → `σ(l)` for every entry. Return `undefined` to decline (routing then computes it
 *      itself in float64). The returned view is read before the next call.
 *    - `runParallel(job)`: route all tiles of a call over several threads (see {@link ParallelJob}); return
 *      false to let routing run the tiles on the calling thread.
 *    - `release()`: free the backend memory now (otherwise at garbage collection).
 * 4. Register it once, when its module loads: `registerBackend(myBackend)`. The package's root module
 *    and `@moekit/moekit/kernels` import every kernel module; a backend in a user's own module registers
 *    when that module is imported.
 *
 * Results must agree across backends: identical top-k wherever the selection margin exceeds float32
 * rounding, weights within 1e-5 (the JS backend is the reference). Routing checks the logits for
 * non-finite values after `gemm` (bias included) on every backend, so a backend need not.
 *
 * ## Threads
 *
 * A backend may run tiles in parallel in `runParallel`: every thread takes the next tile of
 * `job.tileTokens` rows from a shared counter, computes its logits, adds `job.bias`, checks them
 * (call {@link checkLogitsFinite}), and selects with the selector rebuilt from
 * `job.selector` (`import(job.selector.registry)` then `createSelector(spec)`; `import(spec.module)` first
 * when given). A selector that uses randomness gets, for the tile starting at token `t0`, the stream
 * `new Rng(job.seed).derive("tile", t0)` — the same stream the calling thread uses, so results do not
 * depend on the thread count. The calling thread takes part through `job.runTiles(t0, t1, buffers)`.
 * A backend whose library threads internally (BLAS) may instead leave `runParallel` out.
 *
 * @example
 * ```ts
 * import { type ComputeBackend, matrix, registerBackend, topKRouter } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const tiny: ComputeBackend = {
 *   name: "js-copy",
 *   priority: -1, // never chosen by "auto"
 *   status: () => ({ available: true, reason: "always" }),
 *   bind: (w) => ({
 *     backend: "js-copy",
 *     experts: w.rows,
 *     inputDim: w.cols,
 *     gemm: (x, out) => matrix.matmulT(x, w, out),
 *   }),
 * };
 * registerBackend(tiny);
 * const r = topKRouter({ weight: matrix.identity(3), k: 1, backend: "js-copy" })
 *   .route(matrix.fromArrays([[0, 2, 1]]));
 * assert.equal(r.indices[0], 1);
 * ```
 * @module
 */

import { type Mat, matrix } from "../core/matrix.ts";
import { MoekitError, NonFiniteError, OptionError } from "../core/errors.ts";
import type { SelectionBuffers, SelectorSpec } from "./select.ts";

export type { SelectionBuffers, SelectorSpec };

/**
 * Name of a compute backend: the built-in `"js"`, the WebAssembly `"wasm"`, the native BLAS
 * `"native"`, or any other registered name.
 *
 * @example
 * ```ts
 * import { type Backend } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const b: Backend = "wasm";
 * assert.equal(b, "wasm");
 * ```
 */
export type Backend = "native" | "wasm" | "js" | (string & Record<never, never>);

/**
 * A backend choice: a {@link Backend} name or `"auto"` (the highest-priority available backend).
 *
 * @example
 * ```ts
 * import { type BackendChoice } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const b: BackendChoice = "auto";
 * assert.equal(b, "auto");
 * ```
 */
export type BackendChoice = Backend | "auto";

/**
 * A vectorised pass over a logits tile: `"softmaxSums"` (one `Σ_e exp(l − max)` per row) or
 * `"sigmoid"` (every entry).
 *
 * @example
 * ```ts
 * import { type EpilogueKind } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const k: EpilogueKind = "sigmoid";
 * assert.equal(k, "sigmoid");
 * ```
 */
export type EpilogueKind = "softmaxSums" | "sigmoid";

/**
 * Whether a backend can run here, and why (not).
 *
 * @example
 * ```ts
 * import { type BackendStatus } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const s: BackendStatus = { available: false, reason: "--allow-ffi not granted" };
 * assert.equal(s.available, false);
 * ```
 */
export interface BackendStatus {
  /** True when `bind` will work. */
  readonly available: boolean;
  /** A short human reason: what was found, or what is missing and how to get it. */
  readonly reason: string;
  /** Optional details for `kernelInfo()` (library path, version, threads, SIMD level, …). */
  readonly detail?: Readonly<Record<string, unknown>>;
}

/**
 * A gate weight bound to a backend: multiplies token tiles by it.
 *
 * @example
 * ```ts
 * import { bindGemm, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const g = bindGemm(matrix.fromArrays([[1, 0], [1, 1]]), "js");
 * assert.deepEqual(Array.from(g.gemm(matrix.fromArrays([[2, 3]]), matrix.zeros(1, 2)).data), [2, 5]);
 * ```
 */
export interface GateGemm {
  /** The backend's name. */
  readonly backend: Backend;
  /** Experts E (rows of the weight). */
  readonly experts: number;
  /** Input width d. */
  readonly inputDim: number;
  /** Writes `x·Wᵀ` (no bias) into `out [x.rows, E]` and returns `out`. */
  gemm(x: Mat, out: Mat): Mat;
  /** Optional: a reusable `[rows, E]` buffer the backend writes fastest. */
  scratch?(rows: number): Mat;
  /** Optional: a vectorised epilogue over a buffer from `scratch`, or undefined to decline. */
  epilogue?(kind: EpilogueKind, logits: Mat): Float32Array | undefined;
  /** Optional: runs all tiles of a route call on several threads; false = not done (run them here). */
  runParallel?(job: ParallelJob): boolean;
  /** Optional: frees the backend memory now. */
  release?(): void;
}

/**
 * A tiled selection the caller hands to {@link GateGemm.runParallel}.
 *
 * @example
 * ```ts
 * import { type ParallelJob } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const tiles = (j: ParallelJob) => Math.ceil(j.x.rows / j.tileTokens);
 * assert.equal(typeof tiles, "function");
 * ```
 */
export interface ParallelJob {
  /** Tokens `X [T,d]` (after jitter). */
  readonly x: Mat;
  /** Gate bias `[E]` to add to every logits row (in float64, then rounded to float32), if any. */
  readonly bias?: Float64Array;
  /** Rows per tile. */
  readonly tileTokens: number;
  /** Choices per token k. */
  readonly k: number;
  /** The selector to rebuild on each thread, with the URL of the registry module that builds it. */
  readonly selector: {
    readonly spec: SelectorSpec;
    /** URL of the module exporting `createSelector(spec)` (routing's selector registry). */
    readonly registry: string;
    /** The vectorised epilogue the selector consumes, if any. */
    readonly epilogue?: EpilogueKind;
    /** Whether the selector draws random numbers (then use the per-tile stream below). */
    readonly random: boolean;
    /**
     * Set when the selector is plain softmax top-k (see `Selector.fusedTopK`): with no `bias`, the backend
     * may select with its own fused kernel instead of rebuilding the selector.
     */
    readonly fusedTopK?: { readonly k: number; readonly normalize: boolean };
  };
  /** Training mode of the call. */
  readonly training: boolean;
  /** Seed of the call's selection stream; tile t0's stream is `new Rng(seed).derive("tile", t0)`. */
  readonly seed: number;
  /** Where selections go, `[T·k]` each, at `t·k`. */
  readonly out: SelectionBuffers;
  /** Routes rows `[t0, t1)` on the calling thread into `buffers` (same layout as `out`). */
  runTiles(t0: number, t1: number, buffers: SelectionBuffers): void;
}

/**
 * A compute backend for the gate GEMM (see the module documentation for the contract).
 *
 * @example
 * ```ts
 * import { type ComputeBackend, listBackends } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const js: ComputeBackend | undefined = listBackends().find((b) => b.name === "js");
 * assert.equal(js?.priority, 0);
 * ```
 */
export interface ComputeBackend {
  /** Registry name, e.g. `"native"`. */
  readonly name: Backend;
  /** `"auto"` picks the available backend with the highest priority (js 0, wasm 10, native 20). */
  readonly priority: number;
  /** Whether it can run here and why; never throws. */
  status(): BackendStatus;
  /** Binds a gate weight `[E,d]` (copied once into backend memory). */
  bind(weight: Mat): GateGemm;
}

const JS: ComputeBackend = {
  name: "js",
  priority: 0,
  status: () => ({
    available: true,
    reason: registry.size > 1
      ? "built in (readable reference, no SIMD)"
      : `built in (readable reference, no SIMD); no other backend is loaded: import "@moekit/moekit/kernels" ` +
        "(or the root module) to register the WebAssembly and native backends",
  }),
  bind: (weight) => ({
    backend: "js",
    experts: weight.rows,
    inputDim: weight.cols,
    gemm: (x, out) => matrix.matmulT(x, weight, out),
  }),
};

const registry = new Map<string, ComputeBackend>([["js", JS]]);

/**
 * Registers (or replaces) a compute backend under its name. Call it once when the backend's module
 * loads.
 *
 * @example
 * ```ts
 * import { listBackends, matrix, registerBackend } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * registerBackend({
 *   name: "mine", priority: -1, status: () => ({ available: true, reason: "test" }),
 *   bind: (w) => ({ backend: "mine", experts: w.rows, inputDim: w.cols, gemm: (x, o) => matrix.matmulT(x, w, o) }),
 * });
 * assert.ok(listBackends().some((b) => b.name === "mine"));
 * ```
 */
export function registerBackend(backend: ComputeBackend): void {
  if (!backend || typeof backend.name !== "string" || backend.name === "" || backend.name === "auto") {
    throw new OptionError("backend.name", backend?.name, `a backend needs a name other than "auto"`);
  }
  if (typeof backend.bind !== "function" || typeof backend.status !== "function") {
    throw new MoekitError(`backend "${backend.name}" must implement status() and bind(weight)`);
  }
  if (backend.name === "js" && backend !== JS) {
    throw new OptionError("backend.name", "js", "the js backend is built in and cannot be replaced");
  }
  registry.set(backend.name, backend);
}

/**
 * All registered backends, highest priority first.
 *
 * @example
 * ```ts
 * import { listBackends } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(listBackends().at(-1)!.priority <= 0, true);
 * ```
 */
export function listBackends(): ComputeBackend[] {
  return [...registry.values()].sort((a, b) => b.priority - a.priority);
}

/**
 * The backend a choice resolves to: a registered, available name, or for `"auto"` the available backend
 * with the highest priority (js when no kernel module is loaded). Throws an `OptionError` that lists the
 * backends and their status for an unknown or unavailable name.
 *
 * @example
 * ```ts
 * import { resolveBackend } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(resolveBackend("js").name, "js");
 * assert.ok(resolveBackend("auto").priority >= 0);
 * ```
 */
export function resolveBackend(choice: BackendChoice = "auto"): ComputeBackend {
  if (choice === "auto") {
    for (const b of listBackends()) if (b.priority >= 0 && safeStatus(b).available) return b;
    return JS;
  }
  const b = registry.get(choice);
  const known = listBackends().map((x) => `"${x.name}" (${safeStatus(x).reason})`).join(", ");
  if (!b) {
    throw new OptionError("backend", choice, `use "auto" or one of the registered backends: ${known}`);
  }
  const s = safeStatus(b);
  if (!s.available) throw new OptionError("backend", choice, `not available here: ${s.reason}`);
  return b;
}

/**
 * Binds a gate weight `[E,d]` to a backend (see {@link resolveBackend}).
 *
 * @example
 * ```ts
 * import { bindGemm, matrix } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * assert.equal(bindGemm(matrix.zeros(4, 8)).experts, 4);
 * ```
 */
export function bindGemm(weight: Mat, choice: BackendChoice = "auto"): GateGemm {
  return resolveBackend(choice).bind(weight);
}

/**
 * Which backend `"auto"` picks and, for every registered backend, whether it is available and why.
 *
 * @example
 * ```ts
 * import { backendReport } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const r = backendReport();
 * assert.ok(r.backends.some((b) => b.name === "js" && b.available));
 * ```
 */
export function backendReport(): {
  auto: Backend;
  backends: { name: Backend; priority: number; available: boolean; reason: string; detail?: unknown }[];
} {
  return {
    auto: resolveBackend("auto").name,
    backends: listBackends().map((b) => {
      const s = safeStatus(b);
      return {
        name: b.name,
        priority: b.priority,
        available: s.available,
        reason: s.reason,
        ...(s.detail ? { detail: s.detail } : {}),
      };
    }),
  };
}

/**
 * Checks a tile of logits, the cheap way to check the tokens: a NaN or ±Inf in a row of X always makes
 * that row of the logits non-finite (IEEE: NaN·w = NaN, ±Inf·w = ±Inf or NaN). On a bad logit, the row
 * of `xTile` (the tile's tokens) is scanned to name the first bad (row, col), rows counted from
 * `firstRow`; if X is finite there, the logit overflowed. Throws `NonFiniteError` in both cases. Every
 * backend's threads call this on each tile (bias included), as routing does on the calling thread.
 *
 * @example
 * ```ts
 * import { checkLogitsFinite, matrix, NonFiniteError } from "@moekit/moekit/routing";
 * import assert from "node:assert/strict";
 * const x = matrix.fromArrays([[1e30, 1e30]]);
 * assert.throws(() => checkLogitsFinite(matrix.fromArrays([[Infinity]]), x, 0), NonFiniteError);
 * ```
 */
export function checkLogitsFinite(logits: Mat, xTile: Mat, firstRow: number): void {
  const L = logits.data;
  for (let i = 0; i < L.length; i++) {
    const v = L[i];
    if (v - v === 0) continue;
    const row = Math.floor(i / logits.cols), xr = matrix.row(xTile, row);
    for (let j = 0; j < xr.length; j++) {
      if (xr[j] - xr[j] !== 0) throw new NonFiniteError("hidden states X", firstRow + row, j, xr[j]);
    }
    throw new NonFiniteError(
      "router logits (X is finite there: X·Wᵀ overflowed float32; scale the inputs or weights down)",
      firstRow + row,
      i % logits.cols,
      v,
    );
  }
}

function safeStatus(b: ComputeBackend): BackendStatus {
  try {
    return b.status();
  } catch (e) {
    return { available: false, reason: `status() failed: ${(e as Error)?.message ?? e}` };
  }
}
