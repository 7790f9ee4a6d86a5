// Reference row gathers and scatters: the permute and un-permute of MoE dispatch.

import type { KernelImpls } from '../../kernels/kernels.js';

export const gatherRows: KernelImpls['gatherRows'] = (src, idx, out, _nSrc, d) => {
  for (let i = 0; i < idx.length; i++) {
    const s = idx[i]! * d;
    const o = i * d;
    for (let j = 0; j < d; j++) out[o + j] = src[s + j]!;
  }
};

export const scatterAddRows: KernelImpls['scatterAddRows'] = (src, idx, out, _nOut, d) => {
  for (let i = 0; i < idx.length; i++) {
    const o = idx[i]! * d;
    const s = i * d;
    for (let j = 0; j < d; j++) out[o + j] += src[s + j]!;
  }
};
