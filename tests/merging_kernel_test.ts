// The merge engine's WebAssembly SIMD kernel (lib/merging/kernel_*.ts) against its JavaScript loops: the
// same bits for every method and variant, float32 and float64 results, odd lengths, tensors large enough
// for the sampled selection path; its 16-bit decoders against decodeFloats; the committed binary against
// its source; and merges in blocks (merge's `block` option with mergeBlockPlanner) against whole-tensor
// merges.
import assert from "node:assert/strict";
import { merge, mergeBlockPlanner, type MergeOptions } from "../lib/merging/merge.ts";
import { KCHUNK, mergeKernel, setDecodePool, setMergeKernel } from "../lib/merging/kernel_run.ts";
import { mergeKernelWat } from "../lib/merging/kernel_wat.ts";
import { assembleWat, mergeWasmModuleText } from "../lib/kernels/build.ts";
import { decodeFloats, encodeFloats, F16_NAN, f16Bits, f16ToNumber } from "../lib/io/dtype.ts";
import { runJob } from "../lib/merging/merge_run.ts";
import { magnitudeCutAccumulator, magnitudeRangeCut, magnitudeRanks } from "../lib/core/selection.ts";
import { OptionError, ShapeError } from "../lib/core/errors.ts";

/** A small LCG in [-0.5, 0.5). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
}

/** bf16-valued float32 data (many equal magnitudes: ties at the cuts), base + 3 models. */
function data(rows: number, cols: number, seed = 1) {
  const r = lcg(seed), n = rows * cols;
  const bf = (f: Float32Array) => decodeFloats(encodeFloats(f, "BF16"), "BF16") as Float32Array;
  const base = bf(Float32Array.from({ length: n }, () => r() * 0.1));
  const models = [0, 1, 2].map(() => bf(Float32Array.from(base, (b) => b + r() * 0.01)));
  return { shape: [rows, cols], base, models };
}

const CASES: [string, Record<string, unknown>, Record<string, unknown>][] = [
  ["linear", { weight: 0.7 }, {}],
  ["linear", { weight: 0.7 }, { normalize: false }],
  ["task_arithmetic", { weight: 0.6 }, { lambda: 0.9 }],
  ["task_arithmetic", { weight: 0.6 }, { normalize: true }],
  ["ties", { weight: 0.8, density: 0.3 }, {}],
  ["ties", { weight: 0.8, density: 0.3 }, { consensus: "count" }],
  ["ties", { weight: 0.8, density: 0.3 }, { semantics: "peft" }],
  ["ties", { weight: 0.8, density: 0.3 }, { semantics: "paper" }],
  ["magnitude_prune", { weight: 1, density: 0.2 }, {}],
  ["breadcrumbs", { weight: 1, density: 0.3, gamma: 0.02 }, {}],
  ["breadcrumbs_ties", { weight: 1, density: 0.4, gamma: 0.05 }, {}],
  ["dare_linear", { weight: 0.5, density: 0.3 }, {}],
  ["dare_linear", { weight: 0.5, density: 0.3 }, { rescaleNorm: "l2" }],
  ["dare_linear", { weight: 0.5, density: 0.3 }, { semantics: "peft" }],
  ["dare_ties", { weight: 1, density: 0.3 }, {}],
  ["dare_ties", { weight: 1, density: 0.3 }, { rescaleNorm: "linf", normalize: true }],
  ["della", { weight: 1, density: 0.3, epsilon: 0.1 }, {}],
  ["slerp", {}, { t: 0.3 }],
];

/** Runs `merge` with the kernel on and off; returns both results. */
function both(o: MergeOptions): [ArrayLike<number>, ArrayLike<number>] {
  const was = setMergeKernel(false);
  try {
    const js = merge(o).data;
    setMergeKernel(true);
    return [js, merge(o).data];
  } finally {
    setMergeKernel(was);
  }
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      assert.fail(`${what}: entry ${i} is ${b[i]}, the JavaScript loops give ${a[i]}`);
    }
  }
}

Deno.test("merge kernel: WebAssembly SIMD is available here", () => {
  assert.ok(mergeKernel(), "this runtime has WebAssembly SIMD");
});

Deno.test("merge kernel: the committed binary is exactly what kernel_wat.ts builds to", async () => {
  const committed = await Deno.readTextFile(new URL("../lib/merging/kernel_wasm.ts", import.meta.url));
  assert.equal(
    mergeWasmModuleText(await assembleWat("merge.wat", mergeKernelWat())),
    committed,
    "run `deno task build:wasm` after editing kernel_wat.ts",
  );
});

for (const [rows, cols] of [[3, 7], [40, KCHUNK + 3], [1, 9]]) {
  Deno.test(`merge kernel = JavaScript loops, bit for bit: every method, ${rows}×${cols}`, () => {
    const d = data(rows, cols, rows + cols);
    for (const [method, mp, gp] of CASES) {
      if (method === "della" && cols < 2) continue;
      const models =
        (method === "linear" ? [d.base, ...d.models] : method === "slerp" ? [d.models[0]] : d.models)
          .map((m) => ({ tensor: { shape: d.shape, data: m }, params: mp }));
      for (const output of ["f32", "f64"] as const) {
        const o: MergeOptions = {
          method,
          base: method === "linear" ? undefined : { shape: d.shape, data: d.base },
          models,
          params: gp,
          name: "layers.0.w",
          seed: 11,
          output,
        };
        const [js, k] = both(o);
        sameBits(js, k, `${method} ${JSON.stringify(gp)} ${output}`);
      }
    }
  });
}

Deno.test("merge kernel: SLERP's angle branch (far vectors) and a zero density (all dropped)", () => {
  const r = lcg(5), n = 1001;
  const a = Float32Array.from({ length: n }, () => r()), b = Float32Array.from({ length: n }, () => r());
  const [js, k] = both({
    method: "slerp",
    base: { shape: [n], data: a },
    models: [{ tensor: { shape: [n], data: b } }],
    params: { t: 0.25 },
  });
  sameBits(js, k, "slerp");
  // the angle branch really ran: not the straight lerp
  assert.notEqual(js[3], 0.75 * a[3] + 0.25 * b[3]);
  const [j2, k2] = both({
    method: "dare_ties",
    base: { shape: [n], data: a },
    models: [{ tensor: { shape: [n], data: b }, params: { weight: 1, density: 0 } }],
  });
  sameBits(j2, k2, "dare density 0");
  assert.deepEqual(Array.from(k2), Array.from(a)); // every entry dropped: the base
});

Deno.test("merge kernel: 16-bit decoders give decodeFloats' bits for every pattern", () => {
  const K = mergeKernel()!;
  const raw = new Uint8Array(2 * 65536 + 6);
  for (let i = 0; i < 65536; i++) {
    raw[2 * i] = i & 0xff;
    raw[2 * i + 1] = i >>> 8;
  }
  for (const dt of ["BF16", "F16"] as const) {
    const want = new Uint32Array((decodeFloats(raw, dt) as Float32Array).buffer);
    const at = K.reserve(4 * (65536 + 3));
    const got = new Uint32Array(K.decode16(raw, dt, at).slice().buffer);
    K.releasePool();
    assert.deepEqual(got, want, dt);
  }
});

Deno.test("merge kernel: 16-bit encoders give encodeFloats' bytes (every output pattern, ties, boundaries, random float64)", () => {
  const K = mergeKernel()!;
  const f64 = new Float64Array(1), u64 = new BigUint64Array(f64.buffer);
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  const fromBits64 = (b: bigint) => (u64[0] = b, f64[0]);
  const fromBits32 = (b: number) => (u32[0] = b >>> 0, f32[0]);
  const step64 = (x: number, d: bigint) => (f64[0] = x, u64[0] = u64[0] + d, f64[0]);
  const values: number[] = [];
  for (let h = 0; h < 65536; h++) {
    // bf16: the pattern itself and the roundings around it (ties at 0x8000 below the kept bits)
    for (const o of [0, 1, 0x7fff, 0x8000, 0x8001, 0xffff]) values.push(fromBits32((h << 16) + o));
    // f16: the pattern, the midpoint to the next one and its float64 neighbours
    const v = f16ToNumber(h), w = f16ToNumber(h + 1 === 0x10000 ? h : h + 1);
    values.push(v);
    if ((h & 0x7fff) < 0x7c00 && ((h + 1) & 0x7fff) <= 0x7c00 && (h & 0x8000) === ((h + 1) & 0x8000)) {
      const mid = (v + w) / 2;
      values.push(mid, step64(mid, 1n), step64(mid, -1n));
    }
  }
  const boundary = [
    0,
    -0,
    Infinity,
    -Infinity,
    NaN,
    3.4028234663852886e38,
    -3.4028234663852886e38,
    1e300,
    -1e-300,
    5e-324,
    2 ** -149,
    2 ** -126,
    65504,
    65519.99,
    65520,
    -65520,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -26,
    2 ** -25 * (1 + 2 ** -20),
    2 ** -14,
    2 ** -14 * (1 - 2 ** -11),
    1 / 3,
  ];
  for (const b of [0x7f800001, 0xffffffff, 0x7fc00000, 0xff800001, 0x7f7fffff, 0x00000001, 0x807fffff]) {
    boundary.push(fromBits32(b));
  }
  for (const b of [0x7ff0000000000001n, 0xfff8000000000001n, 0x47efffffefffffffn, 0x47effffff0000000n]) {
    boundary.push(fromBits64(b));
  }
  values.push(...boundary);
  const r = lcg(14);
  for (let i = 0; i < 200_000; i++) {
    values.push(
      i & 1 ? r() * 2 ** Math.floor(r() * 100) : fromBits64(
        (BigInt(Math.floor((r() + 0.5) * 2 ** 32)) << 32n) | BigInt(Math.floor((r() + 0.5) * 2 ** 32)),
      ),
    );
  }
  for (const dtype of ["BF16", "F16"] as const) {
    for (const Arr of [Float32Array, Float64Array]) {
      const x = Arr.from(values);
      for (
        const [n, wasm] of [[x.length, true], [x.length, false], [13, true], [8, true], [1, true], [
          0,
          true,
        ]] as const
      ) {
        const want = encodeFloats(x.subarray(0, n), dtype);
        K.wasmF16 = wasm;
        const got = K.encode16(x.slice(0, n), dtype);
        K.wasmF16 = false;
        assert.equal(got.length, 2 * n);
        if (!got.every((b, i) => b === want[i])) {
          const i = got.findIndex((b, i) => b !== want[i]) >> 1;
          assert.fail(
            `${dtype} from ${Arr.name}: entry ${i} = ${x[i]} (${
              new Uint32Array(x.buffer, x.byteOffset + x.BYTES_PER_ELEMENT * i, x.BYTES_PER_ELEMENT / 4)
                .join()
            }): got ${got[2 * i + 1]},${got[2 * i]}, want ${want[2 * i + 1]},${want[2 * i]}`,
          );
        }
      }
    }
  }
});

Deno.test("every NaN is written as one quiet NaN (F16 0x7e00, BF16 0x7fc0) by every encoder, whatever its sign and payload", () => {
  const K = mergeKernel()!;
  const nans64 = [
    0x7ff8000000000000n,
    0xfff8000000000000n,
    0x7ff0000000000001n,
    0xfffffffffffffffen,
    0x7ffc07fff0000000n,
  ];
  const nans32 = [0x7fc00000, 0xffc00000, 0x7f800001, 0xffffffff, 0x7fc07fff];
  const x64 = new Float64Array(new BigUint64Array(nans64).buffer);
  const x32 = new Float32Array(new Uint32Array(nans32).buffer);
  for (const [dtype, bits] of [["F16", F16_NAN], ["BF16", 0x7fc0]] as const) {
    for (const x of [x64, x32]) {
      // many times over, so that an optimising compiler's path is taken too (it once kept the payload)
      for (let rep = 0; rep < 2000; rep++) {
        const files = [encodeFloats(x, dtype)];
        if (rep % 500 === 0) {
          for (const wasm of [true, false]) {
            K.wasmF16 = wasm;
            files.push(K.encode16(x.slice(), dtype));
            K.wasmF16 = false;
          }
        }
        for (const f of files) {
          assert.deepEqual(
            Array.from(new Uint16Array(f.buffer, f.byteOffset, x.length)),
            Array(x.length).fill(bits),
            `${dtype} from ${x.constructor.name}`,
          );
        }
      }
    }
  }
  assert.deepEqual([f16Bits(NaN), f16Bits(-NaN), f16Bits(-Infinity)], [F16_NAN, F16_NAN, 0xfc00]);
});

Deno.test("runJob: 16-bit inputs decoded into the kernel's pool give the bytes of the plain path", () => {
  const d = data(5, 2051, 3);
  for (const dtype of ["BF16", "F16"] as const) {
    const enc = (f: Float32Array) => ({ shape: d.shape, dtype, bytes: encodeFloats(f, dtype) });
    for (const method of ["ties", "linear", "dare_ties"]) {
      const job = () => ({
        options: { method, name: "m.w", seed: 2, output: "f32" as const, consumeInputs: true },
        base: method === "linear" ? undefined : enc(d.base),
        models: d.models.map((m) => ({ tensor: enc(m), params: { weight: 1, density: 0.4 } }))
          .map((m) => method === "linear" ? { ...m, params: { weight: 1 } } : m),
      });
      const was = setMergeKernel(false), wasPool = setDecodePool(true);
      const plain = runJob(job()).data;
      setMergeKernel(true);
      runJob(job()); // the first job of a size decodes into its own buffers; the pool grows for the second
      const K = mergeKernel()!, need = job().models.length + (method === "linear" ? 0 : 1);
      assert.ok(K.poolFits(need * (4 * d.base.length + 16)), "the pool takes a size seen before");
      const pooled = runJob(job()).data;
      setDecodePool(false);
      const unpooled = runJob(job()).data;
      setMergeKernel(was);
      setDecodePool(wasPool);
      sameBits(plain, unpooled, `${method} ${dtype} without the pool`);
      sameBits(plain, pooled, `${method} ${dtype}`);
      // the result is not a view into the kernel's pool
      assert.notEqual((pooled as Float32Array).buffer, mergeKernel()!.k.memory.buffer);
    }
  }
});

Deno.test("magnitudeCutAccumulator over blocks = magnitudeRangeCut over the whole", () => {
  const r = lcg(9), n = 5000;
  const x = Float64Array.from({ length: n }, () => Math.round(r() * 64) / 64); // many ties
  for (const [from, to] of [[0, 1500], [40, 4000], [0, n], [3000, 2000], [100, n]]) {
    const acc = magnitudeCutAccumulator(n, from, to), cuts = [0, 700, 701, 2500, n];
    for (let p = 0; p < acc.passes; p++) {
      for (let b = 0; b + 1 < cuts.length; b++) {
        const v = x.subarray(cuts[b], cuts[b + 1]);
        if (p === 0) acc.add(v);
        else acc.refine(v);
      }
    }
    assert.deepEqual(acc.cut(), magnitudeRangeCut(x, from, to), `[${from}, ${to})`);
  }
});

Deno.test("merge in blocks: concatenated blocks = the whole-tensor merge, blocks merged in any order", () => {
  const R = 64, C = 50, n = R * C;
  const q = lcg(7), base = Float32Array.from({ length: n }, () => Math.round(q() * 64) / 64);
  const ms = [0, 1, 2].map(() => Float32Array.from(base, (b) => b + Math.round(q() * 0.3 * 64) / 64));
  const rowsPer = [5, 17, 1, 30, 11], blocks: [number, number][] = [];
  for (let r = 0, i = 0; r < R; i++) {
    const k = Math.min(rowsPer[i % 5], R - r);
    blocks.push([r * C, (r + k) * C]);
    r += k;
  }
  for (const [method, mp, gp] of CASES) {
    if (["della", "slerp"].includes(method) || gp.semantics === "paper") continue;
    const models = (method === "linear" ? [base, ...ms] : ms).map((m) => ({
      tensor: { shape: [R, C], data: m },
      params: mp,
    }));
    const whole = merge({
      method,
      base: { shape: [R, C], data: base },
      models,
      params: gp,
      name: "x",
      seed: 3,
    });
    const pl = mergeBlockPlanner({ method, params: gp, models, numel: n, name: "x", seed: 3 });
    assert.ok(pl, `${method} ${JSON.stringify(gp)} is blockwise`);
    const slice = (a: Float32Array, [s, e]: [number, number]) => a.subarray(s, e);
    for (let p = 0; p < pl.passes; p++) {
      for (const b of blocks) {
        pl.add(p, {
          offset: b[0],
          base: slice(base, b),
          models: (method === "linear" ? [base, ...ms] : ms).map((m) => slice(m, b)),
        });
      }
    }
    const out = new Float64Array(n);
    for (const b of blocks.toReversed()) {
      const shape = [(b[1] - b[0]) / C, C];
      const r = merge({
        method,
        base: { shape, data: slice(base, b) },
        models: models.map((m) => ({ tensor: { shape, data: slice(m.tensor.data, b) }, params: mp })),
        params: gp,
        name: "x",
        seed: 3,
        block: { offset: b[0], plans: pl.plans(b[0]) },
      });
      out.set(r.data, b[0]);
    }
    sameBits(whole.data, out, `${method} ${JSON.stringify(gp)} in blocks`);
  }
});

Deno.test("slerp in blocks (one read pass for the angle, then the lerp) = whole-tensor slerp, bytes", () => {
  // 3·KCHUNK + 37 entries in rows of 37: blocks straddle the kernel's chunks, the last is partial
  const C = 37, R = 3 * (KCHUNK / 37 | 0) + 12, n = R * C, q = lcg(11);
  const bf = (f: Float32Array) => decodeFloats(encodeFloats(f, "BF16"), "BF16") as Float32Array;
  const base32 = Float32Array.from({ length: n }, () => q() * 0.1);
  const far = Float32Array.from(base32, (b) => 0.4 * b + q() * 0.05); // a wide angle
  const near = Float32Array.from(base32, (b) => b + q() * 1e-4); // |cos| > 0.9995: the lerp fallback
  const rowsPer = [70, 1, 150, 33], blocks: [number, number][] = [];
  for (let r = 0, i = 0; r < R; i++) {
    const k = Math.min(rowsPer[i % rowsPer.length], R - r);
    blocks.push([r * C, (r + k) * C]);
    r += k;
  }
  assert.ok(blocks.length > 4 && blocks.at(-1)![1] - blocks.at(-1)![0] < 33 * C);
  for (const dtype of ["bf16", "f32"] as const) {
    const cast = (a: Float32Array) => (dtype === "bf16" ? bf(a) : a);
    for (const [what, b0, m0] of [["wide", base32, far], ["near", base32, near]] as const) {
      const base = cast(b0), model = cast(m0), params = { t: 0.3 };
      for (const output of ["f32", "f64"] as const) {
        for (const kernel of [true, false]) {
          const was = setMergeKernel(kernel);
          try {
            const whole = merge({
              method: "slerp",
              base: { shape: [R, C], data: base },
              models: [{ tensor: { shape: [R, C], data: model } }],
              params,
              output,
            }).data;
            const pl = mergeBlockPlanner({ method: "slerp", params, models: [{}], numel: n })!;
            assert.equal(pl.passes, 1);
            for (const [s, e] of blocks) {
              pl.add(0, { offset: s, base: base.subarray(s, e), models: [model.subarray(s, e)] });
            }
            const out = output === "f32" ? new Float32Array(n) : new Float64Array(n);
            for (const [s, e] of blocks.toReversed()) {
              const shape = [(e - s) / C, C];
              const r = merge({
                method: "slerp",
                base: { shape, data: base.slice(s, e) },
                models: [{ tensor: { shape, data: model.slice(s, e) } }],
                params,
                output,
                consumeInputs: true,
                block: { offset: s, plans: pl.plans(s) },
              });
              out.set(r.data, s);
            }
            sameBits(whole, out, `slerp ${what} ${dtype} → ${output}, kernel ${kernel}, in blocks`);
          } finally {
            setMergeKernel(was);
          }
        }
      }
    }
  }
  // blocks out of index order are refused (the sums are in index order)
  const pl = mergeBlockPlanner({ method: "slerp", params: { t: 0.5 }, models: [{}], numel: 8 })!;
  assert.throws(
    () => pl.add(0, { offset: 4, base: new Float32Array(4), models: [new Float32Array(4)] }),
    /index order/,
  );
});

Deno.test("merge in blocks: what needs the whole tensor says so", () => {
  const t = { shape: [2, 3], data: new Float32Array(6) };
  const models = [{ tensor: t, params: { weight: 1, density: 0.5, epsilon: 0.1 } }];
  assert.equal(mergeBlockPlanner({ method: "della", models, numel: 6 }), null);
  assert.equal(mergeBlockPlanner({ method: "slerp", models: [{}], params: { t: 0.5 }, numel: 6 })?.passes, 1);
  assert.equal(
    mergeBlockPlanner({
      method: "nuslerp",
      models: [{ params: { weight: 1 } }, { params: { weight: 1 } }],
      numel: 6,
    }),
    null,
  );
  assert.equal(
    mergeBlockPlanner({
      method: "ties",
      models: [{ params: { weight: 1, density: 0.5 } }],
      params: { semantics: "paper" },
      numel: 6,
    }),
    null,
  );
  assert.equal(
    mergeBlockPlanner({
      method: "ties",
      models: [{ params: { weight: 1, density: 0.5 } }],
      params: { workDtype: "bf16" },
      numel: 6,
    }),
    null,
  );
  assert.equal(
    mergeBlockPlanner({ method: "linear", models: [{ params: { weight: 1 } }], numel: 6 })?.passes,
    0,
  );
  assert.throws(
    () =>
      merge({ method: "slerp", base: t, models: [{ tensor: t }], params: { t: 0.5 }, block: { offset: 0 } }),
    OptionError,
  );
  assert.throws(
    () =>
      merge({
        method: "ties",
        base: t,
        models: [{ tensor: t, params: { weight: 1, density: 0.5 } }],
        block: { offset: 6 },
      }),
    (e) => e instanceof OptionError && /plan/.test(e.message),
  );
  assert.throws(
    () =>
      merge({
        method: "task_arithmetic",
        name: "model.embed_tokens.weight",
        base: t,
        models: [{ tensor: { shape: [3, 3], data: new Float32Array(9) }, params: { weight: 1 } }],
        block: { offset: 0 },
      }),
    ShapeError,
  );
});

Deno.test("magnitudeRanks (DELLA): rows with long runs of equal magnitudes rank as the total order says", () => {
  const r = lcg(13), u = () => r() + 0.5;
  for (const n of [1, 2, 7, 30, 100]) {
    for (let t = 0; t < 50; t++) {
      const v = Array.from({ length: n }, () => u() < 0.5 ? 0 : Math.round((u() - 0.5) * 6));
      // rank 1 = smallest |x|; equal magnitudes: the lower index ranks higher
      const order = v.map((_, i) => i).sort((a, b) => Math.abs(v[a]) - Math.abs(v[b]) || b - a);
      const want = new Array<number>(n);
      order.forEach((j, p) => (want[j] = p + 1));
      const out = new Int32Array(n);
      magnitudeRanks(v, 0, n, out);
      assert.deepEqual(Array.from(out), want, JSON.stringify(v));
    }
  }
});

Deno.test("runJob: 16-bit inputs merged a chunk at a time from their bytes = the whole-tensor merge", () => {
  // 769 × 256 entries: three chunks of 65536 and a partial one
  const d = data(769, 256, 21);
  const enc = (f: Float32Array, dtype: "BF16" | "F16" | "F32") => ({
    shape: d.shape,
    dtype,
    bytes: encodeFloats(f, dtype),
  });
  const cases: [string, Record<string, unknown>, Record<string, unknown>][] = [
    ["linear", { weight: 0.7 }, {}],
    ["task_arithmetic", { weight: 0.6 }, { lambda: 0.9 }],
    ["dare_ties", { weight: 0.8, density: 0.4 }, { semantics: "peft" }],
    ["dare_linear", { weight: 0.8, density: 0.3 }, { rescale: false }],
    // magnitude cuts: the planner's passes over the chunks first (counting, then gathering if needed)
    ["ties", { weight: 0.8, density: 0.3 }, {}],
    ["magnitude_prune", { weight: 1, density: 0.55 }, {}],
    ["breadcrumbs", { weight: 0.5, density: 0.4, gamma: 0.05 }, {}],
  ];
  const cuts = ["ties", "magnitude_prune", "breadcrumbs"];
  for (const [method, mp, gp] of cases) {
    // bf16, f16, a float32 base with bf16 models, and (magnitude cuts) float32 inputs
    const dtypes = [
      ["BF16", "BF16"],
      ["F16", "F16"],
      ["F32", "BF16"],
      ...(cuts.includes(method) ? [["F32", "F32"]] : []),
    ];
    for (const [bd, md] of dtypes as ["BF16" | "F16" | "F32", "BF16" | "F16" | "F32"][]) {
      for (const offset of cuts.includes(method) ? [undefined] : [undefined, 4096 * 3]) {
        const block = offset === undefined ? undefined : {
          offset,
          plans: mergeBlockPlanner({
            method,
            params: gp,
            models: d.models.map(() => ({ params: mp })),
            numel: 10 ** 6,
          })!
            .plans(offset),
        };
        const job = (out?: ArrayBuffer) => ({
          options: {
            method,
            params: gp,
            name: "model.layers.0.w",
            seed: 4,
            output: "f32" as const,
            consumeInputs: true,
            ...(block ? { block } : {}),
          },
          base: method === "linear" ? undefined : enc(d.base, bd),
          models: d.models.map((m) => ({ tensor: enc(m, md), params: mp })),
          ...(out ? { out } : {}),
        });
        const wasPool = setDecodePool(false);
        const whole = runJob(job()).data;
        setDecodePool(true);
        const out = new ArrayBuffer(4 * d.base.length + 64);
        const chunked = runJob(job(out)).data as Float32Array;
        setDecodePool(wasPool);
        const what = `${method} ${bd}/${md} block ${offset}`;
        assert.equal(chunked.buffer, out, `${what}: merged a chunk at a time into the given buffer`);
        sameBits(whole, chunked, what);
      }
    }
  }
});

Deno.test("runJob: magnitude cuts a chunk at a time, when the first chunk misleads the guessed boundary", () => {
  // the first chunk's task vectors are scaled by s: 0.9 moves the boundary out of the window the
  // counting pass gathers (then a gather pass over 24-bit sub-buckets), 0.01 out of the finely counted
  // buckets too (a gather pass over the 16-bit bucket); 1: no gather pass
  const d = data(769, 256, 5);
  for (const s of [1, 0.9, 0.01]) {
    const models = d.models.map((m) =>
      decodeFloats(
        encodeFloats(
          Float32Array.from(m, (x, i) => (i < 65536 ? d.base[i] + (x - d.base[i]) * s : x)),
          "BF16",
        ),
        "BF16",
      )
    );
    const enc = (f: ArrayLike<number>) => ({
      shape: d.shape,
      dtype: "BF16" as const,
      bytes: encodeFloats(f, "BF16"),
    });
    for (
      const [method, mp] of [["ties", { weight: 1, density: 0.3 }], ["breadcrumbs", {
        weight: 1,
        density: 0.3,
      }]] as const
    ) {
      const job = () => ({
        options: { method, name: "w", output: "f32" as const, consumeInputs: true },
        base: enc(d.base),
        models: models.map((m) => ({ tensor: enc(m), params: mp })),
      });
      const wasPool = setDecodePool(false);
      const whole = runJob(job()).data;
      setDecodePool(true);
      const chunked = runJob(job()).data;
      setDecodePool(wasPool);
      sameBits(whole, chunked, `${method}, first chunk scaled by ${s}`);
    }
  }
});

Deno.test("merge stream: a large tensor split in blocks over two Workers gives the bytes of a whole-tensor merge", async () => {
  const { writeCheckpoint } = await import("../lib/io/mod.ts");
  const { parseMergeConfig, planCheckpointMerge, runCheckpointMerge } = await import("../lib/merging/mod.ts");
  const dir = await Deno.makeTempDir({ prefix: "moekit-halves-" });
  try {
    // the embedding has 2^20 + 1024 entries (split in two blocks of rows), the layer is merged whole
    const specs = [
      { name: "model.embed_tokens.weight", dtype: "BF16" as const, shape: [1025, 1024] },
      { name: "model.layers.0.mlp.up_proj.weight", dtype: "BF16" as const, shape: [300, 64] },
    ];
    for (const [i, m] of ["base", "a", "b", "c"].entries()) {
      await writeCheckpoint(`${dir}/${m}`, specs, (name) => {
        const s = specs.find((x) => x.name === name)!, r = lcg(7 * i + specs.indexOf(s) + 1);
        return Float32Array.from({ length: s.shape[0] * s.shape[1] }, () => r());
      });
    }
    const models = "  - {model: a, parameters: {weight: 0.7, density: 0.5}}\n" +
      "  - {model: b, parameters: {weight: 0.2, density: 0.3}}\n  - {model: c, parameters: {weight: -0.4, density: 0.6}}\n";
    const configs = [
      "merge_method: linear\nmodels:\n  - {model: base, parameters: {weight: 0.3}}\n" +
      models.replaceAll(/, density: [0-9.]+/g, ""),
      "merge_method: task_arithmetic\nbase_model: base\n" + "models:\n" +
      models.replaceAll(/, density: [0-9.]+/g, ""),
      "merge_method: dare_ties\nbase_model: base\nparameters: {semantics: peft}\nmodels:\n" + models,
      // planned by one Worker from the raw bytes (counting and gathering a chunk at a time), then merged
      // in blocks on both, each a chunk at a time with its chunks' plans
      "merge_method: ties\nbase_model: base\nmodels:\n" + models,
      "merge_method: breadcrumbs\nbase_model: base\nmodels:\n" + models,
      // split after its planner's read pass (the angle's sums)
      "merge_method: slerp\nbase_model: base\nparameters: {t: 0.3}\nmodels:\n  - {model: a}\n",
    ];
    for (const yaml of configs) {
      const plan = await planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir });
      try {
        const outs: Uint8Array[] = [];
        for (const overlap of [false, true]) {
          // the reference: whole tensors decoded on this thread (no chunks, no halves)
          const was = setDecodePool(overlap);
          try {
            await runCheckpointMerge(plan, `${dir}/out-${overlap}`, { overlap, minWorkerMs: 0, seed: 3 });
          } finally {
            setDecodePool(was);
          }
          outs.push(await Deno.readFile(`${dir}/out-${overlap}/model.safetensors`));
          await Deno.remove(`${dir}/out-${overlap}`, { recursive: true });
        }
        assert.ok(outs[0].length > 2 * 1025 * 1024);
        assert.equal(outs[1].length, outs[0].length);
        const at = outs[0].findIndex((b, i) => outs[1][i] !== b);
        assert.equal(at, -1, `${yaml.split("\n")[0]}: the files differ from byte ${at}`);
        if (yaml.startsWith("merge_method: slerp")) {
          // the split embedding = merge() of the whole tensors (its angle is the whole tensor's)
          const s = specs[0], n = s.shape[0] * s.shape[1];
          const input = (i: number) => {
            const r = lcg(7 * i + 1), f = Float32Array.from({ length: n }, () => r());
            return { shape: s.shape, data: decodeFloats(encodeFloats(f, "BF16"), "BF16") };
          };
          const want = encodeFloats(
            merge({ method: "slerp", base: input(0), models: [{ tensor: input(1) }], params: { t: 0.3 } })
              .data,
            "BF16",
          );
          const file = outs[1], hlen = Number(new DataView(file.buffer).getBigUint64(0, true));
          const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + hlen)));
          const [lo, hi] = header[s.name].data_offsets as [number, number];
          assert.deepEqual(file.subarray(8 + hlen + lo, 8 + hlen + hi), want);
        }
      } finally {
        plan.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("magnitudeRanks (DELLA): long rows of float32 differences, zeros of both signs and infinities", () => {
  const r = lcg(17);
  const gens: (() => number)[] = [
    () => Math.fround(r() * 0.1 + r() * 0.01) - Math.fround(r() * 0.1), // task-vector entries
    () => (r() < 0 ? (r() < 0 ? 0 : -0) : Math.round(r() * 8) / 8), // long runs of equal magnitudes
    () => (r() < -0.4 ? -Infinity : r() * 10 ** Math.floor((r() + 0.5) * 12)), // every bit varies
  ];
  for (const [g, gen] of gens.entries()) {
    for (const n of [31, 64, 2048]) {
      const v = Float64Array.from({ length: n + 2 }, gen);
      const order = Array.from({ length: n }, (_, i) => i)
        .sort((a, b) => Math.abs(v[a + 2]) - Math.abs(v[b + 2]) || b - a);
      const want = new Int32Array(n);
      order.forEach((j, p) => (want[j] = p + 1));
      const out = new Int32Array(n);
      magnitudeRanks(v, 2, n, out);
      assert.deepEqual(out, want, `generator ${g}, ${n} entries`);
    }
  }
});
