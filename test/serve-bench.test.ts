// moe bench serve on the tiny preset (bounded, no timing assertions), and the protocol options it relies on.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM, type LoadedLM } from '../src/models/load-lm.js';
import { loadTokenizer, type LoadedTokenizer } from '../src/formats/hf/tokenizer.js';
import { ModelServer } from '../src/serve/http.js';
import { benchServe, formatServeReport } from '../bench/serve.js';
import { run } from '../bench/cli.js';

let root = '';
let lm: LoadedLM;
let tok: LoadedTokenizer;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'moe-serve-bench-'));
  createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: join(root, 'tiny'), seed: 3 });
  lm = await loadLM(join(root, 'tiny'));
  tok = loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig ?? {});
});
after(() => rmSync(root, { recursive: true, force: true }));

/** SSE data payloads of a whole response. */
async function events(res: Response): Promise<unknown[]> {
  const text = await res.text();
  return text.split('\n\n').filter((e) => e.length > 0).map((e) => {
    assert.ok(e.startsWith('data: '), e);
    const d = e.slice(6);
    return d === '[DONE]' ? d : JSON.parse(d);
  });
}

test('stream: one chunk per token, ignore_eos runs to max_tokens, include_usage ends with usage; stream_options without stream is a 400', async () => {
  const s = new ModelServer({ model: lm.model, tokenizer: tok, modelName: 'tiny', maxBatch: 2, maxQueue: 2, contextLength: 64 });
  const url = await s.listen(0, '127.0.0.1');
  try {
    const post = (body: object) => fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    // the EOS id as the prompt's continuation is likely for nothing in particular: ignore_eos must hold regardless
    const ev = await events(await post({ prompt: 'Hello', max_tokens: 7, temperature: 0, stream: true, ignore_eos: true, stream_options: { include_usage: true } }));
    assert.equal(ev.at(-1), '[DONE]');
    const usage = ev.at(-2) as { choices: unknown[]; usage: { completion_tokens: number; prompt_tokens: number } };
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 7);
    const chunks = ev.slice(0, -2) as Array<{ choices: Array<{ text: string; finish_reason: string | null }> }>;
    const finish = chunks.at(-1)!;
    assert.equal(finish.choices[0]!.finish_reason, 'length');
    // tokens 1..7 each sent a chunk (text may be '' while a UTF-8 character is incomplete), plus at most one held-back tail
    const perToken = chunks.slice(0, -1);
    assert.ok(perToken.length === 7 || perToken.length === 8, `${perToken.length} token chunks for 7 tokens`);
    const whole = await (await post({ prompt: 'Hello', max_tokens: 7, temperature: 0, ignore_eos: true })).json() as { choices: Array<{ text: string }> };
    assert.equal(perToken.map((c) => c.choices[0]!.text).join(''), whole.choices[0]!.text, 'the chunks spell the non-streamed text');
    const bad = await post({ prompt: 'Hello', max_tokens: 2, stream_options: { include_usage: true } });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { param: string } }).error.param, 'stream_options');
  } finally {
    await s.shutdown(0);
  }
});

test('benchServe: every client count completes every request, tokens exact, report formats', async () => {
  const r = await benchServe(lm.model, tok, 'tiny', { clients: [1, 3], requests: 4, maxNewTokens: 5, promptTokens: 8, rounds: 2, prompts: 'udhr' });
  assert.equal(r.rows.length, 2);
  for (const row of r.rows) {
    assert.equal(row.errors, 0, row.firstError ?? '');
    assert.equal(row.requests, 8);
    assert.equal(row.generatedTokens, 8 * 5);
    assert.equal(row.roundTokensPerSec.length, 2);
    assert.ok(row.tokensPerSec > 0 && Number.isFinite(row.ttftMs.p50) && Number.isFinite(row.tpotMs.p99));
    assert.ok(row.meanBatch >= 1 && row.meanBatch <= row.clients, `mean batch ${row.meanBatch}`);
    assert.ok(row.meanExpertsPerLayer >= lm.model.config.topK && row.meanExpertsPerLayer <= lm.model.config.numExperts);
    assert.ok(row.peakRssMiB > 0);
  }
  assert.equal(r.rows[0]!.speedup, 1);
  assert.equal(r.rows[0]!.bytesCeiling, 1);
  assert.ok(lm.model.onRouting !== undefined, 'the server\'s routing hook is back in place');
  assert.match(formatServeReport(r), /clients +tokens\/s +speedup/);
});

test('moe bench serve: random prompts, --json; bad flags name themselves', async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (l: string) => { lines.push(l); };
  let code: number;
  try {
    code = await run(['bench', 'serve', '--model', join(root, 'tiny'), '--clients', '2', '--requests', '2', '--max-new-tokens', '3', '--prompt-tokens', '4', '--rounds', '1', '--prompts', 'random', '--json']);
  } finally {
    console.log = log;
  }
  assert.equal(code, 0);
  const rep = JSON.parse(lines.at(-1)!) as { rows: Array<{ clients: number; generatedTokens: number; speedup: number | null }>; prompts: string };
  assert.equal(rep.prompts, 'random');
  assert.deepEqual(rep.rows.map((x) => [x.clients, x.generatedTokens, x.speedup]), [[2, 6, null]]);
  const errs: string[] = [];
  const w = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => { errs.push(s); return true; }) as typeof process.stderr.write;
  try {
    assert.equal(await run(['bench', 'serve', '--model', join(root, 'tiny'), '--clients', '1,x']), 2);
    assert.equal(await run(['bench', 'serve', '--model', join(root, 'tiny'), '--prompts', 'poems']), 2);
  } finally {
    process.stderr.write = w;
  }
  assert.match(errs.join(''), /--clients 1,x: 'x' is not a positive integer/);
  assert.match(errs.join(''), /--prompts poems: expected udhr or random/);
});

test('moe bench serve --expert-memory: every budget x policy serves every request; hit rates from the cache; a budget below top-k is refused; plots written', async () => {
  const { benchServeBudgets, formatServeBudgetReport, plotServeBudgets } = await import('../bench/serve-budget.js');
  const cfg = lm.model.config;
  // below k experts per layer: the cache refuses it (the report lists it, the rest still run)
  const tooSmall = (cfg.topK - 1) / cfg.numExperts;
  const r = await benchServeBudgets(join(root, 'tiny'), {
    budgets: [1, 0.5, tooSmall], policies: ['lru', 'pregate'], clients: [1, 2], requests: 2, maxNewTokens: 3, promptTokens: 5, rounds: 2,
  });
  assert.deepEqual(r.refused.map((x) => [x.budget, x.policy]), [[tooSmall, 'lru'], [tooSmall, 'pregate']]);
  assert.match(r.refused[0]!.reason, /\d/, 'the refusal gives the numbers');
  // all resident + 2 budgets x 2 policies, each at 1 and 2 clients
  assert.equal(r.rows.length, 5 * 2);
  for (const row of r.rows) {
    assert.equal(row.errors, 0, row.firstError ?? '');
    assert.equal(row.roundTokensPerSec.length, 2);
    assert.ok(row.tokensPerSec > 0 && Number.isFinite(row.ttftMs.p50) && Number.isFinite(row.ttftMs.p99));
    if (row.budget === null) {
      assert.equal(row.hitRate, null);
      assert.equal(row.ofResident, null);
      assert.equal(row.slotsPerLayer, cfg.numExperts);
    } else {
      assert.ok(row.hitRate !== null && row.hitRate >= 0 && row.hitRate <= 1, `hit rate ${row.hitRate}`);
      assert.ok(row.mbReadPerToken !== null && row.mbReadPerToken >= 0);
      assert.ok(row.ofResident !== null && row.ofResident > 0);
      assert.equal(row.slotsPerLayer, Math.floor(row.budget * cfg.numExperts));
    }
  }
  // with every expert in a slot, the timed requests (after the warm-up and round 1 filled the slots) all hit
  const full = r.rows.filter((x) => x.budget === 1 && x.policy === 'lru');
  assert.ok(full.every((x) => x.hitRate! > 0.9), `budget 1: ${full.map((x) => x.hitRate).join(', ')}`);
  const half = r.rows.filter((x) => x.budget === 0.5 && x.policy === 'lru');
  assert.ok(half.every((x) => x.hitRate! < 1 && x.mbReadPerToken! > 0), 'half the experts: some misses read from the file');
  const text = formatServeBudgetReport(r);
  assert.match(text, /all resident/);
  assert.match(text, /refused: budget/);
  const dir = join(root, 'plots');
  const pngs = await plotServeBudgets(dir, r.rows);
  assert.equal(pngs.length, 3);
  for (const p of pngs) assert.ok(existsSync(p), p);
  // --rows: saved sweeps are printed together (and plotted) without measuring
  const saved = join(root, 'sweep.json');
  writeFileSync(saved, JSON.stringify(r));
  const lines: string[] = [];
  const log = console.log;
  console.log = (l: string) => { lines.push(l); };
  try {
    assert.equal(await run(['bench', 'serve', '--rows', `${saved},${saved}`, '--json']), 0);
  } finally {
    console.log = log;
  }
  const merged = JSON.parse(lines.at(-1)!) as { rows: unknown[]; refused: unknown[] };
  assert.equal(merged.rows.length, 2 * r.rows.length);
  assert.equal(merged.refused.length, 2 * r.refused.length);
});

test('moe bench serve: sweep flags are checked and named', async () => {
  const errs: string[] = [];
  const w = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => { errs.push(s); return true; }) as typeof process.stderr.write;
  try {
    assert.equal(await run(['bench', 'serve', '--model', join(root, 'tiny'), '--plot', join(root, 'p')]), 2);
    assert.equal(await run(['bench', 'serve', '--model', join(root, 'tiny'), '--expert-memory', '0.5,2']), 2);
    assert.equal(await run(['bench', 'serve', '--model', join(root, 'tiny'), '--expert-memory', '0.5', '--expert-policy', 'fifo']), 2);
  } finally {
    process.stderr.write = w;
  }
  assert.match(errs.join(''), /--plot needs --expert-memory/);
  assert.match(errs.join(''), /--expert-memory 0.5,2: '2' is not a fraction/);
  assert.match(errs.join(''), /unknown policy 'fifo'/);
});
