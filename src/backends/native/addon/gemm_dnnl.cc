// oneDNN's matmul primitive as an SGEMM: primitives cached by shape in a bounded LRU, the scratchpad
// owned by the calling thread, OpenMP threads following MOE_NATIVE_THREADS (Debian's oneDNN 2.6 is
// built with DNNL_CPU_RUNTIME=OMP, so its threads are libgomp's, a pool apart from ours and OpenBLAS's).
#include "gemm_dnnl.h"

#ifdef MOE_HAVE_DNNL

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "threadpool.h"

#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
extern "C" {
// From libgomp, which libdnnl links: declared here so that the addon needs no -fopenmp.
void omp_set_num_threads(int);
int omp_get_max_threads(void);
}
#endif

namespace moe {

namespace {

// A product's full description: oneDNN specialises its kernel to the dims and strides.
struct Key {
  int64_t m, n, k, lda, ldb, ldc;
  bool transA, transB, accumulate;
  // the fused epilogue (gemmEpilogue): none, with no bias, mul or rowScale, for a plain product
  EpilogueAct act = EpilogueAct::none;
  bool bias = false, mul = false, rowScale = false;
  bool operator==(const Key& o) const {
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc && transA == o.transA && transB == o.transB &&
           accumulate == o.accumulate && act == o.act && bias == o.bias && mul == o.mul && rowScale == o.rowScale;
  }
};

struct KeyHash {
  size_t operator()(const Key& x) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : {x.m, x.n, x.k, x.lda, x.ldb, x.ldc}) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
    return static_cast<size_t>(h ^ (x.transA ? 1u : 0u) ^ (x.transB ? 2u : 0u) ^ (x.accumulate ? 4u : 0u) ^ (x.bias ? 8u : 0u) ^
                               (x.mul ? 16u : 0u) ^ (x.rowScale ? 32u : 0u) ^ (static_cast<unsigned>(x.act) << 6));
  }
};

struct Entry {
  dnnl::matmul prim;
  dnnl::memory::desc a, b, c, bias, mul, rowScale;
  size_t scratch = 0;
  // oneDNN offered only its reference kernel ("ref:any"): the caller runs another path instead
  bool declined = false;
};

// Enough for every shape of a model's step (a few per layer, forward and backward); an MoE layer's
// expert groups change size every step, so beyond that an LRU evicts instead of growing forever.
constexpr size_t kCacheCapacity = 256;

std::mutex cacheMutex;
std::list<std::pair<Key, Entry>> lru;  // most recent first
std::unordered_map<Key, std::list<std::pair<Key, Entry>>::iterator, KeyHash> index;
std::atomic<int64_t> created{0}, failures{0}, declined{0};
std::string lastDeclined;  // under cacheMutex
std::atomic<int> wantThreads{0};
std::string lastError;  // under cacheMutex

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::memory::desc matrix(int64_t rows, int64_t cols, int64_t ld, bool trans) {
  // op(X) is rows x cols; stored transposed, its element (i, j) lies at j * ld + i.
  return dnnl::memory::desc({rows, cols}, dnnl::memory::data_type::f32, trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1});
}

Entry createExact(const Key& key);

Entry create(const Key& key) {
  if (key.m != DNNL_RUNTIME_DIM_VAL) return createExact(key);
  // oneDNN refuses some operands with run-time rows outright (a per-row binary post-op: "could not
  // append a binary post-op"): declined like a reference kernel, the call keys its exact rows
  try {
    return createExact(key);
  } catch (const dnnl::error&) {
    Entry e;
    e.declined = true;
    return e;
  }
}

Entry createExact(const Key& key) {
  Entry e;
  // key.m may be DNNL_RUNTIME_DIM_VAL: one primitive for every row count (see run)
  e.a = matrix(key.m, key.k, key.lda, key.transA);
  e.b = matrix(key.k, key.n, key.ldb, key.transB);
  e.c = matrix(key.m, key.n, key.ldc, false);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops po;
  if (key.accumulate) po.append_sum(1.0f);
  // post-ops run in order on the product (plus bias): activation, then the products
  const dnnl::algorithm alg[] = {dnnl::algorithm::undef, dnnl::algorithm::eltwise_relu, dnnl::algorithm::eltwise_gelu_erf,
                                 dnnl::algorithm::eltwise_gelu_tanh, dnnl::algorithm::eltwise_swish};
  if (key.act != EpilogueAct::none) po.append_eltwise(1.0f, alg[static_cast<int>(key.act)], key.act == EpilogueAct::silu ? 1.0f : 0.0f, 0.0f);
  if (key.mul) {
    e.mul = matrix(key.m, key.n, key.n, false);
    po.append_binary(dnnl::algorithm::binary_mul, e.mul);
  }
  if (key.rowScale) {
    e.rowScale = dnnl::memory::desc({key.m, 1}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, 1});
    po.append_binary(dnnl::algorithm::binary_mul, e.rowScale);
  }
  attr.set_post_ops(po);
  if (key.bias) e.bias = dnnl::memory::desc({1, key.n}, dnnl::memory::data_type::f32, dnnl::memory::dims{key.n, 1});
  dnnl::matmul::primitive_desc pd(key.bias ? dnnl::matmul::desc(e.a, e.b, e.bias, e.c) : dnnl::matmul::desc(e.a, e.b, e.c), attr, engine());
  // oneDNN falls back to its reference kernel for what its JIT kernels do not take: in 2.6 a
  // per-row binary post-op (the gates' rowScale) on AVX-512 ran the MoE layer's second expert GEMM
  // at ~2 GFLOP/s, 200x below brgemm. The reference kernel is never the fast path, so such a shape
  // is declined (cached as such, so the check costs one primitive descriptor per shape) and the
  // caller runs the product without that post-op or on another library.
  const char* impl = pd.impl_info_str();
  if (std::strncmp(impl, "ref", 3) == 0) {
    e.declined = true;
    declined.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lk(cacheMutex);
    lastDeclined = (key.m == DNNL_RUNTIME_DIM_VAL ? std::string("(any rows)") : std::to_string(key.m)) + "x" + std::to_string(key.k) + " @ " + std::to_string(key.k) + "x" + std::to_string(key.n) +
                   (key.act != EpilogueAct::none ? " +activation" : "") + (key.bias ? " +bias" : "") + (key.mul ? " +mul" : "") +
                   (key.rowScale ? " +rowScale" : "") + (key.accumulate ? " +accumulate" : "") + " (" + impl + ")";
    return e;
  }
  e.scratch = pd.scratchpad_desc().get_size();
  e.prim = dnnl::matmul(pd);
  created.fetch_add(1, std::memory_order_relaxed);
  return e;
}

/** The cached primitive for key (created on a miss; the least recently used one evicted past capacity). */
Entry lookup(const Key& key) {
  {
    std::lock_guard<std::mutex> lk(cacheMutex);
    auto it = index.find(key);
    if (it != index.end()) {
      lru.splice(lru.begin(), lru, it->second);
      return it->second->second;  // primitives are reference-counted handles: copying is cheap
    }
  }
  Entry e = create(key);  // outside the lock: creation can take ~0.1 ms
  std::lock_guard<std::mutex> lk(cacheMutex);
  if (index.find(key) == index.end()) {
    lru.emplace_front(key, e);
    index.emplace(key, lru.begin());
    if (lru.size() > kCacheCapacity) {
      index.erase(lru.back().first);
      lru.pop_back();
    }
  }
  return e;
}

void applyThreads() {
#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
  // omp_set_num_threads sets the calling thread's count only: each thread applies the setting once.
  thread_local int applied = 0;
  const int want = wantThreads.load(std::memory_order_relaxed);
  if (want > 0 && want != applied) {
    omp_set_num_threads(want);
    applied = want;
  }
#endif
}

const char* isaName(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::all: return "all";
    default: return "unknown";
  }
}

}  // namespace

bool dnnlCompiled() { return true; }

namespace {

/**
 * Every blockable signal blocked on the calling thread while oneDNN's code runs on it, restored after.
 * A signal handler that ran on top of oneDNN's JIT GEMM corrupted the heap: under node --cpu-prof
 * (V8's SIGPROF sampler, on the JS thread) 5-6 of 6-8 runs of a grouped product crashed ("corrupted
 * size vs. prev_size", "double free or corruption", segfaults), even single-threaded; with the
 * handler moved onto an alternate signal stack (sigaltstack), 0 of 16, so the damage is done by the
 * signal frame written at the interrupted stack pointer. Blocking defers delivery to the end of the
 * call (a profiler sample arrives a GEMM late); OpenMP's workers, created by libgomp inside the first
 * execute, inherit the blocked mask from this thread, so no handler runs on them either. Cost: two
 * pthread_sigmask calls per product.
 */
struct BlockSignals {
  sigset_t old;
  BlockSignals() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
  }
  ~BlockSignals() { pthread_sigmask(SIG_SETMASK, &old, nullptr); }
  BlockSignals(const BlockSignals&) = delete;
  BlockSignals& operator=(const BlockSignals&) = delete;
};

// Plain-layout products (neither operand transposed) key their primitive with a run-time row
// count: an MoE layer's expert groups change size every step (and a server's prompts every
// request), and a primitive per row count cost 0.45-0.6 ms to create (3 ms the first), ~10% of the
// 1024-row group product it served. With the rows at run time oneDNN 2.6 picks its gemm:jit kernel,
// created in 0.07 ms and as fast as brgemm or faster on these shapes (bench/gemm-libs.ts, two
// interleaved runs on 2 AVX-512 cores, GFLOP/s run-time / exact rows: 1024-row expert up 471, 448 /
// 445, 422; 64-row expert up 427, 377 / 351, 338; square 2048 459, 471 / 411, 401), but not with B
// transposed (the input gradient [4096 x 2048] @ [512 x 2048]^T: 330, 313 / 447, 437), which keeps
// exact rows, as A transposed does (weight gradients: their varying size is k). Where run-time rows
// would be a reference kernel, or oneDNN refuses them, the product keys its exact rows.
// MOE_ONEDNN_STATIC_ROWS=1 turns it off (an A/B switch).
const bool runtimeRows = [] {
  const char* v = std::getenv("MOE_ONEDNN_STATIC_ROWS");
  return !(v && std::strcmp(v, "1") == 0);
}();

/** Runs key's primitive on these buffers; the optional ones (null) only when key has no such operand. */
bool run(const Key& key, const float* a, const float* b, float* c, const float* bias, const float* mul, const float* rowScale) {
  const BlockSignals blocked;
  try {
    Entry e;
    bool anyRows = false;
    if (runtimeRows && !key.transA && !key.transB) {
      Key any = key;
      any.m = DNNL_RUNTIME_DIM_VAL;
      e = lookup(any);
      anyRows = !e.declined;
    }
    if (!anyRows) e = lookup(key);
    if (e.declined) return false;
    // the descriptors of this call's operands (the primitive leaves the rows to run time)
    if (anyRows) {
      e.a = matrix(key.m, key.k, key.lda, key.transA);
      e.c = matrix(key.m, key.n, key.ldc, false);
      if (key.mul) e.mul = matrix(key.m, key.n, key.n, false);
      if (key.rowScale) e.rowScale = dnnl::memory::desc({key.m, 1}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, 1});
    }
    // The scratchpad belongs to the calling thread: two JS threads may run products at once. Page
    // aligned, as oneDNN's own scratchpads are (a suspect of the heap corruption noted at
    // chooseLibrary; it did not remove it: 9 of 12 runs crashed with a std::vector, 3 of 12 with this).
    struct Scratch {
      unsigned char* p = nullptr;
      size_t size = 0;
      ~Scratch() { std::free(p); }
    };
    thread_local Scratch scratch;
    if (scratch.size < e.scratch) {
      const size_t want = (e.scratch + 4095) / 4096 * 4096;
      void* p = std::aligned_alloc(4096, want);
      if (!p) throw std::bad_alloc();
      std::free(scratch.p);
      scratch.p = static_cast<unsigned char*>(p);
      scratch.size = want;
    }
    applyThreads();
    parkPool();  // oneDNN runs OpenMP's threads: ours must not spin on their cores meanwhile
    dnnl::stream s(engine());
    auto mem = [](const dnnl::memory::desc& md, const float* p) { return dnnl::memory(md, engine(), const_cast<float*>(p)); };
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, mem(e.a, a)}, {DNNL_ARG_WEIGHTS, mem(e.b, b)}, {DNNL_ARG_DST, mem(e.c, c)}};
    if (e.scratch > 0) {
      args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(dnnl::memory::desc({static_cast<int64_t>(e.scratch)}, dnnl::memory::data_type::u8,
                                                                        dnnl::memory::dims{1}),
                                                     engine(), scratch.p));
    }
    if (key.bias) args.emplace(DNNL_ARG_BIAS, mem(e.bias, bias));
    // binary post-ops are numbered by their place in the chain (sum and eltwise count too)
    int idx = (key.accumulate ? 1 : 0) + (key.act != EpilogueAct::none ? 1 : 0);
    if (key.mul) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(idx++) | DNNL_ARG_SRC_1, mem(e.mul, mul));
    if (key.rowScale) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(idx++) | DNNL_ARG_SRC_1, mem(e.rowScale, rowScale));
    e.prim.execute(s, args);
    s.wait();
    return true;
  } catch (const std::exception& err) {
    failures.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lk(cacheMutex);
    lastError = err.what();
    return false;
  }
}

}  // namespace

bool dnnlSgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               bool accumulate, float* c, int64_t ldc) {
  return run(Key{m, n, k, lda, ldb, ldc, transA, transB, accumulate}, a, b, c, nullptr, nullptr, nullptr);
}

bool dnnlGemmEpilogue(bool transB, int64_t m, int64_t n, int64_t k, const float* a, const float* b, const float* bias, EpilogueAct act,
                      const float* mul, const float* rowScale, float* c) {
  Key key{m, n, k, k, transB ? k : n, n, false, transB, false};
  key.act = act;
  key.bias = bias != nullptr;
  key.mul = mul != nullptr;
  key.rowScale = rowScale != nullptr;
  return run(key, a, b, c, bias, mul, rowScale);
}

void dnnlSetThreads(int threads) { wantThreads.store(threads, std::memory_order_relaxed); }

DnnlInfo dnnlInfo() {
  DnnlInfo r;
  const dnnl_version_t* v = dnnl_version();
  r.version = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  r.isa = isaName(dnnl::get_effective_cpu_isa());
#if DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_OMP
  r.threading = "OpenMP";
  applyThreads();
  r.threads = omp_get_max_threads();
#elif DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_TBB
  r.threading = "TBB";
#elif DNNL_CPU_THREADING_RUNTIME == DNNL_RUNTIME_SEQ
  r.threading = "sequential";
  r.threads = 1;
#else
  r.threading = "threadpool";
#endif
  try {
    dnnl::memory::desc md({256, 256}, dnnl::memory::data_type::f32, dnnl::memory::dims{256, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(md, md, md), engine());
    r.impl = pd.impl_info_str();
    if (runtimeRows) {
      dnnl::memory::desc rows({DNNL_RUNTIME_DIM_VAL, 256}, dnnl::memory::data_type::f32, dnnl::memory::dims{256, 1});
      dnnl::matmul::primitive_desc any(dnnl::matmul::desc(rows, md, rows), engine());
      r.implAnyRows = any.impl_info_str();
    }
  } catch (const std::exception& err) {
    r.impl = std::string("none (") + err.what() + ")";
  }
  std::lock_guard<std::mutex> lk(cacheMutex);
  r.cached = static_cast<int64_t>(lru.size());
  r.created = created.load();
  r.failures = failures.load();
  r.lastError = lastError;
  r.declined = declined.load();
  r.lastDeclined = lastDeclined;
  return r;
}

}  // namespace moe

#else  // no oneDNN in this build

namespace moe {
bool dnnlCompiled() { return false; }
bool dnnlSgemm(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, bool, float*, int64_t) { return false; }
bool dnnlGemmEpilogue(bool, int64_t, int64_t, int64_t, const float*, const float*, const float*, EpilogueAct, const float*, const float*, float*) {
  return false;
}
void dnnlSetThreads(int) {}
DnnlInfo dnnlInfo() { return DnnlInfo{}; }
}  // namespace moe

#endif
