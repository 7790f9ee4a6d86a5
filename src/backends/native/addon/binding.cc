// Entry point of the moe_native addon: registers every kernel family on the exports object.
#include <napi.h>

#include "kernels.h"

#include <climits>
#include <cstdlib>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

/**
 * Large tensors come from the heap and stay there when freed, instead of a fresh mmap per tensor.
 * Node backs each ArrayBuffer with calloc; glibc serves blocks over 128 KiB-32 MiB with mmap and
 * unmaps them on free, so every large op output started as untouched pages: a 4096 x 2048 float
 * output (32 MiB) paid ~8000 page faults, and a [4096x512] @ [512x2048] matmul through the ops
 * layer ran at 63% of the FMA peak against 89% for the same product into a reused buffer. Reused
 * heap blocks cost calloc a memset instead (bandwidth, not faults). Like PyTorch's caching
 * allocator, freed memory is kept for reuse: the heap's free top is returned to the system only
 * beyond 2 GiB (mallopt's int limit). A trim threshold of 1 GiB was not enough: the E = 128 layer
 * frees its two 512 MiB weight gradients together, the 1 GiB free top was trimmed, and every
 * backward faulted ~260k pages back in (sys 0.75-1.0 s of a 3.6 s one-thread step; 20-50 ms with
 * the higher threshold). Blocks of 1 GiB and more stay mmaps of their own. A user's own
 * MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (or MOE_HEAP_CACHE=0) leaves glibc as it is.
 */
void keepLargeBlocksOnHeap() {
#if defined(__GLIBC__)
  const char* off = std::getenv("MOE_HEAP_CACHE");
  if (off && off[0] == '0') return;
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 1 << 30);
  if (!std::getenv("MALLOC_TRIM_THRESHOLD_")) mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  keepLargeBlocksOnHeap();
  moe::registerGemm(env, exports);
  moe::registerElementwise(env, exports);
  moe::registerReduce(env, exports);
  moe::registerRows(env, exports);
  moe::registerNorm(env, exports);
  moe::registerLoss(env, exports);
  moe::registerPeak(env, exports);
  moe::registerBandwidth(env, exports);
  moe::registerQuant(env, exports);
  moe::registerAttention(env, exports);
  moe::registerExpertsDecode(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(moe_native, Init)
