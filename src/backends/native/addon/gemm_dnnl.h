// oneDNN's matmul primitive as an SGEMM (compiled in when detect-dnnl.cjs finds libdnnl, MOE_HAVE_DNNL).
#pragma once

#include <cstdint>
#include <string>

namespace moe {

/** True when the addon was built with oneDNN. */
bool dnnlCompiled();

/**
 * Row-major C (m x n, ldc) = op(A) @ op(B) (+ C when accumulate) through a cached oneDNN matmul
 * primitive; m, n, k >= 1. Returns false (C untouched) when oneDNN is not compiled in, failed on
 * this call (out of memory creating a primitive, say: dnnlInfo() counts the failure and keeps its
 * message) or declined the shape (its only kernel for it is the reference one: counted apart); the
 * caller then runs another path.
 */
bool dnnlSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               bool accumulate, float* c, int64_t ldc);

/** The activation of a fused epilogue (codes shared with gemm_epilogue.cc and the TypeScript hook). */
enum class EpilogueAct { none = 0, relu = 1, gelu = 2, geluTanh = 3, silu = 4 };

/**
 * C (m x n, row-major, dense) = act(A @ op(B) + bias) * mul * rowScale in one oneDNN matmul with
 * post-ops: bias [n], mul [m x n] (SwiGLU's up projection), rowScale [m] (the gates), each optional
 * (null). A is m x k row-major; B is k x n, or n x k when transB. False as dnnlSgemm.
 */
bool dnnlGemmEpilogue(bool transB, int64_t m, int64_t n, int64_t k, const float* a, const float* b, const float* bias, EpilogueAct act,
                      const float* mul, const float* rowScale, float* c);

/** oneDNN's OpenMP threads for every later call, from any thread (MOE_NATIVE_THREADS); 0 leaves OpenMP's default. */
void dnnlSetThreads(int threads);

struct DnnlInfo {
  std::string version;    // "2.6.3"
  std::string isa;        // the CPU ISA oneDNN dispatches to here (dnnl_get_effective_cpu_isa)
  std::string impl;       // the implementation its matmul picks for a 256^3 product ("gemm:jit", "brg:avx512_core")
  std::string implAnyRows;  // the same with the rows left to run time (plain-layout products); "" when MOE_ONEDNN_STATIC_ROWS=1
  std::string threading;  // "OpenMP", "TBB", "sequential", "threadpool"
  int threads = 0;        // OpenMP threads a call will use
  int64_t cached = 0;     // primitives in the cache now
  int64_t created = 0;    // primitives created so far (cache misses)
  int64_t failures = 0;   // calls handed to another library after a oneDNN error
  std::string lastError;
  int64_t declined = 0;   // shapes (with their post-ops) where oneDNN offered only its slow reference kernel
  std::string lastDeclined;
};

/** How oneDNN runs here; version "" when it is not compiled in. */
DnnlInfo dnnlInfo();

}  // namespace moe
