/**
 * Plot files of the example scripts, through the library's checker (lib/cli/plot_files.ts, which
 * `mod.ts route --plots` uses too): the targets are checked before any work starts, every plot is
 * rendered in memory first, and the files are written all or nothing, never replacing an existing file
 * unless `--overwrite` is given. A problem is one line (no `--help` hint: the options are right), exit 2,
 * no stack trace.
 * @module
 */

import { refuse } from "./flags.ts";
import { MoekitError } from "../lib/core/errors.ts";
import * as lib from "../lib/cli/plot_files.ts";

export { type PlotFile, plotFiles } from "../lib/cli/plot_files.ts";

/**
 * Stops with a one-line error (exit 2) when `dir` (or a parent of it) is a file, or one of `names` already
 * exists in `dir` and `overwrite` is not set: called before the example's work, so a second run says so
 * at once instead of after the work. Seeing them needs read access to `dir`; without it
 * {@link writePlotFiles} still refuses, after the work.
 */
export function checkPlotTargets(dir: string, names: string[], overwrite: boolean): void {
  try {
    lib.checkPlotTargets(dir, names, overwrite);
  } catch (e) {
    if (!(e instanceof MoekitError)) throw e;
    refuse(e.message);
  }
}

/**
 * Writes `files` into `dir` (created when missing) and returns their names. Without `overwrite` a file
 * that appeared since {@link checkPlotTargets} stops the run with exit 2, and the files this call wrote
 * are removed again: the folder is left as it was found.
 */
export async function writePlotFiles(
  dir: string,
  files: lib.PlotFile[],
  overwrite: boolean,
): Promise<string[]> {
  try {
    return await lib.writePlotFiles(dir, files, overwrite);
  } catch (e) {
    if (!(e instanceof MoekitError)) throw e;
    return refuse(e.message);
  }
}
