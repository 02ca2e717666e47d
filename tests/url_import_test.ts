import assert from "node:assert/strict";
import { serveRepo } from "./serve_repo.ts";

Deno.test("mod.ts imports over plain HTTP into a folder with no deno.json, and routes", async () => {
  const { url, close } = serveRepo();
  const dir = await Deno.makeTempDir({ prefix: "moekit-url-" });
  try {
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      `import { loadMetrics, matrix, merge, topKRouter } from "${url}/mod.ts";
const r = topKRouter({ weight: matrix.randn(8, 16, { seed: 1 }), k: 2 }).route(matrix.randn(64, 16, { seed: 2 }));
const m = merge({ method: "ties", base: { shape: [2], data: new Float64Array(2) }, models: [{ tensor: { shape: [2], data: new Float64Array([1, -1]) }, params: { weight: 1 } }] });
console.log(JSON.stringify({ tokens: r.tokens, kept: loadMetrics(r).counts.reduce((a, b) => a + b, 0), merged: Array.from(m.data) }));
`,
    );
    const host = url.replace("http://", "");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--no-config", "--no-lock", `--allow-import=${host}`, "main.ts"],
      cwd: dir,
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), {
      tokens: 64,
      kept: 128,
      merged: [1, -1],
    });
  } finally {
    await close();
    await Deno.remove(dir, { recursive: true });
  }
});
