// GCC vector-extension types and unaligned loads/stores shared by the kernels that are compiled
// once per target (AVX-512, AVX2+FMA, baseline) and picked at run time.
#pragma once

namespace moe {

typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));

// memcpy instead of a cast: rows have any alignment, and the compiler turns it into one vector move.
template <typename V>
__attribute__((always_inline)) inline V loadu(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
__attribute__((always_inline)) inline void storeu(float* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// The widest of those targets the running CPU executes, as the GEMV and portable GEMM kernels pick
// it: AVX-512 (F and VL), else AVX2 with FMA, else the baseline build.
enum class SimdTier { Avx512, Avx2, Base };
inline SimdTier simdTier() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return SimdTier::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdTier::Avx2;
#endif
  return SimdTier::Base;
}

}  // namespace moe
