// Kernels along the middle axis of [outer, dim, inner]: softmax (and log-softmax) with backward,
// sum/mean/max reductions, the max scatter, and per-row top-k with its backward.
#include <limits>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "simd_math.h"
#include "threadpool.h"

namespace moe {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- softmax over contiguous rows (inner == 1) ----

MOE_CLONES void softmaxRows(const float* x, float* y, i64 rows, i64 dim, bool log) {
  for (i64 r = 0; r < rows; r++) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float mx = -kInf;
    // NaN is skipped here but still reaches every output through the sum, as in the reference.
#pragma omp simd reduction(max : mx)
    for (i64 j = 0; j < dim; j++) mx = xr[j] > mx ? xr[j] : mx;
    float s = 0.0f;
    if (log) {
#pragma omp simd reduction(+ : s)
      for (i64 j = 0; j < dim; j++) s += vexp(xr[j] - mx);
      float lse = mx + std::log(s);
      for (i64 j = 0; j < dim; j++) yr[j] = xr[j] - lse;
    } else {
#pragma omp simd reduction(+ : s)
      for (i64 j = 0; j < dim; j++) {
        float e = vexp(xr[j] - mx);
        yr[j] = e;
        s += e;
      }
      for (i64 j = 0; j < dim; j++) yr[j] = yr[j] / s;
    }
  }
}

// Columns [0, w) of one [dim, inner] slab; mx and s are scratch of w floats.
MOE_CLONES void softmaxCols(const float* x, float* y, i64 dim, i64 inner, i64 w, bool log, float* mx, float* s) {
  for (i64 i = 0; i < w; i++) { mx[i] = -kInf; s[i] = 0.0f; }
  for (i64 j = 0; j < dim; j++) {
    const float* xr = x + j * inner;
    for (i64 i = 0; i < w; i++) mx[i] = xr[i] > mx[i] ? xr[i] : mx[i];
  }
  for (i64 j = 0; j < dim; j++) {
    const float* xr = x + j * inner;
    float* yr = y + j * inner;
    if (log) for (i64 i = 0; i < w; i++) s[i] += vexp(xr[i] - mx[i]);
    else for (i64 i = 0; i < w; i++) { float e = vexp(xr[i] - mx[i]); yr[i] = e; s[i] += e; }
  }
  if (log) {
    for (i64 i = 0; i < w; i++) mx[i] = mx[i] + std::log(s[i]);
    for (i64 j = 0; j < dim; j++) for (i64 i = 0; i < w; i++) y[j * inner + i] = x[j * inner + i] - mx[i];
  } else {
    for (i64 j = 0; j < dim; j++) for (i64 i = 0; i < w; i++) y[j * inner + i] = y[j * inner + i] / s[i];
  }
}

MOE_CLONES void softmaxBackRows(const float* y, const float* dy, float* dx, i64 rows, i64 dim, bool log) {
  for (i64 r = 0; r < rows; r++) {
    const float* yr = y + r * dim;
    const float* gr = dy + r * dim;
    float* dr = dx + r * dim;
    float s = 0.0f;
    if (log) {
#pragma omp simd reduction(+ : s)
      for (i64 j = 0; j < dim; j++) s += gr[j];
      for (i64 j = 0; j < dim; j++) dr[j] = gr[j] - vexp(yr[j]) * s;
    } else {
#pragma omp simd reduction(+ : s)
      for (i64 j = 0; j < dim; j++) s += gr[j] * yr[j];
      for (i64 j = 0; j < dim; j++) dr[j] = yr[j] * (gr[j] - s);
    }
  }
}

MOE_CLONES void softmaxBackCols(const float* y, const float* dy, float* dx, i64 dim, i64 inner, i64 w, bool log, float* s) {
  for (i64 i = 0; i < w; i++) s[i] = 0.0f;
  for (i64 j = 0; j < dim; j++) {
    const float* yr = y + j * inner;
    const float* gr = dy + j * inner;
    if (log) for (i64 i = 0; i < w; i++) s[i] += gr[i];
    else for (i64 i = 0; i < w; i++) s[i] += gr[i] * yr[i];
  }
  for (i64 j = 0; j < dim; j++) {
    const float* yr = y + j * inner;
    const float* gr = dy + j * inner;
    float* dr = dx + j * inner;
    if (log) for (i64 i = 0; i < w; i++) dr[i] = gr[i] - vexp(yr[i]) * s[i];
    else for (i64 i = 0; i < w; i++) dr[i] = yr[i] * (gr[i] - s[i]);
  }
}

// Runs colFn(o, i0, w, scratch) over every outer slab and column block [i0, i0 + w) of width <= 256,
// in parallel over (slab, block) pairs.
template <typename F>
void forColumnBlocks(i64 outer, i64 dim, i64 inner, F&& colFn) {
  const i64 bw = 256;
  i64 blocks = (inner + bw - 1) / bw;
  i64 tasks = outer * blocks;
  i64 perTask = dim * (inner < bw ? inner : bw);
  i64 minTasks = kParallelMin / (perTask > 0 ? perTask : 1);
  parallelFor(tasks, minTasks < 1 ? 1 : minTasks, [&](i64 t0, i64 t1) {
    float scratch[2 * bw];
    for (i64 t = t0; t < t1; t++) {
      i64 o = t / blocks, i0 = (t % blocks) * bw;
      i64 w = inner - i0 < bw ? inner - i0 : bw;
      colFn(o, i0, w, scratch);
    }
  });
}

void checkOuterDimInner(const Args& args, i64 outer, i64 dim, i64 inner, std::initializer_list<std::pair<const Buf<float>*, const char*>> bufs) {
  i64 total = args.mul({outer, dim, inner});
  for (auto& b : bufs) args.need(*b.first, total, b.second);
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  Args args(info, "softmax", 6);
  Buf<float> x = args.f32(0, "x"), y = args.f32(1, "out");
  i64 outer = args.size(2, "outer"), dim = args.size(3, "dim"), inner = args.size(4, "inner");
  bool log = args.boolean(5, "log");
  checkOuterDimInner(args, outer, dim, inner, {{&x, "x"}, {&y, "out"}});
  if (outer * dim * inner == 0) return info.Env().Undefined();
  if (inner == 1) {
    parallelFor(outer, kParallelMin / dim + 1, [&](i64 b, i64 e) { softmaxRows(x.data + b * dim, y.data + b * dim, e - b, dim, log); });
  } else {
    forColumnBlocks(outer, dim, inner, [&](i64 o, i64 i0, i64 w, float* sc) {
      i64 base = o * dim * inner + i0;
      softmaxCols(x.data + base, y.data + base, dim, inner, w, log, sc, sc + 256);
    });
  }
  return info.Env().Undefined();
}

Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  Args args(info, "softmaxBackward", 7);
  Buf<float> y = args.f32(0, "y"), dy = args.f32(1, "dy"), dx = args.f32(2, "dx");
  i64 outer = args.size(3, "outer"), dim = args.size(4, "dim"), inner = args.size(5, "inner");
  bool log = args.boolean(6, "log");
  checkOuterDimInner(args, outer, dim, inner, {{&y, "y"}, {&dy, "dy"}, {&dx, "dx"}});
  if (outer * dim * inner == 0) return info.Env().Undefined();
  if (inner == 1) {
    parallelFor(outer, kParallelMin / dim + 1, [&](i64 b, i64 e) {
      softmaxBackRows(y.data + b * dim, dy.data + b * dim, dx.data + b * dim, e - b, dim, log);
    });
  } else {
    forColumnBlocks(outer, dim, inner, [&](i64 o, i64 i0, i64 w, float* sc) {
      i64 base = o * dim * inner + i0;
      softmaxBackCols(y.data + base, dy.data + base, dx.data + base, dim, inner, w, log, sc);
    });
  }
  return info.Env().Undefined();
}

// ---- reductions ----

MOE_CLONES float rowSum(const float* x, i64 n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (i64 j = 0; j < n; j++) s += x[j];
  return s;
}

// Max of a row with the reference's semantics: the first NaN wins, else the first maximum.
MOE_CLONES void rowMax(const float* x, i64 n, float* out, int32_t* at) {
  float best = -kInf;
  int nan = 0;
#pragma omp simd reduction(max : best) reduction(| : nan)
  for (i64 j = 0; j < n; j++) {
    best = x[j] > best ? x[j] : best;
    nan |= x[j] != x[j];
  }
  i64 k = 0;
  if (nan) { while (x[k] == x[k]) k++; }
  else if (n > 0) { while (!(x[k] == best)) k++; }
  *out = n > 0 ? x[k] : -kInf;
  *at = static_cast<int32_t>(k);
}

MOE_CLONES void colSum(const float* x, i64 dim, i64 inner, i64 w, float* acc) {
  for (i64 i = 0; i < w; i++) acc[i] = 0.0f;
  for (i64 j = 0; j < dim; j++) for (i64 i = 0; i < w; i++) acc[i] += x[j * inner + i];
}

MOE_CLONES void colMax(const float* x, i64 dim, i64 inner, i64 w, float* best, int32_t* at) {
  for (i64 i = 0; i < w; i++) { best[i] = -kInf; at[i] = 0; }
  for (i64 j = 0; j < dim; j++) {
    for (i64 i = 0; i < w; i++) {
      float v = x[j * inner + i], b = best[i];
      // once a NaN is taken it stays (the reference stops at the first NaN)
      bool take = b == b && (v > b || v != v);
      best[i] = take ? v : b;
      at[i] = take ? static_cast<int32_t>(j) : at[i];
    }
  }
}

Napi::Value Reduce(const Napi::CallbackInfo& info) {
  Args args(info, "reduce", 7);
  i64 op = args.integer(0, "op");
  if (op < 0 || op > 2) args.fail("unknown reduce op code " + std::to_string(op));
  Buf<float> x = args.f32(1, "x"), out = args.f32(2, "out");
  Buf<int32_t> arg;
  bool hasArg = !args.isNull(3);
  if (hasArg) arg = args.i32(3, "arg");
  i64 outer = args.size(4, "outer"), dim = args.size(5, "dim"), inner = args.size(6, "inner");
  args.need(x, args.mul({outer, dim, inner}), "x");
  i64 nOut = args.mul({outer, inner});
  args.need(out, nOut, "out");
  if (hasArg) args.need(arg, nOut, "arg");
  if (nOut == 0) return info.Env().Undefined();
  if (inner == 1) {
    parallelFor(outer, kParallelMin / (dim + 1) + 1, [&](i64 b, i64 e) {
      for (i64 o = b; o < e; o++) {
        const float* xr = x.data + o * dim;
        if (op == 2) {
          int32_t at;
          rowMax(xr, dim, out.data + o, &at);
          if (hasArg) arg.data[o] = at;
        } else {
          float s = rowSum(xr, dim);
          out.data[o] = op == 1 ? s / static_cast<float>(dim) : s;
        }
      }
    });
  } else {
    forColumnBlocks(outer, dim, inner, [&](i64 o, i64 i0, i64 w, float* sc) {
      const float* xs = x.data + o * dim * inner + i0;
      float* os = out.data + o * inner + i0;
      if (op == 2) {
        int32_t at[256];
        colMax(xs, dim, inner, w, os, at);
        if (hasArg) for (i64 i = 0; i < w; i++) arg.data[o * inner + i0 + i] = at[i];
      } else {
        colSum(xs, dim, inner, w, sc);
        for (i64 i = 0; i < w; i++) os[i] = op == 1 ? sc[i] / static_cast<float>(dim) : sc[i];
      }
    });
  }
  return info.Env().Undefined();
}

Napi::Value ScatterArg(const Napi::CallbackInfo& info) {
  Args args(info, "scatterArg", 6);
  Buf<float> dy = args.f32(0, "dy");
  Buf<int32_t> arg = args.i32(1, "arg");
  Buf<float> out = args.f32(2, "out");
  i64 outer = args.size(3, "outer"), dim = args.size(4, "dim"), inner = args.size(5, "inner");
  i64 nRed = args.mul({outer, inner});
  args.need(dy, nRed, "dy");
  args.need(arg, nRed, "arg");
  args.need(out, args.mul({outer, dim, inner}), "out");
  for (i64 t = 0; t < nRed; t++) {
    if (arg.data[t] < 0 || arg.data[t] >= dim) args.fail("arg[" + std::to_string(t) + "] = " + std::to_string(arg.data[t]) + " is outside [0, " + std::to_string(dim) + ")");
  }
  for (i64 o = 0; o < outer; o++) {
    for (i64 i = 0; i < inner; i++) out.data[(o * dim + arg.data[o * inner + i]) * inner + i] += dy.data[o * inner + i];
  }
  return info.Env().Undefined();
}

// ---- top-k ----

Napi::Value Topk(const Napi::CallbackInfo& info) {
  Args args(info, "topk", 6);
  Buf<float> x = args.f32(0, "x"), values = args.f32(1, "values");
  Buf<int32_t> indices = args.i32(2, "indices");
  i64 rows = args.size(3, "rows"), n = args.size(4, "n"), k = args.size(5, "k");
  args.need(x, args.mul({rows, n}), "x");
  args.need(values, args.mul({rows, k}), "values");
  args.need(indices, args.mul({rows, k}), "indices");
  if (n > 2147483647) args.fail("n must fit in int32");
  if (k == 0 || rows == 0) return info.Env().Undefined();
  // Insertion into a sorted buffer of k, exactly the reference's algorithm (NaN included).
  parallelFor(rows, kParallelMin / (n * (k < 8 ? k : 8) + 1) + 1, [&](i64 r0, i64 r1) {
    for (i64 r = r0; r < r1; r++) {
      const float* xr = x.data + r * n;
      float* vr = values.data + r * k;
      int32_t* ir = indices.data + r * k;
      i64 filled = 0;
      for (i64 j = 0; j < n; j++) {
        float v = xr[j];
        if (filled == k && !(v > vr[k - 1])) continue;
        i64 p = filled < k ? filled++ : k - 1;
        while (p > 0 && v > vr[p - 1]) {
          vr[p] = vr[p - 1];
          ir[p] = ir[p - 1];
          p--;
        }
        vr[p] = v;
        ir[p] = static_cast<int32_t>(j);
      }
    }
  });
  return info.Env().Undefined();
}

Napi::Value TopkBackward(const Napi::CallbackInfo& info) {
  Args args(info, "topkBackward", 6);
  Buf<float> dy = args.f32(0, "dy");
  Buf<int32_t> indices = args.i32(1, "indices");
  Buf<float> out = args.f32(2, "out");
  i64 rows = args.size(3, "rows"), n = args.size(4, "n"), k = args.size(5, "k");
  i64 nk = args.mul({rows, k});
  args.need(dy, nk, "dy");
  args.need(indices, nk, "indices");
  args.need(out, args.mul({rows, n}), "out");
  for (i64 t = 0; t < nk; t++) {
    if (indices.data[t] < 0 || indices.data[t] >= n) args.fail("indices[" + std::to_string(t) + "] = " + std::to_string(indices.data[t]) + " is outside [0, " + std::to_string(n) + ")");
  }
  for (i64 r = 0; r < rows; r++) {
    for (i64 j = 0; j < k; j++) out.data[r * n + indices.data[r * k + j]] += dy.data[r * k + j];
  }
  return info.Env().Undefined();
}

}  // namespace

void registerReduce(Napi::Env env, Napi::Object exports) {
  exports.Set("softmax", Napi::Function::New(env, Softmax, "softmax"));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward, "softmaxBackward"));
  exports.Set("reduce", Napi::Function::New(env, Reduce, "reduce"));
  exports.Set("scatterArg", Napi::Function::New(env, ScatterArg, "scatterArg"));
  exports.Set("topk", Napi::Function::New(env, Topk, "topk"));
  exports.Set("topkBackward", Napi::Function::New(env, TopkBackward, "topkBackward"));
}

}  // namespace moe
