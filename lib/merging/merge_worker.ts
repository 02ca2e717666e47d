/**
 * The Worker side of a checkpoint merge's compute stage: runs `merge()` on tensors posted by
 * `merge_run.ts` (inputs and result move by transfer, not copy, and the inputs come back for the run's
 * buffer pool) while the calling thread reads and writes neighbouring tensors (and merges too when this
 * Worker has jobs queued). Internal.
 * @module
 */

import { type ComputeJob, runJob } from "./merge_run.ts";
import { mergeKernel } from "./kernel_run.ts";

mergeKernel(); // compiled while the first inputs are read

const self = globalThis as unknown as {
  onmessage: ((ev: MessageEvent<ComputeJob>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

self.onmessage = (ev: MessageEvent<ComputeJob>) => {
  const { id } = ev.data;
  try {
    const out = runJob(ev.data, (warning) => self.postMessage({ id, warning }));
    const data = out.data as Float32Array | Float64Array;
    // a 16-bit output: encoded here, in place over the result (the calling thread writes the bytes)
    const K = ev.data.encode && data.buffer instanceof ArrayBuffer ? mergeKernel() : null;
    const encoded = K && !K.owns(data) ? K.encode16(data, ev.data.encode!) : undefined;
    // runJob has freed the buffers it is done with (detached), or they go back (`giveBack`: `spent`); the
    // result moves by transfer
    const spent = out.spent;
    self.postMessage(
      { id, shape: out.shape, ...(encoded ? { encoded } : { data }), ...(spent.length ? { spent } : {}) },
      [...(data.buffer instanceof ArrayBuffer ? [data.buffer] : []), ...spent],
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

self.postMessage({ id: -1, ready: true }); // up: the calling thread stops merging jobs itself
