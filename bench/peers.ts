/**
 * moekit against the peer benchmark kit (PyTorch, numpy, onnxruntime, tfjs; its folder is `PEERS_KIT`,
 * by default `bench-peers/` in the checkout's sibling `shared/` folder): loads the kit's inputs, routes
 * them with moekit (softmax top-k, renormalised — the peers' route), checks agreement with the kit's
 * float64 reference, and prints tokens/s next to the newest peer results as ratios to PyTorch at 1 thread.
 *
 *   sh $PEERS_KIT/setup.sh                         # once: the peers and their inputs
 *   deno task bench:peers                          # moekit now, peers from the newest two run.sh files
 *   deno task bench:peers --run-peers              # run the peers first, in the same sitting
 *   deno task bench:peers --threads 1,2 mixtral olmoe
 *   deno task bench:peers --backend wasm           # moekit's backend: auto (default), wasm, native, js
 *   deno task bench:peers --backend native,wasm    # several backends, one sitting
 *   deno task bench:peers --gemm                   # also the bare gate GEMMs (own kernel, cblas_sgemm, wasm)
 *   deno task bench:peers --fresh                  # a new result per call (default: `route(x, { into })`)
 *   MOEKIT_BENCH_QUICK=1 deno task bench:peers     # smoke test: tiny synthetic shapes, no peers needed
 *
 * `--run-peers` runs the kit once per thread count with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set to
 * that count before any peer loads, and reads back the results of this sitting only.
 *
 * Timing rule (the kit's): inputs in memory, router built once, 2 warm-up calls and ≥ 0.3 s of warm-up,
 * then 5–25 timed calls (~2 s), median. X lives in a kernel token buffer (`allocTokens`), as a serving
 * loop would keep it, and each call writes into the previous call's result (`route(x, { into })`), as the
 * peers reuse their output buffers (`--fresh` allocates a new result per call). `foreign` = CPU other
 * processes used meanwhile (re-run when it is high).
 */

import { parseArgs } from "node:util";
import { gateInfo, gateLogits, gatePack, gatePackedFloats } from "../lib/kernels/native/gate.ts";
import { nativeInfo, nativeSgemm } from "../lib/kernels/native.ts";
import { wasmGemm } from "../lib/kernels/gemm.ts";
import {
  allocTokens,
  freeTokens,
  kernelInfo,
  matrix,
  setNativeThreads,
  topKRouter,
  useThreads,
} from "../mod.ts";

interface Shape {
  name: string;
  T: number;
  d: number;
  E: number;
  k: number;
}

const args = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    threads: { type: "string", default: "1,2" },
    backend: { type: "string", default: "auto" },
    "run-peers": { type: "boolean" },
    json: { type: "boolean" },
    gemm: { type: "boolean" },
    fresh: { type: "boolean" },
  },
});
const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const fresh = args.values.fresh === true;
const kit = Deno.env.get("PEERS_KIT") ?? new URL("../../shared/bench-peers/", import.meta.url).pathname;
const work = Deno.env.get("PEERS_WORK") ?? `${Deno.env.get("HOME")}/.cache/moekit-peers`;
const dataDir = Deno.env.get("PEERS_DATA") ?? `${work}/data`;
const wanted = args.positionals.length
  ? args.positionals
  : ["mixtral", "olmoe", "deepseek-v3", "switch-base"];
const threads = args.values.threads!.split(",").map(Number);
if (!threads.every((t) => Number.isInteger(t) && t >= 1)) {
  console.error(
    `error: --threads must be a comma-separated list of integers ≥ 1, got "${args.values.threads}"`,
  );
  Deno.exit(2);
}

const backends = args.values.backend!.split(",");
if (!backends.every((b) => ["auto", "wasm", "native", "js"].includes(b))) {
  console.error(
    `error: --backend must be auto, wasm, native or js (or a comma-separated list), got "${args.values.backend}"`,
  );
  Deno.exit(2);
}
const usedList = [...new Set(backends.map((b) => b === "auto" ? kernelInfo().backend : b))];
for (const used of usedList) {
  if (!kernelInfo().backends.some((b) => b.name === used && b.available)) {
    const why = kernelInfo().backends.find((b) => b.name === used)?.reason ?? "unknown backend";
    console.error(`error: backend "${used}" is not available: ${why}`);
    Deno.exit(2);
  }
}

const sittingStart = Date.now();
if (args.values["run-peers"] && !quick) {
  for (const t of threads) {
    // the BLAS thread pools size themselves when the library loads: set the count before that
    const p = await new Deno.Command("sh", {
      args: [`${kit}run.sh`, ...wanted],
      env: { PEERS_THREADS: String(t), OPENBLAS_NUM_THREADS: String(t), OMP_NUM_THREADS: String(t) },
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!p.success) Deno.exit(p.code);
  }
}

let shapes: Shape[];
if (quick) {
  shapes = [{ name: "tiny-topk2", T: 64, d: 64, E: 8, k: 2 }, {
    name: "tiny-topk8",
    T: 64,
    d: 128,
    E: 64,
    k: 8,
  }];
} else {
  try {
    shapes = (JSON.parse(Deno.readTextFileSync(`${dataDir}/shapes.json`)) as Shape[]).filter((s) =>
      wanted.includes(s.name)
    );
  } catch {
    console.error(
      `no peer data in ${dataDir}: run \`sh ${kit}setup.sh\` first (it generates the shared inputs)`,
    );
    Deno.exit(2);
  }
}

/** Float64 reference top-k (descending logit, ties to the lower index), as the kit's `ref.i32`. */
function referenceTopK(x: Float32Array, w: Float32Array, s: Shape): Int32Array {
  const out = new Int32Array(s.T * s.k), logits = new Float64Array(s.E);
  for (let t = 0; t < s.T; t++) {
    for (let e = 0; e < s.E; e++) {
      let acc = 0;
      for (let j = 0; j < s.d; j++) acc += x[t * s.d + j] * w[e * s.d + j];
      logits[e] = acc;
    }
    const order = Array.from({ length: s.E }, (_, e) => e).sort((a, b) => logits[b] - logits[a] || a - b);
    out.set(order.slice(0, s.k), t * s.k);
  }
  return out;
}

/** The inputs of one shape: the kit's files, or (quick mode) seeded synthetic ones. */
function inputs(s: Shape): { x: Float32Array; w: Float32Array; ref: Int32Array } {
  if (quick) {
    const x = matrix.randn(s.T, s.d, { seed: 1 }).data,
      w = matrix.randn(s.E, s.d, { seed: 2, std: 1 / Math.sqrt(s.d) }).data;
    return { x, w, ref: referenceTopK(x, w, s) };
  }
  return {
    x: read(`${s.name}.x.f32`, s.T * s.d, Float32Array),
    w: read(`${s.name}.w.f32`, s.E * s.d, Float32Array).slice(),
    ref: read(`${s.name}.ref.i32`, s.T * s.k, Int32Array),
  };
}

function read<A>(file: string, n: number, C: new (b: ArrayBuffer, off: number, n: number) => A): A {
  const b = Deno.readFileSync(`${dataDir}/${file}`);
  if (b.byteLength !== 4 * n) throw new Error(`${file}: ${b.byteLength} bytes, expected ${4 * n}`);
  return new C(b.buffer, b.byteOffset, n);
}

function agreement(ids: Int32Array, ref: Int32Array, T: number, k: number): number {
  let ok = 0;
  for (let t = 0; t < T; t++) {
    const a = Array.from(ids.subarray(t * k, t * k + k)).sort((p, q) => p - q);
    const b = Array.from(ref.subarray(t * k, t * k + k)).sort((p, q) => p - q);
    if (a.every((v, j) => v === b[j])) ok++;
  }
  return ok / T;
}

function cpu(): { busy: number; self: number } {
  const st = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const ps = Deno.readTextFileSync("/proc/self/stat"), f = ps.slice(ps.lastIndexOf(")") + 2).split(" ");
  // this process's threads include the Workers
  return { busy: st[0] + st[1] + st[2] + st[5] + st[6] + st[7], self: Number(f[11]) + Number(f[12]) };
}

function timeIt(fn: () => void): { median: number; reps: number; foreign: number } {
  let t0 = performance.now();
  for (let i = 0; i < 1 || (!quick && performance.now() - t0 < 300 && i < 50); i++) fn();
  t0 = performance.now();
  fn();
  const one = (performance.now() - t0) / 1e3,
    reps = quick ? 3 : Math.max(5, Math.min(25, Math.floor(2 / Math.max(one, 1e-9))));
  const ts: number[] = [], c0 = cpu(), w0 = performance.now();
  for (let r = 0; r < reps; r++) {
    t0 = performance.now();
    fn();
    ts.push((performance.now() - t0) / 1e3);
  }
  const c1 = cpu(), wall = (performance.now() - w0) / 1e3;
  ts.sort((a, b) => a - b);
  return {
    median: ts[ts.length >> 1],
    reps,
    foreign: +((c1.busy - c0.busy - (c1.self - c0.self)) / 100 / wall).toFixed(2),
  };
}

// peer results: this sitting's (--run-peers), else the newest sitting's
const peers = new Map<string, number>();
let peerFiles: string[] = [];
try {
  if (!quick) {
    const files = [...Deno.readDirSync(`${work}/results`)].filter((f) => f.name.endsWith(".jsonl"))
      .map((f) => `${work}/results/${f.name}`).sort();
    // this sitting's files, else the newest two (run.sh writes one file per thread count)
    peerFiles = args.values["run-peers"]
      ? files.filter((f) => Deno.statSync(f).mtime!.getTime() >= sittingStart - 1000)
      : files.slice(-2);
  }
  for (const file of peerFiles) {
    for (const line of Deno.readTextFileSync(file).split("\n").filter(Boolean)) {
      const r = JSON.parse(line);
      if (!r.failed) peers.set(`${r.shape}|${r.label}|${r.threads}`, r.tok_s);
    }
  }
} catch { /* no peer results yet */ }
const peerFile = peerFiles.join(", ");

const info = kernelInfo();
const rows: Record<string, unknown>[] = [];
const fmt = (v: number | undefined) =>
  v === undefined
    ? "-"
    : v >= 1e6
    ? `${(v / 1e6).toFixed(2)}M`
    : v >= 1e3
    ? `${(v / 1e3).toFixed(v >= 1e5 ? 0 : 1)}k`
    : v.toFixed(0);
console.log(
  `moekit backends ${usedList.map((u) => u === "wasm" ? `wasm (${info.simd} SIMD)` : u).join(", ")}; peers: ${
    peerFile || "none found"
  }`,
);
if (usedList.includes("native")) {
  console.log(`native: ${info.backends.find((b) => b.name === "native")?.reason}`);
}
console.log("shape         who                        1T                     2T        agree  foreign");
for (const s of shapes) {
  const input = inputs(s), x = allocTokens(s.T, s.d);
  x.data.set(input.x);
  const w = matrix.from(input.w, s.E, s.d), ref = input.ref;
  const ours: Record<string, Record<number, number>> = {};
  let agree = 1, foreign = 0;
  for (const used of usedList) {
    for (const n of threads) {
      const router = topKRouter({ weight: w, k: s.k, backend: used });
      ours[used] ??= {};
      // moekit's Workers (for native: each runs its own 1-thread GEMM on its tiles); the library's threads
      // for whatever native runs on the calling thread alone
      await useThreads(n, { idleMs: Infinity }); // no idle stop between shapes
      if (used === "native") setNativeThreads(n);
      // each call overwrites the previous result's arrays (`into`), as the peers reuse their output
      // buffers and a serving loop would (`--fresh`: a new result per call)
      let last = router.route(x);
      const r = timeIt(() => void (last = router.route(x, fresh ? undefined : { into: last })));
      ours[used][n] = s.T / r.median;
      foreign = Math.max(foreign, r.foreign);
      agree = Math.min(agree, agreement(last.indices, ref, s.T, s.k));
    }
  }
  await useThreads(1);
  if (args.values.gemm) gemmRates(s, x, w);
  freeTokens(x);
  const torch1 = peers.get(`${s.name}|torch|1`);
  const cell = (v: number | undefined) =>
    `${fmt(v).padStart(7)}${v !== undefined && torch1 ? ` (${(v / torch1).toFixed(2)}x)` : "        "}`;
  const line = (who: string, a: number | undefined, b: number | undefined, extra = "") =>
    console.log(
      `${s.name.padEnd(13)} ${who.padEnd(14)} ${cell(a).padStart(20)} ${cell(b).padStart(22)}${extra}`,
    );
  for (const used of usedList) {
    const who = usedList.length > 1 ? `moekit-${used}` : "moekit";
    line(who, ours[used][1], ours[used][2], `   ${(100 * agree).toFixed(2)}%   ${foreign.toFixed(2)}`);
  }
  for (const p of ["torch", "torch-passive", "ort", "numpy", "tfjs-wasm-wT"]) {
    const a = peers.get(`${s.name}|${p}|1`), b = peers.get(`${s.name}|${p}|2`);
    if (a !== undefined || b !== undefined) line(p, a, b);
  }
  // the issue's yardstick: the faster of PyTorch (either wait policy) and onnxruntime, same thread count
  const best = (n: number) =>
    Math.max(...["torch", "torch-passive", "ort"].map((p) => peers.get(`${s.name}|${p}|${n}`) ?? 0)) ||
    undefined;
  for (const used of threads.some((n) => best(n)) ? usedList : []) {
    const r = threads.map((n) => {
      const b = best(n), v = ours[used][n];
      return `${n}T ${b && v ? (v / b).toFixed(2) : "-"}x`;
    });
    console.log(
      `${s.name.padEnd(13)} ${(usedList.length > 1 ? used : "moekit").padEnd(14)} ÷ best peer: ${
        r.join("  ")
      }`,
    );
  }
  const peerRows: Record<string, Record<number, number>> = {};
  for (const [key, v] of peers) {
    const [shape, label, t] = key.split("|");
    if (shape === s.name) (peerRows[label] ??= {})[Number(t)] = v;
  }
  rows.push({
    shape: s.name,
    T: s.T,
    d: s.d,
    E: s.E,
    k: s.k,
    moekit: usedList.length > 1 ? ours : ours[usedList[0]],
    agreement: agree,
    foreign,
    peers: peerRows,
  });
  if (!quick && agree < 1) {
    console.error(
      `warning: ${s.name}: top-k agrees with the reference on ${(100 * agree).toFixed(2)} % of tokens`,
    );
  }
  if (quick && agree < 1) {
    console.error(
      `error: ${s.name}: top-k differs from the float64 reference (${(100 * agree).toFixed(2)} %)`,
    );
    Deno.exit(1);
  }
}
if (args.values.json) {
  console.log(JSON.stringify({ kernel: info, backend: usedList.join(","), peerFiles, rows }));
}

/**
 * The bare gate GEMMs on one thread, X·Wᵀ over 256-token blocks into one buffer (no epilogue): moekit's native
 * gate kernel, the library's `cblas_sgemm` (on Wᵀ, as routing calls it) and the WebAssembly kernel, in GFLOP/s.
 */
function gemmRates(s: Shape, x: ReturnType<typeof allocTokens>, w: ReturnType<typeof matrix.from>): void {
  const B = 256, out = new Float32Array(B * s.E), flop = 2 * s.T * s.d * s.E;
  const rate = (fn: (t0: number, n: number) => void) => {
    const r = timeIt(() => {
      for (let t0 = 0; t0 < s.T; t0 += B) fn(t0, Math.min(B, s.T - t0));
    });
    return `${(flop / r.median / 1e9).toFixed(1)} GFLOP/s`;
  };
  const rows = (t0: number, n: number) => x.data.subarray(t0 * s.d, (t0 + n) * s.d);
  const parts: string[] = [];
  if (gateInfo().available) {
    // at a 64-byte boundary, as routing places it in kernel memory (a weight vector that straddles two
    // cache lines costs two loads)
    const n = gatePackedFloats(s.E, s.d), buf = new Float32Array(n + 15);
    const at = (16 - Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf))) % 64 / 4) % 16;
    const packed = buf.subarray(at, at + n);
    gatePack(w.data, s.E, s.d, packed);
    parts.push(`gate kernel ${rate((t0, n) => gateLogits(rows(t0, n), n, s.d, packed, s.E, out, s.E))}`);
  }
  if (nativeInfo().available) {
    setNativeThreads(1);
    const wt = new Float32Array(s.d * s.E);
    for (let e = 0; e < s.E; e++) for (let j = 0; j < s.d; j++) wt[j * s.E + e] = w.data[e * s.d + j];
    parts.push(
      `cblas_sgemm ${
        rate((t0, n) => nativeSgemm(false, false, n, s.E, s.d, 1, rows(t0, n), s.d, wt, s.E, 0, out, s.E))
      }`,
    );
  }
  const g = wasmGemm(w), L = g.scratch(B);
  parts.push(`wasm ${rate((t0, n) => g.logits(matrix.rowSlice(x, t0, t0 + n), matrix.rowSlice(L, 0, n)))}`);
  g.release();
  const xAlign = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(x.data))) % 64;
  console.log(`${s.name.padEnd(13)} GEMM, 1 thread (X at ${xAlign} mod 64 bytes): ${parts.join(", ")}`);
}
