import assert from "node:assert/strict";
import {
  allocTokens,
  deepseekV2Router,
  deepseekV3Router,
  freeTokens,
  kernelInfo,
  linearGate,
  matrix,
  NonFiniteError,
  OptionError,
  switchRouter,
  threadCount,
  topKRouter,
  useThreads,
} from "../mod.ts";
import { buildGateKernels, gateWasmModuleText } from "../lib/kernels/build.ts";
import { workersRunning } from "../lib/kernels/threads.ts";
import { assertClose } from "./helpers.ts";

const hasWasm = kernelInfo().wasm;

Deno.test("the committed WebAssembly binaries are exactly what gate_wat.ts builds to", async () => {
  const committed = await Deno.readTextFile(new URL("../lib/kernels/gate_wasm.ts", import.meta.url));
  assert.equal(
    gateWasmModuleText(await buildGateKernels()),
    committed,
    "run `deno task build:wasm` after editing gate_wat.ts",
  );
});

Deno.test("kernel runtime: SIMD detected, relaxed FMA used where available", () => {
  const info = kernelInfo();
  assert.equal(info.wasm, true, "this machine runs WebAssembly SIMD");
  assert.ok(info.simd === "relaxed" || info.simd === "plain");
  assert.ok(info.memoryBytes >= 65536);
});

/** Tokens whose k-th and (k+1)-th logit (float64) differ by more than `gap`: there both paths must agree. */
function decisive(
  x: ReturnType<typeof matrix.randn>,
  w: ReturnType<typeof matrix.randn>,
  k: number,
  gap: number,
): boolean[] {
  const out: boolean[] = [];
  for (let t = 0; t < x.rows; t++) {
    const l = Array.from({ length: w.rows }, (_, e) => {
      let s = 0;
      for (let p = 0; p < x.cols; p++) s += x.data[t * x.cols + p] * w.data[e * w.cols + p];
      return s;
    }).sort((a, b) => b - a);
    out.push(k === w.rows || l[k - 1] - l[k] > gap);
  }
  return out;
}

Deno.test("wasm and js paths agree on odd sizes (d % 4 ≠ 0, T not a multiple of the tile or block, E < block, k = E)", () => {
  assert.ok(hasWasm);
  let compared = 0, skipped = 0;
  for (
    const [T, d, E, k] of [[1, 1, 1, 1], [3, 5, 2, 2], [5, 3, 3, 1], [67, 13, 5, 3], [130, 37, 8, 8], [
      70,
      64,
      9,
      2,
    ], [257, 100, 64, 8]]
  ) {
    const x = matrix.randn(T, d, { seed: T + d }),
      w = matrix.randn(E, d, { seed: E * 7 + k, std: 1 / Math.sqrt(d) });
    const js = topKRouter({ weight: w, k, backend: "js" }).route(x);
    const wasm = topKRouter({ weight: w, k, backend: "wasm" }).route(x);
    const ok = decisive(x, w, k, 1e-4);
    for (let t = 0; t < T; t++) {
      if (!ok[t]) {
        skipped++;
        continue;
      }
      compared++;
      assert.deepEqual(
        wasm.indices.subarray(t * k, t * k + k),
        js.indices.subarray(t * k, t * k + k),
        `T${T} d${d} E${E} token ${t}`,
      );
      assertClose(wasm.weights.subarray(t * k, t * k + k), js.weights.subarray(t * k, t * k + k), 1e-6);
      assertClose(wasm.scores.subarray(t * k, t * k + k), js.scores.subarray(t * k, t * k + k), 1e-6);
    }
    // raw probabilities (normTopkProb = false) use the kernel's softmax sums
    const rawJs = topKRouter({ weight: w, k, normTopkProb: false, backend: "js" }).route(x);
    const rawWasm = topKRouter({ weight: w, k, normTopkProb: false, backend: "wasm" }).route(x);
    for (let t = 0; t < T; t++) {
      if (ok[t]) {
        assertClose(
          rawWasm.weights.subarray(t * k, t * k + k),
          rawJs.weights.subarray(t * k, t * k + k),
          1e-6,
        );
      }
    }
  }
  assert.ok(compared > 450 && skipped < 10, `compared ${compared}, skipped ${skipped}`);
});

Deno.test("wasm DeepSeek-V3 (sigmoid kernel) and V2 match the js path", () => {
  const x = matrix.randn(300, 24, { seed: 1 }), w = matrix.randn(32, 24, { seed: 2, std: 0.2 });
  const bias = Float32Array.from({ length: 32 }, (_, e) => (e % 5) * 0.01);
  for (
    const make of [
      (backend: "js" | "wasm") =>
        deepseekV3Router({
          weight: w,
          k: 4,
          nGroup: 4,
          topkGroup: 2,
          bias,
          routedScalingFactor: 2.5,
          backend,
        }),
      (backend: "js" | "wasm") => deepseekV2Router({ weight: w, k: 3, nGroup: 4, topkGroup: 2, backend }),
    ]
  ) {
    const a = make("js").route(x), b = make("wasm").route(x);
    let differ = 0;
    for (let i = 0; i < a.indices.length; i++) if (a.indices[i] !== b.indices[i]) differ++;
    assert.ok(differ <= 2, `${differ} choices differ`);
    for (let i = 0; i < a.indices.length; i++) {
      if (a.indices[i] === b.indices[i]) assertClose(b.weights[i], a.weights[i], 2e-6);
    }
  }
});

Deno.test("token buffers: zero-copy routing, same result as a copied input, free and reuse", () => {
  const before = kernelInfo().memoryBytes;
  const src = matrix.randn(200, 40, { seed: 3 }), w = matrix.randn(16, 40, { seed: 4 });
  const router = topKRouter({ weight: w, k: 2 });
  for (let i = 0; i < 20; i++) {
    const x = allocTokens(200, 40);
    x.data.set(src.data);
    const a = router.route(x), b = router.route(src);
    assert.deepEqual(a.indices, b.indices);
    assert.deepEqual(a.weights, b.weights);
    freeTokens(x);
  }
  assert.ok(
    kernelInfo().memoryBytes <= Math.max(before, 1 << 22),
    "freed buffers are reused, memory does not grow per call",
  );
  const x = allocTokens(2, 2);
  freeTokens(x);
  assert.throws(() => freeTokens(x), /not an allocation/);
  freeTokens(matrix.zeros(2, 2)); // ordinary matrices: a no-op
});

Deno.test("non-finite input is rejected on the wasm path, naming the first bad (row, col); overflow names the logits", () => {
  const w = matrix.randn(8, 16, { seed: 5 });
  for (
    const router of [
      topKRouter({ weight: w, k: 2 }),
      switchRouter({ weight: w }),
      deepseekV3Router({ weight: w, k: 2 }),
    ]
  ) {
    const x = matrix.randn(150, 16, { seed: 6 });
    x.data[97 * 16 + 5] = NaN;
    x.data[120 * 16 + 2] = Infinity;
    assert.throws(
      () => router.route(x),
      (e) => e instanceof NonFiniteError && e.row === 97 && e.col === 5,
      router.name,
    );
  }
  const huge = matrix.full(3, 16, 1e30);
  assert.throws(
    () => topKRouter({ weight: matrix.full(8, 16, 1e30), k: 2 }).route(huge),
    /router logits .*overflowed/,
  );
  assert.throws(() => linearGate({ weight: w, backend: "gpu" as never }), OptionError);
});

Deno.test("worker threads: identical results to one thread; errors from a worker surface; stop cleanly", async () => {
  const x = allocTokens(2048, 64);
  x.data.set(matrix.randn(2048, 64, { seed: 7 }).data);
  const w = matrix.randn(32, 64, { seed: 8, std: 0.125 });
  const backend = "wasm"; // the Worker pool is the WebAssembly backend's thread story
  const routers = [
    topKRouter({ weight: w, k: 4, backend }),
    topKRouter({
      weight: w,
      k: 1,
      normTopkProb: false,
      bias: Array.from({ length: 32 }, (_, e) => e / 100),
      backend,
    }),
    deepseekV3Router({
      weight: w,
      k: 4,
      nGroup: 4,
      topkGroup: 2,
      bias: Float32Array.from({ length: 32 }, (_, e) => e / 1000),
      backend,
    }),
    deepseekV2Router({ weight: w, k: 3, nGroup: 4, topkGroup: 2, backend }),
  ];
  const single = routers.map((r) => r.route(x));
  await useThreads(2, { idleMs: Infinity }); // the Workers must not stop between routes here
  try {
    assert.equal(threadCount(), 2);
    routers.forEach((r, i) => {
      const multi = r.route(x);
      assert.deepEqual(multi.indices, single[i].indices, r.name);
      assert.deepEqual(multi.weights, single[i].weights, r.name);
      assert.deepEqual(multi.scores, single[i].scores, r.name);
    });
    const plain = matrix.randn(2048, 64, { seed: 7 }); // not in kernel memory: staged
    assert.deepEqual(routers[0].route(plain).indices, single[0].indices);
    for (const row of [5, 2000]) {
      const bad = matrix.clone(plain);
      bad.data[row * 64 + 9] = NaN;
      assert.throws(
        () => routers[0].route(bad),
        // typed on every thread: a worker's NonFiniteError keeps its class
        (e) =>
          e instanceof NonFiniteError && /row (5|2000), col 9/.test(e.message) &&
          e.message.includes(String(row)),
      );
    }
  } finally {
    await useThreads(1);
    freeTokens(x);
  }
  assert.equal(threadCount(), 1);
  await assert.rejects(() => useThreads(0), OptionError);
  for (const idleMs of [-1, NaN]) await assert.rejects(() => useThreads(2, { idleMs }), /idleMs/);
  for (const spinMs of [-1, NaN, 5000]) await assert.rejects(() => useThreads(2, { spinMs }), /spinMs/);
  assert.equal(threadCount(), 1);
});

const nativeUp = kernelInfo().backends.some((b) => b.name === "native" && b.available);

Deno.test(
  `fused softmax top-k epilogue: same experts as the js selector, weights within 1e-6, on wasm${
    nativeUp ? " and native" : " (native skipped: not available here)"
  }, 1 and 2 threads, ties included`,
  async () => {
    // [T, d, E, k, normTopkProb]: k = 1 (argmax path), k ≤ 4 and ≤ 8 (threshold prefilter), k > 8 (none),
    // E not a multiple of 4, E = k, E = 1; T ≥ 2048 reaches the native Workers' 512-token tiles
    const cases: [number, number, number, number, boolean][] = [
      [2100, 8, 64, 8, true],
      [2100, 12, 8, 2, false],
      [700, 24, 130, 1, true],
      [333, 10, 7, 3, true],
      [300, 9, 5, 5, false],
      [260, 16, 37, 9, true],
      [100, 8, 1, 1, true],
    ];
    const backends = nativeUp ? ["wasm", "native"] : ["wasm"];
    const inputs = cases.map(([T, d, E]) => {
      const x = matrix.randn(T, d, { seed: T + E }),
        w = matrix.randn(E, d, { seed: d, std: 1 / Math.sqrt(d) });
      for (let t = 0; t < T; t += 7) x.data.fill(0, t * d, (t + 1) * d); // all logits equal: lowest indices win
      for (let t = 3; t < T; t += 11) x.data.fill(1, t * d, (t + 1) * d);
      if (E > 4) w.data.set(w.data.subarray(0, d), 4 * d); // experts 0 and 4 tie on every token
      return { x, w };
    });
    const ref = cases.map(([, , , k, norm], i) =>
      topKRouter({ weight: inputs[i].w, k, normTopkProb: norm, backend: "js" }).route(inputs[i].x)
    );
    try {
      for (const threads of [1, 2]) {
        await useThreads(threads, { idleMs: Infinity });
        for (const backend of backends) {
          cases.forEach(([T, , E, k, norm], i) => {
            const r = topKRouter({ weight: inputs[i].w, k, normTopkProb: norm, backend }).route(inputs[i].x);
            const what = `${backend} ${threads}T T=${T} E=${E} k=${k}`;
            assert.deepEqual(r.indices, ref[i].indices, what);
            assert.equal(r.weights.length, ref[i].weights.length, what);
            assertClose(r.weights, ref[i].weights, 1e-6);
            assertClose(r.scores, ref[i].scores, 1e-6);
          });
          const bad = matrix.clone(inputs[0].x);
          bad.data[2050 * 8 + 3] = NaN;
          assert.throws(
            () => topKRouter({ weight: inputs[0].w, k: 8, backend }).route(bad),
            (e) => e instanceof NonFiniteError && e.row === 2050 && e.col === 3,
            `${backend} ${threads}T`,
          );
        }
      }
    } finally {
      await useThreads(1);
    }
  },
);

Deno.test("allocTokens: every buffer starts on a 64-byte cache line, whatever the sizes before it", () => {
  const made = [];
  for (const [rows, cols] of [[1, 1], [3, 5], [7, 13], [1, 3], [100, 17], [2, 2]]) {
    const x = allocTokens(rows, cols);
    made.push(x);
    if (hasWasm) assert.equal(x.data.byteOffset % 64, 0, `${rows}×${cols}`);
  }
  freeTokens(made[1]);
  freeTokens(made[3]);
  const again = allocTokens(2, 3); // from a freed gap
  if (hasWasm) assert.equal(again.data.byteOffset % 64, 0);
  for (const x of [made[0], made[2], made[4], made[5], again]) freeTokens(x);
});

Deno.test({
  name: "useThreads: idle Workers stop by themselves, the next route restarts them, results unchanged",
  ignore: !hasWasm,
}, async () => {
  const x = matrix.randn(2048, 64, { seed: 31 }), w = matrix.randn(16, 64, { seed: 32 });
  const router = topKRouter({ weight: w, k: 2, backend: "wasm" });
  const single = router.route(x);
  await useThreads(2, { idleMs: 50, spinMs: 0 }); // spinMs 0: the threads sleep at once between jobs
  try {
    assert.equal(workersRunning(), 1);
    assert.deepEqual(router.route(x).indices, single.indices);
    for (let i = 0; i < 200 && workersRunning() > 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(workersRunning(), 0, "the Workers stopped after 50 ms idle");
    assert.equal(threadCount(), 2, "the thread count asked for is kept");
    const restarted = router.route(x); // on this thread, while the Workers start again
    assert.deepEqual(restarted.weights, single.weights);
    for (let i = 0; i < 400 && workersRunning() === 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(workersRunning(), 1, "the route restarted the Workers");
    assert.deepEqual(router.route(x).weights, single.weights);
  } finally {
    await useThreads(1);
  }
  assert.equal(workersRunning(), 0);
});

Deno.test({
  name: "useThreads: a script that never calls useThreads(1) still ends on its own",
  ignore: !hasWasm,
}, async () => {
  const script = `import { matrix, topKRouter, useThreads } from ${
    JSON.stringify(new URL("../mod.ts", import.meta.url).href)
  };
await useThreads(2, { idleMs: 100 });
const r = topKRouter({ weight: matrix.randn(8, 32, { seed: 1 }), k: 2 }).route(matrix.randn(4096, 32, { seed: 2 }));
console.log("routed", r.tokens);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-read", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const wr = child.stdin.getWriter();
  await wr.write(new TextEncoder().encode(script));
  await wr.close();
  // a hang is the failure: kill it after a minute (it ends 0.1 s after its route)
  let killed = false;
  const guard = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, 60_000);
  const out = await child.output();
  clearTimeout(guard);
  assert.equal(killed, false, "the script hung: idle Workers kept it alive");
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.match(new TextDecoder().decode(out.stdout), /routed 4096/);
});
