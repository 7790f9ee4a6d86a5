// The GEMM with a fused epilogue (bias, activation, elementwise and per-row products) as a kernel entry.
#pragma once

#include <napi.h>

namespace moe {

/** Registers gemmEpilogue (not yet used by the MoE layer: a tested entry for the expert GEMMs to adopt). */
void registerGemmEpilogue(Napi::Env env, Napi::Object exports);

}  // namespace moe
