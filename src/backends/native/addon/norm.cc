// Layer norm and RMS norm over the rows of [rows, d], with their backward passes. Rows are split
// across threads; dgamma/dbeta are summed per thread and then added, so threads never share a write.
#include <cstring>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "simd_math.h"
#include "threadpool.h"

namespace moe {
namespace {

MOE_CLONES void layerNormRows(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                              i64 r0, i64 r1, i64 d, float eps) {
  for (i64 r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (i64 j = 0; j < d; j++) s += xr[j];
    float m = s / static_cast<float>(d);
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (i64 j = 0; j < d; j++) { float c = xr[j] - m; v += c * c; }
    v /= static_cast<float>(d);
    float rs = 1.0f / std::sqrt(v + eps);
    mean[r] = m;
    rstd[r] = rs;
    if (gamma && beta) for (i64 j = 0; j < d; j++) yr[j] = (xr[j] - m) * rs * gamma[j] + beta[j];
    else if (gamma) for (i64 j = 0; j < d; j++) yr[j] = (xr[j] - m) * rs * gamma[j];
    else if (beta) for (i64 j = 0; j < d; j++) yr[j] = (xr[j] - m) * rs + beta[j];
    else for (i64 j = 0; j < d; j++) yr[j] = (xr[j] - m) * rs;
  }
}

MOE_CLONES void layerNormBackRows(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy,
                                  float* dx, float* dgamma, float* dbeta, i64 r0, i64 r1, i64 d) {
  for (i64 r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    const float* gr = dy + r * d;
    float* dr = dx + r * d;
    float m = mean[r], rs = rstd[r];
    float sumG = 0.0f, sumGX = 0.0f;
#pragma omp simd reduction(+ : sumG, sumGX)
    for (i64 j = 0; j < d; j++) {
      float xh = (xr[j] - m) * rs;
      float g = gamma ? gr[j] * gamma[j] : gr[j];
      sumG += g;
      sumGX += g * xh;
    }
    if (dgamma) for (i64 j = 0; j < d; j++) dgamma[j] += gr[j] * ((xr[j] - m) * rs);
    if (dbeta) for (i64 j = 0; j < d; j++) dbeta[j] += gr[j];
    sumG /= static_cast<float>(d);
    sumGX /= static_cast<float>(d);
    for (i64 j = 0; j < d; j++) {
      float xh = (xr[j] - m) * rs;
      float g = gamma ? gr[j] * gamma[j] : gr[j];
      dr[j] = rs * (g - sumG - xh * sumGX);
    }
  }
}

MOE_CLONES void rmsNormRows(const float* x, const float* gamma, float* y, float* rstd, i64 r0, i64 r1, i64 d, float eps) {
  for (i64 r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float ms = 0.0f;
#pragma omp simd reduction(+ : ms)
    for (i64 j = 0; j < d; j++) ms += xr[j] * xr[j];
    float rs = 1.0f / std::sqrt(ms / static_cast<float>(d) + eps);
    rstd[r] = rs;
    if (gamma) for (i64 j = 0; j < d; j++) yr[j] = xr[j] * rs * gamma[j];
    else for (i64 j = 0; j < d; j++) yr[j] = xr[j] * rs;
  }
}

MOE_CLONES void rmsNormBackRows(const float* x, const float* gamma, const float* rstd, const float* dy, float* dx, float* dgamma,
                                i64 r0, i64 r1, i64 d) {
  for (i64 r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    const float* gr = dy + r * d;
    float* dr = dx + r * d;
    float rs = rstd[r];
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (i64 j = 0; j < d; j++) dot += (gamma ? gr[j] * gamma[j] : gr[j]) * xr[j];
    if (dgamma) for (i64 j = 0; j < d; j++) dgamma[j] += gr[j] * xr[j] * rs;
    float c = (dot / static_cast<float>(d)) * rs * rs;
    for (i64 j = 0; j < d; j++) dr[j] = rs * ((gamma ? gr[j] * gamma[j] : gr[j]) - xr[j] * c);
  }
}

MOE_CLONES void addInto(float* dst, const float* src, i64 n) {
  for (i64 j = 0; j < n; j++) dst[j] += src[j];
}

// Runs rowsFn(r0, r1, dgammaPart, dbetaPart) over row chunks; each chunk but the first gets zeroed
// private accumulators that are added into the outputs afterwards.
template <typename F>
void rowsWithPartials(i64 rows, i64 d, float* dgamma, float* dbeta, F&& rowsFn) {
  int threads = poolThreads();
  i64 minRows = kParallelMin / (d > 0 ? d : 1) + 1;
  i64 parts = rows / minRows;
  if (parts > threads) parts = threads;
  if (parts <= 1) { rowsFn(0, rows, dgamma, dbeta); return; }
  std::vector<float> scratch(static_cast<size_t>(2 * d * (parts - 1)), 0.0f);
  parallelFor(parts, 1, [&](i64 p0, i64 p1) {
    for (i64 p = p0; p < p1; p++) {
      float* g = p == 0 ? dgamma : (dgamma ? scratch.data() + 2 * d * (p - 1) : nullptr);
      float* b = p == 0 ? dbeta : (dbeta ? scratch.data() + 2 * d * (p - 1) + d : nullptr);
      rowsFn(rows * p / parts, rows * (p + 1) / parts, g, b);
    }
  });
  for (i64 p = 1; p < parts; p++) {
    if (dgamma) addInto(dgamma, scratch.data() + 2 * d * (p - 1), d);
    if (dbeta) addInto(dbeta, scratch.data() + 2 * d * (p - 1) + d, d);
  }
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Args args(info, "layerNorm", 9);
  Buf<float> x = args.f32(0, "x"), gamma = args.f32OrNull(1, "gamma"), beta = args.f32OrNull(2, "beta");
  Buf<float> y = args.f32(3, "y"), mean = args.f32(4, "mean"), rstd = args.f32(5, "rstd");
  i64 rows = args.size(6, "rows"), d = args.size(7, "d");
  float eps = static_cast<float>(args.number(8, "eps"));
  i64 n = args.mul({rows, d});
  args.need(x, n, "x");
  args.need(y, n, "y");
  args.need(mean, rows, "mean");
  args.need(rstd, rows, "rstd");
  if (gamma.data) args.need(gamma, d, "gamma");
  if (beta.data) args.need(beta, d, "beta");
  parallelFor(rows, kParallelMin / (d + 1) + 1, [&](i64 b, i64 e) {
    layerNormRows(x.data, gamma.data, beta.data, y.data, mean.data, rstd.data, b, e, d, eps);
  });
  return info.Env().Undefined();
}

Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  Args args(info, "layerNormBackward", 10);
  Buf<float> x = args.f32(0, "x"), gamma = args.f32OrNull(1, "gamma"), mean = args.f32(2, "mean"), rstd = args.f32(3, "rstd");
  Buf<float> dy = args.f32(4, "dy"), dx = args.f32(5, "dx"), dgamma = args.f32OrNull(6, "dgamma"), dbeta = args.f32OrNull(7, "dbeta");
  i64 rows = args.size(8, "rows"), d = args.size(9, "d");
  i64 n = args.mul({rows, d});
  args.need(x, n, "x");
  args.need(dy, n, "dy");
  args.need(dx, n, "dx");
  args.need(mean, rows, "mean");
  args.need(rstd, rows, "rstd");
  if (gamma.data) args.need(gamma, d, "gamma");
  if (dgamma.data) args.need(dgamma, d, "dgamma");
  if (dbeta.data) args.need(dbeta, d, "dbeta");
  rowsWithPartials(rows, d, dgamma.data, dbeta.data, [&](i64 r0, i64 r1, float* g, float* b) {
    layerNormBackRows(x.data, gamma.data, mean.data, rstd.data, dy.data, dx.data, g, b, r0, r1, d);
  });
  return info.Env().Undefined();
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Args args(info, "rmsNorm", 7);
  Buf<float> x = args.f32(0, "x"), gamma = args.f32OrNull(1, "gamma"), y = args.f32(2, "y"), rstd = args.f32(3, "rstd");
  i64 rows = args.size(4, "rows"), d = args.size(5, "d");
  float eps = static_cast<float>(args.number(6, "eps"));
  i64 n = args.mul({rows, d});
  args.need(x, n, "x");
  args.need(y, n, "y");
  args.need(rstd, rows, "rstd");
  if (gamma.data) args.need(gamma, d, "gamma");
  parallelFor(rows, kParallelMin / (d + 1) + 1, [&](i64 b, i64 e) { rmsNormRows(x.data, gamma.data, y.data, rstd.data, b, e, d, eps); });
  return info.Env().Undefined();
}

Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Args args(info, "rmsNormBackward", 8);
  Buf<float> x = args.f32(0, "x"), gamma = args.f32OrNull(1, "gamma"), rstd = args.f32(2, "rstd");
  Buf<float> dy = args.f32(3, "dy"), dx = args.f32(4, "dx"), dgamma = args.f32OrNull(5, "dgamma");
  i64 rows = args.size(6, "rows"), d = args.size(7, "d");
  i64 n = args.mul({rows, d});
  args.need(x, n, "x");
  args.need(dy, n, "dy");
  args.need(dx, n, "dx");
  args.need(rstd, rows, "rstd");
  if (gamma.data) args.need(gamma, d, "gamma");
  if (dgamma.data) args.need(dgamma, d, "dgamma");
  rowsWithPartials(rows, d, dgamma.data, nullptr, [&](i64 r0, i64 r1, float* g, float*) {
    rmsNormBackRows(x.data, gamma.data, rstd.data, dy.data, dx.data, g, r0, r1, d);
  });
  return info.Env().Undefined();
}

}  // namespace

void registerNorm(Napi::Env env, Napi::Object exports) {
  exports.Set("layerNorm", Napi::Function::New(env, LayerNorm, "layerNorm"));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward, "layerNormBackward"));
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm, "rmsNorm"));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward, "rmsNormBackward"));
}

}  // namespace moe
