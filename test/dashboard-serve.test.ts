// The dashboard's serve view: parsing moe serve's /metrics (written by the server's own ServeMetrics), and the live view in headless chromium.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { ServeMetrics } from '../src/serve/metrics.js';
import { parsePrometheus, summarise } from '../src/dashboard/prometheus.js';
import { DashboardServer } from '../src/dashboard/server.js';
import { findChromium, launchChromium } from './dashboard-chromium.js';

declare const document: any;
declare const window: any;

/** The real metrics class of moe serve over a stand-in scheduler and expert cache (their counters are what the view reads). */
function serveMetrics(withCache: boolean) {
  const scheduler = { queueDepth: 1, runningCount: 2, freeSlotCount: 3 };
  const cacheStats = { layers: [{ layer: 0, hits: 0, misses: 0, prefetched: 0, bytesLoaded: 0 }, { layer: 1, hits: 0, misses: 0, prefetched: 0, bytesLoaded: 0 }] };
  const cache = { stats: () => cacheStats, residentBytes: 1024 };
  const m = new ServeMetrics(scheduler as any, withCache ? { expertCache: cache as any } : {});
  const hook = m.routingHook();
  return { m, hook, cacheStats };
}

async function listen(handler: (body: () => Promise<string>) => Server): Promise<{ url: string; server: Server }> {
  const server = handler(async () => '');
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address() as { port: number };
  return { url: `http://127.0.0.1:${a.port}`, server };
}

test('parsePrometheus reads moe serve\'s /metrics: expert tokens per layer and expert, cache hits and misses', async () => {
  const { m, hook, cacheStats } = serveMetrics(true);
  hook(0, Int32Array.from([0, 1, 1, 3]), new Float32Array(4));
  hook(1, Int32Array.from([2, 2]), new Float32Array(2));
  cacheStats.layers[0]!.hits = 5;
  cacheStats.layers[0]!.misses = 2;
  m.generationTokens.inc(7);
  const s = summarise(parsePrometheus(await m.registry.metrics()));
  assert.deepEqual(s.expertTokens, { 0: [1, 2, 0, 1], 1: [0, 0, 2] });
  assert.deepEqual(s.cache, { 0: { hits: 5, misses: 2 }, 1: { hits: 0, misses: 0 } });
  assert.equal(s.generationTokens, 7);
  assert.equal(s.runningSequences, 2);
  assert.equal(s.queueDepth, 1);
  assert.deepEqual(s.missing, []);
  // without --expert-memory there are no cache counters: the view says so
  const bare = summarise(parsePrometheus(await serveMetrics(false).m.registry.metrics()));
  assert.deepEqual(bare.cache, {});
  assert.equal(bare.missing.length, 2);
  assert.match(bare.missing.join(' '), /without --expert-memory/);
});

test('parsePrometheus: escapes, special values, timestamps; a malformed line is named', () => {
  const s = parsePrometheus('# HELP x y\nx{a="q\\"uote",b="back\\\\slash\\n"} +Inf 1700000000\ny -3.5e2\nz NaN\n\n');
  assert.deepEqual(s[0], { name: 'x', labels: { a: 'q"uote', b: 'back\\slash\n' }, value: Infinity });
  assert.equal(s[1]!.value, -350);
  assert.ok(Number.isNaN(s[2]!.value));
  assert.throws(() => parsePrometheus('ok 1\nbad{a="x} 1'), /metrics line 2: unterminated label value/);
  assert.throws(() => parsePrometheus('v abc'), /metrics line 1: 'abc' is not a number/);
  assert.throws(() => parsePrometheus('{a="b"} 1'), /line 1: expected a metric name/);
  assert.throws(() => new DashboardServer({ runs: [], serve: 'not a url' }), /--serve not a url is not a URL/);
  assert.throws(() => new DashboardServer({ runs: [] }), /at least one run directory/);
});

const chromium = findChromium();
const skip = chromium === null ? 'chromium is not installed (apt-get install chromium; scripts/setup.sh installs it)' : false;
if (skip) console.log(`# dashboard serve browser test skipped: ${skip}`);

test('serve view in headless chromium: live expert load heatmap and cache hit rate from /metrics', { skip, timeout: 60_000 }, async () => {
  const { m, hook, cacheStats } = serveMetrics(true);
  const { url: serveUrl, server: fake } = await listen(() => createServer((req, res) => {
    if (req.url !== '/metrics') { res.statusCode = 404; res.end(); return; }
    m.registry.metrics().then((t) => { res.setHeader('content-type', m.registry.contentType); res.end(t); }, () => { res.statusCode = 500; res.end(); });
  }));
  const dash = new DashboardServer({ runs: [], serve: serveUrl });
  const url = await dash.listen(0);
  const browser = await launchChromium(chromium!);
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.setViewport({ width: 1000, height: 1000 });
    await page.goto(`${url}/?servePollMs=100`, { waitUntil: 'load' });
    await page.waitForFunction(() => window.__serve && window.__serve.polls >= 1, { timeout: 10_000 });
    // traffic between polls: layer 0 sends everything to expert 2, layer 1 spreads evenly; the cache hits 3 of 4
    for (let round = 0; round < 3; round++) {
      const before = await page.evaluate(() => window.__serve.polls);
      hook(0, Int32Array.from([2, 2, 2, 2]), new Float32Array(4));
      hook(1, Int32Array.from([0, 1, 2, 3]), new Float32Array(4));
      cacheStats.layers[0]!.hits += 3;
      cacheStats.layers[0]!.misses += 1;
      await page.waitForFunction((b: number) => window.__serve.polls >= b + 2, { timeout: 10_000 }, before);
    }
    const heat = await page.$eval('#heat-s-layer_0_tokensPerExpert canvas', (c: any) => {
      const px = (x: number, y: number) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
      return { w: c.width, h: c.height, hot: px(0, 2), idle: px(0, 0) };
    });
    assert.equal(heat.w, 3, 'one column per poll interval with traffic');
    assert.equal(heat.h, 3, 'experts 0..2 of layer 0 have been counted');
    assert.deepEqual(heat.hot, [165, 0, 38]);
    assert.deepEqual(heat.idle, [8, 48, 107]);
    const even = await page.$eval('#heat-s-layer_1_tokensPerExpert canvas', (c: any) => Array.from(c.getContext('2d').getImageData(0, 1, 1, 1).data.slice(0, 3)));
    assert.deepEqual(even, [247, 247, 247]);
    const text = await page.$eval('#serve', (e) => e.textContent ?? '');
    assert.match(text, /layer 0: 0:0% 1:0% 2:100%/);
    assert.match(text, /layer 0: 9 hits, 3 misses \(75\.0% hits\)/);
    assert.match(text, /2 running, 1 queued/);
    assert.match(text, /layer 0 hit rate/);
    assert.equal(await page.$eval('#serve .missing', (e) => e.textContent), '');
    // the server goes away: the view says so and keeps polling
    await new Promise<void>((r) => fake.close(() => r()));
    fake.closeAllConnections();
    await page.waitForFunction(() => window.__serve.error !== null, { timeout: 10_000 });
    assert.match(await page.$eval('#serve .info', (e) => e.textContent ?? ''), /not reachable: .*serve metrics http:\/\/127\.0\.0\.1:\d+\/metrics/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await dash.close();
    fake.close();
  }
});
