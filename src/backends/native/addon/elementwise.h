// Row functions of elementwise.cc that other kernel files reuse (the grouped GEMM's epilogue), so
// that a fused pass computes each element exactly as the standalone kernel does.
#pragma once

#include <cstdint>

namespace moe {

/** y[0..n) = op(x[0..n)) with the unary kernel's op codes (src/backends/native/index.ts UNARY_CODE); x == y allowed. */
void unaryRow(int op, const float* x, float* y, int64_t n);

/** The number of unary op codes (valid codes are 0 .. unaryOpCount() - 1). */
int unaryOpCount();

}  // namespace moe
