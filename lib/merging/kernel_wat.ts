/**
 * The readable source of moekit's WebAssembly merge kernel (128-bit SIMD), as WAT text. It computes the
 * per-chunk hot loops of the merge engine in float64 lanes (`f64x2`, two entries per vector, no fused
 * multiply-add), so every entry sees the same IEEE operations in the same order as the JavaScript engine
 * and the results are bit-identical to it:
 *
 * - `bf16_widen`, `f16_widen`: decode 16-bit floats into float32 (in place when the bytes sit in the
 *   upper half of the destination); `bf16_encode`, `f16_encode`: the reverse, float32 or float64 results
 *   to 16-bit bits bit-identical to `encodeFloats` (in place when the bits go to the start of the source);
 * - `lin`: `Σ wₘ·xₘ` over the models (then `÷ s`), the linear weighted sum;
 * - `sd_keep`, `sd_mask`, `sd_dare`, `sd_cut`: one model's sparsified, scaled task vector `plan(x − b)`
 *   of a chunk (keep all, a byte mask, the DARE counter-mode stream drawn in 4 i32 lanes, a magnitude band
 *   with its tie quotas in index order);
 * - `dare_norms`: the DARE stream's full and kept L1 / L2 / L∞ sums in index order (the rescale factor);
 * - `gta_mix`: sign election, the agreeing sums and divisors, and `base + λ·mixed`;
 * - `mag_hist`, `mag_band`, `mag_count`, `mag_gather`: the passes of magnitude selection (a histogram of the
 *   top 16 bits of `|x − b|`, the entries of a band or of the boundary buckets);
 * - `dot3`: the three float64 dot products of SLERP (‖a‖², ‖b‖², a·b), each summed in index order; and
 *   `lerp2`: `α·a + β·b`.
 *
 * Pointers are byte offsets into the module's own memory; float32 inputs, float64 scratch. `lib/kernels/
 * build.ts` turns this text into `kernel_wasm.ts` (base64); a test checks that the committed binary is
 * exactly what this source builds to.
 * @module
 */

/** The golden-ratio increment of the counter-mode mask stream (docs/merging.md §7). */
const GOLDEN = 0x9e3779b9 | 0;

/** `(x − b)` of entries `j` and `j + 1` as f64x2, from float32 pointers `$x`, `$b`, byte offset `$o4`. */
const diff2 = `(f64x2.sub
        (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $o4))))
        (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $b) (local.get $o4)))))`;
/** The scalar `(x − b)` of entry `j`. */
const diff1 = `(f64.sub
        (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $o4))))
        (f64.promote_f32 (f32.load (i32.add (local.get $b) (local.get $o4)))))`;

/**
 * `$a = |x − b|` of entries `j` and `j + 1` as f64x2 (`|x|` when the pointer `$b` is 0), from float32
 * pointers `$x`, `$b`, byte offset `$o4`.
 */
const absDiff2 =
  `(local.set $a (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $o4)))))
        (if (local.get $b)
          (then (local.set $a (f64x2.sub (local.get $a)
            (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $b) (local.get $o4))))))))
        (local.set $a (f64x2.abs (local.get $a)))`;

/** `$a = |x − b|` of entry `j` alone, in both f64x2 lanes (the odd last entry of a pair loop). */
const absDiff1 =
  `(local.set $a (f64x2.splat (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $o4))))))
        (if (local.get $b)
          (then (local.set $a (f64x2.sub (local.get $a)
            (f64x2.splat (f64.promote_f32 (f32.load (i32.add (local.get $b) (local.get $o4)))))))))
        (local.set $a (f64x2.abs (local.get $a)))`;

/** The loop over pairs of entries `j = 0, 2, …` then the odd last one: `$o4 = 4j`, `$o8 = 8j`. */
function pairLoop(pair: string, single: string, fromZero = true): string {
  return `${fromZero ? "(local.set $j (i32.const 0))" : ""}
    (block $pairs_done
      (loop $pairs
        (br_if $pairs_done (i32.gt_u (i32.add (local.get $j) (i32.const 2)) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        ${pair}
        (local.set $j (i32.add (local.get $j) (i32.const 2)))
        (br $pairs)))
    (if (i32.lt_u (local.get $j) (local.get $len))
      (then
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        ${single}))`;
}

/** The upper two float32 lanes of a vector, moved down (for promote_low). */
const hi = (v: string) =>
  `(i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get ${v}) (local.get ${v}))`;
/** Two f64x2 demoted and joined into one f32x4. */
const join = (a: string, b: string) =>
  `(i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (f32x4.demote_f64x2_zero (local.get ${a})) (f32x4.demote_f64x2_zero (local.get ${b})))`;

/** The mask stream's word for the state `$s` (i32x4 lanes or a scalar i32). */
function mix32(s: string, vec: boolean): string {
  if (vec) {
    return `(local.set $z (i32x4.mul (v128.xor ${s} (i32x4.shr_u ${s} (i32.const 16))) (i32x4.splat (i32.const 0x85ebca6b))))
        (local.set $z (i32x4.mul (v128.xor (local.get $z) (i32x4.shr_u (local.get $z) (i32.const 13))) (i32x4.splat (i32.const 0xc2b2ae35))))
        (local.set $z (v128.xor (local.get $z) (i32x4.shr_u (local.get $z) (i32.const 16))))`;
  }
  return `(local.set $zs (i32.mul (i32.xor ${s} (i32.shr_u ${s} (i32.const 16))) (i32.const 0x85ebca6b)))
        (local.set $zs (i32.mul (i32.xor (local.get $zs) (i32.shr_u (local.get $zs) (i32.const 13))) (i32.const 0xc2b2ae35)))
        (local.set $zs (i32.xor (local.get $zs) (i32.shr_u (local.get $zs) (i32.const 16))))`;
}

/**
 * The flag sets of \`gta_mix_<flags>\`: 1 consensus, 2 count consensus (else sum), 4 unweighted election,
 * 8 divide the mix by the agreeing divisor, 16 count divisor (else Σ weights); without consensus, 32
 * normalize (÷ dv). One specialised function per set (no per-entry branches on the flags).
 */
export const GTA_FLAGS: readonly number[] = [
  ...[0, 2].flatMap((c) => [0, 4].flatMap((u) => [0, 8, 24].map((d) => 1 | c | u | d))),
  0,
  32,
];

/**
 * The election and the mix of a chunk, 4 entries (two float64 pairs) at a time, from the N sparsified
 * task vectors sd[m] (float64, $stride bytes apart) and the weights w (float64 at $ws): per pair the
 * same operations, in model order, as the JavaScript engine. out[j] = b[j] + λ·mixed, float32 ($f32 ≠ 0)
 * or float64. Entries past $len are computed from scratch (unused) and not stored.
 */
function gtaMix(flags: number): string {
  const consensus = (flags & 1) !== 0, count = (flags & 2) !== 0, unweighted = (flags & 4) !== 0;
  const divide = (flags & 8) !== 0, countDiv = (flags & 16) !== 0, normalize = (flags & 32) !== 0;
  const zero = "(f64x2.splat (f64.const 0))";
  const sign = (v: string) =>
    `(v128.bitselect (f64x2.splat (f64.const 1)) (v128.bitselect (f64x2.splat (f64.const -1)) ${v} (f64x2.lt ${v} ${zero})) (f64x2.gt ${v} ${zero}))`;
  const lane = (k: 0 | 1) => {
    const off = k * 16;
    const sd = `(v128.load offset=${off} (local.get $p))`;
    const vote = unweighted
      ? `(local.set $v${k} ${sd})`
      : `(local.set $v${k} (f64x2.mul (local.get $w) ${sd}))`;
    return { sd, vote };
  };
  const store = (k: 0 | 1) => {
    const o4 = `(i32.add (local.get $o4) (i32.const ${8 * k}))`,
      o8 = `(i32.add (local.get $o8) (i32.const ${16 * k}))`;
    const r = `(f64x2.add (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $b) ${o4})))
            (f64x2.mul (local.get $lam) (local.get $mix${k})))`;
    // entries j + 2k, j + 2k + 1: both, one, or none below $len
    return `(local.set $r ${r})
        (if (i32.lt_u (i32.add (local.get $j) (i32.const ${2 * k + 1})) (local.get $len))
          (then
            (if (local.get $f32)
              (then (v128.store64_lane 0 (i32.add (local.get $out) ${o4}) (f32x4.demote_f64x2_zero (local.get $r))))
              (else (v128.store (i32.add (local.get $out) ${o8}) (local.get $r)))))
          (else (if (i32.lt_u (i32.add (local.get $j) (i32.const ${2 * k})) (local.get $len))
            (then
              (if (local.get $f32)
                (then (f32.store (i32.add (local.get $out) ${o4}) (f32.demote_f64 (f64x2.extract_lane 0 (local.get $r)))))
                (else (f64.store (i32.add (local.get $out) ${o8}) (f64x2.extract_lane 0 (local.get $r)))))))))`;
  };
  const modelLoop = (name: string, body: string) =>
    `(local.set $m (i32.const 0))
        (local.set $p (i32.add (local.get $sd) (local.get $o8)))
        (block $${name}_d (loop $${name}
          (br_if $${name}_d (i32.ge_u (local.get $m) (local.get $N)))
          (local.set $w (f64x2.splat (f64.load (i32.add (local.get $ws) (i32.shl (local.get $m) (i32.const 3))))))
          ${body}
          (local.set $p (i32.add (local.get $p) (local.get $stride)))
          (local.set $m (i32.add (local.get $m) (i32.const 1)))
          (br $${name})))`;
  let body: string;
  if (consensus) {
    const tally = ([0, 1] as const).map((k) => {
      const { vote } = lane(k);
      return `${vote}
          (local.set $t${k} (f64x2.add (local.get $t${k}) ${
        count ? sign(`(local.get $v${k})`) : `(local.get $v${k})`
      }))`;
    }).join("\n          ");
    const agree = ([0, 1] as const).map((k) => {
      const { sd } = lane(k);
      return `(local.set $v${k} ${sd})
          (local.set $wd (f64x2.mul (local.get $w) (local.get $v${k})))
          (local.set $ag (v128.bitselect
            (f64x2.lt ${unweighted ? `(local.get $v${k})` : "(local.get $wd)"} ${zero})
            (f64x2.gt ${unweighted ? `(local.get $v${k})` : "(local.get $wd)"} ${zero})
            (local.get $t${k})))
          (local.set $mix${k} (f64x2.add (local.get $mix${k}) (v128.and (local.get $ag) (local.get $wd))))
          (local.set $div${k} (f64x2.add (local.get $div${k}) (v128.and (local.get $ag) ${
        countDiv ? "(f64x2.splat (f64.const 1))" : "(local.get $w)"
      })))`;
    }).join("\n          ");
    const divs = divide
      ? ([0, 1] as const).map((k) =>
        `(local.set $mix${k} (f64x2.div (local.get $mix${k}) (v128.bitselect (f64x2.splat (f64.const 1)) (local.get $div${k})
          (f64x2.eq (local.get $div${k}) ${zero}))))`
      ).join("\n        ")
      : "";
    body = `(local.set $t0 ${zero})
        (local.set $t1 ${zero})
        ${modelLoop("tally", tally)}
        (local.set $t0 (f64x2.lt (local.get $t0) ${zero}))
        (local.set $t1 (f64x2.lt (local.get $t1) ${zero}))
        (local.set $div0 ${zero})
        (local.set $div1 ${zero})
        ${modelLoop("agree", agree)}
        ${divs}`;
  } else {
    const sum = ([0, 1] as const).map((k) =>
      `(local.set $mix${k} (f64x2.add (local.get $mix${k}) (f64x2.mul (local.get $w) ${lane(k).sd})))`
    ).join("\n          ");
    body = `${modelLoop("sum", sum)}
        ${
      normalize
        ? `(local.set $mix0 (f64x2.div (local.get $mix0) (f64x2.splat (local.get $dv))))
        (local.set $mix1 (f64x2.div (local.get $mix1) (f64x2.splat (local.get $dv))))`
        : ""
    }`;
  }
  return `  (func (export "gta_mix_${flags}") (param $sd i32) (param $stride i32) (param $N i32) (param $ws i32)
    (param $lambda f64) (param $dv f64) (param $b i32) (param $out i32) (param $len i32) (param $f32 i32)
    (local $j i32) (local $o4 i32) (local $o8 i32) (local $m i32) (local $p i32) (local $w v128) (local $wd v128)
    (local $ag v128) (local $r v128) (local $lam v128) (local $v0 v128) (local $v1 v128) (local $t0 v128)
    (local $t1 v128) (local $mix0 v128) (local $mix1 v128) (local $div0 v128) (local $div1 v128)
    (local.set $lam (f64x2.splat (local.get $lambda)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        (local.set $mix0 ${zero})
        (local.set $mix1 ${zero})
        ${body}
        ${store(0)}
        ${store(1)}
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $l))))
`;
}

/** Bins of each half histogram of `mag_count`: the 16-bit keys, then a fine window of 24-bit keys. */
export const HALF_BINS = 65536 + 2048;

/** `mag_count`'s count of lane k of the 24-bit keys `$k`, into half k (and its gather). */
function countLane(k: 0 | 1): string {
  return `(local.set $e (i32.wrap_i64 (i64x2.extract_lane ${k} (local.get $k))))
        (local.set $f (i32.sub (local.get $e) (local.get $lo)))
        (local.set $h (i32.add (local.get $hist) (i32.shl (select (i32.add (local.get $f) (i32.const 65536))
          (i32.shr_u (local.get $e) (i32.const 8)) (i32.lt_u (local.get $f) (local.get $nf))) (i32.const 2))))
        (i32.store offset=${4 * HALF_BINS * k} (local.get $h) (i32.add (i32.load offset=${
    4 * HALF_BINS * k
  } (local.get $h)) (i32.const 1)))
        (local.set $kmn (select (local.get $e) (local.get $kmn) (i32.lt_u (local.get $e) (local.get $kmn))))
        (local.set $kmx (select (local.get $e) (local.get $kmx) (i32.gt_u (local.get $e) (local.get $kmx))))
        (if (i32.lt_u (i32.sub (local.get $e) (local.get $g0)) (local.get $ng))
          (then
            (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (f64x2.extract_lane ${k} (local.get $a)))
            (local.set $g (i32.add (local.get $g) (i32.const 1)))))`;
}

/**
 * `mag_count`'s count of 4 entries j … j + 3 at once: their 24-bit keys and bins computed in i32x4 lanes
 * (from the magnitudes $a0: entries j, j + 1 and $a1: j + 2, j + 3), then one increment per entry, into
 * half j & 1 as the pair loop does; the window's magnitudes appended in index order.
 */
const countQuad = `(local.set $kq (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27
          (i64x2.shr_u (local.get $a0) (i32.const 40)) (i64x2.shr_u (local.get $a1) (i32.const 40))))
        (local.set $vmn (i32x4.min_u (local.get $vmn) (local.get $kq)))
        (local.set $vmx (i32x4.max_u (local.get $vmx) (local.get $kq)))
        (local.set $fq (i32x4.sub (local.get $kq) (local.get $vlo)))
        (local.set $hq (i32x4.add (local.get $vhist) (i32x4.shl (v128.bitselect
          (i32x4.add (local.get $fq) (i32x4.splat (i32.const 65536)))
          (i32x4.shr_u (local.get $kq) (i32.const 8))
          (i32x4.lt_u (local.get $fq) (local.get $vnf))) (i32.const 2))))
        ${
  ([0, 1, 2, 3] as const).map((l) =>
    `(local.set $h (i32x4.extract_lane ${l} (local.get $hq)))
        (i32.store offset=${4 * HALF_BINS * (l & 1)} (local.get $h) (i32.add (i32.load offset=${
      4 * HALF_BINS * (l & 1)
    } (local.get $h)) (i32.const 1)))`
  ).join("\n        ")
}
        (local.set $in (i32x4.lt_u (i32x4.sub (local.get $kq) (local.get $vg0)) (local.get $vng)))
        ;; without branches (they would mispredict): each magnitude is stored at the next place, which
        ;; advances only when it is in the window (a lane of $in is -1 or 0)
        ${
  ([0, 1, 2, 3] as const).map((l) =>
    `(f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3)))
          (f64x2.extract_lane ${l & 1} (local.get $a${l >> 1})))
        (local.set $g (i32.sub (local.get $g) (i32x4.extract_lane ${l} (local.get $in))))`
  ).join("\n        ")
}`;

/**
 * `dare_norms`' loop over 4 entries at a time for one norm (1 l1, 2 l2, 3 linf): the 4 stream words and
 * magnitudes in vector lanes, then the sums in index order, one entry after the other, without branches
 * (a random keep would mispredict): a dropped entry adds +0 to the kept sum (exact: the sums are ≥ +0).
 */
function dareNormQuads(norm: 1 | 2 | 3): string {
  const lanes = ([0, 1, 2, 3] as const).map((l) => {
    const a = `(f64x2.extract_lane ${l & 1} (local.get $a${l >> 1}))`,
      keep = `(i32x4.extract_lane ${l} (local.get $k))`;
    return norm === 3
      ? `(local.set $a ${a})
          (local.set $kept (select (local.get $a) (local.get $kept)
            (i32.and ${keep} (f64.gt (local.get $a) (local.get $kept)))))
          (local.set $full (select (local.get $a) (local.get $full) (f64.gt (local.get $a) (local.get $full))))`
      : `(local.set $a ${a})
          (local.set $full (f64.add (local.get $full) (local.get $a)))
          (local.set $kept (f64.add (local.get $kept) (select (local.get $a) (f64.const 0) ${keep})))`;
  }).join("\n          ");
  const sq = (v: string) =>
    norm === 2 ? `(local.set ${v} (f64x2.mul (local.get ${v}) (local.get ${v})))` : "";
  return `(block $q${norm}_done
        (loop $q${norm}
          (br_if $q${norm}_done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $len)))
          (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
          ${mix32("(local.get $st)", true)}
          (local.set $k (v128.or (i32x4.lt_u (local.get $z) (i32x4.splat (local.get $thr)))
            (i32x4.splat (i32.sub (i32.const 0) (local.get $all)))))
          (local.set $v (v128.load (i32.add (local.get $x) (local.get $o4))))
          (local.set $w (v128.load (i32.add (local.get $b) (local.get $o4))))
          (local.set $a0 (f64x2.abs (f64x2.sub (f64x2.promote_low_f32x4 (local.get $v))
            (f64x2.promote_low_f32x4 (local.get $w)))))
          (local.set $a1 (f64x2.abs (f64x2.sub (f64x2.promote_low_f32x4 ${hi("$v")})
            (f64x2.promote_low_f32x4 ${hi("$w")}))))
          ${sq("$a0")}
          ${sq("$a1")}
          ${lanes}
          (local.set $st (i32x4.add (local.get $st) (i32x4.splat (i32.const ${(4 * GOLDEN) | 0}))))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))
          (br $q${norm})))`;
}

/** The WAT text of the merge kernel. */
export function mergeKernelWat(): string {
  return `(module
  ;; moekit merge kernel (plain 128-bit SIMD, float64 lanes); generated by lib/merging/kernel_wat.ts
  (memory (export "memory") 1 65536)

  ;; dst[i] = float32 of the bfloat16 src[i], 8 at a time; src may be dst + 2n (widening in place)
  (func (export "bf16_widen") (param $dst i32) (param $src i32) (param $n i32)
    (local $i i32) (local $v v128)
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $n)))
        (local.set $v (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $v)) (i32.const 16)))
        (v128.store offset=16 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $v)) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $l)))
    (block $tail_done
      (loop $t
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32.shl (i32.load16_u (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $t))))

  ;; float32 bits of float16 lanes h (i32x4, high halves zero): |h|<<13 as f32 times 2^112 (exact, also
  ;; for subnormals), exponent 31 → ±inf, then the sign; every NaN → 0x7fc00000 (as decodeFloats gives)
  (func $f16x4 (param $h v128) (result v128)
    (local $m v128)
    (local.set $m (i32x4.shl (v128.and (local.get $h) (i32x4.splat (i32.const 0x7fff))) (i32.const 13)))
    (v128.bitselect
      (i32x4.splat (i32.const 0x7fc00000))
      (v128.or
        (i32x4.shl (v128.and (local.get $h) (i32x4.splat (i32.const 0x8000))) (i32.const 16))
        (v128.bitselect
          (i32x4.splat (i32.const 0x7f800000))
          (f32x4.mul (local.get $m) (f32x4.splat (f32.const 0x1p112)))
          (i32x4.ge_u (local.get $m) (i32x4.splat (i32.const 0x0f800000)))))
      (i32x4.gt_u (local.get $m) (i32x4.splat (i32.const 0x0f800000)))))

  (func (export "f16_widen") (param $dst i32) (param $src i32) (param $n i32)
    (local $i i32) (local $v v128)
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $n)))
        (local.set $v (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (call $f16x4 (i32x4.extend_low_i16x8_u (local.get $v))))
        (v128.store offset=16 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (call $f16x4 (i32x4.extend_high_i16x8_u (local.get $v))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $l)))
    (block $tail_done
      (loop $t
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (i32x4.extract_lane 0 (call $f16x4 (i32x4.splat
            (i32.load16_u (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $t))))

  ;; bf16 bits of float32 bits b, round to nearest even; every NaN → 0x7fc0 (as encodeFloats gives)
  (func $bf16_of (param $b i32) (result i32)
    (if (result i32) (i32.gt_u (i32.and (local.get $b) (i32.const 0x7fffffff)) (i32.const 0x7f800000))
      (then (i32.const 0x7fc0))
      (else (i32.shr_u (i32.add (i32.add (local.get $b) (i32.const 0x7fff))
        (i32.and (i32.shr_u (local.get $b) (i32.const 16)) (i32.const 1))) (i32.const 16)))))

  ;; the same for 4 lanes (no lane overflows: NaN lanes are replaced)
  (func $bf16x4 (param $b v128) (result v128)
    (v128.bitselect
      (i32x4.splat (i32.const 0x7fc0))
      (i32x4.shr_u (i32x4.add (i32x4.add (local.get $b) (i32x4.splat (i32.const 0x7fff)))
        (v128.and (i32x4.shr_u (local.get $b) (i32.const 16)) (i32x4.splat (i32.const 1)))) (i32.const 16))
      (i32x4.gt_u (v128.and (local.get $b) (i32x4.splat (i32.const 0x7fffffff)))
        (i32x4.splat (i32.const 0x7f800000)))))

  ;; dst[i] = bf16 of float32 ($f64 = 0) or float64 src[i] (rounded to float32 first, as encodeFloats does),
  ;; 8 at a time for float32; dst may be src (encoding in place, front to back)
  (func (export "bf16_encode") (param $dst i32) (param $src i32) (param $n i32) (param $f64 i32)
    (local $i i32)
    (if (i32.eqz (local.get $f64))
      (then
        (block $done
          (loop $l
            (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $n)))
            (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1)))
              (i16x8.narrow_i32x4_u
                (call $bf16x4 (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
                (call $bf16x4 (v128.load offset=16 (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))))
            (local.set $i (i32.add (local.get $i) (i32.const 8)))
            (br $l)))))
    (block $tail_done
      (loop $t
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store16 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1)))
          (call $bf16_of (if (result i32) (local.get $f64)
            (then (i32.reinterpret_f32 (f32.demote_f64
              (f64.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 3)))))))
            (else (i32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $t))))

  ;; IEEE binary16 bits of a float64 (one rounding to nearest even, as Float16Array stores; subnormals,
  ;; overflow to ±inf, every NaN → 0x7e00, as encodeFloats writes it)
  (func $f16_of (param $x f64) (result i32)
    (local $u i64) (local $sign i32) (local $e i32) (local $mant i64) (local $m i64) (local $sh i64)
    (local $h i64) (local $rest i64) (local $half i64)
    (local.set $u (i64.reinterpret_f64 (local.get $x)))
    (local.set $sign (i32.and (i32.wrap_i64 (i64.shr_u (local.get $u) (i64.const 48))) (i32.const 0x8000)))
    (local.set $e (i32.and (i32.wrap_i64 (i64.shr_u (local.get $u) (i64.const 52))) (i32.const 0x7ff)))
    (local.set $mant (i64.and (local.get $u) (i64.const 0xfffffffffffff)))
    (if (i32.eq (local.get $e) (i32.const 0x7ff))
      (then (return (select
        (i32.const 0x7e00)
        (i32.or (local.get $sign) (i32.const 0x7c00))
        (i64.ne (local.get $mant) (i64.const 0))))))
    (local.set $e (i32.sub (local.get $e) (i32.const 1008))) ;; − 1023 + 15
    (if (i32.ge_s (local.get $e) (i32.const 31)) (then (return (i32.or (local.get $sign) (i32.const 0x7c00)))))
    (if (i32.le_s (local.get $e) (i32.const 0))
      (then
        (if (i32.lt_s (local.get $e) (i32.const -10)) (then (return (local.get $sign))))
        (local.set $m (i64.or (local.get $mant) (i64.const 0x10000000000000)))
        (local.set $sh (i64.extend_i32_u (i32.sub (i32.const 43) (local.get $e))))
        (local.set $h (i64.shr_u (local.get $m) (local.get $sh)))
        (local.set $half (i64.shl (i64.const 1) (i64.sub (local.get $sh) (i64.const 1))))
        (local.set $rest (i64.and (local.get $m) (i64.sub (i64.shl (i64.const 1) (local.get $sh)) (i64.const 1)))))
      (else
        (local.set $h (i64.or (i64.shl (i64.extend_i32_u (local.get $e)) (i64.const 10))
          (i64.shr_u (local.get $mant) (i64.const 42))))
        (local.set $half (i64.const 0x20000000000))
        (local.set $rest (i64.and (local.get $mant) (i64.const 0x3ffffffffff)))))
    (if (i32.or (i64.gt_u (local.get $rest) (local.get $half))
        (i32.and (i64.eq (local.get $rest) (local.get $half)) (i32.wrap_i64 (i64.and (local.get $h) (i64.const 1)))))
      (then (local.set $h (i64.add (local.get $h) (i64.const 1)))))
    (i32.or (local.get $sign) (i32.wrap_i64 (local.get $h))))

  ;; dst[i] = binary16 of float32 ($f64 = 0) or float64 src[i]; dst may be src (in place, front to back)
  (func (export "f16_encode") (param $dst i32) (param $src i32) (param $n i32) (param $f64 i32)
    (local $i i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store16 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1)))
          (call $f16_of (if (result f64) (local.get $f64)
            (then (f64.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 3)))))
            (else (f64.promote_f32 (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l))))

  ;; out[j] = (Σₘ wₘ·xₘ[j]) (÷ s when $div), m = 0 … N−1 in order; xₘ float32 at i32 pointers $ptrs[m],
  ;; wₘ float64 at $ws; out float32 ($f32 ≠ 0) or float64
  (func (export "lin") (param $ptrs i32) (param $ws i32) (param $N i32) (param $out i32) (param $len i32)
    (param $s f64) (param $div i32) (param $f32 i32)
    (local $j i32) (local $o4 i32) (local $o8 i32) (local $m i32) (local $a v128) (local $as f64)
    (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $wv v128) (local $v v128) (local $v2 v128)
    (local $p i32)
    ;; 8 entries at a time: four independent float64 pairs per model step
    (block $o_done
      (loop $o
        (br_if $o_done (i32.gt_u (i32.add (local.get $j) (i32.const 8)) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        (local.set $a (f64x2.splat (f64.const 0)))
        (local.set $a1 (local.get $a))
        (local.set $a2 (local.get $a))
        (local.set $a3 (local.get $a))
        (local.set $m (i32.const 0))
        (block $md8 (loop $ml8
          (br_if $md8 (i32.ge_u (local.get $m) (local.get $N)))
          (local.set $wv (f64x2.splat (f64.load (i32.add (local.get $ws) (i32.shl (local.get $m) (i32.const 3))))))
          (local.set $p (i32.add (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $m) (i32.const 2)))) (local.get $o4)))
          (local.set $v (v128.load (local.get $p)))
          (local.set $v2 (v128.load offset=16 (local.get $p)))
          (local.set $a (f64x2.add (local.get $a) (f64x2.mul (local.get $wv) (f64x2.promote_low_f32x4 (local.get $v)))))
          (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (local.get $wv) (f64x2.promote_low_f32x4 ${
    hi("$v")
  }))))
          (local.set $a2 (f64x2.add (local.get $a2) (f64x2.mul (local.get $wv) (f64x2.promote_low_f32x4 (local.get $v2)))))
          (local.set $a3 (f64x2.add (local.get $a3) (f64x2.mul (local.get $wv) (f64x2.promote_low_f32x4 ${
    hi("$v2")
  }))))
          (local.set $m (i32.add (local.get $m) (i32.const 1)))
          (br $ml8)))
        (if (local.get $div)
          (then
            (local.set $wv (f64x2.splat (local.get $s)))
            (local.set $a (f64x2.div (local.get $a) (local.get $wv)))
            (local.set $a1 (f64x2.div (local.get $a1) (local.get $wv)))
            (local.set $a2 (f64x2.div (local.get $a2) (local.get $wv)))
            (local.set $a3 (f64x2.div (local.get $a3) (local.get $wv)))))
        (if (local.get $f32)
          (then
            (local.set $p (i32.add (local.get $out) (local.get $o4)))
            (v128.store (local.get $p) ${join("$a", "$a1")})
            (v128.store offset=16 (local.get $p) ${join("$a2", "$a3")}))
          (else
            (local.set $p (i32.add (local.get $out) (local.get $o8)))
            (v128.store (local.get $p) (local.get $a))
            (v128.store offset=16 (local.get $p) (local.get $a1))
            (v128.store offset=32 (local.get $p) (local.get $a2))
            (v128.store offset=48 (local.get $p) (local.get $a3))))
        (local.set $j (i32.add (local.get $j) (i32.const 8)))
        (br $o)))
    ${
    pairLoop(
      `(local.set $a (f64x2.splat (f64.const 0)))
        (local.set $m (i32.const 0))
        (block $md (loop $ml
          (br_if $md (i32.ge_u (local.get $m) (local.get $N)))
          (local.set $a (f64x2.add (local.get $a) (f64x2.mul
            (f64x2.splat (f64.load (i32.add (local.get $ws) (i32.shl (local.get $m) (i32.const 3)))))
            (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add
              (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $m) (i32.const 2)))) (local.get $o4)))))))
          (local.set $m (i32.add (local.get $m) (i32.const 1)))
          (br $ml)))
        (if (local.get $div) (then (local.set $a (f64x2.div (local.get $a) (f64x2.splat (local.get $s))))))
        (if (local.get $f32)
          (then (v128.store64_lane 0 (i32.add (local.get $out) (local.get $o4)) (f32x4.demote_f64x2_zero (local.get $a))))
          (else (v128.store (i32.add (local.get $out) (local.get $o8)) (local.get $a))))`,
      `(local.set $as (f64.const 0))
        (local.set $m (i32.const 0))
        (block $md1 (loop $ml1
          (br_if $md1 (i32.ge_u (local.get $m) (local.get $N)))
          (local.set $as (f64.add (local.get $as) (f64.mul
            (f64.load (i32.add (local.get $ws) (i32.shl (local.get $m) (i32.const 3))))
            (f64.promote_f32 (f32.load (i32.add
              (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $m) (i32.const 2)))) (local.get $o4)))))))
          (local.set $m (i32.add (local.get $m) (i32.const 1)))
          (br $ml1)))
        (if (local.get $div) (then (local.set $as (f64.div (local.get $as) (local.get $s)))))
        (if (local.get $f32)
          (then (f32.store (i32.add (local.get $out) (local.get $o4)) (f32.demote_f64 (local.get $as))))
          (else (f64.store (i32.add (local.get $out) (local.get $o8)) (local.get $as))))`,
      false,
    )
  }
  )

  ;; sd[j] = (x[j] − b[j])·scale (float64)
  (func (export "sd_keep") (param $sd i32) (param $x i32) (param $b i32) (param $scale f64) (param $len i32)
    (local $j i32) (local $o4 i32) (local $o8 i32)
    ${
    pairLoop(
      `(v128.store (i32.add (local.get $sd) (local.get $o8)) (f64x2.mul ${diff2} (f64x2.splat (local.get $scale))))`,
      `(f64.store (i32.add (local.get $sd) (local.get $o8)) (f64.mul ${diff1} (local.get $scale)))`,
    )
  }
  )

  ;; sd[j] = mask[j] ? (x[j] − b[j])·scale : 0 (mask: bytes, 0 = drop)
  (func (export "sd_mask") (param $sd i32) (param $x i32) (param $b i32) (param $mask i32) (param $scale f64)
    (param $len i32)
    (local $j i32) (local $o4 i32) (local $o8 i32) (local $k v128)
    ${
    pairLoop(
      `(local.set $k (i64x2.ne (i64x2.extend_low_i32x4_u (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u
          (v128.load16_splat (i32.add (local.get $mask) (local.get $j))))))
          (v128.const i64x2 0 0)))
        (v128.store (i32.add (local.get $sd) (local.get $o8))
          (v128.and (local.get $k) (f64x2.mul ${diff2} (f64x2.splat (local.get $scale)))))`,
      `(f64.store (i32.add (local.get $sd) (local.get $o8))
          (select (f64.mul ${diff1} (local.get $scale)) (f64.const 0)
            (i32.load8_u (i32.add (local.get $mask) (local.get $j)))))`,
    )
  }
  )

  ;; DARE: sd[j] = keep(j) ? (x[j] − b[j])·scale : 0 with keep(j) = word(s0 + (j+1)·golden) < thr (unsigned)
  ;; or $all; word = the murmur3 finaliser of the state (the counter-mode stream of docs/merging.md §7)
  (func (export "sd_dare") (param $sd i32) (param $x i32) (param $b i32) (param $scale f64) (param $s0 i32)
    (param $thr i32) (param $all i32) (param $len i32)
    (local $j i32) (local $o4 i32) (local $o8 i32) (local $st v128) (local $z v128) (local $k v128)
    (local $zs i32) (local $ss i32) (local $sc v128)
    (local.set $sc (f64x2.splat (local.get $scale)))
    ;; lanes j, j+1, j+2, j+3: states s0 + (j+1)·golden …
    (local.set $st (i32x4.add (i32x4.splat (local.get $s0))
      (v128.const i32x4 ${GOLDEN} ${(2 * GOLDEN) | 0} ${(3 * GOLDEN) | 0} ${(4 * GOLDEN) | 0})))
    (local.set $j (i32.const 0))
    (block $quads_done
      (loop $quads
        (br_if $quads_done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        ${mix32("(local.get $st)", true)}
        (local.set $k (v128.or (i32x4.lt_u (local.get $z) (i32x4.splat (local.get $thr)))
          (i32x4.splat (i32.sub (i32.const 0) (local.get $all)))))
        (v128.store (i32.add (local.get $sd) (local.get $o8))
          (v128.and (i64x2.extend_low_i32x4_s (local.get $k)) (f64x2.mul ${diff2} (local.get $sc))))
        (local.set $o4 (i32.add (local.get $o4) (i32.const 8)))
        (v128.store offset=16 (i32.add (local.get $sd) (local.get $o8))
          (v128.and (i64x2.extend_high_i32x4_s (local.get $k)) (f64x2.mul ${diff2} (local.get $sc))))
        (local.set $st (i32x4.add (local.get $st) (i32x4.splat (i32.const ${(4 * GOLDEN) | 0}))))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $quads)))
    (local.set $ss (i32x4.extract_lane 0 (local.get $st)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        ${mix32("(local.get $ss)", false)}
        (f64.store (i32.add (local.get $sd) (local.get $o8))
          (select (f64.mul ${diff1} (local.get $scale)) (f64.const 0)
            (i32.or (i32.lt_u (local.get $zs) (local.get $thr)) (local.get $all))))
        (local.set $ss (i32.add (local.get $ss) (i32.const ${GOLDEN})))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $tail))))

  ;; The DARE stream's norm sums over a chunk, in index order (scalar adds: the order of a step-by-step
  ;; sum): acc[0] += |x − b| (or its square, or max) over all entries, acc[1] over the kept ones;
  ;; $norm 1 = l1, 2 = l2, 3 = linf
  (func (export "dare_norms") (param $acc i32) (param $x i32) (param $b i32) (param $s0 i32) (param $thr i32)
    (param $all i32) (param $len i32) (param $norm i32)
    (local $j i32) (local $o4 i32) (local $zs i32) (local $ss i32) (local $a f64) (local $full f64)
    (local $kept f64) (local $st v128) (local $z v128) (local $k v128) (local $v v128) (local $w v128)
    (local $a0 v128) (local $a1 v128)
    (local.set $full (f64.load (local.get $acc)))
    (local.set $kept (f64.load offset=8 (local.get $acc)))
    ;; lanes j … j + 3: states s0 + (j+1)·golden …
    (local.set $st (i32x4.add (i32x4.splat (local.get $s0))
      (v128.const i32x4 ${GOLDEN} ${(2 * GOLDEN) | 0} ${(3 * GOLDEN) | 0} ${(4 * GOLDEN) | 0})))
    (if (i32.eq (local.get $norm) (i32.const 3))
      (then ${dareNormQuads(3)})
      (else (if (i32.eq (local.get $norm) (i32.const 2))
        (then ${dareNormQuads(2)})
        (else ${dareNormQuads(1)}))))
    ;; the last entries one at a time
    (local.set $ss (i32x4.extract_lane 0 (local.get $st)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        ${mix32("(local.get $ss)", false)}
        (local.set $a (f64.abs ${diff1}))
        (if (i32.eq (local.get $norm) (i32.const 2)) (then (local.set $a (f64.mul (local.get $a) (local.get $a)))))
        (if (i32.eq (local.get $norm) (i32.const 3))
          (then
            (if (f64.gt (local.get $a) (local.get $full)) (then (local.set $full (local.get $a))))
            (if (i32.or (i32.lt_u (local.get $zs) (local.get $thr)) (local.get $all))
              (then (if (f64.gt (local.get $a) (local.get $kept)) (then (local.set $kept (local.get $a)))))))
          (else
            (local.set $full (f64.add (local.get $full) (local.get $a)))
            (if (i32.or (i32.lt_u (local.get $zs) (local.get $thr)) (local.get $all))
              (then (local.set $kept (f64.add (local.get $kept) (local.get $a)))))))
        (local.set $ss (i32.add (local.get $ss) (i32.const ${GOLDEN})))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $l)))
    (f64.store (local.get $acc) (local.get $full))
    (f64.store offset=8 (local.get $acc) (local.get $kept)))

  ;; A magnitude band: sd[j] = x − b when |x − b| is in the top "t1" and not in the top "t0": |d| > t, or
  ;; |d| = t while that quota of ties (i32 at $ties: ties1, then ties0) lasts, in index order. Pairs
  ;; without a tie go through the vector path; a pair with one runs the scalar rule.
  (func (export "sd_cut") (param $sd i32) (param $x i32) (param $b i32) (param $t1 f64) (param $t0 f64)
    (param $ties i32) (param $len i32)
    (local $j i32) (local $o4 i32) (local $o8 i32) (local $d v128) (local $a v128) (local $v1 v128)
    (local $v0 v128) (local $e i32) (local $n1 i32) (local $n0 i32) (local $v v128) (local $w v128)
    (local $d1 v128) (local $a1 v128)
    (local.set $n1 (i32.load (local.get $ties)))
    (local.set $n0 (i32.load offset=4 (local.get $ties)))
    (local.set $v1 (f64x2.splat (local.get $t1)))
    (local.set $v0 (f64x2.splat (local.get $t0)))
    (local.set $j (i32.const 0))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $o8 (i32.shl (local.get $j) (i32.const 3)))
        ;; 4 entries without a tie at once (a quad with one goes on pairwise below)
        (if (i32.lt_u (i32.add (local.get $j) (i32.const 3)) (local.get $len))
          (then
            (local.set $v (v128.load (i32.add (local.get $x) (local.get $o4))))
            (local.set $w (v128.load (i32.add (local.get $b) (local.get $o4))))
            (local.set $d (f64x2.sub (f64x2.promote_low_f32x4 (local.get $v)) (f64x2.promote_low_f32x4 (local.get $w))))
            (local.set $d1 (f64x2.sub (f64x2.promote_low_f32x4 ${hi("$v")}) (f64x2.promote_low_f32x4 ${
    hi("$w")
  })))
            (local.set $a (f64x2.abs (local.get $d)))
            (local.set $a1 (f64x2.abs (local.get $d1)))
            (if (i32.eqz (v128.any_true (v128.or
                (v128.or (f64x2.eq (local.get $a) (local.get $v1)) (f64x2.eq (local.get $a) (local.get $v0)))
                (v128.or (f64x2.eq (local.get $a1) (local.get $v1)) (f64x2.eq (local.get $a1) (local.get $v0))))))
              (then
                (v128.store (i32.add (local.get $sd) (local.get $o8))
                  (v128.and (local.get $d) (v128.andnot (f64x2.gt (local.get $a) (local.get $v1))
                    (f64x2.gt (local.get $a) (local.get $v0)))))
                (v128.store offset=16 (i32.add (local.get $sd) (local.get $o8))
                  (v128.and (local.get $d1) (v128.andnot (f64x2.gt (local.get $a1) (local.get $v1))
                    (f64x2.gt (local.get $a1) (local.get $v0)))))
                (local.set $j (i32.add (local.get $j) (i32.const 4)))
                (br $l)))))
        (if (i32.lt_u (i32.add (local.get $j) (i32.const 1)) (local.get $len))
          (then
            (local.set $d ${diff2})
            (local.set $a (f64x2.abs (local.get $d)))
            (if (v128.any_true (v128.or (f64x2.eq (local.get $a) (local.get $v1)) (f64x2.eq (local.get $a) (local.get $v0))))
              (then (local.set $e (i32.add (local.get $j) (i32.const 2))))
              (else
                (v128.store (i32.add (local.get $sd) (local.get $o8))
                  (v128.and (local.get $d) (v128.andnot (f64x2.gt (local.get $a) (local.get $v1))
                    (f64x2.gt (local.get $a) (local.get $v0)))))
                (local.set $j (i32.add (local.get $j) (i32.const 2)))
                (br $l))))
          (else (local.set $e (i32.add (local.get $j) (i32.const 1)))))
        ;; scalar rule for entries j … e − 1
        (block $sd_done
          (loop $sl
            (br_if $sd_done (i32.ge_u (local.get $j) (local.get $e)))
            (call $cut1 (local.get $sd) (local.get $x) (local.get $b) (local.get $j) (local.get $t1) (local.get $t0)
              (local.get $n1) (local.get $n0))
            (local.set $n0 (global.get $g0))
            (local.set $n1 (global.get $g1))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $sl)))
        (br $l)))
    (i32.store (local.get $ties) (local.get $n1))
    (i32.store offset=4 (local.get $ties) (local.get $n0)))

  (global $g1 (mut i32) (i32.const 0))
  (global $g0 (mut i32) (i32.const 0))
  ;; one entry of the band rule; the tie quotas left go to $g1, $g0
  (func $cut1 (param $sd i32) (param $x i32) (param $b i32) (param $j i32) (param $t1 f64) (param $t0 f64)
    (param $n1 i32) (param $n0 i32)
    (local $o4 i32) (local $d f64) (local $a f64) (local $keep i32) (local $drop i32)
    (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
    (local.set $d ${diff1})
    (local.set $a (f64.abs (local.get $d)))
    (local.set $keep (f64.gt (local.get $a) (local.get $t1)))
    (if (i32.and (i32.eqz (local.get $keep))
          (i32.and (f64.eq (local.get $a) (local.get $t1)) (i32.gt_s (local.get $n1) (i32.const 0))))
      (then
        (local.set $keep (i32.const 1))
        (local.set $n1 (i32.sub (local.get $n1) (i32.const 1)))))
    (local.set $drop (f64.gt (local.get $a) (local.get $t0)))
    (if (i32.and (i32.eqz (local.get $drop))
          (i32.and (f64.eq (local.get $a) (local.get $t0)) (i32.gt_s (local.get $n0) (i32.const 0))))
      (then
        (local.set $drop (i32.const 1))
        (local.set $n0 (i32.sub (local.get $n0) (i32.const 1)))))
    (f64.store (i32.add (local.get $sd) (i32.shl (local.get $j) (i32.const 3)))
      (select (local.get $d) (f64.const 0) (i32.and (local.get $keep) (i32.eqz (local.get $drop)))))
    (global.set $g1 (local.get $n1))
    (global.set $g0 (local.get $n0)))

${GTA_FLAGS.map(gtaMix).join("\n")}
  ;; The histogram pass of magnitude selection: for each entry, a = |x − b| (float64; $b = 0: |x|),
  ;; hist[top 16 bits of a]++ (u32 counts), and a is appended at $gat when its key lies in [lo, hi].
  ;; Returns how many were appended.
  (func (export "mag_hist") (param $hist i32) (param $x i32) (param $b i32) (param $len i32) (param $lo i32)
    (param $hi i32) (param $gat i32) (result i32)
    (local $j i32) (local $a f64) (local $key i32) (local $g i32) (local $h i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $a (f64.promote_f32 (f32.load (i32.add (local.get $x) (i32.shl (local.get $j) (i32.const 2))))))
        (if (local.get $b)
          (then (local.set $a (f64.sub (local.get $a)
            (f64.promote_f32 (f32.load (i32.add (local.get $b) (i32.shl (local.get $j) (i32.const 2)))))))))
        (local.set $a (f64.abs (local.get $a)))
        (local.set $key (i32.wrap_i64 (i64.shr_u (i64.reinterpret_f64 (local.get $a)) (i64.const 48))))
        (local.set $h (i32.add (local.get $hist) (i32.shl (local.get $key) (i32.const 2))))
        (i32.store (local.get $h) (i32.add (i32.load (local.get $h)) (i32.const 1)))
        (if (i32.le_u (i32.sub (local.get $key) (local.get $lo)) (i32.sub (local.get $hi) (local.get $lo)))
          (then
            (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (local.get $a))
            (local.set $g (i32.add (local.get $g) (i32.const 1)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $l)))
    (local.get $g))

  ;; The histogram pass of a magnitude selection fed in blocks: for each entry, a = |x − b| (float64; $b = 0:
  ;; |x|), and one u32 count incremented: of its top 24 bits minus $lo at bin 65536 + that when below $nf
  ;; (a fine window), else of its top 16 bits. Two half histograms of ${HALF_BINS} bins (even entries at
  ;; $hist, odd ones after them: no store-to-load chain between neighbours), summed by the caller; the u32
  ;; min and max of the keys counted are kept at $hist − 8 and $hist − 4 (the caller sums that range). The
  ;; magnitudes whose top 24 bits minus $g0 are below $ng are also appended at $gat (room for $len), in
  ;; index order; returns how many.
  (func (export "mag_count") (param $hist i32) (param $x i32) (param $b i32) (param $len i32) (param $lo i32)
    (param $nf i32) (param $g0 i32) (param $ng i32) (param $gat i32) (result i32)
    (local $j i32) (local $o4 i32) (local $a v128) (local $k v128) (local $h i32) (local $e i32) (local $f i32)
    (local $g i32) (local $a0 v128) (local $a1 v128) (local $v v128) (local $w v128) (local $kq v128)
    (local $fq v128) (local $hq v128) (local $in v128) (local $vlo v128) (local $vnf v128) (local $vg0 v128)
    (local $vng v128) (local $vhist v128) (local $vmn v128) (local $vmx v128) (local $kmn i32) (local $kmx i32)
    ;; the range of keys counted so far into this histogram (u32 min and max just before $hist)
    (local.set $kmn (i32.load offset=0 (i32.sub (local.get $hist) (i32.const 8))))
    (local.set $kmx (i32.load offset=4 (i32.sub (local.get $hist) (i32.const 8))))
    (local.set $vmn (i32x4.splat (local.get $kmn)))
    (local.set $vmx (i32x4.splat (local.get $kmx)))
    (local.set $vlo (i32x4.splat (local.get $lo)))
    (local.set $vnf (i32x4.splat (local.get $nf)))
    (local.set $vg0 (i32x4.splat (local.get $g0)))
    (local.set $vng (i32x4.splat (local.get $ng)))
    (local.set $vhist (i32x4.splat (local.get $hist)))
    ;; 4 entries at a time, then pairs
    (block $quads_done
      (loop $quads
        (br_if $quads_done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (local.set $v (v128.load (i32.add (local.get $x) (local.get $o4))))
        (local.set $a0 (f64x2.promote_low_f32x4 (local.get $v)))
        (local.set $a1 (f64x2.promote_low_f32x4 ${hi("$v")}))
        (if (local.get $b)
          (then
            (local.set $w (v128.load (i32.add (local.get $b) (local.get $o4))))
            (local.set $a0 (f64x2.sub (local.get $a0) (f64x2.promote_low_f32x4 (local.get $w))))
            (local.set $a1 (f64x2.sub (local.get $a1) (f64x2.promote_low_f32x4 ${hi("$w")})))))
        (local.set $a0 (f64x2.abs (local.get $a0)))
        (local.set $a1 (f64x2.abs (local.get $a1)))
        ${countQuad}
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $quads)))
    (block $pairs_done
      (loop $pairs
        (br_if $pairs_done (i32.gt_u (i32.add (local.get $j) (i32.const 2)) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        ${absDiff2}
        (local.set $k (i64x2.shr_u (local.get $a) (i32.const 40)))
        ${countLane(0)}
        ${countLane(1)}
        (local.set $j (i32.add (local.get $j) (i32.const 2)))
        (br $pairs)))
    (if (i32.lt_u (local.get $j) (local.get $len))
      (then
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        ${absDiff1}
        (local.set $k (i64x2.shr_u (local.get $a) (i32.const 40)))
        ${countLane(0)}))
    ${
    ([0, 1, 2, 3] as const).map((l) =>
      `(local.set $e (i32x4.extract_lane ${l} (local.get $vmn)))
    (local.set $kmn (select (local.get $e) (local.get $kmn) (i32.lt_u (local.get $e) (local.get $kmn))))
    (local.set $e (i32x4.extract_lane ${l} (local.get $vmx)))
    (local.set $kmx (select (local.get $e) (local.get $kmx) (i32.gt_u (local.get $e) (local.get $kmx))))`
    ).join("\n    ")
  }
    (i32.store offset=0 (i32.sub (local.get $hist) (i32.const 8)) (local.get $kmn))
    (i32.store offset=4 (i32.sub (local.get $hist) (i32.const 8)) (local.get $kmx))
    (local.get $g))

  ;; The boundary pass of a magnitude selection fed in blocks: a = |x − b| (float64; $b = 0: |x|) of each
  ;; entry whose bits shifted right by $s1 are $k1, or by $s2 are $k2, is appended at $gat, in index
  ;; order. Returns how many.
  (func (export "mag_gather") (param $x i32) (param $b i32) (param $len i32) (param $k1 i32) (param $s1 i32)
    (param $k2 i32) (param $s2 i32) (param $gat i32) (result i32)
    (local $j i32) (local $o4 i32) (local $g i32) (local $a v128) (local $in v128)
    (local $v1 v128) (local $v2 v128)
    (local.set $v1 (i64x2.splat (i64.extend_i32_u (local.get $k1))))
    (local.set $v2 (i64x2.splat (i64.extend_i32_u (local.get $k2))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        (if (i32.lt_u (i32.add (local.get $j) (i32.const 1)) (local.get $len))
          (then
            ${absDiff2})
          (else
            ;; the last entry alone: both lanes the same entry, the second never stored
            ${absDiff1}))
        (local.set $in (v128.or (i64x2.eq (i64x2.shr_u (local.get $a) (local.get $s1)) (local.get $v1))
          (i64x2.eq (i64x2.shr_u (local.get $a) (local.get $s2)) (local.get $v2))))
        (if (v128.any_true (local.get $in))
          (then
            (if (i32.wrap_i64 (i64x2.extract_lane 0 (local.get $in)))
              (then
                (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (f64x2.extract_lane 0 (local.get $a)))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))))
            (if (i32.and (i32.wrap_i64 (i64x2.extract_lane 1 (local.get $in)))
                  (i32.lt_u (i32.add (local.get $j) (i32.const 1)) (local.get $len)))
              (then
                (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (f64x2.extract_lane 1 (local.get $a)))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))))))
        (local.set $j (i32.add (local.get $j) (i32.const 2)))
        (br $l)))
    (local.get $g))

  ;; The guessed band of magnitude selection: a = |x − b| (float64; $b = 0: |x|) of each entry is appended
  ;; at $gat when lo ≤ a < hi, in index order; the entries with a ≥ hi (or NaN) are counted into the f64
  ;; at $above. Two entries per step. Returns how many were appended.
  (func (export "mag_band") (param $x i32) (param $b i32) (param $len i32) (param $lo f64) (param $hi f64)
    (param $gat i32) (param $above i32) (result i32)
    (local $j i32) (local $o4 i32) (local $g i32) (local $a v128) (local $in v128) (local $cnt v128)
    (local $vlo v128) (local $vhi v128) (local $s f64)
    (local.set $vlo (f64x2.splat (local.get $lo)))
    (local.set $vhi (f64x2.splat (local.get $hi)))
    (block $pairs_done
      (loop $pairs
        (br_if $pairs_done (i32.gt_u (i32.add (local.get $j) (i32.const 2)) (local.get $len)))
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        ${absDiff2}
        (local.set $in (f64x2.lt (local.get $a) (local.get $vhi)))
        ;; above: not below hi (NaN included); the all-ones lane is −1 as an i64
        (local.set $cnt (i64x2.sub (local.get $cnt) (v128.not (local.get $in))))
        (local.set $in (v128.and (local.get $in) (f64x2.ge (local.get $a) (local.get $vlo))))
        (if (v128.any_true (local.get $in))
          (then
            (if (i32.wrap_i64 (i64x2.extract_lane 0 (local.get $in)))
              (then
                (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (f64x2.extract_lane 0 (local.get $a)))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))))
            (if (i32.wrap_i64 (i64x2.extract_lane 1 (local.get $in)))
              (then
                (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (f64x2.extract_lane 1 (local.get $a)))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))))))
        (local.set $j (i32.add (local.get $j) (i32.const 2)))
        (br $pairs)))
    (local.set $s (f64.convert_i64_u (i64.add (i64x2.extract_lane 0 (local.get $cnt)) (i64x2.extract_lane 1 (local.get $cnt)))))
    (if (i32.lt_u (local.get $j) (local.get $len))
      (then
        (local.set $o4 (i32.shl (local.get $j) (i32.const 2)))
        ${absDiff1}
        (if (f64.lt (f64x2.extract_lane 0 (local.get $a)) (local.get $hi))
          (then
            (if (f64.ge (f64x2.extract_lane 0 (local.get $a)) (local.get $lo))
              (then
                (f64.store (i32.add (local.get $gat) (i32.shl (local.get $g) (i32.const 3))) (f64x2.extract_lane 0 (local.get $a)))
                (local.set $g (i32.add (local.get $g) (i32.const 1))))))
          (else (local.set $s (f64.add (local.get $s) (f64.const 1)))))))
    (f64.store (local.get $above) (f64.add (f64.load (local.get $above)) (local.get $s)))
    (local.get $g))

  ;; SLERP's sums over float32 a, b in index order (scalar adds): acc[0] += a·a, acc[1] += b·b, acc[2] += a·b
  (func (export "dot3") (param $acc i32) (param $a i32) (param $bp i32) (param $len i32)
    (local $j i32) (local $x f64) (local $y f64) (local $s0 f64) (local $s1 f64) (local $s2 f64)
    (local.set $s0 (f64.load (local.get $acc)))
    (local.set $s1 (f64.load offset=8 (local.get $acc)))
    (local.set $s2 (f64.load offset=16 (local.get $acc)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $j) (local.get $len)))
        (local.set $x (f64.promote_f32 (f32.load (i32.add (local.get $a) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $y (f64.promote_f32 (f32.load (i32.add (local.get $bp) (i32.shl (local.get $j) (i32.const 2))))))
        (local.set $s0 (f64.add (local.get $s0) (f64.mul (local.get $x) (local.get $x))))
        (local.set $s1 (f64.add (local.get $s1) (f64.mul (local.get $y) (local.get $y))))
        (local.set $s2 (f64.add (local.get $s2) (f64.mul (local.get $x) (local.get $y))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $l)))
    (f64.store (local.get $acc) (local.get $s0))
    (f64.store offset=8 (local.get $acc) (local.get $s1))
    (f64.store offset=16 (local.get $acc) (local.get $s2)))

  ;; out[j] = α·a[j] + β·b[j] (float32 inputs, float64 arithmetic), float32 ($f32 ≠ 0) or float64 out
  (func (export "lerp2") (param $out i32) (param $x i32) (param $b i32) (param $al f64) (param $be f64)
    (param $len i32) (param $f32 i32)
    (local $j i32) (local $o4 i32) (local $o8 i32) (local $r v128) (local $rs f64)
    ${
    pairLoop(
      `(local.set $r (f64x2.add
          (f64x2.mul (f64x2.splat (local.get $al)) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $o4)))))
          (f64x2.mul (f64x2.splat (local.get $be)) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $b) (local.get $o4)))))))
        (if (local.get $f32)
          (then (v128.store64_lane 0 (i32.add (local.get $out) (local.get $o4)) (f32x4.demote_f64x2_zero (local.get $r))))
          (else (v128.store (i32.add (local.get $out) (local.get $o8)) (local.get $r))))`,
      `(local.set $rs (f64.add
          (f64.mul (local.get $al) (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $o4)))))
          (f64.mul (local.get $be) (f64.promote_f32 (f32.load (i32.add (local.get $b) (local.get $o4)))))))
        (if (local.get $f32)
          (then (f32.store (i32.add (local.get $out) (local.get $o4)) (f32.demote_f64 (local.get $rs))))
          (else (f64.store (i32.add (local.get $out) (local.get $o8)) (local.get $rs))))`,
    )
  }
  )
)
`;
}
