// Persistent worker threads behind parallelFor (see threadpool.h).
#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOE_PAUSE() _mm_pause()
#else
#define MOE_PAUSE() std::this_thread::yield()
#endif

namespace moe {
namespace {

// How long a worker spins for the next job before it sleeps. Decode calls a kernel every few tens
// of microseconds but with JS work between them; with 100 us the worker fell asleep between most
// calls of a 1b-preset decode step and each wake-up (a futex syscall, a reschedule) cost more than
// the work it split: 2000 us took Q8_0 decode from 30 to 37 tokens/s (AMD EPYC, 2 vCPUs). A spinning
// worker would steal a core from OpenBLAS's own threads, so sgemm parks the pool before calling it.
constexpr int kSpinMicros = 2000;

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads < 1 ? 1 : threads) {
    for (int i = 1; i < threads_; i++) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_.store(true, std::memory_order_release);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int threads() const { return threads_; }
  void park() { park_.store(true, std::memory_order_relaxed); }

  // Queues [p, p + n) for the idle workers to read into the caches (see prefetchIdle in threadpool.h).
  void prefetch(const void* p, size_t n, bool replace) {
    if (threads_ < 2 || n == 0) return;
    std::lock_guard<std::mutex> lk(pf_);
    if (replace) nRegions_ = 0;
    if (nRegions_ == kMaxRegions) return;  // a full queue drops the hint
    regions_[nRegions_++] = Region{static_cast<const char*>(p), n};
    pfPending_.store(true, std::memory_order_release);
  }

  void run(int64_t n, int64_t minChunk, ChunkFn fn, void* ctx) {
    int64_t parts = minChunk > 0 ? n / minChunk : n;
    if (parts > threads_) parts = threads_;
    // A second JS thread (worker_threads) calling in while the pool is busy runs serially.
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (parts <= 1 || !busy.owns_lock()) {
      if (n > 0) fn(ctx, 0, n);
      return;
    }
    park_.store(false, std::memory_order_relaxed);
    // Every part of the last job is done (run waited for it), so no worker reads these now: a
    // worker reads them only after claiming a part of the job they describe.
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    done_.store(0, std::memory_order_relaxed);
    uint64_t g;
    {
      std::lock_guard<std::mutex> lk(m_);
      g = gen_.load(std::memory_order_relaxed) + 1;
      claim_.store(pack(g, static_cast<uint32_t>(parts), 0), std::memory_order_release);
      gen_.store(g, std::memory_order_release);
    }
    cv_.notify_all();
    // The caller claims parts too, so a worker that the OS has not scheduled (a busy machine: other
    // processes on the cores) never holds the job up: it finds nothing left when it wakes. Parts
    // are fixed ranges whoever runs them, so results do not depend on which thread did what.
    work(g);
    while (done_.load(std::memory_order_acquire) != parts) MOE_PAUSE();
  }

 private:
  // claim_: the job's generation (low 32 bits of gen_, in the high half), its part count and the
  // next unclaimed part (16 bits each; parts <= 64 threads).
  static uint64_t pack(uint64_t gen, uint32_t parts, uint32_t next) { return ((gen & 0xffffffffu) << 32) | (uint64_t(parts) << 16) | next; }

  // Claims and runs parts of job `gen` until none is left or a newer job has replaced it.
  void work(uint64_t gen) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((c >> 32) != (gen & 0xffffffffu)) return;
      const uint32_t parts = static_cast<uint32_t>((c >> 16) & 0xffff), next = static_cast<uint32_t>(c & 0xffff);
      if (next >= parts) return;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      chunk(next, parts);
      done_.fetch_add(1, std::memory_order_release);
      c = claim_.load(std::memory_order_acquire);
    }
  }

  void chunk(int64_t part, int64_t parts) {
    int64_t b = n_ * part / parts, e = n_ * (part + 1) / parts;
    if (e > b) fn_(ctx_, b, e);
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = gen_.load(std::memory_order_acquire);
      if (g == seen) {
        auto t0 = std::chrono::steady_clock::now();
        int spins = 0;
        while ((g = gen_.load(std::memory_order_acquire)) == seen) {
          if (pfPending_.load(std::memory_order_acquire)) {
            prefetchChunk();
            continue;
          }
          MOE_PAUSE();
          if (park_.load(std::memory_order_relaxed) ||
              (++spins % 256 == 0 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(kSpinMicros))) {
            std::unique_lock<std::mutex> lk(m_);
            cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
          }
        }
      }
      seen = g;
      if (stop_.load(std::memory_order_acquire)) return;
      work(g);
    }
  }

  // One chunk of the oldest queued region: small enough (16 KiB, ~1-2 us from memory) that a job
  // arriving meanwhile waits no longer than that for this worker.
  void prefetchChunk() {
    const char* p = nullptr;
    size_t n = 0;
    {
      std::unique_lock<std::mutex> lk(pf_, std::try_to_lock);
      if (!lk.owns_lock()) return;
      if (nRegions_ == 0) {
        pfPending_.store(false, std::memory_order_relaxed);
        return;
      }
      Region& r = regions_[0];
      p = r.p;
      n = r.n < kChunk ? r.n : kChunk;
      r.p += n;
      r.n -= n;
      if (r.n == 0) {
        for (int i = 1; i < nRegions_; i++) regions_[i - 1] = regions_[i];
        nRegions_--;
        if (nRegions_ == 0) pfPending_.store(false, std::memory_order_relaxed);
      }
    }
    // real loads (a prefetch instruction may be dropped when the fill buffers are full); the sum
    // goes to a volatile sink so the loop is kept
    unsigned s = 0;
    for (size_t i = 0; i < n; i += 64) s += static_cast<unsigned char>(p[i]);
    sink_ = s;
  }

  static constexpr int kMaxRegions = 16;
  static constexpr size_t kChunk = 16384;
  struct Region {
    const char* p;
    size_t n;
  };
  std::mutex pf_;
  Region regions_[kMaxRegions] = {};
  int nRegions_ = 0;
  std::atomic<bool> pfPending_{false};
  volatile unsigned sink_ = 0;

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex m_, busy_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<bool> park_{false};
  std::atomic<bool> stop_{false};
  ChunkFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
};

// The environment is read (and validated) by the TypeScript binding, which calls setPoolThreads:
// one parser, one error message.
int defaultThreads() {
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc > 64 ? 64 : hc);
}

// Leaked on purpose: joining threads from a static destructor at process exit can deadlock.
std::atomic<Pool*> current{nullptr};
std::mutex configure;

Pool& pool() {
  if (Pool* p = current.load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lk(configure);
  if (!current.load(std::memory_order_relaxed)) current.store(new Pool(defaultThreads()), std::memory_order_release);
  return *current.load(std::memory_order_relaxed);
}

}  // namespace

int poolThreads() { return pool().threads(); }

void setPoolThreads(int threads) {
  std::lock_guard<std::mutex> lk(configure);
  Pool* old = current.load(std::memory_order_relaxed);
  if (old && old->threads() == threads) return;
  // The new pool is published before the old one is joined, so current never points at a destroyed pool.
  current.store(new Pool(threads), std::memory_order_release);
  delete old;
}

void parallelForRaw(int64_t n, int64_t minChunk, ChunkFn fn, void* ctx) { pool().run(n, minChunk, fn, ctx); }

void prefetchIdle(const void* p, size_t bytes, bool replace) {
  static const bool enabled = [] {
    const char* v = std::getenv("MOE_PREFETCH");
    return !(v && v[0] == '0');
  }();
  if (enabled) pool().prefetch(p, bytes, replace);
}

void parkPool() {
  if (Pool* p = current.load(std::memory_order_acquire)) p->park();
}

}  // namespace moe
