/**
 * moekit against the peer kit (../shared/bench-peers): loads the kit's inputs, routes them with moekit
 * (softmax top-k, renormalised — the peers' route), checks agreement with the kit's float64 reference,
 * and prints tokens/s next to the newest peer results as ratios to PyTorch at 1 thread.
 *
 *   deno task bench:peers                          # moekit now, peers from the newest run.sh results
 *   deno task bench:peers --run-peers              # run the peers first, in the same sitting
 *   deno task bench:peers --threads 1,2 mixtral olmoe
 *
 * Timing rule (the kit's): inputs in memory, router built once, 2 warm-up calls and ≥ 0.3 s of warm-up,
 * then 5–25 timed calls (~2 s), median. X lives in a kernel token buffer (`allocTokens`), as a serving
 * loop would keep it. `foreign` = CPU other processes used meanwhile (re-run when it is high).
 */

import { parseArgs } from "node:util";
import { allocTokens, freeTokens, kernelInfo, matrix, topKRouter, useThreads } from "../mod.ts";

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
    "run-peers": { type: "boolean" },
    json: { type: "boolean" },
  },
});
const kit = new URL("../../shared/bench-peers/", import.meta.url).pathname;
const work = Deno.env.get("PEERS_WORK") ?? `${Deno.env.get("HOME")}/.cache/moekit-peers`;
const dataDir = Deno.env.get("PEERS_DATA") ?? `${work}/data`;
const wanted = args.positionals.length
  ? args.positionals
  : ["mixtral", "olmoe", "deepseek-v3", "switch-base"];
const threads = args.values.threads!.split(",").map(Number);

if (args.values["run-peers"]) {
  const p = await new Deno.Command("sh", {
    args: [`${kit}run.sh`, ...wanted],
    stdout: "inherit",
    stderr: "inherit",
  })
    .output();
  if (!p.success) Deno.exit(p.code);
}

let shapes: Shape[];
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
  for (let i = 0; i < 1 || (performance.now() - t0 < 300 && i < 50); i++) fn();
  t0 = performance.now();
  fn();
  const one = (performance.now() - t0) / 1e3,
    reps = Math.max(5, Math.min(25, Math.floor(2 / Math.max(one, 1e-9))));
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

// newest peer results
const peers = new Map<string, number>();
let peerFile = "";
try {
  const files = [...Deno.readDirSync(`${work}/results`)].filter((f) => f.name.endsWith(".jsonl")).map((f) =>
    f.name
  ).sort();
  peerFile = files.length ? `${work}/results/${files[files.length - 1]}` : "";
  if (peerFile) {
    for (const line of Deno.readTextFileSync(peerFile).split("\n").filter(Boolean)) {
      const r = JSON.parse(line);
      peers.set(`${r.shape}|${r.label}|${r.threads}`, r.tok_s);
    }
  }
} catch { /* no peer results yet */ }

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
console.log(`moekit ${info.wasm ? `wasm-${info.simd}` : "js"}; peers: ${peerFile || "none found"}`);
console.log("shape         who                        1T                     2T        agree  foreign");
for (const s of shapes) {
  const x = allocTokens(s.T, s.d);
  x.data.set(read(`${s.name}.x.f32`, s.T * s.d, Float32Array));
  const w = matrix.from(read(`${s.name}.w.f32`, s.E * s.d, Float32Array).slice(), s.E, s.d);
  const ref = read(`${s.name}.ref.i32`, s.T * s.k, Int32Array);
  const router = topKRouter({ weight: w, k: s.k });
  const ours: Record<number, number> = {};
  let agree = 1, foreign = 0;
  for (const n of threads) {
    await useThreads(n);
    const r = timeIt(() => void router.route(x));
    ours[n] = s.T / r.median;
    foreign = Math.max(foreign, r.foreign);
    agree = Math.min(agree, agreement(router.route(x).indices, ref, s.T, s.k));
  }
  await useThreads(1);
  freeTokens(x);
  const torch1 = peers.get(`${s.name}|torch|1`);
  const cell = (v: number | undefined) =>
    `${fmt(v).padStart(7)}${v !== undefined && torch1 ? ` (${(v / torch1).toFixed(2)}x)` : "        "}`;
  const line = (who: string, a: number | undefined, b: number | undefined, extra = "") =>
    console.log(
      `${s.name.padEnd(13)} ${who.padEnd(14)} ${cell(a).padStart(20)} ${cell(b).padStart(22)}${extra}`,
    );
  line("moekit", ours[1], ours[2], `   ${(100 * agree).toFixed(2)}%   ${foreign.toFixed(2)}`);
  for (const p of ["torch", "torch-passive", "ort", "numpy", "tfjs-wasm-wT"]) {
    const a = peers.get(`${s.name}|${p}|1`), b = peers.get(`${s.name}|${p}|2`);
    if (a !== undefined || b !== undefined) line(p, a, b);
  }
  rows.push({ shape: s.name, moekit: ours, agreement: agree, foreign, torch1 });
}
if (args.values.json) console.log(JSON.stringify(rows));
