// llama.cpp reference check: greedy continuations of moe-written GGUFs, llama.cpp (node-llama-cpp) vs `moe generate`.
//
// Opt-in, never part of the default install: node-llama-cpp (~700 MB with its prebuilt binaries)
// lives in a cache folder outside the repository, $MOE_LLAMA_CPP_DIR (default
// ~/.cache/moe-ts/llama-cpp), and is installed there only with --install (or MOE_LLAMA_CPP=1).
//
//   node scripts/llama-cpp-check.mjs [--install] [--json] [--arch a,b] [--dtype f32,q8_0] [--new-tokens N] [--work DIR] [--foreign]
//
// --foreign adds a GGUF written by llama.cpp's own gguf-py (see runForeignCheck).
//
// For each family's tiny preset (made llama.cpp-compatible where the preset uses a feature that
// llama.cpp does not implement, see VARIANTS) it runs `moe create` / `moe convert --format gguf`,
// then for every prompt `moe generate --temperature 0 --prompt-ids ... --json` (a CLI process, the
// thing under test) and llama.cpp's greedy sampler with flash attention off and an F32 KV cache.
// A mismatch is reported with its first position and both engines' top-2 logit margins there
// (llama.cpp's from its probabilities: ln(p1/p2) is the logit gap). For Q8_0 the library loaded
// with dtype q8_0 (moe's Q8_0 kernels: activations quantised to Q8_0 as llama.cpp does) is compared
// as well; the CLI keeps a Q8_0 file's blocks since loadLM's default changed (commit e52fc8a), and
// before that dequantised it to f32, which flipped near-ties (7 of 16 continuations).
// Exit codes: 0 all equal, 1 a mismatch or an error, 3 node-llama-cpp is not installed (reason printed).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const LLAMA_CPP_VERSION = '3.22.1';
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist/src/cli/main.js');

export function llamaCppDir() {
  return process.env.MOE_LLAMA_CPP_DIR || join(homedir(), '.cache/moe-ts/llama-cpp');
}

/** The entry of node-llama-cpp in the cache folder, or null with the reason it cannot be used. */
export function llamaCppEntry(dir = llamaCppDir()) {
  const pkg = join(dir, 'node_modules/node-llama-cpp/package.json');
  if (!existsSync(pkg)) return { entry: null, reason: `node-llama-cpp is not installed in ${dir} (run: node scripts/llama-cpp-check.mjs --install, or set MOE_LLAMA_CPP=1)` };
  const version = JSON.parse(readFileSync(pkg, 'utf8')).version;
  if (version !== LLAMA_CPP_VERSION) return { entry: null, reason: `${pkg}: version ${version}, expected ${LLAMA_CPP_VERSION} (reinstall with --install)` };
  return { entry: join(dir, 'node_modules/node-llama-cpp/dist/index.js'), reason: null };
}

/**
 * Installs node-llama-cpp into the cache folder (npm registry only). --ignore-scripts: its
 * postinstall would try to download or build llama.cpp when no prebuilt binary fits; the CPU
 * binaries come inside the @node-llama-cpp/* packages, and loading uses build: 'never'.
 */
export function installLlamaCpp(dir = llamaCppDir()) {
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(dir, 'package.json'))) writeFileSync(join(dir, 'package.json'), '{"private": true}\n');
  execFileSync('npm', ['install', '--prefix', dir, `node-llama-cpp@${LLAMA_CPP_VERSION}`, '--ignore-scripts', '--no-audit', '--no-fund'], { stdio: 'inherit' });
}

/** llama.cpp on the CPU from the package's prebuilt binary: no GPU probing, never a source build or download. */
export async function loadLlamaCpp(threads = 2) {
  const { entry, reason } = llamaCppEntry();
  if (!entry) throw new Error(reason);
  const lib = await import(pathToFileURL(entry).href);
  const llama = await lib.getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, progressLogs: false, logLevel: lib.LlamaLogLevel.error, maxThreads: threads });
  return { lib, llama };
}

/** The context options under which llama.cpp agrees with a float32 reference (no F16 rounding of attention). */
export function referenceContextOptions(threads = 2, contextSize = 512) {
  return { contextSize, batchSize: contextSize, threads, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' };
}

export function moe(args) {
  return execFileSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
}

/**
 * Tiny presets as llama.cpp can run them. Mixtral's tiny preset has sliding_window 6, which
 * llama.cpp ignores for 'llama' (whole context): set to null in config.json. Qwen3-MoE's tiny
 * preset has a dense layer (mlp_only_layers [1]) that llama.cpp's qwen3moe does not declare: the
 * same config with every layer sparse, written through the library (moe create has no switch).
 * Qwen2-MoE's tiny preset ties the embeddings; llama.cpp's qwen2moe loader requires output.weight,
 * so moe convert writes it as a copy of token_embd (marked by moe_ts.tie_word_embeddings): the
 * preset runs as is.
 */
const VARIANTS = {
  mixtral: { note: 'tiny preset, sliding_window set to null (llama.cpp ignores it for llama)', patch: (cfg) => ({ ...cfg, sliding_window: null }) },
  qwen2_moe: { note: 'tiny preset as is (tied embeddings: moe convert writes output.weight as a copy, which llama.cpp qwen2moe requires)' },
  qwen3_moe: { note: 'tiny preset without its dense layer (llama.cpp qwen3moe has no mlp_only_layers)', override: { denseLayers: [], denseIntermediateSize: 0 } },
  olmoe: { note: 'tiny preset as is (full QK-norm, 16 experts top-4)' },
};

async function makeTiny(arch, dir) {
  const v = VARIANTS[arch];
  if (v.override) {
    const create = await import(pathToFileURL(join(ROOT, 'dist/src/models/moe-decoder-create.js')).href);
    const cfgMod = await import(pathToFileURL(join(ROOT, 'dist/src/models/moe-decoder-config.js')).href);
    const { writeHFDir } = await import(pathToFileURL(join(ROOT, 'dist/src/formats/hf/write.js')).href);
    const tok = await import(pathToFileURL(join(ROOT, 'dist/src/formats/hf/byte-tokenizer.js')).href);
    const c = { ...create.presetConfig(arch, 'tiny'), ...v.override };
    cfgMod.validateMoEDecoderConfig(c);
    mkdirSync(dir, { recursive: true });
    const config = { ...cfgMod.decoderConfigToHF(c), bos_token_id: tok.BYTE_BOS_ID, eos_token_id: tok.BYTE_EOS_ID };
    writeHFDir(dir, { config, tensors: create.randomHFTensors(c, 0), dtype: 'F32', tokenizerJson: tok.byteLevelTokenizerJson(), tokenizerConfig: tok.byteLevelTokenizerConfig() });
  } else {
    moe(['create', '--arch', arch, '--preset', 'tiny', '--out', dir, '--seed', '0', '--json']);
    if (v.patch) {
      const p = join(dir, 'config.json');
      writeFileSync(p, JSON.stringify(v.patch(JSON.parse(readFileSync(p, 'utf8'))), null, 2));
    }
  }
}

/** Prompts: short, with BOS, a sentence of bytes, and a longer one (positions past any window). */
export const PROMPTS = [
  [1, 2, 3],
  [256, 72, 101, 108, 108, 111],
  [...Buffer.from('The quick brown fox jumps over the lazy dog.')],
  Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 256),
];

function top2(logits, off, V) {
  let a = -1; let b = -1;
  for (let i = 0; i < V; i++) {
    const x = logits[off + i];
    if (a < 0 || x > logits[off + a]) { b = a; a = i; } else if (b < 0 || x > logits[off + b]) b = i;
  }
  return { first: a, second: b, margin: logits[off + a] - logits[off + b] };
}

/** moe's logits after prompt + prefix (library, teacher-forced; dtype undefined = loadLM's default, as the CLI): its top-2 at the divergence. */
async function moeMarginAt(path, dtype, prompt, prefix) {
  const { loadLM } = await import(pathToFileURL(join(ROOT, 'dist/src/models/load-lm.js')).href);
  const { model } = await loadLM(path, dtype ? { dtype } : {});
  const ids = Int32Array.from([...prompt, ...prefix]);
  const logits = model.forward(ids, model.newCache(ids.length));
  const V = logits.shape[1];
  return top2(logits.data, (ids.length - 1) * V, V);
}

/** moe's greedy continuation through the library with a load dtype (q8_0: moe's Q8_0 kernels). */
async function moeLibraryGreedy(path, dtype, prompt, n, eosIds) {
  const { loadLM } = await import(pathToFileURL(join(ROOT, 'dist/src/models/load-lm.js')).href);
  const { generate } = await import(pathToFileURL(join(ROOT, 'dist/src/infer/generate.js')).href);
  const { model } = await loadLM(path, { dtype });
  return [...generate(model, prompt, { maxNewTokens: n, eosIds, sampler: { temperature: 0 } }).ids];
}

/** llama.cpp's greedy continuation, stopping after an end-of-generation token, with each step's top-2 logit gap. */
export async function llamaGreedy(context, prompt, n) {
  const seq = context.getSequence();
  try {
    const ids = []; const margins = [];
    const gen = seq.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0, yieldEogToken: true });
    for await (const { token, probabilities } of gen) {
      const [[, p1], [, p2] = [0, 0]] = [...probabilities.entries()].slice(0, 2);
      ids.push(token);
      margins.push(Math.log(p1) - Math.log(p2));
      if (context.model.isEogToken(token) || ids.length >= n) break;
    }
    return { ids, margins };
  } finally {
    seq.dispose();
  }
}

function firstDiff(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

export async function runCheck({ archs = Object.keys(VARIANTS), dtypes = ['f32', 'q8_0'], prompts = PROMPTS, newTokens = 32, work = join(llamaCppDir(), 'work'), log = () => {} } = {}) {
  const { llama } = await loadLlamaCpp(2);
  const rows = [];
  for (const arch of archs) {
    const dir = join(work, `${arch}-tiny`);
    await makeTiny(arch, dir);
    for (const dtype of dtypes) {
      const gguf = join(work, `${arch}-tiny-${dtype}.gguf`);
      moe(['convert', dir, gguf, '--format', 'gguf', '--dtype', dtype, '--json']);
      const model = await llama.loadModel({ modelPath: gguf });
      const context = await model.createContext(referenceContextOptions(2));
      const eog = [];
      for (let t = 0; t < model.fileInfo.metadata[model.fileInfo.metadata.general.architecture].vocab_size; t++) if (model.isEogToken(t)) eog.push(t);
      for (const prompt of prompts) {
        const cli = JSON.parse(moe(['generate', '--model', gguf, '--prompt-ids', prompt.join(','), '--temperature', '0', '--max-new-tokens', String(newTokens), '--json'])).ids;
        const ll = await llamaGreedy(context, prompt, newTokens);
        const row = { arch, dtype, prompt: prompt.length, llamaEog: eog, moe: cli, llama: ll.ids, llamaMinMargin: Math.min(...ll.margins) };
        row.firstDiff = firstDiff(cli, ll.ids);
        if (row.firstDiff >= 0) {
          const p = row.firstDiff;
          row.llamaMarginAtDiff = ll.margins[p];
          row.moeAtDiff = await moeMarginAt(gguf, undefined, prompt, cli.slice(0, p)); // loadLM's default, as the CLI
        }
        if (dtype !== 'f32') {
          row.moeLib = await moeLibraryGreedy(gguf, dtype, prompt, newTokens, eog);
          row.firstDiffLib = firstDiff(row.moeLib, ll.ids);
          if (row.firstDiffLib >= 0) row.moeLibAtDiff = await moeMarginAt(gguf, dtype, prompt, row.moeLib.slice(0, row.firstDiffLib));
        }
        log(`${arch} ${dtype} prompt ${prompt.length}: ${row.firstDiff < 0 ? 'equal' : `DIFFER at ${row.firstDiff} (llama margin ${row.llamaMarginAtDiff?.toFixed(4)}, moe top2 ${JSON.stringify(row.moeAtDiff)})`} ` +
          `(${cli.length} tokens${row.moeLib ? `; library ${dtype}: ${row.firstDiffLib < 0 ? 'equal' : `DIFFER at ${row.firstDiffLib} ${JSON.stringify(row.moeLibAtDiff)}`}` : ''}; llama min margin ${row.llamaMinMargin.toFixed(4)})`);
        rows.push(row);
      }
      await context.dispose();
      await model.dispose();
    }
  }
  await llama.dispose();
  return rows;
}

/**
 * A GGUF that llama.cpp's own code wrote (scripts/llama-cpp-foreign-gguf.py: gguf-py's writer and
 * quantiser, llama.cpp's real Qwen2 vocabulary) around a moe tiny qwen2moe: moe must load it,
 * tokenize like llama.cpp and continue greedily like it. gguf-py and the vocabulary come from the
 * llama.cpp source that node-llama-cpp ships as a git bundle (cloned locally, no network); python3
 * with numpy is needed. Returns null with the reason when something is missing.
 */
export async function runForeignCheck({ work = join(llamaCppDir(), 'work'), dtype = 'q8_0', newTokens = 24, log = () => {} } = {}) {
  const src = join(llamaCppDir(), 'llama.cpp-src');
  const bundle = join(llamaCppDir(), 'node_modules/node-llama-cpp/llama/gitRelease.bundle');
  if (!existsSync(join(src, 'gguf-py'))) {
    if (!existsSync(bundle)) return { skipped: `${bundle} not found` };
    execFileSync('git', ['clone', '-q', bundle, src], { stdio: 'ignore' });
  }
  try { execFileSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }); } catch { return { skipped: 'python3 with numpy is needed to run gguf-py' }; }
  const base = join(work, 'qwen2_moe-tiny');
  const f32 = join(work, 'qwen2_moe-tiny-f32.gguf');
  if (!existsSync(join(base, 'config.json'))) await makeTiny('qwen2_moe', base);
  if (!existsSync(f32)) moe(['convert', base, f32, '--format', 'gguf', '--dtype', 'f32']);
  const out = join(work, `foreign-qwen2-vocab-${dtype}.gguf`);
  execFileSync('python3', [join(ROOT, 'scripts/llama-cpp-foreign-gguf.py'), join(src, 'gguf-py'), join(src, 'models/ggml-vocab-qwen2.gguf'), f32, out, dtype], { stdio: 'ignore' });
  const { readGGUFAsHF } = await import(pathToFileURL(join(ROOT, 'dist/src/formats/gguf/index.js')).href);
  const { loadTokenizer } = await import(pathToFileURL(join(ROOT, 'dist/src/formats/hf/tokenizer.js')).href);
  const { llama } = await loadLlamaCpp(2);
  const model = await llama.loadModel({ modelPath: out });
  const context = await model.createContext(referenceContextOptions(2, 256));
  const text = 'Hello world! The quick brown fox, 12345 \u2014 d\u00e9j\u00e0 vu; \u4f60\u597d';
  const g = await readGGUFAsHF(out);
  g.source.close();
  const tok = loadTokenizer(g.tokenizerJson, g.tokenizerConfig ?? {});
  const res = { file: out, warnings: g.warnings, llamaTokens: [...model.tokenize(text)], moeTokens: [...tok.encode(text)], rows: [] };
  for (const prompt of [res.llamaTokens, [1, 2, 3]]) {
    const ll = await llamaGreedy(context, prompt, newTokens);
    const cli = JSON.parse(moe(['generate', '--model', out, '--prompt-ids', prompt.join(','), '--temperature', '0', '--max-new-tokens', String(newTokens), '--json'])).ids;
    res.rows.push({ prompt: prompt.length, moe: cli, llama: ll.ids, firstDiff: firstDiff(cli, ll.ids), llamaMinMargin: Math.min(...ll.margins) });
    log(`foreign ${dtype} prompt ${prompt.length}: ${firstDiff(cli, ll.ids) < 0 ? 'equal' : `DIFFER at ${firstDiff(cli, ll.ids)}`}`);
  }
  await context.dispose(); await model.dispose(); await llama.dispose();
  return res;
}

async function main(argv) {
  const flag = (k) => argv.includes(`--${k}`);
  const opt = (k) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : undefined; };
  if (flag('install') || (process.env.MOE_LLAMA_CPP === '1' && !llamaCppEntry().entry)) installLlamaCpp();
  const { entry, reason } = llamaCppEntry();
  if (!entry) { console.error(`llama-cpp-check: skipped: ${reason}`); return 3; }
  const rows = await runCheck({
    ...(opt('arch') ? { archs: opt('arch').split(',') } : {}),
    ...(opt('dtype') ? { dtypes: opt('dtype').split(',') } : {}),
    ...(opt('new-tokens') ? { newTokens: Number(opt('new-tokens')) } : {}),
    ...(opt('work') ? { work: opt('work') } : {}),
    log: (l) => console.error(l),
  });
  const bad = rows.filter((r) => r.firstDiff >= 0);
  let foreign = null;
  if (flag('foreign')) {
    foreign = await runForeignCheck({ ...(opt('work') ? { work: opt('work') } : {}), log: (l) => console.error(l) });
    if (foreign.skipped) console.error(`llama-cpp-check: foreign GGUF skipped: ${foreign.skipped}`);
    else {
      const same = JSON.stringify(foreign.llamaTokens) === JSON.stringify(foreign.moeTokens);
      console.error(`llama-cpp-check: foreign GGUF: tokenization ${same ? 'equal' : 'DIFFERS'}, ${foreign.rows.filter((r) => r.firstDiff < 0).length}/${foreign.rows.length} continuations equal`);
      if (!same || foreign.rows.some((r) => r.firstDiff >= 0)) bad.push(foreign);
    }
  }
  if (flag('json')) console.log(JSON.stringify(foreign ? { rows, foreign } : rows));
  console.error(`llama-cpp-check: ${rows.length - bad.length}/${rows.length} continuations equal (moe generate vs llama.cpp)`);
  return bad.length ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e) => { console.error(`llama-cpp-check: ${e?.stack ?? e}`); process.exitCode = 1; });
}
