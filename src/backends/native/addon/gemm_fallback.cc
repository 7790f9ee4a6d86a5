// Portable blocked SGEMM for builds without OpenBLAS: B and A are packed into panels (kc x NR and
// kc x MR) and a register-tiled micro-kernel written with GCC vector extensions does MR x NR
// outer products per step. Compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run
// time; threads split the rows (or the columns of a short, wide product) between them.
// The build compiles with -ffp-contract=off (identical elementwise results on every CPU); the
// micro-kernel needs its multiply-adds fused.
#pragma GCC optimize("fp-contract=fast")

#include <cstdlib>
#include <cstring>
#include <vector>

#include "sgemm.h"
#include "threadpool.h"
#include "vec.h"

namespace moe {
namespace {

using i64 = int64_t;



constexpr i64 KC = 256, MC = 96, NC = 1024;

struct Problem {
  bool transA, transB, accumulate;
  i64 k, lda, ldb, ldc;
  const float* a;
  const float* b;
  float* c;
};

template <typename V, int MR, int NV>
__attribute__((always_inline)) inline void micro(i64 kc, const float* __restrict ap, const float* __restrict bp, float* c, i64 ldc,
                                                 bool acc, i64 mr, i64 nr) {
  constexpr int W = sizeof(V) / sizeof(float);
  constexpr int NR = W * NV;
  V cr[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) cr[r][v] = V{};
  for (i64 p = 0; p < kc; p++) {
    V bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = loadu<V>(bp + p * NR + v * W);
    for (int r = 0; r < MR; r++) {
      float av = ap[p * MR + r];
      for (int v = 0; v < NV; v++) cr[r][v] += av * bv[v];
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NV; v++) {
        float* dst = c + r * ldc + v * W;
        storeu<V>(dst, acc ? loadu<V>(dst) + cr[r][v] : cr[r][v]);
      }
  } else {
    float tmp[MR][NR];
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NV; v++) storeu<V>(&tmp[r][v * W], cr[r][v]);
    for (i64 r = 0; r < mr; r++)
      for (i64 j = 0; j < nr; j++) c[r * ldc + j] = acc ? c[r * ldc + j] + tmp[r][j] : tmp[r][j];
  }
}

// Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels, zero-padded.
template <int MR>
__attribute__((always_inline)) inline void packA(const Problem& P, i64 i0, i64 mc, i64 p0, i64 kc, float* dst) {
  for (i64 ir = 0; ir < mc; ir += MR) {
    i64 mr = mc - ir < MR ? mc - ir : MR;
    float* d = dst + ir * kc;
    for (i64 p = 0; p < kc; p++) {
      for (i64 r = 0; r < MR; r++) {
        i64 i = i0 + ir + r, pp = p0 + p;
        d[p * MR + r] = r < mr ? (P.transA ? P.a[pp * P.lda + i] : P.a[i * P.lda + pp]) : 0.0f;
      }
    }
  }
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] into NR-column panels, zero-padded.
template <int NR>
__attribute__((always_inline)) inline void packB(const Problem& P, i64 p0, i64 kc, i64 j0, i64 nc, float* dst) {
  for (i64 jr = 0; jr < nc; jr += NR) {
    i64 nr = nc - jr < NR ? nc - jr : NR;
    float* d = dst + jr * kc;
    for (i64 p = 0; p < kc; p++) {
      i64 pp = p0 + p;
      if (!P.transB && nr == NR) {
        std::memcpy(d + p * NR, P.b + pp * P.ldb + j0 + jr, sizeof(float) * NR);
        continue;
      }
      for (i64 j = 0; j < NR; j++) {
        i64 jj = j0 + jr + j;
        d[p * NR + j] = j < nr ? (P.transB ? P.b[jj * P.ldb + pp] : P.b[pp * P.ldb + jj]) : 0.0f;
      }
    }
  }
}

float* scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n + 16) buf.resize(n + 16);
  uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// The serial blocked product over rows [i0, i1) and columns [j0, j1) of C.
template <typename V, int MR, int NV>
__attribute__((always_inline)) inline void blocked(const Problem& P, i64 i0, i64 i1, i64 j0, i64 j1) {
  constexpr int NR = (sizeof(V) / sizeof(float)) * NV;
  static thread_local std::vector<float> abuf, bbuf;
  float* pa = scratch(abuf, static_cast<size_t>(KC * (MC + MR)));
  float* pb = scratch(bbuf, static_cast<size_t>(KC * (NC + NR)));
  for (i64 jc = j0; jc < j1; jc += NC) {
    i64 nc = j1 - jc < NC ? j1 - jc : NC;
    for (i64 pc = 0; pc < P.k; pc += KC) {
      i64 kc = P.k - pc < KC ? P.k - pc : KC;
      bool acc = P.accumulate || pc > 0;
      packB<NR>(P, pc, kc, jc, nc, pb);
      for (i64 ic = i0; ic < i1; ic += MC) {
        i64 mc = i1 - ic < MC ? i1 - ic : MC;
        packA<MR>(P, ic, mc, pc, kc, pa);
        for (i64 jr = 0; jr < nc; jr += NR) {
          i64 nr = nc - jr < NR ? nc - jr : NR;
          for (i64 ir = 0; ir < mc; ir += MR) {
            i64 mr = mc - ir < MR ? mc - ir : MR;
            micro<V, MR, NV>(kc, pa + ir * kc, pb + jr * kc, P.c + (ic + ir) * P.ldc + jc + jr, P.ldc, acc, mr, nr);
          }
        }
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512vl,fma"))) void blockedAvx512(const Problem& P, i64 i0, i64 i1, i64 j0, i64 j1) {
  blocked<V16, 8, 2>(P, i0, i1, j0, j1);
}
__attribute__((target("avx2,fma"))) void blockedAvx2(const Problem& P, i64 i0, i64 i1, i64 j0, i64 j1) {
  blocked<V8, 6, 2>(P, i0, i1, j0, j1);
}
#endif
void blockedBase(const Problem& P, i64 i0, i64 i1, i64 j0, i64 j1) { blocked<V4, 4, 2>(P, i0, i1, j0, j1); }

using BlockedFn = void (*)(const Problem&, i64, i64, i64, i64);

BlockedFn pickKernel() {
  switch (simdTier()) {
#if defined(__x86_64__) && defined(__GNUC__)
    case SimdTier::Avx512: return blockedAvx512;
    case SimdTier::Avx2: return blockedAvx2;
#endif
    default: return blockedBase;
  }
}

}  // namespace

void fallbackSgemm(bool transA, bool transB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool accumulate,
                   float* c, i64 ldc) {
  if (m <= kSmallM) {
    smallMSgemm(transA, transB, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
    return;
  }
  static const BlockedFn kernel = pickKernel();
  Problem P{transA, transB, accumulate, k, lda, ldb, ldc, a, b, c};
  // Split the longer side of C; chunks are multiples of 16 rows/columns, and small products stay serial.
  bool rowsSplit = m >= n;
  i64 side = rowsSplit ? m : n;
  i64 units = (side + 15) / 16;
  i64 work = m * n * k;
  i64 minUnits = work < (i64(1) << 21) ? units : 1;
  parallelFor(units, minUnits, [&](i64 u0, i64 u1) {
    i64 s0 = u0 * 16, s1 = u1 * 16 < side ? u1 * 16 : side;
    if (rowsSplit) kernel(P, s0, s1, 0, n);
    else kernel(P, 0, m, s0, s1);
  });
}

const char* simdLevel() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "baseline";
}

}  // namespace moe
