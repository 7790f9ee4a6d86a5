// moe dashboard: the server over a real run's log via HTTP and SSE (appends, partial lines, replacement, disconnect), the tail, bad run dirs, and the page in headless chromium.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { DashboardServer } from '../src/dashboard/server.js';
import { openRuns } from '../src/dashboard/runs.js';
import { MetricsTail, readLog } from '../src/dashboard/tail.js';
import type { MetricsRecord } from '../src/dashboard/runs.js';

/** 15 lines of a real `moe train` run (vit-moe, E = 8, 12 steps, 2 val evals, 1 test eval). */
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/dashboard-run', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const FAST = { intervalMs: 30 };

/** A writable copy of the fixture run in a fresh temp dir. */
function fixtureRun(name = 'run'): { root: string; dir: string } {
  const root = mkdtempSync(join(tmpdir(), 'moe-dash-'));
  const dir = join(root, name);
  cpSync(FIXTURE, dir, { recursive: true });
  return { root, dir };
}

const step = (n: number, extra: Record<string, unknown> = {}): string => `${JSON.stringify({ type: 'step', step: n, epoch: 2, lr: 0.001, loss: 1.5, accuracy: 0.5, entropy: 1.9, entropyOfMean: 2.0, ...extra })}\n`;

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** An SSE client over node:http: collects events; next() waits for one matching a predicate. */
class SseClient {
  readonly events: { event: string; data: any }[] = [];
  private buf = '';
  private waiters: (() => void)[] = [];
  private res: IncomingMessage | null = null;
  private req;
  constructor(url: string) {
    this.req = get(url, (res) => {
      this.res = res;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        this.buf += chunk;
        let i: number;
        while ((i = this.buf.indexOf('\n\n')) >= 0) {
          const block = this.buf.slice(0, i);
          this.buf = this.buf.slice(i + 2);
          const ev = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (ev && data) this.events.push({ event: ev, data: JSON.parse(data) });
        }
        for (const w of this.waiters.splice(0)) w();
      });
    });
    this.req.on('error', () => { /* closed by the test */ });
  }
  get status(): number | undefined { return this.res?.statusCode; }
  async next(pred: (e: { event: string; data: any }) => boolean, what: string, timeoutMs = 5000): Promise<{ event: string; data: any }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.find(pred);
      if (hit) { this.events.splice(this.events.indexOf(hit), 1); return hit; }
      if (Date.now() > deadline) throw new Error(`no SSE event ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.events).slice(0, 300)}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50); });
    }
  }
  close(): void { this.req.destroy(); }
}

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('dashboard routes over a real run: page, health, assets, /api/runs', async () => {
  const { root, dir } = fixtureRun();
  const server = new DashboardServer({ runs: [dir], tail: FAST });
  const url = await server.listen(0);
  try {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await getJson(`${url}/health`);
    assert.deepEqual(health, { status: 200, body: { status: 'ok', runs: 1 } });
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const html = await page.text();
    for (const src of ['/assets/uplot.js', '/assets/dashboard.js', '/assets/uplot.css', '/assets/dashboard.css']) {
      assert.ok(html.includes(src), `page links ${src}`);
      const a = await fetch(`${url}${src}`);
      assert.equal(a.status, 200, src);
      assert.ok((await a.text()).length > 100, `${src} has content`);
    }
    assert.ok((await (await fetch(`${url}/assets/uplot.js`)).text()).includes('uPlot'), 'uPlot served from node_modules');
    assert.equal((await fetch(`${url}/assets/..%2Fserver.js`)).status, 404);

    const { status, body } = await getJson(`${url}/api/runs`);
    assert.equal(status, 200);
    assert.equal(body.runs.length, 1);
    const run = body.runs[0];
    assert.equal(run.name, 'run');
    assert.equal(run.modelType, 'vit-moe');
    assert.equal(run.numExperts, 8);
    assert.ok(Math.abs(run.logE - Math.log(8)) < 1e-12);
    const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n');
    assert.equal(run.records.length, lines.length);
    assert.deepEqual(run.records, lines.map((l) => JSON.parse(l)));
    assert.equal(run.records.filter((r: MetricsRecord) => r.type === 'step').length, 12);
    assert.equal(run.bad, 0);
    assert.match(run.position, new RegExp(`^\\d+:${Buffer.byteLength(lines.join('\n') + '\n')}$`));
  } finally {
    await server.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('dashboard SSE: an appended line arrives once, a partial line waits for its newline, replacement resets, disconnect cleans up', async () => {
  const { root, dir } = fixtureRun();
  const log = join(dir, 'metrics.jsonl');
  const server = new DashboardServer({ runs: [dir], tail: FAST });
  const url = await server.listen(0);
  try {
    const { body } = await getJson(`${url}/api/runs`);
    const sse = new SseClient(`${url}/events?from=${body.runs[0].position}`);
    // the server registers the stream before its headers reach the client: wait for both
    await until(() => server.openStreams === 1 && sse.status !== undefined, 'the stream to open');
    assert.equal(sse.status, 200);

    appendFileSync(log, step(13));
    const first = await sse.next((e) => e.event === 'records', 'for step 13');
    assert.deepEqual(first.data.records.map((r: MetricsRecord) => r['step']), [13], 'only the new line, not the snapshot again');
    assert.equal(first.data.run, 0);

    // half a line: nothing is sent while the writer is mid-line
    const line = step(14, { note: 'ü€ split' });
    const bytes = Buffer.from(line);
    const cut = bytes.indexOf(Buffer.from('€')) + 1; // inside a multi-byte character
    appendFileSync(log, bytes.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 200)); // several polls
    assert.equal(sse.events.filter((e) => e.event === 'records').length, 0, 'no record from a partial line');
    appendFileSync(log, bytes.subarray(cut));
    const second = await sse.next((e) => e.event === 'records', 'for step 14');
    assert.deepEqual(second.data.records, [JSON.parse(line)], 'the completed line arrives whole and decoded');

    // a foreign line is counted, not fatal
    appendFileSync(log, 'not json\n');
    const bad = await sse.next((e) => e.event === 'bad', 'for the bad line');
    assert.equal(bad.data.count, 1);

    // replaced atomically with a shorter log (as a resume cutting the log back does)
    const tmp = join(dir, 'metrics.jsonl.tmp');
    writeFileSync(tmp, step(1) + step(2));
    renameSync(tmp, log);
    await sse.next((e) => e.event === 'reset', 'reset after replacement');
    const again = await sse.next((e) => e.event === 'records', 'records of the new file');
    assert.deepEqual(again.data.records.map((r: MetricsRecord) => r['step']), [1, 2]);
    // replaced by a longer file: only the new inode tells (its size is past what was read)
    const longer = Array.from({ length: 30 }, (_, i) => step(i + 1)).join('');
    writeFileSync(tmp, longer);
    renameSync(tmp, log);
    await sse.next((e) => e.event === 'reset', 'reset after replacement by a longer file');
    const steps: unknown[] = [];
    while (steps.length < 30) steps.push(...(await sse.next((e) => e.event === 'records', 'records of the longer file')).data.records.map((r: MetricsRecord) => r['step']));
    assert.deepEqual(steps, Array.from({ length: 30 }, (_, i) => i + 1));

    sse.close();
    await until(() => server.openStreams === 0, 'the server to drop the closed stream');
  } finally {
    await server.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('dashboard /events refuses malformed positions; two runs get separate streams', async () => {
  const { root, dir } = fixtureRun('a');
  const b = join(root, 'b');
  cpSync(FIXTURE, b, { recursive: true });
  const server = new DashboardServer({ runs: [dir, b], tail: FAST });
  const url = await server.listen(0);
  try {
    assert.equal((await getJson(`${url}/events?from=1:2`)).status, 400, 'one position for two runs');
    assert.equal((await getJson(`${url}/events?from=x,y`)).status, 400);
    const { body } = await getJson(`${url}/api/runs`);
    assert.deepEqual(body.runs.map((r: { name: string }) => r.name), ['a', 'b']);
    const sse = new SseClient(`${url}/events?from=${body.runs.map((r: { position: string }) => r.position).join(',')}`);
    // the server registers the stream before its headers reach the client: wait for both
    await until(() => server.openStreams === 1 && sse.status !== undefined, 'the stream to open');
    appendFileSync(join(b, 'metrics.jsonl'), step(13));
    const ev = await sse.next((e) => e.event === 'records', 'for run b');
    assert.equal(ev.data.run, 1);
    sse.close();
  } finally {
    await server.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test('dashboard refuses bad run directories by name', () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-dash-bad-'));
  try {
    const file = join(root, 'file');
    writeFileSync(file, 'x');
    const empty = join(root, 'empty');
    mkdirSync(empty);
    const broken = join(root, 'broken');
    mkdirSync(broken);
    writeFileSync(join(broken, 'config.json'), '{ not json');
    assert.throws(() => new DashboardServer({ runs: [] }), /at least one run directory/);
    assert.throws(() => new DashboardServer({ runs: [join(root, 'missing')] }), (e: Error) => e.message.includes(join(root, 'missing')) && /does not exist/.test(e.message));
    assert.throws(() => new DashboardServer({ runs: [file] }), /file is not a directory/);
    assert.throws(() => new DashboardServer({ runs: [FIXTURE, empty] }), /empty has no config\.json/);
    assert.throws(() => new DashboardServer({ runs: [broken] }), /broken\/config\.json is not valid JSON/);
    // the CLI prints the same and exits non-zero without listening
    const r = spawnSync(process.execPath, [CLI, 'dashboard', join(root, 'missing'), '--port', '0'], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /missing does not exist/);
    const p = spawnSync(process.execPath, [CLI, 'dashboard', FIXTURE, '--port', '70000'], { encoding: 'utf8', timeout: 30_000 });
    assert.notEqual(p.status, 0);
    assert.match(p.stderr, /--port 70000/);
    // same base names are told apart; a run without metrics.jsonl yet is accepted (it may just have started)
    const x = join(root, 'x', 'run');
    const y = join(root, 'y', 'run');
    mkdirSync(x, { recursive: true });
    mkdirSync(y, { recursive: true });
    writeFileSync(join(x, 'config.json'), '{"model":{"type":"mmoe","numExperts":4}}');
    writeFileSync(join(y, 'config.json'), '{}');
    const runs = openRuns([x, y]);
    assert.deepEqual(runs.map((r) => [r.name, r.numExperts]), [['run', 4], ['run#2', null]]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('tail: a backlog larger than a chunk arrives whole over several polls; an endless line is dropped, not buffered', async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-dash-tail-'));
  try {
    const file = join(root, 'metrics.jsonl');
    const text = Array.from({ length: 50 }, (_, i) => step(i + 1, { s: 'é'.repeat(i % 7) })).join('');
    writeFileSync(file, text);
    const got: MetricsRecord[] = [];
    let resets = 0;
    let bad = 0;
    const tail = new MetricsTail(file, null, { records: (r) => got.push(...r), reset: () => resets++, bad: (n) => { bad += n; } }, { chunkBytes: 37, maxLineBytes: 400 });
    while (tail.bytesRead < Buffer.byteLength(text)) await tail.poll();
    assert.deepEqual(got.map((r) => r['step']), Array.from({ length: 50 }, (_, i) => i + 1));
    assert.equal(resets, 0);
    appendFileSync(file, 'x'.repeat(1000));
    for (let i = 0; i < 40; i++) await tail.poll();
    assert.ok(bad >= 1, 'the over-long unterminated line counts as bad');
    tail.stop();
    // readLog of a missing file: nothing, no throw
    const none = await readLog(join(root, 'absent.jsonl'));
    assert.deepEqual(none.records, []);
    // truncation (size below what was read) is a reset too
    const t2 = new MetricsTail(file, { ino: (await import('node:fs')).statSync(file).ino, offset: 10 ** 6 }, { records: (r) => got.push(...r), reset: () => resets++ });
    await t2.poll();
    assert.equal(resets, 1);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('moe dashboard CLI: prints the URL on stdout, serves /health, exits 0 on SIGTERM', async () => {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [CLI, 'dashboard', FIXTURE, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c: string) => { out += c; });
    await until(() => /http:\/\/127\.0\.0\.1:\d+/.test(out), 'the URL on stdout', 20_000);
    const url = /http:\/\/127\.0\.0\.1:\d+/.exec(out)![0];
    assert.match(out, /^moe dashboard: dashboard-run on http/);
    assert.deepEqual(await getJson(`${url}/health`), { status: 200, body: { status: 'ok', runs: 1 } });
    const code = new Promise<number | null>((r) => child.on('exit', r));
    child.kill('SIGTERM');
    assert.equal(await code, 0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
