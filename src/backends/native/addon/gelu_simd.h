// The exact GELU x * Phi(x), its derivative and the two together, vectorised by hand over GCC
// vector types and compiled per target (AVX-512, AVX2+FMA, baseline), picked at run time.
//
// Phi comes from E = erfc(|x| / sqrt 2) = t exp(-x^2/2 + q(t)), t = 1 / (1 + |x| / (2 sqrt 2)),
// the form of Numerical Recipes' erfcc with q refitted here (see erfcHalfParts). The big part of the exponent, -x^2/2, is split so it carries no rounding: with |x| = xh + xl and xh
// holding 12 bits, -xh^2/2 is exact and enters exp's range reduction first; the small rest and q
// join the reduced argument. The power of two is applied last, as two normal factors, so a result
// in the denormal range is rounded once. The auto-vectorised scalar code this replaces
// (simd_math.h) paid ~150 instructions per 8 floats without FMA (the build's -ffp-contract=off).
#pragma once

#include <cstdint>

#include "vec.h"

// FMA contraction for these functions only (the rest of the addon keeps -ffp-contract=off); every
// rounding that matters for accuracy is explicit above, so contraction only makes it finer.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

namespace moe {
namespace gelu_simd {

using i64 = int64_t;

#define MOE_VINLINE __attribute__((always_inline)) inline

template <typename V>
using IV = decltype(V{} < V{});

template <typename V>
MOE_VINLINE V splat(float c) {
  return V{} + c;
}

// |x| from here on is clamped to kCut (NaN becomes kCut; the NaN is carried by x itself). Beyond it
// every term with exp(-x^2/2) is below the smallest denormal (gelu underflows below x ~ -14.3,
// x phi(x) beyond |x| ~ 14.6), and exp's reduced exponent stays >= -192, two normal halves.
constexpr float kCut = 16.0f;
constexpr float kInvSqrt2Pi = 0.398942280401432678f;

template <typename V>
struct ErfcHalf {
  V t;    // 1 / (1 + |x| / (2 sqrt 2)) = t + tLo
  V tLo;
  V a;    // -xh^2 / 2, exact
  V b;    // the rest of -x^2 / 2
  V q;    // the correction q(t)
  IV<V> far;  // |x| > kCut: the exp terms are zero
};

template <typename V>
MOE_VINLINE ErfcHalf<V> erfcHalfParts(V x) {
  using I = IV<V>;
  ErfcHalf<V> r;
  V ax = (V)((I)x & 0x7fffffff);
  r.far = ax > kCut;
  V axc = ax <= kCut ? ax : splat<V>(kCut);  // NaN -> kCut
  V xh = (V)((I)axc & (int32_t)0xfffff000u);
  V xl = axc - xh;
  r.a = (xh * xh) * -0.5f;
  r.b = ((axc + xh) * xl) * -0.5f;
  // t and its rounding error tLo (exact with FMA; without FMA only partly corrected): E depends on
  // t through t exp(q(t)), d log E / d log t = 1 + t q'(t) is ~2.3 near t = 1, and t's two
  // roundings (the sum and the division) cost 2-3 ulp of gelu there uncorrected (measured).
  constexpr float kC = 0.5f * 0.70710678118654752f;
  V den = axc * kC + 1.0f;
  V denLo = axc * kC + (1.0f - den);
  V t = splat<V>(1.0f) / den;
  V tLo = t * ((1.0f - den * t) - denLo * t);
  r.tLo = tLo;
  // q(t) = log(erfc(z) / t) + z^2, z = |x| / sqrt 2, as a degree-10 polynomial in s = t - t0 over
  // t in [0.1502, 1] (|x| <= 16), fitted near-minimax by scripts/fit-gelu-erfc.py (reweighted least
  // squares against mpmath's erfc: 8e-9 absolute, 3.4e-8 with the coefficients in float). Centred,
  // its terms shrink with the power, where Numerical Recipes' polynomial in t cancels terms of ~1.5
  // to reach q ~ 0 at t = 1 (5e-7 in float, 6 ulp of gelu). Estrin's scheme: depth 5, not 10.
  V s1 = (t - 0.57511055f) + tLo;
  V sq = s1 * s1, s4 = sq * sq;
  V q01 = s1 * 1.367162943e+00f - 5.698438287e-01f, q23 = s1 * -4.060539007e-01f + 1.007270217e-01f;
  V q45 = s1 * 2.973851264e-01f - 4.693797231e-02f, q67 = s1 * -2.533894479e-01f - 3.728827462e-02f;
  V q89 = s1 * 1.546871215e-01f + 1.242830530e-01f;
  V q03 = q23 * sq + q01, q47 = q67 * sq + q45, q810 = sq * -1.267139316e-01f + q89;
  r.q = (q810 * s4 + q47) * s4 + q03;
  r.t = t;
  return r;
}

/** The two halves of E / 2: E / 2 = (m * s1) * s2, m = p t / 2 normal, s1 s2 = 2^n. */
template <typename V>
struct HalfE {
  V m, s1, s2;
};

/** (pre * exp(a + s)) as pre * p * 2^n for an exact a in [-128, 0] and a small s; p = 0 where far. */
template <typename V>
MOE_VINLINE HalfE<V> expParts(V pre, V preLo, V a, V s, IV<V> far) {
  using I = IV<V>;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  V n = ((a + s) * 1.44269504088896341f + magic) - magic;
  // Cody-Waite: n * 0.693359375 is exact and so is a minus it (both are multiples of 2^-15 here)
  V r = a - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  r = r + s;
  V r2 = r * r, r4 = r2 * r2;
  V p01 = r * 1.6666665459e-1f + 5.0000001201e-1f, p23 = r * 8.3334519073e-3f + 4.1665795894e-2f;
  V p45 = r * 1.9875691500e-4f + 1.3981999507e-3f;
  V p = (p45 * r4 + (p23 * r2 + p01)) * r2 + r + 1.0f;
  p = far ? V{} : p;
  I ni = __builtin_convertvector(n, I);
  I n1 = ni >> 1, n2 = ni - n1;
  return HalfE<V>{pre * p + preLo * p, (V)((n1 + 127) << 23), (V)((n2 + 127) << 23)};
}

// gelu(x) = x Phi(x): x (1 - E/2) above zero, x E/2 below (no cancellation in either tail). Below
// zero x joins before the power of two, so a denormal result is rounded once. gelu(+inf) = inf,
// gelu(-inf) = NaN (-inf * 0), as the js reference's 0.5 x (1 + erf(x / sqrt 2)).
template <typename V>
MOE_VINLINE V geluFrom(V x, const HalfE<V>& h, IV<V> pos) {
  V m = pos ? h.m : x * h.m;
  V r = (m * h.s1) * h.s2;
  return pos ? x * (1.0f - r) : r;
}

template <typename V>
MOE_VINLINE V gelu(V x) {
  ErfcHalf<V> e = erfcHalfParts(x);
  return geluFrom(x, expParts(e.t * 0.5f, e.tLo * 0.5f, e.a, e.b + e.q, e.far), x >= 0.0f);
}

/** gelu'(x) = Phi(x) + x phi(x); with kValue also *value = gelu(x), bit for bit as gelu(). */
template <typename V, bool kValue>
MOE_VINLINE V geluGrad(V x, V* value) {
  ErfcHalf<V> e = erfcHalfParts(x);
  HalfE<V> h = expParts(e.t * 0.5f, e.tLo * 0.5f, e.a, e.b + e.q, e.far);
  HalfE<V> f = expParts(x * kInvSqrt2Pi, V{}, e.a, e.b, e.far);  // x phi(x)
  IV<V> pos = x >= 0.0f;
  if (kValue) *value = geluFrom(x, h, pos);
  V halfE = (h.m * h.s1) * h.s2;
  V cdf = pos ? 1.0f - halfE : halfE;
  return cdf + (f.m * f.s1) * f.s2;
}

template <typename V>
MOE_VINLINE V loadN(const float* p, i64 k) {
  constexpr int W = sizeof(V) / sizeof(float);
  float tmp[W] = {};
  for (i64 j = 0; j < k; j++) tmp[j] = p[j];
  return loadu<V>(tmp);
}

template <typename V>
MOE_VINLINE void storeN(float* p, V v, i64 k) {
  constexpr int W = sizeof(V) / sizeof(float);
  float tmp[W];
  storeu<V>(tmp, v);
  for (i64 j = 0; j < k; j++) p[j] = tmp[j];
}

// The loops: whole vectors, then the tail through a zero-padded vector. (No lambdas: a lambda
// would not inherit the caller's target and would be compiled for the baseline.)
template <typename V>
MOE_VINLINE void forwardRun(const float* x, float* y, i64 n) {
  constexpr int W = sizeof(V) / sizeof(float);
  i64 i = 0;
  for (; i + W <= n; i += W) storeu<V>(y + i, gelu(loadu<V>(x + i)));
  if (i < n) storeN<V>(y + i, gelu(loadN<V>(x + i, n - i)), n - i);
}

// dx = dy * gelu'(x); dx may be dy.
template <typename V>
MOE_VINLINE void backwardRun(const float* x, const float* dy, float* dx, i64 n) {
  constexpr int W = sizeof(V) / sizeof(float);
  i64 i = 0;
  for (; i + W <= n; i += W) storeu<V>(dx + i, loadu<V>(dy + i) * geluGrad<V, false>(loadu<V>(x + i), nullptr));
  if (i < n) storeN<V>(dx + i, loadN<V>(dy + i, n - i) * geluGrad<V, false>(loadN<V>(x + i, n - i), nullptr), n - i);
}

// One row of an expert MLP's backward: act = gelu(pre), returns <dy, act>, dy <- scale dy gelu'(pre).
template <typename V>
MOE_VINLINE float rowRun(const float* pre, float* dy, float* act, float scale, i64 n) {
  constexpr int W = sizeof(V) / sizeof(float);
  V dot{};
  i64 i = 0;
  for (; i + W <= n; i += W) {
    V v;
    V g = geluGrad<V, true>(loadu<V>(pre + i), &v);
    V d = loadu<V>(dy + i);
    dot += d * v;
    storeu<V>(act + i, v);
    storeu<V>(dy + i, (d * scale) * g);
  }
  if (i < n) {
    V v;
    V g = geluGrad<V, true>(loadN<V>(pre + i, n - i), &v);
    V d = loadN<V>(dy + i, n - i);
    dot += d * v;  // the padded lanes hold zeros in d
    storeN<V>(act + i, v, n - i);
    storeN<V>(dy + i, (d * scale) * g, n - i);
  }
  float s = 0.0f;
  for (int j = 0; j < W; j++) s += dot[j];
  return s;
}

struct Kernels {
  void (*forward)(const float* x, float* y, i64 n);
  void (*backward)(const float* x, const float* dy, float* dx, i64 n);
  float (*row)(const float* pre, float* dy, float* act, float scale, i64 n);
};

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512vl,fma"))) static void forward16(const float* x, float* y, i64 n) { forwardRun<V16>(x, y, n); }
__attribute__((target("avx512f,avx512vl,fma"))) static void backward16(const float* x, const float* dy, float* dx, i64 n) {
  backwardRun<V16>(x, dy, dx, n);
}
__attribute__((target("avx512f,avx512vl,fma"))) static float row16(const float* p, float* dy, float* a, float s, i64 n) {
  return rowRun<V16>(p, dy, a, s, n);
}
__attribute__((target("avx2,fma"))) static void forward8(const float* x, float* y, i64 n) { forwardRun<V8>(x, y, n); }
__attribute__((target("avx2,fma"))) static void backward8(const float* x, const float* dy, float* dx, i64 n) { backwardRun<V8>(x, dy, dx, n); }
__attribute__((target("avx2,fma"))) static float row8(const float* p, float* dy, float* a, float s, i64 n) { return rowRun<V8>(p, dy, a, s, n); }
#endif
static void forward4(const float* x, float* y, i64 n) { forwardRun<V4>(x, y, n); }
static void backward4(const float* x, const float* dy, float* dx, i64 n) { backwardRun<V4>(x, dy, dx, n); }
static float row4(const float* p, float* dy, float* a, float s, i64 n) { return rowRun<V4>(p, dy, a, s, n); }

static inline Kernels baseKernels() { return Kernels{forward4, backward4, row4}; }

/** The AVX-512 (wide) or AVX2 kernels into *k; false where this build has none (not x86-64 GCC). */
static inline bool tierKernels(bool wide, Kernels* k) {
#if defined(__x86_64__) && defined(__GNUC__)
  *k = wide ? Kernels{forward16, backward16, row16} : Kernels{forward8, backward8, row8};
  return true;
#else
  (void)wide;
  (void)k;
  return false;
#endif
}

/** The widest the CPU runs (an MOE_NO_CLONES build keeps the baseline, like the auto-vectorised loops). */
static inline const Kernels& kernels() {
  static const Kernels k = [] {
    Kernels w;
#if !defined(MOE_NO_CLONES)
    if (simdTier() != SimdTier::Base && tierKernels(simdTier() == SimdTier::Avx512, &w)) return w;
#endif
    return baseKernels();
  }();
  return k;
}

#undef MOE_VINLINE

}  // namespace gelu_simd
}  // namespace moe

#pragma GCC pop_options
