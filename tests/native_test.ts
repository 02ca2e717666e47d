// The native backend: library discovery and diagnostics, permissions (nothing prompts or throws without
// --allow-ffi), missing symbols, LAPACK info ≠ 0, threads, and agreement with the float64 JS path.
// Tests that need a library report themselves skipped, with the reason, where none is found.
import assert from "node:assert/strict";
import {
  cholesky,
  LapackError,
  matrix,
  nativeInfo,
  NativeLibraryError,
  NotPositiveDefiniteError,
  rsvd,
  setNativeThreads,
  svd,
  symmetricEigen,
} from "../lib/linalg/mod.ts";
import { useThreads } from "../lib/kernels/mod.ts"; // registers the wasm and native routing backends
import { gateInfo, gateLogits, gatePack, gatePackedFloats } from "../lib/kernels/native/gate.ts";
import {
  backendReport,
  deepseekV3Router,
  NonFiniteError,
  type Router,
  switchRouter,
  topKRouter,
} from "../lib/routing/mod.ts";

const info = nativeInfo();
const skip = info.available ? undefined : info.reason;
const nt = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name: `native: ${name}${skip ? ` (skipped: ${skip})` : ""}`, ignore: skip !== undefined, fn });

const mod = new URL("../lib/linalg/mod.ts", import.meta.url).href;

/** Runs a script in a fresh Deno with the given flags and env; returns its stdout parsed as JSON. */
async function probe(
  flags: string[],
  script: string,
  env: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...flags, "-"],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(`import * as L from "${mod}";\n${script}`));
  await w.close();
  const out = await p.output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, `probe failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text);
}

const PROBE = `
const a = L.matrix.randn(40, 30, { seed: 1 });
const info = L.nativeInfo();
let nativeError = "";
try { L.svd(a, { backend: "native" }); } catch (e) { nativeError = e.name + ": " + e.message; }
const auto = L.svd(a);
console.log(JSON.stringify({ info, nativeError, autoBackend: auto.backend, s0: auto.s[0] }));
`;

Deno.test("native: without --allow-ffi nothing prompts or throws; auto falls back, native says why", async () => {
  const r = await probe([], PROBE);
  const i = r.info as { available: boolean; reason: string; tried: string[] };
  assert.equal(i.available, false);
  assert.match(i.reason, /--allow-ffi is not granted/);
  assert.deepEqual(i.tried, []);
  assert.match(r.nativeError as string, /^NativeLibraryError: .*--allow-ffi is not granted/);
  assert.notEqual(r.autoBackend, "native");
  assert.ok((r.s0 as number) > 0);
});

Deno.test("native: MOEKIT_BLAS pointing at a library without CBLAS is reported, not used", async () => {
  const libm = Deno.build.os === "linux"
    ? "libm.so.6"
    : Deno.build.os === "darwin"
    ? "libSystem.B.dylib"
    : "";
  if (!libm) return;
  const r = await probe(["--allow-ffi", "--allow-env=MOEKIT_BLAS"], PROBE, { MOEKIT_BLAS: libm });
  const i = r.info as { available: boolean; reason: string; tried: string[] };
  assert.equal(i.available, false);
  assert.match(i.reason, /has no cblas_sgemm/);
  assert.deepEqual(i.tried, [libm]);
  assert.notEqual(r.autoBackend, "native");
});

Deno.test("native: MOEKIT_BLAS that cannot be opened is reported with the path", async () => {
  const r = await probe(["--allow-ffi", "--allow-env=MOEKIT_BLAS"], PROBE, {
    MOEKIT_BLAS: "/nonexistent/libx.so",
  });
  const i = r.info as { available: boolean; reason: string };
  assert.equal(i.available, false);
  assert.match(i.reason, /MOEKIT_BLAS = \/nonexistent\/libx\.so could not be opened/);
});

/** gcc, to build a stub CBLAS library with no LAPACK symbols (the only way to test that case portably). */
const gcc = (() => {
  try {
    return new Deno.Command("gcc", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();

Deno.test({
  name: `native: a CBLAS without LAPACK lists the missing symbols; native SVD names sgesdd_${
    gcc && Deno.build.os === "linux" ? "" : " (skipped: needs gcc on Linux to build the stub library)"
  }`,
  ignore: !gcc || Deno.build.os !== "linux",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "moekit-native-" });
    try {
      await Deno.writeTextFile(`${dir}/stub.c`, "void cblas_sgemm(void) {}\n");
      const cc = await new Deno.Command("gcc", {
        args: ["-shared", "-fPIC", "-o", `${dir}/libstub.so`, `${dir}/stub.c`],
      }).output();
      assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
      const r = await probe(["--allow-ffi", "--allow-env=MOEKIT_BLAS"], PROBE, {
        MOEKIT_BLAS: `${dir}/libstub.so`,
      });
      const i = r.info as { available: boolean; missing: string[]; vendor: string };
      assert.equal(i.available, true);
      assert.deepEqual(i.missing, [
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
      ]);
      assert.equal(i.vendor, "unknown");
      assert.match(r.nativeError as string, /^NativeLibraryError: .*symbol sgesdd_ .*not in the library/);
      assert.notEqual(r.autoBackend, "native"); // auto falls back for routines the library lacks
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

nt("nativeInfo names the library, its config and thread count; setNativeThreads changes it", () => {
  assert.ok(info.library && info.tried.includes(info.library));
  assert.deepEqual(info.missing, []);
  if (info.vendor === "openblas") {
    assert.match(info.config ?? "", /OpenBLAS/);
    const before = info.threads!;
    assert.ok(before >= 1);
    assert.equal(setNativeThreads(1), true);
    assert.equal(nativeInfo().threads, 1);
    setNativeThreads(before);
    assert.equal(nativeInfo().threads, before);
  }
  assert.throws(() => setNativeThreads(0), /thread count must be an integer/);
});

nt("LAPACK info ≠ 0 is a typed error naming the routine (spotrf, not positive definite)", () => {
  const a = matrix.fromArrays([[4, 2, 0], [2, 1, 0], [0, 0, 1]]); // second leading minor is 0
  assert.throws(() => cholesky(a, { backend: "native" }), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError && e instanceof LapackError);
    assert.equal(e.routine, "spotrf");
    assert.equal(e.info, 2);
    assert.match(e.message, /^LAPACK spotrf returned info = 2: the leading minor of order 2/);
    return true;
  });
});

nt("native agrees with float64 JS at moderate size (SVD 300×200, eigen 150, rsvd rank 10)", () => {
  const a = matrix.randn(300, 200, { seed: 3 });
  const n = svd(a, { backend: "native" }), j = svd(a, { backend: "js" });
  for (let i = 0; i < 200; i++) assert.ok(Math.abs(n.s[i] - j.s[i]) <= 1e-5 * j.s[0], `σ${i}`);
  // singular vectors agree up to sign (the spectrum of a Gaussian matrix is simple)
  for (let c = 0; c < 5; c++) {
    let dot = 0;
    for (let i = 0; i < 200; i++) dot += n.vt.data[c * 200 + i] * j.vt.data[c * 200 + i];
    assert.ok(Math.abs(Math.abs(dot) - 1) < 1e-4, `v${c}: |dot| = ${Math.abs(dot)}`);
  }
  const g = matrix.matmul(matrix.transpose(a), a);
  const en = symmetricEigen(matrix.rowSlice(matrix.transpose(matrix.rowSlice(g, 0, 150)), 0, 150), {
    backend: "native",
  });
  const ej = symmetricEigen(matrix.rowSlice(matrix.transpose(matrix.rowSlice(g, 0, 150)), 0, 150), {
    backend: "js",
  });
  for (let i = 0; i < 150; i++) assert.ok(Math.abs(en.values[i] - ej.values[i]) <= 1e-5 * ej.values[149]);
  const low = matrix.matmul(matrix.randn(300, 10, { seed: 4 }), matrix.randn(10, 200, { seed: 5 }));
  const rn = rsvd(low, 10, { backend: "native", seed: 1 }), rj = rsvd(low, 10, { backend: "js", seed: 1 });
  for (let i = 0; i < 10; i++) assert.ok(Math.abs(rn.s[i] - rj.s[i]) <= 1e-4 * rj.s[0]);
});

nt("native routines refuse non-finite input before calling LAPACK", () => {
  const a = matrix.randn(5, 4, { seed: 1 });
  a.data[7] = Infinity;
  assert.throws(() => svd(a, { backend: "native" }), /non-finite value Infinity at row 1, col 3/);
});

Deno.test("native: NativeLibraryError and LapackError messages say what to do", () => {
  const e = new NativeLibraryError("sgesdd_", "libblas.so.3", "it is not in the library");
  assert.match(e.message, /symbol sgesdd_ \(libblas\.so\.3\): it is not in the library; set MOEKIT_BLAS/);
  assert.match(e.message, /--allow-ffi/);
  const l = new LapackError("sgesdd", -4, "argument 4 (a) had an illegal value", "a");
  assert.equal(l.argument, "a");
});

/** Routes with `backend` and with the JS reference; asserts identical choices (where the k-th/(k+1)-th
 * margin exceeds float32 rounding) and weights within 1e-5. */
function assertSameRouting(
  make: (backend: string) => Router,
  x: ReturnType<typeof matrix.randn>,
  backend: string,
) {
  const a = make(backend), ref = make("js");
  // no returnLogits on the compared calls: they take the fused tile path (and runParallel)
  const r = a.route(x), q = ref.route(x), logits = ref.route(x, { returnLogits: true }).logits!;
  const k = q.k, E = q.experts;
  let compared = 0;
  for (let t = 0; t < q.tokens; t++) {
    const row = Array.from(logits.data.subarray(t * E, t * E + E)).sort((p, z) => z - p);
    if (k < E && row[k - 1] - row[k] < 1e-4) continue; // a near-tie: either order is right
    compared++;
    for (let j = 0; j < k; j++) {
      assert.equal(r.indices[t * k + j], q.indices[t * k + j], `token ${t} slot ${j}`);
      assert.ok(Math.abs(r.weights[t * k + j] - q.weights[t * k + j]) <= 1e-5, `token ${t} weight ${j}`);
    }
  }
  assert.ok(compared > q.tokens * 0.9, `only ${compared} tokens with a clear margin`);
}

nt("routing: native backend is registered, picked by auto, and reported with its library", () => {
  const r = backendReport();
  const n = r.backends.find((b) => b.name === "native");
  assert.ok(n && n.available, JSON.stringify(n));
  assert.equal(r.auto, "native");
  assert.ok(n.reason.includes(info.library!));
});

nt("routing: native = js on softmax top-k (64 experts) and DeepSeek-V3 sigmoid groups (fused tiles)", () => {
  const x = matrix.randn(700, 96, { seed: 11 });
  const w = matrix.randn(64, 96, { seed: 12, std: 0.1 });
  assertSameRouting((backend) => topKRouter({ weight: w, k: 8, backend }), x, "native");
  const bias = new Float32Array(64).map((_, i) => (i % 5) * 0.01);
  assertSameRouting(
    (backend) =>
      deepseekV3Router({ weight: w, k: 8, nGroup: 8, topkGroup: 4, bias, routedScalingFactor: 2.5, backend }),
    x,
    "native",
  );
  // few experts run on the WebAssembly GEMM inside the native backend
  assertSameRouting(
    (backend) => topKRouter({ weight: matrix.rowSlice(w, 0, 8), k: 2, backend }),
    x,
    "native",
  );
});

nt("routing: with 2 library threads, blocks of 1024 tokens go through one GEMM each; same result", () => {
  const before = nativeInfo().threads ?? 1;
  setNativeThreads(2);
  try {
    const x = matrix.randn(2500, 64, { seed: 13 }), w = matrix.randn(48, 64, { seed: 14, std: 0.1 });
    assertSameRouting((backend) => topKRouter({ weight: w, k: 4, backend }), x, "native");
  } finally {
    setNativeThreads(before);
  }
});

Deno.test("routing: without --allow-ffi the native backend is listed as unavailable, auto is not native", async () => {
  const root = new URL("../mod.ts", import.meta.url).href;
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(new TextEncoder().encode(
    `import { kernelInfo, matrix, topKRouter } from "${root}";
const r = topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 }).route(matrix.randn(32, 16, { seed: 2 }));
console.log(JSON.stringify({ ...kernelInfo(), tokens: r.tokens }));`,
  ));
  await w.close();
  const out = await p.output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(info.tokens, 32);
  assert.notEqual(info.backend, "native");
  const n = info.backends.find((b: { name: string }) => b.name === "native");
  assert.equal(n.available, false);
  assert.match(n.reason, /--allow-ffi is not granted/);
});

// ---- moekit's own native gate kernel (built by `deno task build:native`; skipped when not built) ----

const gate = gateInfo();
const gskip = !info.available ? info.reason : !gate.available ? gate.reason : undefined;
const gt = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({
    name: `native gate kernel: ${name}${gskip ? ` (skipped: ${gskip})` : ""}`,
    ignore: gskip !== undefined,
    fn,
  });

gt("logits equal the float64 product within float32 rounding (d, E, T off every block size)", () => {
  // d = 2100 and 4100 span several K blocks (each block's sums are added to the output); 100 and 400
  // tokens span several token blocks, the last one partial
  const shapes = [[1, 1, 1], [7, 17, 9], [50, 100, 13], [13, 768, 128], [5, 33, 64], [26, 40, 3]];
  shapes.push([100, 2100, 20], [61, 4100, 9], [400, 1030, 17]);
  for (const [T, d, E] of shapes) {
    const x = matrix.randn(T, d, { seed: T + d }), w = matrix.randn(E, d, { seed: E + d });
    const packed = new Float32Array(gatePackedFloats(E, d));
    gatePack(w.data, E, d, packed);
    const out = new Float32Array(T * E + 5).fill(7);
    gateLogits(x.data, T, d, packed, E, out, E);
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < E; e++) {
        let dot = 0, mag = 0;
        for (let j = 0; j < d; j++) {
          dot += x.data[t * d + j] * w.data[e * d + j];
          mag += Math.abs(x.data[t * d + j] * w.data[e * d + j]);
        }
        assert.ok(Math.abs(out[t * E + e] - dot) <= 1e-6 * mag + 1e-30, `T${T} d${d} E${E} (${t}, ${e})`);
      }
    }
    assert.deepEqual(Array.from(out.subarray(T * E)), [7, 7, 7, 7, 7]); // nothing written past [T,E]
  }
});

gt("a token's logits are the same bits alone as in any batch, and at any offset of X", () => {
  for (const [T, d, E] of [[400, 2100, 20], [200, 100, 13], [70, 4100, 9]]) {
    const x = matrix.randn(T, d, { seed: d }), w = matrix.randn(E, d, { seed: E });
    const packed = new Float32Array(gatePackedFloats(E, d));
    gatePack(w.data, E, d, packed);
    const all = new Float32Array(T * E);
    gateLogits(x.data, T, d, packed, E, all, E);
    for (const t of [0, 1, T >> 1, T - 1]) {
      // the row alone, copied one float off its 64-byte alignment
      const row = new Float32Array(d + 1).subarray(1);
      row.set(x.data.subarray(t * d, (t + 1) * d));
      const one = new Float32Array(E);
      gateLogits(row, 1, d, packed, E, one, E);
      assert.deepEqual(one, all.subarray(t * E, (t + 1) * E), `T${T} d${d} E${E} token ${t}`);
    }
  }
});

gt("softmax top-k = js selector: k = 1 … 20, E not a multiple of 16, exact ties to the lower index", () => {
  for (const [E, k, d] of [[8, 2, 64], [13, 3, 40], [64, 8, 96], [128, 1, 48], [96, 20, 32], [256, 8, 24]]) {
    const x = matrix.randn(777, d, { seed: E }), w = matrix.randn(E, d, { seed: k, std: 0.1 });
    assertSameRouting((backend) => topKRouter({ weight: w, k, backend }), x, "native");
    assertSameRouting((backend) => topKRouter({ weight: w, k, normTopkProb: false, backend }), x, "native");
  }
  // small integers: exact float32 logits with many equal values; every token must match the js path
  const E = 40, d = 6, T = 600;
  const xi = matrix.from(Float32Array.from({ length: T * d }, (_, i) => ((i * 7919) % 5) - 2), T, d);
  const wi = matrix.from(Float32Array.from({ length: E * d }, (_, i) => ((i * 104729) % 3) - 1), E, d);
  const a = topKRouter({ weight: wi, k: 6, backend: "native" }).route(xi);
  const b = topKRouter({ weight: wi, k: 6, backend: "js" }).route(xi);
  assert.deepEqual(a.indices, b.indices);
  for (let i = 0; i < a.weights.length; i++) assert.ok(Math.abs(a.weights[i] - b.weights[i]) <= 1e-6);
});

gt(
  "two Workers give the one-thread results (softmax top-k, Switch, DeepSeek-V3 groups); NaN is located",
  async () => {
    const x = matrix.randn(3000, 72, { seed: 21 }), w = matrix.randn(64, 72, { seed: 22, std: 0.1 });
    const routers = [
      topKRouter({ weight: w, k: 8, backend: "native" }),
      switchRouter({ weight: w, backend: "native" }),
      deepseekV3Router({
        weight: w,
        k: 8,
        nGroup: 8,
        topkGroup: 4,
        bias: Float32Array.from({ length: 64 }, (_, e) => (e % 7) / 100),
        backend: "native",
      }),
    ];
    const single = routers.map((r) => r.route(x));
    await useThreads(2, { idleMs: Infinity });
    try {
      routers.forEach((r, i) => {
        const multi = r.route(x);
        assert.deepEqual(multi.indices, single[i].indices, r.name);
        // the gate kernel sums in the same order on any tiling (same bits); a BLAS sgemm (the path for
        // E = 64 without AVX-512) may round differently for 512-token tiles than for 1024-token blocks
        const worst = multi.weights.reduce((m, v, j) => Math.max(m, Math.abs(v - single[i].weights[j])), 0);
        assert.ok(worst <= 1e-6, `${r.name}: weights differ by ${worst}`);
      });
      const bad = matrix.clone(x);
      bad.data[2900 * 72 + 11] = NaN;
      assert.throws(
        () => routers[0].route(bad),
        (e) => e instanceof NonFiniteError && /row 2900, col 11/.test(e.message),
      );
    } finally {
      await useThreads(1);
    }
    const bad = matrix.clone(x);
    bad.data[40 * 72 + 3] = Infinity;
    assert.throws(
      () => routers[0].route(bad),
      (e) => e instanceof NonFiniteError && /row 40, col 3/.test(e.message),
    );
  },
);

gt("the native backend reports the gate kernel and its instruction set", () => {
  const n = backendReport().backends.find((b) => b.name === "native")!;
  assert.match(n.reason, /gate GEMM: moekit's native gate kernel \((avx512|avx2|generic)[;)]/);
  assert.equal((n.detail as { gate: { path: string } }).gate.path, gate.path);
});

Deno.test("native gate kernel: not built → the backend says how to build it, and routes on cblas_sgemm", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-gate-" });
  try {
    const root = new URL("../mod.ts", import.meta.url).href;
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-ffi", "--allow-env", "-"],
      env: { MOEKIT_NATIVE_DIR: dir },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const wr = p.stdin.getWriter();
    await wr.write(new TextEncoder().encode(
      `import { kernelInfo, matrix, topKRouter } from "${root}";
const r = topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 }).route(matrix.randn(32, 16, { seed: 2 }));
console.log(JSON.stringify({ ...kernelInfo(), tokens: r.tokens }));`,
    ));
    await wr.close();
    const out = await p.output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const k = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(k.tokens, 32);
    const n = k.backends.find((b: { name: string }) => b.name === "native");
    if (n.available) {
      assert.match(
        n.reason,
        /gate GEMM: cblas_sgemm \(own gate kernel: not built \(run `deno task build:native`/,
      );
      assert.ok(n.reason.includes(dir));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
