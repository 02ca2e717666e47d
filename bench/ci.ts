/**
 * CI smoke test of every benchmark (`deno task bench:ci`, run by `.ci/run`): type-checks all of `bench/`,
 * runs `deno bench` (the `*_bench.ts` files, with no permission but reading MOEKIT_BENCH_QUICK), then
 * runs every script benchmark once through its `deno task`, all with `MOEKIT_BENCH_QUICK=1` (tiny
 * sizes). A script benchmark is any other `bench/*.ts` file; each needs a task in deno.json that runs
 * it (files starting with `_` are shared modules, not benchmarks). Fails on the first error, a missing
 * task, or a step slower than its time limit.
 *
 *   deno task bench:ci
 */

const root = new URL("..", import.meta.url).pathname;
const LIMIT_S = 180;
const tasks: Record<string, string> = JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).tasks ?? {};
const own = new URL(import.meta.url).pathname.split("/").pop()!;

const files = [...Deno.readDirSync(`${root}bench`)]
  .filter((f) => f.isFile && f.name.endsWith(".ts"))
  .map((f) => f.name)
  .sort();
const isBench = (f: string) => f.endsWith("_bench.ts") || f.endsWith(".bench.ts");
const scripts = files.filter((f) => !isBench(f) && !f.startsWith("_") && f !== own);

/** The deno arguments of the task that runs `bench/<file>` (a plain `deno …` command line). */
function taskFor(file: string): { name: string; args: string[] } | undefined {
  for (const [name, cmd] of Object.entries(tasks)) {
    const words = cmd.trim().split(/\s+/);
    if (words[0] === "deno" && words.includes(`bench/${file}`) && !/[|&;<>$`'"]/.test(cmd)) {
      return { name, args: words.slice(1) };
    }
  }
  return undefined;
}

const missing = scripts.filter((f) => !taskFor(f));
if (missing.length) {
  console.error(
    `bench:ci: no deno task runs ${missing.map((f) => `bench/${f}`).join(", ")}; ` +
      `add one to deno.json (a plain "deno run … bench/<file>" line)`,
  );
  Deno.exit(1);
}

const steps: { label: string; args: string[] }[] = [
  { label: "deno check bench/", args: ["check", "bench/"] },
  { label: "deno bench (quick)", args: ["bench", "--allow-env=MOEKIT_BENCH_QUICK"] },
  ...scripts.map((f) => {
    const t = taskFor(f)!;
    return { label: `deno task ${t.name} (quick)`, args: t.args };
  }),
];

const started = performance.now();
for (const step of steps) {
  const t0 = performance.now();
  console.log(`bench:ci: ${step.label}`);
  const child = new Deno.Command(Deno.execPath(), {
    args: step.args,
    cwd: root,
    env: { MOEKIT_BENCH_QUICK: "1", NO_COLOR: "1" },
    stdout: "inherit",
    stderr: "inherit",
    signal: AbortSignal.timeout(LIMIT_S * 1000),
  }).spawn();
  const status = await child.status;
  const seconds = (performance.now() - t0) / 1000;
  if (!status.success) {
    console.error(
      `bench:ci: FAILED: ${step.label} (exit ${status.code}${status.signal ? `, ${status.signal}` : ""}, ` +
        `${seconds.toFixed(1)} s${seconds >= LIMIT_S - 1 ? `; the limit is ${LIMIT_S} s` : ""})`,
    );
    Deno.exit(1);
  }
  console.log(`bench:ci: ok ${step.label} (${seconds.toFixed(1)} s)`);
}
console.log(
  `bench:ci: ${steps.length} steps passed in ${((performance.now() - started) / 1000).toFixed(1)} s`,
);
