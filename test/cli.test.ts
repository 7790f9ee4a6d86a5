// The moe command: help, version, errors for unknown commands and options.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../src/cli/cli.js';
import { trainHelp, PLOT_HELP } from '../src/cli/train-commands.js';
import { EVAL_HELP, INSPECT_HELP } from '../src/cli/model-commands.js';
import { PREDICT_HELP } from '../src/cli/predict-command.js';
import { CREATE_HELP } from '../src/cli/create-command.js';
import { CONVERT_HELP } from '../src/cli/convert-command.js';
import { GENERATE_HELP } from '../src/cli/generate-command.js';
import { BENCH_DECODE_HELP } from '../bench/decode-command.js';
import { run as runBench } from '../bench/cli.js';
import { SERVE_HELP } from '../src/cli/serve-command.js';
import { experimentHelp } from '../src/cli/experiment-commands.js';

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

/** Runs the CLI in this process (a spawn per command would cost seconds each), capturing what it prints. */
async function inProcess(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const log = console.log;
  const write = process.stderr.write;
  console.log = (...a: unknown[]) => { out += `${a.join(' ')}\n`; };
  process.stderr.write = ((c: string | Uint8Array) => { err += String(c); return true; }) as typeof process.stderr.write;
  try {
    return { code: await (argv[0] === 'bench' ? runBench : run)(argv), out, err };
  } finally {
    console.log = log;
    process.stderr.write = write;
  }
}

test("every command's --help prints its own full help, naming every option the command accepts", async () => {
  const own: Array<[string[], string]> = [
    [['train'], trainHelp(undefined)], [['eval'], EVAL_HELP], [['inspect'], INSPECT_HELP], [['plot'], PLOT_HELP],
    [['predict'], PREDICT_HELP], [['create'], CREATE_HELP], [['convert'], CONVERT_HELP], [['generate'], GENERATE_HELP],
    [['serve'], SERVE_HELP], [['experiment'], experimentHelp()], [['bench', 'decode'], BENCH_DECODE_HELP],
  ];
  for (const [cmd, help] of own) {
    const r = await inProcess([...cmd, '--help']);
    assert.equal(r.code, 0, `${cmd.join(' ')} --help: ${r.err}`);
    assert.equal(r.out, `${help}\n`, `${cmd.join(' ')} --help prints its help constant`);
  }
  // the options a command accepts are the ones its unknown-option error lists: each must be in its help
  const commands = [['train'], ['eval'], ['inspect'], ['plot'], ['predict'], ['create'], ['convert'], ['generate'], ['generate', '--checkpoint', 'x'],
    ['serve'], ['info'], ['experiment', 'implicit-bias'], ['experiment', 'l2-norm'], ['experiment', 'inference-cost'],
    ['bench', 'gemm'], ['bench', 'elementwise'], ['bench', 'moe-layer'], ['bench', 'soft-moe'], ['bench', 'decode']];
  for (const cmd of commands) {
    const bad = await inProcess([...cmd, '--no-such-option']);
    const known = /\(known: ([^)]*)\)/.exec(bad.err)?.[1]?.split(', ');
    assert.ok(known && known.length > 0, `${cmd.join(' ')}: ${bad.err}`);
    const help = (await inProcess([...cmd, '--help'])).out;
    for (const flag of known.filter((f) => f !== '--help')) assert.match(help, new RegExp(`${flag}\\b`), `${cmd.join(' ')} --help does not mention ${flag}`);
  }
  // and through a real process
  const r = moe('inspect', '--help');
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, `${INSPECT_HELP}\n`);
});

test('unknown commands, benchmarks and options are named in the error', () => {
  let r = moe('frobnicate');
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown command 'frobnicate'/);
  r = moe('bench', 'nope');
  assert.match(r.err, /bench: unknown benchmark 'nope' \(available: all-to-all, ep-optimizer, gemm, elementwise, decode, serve, cost-model, expert-cache, moe-layer, soft-moe\)/);
  r = moe('bench', 'gemm', '--jsn');
  assert.match(r.err, /option --jsn needs a value|unknown option --jsn/);
  r = moe('bench', 'gemm', '--fast=1');
  assert.match(r.err, /bench gemm: unknown option --fast/);
});

test('nothing in src/ imports bench/: the benchmarks sit above the library (DESIGN.md layout)', () => {
  const root = fileURLToPath(new URL('../../src/', import.meta.url));
  const offenders: string[] = [];
  for (const f of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
    if (!f.endsWith('.ts')) continue;
    const text = readFileSync(join(root, f), 'utf8');
    if (/from\s+['"](\.\.\/)+bench\//.test(text) || /import\(\s*['"](\.\.\/)+bench\//.test(text.replace(/^\/\/.*$/gm, ''))) offenders.push(f);
  }
  // the launcher is the one exception DESIGN.md names: it hands `moe bench` to bench/cli.ts
  assert.deepEqual(offenders.filter((f) => f !== join('cli', 'main.ts')), [], 'files in src/ that import bench/');
});

test('moe info names the backend in use', () => {
  const r = moe('info');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /backend in use: (js|native)/);
});
