// Entry point of the moe_native addon: registers every kernel family on the exports object.
#include <napi.h>

#include "kernels.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  moe::registerGemm(env, exports);
  moe::registerElementwise(env, exports);
  moe::registerReduce(env, exports);
  moe::registerRows(env, exports);
  moe::registerNorm(env, exports);
  moe::registerLoss(env, exports);
  moe::registerPeak(env, exports);
  moe::registerBandwidth(env, exports);
  moe::registerQuant(env, exports);
  moe::registerAttention(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(moe_native, Init)
