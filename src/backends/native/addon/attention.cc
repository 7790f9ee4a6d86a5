// cachedAttention: T new queries attend over a head-major KV cache in one call (inference). Each
// (query, head) pair is independent: scores against the visible keys, a softmax, the weighted sum
// of values, written straight into the [T, H, hd] layout the output projection reads. Replaces a
// per-head chain of small matmul/softmax ops (four JS calls and three allocations per head and
// layer, single-threaded scalar dots) that cost more than the attention arithmetic.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "simd_math.h"
#include "threadpool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace moe {
namespace {

// The inner loops over one head row of hd elements: the score q . k_j, and out += p v_j. The
// portable ones are plain loops the compiler vectorises (each KV element widened exactly to float
// as it is read); HalfAvx2 is written out because GCC 12 widens _Float16 one element at a time
// even where F16C exists (8 halves per vcvtph2ps, 8-wide FMAs).
template <typename KV>
struct RowOps {
  // the softmax's sum of exponentials as a vector reduction (HalfAvx2's stays sequential: each
  // path keeps the summation order it was tested and measured with)
  static constexpr bool kSimdSum = true;
  static inline float dot(const float* q, const KV* k, i64 hd) {
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (i64 i = 0; i < hd; i++) d += q[i] * static_cast<float>(k[i]);
    return d;
  }
  static inline void axpy(float p, const KV* v, float* out, i64 hd) {
#pragma omp simd
    for (i64 i = 0; i < hd; i++) out[i] += p * static_cast<float>(v[i]);
  }
};

#if defined(__x86_64__) && defined(__GNUC__)
struct HalfAvx2 {
  static constexpr bool kSimdSum = false;
  __attribute__((target("avx2,fma,f16c"))) static inline float dot(const float* q, const _Float16* k, i64 hd) {
    const i64 hv = hd / 8 * 8;
    __m256 acc = _mm256_setzero_ps();
    for (i64 i = 0; i < hv; i += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i))), acc);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float d = _mm_cvtss_f32(h);
    for (i64 i = hv; i < hd; i++) d += q[i] * static_cast<float>(k[i]);
    return d;
  }
  __attribute__((target("avx2,fma,f16c"))) static inline void axpy(float p, const _Float16* v, float* out, i64 hd) {
    const i64 hv = hd / 8 * 8;
    const __m256 pv = _mm256_set1_ps(p);
    for (i64 i = 0; i < hv; i += 8)
      _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i))), _mm256_loadu_ps(out + i)));
    for (i64 i = hv; i < hd; i++) out[i] += p * static_cast<float>(v[i]);
  }
};
#endif

// One query row against keys [lo, hi] of its key head; s is scratch of hi - lo + 1 floats.
// The order of the js reference: scores, max, exp, sum, probabilities, then sum of p_j v_j.
// KV is float (a float32 cache) or _Float16 (a half-precision one); Ops supplies the row loops.
template <typename KV, typename Ops>
__attribute__((always_inline)) inline void attendBody(const float* q, const KV* keys, const KV* values, i64 lo, i64 hi, i64 hd, float scale,
                                                      float* s, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (i64 j = lo; j <= hi; j++) {
    const float d = Ops::dot(q, keys + j * hd, hd) * scale;
    s[j - lo] = d;
    mx = d > mx ? d : mx;
  }
  const i64 n = hi - lo + 1;
  float sum = 0.0f;
  if constexpr (Ops::kSimdSum) {
#pragma omp simd reduction(+ : sum)
    for (i64 j = 0; j < n; j++) {
      const float e = vexp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
  } else {
    for (i64 j = 0; j < n; j++) {
      const float e = vexp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
  }
  for (i64 i = 0; i < hd; i++) out[i] = 0.0f;
  for (i64 j = 0; j < n; j++) Ops::axpy(s[j] / sum, values + (lo + j) * hd, out, hd);
}

MOE_CLONES void attendOne(const float* q, const float* keys, const float* values, i64 lo, i64 hi, i64 hd, float scale, float* s, float* out) {
  attendBody<float, RowOps<float>>(q, keys, values, lo, hi, hd, scale, s, out);
}

// Half-precision cache: the written-out F16C loops where the CPU has them, else the portable ones
// (the compiler's software conversion).
void attendOneHalfBase(const float* q, const _Float16* keys, const _Float16* values, i64 lo, i64 hi, i64 hd, float scale, float* s, float* out) {
  attendBody<_Float16, RowOps<_Float16>>(q, keys, values, lo, hi, hd, scale, s, out);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma,f16c"))) void attendOneHalfAvx2(const float* q, const _Float16* keys, const _Float16* values, i64 lo, i64 hi,
                                                                i64 hd, float scale, float* s, float* out) {
  attendBody<_Float16, HalfAvx2>(q, keys, values, lo, hi, hd, scale, s, out);
}

__attribute__((target("avx2,fma,f16c"))) void kvWriteHalfAvx2(const float* src, _Float16* dst, i64 T, i64 G, i64 hd, i64 maxLen, i64 pos) {
  const i64 hv = hd / 8 * 8;
  for (i64 t = 0; t < T; t++)
    for (i64 g = 0; g < G; g++) {
      const float* a = src + (t * G + g) * hd;
      _Float16* b = dst + (g * maxLen + pos + t) * hd;
      for (i64 i = 0; i < hv; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(b + i), _mm256_cvtps_ph(_mm256_loadu_ps(a + i), _MM_FROUND_TO_NEAREST_INT));
      for (i64 i = hv; i < hd; i++) b[i] = static_cast<_Float16>(a[i]);
    }
}
#endif

bool haveF16c() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

void attendOneHalf(const float* q, const _Float16* keys, const _Float16* values, i64 lo, i64 hi, i64 hd, float scale, float* s, float* out) {
  static const bool f16c = haveF16c();
#if defined(__x86_64__) && defined(__GNUC__)
  if (f16c) return attendOneHalfAvx2(q, keys, values, lo, hi, hd, scale, s, out);
#endif
  attendOneHalfBase(q, keys, values, lo, hi, hd, scale, s, out);
}

// [T, G, hd] rows into [G, maxLen, hd] at positions pos .. pos + T - 1, narrowed to f16 (round to
// nearest even, as the js floatToHalf) when the cache is half precision.
template <typename KV>
__attribute__((always_inline)) inline void kvWriteBody(const float* src, KV* dst, i64 T, i64 G, i64 hd, i64 maxLen, i64 pos) {
  for (i64 t = 0; t < T; t++)
    for (i64 g = 0; g < G; g++) {
      const float* a = src + (t * G + g) * hd;
      KV* b = dst + (g * maxLen + pos + t) * hd;
#pragma omp simd
      for (i64 i = 0; i < hd; i++) b[i] = static_cast<KV>(a[i]);
    }
}

void kvWriteHalf(const float* src, _Float16* dst, i64 T, i64 G, i64 hd, i64 maxLen, i64 pos) {
  static const bool f16c = haveF16c();
#if defined(__x86_64__) && defined(__GNUC__)
  if (f16c) return kvWriteHalfAvx2(src, dst, T, G, hd, maxLen, pos);
#endif
  kvWriteBody<_Float16>(src, dst, T, G, hd, maxLen, pos);
}

// One cache layer's keys and values (arguments i and i + 1): float32, or f16 bit patterns
// (Uint16Array) for a half-precision cache, checked to hold [G, maxLen, hd] each.
struct CacheLayer {
  bool half = false;
  Buf<float> keys, values;
  Buf<uint16_t> keysH, valuesH;
  CacheLayer(const Args& args, size_t i) : half(args.isU16(i)) {
    if (half) {
      keysH = args.u16(i, "keys");
      valuesH = args.u16(i + 1, "values");
    } else {
      keys = args.f32(i, "keys");
      values = args.f32(i + 1, "values");
    }
  }
  void check(const Args& args, i64 G, i64 maxLen, i64 hd, i64 P, i64 T) const {
    if (P + T > maxLen) args.fail("P + T = " + std::to_string(P + T) + " positions exceed maxLen = " + std::to_string(maxLen));
    const i64 n = args.mul({G, maxLen, hd});
    if (half) {
      args.need(keysH, n, "keys");
      args.need(valuesH, n, "values");
    } else {
      args.need(keys, n, "keys");
      args.need(values, n, "values");
    }
  }
  const _Float16* kh() const { return reinterpret_cast<const _Float16*>(keysH.data); }
  const _Float16* vh() const { return reinterpret_cast<const _Float16*>(valuesH.data); }
};

// T queries [T, H, hd] at positions P .. P + T - 1 over one cache layer (float32 kd/vd, or half
// kh/vh), out [T, H, hd]: one unit = one (query, head) pair, ~2 * L * hd flops.
void attendAll(const float* qd, const float* kd, const float* vd, const _Float16* kh16, const _Float16* vh16, bool half, float* od, i64 T, i64 H,
               i64 G, i64 hd, i64 maxLen, i64 P, i64 window, float scale) {
  const i64 g = H / G, L = P + T;
  parallelFor(T * H, std::max<i64>(1, 16384 / std::max<i64>(1, L * hd)), [=](i64 lo, i64 hi) {
    static thread_local std::vector<float> scratch;
    if (scratch.size() < static_cast<size_t>(L)) scratch.resize(static_cast<size_t>(L));
    for (i64 u = lo; u < hi; u++) {
      const i64 t = u / H, h = u % H, kv = h / g, pos = P + t;
      const i64 first = window > 0 ? std::max<i64>(0, pos - window + 1) : 0;
      if (half) attendOneHalf(qd + u * hd, kh16 + kv * maxLen * hd, vh16 + kv * maxLen * hd, first, pos, hd, scale, scratch.data(), od + u * hd);
      else attendOne(qd + u * hd, kd + kv * maxLen * hd, vd + kv * maxLen * hd, first, pos, hd, scale, scratch.data(), od + u * hd);
    }
  });
}

// cachedAttention(q, keys, values, out, T, H, G, hd, maxLen, P, window, scale)
Napi::Value CachedAttention(const Napi::CallbackInfo& info) {
  Args args(info, "cachedAttention", 12);
  Buf<float> q = args.f32(0, "q"), out = args.f32(3, "out");
  const CacheLayer kv(args, 1);
  const i64 T = args.size(4, "T"), H = args.size(5, "H"), G = args.size(6, "G"), hd = args.size(7, "hd");
  const i64 maxLen = args.size(8, "maxLen"), P = args.size(9, "P"), window = args.size(10, "window");
  const float scale = static_cast<float>(args.number(11, "scale"));
  if (G == 0 || H % G != 0) args.fail("H = " + std::to_string(H) + " query heads are not a multiple of G = " + std::to_string(G) + " key/value heads");
  kv.check(args, G, maxLen, hd, P, T);
  args.need(q, args.mul({T, H, hd}), "q");
  args.need(out, args.mul({T, H, hd}), "out");
  if (T == 0 || H == 0 || hd == 0) return info.Env().Undefined();
  attendAll(q.data, kv.keys.data, kv.values.data, kv.kh(), kv.vh(), kv.half, out.data, T, H, G, hd, maxLen, P, window, scale);
  return info.Env().Undefined();
}

// kvWrite(src, dst, T, G, hd, maxLen, pos): src [T, G, hd] float32 into the cache layer dst [G,
// maxLen, hd] (Float32Array, or Uint16Array of f16 bit patterns) at positions pos .. pos + T - 1.
Napi::Value KvWrite(const Napi::CallbackInfo& info) {
  Args args(info, "kvWrite", 7);
  Buf<float> src = args.f32(0, "src");
  const bool half = args.isU16(1);
  const i64 T = args.size(2, "T"), G = args.size(3, "G"), hd = args.size(4, "hd"), maxLen = args.size(5, "maxLen"), pos = args.size(6, "pos");
  if (pos + T > maxLen) args.fail("pos + T = " + std::to_string(pos + T) + " positions exceed maxLen = " + std::to_string(maxLen));
  args.need(src, args.mul({T, G, hd}), "src");
  if (half) {
    Buf<uint16_t> dst = args.u16(1, "dst");
    args.need(dst, args.mul({G, maxLen, hd}), "dst");
    kvWriteHalf(src.data, reinterpret_cast<_Float16*>(dst.data), T, G, hd, maxLen, pos);
  } else {
    Buf<float> dst = args.f32(1, "dst");
    args.need(dst, args.mul({G, maxLen, hd}), "dst");
    kvWriteBody<float>(src.data, dst.data, T, G, hd, maxLen, pos);
  }
  return info.Env().Undefined();
}

// x [rows, d] scaled in place by its root mean square and gamma [d], as the rmsNorm kernel does.
MOE_CLONES void rmsNormInPlace(float* x, const float* gamma, i64 rows, i64 d, float eps) {
  for (i64 r = 0; r < rows; r++) {
    float* xr = x + r * d;
    float ms = 0.0f;
#pragma omp simd reduction(+ : ms)
    for (i64 j = 0; j < d; j++) ms += xr[j] * xr[j];
    const float rs = 1.0f / std::sqrt(ms / static_cast<float>(d) + eps);
    for (i64 j = 0; j < d; j++) xr[j] = xr[j] * rs * gamma[j];
  }
}

// Rotate-half rotary of x [T, heads, hd] by cos, sin [T, hd], in place: x1 c - x2 s and x2 c + x1 s,
// each product and sum rounded (the js rotary's order).
void rotaryInPlace(float* x, const float* cs, const float* sn, i64 T, i64 heads, i64 hd) {
  const i64 h = hd / 2;
  for (i64 t = 0; t < T; t++)
    for (i64 head = 0; head < heads; head++) {
      float* b = x + (t * heads + head) * hd;
      const float* c = cs + t * hd;
      const float* s = sn + t * hd;
      for (i64 i = 0; i < h; i++) {
        const float x1 = b[i], x2 = b[i + h];
        b[i] = x1 * c[i] + -x2 * s[i];
        b[i + h] = x2 * c[i + h] + x1 * s[i + h];
      }
    }
}

// qkvAttention(qkv, qBias, kBias, vBias, qNorm, kNorm, normMode, eps, cos, sin, keys, values, out, T, H, G, hd, maxLen, P, window, scale)
// A decode step's attention after its qkv product, in one call: qkv [T, (H + 2G) hd] rows split
// into q, k, v, biases added (each null or [H hd] / [G hd]), QK-norm (normMode 1: over all of q's
// and k's heads, weights [H hd] and [G hd]; 2: per head, weights [hd]), rotary (cos, sin [T, hd]),
// k and v written to the cache layer at P, then cachedAttention into out [T, H hd]. Seven kernels
// and their JS before; the same arithmetic.
Napi::Value QkvAttention(const Napi::CallbackInfo& info) {
  Args args(info, "qkvAttention", 21);
  Buf<float> qkv = args.f32(0, "qkv"), qBias = args.f32OrNull(1, "qBias"), kBias = args.f32OrNull(2, "kBias"), vBias = args.f32OrNull(3, "vBias");
  Buf<float> qNorm = args.f32OrNull(4, "qNorm"), kNorm = args.f32OrNull(5, "kNorm");
  const i64 normMode = args.integer(6, "normMode");
  const float eps = static_cast<float>(args.number(7, "eps"));
  Buf<float> cs = args.f32(8, "cos"), sn = args.f32(9, "sin"), out = args.f32(12, "out");
  const CacheLayer kv(args, 10);
  const i64 T = args.size(13, "T"), H = args.size(14, "H"), G = args.size(15, "G"), hd = args.size(16, "hd");
  const i64 maxLen = args.size(17, "maxLen"), P = args.size(18, "P"), window = args.size(19, "window");
  const float scale = static_cast<float>(args.number(20, "scale"));
  if (G == 0 || H % G != 0) args.fail("H = " + std::to_string(H) + " query heads are not a multiple of G = " + std::to_string(G) + " key/value heads");
  if (hd % 2 != 0) args.fail("hd = " + std::to_string(hd) + " must be even for rotary");
  kv.check(args, G, maxLen, hd, P, T);
  if (normMode < 0 || normMode > 2) args.fail("normMode must be 0 (none), 1 (full) or 2 (per head), got " + std::to_string(normMode));
  const i64 qw = H * hd, kw = G * hd, row = qw + 2 * kw;
  args.need(qkv, args.mul({T, row}), "qkv");
  if (qBias.data) args.need(qBias, qw, "qBias");
  if (kBias.data) args.need(kBias, kw, "kBias");
  if (vBias.data) args.need(vBias, kw, "vBias");
  if (normMode != 0) {
    if (!qNorm.data || !kNorm.data) args.fail("qNorm and kNorm weights are needed with normMode " + std::to_string(normMode));
    args.need(qNorm, normMode == 1 ? qw : hd, "qNorm");
    args.need(kNorm, normMode == 1 ? kw : hd, "kNorm");
  }
  args.need(cs, args.mul({T, hd}), "cos");
  args.need(sn, args.mul({T, hd}), "sin");
  args.need(out, args.mul({T, qw}), "out");
  if (T == 0 || H == 0 || hd == 0) return info.Env().Undefined();
  std::vector<float> q(static_cast<size_t>(T * qw)), k(static_cast<size_t>(T * kw)), v(static_cast<size_t>(T * kw));
  auto split = [&](float* dst, i64 at, i64 w, const float* bias) {
    for (i64 t = 0; t < T; t++) {
      const float* src = qkv.data + t * row + at;
      float* d = dst + t * w;
      if (bias) for (i64 j = 0; j < w; j++) d[j] = src[j] + bias[j];
      else std::copy(src, src + w, d);
    }
  };
  split(q.data(), 0, qw, qBias.data);
  split(k.data(), qw, kw, kBias.data);
  split(v.data(), qw + kw, kw, vBias.data);
  if (normMode == 1) {
    rmsNormInPlace(q.data(), qNorm.data, T, qw, eps);
    rmsNormInPlace(k.data(), kNorm.data, T, kw, eps);
  } else if (normMode == 2) {
    rmsNormInPlace(q.data(), qNorm.data, T * H, hd, eps);
    rmsNormInPlace(k.data(), kNorm.data, T * G, hd, eps);
  }
  rotaryInPlace(q.data(), cs.data, sn.data, T, H, hd);
  rotaryInPlace(k.data(), cs.data, sn.data, T, G, hd);
  if (kv.half) {
    kvWriteHalf(k.data(), reinterpret_cast<_Float16*>(kv.keysH.data), T, G, hd, maxLen, P);
    kvWriteHalf(v.data(), reinterpret_cast<_Float16*>(kv.valuesH.data), T, G, hd, maxLen, P);
  } else {
    kvWriteBody<float>(k.data(), kv.keys.data, T, G, hd, maxLen, P);
    kvWriteBody<float>(v.data(), kv.values.data, T, G, hd, maxLen, P);
  }
  attendAll(q.data(), kv.keys.data, kv.values.data, kv.kh(), kv.vh(), kv.half,
            out.data, T, H, G, hd, maxLen, P, window, scale);
  return info.Env().Undefined();
}

}  // namespace

void registerAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("cachedAttention", Napi::Function::New(env, CachedAttention, "cachedAttention"));
  exports.Set("kvWrite", Napi::Function::New(env, KvWrite, "kvWrite"));
  exports.Set("qkvAttention", Napi::Function::New(env, QkvAttention, "qkvAttention"));
}

}  // namespace moe
