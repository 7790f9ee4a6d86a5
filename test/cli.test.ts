// The moe command: help, version, errors for unknown commands and options.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function moe(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

test('moe --help lists the commands', () => {
  const r = moe('--help');
  assert.equal(r.code, 0);
  assert.match(r.out, /bench gemm/);
  assert.match(r.out, /MOE_BACKEND/);
});

test('moe --version prints the package version', () => {
  const r = moe('--version');
  assert.equal(r.code, 0);
  assert.match(r.out.trim(), /^\d+\.\d+\.\d+$/);
});

test('every command has --help', () => {
  for (const args of [['bench', 'gemm', '--help'], ['bench', 'elementwise', '--help'], ['bench', 'moe-layer', '--help'], ['info', '--help'], ['bench', '--help']]) {
    const r = moe(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    assert.ok(r.out.length > 20, args.join(' '));
  }
});

test('unknown commands, benchmarks and options are named in the error', () => {
  let r = moe('frobnicate');
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown command 'frobnicate'/);
  r = moe('bench', 'nope');
  assert.match(r.err, /bench: unknown benchmark 'nope' \(available: gemm, elementwise, decode, moe-layer\)/);
  r = moe('bench', 'gemm', '--jsn');
  assert.match(r.err, /option --jsn needs a value|unknown option --jsn/);
  r = moe('bench', 'gemm', '--fast=1');
  assert.match(r.err, /bench gemm: unknown option --fast/);
});

test('moe info names the backend in use', () => {
  const r = moe('info');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /backend in use: (js|native)/);
});
