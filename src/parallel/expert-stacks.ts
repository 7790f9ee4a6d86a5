// The MoE decoder's routed expert stacks as stored (gate and up [E, h, d], down [E, d, h]; float32
// values or Q8_0/Q4_0 blocks) in shared memory, for expert-parallel inference: the workers run
// the decoder's own expertSwiGLU on views of their experts' rows of these stacks, so a row's
// result is the one the one-process decoder computes, bit for bit, whatever the format.

import { Tensor } from '../tensor/tensor.js';
import { QuantWeight } from '../infer/quant/index.js';
import { quantizedBytes } from '../tensor/quant-blocks.js';
import { shapeStr } from '../tensor/shape.js';
import { OffloadedExperts } from '../infer/expert-cache.js';

/** How a stack's values are stored. */
export type StackFormat = 'f32' | 'q8_0' | 'q4_0';

/** What a worker gets: the three stacks' shared buffers, their format and [out, in] per projection. */
export interface StacksMessage {
  format: StackFormat;
  /** gate, up, down. */
  buffers: [SharedArrayBuffer, SharedArrayBuffer, SharedArrayBuffer];
  shapes: [[number, number], [number, number], [number, number]];
}

const PROJ = ['w1', 'w3', 'w2'] as const;

/** Bytes of one expert's [out, in] matrix in `format`. */
function expertBytes(format: StackFormat, out: number, inner: number): number {
  return format === 'f32' ? out * inner * 4 : quantizedBytes(format, out * inner);
}

/** Projection p's stack, experts [e0, e1), as a weight the decoder's kernels take: a view, not a copy. */
export function stackSlice(m: StacksMessage, p: 0 | 1 | 2, e0: number, e1: number): Tensor | QuantWeight {
  const [out, inner] = m.shapes[p];
  const per = expertBytes(m.format, out, inner);
  const shape = [e1 - e0, out, inner];
  if (m.format === 'f32') return new Tensor(new Float32Array(m.buffers[p], e0 * per, (e1 - e0) * out * inner), shape);
  return new QuantWeight(m.format, shape, new Uint8Array(m.buffers[p], e0 * per, (e1 - e0) * per));
}

export class ExpertStacks {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dHidden: number;
  readonly message: StacksMessage;

  /**
   * Copies a block's three stacks (gate w1 [E, h, d], up w3 [E, h, d], down w2 [E, d, h]) into
   * shared memory. All three must be float32 tensors, or QuantWeights of one block type; anything
   * else (float64, offloaded experts, mixed formats, wrong shapes) is refused naming the weight.
   */
  constructor(name: string, stacks: readonly [unknown, unknown, unknown]) {
    const format = stacks.map((w, j) => formatOf(`${name}.${PROJ[j]}`, w));
    if (format[1] !== format[0] || format[2] !== format[0]) {
      throw new Error(`expert-parallel: ${name}'s expert stacks mix formats (w1 ${format[0]}, w3 ${format[1]}, w2 ${format[2]}); the workers need one format`);
    }
    const shapes = stacks.map((w) => (w as Tensor | QuantWeight).shape);
    const [E, h, d] = shapes[0] as [number, number, number];
    const want = [[E, h, d], [E, h, d], [E, d, h]];
    shapes.forEach((s, j) => {
      if (s.length !== 3 || s.some((v, i) => v !== want[j]![i])) {
        throw new Error(`expert-parallel: ${name}.${PROJ[j]} has shape ${shapeStr(s)}, expected ${shapeStr(want[j]!)} (gate and up [E, h, d], down [E, d, h])`);
      }
    });
    const f = format[0]!;
    const buffers = stacks.map((w) => {
      const src = w instanceof Tensor ? new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength) : (w as QuantWeight).data;
      const sab = new SharedArrayBuffer(src.byteLength);
      new Uint8Array(sab).set(src);
      return sab;
    });
    this.numExperts = E;
    this.dModel = d;
    this.dHidden = h;
    this.message = { format: f, buffers: buffers as StacksMessage['buffers'], shapes: [[h, d], [h, d], [d, h]] };
  }

  get format(): StackFormat {
    return this.message.format;
  }

  /** Bytes of the three stacks as held. */
  get bytes(): number {
    return this.message.buffers.reduce((a, b) => a + b.byteLength, 0);
  }

  /** The three stacks as private weights (copies out of shared memory): what a block gets back on close. */
  weights(): [Tensor | QuantWeight, Tensor | QuantWeight, Tensor | QuantWeight] {
    return ([0, 1, 2] as const).map((p) => {
      const w = stackSlice(this.message, p, 0, this.numExperts);
      return w instanceof Tensor ? new Tensor((w.data as Float32Array).slice(), [...w.shape]) : new QuantWeight(w.type, w.shape, w.data.slice());
    }) as [Tensor | QuantWeight, Tensor | QuantWeight, Tensor | QuantWeight];
  }
}

function formatOf(name: string, w: unknown): StackFormat {
  if (w instanceof QuantWeight) return w.type;
  if (w instanceof Tensor) {
    if (w.data instanceof Float32Array) return 'f32';
    throw new Error(`expert-parallel: ${name} is ${w.dtype}; the workers run float32 or Q8_0/Q4_0 expert stacks (load the model as f32, f16, bf16, q8_0 or q4_0)`);
  }
  const kind = w instanceof OffloadedExperts ? 'offloaded to the model file (expert cache)' : `not an expert stack (${typeof w})`;
  throw new Error(`expert-parallel: ${name} is ${kind}; the workers need the stacks in memory (run without an expert budget, --expert-memory)`);
}
