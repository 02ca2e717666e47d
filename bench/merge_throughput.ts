/**
 * Checkpoint merge throughput and peak memory for every merge method, beside PyTorch. Generates a base and
 * 3 fine-tuned checkpoints (bf16 and f32 variants) in a temporary folder, measures the raw first read of
 * the inputs (evicted from the page cache with posix_fadvise first) and a warm read, then runs every
 * method in its own process under `/usr/bin/time -v` (peak RSS), inputs warm in the page cache before
 * each run:
 *
 * - moekit 1T: `overlap: false`, everything on one thread, one tensor at a time;
 * - moekit 2T: the default, merges on a Worker and on the main thread, which also reads and writes (two
 *   threads) — when the run's estimated one-thread time reaches `WORKER_MIN_MS` (4 s; `runCostMs` in
 *   lib/merging/merge_run.ts); a smaller run does not repay the Worker's start and runs as 1T does;
 * - torch 1T / 2T: a PyTorch merge with `torch.set_num_threads(t)` and `OPENBLAS_NUM_THREADS` /
 *   `OMP_NUM_THREADS` set before torch loads: `bench/torch_merge_methods.py` (every method, mergekit's
 *   definitions written as a plain torch script), or, for `ties`, `dare_ties` and `linear`, a port of
 *   mergekit's own merge path when `MOEKIT_MERGE_PEER` names one (or the peer kit sits beside this
 *   checkout); `--own-peer` uses the script for every method.
 *
 * Every method merges the base with 3 models (weight 1, density 0.3; Breadcrumbs gamma 0.01, DELLA
 * epsilon 0.1), except `linear` (the 4 checkpoints, no base) and `slerp` (the base and one model, t = 0.5).
 * Prints MB/s of input, peak RSS, moekit ÷ torch at the same thread count and moekit ÷ the raw first
 * read. Same sitting only: the figures are meant as ratios (the machine may be shared).
 *
 * Quick mode (`MOEKIT_BENCH_QUICK=1`, what `deno task bench:ci` runs): tiny sizes, no timing of the peer;
 * instead, when `/usr/bin/python3` (or `PEERS_PYTHON`) has torch, the torch script's outputs are checked
 * against moekit's for every method (exit 1 on a mismatch). Deterministic methods: against moekit with
 * `work_dtype` set to the file dtype (mergekit's rounding), every entry within 2 units in the last place
 * of the output dtype at the entry's magnitude (slerp, which works in float32: 1 bf16 or 64 f32 units);
 * against moekit's default float64 path, at most 1 % of the entries beyond 1 unit. Random methods
 * (different generators): the share of entries changed from the base within 2 points and the mean
 * |output − base| within 5 %.
 *
 * `--workers n` measures instead what the merge Worker buys: for each method, one process merges the files
 * n + 1 times with a Worker (`minWorkerMs: 0`) and n + 1 times without (`minWorkerMs: Infinity`), the two
 * alternating, the first pair discarded (warm-up); it prints the median times and their ratio (the
 * Worker's speedup; below 1: slower with it). No peer runs in this mode.
 *
 *   deno task bench:merge [--layers 8] [--dim 2048] [--dtypes bf16,f32] [--methods ties,linear,…]
 *                         [--threads 1,2] [--repeat 1] [--no-peer] [--own-peer] [--keep] [--workers n]
 *   MOEKIT_BENCH_QUICK=1 deno task bench:merge      (tiny sizes, a few seconds; checks the torch script)
 */

import { parseArgs } from "node:util";
import { Rng } from "../lib/core/random.ts";
import { openCheckpoint, writeCheckpoint } from "../lib/io/mod.ts";
import { parseMergeConfig, planCheckpointMerge, runCheckpointMerge } from "../lib/merging/mod.ts";

const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const METHODS = "linear,task_arithmetic,ties,breadcrumbs,dare_linear,dare_ties,della,slerp";
/** The methods the quick mode checks the torch script on. */
const CHECKED = [...METHODS.split(","), "breadcrumbs_ties", "della_linear"];
/** The methods of a port of mergekit's own merge path (`MOEKIT_MERGE_PEER`). */
const PORT_METHODS = ["ties", "dare_ties", "linear"];
const RANDOM = ["dare_linear", "dare_ties", "della", "della_linear"];
const args = parseArgs({
  args: Deno.args,
  options: {
    layers: { type: "string", default: quick ? "2" : "8" },
    dim: { type: "string", default: quick ? "64" : "2048" },
    dtypes: { type: "string", default: "bf16,f32" },
    methods: { type: "string", default: METHODS },
    threads: { type: "string", default: "1,2" },
    repeat: { type: "string", default: "1" },
    "no-peer": { type: "boolean" },
    "own-peer": { type: "boolean" },
    keep: { type: "boolean" },
    workers: { type: "string" },
    help: { type: "boolean" },
    child: { type: "string" }, // internal: run these methods in this process
    dir: { type: "string" },
    overlap: { type: "string" },
  },
}).values;

if (args.help) {
  console.log(
    "usage: deno task bench:merge [--layers 8] [--dim 2048] [--dtypes bf16,f32] [--methods m1,m2,…]\n" +
      "                             [--threads 1,2] [--repeat 1] [--no-peer] [--own-peer] [--keep]\n" +
      "--repeat n: every timed run n times, interleaved (moekit 1T, 2T, torch 1T, 2T, then again); the median\n" +
      "--workers n: instead, per method in one process, n paired merges with and without the Worker\n" +
      `methods: ${METHODS}, breadcrumbs_ties, della_linear\n` +
      "MOEKIT_BENCH_QUICK=1: tiny sizes; checks the PyTorch script's outputs instead of timing it",
  );
  Deno.exit(0);
}

/**
 * The config of a method over the benchmark's folders (weight 1, density 0.3); `extra`: more global
 * parameters (`work_dtype: bf16`, …).
 */
function config(method: string, extra: string[] = []): string {
  const models = ["a", "b", "c"];
  const globals = extra.length ? `parameters: {${extra.join(", ")}}\n` : "";
  if (method === "linear") {
    // linear has no base: the base is a 4th model, so the input bytes are the same as the others'
    return `merge_method: linear\n${globals}models:\n${
      ["base", ...models].map((m) => `  - {model: ${m}, parameters: {weight: 1.0}}`).join("\n")
    }\n`;
  }
  if (method === "slerp") {
    return `merge_method: slerp\nbase_model: base\nparameters: {${
      ["t: 0.5", ...extra].join(", ")
    }}\nmodels:\n  - {model: a}\n`;
  }
  const p = method === "task_arithmetic"
    ? "{weight: 1.0}"
    : method.startsWith("della")
    ? "{weight: 1.0, density: 0.3, epsilon: 0.1}"
    : "{weight: 1.0, density: 0.3}";
  return `merge_method: ${method}\nbase_model: base\n${globals}models:\n${
    models.map((m) => `  - {model: ${m}, parameters: ${p}}`).join("\n")
  }\n`;
}

/** The peak resident set of this process so far (Linux), in bytes. */
function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** The median of some numbers (the mean of the middle two for an even count). */
function medianOf(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b), h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

/** Prints rows of cells as columns padded to their widest cell (the first row is the header). */
function printTable(rows: readonly (readonly string[])[]): void {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join("  ")).join("\n"));
}

if (args.child !== undefined && args.workers !== undefined) {
  // the Worker study (`--workers n`): paired merges with and without the Worker in this process, the
  // order alternating, after one warm-up pair; one JSON line per method: {method, worker, none, bytes}
  const n = Number(args.workers);
  for (const method of args.child.split(",")) {
    const dir = args.dir!, out = `${dir}/out-workers-${method}-${Deno.pid}`;
    const times: Record<"worker" | "none", number[]> = { worker: [], none: [] };
    let bytes = 0;
    for (let r = 0; r <= n; r++) {
      for (const k of r % 2 ? ["worker", "none"] as const : ["none", "worker"] as const) {
        const plan = await planCheckpointMerge(parseMergeConfig(config(method)), { configDir: dir });
        const t0 = performance.now();
        const res = await runCheckpointMerge(plan, out, {
          shardBytes: 5e9,
          overwrite: true,
          minWorkerMs: k === "worker" ? 0 : Infinity,
        });
        if (r > 0) times[k].push((performance.now() - t0) / 1000);
        bytes = res.bytesRead;
        plan.close();
      }
    }
    await Deno.remove(out, { recursive: true });
    console.log(JSON.stringify({ method, ...times, bytes }));
  }
  Deno.exit(0);
}

if (args.child !== undefined) {
  // runs the given methods in this process; one JSON line each: {method, seconds, bytes, hwm}
  for (const method of args.child ? args.child.split(",") : []) {
    const dir = args.dir!, out = `${dir}/out-${method}-${Deno.pid}`;
    const plan = await planCheckpointMerge(parseMergeConfig(config(method)), { configDir: dir });
    const t0 = performance.now();
    const r = await runCheckpointMerge(plan, out, { shardBytes: 5e9, overlap: args.overlap !== "0" });
    const seconds = (performance.now() - t0) / 1000;
    plan.close();
    await Deno.remove(out, { recursive: true });
    console.log(JSON.stringify({ method, seconds, bytes: r.bytesRead, hwm: peakRss() }));
  }
  Deno.exit(0);
}

const L = Number(args.layers), d = Number(args.dim);
const dtypes = args.dtypes.split(",").map((x) => (x === "f32" ? "F32" : "BF16") as "F32" | "BF16");
const methods = args.methods.split(",");
const threads = args.threads.split(",").map(Number);
const repeat = Number(args.repeat);
if (!(Number.isInteger(repeat) && repeat >= 1)) {
  console.error(`bench:merge: --repeat ${args.repeat}: use a whole number of runs ≥ 1`);
  Deno.exit(2);
}
const workerPairs = args.workers === undefined ? 0 : Number(args.workers);
if (args.workers !== undefined && !(Number.isInteger(workerPairs) && workerPairs >= 1)) {
  console.error(`bench:merge: --workers ${args.workers}: use a whole number of paired runs ≥ 1`);
  Deno.exit(2);
}
const mb = (b: number) => b / 1e6;
const self = new URL(import.meta.url).pathname;
const script = new URL("./torch_merge_methods.py", import.meta.url).pathname;
const port = Deno.env.get("MOEKIT_MERGE_PEER") ??
  new URL("../../shared/bench-peers/merge/mergekit_port.py", import.meta.url).pathname;
const python = Deno.env.get("PEERS_PYTHON") ?? "/usr/bin/python3";
const haveTime = await Deno.stat("/usr/bin/time").then(() => true, () => false);

/** Why torch cannot run (no python, no torch), or "" when it can. */
async function torchMissing(): Promise<string> {
  const r = await new Deno.Command(python, { args: ["-c", "import torch"], stdout: "null", stderr: "piped" })
    .output().catch((e) => e as Error);
  if (r instanceof Error) return `${python} cannot run (${r.message}); set PEERS_PYTHON`;
  return r.success
    ? ""
    : `${python} has no torch (${
      new TextDecoder().decode(r.stderr).trim().split("\n").pop()
    }); set PEERS_PYTHON`;
}
const noTorch = args["no-peer"] ? "--no-peer" : workerPairs ? "--workers" : await torchMissing();
const havePeer = !quick && !noTorch;
const havePort = !args["own-peer"] && (await Deno.stat(port).then(() => true, () => false));
const usesPort = (method: string) => havePort && PORT_METHODS.includes(method);
const root = await Deno.makeTempDir({ prefix: "moekit-merge-bench-" });

/** Runs a command (under `/usr/bin/time -v` when present); the JSON lines it prints and its peak RSS. */
async function timed(cmd: string, cmdArgs: string[], env: Record<string, string> = {}, time = haveTime) {
  const r = await new Deno.Command(time ? "/usr/bin/time" : cmd, {
    args: time ? ["-v", cmd, ...cmdArgs] : cmdArgs,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(`${cmd} ${cmdArgs.join(" ")} failed:\n${err.slice(-2000)}`);
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(err)?.[1] ?? NaN) * 1024;
  const json = out.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  return { json, rss };
}

/** The torch command that merges `list` (one method, or several into `out/<method>`) over `dir`. */
function peerArgs(list: string[], dir: string, out: string, t: number, stable = false): string[] {
  const models = (list.includes("slerp") ? ["a"] : ["a", "b", "c"]).map((m) => `${dir}/${m}`);
  const common = ["--base", `${dir}/base`, "--models", ...models, "--out", out, "--method", list.join(",")];
  if (list.length === 1 && usesPort(list[0])) {
    return [port, ...common, "--density", "0.3", "--threads", String(t)];
  }
  return [
    script,
    ...common,
    ...["--density", "0.3", "--gamma", "0.01", "--epsilon", "0.1", "--t", "0.5", "--threads", String(t)],
    ...(stable ? ["--stable"] : []),
  ];
}

/** |a − b| in units in the last place of the output dtype (bf16 or f32) at the magnitude `scale`. */
function ulps(a: number, b: number, scale: number, bf16: boolean): number {
  if (a === b) return 0;
  if (!Number.isFinite(a - b) || !(scale > 0)) return Infinity;
  return Math.abs(a - b) / 2 ** (Math.max(Math.floor(Math.log2(scale)), -126) - (bf16 ? 7 : 23));
}

/**
 * Checks the torch script against moekit on the folders of `dir` (quick mode): one line per method;
 * false when one is off.
 */
async function checkPeer(dir: string, dtype: "F32" | "BF16"): Promise<boolean> {
  const bf16 = dtype === "BF16", work = bf16 ? "bf16" : "f32";
  const outs = `${dir}/check`;
  const batches = [CHECKED.filter((m) => m !== "slerp"), ["slerp"]];
  for (const b of batches) {
    await timed(
      python,
      peerArgs(b, dir, b.length === 1 ? `${outs}/torch/${b[0]}` : `${outs}/torch`, 1, true),
      {
        OMP_NUM_THREADS: "1",
      },
      false,
    );
  }
  const merged = async (method: string, extra: string[], tag: string) => {
    const out = `${outs}/${tag}-${method}`;
    const plan = await planCheckpointMerge(parseMergeConfig(config(method, extra)), { configDir: dir });
    await runCheckpointMerge(plan, out, { shardBytes: 5e9 });
    plan.close();
    return out;
  };
  const inputs = await Promise.all(["base", "a", "b", "c"].map((m) => openCheckpoint(`${dir}/${m}`)));
  let ok = true;
  for (const method of CHECKED) {
    const random = RANDOM.includes(method);
    const exact = [
      ...(method === "slerp" ? [] : [`work_dtype: ${work}`]),
      ...(method.startsWith("breadcrumbs") ? ["mergekit_compat: true"] : []),
    ];
    const torch = await openCheckpoint(`${outs}/torch/${method}`);
    const fast = await openCheckpoint(
      await merged(method, exact.filter((p) => p.startsWith("merge")), "f64"),
    );
    const ref = random ? fast : await openCheckpoint(await merged(method, exact, "work"));
    let n = 0;
    const worst = [0, 0], beyond = [0, 0]; // vs ref, vs fast: largest distance, entries beyond 1 ulp
    const changed = [0, 0], absDiff = [0, 0]; // torch, moekit
    for (const name of inputs[0].names) {
      const [t, r, f, ...x] = await Promise.all([torch, ref, fast, ...inputs].map((c) => c.read(name)));
      const b = x[0].data;
      for (let i = 0; i < t.data.length; i++, n++) {
        if (random) {
          changed[0] += t.data[i] !== b[i] ? 1 : 0;
          changed[1] += f.data[i] !== b[i] ? 1 : 0;
          absDiff[0] += Math.abs(t.data[i] - b[i]);
          absDiff[1] += Math.abs(f.data[i] - b[i]);
          continue;
        }
        // distances in ulps of the output dtype at the entry's scale: its largest input or output
        let scale = Math.max(Math.abs(t.data[i]), Math.abs(r.data[i]), Math.abs(f.data[i]));
        for (const m of x) scale = Math.max(scale, Math.abs(m.data[i]));
        [r.data[i], f.data[i]].forEach((v, k) => {
          const u = ulps(t.data[i], v, scale, bf16);
          worst[k] = Math.max(worst[k], u);
          beyond[k] += u > 1 ? 1 : 0;
        });
      }
    }
    for (const c of new Set([torch, fast, ref])) c.close();
    let line: string, pass: boolean;
    if (random) {
      const share = changed.map((c) => c / n), mean = absDiff.map((s) => s / n);
      pass = Math.abs(share[0] - share[1]) <= 0.02 && Math.abs(mean[0] / mean[1] - 1) <= 0.05;
      line =
        `changed from base ${(100 * share[0]).toFixed(2)} % (moekit ${(100 * share[1]).toFixed(2)} %), ` +
        `mean |out − base| torch ÷ moekit ${(mean[0] / mean[1]).toFixed(4)}`;
    } else {
      const pct = (k: number) =>
        `${(100 * beyond[k] / n).toFixed(3)} % beyond 1 ulp, at most ${worst[k].toFixed(1)}`;
      // f32: torch sums in float32 (up to 2 ulp from a float64 sum rounded once); slerp takes its angle from
      // float32 norms over the whole tensor (relative error ~1e-6). The float64 path differs where rounding the
      // task vectors moves an entry across a magnitude cut or flips an election: rare.
      const slerp = method === "slerp"; // no work_dtype: its reference is the float64 path
      pass = worst[0] <= (slerp ? (bf16 ? 1 : 64) : 2) && (slerp || beyond[1] <= 0.01 * n);
      line = slerp ? `vs moekit: ${pct(0)} (${n} entries)` : `vs moekit work_dtype ${work}: ${pct(0)}; ` +
        `vs moekit's float64 path: ${pct(1)} (${n} entries)`;
    }
    ok &&= pass;
    console.log(`  ${pass ? "ok  " : "FAIL"} ${method.padEnd(16)} ${line}`);
  }
  inputs.forEach((c) => c.close());
  await Deno.remove(outs, { recursive: true });
  return ok;
}

/** The machine: CPU model, cores, AVX-512 or not, and the load average now (Linux; "" elsewhere). */
function machine(): string {
  try {
    const cpu = Deno.readTextFileSync("/proc/cpuinfo");
    const model = /model name\s*:\s*(.*)/.exec(cpu)?.[1] ?? "?";
    const avx512 = /^flags\s*:.*\bavx512f\b/m.test(cpu) ? "AVX-512" : "no AVX-512";
    const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
    return `${model}, ${navigator.hardwareConcurrency} cores, ${avx512}; load average ${load}`;
  } catch {
    return "";
  }
}

/** Table row labels: what each method merges. */
const label = (m: string) =>
  `${m} (${m === "linear" ? "4 models" : m === "slerp" ? "base + 1" : "base + 3"})`;

let checked = true;
try {
  console.log(
    `merge benchmark: ${L} layers, d = ${d}; methods ${methods.join(", ")}; peer: ${
      havePeer
        ? `torch (${
          havePort ? `mergekit port for ${PORT_METHODS.join(", ")}, ` : ""
        }bench/torch_merge_methods.py)`
        : `none${noTorch ? ` (${noTorch})` : ""}`
    }${quick ? " (quick mode)" : ""}\nmachine: ${machine()}`,
  );
  for (const dtype of dtypes) {
    const dir = `${root}/${dtype}`;
    const specs = [
      { name: "model.embed_tokens.weight", dtype, shape: [8192, d] },
      ...Array.from({ length: L }, (_, l) => [
        { name: `model.layers.${l}.mlp.up_proj.weight`, dtype, shape: [d, d] },
        { name: `model.layers.${l}.self_attn.o_proj.weight`, dtype, shape: [d / 2, d] },
      ]).flat(),
      { name: "model.norm.weight", dtype, shape: [d] },
    ];
    const numel = (s: { shape: number[] }) => s.shape.reduce((a, b) => a * b, 1);
    const largest = Math.max(...specs.map(numel));
    for (const [i, m] of ["base", "a", "b", "c"].entries()) {
      await writeCheckpoint(`${dir}/${m}`, specs, (name) => {
        const s = specs.find((x) => x.name === name)!, out = new Float32Array(numel(s));
        const r = new Rng(i * 7919).derive(name), base = new Rng(0).derive(name);
        for (let j = 0; j < out.length; j++) {
          out[j] = (base.uniform() - 0.5) * 0.1 + (i ? (r.uniform() - 0.5) * 0.01 : 0);
        }
        return out;
      }, { shardBytes: 2e9 });
    }
    const files = ["base", "a", "b", "c"].flatMap((m) =>
      [...Deno.readDirSync(`${dir}/${m}`)].filter((e) => e.name.endsWith(".safetensors")).map((e) =>
        `${dir}/${m}/${e.name}`
      )
    );
    const evict = async () => {
      const py = "import os,sys\nfor f in sys.argv[1:]:\n  fd=os.open(f,os.O_RDONLY); os.fsync(fd); " +
        "os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)";
      const r = await new Deno.Command(python, { args: ["-c", py, ...files], stderr: "null" }).output()
        .catch(() => undefined);
      return r?.success ?? false;
    };
    const readAll = async () => {
      const t0 = performance.now();
      let bytes = 0;
      for (const m of ["base", "a", "b", "c"]) {
        const ck = await openCheckpoint(`${dir}/${m}`);
        for (const n of ck.names) bytes += (await ck.readBytes(n)).length;
        ck.close();
      }
      return { rate: mb(bytes) / ((performance.now() - t0) / 1000), bytes };
    };
    const cold = (await evict()) ? (await readAll()).rate : NaN;
    const { rate: warm, bytes: inputBytes } = await readAll();
    const first = Number.isNaN(cold) ? warm : cold;
    console.log(
      `\n${dtype}: ${mb(inputBytes).toFixed(0)} MB of input; raw read ${
        Number.isNaN(cold) ? "" : `${cold.toFixed(0)} MB/s first (evicted with posix_fadvise), `
      }${warm.toFixed(0)} MB/s warm; largest tensor ${largest} elements (${
        mb(largest * 4).toFixed(0)
      } MB as f32)`,
    );
    if (workerPairs) {
      // the Worker study: per method, its own process (see the `--workers` child above)
      const rows = [["method (inputs)", "no Worker s", "Worker s", "Worker speedup", "runs"]];
      for (const method of methods) {
        await readAll(); // inputs warm in the page cache
        const r = await timed(
          Deno.execPath(),
          [
            "run",
            "-A",
            self,
            "--child",
            method,
            "--dir",
            dir,
            "--workers",
            String(workerPairs),
          ],
          {},
          false,
        );
        const j = r.json[0] as { worker: number[]; none: number[] };
        rows.push([
          label(method),
          medianOf(j.none).toFixed(3),
          medianOf(j.worker).toFixed(3),
          `${(medianOf(j.none) / medianOf(j.worker)).toFixed(2)}×`,
          `${j.none.length} + ${j.worker.length}`,
        ]);
      }
      printTable(rows);
      console.log(
        "Median wall time of a merge in one process, with a Worker (minWorkerMs: 0) and without " +
          "(Infinity), paired and alternating after a warm-up pair. Speedup below 1: slower with the Worker.",
      );
      if (!args.keep) await Deno.remove(dir, { recursive: true });
      continue;
    }
    const baseline = (await timed(Deno.execPath(), ["run", "-A", self, "--child", ""])).rss;
    const moekit = async (overlap: boolean, list: string[]) => {
      const res = new Map<string, { rate: number; rss: number }>();
      const batches = quick ? [list] : list.map((m) => [m]); // own process per method: its own peak RSS
      for (const batch of batches) {
        await readAll(); // inputs warm in the page cache before each run, as for the peer
        const r = await timed(Deno.execPath(), [
          "run",
          "-A",
          self,
          "--child",
          batch.join(","),
          "--dir",
          dir,
          "--overlap",
          overlap ? "1" : "0",
        ]);
        for (const j of r.json) res.set(j.method, { rate: mb(j.bytes) / j.seconds, rss: r.rss || j.hwm });
      }
      return res;
    };
    // every timed run `repeat` times, rounds interleaved (the machine's drift spreads over every column);
    // the median rate of each, the largest peak RSS
    type Run = { rate: number; rss: number };
    const median = (runs: Run[]): Run => ({
      rate: medianOf(runs.map((x) => x.rate)),
      rss: Math.max(...runs.map((x) => x.rss)),
    });
    const rounds: { m1: Map<string, Run>; m2: Map<string, Run>; torch: Map<string, Map<number, Run>> }[] = [];
    for (let round = 0; round < repeat; round++) {
      const m1 = await moekit(false, methods), m2 = await moekit(true, methods);
      const torch = new Map<string, Map<number, Run>>();
      if (havePeer) {
        for (const method of methods) {
          const byT = new Map<number, Run>();
          for (const t of threads) {
            const out = `${dir}/peer-out`;
            await readAll(); // inputs warm in the page cache before each run
            const env = {
              OPENBLAS_NUM_THREADS: String(t),
              OMP_NUM_THREADS: String(t),
              MKL_NUM_THREADS: String(t),
            };
            const p = await timed(python, peerArgs([method], dir, out, t), env);
            await Deno.remove(out, { recursive: true }).catch(() => {});
            byT.set(t, { rate: p.json[0].MBps, rss: p.rss });
          }
          torch.set(method, byT);
        }
      }
      rounds.push({ m1, m2, torch });
    }
    const pick = (get: (r: (typeof rounds)[number]) => Run | undefined) => {
      const runs = rounds.map(get).filter((x): x is Run => x !== undefined);
      return runs.length ? median(runs) : undefined;
    };
    const m1 = new Map<string, Run>(), m2 = new Map<string, Run>();
    const torch = new Map<string, Map<number, Run>>();
    for (const m of methods) {
      const a = pick((r) => r.m1.get(m)), b = pick((r) => r.m2.get(m));
      if (a) m1.set(m, a);
      if (b) m2.set(m, b);
      if (havePeer) {
        torch.set(m, new Map(threads.map((t) => [t, pick((r) => r.torch.get(m)?.get(t))!] as const)));
      }
    }
    if (quick) {
      if (noTorch) console.log(`torch check skipped: ${noTorch}`);
      else {
        console.log(`torch check (bench/torch_merge_methods.py --stable vs moekit, ${dtype}):`);
        checked = (await checkPeer(dir, dtype)) && checked;
      }
    }
    const f1 = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "–" : x.toFixed(1));
    const ratio = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined || !(b > 0) ? "–" : `${(a / b).toFixed(2)}×`;
    const rssOf = (x: { rss: number } | undefined) =>
      x === undefined || Number.isNaN(x.rss) ? "–" : `${mb(x.rss).toFixed(0)}`;
    const moekitAt = (t: number, m: string) => (t === 1 ? m1 : t === 2 ? m2 : undefined)?.get(m);
    const head = [
      "method (inputs)",
      "moekit 1T",
      "moekit 2T",
      ...threads.map((t) => `torch ${t}T`),
      ...threads.map((t) => `÷torch ${t}T`),
      "1T÷raw",
      "2T÷raw",
      `peak RSS MB: moekit 1T/2T, torch ${threads.join("T/")}T`,
      "2T peak÷largest",
      "torch peer",
    ];
    const rows = methods.map((m) => {
      const a = m1.get(m), b = m2.get(m), tp = torch.get(m);
      return [
        label(m),
        f1(a?.rate),
        f1(b?.rate),
        ...threads.map((t) => f1(tp?.get(t)?.rate)),
        ...threads.map((t) => ratio(moekitAt(t, m)?.rate, tp?.get(t)?.rate)),
        ratio(a?.rate, first),
        ratio(b?.rate, first),
        [rssOf(a), rssOf(b), ...threads.map((t) => rssOf(tp?.get(t)))].join(" / "),
        b && !Number.isNaN(b.rss) ? `${((b.rss - baseline) / (largest * 4)).toFixed(1)}` : "–",
        havePeer ? (usesPort(m) ? "mergekit port" : "torch script") : "–",
      ];
    });
    printTable([head, ...rows]);
    console.log(
      `MB/s of input. ÷torch: moekit ÷ torch at the same thread count. ÷raw: moekit ÷ the ${
        Number.isNaN(cold) ? "warm" : "first (uncached)"
      } read of the same files in this sitting. peak÷largest: moekit's peak RSS above the ${
        mb(baseline).toFixed(0)
      } MB of a process that only loads the modules, in float32 copies of the largest tensor.`,
    );
    if (!args.keep) await Deno.remove(dir, { recursive: true });
  }
  console.log(`\nmachine at the end: ${machine()}`);
  if (!workerPairs) {
    console.log(
      `Same sitting, ${
        repeat > 1 ? `the median of ${repeat} interleaved runs` : "one run"
      } each, inputs warm in the page cache before every run. The machine may be shared ` +
        "with other work: read the ratios, not the absolute figures.",
    );
  }
} finally {
  if (!args.keep) await Deno.remove(root, { recursive: true }).catch(() => {});
}
if (!checked) {
  console.error("bench:merge: the torch script's outputs differ from moekit's (FAIL lines above)");
  Deno.exit(1);
}
