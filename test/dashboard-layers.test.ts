// The dashboard's per-layer views in headless chromium, over runs trained in the test: load heatmaps per MoE layer, Soft MoE's Csum, per-layer lines, the expert x language matrix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DashboardServer } from '../src/dashboard/server.js';
import { trainRun } from './dashboard-runs.js';
import { findChromium, launchChromium } from './dashboard-chromium.js';

declare const document: any;
declare const window: any;

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts', import.meta.url));
const chromium = findChromium();
const skip = chromium === null ? 'chromium is not installed (apt-get install chromium; scripts/setup.sh installs it)' : false;
if (skip) console.log(`# dashboard per-layer browser test skipped: ${skip}`);

test('per-layer dashboard: load heatmaps of each MoE layer, Csum, per-layer lines and the expert x language matrix', { skip, timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'moe-dash-layers-'));
  const vit = join(root, 'vit-moe');
  const soft = join(root, 'softmoe');
  const STEPS = 40;
  trainRun(vit, { type: 'vit-moe', dModel: 32, layers: 2, heads: 2, numExperts: 8, k: 2, dFF: 32, capacityFactor: 1 }, { steps: STEPS });
  trainRun(soft, { type: 'softmoe-classifier', numExperts: 8, patch: 7 }, { steps: STEPS });
  const steps = readFileSync(join(vit, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.type === 'step');
  assert.equal(steps.length, STEPS);
  const server = new DashboardServer({ runs: [vit, soft], tail: { intervalMs: 50 } });
  const url = await server.listen(0);
  const browser = await launchChromium(chromium!);
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.setViewport({ width: 1200, height: 1400 });
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live', { timeout: 10_000 });

    // one heatmap per MoE layer of the ViT (tokens per expert), one for the Soft MoE layer (Csum per expert)
    const heats = await page.$$eval('#heatmaps .heat', (els) => els.map((e) => ({ id: e.id, title: e.querySelector('h3').textContent, w: e.querySelector('canvas').width, h: e.querySelector('canvas').height })));
    assert.deepEqual(heats.map((h) => h.id), ['heat-0-blocks_0_moe_tokensPerExpert', 'heat-0-blocks_1_moe_tokensPerExpert', 'heat-1-moe_combineSumPerExpert']);
    assert.match(heats[2]!.title, /softmoe: moe \(Soft MoE: Csum per expert\)/);
    for (const h of heats) assert.deepEqual([h.w, h.h], [STEPS, 8]);
    // orientation and colour against the log: expert e of step s is red where it got more than the mean, blue where less
    const pixels: number[][][] = await page.$eval('#heat-0-blocks_1_moe_tokensPerExpert canvas', (c: any) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const out: number[][][] = [];
      for (let x = 0; x < c.width; x++) { const col: number[][] = []; for (let y = 0; y < c.height; y++) col.push(Array.from(d.slice((y * c.width + x) * 4, (y * c.width + x) * 4 + 3))); out.push(col); }
      return out;
    });
    let checked = 0;
    steps.forEach((s, x) => {
      const load: number[] = s.moe['blocks.1.moe'].tokensPerExpert;
      const mean = load.reduce((a, b) => a + b, 0) / load.length;
      load.forEach((t, e) => {
        const [R, , B] = pixels[x]![e]!;
        if (t > 1.1 * mean) { assert.ok(R! > B!, `step ${s.step} expert ${e}: ${t} tokens > mean ${mean} is red, got ${pixels[x]![e]}`); checked++; }
        if (t < 0.9 * mean) { assert.ok(B! > R!, `step ${s.step} expert ${e}: ${t} tokens < mean ${mean} is blue, got ${pixels[x]![e]}`); checked++; }
      });
    });
    assert.ok(checked > 50, `${checked} cells off the mean checked`);

    // each layer's own lines next to the layer average
    const legend = async (id: string) => page.$eval(`#panel-${id}`, (e) => e.textContent ?? '');
    assert.match(await legend('entropy'), /vit-moe blocks\.0\.moe\.H\(G\) per token.*vit-moe blocks\.1\.moe\.H\(mean P\)/);
    assert.match(await legend('entropy'), /softmoe moe\.H\(Csum share\)/);
    assert.match(await legend('drop'), /vit-moe blocks\.0\.moe\.dropped.*vit-moe blocks\.1\.moe\.dropped/);
    assert.match(await legend('dead'), /vit-moe blocks\.1\.moe\.dead/);
    assert.match(await legend('aux'), /vit-moe blocks\.0\.moe\.loadBalance.*vit-moe blocks\.0\.moe\.zLoss/);

    // live: expert x language records arrive; the latest per layer is drawn, a malformed one says what is wrong
    assert.equal(await page.$('#languages table'), null);
    const counts = Array.from({ length: 8 }, (_, e) => [e === 0 ? 80 : 0, 10, e === 7 ? 30 : 2]); // en: all on expert 0; fr: even; zh: mostly expert 7
    const line = (r: unknown) => appendFileSync(join(vit, 'metrics.jsonl'), `${JSON.stringify(r)}\n`);
    line({ type: 'expertLanguage', step: 40, layer: 'blocks.1.moe', languages: ['en', 'fr', 'zh'], counts: counts.map((r) => r.map(() => 1)) });
    line({ type: 'expertLanguage', step: 41, layer: 'blocks.1.moe', languages: ['en', 'fr', 'zh'], counts });
    line({ kind: 'expertLanguage', step: 41, layer: 'blocks.0.moe', languages: ['en'], counts: counts.map((r) => [r[1]]) });
    line({ type: 'expertLanguage', layer: 'broken', languages: ['en', 'fr'], counts: [[1]] });
    await page.waitForFunction(() => document.querySelectorAll('#languages .lang').length === 3, { timeout: 10_000 });
    const lang = await page.$eval('#lang-0-blocks_1_moe', (e: any) => ({
      title: e.querySelector('h3').textContent,
      head: Array.from(e.querySelectorAll('tr:first-child th')).map((t: any) => t.textContent),
      rows: Array.from(e.querySelectorAll('tr')).slice(1).map((tr: any) => Array.from(tr.querySelectorAll('td')).map((td: any) => ({ text: td.textContent, bg: td.style.background }))),
    }));
    assert.equal(lang.title, 'vit-moe: blocks.1.moe at step 41');
    assert.deepEqual(lang.head, ['expert', 'en', 'fr', 'zh']);
    assert.equal(lang.rows.length, 8);
    assert.deepEqual(lang.rows.map((r: any) => r[0].text), ['100', '0', '0', '0', '0', '0', '0', '0']);
    assert.equal(lang.rows[0][0].bg, 'rgb(165, 0, 38)', 'all of en on expert 0: red');
    assert.equal(lang.rows[1][0].bg, 'rgb(8, 48, 107)', 'none of en on expert 1: dark blue');
    assert.equal(lang.rows[3][1].bg, 'rgb(247, 247, 247)', 'fr spread evenly: white');
    assert.equal(lang.rows[7][2].text, '68'); // 30 of 44
    assert.match(await page.$eval('#lang-0-broken', (e) => e.textContent ?? ''), /not shown: counts\[0\] must have 2 entries/);
    assert.match(await page.$eval('#lang-0-blocks_0_moe', (e) => e.textContent ?? ''), /expert.*en/);

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'dashboard-layers.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, 'screenshot written');
    assert.deepEqual(errors, []);
    assert.ok(await page.evaluate(() => window.__dashboard.updates) >= 1);
  } finally {
    await browser.close();
    await server.close();
    rmSync(root, { recursive: true, force: true });
  }
});
