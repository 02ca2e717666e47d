/**
 * Expert compression on a seeded MoE layer that has structure to exploit — experts share a common
 * component plus low-rank differences, and the router is skewed — with every method at two or three
 * budgets, in one table: bytes, % of the original, relative output error, routing agreement.
 *
 *   deno run examples/compress.ts                     # the table
 *   deno run --allow-read=. --allow-write=. examples/compress.ts --out compress.json   # and the rows as JSON
 *                                                    # (an existing compress.json is kept unless --overwrite)
 */

import { intFlag, parseFlags, usageError } from "./flags.ts";
import { checkOutFile, writeOutFile } from "./out_file.ts";
import {
  calibrate,
  calibrateSkip,
  compressedExpertsLayer,
  type CompressedLayer,
  compressionReport,
  deltaCompress,
  dense,
  losparseCompress,
  matrix,
  mergeExperts,
  moeLayer,
  pmqQuantize,
  pruneExperts,
  Rng,
  rtnLayer,
  skipExperts,
  svdLayer,
  type SwiGLUExpert,
  topicStream,
  topKRouter,
  whitenedSvdLayer,
} from "../mod.ts";

const USAGE = `usage: deno run examples/compress.ts [options]

  --seed S      seed of the experts, the router and the token stream (default 0)
  --out FILE    also save the table's rows as JSON, for compressionPlot (needs --allow-write=FILE;
                with --allow-read and --allow-write on its folder it is written atomically)
  --overwrite   allow --out to replace an existing file (it is never replaced otherwise)
  --help        this text`;

const args = parseFlags(USAGE, {
  out: { type: "string" },
  overwrite: { type: "boolean" },
  seed: { type: "string" },
  help: { type: "boolean" },
});
const seed = intFlag(USAGE, args, "seed", 0, 0), E = 8, d = 64, f = 128, k = 2;
const overwrite = Boolean(args.overwrite);
if (overwrite && args.out === undefined) {
  usageError(USAGE, "--overwrite applies to --out FILE only (this example writes nothing else)");
}
// the output is checked before the work: permission, folder, an existing file
if (args.out !== undefined) checkOutFile(args.out, overwrite);

// experts = shared component + rank-4 differences + a little noise; router skewed toward a few experts
const rng = new Rng(seed);
const shared = {
  w1: matrix.randn(f, d, { seed: rng.nextUint32(), std: 0.1 }),
  w2: matrix.randn(d, f, { seed: rng.nextUint32(), std: 0.1 }),
  w3: matrix.randn(f, d, { seed: rng.nextUint32(), std: 0.1 }),
};
const experts: SwiGLUExpert[] = Array.from({ length: E }, () => {
  const vary = (base: typeof shared.w1) => {
    const lr = matrix.matmul(
      matrix.randn(base.rows, 4, { seed: rng.nextUint32(), std: 0.1 }),
      matrix.randn(4, base.cols, { seed: rng.nextUint32(), std: 0.1 }),
    );
    const noise = matrix.randn(base.rows, base.cols, { seed: rng.nextUint32(), std: 0.005 });
    return {
      rows: base.rows,
      cols: base.cols,
      data: base.data.map((v, i) => v + lr.data[i] + noise.data[i]),
    };
  };
  return { w1: vary(shared.w1), w2: vary(shared.w2), w3: vary(shared.w3) };
});
const gate = matrix.randn(E, d, { seed: rng.nextUint32(), std: 0.3 });
for (let e = 0; e < E; e++) gate.data[e * d] += 1.5 - 0.4 * e; // skew: lower experts win more often
const layer = moeLayer({ router: topKRouter({ weight: gate, k }), experts });
// one token stream: the first half calibrates, the second half measures
const stream = topicStream({ tokens: 1024, dim: d, seed: seed + 1, noise: 0.6, segmentLength: 8 }).hidden;
for (let i = 0; i < stream.rows; i++) stream.data[i * d] += 1;
const calib = matrix.rowSlice(stream, 0, 512), test = matrix.rowSlice(stream, 512, 1024);
const stats = calibrate(layer, calib); // routing, routed inputs and intermediates (they whiten W1/W3 and W2)

const methods: CompressedLayer[] = [];
for (const ratio of [0.5, 0.25]) {
  methods.push(svdLayer(layer, { ratio }));
  methods.push(whitenedSvdLayer(layer, stats, { ratio }));
}
for (const g of [4, 2]) methods.push(mergeExperts(layer, stats, { numGroups: g }));
{
  // MC-SMoE's full "merge, then compress": 4 merged experts, each matrix as LoSparse (rank ρ .25 + 25 % of residual rows)
  const merged = mergeExperts(layer, stats, { numGroups: 4 }).layer,
    cache = new Map<SwiGLUExpert, SwiGLUExpert>();
  let bytes = gate.data.length * 4;
  const experts = merged.experts.map((e) => {
    if (!cache.has(e)) {
      const c = (["w1", "w2", "w3"] as const).map((key) =>
        losparseCompress(e[key], { ratio: 0.25, keepRows: 0.25 })
      );
      bytes += c.reduce((s, x) => s + x.bytes, 0);
      cache.set(e, { w1: c[0].approx, w2: c[1].approx, w3: c[2].approx });
    }
    return cache.get(e)!;
  });
  methods.push({
    ...dense(moeLayer({ ...layer, experts })),
    method: "mc-smoe 4/8 + losparse",
    params: bytes / 4,
    bytes,
  });
}
for (const keep of [6, 4]) methods.push(pruneExperts(layer, calib, { keep, numBatches: 4 }));
methods.push(skipExperts(layer, { beta: calibrateSkip(layer, calib) }));
for (const ratio of [0.25, 0.1]) methods.push(deltaCompress(layer, stats, { ratio }));
methods.push(deltaCompress(layer, stats, { ratio: 0.1, sharedV: true }));
for (const bits of [4, 3, 2]) methods.push(rtnLayer(layer, bits, 64));
methods.push(pmqQuantize(layer, calib, stats, { budgetBits: 20, groupSize: 64 }));
methods.push(compressedExpertsLayer(layer, { nCe: 1 }));

const rows = methods.map((m) => compressionReport(layer, m, test));
const denseBytes = rows[0].bytes[0];
const head = ["method", "bytes", "% of orig", "rel. error", "routing agr.", "active/token"];
const body = rows.map((r) => [
  r.method,
  String(r.bytes[1]),
  `${(100 * r.bytesRatio).toFixed(1)}%`,
  r.relativeError.toFixed(4),
  r.routingAgreement.toFixed(3),
  `${(100 * r.activeParamsPerToken[1] / r.activeParamsPerToken[0]).toFixed(0)}%`,
]);
const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
console.log(
  `moekit expert compression — one MoE layer: E = ${E}, d = ${d}, f = ${f}, k = ${k}; dense ${denseBytes} bytes (f32)`,
);
console.log(
  `experts = shared component + rank-4 differences; 512 calibration tokens, errors on 512 held-out tokens\n`,
);
console.log(head.map((h, i) => (i ? h.padStart(widths[i]) : h.padEnd(widths[i]))).join("  "));
console.log(widths.map((w) => "─".repeat(w)).join("  "));
body.forEach((b) =>
  console.log(b.map((c, i) => (i ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  "))
);
console.log(
  `\nrel. error = ‖Y − Ŷ‖_F/‖Y‖_F; routing agr. = mean share of each token's original top-${k} still computed;`,
);
console.log(
  "active/token = parameters computed per token vs the dense layer (skipping and Compressed Experts lower it).",
);
if (args.out !== undefined) {
  await writeOutFile(args.out, JSON.stringify(rows, null, 2), overwrite);
  console.log(`\nrows saved to ${args.out} (plot them with compressionPlot)`);
}
