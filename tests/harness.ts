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
