/// <reference lib="deno.worker" />
/**
 * A routing Worker (started by `useThreads`): instantiates the gate kernel on the shared kernel memory,
 * then blocks on its control words for jobs — a token range to multiply and select — until stopped.
 * The selector is rebuilt from its description through routing's selector registry, loaded by URL.
 * @module
 */

import type { GateKernel } from "./runtime.ts";
import { runTileJob, spinUntilChanged, type ThreadJob, type TileSelector } from "./threads.ts";
import type { SelectorSpec } from "../routing/backend.ts";

const CTL = 16;
const loaded = new Map<string, Promise<unknown>>();
const load = (url: string) => {
  if (!loaded.has(url)) loaded.set(url, import(url));
  return loaded.get(url)!;
};

self.onmessage = (e: MessageEvent) => {
  const { memory, module, ctl, index, jobPtr, spinMs } = e.data as {
    memory: WebAssembly.Memory;
    module: WebAssembly.Module;
    ctl: Int32Array;
    index: number;
    jobPtr: number;
    spinMs: number;
  };
  const kernel = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as GateKernel;
  self.postMessage("ready");
  void serve(memory, ctl, index, jobPtr, kernel, spinMs);
};

async function serve(
  memory: WebAssembly.Memory,
  ctl: Int32Array,
  index: number,
  jobPtr: number,
  kernel: GateKernel,
  spinMs: number,
): Promise<void> {
  const base = index * CTL, selectors = new Map<string, TileSelector>();
  let seen = 0, last: { bytes: Uint8Array; job: ThreadJob; key: string } | undefined;
  for (;;) {
    // poll a little for the next job before sleeping: back-to-back routes then start without a wake-up
    if (!spinUntilChanged(ctl, base, seen, spinMs)) Atomics.wait(ctl, base, seen);
    const seq = Atomics.load(ctl, base);
    if (seq === -1) return;
    if (seq === seen) continue;
    seen = seq;
    try {
      // a route repeated on the same buffers sends the same description: reuse its parse (JSON.parse of
      // it took 25–40 µs here, about 1 % of a 4096-token Switch route on two threads)
      const bytes = new Uint8Array(memory.buffer, jobPtr, Atomics.load(ctl, base + 3));
      if (!last || !sameBytes(bytes, last.bytes)) {
        const copy = bytes.slice(); // TextDecoder reads no shared memory
        const job = JSON.parse(new TextDecoder().decode(copy)) as ThreadJob;
        last = { bytes: copy, job, key: JSON.stringify(job.selector) };
      }
      const { job, key } = last;
      let selector = selectors.get(key);
      if (!selector && !job.fused) {
        // module loads are the only awaits: the first job with a new selector kind pays them once
        const spec: SelectorSpec = job.selector.spec;
        if (spec.module) await load(spec.module);
        const registry = await load(job.selector.registry) as {
          createSelector(s: SelectorSpec): TileSelector;
        };
        selector = registry.createSelector(spec);
        if (selectors.size >= 16) selectors.clear(); // a live bias changes the key every call
        selectors.set(key, selector);
      }
      runTileJob(job, memory, ctl, kernel, selector);
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

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
