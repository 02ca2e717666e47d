// What a usage error looks like in every moekit program (examples/flags.ts, the mod.ts commands, through
// lib/cli/args.ts's usageErrorText): exit 2, one `error: …` line, one hint naming `<command> --help`, and
// not the usage text (which buried the line that mattered).
import assert from "node:assert/strict";

/**
 * Asserts a usage error of `command` (as named in the hint, e.g. `deno run examples/route.ts`): exit 2,
 * stderr exactly `error: <line matching pattern>` and `run "<command> --help" for all options`.
 */
export function assertUsageError(
  r: { code: number; stderr: string },
  command: string,
  pattern: RegExp,
  label = "",
): void {
  const what = `${label}: ${r.stderr}`;
  assert.equal(r.code, 2, what);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2, `one error line and one hint, not the usage text: ${what}`);
  assert.match(lines[0], /^error: /, what);
  assert.match(lines[0], pattern, what);
  assert.equal(lines[1], `run "${command} --help" for all options`, what);
  assert.doesNotMatch(r.stderr, /usage:/, what);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace: ${what}`);
}
