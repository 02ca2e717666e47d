/**
 * Plot files of moekit's programs (`mod.ts route --plots`, the example scripts): the targets are checked
 * before any work starts, every plot is rendered in memory first, and the files are written all or
 * nothing, never replacing an existing file unless `--overwrite` is given. Problems are
 * {@link MoekitError}s whose one-line message names the flag, the path and what is wrong. Internal: not
 * re-exported by the barrels.
 * @module
 */

import { dirname } from "node:path";
import { MoekitError } from "../core/errors.ts";
import type { Plot } from "../plots/plot.ts";

/** One file to write: its name inside the plot folder and its contents. */
export type PlotFile = [name: string, data: string | Uint8Array];

/** The kind of what is at `path` (symbolic links followed), or undefined when nothing is there. */
function kindOf(path: string): "dir" | "other" | "not-a-dir-parent" | undefined {
  try {
    return Deno.statSync(path).isDirectory ? "dir" : "other";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    if (e instanceof Deno.errors.NotADirectory) return "not-a-dir-parent";
    throw e;
  }
}

/** The message for a plot folder a file (or a file among its parents) is in the way of. */
function folderProblem(flag: string, dir: string): string | undefined {
  const k = kindOf(dir);
  if (k === "other") return `${flag} ${dir}: exists and is not a folder`;
  if (k !== "not-a-dir-parent") return undefined;
  // a parent is a file: name the nearest one
  try {
    for (let p = dirname(dir); p !== dirname(p); p = dirname(p)) {
      if (kindOf(p) === "other") return `${flag} ${dir}: ${p} exists and is not a folder`;
    }
  } catch {
    // no read access to a parent: say it without the name
  }
  return `${flag} ${dir}: a parent of it is not a folder`;
}

/**
 * A plot's files, rendered in memory for {@link writePlotFiles}: its Vega-Lite spec as `<name>.json` and
 * its rendering as `<name>.svg` (what `Plot.save` writes for those extensions).
 *
 * @example
 * ```ts
 * import { plotFiles } from "./plot_files.ts";
 * import { Plot } from "../plots/plot.ts";
 * import assert from "node:assert/strict";
 * const plot = new Plot({ data: { values: [{ x: 1 }] }, mark: "point", encoding: { x: { field: "x", type: "quantitative" } } });
 * const [json, svg] = await plotFiles("p", plot);
 * assert.deepEqual([json[0], JSON.parse(json[1] as string).mark], ["p.json", "point"]);
 * assert.ok(svg[0] === "p.svg" && (svg[1] as string).startsWith("<svg"));
 * ```
 */
export async function plotFiles(name: string, plot: Plot): Promise<PlotFile[]> {
  return [[`${name}.json`, JSON.stringify(plot.spec, null, 2)], [`${name}.svg`, await plot.toSVG()]];
}

/**
 * Throws a {@link MoekitError} when the plots could not go into `dir`: `dir` (or one of its parents) is
 * a file, or one of `names` already exists there and `overwrite` is not set (or is a folder). Called
 * before the program's work, so a second run says so at once. Seeing them needs read access to `dir`;
 * without it, {@link writePlotFiles} still refuses (after the work) and names the same problems.
 *
 * @example
 * ```ts
 * import { checkPlotTargets } from "./plot_files.ts";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/load.svg`, "<svg/>");
 * checkPlotTargets(`${dir}/new`, ["load.svg"], false); // a folder to be created: fine
 * assert.throws(() => checkPlotTargets(dir, ["load.svg"], false), /load\.svg exists; remove it or pass --overwrite/);
 * checkPlotTargets(dir, ["load.svg"], true);
 * assert.throws(() => checkPlotTargets(`${dir}/load.svg`, ["a.svg"], true), /load\.svg: exists and is not a folder/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function checkPlotTargets(
  dir: string,
  names: readonly string[],
  overwrite: boolean,
  flag = "--plots",
): void {
  if (dir === "") throw new MoekitError(`${flag} needs a folder`);
  if (Deno.permissions.querySync({ name: "read", path: dir }).state !== "granted") return;
  const problem = folderProblem(flag, dir);
  if (problem) throw new MoekitError(problem);
  for (const name of names) {
    const k = kindOf(`${dir}/${name}`);
    if (k === "dir") {
      throw new MoekitError(`${flag} ${dir}: ${dir}/${name} is a folder; remove it or choose another folder`);
    }
    if (k !== undefined && !overwrite) {
      throw new MoekitError(`${flag} ${dir}: ${dir}/${name} exists; remove it or pass --overwrite`);
    }
  }
}

/**
 * Writes `files` into `dir` (created when missing) and returns their names. Without `overwrite` a file
 * that appeared since {@link checkPlotTargets} is a {@link MoekitError}, and the files this call wrote
 * are removed again: the folder is left as it was found. Any other failure (a file where the folder
 * should be, no space) is a {@link MoekitError} naming the path too.
 *
 * @example
 * ```ts
 * import { writePlotFiles } from "./plot_files.ts";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * assert.deepEqual(await writePlotFiles(`${dir}/p`, [["a.json", "{}"], ["b.svg", "<svg/>"]], false), ["a.json", "b.svg"]);
 * await Deno.remove(`${dir}/p/b.svg`);
 * await assert.rejects(() => writePlotFiles(`${dir}/p`, [["b.svg", "x"], ["a.json", "{}"]], false), /a\.json exists/);
 * assert.deepEqual([...Deno.readDirSync(`${dir}/p`)].map((f) => f.name), ["a.json"]); // b.svg removed again
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writePlotFiles(
  dir: string,
  files: readonly PlotFile[],
  overwrite: boolean,
  flag = "--plots",
): Promise<string[]> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new MoekitError(`${flag} ${dir}: exists and is not a folder`);
    }
    if (e instanceof Deno.errors.NotADirectory) {
      throw new MoekitError(`${flag} ${dir}: a parent of it is not a folder`);
    }
    throw new MoekitError(`${flag} ${dir}: cannot create the folder (${(e as Error).message})`);
  }
  const written: string[] = [];
  try {
    for (const [name, data] of files) {
      const path = `${dir}/${name}`, opts = { createNew: !overwrite };
      if (typeof data === "string") await Deno.writeTextFile(path, data, opts);
      else await Deno.writeFile(path, data, opts);
      written.push(name);
    }
  } catch (e) {
    if (!overwrite) { for (const name of written) await Deno.remove(`${dir}/${name}`).catch(() => {}); }
    const name = files[written.length][0];
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new MoekitError(`${flag} ${dir}: ${dir}/${name} exists; remove it or pass --overwrite`);
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new MoekitError(`${flag} ${dir}: ${dir}/${name} is a folder; remove it or choose another folder`);
    }
    throw new MoekitError(`${flag} ${dir}: cannot write ${name} (${(e as Error).message})`);
  }
  return written;
}
