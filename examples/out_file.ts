/**
 * An example's `--out FILE`: checked before any work (write permission, the folder, an existing file),
 * written after it without replacing an existing file unless `--overwrite` is given, atomically (a
 * temporary file beside it, then a rename) when the folder may be read and written. A problem is one
 * line on stderr and a non-zero exit, never a stack trace or a silent skip.
 * @module
 */

import { basename, dirname } from "node:path";
import { refuse } from "./flags.ts";

const granted = (name: "read" | "write", path: string) =>
  Deno.permissions.querySync({ name, path }).state === "granted";

/** The one-line reason a file operation on `out` failed. */
function reason(out: string, e: unknown): string {
  const folder = dirname(out);
  if (e instanceof Deno.errors.NotFound) return `--out ${out}: the folder ${folder} does not exist`;
  if (e instanceof Deno.errors.NotADirectory) return `--out ${out}: ${folder} is not a folder`;
  if (e instanceof Deno.errors.IsADirectory) return `--out ${out}: is a folder; give a file name`;
  if (e instanceof Deno.errors.AlreadyExists) return `--out ${out}: exists; remove it or pass --overwrite`;
  return `--out ${out}: cannot write there (${(e as Error).message})`;
}

/**
 * Before any work: stops with a one-line error (exit 2) when `out` could not be written — no permission,
 * a missing folder, a folder at that name, an existing file without `overwrite`, or the operating
 * system refusing a file there (tried by creating it and removing it again; an existing file is opened,
 * not changed).
 */
export function checkOutFile(out: string, overwrite: boolean): void {
  if (out === "") refuse("--out needs a file name");
  if (!granted("write", out)) {
    refuse(`--out ${out}: writing there is not allowed; run with --allow-write=${out}`);
  }
  if (granted("read", out)) {
    try {
      if (Deno.statSync(out).isDirectory) refuse(reason(out, new Deno.errors.IsADirectory()));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) refuse(reason(out, e));
    }
  }
  try {
    Deno.openSync(out, { write: true, createNew: true }).close();
    Deno.removeSync(out);
    return;
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) refuse(reason(out, e));
  }
  // something is there: a folder (seen without read access too), or a file, opened without changing it
  try {
    Deno.openSync(out, { write: true }).close();
  } catch (e) {
    if (e instanceof Deno.errors.IsADirectory || overwrite) refuse(reason(out, e));
  }
  if (!overwrite) refuse(reason(out, new Deno.errors.AlreadyExists()));
}

/**
 * Writes `text` to `out` (checked by {@link checkOutFile}). Without `overwrite` the name is claimed
 * first (a file that appeared meanwhile stops the run, exit 2). With read and write access to the
 * folder the text goes to a temporary file beside `out`, renamed over it: `out` is either the old or
 * the new file, never half written. A failure removes what this call created and exits 1.
 */
export async function writeOutFile(
  out: string,
  text: string,
  overwrite: boolean,
): Promise<void> {
  let claimed = false;
  if (!overwrite) {
    try {
      (await Deno.open(out, { write: true, createNew: true })).close();
      claimed = true;
    } catch (e) {
      refuse(reason(out, e));
    }
  }
  const folder = dirname(out);
  const atomic = granted("read", folder) && granted("write", folder);
  const tmp = `${folder}/.${basename(out)}.tmp-${Deno.pid}-${Date.now().toString(36)}`;
  try {
    if (atomic) {
      await Deno.writeTextFile(tmp, text, { createNew: true });
      await Deno.rename(tmp, out);
    } else await Deno.writeTextFile(out, text);
  } catch (e) {
    if (atomic) await Deno.remove(tmp).catch(() => {});
    if (claimed) await Deno.remove(out).catch(() => {});
    console.error(`error: ${reason(out, e)}`);
    Deno.exit(1);
  }
}
