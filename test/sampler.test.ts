// The sampler: greedy, temperature, top-k and top-p against a direct reference, draw counts
// against the probabilities (binomial tolerance), seeds, and bad input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/index.js';
import { Sampler, argmax } from '../src/infer/sampler.js';

function randomLogits(rng: Rng, V: number, scale = 3): Float32Array {
  const l = new Float32Array(V);
  for (let i = 0; i < V; i++) l[i] = scale * rng.normal();
  return l;
}

/** Reference: softmax at temperature T, sort, cut to k, cut to mass p of what is left (HF's and llama.cpp's order), renormalise. */
function reference(logits: Float32Array, T: number, k: number, p: number): Map<number, number> {
  const V = logits.length;
  const m = Math.max(...logits);
  const w = Array.from(logits, (x) => Math.exp((x - m) / T));
  let order = Array.from({ length: V }, (_, i) => i).sort((a, b) => w[b]! - w[a]! || a - b);
  if (k > 0) order = order.slice(0, k);
  if (p < 1) {
    const z = order.reduce((s, i) => s + w[i]!, 0);
    const full = order.map((i) => w[i]! / z);
    let acc = 0;
    let n = order.length;
    for (let i = 0; i < full.length; i++) { acc += full[i]!; if (acc >= p) { n = i + 1; break; } }
    order = order.slice(0, n);
  }
  const kept = order.reduce((s, i) => s + w[i]!, 0);
  return new Map(order.map((i) => [i, w[i]! / kept]));
}

test('greedy: temperature 0 and top-k 1 both pick the arg-max, ties to the lower id', () => {
  const rng = new Rng(1);
  for (let trial = 0; trial < 20; trial++) {
    const l = randomLogits(rng, 50);
    const best = argmax(l);
    assert.equal(Math.max(...l), l[best]);
    assert.equal(new Sampler({ temperature: 0 }).sample(l), best);
    assert.equal(new Sampler({ temperature: 1.5, topK: 1, seed: trial }).sample(l), best);
  }
  assert.equal(argmax(Float32Array.of(1, 3, 3, 2)), 1);
  // a row at an offset of a [T, V] buffer
  assert.equal(new Sampler().sample(Float32Array.of(9, 0, 0, 1, 5, 2), 3, 3), 1);
});

test('candidates match the reference for temperature, top-k, top-p and their combinations', () => {
  const rng = new Rng(2);
  const settings: Array<[number, number, number]> = [[1, 0, 1], [0.5, 0, 1], [2, 0, 1], [1, 5, 1], [0.7, 3, 1], [1, 0, 0.9], [1, 0, 0.3], [0.8, 10, 0.7], [1, 200, 1], [1, 100, 0.95], [1, 1000, 1]];
  for (const [T, k, p] of settings) {
    for (let trial = 0; trial < 5; trial++) {
      const l = randomLogits(rng, 300);
      const c = new Sampler({ temperature: T, topK: k, topP: p }).candidates(l);
      const ref = reference(l, T, k, p);
      assert.equal(c.ids.length, ref.size, `T=${T} k=${k} p=${p}: candidate count`);
      let sum = 0;
      for (let i = 0; i < c.ids.length; i++) {
        const r = ref.get(c.ids[i]!);
        assert.ok(r !== undefined, `T=${T} k=${k} p=${p}: id ${c.ids[i]} is not a reference candidate`);
        assert.ok(Math.abs(c.probs[i]! - r) < 1e-9, `T=${T} k=${k} p=${p}: prob of ${c.ids[i]}: ${c.probs[i]} vs ${r}`);
        if (i > 0 && ((k > 0 && k < l.length) || p < 1)) assert.ok(c.probs[i]! <= c.probs[i - 1]!, 'most likely first');
        sum += c.probs[i]!;
      }
      assert.ok(Math.abs(sum - 1) < 1e-9);
    }
  }
});

test('top-p keeps the smallest most-likely set whose mass reaches p', () => {
  const probs = [0.05, 0.5, 0.15, 0.3]; // sorted: id 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
  const l = Float32Array.from(probs, Math.log);
  const kept = (p: number): number[] => [...new Sampler({ temperature: 1, topP: p }).candidates(l).ids];
  assert.deepEqual(kept(0.4), [1]);
  assert.deepEqual(kept(0.5 - 1e-6), [1]);
  assert.deepEqual(kept(0.6), [1, 3]);
  assert.deepEqual(kept(0.79), [1, 3]);
  assert.deepEqual(kept(0.81), [1, 3, 2]);
  assert.deepEqual(kept(0.96), [1, 3, 2, 0]);
  assert.deepEqual(kept(1), [0, 1, 2, 3]); // off: every token, in id order
  const c = new Sampler({ temperature: 1, topP: 0.6 }).candidates(l);
  assert.ok(Math.abs(c.probs[0]! - 0.5 / 0.8) < 1e-6 && Math.abs(c.probs[1]! - 0.3 / 0.8) < 1e-6);
  // -Infinity logits (masked tokens) are never candidates
  assert.deepEqual([...new Sampler({ temperature: 1 }).candidates(Float32Array.of(0, -Infinity, 0)).ids], [0, 2]);
});

test('draw counts match the probabilities within 4.5 binomial standard deviations', () => {
  const N = 20000;
  const rng = new Rng(3);
  for (const opts of [{ temperature: 1 }, { temperature: 0.7, topK: 5 }, { temperature: 1.3, topP: 0.8 }, { temperature: 1, topK: 8, topP: 0.9 }]) {
    const l = randomLogits(rng, 20, 1.5);
    const s = new Sampler({ ...opts, seed: 42 });
    const c = s.candidates(l);
    const counts = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const id = s.sample(l);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const allowed = new Set(c.ids);
    for (const id of counts.keys()) assert.ok(allowed.has(id), `${JSON.stringify(opts)}: drew ${id}, which is not a candidate`);
    for (let i = 0; i < c.ids.length; i++) {
      const p = c.probs[i]!;
      const sd = Math.sqrt(N * p * (1 - p));
      const got = counts.get(c.ids[i]!) ?? 0;
      assert.ok(Math.abs(got - N * p) <= 4.5 * sd + 1, `${JSON.stringify(opts)}: id ${c.ids[i]} drawn ${got} times, expected ${(N * p).toFixed(1)} ± ${sd.toFixed(1)}`);
    }
  }
});

test('seeds: the same seed gives the same ids, another seed other ids', () => {
  const l = randomLogits(new Rng(4), 100, 1);
  const draw = (seed: number): number[] => {
    const s = new Sampler({ temperature: 1, topP: 0.95, seed });
    return Array.from({ length: 50 }, () => s.sample(l));
  };
  assert.deepEqual(draw(5), draw(5));
  assert.notDeepEqual(draw(5), draw(6));
});

test('sampler: bad options and non-finite logits are clear errors', () => {
  assert.throws(() => new Sampler({ temperature: -1 }), /temperature must be a finite number >= 0/);
  assert.throws(() => new Sampler({ temperature: NaN }), /temperature/);
  assert.throws(() => new Sampler({ topK: 1.5 }), /topK must be a non-negative integer/);
  assert.throws(() => new Sampler({ topP: 0 }), /topP must be in \(0, 1\]/);
  assert.throws(() => new Sampler({ topP: 1.2 }), /topP/);
  assert.throws(() => new Sampler({ seed: 0.5 }), /seed must be an integer/);
  assert.throws(() => new Sampler().sample(Float32Array.of(0, NaN)), /logit 1 is NaN/);
  assert.throws(() => new Sampler({ temperature: 1 }).sample(Float32Array.of(-Infinity, -Infinity)), /every logit is -Infinity/);
  assert.throws(() => new Sampler().sample(new Float32Array(0)), /does not fit/);
  assert.throws(() => new Sampler().sample(new Float32Array(4), 2, 4), /does not fit/);
});
