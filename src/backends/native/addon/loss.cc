// Cross-entropy with label smoothing over rows of logits [rows, c]; targets < 0 are ignored.
#include "common.h"
#include "kernels.h"
#include "simd_math.h"
#include "threadpool.h"

namespace moe {
namespace {

MOE_CLONES void crossEntropyRows(const float* logits, const int32_t* targets, float* losses, float* probs, i64 r0, i64 r1, i64 c,
                                 float smoothing) {
  for (i64 r = r0; r < r1; r++) {
    const float* lr = logits + r * c;
    float* pr = probs + r * c;
    float mx = -__builtin_inff();
#pragma omp simd reduction(max : mx)
    for (i64 j = 0; j < c; j++) mx = lr[j] > mx ? lr[j] : mx;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (i64 j = 0; j < c; j++) s += vexp(lr[j] - mx);
    float lse = mx + std::log(s);
    float sumLogp = 0.0f;
#pragma omp simd reduction(+ : sumLogp)
    for (i64 j = 0; j < c; j++) {
      float lp = lr[j] - lse;
      pr[j] = vexp(lp);
      sumLogp += lp;
    }
    int32_t t = targets[r];
    if (t < 0) { losses[r] = 0.0f; continue; }
    float lpt = lr[t] - lse;
    losses[r] = -(1.0f - smoothing) * lpt - (smoothing / static_cast<float>(c)) * sumLogp;
  }
}

MOE_CLONES void crossEntropyBackRows(const float* probs, const int32_t* targets, const float* dloss, float* dlogits, i64 r0, i64 r1,
                                     i64 c, float smoothing) {
  float u = smoothing / static_cast<float>(c);
  for (i64 r = r0; r < r1; r++) {
    const float* pr = probs + r * c;
    float* dr = dlogits + r * c;
    int32_t t = targets[r];
    if (t < 0) { for (i64 j = 0; j < c; j++) dr[j] = 0.0f; continue; }
    float g = dloss[r];
    for (i64 j = 0; j < c; j++) dr[j] = g * (pr[j] - u);
    dr[t] = g * (pr[t] - u - (1.0f - smoothing));
  }
}

void checkTargets(const Args& args, const Buf<int32_t>& targets, i64 rows, i64 c) {
  for (i64 r = 0; r < rows; r++) {
    if (targets.data[r] >= c) args.fail("targets[" + std::to_string(r) + "] = " + std::to_string(targets.data[r]) + " is not below c = " + std::to_string(c));
  }
}

Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Args args(info, "crossEntropy", 7);
  Buf<float> logits = args.f32(0, "logits");
  Buf<int32_t> targets = args.i32(1, "targets");
  Buf<float> losses = args.f32(2, "losses"), probs = args.f32(3, "probs");
  i64 rows = args.size(4, "rows"), c = args.size(5, "c");
  float smoothing = static_cast<float>(args.number(6, "smoothing"));
  i64 n = args.mul({rows, c});
  args.need(logits, n, "logits");
  args.need(probs, n, "probs");
  args.need(targets, rows, "targets");
  args.need(losses, rows, "losses");
  checkTargets(args, targets, rows, c);
  parallelFor(rows, kParallelMin / (4 * c + 1) + 1, [&](i64 b, i64 e) {
    crossEntropyRows(logits.data, targets.data, losses.data, probs.data, b, e, c, smoothing);
  });
  return info.Env().Undefined();
}

Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  Args args(info, "crossEntropyBackward", 7);
  Buf<float> probs = args.f32(0, "probs");
  Buf<int32_t> targets = args.i32(1, "targets");
  Buf<float> dloss = args.f32(2, "dloss"), dlogits = args.f32(3, "dlogits");
  i64 rows = args.size(4, "rows"), c = args.size(5, "c");
  float smoothing = static_cast<float>(args.number(6, "smoothing"));
  i64 n = args.mul({rows, c});
  args.need(probs, n, "probs");
  args.need(dlogits, n, "dlogits");
  args.need(targets, rows, "targets");
  args.need(dloss, rows, "dloss");
  checkTargets(args, targets, rows, c);
  parallelFor(rows, kParallelMin / (c + 1) + 1, [&](i64 b, i64 e) {
    crossEntropyBackRows(probs.data, targets.data, dloss.data, dlogits.data, b, e, c, smoothing);
  });
  return info.Env().Undefined();
}

}  // namespace

void registerLoss(Napi::Env env, Napi::Object exports) {
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
  exports.Set("crossEntropyBackward", Napi::Function::New(env, CrossEntropyBackward, "crossEntropyBackward"));
}

}  // namespace moe
