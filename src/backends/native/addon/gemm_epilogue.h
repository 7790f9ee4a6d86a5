// The GEMM with a fused epilogue (bias, activation, elementwise and per-row products) as a kernel entry.
#pragma once

#include <napi.h>

#include <cstdint>

namespace moe {

/**
 * The grouped expert GEMM with its epilogue (groupedMatmul and groupedMatmulEpilogue, arguments
 * checked): group g's rows of x (t rows in all) times w[g] (k x n, or n x k when transW) give
 * c = product + bias[g]; pre, when given, receives c; out = unary(c) * rowScale[row] (unary -1:
 * none; bias, rowScale, pre nullable). With no bias, unary, rowScale or pre it is the plain grouped
 * product, with no pass over out.
 */
void groupedProductsWithEpilogue(const float* x, const float* w, const int32_t* sizes, int64_t groups, int64_t t, float* out, int64_t k, int64_t n,
                                 bool transW, const float* bias, int unary, const float* rowScale, float* pre);

/** Registers gemmEpilogue and groupedMatmulEpilogue (the MoE layer's expert GEMMs with bias, activation and gate scaling). */
void registerGemmEpilogue(Napi::Env env, Napi::Object exports);

}  // namespace moe
