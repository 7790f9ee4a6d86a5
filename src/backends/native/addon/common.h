// Shared helpers for the moe-ts native addon: argument validation (every entry point checks
// types and buffer lengths before touching memory) and small numeric utilities.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

using i64 = int64_t;

// A view of a typed array argument: data pointer and element count.
template <typename T>
struct Buf {
  T* data = nullptr;
  i64 length = 0;
};

// Collects arguments of one kernel call and throws JS errors named after the kernel.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* kernel, size_t count)
      : info_(info), kernel_(kernel) {
    if (info.Length() != count) {
      fail("expected " + std::to_string(count) + " arguments, got " + std::to_string(info.Length()));
    }
  }

  // The first element's address. napi_get_typedarray_info works for arrays over a SharedArrayBuffer
  // too, where TypedArray::ArrayBuffer() fails ("Invalid argument"): worker threads hand such
  // arrays (expert staging, expert-parallel buffers) straight to the kernels.
  void* dataOf(const Napi::TypedArray& ta, const char* name) const {
    void* data = nullptr;
    if (napi_get_typedarray_info(ta.Env(), ta, nullptr, nullptr, &data, nullptr, nullptr) != napi_ok) {
      fail(std::string(name) + ": cannot read the typed array's memory");
    }
    return data;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Napi::Error::New(info_.Env(), std::string("native kernel ") + kernel_ + ": " + what);
  }

  Buf<float> f32(size_t i, const char* name) const { return typed<float>(i, name, napi_float32_array, "Float32Array"); }
  Buf<int32_t> i32(size_t i, const char* name) const { return typed<int32_t>(i, name, napi_int32_array, "Int32Array"); }
  Buf<uint16_t> u16(size_t i, const char* name) const { return typed<uint16_t>(i, name, napi_uint16_array, "Uint16Array"); }
  /** Whether argument i is a Uint16Array (f16 bit patterns), e.g. a half-precision KV cache. */
  bool isU16(size_t i) const { return info_[i].IsTypedArray() && info_[i].As<Napi::TypedArray>().TypedArrayType() == napi_uint16_array; }

  // A Float32Array or null.
  Buf<float> f32OrNull(size_t i, const char* name) const {
    if (info_[i].IsNull() || info_[i].IsUndefined()) return Buf<float>{};
    return f32(i, name);
  }
  bool isNull(size_t i) const { return info_[i].IsNull() || info_[i].IsUndefined(); }

  // Raw 4-byte element buffer (Float32Array or Int32Array), with its kind.
  Buf<uint32_t> word(size_t i, const char* name, napi_typedarray_type* kind) const {
    Napi::Value v = info_[i];
    if (!v.IsTypedArray()) fail(std::string(name) + " must be a Float32Array or Int32Array");
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    napi_typedarray_type t = ta.TypedArrayType();
    if (t != napi_float32_array && t != napi_int32_array) fail(std::string(name) + " must be a Float32Array or Int32Array");
    *kind = t;
    Buf<uint32_t> b;
    b.data = static_cast<uint32_t*>(dataOf(ta, name));
    b.length = static_cast<i64>(ta.ElementLength());
    return b;
  }

  // A non-negative integer size (exact, below 2^53).
  i64 size(size_t i, const char* name) const {
    i64 v = integer(i, name);
    if (v < 0) fail(std::string(name) + " must be >= 0, got " + std::to_string(v));
    return v;
  }
  i64 integer(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsNumber()) fail(std::string(name) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(std::fabs(d) <= 9007199254740991.0) || d != std::floor(d)) fail(std::string(name) + " must be an integer");
    return static_cast<i64>(d);
  }
  double number(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsNumber()) fail(std::string(name) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  bool boolean(size_t i, const char* name) const {
    Napi::Value v = info_[i];
    if (!v.IsBoolean()) fail(std::string(name) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  // An array of integers (shapes and strides), at most 32 entries.
  std::vector<i64> ints(size_t i, const char* name, bool nonNegative) const {
    Napi::Value v = info_[i];
    if (!v.IsArray()) fail(std::string(name) + " must be an array of integers");
    Napi::Array a = v.As<Napi::Array>();
    uint32_t n = a.Length();
    if (n > 32) fail(std::string(name) + " has rank " + std::to_string(n) + " (at most 32)");
    std::vector<i64> out(n);
    for (uint32_t j = 0; j < n; j++) {
      Napi::Value e = a[j];
      if (!e.IsNumber()) fail(std::string(name) + " must contain only numbers");
      double d = e.As<Napi::Number>().DoubleValue();
      if (!(std::fabs(d) <= 9007199254740991.0) || d != std::floor(d)) fail(std::string(name) + " must contain integers");
      if (nonNegative && d < 0) fail(std::string(name) + " must contain non-negative integers");
      out[j] = static_cast<i64>(d);
    }
    return out;
  }

  // Product of sizes, failing on overflow past 2^62.
  i64 mul(std::initializer_list<i64> xs) const {
    i64 p = 1;
    for (i64 x : xs) {
      if (__builtin_mul_overflow(p, x, &p) || p > (i64(1) << 62)) fail("size product overflows");
    }
    return p;
  }
  // Throws unless buf holds at least `need` elements.
  template <typename T>
  void need(const Buf<T>& b, i64 need, const char* name) const {
    if (b.length < need) {
      fail(std::string(name) + " has " + std::to_string(b.length) + " elements but the sizes given need " + std::to_string(need));
    }
  }

 private:
  template <typename T>
  Buf<T> typed(size_t i, const char* name, napi_typedarray_type want, const char* wantName) const {
    Napi::Value v = info_[i];
    if (!v.IsTypedArray()) fail(std::string(name) + " must be a " + wantName);
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != want) {
      if (ta.TypedArrayType() == napi_float64_array) fail(std::string(name) + " is a Float64Array; float64 runs only on the js backend");
      fail(std::string(name) + " must be a " + wantName);
    }
    Buf<T> b;
    b.data = static_cast<T*>(dataOf(ta, name));
    b.length = static_cast<i64>(ta.ElementLength());
    return b;
  }


  const Napi::CallbackInfo& info_;
  const char* kernel_;
};

// Elements below which a kernel stays on the calling thread.
constexpr i64 kParallelMin = 1 << 16;

}  // namespace moe
