// Expert cache schedule and reads: the per-expert MLP schedule (each expert loaded at most once per forward) and the
// reader thread give the all-resident logits bit for bit with few slots at batch > 1; offloaded slots hold the file's
// bytes, equal to the resident tensors'; missing and truncated files fail naming file and tensor.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHFDir } from '../src/formats/hf/index.js';
import { readGGUFAsHF, writeGGUF } from '../src/formats/gguf/index.js';
import { createRandomHFDir } from '../src/models/moe-decoder-create.js';
import { loadLM } from '../src/models/load-lm.js';
import type { MoEDecoder } from '../src/models/moe-decoder.js';
import { offloadExperts } from '../src/infer/expert-offload.js';
import { ExpertReader } from '../src/infer/expert-reader.js';
import { QuantWeight } from '../src/infer/quant/weight.js';
import { Tensor } from '../src/tensor/tensor.js';
import { mul, silu } from '../src/ops/index.js';
import type { TensorSource } from '../src/formats/tensor-source.js';

let dir: string;
let gguf: string;
let hfDir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'moe-expert-schedule-'));
  // olmoe tiny: 16 experts top-4, 2 MoE layers... (every layer MoE); q8_0 GGUF and f32 safetensors
  hfDir = join(dir, 'olmoe');
  createRandomHFDir({ family: 'olmoe', preset: 'tiny', out: hfDir, seed: 11 });
  const hf = openHFDir(hfDir);
  try {
    gguf = join(dir, 'olmoe.gguf');
    writeGGUF(gguf, { config: hf.config, tensors: hf.source.names().map((n) => [n, hf.source.read(n), hf.source.info(n).shape]), dtype: 'q8_0' });
  } finally {
    hf.source.close();
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

const TEXTS = ['All human beings are born', 'Everyone has the right to', 'No one shall be held in', 'Men and women of full age'].map((t) => Int32Array.from(Buffer.from(t)));

/** 4 sequences: a 6-token prefill, then 6 decode steps together; every step's last-row logits. */
function batched(model: MoEDecoder): Float32Array[] {
  const caches = TEXTS.map(() => model.newCache(64));
  const out: Float32Array[] = [];
  for (let at = 6; at <= 12; at++) {
    const from = at === 6 ? 0 : at - 1;
    const ys = model.forwardBatch(TEXTS.map((t, j) => ({ ids: t.subarray(from, at), cache: caches[j]! })), 'test', { lastOnly: true });
    for (const y of ys) out.push(y.data as Float32Array);
  }
  return out;
}

/** Bytes of expert e's projection p in a resident stack [E, out, in]. */
function residentBytes(w: unknown, e: number): Uint8Array {
  if (w instanceof QuantWeight) {
    const per = w.data.byteLength / w.shape[0]!;
    return w.data.subarray(e * per, (e + 1) * per);
  }
  const t = w as Tensor;
  const d = t.data as Float32Array;
  const per = d.length / t.shape[0]!;
  return new Uint8Array(d.buffer, d.byteOffset + 4 * e * per, 4 * per);
}

describe('per-expert schedule: k slots, batch 4 = all resident, bit for bit, each expert loaded at most once per forward', () => {
  for (const which of ['gguf', 'hf'] as const) {
    for (const mode of ['sync', 'reader', 'shared'] as const) {
      const asyncLoads = mode !== 'sync';
      const label = { sync: 'synchronous reads', reader: 'every miss read by the reader thread', shared: 'reader thread and main thread take misses in turn' }[mode];
      test(`${which}, ${label}, lru / lfu / pregate`, async () => {
        const path = which === 'gguf' ? gguf : hfDir;
        const want = batched((await loadLM(path)).model);
        for (const policy of ['lru', 'lfu', 'pregate'] as const) {
          const probe = await loadLM(path, { expertMemory: 1 });
          const eb = probe.expertCache!.layers[0]!.expertBytes;
          const minBytes = probe.model.config.topK * eb * probe.expertCache!.layers.length;
          probe.expertCache!.close();
          const lm = await loadLM(path, { expertMemory: minBytes, expertPolicy: policy });
          const cache = lm.expertCache!;
          try {
            cache.setAsyncLoads(asyncLoads, mode === 'reader' ? { mainReads: false } : {});
            assert.equal(cache.asyncLoads, asyncLoads);
            let uses = 0;
            let maxDistinct = 0;
            lm.model.onRouting = (_l, idx) => {
              const n = new Set(idx).size;
              uses += n;
              maxDistinct = Math.max(maxDistinct, n);
            };
            const got = batched(lm.model);
            const what = `${which} ${policy} ${mode}`;
            assert.ok(maxDistinct > cache.layers[0]!.pool.numSlots, `${what}: the test needs a step with more distinct experts than slots (saw ${maxDistinct})`);
            assert.equal(got.length, want.length);
            got.forEach((g, i) => assert.deepEqual(g, want[i], `${what}: step output ${i} differs`));
            const st = cache.stats();
            assert.equal(st.hits + st.misses, uses, `${what}: hits + misses != expert uses`);
            assert.equal(st.reloads, 0, `${what}: an expert was loaded twice in one forward`);
            // the floor: one load per miss (plus pre-gating's own loads), never one per projection
            assert.equal(st.bytesLoaded, (st.misses + st.prefetched) * eb, `${what}: bytes loaded`);
            assert.ok(st.misses > 0);
            if (mode === 'reader' && policy === 'pregate') {
              // pre-gating's prefetches go to the reader (it reads them all: mainReads false) while the layer before computes;
              // a layer's own misses are read on this thread while the reader holds the next layer's prefetch
              assert.ok(st.prefetched > 0, `${what}: nothing prefetched`);
              assert.ok(st.staged >= st.prefetched && st.staged - st.prefetched <= st.misses, `${what}: ${st.staged} read by the reader, ${st.prefetched} prefetched, ${st.misses} misses`);
            } else if (mode === 'reader') assert.equal(st.staged, st.misses, `${what}: misses read by the reader thread`);
            else if (mode === 'shared') assert.ok(st.staged <= st.misses + st.prefetched, `${what}: ${st.staged} staged of ${st.misses} misses and ${st.prefetched} prefetches`);
            else assert.equal(st.staged, 0);
            assert.equal(st.stagingBytes, asyncLoads ? 4 * eb : 0);
          } finally {
            cache.close();
          }
        }
      });
    }
  }
});

test('LayerExperts.mlp = the three per-projection products, loads each expert once where linear() reloads', async () => {
  const lm = await loadLM(gguf, { expertMemory: 0.25 }); // 4 slots of 16
  const cache = lm.expertCache!;
  try {
    const le = cache.layers[0]!;
    const E = le.numExperts;
    const d = lm.model.config.hiddenSize;
    // 10 experts with rows (more than the 4 slots), 0 to 3 rows each
    const sizes = Int32Array.from({ length: E }, (_, e) => (e < 10 ? (e % 3) + 1 : 0));
    const N = sizes.reduce((a, b) => a + b, 0);
    const x = new Tensor(Float32Array.from({ length: N * d }, (_, i) => Math.sin(0.37 * i)), [N, d]);
    const act = (g: Tensor, u: Tensor): Tensor => mul(silu(g), u);
    cache.resetStats();
    const composed = le.linear(act(le.linear(x, 0, sizes), le.linear(x, 1, sizes)), 2, sizes).data;
    const a = cache.stats();
    assert.ok(a.reloads > 0, 'the per-projection path should reload evicted experts');
    for (const mode of ['sync', 'reader', 'shared'] as const) {
      cache.setAsyncLoads(mode !== 'sync', mode === 'reader' ? { mainReads: false, places: 3 } : {});
      cache.resetStats();
      const fused = le.mlp(x, sizes, act).data;
      const b = cache.stats();
      assert.deepEqual(fused, composed, `${mode}: mlp differs from the composed products`);
      if (mode === 'reader') assert.equal(b.staged, b.misses);
      assert.equal(b.reloads, 0);
      assert.equal(b.hits + b.misses, 10);
      assert.equal(b.bytesLoaded, b.misses * le.expertBytes);
      assert.ok(b.bytesLoaded < a.bytesLoaded, `mlp loaded ${b.bytesLoaded} bytes, the per-projection path ${a.bytesLoaded}`);
      // more experts than slots: the floor(C / 2) = 2 with the most rows (3 rows: experts 2, 5, 8; ties by id) stay for the next step
      assert.ok(le.pool.slot(2) >= 0 && le.pool.slot(5) >= 0, `${mode}: kept experts 2 and 5 are not resident (${le.pool.residents().join(', ')})`);
    }
    // no rows: nothing loaded, an empty result
    cache.resetStats();
    assert.deepEqual(le.mlp(new Tensor(new Float32Array(0), [0, d]), new Int32Array(E), act).shape, [0, d]);
    assert.equal(cache.stats().bytesLoaded, 0);
    // bad group sizes are named
    assert.throws(() => le.mlp(x, sizes.subarray(1), act), /group sizes for 16 experts/);
    assert.throws(() => le.mlp(x, new Int32Array(E), act), /group sizes sum to 0, x has \d+ rows/);
  } finally {
    cache.close();
  }
});

describe('file-backed slots hold the file\'s bytes, equal to the resident tensors', () => {
  for (const which of ['gguf', 'hf'] as const) {
    test(which, async () => {
      const path = which === 'gguf' ? gguf : hfDir;
      const ref = (await loadLM(path)).model;
      const lm = await loadLM(path, { expertMemory: 1 });
      const cache = lm.expertCache!;
      try {
        // the reader thread fills the slots a long prefill needs, prefetch the rest (by the reader too: settled before the slots are read)
        cache.setAsyncLoads(true, { mainReads: false });
        lm.model.forward(Int32Array.from(Buffer.from('All human beings are born free and equal in dignity and rights.')), lm.model.newCache(80));
        assert.ok(cache.stats().staged > 0, 'the reader thread read nothing');
        const sparse = ref.layers.filter((l) => l.moe);
        cache.layers.forEach((le, i) => {
          const E = le.numExperts;
          le.prefetch(Array.from({ length: E }, (_, e) => e));
          le.settlePrefetch();
          const moe = sparse[i]!.moe!;
          [moe.w1, moe.w3, moe.w2].forEach((w, p) => {
            for (let e = 0; e < E; e++) {
              const s = le.pool.slot(e);
              assert.ok(s >= 0, `expert ${e} of layer ${le.layer} is not resident with all slots`);
              assert.deepEqual(le.slotView(p, s), residentBytes(w, e), `layer ${le.layer} expert ${e} projection ${p}: slot bytes != resident bytes`);
            }
          });
        });
      } finally {
        cache.close();
      }
    });
  }
});

describe('errors name the file and the tensor', () => {
  test('a file truncated mid-life, read by the reader thread', async () => {
    const copy = join(dir, 'trunc-async.gguf');
    copyFileSync(gguf, copy);
    const lm = await loadLM(copy, { expertMemory: 0.25 });
    const cache = lm.expertCache!;
    cache.setAsyncLoads(true, { mainReads: false });
    const m = lm.model;
    m.forward(TEXTS[0]!.subarray(0, 2), m.newCache(8));
    truncateSync(copy, Math.floor(statSync(copy).size / 3));
    const long = Int32Array.from(Buffer.from('All human beings are born free and equal in dignity and rights.'));
    assert.throws(() => m.forward(long, m.newCache(80)),
      /trunc-async\.gguf: expert \d+ of layer \d+, (gate|up|down) \((w1|w2|w3)\): the file ends at byte \d+, inside the expert's bytes \[\d+, \d+\).*truncated or rewritten/);
    for (const l of cache.layers) {
      for (const e of l.pool.residents()) if (e >= 0) assert.equal(l.pool.expertIn(l.pool.slot(e)), e);
    }
    cache.close();
    assert.equal(cache.asyncLoads, false);
    assert.throws(() => m.forward(long, m.newCache(80)), /expert cache: closed/);
  });

  test('a missing model file at offload is named with a tensor it holds', async () => {
    const resident = await loadLM(gguf);
    const opened = await readGGUFAsHF(gguf);
    try {
      const gone = join(dir, 'moved-away.gguf');
      const source: TensorSource = {
        names: () => opened.source.names(),
        info: (n) => opened.source.info(n),
        read: (n) => opened.source.read(n),
        locate: (n) => {
          const loc = opened.source.locate!(n);
          return loc && { ...loc, file: gone };
        },
        close: () => opened.source.close(),
      };
      assert.throws(() => offloadExperts(resident.model, source, { expertMemory: 0.5 }),
        /expert offload: cannot open .*moved-away\.gguf, which holds offloaded experts \(e\.g\. tensor model\.layers\.\d+\.mlp\.experts\.\d+\.\w+_proj\.weight\): ENOENT/);
    } finally {
      opened.source.close();
    }
  });

  test('the reader thread: in-order reads into its places, the end of a file, a bad descriptor, misuse', () => {
    const file = join(dir, 'bytes.bin');
    writeFileSync(file, Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    const fd = openSync(file, 'r');
    const reader = new ExpertReader(2, 32, { mainReads: false });
    const bytesAt = (at: number, n: number): number[] => [...reader.staging.subarray(at, at + n)];
    try {
      // 3 experts through 2 places: the third waits until the first is released
      reader.start([[{ fd, position: 10, bytes: 20 }], [{ fd, position: 200, bytes: 8 }, { fd, position: 0, bytes: 4 }], [{ fd, position: 100, bytes: 32 }]]);
      assert.throws(() => reader.start([]), /a job is already open/);
      const a = reader.take(0);
      assert.ok(!a.mine && a.failedRead === -1 && a.at === 0);
      assert.deepEqual(bytesAt(0, 20), Array.from({ length: 20 }, (_, i) => 10 + i));
      reader.release(0);
      const b = reader.take(1);
      assert.ok(!b.mine && b.failedRead === -1 && b.at === 32);
      assert.deepEqual(bytesAt(32, 12), [200, 201, 202, 203, 204, 205, 206, 207, 0, 1, 2, 3]);
      reader.release(1);
      const c = reader.take(2);
      assert.ok(!c.mine && c.at === 0);
      assert.deepEqual(bytesAt(0, 32), Array.from({ length: 32 }, (_, i) => 100 + i));
      assert.throws(() => reader.take(3), /index 3 is outside the open job of 3 experts/);
      reader.finish();
      // the second range of an expert runs past the end of the file
      reader.start([[{ fd, position: 0, bytes: 4 }, { fd, position: 250, bytes: 16 }]]);
      assert.deepEqual(reader.take(0), { mine: false, at: 0, failedRead: 1, endAt: 256, error: null });
      reader.finish();
      assert.throws(() => reader.start([[{ fd, position: 0, bytes: 33 }]]), /expert 0 of the job has 33 bytes, a staging place holds 32/);
      closeSync(fd);
      reader.start([[{ fd, position: 0, bytes: 4 }]]);
      const bad = reader.take(0);
      assert.ok(!bad.mine && bad.failedRead === 0);
      assert.match(bad.error ?? '', /EBADF|bad file descriptor/i);
      reader.finish();
    } finally {
      reader.close();
    }
    assert.throws(() => reader.start([]), /expert reader: closed/);
    // with main reads on, an index the reader has not begun goes to the main thread: a job the reader never sees
    const shared = new ExpertReader(1, 8);
    try {
      shared.start([[{ fd: -1, position: 0, bytes: 8 }]]);
      const t = shared.take(0);
      // either thread may win index 0; a 'mine' answer means the reader never touched the bad descriptor
      if (!t.mine) assert.match(t.error ?? '', /EBADF|fd|descriptor|out of range/i);
      shared.finish();
    } finally {
      shared.close();
    }
  });
});

test('pre-gating with the reader thread: a prefetch is read while the caller goes on, settled before the slots are used; a reader closed meanwhile gives its slots up', async () => {
  const lm = await loadLM(gguf, { expertMemory: 0.5, expertPolicy: 'pregate' });
  const cache = lm.expertCache!;
  try {
    cache.setAsyncLoads(true, { mainReads: false });
    const le = cache.layers[1]!;
    const want = [3, 1, 2];
    le.prefetch(want);
    // the slots are taken (pinned) at once; the reader fills them
    for (const e of want) assert.ok(le.pool.slot(e) >= 0, `expert ${e} has no slot`);
    // another layer's prefetch settles this one first (one job per reader)
    cache.layers[0]!.prefetch([0]);
    assert.equal(le.stats.prefetched, 3);
    assert.equal(le.stats.staged, 3, 'the reader read all three');
    cache.layers[0]!.settlePrefetch();
    assert.equal(cache.layers[0]!.stats.prefetched, 1);
    // a prefetch left pending when the reader is closed: not trusted, the slots are emptied
    le.prefetch([5, 6]);
    cache.setAsyncLoads(false);
    le.settlePrefetch();
    assert.equal(le.pool.slot(5), -1);
    assert.equal(le.pool.slot(6), -1);
    assert.equal(le.stats.prefetched, 3, 'an abandoned prefetch is not counted');
    // without a reader, prefetch is synchronous as before
    le.prefetch([5]);
    assert.ok(le.pool.slot(5) >= 0);
    assert.equal(le.stats.prefetched, 4);
  } finally {
    cache.close();
  }
});
