// Every example and mod.ts command reports a command-line mistake the same way (lib/cli/args.ts's
// usageErrorText): one `error: …` line naming the flag, the bad value and what is allowed, one hint to run
// with --help, exit 2 — they used to print the whole usage text after it. --help prints the usage, exit 0.
import assert from "node:assert/strict";
import { parseCommandLine, UsageError, usageErrorText } from "../lib/cli/args.ts";
import { runExample } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

const EXAMPLES: [name: string, command: string, flags: string[]][] = [
  ["route.ts", "deno run examples/route.ts", []],
  ["cache.ts", "deno run examples/cache.ts", []],
  ["compress.ts", "deno run examples/compress.ts", []],
  ["merge.ts", "deno run -A examples/merge.ts", ["-A"]],
  ["placement.ts", "deno run examples/placement.ts", []],
  ["plots.ts", "deno run -A examples/plots.ts", ["-A"]],
];

Deno.test("every example: an unknown flag is one error line and a --help hint (exit 2); --help is the usage (exit 0)", async () => {
  for (const [name, command, flags] of EXAMPLES) {
    assertUsageError(
      await runExample(name, flags, ["--bogus"]),
      command,
      /^error: unknown option --bogus; the options are (--[a-z-]+, )*--help\b/,
      name,
    );
    const help = await runExample(name, flags, ["--help"]);
    assert.equal(help.code, 0, `${name}: ${help.stderr}`);
    assert.ok(help.stdout.startsWith(`usage: ${command} `), `${name}: ${help.stdout}`);
    assert.equal(help.stderr, "", name);
  }
});

Deno.test("examples/plots.ts: a flag is checked by the shared parser (it printed the usage for any '-' argument)", async () => {
  const cmd = "deno run -A examples/plots.ts";
  // nothing is rendered or written: every one of these stops before the work
  assertUsageError(await runExample("plots.ts", ["-A"], ["--out", "x"]), cmd, /unknown option --out/);
  assertUsageError(
    await runExample("plots.ts", ["-A"], ["a", "b"]),
    cmd,
    /^error: unexpected argument "b": this program takes at most 1 \(deno run -A examples\/plots\.ts \[out-dir\]/,
  );
  const h = await runExample("plots.ts", ["-A"], ["-h"]);
  assert.equal(h.code, 0, h.stderr);
  assert.match(h.stdout, /^usage: deno run -A examples\/plots\.ts \[out-dir\]/);
});

Deno.test("usageErrorText: the message's first line and a hint naming the command's --help", () => {
  assert.equal(
    usageErrorText('--seed "x": use an integer\nsecond line', "deno run examples/route.ts"),
    'error: --seed "x": use an integer\nrun "deno run examples/route.ts --help" for all options',
  );
  assert.throws(
    () => parseCommandLine({ args: ["--bogus"], options: { help: { type: "boolean" } } }),
    (e: Error) =>
      e instanceof UsageError && /^unknown option --bogus; the options are --help$/.test(e.message),
  );
});
