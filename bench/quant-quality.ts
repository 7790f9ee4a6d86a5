// Quality cost of quantised weights on random-init presets: mean KL(f32 || dtype) and top-1 agreement
// of next-token distributions over UDHR text (bytes = ids of the byte-level tokenizer).
//
// Perplexity of a random-init model is meaningless (it predicts nothing), but how far a quantised
// copy's distributions move from the f32 model's is a property of the quantisation alone.
//
//   node dist/bench/quant-quality.js [--arch olmoe] [--preset tiny|small] [--tokens 512]
//        [--languages eng,fra,rus] [--dtypes q8_0,q4_0] [--seed 0] [--json]

import { loadUdhr, encodeBytes } from '../src/data/text.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { presetConfig, randomHFTensors, PRESETS, type Preset } from '../src/models/moe-decoder-create.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { decoderConfigToHF, type MoEDecoder, type MoEFamily } from '../src/models/moe-decoder.js';
import { LOAD_DTYPES, type LoadDType } from '../src/models/moe-decoder-weights.js';

export interface QualityRow {
  dtype: LoadDType;
  language: string;
  tokens: number;
  /** Mean over positions of KL(p_f32 || p_dtype), nats. */
  meanKL: number;
  /** Fraction of positions where the argmax agrees with f32's. */
  top1: number;
}

/** Log-softmax of one row into out (float64). */
export function logSoftmax(x: Float32Array, off: number, V: number, out: Float64Array): void {
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, x[off + i]!);
  let s = 0;
  for (let i = 0; i < V; i++) s += Math.exp(x[off + i]! - m);
  const lse = m + Math.log(s);
  for (let i = 0; i < V; i++) out[i] = x[off + i]! - lse;
}

/** Logits [T, V] of ids through the KV cache in chunks (the prefill path), positions 0 .. T-1. */
function allLogits(model: MoEDecoder, ids: Int32Array, chunk = 128): Float32Array {
  const V = model.config.vocabSize;
  const out = new Float32Array(ids.length * V);
  const cache = model.newCache(ids.length);
  for (let at = 0; at < ids.length; at += chunk) {
    const piece = ids.subarray(at, Math.min(ids.length, at + chunk));
    out.set(model.forward(piece, cache).data as Float32Array, at * V);
  }
  return out;
}

export function compare(ref: Float32Array, other: Float32Array, V: number): { meanKL: number; top1: number } {
  const T = ref.length / V;
  const lp = new Float64Array(V);
  const lq = new Float64Array(V);
  let kl = 0;
  let agree = 0;
  for (let t = 0; t < T; t++) {
    logSoftmax(ref, t * V, V, lp);
    logSoftmax(other, t * V, V, lq);
    let ap = 0;
    let aq = 0;
    let k = 0;
    for (let i = 0; i < V; i++) {
      k += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
      if (lp[i]! > lp[ap]!) ap = i;
      if (lq[i]! > lq[aq]!) aq = i;
    }
    kl += k;
    if (ap === aq) agree++;
  }
  return { meanKL: kl / T, top1: agree / T };
}

export async function quantQuality(opts: { family: MoEFamily; preset: Preset; tokens: number; languages: string[]; dtypes: LoadDType[]; seed: number; log?: (l: string) => void }): Promise<QualityRow[]> {
  const log = opts.log ?? (() => {});
  const c = presetConfig(opts.family, opts.preset);
  const hf = decoderConfigToHF(c);
  const texts = await loadUdhr({ languages: opts.languages });
  const build = (dtype: LoadDType): MoEDecoder => fromHF(hf, new MemoryTensorSource(randomHFTensors(c, opts.seed)), `${opts.preset} preset`, { dtype });
  // a BOS token, then the text's first bytes
  const seqs = texts.map((t) => ({ language: t.language, ids: Int32Array.from([256, ...encodeBytes(t.text).subarray(0, opts.tokens - 1)]) }));
  const ref = build('f32');
  const refLogits = seqs.map((s) => allLogits(ref, s.ids));
  const rows: QualityRow[] = [];
  for (const dtype of opts.dtypes) {
    const t0 = performance.now();
    const m = build(dtype);
    seqs.forEach((s, i) => {
      const r = compare(refLogits[i]!, allLogits(m, s.ids), c.vocabSize);
      rows.push({ dtype, language: s.language, tokens: s.ids.length, ...r });
      log(`${opts.family} ${opts.preset} ${dtype} ${s.language}: mean KL ${r.meanKL.toExponential(3)} nats, top-1 agreement ${(100 * r.top1).toFixed(2)}% (${s.ids.length} tokens)`);
    });
    log(`  (${dtype}: ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return rows;
}

async function main(argv: string[]): Promise<number> {
  const get = (k: string, d: string): string => {
    const i = argv.indexOf(`--${k}`);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : d;
  };
  const preset = get('preset', 'tiny') as Preset;
  if (!PRESETS.includes(preset)) throw new Error(`--preset ${preset}: expected one of ${PRESETS.join(', ')}`);
  const dtypes = get('dtypes', 'q8_0,q4_0').split(',') as LoadDType[];
  for (const d of dtypes) if (!LOAD_DTYPES.includes(d)) throw new Error(`--dtypes: ${d} is not one of ${LOAD_DTYPES.join(', ')}`);
  const tokens = Number(get('tokens', '512'));
  if (!(Number.isInteger(tokens) && tokens >= 2)) throw new Error(`--tokens ${tokens}: expected an integer >= 2`);
  const rows = await quantQuality({
    family: get('arch', 'olmoe') as MoEFamily, preset, tokens, dtypes,
    languages: get('languages', 'eng,fra,rus').split(','), seed: Number(get('seed', '0')),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  const byDtype = new Map<string, QualityRow[]>();
  for (const r of rows) byDtype.set(r.dtype, [...(byDtype.get(r.dtype) ?? []), r]);
  const summary = [...byDtype].map(([dtype, rs]) => {
    const n = rs.reduce((s, r) => s + r.tokens, 0);
    return { dtype, tokens: n, meanKL: rs.reduce((s, r) => s + r.meanKL * r.tokens, 0) / n, top1: rs.reduce((s, r) => s + r.top1 * r.tokens, 0) / n };
  });
  if (argv.includes('--json')) console.log(JSON.stringify({ rows, summary }));
  else for (const s of summary) console.log(`${s.dtype}: mean KL(f32 || ${s.dtype}) ${s.meanKL.toExponential(3)} nats, top-1 agreement ${(100 * s.top1).toFixed(2)}% over ${s.tokens} tokens`);
  return 0;
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/').split('/').pop()!);
if (isMain) main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e: unknown) => { console.error(`quant-quality: ${e instanceof Error ? e.message : String(e)}`); process.exitCode = 1; });
