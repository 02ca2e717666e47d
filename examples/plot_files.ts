/**
 * Plot files of the example scripts: the targets are checked before any work starts, every plot is
 * rendered in memory first, and the files are written all or nothing, never replacing an existing file
 * unless `--overwrite` is given.
 * @module
 */

import { usageError } from "./flags.ts";

/** One file to write: its name inside the plot folder and its contents. */
export type PlotFile = [name: string, data: string | Uint8Array];

/**
 * Stops with a usage error (exit 2) when one of `names` already exists in `dir` and `overwrite` is not
 * set: called before the example's work, so a second run says so at once instead of after the work.
 * Seeing the files needs read access to `dir`; without it {@link writePlotFiles} still refuses to
 * replace them, after the work.
 */
export function checkPlotTargets(usage: string, dir: string, names: string[], overwrite: boolean): void {
  if (overwrite || Deno.permissions.querySync({ name: "read", path: dir }).state !== "granted") return;
  for (const name of names) {
    let exists = false;
    try {
      Deno.lstatSync(`${dir}/${name}`);
      exists = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (exists) usageError(usage, `--plots ${dir}: ${dir}/${name} exists; remove it or pass --overwrite`);
  }
}

/**
 * Writes `files` into `dir` (created when missing) and returns their names. Without `overwrite` a file
 * that appeared since {@link checkPlotTargets} stops the run with exit 2, and the files this call wrote
 * are removed again: the folder is left as it was found.
 */
export async function writePlotFiles(
  usage: string,
  dir: string,
  files: PlotFile[],
  overwrite: boolean,
): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
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
    if (e instanceof Deno.errors.AlreadyExists) {
      usageError(
        usage,
        `--plots ${dir}: ${dir}/${files[written.length][0]} exists; remove it or pass --overwrite`,
      );
    }
    throw e;
  }
  return written;
}
