// Expert parallelism for the MoE decoder that `moe serve` / `moe generate` run (models/moe-decoder.ts):
// every SparseMoeBlock's routed experts move to N worker threads, E/N experts each, through the
// block's public hook for other expert storage (setExperts with an OffloadedExperts stack, the
// kind the expert cache uses). The workers hold the only copy of the expert weights (in shared
// memory, transposed once to the expert bank's [E, d, h] layout); the router, attention, shared
// experts and the rest stay on the main thread. Float32 stacks only: quantised experts would need
// the quantised kernels on the workers (not done).
//
// Why this works through OffloadedExperts: expertSwiGLU (moe-decoder-weights.ts) hands the three
// stacks of one layer, when they are OffloadedExperts of one `experts` object, to its
// mlp(rows, groupSizes, act), with the rows already grouped by expert; the workers run that MLP
// (silu(x W1) * x W3, then W2; the decoder's act is this SwiGLU). The `experts` object is typed as
// the cache's LayerExperts class but only needs the members OffloadedExperts reads; see
// /work/notes/requests-ep.md for the interface that would make this a declared hook.

import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import type { Module } from '../nn/module.js';
import { ExpertBank } from '../moe/experts/bank.js';
import { planDispatch } from '../moe/permute/bins.js';
import { SparseMoeBlock } from '../models/moe-decoder.js';
import { OffloadedExperts, type LayerExperts } from '../infer/expert-cache.js';
import { ExpertParallel, type ExpertHost, type ExpertParallelOptions } from './expert-parallel.js';

interface Attached {
  name: string;
  block: SparseMoeBlock;
  host: ExpertHost;
}

export class DecoderExpertParallel {
  private closed = false;

  private constructor(readonly ep: ExpertParallel, private readonly attached: Attached[]) {}

  /** Moves every MoE block's routed experts of `model` onto `opts.workers` threads. */
  static attach(model: Module, opts: ExpertParallelOptions): DecoderExpertParallel {
    const blocks = model.namedModules().filter((e): e is [string, SparseMoeBlock] => e[1] instanceof SparseMoeBlock);
    if (blocks.length === 0) throw new Error('expert-parallel: the model has no MoE block (SparseMoeBlock) to distribute');
    const attached: Attached[] = blocks.map(([name, block]) => ({ name, block, host: { experts: bankOf(name, block), routedExperts: null } }));
    const ep = new ExpertParallel(attached.map((a) => a.host), opts);
    for (const [i, a] of attached.entries()) {
      const { numExperts: E, dModel: d, dHidden: h } = a.host.experts;
      const experts = stackRunner(i, a, E, h, d);
      a.block.setExperts(new OffloadedExperts(experts, 0, [E, h, d]), new OffloadedExperts(experts, 1, [E, h, d]), new OffloadedExperts(experts, 2, [E, d, h]));
    }
    return new DecoderExpertParallel(ep, attached);
  }

  /**
   * Gives the blocks their float32 stacks back (copied out of shared memory, as [E, out, in]) and
   * stops the workers. The stacks are no longer registered parameters of their blocks (setExperts
   * dropped the registration; the decoder has no way to add it back), which inference does not use.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.attached) {
      const b = a.host.experts;
      a.block.setExperts(transposed(b.w1), transposed(b.w3!), transposed(b.w2));
    }
    await this.ep.close();
  }
}

/** A block's float32 stacks [E, out, in] as an expert bank [E, in, out] (SwiGLU, no biases). */
function bankOf(name: string, block: SparseMoeBlock): ExpertBank {
  const stacks = [block.w1, block.w3, block.w2] as const;
  for (const [j, w] of stacks.entries()) {
    if (!(w instanceof Tensor) || !(w.data instanceof Float32Array)) {
      const kind = w instanceof Tensor ? w.dtype : w instanceof OffloadedExperts ? 'offloaded to the model file (expert cache)' : `quantised (${(w as { type?: string }).type ?? 'unknown'})`;
      throw new Error(`expert-parallel: ${name}.${['w1', 'w3', 'w2'][j]} is ${kind}; the workers run float32 expert stacks only (load the model as f32, f16 or bf16, without an expert budget)`);
    }
  }
  const [E, h, d] = (block.w1 as Tensor).shape as [number, number, number];
  const bank = new ExpertBank(E, d, h, { activation: 'swiglu' });
  bank.w1.data.set(transposed(block.w1 as Tensor).data);
  bank.w3!.data.set(transposed(block.w3 as Tensor).data);
  bank.w2.data.set(transposed(block.w2 as Tensor).data);
  return bank;
}

/** [E, a, b] -> [E, b, a], float32. */
function transposed(w: Tensor): Tensor {
  const [E, a, b] = w.shape as [number, number, number];
  const src = w.data as Float32Array;
  const out = new Float32Array(src.length);
  for (let e = 0; e < E; e++) {
    const o = e * a * b;
    for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) out[o + j * a + i] = src[o + i * b + j]!;
  }
  return new Tensor(out, [E, b, a]);
}

/**
 * The object the three OffloadedExperts stacks of a block share: mlp() sends the grouped rows to
 * the workers as tokens of their own (row r is token r, gate 1), so each row comes back as its
 * expert's output, unweighted, as expertSwiGLU returns it.
 */
function stackRunner(index: number, a: Attached, E: number, h: number, d: number): LayerExperts {
  const runner = {
    layer: index,
    numExperts: E,
    projBytes: (): number => 4 * h * d,
    linear(): Tensor {
      throw new Error(`expert-parallel: ${a.name}'s experts run on the workers as one SwiGLU MLP; a single projection is not available`);
    },
    mlp(x: Tensor, groupSizes: Int32Array): Tensor {
      const rows = x.shape[0]!;
      if (groupSizes.length !== E) throw new Error(`expert-parallel: ${a.name}: ${groupSizes.length} group sizes for ${E} experts`);
      const token = Int32Array.from({ length: rows }, (_, r) => r);
      const expert = new Int32Array(rows);
      for (let e = 0, r = 0; e < E; e++) for (let j = 0; j < groupSizes[e]!; j++) expert[r++] = e;
      const gates = new Float32Array(rows).fill(1);
      // rows are already grouped by expert in order: the plan keeps that order (tokenOfRow = r)
      const plan = planDispatch(token, expert, gates, E, null);
      return noGrad(() => a.host.routedExperts!(x, plan, new Tensor(gates, [rows])));
    },
  };
  return runner as unknown as LayerExperts;
}
