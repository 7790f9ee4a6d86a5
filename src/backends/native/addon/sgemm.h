// The SGEMM entry points shared by the matrix kernels (no Node-API types, so they test standalone).
#pragma once

#include <cstdint>

namespace moe {

/**
 * Row-major C (m x n, ldc) = op(A) @ op(B) (+ C when accumulate); op(A) is m x k, op(B) is k x n.
 * All of m, n, k are >= 1. OpenBLAS when built with it, else the blocked fallback; m <= kSmallM
 * goes to smallMSgemm, the addon's matrix-vector kernel (a GEMM would pack, i.e. copy, all of B first).
 */
void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
           bool accumulate, float* c, int64_t ldc);

/** The portable blocked SGEMM (used without OpenBLAS; always compiled so it can be tested). */
void fallbackSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                   bool accumulate, float* c, int64_t ldc);

/**
 * The same product for few rows (m <= kSmallM, batch-1 decode): streams B once, threaded over the
 * pool (threaded = false: on the calling thread only, for callers that split work themselves), vector
 * code picked at run time. Any m works; it is only fast while m is small.
 */
void smallMSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 bool accumulate, float* c, int64_t ldc, bool threaded = true);

/** Bytes of B below which the matrix-vector kernel stays on one thread (per extra thread, above). */
int64_t smallMMinBytesPerThread();

/** Row counts up to which sgemm() and fallbackSgemm() take the matrix-vector path. */
constexpr int64_t kSmallM = 4;

/** "avx512", "avx2" or "baseline": the widest vector unit the running CPU offers. */
const char* simdLevel();

}  // namespace moe
