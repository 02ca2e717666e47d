// Output folders: checks before any work, whole-folder overwrite, temporary folders and their cleanup.
import assert from "node:assert/strict";
import {
  checkOutputFolder,
  CheckpointError,
  openCheckpoint,
  openSafetensors,
  writeCheckpoint,
  writeSafetensors,
} from "../lib/io/mod.ts";
import { withTempDir } from "./harness.ts";

/** Runs `f` with a fresh temporary folder, removed afterwards (also on failure). */
const inTemp = (f: (dir: string) => Promise<void>) => withTempDir(f, "moekit-out-");

const spec = (name: string, n = 4) => ({ name, dtype: "F32" as const, shape: [n] });
const ls = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

/** A producer that counts its calls. */
function counting(value = 1) {
  const p = Object.assign((name: string) => {
    p.calls.push(name);
    return Array(4).fill(value);
  }, { calls: [] as string[] });
  return p;
}

Deno.test("output checks run before any tensor is produced: input folder, symlinked input, containing an input, a file", () =>
  inTemp(async (dir) => {
    await writeCheckpoint(`${dir}/base`, [spec("w")], () => [1, 2, 3, 4]);
    const before = await Deno.readFile(`${dir}/base/model.safetensors`);
    await Deno.symlink(`${dir}/base`, `${dir}/link`);
    await Deno.writeTextFile(`${dir}/file`, "not a folder");
    const cases: [string, RegExp, boolean][] = [
      [`${dir}/base`, /is an input of this run/, true],
      [`${dir}/base/`, /is an input of this run/, true],
      [`${dir}/link`, /is an input of this run/, true], // the symlink resolves to the input
      [`${dir}/./base/../base`, /is an input of this run/, true],
      [dir, /contains an input of this run/, true], // replacing it would delete the input
      [`${dir}/file`, /is a file; the output is a folder/, true],
      [`${dir}/file`, /is a file/, false],
      [
        `${dir}/base`,
        /already exists and is not empty \(model\.safetensors\); pass --overwrite \(API: overwrite: true\)/,
        false,
      ],
    ];
    for (const [out, pattern, overwrite] of cases) {
      const p = counting();
      await assert.rejects(
        () => writeCheckpoint(out, [spec("w")], p, { overwrite, inputs: overwrite ? [`${dir}/base`] : [] }),
        (e) => e instanceof CheckpointError && pattern.test(e.message) && e.path === out,
        out,
      );
      assert.deepEqual(p.calls, [], `${out}: nothing produced`);
    }
    assert.deepEqual(await Deno.readFile(`${dir}/base/model.safetensors`), before, "the input is untouched");
    assert.deepEqual(ls(dir), ["base", "file", "link"], "no temporary folder left");
    // a dangling symlink and the root are refused too
    await Deno.symlink(`${dir}/nothing`, `${dir}/dangling`);
    await assert.rejects(() => checkOutputFolder(`${dir}/dangling`), /symbolic link to nothing/);
    await assert.rejects(() => checkOutputFolder("/", { overwrite: true }), /file-system root/);
  }));

Deno.test("overwrite replaces the old folder as a whole: no stale shard, index or config survives", () =>
  inTemp(async (dir) => {
    const out = `${dir}/out`;
    const specs = ["a", "b", "c"].map((n) => spec(n));
    await writeCheckpoint(out, specs, () => [9, 9, 9, 9], {
      shardBytes: 16,
      files: [{ name: "config.json", data: '{"old": true}' }],
    });
    await Deno.writeTextFile(`${out}/notes.txt`, "stray");
    assert.deepEqual(ls(out), [
      "config.json",
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
      "notes.txt",
    ]);
    const p = counting(2);
    await writeCheckpoint(out, specs, p, { overwrite: true });
    assert.deepEqual(ls(out), ["model.safetensors"]);
    const ck = await openCheckpoint(out);
    assert.deepEqual(Array.from((await ck.read("b")).data), [2, 2, 2, 2]);
    ck.close();
    assert.deepEqual(ls(dir), ["out"], "old folder and temporary folder removed");
    // an existing empty folder is simply filled; a symlinked output is written where it points
    await Deno.mkdir(`${dir}/empty`);
    await writeCheckpoint(`${dir}/empty`, specs, () => [1, 1, 1, 1]);
    assert.deepEqual(ls(`${dir}/empty`), ["model.safetensors"]);
    await Deno.symlink(`${dir}/empty`, `${dir}/via-link`);
    await writeCheckpoint(`${dir}/via-link`, [spec("z")], () => [5, 5, 5, 5], { overwrite: true });
    assert.ok((await Deno.lstat(`${dir}/via-link`)).isSymlink, "the link stays a link");
    const z = await openCheckpoint(`${dir}/empty`);
    assert.deepEqual(z.names, ["z"]);
    z.close();
  }));

Deno.test("two writers racing for one new output: the first commits, the second is refused and leaves nothing", () =>
  inTemp(async (dir) => {
    const out = `${dir}/out`;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = writeCheckpoint(out, [spec("w")], async () => {
      await gate;
      return [2, 2, 2, 2];
    });
    await writeCheckpoint(out, [spec("w")], () => [1, 1, 1, 1]);
    release();
    await assert.rejects(slow, /was created by someone else during the write; nothing was replaced/);
    const ck = await openCheckpoint(out);
    assert.deepEqual(Array.from((await ck.read("w")).data), [1, 1, 1, 1]);
    ck.close();
    assert.deepEqual(ls(dir), ["out"]);
  }));

Deno.test("stale temporary folders: dead owners and reused PIDs are removed (and said), live ones kept", () =>
  inTemp(async (dir) => {
    const host = Deno.hostname(), now = Date.now();
    /** A temporary folder as a killed run leaves it, with a stale shard and index in data/. */
    const leftover = async (name: string, owner: Record<string, unknown> | undefined) => {
      const work = `${dir}/${name}`;
      await writeCheckpoint(`${work}/data`, [spec("stale.0"), spec("stale.1")], () => [7, 7, 7, 7], {
        shardBytes: 16,
        log: () => {},
      });
      if (owner) await Deno.writeTextFile(`${work}/moekit-owner.json`, JSON.stringify(owner));
      return work;
    };
    const token = (pid: number, t = now) => `${pid}-${t.toString(36)}-0123abcd`;
    const record = (pid: number, h = host) => ({ pid, host: h, started: new Date(now).toISOString() });
    // a run that has ended: its record is there, its lock is not
    const child = new Deno.Command("true").spawn();
    await child.status;
    const dead = await leftover(`out.partial-${token(child.pid)}`, record(child.pid));
    // PID reuse: the record names this very process (alive), but nobody holds the record's lock
    const reused = await leftover(`out.partial-${token(Deno.pid)}`, record(Deno.pid));
    // no owner record, a minute old (killed between creating the folder and writing the record)
    const noRecord = await leftover(`other.partial-${token(child.pid, now - 120_000)}`, undefined);
    // kept: a live run (its record locked), a just-created folder without a record, another host's run,
    // and an unrelated folder
    const live = await leftover(`x.partial-${token(Deno.pid)}`, record(Deno.pid));
    const young = await leftover(`w.partial-${token(Deno.pid)}`, undefined);
    const remote = await leftover(`y.partial-${token(child.pid)}`, record(child.pid, `${host}-elsewhere`));
    await Deno.mkdir(`${dir}/z.partial-12`);
    const lock = await Deno.open(`${live}/moekit-owner.json`, { read: true, write: true });
    await lock.lock(true);
    const lines: string[] = [];
    try {
      await writeCheckpoint(`${dir}/out`, [spec("fresh")], counting(3), { log: (l) => lines.push(l) });
    } finally {
      lock.close();
    }
    // the new output holds only what this run wrote
    const ck = await openCheckpoint(`${dir}/out`);
    assert.deepEqual(ck.names, ["fresh"]);
    assert.deepEqual(Array.from((await ck.read("fresh")).data), [3, 3, 3, 3]);
    ck.close();
    assert.deepEqual(ls(`${dir}/out`), ["model.safetensors"]);
    for (const gone of [dead, reused, noRecord]) {
      assert.equal(await Deno.stat(gone).then(() => true, () => false), false, gone);
      assert.ok(lines.some((l) => l.includes(gone) && /removed the stale temporary folder/.test(l)), gone);
    }
    assert.ok(lines.some((l) => l.includes(dead) && l.includes(`owner pid ${child.pid} on ${host}`)));
    assert.equal(lines.length, 3, lines.join("\n"));
    const kept = [live, young, remote].map((p) => p.slice(dir.length + 1));
    assert.deepEqual(ls(dir), ["out", ...kept, "z.partial-12"].sort());
  }));

Deno.test("an overwrite killed between its two renames: the next run in the folder restores the old output", () =>
  inTemp(async (dir) => {
    // as the fallback commit leaves it: the old output moved into the temporary folder, the new one beside it
    const child = new Deno.Command("true").spawn();
    await child.status;
    const work = `${dir}/out.partial-${child.pid}-${Date.now().toString(36)}-0123abcd`;
    await writeCheckpoint(`${work}/old`, [spec("old")], () => [1, 1, 1, 1], { log: () => {} });
    await writeCheckpoint(`${work}/data`, [spec("new")], () => [2, 2, 2, 2], { log: () => {} });
    await Deno.writeTextFile(
      `${work}/moekit-owner.json`,
      JSON.stringify({
        pid: child.pid,
        host: Deno.hostname(),
        started: new Date().toISOString(),
        procStart: 1,
      }),
    );
    const lines: string[] = [];
    await writeCheckpoint(`${dir}/other`, [spec("x")], () => [0, 0, 0, 0], { log: (l) => lines.push(l) });
    assert.deepEqual(ls(dir), ["other", "out"]);
    const ck = await openCheckpoint(`${dir}/out`);
    assert.deepEqual(ck.names, ["old"]);
    ck.close();
    assert.equal(lines.length, 1);
    assert.match(lines[0], /restored the previous .*out that an interrupted overwrite had moved aside/);
  }));

Deno.test("single files: replaced atomically, never over a folder or an input, no temporary left", () =>
  inTemp(async (dir) => {
    const path = `${dir}/w.safetensors`;
    await writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [1], data: [1] }]);
    await writeSafetensors(path, [{ name: "b", dtype: "F32", shape: [1], data: [2] }]);
    const f = await openSafetensors(path);
    assert.deepEqual([...f.tensors.keys()], ["b"]);
    f.close();
    assert.deepEqual(ls(dir), ["w.safetensors"]);
    await assert.rejects(
      () => writeSafetensors(dir, [{ name: "a", dtype: "F32", shape: [1], data: [1] }]),
      (e) => e instanceof CheckpointError && /is a folder/.test(e.message),
    );
    assert.deepEqual(ls(dir), ["w.safetensors"]);
  }));
