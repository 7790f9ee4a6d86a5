// Expert parallelism for the MoE decoder that `moe serve` / `moe generate` run (models/moe-decoder.ts):
// every SparseMoeBlock's routed experts move to N worker threads, E/N experts each, through the
// block's public hook for other expert storage (setExperts with an OffloadedExperts stack, the
// kind the expert cache uses). The workers hold the only copy of the expert stacks, as stored
// (float32 or Q8_0/Q4_0 blocks, in shared memory: expert-stacks.ts), and run the decoder's own
// expertSwiGLU on their experts' rows, so the logits equal one process's bit for bit; the router,
// attention, shared experts and the rest stay on the main thread.
//
// Why this works through OffloadedExperts: expertSwiGLU (moe-decoder-weights.ts) hands the three
// stacks of one layer, when they are OffloadedExperts of one ExpertStackHost, to its
// mlp(rows, groupSizes, act), with the rows already grouped by expert; the workers run that MLP.

import { Tensor } from '../tensor/tensor.js';
import type { Module } from '../nn/module.js';
import { planDispatch } from '../moe/permute/bins.js';
import type { RoutedExperts } from '../moe/layer.js';
import { SparseMoeBlock } from '../models/moe-decoder.js';
import { OffloadedExperts, type ExpertStackHost } from '../infer/expert-cache.js';
import { ExpertParallel, type ExpertParallelOptions } from './expert-parallel.js';
import { ExpertStacks } from './expert-stacks.js';

interface Attached {
  name: string;
  block: SparseMoeBlock;
  host: { readonly experts: ExpertStacks; routedExperts: RoutedExperts | null };
}

export class DecoderExpertParallel {
  private closed = false;

  private constructor(readonly ep: ExpertParallel, private readonly attached: Attached[]) {}

  /** Moves every MoE block's routed experts of `model` onto `opts.workers` threads. */
  static attach(model: Module, opts: ExpertParallelOptions): DecoderExpertParallel {
    const blocks = model.namedModules().filter((e): e is [string, SparseMoeBlock] => e[1] instanceof SparseMoeBlock);
    if (blocks.length === 0) throw new Error('expert-parallel: the model has no MoE block (SparseMoeBlock) to distribute');
    const attached: Attached[] = blocks.map(([name, block]) => ({ name, block, host: { experts: new ExpertStacks(name, [block.w1, block.w3, block.w2]), routedExperts: null } }));
    const ep = new ExpertParallel(attached.map((a) => a.host), opts);
    for (const [i, a] of attached.entries()) {
      const { numExperts: E, dModel: d, dHidden: h } = a.host.experts;
      const experts = stackRunner(i, a, E);
      a.block.setExperts(new OffloadedExperts(experts, 0, [E, h, d]), new OffloadedExperts(experts, 1, [E, h, d]), new OffloadedExperts(experts, 2, [E, d, h]));
    }
    return new DecoderExpertParallel(ep, attached);
  }

  /**
   * Gives the blocks their stacks back (copied out of shared memory, in their stored format) and
   * stops the workers. Float32 stacks are no longer registered parameters of their blocks
   * (setExperts dropped the registration; the decoder has no way to add it back), which inference
   * does not use.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.attached) a.block.setExperts(...a.host.experts.weights());
    await this.ep.close();
  }
}

/**
 * The object the three OffloadedExperts stacks of a block share: mlp() sends the grouped rows to
 * the workers as tokens of their own (row r is token r, gate 1), so each row comes back as its
 * expert's output, unweighted, as expertSwiGLU returns it.
 */
function stackRunner(index: number, a: Attached, E: number): ExpertStackHost {
  return {
    layer: index,
    numExperts: E,
    where: `held by the expert-parallel workers (${a.name})`,
    // bytes of one expert's projection p as held (float32 or blocks): OffloadedExperts.bytes, weight accounting
    projBytes: (p: number): number => a.host.experts.message.buffers[p]!.byteLength / E,
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
      // no noGrad here: rows that want a gradient make the exchange refuse (inference only) instead of dropping it
      return a.host.routedExperts!(x, plan, new Tensor(gates, [rows]));
    },
  };
}
