/**
 * moekit's float64 WebAssembly SIMD kernels (`gemm64_wat.ts`) at run time: one instance with its own
 * memory, grown on demand. Two ways in:
 *
 * - {@link gemm64Wasm}: `C = A·Bᵀ` of JS arrays (copied in and out), for one-off products;
 * - a {@link Workspace} that keeps the eigensolver's n×n matrices inside the kernel memory so that the
 *   symmetric matrix-vector products and the in-place GEMM updates run there without copies.
 *
 * The products are cut into cache blocks: 256 of the inner dimension × 64 rows of B per kernel call.
 * Everything is undefined / unavailable when WebAssembly SIMD is missing (callers then use float64 JS).
 * Internal.
 * @module
 */

import { GEMM64_WASM_PLAIN, GEMM64_WASM_RELAXED } from "./gemm64_wasm.ts";

interface Exports {
  memory: WebAssembly.Memory;
  gemm_block(
    a: number,
    b: number,
    c: number,
    m: number,
    n: number,
    k: number,
    lda: number,
    ldb: number,
    ldc: number,
    add: number,
  ): void;
  symv_lower(a: number, n: number, s0: number, v: number, w: number): void;
}

function decode(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

let kernel: Exports | null | undefined;

function load(): Exports | null {
  if (kernel !== undefined) return kernel;
  kernel = null;
  try {
    if (typeof WebAssembly !== "object") return null;
    const relaxed = decode(GEMM64_WASM_RELAXED), plain = decode(GEMM64_WASM_PLAIN);
    const bytes = WebAssembly.validate(relaxed) ? relaxed : WebAssembly.validate(plain) ? plain : undefined;
    if (!bytes) return null;
    kernel = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Exports;
  } catch {
    kernel = null;
  }
  return kernel;
}

const KC = 256, NC = 64, PAGE = 65536;
/** Bytes of kernel memory held by the open workspace (temporaries of {@link gemm64Wasm} go above). */
let reserved = 0;

/** Whether the float64 WebAssembly kernels can run here. */
export function gemm64Available(): boolean {
  return load() !== null;
}

/** Grows the kernel memory to `bytes`; false when it cannot. */
function ensure(w: Exports, bytes: number): boolean {
  const have = w.memory.buffer.byteLength;
  if (bytes <= have) return true;
  if (bytes > 2 ** 32 - PAGE) return false;
  try {
    w.memory.grow(Math.ceil((bytes - have) / PAGE));
    return true;
  } catch {
    return false;
  }
}

/**
 * `C (+)= A·Bᵀ` on byte offsets in the kernel memory: A [m, k] with row stride `lda` doubles, B [n, k]
 * with `ldb`, C [m, n] with `ldc`; `add` keeps C's contents.
 */
function gemmAt(
  w: Exports,
  pa: number,
  pb: number,
  pc: number,
  m: number,
  n: number,
  k: number,
  lda: number,
  ldb: number,
  ldc: number,
  add: boolean,
): void {
  if (k === 0 && !add) {
    for (let i = 0; i < m; i++) new Float64Array(w.memory.buffer, pc + i * ldc * 8, n).fill(0);
  }
  for (let k0 = 0; k0 < k; k0 += KC) {
    const kc = Math.min(KC, k - k0), acc = add || k0 > 0 ? 1 : 0;
    for (let j0 = 0; j0 < n; j0 += NC) {
      w.gemm_block(
        pa + k0 * 8,
        pb + (j0 * ldb + k0) * 8,
        pc + j0 * 8,
        m,
        Math.min(NC, n - j0),
        kc,
        lda,
        ldb,
        ldc,
        acc,
      );
    }
  }
}

/**
 * `C [m,n] = A [m,k] · B [n,k]ᵀ` (row-major float64) on the WebAssembly kernel; the arguments are not
 * modified. Undefined when the kernels are missing or the operands do not fit in the kernel memory.
 */
export function gemm64Wasm(
  a: Float64Array,
  b: Float64Array,
  m: number,
  n: number,
  k: number,
): Float64Array | undefined {
  const w = load();
  const pa = reserved, pb = pa + m * k * 8, pc = pb + n * k * 8, end = pc + m * n * 8;
  if (!w || !ensure(w, end)) return undefined;
  const heap = new Float64Array(w.memory.buffer);
  heap.set(a.subarray(0, m * k), pa / 8);
  heap.set(b.subarray(0, n * k), pb / 8);
  gemmAt(w, pa, pb, pc, m, n, k, k, n === 0 ? 0 : k, n, false);
  return new Float64Array(w.memory.buffer, pc, m * n).slice();
}

/**
 * Float64 arrays inside the kernel memory, allocated once (views stay valid until {@link Workspace.close}
 * as long as only in-place kernels run; {@link gemm64Wasm} may grow the memory, so take fresh views with
 * `view` after it), and the kernels that work on them in place. One workspace at a time.
 */
export interface Workspace {
  /** Fresh view of array i. */
  view(i: number): Float64Array;
  /** `w[s0…n] = A(s0…n, s0…n)·v` for the lower triangle of `A` (array ia, column-major, n×n), v, w offsets. */
  symvLower(ia: number, n: number, s0: number, iv: number, v: number, iw: number, w: number): void;
  /**
   * `C (+)= A·Bᵀ` with operands given as (array, offset in doubles, row stride): A [m, k], B [n, k],
   * C [m, n].
   */
  gemm(
    a: [number, number, number],
    b: [number, number, number],
    c: [number, number, number],
    m: number,
    n: number,
    k: number,
    add: boolean,
  ): void;
  /** Releases the memory for the next workspace. */
  close(): void;
}

/** A workspace of arrays of the given lengths (doubles), or undefined when it does not fit or is open. */
export function openWorkspace(lengths: number[]): Workspace | undefined {
  const w = load();
  if (!w || reserved !== 0) return undefined;
  const ptrs: number[] = [];
  let end = 0;
  for (const len of lengths) {
    ptrs.push(end);
    end += Math.ceil(len / 2) * 16;
  }
  if (!ensure(w, end)) return undefined;
  reserved = end;
  let open = true;
  return {
    view: (i) => new Float64Array(w.memory.buffer, ptrs[i], lengths[i]),
    symvLower: (ia, n, s0, iv, v, iw, o) => w.symv_lower(ptrs[ia], n, s0, ptrs[iv] + v * 8, ptrs[iw] + o * 8),
    gemm: (a, b, c, m, n, k, add) =>
      gemmAt(
        w,
        ptrs[a[0]] + a[1] * 8,
        ptrs[b[0]] + b[1] * 8,
        ptrs[c[0]] + c[1] * 8,
        m,
        n,
        k,
        a[2],
        b[2],
        c[2],
        add,
      ),
    close: () => {
      if (open) reserved = 0;
      open = false;
    },
  };
}
