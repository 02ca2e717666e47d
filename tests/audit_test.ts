// A demanding user's audit of routing, the MoE layer, checkpoints, placement, the cache and the CLIs: bad
// input gets a typed error naming the option (never NaN weights or a silently dropped assignment), and
// the command lines answer in moekit's words. Each test failed before its fix.
import assert from "node:assert/strict";
import {
  accessTrace,
  applyCapacity,
  capacityRouter,
  combineMatrix,
  cvSquaredLoss,
  deepseekBiasUpdate,
  deepseekV2Router,
  deepseekV3Router,
  dispatch,
  expertAwareBatching,
  expertLoadsPerStep,
  expertsForward,
  loadMetrics,
  matrix,
  MoekitError,
  moeLayer,
  NonFiniteError,
  OptionError,
  randomExperts,
  recurrentRouter,
  type RoutingResult,
  runMergeCli,
  runModelCli,
  ShapeError,
  simulateCache,
  sinkhorn,
  sinkhornRouter,
  swigluForward,
  switchRouter,
  topKRouter,
} from "../mod.ts";
import { dispatchTraffic, expertLoadMatrix, identityPlacement } from "../lib/placement/mod.ts";
import { parseLayers } from "../lib/cli/model_cli.ts";
import { loadTensor } from "../lib/checkpoints/tensors.ts";
import { captureConsole, runExample } from "./harness.ts";
import { FIXTURES, fixturesMissing } from "./checkpoints_helpers.ts";

/** Asserts that `fn` throws an instance of `type` whose message contains every one of `parts`. */
function throwsNaming(fn: () => unknown, type: new (...a: never[]) => Error, ...parts: string[]): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof type, `${e.constructor.name}: ${e.message} (wanted ${type.name})`);
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" does not name ${p}`);
    return true;
  });
}

/** Single and double quotes come in pairs (Node's unknown-option hint left one open). */
function balancedQuotes(text: string): boolean {
  return (text.match(/"/g) ?? []).length % 2 === 0 && (text.match(/'/g) ?? []).length % 2 === 0;
}

const w = matrix.randn(4, 3, { seed: 1 }), x = matrix.randn(5, 3, { seed: 2 });

Deno.test("examples: a bad flag is named, with the allowed flags, in balanced quotes", async () => {
  const unknown = await runExample("route.ts", [], ["--bogus"]);
  assert.equal(unknown.code, 2);
  const first = unknown.stderr.split("\n")[0];
  assert.match(first, /^error: unknown option --bogus; the options are --tokens, --experts, .*--help/);
  assert.ok(balancedQuotes(first), first);
  const missing = await runExample("placement.ts", [], ["--nodes"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^error: --nodes needs a value: --nodes <value>\n/);
  const dashed = await runExample("placement.ts", [], ["--redundant", "-32"]);
  assert.match(
    dashed.stderr,
    /^error: --redundant needs a value; write one that starts with "-" as --redundant=-…\n/,
  );
  const valued = await runExample("cache.ts", [], ["--json=yes"]);
  assert.match(valued.stderr, /^error: --json takes no value/);
  const positional = await runExample("compress.ts", [], ["extra"]);
  assert.match(
    positional.stderr,
    /^error: unexpected argument "extra": this program takes only options; .*--seed/,
  );
});

Deno.test("mod.ts commands: a bad flag is named, with the allowed flags, in balanced quotes", async () => {
  const merge = await captureConsole(() => runMergeCli(["c.yaml", "out", "--bogus"]));
  assert.equal(merge.code, 2);
  const line = merge.err.split("\n")[0];
  assert.match(
    line,
    /^error: unknown option --bogus; the options are --dry-run, .*--help; an argument that starts/,
  );
  assert.ok(balancedQuotes(line), line);
  const inspect = await captureConsole(() => runModelCli("inspect", ["dir", "--bogus"]));
  assert.equal(inspect.code, 2);
  assert.match(inspect.err, /^error: unknown option --bogus; the options are --json;/);
  assert.ok(balancedQuotes(inspect.err), inspect.err);
  const route = await captureConsole(() => runModelCli("route", ["dir", "--hidden"]));
  assert.equal(route.code, 2);
  assert.equal(
    route.err,
    'error: --hidden needs a value: --hidden <value>\nrun "deno run -A mod.ts route --help" for all options\n',
  );
});

Deno.test("route.ts --experts 3: the separator is as wide as the header, not the skipped router's note", async () => {
  const r = await runExample("route.ts", [], ["--experts", "3", "--tokens", "256", "--router", "topk,base"]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n");
  const h = lines.findIndex((l) => l.startsWith("router"));
  assert.ok(lines[h + 1].startsWith("──"));
  assert.ok(lines.some((l) => l.startsWith("base") && l.includes("skipped:")), "BASE is skipped at E = 3");
  assert.equal([...lines[h + 1]].length, [...lines[h]].length);
});

Deno.test("DeepSeek: a NaN, negative or infinite routedScalingFactor is refused (it made NaN / negative weights)", () => {
  for (const scale of [NaN, -1, 0, Infinity]) {
    throwsNaming(
      () => deepseekV3Router({ weight: w, k: 2, routedScalingFactor: scale }),
      OptionError,
      "routedScalingFactor",
    );
    throwsNaming(
      () => deepseekV2Router({ weight: w, k: 2, routedScalingFactor: scale }),
      OptionError,
      "routedScalingFactor",
    );
  }
  const ok = deepseekV3Router({ weight: w, k: 2, routedScalingFactor: 2.5 }).route(x);
  assert.ok(ok.weights.every((v) => v > 0 && v <= 2.5));
});

Deno.test("DeepSeek-V3: groupTopN must be an integer ≥ 1 (0 scored every group 0 and kept groups by index)", () => {
  const w8 = matrix.randn(8, 3, { seed: 1 });
  for (const n of [0, 1.5, NaN, -2]) {
    throwsNaming(
      () => deepseekV3Router({ weight: w8, k: 2, nGroup: 4, topkGroup: 2, groupTopN: n }),
      OptionError,
      "groupTopN",
    );
  }
  assert.equal(deepseekV3Router({ weight: w8, k: 2, nGroup: 4, topkGroup: 2, groupTopN: 1 }).k, 2);
});

Deno.test("DeepSeek-V3: a non-finite correction bias is named, at build and when set later (the bias is live)", () => {
  throwsNaming(
    () => deepseekV3Router({ weight: w, k: 2, bias: Float32Array.from([0, NaN, 0, 0]) }),
    NonFiniteError,
    "e_score_correction_bias",
    "col 1",
  );
  const router = deepseekV3Router({ weight: w, k: 2 });
  router.bias[2] = Infinity;
  throwsNaming(() => router.route(x), NonFiniteError, "e_score_correction_bias", "col 2");
});

Deno.test("deepseekBiasUpdate: NaN or negative counts are refused and the bias is left as it was", () => {
  const bias = Float32Array.from([0.1, 0.2, 0.3, 0.4]);
  throwsNaming(() => deepseekBiasUpdate(bias, [1, NaN, 2, 3], 0.1), OptionError, "counts[1]");
  throwsNaming(() => deepseekBiasUpdate(bias, [1, 2, -3, 3], 0.1), OptionError, "counts[2]");
  assert.deepEqual(Array.from(bias), Array.from(Float32Array.from([0.1, 0.2, 0.3, 0.4])));
});

Deno.test("a non-finite gate bias is named as the bias, not blamed on an X·Wᵀ overflow", () => {
  assert.throws(
    () => topKRouter({ weight: w, bias: [1, 2, NaN, 0] }),
    (e: Error) =>
      e instanceof NonFiniteError && /^gate bias: .*col 2/.test(e.message) &&
      !/overflow/.test(e.message.split(";")[0]),
  );
});

Deno.test("an unknown expert activation is refused (it computed NaN outputs)", () => {
  const experts = randomExperts({ experts: 4, dim: 3, hidden: 6, seed: 3 });
  const relu = { kind: "relu" } as never;
  throwsNaming(
    () => moeLayer({ router: topKRouter({ weight: w }), experts, activation: relu }),
    OptionError,
    "activation.kind",
    "silu",
  );
  throwsNaming(() => swigluForward(experts[0], x, relu), OptionError, "activation.kind");
  throwsNaming(
    () => expertsForward(experts, x, topKRouter({ weight: w }).route(x), relu),
    OptionError,
    "activation.kind",
  );
});

Deno.test("expertsForward: an expert whose up projection w3 differs from w1 is a ShapeError (it misread rows)", () => {
  const experts = randomExperts({ experts: 4, dim: 3, hidden: 6, seed: 3 });
  const bad = experts.map((e, i) => (i === 1 ? { ...e, w3: matrix.randn(5, 3, { seed: 9 }) } : e));
  const r = topKRouter({ weight: w }).route(x);
  assert.ok(r.indices.includes(1), "expert 1 is routed");
  throwsNaming(() => expertsForward(bad, x, r), ShapeError, "expert w3", "[6,3]", "[5,3]");
});

Deno.test("dispatch, loadMetrics, combineMatrix, dispatchTraffic: an expert id outside −1..E−1 is named", () => {
  const r = topKRouter({ weight: w, k: 2 }).route(x);
  const bad: RoutingResult = { ...r, indices: Int32Array.from(r.indices, (e, i) => (i === 3 ? 7 : e)) };
  for (const f of [() => dispatch(bad), () => loadMetrics(bad), () => combineMatrix(bad)]) {
    throwsNaming(f, OptionError, "routing.indices[3] = 7", "−1..3", "token 1, choice 1");
  }
  const short: RoutingResult = { ...r, indices: r.indices.slice(0, 9) };
  throwsNaming(() => dispatch(short), ShapeError, "routing.indices", "[10]", "[9]");
  const p = identityPlacement({ layers: 1, experts: 4, numGpus: 2, numNodes: 1 });
  throwsNaming(() => dispatchTraffic(bad, p, { bytesPerToken: 2 }), OptionError, "routing.indices[3] = 7");
  assert.equal(loadMetrics(r).counts.reduce((a, b) => a + b, 0), 10);
});

Deno.test("cvSquaredLoss: importance and load of different lengths, or non-finite, are refused", () => {
  throwsNaming(() => cvSquaredLoss([1, 2, 3], [1, 2]), ShapeError, "load", "[3]", "[2]");
  throwsNaming(() => cvSquaredLoss([1, NaN, 3], [1, 2, 3]), NonFiniteError, "importance", "col 1");
  assert.equal(cvSquaredLoss([2, 0], [1, 1]).toFixed(6), "1.000000");
});

Deno.test("simulateCache: expertBytes must be finite ≥ 0; trace keys must be integers", () => {
  for (const b of [NaN, -1, Infinity]) {
    throwsNaming(
      () => simulateCache([0, 1, 0], { capacity: 1, policy: "lru", expertBytes: b }),
      OptionError,
      "expertBytes",
    );
  }
  throwsNaming(
    () => simulateCache([0, 1.5, 2], { capacity: 1, policy: "belady" }),
    OptionError,
    "trace[1] = 1.5",
  );
  throwsNaming(() => simulateCache([0, NaN], { capacity: 1, policy: "lru" }), OptionError, "trace[1] = NaN");
  // a negative key was read as "no victim" by the prefetcher
  throwsNaming(
    () => simulateCache([0, -1], { capacity: 1, policy: "lookahead", prefetch: 1 }),
    OptionError,
    "trace[1] = -1",
  );
  const r = topKRouter({ weight: w, k: 1 }).route(x);
  assert.equal(
    simulateCache(accessTrace([r, r]), { capacity: 2, policy: "lru", expertBytes: 3 }).bytesMoved % 3,
    0,
  );
});

Deno.test("--layers: a reversed range is an error (it routed nothing), a layer named twice runs once", () => {
  throwsNaming(() => parseLayers("1-0", [0, 1]), MoekitError, "1-0", "0-1");
  assert.deepEqual(parseLayers("0,0,1,0-1", [0, 1]), [0, 1]);
  assert.deepEqual(parseLayers("1,0", [0, 1]), [1, 0]);
});

Deno.test({
  name: `loadTensor: a missing tensor's message says how many names it left out${
    fixturesMissing ? ` (skipped: ${fixturesMissing})` : ""
  }`,
  ignore: fixturesMissing !== undefined,
  fn: async () => {
    const path = new URL("olmoe/expected.safetensors", FIXTURES).pathname; // 13 tensors
    await assert.rejects(
      () => loadTensor(path, "nope"),
      (e: Error) => /has no tensor nope; it has (.*, ){8}… \(5 more\)$/.test(e.message),
    );
  },
});

Deno.test("Sinkhorn: maxIterations must be an integer ≥ 1 (NaN or −1 ran 0 iterations), tol finite > 0", () => {
  const logits = matrix.fromArrays([[.2, 0], [.1, 0], [.3, 0], [.4, 0]]);
  for (const maxIterations of [NaN, -1, 0, 2.5]) {
    throwsNaming(() => sinkhorn(logits, { maxIterations }), OptionError, "maxIterations");
    throwsNaming(() => sinkhornRouter({ weight: w, maxIterations }), OptionError, "maxIterations");
  }
  for (const tol of [NaN, 0, Infinity]) throwsNaming(() => sinkhorn(logits, { tol }), OptionError, "tol");
  assert.ok(sinkhorn(logits, { maxIterations: 1 }).iterations === 1);
});

Deno.test("deno run mod.ts --help: the usage on stdout, exit 0 (it was a usage error: stderr, exit 2)", async () => {
  const run = async (...args: string[]) => {
    const mod = new URL("../mod.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", mod, ...args],
      env: { NO_COLOR: "1" },
    })
      .output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const help = await run("--help");
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^usage: deno run -A mod\.ts merge /);
  const none = await run();
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^usage: /);
  const unknown = await run("frobnicate");
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^error: unknown command "frobnicate"/);
});

Deno.test("recurrentRouter seeded init: a bad hiddenSize or experts is named (it said rows = 1.5, or blamed a gate weight)", () => {
  for (const hiddenSize of [0, 1.5, NaN]) {
    throwsNaming(
      () => recurrentRouter({ layers: 2, dim: 3, experts: 4, hiddenSize }),
      OptionError,
      "hiddenSize",
    );
  }
  for (const experts of [0, 2.5]) {
    throwsNaming(
      () => recurrentRouter({ layers: 2, dim: 3, experts, hiddenSize: 4 }),
      OptionError,
      "experts",
    );
  }
  assert.equal(recurrentRouter({ layers: 2, dim: 3, experts: 4, hiddenSize: 4 }).experts, 4);
});

Deno.test({
  name:
    `compress: another method's option, --ratio with --rank, a bad --prune-method or too large a --rank are refused up front${
      fixturesMissing ? ` (skipped: ${fixturesMissing})` : ""
    }`,
  ignore: fixturesMissing !== undefined,
  fn: async () => {
    const dir = new URL("olmoe/", FIXTURES).pathname, out = `${await Deno.makeTempDir()}/out`;
    const compress = (...flags: string[]) =>
      captureConsole(() =>
        runModelCli("compress", [`${dir}model`, out, "--calibration", `${dir}expected.safetensors`, ...flags])
      );
    const cases: [string[], RegExp][] = [
      [
        ["--method", "prune", "--keep", "8", "--groups", "3"],
        /^error: compress: --groups does not apply to --method prune \(its options: --keep, --prune-method\)\nrun "deno run -A mod\.ts compress --help" for all options\n$/,
      ],
      [["--method", "rtn", "--rank", "4"], /--rank does not apply to --method rtn/],
      [["--method", "svd", "--ratio", "0.5", "--rank", "3"], /give --ratio or --rank, not both/],
      [
        ["--method", "prune", "--keep", "8", "--prune-method", "x"],
        /--prune-method "x"; use enumerate, greedy, count, weightSum, reap/,
      ],
      [["--method", "svd", "--rank", "1000"], /--rank 1000 exceeds min\(f, d\) = 24/],
    ];
    for (const [flags, pattern] of cases) {
      const r = await compress(...flags);
      assert.equal(r.code, 2, flags.join(" "));
      assert.match(r.err, pattern);
      assert.equal(r.out, "", "nothing printed before the error (no table header, no layer work)");
    }
    await assert.rejects(() => Deno.stat(out), Deno.errors.NotFound);
    await Deno.remove(out.slice(0, -4), { recursive: true });
  },
});

Deno.test("expertLoadsPerStep / expertAwareBatching: a bad token order or layers of different T are named", () => {
  const r = topKRouter({ weight: w, k: 1 }).route(x); // T = 5
  throwsNaming(() => expertLoadsPerStep([r], [0, 1, 7], 2), OptionError, "order[2] = 7", "0..4");
  throwsNaming(() => expertLoadsPerStep([r], [0, 1, 1], 2), OptionError, "order[2] = 1", "repeated");
  throwsNaming(() => expertLoadsPerStep([r], [0, 1.5], 2), OptionError, "order[1] = 1.5");
  const shorter = topKRouter({ weight: w, k: 1 }).route(matrix.randn(3, 3, { seed: 4 }));
  throwsNaming(() => expertAwareBatching([r, shorter], 2), MoekitError, "layer 1 routes 3 tokens");
  assert.deepEqual(expertLoadsPerStep([r], [4, 3], 2).length, 1);
});

Deno.test("expertLoadMatrix: an expert id below −1 is named (it was counted nowhere), with its step and layer", () => {
  const r = topKRouter({ weight: w, k: 2 }).route(x);
  const bad: RoutingResult = { ...r, indices: Int32Array.from(r.indices, (e, i) => (i === 1 ? -2 : e)) };
  throwsNaming(() => expertLoadMatrix([r, bad]), OptionError, "routings[0][1].indices[1] = -2", "−1..3");
  throwsNaming(() => expertLoadMatrix([[r], [bad]]), OptionError, "routings[1][0].indices[1] = -2");
  assert.deepEqual(Array.from(expertLoadMatrix([r])[0]).reduce((a, b) => a + b, 0), 10);
});

Deno.test("examples/compress.ts --out onto a folder: one-line error before any work, exit 2, no stack trace", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await runExample("compress.ts", [`--allow-write=${dir}`], ["--out", dir]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^error: --out ${dir}: is a folder; give a file name`));
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("switchRouter: a drop policy other than position / bpr is refused (it ran silently as a non-Switch router)", () => {
  for (const policy of ["probs", "megatron_position"]) {
    throwsNaming(
      () => switchRouter({ weight: w, policy: policy as never }),
      OptionError,
      "policy",
      "capacityRouter takes",
    );
  }
  throwsNaming(
    () => switchRouter({ weight: w, policy: "bogus" as never }),
    OptionError,
    `policy = "bogus"`,
    `"bpr"`,
  );
  assert.equal(switchRouter({ weight: w, policy: "bpr" }).name, "switch-bpr");
});

Deno.test("capacity: a last group shorter than groupSize gets the capacity of its own size", () => {
  // E = 2, k = 1, cf = 1, "ceil": groups of 4 tokens → C = ceil(4/2) = 2; the last group of 2 → C = 1
  const claims = {
    tokens: 6,
    experts: 2,
    k: 1,
    indices: new Int32Array([0, 0, 0, 0, 0, 0]),
    weights: new Float32Array([.9, .8, .7, .6, .5, .4]),
    scores: new Float32Array([.9, .8, .7, .6, .5, .4]),
  };
  const d = applyCapacity(claims, { groupSize: 4 });
  assert.deepEqual(Array.from(d.keep), [1, 1, 0, 0, 1, 0]);
  assert.deepEqual(Array.from(d.slot), [0, 1, -1, -1, 0, -1]);
  assert.equal(d.capacity, 2);
  // T a multiple of groupSize: every group the same capacity
  const even = applyCapacity({ ...claims, tokens: 4, indices: claims.indices.subarray(0, 4) }, {
    groupSize: 2,
  });
  assert.deepEqual(Array.from(even.keep), [1, 0, 1, 0]);
});

Deno.test("parseMergeConfig needs no permission at all (the YAML package it used read LOG_TOKENS from the environment)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/parse.ts`;
    const merging = new URL("../lib/merging/mod.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { parseMergeConfig } from ${JSON.stringify(merging)};
const c = parseMergeConfig("merge_method: ties\\nbase_model: ./b\\nmodels:\\n  - model: ./a\\n    parameters: {weight: 1, density: 0.5}\\n");
console.log(c.method, c.models.length);`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--no-lock", script],
      env: { NO_COLOR: "1" },
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    assert.equal(dec.decode(out.stdout).trim(), "ties 1");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("capacity options are checked when the router is made (they were first checked at its first route), combine too", () => {
  throwsNaming(() => switchRouter({ weight: w, capacityFactor: -1 }), OptionError, "capacityFactor = -1");
  throwsNaming(() => capacityRouter({ weight: w, capacityFactor: NaN }), OptionError, "capacityFactor = NaN");
  throwsNaming(() => capacityRouter({ weight: w, groupSize: 0 }), OptionError, "groupSize = 0");
  // a misspelt combine rule silently kept the weights
  throwsNaming(
    () => capacityRouter({ weight: w, combine: "renormalise" as "renormalize" }),
    OptionError,
    "combine",
    "renormalize",
  );
  assert.equal(capacityRouter({ weight: w, combine: "renormalize" }).route(x).tokens, x.rows);
});
