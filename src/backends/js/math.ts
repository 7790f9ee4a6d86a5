// Scalar functions shared by the js kernels: each activation and its derivative, in float64.

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const INV_SQRT_PI = 1 / Math.sqrt(Math.PI);
const GELU_TANH_C = Math.sqrt(2 / Math.PI);

/** erf to about 1e-15: Maclaurin series below 2.5, a continued fraction for erfc above. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    const x2 = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    return 2 * INV_SQRT_PI * sum;
  }
  if (ax > 6) return Math.sign(x);
  // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated bottom-up.
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
  const erfc = (Math.exp(-ax * ax) * INV_SQRT_PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** log(1 + e^x) without overflow. */
export function softplus(x: number): number {
  return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
}

export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x * SQRT1_2));
}

export function geluGrad(x: number): number {
  return 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_TANH_C * (x + 0.044715 * x * x * x)));
}

export function geluTanhGrad(x: number): number {
  const t = Math.tanh(GELU_TANH_C * (x + 0.044715 * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_TANH_C * (1 + 3 * 0.044715 * x * x);
}

/** Standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2. */
export function normcdf(x: number): number {
  return 0.5 * (1 + erf(x * SQRT1_2));
}

/** Standard normal density, the derivative of normcdf. */
export function normpdf(x: number): number {
  return INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}
