/**
 * Argument checks shared by the placement functions (internal: not re-exported from the barrel). Each
 * check throws a typed error that names the argument, the position and the value.
 * @module
 */

import { MoekitError, NonFiniteError, OptionError, ShapeError } from "../core/errors.ts";
import type { Mat } from "../core/matrix.ts";

/** Per-layer loads `[L, E]`: a {@link Mat} (float32) or nested arrays of numbers (float64). */
export type LoadMatrix = Mat | readonly ArrayLike<number>[];

/** A placement as far as metrics and dispatch need it: `phy2log [L, R]`, optionally its topology. */
export interface PlacementLike {
  /** `phy2log[l][s]`: the logical expert held by slot `s` of layer `l`. */
  readonly phy2log: readonly ArrayLike<number>[];
  /** Replica counts `[L, E]` (when present, its width fixes E). */
  readonly logcnt?: readonly ArrayLike<number>[];
  /** GPUs the placement was made for. */
  readonly numGpus?: number;
  /** Nodes the placement was made for. */
  readonly numNodes?: number;
}

/** Loads read into float64, row-major `[L·E]`. */
export interface Loads {
  readonly L: number;
  readonly E: number;
  readonly w: Float64Array;
}

function isMat(x: unknown): x is Mat {
  return typeof x === "object" && x !== null && !Array.isArray(x) && "rows" in x && "cols" in x &&
    "data" in x;
}

/** Reads and checks `weight` (§10 rows 1–3: shape, non-finite, negative). */
export function readLoads(weight: LoadMatrix, name = "weight"): Loads {
  let L: number, E: number, w: Float64Array;
  if (isMat(weight)) {
    L = weight.rows;
    E = weight.cols;
    if (weight.data.length !== L * E) {
      throw new ShapeError(name, [L, E], [weight.data.length], "Mat data length must be rows × cols");
    }
    if (L < 1 || E < 1) {
      throw new ShapeError(name, [-1, -1], [L, E], "loads need at least one layer and one expert");
    }
    w = Float64Array.from(weight.data);
  } else {
    if (!Array.isArray(weight)) {
      throw new OptionError(
        name,
        typeof weight,
        "pass the loads as a Mat or number[][] of shape [layers, experts]",
      );
    }
    L = weight.length;
    if (L < 1) throw new ShapeError(name, [-1, -1], [0], "loads need at least one layer (row)");
    const first = weight[0];
    if (typeof first !== "object" || first === null || typeof first.length !== "number") {
      throw new ShapeError(
        name,
        [-1, -1],
        [L],
        "loads must be 2-D [layers, experts]: wrap a single layer as [loads]",
      );
    }
    E = first.length;
    if (E < 1) throw new ShapeError(`${name} row 0`, [-1], [0], "every layer needs at least one expert");
    w = new Float64Array(L * E);
    for (let l = 0; l < L; l++) {
      const row = weight[l];
      if (typeof row !== "object" || row === null || row.length !== E) {
        throw new ShapeError(
          `${name} row ${l}`,
          [E],
          [typeof row === "object" && row !== null && typeof row.length === "number" ? row.length : -1],
          `every layer needs one load per expert (row 0 has ${E})`,
        );
      }
      for (let e = 0; e < E; e++) {
        const v = row[e];
        if (typeof v !== "number") {
          throw new OptionError(`${name}[${l}][${e}]`, v, "a load must be a number");
        }
        w[l * E + e] = v;
      }
    }
  }
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) {
      throw new NonFiniteError(`${name} (row = layer, col = expert)`, Math.floor(i / E), i % E, w[i]);
    }
  }
  for (let i = 0; i < w.length; i++) {
    if (w[i] < 0) {
      throw new OptionError(
        `${name}[${Math.floor(i / E)}][${i % E}]`,
        w[i],
        `loads must be ≥ 0 (layer ${Math.floor(i / E)}, expert ${
          i % E
        }); pass token counts or their moving average`,
      );
    }
  }
  return { L, E, w };
}

/** Throws unless `v` is an integer ≥ 1. */
export function checkPositiveInt(option: string, v: unknown): asserts v is number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new OptionError(option, v, "must be an integer ≥ 1");
  }
}

/** Checks a GPU/node topology: both positive integers, `numGpus % numNodes = 0`. */
export function checkTopology(numGpus: unknown, numNodes: unknown): void {
  checkPositiveInt("numNodes", numNodes);
  checkPositiveInt("numGpus", numGpus);
  if (numGpus % numNodes !== 0) {
    throw new OptionError(
      "numGpus",
      numGpus,
      `must be a multiple of numNodes = ${numNodes} (every node has numGpus / numNodes GPUs)`,
    );
  }
}

/** The topology for metrics / dispatch: the options' values, else the placement's own. */
export function topologyOf(
  placement: PlacementLike,
  options: { readonly numGpus?: number; readonly numNodes?: number },
): { P: number; N: number } {
  if (typeof placement !== "object" || placement === null) {
    throw new OptionError("placement", placement, "pass what rebalanceExperts returned (needs phy2log)");
  }
  const P = options.numGpus ?? placement.numGpus, N = options.numNodes ?? placement.numNodes;
  if (P === undefined) {
    throw new OptionError("numGpus", P, "required: the placement does not record its GPU count");
  }
  if (N === undefined) {
    throw new OptionError("numNodes", N, "required: the placement does not record its node count");
  }
  checkTopology(P, N);
  return { P, N };
}

/**
 * Checks a placement's `phy2log` against `L` layers and `E` experts (E = −1: infer it from `logcnt` or
 * the largest id) and `P` GPUs. Returns `phy2log` flattened `[L·R]`, `R` and `E`.
 */
export function readPlacement(
  placement: PlacementLike,
  L: number,
  E: number,
  P: number,
  against: string,
): { R: number; E: number; phy: Int32Array } {
  if (typeof placement !== "object" || placement === null || !Array.isArray(placement.phy2log)) {
    throw new OptionError(
      "placement",
      typeof placement,
      "pass what rebalanceExperts returned (needs phy2log)",
    );
  }
  const rows = placement.phy2log;
  if (L >= 0 && rows.length !== L) {
    throw new ShapeError(
      "placement.phy2log",
      [L, -1],
      [rows.length, rows[0]?.length ?? 0],
      `${against} has ${L} layers`,
    );
  }
  if (rows.length < 1) throw new ShapeError("placement.phy2log", [-1, -1], [0], "needs at least one layer");
  const R = rows[0].length;
  for (let l = 0; l < rows.length; l++) {
    if (rows[l].length !== R) {
      throw new ShapeError(`placement.phy2log row ${l}`, [R], [rows[l].length], "every layer has R slots");
    }
  }
  const cntE = placement.logcnt?.[0]?.length;
  if (E < 0) {
    if (cntE !== undefined) E = cntE;
    else {
      E = 0;
      for (const row of rows) for (let s = 0; s < R; s++) E = Math.max(E, row[s] + 1);
    }
  } else if (cntE !== undefined && cntE !== E) {
    throw new ShapeError(
      "placement.logcnt",
      [rows.length, E],
      [placement.logcnt!.length, cntE],
      `${against} has E = ${E} experts`,
    );
  }
  const phy = new Int32Array(rows.length * R);
  const seen = new Uint8Array(E);
  for (let l = 0; l < rows.length; l++) {
    seen.fill(0);
    for (let s = 0; s < R; s++) {
      const e = rows[l][s];
      if (!Number.isInteger(e) || e < 0 || e >= E) {
        throw new ShapeError(
          "placement",
          [rows.length, E],
          [rows.length, Number.isInteger(e) && e >= 0 ? e + 1 : -1],
          `phy2log[${l}][${s}] = ${e} is not an expert id in 0..${E - 1} (${against} has E = ${E})`,
        );
      }
      seen[e] = 1;
      phy[l * R + s] = e;
    }
    const missing = seen.indexOf(0);
    if (missing >= 0) {
      throw new MoekitError(
        `placement: logical expert ${missing} of layer ${l} has no slot in phy2log [${rows.length}, ${R}]; ` +
          `every expert needs at least one replica`,
      );
    }
  }
  if (R % P !== 0) {
    throw new ShapeError(
      "placement.phy2log",
      [rows.length, -1],
      [rows.length, R],
      `R = ${R} slots do not split over numGpus = ${P} (R % numGpus must be 0)`,
    );
  }
  return { R, E, phy };
}
