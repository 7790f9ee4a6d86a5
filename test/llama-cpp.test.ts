// llama.cpp reference (opt-in): greedy continuations of moe-written tiny GGUFs equal llama.cpp's (node-llama-cpp).
//
// Skips, with the reason printed, unless node-llama-cpp is installed in $MOE_LLAMA_CPP_DIR
// (default ~/.cache/moe-ts/llama-cpp); MOE_LLAMA_CPP=1 installs it there first (~700 MB from the
// npm registry). The default install and `npm test` never install it. The work is done by
// scripts/llama-cpp-check.mjs (which also runs on its own, with more prompts and margins).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Row {
  arch: string; dtype: string; prompt: number; moe: number[]; llama: number[]; firstDiff: number;
  llamaEog: number[]; moeLib?: number[]; firstDiffLib?: number;
  llamaMarginAtDiff?: number; moeAtDiff?: object; moeLibAtDiff?: object;
}
// a failure names the first difference and both engines' top-2 logit gaps there (near-ties flip)
const where = (r: Row, lib = false): string => lib
  ? `${r.arch} ${r.dtype} prompt of ${r.prompt}: first difference at ${r.firstDiffLib}, moe top-2 there ${JSON.stringify(r.moeLibAtDiff)}`
  : `${r.arch} ${r.dtype} prompt of ${r.prompt}: first difference at ${r.firstDiff}, llama.cpp top-2 gap ${r.llamaMarginAtDiff}, moe top-2 ${JSON.stringify(r.moeAtDiff)}`;
interface CheckModule {
  llamaCppEntry(): { entry: string | null; reason: string | null };
  installLlamaCpp(): void;
  runCheck(opts: { archs?: string[]; dtypes?: string[]; prompts?: number[][]; newTokens?: number; work?: string }): Promise<Row[]>;
  PROMPTS: number[][];
}

const check = (await import(pathToFileURL(join(ROOT, 'scripts/llama-cpp-check.mjs')).href)) as CheckModule;
if (process.env['MOE_LLAMA_CPP'] === '1' && !check.llamaCppEntry().entry) check.installLlamaCpp();
const { reason } = check.llamaCppEntry();
if (reason) console.log(`# llama-cpp.test: skipped: ${reason}`);

let rows: Row[] = [];
const work = mkdtempSync(join(tmpdir(), 'moe-llama-cpp-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// two prompts per file (a short one and the 40-token one), 16 new tokens: the four families, F32 and Q8_0
test('llama.cpp runs the four families\' tiny GGUFs written by moe convert', { skip: reason ?? false, timeout: 600_000 }, async () => {
  rows = await check.runCheck({ prompts: [check.PROMPTS[1]!, check.PROMPTS[3]!], newTokens: 16, work });
  assert.equal(rows.length, 4 * 2 * 2);
  for (const r of rows) {
    assert.ok(r.llama.length >= 1 && r.moe.length >= 1, `${r.arch} ${r.dtype}: no tokens`);
    // the byte tokenizer's <|eos|> (257) ends generation in both engines
    assert.ok(r.llamaEog.includes(257), `${r.arch} ${r.dtype}: llama.cpp's end-of-generation ids ${r.llamaEog} lack 257`);
  }
});

test('F32: moe generate --temperature 0 equals llama.cpp token for token', { skip: reason ?? false }, () => {
  const f32 = rows.filter((r) => r.dtype === 'f32');
  assert.equal(f32.length, 8);
  for (const r of f32) assert.deepEqual(r.moe, r.llama, where(r));
});

test('Q8_0: moe loaded as q8_0 (its Q8_0 kernels) equals llama.cpp token for token', { skip: reason ?? false }, () => {
  const q = rows.filter((r) => r.dtype === 'q8_0');
  assert.equal(q.length, 8);
  for (const r of q) assert.deepEqual(r.moeLib, r.llama, where(r, true));
});

// the CLI keeps a Q8_0 file's blocks (Q8_0 products, activations quantised as in llama.cpp); a
// dequantised f32 run would flip near-ties here
test('Q8_0: moe generate (CLI) equals llama.cpp token for token', { skip: reason ?? false }, () => {
  assert.equal(rows.filter((x) => x.dtype === 'q8_0').length, 8);
  for (const r of rows.filter((x) => x.dtype === 'q8_0')) assert.deepEqual(r.moe, r.llama, where(r));
});
