import assert from "node:assert/strict";

const script = new URL("../examples/route.ts", import.meta.url).pathname;

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // no permission flags: the example must run as `deno run examples/route.ts`
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "--no-prompt", script, ...args] })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("examples/route.ts runs with no flags and no permissions", async () => {
  const { code, stdout, stderr } = await run();
  assert.equal(code, 0, stderr);
  for (
    const name of [
      "topk",
      "switch",
      "gshard",
      "deepseek-v3",
      "expert-choice",
      "noisy",
      "hash",
      "sinkhorn",
      "base",
    ]
  ) {
    assert.match(stdout, new RegExp(`^${name}\\s+\\d`, "m"), `row for ${name}`);
  }
  assert.match(stdout, /per-expert load, topk/);
  assert.match(stdout, /e015 █+/);
});

Deno.test("examples/route.ts --json reports metrics per router", async () => {
  const { code, stdout } = await run(
    "--json",
    "--tokens",
    "256",
    "--experts",
    "8",
    "--router",
    "topk,expert-choice",
  );
  assert.equal(code, 0);
  const report = JSON.parse(stdout);
  assert.equal(report.config.experts, 8);
  assert.equal(report.routers.length, 2);
  const [topk, ec] = report.routers;
  assert.equal(topk.counts.reduce((a: number, b: number) => a + b, 0), 256 * 2 * 4);
  assert.equal(ec.cv, 0);
  assert.equal(ec.auxLoss, null);
});

Deno.test("examples/route.ts: bad flags exit 2 with a clear message", async () => {
  for (
    const [args, pattern] of [
      [["--bogus"], /Unknown option '--bogus'/],
      [["--experts", "x"], /--experts must be an integer ≥ 2, got "x"/],
      [["--router", "nope"], /unknown router "nope"/],
      [["--top-k", "9", "--experts", "4"], /--top-k 9 exceeds --experts 4/],
      [["--capacity-factor=-1"], /--capacity-factor must be a number ≥ 0/],
    ] as const
  ) {
    const { code, stderr } = await run(...args);
    assert.equal(code, 2, args.join(" "));
    assert.match(stderr, pattern);
    assert.match(stderr, /usage: deno run examples\/route.ts/);
  }
});
