/**
 * Generates the README's benchmark table, in one sitting on this machine:
 *   routing — moekit beside PyTorch and onnxruntime at 1 and 2 threads (bench/peers.ts --run-peers, on the
 *             peer kit's inputs, with the top-k agreement against its float64 reference);
 *   merging — a TIES merge of 3 bf16 models through moekit's CLI (`deno task merge`) beside the
 *             mergekit-style PyTorch port on the same files (page cache warmed before each run).
 * Every figure is a ratio to a peer measured in the same sitting. The table, with the CPU (AVX2 /
 * AVX-512), the date and this command, goes between the `bench-table` markers of README.md.
 *
 *   sh <peer kit>/setup.sh                 # once (PEERS_KIT, default ../shared/bench-peers)
 *   deno task bench:table                  # measure and rewrite the README table
 *   deno task bench:table --no-write       # measure and print only
 *   MOEKIT_BENCH_QUICK=1 deno task bench:table   # smoke test: tiny sizes, no peers, prints only
 */

import { parseArgs } from "node:util";
import { writeCheckpoint } from "../lib/io/mod.ts";
import { Rng } from "../lib/core/mod.ts";
import { kernelInfo } from "../lib/kernels/mod.ts";

const root = new URL("..", import.meta.url).pathname;
const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const kit = Deno.env.get("PEERS_KIT") ?? `${root}../shared/bench-peers/`;
const python = Deno.env.get("PEERS_PYTHON") ?? "/usr/bin/python3";
const USAGE =
  `usage: deno task bench:table [--no-write] [--skip-routing] [--skip-merge] [--layers L] [--dim D]

  --no-write      print the table instead of writing it into README.md
  --skip-routing  leave out the routing rows;  --skip-merge: the merge row
  --layers L, --dim D   size of the merged models (default 8 layers, d = 2048: 4 × ~0.2 GB of bf16)`;

let args: Record<string, string | boolean | undefined> = {};
try {
  args = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      "no-write": { type: "boolean" },
      "skip-routing": { type: "boolean" },
      "skip-merge": { type: "boolean" },
      layers: { type: "string" },
      dim: { type: "string" },
      help: { type: "boolean" },
    },
  }).values;
} catch (e) {
  console.error(`error: ${(e as Error).message}\n${USAGE}`);
  Deno.exit(2);
}
if (args.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const L = Number(args.layers ?? (quick ? 2 : 8)), D = Number(args.dim ?? (quick ? 64 : 2048));
if (!Number.isInteger(L) || L < 1 || !Number.isInteger(D) || D < 8 || D % 2) {
  console.error(`error: --layers must be an integer ≥ 1 and --dim an even integer ≥ 8\n${USAGE}`);
  Deno.exit(2);
}
const write = !quick && !args["no-write"];

// ---- the machine -------------------------------------------------------------------------------------
function machine(): string {
  let model = "unknown CPU", flags = "";
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1].trim() ?? model;
    flags = /^flags\s*:\s*(.+)$/m.exec(info)?.[1] ?? "";
  } catch { /* not Linux */ }
  const has = (f: string) => new RegExp(`\\b${f}\\b`).test(flags) ? "yes" : "no";
  const k = kernelInfo(), native = k.backends.find((b) => b.name === "native");
  return `${model}, ${navigator.hardwareConcurrency} cores, AVX2 ${has("avx2")}, AVX-512 ${
    has("avx512f")
  }; ` +
    `Deno ${Deno.version.deno}; WebAssembly ${k.simd} SIMD; native: ${native?.reason ?? "none"}`;
}

async function run(cmd: string, argv: string[], env: Record<string, string> = {}, cwd = root) {
  const out = await new Deno.Command(cmd, { args: argv, env, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { ok: out.success, code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const ratio = (v: number | undefined, ref: number | undefined) =>
  v === undefined || !ref ? "–" : `${(v / ref).toFixed(2)}×`;

// ---- routing: bench/peers.ts -------------------------------------------------------------------------
interface PeerRow {
  shape: string;
  T: number;
  d: number;
  E: number;
  k: number;
  moekit: Record<string, number>;
  agreement: number;
  foreign: number;
  peers: Record<string, Record<string, number>>;
}

async function peersRun(backend: string, runPeers: boolean): Promise<{ rows: PeerRow[] } | undefined> {
  console.error(
    `bench:table: routing, moekit ${backend} (bench/peers.ts${runPeers ? " --run-peers" : ""}) …`,
  );
  const r = await run(Deno.execPath(), [
    "run",
    "-A",
    "bench/peers.ts",
    "--json",
    "--threads",
    "1,2",
    "--backend",
    backend,
    ...(runPeers ? ["--run-peers"] : []),
  ]);
  if (!r.ok) {
    if (backend === "native" && r.code === 2) { // no BLAS library here: the native columns stay empty
      console.error(`bench:table: ${r.stderr.trim()}`);
      return undefined;
    }
    throw new Error(`bench/peers.ts --backend ${backend} failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  }
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as { rows: PeerRow[] };
}

async function routingTable(): Promise<string[]> {
  // the WebAssembly kernel (the default without permissions), with the peers run in the same sitting,
  // then the native BLAS backend (with --allow-ffi) on the same inputs
  const wasm = (await peersRun("wasm", !quick))!, native = await peersRun("native", false);
  const lines = [
    "| routing: shape (T, d, E, k) | moekit wasm 1T | moekit wasm 2T | moekit native 1T | moekit native 2T | PyTorch 1T | PyTorch 2T | onnxruntime 1T | onnxruntime 2T | top-k agreement |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const s of wasm.rows) {
    const torch = s.peers["torch"] ?? {},
      passive = s.peers["torch-passive"] ?? {},
      ort = s.peers["ort"] ?? {};
    const base = torch["1"], nat = native?.rows.find((n) => n.shape === s.shape);
    // PyTorch at 2 threads: the better of the two OpenMP wait policies the kit runs
    const torch2 = Math.max(torch["2"] ?? 0, passive["2"] ?? 0) || undefined;
    const agree = Math.min(s.agreement, nat?.agreement ?? 1);
    const cells = [
      ratio(s.moekit["1"], base),
      ratio(s.moekit["2"], base),
      ratio(nat?.moekit["1"], base),
      ratio(nat?.moekit["2"], base),
      ratio(base, base),
      ratio(torch2, base),
      ratio(ort["1"], base),
      ratio(ort["2"], base),
      `${(100 * agree).toFixed(2)} %`,
    ];
    lines.push(`| ${s.shape} (${s.T}, ${s.d}, ${s.E}, ${s.k}) | ${cells.join(" | ")} |`);
  }
  return lines;
}

// ---- merging: moekit's CLI vs the mergekit-style port ------------------------------------------------
async function warm(dir: string): Promise<void> {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) await warm(p);
    else if (e.name.endsWith(".safetensors")) {
      using f = await Deno.open(p);
      const buf = new Uint8Array(1 << 22);
      while ((await f.read(buf)) !== null) { /* read into the page cache */ }
    }
  }
}

/** Wall seconds and peak RSS (bytes, from /usr/bin/time -v when present) of one process. */
async function timed(cmd: string, argv: string[], env: Record<string, string> = {}) {
  const gnuTime = (() => {
    try {
      return Deno.statSync("/usr/bin/time").isFile;
    } catch {
      return false;
    }
  })();
  const t0 = performance.now();
  const r = gnuTime ? await run("/usr/bin/time", ["-v", cmd, ...argv], env) : await run(cmd, argv, env);
  const seconds = (performance.now() - t0) / 1000;
  if (!r.ok) throw new Error(`${cmd} ${argv.join(" ")} failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  const kb = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1];
  return { seconds, rss: kb ? Number(kb) * 1024 : undefined, stdout: r.stdout };
}

async function mergeTable(): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "moekit-bench-table-" });
  try {
    const specs = [
      { name: "model.embed_tokens.weight", dtype: "BF16" as const, shape: [4 * D, D] },
      ...Array.from({ length: L }, (_, l) => [
        { name: `model.layers.${l}.mlp.up_proj.weight`, dtype: "BF16" as const, shape: [D, D] },
        { name: `model.layers.${l}.self_attn.o_proj.weight`, dtype: "BF16" as const, shape: [D / 2, D] },
      ]).flat(),
    ];
    console.error(`bench:table: merge: writing base + 3 bf16 models (${L} layers, d = ${D}) to ${dir} …`);
    for (const [i, m] of ["base", "a", "b", "c"].entries()) {
      await writeCheckpoint(`${dir}/${m}`, specs, (name) => {
        const s = specs.find((x) => x.name === name)!, out = new Float32Array(s.shape[0] * s.shape[1]);
        const r = new Rng(i * 7919 + 1).derive(name);
        for (let j = 0; j < out.length; j++) out[j] = (r.uniform() - 0.5) * 0.04;
        return out;
      });
    }
    await Deno.writeTextFile(
      `${dir}/ties.yaml`,
      `merge_method: ties\nbase_model: base\nparameters: {normalize: true}\nmodels:\n${
        ["a", "b", "c"].map((m) => `  - {model: ${m}, parameters: {weight: 1.0, density: 0.3}}`).join("\n")
      }\n`,
    );
    const reps = quick ? 1 : 2;
    const best = async (label: string, go: (i: number) => Promise<{ seconds: number; rss?: number }>) => {
      let b: { seconds: number; rss?: number } | undefined;
      for (let i = 0; i < reps; i++) {
        await warm(dir);
        const r = await go(i);
        console.error(`bench:table: merge: ${label} run ${i + 1}: ${r.seconds.toFixed(1)} s`);
        if (!b || r.seconds < b.seconds) b = r;
      }
      return b!;
    };
    const ours = await best(
      "moekit",
      (i) =>
        timed(Deno.execPath(), [
          "run",
          "-A",
          "mod.ts",
          "merge",
          `${dir}/ties.yaml`,
          `${dir}/out-moekit-${i}`,
          "--quiet",
        ]),
    );
    const lines = [
      `| merging: TIES of 3 bf16 models (${L} layers, d = ${D}), density 0.3 | PyTorch port 1T | PyTorch port 2T | moekit (\`deno task merge\`) |`,
      "| ------------------------------------------------ | --------------: | --------------: | ---------------------------: |",
    ];
    const portOk = !quick && (await run(python, ["-c", "import torch"]).catch(() => ({ ok: false }))).ok;
    if (!portOk) {
      lines.push(`| throughput | – | – | ${ours.seconds.toFixed(2)} s (no peer) |`);
      return [...lines, "", `(no PyTorch port: ${quick ? "quick mode" : `${python} cannot import torch`})`];
    }
    const port = (threads: number) => (i: number) =>
      timed(python, [
        `${kit}merge/mergekit_port.py`,
        "--base",
        `${dir}/base`,
        "--models",
        `${dir}/a`,
        `${dir}/b`,
        `${dir}/c`,
        "--out",
        `${dir}/out-port-${threads}-${i}`,
        "--method",
        "ties",
        "--density",
        "0.3",
        "--threads",
        String(threads),
      ], { OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) });
    const p1 = await best("port 1T", port(1)), p2 = await best("port 2T", port(2));
    // same input bytes for all three: throughput ratios are inverse wall-time ratios
    lines.push(
      `| throughput (higher is faster) | 1.00× | ${(p1.seconds / p2.seconds).toFixed(2)}× | ${
        (p1.seconds / ours.seconds).toFixed(2)
      }× |`,
    );
    if (ours.rss && p1.rss && p2.rss) {
      lines.push(
        `| peak memory (RSS) | 1.00× | ${(p2.rss / p1.rss).toFixed(2)}× | ${
          (ours.rss / p1.rss).toFixed(2)
        }× |`,
      );
    }
    return lines;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---- the table ---------------------------------------------------------------------------------------
const when = new Date().toISOString().replace("T", " ").slice(0, 16) + " UTC";
const routing = args["skip-routing"] ? [] : await routingTable();
const merging = args["skip-merge"] ? [] : await mergeTable();
const table = [
  `Measured with \`deno task bench:table\` on ${when}: ${machine()}. The machine was shared and busy while it ran, ` +
  "so treat differences of 10–20 % as noise; every figure is a ratio to a peer measured in the same sitting. " +
  "Routing: tokens/s relative to PyTorch at 1 thread on the peer kit's inputs (T = 4096); moekit wasm = the " +
  "WebAssembly kernel (no permissions needed; 2T = `await useThreads(2)`), native = `--allow-ffi` " +
  "with the gate GEMM named above (moekit's own kernel once `deno task build:native` has built it, else the " +
  "BLAS library's `cblas_sgemm`; 2T = `await useThreads(2)`: two threads, each with its own 1-thread GEMM). Merging: input bytes ÷ wall time of the whole command (startup included), relative " +
  "to a mergekit-style PyTorch port at 1 thread on the same files, page cache warm, best of 2 runs.",
  "",
  ...routing,
  ...(routing.length && merging.length ? [""] : []),
  ...merging,
].join("\n");

if (!write) {
  console.log(table);
} else {
  const readme = `${root}README.md`, text = await Deno.readTextFile(readme);
  const start = "<!-- bench-table:start -->", end = "<!-- bench-table:end -->";
  const i = text.indexOf(start), j = text.indexOf(end);
  if (i < 0 || j < i) {
    console.error(`error: README.md has no "${start}" … "${end}" markers; the table:\n${table}`);
    Deno.exit(1);
  }
  const updated = `${text.slice(0, i + start.length)}\n\n${table}\n\n${text.slice(j)}`;
  // the README is formatted by deno fmt: format the new text the same way (through stdin) before writing
  const fmt = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--config", `${root}deno.json`, "--ext", "md", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = fmt.stdin.getWriter();
  await writer.write(new TextEncoder().encode(updated));
  await writer.close();
  const formatted = await fmt.output();
  if (!formatted.success) {
    console.log(table);
    throw new Error(`deno fmt failed on the new README:\n${new TextDecoder().decode(formatted.stderr)}`);
  }
  const tmp = `${readme}.bench-table.tmp`;
  await Deno.writeFile(tmp, formatted.stdout);
  await Deno.rename(tmp, readme); // replaced whole, never half-written
  console.log(`README.md: benchmark table updated (${when})`);
}
