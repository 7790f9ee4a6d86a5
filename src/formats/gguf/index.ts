// GGUF in and out for the MoE decoder families: readGGUFAsHF presents a .gguf as an HF directory
// would be (config.json, HF tensors, tokenizer files); writeGGUF writes llama.cpp's layout.

import { GGUFValueType } from '@huggingface/gguf';
import { parseHFConfig, type HFConfig } from '../hf/config.js';
import { encodeFloats } from '../hf/encode.js';
import { quantizeArray } from '../../tensor/quant-blocks.js';
import { FILE_TYPE, GGML, type GGMLTypeName } from './constants.js';
import { configToMetadata, familyOfArch, GGUF_ARCH, hfToGGUF, metadataToConfig, permuteRows, ropePermuteHeads } from './arch.js';
import { GGUFError, GGUFFile, type GGUFMetaEntry } from './read.js';
import { decodeToF32, GGUFTensorSource } from './source.js';
import { metadataToTokenizer, tokenizerToMetadata } from './tokenizer.js';
import { writeGGUFFile, type GGUFWriteTensor } from './write.js';

export { GGUFError, GGUFFile, type GGUFTensor, type GGUFMetaEntry } from './read.js';
export { writeGGUFFile, type GGUFWriteTensor } from './write.js';
export { GGUFTensorSource, type RawTensor } from './source.js';
export { GGML, ggmlTypeName } from './constants.js';
export { GGUF_ARCH, hfToGGUF, ggufToHF } from './arch.js';

export interface GGUFAsHF {
  config: HFConfig;
  source: GGUFTensorSource;
  tokenizerJson: object | null;
  tokenizerConfig: object | null;
  /** What could not be carried over (e.g. a SentencePiece tokenizer), one line each. */
  warnings: string[];
}

/** Opens a .gguf of a supported architecture as HF config, tensors and tokenizer. The file stays open until source.close(). */
export async function readGGUFAsHF(path: string): Promise<GGUFAsHF> {
  const file = await GGUFFile.open(path);
  try {
    const arch = file.str('general.architecture');
    const family = familyOfArch(arch, file.has(`${arch}.expert_count`) ? file.int(`${arch}.expert_count`) : 0);
    if (!family) {
      throw new GGUFError(path, `general.architecture '${arch}'${arch === 'llama' ? ' without experts' : ''} is not supported ` +
        `(supported: ${Object.values(GGUF_ARCH).map((a) => (a === 'llama' ? 'llama with experts (Mixtral)' : a)).join(', ')})`);
    }
    const names = new Set(file.tensors.keys());
    let config: HFConfig;
    try {
      config = metadataToConfig(file, family, names);
    } catch (e) {
      throw e instanceof GGUFError ? e : new GGUFError(path, (e as Error).message);
    }
    if (config['vocab_size'] === undefined) config['vocab_size'] = file.tensor('token_embd.weight').shape[0];
    const warnings: string[] = [];
    let tok: ReturnType<typeof metadataToTokenizer>;
    try {
      tok = metadataToTokenizer(file);
    } catch (e) {
      throw e instanceof GGUFError ? e : new GGUFError(path, (e as Error).message);
    }
    if (tok.json === null) warnings.push(`no tokenizer.json: ${tok.reason}`);
    for (const [key, field] of [['tokenizer.ggml.bos_token_id', 'bos_token_id'], ['tokenizer.ggml.eos_token_id', 'eos_token_id']] as const) {
      if (file.has(key)) config[field] = file.int(key);
    }
    const source = new GGUFTensorSource(file, family, config);
    return { config, source, tokenizerJson: tok.json, tokenizerConfig: tok.config, warnings };
  } catch (e) {
    file.close();
    throw e;
  }
}

/** Marks an output.weight that is a copy of token_embd (written for architectures whose llama.cpp loader requires one). */
export const TIED_KEY = 'moe_ts.tie_word_embeddings';
const TIED_NEEDS_OUTPUT: ReadonlySet<string> = new Set(['qwen2_moe']);

export type GGUFWriteDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
export const GGUF_WRITE_DTYPES: readonly GGUFWriteDType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];

/** Already-encoded data of one tensor (e.g. readRaw of a source): written as is when its type is the one chosen. */
export interface EncodedTensor {
  dtype: string;
  data: Uint8Array;
}

export interface GGUFWriteInput {
  config: HFConfig | Record<string, unknown>;
  /** HF names, data and HF shapes ([out, in] per expert), consumed one at a time. */
  tensors: Iterable<[string, Float32Array | EncodedTensor, number[]]>;
  /** Type of the matrices; norms, biases and routers stay F32 as in llama.cpp's converter. Default f32. */
  dtype?: GGUFWriteDType;
  tokenizerJson?: object | null;
  tokenizerConfig?: object | null;
}

const TYPE_OF: Record<GGUFWriteDType, GGMLTypeName> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** llama.cpp's converter's choice: 1-D tensors and routers in F32; rows that are not whole blocks fall back to F16. */
function chooseType(ggufName: string, shape: number[], dtype: GGUFWriteDType): GGMLTypeName {
  if (shape.length <= 1 || /\.ffn_gate_inp(_shexp)?\.weight$/.test(ggufName)) return 'F32';
  const t = TYPE_OF[dtype];
  if ((t === 'Q8_0' || t === 'Q4_0') && shape[shape.length - 1]! % 32 !== 0) return 'F16';
  return t;
}

function encode(value: Float32Array | EncodedTensor, type: GGMLTypeName, n: number, where: string): Uint8Array {
  if (!(value instanceof Float32Array)) {
    if (value.dtype === type) return value.data;
    value = decodeToF32(GGML[value.dtype as GGMLTypeName] ?? -1, value.dtype, value.data, n, where);
  }
  if (value.length !== n) throw new Error(`${where}: ${value.length} values, the shape says ${n}`);
  switch (type) {
    case 'Q8_0': return quantizeArray('q8_0', value);
    case 'Q4_0': return quantizeArray('q4_0', value);
    default: return encodeFloats(value, type).slice();
  }
}

/**
 * Writes an HF-named model as a llama.cpp GGUF (atomically): metadata from config.json, experts
 * stacked per layer and projection, llama's RoPE permutation for Mixtral, the byte-level BPE
 * tokenizer as tokenizer.ggml.*. With tied embeddings lm_head.weight is left out (llama.cpp reuses
 * token_embd).
 */
export function writeGGUF(path: string, input: GGUFWriteInput): { tensorCount: number; bytes: number } {
  const config = parseHFConfig(input.config, `${path} (config)`);
  const family = config.model_type;
  const dtype = input.dtype ?? 'f32';
  if (!GGUF_WRITE_DTYPES.includes(dtype)) throw new Error(`writeGGUF ${path}: dtype '${String(dtype)}' is not one of ${GGUF_WRITE_DTYPES.join(', ')}`);
  const metadata: Array<[string, GGUFMetaEntry]> = configToMetadata(config);
  metadata.push(['general.file_type', { type: GGUFValueType.UINT32, value: FILE_TYPE[TYPE_OF[dtype]] }]);
  if (dtype === 'q8_0' || dtype === 'q4_0') metadata.push(['general.quantization_version', { type: GGUFValueType.UINT32, value: 2 }]);
  if (input.tokenizerJson) {
    metadata.push(...tokenizerToMetadata(input.tokenizerJson, input.tokenizerConfig ?? null, Number(config['vocab_size'])));
  }
  const tied = config['tie_word_embeddings'] === true;
  // llama.cpp's qwen2moe loader requires output.weight even for tied embeddings: write a copy of
  // token_embd there and say in a key of ours that it is one, so reading gives a tied model back.
  const copyTiedOutput = tied && TIED_NEEDS_OUTPUT.has(family);
  if (copyTiedOutput) metadata.push([TIED_KEY, { type: GGUFValueType.BOOL, value: true }]);
  const experts = Number(family === 'mixtral' ? config['num_local_experts'] ?? 8 : config['num_experts']);

  function* tensors(): Generator<GGUFWriteTensor> {
    const pending = new Map<string, { shape: number[]; parts: Array<Float32Array | EncodedTensor | undefined>; got: number }>();
    const emit = (name: string, value: Float32Array | EncodedTensor, shape: number[]): GGUFWriteTensor => {
      const type = chooseType(name, shape, dtype);
      const n = shape.reduce((a, b) => a * b, 1);
      let data = encode(value, type, n, `writeGGUF ${path}: tensor ${name}`);
      const heads = ropePermuteHeads(family, name, config);
      if (heads > 0) data = permuteRows(data, shape[0]!, data.length / shape[0]!, heads, true);
      return { name, type: GGML[type], shape, data };
    };
    for (const [hf, value, shape] of input.tensors) {
      const to = hfToGGUF(family, hf);
      if (!to) throw new Error(`writeGGUF ${path}: tensor ${hf} has no llama.cpp name for ${family}`);
      if (tied && to.name === 'output.weight') continue;
      if (to.expert === null) {
        yield emit(to.name, value, shape);
        if (copyTiedOutput && to.name === 'token_embd.weight') yield emit('output.weight', value, shape);
        continue;
      }
      if (to.expert >= experts) throw new Error(`writeGGUF ${path}: tensor ${hf}: expert ${to.expert} but the config has ${experts} experts`);
      let p = pending.get(to.name);
      if (!p) {
        p = { shape: shape.slice(), parts: new Array(experts).fill(undefined), got: 0 };
        pending.set(to.name, p);
      }
      if (shape.length !== 2 || shape.some((d, i) => d !== p!.shape[i])) throw new Error(`writeGGUF ${path}: tensor ${hf} has shape [${shape.join(', ')}], expert 0..${experts - 1} of ${to.name} need [${p.shape.join(', ')}]`);
      if (p.parts[to.expert]) throw new Error(`writeGGUF ${path}: tensor ${hf} given twice`);
      p.parts[to.expert] = value;
      if (++p.got < experts) continue;
      pending.delete(to.name);
      // Experts are encoded one by one (a block never spans two experts) and concatenated.
      const encoded = p.parts.map((v, x) => emit(`${to.name}#${x}`, v!, p!.shape).data);
      const total = encoded.reduce((a, b) => a + b.length, 0);
      const data = new Uint8Array(total);
      let off = 0;
      for (const b of encoded) {
        data.set(b, off);
        off += b.length;
      }
      yield { name: to.name, type: GGML[chooseType(to.name, [experts, ...p.shape], dtype)], shape: [experts, ...p.shape], data };
    }
    for (const [name, p] of pending) {
      const missing = p.parts.map((v, x) => (v ? -1 : x)).filter((x) => x >= 0);
      throw new Error(`writeGGUF ${path}: ${name} is missing experts ${missing.join(', ')}`);
    }
  }
  return writeGGUFFile(path, metadata, tensors());
}
