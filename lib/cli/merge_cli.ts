/**
 * `moekit merge <config.yaml> <out-dir>`: runs a mergekit config over local safetensors checkpoints.
 * Validates everything — config, inputs, the output folder — before reading tensor data, shows progress
 * on stderr, `--dry-run` prints the plan, and an interrupted run leaves no output under its final name.
 * Relative paths are read from the caller's folder (under `deno task merge`, the folder it was run from).
 * @module
 */

import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommandLine, UsageError, usageErrorText } from "./args.ts";
import { MoekitError } from "../core/errors.ts";
import { checkOutputFolder } from "../io/output.ts";
import { parseMergeConfig } from "../merging/config.ts";
import {
  type MergeProgress,
  planCheckpointMerge,
  planOutputFiles,
  runCheckpointMerge,
} from "../merging/checkpoint_merge.ts";
import {
  finalizeCheckpointMerge,
  parsePart,
  partsFolder,
  planBlocks,
  planPart,
} from "../merging/merge_run.ts";

const USAGE = `usage: deno run -A mod.ts merge <config.yaml> <out-dir> [options]
       deno run -A mod.ts merge <config.yaml> <out-dir> --shard i/n [options]
       deno run -A mod.ts merge --finalize <out-dir> [--overwrite]
       deno task merge …   (the same, with relative paths read from the folder you run it in)

  --dry-run             print the plan (method, tensors, resolved parameters, files) and stop
  --overwrite           replace an existing non-empty <out-dir> as a whole (else it is refused)
  --out-shard-size S    bytes per output shard: 5B (5 billion bytes, the default), 500M, 64K or a plain number
  --seed N              seed of DARE/DELLA masks (default 0)
  --max-block-size S    cap the memory of merging one tensor at about S bytes (256M, 1G, …): a larger
                        tensor is read, merged and written in blocks of rows, when the method allows it
                        (same output bytes; see docs/merging-at-scale.md)
  --shard i/n           merge only part i (0 ≤ i < n) of the output's shard files, balanced by bytes, into
                        <out-dir>.parts/ (every part with the same config and flags, anywhere)
  --finalize <out-dir>  check that every part is present and complete, then write <out-dir> from them
  --quiet               no progress bar
  --help                this text
  --cuda, --lazy-unpickle, --random-seed N
                        mergekit flags, accepted and ignored (moekit reads safetensors lazily on the CPU;
                        its masks are seeded by --seed)`;

/** The command these usage errors point to for `--help`. */
const COMMAND = "deno run -A mod.ts merge";

/**
 * Parses `5B`, `500M`, `64K` or a number as bytes (`flag` names the option in errors, which are
 * {@link UsageError}s).
 *
 * @example
 * ```ts
 * import { parseSize } from "./merge_cli.ts";
 * import assert from "node:assert/strict";
 * assert.equal(parseSize("5B"), 5e9);
 * assert.equal(parseSize("64K"), 64_000);
 * assert.throws(() => parseSize("lots", "--max-block-size"), /^UsageError: --max-block-size "lots": use a byte count/);
 * ```
 */
export function parseSize(s: string, flag = "--out-shard-size"): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*([KMGB]?)$/i.exec(s.trim());
  if (!m) {
    throw new UsageError(
      `${flag} ${JSON.stringify(s)}: use a byte count like 5B, 500M, 64K or 1000000`,
    );
  }
  const mult = { "": 1, K: 1e3, M: 1e6, G: 1e9, B: 1e9 }[m[2].toUpperCase() as "" | "K" | "M" | "G" | "B"];
  const v = Math.floor(Number(m[1]) * mult);
  if (!(v > 0)) throw new UsageError(`${flag} ${JSON.stringify(s)} must be > 0`);
  return v;
}

/** The decimal unit (B, kB, MB, GB, TB) a byte count reads best in, as [divisor, name]. */
function byteUnit(bytes: number): [number, string] {
  const units: [number, string][] = [[1e12, "TB"], [1e9, "GB"], [1e6, "MB"], [1e3, "kB"]];
  return units.find(([d]) => bytes >= d) ?? [1, "B"];
}

/** `n` in `unit` with three significant digits at most (whole bytes as they are): 3.14, 31.4, 314. */
function inUnit(n: number, [d]: [number, string]): string {
  if (d === 1) return String(Math.round(n));
  const v = n / d;
  return v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
}

/** A byte count in the unit it reads best in: `512 B`, `1.50 kB`, `23.4 MB`, `5.00 GB`. */
function formatBytes(bytes: number): string {
  const unit = byteUnit(bytes);
  return `${inUnit(bytes, unit)} ${unit[1]}`;
}

/** A duration for an ETA: `42 s`, `3 min 05 s`, `2 h 07 min`. */
function formatSeconds(s: number): string {
  const t = Math.round(s);
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${String(t % 60).padStart(2, "0")} s`;
  return `${Math.floor(t / 3600)} h ${String(Math.floor(t / 60) % 60).padStart(2, "0")} min`;
}

/** Below this many seconds (or bytes read) a rate, and an ETA from it, would be noise: they are not shown. */
const MIN_RATE_SECONDS = 0.5;

/**
 * The merge progress line: a bar, tensors done, bytes read of the total in one unit that suits the total
 * (B, kB, MB, GB, TB), then the read rate and the time left once there is enough to measure them, or,
 * when every tensor is done, the time it took.
 *
 * @example
 * ```ts
 * import { progressLine } from "./merge_cli.ts";
 * import assert from "node:assert/strict";
 * // a tiny merge: bytes, not "0/0 MB"; no rate or ETA from 2 ms of work
 * assert.match(progressLine({ done: 3, total: 10, bytesRead: 384, bytesTotal: 960, seconds: 0.002 }), /3\/10 tensors {2}384\/960 B$/);
 * assert.match(progressLine({ done: 10, total: 10, bytesRead: 960, bytesTotal: 960, seconds: 0.004 }), /960\/960 B {2}done in 0\.0 s$/);
 * // a big one: GB, a rate and the time left
 * assert.match(
 *   progressLine({ done: 50, total: 200, bytesRead: 4e9, bytesTotal: 16e9, seconds: 20 }),
 *   /50\/200 tensors {2}4\.00\/16\.0 GB {2}200 MB\/s {2}ETA 1 min 00 s$/,
 * );
 * ```
 */
export function progressLine(p: MergeProgress): string {
  const frac = p.total ? Math.min(p.done / p.total, 1) : 1, width = 30;
  const bar = "█".repeat(Math.round(frac * width)).padEnd(width, "░");
  const unit = byteUnit(Math.max(p.bytesTotal, p.bytesRead));
  const head = `${bar} ${p.done}/${p.total} tensors  ${inUnit(p.bytesRead, unit)}/${
    inUnit(p.bytesTotal, unit)
  } ${unit[1]}`;
  const measured = p.seconds >= MIN_RATE_SECONDS && p.bytesRead > 0;
  const rate = measured ? p.bytesRead / p.seconds : 0;
  if (p.done >= p.total) {
    return `${head}  ${measured ? `${formatBytes(rate)}/s  ` : ""}done in ${p.seconds.toFixed(1)} s`;
  }
  if (!measured) return head;
  return `${head}  ${formatBytes(rate)}/s  ETA ${
    formatSeconds(Math.max(p.bytesTotal - p.bytesRead, 0) / rate)
  }`;
}

/**
 * Prints {@link progressLine} on stderr: on a terminal, rewritten in place (the line cleared first, so a
 * shorter line leaves nothing behind); otherwise one line every 2 s and one at the end.
 */
function progressPrinter(): (p: MergeProgress) => void {
  const tty = Deno.stderr.isTerminal();
  let lastLine = 0;
  const enc = new TextEncoder();
  return (p) => {
    const text = progressLine(p), last = p.done === p.total;
    if (tty) Deno.stderr.writeSync(enc.encode(`\r\x1b[K${text}${last ? "\n" : ""}`));
    else if (last || p.seconds - lastLine >= 2) {
      lastLine = p.seconds;
      Deno.stderr.writeSync(enc.encode(`${text}\n`));
    }
  };
}

/**
 * Runs the CLI with the given arguments (after `merge`); returns the exit code (0 ok, 1 merge failed,
 * 2 bad usage or config).
 *
 * @example
 * ```ts
 * import { runMergeCli } from "@moekit/moekit";
 * import assert from "node:assert/strict";
 * assert.equal(await runMergeCli(["--help"]), 0); // prints the usage
 * assert.equal(await runMergeCli(["config.yaml"]), 2); // no output folder
 * ```
 */
export async function runMergeCli(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine({
      args,
      allowPositionals: true,
      options: {
        "dry-run": { type: "boolean" },
        overwrite: { type: "boolean" },
        cuda: { type: "boolean" },
        "lazy-unpickle": { type: "boolean" },
        "random-seed": { type: "string" },
        "out-shard-size": { type: "string" },
        "max-block-size": { type: "string" },
        seed: { type: "string" },
        shard: { type: "string" },
        finalize: { type: "string" },
        quiet: { type: "boolean" },
        help: { type: "boolean" },
      },
    });
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(usageErrorText(e.message, COMMAND));
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (v.finalize !== undefined) return await finalizeCli(v.finalize, parsed.positionals, v);
  const [configArg, outArg] = parsed.positionals;
  const wrong = !configArg
    ? "missing <config.yaml> <out-dir> (or --finalize <out-dir>)"
    : !outArg && !v["dry-run"]
    ? `missing <out-dir> after ${configArg} (or --dry-run to print the plan only)`
    : parsed.positionals.length > 2
    ? `unexpected argument ${JSON.stringify(parsed.positionals[2])}: merge takes <config.yaml> <out-dir>`
    : undefined;
  if (wrong) {
    console.error(usageErrorText(wrong, COMMAND));
    return 2;
  }
  const ignored = (["cuda", "lazy-unpickle", "random-seed"] as const).filter((f) => v[f] !== undefined);
  if (ignored.length) {
    console.error(
      `moekit: ignoring mergekit flag${ignored.length > 1 ? "s" : ""} ${
        ignored.map((f) => `--${f}`).join(", ")
      } ` +
        "(moekit reads safetensors lazily on the CPU; DARE/DELLA masks are seeded by --seed)",
    );
  }
  const caller = callerDir();
  const configPath = resolve(caller, configArg),
    outDir = outArg === undefined ? undefined : resolve(caller, outArg);
  let plan;
  let running = false; // errors before the run (config, inputs, output folder) are usage errors: exit 2
  try {
    const { shardBytes, maxBlockBytes, seed, part } = flagValues(v);
    const text = await Deno.readTextFile(configPath).catch((e) => {
      throw new MoekitError(`cannot read config ${configPath} (${e.message})`);
    });
    const config = parseMergeConfig(text);
    plan = await planCheckpointMerge(config, { configDir: dirname(configPath), cwd: caller });
    const side = await planOutputFiles(plan);
    const inputs = [...side.inputs, configPath];
    side.notes.forEach((n) => console.error(`moekit: ${n}`));
    if (outDir !== undefined) {
      try {
        await checkOutputFolder(outDir, { overwrite: v.overwrite, inputs });
      } catch (e) {
        // a dry run writes nothing: it reports what the real run would refuse, and goes on
        if (!v["dry-run"] || !(e instanceof MoekitError)) throw e;
        console.error(`moekit: dry run: the real run would stop here: ${e.message}`);
      }
    }
    const share = part && await planPart(plan, part, { shardBytes, seed }); // e.g. fewer files than parts
    const { blocked } = planBlocks(plan, maxBlockBytes, "--max-block-size"); // e.g. a cap below one row
    if (v["dry-run"]) {
      console.log(
        `plan: ${plan.method}, ${plan.tensors.length} tensors, ${
          (plan.inputBytes / 1e6).toFixed(1)
        } MB to read`,
      );
      if (outDir !== undefined) console.log(`output: ${outDir}`);
      console.log(`files beside the shards: ${side.files.map((f) => f.name).join(", ") || "none"}`);
      const mine = share && new Set(share.mine.flatMap((f) => share.files[f].tensors.map((t) => t.name)));
      if (share) {
        console.log(
          `part ${part!.index}/${part!.count}: ${share.mine.map((f) => share.files[f].name).join(", ")} (${
            (share.mine.reduce((a, f) => a + share.files[f].bytes, 0) / 1e6).toFixed(1)
          } MB of ${(share.files.reduce((a, f) => a + f.bytes, 0) / 1e6).toFixed(1)} MB of output)`,
        );
      }
      for (const t of plan.tensors.filter((t) => !mine || mine.has(t.name))) {
        const src = t.passthrough
          ? "copied from the base"
          : t.sources.map((s) => `${s.model}:${s.tensor} ${JSON.stringify(s.params)}`).join("; ");
        const b = blocked.get(t.name), nb = b && Math.ceil(b.rows / b.rowsPerBlock);
        console.log(
          `${t.name} [${t.shape.join(",")}] ${t.dtype} t=${+t.t.toFixed(4)} ${
            JSON.stringify(t.params)
          } ← ${src}${
            b
              ? ` (in ${nb} block${nb! > 1 ? "s" : ""} of ${b.rowsPerBlock} rows${
                b.passes ? `, after ${b.passes} read pass${b.passes > 1 ? "es" : ""}` : ""
              })`
              : ""
          }`,
        );
      }
      return 0;
    }
    let interrupted = false;
    const onSignal = () => (interrupted = true);
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    const progress = v.quiet ? undefined : progressPrinter();
    try {
      running = true;
      const r = await runCheckpointMerge(plan, outDir!, {
        shardBytes,
        seed,
        overwrite: v.overwrite,
        inputs: [configPath],
        part,
        maxBlockBytes,
        onProgress: (p) => {
          progress?.(p);
          if (interrupted) throw new MoekitError("interrupted: no output was committed");
        },
      });
      if (part) {
        console.log(
          `merged part ${part.index}/${part.count} (${r.files.join(", ")}) into ${partsFolder(outDir!)} in ${
            r.seconds.toFixed(1)
          } s; when every part is done: merge --finalize ${outArg}`,
        );
      } else {
        console.log(
          `merged ${plan.tensors.length} tensors into ${outArg} (${r.files.join(", ")}) in ${
            r.seconds.toFixed(1)
          } s`,
        );
      }
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
    return 0;
  } catch (e) {
    if (!(e instanceof MoekitError)) throw e;
    console.error(e instanceof UsageError ? usageErrorText(e.message, COMMAND) : `error: ${e.message}`);
    if (e.message.startsWith("interrupted")) return 130;
    return running && !isOutputError(e, outDir) ? 1 : 2; // the run re-checks the output before any read
  } finally {
    plan?.close();
  }
}

/** The values of the merge's value flags; a bad one is a {@link UsageError} naming it. */
function flagValues(
  v: { "out-shard-size"?: string; "max-block-size"?: string; seed?: string; shard?: string },
): { shardBytes: number; maxBlockBytes?: number; seed: number; part?: { index: number; count: number } } {
  const shardBytes = v["out-shard-size"] === undefined ? 5e9 : parseSize(v["out-shard-size"]);
  const maxBlockBytes = v["max-block-size"] === undefined
    ? undefined
    : parseSize(v["max-block-size"], "--max-block-size");
  const seed = v.seed === undefined ? 0 : Number(v.seed);
  if (!Number.isInteger(seed)) {
    throw new UsageError(`--seed ${JSON.stringify(v.seed)}: use an integer (the default is 0)`);
  }
  let part;
  try {
    part = v.shard === undefined ? undefined : parsePart(v.shard);
  } catch (e) {
    throw e instanceof MoekitError ? new UsageError(e.message) : e;
  }
  return { shardBytes, maxBlockBytes, seed, part };
}

/** `merge --finalize <out-dir>`: every problem found before writing is exit 2. */
async function finalizeCli(
  outArg: string,
  positionals: string[],
  v: { overwrite?: boolean; shard?: string; "dry-run"?: boolean; "max-block-size"?: string },
): Promise<number> {
  if (positionals.length || v.shard !== undefined || v["dry-run"] || v["max-block-size"] !== undefined) {
    console.error(usageErrorText("--finalize takes only the output folder (and --overwrite)", COMMAND));
    return 2;
  }
  try {
    const r = await finalizeCheckpointMerge(resolve(callerDir(), outArg), { overwrite: v.overwrite });
    console.log(`finalized ${outArg} from ${r.parts} part${r.parts > 1 ? "s" : ""} (${r.files.join(", ")})`);
    return 0;
  } catch (e) {
    if (!(e instanceof MoekitError)) throw e;
    console.error(`error: ${e.message}`);
    return 2;
  }
}

function isOutputError(e: MoekitError, outDir: string | undefined): boolean {
  return outDir !== undefined && "path" in e && typeof e.path === "string" && resolve(e.path) === outDir;
}

/**
 * The folder relative paths are read from: the caller's. `deno task` runs in the folder of `deno.json`
 * and passes the folder it was started from in `INIT_CWD`; that is used only when this process runs in
 * the folder of moekit's own `deno.json` (so an `INIT_CWD` inherited from an unrelated task is ignored).
 */
function callerDir(): string {
  const cwd = Deno.cwd();
  let init: string | undefined;
  try {
    init = Deno.permissions.querySync({ name: "env", variable: "INIT_CWD" }).state === "granted"
      ? Deno.env.get("INIT_CWD")
      : undefined;
  } catch {
    init = undefined;
  }
  const root = new URL("../../", import.meta.url);
  if (!init || root.protocol !== "file:") return cwd;
  return resolve(fileURLToPath(root)) === resolve(cwd) ? resolve(init) : cwd;
}
