/**
 * Checkpoint merge throughput and peak memory, beside the PyTorch port of mergekit's per-tensor merge
 * path (the peer kit's `merge/mergekit_port.py`; set `MOEKIT_MERGE_PEER` to its path, default: the kit
 * beside this checkout). Generates a base and 3 fine-tuned checkpoints (bf16 and f32 variants) in a
 * temporary folder, measures the raw first read of the inputs (evicted from the page cache with
 * posix_fadvise first) and a warm read, then runs every method in its own process under
 * `/usr/bin/time -v` (peak RSS), inputs warm in the page cache before each run as the peer's timing rule
 * asks:
 *
 * - moekit 1T: `overlap: false`, everything on one thread, one tensor at a time;
 * - moekit 2T: the default, merges on a Worker while the main thread reads and writes (two threads);
 * - torch 1T / 2T: the port with `torch.set_num_threads(t)`, `OPENBLAS_NUM_THREADS`/`OMP_NUM_THREADS` set
 *   in its environment before torch loads. The port has `ties`, `dare_ties` and `linear`; other methods
 *   show "–" in its columns.
 *
 * Prints MB/s of input, peak RSS, moekit ÷ torch at the same thread count and moekit ÷ the raw first
 * read. Same sitting only: the figures are meant as ratios (the machine may be shared).
 *
 *   deno task bench:merge [--layers 8] [--dim 2048] [--dtypes bf16,f32] [--methods ties,linear,…]
 *                         [--threads 1,2] [--no-peer] [--keep]
 *   MOEKIT_BENCH_QUICK=1 deno task bench:merge      (tiny sizes, a few seconds; no peer)
 */

import { parseArgs } from "node:util";
import { Rng } from "../lib/core/random.ts";
import { openCheckpoint, writeCheckpoint } from "../lib/io/mod.ts";
import { parseMergeConfig, planCheckpointMerge, runCheckpointMerge } from "../lib/merging/mod.ts";

const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const METHODS = "linear,task_arithmetic,ties,breadcrumbs,dare_linear,dare_ties,della,slerp";
const PEER_METHODS = ["ties", "dare_ties", "linear"];
const args = parseArgs({
  args: Deno.args,
  options: {
    layers: { type: "string", default: quick ? "2" : "8" },
    dim: { type: "string", default: quick ? "64" : "2048" },
    dtypes: { type: "string", default: "bf16,f32" },
    methods: { type: "string", default: METHODS },
    threads: { type: "string", default: "1,2" },
    "no-peer": { type: "boolean" },
    keep: { type: "boolean" },
    help: { type: "boolean" },
    child: { type: "string" }, // internal: run these methods in this process
    dir: { type: "string" },
    overlap: { type: "string" },
  },
}).values;

if (args.help) {
  console.log(
    "usage: deno task bench:merge [--layers 8] [--dim 2048] [--dtypes bf16,f32] [--methods m1,m2,…]\n" +
      "                             [--threads 1,2] [--no-peer] [--keep]\n" +
      `methods: ${METHODS}; MOEKIT_BENCH_QUICK=1: tiny sizes, no peer`,
  );
  Deno.exit(0);
}

/** The config of a method over the benchmark's folders (the port's parameters: weight 1, density 0.3). */
function config(method: string): string {
  const models = ["a", "b", "c"];
  if (method === "linear") {
    // the port's linear merges the base as a 4th model: the same input bytes
    return `merge_method: linear\nmodels:\n${
      ["base", ...models].map((m) => `  - {model: ${m}, parameters: {weight: 1.0}}`).join("\n")
    }\n`;
  }
  if (method === "slerp") {
    return "merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nmodels:\n  - {model: a}\n";
  }
  const p = method === "task_arithmetic"
    ? "{weight: 1.0}"
    : method.startsWith("della")
    ? "{weight: 1.0, density: 0.3, epsilon: 0.1}"
    : "{weight: 1.0, density: 0.3}";
  return `merge_method: ${method}\nbase_model: base\nmodels:\n${
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
const mb = (b: number) => b / 1e6;
const self = new URL(import.meta.url).pathname;
const peer = Deno.env.get("MOEKIT_MERGE_PEER") ??
  new URL("../../shared/bench-peers/merge/mergekit_port.py", import.meta.url).pathname;
const python = Deno.env.get("PEERS_PYTHON") ?? "/usr/bin/python3";
const havePeer = !args["no-peer"] && !quick && (await Deno.stat(peer).then(() => true, () => false));
const haveTime = await Deno.stat("/usr/bin/time").then(() => true, () => false);
const root = await Deno.makeTempDir({ prefix: "moekit-merge-bench-" });

/** Runs a command (under `/usr/bin/time -v` when present); the JSON lines it prints and its peak RSS. */
async function timed(cmd: string, cmdArgs: string[], env: Record<string, string> = {}) {
  const r = await new Deno.Command(haveTime ? "/usr/bin/time" : cmd, {
    args: haveTime ? ["-v", cmd, ...cmdArgs] : cmdArgs,
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

try {
  console.log(
    `merge benchmark: base + 3 models, ${L} layers, d = ${d}; methods ${methods.join(", ")}; ` +
      `peer: ${havePeer ? "torch port" : "none"}${quick ? " (quick mode)" : ""}`,
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
    const m1 = await moekit(false, methods), m2 = await moekit(true, methods);
    const torch = new Map<string, Map<number, { rate: number; rss: number }>>();
    if (havePeer) {
      for (const method of methods.filter((m) => PEER_METHODS.includes(m))) {
        const byT = new Map<number, { rate: number; rss: number }>();
        for (const t of threads) {
          const out = `${dir}/peer-out`;
          await readAll();
          const env = {
            OPENBLAS_NUM_THREADS: String(t),
            OMP_NUM_THREADS: String(t),
            MKL_NUM_THREADS: String(t),
          };
          const p = await timed(python, [
            peer,
            "--base",
            `${dir}/base`,
            "--models",
            ...["a", "b", "c"].map((x) => `${dir}/${x}`),
            "--out",
            out,
            "--method",
            method,
            "--density",
            "0.3",
            "--threads",
            String(t),
          ], env);
          await Deno.remove(out, { recursive: true }).catch(() => {});
          byT.set(t, { rate: p.json[0].MBps, rss: p.rss });
        }
        torch.set(method, byT);
      }
    }
    const f1 = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "–" : x.toFixed(1));
    const ratio = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined || !(b > 0) ? "–" : `${(a / b).toFixed(2)}×`;
    const rssOf = (x: { rss: number } | undefined) =>
      x === undefined || Number.isNaN(x.rss) ? "–" : `${mb(x.rss).toFixed(0)}`;
    const head = [
      "method",
      "moekit 1T",
      "moekit 2T",
      ...threads.map((t) => `torch ${t}T`),
      "÷torch 1T",
      "÷torch 2T",
      "1T÷raw",
      "2T÷raw",
      `peak RSS MB: moekit 1T/2T, torch ${threads.join("T/")}T`,
      "2T peak÷largest",
    ];
    const rows = methods.map((m) => {
      const a = m1.get(m), b = m2.get(m), tp = torch.get(m);
      return [
        m,
        f1(a?.rate),
        f1(b?.rate),
        ...threads.map((t) => f1(tp?.get(t)?.rate)),
        ratio(a?.rate, tp?.get(1)?.rate),
        ratio(b?.rate, tp?.get(2)?.rate),
        ratio(a?.rate, first),
        ratio(b?.rate, first),
        [rssOf(a), rssOf(b), ...threads.map((t) => rssOf(tp?.get(t)))].join(" / "),
        b && !Number.isNaN(b.rss) ? `${((b.rss - baseline) / (largest * 4)).toFixed(1)}` : "–",
      ];
    });
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    console.log([head, ...rows].map((r) => r.map((c, i) => c.padEnd(w[i])).join("  ")).join("\n"));
    console.log(
      `MB/s of input. ÷torch: moekit ÷ the torch port at the same thread count. ÷raw: moekit ÷ the ${
        Number.isNaN(cold) ? "warm" : "first (uncached)"
      } read of the same files in this sitting. peak÷largest: moekit's peak RSS above the ${
        mb(baseline).toFixed(0)
      } MB of a process that only loads the modules, in float32 copies of the largest tensor.`,
    );
    if (!args.keep) await Deno.remove(dir, { recursive: true });
  }
  console.log(
    "\nSame sitting, one run each, inputs warm in the page cache before every run. The machine may be shared " +
      "with other work: read the ratios, not the absolute figures.",
  );
} finally {
  if (!args.keep) await Deno.remove(root, { recursive: true }).catch(() => {});
}
