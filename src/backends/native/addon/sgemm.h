// The SGEMM entry points shared by the matrix kernels (no Node-API types, so they test standalone).
#pragma once

#include <cstdint>

namespace moe {

/**
 * Row-major C (m x n, ldc) = op(A) @ op(B) (+ C when accumulate); op(A) is m x k, op(B) is k x n.
 * All of m, n, k are >= 1. OpenBLAS when built with it, else the blocked fallback.
 */
void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
           bool accumulate, float* c, int64_t ldc);

/** The portable blocked SGEMM (used without OpenBLAS; always compiled so it can be tested). */
void fallbackSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                   bool accumulate, float* c, int64_t ldc);

/** "avx512", "avx2" or "baseline": the widest vector unit the running CPU offers. */
const char* simdLevel();

}  // namespace moe
