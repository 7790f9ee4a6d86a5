// Benchmark (not a test): batch-1 prefill and decode tokens/s, moe-ts vs llama.cpp (node-llama-cpp) on the same GGUF.
//
//   MOE_NATIVE_THREADS=2 node dist/bench/llama-cpp.js [--arch olmoe] [--preset small] [--dtype f32,q8_0]
//       [--rounds 3] [--prompt-tokens 64] [--new-tokens 32] [--kv f32|f16] [--json]
//
// Needs node-llama-cpp in $MOE_LLAMA_CPP_DIR (see scripts/llama-cpp-check.mjs --install). Both
// engines run in this one process, one after the other, interleaved round by round (the order
// flips every round), 2 threads each, on the same GGUF written by `moe convert`, with the same
// prompt ids. moe loads the file with the dtype it holds (q8_0: moe's Q8_0 kernels, which quantise
// activations as llama.cpp does; `moe bench decode` itself has no --dtype and dequantises to f32).
// llama.cpp runs with the reference options (flash attention off, F32 KV cache; --kv f16: both engines
// keep the KV cache in f16, llama.cpp's default type). Prefill = time to
// the first new token (prompt in one batch); decode = the remaining new tokens, one step each.

import { existsSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import type { KVCache } from '../src/nn/kv-cache.js';
import { median } from './timing.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
if (!process.env['MOE_NATIVE_THREADS']) process.env['MOE_NATIVE_THREADS'] = '2';

interface LlamaSequence {
  evaluate(tokens: number[], opts: object): AsyncGenerator<number, void, unknown>;
  dispose(): void;
}
interface LlamaContext { getSequence(): LlamaSequence; dispose(): Promise<void> }
interface LlamaModel { createContext(opts: object): Promise<LlamaContext>; dispose(): Promise<void> }
interface Llama { loadModel(opts: { modelPath: string }): Promise<LlamaModel>; dispose(): Promise<void>; systemInfo: string }
interface CheckModule {
  llamaCppEntry(): { entry: string | null; reason: string | null };
  llamaCppDir(): string;
  loadLlamaCpp(threads: number): Promise<{ llama: Llama }>;
  referenceContextOptions(threads: number, contextSize: number): object;
  moe(args: string[]): string;
}

interface Speed { prefillTokensPerSec: number; decodeTokensPerSec: number }

async function llamaRun(ctx: LlamaContext, prompt: number[], n: number): Promise<Speed> {
  const seq = ctx.getSequence();
  try {
    let count = 0;
    const t0 = performance.now();
    let t1 = t0;
    for await (const _ of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      if (++count === 1) t1 = performance.now();
      if (count >= n) break;
    }
    const t2 = performance.now();
    return { prefillTokensPerSec: prompt.length / ((t1 - t0) / 1000), decodeTokensPerSec: (count - 1) / ((t2 - t1) / 1000) };
  } finally {
    seq.dispose();
  }
}

async function main(argv: string[]): Promise<number> {
  const opt = (k: string, d: string): string => { const i = argv.indexOf(`--${k}`); return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : d; };
  const arch = opt('arch', 'olmoe');
  const preset = opt('preset', 'small');
  const dtypes = opt('dtype', 'f32,q8_0').split(',');
  const rounds = Number(opt('rounds', '3'));
  const P = Number(opt('prompt-tokens', '64'));
  const N = Number(opt('new-tokens', '32'));
  // KV cache element type on both sides: f32 (default; llama.cpp's reference mode) or f16 (llama.cpp's own default)
  const kv = opt('kv', 'f32');
  if (kv !== 'f32' && kv !== 'f16') { console.error(`bench llama-cpp: --kv ${kv}: expected f32 or f16`); return 2; }
  const check = (await import(pathToFileURL(join(ROOT, 'scripts/llama-cpp-check.mjs')).href)) as CheckModule;
  const { entry, reason } = check.llamaCppEntry();
  if (!entry) { console.error(`bench llama-cpp: skipped: ${reason}`); return 3; }
  const { loadLM } = await import('../src/models/load-lm.js');
  const { generate } = await import('../src/infer/generate.js');
  const { Rng } = await import('../src/tensor/rng.js');

  const work = join(check.llamaCppDir(), 'work');
  const hf = join(work, `${arch}-${preset}`);
  if (!existsSync(join(hf, 'config.json'))) check.moe(['create', '--arch', arch, '--preset', preset, '--out', hf, '--seed', '0']);
  const log = (l: string): void => { process.stderr.write(`${l}\n`); };
  const { llama } = await check.loadLlamaCpp(2);
  log(`llama.cpp: ${llama.systemInfo.trim()}`);
  const engines: Array<{ dtype: string; gguf: string; moeModel: Awaited<ReturnType<typeof loadLM>>['model']; ctx: LlamaContext; model: LlamaModel; moe: Speed[]; llama: Speed[] }> = [];
  let V = 0;
  for (const dtype of dtypes) {
    const gguf = join(work, `${arch}-${preset}-${dtype}.gguf`);
    if (!existsSync(gguf)) check.moe(['convert', hf, gguf, '--format', 'gguf', '--dtype', dtype]);
    const lm = await loadLM(gguf, { dtype: dtype as 'f32' | 'q8_0', kvDtype: kv === 'f16' ? 'float16' : 'float32' });
    V = lm.model.config.vocabSize;
    const model = await llama.loadModel({ modelPath: gguf });
    const ctxOpts = check.referenceContextOptions(2, Math.max(128, P + N));
    const ctx = await model.createContext(kv === 'f16' ? { ...ctxOpts, experimentalKvCacheKeyType: 'F16', experimentalKvCacheValueType: 'F16' } : ctxOpts);
    engines.push({ dtype, gguf, moeModel: lm.model, ctx, model, moe: [], llama: [] });
  }
  const rng = new Rng(1);
  const prompt = Array.from({ length: P }, () => rng.int(V));
  const moeRun = (e: (typeof engines)[number], n: number, p: number[]): Speed => {
    const r = generate<KVCache>(e.moeModel, p, { maxNewTokens: n });
    return { prefillTokensPerSec: r.prefillTokensPerSec, decodeTokensPerSec: r.decodeTokensPerSec ?? 0 };
  };
  for (const e of engines) { moeRun(e, 2, prompt.slice(0, 8)); await llamaRun(e.ctx, prompt.slice(0, 8), 2); } // warm-up
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const e of engines) {
      loads.push(loadavg()[0]!);
      if (r % 2 === 0) { e.moe.push(moeRun(e, N, prompt)); e.llama.push(await llamaRun(e.ctx, prompt, N)); }
      else { e.llama.push(await llamaRun(e.ctx, prompt, N)); e.moe.push(moeRun(e, N, prompt)); }
      log(`round ${r} ${e.dtype}: moe prefill ${e.moe.at(-1)!.prefillTokensPerSec.toFixed(1)} decode ${e.moe.at(-1)!.decodeTokensPerSec.toFixed(2)} | ` +
        `llama.cpp prefill ${e.llama.at(-1)!.prefillTokensPerSec.toFixed(1)} decode ${e.llama.at(-1)!.decodeTokensPerSec.toFixed(2)} tokens/s (load ${loadavg()[0]!.toFixed(2)})`);
    }
  }
  // median and best of the rounds: on a busy machine the best is the better estimate of the
  // uncontended speed (llama.cpp's spinning thread pool loses most when a core is taken away)
  const stats = (xs: Speed[]): object => ({
    prefillTokensPerSec: median(xs.map((s) => s.prefillTokensPerSec)), decodeTokensPerSec: median(xs.map((s) => s.decodeTokensPerSec)),
    bestPrefillTokensPerSec: Math.max(...xs.map((s) => s.prefillTokensPerSec)), bestDecodeTokensPerSec: Math.max(...xs.map((s) => s.decodeTokensPerSec)),
  });
  const results = engines.map((e) => ({ gguf: e.gguf, dtype: e.dtype, moe: stats(e.moe), llamaCpp: stats(e.llama) })) as Array<{ gguf: string; dtype: string; moe: Speed; llamaCpp: Speed }>;
  const summary = { arch, preset, promptTokens: P, newTokens: N, kvCache: kv, rounds, threads: 2, cpu: cpus()[0]?.model, loadavg1: { min: Math.min(...loads), max: Math.max(...loads) }, results };
  if (argv.includes('--json')) console.log(JSON.stringify(summary));
  else for (const r of results) {
    console.log(`${arch} ${preset} ${r.dtype}: prefill moe ${r.moe.prefillTokensPerSec.toFixed(1)} vs llama.cpp ${r.llamaCpp.prefillTokensPerSec.toFixed(1)} tokens/s; ` +
      `decode moe ${r.moe.decodeTokensPerSec.toFixed(2)} vs llama.cpp ${r.llamaCpp.decodeTokensPerSec.toFixed(2)} tokens/s (median of ${rounds})`);
  }
  for (const e of engines) { await e.ctx.dispose(); await e.model.dispose(); }
  await llama.dispose();
  return 0;
}

main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e: unknown) => { console.error(`bench llama-cpp: ${e instanceof Error ? e.stack : String(e)}`); process.exitCode = 1; });
