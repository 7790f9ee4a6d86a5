// Branch-free float math that GCC auto-vectorises (libm's expf/tanhf/erff are scalar calls):
// Cephes-style exp, log on [1, 2] and tanh, and erfc with ~1e-7 relative error. Results agree
// with the js reference (double precision) to a few float ulps. (The exact GELU has its own,
// hand-vectorised kernels in gelu_simd.h.)
#pragma once

#include <cmath>
#include <cstdint>

#define MOE_INLINE static inline __attribute__((always_inline))

// Each hot loop is compiled for AVX-512, AVX2+FMA and baseline x86-64, picked at load time
// (MOE_NO_CLONES builds the baseline alone, to test it on any machine).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && !defined(MOE_NO_CLONES)
#define MOE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MOE_CLONES
#endif

namespace moe {

MOE_INLINE float bitsToFloat(uint32_t u) { return __builtin_bit_cast(float, u); }
MOE_INLINE uint32_t floatToBits(float f) { return __builtin_bit_cast(uint32_t, f); }

/** e^x: ~1 ulp; overflows to inf, underflows through denormals to 0, NaN stays NaN. */
MOE_INLINE float vexp(float x) {
  float xc = x < -104.0f ? -104.0f : x;
  xc = xc > 89.0f ? 89.0f : xc;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as two normal factors, so that results in the denormal range and overflow come out right.
  float nn = (n == n) ? n : 0.0f;
  int32_t ni = static_cast<int32_t>(nn);
  int32_t n1 = ni >> 1, n2 = ni - n1;
  float s1 = bitsToFloat(static_cast<uint32_t>(n1 + 127) << 23);
  float s2 = bitsToFloat(static_cast<uint32_t>(n2 + 127) << 23);
  return p * s1 * s2;
}

/** log(w) for w in [1, 2] (Cephes logf). */
MOE_INLINE float vlog12(float w) {
  bool big = w > 1.41421356237f;
  float m = big ? w * 0.5f : w;
  float e = big ? 1.0f : 0.0f;
  float x = m - 1.0f;
  float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z;
  y += e * -2.12194440e-4f;
  y += -0.5f * z;
  return x + y + e * 0.693359375f;
}

/** log(1 + u) for u in [0, 1]. */
MOE_INLINE float vlog1p01(float u) {
  float w = 1.0f + u;
  float d = w - 1.0f;
  // log1p(u) = log(w) * u / (w - 1) cancels the rounding of 1 + u.
  return d == 0.0f ? u : vlog12(w) * (u / d);
}

/** Sigmoid from e = exp(-|x|): returns s = sigmoid(|x|) and sm = sigmoid(-|x|) = 1 - s, both exact-ish. */
MOE_INLINE void vsigmoidPair(float x, float* sPos, float* sNeg) {
  float e = vexp(-std::fabs(x));
  float inv = 1.0f / (1.0f + e);
  float hi = inv, lo = e * inv;
  bool pos = x >= 0.0f;
  *sPos = pos ? hi : lo;  // sigmoid(x)
  *sNeg = pos ? lo : hi;  // 1 - sigmoid(x)
  if (x != x) { *sPos = x; *sNeg = x; }
}

MOE_INLINE float vsigmoid(float x) {
  float s, sm;
  vsigmoidPair(x, &s, &sm);
  return s;
}

/** tanh (Cephes tanhf: polynomial below 0.625, exp formula above). */
MOE_INLINE float vtanh(float x) {
  float ax = std::fabs(x);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float e = vexp(2.0f * (ax < 44.0f ? ax : 44.0f));
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = std::copysign(big, x);
  return ax < 0.625f ? small : (ax == ax ? big : x);
}

/** The exponent correction of Numerical Recipes' erfcc: erfc(z) = t exp(-z^2 + q(t)), t = 1/(1 + z/2). */
MOE_INLINE float erfcPoly(float t) {
  float q = 0.17087277f;
  q = q * t - 0.82215223f;
  q = q * t + 1.48851587f;
  q = q * t - 1.13520398f;
  q = q * t + 0.27886807f;
  q = q * t - 0.18628806f;
  q = q * t + 0.09678418f;
  q = q * t + 0.37409196f;
  q = q * t + 1.00002368f;
  return q * t - 1.26551223f;
}

/**
 * For the exact gelu: E = erfc(|x| / sqrt 2) (Numerical Recipes' erfcc, relative error < 1.2e-7)
 * and phi = exp(-x^2 / 2). x^2 is split so the large exponent carries no rounding error.
 */
MOE_INLINE void verfcHalf(float x, float* erfcOut, float* phiOut) {
  float ax = std::fabs(x);
  ax = ax > 20.0f ? 20.0f : ax;  // NaN stays NaN
  float xh = bitsToFloat(floatToBits(ax) & 0xfffff000u);
  float xl = ax - xh;
  float a = -0.5f * (xh * xh);      // exact
  float b = -0.5f * ((ax + xh) * xl);  // the small rest of -x^2/2
  float t = 1.0f / (1.0f + 0.5f * 0.70710678118654752f * ax);
  float q = erfcPoly(t);
  float ea = vexp(a);
  *erfcOut = t * ea * vexp(b + q);
  *phiOut = ea * vexp(b);
}

}  // namespace moe
