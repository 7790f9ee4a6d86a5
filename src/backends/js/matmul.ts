// Reference matrix products: plain loops, the definition that native GEMMs are tested against.

import type { KernelImpls } from '../../kernels/kernels.js';
import type { FloatArray } from '../../tensor/dtype.js';
import { unaryFn } from './elementwise.js';

type F = FloatArray;

/** out[oOff..] (+)= op(A) @ op(B) for one m x n block; the i-p-j order keeps B's rows contiguous. */
function gemm(a: F, aOff: number, b: F, bOff: number, out: F, oOff: number, m: number, n: number, k: number,
  transA: boolean, transB: boolean, accumulate: boolean): void {
  if (!accumulate) out.fill(0, oOff, oOff + m * n);
  for (let i = 0; i < m; i++) {
    const row = oOff + i * n;
    if (!transB) {
      for (let p = 0; p < k; p++) {
        const av = transA ? a[aOff + p * m + i]! : a[aOff + i * k + p]!;
        const bRow = bOff + p * n;
        for (let j = 0; j < n; j++) out[row + j] += av * b[bRow + j]!;
      }
    } else {
      for (let j = 0; j < n; j++) {
        const bRow = bOff + j * k;
        let s = 0;
        if (transA) for (let p = 0; p < k; p++) s += a[aOff + p * m + i]! * b[bRow + p]!;
        else for (let p = 0; p < k; p++) s += a[aOff + i * k + p]! * b[bRow + p]!;
        out[row + j] += s;
      }
    }
  }
}

export const matmul: KernelImpls['matmul'] = (a, b, out, batch, m, n, k, transA, transB, aBatched, bBatched, accumulate) => {
  for (let bi = 0; bi < batch; bi++) {
    gemm(a, aBatched ? bi * m * k : 0, b, bBatched ? bi * k * n : 0, out, bi * m * n, m, n, k, transA, transB, accumulate);
  }
};

export const groupedMatmul: KernelImpls['groupedMatmul'] = (x, w, groupSizes, out, k, n, transW) => {
  let row = 0;
  for (let g = 0; g < groupSizes.length; g++) {
    const rows = groupSizes[g]!;
    if (rows > 0) gemm(x, row * k, w, g * k * n, out, row * n, rows, n, k, false, transW, false);
    row += rows;
  }
};

export const groupedMatmulEpilogue: KernelImpls['groupedMatmulEpilogue'] = (x, w, groupSizes, out, k, n, transW, bias, act, rowScale, pre) => {
  const c = pre ?? out;
  groupedMatmul(x, w, groupSizes, c, k, n, transW);
  const f = act ? unaryFn(act) : null;
  let row = 0;
  for (let g = 0; g < groupSizes.length; g++) {
    for (let r = row; r < row + groupSizes[g]!; r++) {
      for (let j = r * n; j < (r + 1) * n; j++) {
        // each step stored (rounded to the array's type) before the next, as separate kernels would
        if (bias) c[j] = c[j]! + bias[g * n + j - r * n]!;
        out[j] = f ? f(c[j]!) : c[j]!;
        if (rowScale) out[j] = out[j]! * rowScale[r]!;
      }
    }
    row += groupSizes[g]!;
  }
};

export const groupedMatmulWeightGrad: KernelImpls['groupedMatmulWeightGrad'] = (x, dy, groupSizes, out, k, n) => {
  let row = 0;
  for (let g = 0; g < groupSizes.length; g++) {
    const rows = groupSizes[g]!;
    // x_g^T is k x rows: transA over the rows x k block.
    gemm(x, row * k, dy, row * n, out, g * k * n, k, n, rows, true, false, false);
    row += rows;
  }
};
