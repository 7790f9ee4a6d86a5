// Row gathers and scatters: the permute and un-permute of MoE dispatch.
#include <cstring>

#include "common.h"
#include "kernels.h"
#include "simd_math.h"
#include "threadpool.h"

namespace moe {
namespace {

void checkIndices(const Args& args, const Buf<int32_t>& idx, i64 limit) {
  for (i64 i = 0; i < idx.length; i++) {
    if (idx.data[i] < 0 || idx.data[i] >= limit) {
      args.fail("idx[" + std::to_string(i) + "] = " + std::to_string(idx.data[i]) + " is outside [0, " + std::to_string(limit) + ")");
    }
  }
}

MOE_CLONES void addRow(const float* s, float* d, i64 n) {
  for (i64 j = 0; j < n; j++) d[j] += s[j];
}

Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Args args(info, "gatherRows", 5);
  Buf<float> src = args.f32(0, "src");
  Buf<int32_t> idx = args.i32(1, "idx");
  Buf<float> out = args.f32(2, "out");
  i64 nSrc = args.size(3, "nSrc"), d = args.size(4, "d");
  args.need(src, args.mul({nSrc, d}), "src");
  args.need(out, args.mul({idx.length, d}), "out");
  checkIndices(args, idx, nSrc);
  if (d == 0) return info.Env().Undefined();
  parallelFor(idx.length, kParallelMin / d + 1, [&](i64 b, i64 e) {
    for (i64 i = b; i < e; i++) std::memcpy(out.data + i * d, src.data + static_cast<i64>(idx.data[i]) * d, sizeof(float) * static_cast<size_t>(d));
  });
  return info.Env().Undefined();
}

Napi::Value ScatterAddRows(const Napi::CallbackInfo& info) {
  Args args(info, "scatterAddRows", 5);
  Buf<float> src = args.f32(0, "src");
  Buf<int32_t> idx = args.i32(1, "idx");
  Buf<float> out = args.f32(2, "out");
  i64 nOut = args.size(3, "nOut"), d = args.size(4, "d");
  args.need(src, args.mul({idx.length, d}), "src");
  args.need(out, args.mul({nOut, d}), "out");
  checkIndices(args, idx, nOut);
  if (d == 0) return info.Env().Undefined();
  // Repeated indices make row-parallel writes race; column slices are disjoint instead.
  i64 n = idx.length;
  i64 minCols = kParallelMin / (n > 0 ? n : 1) + 1;
  parallelFor(d, minCols < 64 ? 64 : minCols, [&](i64 c0, i64 c1) {
    for (i64 i = 0; i < n; i++) addRow(src.data + i * d + c0, out.data + static_cast<i64>(idx.data[i]) * d + c0, c1 - c0);
  });
  return info.Env().Undefined();
}

}  // namespace

void registerRows(Napi::Env env, Napi::Object exports) {
  exports.Set("gatherRows", Napi::Function::New(env, GatherRows, "gatherRows"));
  exports.Set("scatterAddRows", Napi::Function::New(env, ScatterAddRows, "scatterAddRows"));
}

}  // namespace moe
