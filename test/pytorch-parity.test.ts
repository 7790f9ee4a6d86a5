// PyTorch parity: fixtures written by reference/moe_fixtures.py (Mixtral top-2 block, Switch with
// capacity drops and z-loss, Soft MoE); outputs and all gradients within relative error 1e-4.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Tensor, ops, withBackend, moe } from '../src/index.js';
import { backendsUnderTest } from './helpers.js';

interface Fixture {
  meta: Record<string, number>;
  [name: string]: { shape: number[]; data: number[] } | Record<string, number>;
}

function load(name: string): Fixture {
  return JSON.parse(readFileSync(new URL(`../../test/fixtures/${name}.json`, import.meta.url), 'utf8')) as Fixture;
}

function t(f: Fixture, key: string): Tensor {
  const e = f[key] as { shape: number[]; data: number[] } | undefined;
  if (!e || !('shape' in e)) throw new Error(`fixture has no tensor '${key}'`);
  return ops.tensor(Float32Array.from(e.data), e.shape);
}

/** max |a - b| / max |b| <= 1e-4. */
function assertRel(actual: Tensor, expected: Tensor, what: string): void {
  assert.deepEqual([...actual.shape], [...expected.shape], `${what}: shape`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.size; i++) {
    num = Math.max(num, Math.abs(actual.data[i]! - expected.data[i]!));
    den = Math.max(den, Math.abs(expected.data[i]!));
  }
  const rel = den > 0 ? num / den : num;
  assert.ok(rel <= 1e-4, `${what}: relative error ${rel.toExponential(2)} > 1e-4`);
}

function setParam(p: Tensor, v: Tensor): void {
  assert.equal(p.size, v.size, `parameter ${p.name}: ${p.size} vs fixture ${v.size}`);
  p.data.set(v.data);
}

for (const backend of backendsUnderTest()) {
  test(`Mixtral-style top-2 block matches PyTorch (${backend})`, () => {
    withBackend(backend, () => {
      const f = load('mixtral_top2');
      const { d, h, E, k } = f.meta as Record<string, number>;
      const layer = new moe.MoELayer({ dModel: d!, dFF: h!, numExperts: E!, router: { type: 'topk', k: k!, normalize: true }, activation: 'swiglu', loadBalanceCoef: 0.01, zLossCoef: 0.001 });
      setParam(layer.router.parameters()[0]!, t(f, 'router'));
      setParam(layer.experts.w1, t(f, 'w1'));
      setParam(layer.experts.w3!, t(f, 'w3'));
      setParam(layer.experts.w2, t(f, 'w2'));
      const x = t(f, 'x').requireGrad();
      const out = layer.forward(x);
      assertRel(out.y, t(f, 'y'), 'y');
      assertRel(out.losses['loadBalance']!, ops.reshape(t(f, 'loadBalance'), []), 'load balance');
      assertRel(out.losses['zLoss']!, ops.reshape(t(f, 'zLoss'), []), 'z-loss');
      const L = ops.add(ops.sum(ops.mul(out.y, t(f, 'G'))), out.auxLoss);
      assertRel(ops.reshape(L, [1]), t(f, 'loss'), 'loss');
      L.backward();
      assertRel(x.grad!, t(f, 'dx'), 'dx');
      assertRel(layer.router.parameters()[0]!.grad!, t(f, 'drouter'), 'd router');
      assertRel(layer.experts.w1.grad!, t(f, 'dw1'), 'dw1');
      assertRel(layer.experts.w3!.grad!, t(f, 'dw3'), 'dw3');
      assertRel(layer.experts.w2.grad!, t(f, 'dw2'), 'dw2');
    });
  });

  test(`Switch router with capacity, drops and z-loss matches PyTorch (${backend})`, () => {
    withBackend(backend, () => {
      const f = load('switch_capacity');
      const { d, h, E, capacityFactor, capacity, dropped } = f.meta as Record<string, number>;
      assert.ok(dropped! > 0, 'the fixture must exercise drops');
      const layer = new moe.MoELayer({ dModel: d!, dFF: h!, numExperts: E!, router: { type: 'switch' }, capacityFactor: capacityFactor!, dropPolicy: 'position', loadBalanceCoef: 0.01, zLossCoef: 0.001 });
      setParam(layer.router.parameters()[0]!, t(f, 'router'));
      setParam(layer.experts.w1, t(f, 'w1'));
      setParam(layer.experts.w2, t(f, 'w2'));
      const x = t(f, 'x').requireGrad();
      const out = layer.forward(x);
      assert.equal(out.plan.capacity, capacity);
      assert.equal(out.plan.dropped, dropped);
      assert.deepEqual([...out.plan.kept], [...t(f, 'kept').data]);
      assert.deepEqual([...out.routing.expert], [...t(f, 'expert').data]);
      assertRel(out.y, t(f, 'y'), 'y');
      assertRel(out.losses['loadBalance']!, ops.reshape(t(f, 'loadBalance'), []), 'load balance');
      assertRel(out.losses['zLoss']!, ops.reshape(t(f, 'zLoss'), []), 'z-loss');
      const L = ops.add(ops.sum(ops.mul(out.y, t(f, 'G'))), out.auxLoss);
      assertRel(ops.reshape(L, [1]), t(f, 'loss'), 'loss');
      L.backward();
      assertRel(x.grad!, t(f, 'dx'), 'dx');
      assertRel(layer.router.parameters()[0]!.grad!, t(f, 'drouter'), 'd router');
      assertRel(layer.experts.w1.grad!, t(f, 'dw1'), 'dw1');
      assertRel(layer.experts.w2.grad!, t(f, 'dw2'), 'dw2');
    });
  });

  test(`Soft MoE layer matches PyTorch (${backend})`, () => {
    withBackend(backend, () => {
      const f = load('soft_moe');
      const { d, n, p, h } = f.meta as Record<string, number>;
      const layer = new moe.SoftMoELayer({ dModel: d!, numExperts: n!, slotsPerExpert: p!, dFF: h!, activation: 'gelu' });
      setParam(layer.phi, t(f, 'phi'));
      setParam(layer.scale!, t(f, 'scale'));
      setParam(layer.experts.w1, t(f, 'w1'));
      setParam(layer.experts.w2, t(f, 'w2'));
      const x = t(f, 'x').requireGrad();
      const out = layer.forward(x);
      assertRel(out.dispatch, t(f, 'D'), 'D');
      assertRel(out.combine, t(f, 'C'), 'C');
      assertRel(out.y, t(f, 'y'), 'y');
      const L = ops.sum(ops.mul(out.y, t(f, 'G')));
      L.backward();
      assertRel(x.grad!, t(f, 'dx'), 'dx');
      assertRel(layer.phi.grad!, t(f, 'dphi'), 'dphi');
      assertRel(layer.scale!.grad!, t(f, 'dscale'), 'dscale');
      assertRel(layer.experts.w1.grad!, t(f, 'dw1'), 'dw1');
      assertRel(layer.experts.w2.grad!, t(f, 'dw2'), 'dw2');
    });
  });
}
