// Reference layer norm and RMS norm over the last axis, with their backward passes.

import type { KernelImpls } from '../../kernels/kernels.js';

export const layerNorm: KernelImpls['layerNorm'] = (x, gamma, beta, y, mean, rstd, rows, d, eps) => {
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let m = 0;
    for (let j = 0; j < d; j++) m += x[o + j]!;
    m /= d;
    let v = 0;
    for (let j = 0; j < d; j++) { const c = x[o + j]! - m; v += c * c; }
    v /= d;
    const rs = 1 / Math.sqrt(v + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let j = 0; j < d; j++) {
      let h = (x[o + j]! - m) * rs;
      if (gamma) h *= gamma[j]!;
      if (beta) h += beta[j]!;
      y[o + j] = h;
    }
  }
};

export const layerNormBackward: KernelImpls['layerNormBackward'] = (x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, d) => {
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    const m = mean[r]!;
    const rs = rstd[r]!;
    let sumG = 0;
    let sumGX = 0;
    for (let j = 0; j < d; j++) {
      const xh = (x[o + j]! - m) * rs;
      const g = dy[o + j]! * (gamma ? gamma[j]! : 1);
      sumG += g;
      sumGX += g * xh;
      if (dgamma) dgamma[j] += dy[o + j]! * xh;
      if (dbeta) dbeta[j] += dy[o + j]!;
    }
    sumG /= d;
    sumGX /= d;
    for (let j = 0; j < d; j++) {
      const xh = (x[o + j]! - m) * rs;
      const g = dy[o + j]! * (gamma ? gamma[j]! : 1);
      dx[o + j] = rs * (g - sumG - xh * sumGX);
    }
  }
};

export const rmsNorm: KernelImpls['rmsNorm'] = (x, gamma, y, rstd, rows, d, eps) => {
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let ms = 0;
    for (let j = 0; j < d; j++) ms += x[o + j]! * x[o + j]!;
    const rs = 1 / Math.sqrt(ms / d + eps);
    rstd[r] = rs;
    for (let j = 0; j < d; j++) y[o + j] = x[o + j]! * rs * (gamma ? gamma[j]! : 1);
  }
};

export const rmsNormBackward: KernelImpls['rmsNormBackward'] = (x, gamma, rstd, dy, dx, dgamma, rows, d) => {
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    const rs = rstd[r]!;
    let dot = 0;
    for (let j = 0; j < d; j++) {
      const g = dy[o + j]! * (gamma ? gamma[j]! : 1);
      dot += g * x[o + j]!;
      if (dgamma) dgamma[j] += dy[o + j]! * x[o + j]! * rs;
    }
    const c = (dot / d) * rs * rs;
    for (let j = 0; j < d; j++) {
      const g = dy[o + j]! * (gamma ? gamma[j]! : 1);
      dx[o + j] = rs * (g - x[o + j]! * c);
    }
  }
};
