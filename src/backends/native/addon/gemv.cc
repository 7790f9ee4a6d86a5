// Products with 1-4 rows (batch-1 decode): C (m x n) = op(A) op(B) for m <= 4 reads every weight
// of B once, so its speed is memory bandwidth. A BLAS sgemm packs B first (a second pass over the
// weights) and OpenBLAS 0.3.21 does so even at m = 1; this kernel streams B once, all m rows of A
// against each loaded vector, with the rows of B (stored [k, n]) or the columns of C (B stored
// [n, k]) split across the pool. Compiled per target (AVX-512, AVX2+FMA, baseline), picked at run time.
#pragma GCC optimize("fp-contract=fast")

#include <algorithm>
#include <cstring>
#include <vector>

#include "sgemm.h"
#include "threadpool.h"
#include "vec.h"

namespace moe {
namespace {

using i64 = int64_t;


template <typename V>
__attribute__((always_inline)) inline float hsum(V v) {
  constexpr int W = sizeof(V) / sizeof(float);
  float s = 0.0f;
  for (int i = 0; i < W; i++) s += v[i];
  return s;
}

struct Gemv {
  i64 m, n, k, ldb, ldc;
  const float* a;  // m rows of op(A), contiguous, row stride k
  const float* b;
  bool accumulate;
  float* c;
};

// op(B) = B^T, B stored [n, k]: C[i, j] = dot(A_i, B_j) for j in [j0, j1). One B row at a time,
// read front to back against all M rows of A, two vectors (two FMA chains) per output. Four B rows
// at a time (four streams one row apart) ran at 11 GB/s on 2 KiB rows where one stream reaches
// 17 (AMD EPYC, AVX2, 2 threads); the FMA chains are far from limiting at memory speed. Every
// output is summed in the same order whatever M is, so batched rows equal rows alone.
template <typename V, int M>
__attribute__((always_inline)) inline void dotRows(const Gemv& G, i64 j0, i64 j1) {
  constexpr int W = sizeof(V) / sizeof(float);
  constexpr int R = 1;
  const i64 k = G.k, kv = k / (2 * W) * (2 * W);
  i64 j = j0;
  for (; j + R <= j1; j += R) {
    V acc[M][R][2];
    for (int i = 0; i < M; i++)
      for (int r = 0; r < R; r++) acc[i][r][0] = acc[i][r][1] = V{};
    for (i64 p = 0; p < kv; p += 2 * W) {
      V av[M][2];
      for (int i = 0; i < M; i++) {
        av[i][0] = loadu<V>(G.a + i * k + p);
        av[i][1] = loadu<V>(G.a + i * k + p + W);
      }
      for (int r = 0; r < R; r++) {
        const float* br = G.b + (j + r) * G.ldb + p;
        __builtin_prefetch(br + 256);  // 1 KiB ahead, into the next row near the end of this one
        V b0 = loadu<V>(br), b1 = loadu<V>(br + W);
        for (int i = 0; i < M; i++) {
          acc[i][r][0] += av[i][0] * b0;
          acc[i][r][1] += av[i][1] * b1;
        }
      }
    }
    for (int i = 0; i < M; i++)
      for (int r = 0; r < R; r++) {
        float s = hsum<V>(acc[i][r][0] + acc[i][r][1]);
        const float* br = G.b + (j + r) * G.ldb;
        for (i64 p = kv; p < k; p++) s += G.a[i * k + p] * br[p];
        float* dst = G.c + i * G.ldc + j + r;
        *dst = G.accumulate ? *dst + s : s;
      }
  }
  for (; j < j1; j++) {
    const float* br = G.b + j * G.ldb;
    for (int i = 0; i < M; i++) {
      V s0{}, s1{};
      for (i64 p = 0; p < kv; p += 2 * W) {
        s0 += loadu<V>(G.a + i * k + p) * loadu<V>(br + p);
        s1 += loadu<V>(G.a + i * k + p + W) * loadu<V>(br + p + W);
      }
      float s = hsum<V>(s0 + s1);
      for (i64 p = kv; p < k; p++) s += G.a[i * k + p] * br[p];
      float* dst = G.c + i * G.ldc + j;
      *dst = G.accumulate ? *dst + s : s;
    }
  }
}

// op(B) = B, stored [k, n]: C[i, :] += sum_{p in [p0, p1)} A_i[p] B[p, :]. The pool splits B's rows
// (each thread one contiguous stretch of memory, read front to back; splitting columns instead made
// every thread jump a row stride per short segment and ran at half the bandwidth). C is added to in
// place (the caller zeroes it) in column blocks that stay in L2 while several rows of B pass.
constexpr i64 kCols = 4096;

template <typename V, int M>
__attribute__((always_inline)) inline void axpyRows(const Gemv& G, i64 p0, i64 p1) {
  constexpr int W = sizeof(V) / sizeof(float);
  // rows of B added per pass over the C block; the broadcasts of A fit the registers
  constexpr int PU = M <= 2 ? 4 : 2;
  for (i64 jb = 0; jb < G.n; jb += kCols) {
    const i64 nc = G.n - jb < kCols ? G.n - jb : kCols, ncv = nc / W * W;
    float* c[M];
    for (int i = 0; i < M; i++) c[i] = G.c + i * G.ldc + jb;
    i64 p = p0;
    for (; p + PU <= p1; p += PU) {
      const float* br[PU];
      for (int q = 0; q < PU; q++) br[q] = G.b + (p + q) * G.ldb + jb;
      V s[M][PU];
      for (int i = 0; i < M; i++)
        for (int q = 0; q < PU; q++) s[i][q] = V{} + G.a[i * G.k + p + q];
      for (i64 j = 0; j < ncv; j += W) {
        V x[PU];
        for (int q = 0; q < PU; q++) x[q] = loadu<V>(br[q] + j);
        for (int i = 0; i < M; i++) {
          V t = loadu<V>(c[i] + j);
          for (int q = 0; q < PU; q++) t += s[i][q] * x[q];
          storeu<V>(c[i] + j, t);
        }
      }
      for (i64 j = ncv; j < nc; j++)
        for (int i = 0; i < M; i++)
          for (int q = 0; q < PU; q++) c[i][j] += s[i][q][0] * br[q][j];
    }
    for (; p < p1; p++) {
      const float* br = G.b + p * G.ldb + jb;
      for (int i = 0; i < M; i++) {
        const float s = G.a[i * G.k + p];
        for (i64 j = 0; j < nc; j++) c[i][j] += s * br[j];
      }
    }
  }
}

// [lo, hi): C's columns when transB, else B's rows (added into C, which G.accumulate then does not concern).
template <typename V>
__attribute__((always_inline)) inline void run(bool transB, const Gemv& G, i64 lo, i64 hi) {
  switch (G.m) {
    case 1: transB ? dotRows<V, 1>(G, lo, hi) : axpyRows<V, 1>(G, lo, hi); break;
    case 2: transB ? dotRows<V, 2>(G, lo, hi) : axpyRows<V, 2>(G, lo, hi); break;
    case 3: transB ? dotRows<V, 3>(G, lo, hi) : axpyRows<V, 3>(G, lo, hi); break;
    default: transB ? dotRows<V, 4>(G, lo, hi) : axpyRows<V, 4>(G, lo, hi); break;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512vl,fma"))) void runAvx512(bool t, const Gemv& G, i64 lo, i64 hi) { run<V16>(t, G, lo, hi); }
__attribute__((target("avx2,fma"))) void runAvx2(bool t, const Gemv& G, i64 lo, i64 hi) { run<V8>(t, G, lo, hi); }
#endif
void runBase(bool t, const Gemv& G, i64 lo, i64 hi) { run<V4>(t, G, lo, hi); }

using RunFn = void (*)(bool, const Gemv&, i64, i64);

RunFn pick() {
  switch (simdTier()) {
#if defined(__x86_64__) && defined(__GNUC__)
    case SimdTier::Avx512: return runAvx512;
    case SimdTier::Avx2: return runAvx2;
#endif
    default: return runBase;
  }
}

// Columns of C per scheduling unit (B stored [n, k]): a cache line of C.
constexpr i64 kUnit = 16;
// A thread is worth waking for at least this many bytes of B (~100 us of reading at 10 GB/s). With
// 256 KiB, decode of the small preset (1 MiB dense products) ran slower than OpenBLAS's single
// thread on a loaded 2-vCPU machine: a hand-off to a descheduled worker costs more than it saves.
constexpr i64 kMinBytesPerThread = 1024 * 1024;
// Bytes of B per tile when A has more than 4 rows: well inside a 1 MiB L2 (with the A rows and
// the next tile's prefetch), large enough that the slabs' loop overhead is noise.
constexpr i64 kTileBytes = 128 * 1024;

}  // namespace

i64 smallMMinBytesPerThread() { return kMinBytesPerThread; }

void smallMSgemm(bool transA, bool transB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool accumulate, float* c,
                 i64 ldc, bool threaded) {
  static const RunFn kernel = pick();
  // op(A)'s rows contiguous: as they are, or gathered from A^T (m * k floats, cheap next to B)
  static thread_local std::vector<float> packed;
  const float* ar = a;
  if (transA || (m > 1 && lda != k)) {
    if (packed.size() < static_cast<size_t>(m * k)) packed.resize(static_cast<size_t>(m * k));
    for (i64 i = 0; i < m; i++)
      for (i64 p = 0; p < k; p++) packed[static_cast<size_t>(i * k + p)] = transA ? a[p * lda + i] : a[i * lda + p];
    ar = packed.data();
  }
  const i64 bytesB = n * k * static_cast<i64>(sizeof(float));
  const i64 want = threaded ? bytesB / kMinBytesPerThread : 1;
  if (transB) {
    // One pass over B for all m rows: each thread walks its columns in tiles of B rows small enough
    // to stay in L2, and every 4-row slab of A passes over a tile before the next one is read, so
    // B comes from memory once whatever m is (slab after slab over all of B read it m / 4 times).
    const i64 units = (n + kUnit - 1) / kUnit;
    const i64 bytesPerUnit = kUnit * k * static_cast<i64>(sizeof(float));
    const i64 minUnits = threaded ? (kMinBytesPerThread + bytesPerUnit - 1) / bytesPerUnit : units;
    const i64 tile = m <= 4 ? n : std::max<i64>(1, kTileBytes / (k * static_cast<i64>(sizeof(float))));
    parallelFor(units, minUnits < 1 ? 1 : minUnits, [&](i64 u0, i64 u1) {
      const i64 end = u1 * kUnit < n ? u1 * kUnit : n;
      for (i64 j0 = u0 * kUnit; j0 < end; j0 += tile) {
        const i64 j1 = end - j0 < tile ? end : j0 + tile;
        for (i64 i0 = 0; i0 < m; i0 += 4) {
          const i64 mi = m - i0 < 4 ? m - i0 : 4;
          kernel(true, Gemv{mi, n, k, ldb, ldc, ar + i0 * k, b, accumulate, c + i0 * ldc}, j0, j1);
        }
      }
    });
    return;
  }
  // B stored [k, n]: the same, over stretches of B's rows (each slab adds a stretch's products into C).
  const i64 rowTile = m <= 4 ? k : std::max<i64>(1, kTileBytes / (n * static_cast<i64>(sizeof(float))));
  auto slabs = [&](float* cBase, i64 ldcOut, i64 p0, i64 p1) {
    for (i64 q0 = p0; q0 < p1; q0 += rowTile) {
      const i64 q1 = p1 - q0 < rowTile ? p1 : q0 + rowTile;
      for (i64 i0 = 0; i0 < m; i0 += 4) {
        const i64 mi = m - i0 < 4 ? m - i0 : 4;
        kernel(false, Gemv{mi, n, k, ldb, ldcOut, ar + i0 * k, b, true, cBase + i0 * ldcOut}, q0, q1);
      }
    }
  };
  const i64 parts = std::min<i64>({static_cast<i64>(poolThreads()), want, k});
  if (parts <= 1) {
    if (!accumulate)
      for (i64 i = 0; i < m; i++) std::memset(c + i * ldc, 0, sizeof(float) * static_cast<size_t>(n));
    slabs(c, ldc, 0, k);
    return;
  }
  // B's rows split into `parts` stretches, each summed into its own partial C, then added up.
  static thread_local std::vector<float> partial;
  const size_t per = static_cast<size_t>(m * n);
  partial.assign(per * static_cast<size_t>(parts), 0.0f);
  float* pd = partial.data();
  parallelFor(parts, 1, [&](i64 q0, i64 q1) {
    for (i64 q = q0; q < q1; q++) slabs(pd + per * static_cast<size_t>(q), n, k * q / parts, k * (q + 1) / parts);
  });
  for (i64 i = 0; i < m; i++) {
    float* dst = c + i * ldc;
    for (i64 j = 0; j < n; j++) {
      float s = accumulate ? dst[j] : 0.0f;
      for (i64 q = 0; q < parts; q++) s += pd[per * static_cast<size_t>(q) + static_cast<size_t>(i * n + j)];
      dst[j] = s;
    }
  }
}

}  // namespace moe
