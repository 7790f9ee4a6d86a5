// Decode-sized SwiGLU experts in one call (inference only): for a few tokens and their routed
// experts, out[t] += sum over t's assignments of gate * W2_e (silu(W1_e x_t) * (W3_e x_t)).
// The unfused path ran ten kernels per MoE layer (permute, three grouped products, silu, mul,
// unpermute, the residual add), each with JS, fresh output arrays and a pool hand-off around it;
// for the 1b preset that JS was ~6 ms of a 47 ms token. Here: two pool jobs, the gate and up rows of
// every chosen expert (in blocks of 128 rows, the activation applied and, for block weights,
// quantised to Q8_0 per 32-value block as it is produced), then the down rows, then the gated sum.
// Weights are float32 (the matrix-vector kernel of gemv.cc) or ggml Q8_0 / Q4_0 blocks (quant.cc's).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "quant.h"
#include "sgemm.h"
#include "simd_math.h"
#include "threadpool.h"

namespace moe {
namespace {

// Rows of an expert's matrix per scheduling unit: whole 32-value blocks, so a unit of gate/up rows
// quantises whole blocks of the activation it produces; long enough that each thread reads few
// separate stretches of memory (every jump to another stretch restarts the hardware prefetcher).
constexpr i64 kRowsPerUnit = 128;

MOE_CLONES void siluMul(const float* g, const float* u, float* y, i64 n) {
  for (i64 i = 0; i < n; i++) y[i] = g[i] * vsigmoid(g[i]) * u[i];
}

// A weight stack: float32 values or blocks of a type code (0 Q8_0, 1 Q4_0), [E, rows, cols].
struct Stack {
  const float* f = nullptr;
  const uint8_t* q = nullptr;
  i64 rows = 0, cols = 0, rowBytes = 0;
  // rows o0 .. o1 of expert e against `count` activation rows: float rows a (row stride cols), or
  // Q8_0 rows (aq, ad); out[r * ldo + o - o0 + ...] as the kernels below place it.
  void dots(int type, i64 e, i64 o0, i64 o1, const float* a, const uint8_t* aq, const float* ad, i64 count, float* out, i64 ldo) const {
    if (f) {
      smallMSgemm(false, true, count, o1 - o0, cols, a, cols, f + (e * rows + o0) * cols, cols, false, out + o0, ldo, false);
    } else {
      quantRowDots(type, q + e * rows * rowBytes, rowBytes, o0, o1, aq, ad, cols / kQuantBlock, count, out, ldo);
    }
  }
};

Stack stackArg(const Args& args, const Napi::CallbackInfo& info, size_t i, const char* name, int type, i64 E, i64 rows, i64 cols) {
  Stack s;
  s.rows = rows;
  s.cols = cols;
  Napi::Value v = info[i];
  const napi_typedarray_type want = type < 0 ? napi_float32_array : napi_uint8_array;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != want) {
    args.fail(std::string(name) + (type < 0 ? " must be a Float32Array (float32 weights)" : " must be a Uint8Array (block-quantised weights)"));
  }
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  void* data = args.dataOf(ta, name);
  const i64 have = static_cast<i64>(ta.ElementLength());
  if (type < 0) {
    s.f = static_cast<const float*>(data);
    Buf<float> b{static_cast<float*>(data), have};
    args.need(b, args.mul({E, rows, cols}), name);
  } else {
    s.q = static_cast<const uint8_t*>(data);
    s.rowBytes = cols / kQuantBlock * quantWeightBlockBytes(type);
    Buf<const uint8_t> b{s.q, have};
    args.need(b, args.mul({E, rows, s.rowBytes}), name);
  }
  return s;
}

// expertSwiGLU(x, token, expert, gates, w1, w3, w2, out, T, d, h, E, type): type -1 float32, 0 Q8_0, 1 Q4_0.
Napi::Value ExpertSwiGLU(const Napi::CallbackInfo& info) {
  Args args(info, "expertSwiGLU", 13);
  Buf<float> x = args.f32(0, "x");
  Buf<int32_t> token = args.i32(1, "token"), expert = args.i32(2, "expert");
  Buf<float> gates = args.f32(3, "gates");
  Buf<float> out = args.f32(7, "out");
  const i64 T = args.size(8, "T"), d = args.size(9, "d"), h = args.size(10, "h"), E = args.size(11, "E");
  const i64 typeCode = args.integer(12, "type");
  if (typeCode < -1 || typeCode > 1) args.fail("type code " + std::to_string(typeCode) + " is none of float32 (-1), Q8_0 (0), Q4_0 (1)");
  const int type = static_cast<int>(typeCode);
  if (type >= 0 && (d % kQuantBlock != 0 || h % kQuantBlock != 0)) {
    args.fail("d = " + std::to_string(d) + " and h = " + std::to_string(h) + " must be multiples of 32 for block-quantised weights");
  }
  const Stack w1 = stackArg(args, info, 4, "w1", type, E, h, d), w3 = stackArg(args, info, 5, "w3", type, E, h, d),
              w2 = stackArg(args, info, 6, "w2", type, E, d, h);
  const i64 A = expert.length;
  if (token.length != A || gates.length != A) {
    args.fail("token, expert and gates must have one entry per assignment: " + std::to_string(token.length) + ", " + std::to_string(A) + ", " +
              std::to_string(gates.length));
  }
  args.need(x, args.mul({T, d}), "x");
  args.need(out, args.mul({T, d}), "out");
  // Assignments grouped by expert (stable: an expert's rows keep the order given).
  std::vector<i64> count(static_cast<size_t>(E) + 1, 0);
  for (i64 a = 0; a < A; a++) {
    if (token.data[a] < 0 || token.data[a] >= T) args.fail("token[" + std::to_string(a) + "] = " + std::to_string(token.data[a]) + " is outside 0.." + std::to_string(T - 1));
    if (expert.data[a] < 0 || expert.data[a] >= E) args.fail("expert[" + std::to_string(a) + "] = " + std::to_string(expert.data[a]) + " is outside 0.." + std::to_string(E - 1));
    count[static_cast<size_t>(expert.data[a]) + 1]++;
  }
  if (A == 0 || d == 0 || h == 0) return info.Env().Undefined();
  for (i64 e = 0; e < E; e++) count[static_cast<size_t>(e) + 1] += count[static_cast<size_t>(e)];
  std::vector<i64> order(static_cast<size_t>(A));
  {
    std::vector<i64> at(count.begin(), count.end() - 1);
    for (i64 a = 0; a < A; a++) order[static_cast<size_t>(at[static_cast<size_t>(expert.data[a])]++)] = a;
  }
  std::vector<i64> groupStart, groupExpert;  // group g: rows groupStart[g] .. groupStart[g + 1] of `order`
  for (i64 e = 0; e < E; e++) {
    if (count[static_cast<size_t>(e) + 1] > count[static_cast<size_t>(e)]) {
      groupStart.push_back(count[static_cast<size_t>(e)]);
      groupExpert.push_back(e);
    }
  }
  groupStart.push_back(A);
  const i64 G = static_cast<i64>(groupExpert.size());

  // The activations in assignment order: float rows, or Q8_0 blocks of each token's row.
  const i64 nbd = d / kQuantBlock, nbh = h / kQuantBlock;
  std::vector<float> xs, gate(static_cast<size_t>(A * h)), up(static_cast<size_t>(A * h)), act(static_cast<size_t>(A * h));
  std::vector<uint8_t> xq, aq;
  std::vector<float> xd, ad;
  if (type < 0) {
    xs.resize(static_cast<size_t>(A * d));
    for (i64 r = 0; r < A; r++) std::memcpy(&xs[static_cast<size_t>(r * d)], x.data + token.data[order[static_cast<size_t>(r)]] * d, sizeof(float) * d);
  } else {
    std::vector<uint8_t> tq(static_cast<size_t>(T * nbd * kActBlockBytes));
    std::vector<float> td(static_cast<size_t>(T * nbd));
    for (i64 t = 0; t < T; t++) {
      if (!quantizeActRow(x.data + t * d, &tq[static_cast<size_t>(t * nbd * kActBlockBytes)], &td[static_cast<size_t>(t * nbd)], nbd)) {
        args.fail("x row " + std::to_string(t) + " holds a non-finite value, which cannot be quantised");
      }
    }
    xq.resize(static_cast<size_t>(A * nbd * kActBlockBytes));
    xd.resize(static_cast<size_t>(A * nbd));
    for (i64 r = 0; r < A; r++) {
      const i64 t = token.data[order[static_cast<size_t>(r)]];
      std::memcpy(&xq[static_cast<size_t>(r * nbd * kActBlockBytes)], &tq[static_cast<size_t>(t * nbd * kActBlockBytes)], static_cast<size_t>(nbd * kActBlockBytes));
      std::memcpy(&xd[static_cast<size_t>(r * nbd)], &td[static_cast<size_t>(t * nbd)], sizeof(float) * nbd);
    }
    aq.resize(static_cast<size_t>(A * nbh * kActBlockBytes));
    ad.resize(static_cast<size_t>(A * nbh));
  }
  // A thread is worth waking for about as many weight bytes as the matrix-vector kernel asks.
  auto minUnits = [&](i64 unitValues) {
    const i64 unitBytes = type < 0 ? unitValues * 4 : unitValues / kQuantBlock * quantWeightBlockBytes(type);
    return std::max<i64>(1, smallMMinBytesPerThread() / std::max<i64>(1, unitBytes));
  };

  // 1. gate and up rows of every group, the activation, and (block weights) its Q8_0 blocks.
  const i64 blocksH = (h + kRowsPerUnit - 1) / kRowsPerUnit;
  std::atomic<i64> badRow{-1};
  parallelFor(G * blocksH, minUnits(2 * kRowsPerUnit * d), [&](i64 u0, i64 u1) {
    for (i64 u = u0; u < u1; u++) {
      const i64 g = u / blocksH, o0 = (u % blocksH) * kRowsPerUnit, o1 = std::min(h, o0 + kRowsPerUnit);
      const i64 r0 = groupStart[static_cast<size_t>(g)], rows = groupStart[static_cast<size_t>(g) + 1] - r0, e = groupExpert[static_cast<size_t>(g)];
      const float* a = type < 0 ? &xs[static_cast<size_t>(r0 * d)] : nullptr;
      const uint8_t* q = type < 0 ? nullptr : &xq[static_cast<size_t>(r0 * nbd * kActBlockBytes)];
      const float* qd = type < 0 ? nullptr : &xd[static_cast<size_t>(r0 * nbd)];
      w1.dots(type, e, o0, o1, a, q, qd, rows, &gate[static_cast<size_t>(r0 * h)], h);
      w3.dots(type, e, o0, o1, a, q, qd, rows, &up[static_cast<size_t>(r0 * h)], h);
      for (i64 r = r0; r < r0 + rows; r++) {
        float* y = &act[static_cast<size_t>(r * h)];
        siluMul(&gate[static_cast<size_t>(r * h + o0)], &up[static_cast<size_t>(r * h + o0)], y + o0, o1 - o0);
        if (type >= 0) {
          const i64 b0 = o0 / kQuantBlock, nb = (o1 - o0) / kQuantBlock;
          if (!quantizeActRow(y + o0, &aq[static_cast<size_t>((r * nbh + b0) * kActBlockBytes)], &ad[static_cast<size_t>(r * nbh + b0)], nb)) badRow.store(r);
        }
      }
    }
  });
  if (badRow.load() >= 0) {
    args.fail("the hidden activation of token " + std::to_string(token.data[order[static_cast<size_t>(badRow.load())]]) + " holds a non-finite value, which cannot be quantised");
  }

  // 2. down rows of every group: each unit one expert's block of output rows (one contiguous stretch
  // of that expert's matrix), into its assignments' rows of `down`.
  const i64 blocksD = (d + kRowsPerUnit - 1) / kRowsPerUnit;
  std::vector<float> down(static_cast<size_t>(A * d));
  parallelFor(G * blocksD, minUnits(kRowsPerUnit * h), [&](i64 u0, i64 u1) {
    for (i64 u = u0; u < u1; u++) {
      const i64 g = u / blocksD, o0 = (u % blocksD) * kRowsPerUnit, o1 = std::min(d, o0 + kRowsPerUnit);
      const i64 r0 = groupStart[static_cast<size_t>(g)], rows = groupStart[static_cast<size_t>(g) + 1] - r0;
      const float* a = type < 0 ? &act[static_cast<size_t>(r0 * h)] : nullptr;
      const uint8_t* q = type < 0 ? nullptr : &aq[static_cast<size_t>(r0 * nbh * kActBlockBytes)];
      const float* qd = type < 0 ? nullptr : &ad[static_cast<size_t>(r0 * nbh)];
      w2.dots(type, groupExpert[static_cast<size_t>(g)], o0, o1, a, q, qd, rows, &down[static_cast<size_t>(r0 * d)], d);
    }
  });
  // 3. each token's gated rows summed in assignment (expert-major) order, then added into out: the
  // grouped path's unpermute and residual add, in the same order.
  std::vector<float> sum(static_cast<size_t>(d));
  for (i64 t = 0; t < T; t++) {
    std::fill(sum.begin(), sum.end(), 0.0f);
    bool any = false;
    for (i64 r = 0; r < A; r++) {
      const i64 a = order[static_cast<size_t>(r)];
      if (token.data[a] != t) continue;
      any = true;
      const float gw = gates.data[a];
      const float* z = &down[static_cast<size_t>(r * d)];
      for (i64 j = 0; j < d; j++) sum[static_cast<size_t>(j)] += gw * z[j];
    }
    if (!any) continue;
    float* o = out.data + t * d;
    for (i64 j = 0; j < d; j++) o[j] += sum[static_cast<size_t>(j)];
  }
  return info.Env().Undefined();
}

}  // namespace

void registerExpertsDecode(Napi::Env env, Napi::Object exports) {
  exports.Set("expertSwiGLU", Napi::Function::New(env, ExpertSwiGLU, "expertSwiGLU"));
}

}  // namespace moe
