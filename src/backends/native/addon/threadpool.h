// A small persistent thread pool: parallelFor splits [0, n) into one contiguous chunk per thread.
// Workers spin for 2 ms after each job (kernels arrive in quick succession), then sleep; parkPool
// sends them to sleep at once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe {

using ChunkFn = void (*)(void* ctx, int64_t begin, int64_t end);

/** Threads the pool uses, the caller included: the core count (at most 64) unless setPoolThreads chose. */
int poolThreads();

/**
 * Sets the pool's thread count (>= 1, the caller included), replacing a pool of another size.
 * The binding calls it once, before any kernel, with the validated MOE_NATIVE_THREADS; it must not
 * run while a kernel is in flight on another JS thread.
 */
void setPoolThreads(int threads);

/** Runs fn over [0, n) split into chunks no smaller than minChunk; serial when n is small. */
void parallelForRaw(int64_t n, int64_t minChunk, ChunkFn fn, void* ctx);

/** Sends spinning workers to sleep now (before a call into another library's thread pool). */
void parkPool();

/**
 * Queues [p, p + bytes) for the pool's workers to read into the caches while they spin idle between
 * jobs, 16 KiB at a time (a job waits at most one chunk). Decode leaves the workers idle while JS
 * runs between kernels; reading the next layer's weights then lets its products find them in the
 * cache. A hint: dropped when the queue (16 regions) is full, with one thread, or MOE_PREFETCH=0.
 * replace: first drop what is still queued (the unread rest of an earlier layer's hint is stale:
 * that layer has run, and reading it now only evicts what the next products need).
 */
void prefetchIdle(const void* p, size_t bytes, bool replace = false);

template <typename F>
inline void parallelFor(int64_t n, int64_t minChunk, F&& f) {
  parallelForRaw(n, minChunk, [](void* c, int64_t b, int64_t e) { (*static_cast<F*>(c))(b, e); }, &f);
}

}  // namespace moe
