// Module: a tree of named parameters and submodules with a train/eval mode (PyTorch's nn.Module).

import type { Tensor } from '../tensor/tensor.js';
import type { DType } from '../tensor/dtype.js';
import { deriveSeed } from '../tensor/rng.js';

export abstract class Module {
  training = true;
  private readonly params = new Map<string, Tensor>();
  private readonly buffers = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  /** Registers t as a trainable parameter under name; returns it. */
  protected param(name: string, t: Tensor): Tensor {
    if (this.params.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is registered twice`);
    t.requireGrad();
    t.name = name;
    this.params.set(name, t);
    return t;
  }

  /**
   * Registers t as a buffer: state that is saved and loaded with the parameters but not trained
   * by gradients (e.g. a router's balancing bias). Returns it.
   */
  protected buffer(name: string, t: Tensor): Tensor {
    if (this.params.has(name) || this.buffers.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is registered twice`);
    t.name = name;
    this.buffers.set(name, t);
    return t;
  }

  /** Registers a submodule under name; returns it. */
  protected module<M extends Module>(name: string, m: M): M {
    if (this.params.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is registered twice`);
    this.children.set(name, m);
    return m;
  }

  /** Parameters with dotted names ('blocks.0.moe.router.weight'), in registration order. */
  namedParameters(prefix = ''): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [n, p] of this.params) out.push([prefix + n, p]);
    for (const [n, c] of this.children) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Buffers with dotted names, in registration order. */
  namedBuffers(prefix = ''): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [n, b] of this.buffers) out.push([prefix + n, b]);
    for (const [n, c] of this.children) out.push(...c.namedBuffers(`${prefix}${n}.`));
    return out;
  }

  /** Parameters and buffers: everything a checkpoint holds for this module. */
  stateDict(): Array<[string, Tensor]> {
    return [...this.namedParameters(), ...this.namedBuffers()];
  }

  /** This module and every submodule, depth first, with dotted names ('' for this one). */
  namedModules(prefix = ''): Array<[string, Module]> {
    const out: Array<[string, Module]> = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, c] of this.children) out.push(...c.namedModules(`${prefix}${n}.`));
    return out;
  }

  /**
   * Restarts every random stream in the tree (router noise, jitter, dropout) from seed. The
   * trainer calls it each step with a seed derived from (run seed, step): a resumed run then
   * draws exactly the numbers an uninterrupted one would.
   */
  reseedAll(seed: number): void {
    this.namedModules().forEach(([, m], i) => {
      const r = (m as unknown as { reseed?: (s: number) => void }).reseed;
      if (typeof r === 'function') r.call(m, deriveSeed(seed, i));
    });
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  numParameters(): number {
    return this.parameters().reduce((s, p) => s + p.size, 0);
  }

  train(flag = true): this {
    this.training = flag;
    for (const c of this.children.values()) c.train(flag);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Casts every parameter to a float dtype in place (float64 for exact gradient checks on js). */
  to(dtype: DType): this {
    for (const [, p] of this.stateDict()) p.castInPlace(dtype);
    return this;
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }
}
