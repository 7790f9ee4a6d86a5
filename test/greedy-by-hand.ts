// Greedy KV-cached decoding by hand for the decoder tests: every step's logits, the chosen ids, and
// the distinct experts each MoE call used (the expert-cache and low-precision tests compare these).

import type { MoEDecoder } from '../src/models/moe-decoder.js';

/** prompt, then `steps` greedy tokens; forced: feed these ids instead of the model's own choices (logits of a model that may choose differently). */
export function greedyByHand(model: MoEDecoder, prompt: Int32Array, steps: number, forced?: readonly number[]): { ids: number[]; logits: Float32Array[]; uses: number } {
  let uses = 0;
  model.onRouting = (_l, idx) => { uses += new Set(idx).size; };
  const cache = model.newCache(prompt.length + steps + 1);
  const V = model.config.vocabSize;
  const logits: Float32Array[] = [];
  const ids: number[] = [];
  let out = model.forward(prompt, cache).data as Float32Array;
  for (let i = 0; i < steps; i++) {
    const last = out.slice(out.length - V);
    logits.push(last);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
    ids.push(best);
    out = model.forward(Int32Array.of(forced?.[i] ?? best), cache).data as Float32Array;
  }
  model.onRouting = undefined;
  return { ids, logits, uses };
}
