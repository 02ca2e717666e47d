/**
 * Expert compression at real model sizes, moekit next to numpy/SciPy on the same matrices, one sitting:
 *
 * - whitened SVD (SVD-LLM) of a 14336×4096 expert matrix with 4096 calibration tokens at rank 512
 *   (numpy: `X.T@X`, `cholesky`, `W@S`, `svd`, `solve_triangular`);
 * - `deltaCompress` of an OLMoE-size layer (64 experts, d 2048, f 1024, ρ = 0.25; numpy: mean base + one
 *   `svd` per expert delta and matrix);
 * - neuron alignment at f = 14336, d = 4096 (Mixtral): the weight-matching cost `C` (three GEMMs) and the
 *   assignment (moekit `linearAssignment` vs SciPy `linear_sum_assignment`), on a target that is a
 *   permuted, noisy copy of the reference.
 *
 *   deno task bench:compress                         # full sizes, 1 thread (takes several minutes)
 *   deno task bench:compress --threads 2 --only whitened,delta
 *   MOEKIT_BENCH_QUICK=1 deno task bench:compress    # tiny sizes, a few seconds (CI)
 *
 * Options: `--threads N` (OpenBLAS threads for moekit's native backend and numpy), `--only a,b`
 * (`whitened`, `delta`, `align`), `--variants a,b` (the whitened SVD's moekit runs: `native`,
 * `native-randomized`, `wasm`, `wasm-randomized`; default all), `--python PATH` (default
 * `$MOEKIT_PYTHON` or `python3`; the peer is skipped, with the reason, when numpy cannot be run).
 * Timings are single runs: the machine is shared, so compare the ratios of one run, not absolute seconds.
 */

import { runPythonPeer } from "./_python_peer.ts";
import { parseArgs } from "node:util";
import {
  deltaCompress,
  type Mat,
  matrix,
  moeLayer,
  randomExperts,
  type SwiGLUExpert,
  topKRouter,
  whitenedSvdCompress,
} from "../mod.ts";
import { linearAssignment, matmul, nativeInfo, setNativeThreads } from "../lib/linalg/mod.ts";
import { matmulAdd } from "../lib/linalg/factor.ts";

const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const args = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string", default: "1" },
    only: { type: "string", default: "whitened,delta,align" },
    python: { type: "string", default: Deno.env.get("MOEKIT_PYTHON") ?? "python3" },
    variants: { type: "string", default: "native,native-randomized,wasm,wasm-randomized" },
  },
}).values;
const variantsWanted = new Set(args.variants!.split(","));
const threads = Number(args.threads), only = new Set(args.only!.split(","));
const native = nativeInfo();
if (native.available) setNativeThreads(threads);
const dir = await Deno.makeTempDir({ prefix: "moekit-bench-compress-" });

const PEER = `
import json, sys, time, numpy as np
task, d = sys.argv[1], sys.argv[2]
shape = json.load(open(d + "/shape.json"))
load = lambda name, *s: np.fromfile(d + "/" + name, dtype=np.float32).reshape(*s)
out = {"numpy": np.__version__}
if task == "whitened":
    m, n, T, r = shape["m"], shape["n"], shape["T"], shape["r"]
    w, x = load("w.f32", m, n), load("x.f32", T, n)
    try:
        from scipy.linalg import solve_triangular
    except ImportError:
        solve_triangular = None
    t = time.perf_counter()
    g = x.T @ x
    eps, mean_diag = 0.0, float(np.trace(g)) / n
    for _ in range(60):  # moekit's jitter rule: 0, then 1e-6·mean(diag G), doubling
        try:
            s_ = np.linalg.cholesky(g + np.float32(eps) * np.eye(n, dtype=np.float32))
            break
        except np.linalg.LinAlgError:
            eps = 1e-6 * max(mean_diag, 1e-12) if eps == 0 else eps * 2
    out["epsilon"] = eps
    u, s, vt = np.linalg.svd(w @ s_, full_matrices=False)
    a = u[:, :r] * s[:r]
    b = (solve_triangular(s_.T, vt[:r].T, lower=False) if solve_triangular else np.linalg.solve(s_.T, vt[:r].T)).T
    out["seconds"] = time.perf_counter() - t
    out["relErr"] = float(np.sqrt((s[r:].astype(np.float64) ** 2).sum() / (s.astype(np.float64) ** 2).sum()))
elif task == "delta":
    E, f, dm, r = shape["E"], shape["f"], shape["d"], shape["r"]
    ws = {k: load(k + ".f32", E, *((f, dm) if k != "w2" else (dm, f))) for k in ("w1", "w2", "w3")}
    t = time.perf_counter()
    err = 0.0
    for k, W in ws.items():
        base = W.mean(axis=0)
        rk = r[k]
        for e in range(E):
            u, s, vt = np.linalg.svd(W[e] - base, full_matrices=False)
            rec = base + (u[:, :rk] * s[:rk]) @ vt[:rk]
            err = max(err, float(np.abs(rec - W[e]).max()))
    out["seconds"] = time.perf_counter() - t
    out["maxWeightError"] = err
elif task == "align":
    f, dm = shape["f"], shape["d"]
    ref = {k: load("ref_" + k + ".f32", *((f, dm) if k != "w2" else (dm, f))) for k in ("w1", "w2", "w3")}
    tgt = {k: load("tgt_" + k + ".f32", *((f, dm) if k != "w2" else (dm, f))) for k in ("w1", "w2", "w3")}
    t = time.perf_counter()
    c = ref["w1"] @ tgt["w1"].T + ref["w3"] @ tgt["w3"].T + ref["w2"].T @ tgt["w2"]
    out["costSeconds"] = time.perf_counter() - t
    try:
        from scipy.optimize import linear_sum_assignment
        import scipy
        t = time.perf_counter()
        rows, cols = linear_sum_assignment(c, maximize=True)
        out["assignSeconds"] = time.perf_counter() - t
        out["scipy"] = scipy.__version__
        out["perm"] = cols.tolist()
    except ImportError:
        pass
print(json.dumps(out))
`;
await Deno.writeTextFile(`${dir}/peer.py`, PEER);

/** Whether the peer can run at all (python with numpy); checked once, so no data is written for nothing. */
let peerProblem: string | undefined = await (async () => {
  try {
    const o = await new Deno.Command(args.python!, {
      args: ["-c", "import numpy"],
      stdout: "null",
      stderr: "piped",
    })
      .output();
    return o.success ? undefined : new TextDecoder().decode(o.stderr).trim().split("\n").pop();
  } catch (e) {
    return `${args.python}: ${(e as Error).message}`;
  }
})();
if (peerProblem) console.log(`numpy peer skipped: ${peerProblem}`);

async function peer(
  task: string,
  shape: unknown,
  files: Record<string, Mat>,
): Promise<Record<string, unknown> | undefined> {
  if (peerProblem) return undefined;
  await Deno.writeTextFile(`${dir}/shape.json`, JSON.stringify(shape));
  for (const [name, m] of Object.entries(files)) {
    await Deno.writeFile(
      `${dir}/${name}`,
      new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength),
    );
  }
  try {
    return await runPythonPeer(args.python!, [`${dir}/peer.py`, task, dir], threads) as Record<
      string,
      unknown
    >;
  } catch (e) {
    const why = (e as Error).message;
    console.log(`numpy peer skipped for ${task}: ${why}`);
    // a missing python or numpy stops the peer for every task; a failure of one task does not
    if (/ModuleNotFoundError|No such file|not found/i.test(why)) peerProblem = why;
    return undefined;
  } finally {
    for (const name of Object.keys(files)) await Deno.remove(`${dir}/${name}`).catch(() => {});
  }
}

function time<T>(f: () => T): { value: T; seconds: number } {
  const t = performance.now(), value = f();
  return { value, seconds: (performance.now() - t) / 1000 };
}

const fmt = (s: number) => (s < 10 ? s.toFixed(2) : s.toFixed(1));
const ratio = (s: number, p?: unknown) => (typeof p === "number" ? `${(s / p).toFixed(2)}×` : "-");
console.log(
  `moekit compression vs numpy, ${threads} thread(s); native: ${
    native.available
      ? `${native.library} (${native.config ?? native.vendor})`
      : `not in use (${native.reason})`
  }; single runs on a shared machine: compare ratios of one run, not absolute seconds`,
);
const rows: string[][] = [];
const push = (r: string[]) => {
  rows.push(r);
  console.log(r.filter((v) => v !== "").join(" | "));
};
push(["task", "numpy s", "moekit", "s", "ratio to numpy", "target", "check"]);

try {
  if (only.has("whitened")) {
    const [m, n, T, r] = quick ? [512, 128, 256, 16] : [14336, 4096, 4096, 512];
    const w = matrix.randn(m, n, { seed: 1, std: 0.02 });
    // correlated activations: a 256-dim signal mixed into n features, plus isotropic noise
    const z = matrix.randn(T, Math.min(256, n), { seed: 2 }),
      mix = matrix.randn(Math.min(256, n), n, { seed: 3 });
    const x = matmul(z, mix), noise = matrix.randn(T, n, { seed: 4, std: 0.3 });
    for (let i = 0; i < x.data.length; i++) x.data[i] += noise.data[i];
    const p = await peer("whitened", { m, n, T, r }, { "w.f32": w, "x.f32": x });
    const task = `whitened SVD ${m}×${n}, ${T} tokens, rank ${r}`;
    if (p) {
      push([
        task,
        fmt(p.seconds as number),
        "",
        "",
        "",
        "",
        `relErr ${(p.relErr as number).toExponential(3)}, ε ${(p.epsilon as number).toExponential(2)}`,
      ]);
    }
    const variants: [string, Parameters<typeof whitenedSvdCompress>[2], string][] = [
      ["native", { rank: r, backend: "native" }, "≤ 30 s"],
      ["native-randomized", { rank: r, backend: "native", randomized: true }, ""],
      ["wasm", { rank: r, backend: "wasm" }, "≤ 5 min"],
      ["wasm-randomized", { rank: r, backend: "wasm", randomized: true }, "≤ 5 min"],
    ];
    for (const [name, o, target] of variants) {
      if (o.backend === "native" && !native.available || !variantsWanted.has(name)) continue;
      const t = time(() => whitenedSvdCompress(w, x, o));
      push([
        "",
        "",
        name,
        fmt(t.seconds),
        ratio(t.seconds, p?.seconds),
        target,
        `relErr ${t.value.relativeError.toExponential(3)}, ε ${(t.value.epsilon ?? 0).toExponential(2)}`,
      ]);
    }
  }

  if (only.has("delta")) {
    const [E, d, f] = quick ? [4, 64, 32] : [64, 2048, 1024];
    const experts = randomExperts({ experts: E, dim: d, hidden: f, seed: 5 });
    const layer = moeLayer({
      router: topKRouter({ weight: matrix.randn(E, d, { seed: 6 }), k: Math.min(8, E) }),
      experts,
    });
    const stack = (k: keyof SwiGLUExpert) => matrix.vstack(experts.map((e) => e[k] as Mat));
    const rank = (m: number, n: number) => Math.floor((0.25 * m * n) / (m + n));
    const p = await peer(
      "delta",
      { E, d, f, r: { w1: rank(f, d), w2: rank(d, f), w3: rank(f, d) } },
      { "w1.f32": stack("w1"), "w2.f32": stack("w2"), "w3.f32": stack("w3") },
    );
    const t = time(() => deltaCompress(layer, undefined, { ratio: 0.25 }));
    push([
      `deltaCompress ${E} experts, d ${d}, f ${f}, ρ 0.25`,
      p ? fmt(p.seconds as number) : "-",
      native.available ? "auto (native)" : "auto",
      fmt(t.seconds),
      ratio(t.seconds, p?.seconds),
      "≤ 2 min native",
      `max |ΔW| ${t.value.maxWeightError.toExponential(2)}${
        p ? ` (numpy ${(p.maxWeightError as number).toExponential(2)})` : ""
      }`,
    ]);
  }

  if (only.has("align")) {
    const [f, d] = quick ? [64, 32] : [14336, 4096];
    const [ref] = randomExperts({ experts: 1, dim: d, hidden: f, seed: 7 });
    // the target: ref with its neurons permuted, plus noise of the weights' own scale
    const perm = Array.from({ length: f }, (_, i) => i);
    for (let i = f - 1; i > 0; i--) {
      const j = (i * 7919 + 13) % (i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const noisy = (m: Mat, seed: number) => {
      const n = matrix.randn(m.rows, m.cols, { seed, std: 0.5 * Math.sqrt(1 / (3 * d)) });
      for (let i = 0; i < n.data.length; i++) n.data[i] += m.data[i];
      return n;
    };
    const rowsOf = (m: Mat) => {
      const o = matrix.zeros(m.rows, m.cols);
      perm.forEach((p, a) => o.data.set(matrix.row(m, p), a * m.cols));
      return o;
    };
    const w2p = matrix.zeros(d, f);
    for (let i = 0; i < d; i++) perm.forEach((p, a) => (w2p.data[i * f + a] = ref.w2.data[i * f + p]));
    const tgt = { w1: noisy(rowsOf(ref.w1), 8), w3: noisy(rowsOf(ref.w3), 9), w2: noisy(w2p, 10) };
    const p = await peer("align", { f, d }, {
      "ref_w1.f32": ref.w1,
      "ref_w2.f32": ref.w2,
      "ref_w3.f32": ref.w3,
      "tgt_w1.f32": tgt.w1,
      "tgt_w2.f32": tgt.w2,
      "tgt_w3.f32": tgt.w3,
    });
    // the cost exactly as alignPermutation builds it (three products accumulated in one buffer)
    const cost = time(() => {
      const c = matmul(ref.w1, tgt.w1, { transB: true });
      matmulAdd(c, ref.w3, tgt.w3, { transB: true });
      matmulAdd(c, ref.w2, tgt.w2, { transA: true });
      return c;
    });
    const assign = time(() => linearAssignment(cost.value, { maximize: true }));
    // perm[a] = p means target row a is ref row p: the alignment maps ref neuron p to target a
    let recovered = 0;
    perm.forEach((pr, a) => (recovered += assign.value[pr] === a ? 1 : 0));
    const same = p?.perm ? (p.perm as number[]).every((v, i) => v === assign.value[i]) : undefined;
    push([
      `align f ${f}, d ${d}: cost (3 GEMMs)`,
      p ? fmt(p.costSeconds as number) : "-",
      "matmul",
      fmt(cost.seconds),
      ratio(cost.seconds, p?.costSeconds),
      "",
      "",
    ]);
    push([
      `align f ${f}: assignment`,
      p?.assignSeconds !== undefined ? `${fmt(p.assignSeconds as number)} (SciPy ${p.scipy})` : "-",
      "linearAssignment",
      fmt(assign.seconds),
      ratio(assign.seconds, p?.assignSeconds),
      "",
      `${recovered}/${f} neurons recovered${
        same === undefined ? "" : same ? ", = SciPy" : ", differs from SciPy"
      }`,
    ]);
    push([
      `align f ${f}: total`,
      p?.assignSeconds !== undefined ? fmt((p.costSeconds as number) + (p.assignSeconds as number)) : "-",
      "",
      fmt(cost.seconds + assign.seconds),
      ratio(
        cost.seconds + assign.seconds,
        p?.assignSeconds !== undefined ? (p.costSeconds as number) + (p.assignSeconds as number) : undefined,
      ),
      "≤ 60 s",
      "",
    ]);
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((v, c) => v.padEnd(widths[c])).join("  "));
