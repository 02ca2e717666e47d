import assert from "node:assert/strict";
import { runExample } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

const run = (flags: string[], args: string[], env: Record<string, string> = {}) =>
  runExample("merge.ts", flags, args, { env });

Deno.test("examples/merge.ts: --help prints the usage; a bad flag is one error line and a --help hint, exit 2", async () => {
  const help = await run([], ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: deno run -A examples\/merge\.ts/);
  assert.match(help.stdout, /--keep/);
  for (
    const [flags, args, pattern] of [
      [["-A"], ["--seed", "x"], /--seed must be an integer ≥ 0, got "x"/],
      [["-A"], ["--dim", "4"], /--dim must be an integer ≥ 8, got "4"/],
      [["-A"], ["--bogus"], /unknown option --bogus; the options are --/],
    ] as const
  ) {
    assertUsageError(
      await run([...flags], [...args]),
      "deno run -A examples/merge.ts",
      pattern,
      args.join(" "),
    );
  }
  // a missing permission is not a command-line mistake: one line saying what to do, no --help hint
  const denied = await run([], []);
  assert.equal(denied.code, 2, denied.stderr);
  assert.match(denied.stderr, /^error: it needs --allow-read: .*\(or run with -A\)\n$/);
});

Deno.test("examples/merge.ts removes its temporary files, or keeps them with --keep and says where", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "moekit-merge-example-test-" });
  try {
    const r = await run(["-A"], ["--dim", "16"], { TMPDIR: tmp });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ties \(density \.2\)/m);
    // the comparison sentence is derived from the table: TIES's kept τ against the sum's, as printed
    const keptMean = (label: string) => {
      const cells = r.stdout.split("\n").find((l) => l.startsWith(label))!.split(/\s{2,}/);
      return (Number(cells[1]) + Number(cells[2]) + Number(cells[3])) / 3;
    };
    const ties = keptMean("ties (density .2)"), sum = keptMean("task arithmetic (sum)");
    const said = r.stdout.replace(/\s+/g, " ").match( // unwrapped
      /TIES keeps [\d.]+ of each task \(mean of kept τi\): (\S+ than|about the same as) the sum/,
    )?.[1];
    assert.equal(
      said,
      Math.abs(ties - sum) < 0.005 ? "about the same as" : ties > sum ? "more than" : "less than",
    );
    assert.match(r.stdout, /temporary folder, now removed; --keep keeps them/);
    assert.deepEqual([...Deno.readDirSync(tmp)], [], "nothing left in TMPDIR");

    const kept = await run(["-A"], ["--dim", "16", "--keep"], { TMPDIR: tmp });
    assert.equal(kept.code, 0, kept.stderr);
    const dir = kept.stdout.match(/kept in (\S+)$/m)?.[1];
    assert.ok(dir?.startsWith(tmp), kept.stdout);
    assert.ok(Deno.statSync(`${dir}/base`).isDirectory);
    assert.ok([...Deno.readDirSync(dir!)].some((e) => e.name.startsWith("out-")));
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
