// The merge stream's buffer pool: every buffer of a run (reads, results, encoded outputs, read passes)
// comes from one pool and goes back once used, so the fresh memory a run takes is the pool's size, not
// proportional to the bytes merged; and a large tensor streamed in blocks of rows (after its planner's
// read passes, blocks that are not whole chunks) gives the bytes of the whole-tensor merge.
import assert from "node:assert/strict";
import { decodeFloats, type Dtype, encodeFloats, openCheckpoint, writeCheckpoint } from "../lib/io/mod.ts";
import { merge, parseMergeConfig, planCheckpointMerge, runCheckpointMerge } from "../lib/merging/mod.ts";
import { BufferPool, mergeStream, runCostMs } from "../lib/merging/merge_run.ts";
import { OptionError } from "../lib/core/errors.ts";
import { withTempDir } from "./harness.ts";

Deno.test("BufferPool: size classes, reuse, the limit, foreign and detached buffers", () => {
  assert.equal(BufferPool.classOf(1), 4096);
  assert.equal(BufferPool.classOf(4097), 5120); // quarter steps above a power of two
  assert.equal(BufferPool.classOf(1 << 20), 1 << 20);
  assert.equal(BufferPool.classOf((1 << 20) + 1), 5 << 18);
  const pool = new BufferPool(3 << 20);
  const a = pool.take(1 << 20), b = pool.take(1000);
  assert.equal(a.length, 1 << 20);
  assert.equal(b.buffer.byteLength, 4096);
  assert.equal(pool.made, (1 << 20) + 4096);
  pool.give(a.buffer);
  pool.give(b.buffer);
  assert.equal(pool.held, (1 << 20) + 4096);
  // the same memory again, nothing made
  assert.ok(pool.take(1_000_000).buffer === a.buffer, "the 1 MiB class again");
  assert.ok(pool.take(10).buffer === b.buffer, "the 4096 class again");
  assert.equal(pool.made, (1 << 20) + 4096);
  assert.equal(pool.held, 0);
  // a foreign buffer serves the largest class it holds (6000 bytes: the 5120 class)
  const foreign = new ArrayBuffer(6000);
  pool.give(foreign);
  assert.ok(pool.take(5000).buffer === foreign, "a foreign buffer reused");
  assert.ok(pool.take(5500).buffer !== foreign);
  // beyond the limit a buffer is freed at once (detached), not kept
  const big = [pool.take(2 << 20), pool.take(2 << 20)];
  big.forEach((x) => pool.give(x.buffer));
  assert.equal(pool.held, 2 << 20);
  assert.equal(big[1].buffer.byteLength, 0, "freed");
  // detached and tiny buffers are ignored
  pool.give(big[1].buffer);
  pool.give(new ArrayBuffer(100));
  assert.equal(pool.held, 2 << 20);
  pool.clear();
  assert.equal(pool.held, 0);
  assert.equal(big[0].buffer.byteLength, 0, "cleared buffers are freed");
});

/** base, a, b, c with `count` bf16 tensors of [512, 512] (2¹⁸ entries: merged a chunk at a time). */
async function layers(dir: string, count: number): Promise<void> {
  const specs = Array.from({ length: count }, (_, l) => ({
    name: `model.layers.${l}.mlp.up_proj.weight`,
    dtype: "BF16" as Dtype,
    shape: [512, 512],
  }));
  for (const [i, m] of ["base", "a", "b", "c"].entries()) {
    await writeCheckpoint(`${dir}/${m}`, specs, (name) => {
      const l = specs.findIndex((s) => s.name === name), out = new Float32Array(512 * 512);
      for (let j = 0; j < out.length; j++) {
        out[j] = Math.sin(j * 0.001 + l) * 0.1 + (i ? Math.cos(j * (i + 3)) * 0.01 : 0);
      }
      return out;
    });
  }
}

const TIES = "merge_method: ties\nbase_model: base\nmodels:\n" +
  ["a", "b", "c"].map((m) => `  - {model: ${m}, parameters: {weight: 1, density: 0.3}}`).join("\n") + "\n";

/**
 * The bytes of fresh memory a run of `config` over `dir` takes from its pool (keeping at most `limit` bytes
 * free: 0 is no pooling), and its output's bytes.
 */
async function poolRun(
  dir: string,
  config: string,
  overlap: boolean,
  limit = 64 << 20,
): Promise<{ made: number; bytes: Uint8Array }> {
  const plan = await planCheckpointMerge(parseMergeConfig(config), { configDir: dir });
  const pool = new BufferPool(limit), out = `${dir}/out-${overlap}`;
  const stream = mergeStream(plan, plan.tensors, { overlap, pool, minWorkerMs: 0 });
  try {
    await writeCheckpoint(out, plan.tensors, (name) => stream.take(name), {
      onTensor: (name) => stream.written(name),
    });
  } finally {
    stream.close();
    plan.close();
  }
  const bytes = await Deno.readFile(`${out}/model.safetensors`);
  await Deno.remove(out, { recursive: true });
  return { made: pool.made, bytes };
}

function sameBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  assert.equal(got.findIndex((x, i) => x !== want[i]), -1, `${what}: first different byte`);
}

Deno.test("merge stream: the fresh memory of a run is the pool's size, not proportional to the tensors", async () => {
  await withTempDir(async (dir) => {
    await layers(`${dir}/4`, 4);
    await layers(`${dir}/12`, 12);
    const unit = 512 * 512 * (4 * 2 + 4); // one tensor's 4 bf16 inputs and its float32 result
    for (const config of [TIES, TIES.replace("ties", "task_arithmetic").replaceAll(", density: 0.3", "")]) {
      const four = await poolRun(`${dir}/4`, config, false),
        twelve = await poolRun(`${dir}/12`, config, false);
      // three times the tensors, no more memory: at most what a few tensors in flight hold (the reads
      // of the next tensor may start before the last result is written, so not always the same bytes)
      for (const r of [four, twelve]) {
        assert.ok(r.made <= 3 * unit, `${r.made} bytes made for ${unit} bytes per tensor`);
      }
      assert.ok(
        twelve.made <= four.made + unit,
        `${twelve.made} bytes made for 12 tensors, ${four.made} for 4`,
      );
      // the Workers' path: their inputs and results come back to the pool too; the same bytes
      const worker = await poolRun(`${dir}/12`, config, true);
      assert.ok(worker.made <= 6 * unit, `${worker.made} bytes made on the Worker path`);
      sameBytes(worker.bytes, twelve.bytes, "the Worker path");
      // without pooling (nothing kept): fresh memory for every tensor's inputs, and the same bytes
      const none = await poolRun(`${dir}/12`, config, false, 0);
      assert.ok(none.made >= 12 * 512 * 512 * 4 * 2, `${none.made} bytes made without pooling`);
      sameBytes(none.bytes, twelve.bytes, "no pooling");
    }
  });
});

const EMBED = "model.embed_tokens.weight";
/** A tensor the stream splits (≥ 2²⁰ entries) in blocks of 262 rows and one of 52: not whole chunks of 2¹⁶. */
const BIG = [1100, 1000];

const CONFIGS: Record<string, string> = {
  ties: TIES,
  breadcrumbs: TIES.replace("ties", "breadcrumbs").replaceAll("density: 0.3", "density: 0.3, gamma: 0.01"),
  dare_ties: TIES.replace("ties", "dare_ties"),
  della: TIES.replace("ties", "della").replaceAll("density: 0.3", "density: 0.3, epsilon: 0.1"),
  slerp: "merge_method: slerp\nbase_model: base\nparameters: {t: 0.4}\nmodels:\n  - {model: a}\n",
  linear: "merge_method: linear\nmodels:\n" +
    ["base", "a", "b"].map((m, i) => `  - {model: ${m}, parameters: {weight: ${i + 1}}}`).join("\n") + "\n",
};

Deno.test("merge stream: a large tensor merged in blocks after its read passes = the whole-tensor merge", async () => {
  await withTempDir(async (dir) => {
    const n = BIG[0] * BIG[1], data = new Map<string, Float32Array>();
    for (const [i, m] of ["base", "a", "b", "c"].entries()) {
      const x = new Float32Array(n);
      // whole numbers of small magnitude in places: equal magnitudes (ties) at the magnitude cuts
      for (let j = 0; j < n; j++) {
        const v = Math.sin(j * 0.0007) * 0.1 + (i ? Math.sin(j * (0.37 + i)) * 0.02 : 0);
        x[j] = j % 7 === 0 ? Math.round(40 * v) / 8 : v;
      }
      await writeCheckpoint(`${dir}/${m}`, [{ name: EMBED, dtype: "BF16", shape: BIG }], () => x);
      // what the merge reads: the bf16 values
      data.set(m, decodeFloats(encodeFloats(x, "BF16"), "BF16") as Float32Array);
    }
    for (const [method, text] of Object.entries(CONFIGS)) {
      const config = parseMergeConfig(text);
      // the whole tensor merged in memory, with the parameters the plan gives it
      const plan0 = await planCheckpointMerge(config, { configDir: dir }), e = plan0.tensors[0];
      plan0.close();
      const want = merge({
        method,
        name: EMBED,
        seed: 5,
        params: e.params,
        base: e.base ? { shape: BIG, data: data.get(e.base.model)! } : undefined,
        models: e.sources.map((s) => ({
          tensor: { shape: BIG, data: data.get(s.model)! },
          params: s.params,
        })),
        output: "f32",
      }).data;
      for (const overlap of [false, true]) {
        const plan = await planCheckpointMerge(config, { configDir: dir });
        await runCheckpointMerge(plan, `${dir}/out`, { overlap, minWorkerMs: 0, seed: 5, overwrite: true });
        plan.close();
        const ck = await openCheckpoint(`${dir}/out`);
        const got = await ck.readBytes(EMBED);
        ck.close();
        const ref = encodeFloats(want, "BF16");
        const diff = ref.findIndex((x, i) => x !== got[i]);
        assert.equal(diff, -1, `${method}, overlap ${overlap}: first different byte`);
        assert.equal(got.length, ref.length);
      }
    }
  });
});

Deno.test("a run whose estimated one-thread time is below minWorkerMs starts no Worker", () =>
  withTempDir(async (dir) => {
    await layers(dir, 2);
    const plan = await planCheckpointMerge(parseMergeConfig(TIES), { configDir: dir });
    try {
      // 2 tensors of 2¹⁸ entries × 4 inputs × 11 ns: about 23 ms on one thread
      assert.equal(Math.round(runCostMs("ties", plan.tensors)), 23);
      const workers = (options: Parameters<typeof mergeStream>[2]) => {
        const s = mergeStream(plan, plan.tensors, options);
        s.close();
        return s.workers;
      };
      assert.equal(workers({}), 0, "too small to repay a Worker's start: the calling thread alone");
      assert.equal(workers({ minWorkerMs: 23 }), 1);
      assert.equal(workers({ minWorkerMs: 24 }), 0);
      assert.equal(workers({ minWorkerMs: 0 }), 1);
      assert.equal(workers({ minWorkerMs: 0, overlap: false }), 0);
      assert.equal(workers({ minWorkerMs: Infinity }), 0);
      // a bad value is an OptionError naming the option, with or without overlap, before anything is written
      for (const bad of [-1, NaN, "5" as unknown as number]) {
        assert.throws(
          () => workers({ minWorkerMs: bad }),
          (e) => e instanceof OptionError && e.option === "minWorkerMs",
        );
        assert.throws(() => workers({ minWorkerMs: bad, overlap: false }), OptionError);
        await assert.rejects(() => runCheckpointMerge(plan, `${dir}/bad`, { minWorkerMs: bad }), OptionError);
      }
      await assert.rejects(Deno.stat(`${dir}/bad`), Deno.errors.NotFound);
      // the same bytes with and without the Worker
      const one = await poolRun(dir, TIES, false), two = await poolRun(dir, TIES, true);
      assert.deepEqual(two.bytes, one.bytes);
    } finally {
      plan.close();
    }
  }));
