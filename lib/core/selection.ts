/**
 * Magnitude selection in O(n) with moekit's total order: `|x|` descending, lower flat index first on
 * ties (docs/merging.md, "Tie rules"). The k largest are "every |x| > θ, then the first k − #{|x| > θ}
 * entries equal to θ in index order", θ being the k-th largest magnitude. θ is found by a histogram of
 * the top 16 bits of |x| (sign, exponent and 4 mantissa bits of the float64 pattern, which orders
 * non-negative doubles), then an exact selection among the entries of the one boundary bucket: two passes
 * over the data, no sort, no copy of the data. This is the one k-th-magnitude routine of moekit
 * (magnitude pruning, Breadcrumbs, the TIES paper variant, ComPEFT).
 * @module
 */

const CHUNK = 4096;
const chunkF64 = new Float64Array(CHUNK), chunkU32 = new Uint32Array(chunkF64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // index of the high word
const hist = new Uint32Array(65536);

/** |values[i] − sub[i]| (or |values[i]|) for i in [start, start + len) into `chunkF64`. */
function absChunk(values: ArrayLike<number>, sub: ArrayLike<number> | undefined, start: number, len: number) {
  if (sub) { for (let i = 0; i < len; i++) chunkF64[i] = Math.abs(values[start + i] - sub[start + i]); }
  else for (let i = 0; i < len; i++) chunkF64[i] = Math.abs(values[start + i]);
}

/**
 * Exact k-th largest of non-negative doubles by 16-bit radix passes over their bit patterns (from the top;
 * `top`: the top 16 bits, when every value is known to share them). After each pass the values that still
 * share the prefix are moved to the front, so later passes look at those only.
 */
function radixKth(v: Float64Array, count: number, k: number, top = -1): number {
  const f = new Float64Array(1), u = new Uint32Array(f.buffer);
  // a copy: the caller's candidates keep their order (their block numbers run beside them)
  const w = takeScratch(count), vu = new Uint32Array(w.buffer);
  w.set(v.subarray(0, count));
  let prefixHi = top >= 0 ? (top << 16) >>> 0 : 0, prefixLo = 0, rank = k, live = count;
  const h = kthHist;
  for (let pass = top >= 0 ? 1 : 0; pass < 4; pass++) {
    h.fill(0);
    const shift = pass % 2 === 0 ? 16 : 0, word = pass < 2 ? HI : 1 - HI;
    for (let i = 0; i < live; i++) h[(vu[2 * i + word] >>> shift) & 0xffff]++;
    let d = 65535;
    for (; d > 0 && h[d] < rank; d--) rank -= h[d];
    // keep the values whose digit is d
    let m = 0;
    for (let i = 0; i < live; i++) {
      if (((vu[2 * i + word] >>> shift) & 0xffff) === d) {
        vu[2 * m] = vu[2 * i];
        vu[2 * m + 1] = vu[2 * i + 1];
        m++;
      }
    }
    live = m;
    if (pass === 0) prefixHi = (d << 16) >>> 0;
    else if (pass === 1) prefixHi = (prefixHi | d) >>> 0;
    else if (pass === 2) prefixLo = (d << 16) >>> 0;
    else prefixLo = (prefixLo | d) >>> 0;
  }
  u[HI] = prefixHi;
  u[1 - HI] = prefixLo;
  giveScratch(w);
  return f[0];
}
const kthHist = new Uint32Array(65536);

/**
 * Float64 scratch arrays handed from one selection to the next (fresh memory is slow to fault in): the
 * smallest free one that fits, or a new one; at most `POOL_BYTES` are kept.
 */
const scratchPool: Float64Array[] = [];
const POOL_BYTES = 64 << 20;

function takeScratch(min: number): Float64Array {
  let best = -1;
  for (let i = 0; i < scratchPool.length; i++) {
    const l = scratchPool[i].length;
    if (l >= min && (best < 0 || l < scratchPool[best].length)) best = i;
  }
  if (best < 0) return new Float64Array(Math.max(1024, min));
  return scratchPool.splice(best, 1)[0];
}

function giveScratch(a: Float64Array): void {
  if (a.length === 0) return;
  scratchPool.push(a);
  scratchPool.sort((x, y) => y.length - x.length);
  let bytes = 0;
  for (let i = 0; i < scratchPool.length; i++) {
    bytes += scratchPool[i].byteLength;
    if (bytes > POOL_BYTES) {
      scratchPool.length = i;
      break;
    }
  }
}

/**
 * Magnitudes kept in the order they were met, with the number of the block each came from (as runs:
 * blocks are met in increasing order), in a pooled scratch array (`release` returns it).
 */
class Gathered {
  v: Float64Array;
  c = 0;
  /** Per run of one block: its block number, then its first position. */
  readonly #runs: number[] = [];

  constructor(size: number) {
    this.v = size > 0 ? takeScratch(size) : new Float64Array(0);
  }

  /** Room for `more` entries after the first `c`. */
  #room(more: number): void {
    if (this.c + more <= this.v.length) return;
    const v = takeScratch(2 * (this.c + more));
    v.set(this.v.subarray(0, this.c));
    giveScratch(this.v);
    this.v = v;
  }

  /** The entries from position `c` on come from block `block`. */
  #mark(block: number): void {
    const r = this.#runs;
    if (r.length === 0 || r[r.length - 2] !== block) r.push(block, this.c);
  }

  /** Appends the magnitudes `a` of block `block`. */
  add(a: Float64Array, block: number): void {
    this.#room(a.length);
    this.#mark(block);
    this.v.set(a, this.c);
    this.c += a.length;
  }

  /** Appends one magnitude of block `block`. */
  push(x: number, block: number): void {
    this.#room(1);
    this.#mark(block);
    this.v[this.c++] = x;
  }

  /** Appends the entries of `src` whose top 32 bits shifted right by 8 are `key` (with their blocks). */
  addKey(src: Gathered, key: number): void {
    const sv = src.v, u = new Uint32Array(sv.buffer, sv.byteOffset, 2 * src.c);
    src.eachRun((block, from, to) => {
      for (let i = from; i < to; i++) {
        if (u[2 * i + HI] >>> 8 !== key) continue;
        this.#mark(block);
        if (this.c === this.v.length) this.#room(1);
        this.v[this.c++] = sv[i];
      }
    });
  }

  /** Calls `f(block, from, to)` for each run of entries [from, to) of one block, in order. */
  eachRun(f: (block: number, from: number, to: number) => void): void {
    const r = this.#runs;
    for (let i = 0; i < r.length; i += 2) f(r[i], r[i + 1], i + 3 < r.length ? r[i + 3] : this.c);
  }

  /** Returns the scratch array to the pool (the entries are gone). */
  release(): void {
    giveScratch(this.v);
    this.v = new Float64Array(0);
    this.c = 0;
    this.#runs.length = 0;
  }
}

/**
 * Streaming selection of the k-th largest magnitudes (several ranks k at once) over a tensor fed in
 * blocks, in two passes: {@link MagnitudeSelection.count} over every block (a histogram of the top 16
 * bits of each float64 magnitude), then {@link MagnitudeSelection.gather} over every block (the entries of
 * each rank's boundary bucket), then {@link MagnitudeSelection.result}. Blocks are numbered in the order
 * they are fed to `gather`; the result also says how many entries equal to θ each block holds, so a block
 * can start its tie counter where the blocks before it left it. This is the one selection routine:
 * {@link selectMagnitude} runs it over a single block. Internal.
 */
export class MagnitudeSelection {
  readonly #ks: readonly number[];
  readonly #hist: Uint32Array;
  #bucket: Int32Array;
  #rank: Float64Array;
  #above: Float64Array;
  #cand: Gathered[];
  #block = 0;
  /** Entries of the whole tensor (for the fine window's guess), or 0 when not known. */
  readonly #total: number;
  /**
   * The first rank's fine window: counts of the top-24-bit keys [lo, lo + hist.length), guessed from the
   * first block; `ok` while every block was counted into it.
   */
  #fine?: { lo: number; hist: Uint32Array; ok: boolean };
  /**
   * One rank only: the magnitudes whose 24-bit key is in [lo, lo + count) — a few sub-buckets around the
   * boundary guessed from the first block — with their block numbers, gathered while counting; when the
   * boundary falls inside, they are the candidates and the gather pass is not needed.
   */
  #win?: { lo: number; count: number; g: Gathered };
  /** Whether the counting pass found the candidates (no gather pass). */
  #single = false;
  /** Per rank: the key of its boundary bucket and the shift that gives an entry's key (48: 16 bits). */
  #key = new Int32Array(0);
  #shift = new Int32Array(0);

  /**
   * `ks`: the ranks (1-based, k-th largest) to select; `hist`: a 65536-entry buffer to reuse; `total`:
   * the entries of the whole tensor fed in blocks (lets the kernel narrow the boundary bucket).
   */
  constructor(ks: readonly number[], hist: Uint32Array = new Uint32Array(65536), total = 0) {
    this.#ks = ks;
    this.#total = total;
    countKernel?.flush?.(hist); // counts an interrupted selection left pending: dropped below
    this.#hist = hist.fill(0);
    this.#bucket = new Int32Array(ks.length).fill(-1);
    this.#rank = new Float64Array(ks.length);
    this.#above = new Float64Array(ks.length);
    this.#cand = ks.map(() => new Gathered(0));
  }

  /**
   * Pass 1: adds the magnitudes `|values[i] − sub[i]|` (or `|values[i]|`) of a block to the histogram.
   * With `guess = [lo, hi]`, the entries whose key lies in that range are kept as well, so that
   * {@link MagnitudeSelection.settle} may skip pass 2 (single-block use).
   */
  count(values: ArrayLike<number>, sub?: ArrayLike<number>, guess?: readonly [number, number]): void {
    const n = values.length, hist = this.#hist, [gLo, gHi] = guess ?? [1, 0];
    let g = 0;
    const keep = (a: Float64Array) => {
      while (g + a.length > gathered.length) {
        const grown = new Float64Array(2 * gathered.length);
        grown.set(gathered);
        gathered = grown;
      }
      gathered.set(a, g);
      g += a.length;
    };
    this.#partial = false;
    if (guess && gHi < 0x7ff0 && countKernel) {
      // only the guessed buckets exactly; everything above them counts in the bucket just above
      const f = new Float64Array(2), u = new Uint32Array(f.buffer);
      u[HI] = gLo << 16;
      u[2 + HI] = (gHi + 1) << 16;
      const above = countKernel.band(values, sub, f[0], f[1], keep);
      if (above >= 0) {
        hist[gHi + 1] += above;
        const gu = new Uint32Array(gathered.buffer);
        for (let i = 0; i < g; i++) hist[gu[2 * i + HI] >>> 16]++;
        this.#guessed = { lo: gLo, hi: gHi, count: g };
        this.#partial = true;
        return;
      }
    }
    if (!guess && countKernel?.accumulate) {
      if (this.#blocksCounted === 0 && this.#total > 0 && n >= 4096 && this.#ks.length) {
        // the first rank's boundary, guessed from this block: counted to 24 bits inside that window
        const [lo, hi] = guessBuckets(values, Math.max(1, Math.round(this.#ks[0] * n / this.#total)), sub);
        if (hi >= lo && hi - lo < 8 && hi < 0x7ff0) {
          this.#fine = { lo: lo << 8, hist: new Uint32Array((hi - lo + 1) << 8), ok: true };
        }
      }
      const block = this.#blocksCounted++, win = this.#win;
      const gather = win &&
        { lo: win.lo, count: win.count, keep: (a: Float64Array) => this.#keepWindow(a, block) };
      if (countKernel.accumulate(values, sub, hist, this.#fine, gather)) {
        if (block === 0 && this.#fine && this.#ks.length === 1) this.#openWindow(values, sub);
        this.#guessed = undefined;
        return;
      }
      if (this.#fine) this.#fine.ok = false;
      this.#dropWindow();
    }
    this.#blocksCounted++;
    if (this.#fine) this.#fine.ok = false;
    this.#dropWindow();
    if (countKernel?.count(values, sub, hist, guess ? gLo : 0x10000, guess ? gHi : 0x10000, keep)) {
      this.#guessed = guess ? { lo: gLo, hi: gHi, count: g } : undefined;
      return;
    }
    for (let start = 0; start < n; start += CHUNK) {
      const len = Math.min(CHUNK, n - start);
      absChunk(values, sub, start, len);
      for (let i = 0; i < len; i++) {
        const key = chunkU32[2 * i + HI] >>> 16;
        hist[key]++;
        if (key >= gLo && key <= gHi) {
          if (g === gathered.length) {
            const grown = new Float64Array(2 * gathered.length);
            grown.set(gathered);
            gathered = grown;
          }
          gathered[g++] = chunkF64[i];
        }
      }
    }
    this.#guessed = guess ? { lo: gLo, hi: gHi, count: g } : undefined;
  }
  #guessed?: { lo: number; hi: number; count: number };
  #blocksCounted = 0;

  /**
   * After the first block's count: the sub-buckets around the rank's place in that block (scaled to the
   * tensor), and the first block's entries in them.
   */
  #openWindow(values: ArrayLike<number>, sub: ArrayLike<number> | undefined): void {
    const fine = this.#fine!, hist = this.#hist, n = values.length, bins = fine.hist.length;
    countKernel!.flush!(hist);
    // the rank's place in this block, and a margin of 4 standard deviations of a sample quantile (plus
    // 0.2 %): the window spans the sub-buckets holding those ranks (magnitudes cluster on few values)
    const q = Math.min(1, this.#ks[0] / this.#total), r = Math.max(1, Math.round(q * n));
    const margin = Math.ceil(4 * Math.sqrt(n * q * (1 - q)) + 0.002 * n);
    let above = 0;
    for (let d = 65535; d > (fine.lo + bins - 1) >>> 8; d--) above += hist[d];
    const keyAt = (rank: number) => {
      let c = above, i = bins - 1;
      for (; i > 0 && c + fine.hist[i] < rank; i--) c += fine.hist[i];
      return fine.lo + i;
    };
    const hi = keyAt(Math.max(1, r - margin)), lo = keyAt(r + margin);
    let expect = 0;
    for (let i = lo - fine.lo; i <= hi - fine.lo; i++) expect += fine.hist[i];
    if (expect > 0.05 * n) return; // too wide to be worth gathering
    const size = Math.max(1024, Math.ceil(1.5 * expect * this.#total / n));
    this.#win = { lo, count: hi - lo + 1, g: new Gathered(size) };
    // the first block's entries of the window (counted into a scratch histogram, dropped)
    const keep = (a: Float64Array) => this.#keepWindow(a, 0);
    countKernel!.accumulate!(values, sub, scratchHist, undefined, { lo, count: hi - lo + 1, keep });
    countKernel!.flush!(scratchHist);
  }

  #keepWindow(a: Float64Array, block: number): void {
    this.#win!.g.add(a, block);
  }

  #dropWindow(): void {
    this.#win?.g.release();
    this.#win = undefined;
  }

  #partial = false;

  /**
   * After pass 1: whether the histogram decides every rank. A count restricted to the guessed buckets
   * (with the kernel's band pass) does not when a rank falls outside them: count again without a guess.
   */
  covers(): boolean {
    countKernel?.flush?.(this.#hist);
    if (!this.#partial) return true;
    const hist = this.#hist, gs = this.#guessed!;
    return this.#ks.every((k) => {
      let d = 65535, rank = k;
      for (; d > 0 && hist[d] < rank; d--) rank -= hist[d];
      return d >= gs.lo && d <= gs.hi;
    });
  }

  /**
   * After pass 1: finds each rank's boundary bucket. Returns true when pass 2 is still needed (false:
   * the entries kept by a `guess` of the one block already hold every boundary bucket).
   */
  settle(): boolean {
    countKernel?.flush?.(this.#hist);
    const hist = this.#hist, K = this.#ks.length;
    this.#key = new Int32Array(K);
    this.#shift = new Int32Array(K);
    this.#ks.forEach((k, j) => {
      let d = 65535, rank = k, above = 0;
      for (; d > 0 && hist[d] < rank; d--) {
        rank -= hist[d];
        above += hist[d];
      }
      this.#bucket[j] = d;
      let key = d, shift = 48, size = hist[d];
      const fine = j === 0 ? this.#fine : undefined;
      if (fine?.ok && (d << 8) >= fine.lo && (d << 8) < fine.lo + fine.hist.length) {
        // the bucket's 256 sub-buckets (the next 8 bits): only the one holding the rank is gathered
        let f = (d << 8) - fine.lo + 255;
        for (; f > (d << 8) - fine.lo && fine.hist[f] < rank; f--) {
          rank -= fine.hist[f];
          above += fine.hist[f];
        }
        key = fine.lo + f;
        shift = 40;
        size = fine.hist[f];
      }
      this.#key[j] = key;
      this.#shift[j] = shift;
      this.#rank[j] = rank;
      this.#above[j] = above;
      this.#cand[j].release();
      this.#cand[j] = new Gathered(size);
    });
    const win = this.#win;
    if (
      K === 1 && win && this.#shift[0] === 40 && this.#key[0] >= win.lo && this.#key[0] < win.lo + win.count
    ) {
      // the counting pass gathered the boundary sub-bucket: its entries, in block order, are the candidates
      this.#cand[0].addKey(win.g, this.#key[0]);
      this.#block = this.#blocksCounted;
      this.#single = true;
      this.#dropWindow();
      return false;
    }
    this.#dropWindow();
    const gs = this.#guessed, buckets = this.#bucket;
    if (gs && Array.from(buckets).every((d) => d >= gs.lo && d <= gs.hi)) {
      const u = new Uint32Array(gathered.buffer);
      for (let j = 0; j < K; j++) {
        const d = buckets[j], cand = this.#cand[j];
        for (let i = 0; i < gs.count; i++) if (u[2 * i + HI] >>> 16 === d) cand.push(gathered[i], 0);
      }
      return false;
    }
    return true;
  }

  /** Pass 2: keeps the entries of the boundary buckets of a block (blocks numbered from 0 in order). */
  gather(values: ArrayLike<number>, sub?: ArrayLike<number>): void {
    if (this.#single) return; // the counting pass found the candidates
    const n = values.length, block = this.#block++, K = this.#ks.length;
    const keys = this.#key, shifts = this.#shift;
    /** Whether the magnitude with top 32 bits `hi` is in rank j's boundary bucket. */
    const inBucket = (hi: number, j: number) => hi >>> (shifts[j] - 32) === keys[j];
    const kept = (a: Float64Array) => {
      if (K === 1) {
        // one rank: every magnitude handed over is in its bucket
        this.#cand[0].add(a, block);
        return;
      }
      const u = new Uint32Array(a.buffer, a.byteOffset, 2 * a.length);
      for (let i = 0; i < a.length; i++) {
        for (let j = 0; j < K; j++) {
          if (inBucket(u[2 * i + HI], j)) this.#cand[j].push(a[i], block);
        }
      }
    };
    if (countKernel?.gather?.(values, sub, keys[0], shifts[0], keys[K - 1], shifts[K - 1], kept)) return;
    for (let start = 0; start < n; start += CHUNK) {
      const len = Math.min(CHUNK, n - start);
      absChunk(values, sub, start, len);
      for (let i = 0; i < len; i++) {
        const hi = chunkU32[2 * i + HI];
        for (let j = 0; j < K; j++) {
          if (inBucket(hi, j)) this.#cand[j].push(chunkF64[i], block);
        }
      }
    }
  }

  /**
   * The `j`-th rank's k-th largest magnitude θ, how many entries are strictly larger, and (when pass 2
   * ran) how many entries equal to θ each block holds (`equal[b]`, blocks in `gather` order).
   */
  result(j: number): { theta: number; above: number; equal: Uint32Array } {
    return this.#results[j] ??= this.#decide(j);
  }
  #results: { theta: number; above: number; equal: Uint32Array }[] = [];

  /** Rank j's result from its candidates (then returned to the pool). */
  #decide(j: number): { theta: number; above: number; equal: Uint32Array } {
    const cand = this.#cand[j], { v, c: count } = cand, rank = this.#rank[j];
    let above = this.#above[j], theta: number;
    if (count <= 4096) {
      const s = Float64Array.from(v.subarray(0, count)).sort(); // ascending
      theta = s[count - rank];
      for (let i = count - 1; i >= 0 && s[i] > theta; i--) above++;
    } else {
      theta = radixKth(v, count, rank, this.#bucket[j]);
      for (let i = 0; i < count; i++) if (v[i] > theta) above++;
    }
    const equal = new Uint32Array(this.#block);
    if (this.#block > 0) {
      cand.eachRun((block, from, to) => {
        for (let i = from; i < to; i++) if (v[i] === theta) equal[block]++;
      });
    }
    cand.release();
    return { theta, above, equal };
  }
}

/**
 * The k-th largest magnitude and how many entries are strictly larger. `sub` (optional) is subtracted
 * first: the magnitudes are `|values[i] − sub[i]|`, so task vectors need not be materialised.
 */
export function selectMagnitude(
  values: ArrayLike<number>,
  k: number,
  sub?: ArrayLike<number>,
): { theta: number; above: number } {
  // Guess the boundary bucket from a sample, and gather the entries of the guessed buckets during the
  // histogram pass: one pass over the data when the guess holds (almost always), two when it does not.
  let sel = new MagnitudeSelection([k], hist);
  sel.count(values, sub, values.length >= 1 << 16 ? guessBuckets(values, k, sub) : undefined);
  if (!sel.covers()) {
    sel = new MagnitudeSelection([k], hist);
    sel.count(values, sub);
  }
  if (sel.settle()) sel.gather(values, sub);
  const { theta, above } = sel.result(0);
  return { theta, above };
}

let gathered = new Float64Array(1 << 16);
const scratchHist = new Uint32Array(65536);

/**
 * Faster passes over float32 data (the merge engine's WebAssembly kernel registers them). `count` adds the
 * top-16-bit key of every `|values[i] − sub[i]|` (or `|values[i]|`) to `hist` and hands the magnitudes
 * whose key lies in `[lo, hi]` to `keep` (a chunk at a time, in index order); `band` hands over the
 * magnitudes `a` with `lo ≤ a < hi` and returns how many are `≥ hi` (NaN included). Each returns false /
 * −1, having done nothing, when it does not take these arrays.
 */
export interface MagnitudeKernel {
  count(
    values: ArrayLike<number>,
    sub: ArrayLike<number> | undefined,
    hist: Uint32Array,
    lo: number,
    hi: number,
    keep: (magnitudes: Float64Array) => void,
  ): boolean;
  band(
    values: ArrayLike<number>,
    sub: ArrayLike<number> | undefined,
    lo: number,
    hi: number,
    keep: (magnitudes: Float64Array) => void,
  ): number;
  /**
   * Counts the keys towards `hist` like `count` (no band), possibly held back in the kernel until
   * `flush(hist)`: for a selection fed in many blocks. False when it does not take these arrays.
   */
  accumulate?(
    values: ArrayLike<number>,
    sub: ArrayLike<number> | undefined,
    hist: Uint32Array,
    fine?: { readonly lo: number; readonly hist: Uint32Array },
    gather?: {
      readonly lo: number;
      readonly count: number;
      readonly keep: (magnitudes: Float64Array) => void;
    },
  ): boolean;
  /** Adds the counts `accumulate` holds back for `hist` into it. */
  flush?(hist: Uint32Array): void;
  /**
   * Hands `keep` the magnitudes whose bits shifted right by `s1` are `k1`, or by `s2` are `k2`, in index
   * order; false when it does not take these arrays.
   */
  gather?(
    values: ArrayLike<number>,
    sub: ArrayLike<number> | undefined,
    k1: number,
    s1: number,
    k2: number,
    s2: number,
    keep: (magnitudes: Float64Array) => void,
  ): boolean;
}

let countKernel: MagnitudeKernel | undefined;

/** Registers the passes of {@link MagnitudeSelection.count} (undefined: the JavaScript loops). */
export function registerMagnitudeKernel(k: MagnitudeKernel | undefined): void {
  countKernel = k;
}

/**
 * The range of top-16-bit keys likely to hold the k-th largest magnitude: from 4096 evenly spaced
 * samples, the keys a few standard deviations of the sample quantile either side of rank k.
 */
function guessBuckets(values: ArrayLike<number>, k: number, sub?: ArrayLike<number>): [number, number] {
  const n = values.length, S = 4096, step = Math.floor(n / S), keys = new Uint32Array(S);
  const f = new Float64Array(1), u = new Uint32Array(f.buffer);
  for (let j = 0; j < S; j++) {
    const i = j * step;
    f[0] = Math.abs(sub ? values[i] - sub[i] : values[i]);
    keys[j] = u[HI] >>> 16;
  }
  keys.sort(); // ascending: the k-th largest sits near position S − k·S/n
  const q = k / n, pos = S - q * S, margin = 4 * Math.sqrt(S * q * (1 - q)) + 8;
  const lo = keys[Math.max(0, Math.floor(pos - margin))], hi = keys[Math.min(S - 1, Math.ceil(pos + margin))];
  return [lo, hi];
}

/**
 * The k-th largest `|x|` (1 ≤ k ≤ n), exactly, in O(n) without copying or sorting the data.
 *
 * @example
 * ```ts
 * import { kthLargestMagnitude } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * assert.equal(kthLargestMagnitude([0.5, -2, 1, 0.25, -1, 3], 3), 1);
 * ```
 */
export function kthLargestMagnitude(values: ArrayLike<number>, k: number): number {
  if (!(k >= 1 && k <= values.length)) {
    throw new RangeError(`kthLargestMagnitude: k = ${k} outside [1, ${values.length}]`);
  }
  return selectMagnitude(values, k).theta;
}

/**
 * The band `[from, to)` of the total magnitude order as thresholds: an entry is in the top `to` when
 * `|x| > t1`, or `|x| = t1` and it is among the first `ties1` such entries in index order; likewise for
 * the top `from` with `t0`, `ties0`. The band is the top `to` minus the top `from`.
 */
export interface RangeCut {
  readonly t1: number;
  readonly ties1: number;
  readonly t0: number;
  readonly ties0: number;
}

/** The thresholds of the band `[from, to)` (`"none"`: empty band, `"all"`: every entry). */
export function magnitudeRangeCut(
  values: ArrayLike<number>,
  from: number,
  to: number,
  sub?: ArrayLike<number>,
): RangeCut | "none" | "all" {
  const n = values.length;
  if (to <= 0 || to <= from || from >= n) return "none";
  if (to >= n && from <= 0) return "all";
  const hiSel = to >= n ? { theta: -1, above: n } : selectMagnitude(values, to, sub);
  const loSel = from <= 0 ? { theta: Infinity, above: 0 } : selectMagnitude(values, from, sub);
  return {
    t1: hiSel.theta,
    ties1: to >= n ? 0 : to - hiSel.above,
    t0: loSel.theta,
    ties0: from <= 0 ? 0 : from - loSel.above,
  };
}

/**
 * The band `[from, to)` of the total magnitude order of a tensor of `n` entries fed in blocks (in index
 * order), as {@link magnitudeRangeCut} computes it for the whole tensor: `add` every block (pass 1), then
 * `refine` every block in the same order (pass 2), then `cut(b)` gives the thresholds for block `b` (the
 * tie quotas `ties1`/`ties0` reduced by the ties the blocks before `b` take), or `cut()` those of the
 * whole tensor. `passes` is 0 when the band is empty or everything (no data needed). Internal.
 */
export function magnitudeCutAccumulator(n: number, from: number, to: number): {
  readonly passes: number;
  add(values: ArrayLike<number>, sub?: ArrayLike<number>): void;
  /** After every `add`: whether pass 2 (`refine`) is needed (false: pass 1 found every boundary). */
  needsRefine(): boolean;
  refine(values: ArrayLike<number>, sub?: ArrayLike<number>): void;
  cut(block?: number): RangeCut | "none" | "all";
} {
  const trivial = to <= 0 || to <= from || from >= n ? "none" : to >= n && from <= 0 ? "all" : null;
  const ks: number[] = [];
  if (!trivial && to < n) ks.push(to);
  if (!trivial && from > 0) ks.push(from);
  const sel = trivial ? null : new MagnitudeSelection(ks, undefined, n);
  let refine: boolean | undefined, res: { theta: number; above: number; equal: Uint32Array }[] | undefined;
  const needs = () => (refine ??= sel ? sel.settle() : false);
  return {
    passes: trivial ? 0 : 2,
    add: (values, sub) => sel?.count(values, sub),
    needsRefine: needs,
    refine(values, sub) {
      if (sel && needs()) sel.gather(values, sub);
    },
    cut(block?: number): RangeCut | "none" | "all" {
      if (trivial) return trivial;
      needs();
      res ??= ks.map((_, j) => sel!.result(j));
      const hi = to < n ? res[0] : { theta: -1, above: n, equal: new Uint32Array(0) };
      const lo = from > 0 ? res[ks.length - 1] : { theta: Infinity, above: 0, equal: new Uint32Array(0) };
      let ties1 = to >= n ? 0 : to - hi.above, ties0 = from <= 0 ? 0 : from - lo.above;
      for (let b = 0; b < (block ?? 0); b++) {
        ties1 = Math.max(0, ties1 - (hi.equal[b] ?? 0));
        ties0 = Math.max(0, ties0 - (lo.equal[b] ?? 0));
      }
      return { t1: hi.theta, ties1, t0: lo.theta, ties0 };
    },
  };
}

/**
 * Writes into `mask` (1 = keep) whether each entry's position in the total magnitude order lies in
 * `[from, to)`: the top `to` minus the top `from`, in one pass after the selections. With `sub`, the
 * magnitudes are those of `values − sub`.
 */
export function magnitudeRangeInto(
  mask: Uint8Array,
  values: ArrayLike<number>,
  from: number,
  to: number,
  sub?: ArrayLike<number>,
): Uint8Array {
  const n = values.length, cut = magnitudeRangeCut(values, from, to, sub);
  if (cut === "none") return mask.fill(0, 0, n);
  if (cut === "all") return mask.fill(1, 0, n);
  const { t1, t0 } = cut;
  let { ties1, ties0 } = cut;
  for (let start = 0; start < n; start += CHUNK) {
    const len = Math.min(CHUNK, n - start);
    absChunk(values, sub, start, len);
    for (let i = 0; i < len; i++) {
      const a = chunkF64[i];
      let inTop = a > t1;
      if (!inTop && a === t1 && ties1 > 0) {
        inTop = true;
        ties1--;
      }
      let inDrop = a > t0;
      if (!inDrop && a === t0 && ties0 > 0) {
        inDrop = true;
        ties0--;
      }
      mask[start + i] = inTop && !inDrop ? 1 : 0;
    }
  }
  return mask;
}

/**
 * Marks (sets `mask[i] = 1`) the `k` entries of largest magnitude in the total order. Returns the mask.
 *
 * @example
 * ```ts
 * import { topMagnitudeMask } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * // δ = [.5, −2, 1, .25, −1, 3], k = 3 → entries 5, 1, 2 (1 and −1 tie; the lower index wins)
 * assert.deepEqual(Array.from(topMagnitudeMask([.5, -2, 1, .25, -1, 3], 3)), [0, 1, 1, 0, 0, 1]);
 * ```
 */
export function topMagnitudeMask(values: ArrayLike<number>, k: number): Uint8Array {
  return magnitudeRangeInto(new Uint8Array(values.length), values, 0, k);
}

/**
 * Marks the entries whose position in the total magnitude order is in `[from, to)` — Breadcrumbs'
 * `order[nTop : n − nBot]` — as the top-`to` minus the top-`from` (one order for both cuts).
 *
 * @example
 * ```ts
 * import { magnitudeRangeMask } from "@moekit/moekit/core";
 * import assert from "node:assert/strict";
 * const d = [.9, -.1, .5, -.7, .3, .05, -.2, .6, -.4, .8]; // keep order[1:6]
 * assert.deepEqual(Array.from(magnitudeRangeMask(d, 1, 6)), [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]);
 * ```
 */
export function magnitudeRangeMask(values: ArrayLike<number>, from: number, to: number): Uint8Array {
  return magnitudeRangeInto(new Uint8Array(values.length), values, from, to);
}

/**
 * Writes into `mask` whether `|values[i] − sub[i]| ≥` the `kth` smallest magnitude (1-based; `kth ≤ 0`
 * keeps everything): the TIES paper code's and ComPEFT's rule (a threshold, ties all kept).
 */
export function atLeastKthSmallestInto(
  mask: Uint8Array,
  values: ArrayLike<number>,
  kth: number,
  sub?: ArrayLike<number>,
): Uint8Array {
  const n = values.length;
  if (kth <= 0) return mask.fill(1, 0, n);
  const thr = selectMagnitude(values, n - kth + 1, sub).theta; // kth smallest = (n − kth + 1)-th largest
  for (let start = 0; start < n; start += CHUNK) {
    const len = Math.min(CHUNK, n - start);
    absChunk(values, sub, start, len);
    for (let i = 0; i < len; i++) mask[start + i] = chunkF64[i] >= thr ? 1 : 0;
  }
  return mask;
}

/**
 * Ranks within one row by magnitude for DELLA: rank 1 = smallest `|x|`, `n` = largest; ties by the total
 * order (the lower index ranks higher). Writes ranks (1-based) into `out[0..n)`.
 */
export function magnitudeRanks(values: ArrayLike<number>, off: number, n: number, out: Int32Array): void {
  if (n < 32 || !radixRanks(values, off, n, out)) sortRanks(values, off, n, out);
}

/**
 * `magnitudeRanks` by a radix sort of the float64 bit patterns of `|x|` (ordered as the numbers are): only
 * the bits that vary within the row are sorted on — bits above and below them are equal in every entry
 * and order nothing — in 11-bit digits within each 32-bit half, stably, starting from the highest index:
 * equal magnitudes end in descending index order, as the total order ranks them. False (nothing
 * written) with a NaN in the row, or on a big-endian machine.
 */
function radixRanks(values: ArrayLike<number>, off: number, n: number, out: Int32Array): boolean {
  if (!RADIX_LE) return false;
  if (radix.lo.length < n) {
    radix = {
      lo: new Uint32Array(n),
      hi: new Uint32Array(n),
      ix: new Int32Array(n),
      lo2: new Uint32Array(n),
      hi2: new Uint32Array(n),
      ix2: new Int32Array(n),
    };
  }
  let { lo, hi, ix, lo2, hi2, ix2 } = radix;
  const f = radixF64, u = radixU32;
  let orLo = 0, andLo = -1, orHi = 0, andHi = -1;
  // the keys in descending index order (the stable passes keep it among equal keys)
  for (let p = 0; p < n; p++) {
    const j = n - 1 - p, a = Math.abs(values[off + j]);
    if (a !== a) return false; // NaN
    f[0] = a;
    const l = u[0], h = u[1];
    lo[p] = l;
    hi[p] = h;
    ix[p] = j;
    orLo |= l;
    andLo &= l;
    orHi |= h;
    andHi &= h;
  }
  const vLo = (orLo ^ andLo) >>> 0, vHi = (orHi ^ andHi) >>> 0;
  const passes: [number, number][] = []; // [half (0 low, 1 high), shift]
  if (vLo) {
    const low = 31 - Math.clz32(vLo & -vLo), top = 31 - Math.clz32(vLo);
    for (let q = low; q <= top; q += 11) passes.push([0, q]);
  }
  if (vHi) {
    const low = 31 - Math.clz32(vHi & -vHi), top = 31 - Math.clz32(vHi);
    for (let q = low; q <= top; q += 11) passes.push([1, q]);
  }
  const count = radixCount;
  for (const [half, q] of passes) {
    const key = half ? hi : lo;
    count.fill(0);
    for (let p = 0; p < n; p++) count[(key[p] >>> q) & 2047]++;
    let sum = 0;
    for (let d = 0; d < 2048; d++) {
      const c = count[d];
      count[d] = sum;
      sum += c;
    }
    for (let p = 0; p < n; p++) {
      const t = count[(key[p] >>> q) & 2047]++;
      lo2[t] = lo[p];
      hi2[t] = hi[p];
      ix2[t] = ix[p];
    }
    [lo, lo2, hi, hi2, ix, ix2] = [lo2, lo, hi2, hi, ix2, ix];
  }
  for (let p = 0; p < n; p++) out[ix[p]] = p + 1; // ascending: rank 1 = smallest
  return true;
}

const radixF64 = new Float64Array(1), radixU32 = new Uint32Array(radixF64.buffer);
const RADIX_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const radixCount = new Int32Array(2048);
let radix = {
  lo: new Uint32Array(0),
  hi: new Uint32Array(0),
  ix: new Int32Array(0),
  lo2: new Uint32Array(0),
  hi2: new Uint32Array(0),
  ix2: new Int32Array(0),
};

/** `magnitudeRanks` by a comparison sort of the magnitudes and a binary search per entry. */
function sortRanks(values: ArrayLike<number>, off: number, n: number, out: Int32Array): void {
  if (rankSorted.length < n) {
    rankSorted = new Float64Array(n);
    rankSeen = new Int32Array(n);
  }
  const s = rankSorted.subarray(0, n), seen = rankSeen;
  for (let j = 0; j < n; j++) s[j] = Math.abs(values[off + j]);
  s.sort(); // ascending
  seen.fill(0, 0, n);
  for (let j = 0; j < n; j++) {
    const a = Math.abs(values[off + j]);
    let lo = 0, hi = n; // lb: first s[k] ≥ a
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid] < a) lo = mid + 1;
      else hi = mid;
    }
    const lb = lo;
    // ub: first s[k] > a, past the run of values equal to a: a few steps (usually this entry alone),
    // then a binary search for a long run (a row of zeros)
    const stop = Math.min(n, lo + 8);
    while (lo < stop && s[lo] === a) lo++;
    if (lo === stop && lo < n && s[lo] === a) {
      hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (s[mid] <= a) lo = mid + 1;
        else hi = mid;
      }
    }
    // descending position = #{greater} + #{equal before j}; rank = n − position
    out[j] = lo - seen[lb]++;
  }
}

let rankSorted = new Float64Array(0), rankSeen = new Int32Array(0);
