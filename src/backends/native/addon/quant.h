// The quantised block kernels of quant.cc, for other kernels that compose them (the fused decode
// experts): activation rows to Q8_0 blocks, and weight rows of Q8_0 / Q4_0 blocks against them.
#pragma once

#include <cstdint>

namespace moe {

/** Values per ggml block. */
constexpr int64_t kQuantBlock = 32;
/** Bytes of one Q8_0 activation block (f16 scale + 32 int8). */
constexpr int64_t kActBlockBytes = 34;

/** Bytes per block of a weight type code: 0 = Q8_0 (34), 1 = Q4_0 (18). */
int64_t quantWeightBlockBytes(int type);

/** One activation row of nb blocks to Q8_0 (q: nb * kActBlockBytes bytes; d: the nb scales as float). False if it holds a non-finite value. */
bool quantizeActRow(const float* x, uint8_t* q, float* d, int64_t nb);

/**
 * out[r * ldo + o] = dot(weight row o, activation row r) for o in [o0, o1), r < rows: weight rows of
 * rowBytes bytes from w, activation rows of nb blocks (xq, xd) one after another. The calling thread only.
 */
void quantRowDots(int type, const uint8_t* w, int64_t rowBytes, int64_t o0, int64_t o1, const uint8_t* xq, const float* xd, int64_t nb,
                  int64_t rows, float* out, int64_t ldo);

}  // namespace moe
