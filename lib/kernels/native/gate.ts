/**
 * moekit's own native gate kernel (`gate.c`: router logits X·Wᵀ with the weight packed once per router,
 * compiled for this CPU), loaded through `Deno.dlopen` when it was built with `deno task build:native`
 * and `--allow-ffi` is granted. It is never built at import time and never downloaded: without the
 * built library (or the permission) {@link gateInfo} says why, and the native backend uses the BLAS
 * `cblas_sgemm` instead.
 *
 * The library lives in a cache folder: `MOEKIT_NATIVE_DIR` when set, else `$XDG_CACHE_HOME/moekit/native`,
 * else `$HOME/.cache/moekit/native` (reading these needs `--allow-env`; nothing prompts). A library built
 * from another version of `gate.c`, or for an instruction set this CPU lacks, is refused.
 * @module
 */

import { MoekitError } from "../../core/errors.ts";

/** The kernel ABI this module speaks (`MOEKIT_GATE_VERSION` in `gate.c`). */
export const GATE_VERSION = 1;

/** The largest k the kernel's own softmax top-k epilogue takes (larger k use the WebAssembly one). */
export const GATE_MAX_K = 64;

const SYMBOLS = {
  moekit_gate_version: { parameters: [], result: "i32" },
  moekit_gate_check: { parameters: [], result: "i32" },
  moekit_gate_isa: { parameters: [], result: "pointer" },
  moekit_gate_packed_floats: { parameters: ["i32", "i32"], result: "usize" },
  moekit_gate_pack: { parameters: ["buffer", "i32", "i32", "buffer"], result: "void" },
  moekit_gate_logits: {
    parameters: ["buffer", "i32", "i32", "buffer", "i32", "buffer", "i32"],
    result: "void",
  },
  moekit_gate_softmax_topk: {
    parameters: ["buffer", "i32", "i32", "i32", "i32", "buffer", "buffer", "buffer"],
    result: "i32",
  },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** What was found: the library and its instruction set, or why it is not in use. */
export interface GateInfo {
  readonly available: boolean;
  readonly path?: string;
  readonly isa?: string;
  readonly reason?: string;
}

let state: { lib?: Lib; info: GateInfo } | undefined;

function granted(d: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(d).state === "granted";
  } catch {
    return false;
  }
}

function env(name: string): string | undefined {
  return granted({ name: "env", variable: name }) ? Deno.env.get(name) : undefined;
}

/** The library's file name on this OS. */
export function gateLibraryName(os: string = Deno.build.os): string {
  return os === "darwin"
    ? "libmoekit_gate.dylib"
    : os === "windows"
    ? "moekit_gate.dll"
    : "libmoekit_gate.so";
}

/** The cache folder the library is built into and loaded from (undefined when no variable can be read). */
export function gateCacheDir(): string | undefined {
  const explicit = env("MOEKIT_NATIVE_DIR");
  if (explicit) return explicit;
  const xdg = env("XDG_CACHE_HOME"), home = env("HOME") ?? env("USERPROFILE");
  return xdg ? `${xdg}/moekit/native` : home ? `${home}/.cache/moekit/native` : undefined;
}

function load(): { lib?: Lib; info: GateInfo } {
  if (state) return state;
  const fail = (reason: string, path?: string) => (state = { info: { available: false, reason, path } });
  if (typeof Deno === "undefined" || typeof Deno.dlopen !== "function") return fail("no FFI");
  if (!granted({ name: "ffi" })) return fail("--allow-ffi is not granted");
  const dir = gateCacheDir();
  if (!dir) return fail("no cache folder: set MOEKIT_NATIVE_DIR or HOME, and grant --allow-env");
  const path = `${dir}/${gateLibraryName()}`;
  let lib: Lib;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch {
    return fail(`not built (run \`deno task build:native\`; looked for ${path})`, path);
  }
  const version = lib.symbols.moekit_gate_version();
  if (version !== GATE_VERSION) {
    lib.close();
    return fail(`${path} is version ${version}, this moekit needs ${GATE_VERSION}: rebuild it`, path);
  }
  if (lib.symbols.moekit_gate_check() !== 1) {
    lib.close();
    return fail(`${path} was built for an instruction set this CPU lacks: rebuild it here`, path);
  }
  const isaPtr = lib.symbols.moekit_gate_isa();
  const isa = isaPtr ? new Deno.UnsafePointerView(isaPtr).getCString() : "unknown";
  return (state = { lib, info: { available: true, path, isa } });
}

/** Whether the kernel is loaded, where from and for which instruction set, or why not. */
export function gateInfo(): GateInfo {
  return load().info;
}

function lib(): Lib {
  const s = load();
  if (!s.lib) throw new MoekitError(`moekit's native gate kernel is not in use: ${s.info.reason}`);
  return s.lib;
}

/** Packed sizes already asked of the library, by `E·2²⁴ + d` (every tile asks again). */
const packedSizes = new Map<number, number>();

/** Floats of the packed weight for `E` experts of length `d`. */
export function gatePackedFloats(E: number, d: number): number {
  const key = E * 2 ** 24 + d;
  let n = packedSizes.get(key);
  if (n === undefined) packedSizes.set(key, n = Number(lib().symbols.moekit_gate_packed_floats(E, d)));
  return n;
}

/** Packs `w [E,d]` into `out` ({@link gatePackedFloats} floats). */
export function gatePack(w: Float32Array, E: number, d: number, out: Float32Array): void {
  if (out.length < gatePackedFloats(E, d)) {
    throw new MoekitError(`gatePack: the output holds ${out.length} floats, needs ${gatePackedFloats(E, d)}`);
  }
  lib().symbols.moekit_gate_pack(w, E, d, out);
}

/** `out[t·ldo + e] = x[t,:]·w[e,:]` for `t < T`, `e < E`, with `packed` from {@link gatePack}. */
export function gateLogits(
  x: Float32Array,
  T: number,
  d: number,
  packed: Float32Array,
  E: number,
  out: Float32Array,
  ldo: number = E,
): void {
  // the C side trusts these lengths: a short buffer would be read or written out of bounds
  if (
    x.length < T * d || packed.length < gatePackedFloats(E, d) || ldo < E ||
    (T > 0 && out.length < (T - 1) * ldo + E)
  ) {
    throw new MoekitError(
      `gateLogits: buffers too small for T = ${T}, d = ${d}, E = ${E}, ldo = ${ldo} ` +
        `(x ${x.length}, packed ${packed.length}, out ${out.length} floats)`,
    );
  }
  lib().symbols.moekit_gate_logits(x, T, d, packed, E, out, ldo);
}

/**
 * The fused softmax top-k epilogue over logits rows `[rows, E]`: per row the k best experts (by logit
 * descending, equal logits by ascending index) into `idx`, their softmax probabilities into `scores`, and
 * the weights (renormalised over the k when `norm`) into `weights`, as routing's `softmaxTopK` selector
 * computes them (weights in float64 from the selected logits). Returns -1, or the first row holding a
 * non-finite logit (the caller reports it; rows from it on are not written).
 */
export function gateSoftmaxTopK(
  logits: Float32Array,
  rows: number,
  E: number,
  k: number,
  norm: boolean,
  idx: Int32Array,
  weights: Float32Array,
  scores: Float32Array,
): number {
  if (
    k < 1 || k > 64 || k > E || idx.length < rows * k || weights.length < rows * k || scores.length < rows * k
  ) {
    throw new MoekitError(`gateSoftmaxTopK: k = ${k} must be in 1..min(64, E = ${E}), outputs of rows·k`);
  }
  return lib().symbols.moekit_gate_softmax_topk(logits, rows, E, k, norm ? 1 : 0, idx, weights, scores);
}
