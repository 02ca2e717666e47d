/**
 * Peak memory of a checkpoint merge with and without a block cap (`merge --max-block-size`). Generates a
 * base and N fine-tuned checkpoints holding one large tensor (an embedding, 32000 × 4096 bf16 by default)
 * and a few small ones, then runs the merge CLI (`deno run -A mod.ts merge`, the default two-thread
 * pipeline) in its own process under `/usr/bin/time -v` for each method, uncapped and capped runs
 * alternating, inputs warm in the page cache. Prints peak RSS, peak RSS ÷ the largest tensor in float32,
 * wall time and capped ÷ uncapped time, and checks that every capped output is byte-identical to the
 * uncapped one (exit 1 otherwise). Same sitting only: read the figures as ratios. Without
 * `/usr/bin/time` (Debian package "time") the runs are timed here and the peak RSS shows "–".
 *
 *   deno task bench:merge-blocks [--rows 32000] [--cols 4096] [--models 3] [--dtype bf16|f32]
 *                                [--methods task_arithmetic,ties] [--cap 256M] [--repeat 2] [--data DIR]
 *   MOEKIT_BENCH_QUICK=1 deno task bench:merge-blocks      (tiny sizes, a few seconds)
 *
 * `--data DIR` keeps the generated checkpoints in DIR (reused when present), so they can be generated
 * once outside a benchmark lock (`--repeat 0`: generate only).
 */

import { parseArgs } from "node:util";
import { type Dtype, type TensorChunks, writeCheckpoint } from "../lib/io/mod.ts";
import { parseSize } from "../lib/cli/merge_cli.ts";

const quick = Deno.env.get("MOEKIT_BENCH_QUICK") === "1";
const args = parseArgs({
  args: Deno.args,
  options: {
    rows: { type: "string", default: quick ? "96" : "32000" },
    cols: { type: "string", default: quick ? "64" : "4096" },
    models: { type: "string", default: "3" },
    dtype: { type: "string", default: "bf16" },
    methods: { type: "string", default: "task_arithmetic,ties" },
    cap: { type: "string", default: quick ? "8K" : "256M" },
    repeat: { type: "string", default: quick ? "1" : "2" },
    data: { type: "string" },
    help: { type: "boolean" },
  },
}).values;
if (args.help) {
  console.log(
    "usage: deno task bench:merge-blocks [--rows 32000] [--cols 4096] [--models 3] [--dtype bf16|f32]\n" +
      "                                    [--methods task_arithmetic,ties] [--cap 256M] [--repeat 2] [--data DIR]",
  );
  Deno.exit(0);
}
const rows = Number(args.rows), cols = Number(args.cols), N = Number(args.models);
const dtype: Dtype = args.dtype === "f32" ? "F32" : "BF16";
const cap = parseSize(args.cap!, "--cap"), repeat = Number(args.repeat);
const mod = new URL("../mod.ts", import.meta.url).pathname;
const TIME = "/usr/bin/time";
/** Without /usr/bin/time (Debian package "time") the runs are timed here and the peak RSS shows "–". */
const haveTime = await Deno.stat(TIME).then((s) => s.isFile, () => false);

const EMBED = "model.embed_tokens.weight";
const specs = [
  { name: EMBED, dtype, shape: [rows, cols] },
  ...[0, 1].map((l) => ({
    name: `model.layers.${l}.mlp.up_proj.weight`,
    dtype,
    shape: [Math.max(1, cols >> 3), cols],
  })),
  { name: "model.norm.weight", dtype, shape: [cols] },
];
const models = ["base", ...Array.from({ length: N }, (_, i) => `m${i}`)];

/** A tensor of model `m`, 256 rows at a time: base values plus a small per-model difference. */
function tensor(m: number, t: number): TensorChunks {
  const [r, c] = specs[t].shape.length === 2 ? specs[t].shape : [1, specs[t].shape[0]];
  return {
    chunks: (function* () {
      for (let r0 = 0; r0 < r; r0 += 256) {
        const len = (Math.min(r, r0 + 256) - r0) * c, out = new Float32Array(len);
        let a = (t * 7919 + r0 + 1) >>> 0, b = (m * 104729 + t * 31 + r0 + 7) >>> 0;
        for (let i = 0; i < len; i++) {
          a ^= a << 13, a ^= a >>> 17, a ^= a << 5; // xorshift32: the base
          b ^= b << 13, b ^= b >>> 17, b ^= b << 5; // and the model's own difference
          out[i] = 0.02 * ((a >>> 0) / 2 ** 31 - 1) + (m ? 0.002 * ((b >>> 0) / 2 ** 31 - 1) : 0);
        }
        yield out;
      }
    })(),
  };
}

const dir = args.data ?? await Deno.makeTempDir({ prefix: "moekit-merge-blocks-" });
try {
  await Deno.mkdir(dir, { recursive: true });
  for (const [m, name] of models.entries()) {
    if (await Deno.stat(`${dir}/${name}`).then(() => true, () => false)) continue;
    await writeCheckpoint(`${dir}/${name}`, specs, (n) => tensor(m, specs.findIndex((s) => s.name === n)));
  }
  if (repeat === 0) Deno.exit(0); // generate only (with --data)
  const CONFIG: Record<string, string> = {
    task_arithmetic: "{weight: 0.5}",
    ties: "{weight: 1, density: 0.3}",
    linear: "{weight: 1}",
    dare_linear: "{weight: 1, density: 0.3}",
    breadcrumbs: "{weight: 1, density: 0.3, gamma: 0.01}",
  };
  const largest = rows * cols * 4;
  console.log(
    `merge of base + ${N} models, largest tensor ${EMBED} [${rows}, ${cols}] ${dtype} (${
      (largest / 1e6).toFixed(0)
    } MB in float32); cap ${args.cap} (${cap} bytes); ${repeat} run(s) each, alternating`,
  );
  console.log("method           cap      peak RSS MB   ÷ largest f32   wall s   capped ÷ uncapped time");
  let failed = false;
  for (const method of args.methods!.split(",")) {
    const params = CONFIG[method];
    if (!params) throw new Error(`no config for ${method}; use ${Object.keys(CONFIG).join(", ")}`);
    const base = method === "linear" ? "" : "base_model: base\n";
    const list = (method === "linear" ? models : models.slice(1)).map((m) =>
      `  - {model: ${m}, parameters: ${params}}`
    );
    await Deno.writeTextFile(
      `${dir}/${method}.yaml`,
      `merge_method: ${method}\n${base}models:\n${list.join("\n")}\n`,
    );
    const runs: Record<"none" | "cap", { rss: number; wall: number }[]> = { none: [], cap: [] };
    for (let r = 0; r < repeat; r++) {
      for (const k of ["none", "cap"] as const) {
        const out = `${dir}/out-${method}-${k}`;
        const flags = k === "cap" ? ["--max-block-size", String(cap)] : [];
        const cmd = [
          Deno.execPath(),
          "run",
          "-A",
          mod,
          "merge",
          `${dir}/${method}.yaml`,
          out,
          "--quiet",
          "--overwrite",
          ...flags,
        ];
        const t0 = performance.now();
        const p = await new Deno.Command(haveTime ? TIME : cmd[0], {
          args: haveTime ? ["-v", ...cmd] : cmd.slice(1),
          stdout: "piped",
          stderr: "piped",
        }).output();
        const seconds = (performance.now() - t0) / 1000;
        const err = new TextDecoder().decode(p.stderr);
        if (p.code !== 0) throw new Error(`merge ${method} (${k}) failed:\n${err}`);
        const kb = /Maximum resident set size \(kbytes\): (\d+)/.exec(err),
          rss = kb ? Number(kb[1]) * 1024 : NaN;
        const w = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(err);
        const wall = w ? Number(w[1] ?? 0) * 3600 + Number(w[2]) * 60 + Number(w[3]) : seconds;
        runs[k].push({ rss, wall });
      }
    }
    const same = await sameFolders(`${dir}/out-${method}-none`, `${dir}/out-${method}-cap`);
    if (!same) failed = true;
    const fmt = (xs: number[], d: number) => xs.map((x) => (Number.isNaN(x) ? "–" : x.toFixed(d))).join("/");
    const ratio = runs.cap.map((c, i) => c.wall / runs.none[i].wall);
    for (const k of ["none", "cap"] as const) {
      console.log(
        `${method.padEnd(16)} ${(k === "cap" ? args.cap! : "none").padEnd(8)} ${
          fmt(runs[k].map((x) => x.rss / 1e6), 0).padEnd(13)
        } ${fmt(runs[k].map((x) => x.rss / largest), 2).padEnd(15)} ${
          fmt(runs[k].map((x) => x.wall), 1).padEnd(8)
        } ${k === "cap" ? fmt(ratio, 2) : ""}${
          k === "cap" ? (same ? "   output byte-identical" : "   OUTPUT DIFFERS") : ""
        }`,
      );
    }
  }
  if (failed) Deno.exit(1);
} finally {
  if (!args.data) await Deno.remove(dir, { recursive: true });
  else {for (const e of Deno.readDirSync(dir)) {
      if (e.name.startsWith("out-")) await Deno.remove(`${dir}/${e.name}`, { recursive: true });
    }}
}

/** Whether two folders hold the same files with the same bytes (compared 16 MB at a time). */
async function sameFolders(a: string, b: string): Promise<boolean> {
  const names = (d: string) => [...Deno.readDirSync(d)].map((e) => e.name).sort().join("\n");
  if (names(a) !== names(b)) return false;
  for (const e of Deno.readDirSync(a)) {
    const [fa, fb] = [await Deno.open(`${a}/${e.name}`), await Deno.open(`${b}/${e.name}`)];
    try {
      const [ba, bb] = [new Uint8Array(1 << 24), new Uint8Array(1 << 24)];
      for (;;) {
        const [na, nb] = [await readFull(fa, ba), await readFull(fb, bb)];
        if (na !== nb) return false;
        for (let i = 0; i < na; i++) if (ba[i] !== bb[i]) return false;
        if (na < ba.length) break;
      }
    } finally {
      fa.close();
      fb.close();
    }
  }
  return true;
}

async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}
