// Reverse-mode autograd. Every op that sees an input requiring gradients records a node (its
// inputs and a backward closure) on its output; backward() orders the recorded nodes
// topologically from the root and replays their closures in reverse: the tape, rebuilt from
// the graph so that unused branches are freed by the garbage collector.

import type { Tensor } from './tensor.js';
import { shapeStr, shapesEqual } from './shape.js';

/** Given the gradient of the output, returns one gradient per input (null where none flows). */
export type BackwardFn = (gradOut: Tensor) => ReadonlyArray<Tensor | null>;

/** What a backward closure keeps alive: tensors or raw index arrays. */
export type Saved = Tensor | Int32Array;

export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  readonly backward: BackwardFn;
  /** The buffers the backward closure holds (for memory accounting; declared by each op). */
  readonly saved: readonly Saved[];
}

let gradEnabled = true;
let retainingGraph = false;

/**
 * Inside a backward closure: whether the running backward keeps the graph for another backward
 * ({ retainGraph: true }). Without it an op may release what it saved once its closure has run (the
 * expert MLP gives its pre-activations back for reuse), as PyTorch frees saved tensors by default.
 */
export function isRetainingGraph(): boolean {
  return retainingGraph;
}

export interface BackwardOptions {
  /**
   * Keep everything the graph saved, so that backward can run through it again (default false: ops
   * that release their saved buffers refuse a second backward, naming this option).
   */
  retainGraph?: boolean;
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording: no node is created and outputs do not require gradients. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Hooks the add used to accumulate gradients; set by the ops module to avoid an import cycle. */
let accumulate: ((a: Tensor, b: Tensor) => Tensor) | null = null;
let cloneTensor: ((a: Tensor) => Tensor) | null = null;
export function setGradAccumulator(fn: (a: Tensor, b: Tensor) => Tensor, clone: (a: Tensor) => Tensor): void {
  accumulate = fn;
  cloneTensor = clone;
}

/**
 * Marks out as produced by op from inputs if any input requires a gradient. Returns out.
 * saved lists what the backward closure keeps alive, for savedForBackward().
 */
export function record(out: Tensor, op: string, inputs: readonly Tensor[], backward: BackwardFn, saved: readonly Saved[] = []): Tensor {
  if (!gradEnabled) return out;
  if (!inputs.some((t) => t.requiresGrad)) return out;
  out.requiresGrad = true;
  out.node = { op, inputs, backward, saved };
  return out;
}

export interface SavedEntry {
  op: string;
  shape: readonly number[];
  bytes: number;
}

/**
 * The memory the recorded graph behind roots keeps for backward: every buffer saved by an op,
 * counted once, except those of `exclude` (parameters and inputs, which live anyway).
 */
export function savedForBackward(roots: readonly Tensor[], exclude: readonly Tensor[] = []): { bytes: number; entries: SavedEntry[] } {
  const skip = new Set<ArrayBufferLike>(exclude.map((t) => t.data.buffer));
  const counted = new Set<ArrayBufferLike>();
  const seen = new Set<Tensor>();
  const entries: SavedEntry[] = [];
  let bytes = 0;
  const stack = roots.filter((r) => r.node);
  for (const r of stack) seen.add(r);
  while (stack.length > 0) {
    const t = stack.pop()!;
    const node = t.node!;
    for (const s of node.saved) {
      const buf = s instanceof Int32Array ? s : s.data;
      if (skip.has(buf.buffer) || counted.has(buf.buffer)) continue;
      counted.add(buf.buffer);
      bytes += buf.byteLength;
      entries.push({ op: node.op, shape: s instanceof Int32Array ? [s.length] : s.shape, bytes: buf.byteLength });
    }
    for (const x of node.inputs) {
      if (x.node && !seen.has(x)) {
        seen.add(x);
        stack.push(x);
      }
    }
  }
  return { bytes, entries };
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative post-order DFS: deep graphs (long sequences, many layers) must not overflow the stack.
  const stack: Array<[Tensor, number]> = [[root, 0]];
  seen.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t.node ? t.node.inputs : [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const child = inputs[i]!;
      if (child.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/** Back-propagates from root; leaves that require gradients accumulate into .grad. */
export function backward(root: Tensor, gradOut: Tensor, opts: BackwardOptions = {}): void {
  if (!accumulate) throw new Error('backward: ops module not loaded');
  if (!root.requiresGrad) throw new Error('backward: the tensor does not require gradients (no input of its graph has requiresGrad set)');
  if (!shapesEqual(root.shape, gradOut.shape)) {
    throw new Error(`backward: gradient shape ${shapeStr(gradOut.shape)} does not match tensor shape ${shapeStr(root.shape)}`);
  }
  const order = topoOrder(root);
  const grads = new Map<Tensor, Tensor>();
  grads.set(root, gradOut);
  const add = accumulate;
  const clone = cloneTensor!;
  // a backward closure may hand one tensor to several inputs (add passes g to both): a leaf's
  // .grad must own its buffer, or an in-place change to one (clipping) would alter the other
  const given = new Set<Tensor>();
  const prev = gradEnabled;
  const prevRetain = retainingGraph;
  gradEnabled = false; // no higher-order gradients: backward closures are not recorded
  retainingGraph = opts.retainGraph === true;
  try {
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i]!;
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      if (!t.node) {
        const own = given.has(g) || g.data.buffer === t.data.buffer ? clone(g) : g;
        given.add(own);
        t.grad = t.grad ? add(t.grad, own) : own;
        continue;
      }
      const inputGrads = t.node.backward(g);
      const inputs = t.node.inputs;
      for (let j = 0; j < inputs.length; j++) {
        const x = inputs[j]!;
        const gx = inputGrads[j];
        if (!x.requiresGrad || !gx) continue;
        if (!shapesEqual(gx.shape, x.shape)) {
          throw new Error(`backward of ${t.node.op}: gradient for input ${j} has shape ${shapeStr(gx.shape)}, input has shape ${shapeStr(x.shape)}`);
        }
        const acc = grads.get(x);
        grads.set(x, acc ? add(acc, gx) : gx);
      }
    }
  } finally {
    gradEnabled = prev;
    retainingGraph = prevRetain;
  }
}
