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

}  // namespace moe
