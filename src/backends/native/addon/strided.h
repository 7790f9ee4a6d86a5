// Multi-operand strided iteration: NumPy-style broadcast strides, dimension collapsing (so that
// same-shape, scalar and row-broadcast cases become one or two flat dimensions) and a row walker
// that can start at any row, which lets the thread pool split the outer dimensions.
#pragma once

#include <cstdint>
#include <vector>

#include "common.h"

namespace moe {

/** Strides of `shape` (left-padded with 1s to outShape's rank) with 0 on broadcast dimensions. */
inline std::vector<i64> broadcastStrides(const std::vector<i64>& shape, const std::vector<i64>& outShape) {
  size_t rank = outShape.size();
  std::vector<i64> s(rank, 0);
  i64 acc = 1;
  for (size_t i = rank; i-- > 0;) {
    i64 j = static_cast<i64>(shape.size()) - static_cast<i64>(rank) + static_cast<i64>(i);
    i64 d = j >= 0 ? shape[j] : 1;
    s[i] = d == 1 ? 0 : acc;
    acc *= d;
  }
  return s;
}

/** Checks that `shape` broadcasts to outShape; returns its element count. */
inline i64 checkBroadcast(const Args& args, const std::vector<i64>& shape, const std::vector<i64>& outShape, const char* name) {
  if (shape.size() > outShape.size()) {
    for (size_t i = 0; i < shape.size() - outShape.size(); i++) {
      if (shape[i] != 1) args.fail(std::string(name) + " has a higher rank than the output shape");
    }
  }
  i64 n = 1;
  for (size_t i = 0; i < shape.size(); i++) n = args.mul({n, shape[i]});
  for (size_t i = 0; i < outShape.size() && i < shape.size(); i++) {
    i64 d = shape[shape.size() - 1 - i], o = outShape[outShape.size() - 1 - i];
    if (d != o && d != 1) args.fail(std::string(name) + " does not broadcast to the output shape");
  }
  return n;
}

template <int K>
struct Dims {
  int rank = 0;
  i64 shape[33];
  i64 stride[K][33];
  i64 rows() const {
    i64 r = 1;
    for (int i = 0; i + 1 < rank; i++) r *= shape[i];
    return r;
  }
  i64 last() const { return rank == 0 ? 1 : shape[rank - 1]; }
  i64 total() const { return rows() * last(); }
};

/**
 * Drops size-1 dimensions and merges neighbours that are contiguous for every operand. Returns
 * false when some dimension is 0 (nothing to do). A rank-0 result means one element.
 */
template <int K>
bool collapse(const std::vector<i64>& shape, const std::vector<i64>* const strides[K], Dims<K>* out) {
  int r = 0;
  for (size_t i = 0; i < shape.size(); i++) {
    if (shape[i] == 0) return false;
    if (shape[i] == 1) continue;
    bool merge = r > 0;
    for (int k = 0; k < K && merge; k++) merge = out->stride[k][r - 1] == (*strides[k])[i] * shape[i];
    if (merge) {
      out->shape[r - 1] *= shape[i];
      for (int k = 0; k < K; k++) out->stride[k][r - 1] = (*strides[k])[i];
    } else {
      out->shape[r] = shape[i];
      for (int k = 0; k < K; k++) out->stride[k][r] = (*strides[k])[i];
      r++;
    }
  }
  out->rank = r;
  return true;
}

/** Calls f(off[K]) for rows [r0, r1) over all but the last dimension; off are element offsets. */
template <int K, typename F>
inline void walkRows(const Dims<K>& d, i64 r0, i64 r1, F&& f) {
  i64 off[K];
  for (int k = 0; k < K; k++) off[k] = 0;
  if (d.rank <= 1) {
    if (r0 < r1) f(off);
    return;
  }
  int outer = d.rank - 1;
  i64 idx[33];
  i64 rem = r0;
  for (int i = outer - 1; i >= 0; i--) {
    idx[i] = rem % d.shape[i];
    rem /= d.shape[i];
    for (int k = 0; k < K; k++) off[k] += idx[i] * d.stride[k][i];
  }
  for (i64 r = r0; r < r1; r++) {
    f(off);
    for (int i = outer - 1; i >= 0; i--) {
      idx[i]++;
      for (int k = 0; k < K; k++) off[k] += d.stride[k][i];
      if (idx[i] < d.shape[i]) break;
      for (int k = 0; k < K; k++) off[k] -= d.stride[k][i] * d.shape[i];
      idx[i] = 0;
    }
  }
}

/** Smallest and largest offsets reachable from `offset` with these strides over shape (shape non-empty). */
inline void reach(i64 offset, const std::vector<i64>& strides, const std::vector<i64>& shape, __int128* lo, __int128* hi) {
  __int128 a = offset, b = offset;
  for (size_t i = 0; i < shape.size(); i++) {
    __int128 span = static_cast<__int128>(strides[i]) * (shape[i] - 1);
    if (span < 0) a += span; else b += span;
  }
  *lo = a;
  *hi = b;
}

}  // namespace moe
