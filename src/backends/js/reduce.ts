// Reference kernels along one axis of [outer, dim, inner]: softmax, reductions, top-k.

import type { KernelImpls } from '../../kernels/kernels.js';

export const softmax: KernelImpls['softmax'] = (x, out, outer, dim, inner, log) => {
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * dim * inner + i;
      let mx = -Infinity;
      for (let j = 0; j < dim; j++) mx = Math.max(mx, x[base + j * inner]!);
      let s = 0;
      for (let j = 0; j < dim; j++) s += Math.exp(x[base + j * inner]! - mx);
      if (log) {
        const lse = mx + Math.log(s);
        for (let j = 0; j < dim; j++) out[base + j * inner] = x[base + j * inner]! - lse;
      } else {
        for (let j = 0; j < dim; j++) out[base + j * inner] = Math.exp(x[base + j * inner]! - mx) / s;
      }
    }
  }
};

export const softmaxBackward: KernelImpls['softmaxBackward'] = (y, dy, dx, outer, dim, inner, log) => {
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * dim * inner + i;
      let s = 0;
      if (log) {
        for (let j = 0; j < dim; j++) s += dy[base + j * inner]!;
        for (let j = 0; j < dim; j++) {
          const k = base + j * inner;
          dx[k] = dy[k]! - Math.exp(y[k]!) * s;
        }
      } else {
        for (let j = 0; j < dim; j++) s += dy[base + j * inner]! * y[base + j * inner]!;
        for (let j = 0; j < dim; j++) {
          const k = base + j * inner;
          dx[k] = y[k]! * (dy[k]! - s);
        }
      }
    }
  }
};

export const reduce: KernelImpls['reduce'] = (op, x, out, arg, outer, dim, inner) => {
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * dim * inner + i;
      if (op === 'max') {
        let best = -Infinity;
        let at = 0;
        for (let j = 0; j < dim; j++) {
          const v = x[base + j * inner]!;
          // NaN propagates, like torch.max
          if (v > best || Number.isNaN(v)) { best = v; at = j; if (Number.isNaN(v)) break; }
        }
        out[o * inner + i] = best;
        if (arg) arg[o * inner + i] = at;
      } else {
        let s = 0;
        for (let j = 0; j < dim; j++) s += x[base + j * inner]!;
        out[o * inner + i] = op === 'mean' ? s / dim : s;
      }
    }
  }
};

export const scatterArg: KernelImpls['scatterArg'] = (dy, arg, out, outer, dim, inner) => {
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      out[o * dim * inner + arg[o * inner + i]! * inner + i] += dy[o * inner + i]!;
    }
  }
};

export const topk: KernelImpls['topk'] = (x, values, indices, rows, n, k) => {
  // Insertion into a sorted buffer of k: O(n k), best for router sizes (small k).
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    const vo = r * k;
    let filled = 0;
    for (let j = 0; j < n; j++) {
      const v = x[base + j]!;
      if (filled === k && !(v > values[vo + k - 1]!)) continue;
      let p = filled < k ? filled++ : k - 1;
      // strict > keeps the earlier (lower) index ahead on ties
      while (p > 0 && v > values[vo + p - 1]!) {
        values[vo + p] = values[vo + p - 1]!;
        indices[vo + p] = indices[vo + p - 1]!;
        p--;
      }
      values[vo + p] = v;
      indices[vo + p] = j;
    }
  }
};

export const topkBackward: KernelImpls['topkBackward'] = (dy, indices, out, rows, n, k) => {
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < k; j++) out[r * n + indices[r * k + j]!] += dy[r * k + j]!;
  }
};
