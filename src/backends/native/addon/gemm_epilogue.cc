// GEMMs with an epilogue, out = act(A @ op(B) + bias) * mul * rowScale: the expert FFN's first GEMM
// with its activation (GELU; SiLU times the up projection for SwiGLU) and its second with the gate
// scaling. gemmEpilogue: one product, fused in oneDNN's matmul post-ops or unfused (sgemm, then one
// pass over C). groupedMatmulEpilogue: the MoE layer's grouped expert GEMM with bias, activation and
// gate scaling applied to each group right after its product, while the group's rows are still in
// cache (a 64-row group's [64, 2048] output is 512 KiB; the unfused layer made three more passes
// over the whole [rows, d_ff] hidden), and fused in oneDNN where it runs the products.
#include <cstdlib>
#include <cstring>
#include <string>

#include "common.h"
#include "elementwise.h"
#include "gemm_dnnl.h"
#include "gemm_epilogue.h"
#include "sgemm.h"
#include "threadpool.h"

namespace moe {

namespace {

/** The unary op code (elementwise.h) of an epilogue activation; -1 for none. */
int unaryCodeOf(EpilogueAct act) {
  switch (act) {
    case EpilogueAct::relu: return 9;
    case EpilogueAct::gelu: return 10;
    case EpilogueAct::geluTanh: return 11;
    case EpilogueAct::silu: return 12;
    default: return -1;
  }
}

/**
 * Rows [r0, r1) of an epilogue, on the calling thread: c += bias (in place: a kept pre-activation
 * keeps the bias), out = op(c) (op -1: a copy when out is not c), out *= mul (elementwise, [rows, n]),
 * out *= rowScale[r]. Each step is the standalone kernel's arithmetic (binary add, unary, binary
 * mul), so fused and separate passes give the same bits.
 */
void epilogueRows(i64 r0, i64 r1, i64 n, float* c, float* out, const float* bias, int op, const float* mul, const float* rowScale) {
  for (i64 r = r0; r < r1; r++) {
    float* src = c + r * n;
    float* dst = out + r * n;
    if (bias) for (i64 j = 0; j < n; j++) src[j] = src[j] + bias[j];
    if (op >= 0) unaryRow(op, src, dst, n);
    else if (dst != src) std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
    if (mul) {
      const float* m = mul + r * n;
      for (i64 j = 0; j < n; j++) dst[j] = dst[j] * m[j];
    }
    if (rowScale) {
      const float s = rowScale[r];
      for (i64 j = 0; j < n; j++) dst[j] = dst[j] * s;
    }
  }
}

/** epilogueRows split across the pool. */
void groupEpilogue(i64 r0, i64 r1, i64 n, float* c, float* out, const float* bias, int op, const float* mul, const float* rowScale) {
  parallelFor(r1 - r0, std::max<i64>(1, 16384 / std::max<i64>(n, 1)), [=](i64 lo, i64 hi) {
    epilogueRows(r0 + lo, r0 + hi, n, c, out, bias, op, mul, rowScale);
  });
}

/**
 * The epilogue of consecutive groups [g0, g1) whose rows start at r0, in one pass on the pool:
 * each row gets its own group's bias (bias [G, n], or null).
 */
void groupsEpilogue(const int32_t* sizes, i64 g0, i64 g1, i64 r0, i64 n, float* c, float* out, const float* bias, int op, const float* rowScale) {
  i64 rows = 0;
  for (i64 g = g0; g < g1; g++) rows += sizes[g];
  parallelFor(rows, std::max<i64>(1, 16384 / std::max<i64>(n, 1)), [=](i64 lo, i64 hi) {
    // the group holding row r0 + lo, then run by run to r0 + hi (empty groups are stepped over)
    i64 g = g0, start = r0;
    while (g < g1 && start + sizes[g] <= r0 + lo) start += sizes[g++];
    for (i64 r = r0 + lo; r < r0 + hi; g++) {
      const i64 end = std::min<i64>(start + sizes[g], r0 + hi);
      epilogueRows(r, end, n, c, out, bias ? bias + g * n : nullptr, op, nullptr, rowScale);
      r = end;
      start += sizes[g];
    }
  });
}

/**
 * Rows whose epilogue waits for the pool until this many have been multiplied (groups that oneDNN or
 * OpenBLAS multiply and whose epilogue runs on the pool: a kept pre-activation, or post-ops the
 * library cannot take). Each hand-off between the library's threads and the pool's costs ~0.1-0.2 ms
 * of wake-ups on 2 cores: at E = 128 (groups of ~64 rows) the up projection with its
 * pre-activation kept took 77-89 ms in the layer with a pass per group, 65-75 batched (4
 * interleaved process pairs, 2 AVX-512 cores; E = 32 unchanged, 62-74 against 57-75); 512 rows of
 * a 2048-wide hidden (4 MiB) still sit in the last-level cache when the pass comes.
 */
constexpr i64 kEpilogueBatchRows = 512;

/** kEpilogueBatchRows, or MOE_EPILOGUE_BATCH_ROWS (an A/B switch; 1: a pass per group). */
i64 epilogueBatchRows() {
  static const i64 rows = [] {
    const char* e = std::getenv("MOE_EPILOGUE_BATCH_ROWS");
    const long long v = e && *e ? std::atoll(e) : 0;
    return v > 0 ? static_cast<i64>(v) : kEpilogueBatchRows;
  }();
  return rows;
}

// gemmEpilogue(fused, a, b, bias | null, act, mul | null, rowScale | null, out, m, n, k, transB):
// fused runs oneDNN's post-ops (an error in a build without oneDNN), else sgemm() then one pass.
Napi::Value GemmEpilogue(const Napi::CallbackInfo& info) {
  Args args(info, "gemmEpilogue", 12);
  const bool fused = args.boolean(0, "fused");
  Buf<float> a = args.f32(1, "a"), b = args.f32(2, "b"), bias = args.f32OrNull(3, "bias");
  const i64 actCode = args.integer(4, "act");
  Buf<float> mul = args.f32OrNull(5, "mul"), rowScale = args.f32OrNull(6, "rowScale"), out = args.f32(7, "out");
  const i64 m = args.size(8, "m"), n = args.size(9, "n"), k = args.size(10, "k");
  const bool transB = args.boolean(11, "transB");
  if (actCode < 0 || actCode > static_cast<i64>(EpilogueAct::silu)) args.fail("act must be 0 (none) to 4 (silu), got " + std::to_string(actCode));
  const EpilogueAct act = static_cast<EpilogueAct>(actCode);
  args.need(a, args.mul({m, k}), "a");
  args.need(b, args.mul({k, n}), "b");
  args.need(out, args.mul({m, n}), "out");
  if (bias.data) args.need(bias, n, "bias");
  if (mul.data) args.need(mul, args.mul({m, n}), "mul");
  if (rowScale.data) args.need(rowScale, m, "rowScale");
  if (fused && !dnnlCompiled()) args.fail("fused epilogues need oneDNN, which this build does not have (see moe info)");
  if (m == 0 || n == 0) return info.Env().Undefined();
  if (k > 0 && fused && dnnlGemmEpilogue(transB, m, n, k, a.data, b.data, bias.data, act, mul.data, rowScale.data, out.data)) {
    return info.Env().Undefined();
  }
  // unfused (or oneDNN failed on this call: counted in moe info): the product, then the epilogue
  if (k == 0) std::memset(out.data, 0, sizeof(float) * static_cast<size_t>(m * n));
  else sgemm(false, transB, m, n, k, a.data, k, b.data, transB ? k : n, false, out.data, n);
  groupEpilogue(0, m, n, out.data, out.data, bias.data, unaryCodeOf(act), mul.data, rowScale.data);
  return info.Env().Undefined();
}


/** The oneDNN post-op for a unary op code (elementwise.h), or false where oneDNN has none here. */
bool dnnlActFor(int op, EpilogueAct* act) {
  switch (op) {
    case -1: *act = EpilogueAct::none; return true;
    case 9: *act = EpilogueAct::relu; return true;
    case 10: *act = EpilogueAct::gelu; return true;
    case 11: *act = EpilogueAct::geluTanh; return true;
    case 12: *act = EpilogueAct::silu; return true;
    default: return false;
  }
}

}  // namespace

void groupedProductsWithEpilogue(const float* x, const float* w, const int32_t* sizes, i64 groups, i64 t, float* out, i64 k, i64 n, bool transW,
                                 const float* bias, int unary, const float* rowScale, float* pre) {
  if (t == 0 || n == 0) return;
  float* c = pre ? pre : out;
  // nothing to apply: a plain grouped product (groupedMatmul), no pass over c
  const bool none = !bias && unary < 0 && !rowScale && !pre;
  // one hand-off for a decode step's small groups, then one for the epilogue of all of them
  if (k == 0 || groupedFewRows(x, w, sizes, groups, c, k, n, transW)) {
    if (k == 0) std::memset(c, 0, sizeof(float) * static_cast<size_t>(t * n));
    if (!none) groupsEpilogue(sizes, 0, groups, 0, n, c, out, bias, unary, rowScale);
    return;
  }
  // many small groups: whole groups per thread, each product followed by its epilogue on that thread
  auto one = [=](i64 g, i64 r0) {
    const i64 rows = sizes[g];
    groupProduct(transW, rows, n, k, x + r0 * k, w + g * k * n, c + r0 * n, false);
    if (!none) epilogueRows(r0, r0 + rows, n, c, out, bias ? bias + g * n : nullptr, unary, nullptr, rowScale);
  };
  if (forGroupsAcrossThreads(sizes, groups, one)) return;
  // oneDNN's post-ops when it runs the products, there is an epilogue and no pre-activation to keep
  EpilogueAct dnnlAct = EpilogueAct::none;
  const bool fuse = !none && !pre && sgemmOnOnednn() && dnnlActFor(unary, &dnnlAct);
  const i64 portableMaxRows = groupPortableMaxRows();
  // groups multiplied into c whose epilogue has not run yet: [pendingGroup, g), their rows
  // [pendingRow, row) (empty groups among them are stepped over by groupsEpilogue)
  i64 pendingGroup = 0, pendingRow = 0;
  const i64 batchRows = epilogueBatchRows();
  auto flush = [&](i64 gEnd, i64 rowEnd) {
    if (rowEnd > pendingRow) groupsEpilogue(sizes, pendingGroup, gEnd, pendingRow, n, c, out, bias, unary, rowScale);
    pendingGroup = gEnd;
    pendingRow = rowEnd;
  };
  i64 row = 0;
  for (i64 g = 0; g < groups; g++) {
    const i64 rows = sizes[g];
    if (rows == 0) continue;
    const float* xg = x + row * k;
    const float* wg = w + g * k * n;
    const float* bg = bias ? bias + g * n : nullptr;
    const float* sg = rowScale ? rowScale + row : nullptr;
    // oneDNN runs the product with bias and activation as post-ops; the gates scale the rows on
    // this thread while they are in cache. oneDNN 2.6's JIT kernels take no per-row post-op (asked
    // for one, it offers only its reference kernel, ~2 GFLOP/s, which gemm_dnnl.cc declines), and
    // as a pool job between two oneDNN products the scaling cost ~1 ms per group in hand-offs
    // (the pool's threads wake while OpenMP's spin): E = 8's down projection took 45.8-47.3 ms
    // against 38.6-39.4 without the gates; on this thread 41.9-45.1 against 41.5-43.6 (a scratch
    // probe, 8 groups of ~1024 rows, 2 AVX-512 cores).
    bool done = false;
    if (fuse && rows > portableMaxRows) {
      if (bg || dnnlAct != EpilogueAct::none) {
        done = dnnlGemmEpilogue(transW, rows, n, k, xg, wg, bg, dnnlAct, nullptr, nullptr, out + row * n);
      } else {  // the gates alone
        groupProduct(transW, rows, n, k, xg, wg, out + row * n, true);
        done = true;
      }
      if (done && sg) epilogueRows(row, row + rows, n, out, out, nullptr, -1, nullptr, rowScale);
    }
    if (done) {
      // finished here: the pending run before it goes first, the next one starts after it
      flush(g, row);
      row += rows;
      pendingGroup = g + 1;
      pendingRow = row;
      continue;
    }
    groupProduct(transW, rows, n, k, xg, wg, c + row * n, true);
    row += rows;
    if (none) {
      pendingGroup = g + 1;
      pendingRow = row;
    } else if (row - pendingRow >= batchRows) {
      flush(g + 1, row);
    }
  }
  flush(groups, row);
}

namespace {

// groupedMatmulEpilogue(x, w, groupSizes, out, k, n, transW, bias | null, op, rowScale | null,
// pre | null): groupedMatmul (group g of x's rows times w[g]: k x n, or n x k when transW) whose
// group g gets c = product + bias[g] (bias [G, n]); pre (when given) receives c, the pre-activation
// that backward keeps; out = unary_op(c) * rowScale[row] (op -1: no activation; rowScale [T]).
Napi::Value GroupedMatmulEpilogue(const Napi::CallbackInfo& info) {
  Args args(info, "groupedMatmulEpilogue", 11);
  Buf<float> x = args.f32(0, "x"), w = args.f32(1, "w");
  Buf<int32_t> sizes = args.i32(2, "groupSizes");
  Buf<float> out = args.f32(3, "out");
  const i64 k = args.size(4, "k"), n = args.size(5, "n");
  const bool transW = args.boolean(6, "transW");
  Buf<float> bias = args.f32OrNull(7, "bias");
  const i64 op = args.integer(8, "op");
  Buf<float> rowScale = args.f32OrNull(9, "rowScale"), pre = args.f32OrNull(10, "pre");
  if (op < -1 || op >= unaryOpCount()) args.fail("op must be -1 (none) or a unary op code below " + std::to_string(unaryOpCount()) + ", got " + std::to_string(op));
  const i64 groups = sizes.length;
  i64 t = 0;
  for (i64 g = 0; g < groups; g++) {
    if (sizes.data[g] < 0) args.fail("groupSizes[" + std::to_string(g) + "] = " + std::to_string(sizes.data[g]) + " is negative");
    t += sizes.data[g];
  }
  args.need(x, args.mul({t, k}), "x");
  args.need(out, args.mul({t, n}), "out");
  args.need(w, args.mul({groups, k, n}), "w");
  if (bias.data) args.need(bias, args.mul({groups, n}), "bias");
  if (rowScale.data) args.need(rowScale, t, "rowScale");
  if (pre.data) {
    args.need(pre, args.mul({t, n}), "pre");
    if (pre.data == out.data) args.fail("pre and out must be different buffers");
  }
  if (k > 2147483647 || n > 2147483647) args.fail("a matrix dimension exceeds 2^31 - 1, which BLAS cannot take");
  if (t == 0 || n == 0) return info.Env().Undefined();
  groupedProductsWithEpilogue(x.data, w.data, sizes.data, groups, t, out.data, k, n, transW, bias.data, static_cast<int>(op), rowScale.data,
                              pre.data);
  return info.Env().Undefined();
}

}  // namespace

void registerGemmEpilogue(Napi::Env env, Napi::Object exports) {
  exports.Set("gemmEpilogue", Napi::Function::New(env, GemmEpilogue, "gemmEpilogue"));
  exports.Set("groupedMatmulEpilogue", Napi::Function::New(env, GroupedMatmulEpilogue, "groupedMatmulEpilogue"));
}

}  // namespace moe
