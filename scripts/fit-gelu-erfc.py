# Fits the correction polynomial q of src/backends/native/addon/gelu_simd.h (how its coefficients
# were made; run by hand, needs numpy and mpmath): erfc(z) = t exp(-z^2 + q(t)), t = 1 / (1 + z/2),
# z = |x| / sqrt 2 with |x| <= 16, so t in [0.1502, 1]. q is a polynomial in s = t - t0 (t0 the
# interval's midpoint, rounded to float), fitted near-minimax in absolute error by iteratively
# reweighted least squares (Lawson) on Chebyshev nodes against mpmath's erfc at 30 digits.
# Usage: python3 scripts/fit-gelu-erfc.py [degree, default 10]
import sys

import mpmath
import numpy as np

mpmath.mp.dps = 30
deg = int(sys.argv[1]) if len(sys.argv) > 1 else 10
tmin = 1 / (1 + 16 / np.sqrt(2) / 2)
t0 = float(np.float32((1 + tmin) / 2))
half = (1 - tmin) / 2


def q_true(t: float) -> float:
    z = 2 * (1 / t - 1)
    return float(mpmath.log(mpmath.erfc(z) / t) + z * z)


N = 4000
nodes = np.cos(np.pi * (np.arange(N) + 0.5) / N)
ts = (1 + tmin) / 2 + half * nodes
ys = np.array([q_true(t) for t in ts])
V = np.vander(ts - t0, deg + 1, increasing=True)
w = np.ones(N)
for _ in range(60):
    c, *_ = np.linalg.lstsq(V * np.sqrt(w)[:, None], ys * np.sqrt(w), rcond=None)
    w = w * np.abs(V @ c - ys)
    w /= w.sum()
cf = np.float32(c).astype(np.float64)
print(f"t0 = {np.float32(t0)!r}, degree {deg}")
print(f"max |error| {np.max(np.abs(V @ c - ys)):.3g} (double coefficients), {np.max(np.abs(V @ cf - ys)):.3g} (float)")
print("coefficients of s^0 .. s^%d:" % deg, ", ".join("%.9ef" % np.float32(x) for x in c))
