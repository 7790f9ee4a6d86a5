// llama.cpp's view of the MoE decoder families: architecture names, metadata keys <-> HF config.json
// fields, and tensor names <-> HF names (experts stacked into one [E, out, in] tensor per projection).

import { GGUFValueType } from '@huggingface/gguf';
import type { HFConfig, HFModelType } from '../hf/config.js';
import type { GGUFMetaEntry } from './read.js';

/** general.architecture per HF model_type. Mixtral is llama.cpp's 'llama' with experts. */
export const GGUF_ARCH: Readonly<Record<HFModelType, string>> = { mixtral: 'llama', qwen2_moe: 'qwen2moe', qwen3_moe: 'qwen3moe', olmoe: 'olmoe' };

const HF_ARCHITECTURES: Readonly<Record<HFModelType, string>> = {
  mixtral: 'MixtralForCausalLM', qwen2_moe: 'Qwen2MoeForCausalLM', qwen3_moe: 'Qwen3MoeForCausalLM', olmoe: 'OlmoeForCausalLM',
};

/** Whether top-k weights are renormalised when the file does not say: llama.cpp hard-codes it per architecture. */
const DEFAULT_NORM_TOPK: Readonly<Record<HFModelType, boolean>> = { mixtral: true, qwen2_moe: false, qwen3_moe: true, olmoe: false };

/** The HF family of a GGUF architecture; 'llama' counts only with experts. */
export function familyOfArch(arch: string, expertCount: number): HFModelType | null {
  if (arch === 'llama') return expertCount > 0 ? 'mixtral' : null;
  for (const [f, a] of Object.entries(GGUF_ARCH)) if (a === arch) return f as HFModelType;
  return null;
}

const u32 = (value: number): GGUFMetaEntry => ({ type: GGUFValueType.UINT32, value });
const f32 = (value: number): GGUFMetaEntry => ({ type: GGUFValueType.FLOAT32, value });
const bool = (value: boolean): GGUFMetaEntry => ({ type: GGUFValueType.BOOL, value });
const str = (value: string): GGUFMetaEntry => ({ type: GGUFValueType.STRING, value });

function need(config: HFConfig, key: string, dflt?: number): number {
  const v = config[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`config.json: ${key} = ${JSON.stringify(v)} must be a number to write GGUF`);
  return v;
}

/** The architecture's metadata entries (general.architecture first), from an HF config. */
export function configToMetadata(config: HFConfig): Array<[string, GGUFMetaEntry]> {
  const family = config.model_type;
  const a = GGUF_ARCH[family];
  const hidden = need(config, 'hidden_size');
  const heads = need(config, 'num_attention_heads');
  const headDim = config['head_dim'] !== undefined && config['head_dim'] !== null ? need(config, 'head_dim') : hidden / heads;
  const out: Array<[string, GGUFMetaEntry]> = [
    ['general.architecture', str(a)],
    ['general.name', str(`moe-ts ${family}`)],
    [`${a}.vocab_size`, u32(need(config, 'vocab_size'))],
    [`${a}.context_length`, u32(need(config, 'max_position_embeddings', 4096))],
    [`${a}.embedding_length`, u32(hidden)],
    [`${a}.block_count`, u32(need(config, 'num_hidden_layers'))],
  ];
  const experts = family === 'mixtral' ? need(config, 'num_local_experts', 8) : need(config, 'num_experts', family === 'olmoe' ? 64 : undefined);
  if (family === 'mixtral' || family === 'olmoe') {
    out.push([`${a}.feed_forward_length`, u32(need(config, 'intermediate_size'))]);
  } else {
    if (config['intermediate_size'] !== undefined) out.push([`${a}.feed_forward_length`, u32(need(config, 'intermediate_size'))]);
    out.push([`${a}.expert_feed_forward_length`, u32(need(config, 'moe_intermediate_size'))]);
    if (family === 'qwen2_moe') out.push([`${a}.expert_shared_feed_forward_length`, u32(need(config, 'shared_expert_intermediate_size', 0))]);
  }
  out.push(
    [`${a}.attention.head_count`, u32(heads)],
    [`${a}.attention.head_count_kv`, u32(need(config, 'num_key_value_heads', heads))],
    [`${a}.attention.key_length`, u32(headDim)],
    [`${a}.attention.value_length`, u32(headDim)],
    [`${a}.rope.dimension_count`, u32(headDim)],
    [`${a}.rope.freq_base`, f32(need(config, 'rope_theta', family === 'mixtral' ? 1e6 : 10000))],
    [`${a}.attention.layer_norm_rms_epsilon`, f32(need(config, 'rms_norm_eps', 1e-6))],
    [`${a}.expert_count`, u32(experts)],
    [`${a}.expert_used_count`, u32(need(config, 'num_experts_per_tok', family === 'mixtral' ? 2 : family === 'olmoe' ? 8 : undefined))],
  );
  // Mixtral's sliding window: llama.cpp reads this key for some architectures but not for 'llama',
  // so llama.cpp attends to the whole context where moe-ts honours the window.
  if (family === 'mixtral' && typeof config['sliding_window'] === 'number') out.push([`${a}.attention.sliding_window`, u32(config['sliding_window'])]);
  if (family !== 'mixtral') {
    const norm = config['norm_topk_prob'];
    out.push([`${a}.expert_weights_norm`, bool(typeof norm === 'boolean' ? norm : DEFAULT_NORM_TOPK[family])]);
  }
  const rs = config['rope_scaling'] as Record<string, unknown> | null | undefined;
  if (rs) {
    const type = rs['rope_type'] ?? rs['type'];
    if (type === 'linear') {
      out.push([`${a}.rope.scaling.type`, str('linear')], [`${a}.rope.scaling.factor`, f32(Number(rs['factor']))]);
    } else if (type !== 'default') {
      throw new Error(`config.json: rope_scaling type ${JSON.stringify(type)} cannot be written to GGUF here (linear only)`);
    }
  }
  return out;
}

/** The shortest decimal that is the same float32 (GGUF stores 1e-5 as 9.99999974e-6; the config should say 1e-5). */
function decimalOf(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

export interface MetaReader {
  has(key: string): boolean;
  num(key: string): number;
  int(key: string): number;
  bool(key: string): boolean;
  str(key: string): string;
}

/**
 * An HF config.json object from GGUF metadata. `tensorNames` tells what the metadata does not:
 * tied embeddings (no output.weight), Qwen2's q/k/v biases, layers without experts.
 */
export function metadataToConfig(m: MetaReader, family: HFModelType, tensorNames: ReadonlySet<string>): HFConfig {
  const a = GGUF_ARCH[family];
  const hidden = m.int(`${a}.embedding_length`);
  const heads = m.int(`${a}.attention.head_count`);
  const layers = m.int(`${a}.block_count`);
  const opt = (key: string): number | undefined => (m.has(key) ? m.int(key) : undefined);
  const cfg: HFConfig = {
    model_type: family,
    architectures: [HF_ARCHITECTURES[family]],
    hidden_act: 'silu',
    hidden_size: hidden,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: opt(`${a}.attention.head_count_kv`) ?? heads,
    max_position_embeddings: opt(`${a}.context_length`) ?? 4096,
    rms_norm_eps: decimalOf(m.num(`${a}.attention.layer_norm_rms_epsilon`)),
    rope_theta: m.has(`${a}.rope.freq_base`) ? decimalOf(m.num(`${a}.rope.freq_base`)) : family === 'mixtral' ? 1e6 : 10000,
    // moe-ts writes a copy of token_embd as output.weight where llama.cpp requires one, and says so
    tie_word_embeddings: m.has('moe_ts.tie_word_embeddings') ? m.bool('moe_ts.tie_word_embeddings') : !tensorNames.has('output.weight'),
    torch_dtype: 'float32',
  };
  const vocab = opt(`${a}.vocab_size`);
  if (vocab !== undefined) cfg['vocab_size'] = vocab;
  const keyLen = opt(`${a}.attention.key_length`);
  if (keyLen !== undefined) cfg['head_dim'] = keyLen;
  const experts = m.int(`${a}.expert_count`);
  const used = m.int(`${a}.expert_used_count`);
  const ff = opt(`${a}.feed_forward_length`);
  if (family === 'mixtral' || family === 'olmoe') {
    if (ff === undefined) throw new Error(`GGUF metadata ${a}.feed_forward_length is missing`);
    cfg['intermediate_size'] = ff;
    cfg[family === 'mixtral' ? 'num_local_experts' : 'num_experts'] = experts;
  } else {
    cfg['num_experts'] = experts;
    cfg['moe_intermediate_size'] = m.int(`${a}.expert_feed_forward_length`);
    if (ff !== undefined) cfg['intermediate_size'] = ff;
    if (family === 'qwen2_moe') {
      cfg['shared_expert_intermediate_size'] = opt(`${a}.expert_shared_feed_forward_length`) ?? 0;
      if (!tensorNames.has('blk.0.attn_q.bias')) cfg['qkv_bias'] = false;
    }
    const dense: number[] = [];
    for (let l = 0; l < layers; l++) if (!tensorNames.has(`blk.${l}.ffn_gate_inp.weight`)) dense.push(l);
    cfg['decoder_sparse_step'] = 1;
    cfg['mlp_only_layers'] = dense;
  }
  cfg['num_experts_per_tok'] = used;
  const window = opt(`${a}.attention.sliding_window`);
  if (family === 'mixtral' && window !== undefined) cfg['sliding_window'] = window;
  if (family !== 'mixtral') cfg['norm_topk_prob'] = m.has(`${a}.expert_weights_norm`) ? m.bool(`${a}.expert_weights_norm`) : DEFAULT_NORM_TOPK[family];
  if (m.has(`${a}.rope.scaling.type`)) {
    const t = m.str(`${a}.rope.scaling.type`);
    if (t === 'linear') cfg['rope_scaling'] = { type: 'linear', factor: decimalOf(m.num(`${a}.rope.scaling.factor`)) };
    else if (t !== 'none') throw new Error(`GGUF metadata ${a}.rope.scaling.type = ${t} is not supported (linear, none)`);
  }
  return cfg;
}

// --- tensor names ---------------------------------------------------------------------------

export type ExpertProj = 'gate' | 'up' | 'down';
const MIXTRAL_W: Record<ExpertProj, string> = { gate: 'w1', up: 'w3', down: 'w2' };
const PROJS: ExpertProj[] = ['gate', 'up', 'down'];

/** HF per-layer suffix <-> GGUF per-layer suffix, for tensors that map one to one. */
function layerPairs(family: HFModelType): Array<[string, string]> {
  const moe = family === 'mixtral' ? 'block_sparse_moe' : 'mlp';
  const pairs: Array<[string, string]> = [
    ['input_layernorm.weight', 'attn_norm.weight'],
    ['post_attention_layernorm.weight', 'ffn_norm.weight'],
    ['self_attn.q_norm.weight', 'attn_q_norm.weight'],
    ['self_attn.k_norm.weight', 'attn_k_norm.weight'],
    [`${moe}.gate.weight`, 'ffn_gate_inp.weight'],
    ['mlp.shared_expert_gate.weight', 'ffn_gate_inp_shexp.weight'],
  ];
  for (const p of ['q', 'k', 'v', 'o'] as const) {
    const g = p === 'o' ? 'attn_output' : `attn_${p}`;
    pairs.push([`self_attn.${p}_proj.weight`, `${g}.weight`], [`self_attn.${p}_proj.bias`, `${g}.bias`]);
  }
  for (const p of PROJS) {
    pairs.push([`mlp.shared_expert.${p}_proj.weight`, `ffn_${p}_shexp.weight`]);
    if (family !== 'mixtral') pairs.push([`mlp.${p}_proj.weight`, `ffn_${p}.weight`]);
  }
  return pairs;
}

const GLOBAL_PAIRS: Array<[string, string]> = [
  ['model.embed_tokens.weight', 'token_embd.weight'],
  ['model.norm.weight', 'output_norm.weight'],
  ['lm_head.weight', 'output.weight'],
];

/** Where an HF tensor goes: a GGUF tensor, or expert `expert` of a stacked one. Null when unknown. */
export function hfToGGUF(family: HFModelType, hf: string): { name: string; expert: number | null } | null {
  for (const [h, g] of GLOBAL_PAIRS) if (h === hf) return { name: g, expert: null };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return null;
  const [, l, rest] = m as unknown as [string, string, string];
  for (const [h, g] of layerPairs(family)) if (h === rest) return { name: `blk.${l}.${g}`, expert: null };
  const moe = family === 'mixtral' ? 'block_sparse_moe' : 'mlp';
  const e = new RegExp(`^${moe}\\.experts\\.(\\d+)\\.(\\w+)\\.weight$`).exec(rest);
  if (e) {
    const proj = PROJS.find((p) => (family === 'mixtral' ? MIXTRAL_W[p] : `${p}_proj`) === e[2]);
    if (proj) return { name: `blk.${l}.ffn_${proj}_exps.weight`, expert: Number(e[1]) };
  }
  return null;
}

/** The HF name of a GGUF tensor (a function of the expert for stacked ones), or null when unknown. */
export function ggufToHF(family: HFModelType, gguf: string): { name: (expert: number) => string; stacked: boolean } | null {
  for (const [h, g] of GLOBAL_PAIRS) if (g === gguf) return { name: () => h, stacked: false };
  const m = /^blk\.(\d+)\.(.+)$/.exec(gguf);
  if (!m) return null;
  const [, l, rest] = m as unknown as [string, string, string];
  for (const [h, g] of layerPairs(family)) if (g === rest) return { name: () => `model.layers.${l}.${h}`, stacked: false };
  const moe = family === 'mixtral' ? 'block_sparse_moe' : 'mlp';
  const w = (p: ExpertProj): string => (family === 'mixtral' ? MIXTRAL_W[p] : `${p}_proj`);
  const e = /^ffn_(gate|up|down)_exps\.weight$/.exec(rest);
  if (e) return { name: (x) => `model.layers.${l}.${moe}.experts.${x}.${w(e[1] as ExpertProj)}.weight`, stacked: true };
  // Older llama.cpp Mixtral files keep one tensor per expert: blk.N.ffn_gate.E.weight.
  const old = family === 'mixtral' ? /^ffn_(gate|up|down)\.(\d+)\.weight$/.exec(rest) : null;
  if (old) return { name: () => `model.layers.${l}.${moe}.experts.${old[2]}.${w(old[1] as ExpertProj)}.weight`, stacked: false };
  return null;
}

/**
 * llama.cpp's 'llama' architecture applies RoPE to interleaved pairs, HF's Mixtral to halves, so
 * llama.cpp's converter permutes the rows of q_proj and k_proj (and this module does the same):
 * within each head, row j * hd/2 + i (HF) becomes row 2i + j (GGUF). Returns the head count to
 * permute with, or 0 when the tensor is not permuted.
 */
export function ropePermuteHeads(family: HFModelType, ggufName: string, config: HFConfig): number {
  if (family !== 'mixtral') return 0;
  const heads = need(config, 'num_attention_heads');
  if (/^blk\.\d+\.attn_q\.weight$/.test(ggufName)) return heads;
  if (/^blk\.\d+\.attn_k\.weight$/.test(ggufName)) return need(config, 'num_key_value_heads', heads);
  return 0;
}

/** Permutes whole rows of `rows` rows of `rowBytes` bytes (HF -> GGUF when toGGUF, else back). */
export function permuteRows(data: Uint8Array, rows: number, rowBytes: number, heads: number, toGGUF: boolean): Uint8Array {
  if (rows % heads !== 0 || (rows / heads) % 2 !== 0) throw new Error(`RoPE row permutation: ${rows} rows do not split into ${heads} heads of even size`);
  const hd = rows / heads;
  const out = new Uint8Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < hd / 2; i++) {
        const hfRow = h * hd + j * (hd / 2) + i;
        const gRow = h * hd + 2 * i + j;
        const [src, dst] = toGGUF ? [hfRow, gRow] : [gRow, hfRow];
        out.set(data.subarray(src * rowBytes, (src + 1) * rowBytes), dst * rowBytes);
      }
    }
  }
  return out;
}
