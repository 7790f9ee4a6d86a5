// The reader thread reading misses straight into the cache's slots (shared memory): the same values and counters as the staging copy and as plain reads; a file truncated mid-life is named and leaves no half-read expert resident.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdtempSync, openSync, readSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHFDir } from '../src/formats/hf/index.js';
import { writeGGUF } from '../src/formats/gguf/index.js';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM } from '../src/models/load-lm.js';
import type { ExpertRange } from '../src/infer/expert-cache.js';

const TEXT = Int32Array.from(Buffer.from('All human beings are born free and equal in dignity and rights.'));

let dir: string;
let gguf: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'moe-expert-direct-'));
  const hfDir = join(dir, 'hf');
  createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: hfDir, seed: 11 });
  const hf = openHFDir(hfDir);
  try {
    gguf = join(dir, 'm.gguf');
    writeGGUF(gguf, { config: hf.config, tensors: hf.source.names().map((n) => [n, hf.source.read(n), hf.source.info(n).shape]), dtype: 'q8_0' });
  } finally {
    hf.source.close();
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Logits of a prefill of the first 4 tokens, then one token at a time (each step's experts fit 0.5 of the slots). */
async function decode(mode: 'sync' | 'direct' | 'staging'): Promise<{ logits: Float32Array[]; stats: ReturnType<NonNullable<Awaited<ReturnType<typeof loadLM>>['expertCache']>['stats']> }> {
  const lm = await loadLM(gguf, { expertMemory: 0.5, expertPolicy: 'lru' });
  const cache = lm.expertCache!;
  if (mode !== 'sync') cache.setAsyncLoads(true, { mainReads: false, direct: mode === 'direct' });
  const kv = lm.model.newCache(TEXT.length + 1);
  const logits = [lm.model.forward(TEXT.subarray(0, 4), kv).data as Float32Array];
  for (let i = 4; i < 24; i++) logits.push(lm.model.forward(TEXT.subarray(i, i + 1), kv).data as Float32Array);
  const stats = cache.stats();
  cache.close();
  return { logits, stats };
}

describe('reader thread straight into the slots', () => {
  test('= staging copy = plain reads, bit for bit; the reader read every miss', async () => {
    const [sync, direct, staging] = [await decode('sync'), await decode('direct'), await decode('staging')];
    assert.deepEqual(direct.logits, sync.logits);
    assert.deepEqual(staging.logits, sync.logits);
    for (const r of [direct, staging]) {
      assert.deepEqual([r.stats.hits, r.stats.misses, r.stats.bytesLoaded], [sync.stats.hits, sync.stats.misses, sync.stats.bytesLoaded]);
      assert.equal(r.stats.staged, r.stats.misses, 'mainReads false: the reader reads every miss');
    }
  });

  test('a file truncated mid-life: named, and the unread experts are not left resident', async () => {
    const copy = join(dir, 'trunc-direct.gguf');
    copyFileSync(gguf, copy);
    const lm = await loadLM(copy, { expertMemory: 1 });
    const cache = lm.expertCache!;
    cache.setAsyncLoads(true, { mainReads: false });
    const m = lm.model;
    const first = m.forward(TEXT.subarray(0, 1), m.newCache(4)).data as Float32Array;
    const resident = cache.layers.map((l) => l.pool.residents().filter((e) => e >= 0).sort((a, b) => a - b));
    truncateSync(copy, Math.floor(statSync(copy).size / 3));
    // all experts fit (budget 1): the step's misses go straight into slots
    assert.throws(() => m.forward(TEXT, m.newCache(TEXT.length)),
      /trunc-direct\.gguf: expert \d+ of layer \d+, (gate|up|down) \((w1|w2|w3)\): the file ends at byte \d+, inside the expert's bytes \[\d+, \d+\).*truncated or rewritten/);
    // every expert still resident holds exactly its bytes from the (intact) original file: nothing half-read stays
    const fd = openSync(gguf, 'r');
    try {
      cache.layers.forEach((l, li) => {
        const ranges = (l as unknown as { ranges: ReadonlyArray<readonly ExpertRange[]> }).ranges;
        const now = l.pool.residents().filter((e) => e >= 0);
        assert.ok(resident[li]!.every((e) => now.includes(e)), `layer ${l.layer}: an expert resident before the failure was dropped`);
        for (const e of now) {
          assert.equal(l.pool.expertIn(l.pool.slot(e)), e);
          for (let p = 0; p < 3; p++) {
            const r = ranges[p]![e]!;
            const want = Buffer.alloc(r.bytes);
            readSync(fd, want, 0, r.bytes, r.offset);
            assert.ok(want.equals(l.slotView(p, l.pool.slot(e))), `layer ${l.layer}: expert ${e} projection ${p} in its slot is not the file's bytes`);
          }
        }
      });
    } finally {
      closeSync(fd);
    }
    // the layer that failed keeps only what it had (and anything read before the failure); the first token's experts still answer
    assert.deepEqual(m.forward(TEXT.subarray(0, 1), m.newCache(4)).data, first);
    cache.close();
  });
});
