// measureReadBandwidth: the memory read bandwidth that batch-1 decode can reach, measured the way
// decode reads weights: every pool thread streams its own contiguous part of a buffer far larger
// than the caches, with vector loads, summing so the reads cannot be optimised away.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "threadpool.h"
#include "vec.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace moe {

// Asks Linux to back [p, p + bytes) with 2 MiB transparent huge pages (THP in "madvise" mode, as on
// Debian). Streaming weights through 4 KiB pages costs a TLB walk per page: 13.8 -> 17.3 GB/s for a
// 2-thread Q8_0 row-dot stream over 256 MiB with huge pages (AMD EPYC, 2 vCPUs). Only whole 2 MiB
// pages inside the range are advised; pages already touched keep their size. Returns bytes advised.
size_t adviseHugePages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = 2u << 20;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), lo = (a + kHuge - 1) & ~(kHuge - 1), hi = (a + bytes) & ~(kHuge - 1);
  if (hi <= lo) return 0;
  return madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE) == 0 ? hi - lo : 0;
#else
  (void)p;
  (void)bytes;
  return 0;
#endif
}

namespace {

using Clock = std::chrono::steady_clock;


volatile float sink;

// Four independent accumulators: enough loads in flight that the sum never limits the stream.
template <typename V>
__attribute__((always_inline)) inline float sumRange(const float* p, i64 n) {
  constexpr int W = sizeof(V) / sizeof(float);
  V s0{}, s1{}, s2{}, s3{};
  i64 i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    V a, b, c, d;
    __builtin_memcpy(&a, p + i, sizeof(V));
    __builtin_memcpy(&b, p + i + W, sizeof(V));
    __builtin_memcpy(&c, p + i + 2 * W, sizeof(V));
    __builtin_memcpy(&d, p + i + 3 * W, sizeof(V));
    s0 += a;
    s1 += b;
    s2 += c;
    s3 += d;
  }
  V s = (s0 + s1) + (s2 + s3);
  float r = 0.0f;
  for (int j = 0; j < W; j++) r += s[j];
  for (; i < n; i++) r += p[i];
  return r;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) float sumAvx512(const float* p, i64 n) { return sumRange<V16>(p, n); }
__attribute__((target("avx2"))) float sumAvx2(const float* p, i64 n) { return sumRange<V8>(p, n); }
#endif
float sumBase(const float* p, i64 n) { return sumRange<V4>(p, n); }

using SumFn = float (*)(const float*, i64);

SumFn pick() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return sumAvx512;
  if (__builtin_cpu_supports("avx2")) return sumAvx2;
#endif
  return sumBase;
}

// Scheduling unit: 64 KiB, so every thread gets one long contiguous stretch of the buffer.
constexpr i64 kUnitFloats = 16384;

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

Napi::Value MeasureReadBandwidth(const Napi::CallbackInfo& info) {
  Args args(info, "measureReadBandwidth", 2);
  const double bytesArg = args.number(0, "bytes");
  const i64 passes = args.integer(1, "passes");
  constexpr double kMin = 1 << 20, kMax = 64.0 * (1 << 30);
  if (!(bytesArg >= kMin && bytesArg <= kMax)) args.fail("bytes must be in [1 MiB, 64 GiB], got " + std::to_string(bytesArg));
  if (passes < 1 || passes > 1000) args.fail("passes must be in [1, 1000], got " + std::to_string(passes));
  const i64 units = static_cast<i64>(bytesArg) / (kUnitFloats * 4);
  const i64 n = units * kUnitFloats;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  std::unique_ptr<float, FreeDeleter> buf(static_cast<float*>(std::aligned_alloc(64, bytes)));
  if (!buf) args.fail("could not allocate " + std::to_string(bytes) + " bytes for the probe buffer");
  float* data = buf.get();
  adviseHugePages(data, bytes);  // as the model's weights are (see adviseHugePages)
  // First touch from the threads that will read each part (their NUMA node, their pages mapped).
  parallelFor(units, 1, [&](i64 u0, i64 u1) {
    for (i64 i = u0 * kUnitFloats; i < u1 * kUnitFloats; i++) data[i] = static_cast<float>(i & 1023) * 0x1p-10f;
  });
  static const SumFn sum = pick();
  std::vector<float> partial(static_cast<size_t>(units), 0.0f);
  std::vector<double> rates;
  float total = 0.0f;
  // One pass more than asked: the first is a warm-up (pool wake-up, TLB), not counted.
  for (i64 pass = 0; pass <= passes; pass++) {
    const auto t0 = Clock::now();
    parallelFor(units, 1, [&](i64 u0, i64 u1) {
      partial[static_cast<size_t>(u0)] = sum(data + u0 * kUnitFloats, (u1 - u0) * kUnitFloats);
    });
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    for (float p : partial) total += p;
    if (pass > 0) rates.push_back(static_cast<double>(bytes) / secs / 1e9);
  }
  sink = total;
  std::vector<double> sorted = rates;
  std::sort(sorted.begin(), sorted.end());
  const size_t h = sorted.size() / 2;
  const double median = sorted.size() % 2 ? sorted[h] : 0.5 * (sorted[h - 1] + sorted[h]);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("medianGBs", median);
  o.Set("bestGBs", sorted.back());
  o.Set("bytes", static_cast<double>(bytes));
  o.Set("threads", poolThreads());
  Napi::Array all = Napi::Array::New(env, rates.size());
  for (size_t i = 0; i < rates.size(); i++) all.Set(static_cast<uint32_t>(i), rates[i]);
  o.Set("passGBs", all);
  return o;
}

// adviseHugePages(typedArray) -> bytes advised (0 where THP is unavailable).
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  Args args(info, "adviseHugePages", 1);
  Napi::Value v = info[0];
  if (!v.IsTypedArray()) args.fail("the argument must be a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  uint8_t* p = static_cast<uint8_t*>(args.dataOf(ta, "the argument"));
  return Napi::Number::New(info.Env(), static_cast<double>(adviseHugePages(p, ta.ByteLength())));
}

}  // namespace

void registerBandwidth(Napi::Env env, Napi::Object exports) {
  exports.Set("measureReadBandwidth", Napi::Function::New(env, MeasureReadBandwidth, "measureReadBandwidth"));
  exports.Set("adviseHugePages", Napi::Function::New(env, AdviseHugePages, "adviseHugePages"));
}

}  // namespace moe
