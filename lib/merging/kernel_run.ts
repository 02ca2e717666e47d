/**
 * The merge engine's WebAssembly SIMD kernel at run time: one instance per thread (the calling thread or
 * a merge Worker), its memory laid out once — a fixed scratch area for the chunk buffers, then a pool
 * into which `runJob` decodes a tensor's 16-bit inputs (reused from tensor to tensor, so the pages are
 * faulted in once per run, not once per tensor). Float32 inputs that live elsewhere are copied into the
 * scratch area a chunk at a time. When WebAssembly SIMD is missing the engine keeps its JavaScript loops
 * (the same arithmetic; tests check that both agree). Internal.
 * @module
 */

import { storeF16 } from "../io/dtype.ts";
import { MERGE_WASM } from "./kernel_wasm.ts";
import { HALF_BINS } from "./kernel_wat.ts";
import { registerMagnitudeKernel } from "../core/selection.ts";

/** Entries per chunk. */
export const KCHUNK = 4096;
/** Most models the kernel merges at once (more: the JavaScript loops). */
export const KMAX_MODELS = 64;

interface Exports {
  memory: WebAssembly.Memory;
  bf16_widen(dst: number, src: number, n: number): void;
  f16_widen(dst: number, src: number, n: number): void;
  lin(
    ptrs: number,
    ws: number,
    N: number,
    out: number,
    len: number,
    s: number,
    div: number,
    f32: number,
  ): void;
  sd_keep(sd: number, x: number, b: number, scale: number, len: number): void;
  sd_mask(sd: number, x: number, b: number, mask: number, scale: number, len: number): void;
  sd_dare(
    sd: number,
    x: number,
    b: number,
    scale: number,
    s0: number,
    thr: number,
    all: number,
    len: number,
  ): void;
  dare_norms(
    acc: number,
    x: number,
    b: number,
    s0: number,
    thr: number,
    all: number,
    len: number,
    norm: number,
  ): void;
  sd_cut(sd: number, x: number, b: number, t1: number, t0: number, ties: number, len: number): void;
  /** `gta_mix_<flags>` for each flag set of `GTA_FLAGS`. */
  [mix: `gta_mix_${number}`]: (
    sd: number,
    stride: number,
    N: number,
    ws: number,
    lambda: number,
    dv: number,
    b: number,
    out: number,
    len: number,
    f32: number,
  ) => void;
  dot3(acc: number, a: number, b: number, len: number): void;
  mag_hist(hist: number, x: number, b: number, len: number, lo: number, hi: number, gat: number): number;
  mag_band(x: number, b: number, len: number, lo: number, hi: number, gat: number, above: number): number;
  mag_count(
    hist: number,
    x: number,
    b: number,
    len: number,
    lo: number,
    nf: number,
    g0: number,
    ng: number,
    gat: number,
  ): number;
  mag_gather(
    x: number,
    b: number,
    len: number,
    k1: number,
    s1: number,
    k2: number,
    s2: number,
    gat: number,
  ): number;
  lerp2(out: number, x: number, b: number, al: number, be: number, len: number, f32: number): void;
  bf16_encode(dst: number, src: number, n: number, f64: number): void;
  f16_encode(dst: number, src: number, n: number, f64: number): void;
}

// the scratch layout (byte offsets): chunk slots are KCHUNK + 4 entries wide (vector reads past the end)
const SLOT = KCHUNK + 16;
const SD = 0; // float64 task vectors of a chunk, one slot per model
const IN = SD + KMAX_MODELS * SLOT * 8; // float32 input copies: the base, then the models
const OUT = IN + (KMAX_MODELS + 1) * SLOT * 4; // the output chunk (float64 wide)
const MASK = OUT + SLOT * 8; // a byte mask chunk (SLOT is a multiple of 16)
const PTRS = MASK + SLOT; // i32 pointers of the models' chunks
const WS = PTRS + KMAX_MODELS * 4; // float64 weights
const ACC = WS + KMAX_MODELS * 8; // float64 sums; i32 tie quotas at ACC + 32
const HIST = ACC + 64; // u32[65536]: the magnitude histogram
const GAT = HIST + 65536 * 4; // float64 magnitudes gathered by the histogram pass
/** Entries encoded at a time by `encode16` (float64 ones fill the task-vector slots). */
const ENC_CHUNK = 16 * KCHUNK;
const HSLOTS = 4; // histograms counted by `mag_count` across calls (two u32[65536] halves each)
/** Most bins of a fine histogram (24-bit keys, 256 per 16-bit key). */
export const FINE_BINS = HALF_BINS - 65536;
/** A histogram slot: 8 bytes of padding, the u32 min and max of the keys counted, the two halves. */
const HSLOT_BYTES = 16 + 2 * HALF_BINS * 4;
const HISTS = Math.ceil((GAT + SLOT * 8) / 16) * 16;
const POOL = Math.ceil((HISTS + HSLOTS * HSLOT_BYTES) / 65536) * 65536; // the decode pool: a page boundary

/** A thread's kernel instance and its memory. */
export class MergeKernel {
  readonly k: Exports;
  #f32!: Float32Array;
  #f64!: Float64Array;
  #u8!: Uint8Array;
  #i32!: Int32Array;
  /** Bytes of the pool handed out in the current job. */
  #poolUsed = 0;

  constructor(k: Exports) {
    this.k = k;
    this.#ensure(POOL);
  }

  #ensure(bytes: number): void {
    const mem = this.k.memory, have = mem.buffer.byteLength;
    if (bytes > have) mem.grow(Math.ceil((bytes - have) / 65536));
    if (!this.#f32 || this.#f32.buffer !== mem.buffer) {
      this.#f32 = new Float32Array(mem.buffer);
      this.#f64 = new Float64Array(mem.buffer);
      this.#u8 = new Uint8Array(mem.buffer);
      this.#i32 = new Int32Array(mem.buffer);
    }
  }

  /**
   * Reserves `bytes` of the pool for the current job (all reservations must be made before any view of
   * the pool is taken: growing the memory detaches them). Returns the byte offset, or -1 when the memory
   * cannot hold it (the caller then decodes into ordinary arrays).
   */
  reserve(bytes: number): number {
    const at = POOL + this.#poolUsed, end = at + Math.ceil(bytes / 16) * 16;
    if (end > 3.5 * 2 ** 30) return -1;
    try {
      this.#ensure(end);
    } catch {
      return -1;
    }
    this.#poolUsed = end - POOL;
    return at;
  }

  #seen = new Set<number>();

  /**
   * Whether a job whose 16-bit inputs need `bytes` of pool should decode into it: yes when the pool
   * already holds that much, or when a job of exactly this size came before (the pool grows for sizes
   * that repeat — a model's layers — and not for a one-off largest tensor, whose pages would otherwise
   * stay resident for the rest of the run).
   */
  poolFits(bytes: number): boolean {
    if (POOL + bytes <= this.k.memory.buffer.byteLength) return true;
    if (this.#seen.has(bytes)) return true;
    this.#seen.add(bytes);
    return false;
  }

  /** Ends a job: the pool may be handed out again. */
  releasePool(): void {
    this.#poolUsed = 0;
  }

  /** Decodes 16-bit floats (BF16/F16 bytes) into the pool at `at` (float32): copy, then widen in place. */
  decode16(bytes: Uint8Array, dtype: "BF16" | "F16", at: number): Float32Array {
    const n = bytes.byteLength / 2;
    this.#ensure(at + 4 * n);
    this.#u8.set(bytes, at + 2 * n);
    (dtype === "BF16" ? this.k.bf16_widen : this.k.f16_widen)(at, at + 2 * n, n);
    return new Float32Array(this.k.memory.buffer, at, n);
  }

  /**
   * Encodes a result as BF16/F16 bytes bit-identical to `encodeFloats(data, dtype)`, into the first
   * `2 · length` bytes of its own memory (each chunk is copied into the kernel before its bits are
   * written back, so the result is overwritten front to back): returns the bytes, a view of `data`'s
   * buffer. `data` must not live in this kernel's memory, and is not usable afterwards.
   */
  encode16(data: Float32Array | Float64Array, dtype: "BF16" | "F16"): Uint8Array {
    const n = data.length, wide = data instanceof Float64Array ? 1 : 0, size = data.BYTES_PER_ELEMENT;
    const out = new Uint8Array(data.buffer, data.byteOffset, 2 * n);
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // F16 as encodeFloats stores it (Float16Array, measured faster than the scalar WASM encoder; in place
    // front to back, each entry read before its 2 bytes are written), else the kernel's `f16_encode`
    // (bit-identical to it; `wasmF16` forces it, for tests)
    if (
      dtype === "F16" && !this.#wasmF16 && storeF16(data, new Uint16Array(data.buffer, data.byteOffset, n))
    ) {
      return out;
    }
    const enc = dtype === "BF16" ? this.k.bf16_encode : this.k.f16_encode;
    for (let a = 0; a < n; a += ENC_CHUNK) {
      const len = Math.min(ENC_CHUNK, n - a);
      this.#u8.set(src.subarray(a * size, (a + len) * size), SD);
      enc(SD, SD, len, wide);
      out.set(this.#u8.subarray(SD, SD + 2 * len), 2 * a);
    }
    return out;
  }

  /** Encode F16 with the kernel even where Float16Array exists (tests compare both with encodeFloats). */
  set wasmF16(on: boolean) {
    this.#wasmF16 = on;
  }
  #wasmF16 = false;

  /** Whether `a` lives in this kernel's memory. */
  owns(a: ArrayBufferView): boolean {
    return a.buffer === this.k.memory.buffer;
  }

  /** The byte address of entry `start` of `a` for the kernel: in place, or copied into input slot `slot`. */
  input(a: Float32Array, start: number, len: number, slot: number): number {
    if (a.buffer === this.k.memory.buffer) return a.byteOffset + 4 * start;
    const at = IN + slot * SLOT * 4;
    this.#f32.set(a.subarray(start, start + len), at >> 2);
    return at;
  }

  /** The byte address of model m's float64 task-vector slot. */
  sd(m: number): number {
    return SD + m * SLOT * 8;
  }

  /** Writes the model pointers and weights for `lin` / `gta_mix`. */
  setWeights(w: ArrayLike<number>): void {
    this.#f64.set(w, WS >> 3);
  }

  setPtr(m: number, ptr: number): void {
    this.#i32[(PTRS >> 2) + m] = ptr;
  }

  /** Copies a byte-mask chunk into the scratch mask slot; returns its address. */
  mask(mask: Uint8Array, start: number, len: number): number {
    this.#u8.set(mask.subarray(start, start + len), MASK);
    return MASK;
  }

  /** Fills model m's task-vector slot with zeros. */
  zeroSd(m: number, len: number): void {
    this.#f64.fill(0, this.sd(m) >> 3, (this.sd(m) >> 3) + len + 2);
  }

  /** The tie quotas of a band, through the scratch (sd_cut reads and updates them). */
  cut(
    sd: number,
    x: number,
    b: number,
    c: { t1: number; t0: number },
    st: { ties1: number; ties0: number },
    len: number,
  ) {
    const q = (ACC + 32) >> 2;
    this.#i32[q] = Math.min(st.ties1, 0x7fffffff);
    this.#i32[q + 1] = Math.min(st.ties0, 0x7fffffff);
    this.k.sd_cut(sd, x, b, c.t1, c.t0, ACC + 32, len);
    st.ties1 = this.#i32[q];
    st.ties0 = this.#i32[q + 1];
  }

  /** Sets the float64 sums at ACC; `sums()` reads them back. */
  setSums(...v: number[]): void {
    this.#f64.set(v, ACC >> 3);
  }

  sums(count: number): number[] {
    return Array.from(this.#f64.subarray(ACC >> 3, (ACC >> 3) + count));
  }

  /** The output chunk's address: in place when `out` lives here, else the scratch output slot. */
  outPtr(out: Float32Array | Float64Array, start: number): number {
    return this.owns(out) ? out.byteOffset + out.BYTES_PER_ELEMENT * start : OUT;
  }

  /** Copies the scratch output chunk into `out` (no-op when the kernel wrote in place). */
  flushOut(out: Float32Array | Float64Array, start: number, len: number): void {
    if (this.owns(out)) return;
    if (out instanceof Float32Array) out.set(this.#f32.subarray(OUT >> 2, (OUT >> 2) + len), start);
    else out.set(this.#f64.subarray(OUT >> 3, (OUT >> 3) + len), start);
  }

  /** The histogram pass of magnitude selection over float32 data (see `MagnitudeCountKernel`). */
  countMagnitudes(
    values: Float32Array,
    sub: Float32Array | undefined,
    hist: Uint32Array,
    lo: number,
    hi: number,
    keep: (a: Float64Array) => void,
  ): void {
    const n = values.length, h = HIST >> 2;
    this.#i32.fill(0, h, h + 65536);
    for (let start = 0; start < n; start += KCHUNK) {
      const len = Math.min(KCHUNK, n - start);
      const x = this.input(values, start, len, 1), b = sub ? this.input(sub, start, len, 0) : 0;
      const g = this.k.mag_hist(HIST, x, b, len, lo, hi, GAT);
      if (g > 0) keep(this.#f64.subarray(GAT >> 3, (GAT >> 3) + g));
    }
    const c = new Uint32Array(this.k.memory.buffer, HIST, 65536);
    for (let i = 0; i < 65536; i++) hist[i] += c[i];
  }

  /** Which histograms each `mag_count` slot counts into (pending counts, added by `flushHistogram`). */
  #slots: ({ hist: Uint32Array; fine?: { lo: number; hist: Uint32Array } } | undefined)[] = new Array(HSLOTS)
    .fill(undefined);
  #slotUse = new Array<number>(HSLOTS).fill(0);
  #tick = 0;

  /**
   * Counts the top-16-bit keys of `|values − sub|` (float32 data) towards `hist` — and with `fine`, the
   * top-24-bit keys in [fine.lo, fine.lo + fine.hist.length) towards `fine.hist` (at most FINE_BINS) — in
   * a histogram slot of the kernel's memory, kept across calls (no per-call zeroing or summing): the
   * counts reach `hist` at `flushHistogram(hist)`, or when the slot is taken for another histogram. With
   * `gather`, the magnitudes whose 24-bit key is in [lo, lo + count) go to `keep` (in index order).
   */
  countInto(
    values: Float32Array,
    sub: Float32Array | undefined,
    hist: Uint32Array,
    fine?: { lo: number; hist: Uint32Array },
    gather?: { lo: number; count: number; keep: (a: Float64Array) => void },
  ): void {
    let s = this.#slots.findIndex((x) => x?.hist === hist);
    if (s >= 0 && this.#slots[s]!.fine !== fine) {
      this.flushHistogram(hist);
      s = -1;
    }
    if (s < 0) {
      s = this.#slots.indexOf(undefined);
      if (s < 0) {
        s = this.#slotUse.indexOf(Math.min(...this.#slotUse));
        this.flushHistogram(this.#slots[s]!.hist);
      }
      this.#slots[s] = { hist, fine };
      this.#clearRange(s);
    }
    this.#slotUse[s] = ++this.#tick;
    const at = HISTS + s * HSLOT_BYTES + 16,
      n = values.length,
      nf = fine ? Math.min(fine.hist.length, FINE_BINS) : 0;
    for (let start = 0; start < n; start += KCHUNK) {
      const len = Math.min(KCHUNK, n - start);
      const x = this.input(values, start, len, 1), b = sub ? this.input(sub, start, len, 0) : 0;
      const g = this.k.mag_count(at, x, b, len, fine?.lo ?? 0, nf, gather?.lo ?? 0, gather?.count ?? 0, GAT);
      if (g > 0) gather!.keep(this.#f64.subarray(GAT >> 3, (GAT >> 3) + g));
    }
  }

  /** Marks slot s's key range empty (min 2³² − 1, max 0). */
  #clearRange(s: number): void {
    const r = (HISTS + s * HSLOT_BYTES + 8) >> 2;
    this.#i32[r] = -1;
    this.#i32[r + 1] = 0;
  }

  /**
   * Adds the pending counts of `hist` (if a slot holds any) into it, and frees the slot: only the 16-bit
   * buckets in the range of keys the kernel counted (and the fine window) are read and cleared.
   */
  flushHistogram(hist: Uint32Array): void {
    const s = this.#slots.findIndex((x) => x?.hist === hist);
    if (s < 0) return;
    const r = (HISTS + s * HSLOT_BYTES + 8) >> 2, h = r + 2, c = this.#i32, fine = this.#slots[s]!.fine;
    const lo = (c[r] >>> 0) >>> 8, hi = (c[r + 1] >>> 0) >>> 8;
    for (let i = lo; i <= hi; i++) hist[i] += c[h + i] + c[h + HALF_BINS + i];
    if (lo <= hi) {
      c.fill(0, h + lo, h + hi + 1);
      c.fill(0, h + HALF_BINS + lo, h + HALF_BINS + hi + 1);
    }
    if (fine) {
      // the window's entries were counted only there: into the fine bins and their 16-bit buckets
      const f = h + 65536, nf = Math.min(fine.hist.length, FINE_BINS);
      for (let i = 0; i < nf; i++) {
        const v = c[f + i] + c[f + HALF_BINS + i];
        fine.hist[i] += v;
        hist[(fine.lo + i) >>> 8] += v;
      }
      c.fill(0, f, f + nf);
      c.fill(0, f + HALF_BINS, f + HALF_BINS + nf);
    }
    this.#clearRange(s);
    this.#slots[s] = undefined;
  }

  /** Flushes every histogram slot. */
  flushAll(): void {
    for (const h of this.#slots) if (h) this.flushHistogram(h.hist);
  }

  /**
   * The boundary pass of magnitude selection over float32 data: hands `keep` the magnitudes whose bits
   * shifted right by `s1` are `k1`, or by `s2` are `k2`, a chunk at a time, in index order.
   */
  gatherMagnitudes(
    values: Float32Array,
    sub: Float32Array | undefined,
    k1: number,
    s1: number,
    k2: number,
    s2: number,
    keep: (a: Float64Array) => void,
  ): void {
    const n = values.length;
    for (let start = 0; start < n; start += KCHUNK) {
      const len = Math.min(KCHUNK, n - start);
      const x = this.input(values, start, len, 1), b = sub ? this.input(sub, start, len, 0) : 0;
      const g = this.k.mag_gather(x, b, len, k1, s1, k2, s2, GAT);
      if (g > 0) keep(this.#f64.subarray(GAT >> 3, (GAT >> 3) + g));
    }
  }

  /** The guessed band of magnitude selection over float32 data (see `MagnitudeKernel.band`). */
  bandMagnitudes(
    values: Float32Array,
    sub: Float32Array | undefined,
    lo: number,
    hi: number,
    keep: (a: Float64Array) => void,
  ): number {
    const n = values.length;
    this.setSums(0);
    for (let start = 0; start < n; start += KCHUNK) {
      const len = Math.min(KCHUNK, n - start);
      const x = this.input(values, start, len, 1), b = sub ? this.input(sub, start, len, 0) : 0;
      const g = this.k.mag_band(x, b, len, lo, hi, GAT, ACC);
      if (g > 0) keep(this.#f64.subarray(GAT >> 3, (GAT >> 3) + g));
    }
    return this.sums(1)[0];
  }

  readonly ACC = ACC;
  readonly PTRS = PTRS;
  readonly WS = WS;
  readonly SLOT_BYTES = SLOT * 8;
}

let instance: MergeKernel | null | undefined;
let enabled = true;
let pool = true;

/**
 * Whether `runJob` may decode 16-bit inputs into this thread's kernel memory (no fresh pages from the
 * second tensor of a size on; `MergeKernel.poolFits` says when). Default on. Internal.
 */
export function decodePool(): boolean {
  return pool && enabled;
}

/** Switches the decode pool of this thread on or off; returns the previous setting. Internal. */
export function setDecodePool(on: boolean): boolean {
  const was = pool;
  pool = on;
  return was;
}

/** The calling thread's kernel, or null where WebAssembly SIMD is missing (or the kernel is switched off). */
export function mergeKernel(): MergeKernel | null {
  if (!enabled) return null;
  if (instance === undefined) {
    try {
      const bin = Uint8Array.from(atob(MERGE_WASM), (c) => c.charCodeAt(0));
      const mod = new WebAssembly.Module(bin);
      instance = new MergeKernel(new WebAssembly.Instance(mod, {}).exports as unknown as Exports);
      const f32 = (v: ArrayLike<number>, b: ArrayLike<number> | undefined): v is Float32Array =>
        v instanceof Float32Array && (b === undefined || b instanceof Float32Array);
      registerMagnitudeKernel({
        count(values, sub, hist, lo, hi, keep) {
          const K = mergeKernel();
          if (!K || !f32(values, sub)) return false;
          K.countMagnitudes(values, sub as Float32Array | undefined, hist, lo, hi, keep);
          return true;
        },
        accumulate(values, sub, hist, fine, gather) {
          const K = mergeKernel();
          if (!K || !f32(values, sub) || (fine && fine.hist.length > FINE_BINS)) return false;
          K.countInto(values, sub as Float32Array | undefined, hist, fine, gather);
          return true;
        },
        flush(hist) {
          instance?.flushHistogram(hist);
        },
        gather(values, sub, k1, s1, k2, s2, keep) {
          const K = mergeKernel();
          if (!K || !f32(values, sub)) return false;
          K.gatherMagnitudes(values, sub as Float32Array | undefined, k1, s1, k2, s2, keep);
          return true;
        },
        band(values, sub, lo, hi, keep) {
          const K = mergeKernel();
          return K && f32(values, sub)
            ? K.bandMagnitudes(values, sub as Float32Array | undefined, lo, hi, keep)
            : -1;
        },
      });
    } catch {
      instance = null;
    }
  }
  return instance;
}

/**
 * Switches the kernel off (the JavaScript loops run) or on; returns the previous setting. For tests that
 * check both paths agree. Internal.
 */
export function setMergeKernel(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/**
 * Drops this thread's kernel and its memory (the decode pool holds a tensor's inputs at their largest):
 * the next merge instantiates a fresh one. Internal.
 */
export function releaseMergeKernel(): void {
  instance?.flushAll();
  instance = undefined;
}

/** Whether every array is a Float32Array (the kernel's input type). */
export function allF32(...arrays: readonly (ArrayLike<number> | undefined)[]): boolean {
  return arrays.every((a) => a === undefined || a instanceof Float32Array);
}
