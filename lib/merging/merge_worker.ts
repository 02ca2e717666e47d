/**
 * The Worker side of a checkpoint merge's compute stage: runs `merge()` on tensors posted by
 * `merge_run.ts` (inputs and result move by transfer, not copy) so that the calling thread stays free
 * for the reads and writes of neighbouring tensors. Internal.
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
    // runJob has freed the input buffers (detached); the result moves by transfer
    self.postMessage({ id, shape: out.shape, data }, data.buffer instanceof ArrayBuffer ? [data.buffer] : []);
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
