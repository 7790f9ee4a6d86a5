// Reading a checkpoint while another process saves over it (a run writing while `moe eval` reads,
// or while a second `moe train --resume` reads the config before the lock refuses it): every load
// sees one whole checkpoint, old or new. The loader before this change failed or mixed ~0.2% of
// such loads: "files were mixed from two saves", the journal or a staged file vanishing between
// two reads (163 of 73276 loads beside 1508 saves in a 4 s probe; 64 of 17300 in this test), and
// config.json, which carries no id, from the other save without any error.

import { spawn } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/index.js';
import { Linear } from '../src/nn/linear.js';
import { loadCheckpoint, readCheckpointConfig, saveCheckpoint } from '../src/models/checkpoint.js';

const checkpointModule = fileURLToPath(new URL('../src/models/checkpoint.js', import.meta.url));
const linearModule = fileURLToPath(new URL('../src/nn/linear.js', import.meta.url));

/** A child process saving checkpoints into dir for ms milliseconds; resolves with how many it saved. */
function saver(dir: string, ms: number): Promise<number> {
  const code = `
    const { saveCheckpoint } = await import(${JSON.stringify(checkpointModule)});
    const { Linear } = await import(${JSON.stringify(linearModule)});
    const model = new Linear(32, 32);
    const t0 = Date.now();
    let n = 0;
    while (Date.now() - t0 < ${ms}) {
      model.weight.data.fill(n);
      saveCheckpoint(${JSON.stringify(dir)}, { model, config: { n }, optimizerState: { m: model.weight }, trainerState: { n } });
      n++;
    }
    process.stdout.write(String(n));`;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('error', reject);
    p.on('close', (c) => (c === 0 ? resolve(Number(out)) : reject(new Error(`saver exited ${c}: ${err}`))));
  });
}

test('loads beside another process\'s saves each see one whole checkpoint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-ckpt-race-'));
  try {
    const model = new Linear(32, 32, { rng: new Rng(1) });
    saveCheckpoint(dir, { model, config: { n: -1 }, optimizerState: { m: model.weight }, trainerState: { n: -1 } });
    const saving = saver(dir, 2500);
    const seen = new Set<number>();
    const failures: string[] = [];
    let loads = 0;
    let refusals = 0;
    let done = false;
    void saving.finally(() => { done = true; });
    while (!done) {
      // the loop yields to the event loop now and then so the saver's exit is noticed
      for (let i = 0; i < 50; i++) {
        try {
          const c = loadCheckpoint(dir);
          const n = (c.config as { n: number }).n;
          // one checkpoint: its weights, optimizer state and trainer state were all written by save n
          const w = c.model.get('weight')!.data[0]!;
          const m = c.optimizerState!.get('m')!.data[0]!;
          const t = (c.trainerState as { n: number }).n;
          if (n >= 0 && (w !== n || m !== n || t !== n)) failures.push(`config n=${n} with weight ${w}, optimizer ${m}, trainer state ${t}`);
          seen.add(n);
          const cfg = readCheckpointConfig(dir) as { n: number };
          if (typeof cfg.n !== 'number') failures.push(`readCheckpointConfig gave ${JSON.stringify(cfg)}`);
        } catch (e) {
          // a writer saving in a tight loop may overlap every attempt of a load on a saturated
          // machine: refused with that reason (never a mixed result); anything else is a failure
          if (/was replaced during each of \d+ reads/.test((e as Error).message)) refusals++;
          else failures.push((e as Error).message);
        }
        loads++;
      }
      await new Promise((r) => setImmediate(r));
    }
    const saves = await saving;
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} of ${loads} loads failed beside ${saves} saves`);
    assert.ok(refusals <= loads / 100, `${refusals} of ${loads} loads refused as replaced during every attempt`);
    // the loads really overlapped the saves (otherwise this test checks nothing)
    assert.ok(saves >= 20, `only ${saves} saves ran`);
    assert.ok(seen.size >= 10, `the loads saw only ${seen.size} distinct checkpoints of ${saves} saves`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a checkpoint whose files really are mixed is still refused, at once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-ckpt-mixed-'));
  const other = mkdtempSync(join(tmpdir(), 'moe-ckpt-mixed-'));
  try {
    const model = new Linear(4, 4, { rng: new Rng(1) });
    saveCheckpoint(dir, { model, config: {} });
    saveCheckpoint(other, { model, config: {} });
    // the model file of another save, copied in by hand
    rmSync(join(dir, 'model.safetensors'));
    renameSync(join(other, 'model.safetensors'), join(dir, 'model.safetensors'));
    const t0 = Date.now();
    assert.throws(() => loadCheckpoint(dir), /model\.safetensors belongs to a different checkpoint .*files were mixed from two saves/);
    // a needless retry waits >= 255 ms in all (1, 2, 4 ... ms); one load of this checkpoint takes ~1 ms
    assert.ok(Date.now() - t0 < 200, 'refused without waiting for a save that never comes');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(other, { recursive: true, force: true });
  }
});
