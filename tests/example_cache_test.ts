import assert from "node:assert/strict";

Deno.test("examples/cache.ts: Belady ≥ lookahead ≥ LRU ≥ FIFO on the pre-gated stream", async () => {
  const script = new URL("../examples/cache.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", script, "--json", "--tokens", "1024"],
  })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const report = JSON.parse(new TextDecoder().decode(out.stdout));
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
