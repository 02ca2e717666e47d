import assert from "node:assert/strict";
import { serveRepo } from "./serve_repo.ts";

/** Why the notebook cannot run here, or undefined when jupyter nbconvert and the Deno kernel are available. */
function jupyterMissing(): string | undefined {
  try {
    const v = new Deno.Command("jupyter", {
      args: ["nbconvert", "--version"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    if (!v.success) {
      return "`jupyter nbconvert` is not installed (apt-get install jupyter-nbconvert jupyter-client)";
    }
  } catch {
    return "`jupyter` is not on PATH (apt-get install jupyter-nbconvert jupyter-client)";
  }
  const specs = new Deno.Command("jupyter", {
    args: ["kernelspec", "list", "--json"],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const list = specs.success ? JSON.parse(new TextDecoder().decode(specs.stdout)).kernelspecs ?? {} : {};
  if (!list.deno) {
    const install = new Deno.Command(Deno.execPath(), {
      args: ["jupyter", "--install"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    if (!install.success) {
      return "the Deno Jupyter kernel could not be installed (`deno jupyter --install` failed)";
    }
  }
  return undefined;
}

const missing = jupyterMissing();

Deno.test({
  name: `examples/notebook.ipynb runs headless with the Deno kernel${
    missing ? ` (skipped: ${missing})` : ""
  }`,
  ignore: missing !== undefined,
  async fn() {
    const { url, close } = serveRepo();
    try {
      // run from a temporary folder: the kernel must not pick up this repo's deno.json / deno.lock
      const out = await Deno.makeTempDir({ prefix: "moekit-nb-" });
      const nb = `${out}/notebook.ipynb`;
      await Deno.copyFile(new URL("../examples/notebook.ipynb", import.meta.url), nb);
      const r = await new Deno.Command("jupyter", {
        args: [
          "nbconvert",
          "--to",
          "notebook",
          "--execute",
          nb,
          "--output",
          "executed.ipynb",
          "--ExecutePreprocessor.timeout=300",
        ],
        cwd: out,
        env: { MOEKIT_URL: `${url}/mod.ts`, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      const executed = JSON.parse(await Deno.readTextFile(`${out}/executed.ipynb`));
      const outputs = executed.cells.flatMap((c: { outputs?: unknown[] }) => c.outputs ?? []);
      const errors = outputs.filter((o: { output_type: string }) => o.output_type === "error");
      assert.deepEqual(errors, []);
      const vega = outputs.filter((o: { data?: Record<string, unknown> }) =>
        o.data?.["application/vnd.vegalite.v5+json"]
      );
      assert.ok(vega.length >= 2, `${vega.length} Vega-Lite outputs`);
      assert.ok(
        vega.every((o: { data: Record<string, unknown> }) => typeof o.data["image/png"] === "string"),
        "PNG fallback present",
      );
      const text = JSON.stringify(outputs);
      assert.match(text, /-1\.25/, "the TIES cell printed the merged tensor");
      assert.match(text, /relativeError/, "the compression table");
    } finally {
      await close();
    }
  },
});
