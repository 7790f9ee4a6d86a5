// measurePeakGflops: the machine's float32 FMA ceiling, measured with 12 independent accumulator
// chains per thread on the widest vector unit, 2 flops per lane per FMA.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "common.h"
#include "kernels.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kChains = 12;
constexpr long kInnerIters = 1 << 14;

volatile float sink;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) double runAvx512(double secs) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = _mm512_set1_ps(1.0f + 0.01f * i);
  // acc = acc * m + c converges to c / (1 - m): values stay normal, and the chains never end.
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
  long iters = 0;
  auto t0 = Clock::now();
  double el = 0.0;
  do {
    for (long it = 0; it < kInnerIters; it++) {
      for (int i = 0; i < kChains; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    }
    iters += kInnerIters;
    el = seconds(t0, Clock::now());
  } while (el < secs);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; i++) s = _mm512_add_ps(s, acc[i]);
  float lanes[16];
  _mm512_storeu_ps(lanes, s);
  sink = lanes[0] + lanes[15];
  return static_cast<double>(iters) * kChains * 16 * 2 / el;
}

__attribute__((target("avx2,fma"))) double runAvx2(double secs) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = _mm256_set1_ps(1.0f + 0.01f * i);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
  long iters = 0;
  auto t0 = Clock::now();
  double el = 0.0;
  do {
    for (long it = 0; it < kInnerIters; it++) {
      for (int i = 0; i < kChains; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    }
    iters += kInnerIters;
    el = seconds(t0, Clock::now());
  } while (el < secs);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; i++) s = _mm256_add_ps(s, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  sink = lanes[0] + lanes[7];
  return static_cast<double>(iters) * kChains * 8 * 2 / el;
}
#endif

double runScalar(double secs) {
  float acc[kChains];
  for (int i = 0; i < kChains; i++) acc[i] = 1.0f + 0.01f * i;
  const float m = 0.999999f, c = 1e-6f;
  long iters = 0;
  auto t0 = Clock::now();
  double el = 0.0;
  do {
    for (long it = 0; it < kInnerIters; it++) {
      for (int i = 0; i < kChains; i++) acc[i] = acc[i] * m + c;
      __asm__ volatile("" : : : "memory");
    }
    iters += kInnerIters;
    el = seconds(t0, Clock::now());
  } while (el < secs);
  float s = 0.0f;
  for (int i = 0; i < kChains; i++) s += acc[i];
  sink = s;
  return static_cast<double>(iters) * kChains * 2 / el;
}

double runOne(double secs) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return runAvx512(secs);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return runAvx2(secs);
#endif
  return runScalar(secs);
}

Napi::Value MeasurePeak(const Napi::CallbackInfo& info) {
  Args args(info, "measurePeakGflops", 2);
  double secs = args.number(0, "seconds");
  i64 threads = args.integer(1, "threads");
  if (!(secs > 0.0 && secs <= 600.0)) args.fail("seconds must be in (0, 600]");
  if (threads < 1 || threads > 256) args.fail("threads must be in [1, 256]");
  std::vector<double> rates(static_cast<size_t>(threads), 0.0);
  std::vector<std::thread> pool;
  for (i64 t = 1; t < threads; t++) pool.emplace_back([&rates, t, secs] { rates[static_cast<size_t>(t)] = runOne(secs); });
  rates[0] = runOne(secs);
  for (auto& th : pool) th.join();
  double total = 0.0;
  for (double r : rates) total += r;
  return Napi::Number::New(info.Env(), total / 1e9);
}

}  // namespace

void registerPeak(Napi::Env env, Napi::Object exports) {
  exports.Set("measurePeakGflops", Napi::Function::New(env, MeasurePeak, "measurePeakGflops"));
}

}  // namespace moe
