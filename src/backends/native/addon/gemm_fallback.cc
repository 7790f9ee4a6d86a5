// The addon's own blocked SGEMM: B and A are packed into panels (kc x NR and kc x MR) and a
// register-tiled micro-kernel written with GCC vector extensions does MR x NR outer products per
// step. Compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run time; it runs on the
// addon's pool: the threads pack each kc x NC block of B together, then share its row blocks.
// The build compiles with -ffp-contract=off (identical elementwise results on every CPU); the
// micro-kernel needs its multiply-adds fused.
#pragma GCC optimize("fp-contract=fast")

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sgemm.h"
#include "threadpool.h"
#include "vec.h"

namespace moe {
namespace {

using i64 = int64_t;



// Blocking (Goto/BLIS order: jc -> pc -> ic -> jr -> ir). A kc x NR panel of B stays in L1 while
// the MR-row panels of an MC x kc block of A stream from L2; the packed kc x NC block of B is
// shared by all threads (L3). KC = 256: a 24-wide panel is 24 KiB of the 32 KiB L1d.
constexpr i64 KC = 256, MC = 96, NC = 3072;

struct Problem {
  bool transA, transB, accumulate;
  i64 k, lda, ldb, ldc;
  const float* a;
  const float* b;
  float* c;
};

template <typename V, int MR, int NV>
__attribute__((always_inline)) inline void micro(i64 kc, const float* __restrict ap, const float* __restrict bp, float* c, i64 ldc,
                                                 bool acc, i64 mr, i64 nr, const float* cNext) {
  constexpr int W = sizeof(V) / sizeof(float);
  constexpr int NR = W * NV;
  // The next tile of C comes from L3 or memory (C is touched once per kc slice): asked for now, it
  // arrives while this tile computes (without it, 2048^3 on one thread ran at ~76% of the speed).
  for (int r = 0; r < MR; r++) {
    __builtin_prefetch(cNext + r * ldc, 1, 3);
    __builtin_prefetch(cNext + r * ldc + NR - 1, 1, 3);
  }
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

// Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels, zero-padded. Plain A: each row's kc values
// are read front to back (MR streams); transposed A: each p reads MR consecutive values.
template <int MR>
__attribute__((always_inline)) inline void packA(const Problem& P, i64 i0, i64 mc, i64 p0, i64 kc, float* dst) {
  for (i64 ir = 0; ir < mc; ir += MR) {
    i64 mr = mc - ir < MR ? mc - ir : MR;
    float* d = dst + ir * kc;
    if (P.transA) {
      for (i64 p = 0; p < kc; p++) {
        const float* src = P.a + (p0 + p) * P.lda + i0 + ir;
        for (i64 r = 0; r < MR; r++) d[p * MR + r] = r < mr ? src[r] : 0.0f;
      }
    } else {
      for (i64 r = 0; r < MR; r++) {
        if (r >= mr) {
          for (i64 p = 0; p < kc; p++) d[p * MR + r] = 0.0f;
          continue;
        }
        const float* src = P.a + (i0 + ir + r) * P.lda + p0;
        for (i64 p = 0; p < kc; p++) d[p * MR + r] = src[p];
      }
    }
  }
}

typedef int I8 __attribute__((vector_size(32)));

// Eight rows of eight floats in, their transpose out (c[s][q] = r[q][s]): unpack, 64-bit shuffle
// and 128-bit lane steps, each a one-instruction shuffle on AVX.
__attribute__((always_inline)) inline void transpose8(const V8 r[8], V8 c[8]) {
  V8 t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], I8{0, 8, 1, 9, 4, 12, 5, 13});
    t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], I8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int h = 0; h < 2; h++) {
    const int o = 4 * h;
    u[o + 0] = __builtin_shuffle(t[o + 0], t[o + 2], I8{0, 1, 8, 9, 4, 5, 12, 13});
    u[o + 1] = __builtin_shuffle(t[o + 0], t[o + 2], I8{2, 3, 10, 11, 6, 7, 14, 15});
    u[o + 2] = __builtin_shuffle(t[o + 1], t[o + 3], I8{0, 1, 8, 9, 4, 5, 12, 13});
    u[o + 3] = __builtin_shuffle(t[o + 1], t[o + 3], I8{2, 3, 10, 11, 6, 7, 14, 15});
  }
  for (int i = 0; i < 4; i++) {
    c[i] = __builtin_shuffle(u[i], u[i + 4], I8{0, 1, 2, 3, 8, 9, 10, 11});
    c[i + 4] = __builtin_shuffle(u[i], u[i + 4], I8{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// Packs op(B)[p0:p0+kc, j0+jr0 : j0+jr1] (whole NR panels) into NR-column panels, zero-padded.
// Plain B is read 8 rows at a time across all the panels: a panel at a time would touch a new page
// for every row of B (row strides of kilobytes), which made packing cost as much as the arithmetic
// when an expert's group has few rows.
template <int NR>
__attribute__((always_inline)) inline void packB(const Problem& P, i64 p0, i64 kc, i64 j0, i64 nc, i64 jr0, i64 jr1, float* dst) {
  if (jr1 > nc) jr1 = nc;
  if (P.transB) {
    // op(B) = B^T: the panel's columns are rows of B. Eight of them at a time are read eight floats
    // along and written transposed, eight floats per store (one float per store made packing cost a
    // third of the arithmetic for a 64-row expert group's input gradient).
    for (i64 jr = jr0; jr < jr1; jr += NR) {
      i64 nr = nc - jr < NR ? nc - jr : NR;
      float* d = dst + jr * kc;
      i64 j = 0;
      if (NR % 8 == 0) {
        for (; j + 8 <= nr; j += 8) {
          const float* src = P.b + (j0 + jr + j) * P.ldb + p0;
          i64 p = 0;
          for (; p + 8 <= kc; p += 8) {
            V8 r[8], c[8];
            for (int q = 0; q < 8; q++) r[q] = loadu<V8>(src + q * P.ldb + p);
            transpose8(r, c);
            for (int q = 0; q < 8; q++) storeu<V8>(d + (p + q) * NR + j, c[q]);
          }
          for (; p < kc; p++)
            for (int q = 0; q < 8; q++) d[p * NR + j + q] = src[q * P.ldb + p];
        }
      }
      for (; j < NR; j++) {
        if (j >= nr) {
          for (i64 p = 0; p < kc; p++) d[p * NR + j] = 0.0f;
          continue;
        }
        const float* src = P.b + (j0 + jr + j) * P.ldb + p0;
        for (i64 p = 0; p < kc; p++) d[p * NR + j] = src[p];
      }
    }
    return;
  }
  constexpr i64 kRows = 8;
  for (i64 pp = 0; pp < kc; pp += kRows) {
    const i64 pe = pp + kRows < kc ? pp + kRows : kc;
    for (i64 jr = jr0; jr < jr1; jr += NR) {
      i64 nr = nc - jr < NR ? nc - jr : NR;
      float* d = dst + jr * kc;
      for (i64 p = pp; p < pe; p++) {
        const float* src = P.b + (p0 + p) * P.ldb + j0 + jr;
        if (nr == NR) {
          std::memcpy(d + p * NR, src, sizeof(float) * NR);
        } else {
          for (i64 j = 0; j < NR; j++) d[p * NR + j] = j < nr ? src[j] : 0.0f;
        }
      }
    }
  }
}

float* aligned(std::vector<float>& buf, size_t n) {
  if (buf.size() < n + 16) buf.resize(n + 16);
  uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

/**
 * One kc slice of the product: C[:, jc:jc+nc] (+)= op(A)[:, pc:pc+kc] op(B)[pc:pc+kc, jc:jc+nc],
 * with op(B)'s slice already packed in pb. Work units are (MC-row block, column chunk) pairs so that
 * a product with few rows (an expert's group) still gives every thread a share.
 */
template <typename V, int MR, int NV>
struct Blocked {
  static constexpr int NR = (sizeof(V) / sizeof(float)) * NV;

  __attribute__((always_inline)) static inline void packBRange(const Problem& P, i64 pc, i64 kc, i64 jc, i64 nc, i64 panel0, i64 panel1, float* pb) {
    packB<NR>(P, pc, kc, jc, nc, panel0 * NR, panel1 * NR, pb);
  }

  // rows [i0, i1) of the slice, packed-B panels [panel0, panel1)
  __attribute__((always_inline)) static inline void compute(const Problem& P, i64 i0, i64 i1, i64 pc, i64 kc, i64 jc, i64 nc, i64 panel0, i64 panel1, const float* pb, bool acc) {
    static thread_local std::vector<float> abuf;
    float* pa = aligned(abuf, static_cast<size_t>(KC * (MC + MR)));
    for (i64 ic = i0; ic < i1; ic += MC) {
      i64 mc = i1 - ic < MC ? i1 - ic : MC;
      packA<MR>(P, ic, mc, pc, kc, pa);
      for (i64 panel = panel0; panel < panel1; panel++) {
        i64 jr = panel * NR;
        i64 nr = nc - jr < NR ? nc - jr : NR;
        for (i64 ir = 0; ir < mc; ir += MR) {
          i64 mr = mc - ir < MR ? mc - ir : MR;
          float* ct = P.c + (ic + ir) * P.ldc + jc + jr;
          // next: the tile below, or the top of the next panel (a prefetch past the end is harmless)
          const float* cNext = ir + MR < mc ? ct + MR * P.ldc : P.c + ic * P.ldc + jc + jr + NR;
          micro<V, MR, NV>(kc, pa + ir * kc, pb + jr * kc, ct, P.ldc, acc, mr, nr, cNext);
        }
      }
    }
  }
};

// The three builds of the kernels, one per vector tier. AVX2: 4 x 24 tiles (12 accumulators; one
// broadcast per three FMAs: 91% of the FMA peak from L1 on Zen 3, against 81-88% for 6 x 16).
#define MOE_BLOCKED_FNS(SUFFIX, V, MR, NV)                                                                                        \
  void packB##SUFFIX(const Problem& P, i64 pc, i64 kc, i64 jc, i64 nc, i64 q0, i64 q1, float* pb) {                             \
    Blocked<V, MR, NV>::packBRange(P, pc, kc, jc, nc, q0, q1, pb);                                                              \
  }                                                                                                                             \
  void compute##SUFFIX(const Problem& P, i64 i0, i64 i1, i64 pc, i64 kc, i64 jc, i64 nc, i64 q0, i64 q1, const float* pb, bool acc) { \
    Blocked<V, MR, NV>::compute(P, i0, i1, pc, kc, jc, nc, q0, q1, pb, acc);                                                    \
  }

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")
MOE_BLOCKED_FNS(Avx512, V16, 8, 2)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
MOE_BLOCKED_FNS(Avx2, V8, 4, 3)
#pragma GCC pop_options
#endif
MOE_BLOCKED_FNS(Base, V4, 4, 2)

struct Kernel {
  int nr;
  void (*packB)(const Problem&, i64, i64, i64, i64, i64, i64, float*);
  void (*compute)(const Problem&, i64, i64, i64, i64, i64, i64, i64, i64, const float*, bool);
};

Kernel pickKernel() {
  switch (simdTier()) {
#if defined(__x86_64__) && defined(__GNUC__)
    case SimdTier::Avx512: return {32, packBAvx512, computeAvx512};
    case SimdTier::Avx2: return {24, packBAvx2, computeAvx2};
#endif
    default: return {8, packBBase, computeBase};
  }
}

}  // namespace

void fallbackSgemm(bool transA, bool transB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool accumulate,
                   float* c, i64 ldc, bool threaded) {
  if (m <= kSmallM) {
    smallMSgemm(transA, transB, m, n, k, a, lda, b, ldb, accumulate, c, ldc, threaded);
    return;
  }
  static const Kernel K = pickKernel();
  const Problem P{transA, transB, accumulate, k, lda, ldb, ldc, a, b, c};
  // Small products stay on the calling thread (a hand-off costs more than they compute).
  const bool serial = !threaded || m * n * k < (i64(1) << 21) || poolThreads() == 1;
  const i64 threads = serial ? 1 : poolThreads();
  static thread_local std::vector<float> bbuf;  // the caller's: pool workers only read it
  const i64 ncMax = n < NC ? n : NC;
  float* pb = aligned(bbuf, static_cast<size_t>(KC * (ncMax + K.nr)));
  const i64 rowBlocks = (m + MC - 1) / MC;
  for (i64 jc = 0; jc < n; jc += NC) {
    const i64 nc = n - jc < NC ? n - jc : NC;
    const i64 panels = (nc + K.nr - 1) / K.nr;
    // Column chunks per row block: enough units for every thread when rows are few.
    const i64 colChunks = rowBlocks >= 2 * threads ? 1 : std::min<i64>(panels, (2 * threads + rowBlocks - 1) / rowBlocks);
    const i64 units = rowBlocks * colChunks;
    for (i64 pc = 0; pc < k; pc += KC) {
      const i64 kc = k - pc < KC ? k - pc : KC;
      const bool acc = accumulate || pc > 0;
      if (serial) {
        K.packB(P, pc, kc, jc, nc, 0, panels, pb);
        K.compute(P, 0, m, pc, kc, jc, nc, 0, panels, pb, acc);
        continue;
      }
      parallelFor(panels, 1, [&](i64 q0, i64 q1) { K.packB(P, pc, kc, jc, nc, q0, q1, pb); });
      parallelFor(units, 1, [&](i64 u0, i64 u1) {
        for (i64 u = u0; u < u1; u++) {
          const i64 rb = u / colChunks, cc = u % colChunks;
          const i64 q0 = panels * cc / colChunks, q1 = panels * (cc + 1) / colChunks;
          const i64 i0 = rb * MC, i1 = std::min(m, i0 + MC);
          K.compute(P, i0, i1, pc, kc, jc, nc, q0, q1, pb, acc);
        }
      });
    }
  }
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
