/**
 * The readable source of moekit's float64 WebAssembly kernels (128-bit SIMD), as a WAT generator. The
 * symmetric eigensolver of the `"wasm"` backend runs its O(n³) bulk through them, so its products keep
 * float64 accuracy (the float32 gate GEMM would round every operand to 24 bits):
 *
 * - `gemm_block(a, b, c, m, n, k, lda, ldb, ldc, add)`: `C[i, j] (+)= Σ_{p<k} A[i, p]·B[j, p]` for i < m,
 *   j < n (A·Bᵀ, row-major with row strides `lda`, `ldb`, `ldc` in doubles; `add` = 0 overwrites C). A
 *   register block of 4 rows of A × 2 rows of B — 8 `f64x2` accumulators along p, the two B vectors of the
 *   step and one A vector at a time, 11 of x64's 16 XMM registers — unrolled 4 steps, with edge blocks
 *   4×1, 1×2 and 1×1 and an odd-k tail through `v128.load64_zero`. The caller (`gemm64.ts`) cuts the
 *   product into cache blocks (k ≤ 256, n ≤ 64 per call).
 * - `symv_lower(A, n, s0, v, w)`: the symmetric matrix-vector product of the tridiagonalisation on the
 *   lower triangle, read once.
 *
 * Pointers are byte offsets into the module's own memory. Running this file (`deno run -A
 * lib/linalg/gemm64_wat.ts`) writes `gemm64_wasm.ts` (base64 of the binaries); a test checks that the
 * committed binaries are exactly what this source builds to.
 * @module
 */

/** Kernel variant: `relaxed` uses `f64x2.relaxed_madd` (fused multiply-add where the CPU has it). */
export function gemm64KernelWat(relaxed: boolean): string {
  return `(module
  (memory (export "memory") 1 65536)
${tile(4, 2, relaxed)}
${tile(4, 1, relaxed)}
${tile(1, 2, relaxed)}
${tile(1, 1, relaxed)}
${symv(relaxed)}
  (func (export "gemm_block") (param $a i32) (param $b i32) (param $c i32) (param $m i32) (param $n i32)
    (param $k i32) (param $ld i32) (param $ldbe i32) (param $ldc i32) (param $add i32)
    (local $i i32) (local $j i32) (local $lda i32) (local $ldb i32) (local $ldcb i32) (local $pa i32) (local $pc i32)
    (local.set $lda (i32.shl (local.get $ld) (i32.const 3)))
    (local.set $ldb (i32.shl (local.get $ldbe) (i32.const 3)))
    (local.set $ldcb (i32.shl (local.get $ldc) (i32.const 3)))
    (block $rows4_done
      (loop $rows4
        (br_if $rows4_done (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $m)))
        ${columns(4)}
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $rows4)))
    (block $rows1_done
      (loop $rows1
        (br_if $rows1_done (i32.ge_u (local.get $i) (local.get $m)))
        ${columns(1)}
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows1)))))
`;
}

/** The loop over B's rows (pairs, then the odd last one) for the R rows of A from `$i`. */
function columns(R: number): string {
  const call = (C: number) =>
    `(call $tile${R}x${C}
            (local.get $pa)
            (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $ldb)))
            (i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 3)))
            (local.get $k) (local.get $lda) (local.get $ldb) (local.get $ldcb) (local.get $add))`;
  return `(local.set $pa (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda))))
        (local.set $pc (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $ldcb))))
        (local.set $j (i32.const 0))
        (block $cols${R}_done
          (loop $cols${R}
            (br_if $cols${R}_done (i32.gt_u (i32.add (local.get $j) (i32.const 2)) (local.get $n)))
            ${call(2)}
            (local.set $j (i32.add (local.get $j) (i32.const 2)))
            (br $cols${R})))
        (if (i32.lt_u (local.get $j) (local.get $n))
          (then ${call(1)}))`;
}

/**
 * `symv_lower(A, n, s0, v, w)`: `w[r] = Σ_s A(r, s)·v[s]` for r, s in s0…n, A symmetric with its lower
 * triangle stored column-major (`A(r, s)` at `A + 8·(s·n + r)`, r ≥ s), read once: four columns at a time
 * (then single ones), each step of two rows one dot product per column and one shared update of w, in
 * f64x2 lanes; the columns' diagonal block in scalars.
 */
function symv(relaxed: boolean): string {
  return `${symvColumns(4, relaxed)}
${symvColumns(1, relaxed)}
  (func (export "symv_lower") (param $A i32) (param $n i32) (param $s0 i32) (param $v i32) (param $w i32)
    (local $j i32)
    (memory.fill (i32.add (local.get $w) (i32.shl (local.get $s0) (i32.const 3))) (i32.const 0)
      (i32.shl (i32.sub (local.get $n) (local.get $s0)) (i32.const 3)))
    (local.set $j (local.get $s0))
    (block $four_done
      (loop $four
        (br_if $four_done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $n)))
        (call $symv4 (local.get $A) (local.get $n) (local.get $j) (local.get $v) (local.get $w))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $four)))
    (block $one_done
      (loop $one
        (br_if $one_done (i32.ge_u (local.get $j) (local.get $n)))
        (call $symv1 (local.get $A) (local.get $n) (local.get $j) (local.get $v) (local.get $w))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $one))))`;
}

/** `$symvC`: the contributions of columns j…j+C−1 of the lower triangle to w. */
function symvColumns(C: number, relaxed: boolean): string {
  const fma = (x: string, y: string, acc: string) =>
    relaxed ? `(f64x2.relaxed_madd ${x} ${y} ${acc})` : `(f64x2.add ${acc} (f64x2.mul ${x} ${y}))`;
  const ks = range(C);
  const ld = (base: string, off: string) => `(f64.load (i32.add (local.get ${base}) ${off}))`;
  const rowOff = (i: number) => `(i32.shl (i32.add (local.get $j) (i32.const ${i})) (i32.const 3))`;
  const step = ks.map((k) =>
    `(local.set $x (v128.load (i32.add (local.get $c${k}) (local.get $o))))
            (local.set $acc${k} ${fma("(local.get $x)", "(local.get $vr)", `(local.get $acc${k})`)})
            (local.set $wv ${fma("(local.get $x)", `(local.get $s${k})`, "(local.get $wv)")})`
  ).join("\n            ");
  const tail = ks.map((k) =>
    `(local.set $xs ${ld(`$c${k}`, "(local.get $o)")})
            (local.set $t${k} (f64.add (local.get $t${k}) (f64.mul (local.get $xs) (local.get $vs))))
            (local.set $ws (f64.add (local.get $ws) (f64.mul (local.get $xs) (local.get $v${k}))))`
  ).join("\n            ");
  // the diagonal block: A(j+i, j+k), i ≥ k
  const diag = ks.flatMap((k) =>
    ks.filter((i) => i >= k).map((i) =>
      i === k
        ? `(local.set $t${k} (f64.add (local.get $t${k}) (f64.mul ${
          ld(`$c${k}`, rowOff(i))
        } (local.get $v${k}))))`
        : `(local.set $xs ${ld(`$c${k}`, rowOff(i))})
        (local.set $t${k} (f64.add (local.get $t${k}) (f64.mul (local.get $xs) (local.get $v${i}))))
        (local.set $t${i} (f64.add (local.get $t${i}) (f64.mul (local.get $xs) (local.get $v${k}))))`
    )
  ).join("\n        ");
  return `  (func $symv${C} (param $A i32) (param $n i32) (param $j i32) (param $v i32) (param $w i32)
    (local $r i32) (local $o i32) (local $x v128) (local $vr v128) (local $wv v128) (local $xs f64)
    (local $vs f64) (local $ws f64)
    ${
    ks.map((k) =>
      `(local $c${k} i32) (local $v${k} f64) (local $s${k} v128) (local $acc${k} v128) (local $t${k} f64)`
    ).join("\n    ")
  }
    ${
    ks.map((k) =>
      `(local.set $c${k} (i32.add (local.get $A) (i32.shl (i32.mul (i32.add (local.get $j) (i32.const ${k})) (local.get $n)) (i32.const 3))))
    (local.set $v${k} ${ld("$v", rowOff(k))})
    (local.set $s${k} (f64x2.splat (local.get $v${k})))`
    ).join("\n    ")
  }
    (local.set $r (i32.add (local.get $j) (i32.const ${C})))
    (block $pairs_done
      (loop $pairs
        (br_if $pairs_done (i32.gt_u (i32.add (local.get $r) (i32.const 2)) (local.get $n)))
        (local.set $o (i32.shl (local.get $r) (i32.const 3)))
        (local.set $vr (v128.load (i32.add (local.get $v) (local.get $o))))
        (local.set $wv (v128.load (i32.add (local.get $w) (local.get $o))))
            ${step}
        (v128.store (i32.add (local.get $w) (local.get $o)) (local.get $wv))
        (local.set $r (i32.add (local.get $r) (i32.const 2)))
        (br $pairs)))
    ${
    ks.map((k) =>
      `(local.set $t${k} (f64.add (f64x2.extract_lane 0 (local.get $acc${k})) (f64x2.extract_lane 1 (local.get $acc${k}))))`
    ).join("\n    ")
  }
    (if (i32.lt_u (local.get $r) (local.get $n))
      (then
        (local.set $o (i32.shl (local.get $r) (i32.const 3)))
        (local.set $vs ${ld("$v", "(local.get $o)")})
            ${tail}
        (f64.store (i32.add (local.get $w) (local.get $o)) (f64.add ${
    ld("$w", "(local.get $o)")
  } (local.get $ws)))))
        ${diag}
    ${
    ks.map((k) =>
      `(f64.store (i32.add (local.get $w) ${rowOff(k)}) (f64.add ${ld("$w", rowOff(k))} (local.get $t${k})))`
    ).join("\n    ")
  })`;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** One R×C register block over k: `$a` row 0 of A, `$b` row 0 of B, `$c` C[0, 0]; strides in bytes. */
function tile(R: number, C: number, relaxed: boolean): string {
  const fma = (x: string, y: string, acc: string) =>
    relaxed ? `(f64x2.relaxed_madd ${x} ${y} ${acc})` : `(f64x2.add ${acc} (f64x2.mul ${x} ${y}))`;
  const accs = range(R).flatMap((r) => range(C).map((c) => `$s${r}_${c}`));
  const rowPtr = (base: string, ld: string, r: number) =>
    r === 0
      ? `(local.get ${base})`
      : `(i32.add (local.get ${base}) (i32.mul (local.get ${ld}) (i32.const ${r})))`;
  const step = (load: string, off = 0) =>
    range(C).map((c) =>
      `(local.set $y${c} (${load} offset=${off} (i32.add (local.get $pb${c}) (local.get $o))))`
    )
      .join(
        "\n        ",
      ) +
    "\n        " +
    range(R).map((r) =>
      `(local.set $x (${load} offset=${off} (i32.add (local.get $pa${r}) (local.get $o))))
        ${
        range(C).map((c) =>
          `(local.set $s${r}_${c} ${fma("(local.get $x)", `(local.get $y${c})`, `(local.get $s${r}_${c})`)})`
        )
          .join("\n        ")
      }`
    ).join("\n        ");
  const store = range(R).flatMap((r) =>
    range(C).map((c) => {
      const addr = `(i32.add (local.get $c) (i32.add (i32.mul (local.get $ldc) (i32.const ${r})) (i32.const ${
        8 * c
      })))`;
      const sum =
        `(f64.add (f64x2.extract_lane 0 (local.get $s${r}_${c})) (f64x2.extract_lane 1 (local.get $s${r}_${c})))`;
      return `(local.set $t ${sum})
    (if (local.get $add) (then (local.set $t (f64.add (local.get $t) (f64.load ${addr})))))
    (f64.store ${addr} (local.get $t))`;
    })
  ).join("\n    ");
  return `  (func $tile${R}x${C} (param $a i32) (param $b i32) (param $c i32) (param $k i32) (param $lda i32)
    (param $ldb i32) (param $ldc i32) (param $add i32)
    (local $o i32) (local $end i32) (local $end4 i32) (local $x v128) (local $t f64)
    ${range(C).map((c) => `(local $y${c} v128)`).join(" ")}
    ${range(R).map((r) => `(local $pa${r} i32)`).join(" ")} ${
    range(C).map((c) => `(local $pb${c} i32)`).join(" ")
  }
    ${accs.map((s) => `(local ${s} v128)`).join(" ")}
    ${range(R).map((r) => `(local.set $pa${r} ${rowPtr("$a", "$lda", r)})`).join("\n    ")}
    ${range(C).map((c) => `(local.set $pb${c} ${rowPtr("$b", "$ldb", c)})`).join("\n    ")}
    (local.set $end (i32.shl (i32.and (local.get $k) (i32.const -2)) (i32.const 3)))
    (local.set $end4 (i32.shl (i32.and (local.get $k) (i32.const -8)) (i32.const 3)))
    (block $done4
      (loop $steps4
        (br_if $done4 (i32.ge_u (local.get $o) (local.get $end4)))
        ${[0, 16, 32, 48].map((off) => step("v128.load", off)).join("\n        ")}
        (local.set $o (i32.add (local.get $o) (i32.const 64)))
        (br $steps4)))
    (block $done
      (loop $steps
        (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
        ${step("v128.load")}
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $steps)))
    (if (i32.and (local.get $k) (i32.const 1))
      (then
        ${step("v128.load64_zero")}))
    ${store})`;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** The text of `gemm64_wasm.ts` for the two binaries. */
export function gemm64WasmModuleText(k: { plain: Uint8Array; relaxed: Uint8Array }): string {
  const wrap = (bytes: Uint8Array) => base64(bytes).match(/.{1,100}/g)!.map((l) => `  "${l}"`).join(" +\n");
  return `// Generated by lib/linalg/gemm64_wat.ts — do not edit; run \`deno run -A lib/linalg/gemm64_wat.ts\`.

/** The plain-SIMD float64 GEMM kernel, base64. */
export const GEMM64_WASM_PLAIN: string =
${wrap(k.plain)};

/** The relaxed-SIMD (FMA) float64 GEMM kernel, base64. */
export const GEMM64_WASM_RELAXED: string =
${wrap(k.relaxed)};
`;
}

/** Assembles both variants with wabt. */
export async function buildGemm64Kernels(): Promise<{ plain: Uint8Array; relaxed: Uint8Array }> {
  const { assembleWat } = await import("../kernels/build.ts");
  return {
    plain: await assembleWat("gemm64.wat", gemm64KernelWat(false)),
    relaxed: await assembleWat("gemm64_relaxed.wat", gemm64KernelWat(true), true),
  };
}

if (import.meta.main) {
  const k = await buildGemm64Kernels();
  await Deno.writeTextFile(new URL("gemm64_wasm.ts", import.meta.url), gemm64WasmModuleText(k));
  console.log(`gemm64 kernels: plain ${k.plain.length} bytes, relaxed ${k.relaxed.length} bytes`);
}
