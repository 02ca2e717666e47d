/**
 * The optional native backend: the machine's BLAS and LAPACK through Deno's FFI (`Deno.dlopen`), found at
 * run time — a path in `MOEKIT_BLAS`, else OpenBLAS (Linux sonames), Apple Accelerate (macOS) or MKL's
 * `libmkl_rt`. Nothing is opened, and nothing prompts, unless `--allow-ffi` is already granted: without it
 * (or without a library) {@link nativeInfo} says why, and callers use the WebAssembly or JS paths.
 *
 * The wrappers below take column-major Fortran-layout arrays (LAPACK's convention); `lib/linalg` maps
 * moekit's row-major matrices onto them. LAPACK's `info ≠ 0` becomes a {@link LapackError} naming the
 * routine and the argument.
 * @module
 */

import { MoekitError } from "../core/errors.ts";

/**
 * What the native backend found on this machine, and why it is not in use when it is not.
 *
 * @example
 * ```ts
 * import { nativeInfo } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const info = nativeInfo();
 * assert.equal(info.available, info.reason === undefined);
 * ```
 */
export interface NativeInfo {
  /** True when the library is loaded and `cblas_sgemm` is callable. */
  readonly available: boolean;
  /** The library path or soname that was opened. */
  readonly library?: string;
  /** `"openblas"`, `"accelerate"`, `"mkl"` or `"unknown"`. */
  readonly vendor?: "openblas" | "accelerate" | "mkl" | "unknown";
  /** OpenBLAS's `openblas_get_config()` (version, build options), when the library has it. */
  readonly config?: string;
  /** OpenBLAS's kernel set (`openblas_get_corename()`), e.g. `"Haswell"`. */
  readonly corename?: string;
  /** The library's thread count (`openblas_get_num_threads()`), when it can be read. */
  readonly threads?: number;
  /** Symbols moekit uses that this library lacks (calling their routines throws). */
  readonly missing: readonly string[];
  /** Why native is not in use (no permission, no library, a missing `cblas_sgemm`). */
  readonly reason?: string;
  /** Every library path or soname tried, in order. */
  readonly tried: readonly string[];
}

/**
 * A symbol moekit needs is missing from the BLAS/LAPACK library, or native was asked for but is not
 * available. The message names the library, the symbol and what to do.
 *
 * @example
 * ```ts
 * import { NativeLibraryError } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const e = new NativeLibraryError("sgesdd_", "libblas.so.3", "it is not in the library");
 * assert.equal(e.symbol, "sgesdd_");
 * ```
 */
export class NativeLibraryError extends MoekitError {
  /** The symbol (or `"library"` when no library could be used). */
  readonly symbol: string;
  /** The library path, or `undefined` when none was loaded. */
  readonly library: string | undefined;
  /** Builds the message from the symbol, the library and the reason. */
  constructor(symbol: string, library: string | undefined, why: string) {
    super(
      `native BLAS/LAPACK: ${symbol === "library" ? "no usable library" : `symbol ${symbol}`}` +
        `${library ? ` (${library})` : ""}: ${why}; ` +
        (/--allow-ffi is not granted/.test(why)
          ? `run with --allow-ffi, or use backend: "wasm"`
          : `set MOEKIT_BLAS to a full OpenBLAS/MKL library (e.g. apt-get install libopenblas0-pthread) ` +
            `and run with --allow-ffi, or use backend: "wasm"`),
    );
    this.symbol = symbol;
    this.library = library;
  }
}

/**
 * A LAPACK routine returned `info ≠ 0`: `info < 0` names the illegal argument, `info > 0` the routine's
 * own failure (a leading minor that is not positive definite, no convergence).
 *
 * @example
 * ```ts
 * import { LapackError } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const e = new LapackError("spotrf", 3, "the leading minor of order 3 is not positive definite");
 * assert.equal(e.routine, "spotrf");
 * assert.equal(e.info, 3);
 * ```
 */
export class LapackError extends MoekitError {
  /** The LAPACK routine, e.g. `"spotrf"`. */
  readonly routine: string;
  /** LAPACK's `info`. */
  readonly info: number;
  /** The argument's name when `info < 0`. */
  readonly argument: string | undefined;
  /** Builds the message from the routine, `info` and what it means. */
  constructor(routine: string, info: number, meaning: string, argument?: string) {
    super(`LAPACK ${routine} returned info = ${info}: ${meaning}`);
    this.routine = routine;
    this.info = info;
    this.argument = argument;
  }
}

/**
 * A Cholesky factorisation met a leading minor that is not positive definite (LAPACK `spotrf` info > 0, or
 * the same failure on the WebAssembly/JS paths). `info` is the order of that minor (1-based).
 *
 * @example
 * ```ts
 * import { cholesky, matrix, NotPositiveDefiniteError } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * assert.throws(() => cholesky(matrix.fromArrays([[1, 2], [2, 1]])), NotPositiveDefiniteError);
 * ```
 */
export class NotPositiveDefiniteError extends LapackError {
  /** Builds the message from the routine and the order of the failing minor. */
  constructor(routine: string, order: number, what = "a") {
    super(
      routine,
      order,
      `the leading minor of order ${order} of ${what} is not positive definite; add a diagonal jitter ` +
        `(e.g. 1e-6·mean(diag)) or check the input for duplicate or zero columns`,
    );
  }
}

const SYMBOLS = {
  cblas_sgemm: {
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
    optional: true,
  },
  cblas_strsm: {
    parameters: ["i32", "i32", "i32", "i32", "i32", "i32", "i32", "f32", "buffer", "i32", "buffer", "i32"],
    result: "void",
    optional: true,
  },
  cblas_strmm: {
    parameters: ["i32", "i32", "i32", "i32", "i32", "i32", "i32", "f32", "buffer", "i32", "buffer", "i32"],
    result: "void",
    optional: true,
  },
  cblas_dsyrk: {
    parameters: ["i32", "i32", "i32", "i32", "i32", "f64", "buffer", "i32", "f64", "buffer", "i32"],
    result: "void",
    optional: true,
  },
  // LAPACK (Fortran ABI: every argument by reference, hidden character lengths at the end)
  sgesdd_: {
    parameters: [
      "buffer", // jobz
      "buffer", // m
      "buffer", // n
      "buffer", // a
      "buffer", // lda
      "buffer", // s
      "buffer", // u
      "buffer", // ldu
      "buffer", // vt
      "buffer", // ldvt
      "buffer", // work
      "buffer", // lwork
      "buffer", // iwork
      "buffer", // info
      "usize", // len(jobz)
    ],
    result: "void",
    optional: true,
  },
  ssyevd_: {
    parameters: [
      "buffer", // jobz
      "buffer", // uplo
      "buffer", // n
      "buffer", // a
      "buffer", // lda
      "buffer", // w
      "buffer", // work
      "buffer", // lwork
      "buffer", // iwork
      "buffer", // liwork
      "buffer", // info
      "usize",
      "usize",
    ],
    result: "void",
    optional: true,
  },
  spotrf_: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "usize"],
    result: "void",
    optional: true,
  },
  sgeqrf_: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "void",
    optional: true,
  },
  sorgqr_: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "void",
    optional: true,
  },
  // float64 tridiagonal eigensolver pieces (the truncated SVD through the float64 Gram matrix)
  dsytrd_: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "usize",
    ],
    result: "void",
    optional: true,
  },
  dsterf_: { parameters: ["buffer", "buffer", "buffer", "buffer"], result: "void", optional: true },
  dstemr_: {
    parameters: [
      "buffer", // jobz
      "buffer", // range
      "buffer", // n
      "buffer", // d
      "buffer", // e
      "buffer", // vl
      "buffer", // vu
      "buffer", // il
      "buffer", // iu
      "buffer", // m
      "buffer", // w
      "buffer", // z
      "buffer", // ldz
      "buffer", // nzc
      "buffer", // isuppz
      "buffer", // tryrac
      "buffer", // work
      "buffer", // lwork
      "buffer", // iwork
      "buffer", // liwork
      "buffer", // info
      "usize",
      "usize",
    ],
    result: "void",
    optional: true,
  },
  dormtr_: {
    parameters: [
      "buffer", // side
      "buffer", // uplo
      "buffer", // trans
      "buffer", // m
      "buffer", // n
      "buffer", // a
      "buffer", // lda
      "buffer", // tau
      "buffer", // c
      "buffer", // ldc
      "buffer", // work
      "buffer", // lwork
      "buffer", // info
      "usize",
      "usize",
      "usize",
    ],
    result: "void",
    optional: true,
  },
  openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
  openblas_get_config: { parameters: [], result: "pointer", optional: true },
  openblas_get_corename: { parameters: [], result: "pointer", optional: true },
  MKL_Get_Max_Threads: { parameters: [], result: "i32", optional: true },
  MKL_Set_Num_Threads: { parameters: ["i32"], result: "void", optional: true },
} as const;

/** The symbols moekit calls (the rest are diagnostics). */
const USED = [
  "cblas_sgemm",
  "cblas_strsm",
  "cblas_strmm",
  "cblas_dsyrk",
  "sgesdd_",
  "ssyevd_",
  "spotrf_",
  "sgeqrf_",
  "sorgqr_",
  "dsytrd_",
  "dsterf_",
  "dstemr_",
  "dormtr_",
] as const;
type Used = typeof USED[number];

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

interface Loaded {
  lib: Lib;
  info: NativeInfo;
}

let state: Loaded | { info: NativeInfo } | undefined;

function granted(name: "ffi" | "env", variable?: string): boolean {
  try {
    const d = name === "env" ? { name, variable } as const : { name } as const;
    return Deno.permissions.querySync(d).state === "granted";
  } catch {
    return false;
  }
}

/** Candidate libraries in search order for this OS (after `MOEKIT_BLAS`). */
function candidates(os: string): string[] {
  if (os === "darwin") {
    return [
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
      "libmkl_rt.dylib",
      "libmkl_rt.2.dylib",
    ];
  }
  if (os === "windows") return ["libopenblas.dll", "openblas.dll", "mkl_rt.2.dll", "mkl_rt.dll"];
  return [
    "libopenblas.so.0",
    "libopenblas.so",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "libopenblasp.so.0",
    "libmkl_rt.so.2",
    "libmkl_rt.so",
  ];
}

function cString(p: Deno.PointerValue): string | undefined {
  if (p === null) return undefined;
  try {
    return new Deno.UnsafePointerView(p).getCString().trim();
  } catch {
    return undefined;
  }
}

function vendorOf(path: string, lib: Lib): NativeInfo["vendor"] {
  if (lib.symbols.openblas_get_config) return "openblas";
  if (/accelerate/i.test(path)) return "accelerate";
  if (/mkl/i.test(path) || lib.symbols.MKL_Get_Max_Threads) return "mkl";
  return "unknown";
}

function describe(path: string, lib: Lib, tried: string[]): NativeInfo {
  const s = lib.symbols;
  const missing = USED.filter((name) => !s[name]);
  const threads = s.openblas_get_num_threads
    ? s.openblas_get_num_threads()
    : s.MKL_Get_Max_Threads
    ? s.MKL_Get_Max_Threads()
    : undefined;
  return {
    available: Boolean(s.cblas_sgemm),
    library: path,
    vendor: vendorOf(path, lib),
    config: s.openblas_get_config ? cString(s.openblas_get_config()) : undefined,
    corename: s.openblas_get_corename ? cString(s.openblas_get_corename()) : undefined,
    threads,
    missing,
    reason: s.cblas_sgemm ? undefined : `${path} has no cblas_sgemm (not a CBLAS library)`,
    tried,
  };
}

function load(): Loaded | { info: NativeInfo } {
  if (state) return state;
  const fail = (
    reason: string,
    tried: string[] = [],
  ) => (state = { info: { available: false, missing: [], reason, tried } });
  if (typeof Deno === "undefined" || typeof Deno.dlopen !== "function") {
    return fail("not running under Deno (no FFI)");
  }
  if (!granted("ffi")) {
    return fail("--allow-ffi is not granted (run with --allow-ffi to use the machine's BLAS/LAPACK)");
  }
  const explicit = granted("env", "MOEKIT_BLAS") ? Deno.env.get("MOEKIT_BLAS") : undefined;
  const list = explicit ? [explicit] : candidates(Deno.build.os);
  const tried: string[] = [], errors: string[] = [];
  for (const path of list) {
    tried.push(path);
    let lib: Lib;
    try {
      lib = Deno.dlopen(path, SYMBOLS);
    } catch (e) {
      errors.push(`${path}: ${(e as Error).message.split("\n")[0]}`);
      continue;
    }
    const info = describe(path, lib, tried);
    if (!info.available) {
      lib.close();
      if (explicit) return fail(info.reason!, tried);
      errors.push(info.reason!);
      continue;
    }
    state = { lib, info };
    return state;
  }
  return fail(
    explicit
      ? `MOEKIT_BLAS = ${explicit} could not be opened (${errors.join("; ")})`
      : `no BLAS/LAPACK library found (tried ${tried.join(", ")}); on Debian/Ubuntu: ` +
        `apt-get install libopenblas0-pthread, or set MOEKIT_BLAS to a library path`,
    tried,
  );
}

/**
 * What the native backend found: library, version/config, kernel set, threads, missing symbols, and
 * why it is not in use. Never prompts: without `--allow-ffi` it reports that as the reason.
 *
 * @example
 * ```ts
 * import { nativeInfo } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * const info = nativeInfo();
 * assert.ok(info.available || typeof info.reason === "string");
 * ```
 */
export function nativeInfo(): NativeInfo {
  const s = load();
  if (!("lib" in s)) return s.info;
  const t = s.lib.symbols.openblas_get_num_threads?.() ?? s.lib.symbols.MKL_Get_Max_Threads?.();
  return t === undefined ? s.info : { ...s.info, threads: t };
}

/** Whether the native backend can run `routine` (the library is loaded and has the symbol). */
export function nativeHas(routine: Used): boolean {
  const s = load();
  return "lib" in s && Boolean(s.lib.symbols[routine]);
}

/**
 * Sets the native library's thread count (OpenBLAS or MKL); returns false when the library has no such
 * control (or native is not in use).
 *
 * @example
 * ```ts
 * import { nativeInfo, setNativeThreads } from "@moekit/moekit/linalg";
 * import assert from "node:assert/strict";
 * if (setNativeThreads(1)) assert.equal(nativeInfo().threads, 1);
 * ```
 */
export function setNativeThreads(n: number): boolean {
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw new MoekitError(`setNativeThreads(${n}): the thread count must be an integer in 1..1024`);
  }
  const s = load();
  if (!("lib" in s)) return false;
  const sym = s.lib.symbols;
  if (sym.openblas_set_num_threads) sym.openblas_set_num_threads(n);
  else if (sym.MKL_Set_Num_Threads) sym.MKL_Set_Num_Threads(n);
  else return false;
  return true;
}

function symbol<K extends Used>(name: K): NonNullable<Lib["symbols"][K]> {
  const s = load();
  if (!("lib" in s)) throw new NativeLibraryError("library", undefined, s.info.reason ?? "not loaded");
  const f = s.lib.symbols[name];
  if (!f) throw new NativeLibraryError(name, s.info.library, "it is not in the library");
  return f as NonNullable<Lib["symbols"][K]>;
}

const ch = (c: string) => new Uint8Array([c.charCodeAt(0)]);
const int = (v: number) => new Int32Array([v]);

function check(
  routine: string,
  info: number,
  args: readonly string[],
  positive: (i: number) => string,
): void {
  if (info === 0) return;
  if (info < 0) {
    const name = args[-info - 1] ?? `#${-info}`;
    throw new LapackError(
      routine,
      info,
      `argument ${-info} (${name}) had an illegal value (a moekit bug: please report it)`,
      name,
    );
  }
  throw new LapackError(routine, info, positive(info));
}

/** CBLAS `Order` / `Transpose` constants. */
const ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;

/**
 * Row-major `C = α·op(A)·op(B) + β·C` through `cblas_sgemm`, with `op(A)` m×k and `op(B)` k×n.
 * Internal: `lib/linalg`'s `matmul` is the public entry.
 */
export function nativeSgemm(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
): void {
  if (m === 0 || n === 0) return;
  symbol("cblas_sgemm")(
    ROW_MAJOR,
    transA ? TRANS : NO_TRANS,
    transB ? TRANS : NO_TRANS,
    m,
    n,
    k,
    alpha,
    a,
    Math.max(1, lda),
    b,
    Math.max(1, ldb),
    beta,
    c,
    Math.max(1, ldc),
  );
}

/**
 * Row-major `X·L = B` for X, with L n×n lower triangular (non-unit diagonal) and B r×n, solved in place in
 * `b` through `cblas_strsm` (side right, lower, no transpose).
 */
export function nativeStrsmRightLower(r: number, n: number, l: Float32Array, b: Float32Array): void {
  if (r === 0 || n === 0) return;
  symbol("cblas_strsm")(ROW_MAJOR, 142, 122, NO_TRANS, 131, r, n, 1, l, n, b, n);
}

/**
 * Thin SVD of a column-major m×n `a` (overwritten) by `sgesdd` with `jobz = 'S'`: `s` (min(m,n)),
 * `u` m×k and `vt` k×n column-major.
 */
export function nativeSgesdd(
  m: number,
  n: number,
  a: Float32Array,
): { s: Float32Array; u: Float32Array; vt: Float32Array } {
  const f = symbol("sgesdd_"), k = Math.min(m, n);
  const s = new Float32Array(k), u = new Float32Array(m * k), vt = new Float32Array(k * n);
  const iwork = new Int32Array(8 * Math.max(1, k)), info = int(0), job = ch("S");
  const ldu = int(Math.max(1, m)), ldvt = int(Math.max(1, k)), lda = int(Math.max(1, m));
  const query = new Float32Array(1);
  f(job, int(m), int(n), a, lda, s, u, ldu, vt, ldvt, query, int(-1), iwork, info, 1n);
  const args = [
    "jobz",
    "m",
    "n",
    "a",
    "lda",
    "s",
    "u",
    "ldu",
    "vt",
    "ldvt",
    "work",
    "lwork",
    "iwork",
    "info",
  ];
  check("sgesdd", info[0], args, () => "");
  // OpenBLAS's float32 workspace query can round the size down: add a margin
  const lwork = Math.ceil(query[0] * 1.001) + 64;
  const work = new Float32Array(lwork);
  f(job, int(m), int(n), a, lda, s, u, ldu, vt, ldvt, work, int(lwork), iwork, info, 1n);
  check("sgesdd", info[0], args, () => "the divide-and-conquer SVD did not converge (sbdsdc failed)");
  return { s, u, vt };
}

/**
 * Symmetric eigendecomposition of a column-major n×n `a` by `ssyevd` (upper triangle read): eigenvalues
 * ascending; on return `a` holds the eigenvectors as columns.
 */
export function nativeSsyevd(n: number, a: Float32Array): Float32Array {
  const f = symbol("ssyevd_"), w = new Float32Array(n), info = int(0);
  const job = ch("V"), uplo = ch("U"), lda = int(Math.max(1, n));
  const qw = new Float32Array(1), qi = new Int32Array(1);
  const args = ["jobz", "uplo", "n", "a", "lda", "w", "work", "lwork", "iwork", "liwork", "info"];
  f(job, uplo, int(n), a, lda, w, qw, int(-1), qi, int(-1), info, 1n, 1n);
  check("ssyevd", info[0], args, () => "");
  const lwork = Math.ceil(qw[0] * 1.001) + 64, liwork = Math.max(1, qi[0]);
  f(
    job,
    uplo,
    int(n),
    a,
    lda,
    w,
    new Float32Array(lwork),
    int(lwork),
    new Int32Array(liwork),
    int(liwork),
    info,
    1n,
    1n,
  );
  check("ssyevd", info[0], args, (i) => `the algorithm failed to converge (${i} off-diagonal elements)`);
  return w;
}

/**
 * Cholesky `A = Uᵀ·U` of a column-major n×n `a` (upper triangle read and overwritten) by `spotrf`.
 * Read as row-major, the result is the lower factor `L = Uᵀ`.
 */
export function nativeSpotrf(n: number, a: Float32Array): void {
  const info = int(0);
  symbol("spotrf_")(ch("U"), int(n), a, int(Math.max(1, n)), info, 1n);
  if (info[0] > 0) throw new NotPositiveDefiniteError("spotrf", info[0]);
  check("spotrf", info[0], ["uplo", "n", "a", "lda", "info"], () => "");
}

/** Thin QR of a column-major m×n `a` (m ≥ n): returns Q (m×n, column-major) and overwrites `a`'s upper triangle with R. */
export function nativeQr(m: number, n: number, a: Float32Array): Float32Array {
  const geqrf = symbol("sgeqrf_"), orgqr = symbol("sorgqr_");
  const k = Math.min(m, n), tau = new Float32Array(Math.max(1, k)), info = int(0), lda = int(Math.max(1, m));
  const q1 = new Float32Array(1);
  const gargs = ["m", "n", "a", "lda", "tau", "work", "lwork", "info"];
  geqrf(int(m), int(n), a, lda, tau, q1, int(-1), info);
  check("sgeqrf", info[0], gargs, () => "");
  let lwork = Math.ceil(q1[0] * 1.001) + 64;
  geqrf(int(m), int(n), a, lda, tau, new Float32Array(lwork), int(lwork), info);
  check("sgeqrf", info[0], gargs, () => "");
  const q = a.slice(0, m * k);
  const oargs = ["m", "n", "k", "a", "lda", "tau", "work", "lwork", "info"];
  orgqr(int(m), int(k), int(k), q, lda, tau, q1, int(-1), info);
  check("sorgqr", info[0], oargs, () => "");
  lwork = Math.ceil(q1[0] * 1.001) + 64;
  orgqr(int(m), int(k), int(k), q, lda, tau, new Float32Array(lwork), int(lwork), info);
  check("sorgqr", info[0], oargs, () => "");
  return q;
}

/** CBLAS `Side` / `Uplo` / `Diag` constants. */
const RIGHT = 142, UPPER = 121, LOWER = 122, NON_UNIT = 131;

/**
 * Row-major `B ← B·L` in place, with L n×n lower triangular (non-unit diagonal) and B r×n, through
 * `cblas_strmm` (side right): half the flops of a general product with a triangular factor.
 */
export function nativeStrmmRightLower(r: number, n: number, l: Float32Array, b: Float32Array): void {
  if (r === 0 || n === 0) return;
  symbol("cblas_strmm")(ROW_MAJOR, RIGHT, LOWER, NO_TRANS, NON_UNIT, r, n, 1, l, n, b, n);
}

/**
 * Float64 Gram matrix through `cblas_dsyrk`, row-major, upper triangle written: `C [n,n] = AᵀA` for `a`
 * [k, n] (`trans`), or `A·Aᵀ` for `a` [n, k].
 */
export function nativeDsyrk(trans: boolean, n: number, k: number, a: Float64Array, c: Float64Array): void {
  if (n === 0) return;
  symbol("cblas_dsyrk")(
    ROW_MAJOR,
    UPPER,
    trans ? TRANS : NO_TRANS,
    n,
    k,
    1,
    a,
    Math.max(1, trans ? n : k),
    0,
    c,
    n,
  );
}

/**
 * The `r` largest eigenpairs, and all eigenvalues, of a symmetric n×n float64 matrix held in the lower
 * triangle of the column-major `a` (the upper triangle of a row-major one), which is overwritten:
 * Householder tridiagonalisation (`dsytrd`), all eigenvalues of the tridiagonal (`dsterf`), the wanted
 * eigenvectors by MRRR (`dstemr`, as `dsyevr` does), back-transformed by `dormtr`. `values` (all) and
 * `top` (the r largest) are ascending; `z` is column-major n×r, column j belonging to `top[j]`. Returns
 * undefined when `dstemr` reports a failure (the caller then takes a slower path).
 */
export function nativeSymTop64(
  n: number,
  a: Float64Array,
  r: number,
): { values: Float64Array; top: Float64Array; z: Float64Array } | undefined {
  const info = int(0), lda = int(Math.max(1, n)), lo = ch("L");
  const d = new Float64Array(n), e = new Float64Array(Math.max(1, n)), tau = new Float64Array(Math.max(1, n));
  const q = new Float64Array(1);
  const targs = ["uplo", "n", "a", "lda", "d", "e", "tau", "work", "lwork", "info"];
  const sytrd = symbol("dsytrd_");
  sytrd(lo, int(n), a, lda, d, e, tau, q, int(-1), info, 1n);
  check("dsytrd", info[0], targs, () => "");
  let lwork = Math.ceil(q[0]) + 64;
  sytrd(lo, int(n), a, lda, d, e, tau, new Float64Array(lwork), int(lwork), info, 1n);
  check("dsytrd", info[0], targs, () => "");
  const values = d.slice(), ev = e.slice(0, Math.max(1, n - 1));
  symbol("dsterf_")(int(n), values, ev, info);
  check("dsterf", info[0], ["n", "d", "e", "info"], (i) => `${i} eigenvalues did not converge`);
  if (r === 0) return { values, top: new Float64Array(0), z: new Float64Array(0) };
  const stemr = symbol("dstemr_"), dd = d.slice(), ee = e.slice(), found = int(0);
  const w = new Float64Array(n), z = new Float64Array(n * r), isuppz = new Int32Array(2 * r);
  const vl = new Float64Array(1), vu = new Float64Array(1), tryrac = int(1), qi = new Int32Array(1);
  const il = int(n - r + 1), iu = int(n), ldz = lda, nzc = int(r);
  // workspace query (lwork = liwork = −1), then the call
  const call = (work: Float64Array, lw: number, iwork: Int32Array, liw: number) =>
    stemr(
      ch("V"),
      ch("I"),
      int(n),
      dd,
      ee,
      vl,
      vu,
      il,
      iu,
      found,
      w,
      z,
      ldz,
      nzc,
      isuppz,
      tryrac,
      work,
      int(lw),
      iwork,
      int(liw),
      info,
      1n,
      1n,
    );
  call(q, -1, qi, -1);
  if (info[0] !== 0) return undefined;
  lwork = Math.ceil(q[0]) + 64;
  const liwork = qi[0] + 64;
  call(new Float64Array(lwork), lwork, new Int32Array(liwork), liwork);
  if (info[0] !== 0 || found[0] !== r) return undefined;
  const ormtr = symbol("dormtr_");
  const oargs = ["side", "uplo", "trans", "m", "n", "a", "lda", "tau", "c", "ldc", "work", "lwork", "info"];
  ormtr(ch("L"), lo, ch("N"), int(n), int(r), a, lda, tau, z, ldz, q, int(-1), info, 1n, 1n, 1n);
  check("dormtr", info[0], oargs, () => "");
  lwork = Math.ceil(q[0]) + 64;
  ormtr(
    ch("L"),
    lo,
    ch("N"),
    int(n),
    int(r),
    a,
    lda,
    tau,
    z,
    ldz,
    new Float64Array(lwork),
    int(lwork),
    info,
    1n,
    1n,
    1n,
  );
  check("dormtr", info[0], oargs, () => "");
  return { values, top: w.slice(0, r), z };
}
