// Report layer: Markdown tables, line-chart specs rendered to SVG/PNG, atomic plot writing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatNumber, markdownTable, lineChart, renderSvg, renderPng, writePlot } from '../src/report/index.js';

test('formatNumber: integers exact, significant digits, exponent at the extremes', () => {
  assert.equal(formatNumber(42), '42');
  assert.equal(formatNumber(-7), '-7');
  assert.equal(formatNumber(0.123456), '0.1235');
  assert.equal(formatNumber(0.5), '0.5000');
  assert.equal(formatNumber(3.14159, 2), '3.1');
  assert.equal(formatNumber(123456.7), '123457');
  assert.equal(formatNumber(1.5e-7), '1.500e-7');
  assert.equal(formatNumber(NaN), 'NaN');
  assert.equal(formatNumber(-Infinity), '-inf');
  assert.throws(() => formatNumber(1, 0), /formatNumber: digits must be an integer/);
});

test('markdownTable: padded columns, numbers right-aligned, pipes escaped', () => {
  const t = markdownTable(['router', 'acc', 'loss'], [['top-k', 0.91234, 0.3], ['expert|choice', 0.9, 12]], { digits: 3 });
  assert.equal(
    t,
    [
      '| router         |   acc |  loss |',
      '| -------------- | ----: | ----: |',
      '| top-k          | 0.912 | 0.300 |',
      '| expert\\|choice | 0.900 |    12 |',
      '',
    ].join('\n'),
  );
  assert.equal(markdownTable(['a', 'b'], [[1, 'x']], { align: ['l', 'r'] }), '| a   |   b |\n| --- | --: |\n| 1   |   x |\n');
  assert.throws(() => markdownTable(['a', 'b'], [[1]]), /markdownTable: row 0 has 1 cells, header has 2/);
  assert.throws(() => markdownTable(['a'], [], { align: ['l', 'r'] }), /align has 2 entries/);
});

function curves(): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (const router of ['top-2', 'expert-choice']) {
    for (const split of ['train', 'test']) {
      for (let step = 1; step <= 20; step++) {
        const loss = (router === 'top-2' ? 2 : 2.4) / Math.sqrt(step) + (split === 'test' ? 0.15 : 0);
        rows.push({ step: step * 100, loss, router, split });
      }
    }
  }
  return rows;
}

const chart = () =>
  lineChart({
    title: 'Loss vs step',
    x: { field: 'step', title: 'Training step' },
    y: { field: 'loss', title: 'Cross-entropy loss', scale: 'log' },
    series: 'router',
    dash: 'split',
    data: curves(),
  });

test('lineChart renders to an SVG with series names, dash legend and axis titles', async () => {
  const svg = await renderSvg(chart());
  assert.match(svg, /^<svg[^>]*width="\d+"/);
  for (const text of ['Loss vs step', 'Training step', 'Cross-entropy loss', 'top-2', 'expert-choice', 'train', 'test']) {
    assert.ok(svg.includes(`>${text}</text>`), `SVG lacks the text "${text}"`);
  }
  // Dashed lines for the second dash value.
  assert.match(svg, /stroke-dasharray/);
});

test('lineChart rejects data it would silently draw wrong', () => {
  const base = { title: 't', x: { field: 'step', title: 's' }, y: { field: 'loss', title: 'l' }, series: 'router' };
  assert.throws(() => lineChart({ ...base, data: [] }), /lineChart "t": no data rows/);
  assert.throws(() => lineChart({ ...base, data: [{ step: 1, los: 2, router: 'a' }] }), /row 0 has no field "loss"/);
  assert.throws(() => lineChart({ ...base, data: [{ step: '1', loss: 2, router: 'a' }] }), /field "step" is string, expected a number/);
  assert.throws(
    () => lineChart({ ...base, y: { field: 'loss', title: 'l', scale: 'log' }, data: [{ step: 1, loss: 0, router: 'a' }] }),
    /field "loss" is 0, but its axis is log-scaled/,
  );
});

function pngSize(png: Uint8Array): { width: number; height: number } {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  const dv = new DataView(png.buffer, png.byteOffset, png.byteLength);
  assert.equal(String.fromCharCode(...png.subarray(12, 16)), 'IHDR');
  return { width: dv.getUint32(16), height: dv.getUint32(20) };
}

test('renderPng: PNG signature and dimensions following the SVG', async () => {
  const svg = await renderSvg(chart());
  const svgW = Number(/^<svg[^>]*width="(\d+)"/.exec(svg)![1]);
  const svgH = Number(/^<svg[^>]*height="(\d+)"/.exec(svg)![1]);
  const def = pngSize(renderPng(svg));
  assert.deepEqual(def, { width: 2 * svgW, height: 2 * svgH });
  assert.ok(def.width > 960 && def.width < 2400 && def.height > 600 && def.height < 1200, `odd size ${def.width}x${def.height}`);
  const fixed = pngSize(renderPng(svg, { width: 800 }));
  assert.equal(fixed.width, 800);
  assert.ok(Math.abs(fixed.height - (800 * svgH) / svgW) <= 1);
});

test('writePlot writes .svg and .png atomically; a bad spec throws and writes nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-report-'));
  try {
    const out = await writePlot(join(dir, 'loss'), chart());
    assert.deepEqual(readdirSync(dir).sort(), ['loss.png', 'loss.svg']);
    assert.deepEqual(out, { svg: join(dir, 'loss.svg'), png: join(dir, 'loss.png') });
    assert.match(readFileSync(out.svg, 'utf8'), /Cross-entropy loss/);
    pngSize(readFileSync(out.png));

    await assert.rejects(writePlot(join(dir, 'bad'), { data: { values: [] } }), /renderSvg: invalid Vega-Lite spec: Invalid specification/);
    await assert.rejects(
      writePlot(join(dir, 'bad'), { data: { values: [] }, mark: 'line', encoding: { x: { field: 'a', type: 'bogus' } } }),
      /renderSvg: invalid Vega-Lite spec/,
    );
    // Writing into a missing directory fails at the temp file, before any rename.
    await assert.rejects(writePlot(join(dir, 'missing', 'x'), chart()), /ENOENT/);
    assert.deepEqual(readdirSync(dir).sort(), ['loss.png', 'loss.svg']);

    // A failure after the temp files exist (the .png cannot replace a directory) still removes them.
    mkdirSync(join(dir, 'clash.png'));
    await assert.rejects(writePlot(join(dir, 'clash'), chart()));
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
