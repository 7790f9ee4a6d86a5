// The browser build's entry (bundled by scripts/build-browser.mjs): load a moe-ts checkpoint with fetch and run it on the js backend.
//
// Written against the same modules as Node, so a page's outputs equal Node's for the same
// checkpoint and input: the models are built from the checkpoint's config.json by the schemas
// `moe train` validates with, the weights read by the same safetensors parser and loader.

import { parseSafetensors } from '../io/safetensors.js';
import { loadModelWeights } from '../models/checkpoint.js';
import { SOFTMOE_CLASSIFIER_SCHEMA, SoftMoEClassifier, type SoftMoEClassifierConfig } from '../models/softmoe-classifier.js';
import { ByteLM, generate, type LMConfig } from '../models/lm.js';
import { validate } from '../config/schema.js';
import { MoELayer, type MoEOutput } from '../moe/layer.js';
import { softmax, tensor } from '../ops/index.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';

export { parseSafetensors, loadModelWeights, SoftMoEClassifier, ByteLM, generate };

export interface FetchedCheckpoint {
  /** config.json: { model: { type, ...options }, ... } as moe train writes it. */
  config: { model: { type: string } & Record<string, unknown> };
  tensors: Map<string, Tensor>;
}

/** Fetches base/config.json and base/model.safetensors (a moe train checkpoint directory); errors name the URL. */
export async function fetchCheckpoint(base: string, fetcher: typeof fetch = fetch): Promise<FetchedCheckpoint> {
  const get = async (name: string): Promise<Response> => {
    const url = `${base.replace(/\/$/, '')}/${name}`;
    const res = await fetcher(url);
    if (!res.ok) throw new Error(`checkpoint ${url}: HTTP ${res.status}`);
    return res;
  };
  const config = (await (await get('config.json')).json()) as FetchedCheckpoint['config'];
  if (typeof config?.model?.type !== 'string') throw new Error(`checkpoint ${base}/config.json: no model.type`);
  const { tensors } = parseSafetensors(new Uint8Array(await (await get('model.safetensors')).arrayBuffer()));
  return { config, tensors };
}

/** Builds the checkpoint's model and loads its weights (strict: every name and shape must match). */
export function buildFromCheckpoint(ck: FetchedCheckpoint): SoftMoEClassifier | ByteLM {
  const { type, ...rest } = ck.config.model;
  let model: SoftMoEClassifier | ByteLM;
  if (type === 'softmoe-classifier') model = new SoftMoEClassifier(validate<SoftMoEClassifierConfig>(SOFTMOE_CLASSIFIER_SCHEMA, rest, 'model (softmoe-classifier)'), 0);
  else if (type === 'byte-lm') model = new ByteLM(rest as Partial<LMConfig>, 0);
  else throw new Error(`browser build: model type '${type}' is not supported (softmoe-classifier, byte-lm)`);
  loadModelWeights(model, ck.tensors);
  model.eval();
  return model;
}

export interface Classification {
  /** Class probabilities. */
  probs: number[];
  /** Per expert, its share of the combine weights for this image (Csum / sum): how much of the output its slots carry. */
  expertShare: number[];
}

/** Classifies one image (pixels in [0, 1], imageSize^2 values) with a Soft MoE classifier. */
export function classify(model: SoftMoEClassifier, pixels: ArrayLike<number>): Classification {
  const out = model.forward(tensor(Float32Array.from(pixels), [1, pixels.length]));
  const probs = Array.from(softmax(out.logits, -1).data);
  const c = out.metrics.combineSumPerExpert;
  const total = c.reduce((a, b) => a + b, 0);
  return { probs, expertShare: c.map((v) => (total > 0 ? v / total : 0)) };
}

/**
 * The expert each byte went to in the first MoE layer (the top-gated of its k choices) when the
 * model reads `bytes` (at most maxSeqLen), read through a hook on that layer's forward.
 */
export function expertOfBytes(model: ByteLM, bytes: Uint8Array): number[] {
  const layer = model.namedModules().map(([, m]) => m).find((m: Module): m is MoELayer => m instanceof MoELayer);
  if (!layer) throw new Error('expertOfBytes: the model has no MoE layer');
  const T = bytes.length;
  const top = new Array<number>(T).fill(-1);
  const best = new Float64Array(T).fill(-Infinity);
  const target = layer as unknown as { forward: (...a: unknown[]) => MoEOutput };
  const original = target.forward;
  target.forward = function hooked(this: MoELayer, ...args: unknown[]): MoEOutput {
    const out = original.apply(this, args);
    const r = out.routing;
    const g = r.gates.data;
    for (let i = 0; i < r.token.length; i++) {
      const t = r.token[i]!;
      if (t < T && g[i]! > best[t]!) { best[t] = g[i]!; top[t] = r.expert[i]!; }
    }
    return out;
  };
  try {
    model.forward(tensor(Int32Array.from(bytes), [1, T], { dtype: 'int32' }));
  } finally {
    delete (target as { forward?: unknown }).forward;
  }
  return top;
}

/** Greedy generation from a byte LM, with the expert of every byte of the result (first MoE layer). */
export function generateWithExperts(model: ByteLM, prompt: string, maxNewTokens: number): { bytes: number[]; text: string; experts: number[] } {
  const out = generate(model, new TextEncoder().encode(prompt), { maxNewTokens, temperature: 0 });
  const window = out.slice(Math.max(0, out.length - model.config.maxSeqLen));
  const experts = expertOfBytes(model, window);
  const pad = new Array<number>(out.length - window.length).fill(-1);
  return { bytes: Array.from(out), text: new TextDecoder().decode(out), experts: [...pad, ...experts] };
}
