// Quantised matrix products over ggml's Q8_0 / Q4_0 blocks (inference only): activations are
// quantised to Q8_0 per row exactly as the js reference does (ggml's quantize_row_q8_0_ref), then
// each output is a sum over blocks of an exact integer dot times the two block scales. The block
// dot runs as AVX-512 VNNI, AVX2 or scalar code, picked once at load time from the CPU's features
// (MOE_QUANT_SIMD=scalar|avx2|avx512vnni forces one, for tests). Output rows are split across the
// addon's thread pool.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "quant.h"
#include "threadpool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MOE_QUANT_X86 1
#endif

namespace moe {
namespace {

constexpr i64 QK = 32;

struct BlockQ8 {
  uint16_t d;
  int8_t qs[QK];
};
struct BlockQ4 {
  uint16_t d;
  uint8_t qs[QK / 2];
};
static_assert(sizeof(BlockQ8) == 34, "Q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4) == 18, "Q4_0 block is 18 bytes");

enum QuantType { kQ8_0 = 0, kQ4_0 = 1 };
constexpr i64 kBlockBytes[2] = {34, 18};

float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(frac), -24);
    return sign ? -v : v;
  }
  if (exp == 0x1f) return __builtin_bit_cast(float, sign | 0x7f800000u | (frac << 13));
  return __builtin_bit_cast(float, sign | ((exp + 112) << 23) | (frac << 13));
}

// Every f16 value as float: one lookup per weight block instead of bit surgery (256 KiB, built once).
struct HalfTable {
  float v[65536];
  HalfTable() {
    for (uint32_t h = 0; h < 65536; h++) v[h] = halfToFloat(static_cast<uint16_t>(h));
  }
};
const HalfTable& halfTable() {
  static const HalfTable t;
  return t;
}

// Round to nearest even, as F16C's _cvtss_sh and the js floatToHalf.
uint16_t floatToHalf(float f) {
  uint32_t b = __builtin_bit_cast(uint32_t, f);
  uint32_t sign = (b >> 16) & 0x8000, exp = (b >> 23) & 0xff, mant = b & 0x7fffff;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
  int e = static_cast<int>(exp) - 112;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00);
  if (e <= 0) {
    int s = 126 - static_cast<int>(exp);
    if (s > 24) return static_cast<uint16_t>(sign);
    uint32_t m = mant | 0x800000, h = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13), rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
  return static_cast<uint16_t>(h);
}

// ggml's quantize_row_q8_0_ref; the block scale is also kept as float for the dot loops. Returns
// false when the row holds a non-finite value (its blocks are then meaningless).
bool quantizeRowQ8(const float* x, BlockQ8* y, float* ds, i64 nb) {
  bool finite = true;
  for (i64 b = 0; b < nb; b++) {
    const float* xb = x + b * QK;
    float amax = 0.0f;
    for (i64 j = 0; j < QK; j++) {
      const float a = std::fabs(xb[j]);
      finite = finite && a <= 3.40282347e38f;
      amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = floatToHalf(d);
    ds[b] = halfTable().v[y[b].d];
    for (i64 j = 0; j < QK; j++) {
      const float v = xb[j] * id;
      y[b].qs[j] = finite ? static_cast<int8_t>(std::roundf(v)) : 0;
    }
  }
  return finite;
}


// Scalar: the js reference's order exactly (float32, block by block), so it matches bit for bit.
template <int T>
float dotScalar(const uint8_t* w, const BlockQ8* x, const float* dx, i64 nb) {
  const float* half = halfTable().v;
  float acc = 0.0f;
  for (i64 b = 0; b < nb; b++) {
    int32_t sumi = 0;
    uint16_t dw;
    if (T == kQ8_0) {
      const BlockQ8* wb = reinterpret_cast<const BlockQ8*>(w) + b;
      std::memcpy(&dw, &wb->d, 2);
      for (i64 j = 0; j < QK; j++) sumi += static_cast<int32_t>(wb->qs[j]) * x[b].qs[j];
    } else {
      const BlockQ4* wb = reinterpret_cast<const BlockQ4*>(w) + b;
      std::memcpy(&dw, &wb->d, 2);
      for (i64 j = 0; j < QK / 2; j++) {
        sumi += (static_cast<int32_t>(wb->qs[j] & 0x0f) - 8) * x[b].qs[j] + (static_cast<int32_t>(wb->qs[j] >> 4) - 8) * x[b].qs[j + QK / 2];
      }
    }
    acc += static_cast<float>(sumi) * (half[dw] * dx[b]);
  }
  return acc;
}

// Weight rows [o0, o1) against R activation rows (R = index + 1), out[r * ldo + o].
using RowDotsFn = void (*)(const uint8_t* w, i64 rowBytes, i64 o0, i64 o1, const BlockQ8* x, const float* dx, i64 nb, float* out, i64 ldo);

struct Kernels {
  bool (*quantizeRow)(const float* x, BlockQ8* y, float* ds, i64 nb);  // activations to Q8_0
  RowDotsFn rows[2][4];  // [type][R - 1]: weight rows against R activation rows
};

// The scalar build's few-row kernel: one output at a time, in the js reference's order.
template <int T, int R>
void rowDotsScalar(const uint8_t* w, i64 rowBytes, i64 o0, i64 o1, const BlockQ8* x, const float* dx, i64 nb, float* out, i64 ldo) {
  for (i64 o = o0; o < o1; o++)
    for (int r = 0; r < R; r++) out[r * ldo + o] = dotScalar<T>(w + o * rowBytes, x + r * nb, dx + r * nb, nb);
}

#ifdef MOE_QUANT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define MOE_QUANT_VNNI 0
#include "quant_simd.inc"
#undef MOE_QUANT_VNNI
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")
namespace vnni {
#define MOE_QUANT_VNNI 1
#include "quant_simd.inc"
#undef MOE_QUANT_VNNI
}  // namespace vnni
#pragma GCC pop_options
#endif

struct Simd {
  const char* name;
  const Kernels* k;
};

Simd pickSimd() {
  static const Kernels scalarKernels = {quantizeRowQ8,
                                               {{rowDotsScalar<kQ8_0, 1>, rowDotsScalar<kQ8_0, 2>, rowDotsScalar<kQ8_0, 3>, rowDotsScalar<kQ8_0, 4>},
                                                {rowDotsScalar<kQ4_0, 1>, rowDotsScalar<kQ4_0, 2>, rowDotsScalar<kQ4_0, 3>, rowDotsScalar<kQ4_0, 4>}}};
  Simd scalar{"scalar", &scalarKernels};
#ifdef MOE_QUANT_X86
  __builtin_cpu_init();
  const bool hasVnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  const bool hasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  Simd a2{"avx2", &avx2::kernels};
  Simd v{"avx512vnni", &vnni::kernels};
  const char* force = std::getenv("MOE_QUANT_SIMD");
  if (force && *force) {
    std::string f(force);
    // A forced variant the CPU lacks would crash with SIGILL: fall back to the best available.
    if (f == "scalar") return scalar;
    if (f == "avx2" && hasAvx2) return a2;
    if (f == "avx512vnni" && hasVnni) return v;
  }
  if (hasVnni) return v;
  if (hasAvx2) return a2;
#endif
  return scalar;
}

const Simd& simd() {
  static const Simd s = pickSimd();
  return s;
}

Buf<uint8_t> bytesArg(const Args& args, const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) args.fail(std::string(name) + " must be a Uint8Array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  Buf<uint8_t> b;
  b.data = static_cast<uint8_t*>(args.dataOf(ta, name));
  b.length = static_cast<i64>(ta.ElementLength());
  return b;
}

int typeArg(const Args& args, size_t i) {
  i64 t = args.integer(i, "type");
  if (t != kQ8_0 && t != kQ4_0) args.fail("type code " + std::to_string(t) + " is neither Q8_0 (0) nor Q4_0 (1)");
  return static_cast<int>(t);
}

void checkK(const Args& args, i64 k) {
  if (k % QK != 0) args.fail("in = " + std::to_string(k) + " is not a multiple of 32; ggml's block formats need whole blocks per row");
}

// One job: rows of x (already quantised) against one weight matrix [n, nb blocks].
struct Job {
  const BlockQ8* xq;  // [rows, nb]
  const float* xd;    // [rows, nb]
  const uint8_t* w;   // n rows of rowBytes
  float* out;         // [rows, n]
  i64 rows, n, nb, rowBytes;
};

// Weight rows [lo, hi) of one job, through the few-row kernel (each weight row read once, front to
// back, against up to 4 activation rows). More activation rows: weight rows in tiles of 16 (17 KiB
// of Q8_0 at in = 1024, held in L1), every group of 4 activation rows against a tile while it is
// hot, each weight block's sign and scale serving 4 rows. It replaced four weight rows against one
// activation row (dot4): 1024 x 1024 Q8_0, 8 rows 279 -> 187 us, 16 rows 505 -> 393 us. With up to
// 4 rows (decode) the tiles just cut one sequential pass over the weights into 16-row calls.
void runRows(const Job& j, const Kernels& kn, int type, i64 lo, i64 hi) {
  constexpr i64 kTile = 16;
  for (i64 o0 = lo; o0 < hi; o0 += kTile) {
    const i64 o1 = std::min(hi, o0 + kTile);
    for (i64 r0 = 0; r0 < j.rows; r0 += 4) {
      const i64 R = std::min<i64>(4, j.rows - r0);
      kn.rows[type][R - 1](j.w, j.rowBytes, o0, o1, j.xq + r0 * j.nb, j.xd + r0 * j.nb, j.nb, j.out + r0 * j.n, j.n);
    }
  }
}

void quantizeActivations(const Args& args, const float* x, i64 t, i64 k, std::vector<BlockQ8>& xq, std::vector<float>& xd) {
  const i64 nb = k / QK;
  xq.resize(static_cast<size_t>(t * nb));
  xd.resize(static_cast<size_t>(t * nb));
  BlockQ8* q = xq.data();
  float* d = xd.data();
  std::atomic<i64> badRow{-1};
  const auto quantizeRow = simd().k->quantizeRow;
  parallelFor(t, std::max<i64>(1, 65536 / std::max<i64>(k, 1)), [&](i64 lo, i64 hi) {
    for (i64 r = lo; r < hi; r++) {
      if (!quantizeRow(x + r * k, q + r * nb, d + r * nb, nb)) badRow.store(r);
    }
  });
  if (badRow.load() >= 0) args.fail("x row " + std::to_string(badRow.load()) + " holds a non-finite value, which cannot be quantised");
}

// quantMatmul(x, w, out, t, n, k, type)
Napi::Value QuantMatmul(const Napi::CallbackInfo& info) {
  Args args(info, "quantMatmul", 7);
  Buf<float> x = args.f32(0, "x");
  Buf<uint8_t> w = bytesArg(args, info, 1, "w");
  Buf<float> out = args.f32(2, "out");
  i64 t = args.size(3, "t"), n = args.size(4, "n"), k = args.size(5, "k");
  int type = typeArg(args, 6);
  checkK(args, k);
  const i64 nb = k / QK, rowBytes = nb * kBlockBytes[type];
  args.need(x, args.mul({t, k}), "x");
  args.need(w, args.mul({n, rowBytes}), "w");
  args.need(out, args.mul({t, n}), "out");
  if (t == 0 || n == 0) return info.Env().Undefined();
  std::vector<BlockQ8> xq;
  std::vector<float> xd;
  quantizeActivations(args, x.data, t, k, xq, xd);
  Job job{xq.data(), xd.data(), w.data, out.data, t, n, nb, rowBytes};
  const Kernels& kn = *simd().k;
  parallelFor(n, std::max<i64>(1, 32768 / std::max<i64>(t * k, 1)), [&](i64 lo, i64 hi) { runRows(job, kn, type, lo, hi); });
  return info.Env().Undefined();
}

// quantGroupedMatmul(x, w, groupSizes, out, n, k, type): group g of x's rows times W[g].
Napi::Value QuantGroupedMatmul(const Napi::CallbackInfo& info) {
  Args args(info, "quantGroupedMatmul", 7);
  Buf<float> x = args.f32(0, "x");
  Buf<uint8_t> w = bytesArg(args, info, 1, "w");
  Buf<int32_t> groups = args.i32(2, "groupSizes");
  Buf<float> out = args.f32(3, "out");
  i64 n = args.size(4, "n"), k = args.size(5, "k");
  int type = typeArg(args, 6);
  checkK(args, k);
  const i64 g = groups.length, nb = k / QK, rowBytes = nb * kBlockBytes[type], matBytes = args.mul({n, rowBytes});
  i64 t = 0;
  for (i64 i = 0; i < g; i++) {
    if (groups.data[i] < 0) args.fail("groupSizes[" + std::to_string(i) + "] is negative");
    t += groups.data[i];
  }
  args.need(x, args.mul({t, k}), "x");
  args.need(w, args.mul({g, matBytes}), "w");
  args.need(out, args.mul({t, n}), "out");
  if (t == 0 || n == 0) return info.Env().Undefined();
  std::vector<BlockQ8> xq;
  std::vector<float> xd;
  quantizeActivations(args, x.data, t, k, xq, xd);
  // One flat range over (non-empty group, output row), so that decoding (one row in each of k
  // groups) still spreads across every thread.
  std::vector<Job> jobs;
  i64 row = 0;
  for (i64 i = 0; i < g; i++) {
    const i64 rows = groups.data[i];
    if (rows > 0) jobs.push_back(Job{xq.data() + row * nb, xd.data() + row * nb, w.data + i * matBytes, out.data + row * n, rows, n, nb, rowBytes});
    row += rows;
  }
  const Kernels& kn = *simd().k;
  const i64 total = static_cast<i64>(jobs.size()) * n;
  parallelFor(total, std::max<i64>(1, 32768 / std::max<i64>(k * std::max<i64>(1, t / static_cast<i64>(jobs.size())), 1)),
              [&](i64 lo, i64 hi) {
                while (lo < hi) {
                  const i64 ji = lo / n, o = lo % n, end = std::min(hi, (ji + 1) * n);
                  runRows(jobs[static_cast<size_t>(ji)], kn, type, o, o + (end - lo));
                  lo = end;
                }
              });
  return info.Env().Undefined();
}

Napi::Value QuantSimd(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), simd().name); }

}  // namespace

i64 quantWeightBlockBytes(int type) { return kBlockBytes[type]; }

bool quantizeActRow(const float* x, uint8_t* q, float* d, i64 nb) {
  static_assert(sizeof(BlockQ8) == kActBlockBytes, "activation blocks are Q8_0 blocks");
  return simd().k->quantizeRow(x, reinterpret_cast<BlockQ8*>(q), d, nb);
}

void quantRowDots(int type, const uint8_t* w, i64 rowBytes, i64 o0, i64 o1, const uint8_t* xq, const float* xd, i64 nb, i64 rows, float* out,
                  i64 ldo) {
  runRows(Job{reinterpret_cast<const BlockQ8*>(xq), xd, w, out, rows, ldo, nb, rowBytes}, *simd().k, type, o0, o1);
}

void registerQuant(Napi::Env env, Napi::Object exports) {
  exports.Set("quantMatmul", Napi::Function::New(env, QuantMatmul, "quantMatmul"));
  exports.Set("quantGroupedMatmul", Napi::Function::New(env, QuantGroupedMatmul, "quantGroupedMatmul"));
  exports.Set("quantSimd", Napi::Function::New(env, QuantSimd, "quantSimd"));
}

}  // namespace moe
