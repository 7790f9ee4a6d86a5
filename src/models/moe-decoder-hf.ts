// MoEDecoder <-> HF checkpoints: the tensor layout of a config, fromHF (read from any TensorSource) and toHF (streamed back out).

import { QuantWeight } from '../infer/quant/weight.js';
import { OffloadedExperts } from '../infer/expert-cache.js';
import { dequantizeArray, quantizeRow, quantizedBytes } from '../tensor/quant-blocks.js';
import { halfTable, floatToHalf } from '../tensor/half.js';
import { floatToBF16 } from '../formats/hf/encode.js';
import { isQuantDType, type LoadDType, type Weight } from './moe-decoder-weights.js';
import type { HFConfig } from '../formats/hf/config.js';
import { hfNames, type MlpProj } from '../formats/hf/names.js';
import type { TensorSource } from '../formats/tensor-source.js';
import { MoEDecoder, type DenseMLP } from './moe-decoder.js';
import { decoderConfigFromHF, decoderConfigToHF, isSparseLayer, type MoEDecoderConfig } from './moe-decoder-config.js';

/** One HF tensor: its name, HF shape, and where it lives in a model (an expert slice of a stacked [E, out, in] weight, or a whole tensor). */
export interface HFTensorSlot {
  name: string;
  shape: number[];
  /** Whether it is a norm weight (create initialises those near 1) or a bias. */
  kind: 'matrix' | 'norm' | 'bias';
  target: (m: MoEDecoder) => Weight;
  /** For expert weights: which expert of the stacked tensor (stored transposed: HF [out, in] -> ours [in, out]). */
  expert?: number;
}

/** Every tensor of a config's HF checkpoint, in the order HF writes them (derived from the config alone: no model needed). */
export function hfTensorLayout(c: MoEDecoderConfig): HFTensorSlot[] {
  const n = hfNames(c.family);
  const { hiddenSize: d, numHeads: H, numKVHeads: G, headDim: hd, vocabSize: V } = c;
  const out: HFTensorSlot[] = [];
  const add = (name: string, shape: number[], kind: HFTensorSlot['kind'], target: HFTensorSlot['target'], expert?: number): void => {
    out.push(expert === undefined ? { name, shape, kind, target } : { name, shape, kind, target, expert });
  };
  const mlp = (prefix: (p: MlpProj) => string, h: number, pick: (m: MoEDecoder) => DenseMLP): void => {
    add(prefix('gate'), [h, d], 'matrix', (m) => pick(m).gate);
    add(prefix('up'), [h, d], 'matrix', (m) => pick(m).up);
    add(prefix('down'), [d, h], 'matrix', (m) => pick(m).down);
  };
  add(n.embed, [V, d], 'matrix', (m) => m.embed);
  for (let l = 0; l < c.numLayers; l++) {
    const layer = (m: MoEDecoder) => m.layers[l]!;
    const attn = (m: MoEDecoder) => layer(m).attn;
    add(n.inputNorm(l), [d], 'norm', (m) => layer(m).inputNorm.weight!);
    add(n.attn(l, 'q'), [H * hd, d], 'matrix', (m) => attn(m).q);
    add(n.attn(l, 'k'), [G * hd, d], 'matrix', (m) => attn(m).k);
    add(n.attn(l, 'v'), [G * hd, d], 'matrix', (m) => attn(m).v);
    if (c.qkvBias) {
      add(n.attn(l, 'q', 'bias'), [H * hd], 'bias', (m) => attn(m).qBias!);
      add(n.attn(l, 'k', 'bias'), [G * hd], 'bias', (m) => attn(m).kBias!);
      add(n.attn(l, 'v', 'bias'), [G * hd], 'bias', (m) => attn(m).vBias!);
    }
    add(n.attn(l, 'o'), [d, H * hd], 'matrix', (m) => attn(m).o);
    if (c.qkNorm !== 'none') {
      add(n.qNorm(l), [c.qkNorm === 'head' ? hd : H * hd], 'norm', (m) => attn(m).qNorm!.weight!);
      add(n.kNorm(l), [c.qkNorm === 'head' ? hd : G * hd], 'norm', (m) => attn(m).kNorm!.weight!);
    }
    if (isSparseLayer(c, l)) {
      const moe = (m: MoEDecoder) => layer(m).moe!;
      add(n.router(l), [c.numExperts, d], 'matrix', (m) => moe(m).router.weight);
      const h = c.moeIntermediateSize;
      for (let e = 0; e < c.numExperts; e++) {
        add(n.expert(l, e, 'gate'), [h, d], 'matrix', (m) => moe(m).w1, e);
        add(n.expert(l, e, 'up'), [h, d], 'matrix', (m) => moe(m).w3, e);
        add(n.expert(l, e, 'down'), [d, h], 'matrix', (m) => moe(m).w2, e);
      }
      if (c.sharedExpertIntermediateSize > 0) {
        mlp((p) => n.sharedExpert(l, p), c.sharedExpertIntermediateSize, (m) => moe(m).shared!);
        if (c.sharedExpertGate) add(n.sharedExpertGate(l), [1, d], 'matrix', (m) => moe(m).sharedGate!);
      }
    } else {
      mlp((p) => n.denseMlp(l, p), c.denseIntermediateSize, (m) => layer(m).mlp!);
    }
    add(n.postAttnNorm(l), [d], 'norm', (m) => layer(m).postAttnNorm.weight!);
  }
  add(n.finalNorm, [d], 'norm', (m) => m.norm.weight!);
  if (!c.tieWordEmbeddings) add(n.lmHead, [V, d], 'matrix', (m) => m.lmHead!);
  return out;
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** HF [out, in] (rows x cols) -> slice e of a stacked [E, out, in] tensor: the same layout, a copy. */
function putExpert(dst: Float32Array, e: number, src: Float32Array, rows: number, cols: number): void {
  dst.set(src, e * rows * cols);
}

/** Slice e of a stacked [E, out, in] tensor -> HF [out, in] (rows x cols): a view, no copy. */
function takeExpert(src: Float32Array, e: number, rows: number, cols: number): Float32Array {
  return src.subarray(e * rows * cols, (e + 1) * rows * cols);
}

/** Rounds values in place to the nearest f16 / bf16 (ties to even) and back: a model held as float32 with f16/bf16 weights. */
export function roundTo(data: Float32Array, dtype: 'f16' | 'bf16'): void {
  if (dtype === 'f16') {
    const half = halfTable();
    for (let i = 0; i < data.length; i++) data[i] = half[floatToHalf(data[i]!)]!;
    return;
  }
  const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < data.length; i++) u[i] = (floatToBF16(data[i]!) << 16) >>> 0;
}

/** A source that can hand out a tensor's stored bytes (the GGUF source: Q8_0/Q4_0 blocks as stored). */
interface RawSource {
  readRaw(name: string): { dtype: string; shape: number[]; data: Uint8Array };
}
const hasRaw = (s: TensorSource): s is TensorSource & RawSource => typeof (s as Partial<RawSource>).readRaw === 'function';

/** Fills a quantised matrix (or expert e of a stack) from the source: stored blocks of the same type as they are, else quantised from f32. */
function fillQuant(w: QuantWeight, s: HFTensorSlot, source: TensorSource): void {
  const n = s.shape[0]! * s.shape[1]!;
  const bytes = quantizedBytes(w.type, n);
  const at = s.expert === undefined ? 0 : s.expert * bytes;
  if (hasRaw(source) && source.info(s.name).dtype.toLowerCase() === w.type) {
    const raw = source.readRaw(s.name);
    if (raw.data.length !== bytes) throw new Error(`${source.info(s.name).file}: tensor ${s.name}: ${raw.data.length} bytes of ${raw.dtype}, expected ${bytes}`);
    w.data.set(raw.data, at);
    return;
  }
  // one tensor's f32 values at a time, quantised straight into the model's blocks
  try {
    quantizeRow(w.type, source.read(s.name), 0, n, w.data, at);
  } catch (e) {
    throw new Error(`${source.info(s.name).file}: tensor ${s.name}: ${(e as Error).message}`);
  }
}

export interface FromHFOptions {
  /** f32 (default); f16/bf16: every tensor rounded to that type, held as float32; q8_0/q4_0: see MoEDecoder's constructor. */
  dtype?: LoadDType;
  /**
   * Leave the routed experts' tensors unread (their stacks stay untouched zero pages): the caller
   * offloads them right after (offloadExperts in src/infer/expert-offload.ts, as loadLM does).
   */
  skipExperts?: boolean;
}

/**
 * A model from a parsed config.json and a tensor source (HF directory, GGUF presented with HF
 * names). Reads one tensor at a time into the model's own buffers (quantised ones: straight into
 * their blocks, never a float32 copy of the model). Every expected tensor must be there with the
 * HF shape the config implies; errors name the tensor and its file.
 */
export function fromHF(config: HFConfig, source: TensorSource, file = 'config.json', opts: FromHFOptions = {}): MoEDecoder {
  const dtype = opts.dtype ?? 'f32';
  const c = decoderConfigFromHF(config, file);
  const layout = hfTensorLayout(c);
  const have = new Set(source.names());
  const missing = layout.filter((s) => !have.has(s.name)).map((s) => s.name);
  if (missing.length > 0) {
    let where = '';
    try { source.info(missing[0]!); } catch (e) { where = (e as Error).message; } // the source's own message names its files
    const more = missing.length > 1 ? `; ${missing.length} tensors missing in all (${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', ...' : ''})` : '';
    throw new Error(`${where || `tensor ${missing[0]} not found`}${more}; ${file} describes ${c.family} with ${c.numLayers} layers and ${c.numExperts} experts`);
  }
  for (const s of layout) {
    const info = source.info(s.name);
    if (!sameShape(info.shape, s.shape)) {
      throw new Error(`${info.file}: tensor ${s.name} has shape [${info.shape.join(', ')}], but ${file} implies [${s.shape.join(', ')}]`);
    }
  }
  const model = new MoEDecoder(c, { quant: isQuantDType(dtype) ? dtype : null });
  model.hfConfig = config;
  for (const s of layout) {
    if (opts.skipExperts && s.expert !== undefined) continue;
    const t = s.target(model);
    if (t instanceof OffloadedExperts) throw new Error(`fromHF: tensor ${s.name}: target is offloaded experts`);
    if (t instanceof QuantWeight) {
      fillQuant(t, s, source);
      continue;
    }
    const data = source.read(s.name);
    if (dtype === 'f16' || dtype === 'bf16') roundTo(data, dtype);
    const dst = t.data as Float32Array;
    if (s.expert !== undefined) putExpert(dst, s.expert, data, s.shape[0]!, s.shape[1]!);
    else dst.set(data);
  }
  return model;
}

/** config.json and the tensors in HF names and layouts, produced lazily one at a time (for writeHFDir). */
export function toHF(model: MoEDecoder): { config: HFConfig; tensors: Iterable<[string, Float32Array, number[]]> } {
  const config = model.hfConfig ?? decoderConfigToHF(model.config);
  const layout = hfTensorLayout(model.config);
  function* tensors(): Generator<[string, Float32Array, number[]]> {
    for (const s of layout) {
      const t = s.target(model);
      if (t instanceof QuantWeight) {
        // quantised models go out dequantised (exact values of the blocks)
        const n = s.shape[0]! * s.shape[1]!;
        const b = quantizedBytes(t.type, n);
        const at = s.expert === undefined ? 0 : s.expert * b;
        yield [s.name, dequantizeArray(t.type, t.data.subarray(at, at + b), n), s.shape.slice()];
        continue;
      }
      if (t instanceof OffloadedExperts) throw new Error(`toHF: tensor ${s.name}: the experts are offloaded to the model file (expert cache); load the model without an expert budget to export it`);
      if (t.dtype !== 'float32') throw new Error(`toHF: tensor ${s.name} is ${t.dtype}; cast the model to float32 first`);
      const data = s.expert !== undefined ? takeExpert(t.data as Float32Array, s.expert, s.shape[0]!, s.shape[1]!) : (t.data as Float32Array);
      yield [s.name, data, s.shape.slice()];
    }
  }
  return { config, tensors: tensors() };
}
