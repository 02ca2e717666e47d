/// <reference lib="deno.worker" />
/**
 * A routing Worker (started by `useThreads`): instantiates the gate kernel on the shared kernel memory,
 * then blocks on its control words for jobs — a token range to multiply and select — until stopped.
 * The selector is rebuilt from its description through routing's selector registry, loaded by URL.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { Rng } from "../core/random.ts";
import type { GateKernel } from "./runtime.ts";
import type { ThreadJob } from "./threads.ts";
import { checkLogitsFinite, type SelectorSpec } from "../routing/backend.ts";

/** The part of a selector a worker calls (structurally routing's `Selector`). */
interface WorkerSelector {
  select(
    logits: Mat,
    tokenOffset: number,
    out: { indices: Int32Array; weights: Float32Array; scores: Float32Array },
    ctx: Record<string, unknown>,
  ): unknown;
}

const CTL = 16;
const loaded = new Map<string, Promise<unknown>>();
const load = (url: string) => {
  if (!loaded.has(url)) loaded.set(url, import(url));
  return loaded.get(url)!;
};

self.onmessage = (e: MessageEvent) => {
  const { memory, module, ctl, index, jobPtr } = e.data as {
    memory: WebAssembly.Memory;
    module: WebAssembly.Module;
    ctl: Int32Array;
    index: number;
    jobPtr: number;
  };
  const kernel = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as GateKernel;
  self.postMessage("ready");
  void serve(memory, ctl, index, jobPtr, kernel);
};

async function serve(
  memory: WebAssembly.Memory,
  ctl: Int32Array,
  index: number,
  jobPtr: number,
  kernel: GateKernel,
): Promise<void> {
  const base = index * CTL, selectors = new Map<string, WorkerSelector>();
  let seen = 0;
  for (;;) {
    Atomics.wait(ctl, base, seen);
    const seq = Atomics.load(ctl, base);
    if (seq === -1) return;
    if (seq === seen) continue;
    seen = seq;
    try {
      const text = new TextDecoder().decode(
        new Uint8Array(memory.buffer, jobPtr, Atomics.load(ctl, base + 3)).slice(),
      );
      const job = JSON.parse(text) as ThreadJob;
      const key = JSON.stringify(job.selector);
      let selector = selectors.get(key);
      if (!selector) {
        // module loads are the only awaits: the first job with a new selector kind pays them once
        const spec: SelectorSpec = job.selector.spec;
        if (spec.module) await load(spec.module);
        const registry = await load(job.selector.registry) as {
          createSelector(s: SelectorSpec): WorkerSelector;
        };
        selector = registry.createSelector(spec);
        if (selectors.size >= 16) selectors.clear(); // a live bias changes the key every call
        selectors.set(key, selector);
      }
      runJob(job, memory, ctl, kernel, selector);
      Atomics.store(ctl, base + 2, 0);
    } catch (err) {
      const e = err as { name?: string; message?: string; row?: number; col?: number };
      const report = JSON.stringify({
        name: e?.name,
        message: String(e?.message ?? err),
        row: e?.row,
        col: e?.col,
      });
      const msg = new TextEncoder().encode(report).subarray(0, 65536);
      new Uint8Array(memory.buffer, jobPtr, msg.length).set(msg);
      Atomics.store(ctl, base + 3, msg.length);
      Atomics.store(ctl, base + 2, 1);
    }
    Atomics.store(ctl, base + 1, seq);
    Atomics.notify(ctl, base + 1);
  }
}

function runJob(
  job: ThreadJob,
  memory: WebAssembly.Memory,
  ctl: Int32Array,
  kernel: GateKernel,
  selector: WorkerSelector,
): void {
  const heap = new Float32Array(memory.buffer), { E, d, k, tile, rows: T } = job;
  const out = {
    indices: new Int32Array(memory.buffer, job.indices, T * k),
    weights: new Float32Array(memory.buffer, job.weights, T * k),
    scores: new Float32Array(memory.buffer, job.scores, T * k),
  };
  const epilogue = job.selector.epilogue, random = job.selector.random;
  const callRng = new Rng(job.seed), tiles = Math.ceil(T / tile);
  for (let t = Atomics.add(ctl, job.counter, 1); t < tiles; t = Atomics.add(ctl, job.counter, 1)) {
    const t0 = t * tile, n = Math.min(tile, T - t0), xt = job.x + t0 * d * 4;
    kernel.gemm_nt(xt, job.w, job.scratch, n, d, E);
    const logits: Mat = { rows: n, cols: E, data: heap.subarray(job.scratch / 4, job.scratch / 4 + n * E) };
    if (job.bias) {
      for (let i = 0; i < n; i++) for (let e = 0; e < E; e++) logits.data[i * E + e] += job.bias[e];
    }
    checkLogitsFinite(logits, { rows: n, cols: d, data: heap.subarray(xt / 4, xt / 4 + n * d) }, t0);
    const ctx: Record<string, unknown> = {
      training: job.training,
      rng: random ? callRng.derive("tile", t0) : callRng,
      tokens: T,
    };
    if (epilogue === "softmaxSums") {
      kernel.softmax_sums(job.scratch, n, E, job.epi);
      ctx.softmaxSums = heap.subarray(job.epi / 4, job.epi / 4 + n);
    } else if (epilogue === "sigmoid") {
      kernel.sigmoid_map(job.scratch, n * E, job.epi);
      ctx.sigmoid = heap.subarray(job.epi / 4, job.epi / 4 + n * E);
    }
    selector.select(logits, t0, out, ctx);
  }
}
