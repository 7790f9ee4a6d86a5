// Elementwise kernels: unary activations and their derivatives, broadcasting binary ops,
// broadcastTo / sumToShape (adjoints of each other) and strided copies.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "elementwise.h"
#include "gelu_simd.h"
#include "kernels.h"
#include "simd_math.h"
#include "strided.h"
#include "threadpool.h"

namespace moe {
namespace {

constexpr float kInvSqrt2Pi = 0.398942280401432678f;  // normcdf's derivative
constexpr float kGeluTanhC = 0.797884560802865356f;  // sqrt(2 / pi)

enum Unary { kNeg, kExp, kLog, kSqrt, kSquare, kAbs, kTanh, kSigmoid, kSoftplus, kRelu, kGelu, kGeluTanh, kSilu, kNormCdf, kUnaryCount };

MOE_CLONES void unaryRange(int op, const float* x, float* y, i64 n) {
  switch (op) {
    case kNeg: for (i64 i = 0; i < n; i++) y[i] = -x[i]; break;
    case kExp: for (i64 i = 0; i < n; i++) y[i] = vexp(x[i]); break;
    case kLog: for (i64 i = 0; i < n; i++) y[i] = std::log(x[i]); break;
    case kSqrt: for (i64 i = 0; i < n; i++) y[i] = std::sqrt(x[i]); break;
    case kSquare: for (i64 i = 0; i < n; i++) y[i] = x[i] * x[i]; break;
    case kAbs: for (i64 i = 0; i < n; i++) y[i] = std::fabs(x[i]); break;
    case kTanh: for (i64 i = 0; i < n; i++) y[i] = vtanh(x[i]); break;
    case kSigmoid: for (i64 i = 0; i < n; i++) y[i] = vsigmoid(x[i]); break;
    case kSoftplus:
      for (i64 i = 0; i < n; i++) {
        float v = x[i];
        y[i] = (v > 0.0f ? v : 0.0f) + vlog1p01(vexp(-std::fabs(v)));
      }
      break;
    case kRelu: for (i64 i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case kGelu: gelu_simd::kernels().forward(x, y, n); break;  // hand-vectorised (gelu_simd.h)
    case kGeluTanh:
      for (i64 i = 0; i < n; i++) {
        float v = x[i];
        // 0.5 (1 + tanh(u)) = sigmoid(2u), stable where tanh(u) is near -1.
        y[i] = v * vsigmoid(2.0f * kGeluTanhC * (v + 0.044715f * v * v * v));
      }
      break;
    case kSilu: for (i64 i = 0; i < n; i++) y[i] = x[i] * vsigmoid(x[i]); break;
    case kNormCdf:
      for (i64 i = 0; i < n; i++) {
        float v = x[i], e, phi;
        verfcHalf(v, &e, &phi);
        y[i] = v >= 0.0f ? 1.0f - 0.5f * e : 0.5f * e;
      }
      break;
  }
}

MOE_CLONES void unaryGradRange(int op, const float* x, const float* y, const float* dy, float* dx, i64 n) {
  switch (op) {
    case kNeg: for (i64 i = 0; i < n; i++) dx[i] = -dy[i]; break;
    case kExp: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * y[i]; break;
    case kLog: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (1.0f / x[i]); break;
    case kSqrt: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (0.5f / y[i]); break;
    case kSquare: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (2.0f * x[i]); break;
    case kAbs:
      for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (x[i] > 0.0f ? 1.0f : x[i] < 0.0f ? -1.0f : 0.0f);
      break;
    case kTanh: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]); break;
    case kSigmoid: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (y[i] * (1.0f - y[i])); break;
    case kSoftplus: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * vsigmoid(x[i]); break;
    case kRelu: for (i64 i = 0; i < n; i++) dx[i] = dy[i] * (x[i] > 0.0f ? 1.0f : 0.0f); break;
    case kGelu: gelu_simd::kernels().backward(x, dy, dx, n); break;
    case kGeluTanh:
      for (i64 i = 0; i < n; i++) {
        float v = x[i], s, sm;
        vsigmoidPair(2.0f * kGeluTanhC * (v + 0.044715f * v * v * v), &s, &sm);
        // 0.5 (1 - tanh^2) = 2 s (1 - s)
        dx[i] = dy[i] * (s + 2.0f * v * s * sm * kGeluTanhC * (1.0f + 3.0f * 0.044715f * v * v));
      }
      break;
    case kSilu:
      for (i64 i = 0; i < n; i++) {
        float s, sm;
        vsigmoidPair(x[i], &s, &sm);
        dx[i] = dy[i] * (s * (1.0f + x[i] * sm));
      }
      break;
    case kNormCdf:
      for (i64 i = 0; i < n; i++) {
        float e, phi;
        verfcHalf(x[i], &e, &phi);
        dx[i] = dy[i] * (kInvSqrt2Pi * phi);
      }
      break;
  }
}

template <typename Op>
MOE_INLINE void binaryRunT(const float* a, i64 da, const float* b, i64 db, float* o, i64 n, Op op) {
  if (da == 1 && db == 1) for (i64 j = 0; j < n; j++) o[j] = op(a[j], b[j]);
  else if (da == 1 && db == 0) { float bv = b[0]; for (i64 j = 0; j < n; j++) o[j] = op(a[j], bv); }
  else if (da == 0 && db == 1) { float av = a[0]; for (i64 j = 0; j < n; j++) o[j] = op(av, b[j]); }
  else for (i64 j = 0; j < n; j++) o[j] = op(a[j * da], b[j * db]);
}

MOE_CLONES void binaryRun(int op, const float* a, i64 da, const float* b, i64 db, float* o, i64 n) {
  switch (op) {
    case 0: binaryRunT(a, da, b, db, o, n, [](float x, float y) { return x + y; }); break;
    case 1: binaryRunT(a, da, b, db, o, n, [](float x, float y) { return x - y; }); break;
    case 2: binaryRunT(a, da, b, db, o, n, [](float x, float y) { return x * y; }); break;
    case 3: binaryRunT(a, da, b, db, o, n, [](float x, float y) { return x / y; }); break;
  }
}

MOE_CLONES void scaleRun(const float* s, i64 ds, float* o, i64 n, float scale) {
  if (ds == 1) for (i64 j = 0; j < n; j++) o[j] = scale * s[j];
  else if (ds == 0) { float v = scale * s[0]; for (i64 j = 0; j < n; j++) o[j] = v; }
  else for (i64 j = 0; j < n; j++) o[j] = scale * s[j * ds];
}

MOE_CLONES float sumRun(const float* s, i64 n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (i64 j = 0; j < n; j++) acc += s[j];
  return acc;
}

MOE_CLONES float dotRun(const float* a, const float* b, i64 n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (i64 j = 0; j < n; j++) acc += a[j] * b[j];
  return acc;
}

MOE_CLONES void addRun(const float* s, float* d, i64 n) {
  for (i64 j = 0; j < n; j++) d[j] += s[j];
}

// Splits the rows of d into chunks for the pool; a single row is split along its length instead.
template <int K, typename Run>
void parallelRows(const Dims<K>& d, Run&& run) {
  i64 last = d.last(), rows = d.rows();
  if (rows == 1) {
    // run(off, start, count): one flat dimension split into ranges
    parallelFor(last, kParallelMin, [&](i64 b, i64 e) {
      i64 off[K];
      for (int k = 0; k < K; k++) off[k] = 0;
      run(off, b, e - b);
    });
    return;
  }
  i64 minRows = kParallelMin / (last > 0 ? last : 1);
  parallelFor(rows, minRows < 1 ? 1 : minRows, [&](i64 r0, i64 r1) {
    walkRows<K>(d, r0, r1, [&](const i64* off) { run(off, 0, last); });
  });
}

Napi::Value Unary(const Napi::CallbackInfo& info) {
  Args args(info, "unary", 3);
  i64 op = args.integer(0, "op");
  if (op < 0 || op >= kUnaryCount) args.fail("unknown unary op code " + std::to_string(op));
  Buf<float> x = args.f32(1, "x"), y = args.f32(2, "out");
  args.need(y, x.length, "out");
  parallelFor(x.length, kParallelMin / 4, [&](i64 b, i64 e) { unaryRange(static_cast<int>(op), x.data + b, y.data + b, e - b); });
  return info.Env().Undefined();
}

Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  Args args(info, "unaryBackward", 5);
  i64 op = args.integer(0, "op");
  if (op < 0 || op >= kUnaryCount) args.fail("unknown unary op code " + std::to_string(op));
  Buf<float> x = args.f32(1, "x"), y = args.f32(2, "y"), dy = args.f32(3, "dy"), dx = args.f32(4, "dx");
  args.need(y, x.length, "y");
  args.need(dy, x.length, "dy");
  args.need(dx, x.length, "dx");
  parallelFor(x.length, kParallelMin / 4, [&](i64 b, i64 e) {
    unaryGradRange(static_cast<int>(op), x.data + b, y.data + b, dy.data + b, dx.data + b, e - b);
  });
  return info.Env().Undefined();
}

// activationBackwardRows(op, pre, dy, gates | null, act, dot | null, rows, n): an activation's
// backward over the [rows, n] hidden of an expert MLP in one pass, recomputing the activation from
// the kept pre-activation: act = f(pre); dot[r] += <dy_r, act_r> (the gate's gradient, before dy
// changes); dy_r <- gate_r dy_r f'(pre_r), in place. The exact GELU runs as one SIMD loop per row
// (value and derivative share their erfc); other ops run their unary loops row by row.
Napi::Value ActivationBackwardRows(const Napi::CallbackInfo& info) {
  Args args(info, "activationBackwardRows", 8);
  const i64 op = args.integer(0, "op");
  if (op < 0 || op >= kUnaryCount) args.fail("unknown unary op code " + std::to_string(op));
  Buf<float> pre = args.f32(1, "pre"), dy = args.f32(2, "dy"), gates = args.f32OrNull(3, "gates");
  Buf<float> act = args.f32(4, "act"), dot = args.f32OrNull(5, "dot");
  const i64 rows = args.size(6, "rows"), n = args.size(7, "n");
  const i64 total = args.mul({rows, n});
  args.need(pre, total, "pre");
  args.need(dy, total, "dy");
  args.need(act, total, "act");
  if (gates.data) args.need(gates, rows, "gates");
  if (dot.data) args.need(dot, rows, "dot");
  if (total == 0) return info.Env().Undefined();
  const gelu_simd::Kernels& k = gelu_simd::kernels();
  parallelFor(rows, std::max<i64>(1, kParallelMin / 4 / n), [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float g = gates.data ? gates.data[r] : 1.0f;
      const float* p = pre.data + r * n;
      float* d = dy.data + r * n;
      float* a = act.data + r * n;
      float s;
      if (op == kGelu) {
        s = k.row(p, d, a, g, n);
      } else {
        unaryRange(static_cast<int>(op), p, a, n);
        s = dotRun(d, a, n);
        scaleRun(d, 1, d, n, g);
        unaryGradRange(static_cast<int>(op), p, a, d, d, n);
      }
      if (dot.data) dot.data[r] += s;
    }
  });
  return info.Env().Undefined();
}

// geluSimd(tier, backward, x, dy, out): the test hook running one SIMD tier of the GELU kernels,
// tier 0 the one picked for this CPU, 1 the portable baseline, 2 AVX2+FMA, 3 AVX-512 (an error
// where the CPU lacks it). backward: out = dy gelu'(x), else out = gelu(x) (dy unused).
Napi::Value GeluSimd(const Napi::CallbackInfo& info) {
  Args args(info, "geluSimd", 5);
  const i64 tier = args.integer(0, "tier");
  const bool backward = args.boolean(1, "backward");
  Buf<float> x = args.f32(2, "x"), dy = args.f32(3, "dy"), out = args.f32(4, "out");
  args.need(dy, x.length, "dy");
  args.need(out, x.length, "out");
  gelu_simd::Kernels k;
  if (tier == 0) k = gelu_simd::kernels();
  else if (tier == 1) k = gelu_simd::baseKernels();
  else if (tier == 2 || tier == 3) {
    const SimdTier have = simdTier();
    if (tier == 3 ? have != SimdTier::Avx512 : have == SimdTier::Base) args.fail("tier " + std::to_string(tier) + " needs a CPU feature this one lacks");
    if (!gelu_simd::tierKernels(tier == 3, &k)) args.fail("tier " + std::to_string(tier) + " is not compiled in this build");
  } else {
    args.fail("tier must be 0 (auto), 1 (baseline), 2 (AVX2) or 3 (AVX-512), got " + std::to_string(tier));
  }
  if (backward) k.backward(x.data, dy.data, out.data, x.length);
  else k.forward(x.data, out.data, x.length);
  return info.Env().Undefined();
}

std::vector<i64> contiguousStrides(const std::vector<i64>& shape) {
  std::vector<i64> s(shape.size());
  i64 acc = 1;
  for (size_t i = shape.size(); i-- > 0;) { s[i] = acc; acc *= shape[i]; }
  return s;
}

Napi::Value Binary(const Napi::CallbackInfo& info) {
  Args args(info, "binary", 7);
  i64 op = args.integer(0, "op");
  if (op < 0 || op > 3) args.fail("unknown binary op code " + std::to_string(op));
  Buf<float> a = args.f32(1, "a");
  std::vector<i64> aShape = args.ints(2, "aShape", true);
  Buf<float> b = args.f32(3, "b");
  std::vector<i64> bShape = args.ints(4, "bShape", true);
  Buf<float> out = args.f32(5, "out");
  std::vector<i64> outShape = args.ints(6, "outShape", true);
  i64 total = checkBroadcast(args, outShape, outShape, "outShape");
  args.need(a, checkBroadcast(args, aShape, outShape, "aShape"), "a");
  args.need(b, checkBroadcast(args, bShape, outShape, "bShape"), "b");
  args.need(out, total, "out");
  std::vector<i64> sa = broadcastStrides(aShape, outShape), sb = broadcastStrides(bShape, outShape), so = contiguousStrides(outShape);
  const std::vector<i64>* st[3] = {&sa, &sb, &so};
  Dims<3> d;
  if (!collapse<3>(outShape, st, &d)) return info.Env().Undefined();
  if (d.rank == 0) {
    binaryRun(static_cast<int>(op), a.data, 0, b.data, 0, out.data, 1);
    return info.Env().Undefined();
  }
  int r = d.rank - 1;
  parallelRows<3>(d, [&](const i64* off, i64 start, i64 n) {
    binaryRun(static_cast<int>(op), a.data + off[0] + start * d.stride[0][r], d.stride[0][r], b.data + off[1] + start * d.stride[1][r],
              d.stride[1][r], out.data + off[2] + start, n);
  });
  return info.Env().Undefined();
}

Napi::Value BroadcastTo(const Napi::CallbackInfo& info) {
  Args args(info, "broadcastTo", 5);
  Buf<float> src = args.f32(0, "src");
  std::vector<i64> srcShape = args.ints(1, "srcShape", true);
  Buf<float> dst = args.f32(2, "dst");
  std::vector<i64> dstShape = args.ints(3, "dstShape", true);
  float scale = static_cast<float>(args.number(4, "scale"));
  i64 total = checkBroadcast(args, dstShape, dstShape, "dstShape");
  args.need(src, checkBroadcast(args, srcShape, dstShape, "srcShape"), "src");
  args.need(dst, total, "dst");
  std::vector<i64> ss = broadcastStrides(srcShape, dstShape), sd = contiguousStrides(dstShape);
  const std::vector<i64>* st[2] = {&ss, &sd};
  Dims<2> d;
  if (!collapse<2>(dstShape, st, &d)) return info.Env().Undefined();
  if (d.rank == 0) {
    dst.data[0] = scale * src.data[0];
    return info.Env().Undefined();
  }
  int r = d.rank - 1;
  parallelRows<2>(d, [&](const i64* off, i64 start, i64 n) {
    scaleRun(src.data + off[0] + start * d.stride[0][r], d.stride[0][r], dst.data + off[1] + start, n, scale);
  });
  return info.Env().Undefined();
}

Napi::Value SumToShape(const Napi::CallbackInfo& info) {
  Args args(info, "sumToShape", 4);
  Buf<float> src = args.f32(0, "src");
  std::vector<i64> srcShape = args.ints(1, "srcShape", true);
  Buf<float> dst = args.f32(2, "dst");
  std::vector<i64> dstShape = args.ints(3, "dstShape", true);
  i64 total = checkBroadcast(args, srcShape, srcShape, "srcShape");
  args.need(src, total, "src");
  args.need(dst, checkBroadcast(args, dstShape, srcShape, "dstShape"), "dst");
  if (dst.length > 0) std::memset(dst.data, 0, sizeof(float) * static_cast<size_t>(dst.length));
  std::vector<i64> ss = contiguousStrides(srcShape), sd = broadcastStrides(dstShape, srcShape);
  const std::vector<i64>* st[2] = {&ss, &sd};
  Dims<2> d;
  if (!collapse<2>(srcShape, st, &d)) return info.Env().Undefined();
  if (d.rank == 0) {
    dst.data[0] += src.data[0];
    return info.Env().Undefined();
  }
  int r = d.rank - 1;
  i64 last = d.last();
  bool innerKept = d.stride[1][r] != 0;
  auto rowsRun = [&](i64 r0, i64 r1, i64 c0, i64 c1) {
    walkRows<2>(d, r0, r1, [&](const i64* off) {
      if (innerKept) addRun(src.data + off[0] + c0, dst.data + off[1] + c0, c1 - c0);
      else dst.data[off[1]] += sumRun(src.data + off[0] + c0, c1 - c0);
    });
  };
  i64 rows = d.rows();
  i64 dstTotal = checkBroadcast(args, dstShape, srcShape, "dstShape");
  if (d.rank >= 2 && d.stride[1][0] != 0) {
    // the outermost axis is kept: its index ranges write disjoint parts of dst
    i64 perOuter = rows / d.shape[0];
    i64 minOuter = kParallelMin / (perOuter * last) + 1;
    parallelFor(d.shape[0], minOuter, [&](i64 b, i64 e) { rowsRun(b * perOuter, e * perOuter, 0, last); });
  } else if (total >= kParallelMin && dstTotal * 4 <= total && poolThreads() > 1) {
    // the outermost axis is summed over: each thread sums its rows into a private copy of dst
    int parts = poolThreads();
    if (parts > 64) parts = 64;
    std::vector<float> partial(static_cast<size_t>(dstTotal * (parts - 1)), 0.0f);
    if (d.rank == 1) {
      parallelFor(parts, 1, [&](i64 p0, i64 p1) {
        for (i64 p = p0; p < p1; p++) {
          float v = sumRun(src.data + total * p / parts, total * (p + 1) / parts - total * p / parts);
          if (p == 0) dst.data[0] += v; else partial[p - 1] = v;
        }
      });
    } else {
      parallelFor(parts, 1, [&](i64 p0, i64 p1) {
        for (i64 p = p0; p < p1; p++) {
          float* base = p == 0 ? dst.data : partial.data() + dstTotal * (p - 1);
          walkRows<2>(d, rows * p / parts, rows * (p + 1) / parts, [&](const i64* off) {
            if (innerKept) addRun(src.data + off[0], base + off[1], last);
            else base[off[1]] += sumRun(src.data + off[0], last);
          });
        }
      });
    }
    for (int p = 1; p < parts; p++) addRun(partial.data() + dstTotal * (p - 1), dst.data, dstTotal);
  } else {
    rowsRun(0, rows, 0, last);
  }
  return info.Env().Undefined();
}

Napi::Value CopyStrided(const Napi::CallbackInfo& info) {
  Args args(info, "copyStrided", 7);
  napi_typedarray_type ks, kd;
  Buf<uint32_t> src = args.word(0, "src", &ks);
  i64 srcOffset = args.integer(1, "srcOffset");
  std::vector<i64> srcStrides = args.ints(2, "srcStrides", false);
  Buf<uint32_t> dst = args.word(3, "dst", &kd);
  i64 dstOffset = args.integer(4, "dstOffset");
  std::vector<i64> dstStrides = args.ints(5, "dstStrides", false);
  std::vector<i64> shape = args.ints(6, "shape", true);
  if (ks != kd) args.fail("src and dst must have the same type");
  if (srcStrides.size() != shape.size() || dstStrides.size() != shape.size()) args.fail("strides and shape must have the same rank");
  for (i64 s : shape) if (s == 0) return info.Env().Undefined();
  __int128 lo, hi;
  reach(srcOffset, srcStrides, shape, &lo, &hi);
  if (lo < 0 || hi >= src.length) args.fail("the view reaches outside src (" + std::to_string(src.length) + " elements)");
  reach(dstOffset, dstStrides, shape, &lo, &hi);
  if (lo < 0 || hi >= dst.length) args.fail("the view reaches outside dst (" + std::to_string(dst.length) + " elements)");
  const std::vector<i64>* st[2] = {&srcStrides, &dstStrides};
  Dims<2> d;
  collapse<2>(shape, st, &d);
  const uint32_t* s = src.data + srcOffset;
  uint32_t* t = dst.data + dstOffset;
  if (d.rank == 0) {
    t[0] = s[0];
    return info.Env().Undefined();
  }
  int r = d.rank - 1;
  i64 ls = d.stride[0][r], ld = d.stride[1][r];
  if (d.rank >= 2 && ls != 1 && d.stride[0][r - 1] == 1 && d.shape[r] >= 16 && d.shape[r - 1] >= 16) {
    // A transpose in the last two axes: copy 32 x 32 tiles so both sides stay in cache.
    Dims<2> od = d;
    od.rank = d.rank - 1;  // walk everything but the two tiled axes
    i64 A = d.shape[r - 1], B = d.shape[r], sa = d.stride[0][r - 1], da = d.stride[1][r - 1];
    const i64 T = 32;
    i64 tilesA = (A + T - 1) / T;
    i64 outer = od.rows();
    parallelFor(outer * tilesA, kParallelMin / (T * B) + 1, [&](i64 t0, i64 t1) {
      for (i64 task = t0; task < t1; task++) {
        i64 o = task / tilesA, a0 = (task % tilesA) * T, a1 = a0 + T < A ? a0 + T : A;
        walkRows<2>(od, o, o + 1, [&](const i64* off) {
          for (i64 b0 = 0; b0 < B; b0 += T) {
            i64 b1 = b0 + T < B ? b0 + T : B;
            for (i64 a = a0; a < a1; a++)
              for (i64 b = b0; b < b1; b++) t[off[1] + a * da + b * ld] = s[off[0] + a * sa + b * ls];
          }
        });
      }
    });
    return info.Env().Undefined();
  }
  parallelRows<2>(d, [&](const i64* off, i64 start, i64 n) {
    const uint32_t* a = s + off[0] + start * ls;
    uint32_t* b = t + off[1] + start * ld;
    if (ls == 1 && ld == 1) std::memmove(b, a, sizeof(uint32_t) * static_cast<size_t>(n));
    else for (i64 j = 0; j < n; j++) b[j * ld] = a[j * ls];
  });
  return info.Env().Undefined();
}

}  // namespace

void unaryRow(int op, const float* x, float* y, i64 n) { unaryRange(op, x, y, n); }

int unaryOpCount() { return kUnaryCount; }

void registerElementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("unary", Napi::Function::New(env, Unary, "unary"));
  exports.Set("unaryBackward", Napi::Function::New(env, UnaryBackward, "unaryBackward"));
  exports.Set("activationBackwardRows", Napi::Function::New(env, ActivationBackwardRows, "activationBackwardRows"));
  exports.Set("geluSimd", Napi::Function::New(env, GeluSimd, "geluSimd"));
  exports.Set("binary", Napi::Function::New(env, Binary, "binary"));
  exports.Set("broadcastTo", Napi::Function::New(env, BroadcastTo, "broadcastTo"));
  exports.Set("sumToShape", Napi::Function::New(env, SumToShape, "sumToShape"));
  exports.Set("copyStrided", Napi::Function::New(env, CopyStrided, "copyStrided"));
}

}  // namespace moe
