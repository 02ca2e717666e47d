import assert from "node:assert/strict";
import { runExample } from "./harness.ts";
import { assertUsageError } from "./usage_assert.ts";

const script = new URL("../examples/route.ts", import.meta.url).pathname;

// no permission flags: the example must run as `deno run examples/route.ts`
const run = (...args: string[]) => runWith([], args);

const runWith = (flags: string[], args: string[], cwd?: string) =>
  runExample("route.ts", flags, args, { cwd });

const fontInstalled = (() => {
  try {
    return Deno.statSync("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").isFile;
  } catch {
    return false;
  }
})();

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
  assert.equal(report.backend, "wasm"); // the kernels are loaded: routing runs on WebAssembly, not plain JS
  assert.equal(report.routers.length, 2);
  const [topk, ec] = report.routers;
  assert.equal(topk.counts.reduce((a: number, b: number) => a + b, 0), 256 * 2 * 4);
  assert.equal(ec.cv, 0);
  assert.equal(ec.auxLoss, null);
});

Deno.test("examples/route.ts: a bad flag is one line naming the flag, the value and the choices, then a --help hint; exit 2", async () => {
  for (
    const [args, pattern] of [
      [["--bogus"], /unknown option --bogus; the options are --/],
      [["--experts", "x"], /--experts must be an integer ≥ 2, got "x"/],
      [
        ["--router", "topk,nope"],
        /^error: --router: unknown router "nope"; the routers are topk, topk-raw, switch, topk-cap, gshard, deepseek-v3, deepseek-v3-bal, expert-choice, noisy, hash, sinkhorn, base \(or all\)$/m,
      ],
      [["--top-k", "9", "--experts", "4"], /--top-k 9 exceeds --experts 4/],
      [["--capacity-factor=-1"], /--capacity-factor must be a number ≥ 0/],
      [
        ["--tokens", "100000000"],
        /would hold 2\.24e\+10 float32 entries \(83\.4 GiB\); this example stops at 2\^28/,
      ],
    ] as const
  ) {
    assertUsageError(await run(...args), "deno run examples/route.ts", pattern, args.join(" "));
  } // --help still prints the whole usage, on stdout, exit 0
  const help = await run("--help");
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^usage: deno run examples\/route\.ts \[options\]\n/);
  assert.match(help.stdout, /--capacity-factor CF/);
  assert.equal(help.stderr, "");
});

Deno.test("examples/route.ts: the printed PNG hint works, and names what is missing", async () => {
  const small = ["--tokens", "128", "--router", "topk,switch"];
  const hint = (await run(...small)).stdout.match(/^ {2}deno run (.*) examples\/route\.ts$/m);
  assert.ok(hint, "the run without permissions prints a command line for PNG output");
  const flags = hint[1].split(" ");
  assert.ok(flags.includes("--allow-write=moekit-plots"), hint[1]);
  const dir = await Deno.makeTempDir({ prefix: "moekit-route-png-" });
  try {
    const full = await runWith(flags, small, dir);
    assert.equal(full.code, 0, full.stderr);
    assert.doesNotMatch(full.stderr, /punycode|DeprecationWarning/);
    const files = [...Deno.readDirSync(`${dir}/moekit-plots`)].map((f) => f.name).sort();
    if (fontInstalled) {
      assert.deepEqual(files.filter((f) => f.endsWith(".png")), [
        "coactivation.png",
        "layer-load.png",
        "load.png",
      ]);
      const png = await Deno.readFile(`${dir}/moekit-plots/load.png`);
      assert.deepEqual(Array.from(png.subarray(1, 4)), [0x50, 0x4e, 0x47]); // "PNG"
    } else {
      assert.match(full.stdout, /no PNG: no font for PNG text/);
    }
    // without --allow-read: the SVGs are written and the message names the missing permission
    await Deno.remove(`${dir}/moekit-plots`, { recursive: true });
    const noRead = await runWith(flags.filter((f) => f !== "--allow-read"), small, dir);
    assert.equal(noRead.code, 0, noRead.stderr);
    assert.match(noRead.stdout, /no PNG: --allow-read missing/);
    assert.doesNotMatch(noRead.stdout, /DejaVu/);
    assert.ok(Deno.statSync(`${dir}/moekit-plots/load.svg`).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/route.ts: --top-k says which routers have a fixed k", async () => {
  const { code, stdout } = await run("--top-k", "3", "--tokens", "128", "--router", "topk,gshard,switch");
  assert.equal(code, 0);
  assert.match(stdout, /^note: gshard routes top-2 by design; --top-k 3 does not apply$/m);
  assert.match(stdout, /^note: switch routes top-1 by design; --top-k 3 does not apply$/m);
  assert.doesNotMatch(stdout, /note: topk/);
  const json = JSON.parse(
    (await run("--json", "--top-k", "3", "--tokens", "64", "--router", "topk,gshard")).stdout,
  );
  assert.equal(json.routers[1].note, "gshard routes top-2 by design; --top-k 3 does not apply");
  assert.equal(json.routers[0].note, undefined);
  // the default k stays quiet
  assert.doesNotMatch((await run("--tokens", "64", "--router", "gshard")).stdout, /^note:/m);
});

Deno.test("examples/route.ts: --capacity-factor says which capacity routers keep their own", async () => {
  const args = ["--capacity-factor", "2", "--tokens", "128", "--router", "switch,gshard,expert-choice"];
  const { code, stdout } = await run(...args);
  assert.equal(code, 0);
  // T = 128, E = 16: GShard 2·ceil(128/16) = 16 slots, expert choice round(2·128/16) = 16 tokens
  assert.match(
    stdout,
    /^note: gshard has its own capacity, 2·ceil\(T\/E\) = 16 slots per expert; --capacity-factor 2 does not apply$/m,
  );
  assert.match(
    stdout,
    /^note: expert choice has its own capacity factor, c = 2 \(each expert takes round\(c·T\/E\) = 16 tokens\); --capacity-factor 2 does not apply$/m,
  );
  assert.doesNotMatch(stdout, /note: switch/);
  const json = JSON.parse((await run("--json", ...args, "--top-k", "3")).stdout);
  assert.equal(json.routers[0].note, "switch routes top-1 by design; --top-k 3 does not apply");
  assert.equal(
    json.routers[1].note,
    "gshard routes top-2 by design; --top-k 3 does not apply; " +
      "gshard has its own capacity, 2·ceil(T/E) = 16 slots per expert; --capacity-factor 2 does not apply",
  );
  // the default factor stays quiet
  assert.doesNotMatch((await run("--tokens", "64", "--router", "gshard,expert-choice")).stdout, /^note:/m);
});

Deno.test("examples/route.ts loads no plotting or build packages up front (vega, resvg, wabt)", async () => {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", script] }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { dependencies?: { specifier: string; code?: unknown }[] }[];
  };
  // code dependencies are what `deno run` fetches before the program starts; type-only ones are not
  const code = graph.modules.flatMap((m) =>
    (m.dependencies ?? []).filter((d) => d.code).map((d) => d.specifier)
  );
  const npm = [...new Set(code.filter((s) => s.startsWith("npm:")))].sort();
  assert.ok(npm.some((s) => s.startsWith("npm:ml-matrix")), npm.join(" "));
  assert.deepEqual(npm.filter((s) => /^npm:(vega|vega-lite|@resvg\/|wabt)@/.test(s)), []);
});

Deno.test("examples/route.ts: plots never replace existing files unless --overwrite, checked before any work", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-route-plots-" });
  try {
    const args = ["--tokens", "128", "--router", "topk,switch", "--plots", `${dir}/p`];
    const first = await runWith([`--allow-write=${dir}`], args);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(
      [...Deno.readDirSync(`${dir}/p`)].map((f) => f.name).sort(),
      ["coactivation.json", "coactivation.svg", "layer-load.json", "layer-load.svg", "load.json", "load.svg"],
    );
    await Deno.writeTextFile(`${dir}/p/load.svg`, "mine");
    const layerLoad = await Deno.readTextFile(`${dir}/p/layer-load.json`);
    const rw = [`--allow-write=${dir}`, `--allow-read=${dir}`];
    const again = await runWith(rw, args);
    assert.equal(again.code, 2);
    assert.match(
      again.stderr,
      new RegExp(`--plots ${dir}/p: ${dir}/p/load\\.json exists; remove it or pass --overwrite`),
    );
    assert.doesNotMatch(again.stdout, /^topk\s+\d/m, "refused before routing");
    assert.equal(await Deno.readTextFile(`${dir}/p/load.svg`), "mine");
    // only one file in the way (the others removed): still refused, nothing else written
    for (const f of Deno.readDirSync(`${dir}/p`)) {
      if (f.name !== "load.svg") Deno.removeSync(`${dir}/p/${f.name}`);
    }
    const one = await runWith(rw, args);
    assert.equal(one.code, 2);
    assert.match(one.stderr, /p\/load\.svg exists/);
    assert.deepEqual([...Deno.readDirSync(`${dir}/p`)].map((f) => f.name), ["load.svg"]);
    // without read access the files cannot be seen up front: refused when writing, after the work, and
    // the files written before the one in the way are removed again
    const late = await runWith([`--allow-write=${dir}`], args);
    assert.equal(late.code, 2);
    assert.match(late.stdout, /^topk\s+\d/m);
    assert.match(late.stderr, /p\/load\.svg exists; remove it or pass --overwrite/);
    assert.deepEqual([...Deno.readDirSync(`${dir}/p`)].map((f) => f.name), ["load.svg"]);
    assert.equal(await Deno.readTextFile(`${dir}/p/load.svg`), "mine");
    const forced = await runWith([`--allow-write=${dir}`], [...args, "--overwrite"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(await Deno.readTextFile(`${dir}/p/load.svg`), /^<svg/);
    assert.equal(await Deno.readTextFile(`${dir}/p/layer-load.json`), layerLoad, "same seed, same plot");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/route.ts --plots at a file: one line naming it, exit 2, no stack trace, nothing written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moekit-route-plots-file-" });
  try {
    await Deno.writeTextFile(`${dir}/afile`, "x");
    const args = ["--tokens", "128", "--router", "topk,switch", "--plots", `${dir}/afile`];
    const check = (r: { code: number; stderr: string }, what: string) => {
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.equal(r.stderr.split("\n")[0], `error: --plots ${dir}/afile: exists and is not a folder`, what);
      assert.doesNotMatch(r.stderr, /\n\s+at |Uncaught/, `${what}: no stack trace`);
    };
    // with read access: before any work
    const early = await runWith([`--allow-write=${dir}/afile`, "--allow-read"], args);
    check(early, "--allow-read");
    assert.equal(early.stdout, "", "refused before routing");
    // without: the file cannot be seen up front, so after the work, in the same words
    const late = await runWith([`--allow-write=${dir}/afile`], args);
    check(late, "no --allow-read");
    assert.match(late.stdout, /^topk\s+\d/m);
    // a file among the parents
    const parent = await runWith([`--allow-write=${dir}`, `--allow-read=${dir}`], [
      ...args.slice(0, -1),
      `${dir}/afile/sub`,
    ]);
    assert.equal(parent.code, 2);
    assert.equal(
      parent.stderr.split("\n")[0],
      `error: --plots ${dir}/afile/sub: ${dir}/afile exists and is not a folder`,
    );
    assert.equal(parent.stdout, "");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["afile"]);
    assert.equal(await Deno.readTextFile(`${dir}/afile`), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
