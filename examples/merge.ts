/**
 * How much of each task a merge keeps: builds a small base checkpoint and three fine-tuned ones whose task
 * vectors overlap and conflict in sign, merges them with task arithmetic, TIES and Breadcrumbs through the
 * real safetensors pipeline (config → plan → streamed shards), prints how much of each task survives and
 * compares TIES with the plain sum and the mean on those measured numbers.
 *
 *   deno run -A examples/merge.ts [--dim 256] [--seed 0] [--keep] [--help]
 */

import { intFlag, parseFlags, refuse } from "./flags.ts";
import {
  matrix,
  openCheckpoint,
  parseMergeConfig,
  planCheckpointMerge,
  Rng,
  runCheckpointMerge,
  writeCheckpoint,
} from "../mod.ts";

const USAGE = `usage: deno run -A examples/merge.ts [options]

  --dim D       each tensor is D×D (default 256)
  --seed S      seed of the base, the task vectors and the merges (default 0)
  --keep        keep the checkpoints and merged outputs (in a temporary folder) instead of removing them
  --help        this text

It writes safetensors checkpoints to a temporary folder: run it with -A (or --allow-read --allow-write).`;

const args = parseFlags(USAGE, {
  dim: { type: "string" },
  seed: { type: "string" },
  keep: { type: "boolean" },
  help: { type: "boolean" },
});
const d = intFlag(USAGE, args, "dim", 256, 8), seed = intFlag(USAGE, args, "seed", 0, 0);
for (const name of ["read", "write"] as const) {
  if (Deno.permissions.querySync({ name }).state !== "granted") {
    refuse(
      `it needs --allow-${name}: it writes and reads checkpoints in a temporary folder (or run with -A)`,
    );
  }
}

const dir = await Deno.makeTempDir({ prefix: "moekit-merge-" });
// the temporary folder goes away on every exit path (also on an error) unless --keep
const cleanUp = () => {
  if (!args.keep) Deno.removeSync(dir, { recursive: true });
};
globalThis.addEventListener("unload", cleanUp);
globalThis.addEventListener("error", cleanUp);
globalThis.addEventListener("unhandledrejection", cleanUp);
const names = [
  "model.embed_tokens.weight",
  ...[0, 1, 2, 3].flatMap((
    l,
  ) => [`model.layers.${l}.mlp.up_proj.weight`, `model.layers.${l}.self_attn.q_proj.weight`]),
];
const n = d * d, rng = new Rng(seed);
const base = new Map(
  names.map((name) => [name, matrix.randn(d, d, { seed: rng.nextUint32(), std: 0.02 }).data]),
);

// three tasks: each touches a random 20 % of the entries (so supports overlap) with a strong signal,
// plus small dense noise everywhere (the "redundant" part TIES trims); overlaps carry sign conflicts
const tasks = [0, 1, 2].map((i) =>
  new Map(names.map((name) => {
    const r = new Rng(seed + 1000 * (i + 1)).derive(name), tv = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      tv[j] = (r.uniform() < 0.2 ? (r.uniform() < 0.5 ? -1 : 1) * (0.01 + 0.02 * r.uniform()) : 0) +
        0.001 * r.normal();
    }
    return [name, tv];
  }))
);
const specs = names.map((name) => ({ name, dtype: "F32" as const, shape: [d, d] }));
await writeCheckpoint(`${dir}/base`, specs, (name) => base.get(name)!);
for (const [i, tv] of tasks.entries()) {
  await writeCheckpoint(
    `${dir}/task${i}`,
    specs,
    (name) => base.get(name)!.map((v, j) => v + tv.get(name)![j]),
  );
}

// [label, method, per-model parameters, normalize]
const runs: [string, string, string, boolean][] = [
  ["task arithmetic (sum)", "task_arithmetic", "parameters: {weight: 1.0}", false],
  ["task arithmetic (mean)", "task_arithmetic", "parameters: {weight: 1.0}", true],
  ["ties (density .2)", "ties", "parameters: {weight: 1.0, density: 0.2}", true],
  ["breadcrumbs (.2, γ .01)", "breadcrumbs", "parameters: {weight: 1.0, density: 0.2, gamma: 0.01}", false],
];
const rows: string[][] = [];
/** Per run, means over the three tasks: kept τ, sign retention (share), sparsity (share). */
const stats: { kept: number; sign: number; sparsity: number }[] = [];
for (const [label, method, params, normalize] of runs) {
  const yaml = `merge_method: ${method}
base_model: base
parameters: {normalize: ${normalize}}
dtype: float32
models:
${[0, 1, 2].map((i) => `  - model: task${i}\n    ${params}`).join("\n")}
`;
  const out = `${dir}/out-${rows.length}`;
  await Deno.writeTextFile(`${out}.yaml`, yaml);
  const plan = await planCheckpointMerge(parseMergeConfig(yaml), { configDir: dir });
  await runCheckpointMerge(plan, out, { seed });
  plan.close();
  const merged = await openCheckpoint(out);
  // statistics over all tensors: merged task vector τ = merged − base, compared with each task's τᵢ
  const dots = [0, 0, 0], normsT = [0, 0, 0], agree = [0, 0, 0], support = [0, 0, 0];
  let normM = 0, nonzero = 0, total = 0;
  for (const name of names) {
    const m = (await merged.read(name)).data, b = base.get(name)!;
    for (let j = 0; j < n; j++) {
      const tau = m[j] - b[j];
      normM += tau * tau;
      if (Math.abs(tau) > 1e-7) nonzero++;
      total++;
      for (let i = 0; i < 3; i++) {
        const ti = tasks[i].get(name)![j];
        dots[i] += tau * ti;
        normsT[i] += ti * ti;
        if (Math.abs(ti) > 0.005) { // the task's real (large) entries
          support[i]++;
          if (Math.sign(tau) === Math.sign(ti)) agree[i]++;
        }
      }
    }
  }
  merged.close();
  const mean3 = (f: (i: number) => number) => (f(0) + f(1) + f(2)) / 3;
  stats.push({
    kept: mean3((i) => dots[i] / normsT[i]),
    sign: mean3((i) => agree[i] / support[i]),
    sparsity: 1 - nonzero / total,
  });
  rows.push([
    label,
    ...[0, 1, 2].map((i) => (dots[i] / normsT[i]).toFixed(3)),
    ...[0, 1, 2].map((i) => `${(100 * agree[i] / support[i]).toFixed(1)}%`),
    `${(100 * (1 - nonzero / total)).toFixed(1)}%`,
  ]);
}

console.log(`merging 3 synthetic fine-tunes of a ${names.length}-tensor model (${d}×${d} each)\n`);
const head = ["method", "kept τ1", "kept τ2", "kept τ3", "sign τ1", "sign τ2", "sign τ3", "sparsity"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) =>
  cells.map((c, i) => (i ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ");
console.log(line(head));
console.log(widths.map((w) => "─".repeat(w)).join("  "));
rows.forEach((r) => console.log(line(r)));
console.log(`
kept τi  = projection of the merged task vector on task i's vector, (τ·τi)/(τi·τi): 1 = all of task i
sign τi  = share of task i's large entries whose sign the merge keeps
sparsity = share of the merged task vector that is exactly zero
The mean divides the sum by three. TIES trims each task to its top 20 %, elects a sign per entry and
averages only the values that agree with it; Breadcrumbs trims the same way (plus the top 1 % outliers)
but sums without an election.`);
{
  const [sum, mean, ties] = stats;
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const vs = (a: number, b: number, eps: number) =>
    Math.abs(a - b) < eps ? "about the same as" : a > b ? "more than" : "less than";
  console.log(
    [
      `On these tasks TIES keeps ${ties.kept.toFixed(3)} of each task (mean of kept τi):`,
      `${vs(ties.kept, sum.kept, 0.005)} the sum (${sum.kept.toFixed(3)}) and`,
      `${vs(ties.kept, mean.kept, 0.005)} the mean (${mean.kept.toFixed(3)}); it keeps the sign of`,
      `${pct(ties.sign)} of the tasks' large entries, ${vs(ties.sign, sum.sign, 0.001)} the sum (${
        pct(sum.sign)
      }),`,
      `and ${pct(ties.sparsity)} of the merged vector is exactly zero (sum: ${pct(sum.sparsity)}).`,
    ].join(" ").replace(/(.{1,104})(?: |$)/g, "$1\n").trimEnd(), // wrapped at 104 columns
  );
}
console.log(
  args.keep
    ? `\ncheckpoints, configs and merged outputs kept in ${dir}`
    : `\n(the checkpoints and merged outputs were written to a temporary folder, now removed; --keep keeps them)`,
);
