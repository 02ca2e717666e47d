/**
 * I/O: safetensors files, dtypes, sharded checkpoints, and safe output folders (checked before any
 * work, written beside the target and renamed into place, stale temporary folders cleaned up).
 * @module
 */

export * from "../core/mod.ts";
export { asTensor, type Tensor, type TensorInput } from "./tensor.ts";
export {
  bf16Bits,
  bf16ToNumber,
  decodeFloats,
  type Dtype,
  DTYPE_BYTES,
  encodeFloats,
  F16_NAN,
  f16Bits,
  f16ToNumber,
  FLOAT_DTYPES,
} from "./dtype.ts";
export { CheckpointError, SafetensorsError } from "./errors.ts";
export {
  type EncodedBytes,
  openSafetensors,
  parseSafetensorsHeader,
  type SafetensorsFile,
  type TensorChunks,
  type TensorData,
  type TensorInfo,
  type TensorProducer,
  type TensorSpec,
  type TensorToWrite,
  writeSafetensors,
  writeSafetensorsStream,
} from "./safetensors.ts";
export {
  type Checkpoint,
  type ExtraFile,
  openCheckpoint,
  writeCheckpoint,
  type WriteCheckpointOptions,
} from "./checkpoint.ts";
export { checkOutputFolder, type OutputOptions } from "./output.ts";
export { jsonLike } from "./model_files.ts";
