// The dashboard page in a real browser (Debian chromium via puppeteer-core): charts render, a live update arrives, a screenshot is saved.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DashboardServer } from '../src/dashboard/server.js';
import { findChromium } from './dashboard-chromium.js';

// the callbacks below run in the page; tsconfig has no DOM lib (adding it would change every file's globals)
declare const document: any;
declare const window: any;
type HTMLCanvasElement = any;

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/dashboard-run', import.meta.url));
/** A real quickstart (Soft MoE, E = 16) run of 12 steps: overlaid on the first, it logs combineEntropy instead of router stats. */
const SOFT_FIXTURE = fileURLToPath(new URL('../../test/fixtures/dashboard-run-softmoe', import.meta.url));
/** Git-ignored (.gitignore /test-artifacts/): screenshots a person can look at after the run. */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts', import.meta.url));


const chromium = findChromium();
const skip = chromium === null ? 'chromium is not installed (apt-get install chromium; scripts/setup.sh installs it)' : false;
if (skip) console.log(`# dashboard browser test skipped: ${skip}`);

test('dashboard page in headless chromium: charts render, live update and heatmap arrive, screenshot saved', { skip, timeout: 60_000 }, async () => {
  const puppeteer = (await import('puppeteer-core')).default;
  const root = mkdtempSync(join(tmpdir(), 'moe-dash-browser-'));
  const dir = join(root, 'vit-moe-run');
  cpSync(FIXTURE, dir, { recursive: true });
  const soft = join(root, 'softmoe-run');
  cpSync(SOFT_FIXTURE, soft, { recursive: true });
  const server = new DashboardServer({ runs: [dir, soft], tail: { intervalMs: 50 } });
  const url = await server.listen(0);
  const browser = await puppeteer.launch({
    executablePath: chromium!,
    headless: true,
    // root in containers needs --no-sandbox; no GPU here
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('requestfailed', (r) => { if (!r.url().endsWith('/events') && !r.url().includes('/events?')) errors.push(`request failed: ${r.url()}`); });
    await page.setViewport({ width: 1200, height: 1400 });
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live', { timeout: 10_000 });

    // every panel the fixture has data for is drawn: loss, accuracy, entropy (with log E), drop, load CV, dead, aux
    const panels = await page.$$eval('#charts .panel:not([hidden])', (els) => els.map((e) => e.id));
    assert.deepEqual(panels.sort(), ['panel-accuracy', 'panel-aux', 'panel-dead', 'panel-drop', 'panel-entropy', 'panel-loadCV', 'panel-loss'].sort());
    // non-empty canvases: pixels in the first run's colour (#1f77b4) are series lines, not just axes
    const lineries = await page.$$eval('#charts .panel canvas', (cs) => cs.map((c) => {
      const canvas = c as HTMLCanvasElement;
      const d = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      let ink = 0;
      let blue = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3]! > 0) ink++;
        if (Math.abs(d[i]! - 31) < 12 && Math.abs(d[i + 1]! - 119) < 12 && Math.abs(d[i + 2]! - 180) < 12 && d[i + 3]! > 200) blue++;
      }
      return { ink, blue };
    }));
    assert.equal(lineries.length, 7);
    for (const [i, l] of lineries.entries()) assert.ok(l.ink > 1000 && l.blue > 20, `canvas ${i} draws lines: ${JSON.stringify(l)}`);
    const legend = await page.$eval('#panel-entropy', (e) => e.textContent ?? '');
    assert.match(legend, /vit-moe-run log E = 2\.079/);
    assert.match(legend, /softmoe-run H\(Csum share\).*softmoe-run log E = 2\.773/);
    // the second run is overlaid in its own colour (#d62728) on the loss chart
    const red = await page.$eval('#panel-loss canvas', (c) => {
      const d = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i]! - 214) < 12 && Math.abs(d[i + 1]! - 39) < 12 && Math.abs(d[i + 2]! - 40) < 12 && d[i + 3]! > 200) n++;
      return n;
    });
    assert.ok(red > 20, `the second run's loss line is drawn (${red} pixels)`);
    assert.equal(await page.$('#heatmaps canvas'), null, 'the fixture logs no per-expert load: no heatmap');
    assert.match(await page.$eval('#runs', (e) => e.textContent ?? ''), /vit-moe-run \(vit-moe, E = 8\): 12 steps/);

    // live: two steps carrying per-expert load arrive over SSE; the heatmap appears with one column per step
    const load = [0, 16, 8, 8, 8, 8, 8, 8]; // mean 8: expert 0 idle (blue), expert 1 twice the mean (red)
    appendFileSync(join(dir, 'metrics.jsonl'), `${JSON.stringify({ type: 'step', step: 13, loss: 1.6, accuracy: 0.5, entropy: 1.5, entropyOfMean: 1.9, tokensPerExpert: load })}\n`);
    appendFileSync(join(dir, 'metrics.jsonl'), `${JSON.stringify({ type: 'step', step: 14, loss: 1.55, accuracy: 0.52, entropy: 1.4, entropyOfMean: 1.9, 'block0.entropy': 1.3, tokensPerExpert: load })}\n`);
    await page.waitForFunction(() => window.__dashboard.steps(0) === 14 && document.querySelector('#heatmaps canvas') !== null, { timeout: 10_000 });
    await page.waitForFunction(() => document.getElementById('runs')!.textContent!.includes('14 steps'), { timeout: 5_000 });
    assert.ok(await page.evaluate(() => window.__dashboard.updates) >= 1);
    // a per-layer entropy key gets its own line on the entropy chart
    assert.match(await page.$eval('#panel-entropy', (e) => e.textContent ?? ''), /block0\.H\(G\) per token/);
    const heat = await page.$eval('#heatmaps canvas', (c) => {
      const canvas = c as HTMLCanvasElement;
      const px = (x: number, y: number) => Array.from(canvas.getContext('2d')!.getImageData(x, y, 1, 1).data.slice(0, 3));
      return { w: canvas.width, h: canvas.height, idle: px(1, 0), hot: px(1, 1), even: px(1, 2) };
    });
    assert.equal(heat.w, 2);
    assert.equal(heat.h, 8);
    assert.deepEqual(heat.idle, [8, 48, 107]);
    assert.deepEqual(heat.hot, [165, 0, 38]);
    assert.deepEqual(heat.even, [247, 247, 247]);

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, 'screenshot written');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.close();
    rmSync(root, { recursive: true, force: true });
  }
});
