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

namespace moe {
namespace {

// One query row against keys [lo, hi] of its key head; s is scratch of hi - lo + 1 floats.
// The order of the js reference: scores, max, exp, sum, probabilities, then sum of p_j v_j.
MOE_CLONES void attendOne(const float* q, const float* keys, const float* values, i64 lo, i64 hi, i64 hd, float scale, float* s, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (i64 j = lo; j <= hi; j++) {
    const float* kj = keys + j * hd;
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (i64 i = 0; i < hd; i++) d += q[i] * kj[i];
    d *= scale;
    s[j - lo] = d;
    mx = d > mx ? d : mx;
  }
  const i64 n = hi - lo + 1;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (i64 j = 0; j < n; j++) {
    const float e = vexp(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  for (i64 i = 0; i < hd; i++) out[i] = 0.0f;
  for (i64 j = 0; j < n; j++) {
    const float p = s[j] / sum;
    const float* vj = values + (lo + j) * hd;
#pragma omp simd
    for (i64 i = 0; i < hd; i++) out[i] += p * vj[i];
  }
}

// cachedAttention(q, keys, values, out, T, H, G, hd, maxLen, P, window, scale)
Napi::Value CachedAttention(const Napi::CallbackInfo& info) {
  Args args(info, "cachedAttention", 12);
  Buf<float> q = args.f32(0, "q"), keys = args.f32(1, "keys"), values = args.f32(2, "values"), out = args.f32(3, "out");
  const i64 T = args.size(4, "T"), H = args.size(5, "H"), G = args.size(6, "G"), hd = args.size(7, "hd");
  const i64 maxLen = args.size(8, "maxLen"), P = args.size(9, "P"), window = args.size(10, "window");
  const float scale = static_cast<float>(args.number(11, "scale"));
  if (G == 0 || H % G != 0) args.fail("H = " + std::to_string(H) + " query heads are not a multiple of G = " + std::to_string(G) + " key/value heads");
  if (P + T > maxLen) args.fail("P + T = " + std::to_string(P + T) + " positions exceed maxLen = " + std::to_string(maxLen));
  args.need(q, args.mul({T, H, hd}), "q");
  args.need(keys, args.mul({G, maxLen, hd}), "keys");
  args.need(values, args.mul({G, maxLen, hd}), "values");
  args.need(out, args.mul({T, H, hd}), "out");
  if (T == 0 || H == 0 || hd == 0) return info.Env().Undefined();
  const i64 g = H / G, L = P + T;
  const float* qd = q.data;
  const float* kd = keys.data;
  const float* vd = values.data;
  float* od = out.data;
  // one unit = one (query, head) pair, ~2 * L * hd flops
  parallelFor(T * H, std::max<i64>(1, 16384 / std::max<i64>(1, L * hd)), [=](i64 lo, i64 hi) {
    static thread_local std::vector<float> scratch;
    if (scratch.size() < static_cast<size_t>(L)) scratch.resize(static_cast<size_t>(L));
    for (i64 u = lo; u < hi; u++) {
      const i64 t = u / H, h = u % H, kv = h / g, pos = P + t;
      const i64 first = window > 0 ? std::max<i64>(0, pos - window + 1) : 0;
      const float* kh = kd + kv * maxLen * hd;
      const float* vh = vd + kv * maxLen * hd;
      attendOne(qd + u * hd, kh, vh, first, pos, hd, scale, scratch.data(), od + u * hd);
    }
  });
  return info.Env().Undefined();
}

}  // namespace

void registerAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("cachedAttention", Napi::Function::New(env, CachedAttention, "cachedAttention"));
}

}  // namespace moe
