// Quality cost of quantised weights on a trained model: bits per byte on each UDHR language's held-out
// test split, for the byte LM of a `moe train` run exported to its HF MoE layout and loaded as
// f32, f16, bf16, q8_0 and q4_0 (the same weights, rounded or block-quantised as `--dtype` does).
//
//   node dist/bench/quant-perplexity.js --run RUN_DIR [--dtypes f32,f16,bf16,q8_0,q4_0] [--languages eng,fra]
//        [--max-bytes N] [--json]
//
// The test split is the run's own (data.testFraction of each language, as training held it out);
// windows of data.seqLen bytes, each scored on its bytes 2..L from their prefix in the window.

import { loadModel } from '../src/models/load.js';
import { ByteLM } from '../src/models/lm.js';
import { byteLMToHF } from '../src/models/byte-lm-hf.js';
import { fromHF } from '../src/models/moe-decoder-hf.js';
import { LOAD_DTYPES, type LoadDType } from '../src/models/moe-decoder-weights.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import { MemoryTensorSource } from '../src/formats/tensor-source.js';
import { loadUdhr } from '../src/data/text.js';
import { loadUdhrCorpus } from '../src/data/udhr-corpus.js';
import { Tensor } from '../src/tensor/tensor.js';
import { noGrad } from '../src/tensor/autograd.js';
import { logSoftmax } from './quant-quality.js';

export interface PerplexityRow {
  /** 'byte-lm' is the trained model itself (moe-ts's own forward), the others its HF export loaded as that dtype. */
  dtype: LoadDType | 'byte-lm';
  language: string;
  /** Bytes scored. */
  bytes: number;
  bitsPerByte: number;
}

/** Sum of -log2 p(x[t+1] | x[..t]) over a window's positions, from logits [L, 256]. */
function windowBits(logits: Float32Array, win: Uint8Array): number {
  const V = 256;
  const lp = new Float64Array(V);
  let bits = 0;
  for (let t = 0; t + 1 < win.length; t++) {
    logSoftmax(logits, t * V, V, lp);
    bits -= lp[win[t + 1]!]! / Math.LN2;
  }
  return bits;
}

function windows(bytes: Uint8Array, L: number, maxBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const n = Math.min(bytes.length, maxBytes);
  for (let at = 0; at + 2 <= n; at += L) out.push(bytes.subarray(at, Math.min(n, at + L)));
  return out;
}

export async function quantPerplexity(opts: { run: string; dtypes: LoadDType[]; languages?: string[]; maxBytes?: number; log?: (l: string) => void }): Promise<PerplexityRow[]> {
  const log = opts.log ?? (() => {});
  const loaded = loadModel(opts.run);
  if (!(loaded.model instanceof ByteLM)) throw new Error(`quant-perplexity: ${opts.run} is a ${loaded.config.model.type} run, not a byte-lm one`);
  const lm = loaded.model;
  const d = loaded.config.data;
  if (d.dataset !== 'udhr') throw new Error(`quant-perplexity: ${opts.run} trained on ${d.dataset}; only udhr runs (per-language test splits) are scored`);
  const exp = byteLMToHF(lm);
  for (const w of exp.warnings) log(`warning: ${w}`);
  const L = Math.min(d.seqLen, lm.config.maxSeqLen);
  // the run's languages, in its order; each language's test split by the corpus's own rule
  const all = (await loadUdhr({ ...(d.languages ? { languages: d.languages } : {}), ...(d.maxLanguages ? { maxLanguages: d.maxLanguages } : {}) })).map((t) => t.language);
  const langs = opts.languages ?? all;
  for (const l of langs) if (!all.includes(l)) throw new Error(`quant-perplexity: language ${l} is not one the run trained on (${all.join(', ')})`);
  const tests = new Map<string, Uint8Array[]>();
  for (const l of langs) {
    const c = await loadUdhrCorpus({ languages: [l], valFraction: d.valFraction, testFraction: d.testFraction });
    tests.set(l, windows(c.test, L, opts.maxBytes ?? Infinity));
  }
  const rows: PerplexityRow[] = [];
  const score = (dtype: PerplexityRow['dtype'], logitsOf: (w: Uint8Array) => Float32Array): void => {
    const t0 = performance.now();
    for (const [language, ws] of tests) {
      let bits = 0, bytes = 0;
      for (const w of ws) { bits += windowBits(logitsOf(w), w); bytes += w.length - 1; }
      rows.push({ dtype, language, bytes, bitsPerByte: bits / bytes });
    }
    const mine = rows.filter((r) => r.dtype === dtype);
    const n = mine.reduce((s, r) => s + r.bytes, 0);
    log(`${dtype}: ${(mine.reduce((s, r) => s + r.bitsPerByte * r.bytes, 0) / n).toFixed(4)} bits/byte over ${n} test bytes of ${mine.length} languages (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  };
  lm.eval();
  score('byte-lm', (w) => noGrad(() => lm.forward(new Tensor(Int32Array.from(w), [1, w.length])).logits.data as Float32Array));
  for (const dtype of opts.dtypes) {
    const m: MoEDecoder = fromHF(exp.config, new MemoryTensorSource(exp.tensors), `${opts.run} (byte-lm export)`, { dtype });
    score(dtype, (w) => noGrad(() => m.forward(Int32Array.from(w)).data as Float32Array));
  }
  return rows;
}

/** Byte-weighted bits/byte per dtype over all languages, and the increase over the f32 export's. */
export function summarise(rows: PerplexityRow[]): Array<{ dtype: string; bytes: number; bitsPerByte: number; vsF32: number | null }> {
  const by = new Map<string, PerplexityRow[]>();
  for (const r of rows) by.set(r.dtype, [...(by.get(r.dtype) ?? []), r]);
  const mean = (rs: PerplexityRow[]): number => rs.reduce((s, r) => s + r.bitsPerByte * r.bytes, 0) / rs.reduce((s, r) => s + r.bytes, 0);
  const f32 = by.get('f32');
  return [...by].map(([dtype, rs]) => ({
    dtype, bytes: rs.reduce((s, r) => s + r.bytes, 0), bitsPerByte: mean(rs), vsF32: f32 ? mean(rs) / mean(f32) - 1 : null,
  }));
}

async function main(argv: string[]): Promise<number> {
  const get = (k: string): string | undefined => {
    const i = argv.indexOf(`--${k}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const run = get('run');
  if (!run) throw new Error('quant-perplexity: --run RUN_DIR is required (a moe train run of a byte-lm on udhr)');
  const dtypes = (get('dtypes') ?? 'f32,f16,bf16,q8_0,q4_0').split(',') as LoadDType[];
  for (const x of dtypes) if (!LOAD_DTYPES.includes(x)) throw new Error(`--dtypes: ${x} is not one of ${LOAD_DTYPES.join(', ')}`);
  const maxBytes = get('max-bytes') === undefined ? undefined : Number(get('max-bytes'));
  if (maxBytes !== undefined && !(Number.isInteger(maxBytes) && maxBytes >= 2)) throw new Error(`--max-bytes ${get('max-bytes')}: expected an integer >= 2`);
  const langs = get('languages')?.split(',');
  const rows = await quantPerplexity({
    run, dtypes, ...(langs ? { languages: langs } : {}), ...(maxBytes !== undefined ? { maxBytes } : {}),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  const summary = summarise(rows);
  if (argv.includes('--json')) console.log(JSON.stringify({ run, rows, summary }));
  else for (const s of summary) console.log(`${s.dtype}: ${s.bitsPerByte.toFixed(4)} bits/byte${s.vsF32 === null ? '' : ` (${s.vsF32 >= 0 ? '+' : ''}${(100 * s.vsF32).toFixed(2)}% vs f32)`} over ${s.bytes} bytes`);
  return 0;
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/').split('/').pop()!);
if (isMain) main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e: unknown) => { console.error(`quant-perplexity: ${e instanceof Error ? e.message : String(e)}`); process.exitCode = 1; });
