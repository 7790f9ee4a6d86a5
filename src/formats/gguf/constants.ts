// GGUF constants: ggml tensor types this project converts, their byte sizes, and llama.cpp's file_type codes.

import { BLOCK_BYTES, QK } from '../../tensor/quant-blocks.js';

/** ggml_type ids (ggml.h) of the tensor types moe-ts reads and writes. */
export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, BF16: 30 } as const;
export type GGMLTypeName = keyof typeof GGML;

/** Names of every ggml_type id, so that an unsupported tensor type is named in errors. */
const GGML_NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K',
  13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S',
  23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

export function ggmlTypeName(id: number): string {
  return GGML_NAMES[id] ?? `ggml type ${id}`;
}

export function isSupportedType(id: number): id is (typeof GGML)[GGMLTypeName] {
  return id === GGML.F32 || id === GGML.F16 || id === GGML.BF16 || id === GGML.Q8_0 || id === GGML.Q4_0;
}

/** Bytes of n values of a supported type (n a multiple of 32 for block types; checked by the caller). */
export function typeBytes(id: number, n: number): number {
  switch (id) {
    case GGML.F32: return 4 * n;
    case GGML.F16:
    case GGML.BF16: return 2 * n;
    case GGML.Q8_0: return (n / QK) * BLOCK_BYTES.q8_0;
    case GGML.Q4_0: return (n / QK) * BLOCK_BYTES.q4_0;
    default: throw new Error(`no size for ${ggmlTypeName(id)}`);
  }
}

export function isBlockType(id: number): boolean {
  return id === GGML.Q8_0 || id === GGML.Q4_0;
}

/** llama.cpp's general.file_type (enum llama_ftype) for a file whose large matrices are of one type. */
export const FILE_TYPE: Record<GGMLTypeName, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, BF16: 32 };

/** GGUF's default general.alignment. */
export const GGUF_ALIGNMENT = 32;
