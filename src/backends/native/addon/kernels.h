// Registration hooks of the addon's kernel families, one source file each.
#pragma once

#include <napi.h>

namespace moe {

void registerGemm(Napi::Env env, Napi::Object exports);
void registerElementwise(Napi::Env env, Napi::Object exports);
void registerReduce(Napi::Env env, Napi::Object exports);
void registerRows(Napi::Env env, Napi::Object exports);
void registerNorm(Napi::Env env, Napi::Object exports);
void registerLoss(Napi::Env env, Napi::Object exports);
void registerPeak(Napi::Env env, Napi::Object exports);
void registerBandwidth(Napi::Env env, Napi::Object exports);
void registerQuant(Napi::Env env, Napi::Object exports);
void registerAttention(Napi::Env env, Napi::Object exports);
void registerExpertsDecode(Napi::Env env, Napi::Object exports);

}  // namespace moe
