/**
 * `moekit merge <config.yaml> <out-dir>`: runs a mergekit config over local safetensors checkpoints.
 * Validates everything — config, inputs, the output folder — before reading tensor data, shows progress
 * on stderr, `--dry-run` prints the plan, and an interrupted run leaves no output under its final name.
 * Relative paths are read from the caller's folder (under `deno task merge`, the folder it was run from).
 * @module
 */

import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommandLine } from "./args.ts";
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

/** Parses `5B`, `500M`, `64K` or a number as bytes (`flag` names the option in errors). */
export function parseSize(s: string, flag = "--out-shard-size"): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*([KMGB]?)$/i.exec(s.trim());
  if (!m) {
    throw new MoekitError(
      `${flag} ${JSON.stringify(s)}: use a byte count like 5B, 500M, 64K or 1000000`,
    );
  }
  const mult = { "": 1, K: 1e3, M: 1e6, G: 1e9, B: 1e9 }[m[2].toUpperCase() as "" | "K" | "M" | "G" | "B"];
  const v = Math.floor(Number(m[1]) * mult);
  if (!(v > 0)) throw new MoekitError(`${flag} ${JSON.stringify(s)} must be > 0`);
  return v;
}

function progressPrinter(): (p: MergeProgress) => void {
  const tty = Deno.stderr.isTerminal();
  let lastLine = 0;
  const enc = new TextEncoder();
  return (p) => {
    const rate = p.bytesRead / 1e6 / Math.max(p.seconds, 1e-3);
    const eta = rate > 0 ? (p.bytesTotal - p.bytesRead) / 1e6 / rate : 0;
    const frac = p.total ? p.done / p.total : 1, width = 30;
    const bar = "█".repeat(Math.round(frac * width)).padEnd(width, "░");
    const text =
      `${bar} ${p.done}/${p.total} tensors  ${(p.bytesRead / 1e6).toFixed(0)}/${
        (p.bytesTotal / 1e6).toFixed(0)
      } MB  ` +
      `${rate.toFixed(1)} MB/s  ETA ${eta.toFixed(0)} s`;
    if (tty) Deno.stderr.writeSync(enc.encode(`\r${text}${p.done === p.total ? "\n" : ""}`));
    else if (p.done === p.total || p.seconds - lastLine >= 2) {
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
    console.error(`error: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    console.log(USAGE);
    return 0;
  }
  if (v.finalize !== undefined) return await finalizeCli(v.finalize, parsed.positionals, v);
  const [configArg, outArg] = parsed.positionals;
  if (!configArg || (!outArg && !v["dry-run"]) || parsed.positionals.length > 2) {
    console.error(`error: expected <config.yaml> <out-dir>\n${USAGE}`);
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
    const shardBytes = v["out-shard-size"] === undefined ? 5e9 : parseSize(v["out-shard-size"]);
    const maxBlockBytes = v["max-block-size"] === undefined
      ? undefined
      : parseSize(v["max-block-size"], "--max-block-size");
    const seed = v.seed === undefined ? 0 : Number(v.seed);
    if (!Number.isInteger(seed)) throw new MoekitError(`--seed ${v.seed}: must be an integer`);
    const part = v.shard === undefined ? undefined : parsePart(v.shard);
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
    console.error(`error: ${e.message}`);
    if (e.message.startsWith("interrupted")) return 130;
    return running && !isOutputError(e, outDir) ? 1 : 2; // the run re-checks the output before any read
  } finally {
    plan?.close();
  }
}

/** `merge --finalize <out-dir>`: every problem found before writing is exit 2. */
async function finalizeCli(
  outArg: string,
  positionals: string[],
  v: { overwrite?: boolean; shard?: string; "dry-run"?: boolean; "max-block-size"?: string },
): Promise<number> {
  if (positionals.length || v.shard !== undefined || v["dry-run"] || v["max-block-size"] !== undefined) {
    console.error(`error: --finalize takes only the output folder (and --overwrite)\n${USAGE}`);
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
