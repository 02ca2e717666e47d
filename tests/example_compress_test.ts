import assert from "node:assert/strict";
import { runExample } from "./harness.ts";

Deno.test("examples/compress.ts: --help, and bad flags exit 2 with the usage, no stack trace", async () => {
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
    const r = await run(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.match(r.stderr, /usage: deno run examples\/compress\.ts/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
});
