import assert from "node:assert/strict";
import { runExample } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

Deno.test("examples/compress.ts: --help prints the usage; a bad flag is one error line and a --help hint, exit 2", async () => {
  const run = (...args: string[]) => runExample("compress.ts", [], args);
  const help = await run("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: deno run examples\/compress\.ts/);
  assert.match(help.stdout, /--out FILE/);
  for (
    const [args, pattern] of [
      [["--seed", "x"], /--seed must be an integer ≥ 0, got "x"/],
      [["--seed", "1.5"], /--seed must be an integer ≥ 0, got "1.5"/],
      [["--bogus"], /unknown option --bogus; the options are --/],
      [["table"], /unexpected argument "table": this program takes only options/],
    ] as const
  ) {
    assertUsageError(await run(...args), "deno run examples/compress.ts", pattern, args.join(" "));
  }
});

Deno.test("examples/compress.ts --out: checked before any work; an existing file kept unless --overwrite", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-compress-out-" });
  try {
    const out = `${dir}/rows.json`;
    await Deno.writeTextFile(out, "old");
    await Deno.writeTextFile(`${dir}/afile`, "x");
    const rw = [`--allow-write=${dir}`, `--allow-read=${dir}`];
    for (
      const [flags, args, message] of [
        [[], ["--out", out], `--out ${out}: writing there is not allowed; run with --allow-write=${out}`],
        [rw, ["--out", out], `--out ${out}: exists; remove it or pass --overwrite`],
        // without read access the existing file is still seen up front
        [[`--allow-write=${out}`], ["--out", out], `--out ${out}: exists; remove it or pass --overwrite`],
        [
          rw,
          ["--out", `${dir}/none/rows.json`],
          `--out ${dir}/none/rows.json: the folder ${dir}/none does not exist`,
        ],
        [
          rw,
          ["--out", `${dir}/afile/rows.json`],
          `--out ${dir}/afile/rows.json: ${dir}/afile is not a folder`,
        ],
        [rw, ["--out", dir], `--out ${dir}: is a folder; give a file name`],
        [[`--allow-write=${dir}`], ["--out", dir], `--out ${dir}: is a folder; give a file name`],
        [rw, ["--overwrite"], "--overwrite applies to --out FILE only (this example writes nothing else)"],
      ] as const
    ) {
      const r = await runExample("compress.ts", flags, args);
      assert.equal(r.code, 2, `${flags} ${args}: ${r.stderr}`);
      assert.equal(r.stderr.split("\n")[0], `error: ${message}`);
      assert.equal(r.stdout, "", "refused before any work");
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    }
    assert.equal(await Deno.readTextFile(out), "old");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["afile", "rows.json"]);
    // written: over the old file with --overwrite (atomically: temp + rename), and a new file with write
    // access to that file only
    const [forced, fresh] = await Promise.all([
      runExample("compress.ts", rw, ["--out", out, "--overwrite"]),
      runExample("compress.ts", [`--allow-write=${dir}/new.json`], ["--out", `${dir}/new.json`]),
    ]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(fresh.code, 0, fresh.stderr);
    const rows = JSON.parse(await Deno.readTextFile(out));
    assert.ok(rows.length > 10 && typeof rows[0].method === "string");
    assert.equal(
      await Deno.readTextFile(`${dir}/new.json`),
      await Deno.readTextFile(out),
      "same seed, same rows",
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "afile",
      "new.json",
      "rows.json",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
