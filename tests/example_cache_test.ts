import assert from "node:assert/strict";
import { runExample } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

Deno.test("examples/cache.ts: Belady ≥ lookahead ≥ LRU ≥ FIFO on the pre-gated stream", async () => {
  const out = await runExample("cache.ts", [], ["--json", "--tokens", "1024"]);
  assert.equal(out.code, 0, out.stderr);
  const report = JSON.parse(out.stdout);
  for (const name of ["top-k", "rmoe", "pre-gate"]) {
    const { hitRate, sizes } = report.routers[name];
    for (let i = 0; i < sizes.length; i++) {
      assert.ok(hitRate.belady[i] >= hitRate.lookahead[i], `${name} size ${sizes[i]}: belady ≥ lookahead`);
      assert.ok(hitRate.lookahead[i] >= hitRate.lru[i], `${name} size ${sizes[i]}: lookahead ≥ lru`);
      assert.ok(hitRate.lru[i] >= hitRate.fifo[i], `${name} size ${sizes[i]}: lru ≥ fifo`);
      if (i > 0) assert.ok(hitRate.belady[i] >= hitRate.belady[i - 1], "a bigger cache never hurts MIN");
    }
  }
  assert.ok(report.batching["pre-gate"].after < report.batching["pre-gate"].before);
  assert.equal(report.crossLayer["rmoe"].sameSet.length, 3);
});

Deno.test("examples/cache.ts: --help prints the usage; a bad flag is one error line and a --help hint, exit 2", async () => {
  const run = (...args: string[]) => runExample("cache.ts", [], args);
  const help = await run("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: deno run examples\/cache\.ts/);
  for (
    const [args, pattern] of [
      [["--seed", "x"], /--seed must be an integer ≥ 0, got "x"/],
      [["--experts", "1"], /--experts must be an integer ≥ 2, got "1"/],
      [["--bogus"], /unknown option --bogus; the options are --/],
      [
        ["--experts", "100000"],
        /--layers 4 × --experts 100000 × --dim 64 would hold 4\.92e\+9 float32 entries/,
      ],
    ] as const
  ) {
    assertUsageError(await run(...args), "deno run examples/cache.ts", pattern, args.join(" "));
  }
});
