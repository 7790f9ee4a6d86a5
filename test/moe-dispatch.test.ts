// Bins, permute and un-permute against a naive loop written here, exactly, over (T, d, E, k),
// including experts with no tokens, T=1, E=1, k=E, and capacity drops under both policies.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, ops, withBackend, moe } from '../src/index.js';
import { backendsUnderTest, randTensor } from './helpers.js';

const TABLE: Array<[number, number, number, number]> = [
  // T, d, E, k
  [1, 3, 1, 1], [1, 4, 4, 4], [5, 2, 3, 1], [7, 5, 4, 2], [16, 8, 8, 2], [9, 3, 6, 6], [12, 4, 16, 1], [0, 3, 4, 2],
];

/** Random assignments with each token choosing k distinct experts; some experts get none when E is large. */
function randomAssignments(rng: Rng, T: number, E: number, k: number): { token: Int32Array; expert: Int32Array; gates: Float32Array } {
  const token = new Int32Array(T * k);
  const expert = new Int32Array(T * k);
  const gates = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const perm = rng.permutation(E);
    for (let j = 0; j < k; j++) {
      token[t * k + j] = t;
      expert[t * k + j] = perm[j]!;
      gates[t * k + j] = rng.next();
    }
  }
  return { token, expert, gates };
}

for (const backend of backendsUnderTest()) {
  for (const [T, d, E, k] of TABLE) {
    for (const capacity of [null, 1, 2]) {
      for (const policy of ['position', 'probability'] as const) {
        if (capacity === null && policy === 'probability') continue;
        test(`dispatch T=${T} d=${d} E=${E} k=${k} capacity=${capacity} ${policy} on ${backend}`, () => {
          const rng = new Rng(T * 1000 + E * 10 + k);
          const a = randomAssignments(rng, T, E, k);
          const x = randTensor(rng, [T, d]);
          const y = randTensor(rng, [T * k, d]); // pretend expert outputs, one row per assignment

          // naive: per expert, the assignments in order; keep by policy up to capacity
          const keep = new Uint8Array(T * k);
          const expectedOrder: number[] = [];
          for (let e = 0; e < E; e++) {
            let mine = [...Array(T * k).keys()].filter((i) => a.expert[i] === e);
            if (capacity !== null && mine.length > capacity) {
              mine = policy === 'position' ? mine.slice(0, capacity) : [...mine].sort((p, q) => a.gates[q]! - a.gates[p]! || p - q).slice(0, capacity).sort((p, q) => p - q);
            }
            for (const i of mine) { keep[i] = 1; expectedOrder.push(i); }
          }
          const plan = moe.planDispatch(a.token, a.expert, a.gates, E, capacity, policy);
          assert.deepEqual([...plan.order], expectedOrder);
          assert.deepEqual([...plan.kept], [...keep]);
          assert.equal(plan.dropped, T * k - expectedOrder.length);
          for (let e = 0; e < E; e++) {
            assert.equal(plan.groupSizes[e], expectedOrder.filter((i) => a.expert[i] === e).length);
            assert.equal(plan.demand[e], [...a.expert].filter((v) => v === e).length);
          }

          withBackend(backend, () => {
            // permute: row r is x[token of the r-th kept assignment]
            const xp = moe.permute(x, plan);
            const expectX = new Float32Array(expectedOrder.length * d);
            expectedOrder.forEach((i, r) => expectX.set(x.data.subarray(a.token[i]! * d, (a.token[i]! + 1) * d), r * d));
            assert.deepEqual([...xp.data], [...expectX]);

            // unpermute: out[t] = sum over kept assignments i of token t: gate_i * yrows[r(i)]
            const yp = ops.gatherRows(y, Int32Array.from(expectedOrder));
            const gates = ops.tensor(a.gates);
            const out = moe.unpermute(yp, gates, plan, T);
            const expectOut = new Float32Array(T * d);
            expectedOrder.forEach((i, r) => {
              const t = a.token[i]!;
              for (let j = 0; j < d; j++) expectOut[t * d + j] = expectOut[t * d + j]! + Math.fround(a.gates[i]! * yp.data[r * d + j]!);
            });
            // same operations in the same order: equal bit for bit
            assert.deepEqual([...out.data], [...expectOut]);
          });
        });
      }
    }
  }
}

test('expertCapacity is ceil(cf * T * k / E)', () => {
  assert.equal(moe.expertCapacity(1.0, 64, 8), 8);
  assert.equal(moe.expertCapacity(1.25, 64 * 2, 8), 20);
  assert.equal(moe.expertCapacity(1.0, 10, 3), 4);
  assert.equal(moe.expertCapacity(0.5, 1, 4), 1);
});

test('planDispatch rejects an expert index out of range', () => {
  assert.throws(() => moe.planDispatch(Int32Array.of(0), Int32Array.of(4), [1], 4, null), /expert index 4 at assignment 0 is out of range \[0, 4\)/);
});

void Tensor;
