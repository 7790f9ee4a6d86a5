// File input and output: safetensors tensors and atomic file replacement.

export {
  serializeSafetensors, parseSafetensors, writeSafetensorsFile, readSafetensorsFile,
  SafetensorsError, SAFETENSORS_MAX_HEADER_BYTES,
  type SafetensorsInput, type SafetensorsContents, type ParseOptions,
} from './safetensors.js';
export { writeFileAtomic } from './atomic.js';
