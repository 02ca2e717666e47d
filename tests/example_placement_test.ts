import assert from "node:assert/strict";
import { runExample } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

const run = (args: string[], permissions: string[] = []) => runExample("placement.ts", permissions, args);

const SMALL = ["--tokens", "1024", "--layers", "2"];

Deno.test("examples/placement.ts prints a row per placement and the hierarchical vs global comparison (no permissions)", async () => {
  const { code, stdout, stderr } = await run(SMALL);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /E = 256, 8 groups, k = 8, 4 groups\/token/);
  assert.match(stdout, /4 nodes × 8 GPUs/);
  const row = (label: string) => {
    const m = stdout.match(
      new RegExp(
        `^${
          label.replace("+", "\\+")
        }(?: \\([^)]*\\))?\\s+(\\d+)\\s+(\\d+)\\s+([\\d.]+)\\s+([\\d.]+)\\s+([\\d.]+)\\s+([\\d.]+)`,
        "m",
      ),
    );
    assert.ok(m, `row ${label} in:\n${stdout}`);
    return {
      R: Number(m[1]),
      slots: Number(m[2]),
      fit: Number(m[3]),
      even: Number(m[4]),
      heldOut: Number(m[5]),
      interMB: Number(m[6]),
    };
  };
  const base = row("no EPLB");
  assert.deepEqual([base.R, base.slots], [256, 8]);
  for (const policy of ["hierarchical", "global"]) {
    for (const [r, R, slots] of [[0, 256, 8], [32, 288, 9], [64, 320, 10]]) {
      const x = row(`${policy} +${r}`);
      assert.deepEqual([x.R, x.slots], [R, slots]);
      assert.ok(x.fit > base.fit, `${policy} +${r} balances the loads better than no EPLB`);
      assert.ok(x.fit <= 1 && x.even <= 1 && x.heldOut <= 1 && x.interMB > 0);
    }
    assert.ok(row(`${policy} +32`).fit > row(`${policy} +0`).fit, "redundant experts help");
  }
  assert.match(stdout, /hierarchical vs global/);
  assert.match(stdout, /^ {2}\+32: inter-node bytes [-+]?\d+\.\d %/m);
});

Deno.test("examples/placement.ts --json agrees with the table's shape; bytes add up per row", async () => {
  const { code, stdout, stderr } = await run([...SMALL, "--json", "--redundant", "0,32"]);
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.equal(report.config.experts, 256);
  assert.deepEqual(
    report.rows.map((r: { policy: string; redundant: number }) => `${r.policy}+${r.redundant}`),
    ["identity+0", "hierarchical+0", "hierarchical+32", "global+0", "global+32"],
  );
  // every held-out token goes somewhere: bytes = tokens × destinations × 7168, with ≥ 1 destination per token
  for (const r of report.rows) {
    const total = r.localBytes + r.intraNodeBytes + r.interNodeBytes;
    assert.equal(total % 7168, 0);
    assert.ok(total / 7168 >= 512 * 2 && r.nodesPerToken >= 1 && r.nodesPerToken <= 4);
  }
});

Deno.test("examples/placement.ts --plots writes JSON + SVG, never replaces files unless --overwrite", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/plots`;
    const first = await run([...SMALL, "--plots", out], [`--allow-write=${dir}`]);
    assert.equal(first.code, 0, first.stderr);
    const names = ["placement-gpu-load", "placement-traffic", "placement-balancedness"];
    for (const n of names) {
      assert.match(await Deno.readTextFile(`${out}/${n}.svg`), /^<svg/);
      assert.equal(
        JSON.parse(await Deno.readTextFile(`${out}/${n}.json`)).$schema,
        "https://vega.github.io/schema/vega-lite/v5.json",
      );
    }
    const before = (await Deno.stat(`${out}/placement-traffic.svg`)).mtime;
    const again = await run([...SMALL, "--plots", out], [`--allow-write=${dir}`]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /exists; remove it or pass --overwrite/);
    // with read access the files are seen before any work (no table printed)
    const early = await run([...SMALL, "--plots", out], [`--allow-write=${dir}`, `--allow-read=${dir}`]);
    assert.equal(early.code, 2);
    assert.match(early.stderr, /placement-gpu-load\.json exists; remove it or pass --overwrite/);
    assert.equal(early.stdout, "");
    assert.deepEqual((await Deno.stat(`${out}/placement-traffic.svg`)).mtime, before);
    assert.deepEqual((await Deno.stat(`${out}/placement-traffic.svg`)).mtime, before);
    const forced = await run([...SMALL, "--plots", out, "--overwrite"], [`--allow-write=${dir}`]);
    assert.equal(forced.code, 0, forced.stderr);
    const denied = await run([...SMALL, "--plots", out]);
    assert.equal(denied.code, 2);
    assert.match(denied.stderr, new RegExp(`--allow-write=${out}`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/placement.ts --plots at a file: one line, exit 2, before any work, nothing written", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/afile`, "x");
    for (const [plots, problem] of [["afile", "exists"], ["afile/sub", `${dir}/afile exists`]]) {
      const r = await run([...SMALL, "--plots", `${dir}/${plots}`], ["-A"]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.split("\n")[0], `error: --plots ${dir}/${plots}: ${problem} and is not a folder`);
      assert.doesNotMatch(r.stderr, /\n\s+at |Uncaught/, "no stack trace");
      assert.equal(r.stdout, "", "refused before any work");
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["afile"]);
    assert.equal(await Deno.readTextFile(`${dir}/afile`), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/placement.ts --help exits 0; a bad flag is one error line and a --help hint, exit 2", async () => {
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: deno run examples\/placement.ts/);
  for (
    const [args, pattern] of [
      [["--bogus"], /unknown option --bogus; the options are --/],
      [["--tokens", "x"], /--tokens must be an integer ≥ 2, got "x"/],
      [
        ["--redundant", "0,16"],
        /--redundant 16: 256 \+ 16 slots do not split over 32 GPUs \(272 % 32 = 16\); the nearest that do: --redundant 0 or 32 \(256 \+ R must be a multiple of 32\)/,
      ],
      [
        ["--nodes", "3"],
        /--redundant 0: 256 \+ 0 slots do not split over 24 GPUs \(256 % 24 = 16\); the nearest that do: --redundant 8 \(/,
      ],
      [["--redundant", "a"], /--redundant takes integers ≥ 0/],
      [["--decay", "1"], /--decay must be a number in \[0, 1\)/],
      [["--nodes", "0"], /--nodes must be an integer ≥ 1/],
      [["--steps", "9", "--tokens", "16"], /--steps 9 exceeds the 8 tokens/],
      [["--plots", ""], /--plots needs a directory/],
      [["--tokens", "100000000"], /would hold 2\.11e\+11 float32 entries \(786\.8 GiB\)/],
    ] as const
  ) {
    assertUsageError(await run([...args]), "deno run examples/placement.ts", pattern, args.join(" "));
  }
  // a topology whose group count does not divide over the nodes: hierarchical is skipped, global runs
  const three = await run([
    "--tokens",
    "256",
    "--layers",
    "1",
    "--nodes",
    "2",
    "--gpus-per-node",
    "4",
    "--redundant",
    "0,8",
  ]);
  assert.equal(three.code, 0, three.stderr);
  assert.match(three.stdout, /^global \+8\s+264\s+33/m);
  const odd = await run([
    "--tokens",
    "256",
    "--layers",
    "1",
    "--nodes",
    "3",
    "--gpus-per-node",
    "1",
    "--redundant",
    "2",
  ]);
  assert.equal(odd.code, 0, odd.stderr);
  assert.match(odd.stdout, /hierarchical skipped: 8 groups do not divide over 3 nodes/);
  assert.doesNotMatch(odd.stdout, /no EPLB/);
});
