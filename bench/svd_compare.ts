/**
 * Dense and randomized SVD: moekit's backends next to numpy (`np.linalg.svd`, LAPACK `sgesdd` on the same
 * float32 matrices), one sitting, at a pinned thread count. Matrices: a realistic expert slice with a
 * decaying spectrum (a product of Gaussians with power-law column scaling, plus noise).
 *
 *   deno task bench:svd                                    # 4096×1024 and 14336×4096, 1 thread
 *   deno task bench:svd --threads 2 --sizes 4096x1024
 *   MOEKIT_BENCH_QUICK=1 deno task bench:svd               # tiny sizes, a few seconds (CI)
 *
 * Options: `--threads N` (OpenBLAS threads for both moekit's native backend and numpy), `--sizes MxN,…`,
 * `--backends native,wasm` (wasm dense SVD runs only where n ≤ 4096 unless `--all`), `--python PATH`
 * (default `$MOEKIT_PYTHON` or `python3`; numpy is skipped, with the reason, when it cannot be run).
 * Needs --allow-ffi for the native backend and --allow-run/--allow-write for the numpy peer.
 */

import { runPythonPeer } from "./_python_peer.ts";
import { parseArgs } from "node:util";
import { type Mat, matmul, matrix, nativeInfo, rsvd, setNativeThreads, svd } from "../lib/linalg/mod.ts";

const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const args = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string", default: "1" },
    sizes: { type: "string", default: quick ? "256x64,512x128" : "4096x1024,14336x4096" },
    backends: { type: "string", default: "native,wasm" },
    python: { type: "string", default: Deno.env.get("MOEKIT_PYTHON") ?? "python3" },
    all: { type: "boolean", default: false },
  },
}).values;
const threads = Number(args.threads);
const sizes = args.sizes!.split(",").map((s) => s.split("x").map(Number) as [number, number]);
const native = nativeInfo();
const backends = args.backends!.split(",").filter((b) => b !== "native" || native.available);
if (native.available) setNativeThreads(threads);

/** W = L·R + noise, L [m,256] with power-law column scaling, R [256,n]. */
function testMatrix(m: number, n: number): Mat {
  const inner = Math.min(256, n), left = matrix.randn(m, inner, { seed: 1 });
  for (let j = 0; j < inner; j++) for (let i = 0; i < m; i++) left.data[i * inner + j] *= 1 / (1 + j) ** 1.2;
  const w = matmul(left, matrix.randn(inner, n, { seed: 2 }));
  const noise = matrix.randn(m, n, { seed: 3, std: 1e-3 });
  for (let i = 0; i < w.data.length; i++) w.data[i] += noise.data[i];
  return w;
}

const PEER = `
import json, sys, time, numpy as np
path, m, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
a = np.fromfile(path, dtype=np.float32).reshape(m, n)
np.linalg.svd(a[:64, :32], full_matrices=False)  # load LAPACK, start threads
ts = []
for _ in range(reps):
    t = time.perf_counter(); u, s, vt = np.linalg.svd(a, full_matrices=False); ts.append(time.perf_counter() - t)
print(json.dumps({"seconds": sorted(ts)[len(ts) // 2], "s": [float(v) for v in s[:8]], "numpy": np.__version__}))
`;

/** Runs the numpy peer on W; undefined (with the reason printed once) when numpy cannot be run. */
let peerProblem: string | undefined;
async function numpySvd(
  w: Mat,
  reps: number,
): Promise<{ seconds: number; s: number[]; numpy: string } | undefined> {
  if (peerProblem) return undefined;
  const dir = await Deno.makeTempDir({ prefix: "moekit-bench-svd-" });
  try {
    await Deno.writeFile(`${dir}/w.f32`, new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength));
    await Deno.writeTextFile(`${dir}/peer.py`, PEER);
    const peerArgs = [`${dir}/peer.py`, `${dir}/w.f32`, String(w.rows), String(w.cols), String(reps)];
    return await runPythonPeer(args.python!, peerArgs, threads) as {
      seconds: number;
      s: number[];
      numpy: string;
    };
  } catch (e) {
    peerProblem = (e as Error).message;
    console.log(`numpy peer skipped: ${peerProblem}`);
    return undefined;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function time<T>(f: () => T): { value: T; seconds: number } {
  const t = performance.now(), value = f();
  return { value, seconds: (performance.now() - t) / 1000 };
}

const fmt = (s: number) => (s < 10 ? s.toFixed(2) : s.toFixed(1));
console.log(
  `moekit SVD vs numpy, ${threads} thread(s); native: ${
    native.available
      ? `${native.library} (${native.config ?? native.vendor})`
      : `not in use (${native.reason})`
  }; the machine is shared, so compare the ratios of one run, not absolute seconds`,
);
const rows: string[][] = [];
const push = (r: string[]) => {
  rows.push(r);
  console.log(r.filter((v) => v !== "").join(" | "));
};
push(["shape", "what", "seconds", "ratio to numpy", "σ₁ agreement"]);
for (const [m, n] of sizes) {
  const w = testMatrix(m, n), reps = m * n <= 1 << 22 ? 3 : 1;
  const peer = await numpySvd(w, reps);
  const shape = `${m}×${n}`;
  if (peer) push([shape, `numpy ${peer.numpy} svd (sgesdd)`, fmt(peer.seconds), "1.00×", "-"]);
  for (const backend of backends) {
    if (backend === "wasm" && Math.min(m, n) > 4096 && !args.all) {
      push([shape, "moekit svd wasm", "skipped", "(n > 4096: minutes on WebAssembly; --all runs it)", ""]);
      continue;
    }
    svd(matrix.randn(64, 32, { seed: 9 }), { backend: backend as "native" | "wasm" }); // warm-up
    let best = Infinity, s0 = 0;
    for (let r = 0; r < reps; r++) {
      const t = time(() => svd(w, { backend: backend as "native" | "wasm" }));
      best = Math.min(best, t.seconds);
      s0 = t.value.s[0];
    }
    push([
      shape,
      `moekit svd ${backend}`,
      fmt(best),
      peer ? `${(best / peer.seconds).toFixed(2)}×` : "-",
      peer ? Math.abs(s0 - peer.s[0]) / peer.s[0] < 1e-4 ? "ok" : `differs (${s0} vs ${peer.s[0]})` : "-",
    ]);
  }
  // randomized SVD at rank 128 (or n/8 on small sizes) against the dense optimum
  const rank = Math.min(128, Math.max(1, Math.floor(n / 8)));
  const dense = svd(w);
  for (const backend of backends) {
    const t = time(() => rsvd(w, rank, { seed: 4, backend: backend as "native" | "wasm" }));
    let head = 0, total = 0;
    for (let j = 0; j < rank; j++) head += t.value.s[j] ** 2;
    for (const v of dense.s) total += v * v;
    let optTail = 0;
    for (let j = rank; j < dense.s.length; j++) optTail += dense.s[j] ** 2;
    push([
      shape,
      `moekit rsvd ${backend} rank ${rank}`,
      fmt(t.seconds),
      peer ? `${(t.seconds / peer.seconds).toFixed(2)}×` : "-",
      `error ${Math.sqrt(Math.max(0, total - head) / total).toExponential(2)} (optimal ${
        Math.sqrt(optTail / total).toExponential(2)
      })`,
    ]);
  }
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((v, c) => v.padEnd(widths[c])).join("  "));
