// The browser build (scripts/build-browser.mjs) and the demo page (examples/browser/) in headless chromium: its outputs equal Node's for the same checkpoints and inputs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serializeSafetensors } from '../src/io/safetensors.js';
import { ByteLM } from '../src/models/lm.js';
import { withBackend } from '../src/kernels/registry.js';
import { buildFromCheckpoint, classify, fetchCheckpoint, generateWithExperts } from '../src/browser/index.js';
import type { SoftMoEClassifier } from '../src/models/softmoe-classifier.js';
import { loadMnistDigits } from '../src/data/mnist.js';
import { trainRun } from './dashboard-runs.js';
import { findChromium, launchChromium } from './dashboard-chromium.js';

declare const window: any;

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const chromium = findChromium();
const skip = chromium === null ? 'chromium is not installed (apt-get install chromium; scripts/setup.sh installs it)' : false;
if (skip) console.log(`# browser demo test skipped: ${skip}`);

/** A checkpoint directory as the demo fetches it: config.json ({ model }) and model.safetensors. */
function saveCheckpoint(dir: string, model: { stateDict(): Array<[string, any]> }, modelConfig: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model: modelConfig }));
  writeFileSync(join(dir, 'model.safetensors'), serializeSafetensors(model.stateDict()));
}

/** fetch over files, so Node loads the checkpoints by the same code as the page. */
const fileFetch = (async (url: string) => {
  const bytes = readFileSync(url);
  return { ok: true, status: 200, json: async () => JSON.parse(bytes.toString('utf8')), arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) };
}) as unknown as typeof fetch;

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.safetensors': 'application/octet-stream' };

test('browser demo in headless chromium: the Soft MoE classifier and the byte LM give Node\'s outputs for the same checkpoints', { skip, timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-browser-'));
  const site = join(root, 'site');
  mkdirSync(site);
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-browser.mjs'), '--out', join(site, 'moe-ts.js')], { stdio: 'pipe' });
  for (const f of ['index.html', 'demo.js']) writeFileSync(join(site, f), readFileSync(join(ROOT, 'examples', 'browser', f)));
  // a Soft MoE classifier trained for a few steps on MNIST digits, and an untrained byte LM with 4 experts
  const soft = join(site, 'checkpoints', 'softmoe');
  const trained = trainRun(join(root, 'run'), { type: 'softmoe-classifier', numExperts: 4, patch: 7 }, { steps: 6, batch: 16 });
  saveCheckpoint(soft, trained, JSON.parse(readFileSync(join(root, 'run', 'config.json'), 'utf8')).model);
  const lm = new ByteLM({ dModel: 16, layers: 2, heads: 2, maxSeqLen: 64, numExperts: 4, k: 2, dFF: 16 }, 3);
  saveCheckpoint(join(site, 'checkpoints', 'byte-lm'), lm, { type: 'byte-lm', ...lm.config });

  // Node, on the js backend (the browser build's only one): the expected outputs
  const digits = loadMnistDigits().test;
  const image = Array.from(digits.images.subarray(0, 784));
  const softCk = await fetchCheckpoint(soft, fileFetch);
  const lmCk = await fetchCheckpoint(join(site, 'checkpoints', 'byte-lm'), fileFetch);
  const expected = withBackend('js', () => ({
    cls: classify(buildFromCheckpoint(softCk) as SoftMoEClassifier, image),
    gen: generateWithExperts(buildFromCheckpoint(lmCk) as ByteLM, 'The ', 24),
  }));
  assert.equal(expected.cls.probs.length, 10);
  assert.equal(expected.cls.expertShare.length, 4);
  assert.equal(expected.gen.bytes.length, 28);
  assert.ok(expected.gen.experts.every((e) => e >= 0 && e < 4));

  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)).replace(/^\/+/, '') || 'index.html';
    const file = join(site, path);
    try {
      if (!file.startsWith(site) || !statSync(file).isFile()) throw new Error('no');
      res.setHeader('content-type', TYPES[extname(file)] ?? 'application/octet-stream');
      res.end(readFileSync(file));
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  const browser = await launchChromium(chromium!);
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.setViewport({ width: 900, height: 1100 });
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => window.demo && (window.demo.ready || window.demo.error), { timeout: 30_000 });
    assert.equal(await page.evaluate(() => window.demo.error ?? null), null);
    const got = await page.evaluate((px: number[]) => {
      const c = window.demo.classifyPixels(Float32Array.from(px));
      const g = window.demo.generate('The ', 24);
      return { cls: { probs: c.probs, expertShare: c.expertShare }, gen: { bytes: g.bytes, text: g.text, experts: g.experts } };
    }, image);
    // the same js kernels on the same V8 arithmetic: equal, not merely close
    assert.deepEqual(got.cls, expected.cls);
    assert.deepEqual(got.gen, expected.gen);
    // the page shows them: ten class bars, four expert bars, one coloured span per byte
    assert.equal(await page.$$eval('#probs > div', (d) => d.length), 10);
    assert.equal(await page.$$eval('#experts > div', (d) => d.length), 4);
    assert.equal(await page.$$eval('#text span[title]', (s) => s.length), 28);
    // drawing on the pad classifies what was drawn
    const pad = await page.$('#pad');
    const box = (await pad!.boundingBox())!;
    await page.mouse.move(box.x + 140, box.y + 60);
    await page.mouse.down();
    await page.mouse.move(box.x + 140, box.y + 220, { steps: 10 });
    await page.mouse.up();
    const probs = await page.$$eval('#probs > div', (d) => d.map((e) => e.textContent));
    assert.equal(probs.length, 10);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'browser-demo.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
    rmSync(root, { recursive: true, force: true });
  }
});
