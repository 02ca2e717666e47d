/// <reference lib="deno.worker" />
/**
 * A routing Worker (started by `useThreads`): instantiates the gate kernel on the shared kernel memory,
 * then blocks on its control words for jobs — a token range to multiply and select — until stopped.
 * @module
 */

import type { Mat } from "../core/matrix.ts";
import { Rng } from "../core/random.ts";
import type { GateKernel } from "./runtime.ts";
import type { ThreadJob } from "./threads.ts";
import { type Selector, softmaxTopK } from "../routing/select.ts";
import { sigmoidGroupedTopK, softmaxGroupedTopK } from "../routing/deepseek.ts";
import { checkLogitsFinite } from "../routing/checks.ts";

const CTL = 16;
const factories: Record<string, (o: Record<string, unknown>) => Selector> = {
  softmaxTopK: (o) => softmaxTopK(o as never),
  sigmoidGroupedTopK: (o) =>
    sigmoidGroupedTopK({ ...o, ...(o.bias ? { bias: Float32Array.from(o.bias as number[]) } : {}) } as never),
  softmaxGroupedTopK: (o) => softmaxGroupedTopK(o as never),
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
  const base = index * CTL, selectors = new Map<string, Selector>();
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
      runJob(JSON.parse(text) as ThreadJob, memory, ctl, kernel, selectors);
      Atomics.store(ctl, base + 2, 0);
    } catch (err) {
      const msg = new TextEncoder().encode(String((err as Error)?.message ?? err)).subarray(0, 65536);
      new Uint8Array(memory.buffer, jobPtr, msg.length).set(msg);
      Atomics.store(ctl, base + 3, msg.length);
      Atomics.store(ctl, base + 2, 1);
    }
    Atomics.store(ctl, base + 1, seq);
    Atomics.notify(ctl, base + 1);
  }
};

function runJob(
  job: ThreadJob,
  memory: WebAssembly.Memory,
  ctl: Int32Array,
  kernel: GateKernel,
  selectors: Map<string, Selector>,
): void {
  const key = JSON.stringify(job.selector);
  let selector = selectors.get(key);
  if (!selector) {
    const make = factories[job.selector.kind];
    if (!make) throw new Error(`worker: unknown selector kind ${job.selector.kind}`);
    selector = make(job.selector.options);
    selectors.set(key, selector);
  }
  const heap = new Float32Array(memory.buffer), { E, d, k, tile, rows: T } = job;
  const out = {
    indices: new Int32Array(memory.buffer, job.indices, T * k),
    weights: new Float32Array(memory.buffer, job.weights, T * k),
    scores: new Float32Array(memory.buffer, job.scores, T * k),
  };
  const ctx = { training: false, rng: new Rng(0), tokens: T }, tiles = Math.ceil(T / tile);
  for (let t = Atomics.add(ctl, job.counter, 1); t < tiles; t = Atomics.add(ctl, job.counter, 1)) {
    const t0 = t * tile, n = Math.min(tile, T - t0), xt = job.x + t0 * d * 4;
    kernel.gemm_nt(xt, job.w, job.scratch, n, d, E);
    const logits: Mat = { rows: n, cols: E, data: heap.subarray(job.scratch / 4, job.scratch / 4 + n * E) };
    if (job.bias) {
      for (let i = 0; i < n; i++) for (let e = 0; e < E; e++) logits.data[i * E + e] += job.bias[e];
    }
    checkLogitsFinite(logits, { rows: n, cols: d, data: heap.subarray(xt / 4, xt / 4 + n * d) }, t0);
    let pre: Float32Array | undefined;
    if (selector.epilogue === "softmaxSums") {
      kernel.softmax_sums(job.scratch, n, E, job.epi);
      pre = heap.subarray(job.epi / 4, job.epi / 4 + n);
    } else if (selector.epilogue === "sigmoid") {
      kernel.sigmoid_map(job.scratch, n * E, job.epi);
      pre = heap.subarray(job.epi / 4, job.epi / 4 + n * E);
    }
    selector.select(logits, t0, out, pre ? { ...ctx, [selector.epilogue!]: pre } : ctx);
  }
}
