// The GEMM with a fused epilogue (bias, activation, elementwise and per-row products) as a kernel entry.
#pragma once

#include <napi.h>

namespace moe {

/** Registers gemmEpilogue and groupedMatmulEpilogue (the MoE layer's expert GEMMs with bias, activation and gate scaling). */
void registerGemmEpilogue(Napi::Env env, Napi::Object exports);

}  // namespace moe
