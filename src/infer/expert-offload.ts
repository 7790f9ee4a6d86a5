// Puts a loaded MoE decoder's routed experts under a memory budget: they stay in the model file and an ExpertCache brings them into slots on demand.

import { noGrad } from '../tensor/autograd.js';
import type { Tensor } from '../tensor/tensor.js';
import { quantizedBytes } from '../tensor/quant-blocks.js';
import { LITTLE_ENDIAN_HOST } from '../io/safetensors.js';
import { hfNames, type MlpProj } from '../formats/hf/names.js';
import type { TensorSource } from '../formats/tensor-source.js';
import type { MoEDecoder } from '../models/moe-decoder.js';
import { QuantWeight } from './quant/weight.js';
import { ExpertCache, ExpertFiles, OffloadedExperts, type ExpertRange } from './expert-cache.js';
import { LayerExperts } from './expert-layer.js';
import { EXPERT_POLICIES, evictionRule, type ExpertPolicy } from './expert-slots.js';
import { LOW_PRECISION_TYPES, LowPrecisionExperts, lowPrecisionExpertBytes, type LowPrecisionOptions } from './expert-low-precision.js';
import type { Routing } from '../moe/routers/types.js';

export interface ExpertOffloadOptions {
  /** Bytes of expert weights resident over all MoE layers (> 1), or a fraction of all expert bytes (0 < f <= 1). */
  expertMemory: number;
  /** Which expert leaves a full pool (lru, lfu), or lru plus loading the next layer's predicted experts ahead (pregate). Default lru. */
  policy?: ExpertPolicy;
  /** Read misses on a worker thread while resident experts compute (ExpertCache.setAsyncLoads). Default false. */
  asyncLoads?: boolean;
  /**
   * HOBBIT: a resident low-precision (Q4_0) copy of every expert, made at load from the file's
   * weights and taken off the budget before the slots are sized; a miss whose importance is below
   * `below` (default 1, expert-low-precision.ts) runs on its copy instead of being loaded. Default null.
   */
  lowPrecision?: LowPrecisionOptions | null;
}

const caches = new WeakMap<MoEDecoder, ExpertCache>();

/** The expert cache of a model loaded with an expert budget, or null (all experts resident). */
export function expertCacheOf(model: MoEDecoder): ExpertCache | null {
  return caches.get(model) ?? null;
}

/**
 * Budget in bytes -> slots per MoE layer (all layers alike, at most E); refused below top-k, naming
 * the numbers. With low-precision copies (lowPrecisionBytes: all E copies of one layer) the copies
 * are taken off the budget first and one slot per layer is enough (a miss then either loads into a
 * slot or runs on its copy; the schedule runs more experts than slots in rounds).
 */
export function slotsForBudget(expertMemory: number, o: { expertBytes: number; moeLayers: number; numExperts: number; topK: number; lowPrecisionBytes?: number }): number {
  if (!(Number.isFinite(expertMemory) && expertMemory > 0)) throw new Error(`expert memory ${expertMemory}: expected bytes (> 1) or a fraction of the expert bytes (0 < f <= 1)`);
  const total = o.expertBytes * o.numExperts * o.moeLayers;
  const bytes = expertMemory <= 1 ? expertMemory * total : expertMemory;
  const low = (o.lowPrecisionBytes ?? 0) * o.moeLayers;
  if (low > 0) {
    const slots = Math.min(o.numExperts, Math.floor((bytes - low) / (o.expertBytes * o.moeLayers)));
    if (slots < 1) {
      const need = low + o.expertBytes * o.moeLayers;
      throw new Error(
        `expert memory ${Math.floor(bytes)} bytes: the low-precision copies of all experts take ${low} bytes (${((100 * low) / total).toFixed(1)}% of the ${total} expert bytes), ` +
        `leaving ${Math.max(0, Math.floor(bytes - low))} bytes, not one full-precision slot per MoE layer (${o.moeLayers} layers x ${o.expertBytes} bytes); ` +
        `need at least ${need} bytes, ${((100 * need) / total).toFixed(1)}%`);
    }
    return slots;
  }
  const slots = Math.min(o.numExperts, Math.floor(bytes / (o.expertBytes * o.moeLayers)));
  if (slots < o.topK) {
    const need = o.topK * o.expertBytes * o.moeLayers;
    throw new Error(
      `expert memory ${Math.floor(bytes)} bytes holds ${slots} experts per MoE layer (${o.moeLayers} layers x ${o.expertBytes} bytes per expert); ` +
      `top-${o.topK} routing needs at least ${o.topK} per layer: ${need} bytes, ${((100 * need) / total).toFixed(1)}% of the ${total} expert bytes`);
  }
  return slots;
}

const PROJS: readonly MlpProj[] = ['gate', 'up', 'down'];

/**
 * Replaces every MoE layer's expert stacks by OffloadedExperts over `source`'s files (read with
 * positioned reads into slots as the forward needs them). The experts are read as stored: the
 * model's expert dtype must be the file's (Q8_0/Q4_0 blocks, or F32 on a little-endian host); no
 * conversion at run time. Attention, routers, shared experts, norms and embeddings stay as they are.
 */
export function offloadExperts(model: MoEDecoder, source: TensorSource, opts: ExpertOffloadOptions): ExpertCache {
  const policy = opts.policy ?? 'lru';
  if (!EXPERT_POLICIES.includes(policy)) throw new Error(`expert policy '${String(policy)}' is not one of ${EXPERT_POLICIES.join(', ')}`);
  if (caches.has(model)) throw new Error('offloadExperts: the model\'s experts are already offloaded');
  const c = model.config;
  const names = hfNames(c.family);
  const sparse = model.layers.filter((l) => l.moe);
  if (sparse.length === 0) throw new Error('offloadExperts: the model has no MoE layers');
  const E = c.numExperts;
  const first = sparse[0]!.moe!.w1;
  const type = first instanceof QuantWeight ? first.type : 'f32';
  const shapes = [[c.moeIntermediateSize, c.hiddenSize], [c.moeIntermediateSize, c.hiddenSize], [c.hiddenSize, c.moeIntermediateSize]] as const;
  const wantBytes = shapes.map(([o, i]) => (type === 'f32' ? 4 * o * i : quantizedBytes(type, o * i)));
  if (type === 'f32' && !LITTLE_ENDIAN_HOST) throw new Error('offloadExperts: float32 experts are read as stored (little-endian); this host is big-endian');

  const ranges = sparse.map((layer) => PROJS.map((p, pi) => Array.from({ length: E }, (_, e): ExpertRange => {
    const name = names.expert(layer.index, e, p);
    const loc = source.locate?.(name) ?? null;
    if (!loc) throw new Error(`expert offload: tensor ${name} has no byte range in a file (the source holds it in memory, or stores it permuted); load the model without an expert budget`);
    if (loc.dtype.toLowerCase() !== type) {
      throw new Error(`expert offload: ${loc.file}: tensor ${name} is stored as ${loc.dtype}, the model holds experts as ${type}; offloaded experts are read as stored, so load with dtype ${loc.dtype.toLowerCase()} or convert the file`);
    }
    if (loc.bytes !== wantBytes[pi]) throw new Error(`expert offload: ${loc.file}: tensor ${name} has ${loc.bytes} bytes, expected ${wantBytes[pi]} (${type} [${shapes[pi]!.join(', ')}])`);
    return { file: loc.file, offset: loc.offset, bytes: loc.bytes };
  })));
  const expertBytes = wantBytes.reduce((a, b) => a + b, 0);
  const lowOpt = opts.lowPrecision ?? null;
  if (lowOpt && !LOW_PRECISION_TYPES.includes(lowOpt.type)) throw new Error(`expert low precision '${String(lowOpt.type)}' is not one of ${LOW_PRECISION_TYPES.join(', ')}`);
  if (lowOpt && type === lowOpt.type) throw new Error(`expert low precision: the experts are stored as ${type} already; a ${lowOpt.type} copy would be the same weights`);
  const lowBytes = lowOpt ? E * lowPrecisionExpertBytes(lowOpt.type, shapes) : 0;
  const slots = slotsForBudget(opts.expertMemory, { expertBytes, moeLayers: sparse.length, numExperts: E, topK: c.topK, lowPrecisionBytes: lowBytes });

  const files = new ExpertFiles();
  try {
    // a file already too short is named now, not at the first miss
    const ends = new Map<string, { end: number; tensor: string }>();
    ranges.forEach((layer, i) => layer.forEach((proj, pi) => proj.forEach((r, e) => {
      const at = ends.get(r.file);
      if (!at || r.offset + r.bytes > at.end) ends.set(r.file, { end: r.offset + r.bytes, tensor: names.expert(sparse[i]!.index, e, PROJS[pi]!) });
    })));
    for (const [file, { end, tensor }] of ends) {
      let size: number;
      try {
        size = files.size(file);
      } catch (err) {
        throw new Error(`expert offload: cannot open ${file}, which holds offloaded experts (e.g. tensor ${tensor}): ${(err as Error).message}`);
      }
      if (size < end) throw new Error(`expert offload: ${file} has ${size} bytes, but its experts run to byte ${end} (tensor ${tensor}; truncated?)`);
    }
  } catch (e) {
    files.close();
    throw e;
  }
  const rule = evictionRule(policy);
  let lows: LowPrecisionExperts[];
  try {
    lows = lowOpt ? sparse.map((layer, i) => new LowPrecisionExperts(layer.index, lowOpt.type, lowOpt.below ?? 1, lowOpt.background ?? false, E, shapes, type, ranges[i]!, files)) : [];
  } catch (e) {
    files.close();
    throw e;
  }
  // each layer's own routing, before any wrapper: pre-gating's predictions must not count as the next layer's forward
  const routes = sparse.map((layer) => {
    const router = layer.moe!.router;
    return router.route.bind(router) as (x: Tensor) => Routing;
  });
  const layers = sparse.map((layer, i) => {
    const le = new LayerExperts(layer.index, E, slots, rule, type, shapes, ranges[i]!, files);
    const stack = (p: number): OffloadedExperts => new OffloadedExperts(le, p, [E, shapes[p]![0], shapes[p]![1]]);
    layer.moe!.setExperts(stack(0), stack(1), stack(2));
    const low = lows[i];
    if (low) {
      le.low = low;
      // the MoE block hands the experts its rows, not the gates: the router's result is noted on its way out (an instance property shadows the class method)
      const route = routes[i]!;
      (layer.moe!.router as { route: (x: Tensor) => Routing }).route = (x: Tensor): Routing => {
        const r = route(x);
        low.note(r);
        return r;
      };
    }
    return le;
  });
  if (policy === 'pregate') {
    // layer i's input, through layer i+1's router, predicts layer i+1's experts: loaded before layer i's experts run
    sparse.forEach((layer, i) => {
      if (!sparse[i + 1]) return;
      const nextExperts = layers[i + 1]!;
      const nextRoute = routes[i + 1]!;
      layer.moe!.beforeExperts = (x: Tensor) => nextExperts.prefetch(predictExperts(nextRoute, x, E));
    });
  }
  const cache = new ExpertCache(layers, policy, expertBytes * E * sparse.length, files);
  if (opts.asyncLoads) cache.setAsyncLoads(true);
  caches.set(model, cache);
  return cache;
}

/** The experts a router picks for the rows of x, most picked first. */
function predictExperts(route: (x: Tensor) => { expert: Int32Array }, x: Tensor, E: number): number[] {
  const picks = noGrad(() => route(x)).expert;
  const count = new Int32Array(E);
  for (const e of picks) count[e]!++;
  const order: number[] = [];
  for (let e = 0; e < E; e++) if (count[e]! > 0) order.push(e);
  return order.sort((a, b) => count[b]! - count[a]! || a - b);
}
