// HF tensor names of the MoE decoder families: one map per family, so the model builder asks for a role, not a string.

import type { HFModelType } from './config.js';

export type AttnProj = 'q' | 'k' | 'v' | 'o';
/** gate = the SiLU branch (Mixtral's w1), up = the linear branch (w3), down = the output (w2). */
export type MlpProj = 'gate' | 'up' | 'down';

export interface HFNames {
  embed: string;
  finalNorm: string;
  lmHead: string;
  inputNorm(layer: number): string;
  postAttnNorm(layer: number): string;
  attn(layer: number, proj: AttnProj, kind?: 'weight' | 'bias'): string;
  qNorm(layer: number): string;
  kNorm(layer: number): string;
  router(layer: number): string;
  expert(layer: number, expert: number, proj: MlpProj): string;
  sharedExpert(layer: number, proj: MlpProj): string;
  sharedExpertGate(layer: number): string;
  /** The dense MLP of a layer without experts (Qwen's mlp_only_layers / decoder_sparse_step). */
  denseMlp(layer: number, proj: MlpProj): string;
}

const MIXTRAL_EXPERT: Record<MlpProj, string> = { gate: 'w1', up: 'w3', down: 'w2' };

export function hfNames(family: HFModelType): HFNames {
  const L = (l: number): string => `model.layers.${l}`;
  const moe = family === 'mixtral' ? 'block_sparse_moe' : 'mlp';
  const proj = (p: MlpProj): string => `${p}_proj`;
  return {
    embed: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    lmHead: 'lm_head.weight',
    inputNorm: (l) => `${L(l)}.input_layernorm.weight`,
    postAttnNorm: (l) => `${L(l)}.post_attention_layernorm.weight`,
    attn: (l, p, kind = 'weight') => `${L(l)}.self_attn.${p}_proj.${kind}`,
    qNorm: (l) => `${L(l)}.self_attn.q_norm.weight`,
    kNorm: (l) => `${L(l)}.self_attn.k_norm.weight`,
    router: (l) => `${L(l)}.${moe}.gate.weight`,
    expert: (l, e, p) => (family === 'mixtral' ? `${L(l)}.${moe}.experts.${e}.${MIXTRAL_EXPERT[p]}.weight` : `${L(l)}.${moe}.experts.${e}.${proj(p)}.weight`),
    sharedExpert: (l, p) => `${L(l)}.mlp.shared_expert.${proj(p)}.weight`,
    sharedExpertGate: (l) => `${L(l)}.mlp.shared_expert_gate.weight`,
    denseMlp: (l, p) => `${L(l)}.mlp.${proj(p)}.weight`,
  };
}
