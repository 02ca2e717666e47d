/**
 * The Worker side of a checkpoint merge's compute stage: runs `merge()` on tensors posted by
 * `merge_run.ts` (inputs and result move by transfer, not copy) so that the calling thread stays free
 * for the reads and writes of neighbouring tensors. Internal.
 * @module
 */

import { type ComputeJob, planJob, runJob } from "./merge_run.ts";
import { mergeKernel } from "./kernel_run.ts";

mergeKernel(); // compiled while the first inputs are read

const self = globalThis as unknown as {
  onmessage: ((ev: MessageEvent<ComputeJob>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

self.onmessage = (ev: MessageEvent<ComputeJob>) => {
  const { id } = ev.data;
  try {
    if (ev.data.planBlocks) {
      // plan only: the plans, and the raw bytes back (the blocks are merged from them)
      const plans = planJob(ev.data);
      const bytes = [ev.data.base, ...ev.data.models.map((m) => m.tensor)].map((t) => t?.bytes);
      const buffers = bytes.flatMap((b) => (b && b.buffer instanceof ArrayBuffer ? [b.buffer] : []));
      self.postMessage({ id, plans, bytes }, [...new Set(buffers)]);
      return;
    }
    const out = runJob(ev.data, (warning) => self.postMessage({ id, warning }));
    const data = out.data as Float32Array | Float64Array;
    // a 16-bit output: encoded here, in place over the result (the calling thread writes the bytes)
    const K = ev.data.encode && data.buffer instanceof ArrayBuffer ? mergeKernel() : null;
    const encoded = K && !K.owns(data) ? K.encode16(data, ev.data.encode!) : undefined;
    // runJob has freed the input buffers (detached), or they go back (`giveBack`); the result moves by
    // transfer
    const inputs = ev.data.giveBack
      ? [
        ...new Set([ev.data.base, ...ev.data.models.map((m) => m.tensor)].flatMap((t) => {
          const b = t?.bytes.buffer;
          return b instanceof ArrayBuffer && !b.detached && b !== data.buffer ? [b] : [];
        })),
      ]
      : [];
    self.postMessage(
      { id, shape: out.shape, ...(encoded ? { encoded } : { data }), ...(inputs.length ? { inputs } : {}) },
      [...(data.buffer instanceof ArrayBuffer ? [data.buffer] : []), ...inputs],
    );
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(err)) {
      try {
        structuredClone(v);
        fields[k] = v;
      } catch {
        // not cloneable: left out
      }
    }
    self.postMessage({ id, error: { name: err.name, message: err.message, fields } });
  }
};
