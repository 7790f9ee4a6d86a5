// The SGEMM entry points shared by the matrix kernels (no Node-API types, so they test standalone).
#pragma once

#include <cstdint>

namespace moe {

/**
 * Row-major C (m x n, ldc) = op(A) @ op(B) (+ C when accumulate); op(A) is m x k, op(B) is k x n.
 * All of m, n, k are >= 1. OpenBLAS when built with it, else the blocked fallback; m <= kFewM
 * goes to smallMSgemm, the addon's matrix-vector kernel (a GEMM would pack, i.e. copy, all of B first).
 */
void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
           bool accumulate, float* c, int64_t ldc);

/**
 * The portable blocked SGEMM (used without OpenBLAS; always compiled so it can be tested). threaded =
 * false: on the calling thread only (its buffers are thread-local), for callers that split work
 * themselves, as the grouped GEMMs do when their groups are many and small.
 */
void fallbackSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                   bool accumulate, float* c, int64_t ldc, bool threaded = true);

/**
 * The same product for few rows (m <= kFewM: decode of one to a few sequences): streams B once from
 * memory (beyond 4 rows, in L2-sized tiles that every 4-row slab of A passes over), threaded over
 * the pool (threaded = false: on the calling thread only, for callers that split work themselves),
 * vector code picked at run time. Any m works; it is only fast while m is small.
 */
void smallMSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 bool accumulate, float* c, int64_t ldc, bool threaded = true);

/** Bytes of B below which the matrix-vector kernel stays on one thread (per extra thread, above). */
int64_t smallMMinBytesPerThread();

/** Row counts up to which fallbackSgemm() takes the matrix-vector path. */
constexpr int64_t kSmallM = 4;

/**
 * Row counts up to which sgemm() stays on the addon's pool with smallMSgemm instead of calling a
 * BLAS: a batched decode step's dense and router products (one row per sequence). OpenBLAS's
 * workers spin for ~0.1 s after each call; on 2 cores they then took a core from the pool's own
 * kernels for the rest of the step (a 16-sequence 1b Q8_0 step: attention 30 ms of 155, against
 * 7 ms with OpenBLAS's spin cut short), and 16 rows of small matrices gained nothing from its packing.
 */
constexpr int64_t kFewM = 16;

/**
 * A decode step's expert GEMM (groupedMatmul's rows in consecutive groups, group g times w[g]: k x n,
 * or n x k read transposed) when every non-empty group has at most kFewM rows: the groups are split
 * across the pool in one job, each run by the matrix-vector kernel. False (nothing written) when the
 * groups are not all small or too few to share out; the caller then runs one GEMM per group.
 */
bool groupedFewRows(const float* x, const float* w, const int32_t* sizes, int64_t groups, float* out, int64_t k, int64_t n, bool transW);

/**
 * Rows of an expert group up to which its product runs on the addon's own kernels (up to kFewM the
 * matrix-vector kernel, then the portable GEMM), above which on sgemm()'s library: 256 where
 * OpenBLAS runs the products, kFewM where oneDNN does (gemm.cc says why). Chosen by a group's rows
 * (and the machine's library) alone, never by how many groups a call has or how they are split
 * across threads, so that an expert's output is the same bits in one process, on expert-parallel
 * workers holding a few experts each, and with offloaded experts (their tests compare bit for bit).
 */
int64_t groupPortableMaxRows();

/** One expert group's product out = x @ op(w) (rows x k times k x n, or n x k read transposed), by the rule above. */
void groupProduct(bool transW, int64_t rows, int64_t n, int64_t k, const float* x, const float* w, float* out, bool threaded);

/** One group's weight gradient out = x^T @ dy (k x n; x is rows x k, dy rows x n), by the same rule. */
void groupWeightGrad(int64_t rows, int64_t k, int64_t n, const float* x, const float* dy, float* out, bool threaded);

/**
 * The grouped GEMMs' split for many small groups: run(ctx, g, row0) for every non-empty group g
 * (row0: its first row), the groups dealt to the pool's threads in contiguous ranges of about equal
 * work, each group's product on one thread (groupProduct with threaded = false). Only when no group
 * has more than groupPortableMaxRows() rows, so the split never changes which kernel runs a group. Splitting each
 * small product across threads instead gained nothing: at E = 128 (64-row groups) the layer's expert
 * GEMMs ran at 54 GFLOP/s on two threads and 57 on one (OpenBLAS, AMD EPYC AVX2, 2 vCPUs). Returns
 * false, running nothing, when the pool has one thread, a group is larger, or there are fewer than two
 * non-empty groups per thread (auto; setGroupedSplit, a test hook, forces 'groups' or 'products').
 */
bool forGroupsAcrossThreads(const int32_t* sizes, int64_t groupCount, void (*run)(void* ctx, int64_t g, int64_t row0), void* ctx);

/** forGroupsAcrossThreads with a callable f(g, row0). */
template <typename F>
bool forGroupsAcrossThreads(const int32_t* sizes, int64_t groupCount, F& f) {
  return forGroupsAcrossThreads(sizes, groupCount, [](void* c, int64_t g, int64_t row0) { (*static_cast<F*>(c))(g, row0); }, &f);
}

/** True when sgemm() runs products of more than kFewM rows on oneDNN (its choice for this CPU, or MOE_GEMM). */
bool sgemmOnOnednn();

/** "avx512", "avx2" or "baseline": the widest vector unit the running CPU offers. */
const char* simdLevel();

}  // namespace moe
