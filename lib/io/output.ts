/**
 * Writing an output safely — the one place that does it for every checkpoint write.
 *
 * 1. **Checks, before any tensor is read**: the output (resolved, symlinks followed) is not an input file
 *    or folder and does not contain one; it is not an existing file; an existing non-empty folder is
 *    refused unless `overwrite: true`.
 * 2. **A private temporary folder** beside the output, `<name>.partial-<pid>-<time>-<random>`, created
 *    exclusively (a name can never be reused, so a run never reads anything it did not write itself),
 *    holding an owner record `moekit-owner.json` (pid, host, start time), locked exclusively for the life
 *    of the write, and the new content in `data/`.
 * 3. **Commit by renames**: `data/` is renamed to the output in one step. Over an existing folder the two
 *    are exchanged atomically (Linux `renameat2(RENAME_EXCHANGE)` when FFI is allowed), else the old
 *    folder is first moved into the temporary folder and the new one renamed into place; the old one is
 *    deleted last. A kill at any moment leaves the old or the new folder complete.
 * 4. **Cleanup**: a run that creates an output removes the temporary folders in the same parent whose
 *    owner process is gone — its lock is free, which the kernel guarantees once the process has ended in
 *    any way, whatever became of its PID — restoring an old folder an interrupted overwrite had moved
 *    aside, and says so on stderr. Temporary folders of live processes or of other hosts are left alone.
 * @module
 */

import { basename, dirname, isAbsolute, relative, resolve } from "node:path";
import { CheckpointError, clip } from "./errors.ts";

/**
 * Options of an output write (checkpoint folders and single files).
 *
 * @example
 * ```ts
 * import { type OutputOptions } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const o: OutputOptions = { overwrite: true, inputs: ["models/base"] };
 * assert.equal(o.overwrite, true);
 * ```
 */
export interface OutputOptions {
  /** Replace an existing non-empty output folder as a whole. Default false: such an output is refused. */
  readonly overwrite?: boolean;
  /** Files and folders the output must not be (or contain): the inputs of the run. */
  readonly inputs?: readonly string[];
  /** Where cleanup notes go. Default: one line each on stderr. */
  readonly log?: (line: string) => void;
}

const PARTIAL = /^(.+)\.partial-(\d+)-([0-9a-z]+)-([0-9a-f]{8})$/;
const OWNER = "moekit-owner.json";

/** What is at a path now. */
async function kind(path: string): Promise<"none" | "dir" | "file" | "other"> {
  try {
    const st = await Deno.stat(path);
    return st.isDirectory ? "dir" : st.isFile ? "file" : "other";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "none";
    throw new CheckpointError(path, `cannot inspect (${(e as Error).message})`);
  }
}

/** Absolute path with symlinks resolved as far as the path exists. */
async function realish(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return await Deno.realPath(abs);
  } catch {
    const isLink = await Deno.lstat(abs).then((s) => s.isSymlink, () => false);
    if (isLink) {
      throw new CheckpointError(path, "is a symbolic link to nothing; remove it or choose another path");
    }
    const parent = dirname(abs);
    return parent === abs ? abs : resolve(await realish(parent), basename(abs));
  }
}

/**
 * Checks an output folder before any work: the resolved path (symlinks followed) must not be an input or
 * contain one, must not be an existing file, and an existing non-empty folder needs `overwrite: true`.
 * Returns the resolved path. Throws a `CheckpointError` naming the path and what to do.
 *
 * @example
 * ```ts
 * import { checkOutputFolder, CheckpointError } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/model.safetensors`, "x");
 * await assert.rejects(() => checkOutputFolder(dir), CheckpointError); // not empty, no overwrite
 * await assert.rejects(() => checkOutputFolder(`${dir}/model.safetensors`), /is a file/);
 * await assert.rejects(() => checkOutputFolder(dir, { overwrite: true, inputs: [dir] }), /is an input/);
 * assert.equal(await checkOutputFolder(`${dir}/new`), `${await Deno.realPath(dir)}/new`);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function checkOutputFolder(path: string, options: OutputOptions = {}): Promise<string> {
  if (!path) throw new CheckpointError("(empty path)", "the output path is empty");
  const target = await realish(path);
  if (dirname(target) === target) {
    throw new CheckpointError(path, "cannot write an output to the file-system root");
  }
  for (const input of options.inputs ?? []) {
    const real = await realish(input);
    if (real === target) {
      throw new CheckpointError(
        path,
        `is an input of this run (${clip(input, 200)}); write the output to another folder`,
      );
    }
    const rel = relative(target, real);
    if (rel && !rel.startsWith("..") && !isAbsolute(rel)) {
      throw new CheckpointError(
        path,
        `contains an input of this run (${clip(input, 200)}); replacing it would delete that input — ` +
          "write the output to another folder",
      );
    }
  }
  const k = await kind(target);
  if (k === "file" || k === "other") {
    throw new CheckpointError(
      path,
      "is a file; the output is a folder — remove the file or choose another path",
    );
  }
  if (k === "dir" && !options.overwrite) {
    const entries: string[] = [];
    for await (const e of Deno.readDir(target)) {
      entries.push(e.name);
      if (entries.length >= 3) break;
    }
    if (entries.length) {
      throw new CheckpointError(
        path,
        `already exists and is not empty (${entries.map((e) => clip(e, 60)).join(", ")}${
          entries.length >= 3 ? ", …" : ""
        }); pass --overwrite (API: overwrite: true) to replace it as a whole, or choose another folder`,
      );
    }
  }
  return target;
}

/**
 * A temporary folder beside an output, owned by this process, and the commit that renames its content
 * into place. Internal to `lib/io`.
 */
export interface StagedOutput {
  /** The resolved output path. */
  readonly target: string;
  /** The temporary folder (owner record and content). */
  readonly work: string;
  /** Where to write the new content: a folder (folder outputs) or a file path (file outputs). */
  readonly content: string;
  /** Renames the content into place (replacing an existing output when allowed) and removes `work`. */
  commit(): Promise<void>;
  /** Removes `work`; the output is untouched. */
  abort(): Promise<void>;
}

/**
 * Checks an output (folder or file), removes stale temporary folders in its parent, and creates this
 * run's temporary folder. `file: true` stages a single file, which replaces an existing file on commit
 * (unless it is an input). Internal to `lib/io`.
 */
export async function stageOutput(
  path: string,
  options: OutputOptions & { readonly file?: boolean } = {},
): Promise<StagedOutput> {
  const log = options.log ?? ((line: string) => console.error(line));
  let target: string;
  if (options.file) {
    target = await realish(path);
    if (options.inputs?.length) await checkInputsForFile(path, target, options.inputs);
    const k = await kind(target);
    if (k === "dir" || k === "other") {
      throw new CheckpointError(path, "is a folder; a single safetensors file cannot replace it");
    }
  } else target = await checkOutputFolder(path, options);
  const parent = dirname(target), name = basename(target);
  await Deno.mkdir(parent, { recursive: true }).catch((e) => {
    throw new CheckpointError(parent, `cannot create the output's parent folder (${(e as Error).message})`);
  });
  await removeStalePartials(parent, log);
  let work = "";
  for (let attempt = 0;; attempt++) {
    const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0");
    work = `${parent}/${name}.partial-${Deno.pid}-${Date.now().toString(36)}-${rand}`;
    try {
      await Deno.mkdir(work); // exclusive: fails if the name exists
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists) || attempt >= 4) {
        throw new CheckpointError(work, `cannot create the temporary folder (${(e as Error).message})`);
      }
    }
  }
  // the owner record stays open with an exclusive lock for the life of the write: the kernel releases
  // the lock when the process ends in any way (kill -9 included), which is how a later run tells a
  // leftover of a dead run from a live one — no PID is trusted, so a reused PID cannot fool it
  const record = { pid: Deno.pid, host: hostName(), started: new Date().toISOString() };
  let lock: Deno.FsFile;
  try {
    lock = await Deno.open(`${work}/${OWNER}`, { read: true, write: true, createNew: true });
    await lock.lock(true); // before the record is written: a readable record implies a taken lock
    await lock.write(new TextEncoder().encode(JSON.stringify(record)));
  } catch (e) {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    throw new CheckpointError(work, `cannot write the owner record (${(e as Error).message})`);
  }
  const release = () => {
    try {
      lock.close();
    } catch {
      // already closed
    }
  };
  const content = options.file ? `${work}/${name}` : `${work}/data`;
  if (!options.file) await Deno.mkdir(content);
  let done = false;
  const abort = async () => {
    if (done) return;
    done = true;
    // never delete an old output that a failed commit could not put back: a later run restores it
    if ((await kind(`${work}/old`)) === "none") await Deno.remove(work, { recursive: true }).catch(() => {});
    release();
  };
  const commit = async () => {
    if (done) throw new CheckpointError(path, "this output was already committed or aborted");
    try {
      await syncPath(content, !options.file, true);
      const now = await kind(target);
      if (options.file) {
        if (now === "dir" || now === "other") {
          throw new CheckpointError(path, "became a folder during the write");
        }
        await Deno.rename(content, target); // atomic replace of a file
      } else if (now === "none") {
        await Deno.rename(content, target);
      } else if (now !== "dir") {
        throw new CheckpointError(path, "became a file during the write; nothing was written there");
      } else if (!(await isEmptyDir(target))) {
        if (!options.overwrite) {
          throw new CheckpointError(
            path,
            "was created by someone else during the write; nothing was replaced",
          );
        }
        if (exchange(content, target)) {
          await testHold("commit"); // the new content is in place, the old one in `work`
        } else {
          await Deno.rename(target, `${work}/old`);
          try {
            await testHold("commit"); // between the renames: a later run restores `old` (see cleanup)
            await Deno.rename(content, target);
          } catch (e) {
            await Deno.rename(`${work}/old`, target).catch(() => {}); // put the old output back
            throw e;
          }
        }
      } else {
        await Deno.rename(content, target); // over an empty folder: one rename
      }
      await syncPath(parent, true, false); // the renames themselves
    } catch (e) {
      await abort();
      if (e instanceof CheckpointError) throw e;
      throw new CheckpointError(
        path,
        `could not move the finished output into place (${(e as Error).message})`,
      );
    }
    done = true;
    await Deno.remove(work, { recursive: true }).catch(() => {});
    release();
  };
  return { target, work, content, commit, abort };
}

async function checkInputsForFile(path: string, target: string, inputs: readonly string[]): Promise<void> {
  for (const input of inputs) {
    if ((await realish(input)) === target) {
      throw new CheckpointError(
        path,
        `is an input of this run (${clip(input, 200)}); write the output elsewhere`,
      );
    }
  }
}

async function isEmptyDir(path: string): Promise<boolean> {
  for await (const _ of Deno.readDir(path)) return false;
  return true;
}

/** Flushes a file, or a folder's entries (and with `files`, the files in it), to disk, best effort. */
async function syncPath(path: string, isDir: boolean, files = false): Promise<void> {
  if (isDir && files) {
    try {
      for await (const e of Deno.readDir(path)) if (e.isFile) await syncPath(`${path}/${e.name}`, false);
    } catch {
      // unreadable folder: nothing to flush
    }
  }
  try {
    const f = await Deno.open(path, { read: true });
    try {
      await f.sync();
    } finally {
      f.close();
    }
  } catch {
    // some file systems cannot sync a folder; the renames stay atomic with respect to a kill
  }
}

/**
 * Removes the temporary folders (`<name>.partial-<pid>-<time>-<random>`) in `parent` whose owner
 * process is gone, restoring an old output an interrupted overwrite had moved aside, and logs one line
 * for each. Returns how many were removed. Folders of live owners and of other hosts are left alone.
 */
export async function removeStalePartials(parent: string, log: (line: string) => void): Promise<number> {
  let removed = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(parent));
  } catch {
    return 0;
  }
  for (const e of entries) {
    const m = PARTIAL.exec(e.name);
    if (!m || !e.isDirectory) continue;
    const work = `${parent}/${e.name}`, target = `${parent}/${m[1]}`;
    const state = await ownerState(work, parseInt(m[3], 36));
    if (state.state !== "gone") continue;
    const who = state.record
      ? `owner pid ${state.record.pid} on ${
        state.record.host || "this host"
      }, started ${state.record.started}, is gone`
      : "its owner died before writing its owner record";
    let restored = false;
    if ((await kind(`${work}/old`)) === "dir" && (await kind(target)) === "none") {
      // an overwrite was killed between its two renames: the old output goes back into place
      restored = await Deno.rename(`${work}/old`, target).then(() => true, () => false);
    }
    const ok = await Deno.remove(work, { recursive: true }).then(() => true, () => false);
    if (ok) removed++;
    log(
      `moekit: ${ok ? "removed" : "could not remove"} the stale temporary folder ${work} (${who})` +
        (restored ? `; restored the previous ${target} that an interrupted overwrite had moved aside` : ""),
    );
  }
  return removed;
}

/** Whether the owner of a temporary folder still runs: its lock on the owner record tells. */
async function ownerState(
  work: string,
  createdMs: number,
): Promise<
  { state: "alive" | "gone" | "unknown"; record?: { pid: unknown; host: unknown; started: unknown } }
> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(`${work}/${OWNER}`, { read: true, write: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) return { state: "unknown" };
    // no record: the owner is between creating the folder and writing the record (a few microseconds),
    // or died there; after a minute it is certainly gone
    return { state: Date.now() - createdMs > 60_000 ? "gone" : "unknown" };
  }
  try {
    let record: { pid: unknown; host: unknown; started: unknown } | undefined;
    try {
      record = JSON.parse(new TextDecoder().decode(await Deno.readFile(`${work}/${OWNER}`)));
    } catch {
      record = undefined;
    }
    if (record && typeof record.host === "string" && record.host !== hostName()) {
      return { state: "unknown", record }; // another machine's run on a shared file system: not ours to judge
    }
    const free = await file.tryLock(true).catch(() => false);
    if (!free) return { state: "alive", record };
    // a free lock with a readable record: the owner is gone; with no readable record the owner may be
    // between creating the record and locking it (microseconds): judge it gone only after a minute
    return { state: record || Date.now() - createdMs > 60_000 ? "gone" : "unknown", record };
  } finally {
    file.close();
  }
}

let host: string | undefined;
function hostName(): string {
  if (host !== undefined) return host;
  try {
    host = Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state === "granted"
      ? Deno.hostname()
      : Deno.readTextFileSync("/etc/hostname").trim();
  } catch {
    host = "";
  }
  return host;
}

type Exchange = (a: string, b: string) => boolean;
let exchangeFn: Exchange | null | undefined;

/** Atomically exchanges two paths (Linux renameat2 RENAME_EXCHANGE); false when not available here. */
function exchange(a: string, b: string): boolean {
  if (exchangeFn === undefined) exchangeFn = loadExchange();
  return exchangeFn ? exchangeFn(a, b) : false;
}

function loadExchange(): Exchange | null {
  try {
    if (Deno.build.os !== "linux" || Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      return null;
    }
    const lib = Deno.dlopen("libc.so.6", {
      renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
    });
    const enc = new TextEncoder();
    const cstr = (s: string) => {
      const b = enc.encode(s), out = new Uint8Array(b.length + 1);
      out.set(b);
      return out;
    };
    const AT_FDCWD = -100, RENAME_EXCHANGE = 2;
    return (a, b) => lib.symbols.renameat2(AT_FDCWD, cstr(a), AT_FDCWD, cstr(b), RENAME_EXCHANGE) === 0;
  } catch {
    return null;
  }
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.permissions.querySync({ name: "env", variable: name }).state === "granted"
      ? Deno.env.get(name)
      : undefined;
  } catch {
    return undefined;
  }
}

let holdAt: string | undefined | null = null;

/**
 * Fault injection for the kill tests: with `MOEKIT_TEST_HOLD=<phase>` in the environment, the write
 * announces `moekit test hold: <phase>` on stderr when it reaches that phase and waits there (60 s),
 * so that a test can SIGKILL the process at exactly that point. Phases: `before-first-tensor`,
 * `mid-tensor`, `commit`. Does nothing otherwise.
 */
export async function testHold(phase: string): Promise<void> {
  if (holdAt === null) holdAt = readEnv("MOEKIT_TEST_HOLD");
  if (holdAt !== phase) return;
  Deno.stderr.writeSync(new TextEncoder().encode(`moekit test hold: ${phase}\n`));
  await new Promise((r) => setTimeout(r, 60_000));
}
