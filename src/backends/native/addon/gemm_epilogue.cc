// The GEMM with a fused epilogue, out = act(A @ op(B) + bias) * mul * rowScale: the expert FFN's
// first GEMM with its activation (GELU; SiLU times the up projection for SwiGLU) and its second with
// the gate scaling. Fused in oneDNN's matmul post-ops, or unfused (sgemm, then one pass over C).
#include <cmath>
#include <cstring>
#include <string>

#include "common.h"
#include "gemm_dnnl.h"
#include "gemm_epilogue.h"
#include "gelu_simd.h"
#include "sgemm.h"
#include "threadpool.h"

namespace moe {

namespace {

float activate(EpilogueAct act, float v) {
  switch (act) {
    case EpilogueAct::relu: return v > 0.0f ? v : 0.0f;
    // gelu: epilogue() runs whole rows through gelu_simd.h instead
    case EpilogueAct::geluTanh: return 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case EpilogueAct::silu: return v / (1.0f + std::exp(-v));
    default: return v;
  }
}

/** The epilogue as its own pass over C (m x n), rows split across the pool. */
void epilogue(i64 m, i64 n, const float* bias, EpilogueAct act, const float* mul, const float* rowScale, float* c) {
  // the exact GELU through the hand-vectorised kernel (libm's erff is a scalar call per element)
  const gelu_simd::Kernels* gk = act == EpilogueAct::gelu ? &gelu_simd::kernels() : nullptr;
  parallelFor(m, std::max<i64>(1, 16384 / std::max<i64>(n, 1)), [=](i64 lo, i64 hi) {
    for (i64 i = lo; i < hi; i++) {
      float* row = c + i * n;
      const float* mrow = mul ? mul + i * n : nullptr;
      const float s = rowScale ? rowScale[i] : 1.0f;
      if (gk) {
        if (bias) for (i64 j = 0; j < n; j++) row[j] += bias[j];
        gk->forward(row, row, n);
        for (i64 j = 0; j < n; j++) row[j] = (mrow ? row[j] * mrow[j] : row[j]) * s;
        continue;
      }
      for (i64 j = 0; j < n; j++) {
        float v = activate(act, row[j] + (bias ? bias[j] : 0.0f));
        if (mrow) v *= mrow[j];
        row[j] = v * s;
      }
    }
  });
}

// gemmEpilogue(fused, a, b, bias | null, act, mul | null, rowScale | null, out, m, n, k, transB):
// fused runs oneDNN's post-ops (an error in a build without oneDNN), else sgemm() then one pass.
Napi::Value GemmEpilogue(const Napi::CallbackInfo& info) {
  Args args(info, "gemmEpilogue", 12);
  const bool fused = args.boolean(0, "fused");
  Buf<float> a = args.f32(1, "a"), b = args.f32(2, "b"), bias = args.f32OrNull(3, "bias");
  const i64 actCode = args.integer(4, "act");
  Buf<float> mul = args.f32OrNull(5, "mul"), rowScale = args.f32OrNull(6, "rowScale"), out = args.f32(7, "out");
  const i64 m = args.size(8, "m"), n = args.size(9, "n"), k = args.size(10, "k");
  const bool transB = args.boolean(11, "transB");
  if (actCode < 0 || actCode > static_cast<i64>(EpilogueAct::silu)) args.fail("act must be 0 (none) to 4 (silu), got " + std::to_string(actCode));
  const EpilogueAct act = static_cast<EpilogueAct>(actCode);
  args.need(a, args.mul({m, k}), "a");
  args.need(b, args.mul({k, n}), "b");
  args.need(out, args.mul({m, n}), "out");
  if (bias.data) args.need(bias, n, "bias");
  if (mul.data) args.need(mul, args.mul({m, n}), "mul");
  if (rowScale.data) args.need(rowScale, m, "rowScale");
  if (fused && !dnnlCompiled()) args.fail("fused epilogues need oneDNN, which this build does not have (see moe info)");
  if (m == 0 || n == 0) return info.Env().Undefined();
  if (k > 0 && fused && dnnlGemmEpilogue(transB, m, n, k, a.data, b.data, bias.data, act, mul.data, rowScale.data, out.data)) {
    return info.Env().Undefined();
  }
  // unfused (or oneDNN failed on this call: counted in moe info): the product, then the epilogue
  if (k == 0) std::memset(out.data, 0, sizeof(float) * static_cast<size_t>(m * n));
  else sgemm(false, transB, m, n, k, a.data, k, b.data, transB ? k : n, false, out.data, n);
  epilogue(m, n, bias.data, act, mul.data, rowScale.data, out.data);
  return info.Env().Undefined();
}

}  // namespace

void registerGemmEpilogue(Napi::Env env, Napi::Object exports) {
  exports.Set("gemmEpilogue", Napi::Function::New(env, GemmEpilogue, "gemmEpilogue"));
}

}  // namespace moe
