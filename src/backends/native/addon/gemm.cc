// Matrix products: matmul (batched, transposes, accumulate), the grouped expert GEMM and its weight
// gradient, all through one sgemm() that runs oneDNN or OpenBLAS, whichever the build found and
// measured faster on this CPU class (see chooseLibrary), else the portable GEMM (1-4 rows go to
// gemv.cc's matrix-vector kernel).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "gemm_dnnl.h"
#include "gemm_epilogue.h"
#include "simd_math.h"
#include "kernels.h"
#include "sgemm.h"
#include "threadpool.h"

#ifdef MOE_HAVE_OPENBLAS
// Declared here so that no CBLAS header path is needed; the enum values are CBLAS's.
extern "C" {
void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
char* openblas_get_config(void);
}
static constexpr int CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112;
#endif

namespace moe {

namespace {

enum class Library { onednn, openblas, fallback };

const char* libraryName(Library l) { return l == Library::onednn ? "onednn" : l == Library::openblas ? "openblas" : "fallback"; }

constexpr bool kHaveOpenblas =
#ifdef MOE_HAVE_OPENBLAS
    true;
#else
    false;
#endif

bool compiled(Library l) { return l == Library::fallback || (l == Library::onednn ? dnnlCompiled() : kHaveOpenblas); }

// MOE_GEMM forces one library for every product (benchmarks, A/B runs); -1: chooseLibrary's choice.
std::atomic<int> forced{-1};

/**
 * The library a product runs on. Measured per shape class (bench/gemm-libs.ts; docs/results/
 * benchmarks.md, "oneDNN vs OpenBLAS"), oneDNN 2.6 over OpenBLAS 0.3.21, interleaved medians:
 *
 *   CPU class            shape class                          oneDNN / OpenBLAS   chosen
 *   AVX2 (EPYC, 2 vCPU)  large: squares >= 512, MoE up/down,  0.58-1.11x, mostly  OpenBLAS
 *                        their dX (NT) and dW (TN) products   0.86-0.99x
 *   AVX2                 few rows (m = 64, E = 128 groups)    0.32-0.70x (2 thr.) OpenBLAS
 *   AVX2                 small (256^3) alone                  1.25-1.9x           OpenBLAS: see below
 *   AVX-512 (Zen 5)      square 2048 (issue 12)               459 / 246 GFLOP/s   oneDNN
 *
 * One library per CPU class, never mixed by shape: both run pools of their own (OpenMP's, OpenBLAS's)
 * whose workers spin after a call, so alternating four 256^3 products on oneDNN with a 1024^3 one
 * on OpenBLAS took 197 ms against 103 ms all on OpenBLAS, more than the small products' gain. On
 * AVX-512 oneDNN picks its AVX-512 kernels itself while OpenBLAS runs the AVX2 one that
 * OPENBLAS_CORETYPE=Haswell (this project's environment) forces. Without OpenBLAS, oneDNN beats the
 * portable GEMM on every class.
 */
//
// oneDNN was opt-in for a while: its GEMM corrupted the heap when a signal handler ran on the thread
// inside it (node --cpu-prof: 5-6 of 6-8 runs crashed, even single-threaded). The signal frame written
// at the interrupted stack pointer was the cause (with the handler on an alternate stack: 0 of 16
// crashed); gemm_dnnl.cc now blocks signals around every oneDNN call (0 of 27 runs crashed, a test
// repeats it under a 50 us profiler), so the AVX-512 choice is the default again.
Library chooseLibrary() {
  const int f = forced.load(std::memory_order_relaxed);
  if (f >= 0) return static_cast<Library>(f);
  static const Library byCpu = [] {
    if (dnnlCompiled() && (!kHaveOpenblas || std::strcmp(simdLevel(), "avx512") == 0)) return Library::onednn;
    return kHaveOpenblas ? Library::openblas : Library::fallback;
  }();
  return byCpu;
}

/** One product on one library (which must be compiled in); m, n, k >= 1. */
void sgemmOn(Library lib, bool transA, bool transB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool accumulate,
             float* c, i64 ldc) {
  // a oneDNN failure (counted, reported by info) falls through to the next library
  if (lib == Library::onednn && dnnlSgemm(transA, transB, m, n, k, a, lda, b, ldb, accumulate, c, ldc)) return;
#ifdef MOE_HAVE_OPENBLAS
  if (lib != Library::fallback) {
    parkPool();  // OpenBLAS runs its own threads: ours must not spin on their cores meanwhile
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), accumulate ? 1.0f : 0.0f, c,
                static_cast<int>(ldc));
    return;
  }
#endif
  fallbackSgemm(transA, transB, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
}

}  // namespace

void sgemm(bool transA, bool transB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool accumulate, float* c,
           i64 ldc) {
  // Few rows (one included): the addon's matrix-vector kernel on its own pool, never a BLAS. Its
  // sgemm packs all of B first even for one row; its sgemv is as fast in isolation, but in decode it
  // alternates with the pool's jobs, and on 2 cores the two sets of spinning threads starved each
  // other (grouped calls 2.3 ms instead of 0.5 ms).
  if (m <= kFewM) {
    smallMSgemm(transA, transB, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
    return;
  }
  sgemmOn(chooseLibrary(), transA, transB, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
}

// groupedFewRows (sgemm.h): one hand-off per call instead of one per expert (each expert alone is
// too small to split well).
bool groupedFewRows(const float* x, const float* w, const int32_t* sizes, i64 groupCount, float* out, i64 k, i64 n, bool transW) {
  std::vector<i64> groups, starts;
  i64 row = 0;
  for (i64 g = 0; g < groupCount; g++) {
    const i64 rows = sizes[g];
    if (rows > kFewM) return false;
    if (rows > 0) {
      groups.push_back(g);
      starts.push_back(row);
    }
    row += rows;
  }
  // as smallMSgemm: two threads only for enough bytes of weights
  if (groups.size() < 2 || static_cast<i64>(groups.size()) * k * n * 4 < 2 * smallMMinBytesPerThread()) return false;
  parallelFor(static_cast<i64>(groups.size()), 1, [&](i64 lo, i64 hi) {
    for (i64 i = lo; i < hi; i++) {
      const i64 g = groups[static_cast<size_t>(i)], r0 = starts[static_cast<size_t>(i)];
      smallMSgemm(false, transW, sizes[g], n, k, x + r0 * k, k, w + g * k * n, transW ? k : n, false, out + r0 * n, n, false);
    }
  });
  return true;
}

bool sgemmOnOnednn() { return chooseLibrary() == Library::onednn; }

namespace {

// setGroupedSplit: 0 auto, 1 groups across threads whenever no group is too large, 2 never.
std::atomic<int> groupedSplit{0};

}  // namespace

// Where oneDNN runs the products (AVX-512) it takes every group above kFewM rows: on 2 AVX-512
// cores the layer at E = 128 (64-row groups) ran forward at 32117 / 31532 tokens/s against
// 27189 / 26469 with the 64-row groups on the portable GEMM, whole groups per thread; E = 32
// forward+backward 11970 / 11377 against 9145 / 10334 (`moe bench moe-layer --experts 32,128
// --rounds 1`, two interleaved pairs). OpenBLAS's second thread gained nothing on such groups on
// AVX2 (the eighth session), so there the portable GEMM keeps them up to 256 rows.
// MOE_GROUP_PORTABLE_MAX_ROWS overrides both (an A/B switch).
int64_t groupPortableMaxRows() {
  static const int64_t forced = [] {
    const char* e = std::getenv("MOE_GROUP_PORTABLE_MAX_ROWS");
    return e && *e ? std::atoll(e) : int64_t(-1);
  }();
  if (forced >= 0) return forced;
  return sgemmOnOnednn() ? kFewM : 256;
}

void groupProduct(bool transW, i64 rows, i64 n, i64 k, const float* x, const float* w, float* out, bool threaded) {
  if (rows <= kFewM) smallMSgemm(false, transW, rows, n, k, x, k, w, transW ? k : n, false, out, n, threaded);
  else if (rows <= groupPortableMaxRows()) fallbackSgemm(false, transW, rows, n, k, x, k, w, transW ? k : n, false, out, n, threaded);
  else sgemm(false, transW, rows, n, k, x, k, w, transW ? k : n, false, out, n);
}

void groupWeightGrad(i64 rows, i64 k, i64 n, const float* x, const float* dy, float* out, bool threaded) {
  if (rows <= groupPortableMaxRows()) fallbackSgemm(true, false, k, n, rows, x, k, dy, n, false, out, n, threaded);
  else sgemm(true, false, k, n, rows, x, k, dy, n, false, out, n);
}

bool forGroupsAcrossThreads(const int32_t* sizes, i64 groupCount, void (*run)(void* ctx, i64 g, i64 row0), void* ctx) {
  const int mode = groupedSplit.load(std::memory_order_relaxed);
  const i64 threads = poolThreads();
  if (mode == 2 || threads < 2) return false;
  i64 rows = 0, nonEmpty = 0;
  for (i64 g = 0; g < groupCount; g++) {
    rows += sizes[g];
    if (sizes[g] > 0) nonEmpty++;
  }
  if (nonEmpty < 2) return false;
  // only groups whose products never reach a BLAS: OpenBLAS runs its own threads per call, and calls
  // from several threads at once have a history of races (OpenBLAS issues #1761, #2126)
  const i64 maxRows = groupPortableMaxRows();
  for (i64 g = 0; g < groupCount; g++) if (sizes[g] > maxRows) return false;
  if (mode == 0 && nonEmpty < 2 * threads) return false;
  // work of a group ~ its rows plus the packing of its weight matrix (counted as 16 rows, a guess
  // that only shifts the split points); contiguous ranges of about equal work, one per thread
  std::vector<i64> start(static_cast<size_t>(threads) + 1, groupCount);
  start[0] = 0;
  const i64 total = rows + 16 * nonEmpty;
  i64 acc = 0, part = 1;
  for (i64 g = 0; g < groupCount && part < threads; g++) {
    acc += sizes[g] > 0 ? sizes[g] + 16 : 0;
    while (part < threads && acc * threads >= total * part) start[static_cast<size_t>(part++)] = g + 1;
  }
  std::vector<i64> firstRow(static_cast<size_t>(groupCount) + 1, 0);
  for (i64 g = 0; g < groupCount; g++) firstRow[static_cast<size_t>(g) + 1] = firstRow[static_cast<size_t>(g)] + sizes[g];
  parallelFor(threads, 1, [&](i64 p0, i64 p1) {
    for (i64 p = p0; p < p1; p++) {
      for (i64 g = start[static_cast<size_t>(p)]; g < start[static_cast<size_t>(p) + 1]; g++) {
        if (sizes[g] > 0) run(ctx, g, firstRow[static_cast<size_t>(g)]);
      }
    }
  });
  return true;
}

namespace {

constexpr i64 kIntMax = 2147483647;

// BLAS takes 32-bit sizes and leading dimensions.
void checkBlasInt(const Args& args, std::initializer_list<i64> xs) {
#ifdef MOE_HAVE_OPENBLAS
  for (i64 x : xs) if (x > kIntMax) args.fail("a matrix dimension exceeds 2^31 - 1, which BLAS cannot take");
#else
  (void)args;
  (void)xs;
#endif
}

void zero(float* p, i64 n) { std::memset(p, 0, sizeof(float) * static_cast<size_t>(n)); }

// Products this small lose more to a BLAS call's set-up (packing, thread hand-off) than they
// spend computing: attention's per-head T x T products, routers' [T, E] logits.
constexpr i64 kSmallGemmWork = 32 * 32 * 32;

/** c (+)= op(A) op(B) for one small matrix: i-p-j order keeps B's rows contiguous and vectorisable. */
MOE_CLONES void smallGemm(bool transA, bool transB, i64 m, i64 n, i64 k, const float* a, const float* b, bool accumulate, float* c) {
  if (!accumulate) std::memset(c, 0, sizeof(float) * static_cast<size_t>(m * n));
  for (i64 i = 0; i < m; i++) {
    float* crow = c + i * n;
    if (!transB) {
      for (i64 p = 0; p < k; p++) {
        const float av = transA ? a[p * m + i] : a[i * k + p];
        const float* brow = b + p * n;
        for (i64 j = 0; j < n; j++) crow[j] += av * brow[j];
      }
    } else {
      for (i64 j = 0; j < n; j++) {
        const float* brow = b + j * k;
        float s = 0.0f;
        if (transA) for (i64 p = 0; p < k; p++) s += a[p * m + i] * brow[p];
        else for (i64 p = 0; p < k; p++) s += a[i * k + p] * brow[p];
        crow[j] += s;
      }
    }
  }
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Args args(info, "matmul", 12);
  Buf<float> a = args.f32(0, "a"), b = args.f32(1, "b"), out = args.f32(2, "out");
  i64 batch = args.size(3, "batch"), m = args.size(4, "m"), n = args.size(5, "n"), k = args.size(6, "k");
  bool transA = args.boolean(7, "transA"), transB = args.boolean(8, "transB");
  bool aBatched = args.boolean(9, "aBatched"), bBatched = args.boolean(10, "bBatched"), accumulate = args.boolean(11, "accumulate");
  i64 mk = args.mul({m, k}), kn = args.mul({k, n}), mn = args.mul({m, n});
  args.need(a, args.mul({aBatched ? batch : 1, mk}), "a");
  args.need(b, args.mul({bBatched ? batch : 1, kn}), "b");
  args.need(out, args.mul({batch, mn}), "out");
  if (batch == 0 || m == 0 || n == 0) return info.Env().Undefined();
  if (k == 0) {
    if (!accumulate) zero(out.data, batch * mn);
    return info.Env().Undefined();
  }
  i64 lda = transA ? m : k, ldb = transB ? k : n;
  // A stack of A matrices against one B is a single taller product.
  if (batch > 1 && aBatched && !bBatched && !transA) {
    checkBlasInt(args, {batch * m, n, k});
    sgemm(false, transB, batch * m, n, k, a.data, k, b.data, ldb, accumulate, out.data, n);
    return info.Env().Undefined();
  }
  if (m * n * k <= kSmallGemmWork) {
    // many small products: our own loop, the batch split across the pool
    const float* ad = a.data;
    const float* bd = b.data;
    float* od = out.data;
    parallelFor(batch, std::max<i64>(1, 65536 / (m * n * k)), [=](i64 lo, i64 hi) {
      for (i64 i = lo; i < hi; i++) {
        smallGemm(transA, transB, m, n, k, ad + (aBatched ? i * mk : 0), bd + (bBatched ? i * kn : 0), accumulate, od + i * mn);
      }
    });
    return info.Env().Undefined();
  }
  checkBlasInt(args, {m, n, k});
  for (i64 i = 0; i < batch; i++) {
    sgemm(transA, transB, m, n, k, a.data + (aBatched ? i * mk : 0), lda, b.data + (bBatched ? i * kn : 0), ldb, accumulate,
          out.data + i * mn, n);
  }
  return info.Env().Undefined();
}

// Validates group sizes and returns their sum (the row count T).
i64 groupRows(const Args& args, const Buf<int32_t>& sizes) {
  i64 t = 0;
  for (i64 g = 0; g < sizes.length; g++) {
    if (sizes.data[g] < 0) args.fail("groupSizes[" + std::to_string(g) + "] = " + std::to_string(sizes.data[g]) + " is negative");
    t += sizes.data[g];
  }
  return t;
}

Napi::Value GroupedMatmul(const Napi::CallbackInfo& info) {
  Args args(info, "groupedMatmul", 7);
  Buf<float> x = args.f32(0, "x"), w = args.f32(1, "w");
  Buf<int32_t> sizes = args.i32(2, "groupSizes");
  Buf<float> out = args.f32(3, "out");
  i64 k = args.size(4, "k"), n = args.size(5, "n");
  bool transW = args.boolean(6, "transW");
  i64 t = groupRows(args, sizes);
  args.need(x, args.mul({t, k}), "x");
  args.need(out, args.mul({t, n}), "out");
  args.need(w, args.mul({sizes.length, k, n}), "w");
  checkBlasInt(args, {k, n});
  if (n == 0) return info.Env().Undefined();
  // the grouped-epilogue driver with no epilogue: the same kernels per group, no pass over out
  groupedProductsWithEpilogue(x.data, w.data, sizes.data, sizes.length, t, out.data, k, n, transW, nullptr, -1, nullptr, nullptr);
  return info.Env().Undefined();
}

Napi::Value GroupedMatmulWeightGrad(const Napi::CallbackInfo& info) {
  Args args(info, "groupedMatmulWeightGrad", 6);
  Buf<float> x = args.f32(0, "x"), dy = args.f32(1, "dy");
  Buf<int32_t> sizes = args.i32(2, "groupSizes");
  Buf<float> out = args.f32(3, "out");
  i64 k = args.size(4, "k"), n = args.size(5, "n");
  i64 t = groupRows(args, sizes);
  args.need(x, args.mul({t, k}), "x");
  args.need(dy, args.mul({t, n}), "dy");
  args.need(out, args.mul({sizes.length, k, n}), "out");
  checkBlasInt(args, {k, n});
  if (k == 0 || n == 0) return info.Env().Undefined();
  {
    const float* xd = x.data;
    const float* yd = dy.data;
    float* od = out.data;
    auto one = [=](i64 g, i64 r0) {
      groupWeightGrad(sizes.data[g], k, n, xd + r0 * k, yd + r0 * n, od + g * k * n, false);
    };
    if (forGroupsAcrossThreads(sizes.data, sizes.length, one)) {
      // the groups without rows: their gradient is zero
      for (i64 g = 0; g < sizes.length; g++) if (sizes.data[g] == 0) zero(od + g * k * n, k * n);
      return info.Env().Undefined();
    }
  }
  i64 row = 0;
  for (i64 g = 0; g < sizes.length; g++) {
    i64 rows = sizes.data[g];
    float* o = out.data + g * k * n;
    // out[g] = x_g^T @ dy_g: x_g is rows x k, read transposed.
    if (rows == 0) zero(o, k * n);
    else groupWeightGrad(rows, k, n, x.data + row * k, dy.data + row * n, o, true);
    row += rows;
  }
  return info.Env().Undefined();
}

// The test hooks' product: matmul's single-matrix arguments from index `at` on (a, b, out, m, n, k,
// transA, transB, accumulate), checked, then run(...) unless the product is empty.
template <typename Run>
Napi::Value testProduct(const Args& args, const Napi::CallbackInfo& info, size_t at, Run&& run) {
  Buf<float> a = args.f32(at, "a"), b = args.f32(at + 1, "b"), out = args.f32(at + 2, "out");
  i64 m = args.size(at + 3, "m"), n = args.size(at + 4, "n"), k = args.size(at + 5, "k");
  bool transA = args.boolean(at + 6, "transA"), transB = args.boolean(at + 7, "transB"), accumulate = args.boolean(at + 8, "accumulate");
  args.need(a, args.mul({m, k}), "a");
  args.need(b, args.mul({k, n}), "b");
  args.need(out, args.mul({m, n}), "out");
  if (m == 0 || n == 0) return info.Env().Undefined();
  if (k == 0) {
    if (!accumulate) zero(out.data, m * n);
    return info.Env().Undefined();
  }
  run(transA, transB, m, n, k, a.data, transA ? m : k, b.data, transB ? k : n, accumulate, out.data, n);
  return info.Env().Undefined();
}

// Test hook: runs the portable SGEMM even in an OpenBLAS build, with matmul's single-matrix arguments.
Napi::Value FallbackGemm(const Napi::CallbackInfo& info) {
  Args args(info, "fallbackGemm", 9);
  return testProduct(args, info, 0, [](bool tA, bool tB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool acc, float* c,
                                       i64 ldc) { fallbackSgemm(tA, tB, m, n, k, a, lda, b, ldb, acc, c, ldc); });
}

/** A library's name as MOE_GEMM and gemmWith take it; fails naming the accepted values. */
Library parseLibrary(const Args& args, const std::string& name, const char* what) {
  for (Library l : {Library::onednn, Library::openblas, Library::fallback}) {
    if (name == libraryName(l)) {
      if (!compiled(l)) args.fail(std::string(what) + " '" + name + "': this build has no " + name + " (see moe info)");
      return l;
    }
  }
  args.fail(std::string(what) + " must be onednn, openblas or fallback, got '" + name + "'");
}

// Test hook: one product on the named library whatever the shape (1-4 rows included), with matmul's
// single-matrix arguments: gemmWith(library, a, b, out, m, n, k, transA, transB, accumulate).
Napi::Value GemmWith(const Napi::CallbackInfo& info) {
  Args args(info, "gemmWith", 10);
  if (!info[0].IsString()) args.fail("library must be a string");
  Library lib = parseLibrary(args, info[0].As<Napi::String>().Utf8Value(), "library");
  return testProduct(args, info, 1, [&](bool tA, bool tB, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb, bool acc, float* c, i64 ldc) {
    if (lib == Library::openblas) checkBlasInt(args, {m, n, k});
    sgemmOn(lib, tA, tB, m, n, k, a, lda, b, ldb, acc, c, ldc);
  });
}

// setGemmLibrary(name | null): every product on that library (the binding passes MOE_GEMM), or null
// to choose per shape again.
Napi::Value SetGemmLibrary(const Napi::CallbackInfo& info) {
  Args args(info, "setGemmLibrary", 1);
  if (args.isNull(0)) {
    forced.store(-1);
  } else {
    if (!info[0].IsString()) args.fail("MOE_GEMM must be a string");
    forced.store(static_cast<int>(parseLibrary(args, info[0].As<Napi::String>().Utf8Value(), "MOE_GEMM")));
  }
  return info.Env().Undefined();
}

// setGroupedSplit(mode): how the grouped GEMMs use the pool's threads: 'auto' (groups across
// threads when many and small), 'groups' (whenever no group is too large for the split, however
// few), 'products' (never).
Napi::Value SetGroupedSplit(const Napi::CallbackInfo& info) {
  Args args(info, "setGroupedSplit", 1);
  if (!info[0].IsString()) args.fail("mode must be a string");
  const std::string m = info[0].As<Napi::String>().Utf8Value();
  if (m == "auto") groupedSplit.store(0);
  else if (m == "groups") groupedSplit.store(1);
  else if (m == "products") groupedSplit.store(2);
  else args.fail("mode must be auto, groups or products, got '" + m + "'");
  return info.Env().Undefined();
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef MOE_HAVE_OPENBLAS
  o.Set("blas", "openblas");
  o.Set("blasThreads", openblas_get_num_threads());
  const char* cfg = openblas_get_config();
  o.Set("blasConfig", cfg ? cfg : "");
#else
  o.Set("blas", "fallback");
  o.Set("blasThreads", poolThreads());
  o.Set("blasConfig", "portable blocked SGEMM");
#endif
  // Which library runs products of more than kFewM rows (one per CPU class; see chooseLibrary).
  o.Set("gemm", libraryName(chooseLibrary()));
  o.Set("gemmForced", forced.load() >= 0);
  if (dnnlCompiled()) {
    const DnnlInfo d = dnnlInfo();
    Napi::Object x = Napi::Object::New(env);
    x.Set("version", d.version);
    x.Set("isa", d.isa);
    x.Set("impl", d.impl);
    x.Set("implAnyRows", d.implAnyRows);
    x.Set("threading", d.threading);
    x.Set("threads", d.threads);
    x.Set("cachedPrimitives", static_cast<double>(d.cached));
    x.Set("createdPrimitives", static_cast<double>(d.created));
    x.Set("failures", static_cast<double>(d.failures));
    x.Set("lastError", d.lastError);
    x.Set("declined", static_cast<double>(d.declined));
    x.Set("lastDeclined", d.lastDeclined);
    o.Set("onednn", x);
  } else {
    o.Set("onednn", env.Null());
  }
  o.Set("threads", poolThreads());
  o.Set("simd", simdLevel());
  return o;
}

// setThreads(n): the pool, OpenBLAS and oneDNN's OpenMP all run n threads (the binding passes
// MOE_NATIVE_THREADS, validated; OpenBLAS caps it at its build's MAX_THREADS, which info() then reports).
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args args(info, "setThreads", 1);
  i64 n = args.integer(0, "threads");
  if (n < 1 || n > 1024) args.fail("threads must be in [1, 1024], got " + std::to_string(n));
  setPoolThreads(static_cast<int>(n));
#ifdef MOE_HAVE_OPENBLAS
  openblas_set_num_threads(static_cast<int>(n));
#endif
  dnnlSetThreads(static_cast<int>(n));
  return info.Env().Undefined();
}

// prefetchIdle(typedArray, replace): the array's bytes queued for the pool's idle workers to read
// ahead (threadpool.h); replace drops what is still queued first. The caller keeps the array alive
// (model weights); a hint, nothing is returned.
Napi::Value PrefetchIdle(const Napi::CallbackInfo& info) {
  Args args(info, "prefetchIdle", 2);
  if (!info[0].IsTypedArray()) args.fail("data must be a typed array");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const size_t bytes = ta.ByteLength();
  const bool replace = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  if (bytes > 0) prefetchIdle(static_cast<const uint8_t*>(args.dataOf(ta, "data")), bytes, replace);
  return info.Env().Undefined();
}

}  // namespace

void registerGemm(Napi::Env env, Napi::Object exports) {
  exports.Set("prefetchIdle", Napi::Function::New(env, PrefetchIdle, "prefetchIdle"));
  exports.Set("matmul", Napi::Function::New(env, Matmul, "matmul"));
  exports.Set("groupedMatmul", Napi::Function::New(env, GroupedMatmul, "groupedMatmul"));
  exports.Set("groupedMatmulWeightGrad", Napi::Function::New(env, GroupedMatmulWeightGrad, "groupedMatmulWeightGrad"));
  exports.Set("setGroupedSplit", Napi::Function::New(env, SetGroupedSplit, "setGroupedSplit"));
  exports.Set("fallbackGemm", Napi::Function::New(env, FallbackGemm, "fallbackGemm"));
  exports.Set("gemmWith", Napi::Function::New(env, GemmWith, "gemmWith"));
  registerGemmEpilogue(env, exports);
  exports.Set("setGemmLibrary", Napi::Function::New(env, SetGemmLibrary, "setGemmLibrary"));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
}

}  // namespace moe
