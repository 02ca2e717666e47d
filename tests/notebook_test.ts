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

/** The hf-tiny fixtures beside the repo (CI has them), for the notebook's real-checkpoint cell. */
const FIXTURES = (() => {
  const dir = new URL("../../shared/fixtures/hf-tiny", import.meta.url).pathname;
  try {
    return Deno.statSync(`${dir}/olmoe/model/config.json`).isFile ? dir : undefined;
  } catch {
    return undefined;
  }
})();

Deno.test({
  name: `examples/notebook.ipynb runs headless with the Deno kernel${
    missing ? ` (skipped: ${missing})` : ""
  }`,
  ignore: missing !== undefined,
  async fn() {
    const { url, close } = serveRepo();
    // run from a temporary folder: the kernel must not pick up this repo's deno.json / deno.lock
    const out = await Deno.makeTempDir({ prefix: "moekit-nb-" });
    try {
      // The Deno kernel (2.9.6) now and then publishes a cell's output after it reports the cell idle;
      // nbconvert stops listening at idle, so that output is missing from the executed file (about 1 run
      // in 6 here; a live notebook shows it). A run that lacks an expected output is run again, at most
      // twice; an error output, a failed run or outputs missing three times fail at once.
      let lacking: string[] = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        lacking = await runNotebook(url, out);
        if (lacking.length === 0) return;
        console.warn(`notebook run ${attempt}: missing ${lacking.join(", ")}`);
      }
      assert.fail(`three runs of the notebook lacked: ${lacking.join(", ")}`);
    } finally {
      await close();
      await Deno.remove(out, { recursive: true });
    }
  },
});

/**
 * Executes the notebook headless in `out` against the served checkout; asserts that it ran without an
 * error output; returns the expected outputs it lacks.
 */
async function runNotebook(url: string, out: string): Promise<string[]> {
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
    env: {
      MOEKIT_URL: `${url}/mod.ts`,
      NO_COLOR: "1",
      ...(FIXTURES ? { MOEKIT_FIXTURES: FIXTURES } : {}),
    },
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
  // every Vega-Lite output carries its PNG fallback, whatever else is missing
  assert.ok(
    vega.every((o: { data: Record<string, unknown> }) => typeof o.data["image/png"] === "string"),
    "PNG fallback present",
  );
  const text = JSON.stringify(outputs), lacking: string[] = [];
  if (vega.length < 2) lacking.push(`Vega-Lite outputs (${vega.length} of at least 2)`);
  if (!/-1\.25/.test(text)) lacking.push("the TIES cell's merged tensor");
  if (!/relativeError/.test(text)) lacking.push("the compression table");
  // the real-checkpoint cell: opens the OLMoE fixture and routes its captured inputs (where CI has it)
  if (FIXTURES && !/olmoe: E = 12, k = 3, MoE layers 0, 1/.test(text)) lacking.push("the OLMoE cell");
  return lacking;
}

Deno.test("the notebook's instructions work: `deno task serve` serves .ts as TypeScript on the URL it uses", async () => {
  const nb = JSON.parse(await Deno.readTextFile(new URL("../examples/notebook.ipynb", import.meta.url)));
  const text = (c: { source: string | string[] }) => (Array.isArray(c.source) ? c.source.join("") : c.source);
  const intro = text(nb.cells[0]);
  assert.match(intro, /deno task serve/);
  assert.match(intro, /--allow-import=127\.0\.0\.1:8000/);
  assert.doesNotMatch(intro, /serve a checkout with `python3 -m http\.server/);
  assert.match(text(nb.cells[1]), /"http:\/\/127\.0\.0\.1:8000\/mod\.ts"/);

  // the task's command line, on a free port
  const task: string =
    JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))).tasks.serve;
  assert.match(task, /^deno run .*tests\/serve_repo\.ts$/);
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const server = new Deno.Command(Deno.execPath(), {
    args: [...task.split(" ").slice(1), "--port", String(port)],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let banner = "";
    while (!banner.includes("--allow-import")) {
      const { value, done } = await reader.read();
      if (done) break;
      banner += value;
    }
    reader.releaseLock();
    assert.match(banner, new RegExp(`deno run --allow-import=127\\.0\\.0\\.1:${port}`));
    const res = await fetch(`http://127.0.0.1:${port}/mod.ts`);
    assert.equal(res.headers.get("content-type"), "application/typescript");
    assert.match(await res.text(), /export \* from "\.\/lib\/core\/mod\.ts"/);
    const missing = await fetch(`http://127.0.0.1:${port}/no-such-file.ts`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  } finally {
    server.kill();
    await server.status;
    await server.stdout.cancel().catch(() => {});
    await server.stderr.cancel();
  }
});
