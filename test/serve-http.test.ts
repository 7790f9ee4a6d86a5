// moe serve over real HTTP (Node's fetch, loopback, port 0) on the tiny preset: protocol, errors, limits, cancel, shutdown, load.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM, type LoadedLM } from '../src/models/load-lm.js';
import { loadTokenizer, type LoadedTokenizer } from '../src/formats/hf/tokenizer.js';
import { ModelServer, type ServerOptions } from '../src/serve/http.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
let root = '';
let lm: LoadedLM;
let tok: LoadedTokenizer;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'moe-serve-http-'));
  createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: join(root, 'tiny'), seed: 5 });
  lm = await loadLM(join(root, 'tiny'));
  tok = loadTokenizer(lm.tokenizerJson, lm.tokenizerConfig ?? {});
});
after(() => rmSync(root, { recursive: true, force: true }));

async function withServer(opts: Partial<ServerOptions>, body: (url: string, s: ModelServer) => Promise<void>): Promise<void> {
  const s = new ModelServer({ model: lm.model, tokenizer: tok, modelName: 'tiny', maxBatch: 2, maxQueue: 2, contextLength: 128, ...opts });
  const url = await s.listen(0, '127.0.0.1');
  try {
    await body(url, s);
  } finally {
    await s.shutdown(0);
  }
}

const post = (url: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> =>
  fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...(signal ? { signal } : {}) });

/** Reads SSE events as they come; next() gives the next data payload ('[DONE]' or parsed JSON), null at the end. */
function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let done = false;
  return {
    async next(): Promise<unknown> {
      for (;;) {
        const i = buf.indexOf('\n\n');
        if (i >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          assert.ok(ev.startsWith('data: '), `an SSE event starts with 'data: ': ${ev}`);
          const d = ev.slice(6);
          return d === '[DONE]' ? d : JSON.parse(d);
        }
        if (done) { assert.equal(buf, '', 'no partial event at the end of the stream'); return null; }
        const r = await reader.read();
        if (r.done) done = true; else buf += dec.decode(r.value, { stream: true });
      }
    },
    async all(): Promise<unknown[]> {
      const out: unknown[] = [];
      for (let e = await this.next(); e !== null; e = await this.next()) out.push(e);
      return out;
    },
    cancel: () => reader.cancel(),
  };
}

type Chunk = { choices: Array<{ text?: string; delta?: { content?: string; role?: string }; finish_reason: string | null }>; error?: { code: string } };

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

test('serve: completions and chat, streaming and not, greedy streams equal the whole response; chat template applied', async () => {
  await withServer({}, async (url) => {
    const req = { prompt: 'Hello, world', max_tokens: 10, temperature: 0 };
    const r = await post(url, '/v1/completions', req);
    assert.equal(r.status, 200);
    const body = await r.json() as { object: string; model: string; choices: Array<{ text: string; finish_reason: string }>; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } };
    assert.equal(body.object, 'text_completion');
    assert.equal(body.model, 'tiny');
    assert.equal(body.usage.prompt_tokens, tok.encode('Hello, world', { addSpecialTokens: true }).length);
    assert.ok(body.choices[0]!.finish_reason === 'length' || body.choices[0]!.finish_reason === 'stop');
    if (body.choices[0]!.finish_reason === 'length') assert.equal(body.usage.completion_tokens, 10);

    const sr = await post(url, '/v1/completions', { ...req, stream: true });
    assert.equal(sr.status, 200);
    assert.match(sr.headers.get('content-type')!, /text\/event-stream/);
    const events = await sseReader(sr).all();
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1) as Chunk[];
    assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, body.choices[0]!.finish_reason);
    assert.equal(chunks.map((c) => c.choices[0]!.text).join(''), body.choices[0]!.text);

    // chat: the template's text, as token ids, through /v1/completions gives the same greedy answer
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }];
    const templ = tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true }));
    const c = await post(url, '/v1/chat/completions', { messages, max_tokens: 8, temperature: 0 });
    assert.equal(c.status, 200);
    const cb = await c.json() as { object: string; choices: Array<{ message: { role: string; content: string }; finish_reason: string }>; usage: { prompt_tokens: number } };
    assert.equal(cb.object, 'chat.completion');
    assert.equal(cb.usage.prompt_tokens, templ.length);
    assert.equal(cb.choices[0]!.message.role, 'assistant');
    const viaIds = await (await post(url, '/v1/completions', { prompt: Array.from(templ), max_tokens: 8, temperature: 0 })).json() as { choices: Array<{ text: string }> };
    assert.equal(cb.choices[0]!.message.content, viaIds.choices[0]!.text);
    const cs = await sseReader(await post(url, '/v1/chat/completions', { messages, max_tokens: 8, temperature: 0, stream: true })).all();
    const cc = cs.slice(0, -1) as Chunk[];
    assert.equal(cc[0]!.choices[0]!.delta!.role, 'assistant');
    assert.equal(cc.map((x) => x.choices[0]!.delta!.content ?? '').join(''), cb.choices[0]!.message.content);
    assert.equal(cc.at(-1)!.choices[0]!.finish_reason, cb.choices[0]!.finish_reason);

    // seeded sampling repeats
    const sampled = { prompt: 'abc', max_tokens: 8, temperature: 1, top_k: 20, top_p: 0.9, seed: 42 };
    const s1 = await (await post(url, '/v1/completions', sampled)).json() as { choices: Array<{ text: string }> };
    const s2 = await (await post(url, '/v1/completions', sampled)).json() as { choices: Array<{ text: string }> };
    assert.equal(s1.choices[0]!.text, s2.choices[0]!.text);
  });
});

test('serve: stop sequences cut the output, streaming and not', async () => {
  await withServer({}, async (url) => {
    const base = { prompt: 'The quick brown fox', max_tokens: 24, temperature: 0 };
    const full = (await (await post(url, '/v1/completions', base)).json() as { choices: Array<{ text: string }> }).choices[0]!.text;
    assert.ok(full.length >= 6, `need some text to cut, got ${JSON.stringify(full)}`);
    const stop = full.slice(3, 5);
    const want = full.slice(0, full.indexOf(stop));
    const r = await (await post(url, '/v1/completions', { ...base, stop: [stop, '\u0000never'] })).json() as { choices: Array<{ text: string; finish_reason: string }> };
    assert.equal(r.choices[0]!.text, want);
    assert.equal(r.choices[0]!.finish_reason, 'stop');
    const ev = (await sseReader(await post(url, '/v1/completions', { ...base, stop, stream: true })).all()).slice(0, -1) as Chunk[];
    assert.equal(ev.map((c) => c.choices[0]!.text).join(''), want);
    assert.equal(ev.at(-1)!.choices[0]!.finish_reason, 'stop');
  });
});

test('serve: bad JSON, bad fields (400 naming the field), over-long prompts, unknown model and routes, body limit', async () => {
  await withServer({ bodyLimit: 4096 }, async (url) => {
    const err = async (r: Response, status: number, param: string | null) => {
      assert.equal(r.status, status);
      const b = await r.json() as { error: { message: string; type: string; param: string | null } };
      assert.equal(typeof b.error.message, 'string');
      assert.equal(b.error.param, param, b.error.message);
      return b.error;
    };
    assert.match((await err(await post(url, '/v1/completions', '{"prompt": '), 400, null)).message, /JSON/);
    await err(await post(url, '/v1/completions', '[1, 2]'), 400, null);
    await err(await post(url, '/v1/completions', { max_tokens: 3 }), 400, 'prompt');
    await err(await post(url, '/v1/completions', { prompt: 'a', temperature: -1 }), 400, 'temperature');
    await err(await post(url, '/v1/completions', { prompt: 'a', max_tokens: 'many' }), 400, 'max_tokens');
    await err(await post(url, '/v1/completions', { prompt: 'a', top_p: 0 }), 400, 'top_p');
    await err(await post(url, '/v1/completions', { prompt: 'a', stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'stop');
    await err(await post(url, '/v1/completions', { prompt: 'a', n: 2 }), 400, 'n');
    await err(await post(url, '/v1/completions', { prompt: ['a', 'b'] }), 400, 'prompt');
    await err(await post(url, '/v1/chat/completions', { messages: [] }), 400, 'messages');
    await err(await post(url, '/v1/chat/completions', { messages: [{ role: 'robot', content: 'x' }] }), 400, 'messages.0.role');
    await err(await post(url, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 0 }), 400, 'max_completion_tokens');
    // context 128: a 200-token prompt, and a prompt plus max_tokens beyond it
    assert.match((await err(await post(url, '/v1/completions', { prompt: 'x'.repeat(200) }), 400, 'prompt')).message, /context is 128/);
    assert.match((await err(await post(url, '/v1/completions', { prompt: 'x'.repeat(100), max_tokens: 50 }), 400, 'max_tokens')).message, /at most 28/);
    await err(await post(url, '/v1/completions', { prompt: [1, 99999] }), 400, 'prompt');
    assert.equal((await err(await post(url, '/v1/completions', { prompt: 'a', model: 'gpt-4' }), 404, 'model') as { code?: string }).code, 'model_not_found');
    await err(await post(url, '/v1/completions', { prompt: 'x'.repeat(5000) }), 413, null);
    await err(await fetch(`${url}/v1/nothing`), 404, null);
    const models = await (await fetch(`${url}/v1/models`)).json() as { data: Array<{ id: string; max_model_len: number }> };
    assert.deepEqual(models.data.map((m) => [m.id, m.max_model_len]), [['tiny', 128]]);
    assert.deepEqual(await (await fetch(`${url}/health`)).json(), { status: 'ok' });
  });
});

test('serve: a request past the request timeout ends with 504 (or a timeout error event when streaming) and frees its slot', async () => {
  // 120 tokens (no end-of-sequence stop) cannot be done in 1 ms; with 30 ms a fast AVX-512 machine
  // finished the request before its deadline (a clean-clone CI run got 200)
  await withServer({ requestTimeoutMs: 1 }, async (url, s) => {
    const r = await post(url, '/v1/completions', { prompt: 'slow', max_tokens: 120, temperature: 0, ignore_eos: true });
    assert.equal(r.status, 504);
    assert.equal((await r.json() as { error: { code: string } }).error.code, 'timeout');
    const ev = await sseReader(await post(url, '/v1/completions', { prompt: 'slow', max_tokens: 120, temperature: 0, ignore_eos: true, stream: true })).all();
    assert.equal(ev.at(-1), '[DONE]');
    assert.equal((ev.at(-2) as Chunk).error?.code, 'timeout');
    await until(() => s.scheduler.freeSlotCount === 2, 'slots freed');
  });
});

test('serve: queue full gives 429 with Retry-After; a client that disconnects mid-stream frees its slot', async () => {
  await withServer({ maxBatch: 1, maxQueue: 1 }, async (url, s) => {
    const ac = new AbortController();
    const a = sseReader(await post(url, '/v1/completions', { prompt: 'a', max_tokens: 120, temperature: 0, stream: true }, ac.signal));
    assert.ok(((await a.next()) as Chunk).choices); // A is running
    const bPromise = post(url, '/v1/completions', { prompt: 'b', max_tokens: 2, temperature: 0 });
    await until(() => s.scheduler.queueDepth === 1, 'B queued');
    const c = await post(url, '/v1/completions', { prompt: 'c', max_tokens: 2 });
    assert.equal(c.status, 429);
    assert.equal(c.headers.get('retry-after'), '1');
    assert.equal((await c.json() as { error: { code: string } }).error.code, 'queue_full');
    ac.abort();
    await a.cancel().catch(() => undefined);
    const b = await bPromise; // B got A's slot once A was cancelled
    assert.equal(b.status, 200);
    await until(() => s.scheduler.freeSlotCount === 1 && s.scheduler.runningCount === 0, 'slot freed');
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /moe_requests_total\{endpoint="completions",outcome="cancelled"\} 1/);
    assert.match(metrics, /moe_requests_total\{endpoint="completions",outcome="rejected_queue_full"\} 1/);
    assert.match(metrics, /moe_expert_tokens_total\{layer="0",expert="\d+"\} \d+/);
    assert.match(metrics, /moe_time_to_first_token_seconds_count \d+/);
    assert.match(metrics, /moe_batch_size_count \d+/);
    assert.match(metrics, /moe_free_kv_slots 1/);
  });
});

test('serve: shutdown with requests in flight ends every stream properly and refuses new requests', async () => {
  const s = new ModelServer({ model: lm.model, tokenizer: tok, modelName: 'tiny', maxBatch: 2, maxQueue: 2, contextLength: 128 });
  const url = await s.listen(0);
  const streams = await Promise.all([0, 1].map(async (i) => {
    const r = sseReader(await post(url, '/v1/completions', { prompt: `p${i}`, max_tokens: 120, temperature: 0, stream: true }));
    await r.next();
    return r;
  }));
  const down = s.shutdown(200);
  const late = await post(url, '/v1/completions', { prompt: 'late', max_tokens: 2 }).then((r) => r.status, () => 'refused');
  assert.ok(late === 503 || late === 'refused', `a request during shutdown: ${late}`);
  for (const r of streams) {
    const ev = await r.all();
    assert.equal(ev.at(-1), '[DONE]');
    const last = ev.at(-2) as Chunk;
    assert.ok(last.error?.code === 'shutdown' || last.choices?.[0]?.finish_reason, `stream ends with a finish or a shutdown error: ${JSON.stringify(last)}`);
  }
  await down;
  assert.equal(s.scheduler.freeSlotCount, 2);
  await assert.rejects(fetch(`${url}/health`));
});

test('serve: bounded load (8 clients x 3 requests): only 429s as errors, every response complete, slots free after', async (t) => {
  await withServer({ maxBatch: 4, maxQueue: 2 }, async (url, s) => {
    let ok = 0;
    let rejected = 0;
    let peakRss = process.memoryUsage().rss;
    const client = async (c: number) => {
      for (let k = 0; k < 3; k++) {
        const stream = (c + k) % 2 === 0;
        const r = await post(url, '/v1/completions', { prompt: `client ${c} request ${k}`, max_tokens: 8, temperature: 0, stream });
        peakRss = Math.max(peakRss, process.memoryUsage().rss);
        if (r.status === 429) { rejected++; await r.body?.cancel(); continue; }
        assert.equal(r.status, 200);
        if (stream) {
          const ev = await sseReader(r).all();
          assert.equal(ev.at(-1), '[DONE]');
          assert.ok((ev.at(-2) as Chunk).choices[0]!.finish_reason);
        } else {
          const b = await r.json() as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
          assert.ok(b.choices[0]!.finish_reason === 'stop' || b.usage.completion_tokens === 8);
        }
        ok++;
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, c) => client(c)));
    assert.equal(ok + rejected, 24);
    // the first 6 requests always fit (4 running + 2 queued)
    assert.ok(ok >= 6, `at least the first wave is served (ok ${ok}, 429 ${rejected})`);
    await until(() => s.scheduler.freeSlotCount === 4 && !s.scheduler.hasWork(), 'all slots free');
    t.diagnostic(`load: ${ok} served, ${rejected} rejected with 429, peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB`);
  });
});

test('moe serve CLI: prints the URL, serves, and exits 0 on SIGTERM after finishing the in-flight stream', async () => {
  const child = spawn(process.execPath, [MAIN, 'serve', '--model', join(root, 'tiny'), '--port', '0', '--ctx', '64', '--max-batch', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let errText = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { errText += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    await until(() => /http:\/\/127\.0\.0\.1:\d+/.test(out) || child.exitCode !== null, 'the server URL');
    const url = /http:\/\/127\.0\.0\.1:\d+/.exec(out)?.[0];
    assert.ok(url, `no URL printed: ${out} ${errText}`);
    const r = sseReader(await post(url, '/v1/completions', { prompt: 'hi', max_tokens: 30, temperature: 0, stream: true }));
    await r.next();
    child.kill('SIGTERM');
    const ev = await r.all();
    assert.equal(ev.at(-1), '[DONE]');
    assert.equal((ev.at(-2) as Chunk).choices[0]!.finish_reason, 'length', 'the in-flight request finished within the grace period');
    assert.equal(await exited, 0, errText);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
