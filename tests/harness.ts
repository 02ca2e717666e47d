// Dependency-free test harness helpers (temp folders, captured console), kept apart from helpers.ts,
// which loads the whole library through ../mod.ts.

/** Runs `fn` with a fresh temp dir, removed afterwards (also on failure). */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>, prefix = "moekit-test-"): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Runs `fn` with console.log / console.error captured: each printed line followed by "\n". */
export async function captureConsole(
  fn: () => Promise<number>,
): Promise<{ code: number; out: string; err: string }> {
  const saved = [console.log, console.error];
  let out = "", err = "";
  console.log = (...x: unknown[]) => (out += x.join(" ") + "\n");
  console.error = (...x: unknown[]) => (err += x.join(" ") + "\n");
  try {
    return { code: await fn(), out, err };
  } finally {
    [console.log, console.error] = saved;
  }
}

/** What a subprocess printed and how it ended. */
export interface RunOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `deno run --no-prompt <flags> examples/<name> <args>` as a user would (NO_COLOR set), from `cwd`.
 */
export async function runExample(
  name: string,
  flags: readonly string[],
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<RunOutput> {
  const script = new URL(`../examples/${name}`, import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...flags, script, ...args],
    cwd: options.cwd,
    env: { NO_COLOR: "1", ...options.env },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Runs `deno run <perms> mod.ts merge <args>` in a subprocess. With `hold` (a test-only hold point of the
 * merge engine, set through `MOEKIT_TEST_HOLD`), waits for the engine's hold line on stderr, then SIGKILLs
 * it and checks it died of that. A run that neither ends nor reaches its hold in 25 s is killed.
 */
export async function spawnMergeCli(
  args: readonly string[],
  opts: { hold?: string; ffi?: boolean } = {},
): Promise<{ code: number; err: string; pid: number }> {
  const mod = new URL("../mod.ts", import.meta.url).pathname;
  const perms = opts.ffi === false ? ["--allow-read", "--allow-write", "--allow-env", "--allow-sys"] : ["-A"];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...perms, mod, "merge", ...args],
    env: opts.hold ? { MOEKIT_TEST_HOLD: opts.hold } : {},
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 25_000);
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
      if (opts.hold && err.includes(`moekit test hold: ${opts.hold}`)) {
        child.kill("SIGKILL");
        break;
      }
    }
  } finally {
    clearTimeout(deadline);
    await reader.cancel().catch(() => {});
  }
  const status = await child.status;
  if (opts.hold && status.signal !== "SIGKILL") {
    throw new Error(`expected the merge to be killed at ${opts.hold}; it ended with ${status.code}:\n${err}`);
  }
  return { code: status.code, err, pid: child.pid };
}
