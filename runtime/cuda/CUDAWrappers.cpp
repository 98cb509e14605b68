//===- CUDAWrappers.cpp - The mgpu* functions on the CUDA driver API ------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The `mgpu*` functions that MLIR's gpu-to-llvm lowering and the offloading
// translation of `gpu.binary` call (the ABI of MLIR's CudaRuntimeWrappers),
// plus the device side of `moe-compile --target=cuda` libraries
// (moe/runtime/cuda.h). The driver API is loaded with dlopen at the first
// use; its types and the few constants used are declared here, so neither
// cuda.h nor libcuda is needed to build or link. Errors never abort: they are
// recorded per thread and surfaced by the runtime (docs/CUDA.md).
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/cuda.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace {

//===----------------------------------------------------------------------===//
// The subset of the driver API in use
//===----------------------------------------------------------------------===//

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
struct CUevent_st;
struct CUmemPoolHandle_st;
using CUcontext = CUctx_st *;
using CUmodule = CUmod_st *;
using CUfunction = CUfunc_st *;
using CUstream = CUstream_st *;
using CUevent = CUevent_st *;
using CUmemoryPool = CUmemPoolHandle_st *;

constexpr CUresult kSuccess = 0;
constexpr unsigned kStreamNonBlocking = 0x1;
constexpr unsigned kEventDisableTiming = 0x2;
constexpr unsigned kMemAttachGlobal = 0x1;
constexpr int kJitErrorLogBuffer = 5;
constexpr int kJitErrorLogBufferSizeBytes = 6;
constexpr int kJitOptimizationLevel = 7;
constexpr int kPointerAttributeMemoryType = 2;
constexpr int kPointerAttributeDeviceOrdinal = 9;
/// CUmemorytype: what a pointer query answers and what a 2D copy's sides are.
constexpr unsigned kMemoryTypeHost = 0x1, kMemoryTypeDevice = 0x2;
constexpr int kMemPoolAttrReleaseThreshold = 4;

template <typename T> using Identity = T;

/// CUDA_MEMCPY2D (cuda.h): a strided copy of `Height` rows of `WidthInBytes`.
struct Memcpy2D {
  size_t srcXInBytes, srcY;
  unsigned srcMemoryType;
  const void *srcHost;
  CUdeviceptr srcDevice;
  void *srcArray;
  size_t srcPitch;
  size_t dstXInBytes, dstY;
  unsigned dstMemoryType;
  void *dstHost;
  CUdeviceptr dstDevice;
  void *dstArray;
  size_t dstPitch;
  size_t WidthInBytes, Height;
};

/// The driver entry points, by their exported (versioned) names.
struct Driver {
#define MOE_CUDA_FUNCTIONS(X)                                                  \
  X(cuInit, CUresult (*)(unsigned))                                            \
  X(cuGetErrorName, CUresult (*)(CUresult, const char **))                     \
  X(cuGetErrorString, CUresult (*)(CUresult, const char **))                   \
  X(cuDeviceGetCount, CUresult (*)(int *))                                     \
  X(cuDeviceGet, CUresult (*)(CUdevice *, int))                                \
  X(cuDevicePrimaryCtxRetain, CUresult (*)(CUcontext *, CUdevice))             \
  X(cuCtxPushCurrent_v2, CUresult (*)(CUcontext))                              \
  X(cuCtxPopCurrent_v2, CUresult (*)(CUcontext *))                             \
  X(cuModuleLoadData, CUresult (*)(CUmodule *, const void *))                  \
  X(cuModuleLoadDataEx,                                                        \
    CUresult (*)(CUmodule *, const void *, unsigned, int *, void **))          \
  X(cuModuleUnload, CUresult (*)(CUmodule))                                    \
  X(cuModuleGetFunction, CUresult (*)(CUfunction *, CUmodule, const char *))   \
  X(cuLaunchKernel,                                                            \
    CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, \
                 unsigned, unsigned, CUstream, void **, void **))              \
  X(cuStreamCreate, CUresult (*)(CUstream *, unsigned))                        \
  X(cuStreamDestroy_v2, CUresult (*)(CUstream))                                \
  X(cuStreamSynchronize, CUresult (*)(CUstream))                               \
  X(cuStreamWaitEvent, CUresult (*)(CUstream, CUevent, unsigned))              \
  X(cuEventCreate, CUresult (*)(CUevent *, unsigned))                          \
  X(cuEventDestroy_v2, CUresult (*)(CUevent))                                  \
  X(cuEventSynchronize, CUresult (*)(CUevent))                                 \
  X(cuEventRecord, CUresult (*)(CUevent, CUstream))                            \
  X(cuMemAlloc_v2, CUresult (*)(CUdeviceptr *, size_t))                        \
  X(cuMemAllocManaged, CUresult (*)(CUdeviceptr *, size_t, unsigned))          \
  X(cuMemFree_v2, CUresult (*)(CUdeviceptr))                                   \
  X(cuMemHostAlloc, CUresult (*)(void **, size_t, unsigned))                   \
  X(cuMemFreeHost, CUresult (*)(void *))                                       \
  X(cuMemcpyAsync, CUresult (*)(CUdeviceptr, CUdeviceptr, size_t, CUstream))   \
  X(cuMemcpyHtoDAsync_v2,                                                      \
    CUresult (*)(CUdeviceptr, const void *, size_t, CUstream))                 \
  X(cuMemsetD32Async, CUresult (*)(CUdeviceptr, unsigned, size_t, CUstream))   \
  X(cuMemsetD16Async,                                                          \
    CUresult (*)(CUdeviceptr, unsigned short, size_t, CUstream))               \
  X(cuPointerGetAttribute, CUresult (*)(void *, int, CUdeviceptr))
/// Functions used when the driver has them (stream-ordered allocation, event
/// timing); a driver without them still runs models.
#define MOE_CUDA_OPTIONAL_FUNCTIONS(X)                                         \
  X(cuMemAllocAsync, CUresult (*)(CUdeviceptr *, size_t, CUstream))            \
  X(cuMemFreeAsync, CUresult (*)(CUdeviceptr, CUstream))                       \
  X(cuDeviceGetDefaultMemPool, CUresult (*)(CUmemoryPool *, CUdevice))         \
  X(cuMemPoolSetAttribute, CUresult (*)(CUmemoryPool, int, void *))            \
  X(cuEventElapsedTime, CUresult (*)(float *, CUevent, CUevent))               \
  X(cuMemcpy2DAsync_v2, CUresult (*)(const Memcpy2D *, CUstream))
#define MOE_CUDA_DECLARE(name, type) Identity<type> name = nullptr;
  MOE_CUDA_FUNCTIONS(MOE_CUDA_DECLARE)
  MOE_CUDA_OPTIONAL_FUNCTIONS(MOE_CUDA_DECLARE)
#undef MOE_CUDA_DECLARE

  /// Device allocations come from the device's default memory pool, ordered
  /// on the stream they are made on (cuMemAllocAsync): a model run allocates
  /// its results and scratch buffers on every call, and cuMemAlloc/cuMemFree
  /// synchronize the device and cost tens of microseconds each.
  bool streamOrderedAllocation = false;

  /// The primary context of device 0.
  CUcontext context = nullptr;
  /// Empty once the driver is usable, else why not. A fixed buffer, so that
  /// the process-lifetime Driver has a trivial destructor and owns no heap.
  char error[1024] = {};

  bool failed() const { return error[0] != '\0'; }
  void setError(const std::string &message) {
    std::snprintf(error, sizeof(error), "%s", message.c_str());
  }
};

constexpr const char *kTargetHint =
    "; this model was compiled for --target=cuda";

std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  int size = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string text(size > 0 ? static_cast<size_t>(size) : 0, '\0');
  if (size > 0)
    std::vsnprintf(&text[0], text.size() + 1, fmt, args);
  va_end(args);
  return text;
}

/// "CUDA_ERROR_X: description" for `result`.
std::string describe(const Driver &driver, CUresult result) {
  const char *name = nullptr;
  const char *text = nullptr;
  if (driver.cuGetErrorName)
    driver.cuGetErrorName(result, &name);
  if (driver.cuGetErrorString)
    driver.cuGetErrorString(result, &text);
  return format("%s: %s", name ? name : "unknown CUDA error",
                text ? text : "no description");
}

/// Loads and initializes the driver; called once.
void loadDriver(Driver &driver) {
  const char *path = std::getenv("MOE_CUDA_DRIVER");
  if (!path || !*path)
    path = "libcuda.so.1";
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *reason = dlerror();
    driver.setError(format("moe: no CUDA driver found (%s)%s",
                           reason ? reason : path, kTargetHint));
    return;
  }
#define MOE_CUDA_LOAD(name, type)                                              \
  driver.name = reinterpret_cast<type>(dlsym(handle, #name));                  \
  if (!driver.name) {                                                          \
    driver.setError(format("moe: the CUDA driver %s has no %s%s", path, #name, \
                           kTargetHint));                                      \
    return;                                                                    \
  }
  MOE_CUDA_FUNCTIONS(MOE_CUDA_LOAD)
#undef MOE_CUDA_LOAD
  // The handle stays open for the life of the process.
  if (CUresult result = driver.cuInit(0)) {
    driver.setError(format("moe: the CUDA driver cannot be initialized "
                           "(cuInit: %s)%s",
                           describe(driver, result).c_str(), kTargetHint));
    return;
  }
  int count = 0;
  if (CUresult result = driver.cuDeviceGetCount(&count)) {
    driver.setError(
        format("moe: cannot count CUDA devices (cuDeviceGetCount: %s)%s",
               describe(driver, result).c_str(), kTargetHint));
    return;
  }
  if (count <= 0) {
    driver.setError(format("moe: no CUDA device found%s", kTargetHint));
    return;
  }
  CUdevice device = 0;
  if (CUresult result = driver.cuDeviceGet(&device, 0)) {
    driver.setError(format("moe: cannot open CUDA device 0 (cuDeviceGet: %s)%s",
                           describe(driver, result).c_str(), kTargetHint));
    return;
  }
  if (CUresult result =
          driver.cuDevicePrimaryCtxRetain(&driver.context, device)) {
    driver.setError(format("moe: cannot create a CUDA context on device 0 "
                           "(cuDevicePrimaryCtxRetain: %s)%s",
                           describe(driver, result).c_str(), kTargetHint));
    return;
  }
#define MOE_CUDA_LOAD_OPTIONAL(name, type)                                     \
  driver.name = reinterpret_cast<type>(dlsym(handle, #name));
  MOE_CUDA_OPTIONAL_FUNCTIONS(MOE_CUDA_LOAD_OPTIONAL)
#undef MOE_CUDA_LOAD_OPTIONAL
  // The pool keeps freed memory for the next run instead of returning it to
  // the device at every synchronization.
  CUmemoryPool pool = nullptr;
  if (driver.cuMemAllocAsync && driver.cuMemFreeAsync &&
      driver.cuDeviceGetDefaultMemPool && driver.cuMemPoolSetAttribute &&
      driver.cuDeviceGetDefaultMemPool(&pool, device) == kSuccess) {
    unsigned long long keep = ~0ull;
    driver.streamOrderedAllocation =
        driver.cuMemPoolSetAttribute(pool, kMemPoolAttrReleaseThreshold,
                                     &keep) == kSuccess;
  }
}

Driver &getDriver() {
  // Trivially destructible, so never destroyed: module unloads may run from
  // static destructors.
  static_assert(std::is_trivially_destructible<Driver>::value,
                "the driver outlives static destructors");
  static Driver storage;
  static Driver *driver = [] {
    loadDriver(storage);
    return &storage;
  }();
  return *driver;
}

//===----------------------------------------------------------------------===//
// Per-thread errors
//===----------------------------------------------------------------------===//

struct ThreadError {
  bool failed = false;
  std::string message;
  std::string taken;
};

ThreadError &threadError() {
  thread_local ThreadError error;
  return error;
}

void recordError(std::string message) {
  ThreadError &error = threadError();
  if (error.failed)
    return;
  error.failed = true;
  error.message = std::move(message);
}

/// The driver, if it is usable and no error is pending in this thread; else
/// null (with the driver's error recorded).
Driver *usableDriver() {
  if (threadError().failed)
    return nullptr;
  Driver &driver = getDriver();
  if (driver.failed()) {
    recordError(std::string(driver.error));
    return nullptr;
  }
  return &driver;
}

/// Records a failed `call`; returns whether `result` is a success.
bool check(Driver &driver, CUresult result, const char *call,
           const char *what = nullptr) {
  if (result == kSuccess)
    return true;
  recordError(format("moe: CUDA error in %s%s%s%s: %s", call, what ? " (" : "",
                     what ? what : "", what ? ")" : "",
                     describe(driver, result).c_str()));
  return false;
}

/// Makes the primary context current for the scope. Inside another scope of
/// the same thread (the mgpu* calls of a model run, inside the run's scope)
/// the context is current already and nothing is pushed: a run at decode
/// sizes made some 17 push/pop pairs.
class ScopedContext {
public:
  explicit ScopedContext(Driver &driver) : driver(driver) {
    if (depth() > 0) {
      nested = true;
      ++depth();
      return;
    }
    pushed = check(driver, driver.cuCtxPushCurrent_v2(driver.context),
                   "cuCtxPushCurrent");
    if (pushed)
      ++depth();
  }
  ~ScopedContext() {
    if (pushed || nested)
      --depth();
    if (pushed)
      driver.cuCtxPopCurrent_v2(nullptr);
  }
  bool ok() const { return pushed || nested; }

private:
  static int &depth() {
    thread_local int scopes = 0;
    return scopes;
  }
  Driver &driver;
  bool pushed = false, nested = false;
};

/// What `mgpuModuleLoad*` returns: the module, or why it could not be loaded
/// (reported by the first `mgpuModuleGetFunction` on it, which runs inside a
/// model call rather than in the library's constructor).
struct LoadedModule {
  CUmodule module = nullptr;
  std::string error;
  /// The functions looked up so far, by name: the generated host code looks
  /// a kernel up before each of its launches.
  std::mutex mutex;
  std::vector<std::pair<std::string, CUfunction>> functions;
};

LoadedModule *loadModule(const void *data, int optLevel, bool jit) {
  auto *loaded = new LoadedModule();
  Driver &driver = getDriver();
  if (driver.failed()) {
    loaded->error = driver.error;
    return loaded;
  }
  if (!data) {
    loaded->error = "moe: no kernel image to load";
    return loaded;
  }
  if (!check(driver, driver.cuCtxPushCurrent_v2(driver.context),
             "cuCtxPushCurrent")) {
    loaded->error = moe_cuda_take_error();
    return loaded;
  }
  CUresult result;
  std::string log(8192, '\0');
  if (jit) {
    int options[] = {kJitErrorLogBuffer, kJitErrorLogBufferSizeBytes,
                     kJitOptimizationLevel};
    void *values[] = {&log[0], reinterpret_cast<void *>(log.size()),
                      reinterpret_cast<void *>(
                          static_cast<intptr_t>(optLevel < 0   ? 0
                                                : optLevel > 4 ? 4
                                                               : optLevel))};
    result =
        driver.cuModuleLoadDataEx(&loaded->module, data, 3, options, values);
  } else {
    result = driver.cuModuleLoadData(&loaded->module, data);
  }
  driver.cuCtxPopCurrent_v2(nullptr);
  if (result != kSuccess) {
    loaded->module = nullptr;
    log.resize(std::strlen(log.c_str()));
    loaded->error = format(
        "moe: the CUDA driver cannot load the kernels (%s: %s)%s%s",
        jit ? "cuModuleLoadDataEx" : "cuModuleLoadData",
        describe(driver, result).c_str(), log.empty() ? "" : ": ", log.c_str());
  }
  return loaded;
}

/// Removes `ptr` from `list` if it is there; returns whether it was.
bool eraseFrom(std::vector<CUdeviceptr> &list, CUdeviceptr ptr) {
  for (CUdeviceptr &known : list)
    if (known == ptr) {
      known = list.back();
      list.pop_back();
      return true;
    }
  return false;
}

/// The managed (`isHostShared`) allocations, which cuMemFreeAsync cannot
/// free. Never destroyed, like the driver.
struct ManagedSet {
  std::mutex mutex;
  std::vector<CUdeviceptr> pointers;
  void insert(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> lock(mutex);
    pointers.push_back(ptr);
  }
  bool erase(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> lock(mutex);
    return eraseFrom(pointers, ptr);
  }
};
ManagedSet &managedAllocations() {
  static ManagedSet *set = new ManagedSet();
  return *set;
}

/// Device memory that the runs of one model reuse (the model state's): what
/// a run frees on the model's stream is kept, and an allocation of the same
/// size on that stream in the same or the next run takes it back, in stream
/// order like the pool's own reuse, without a driver call. A model run at
/// decode sizes allocated and freed some 20 buffers, each a driver call of
/// about a microsecond of host time between kernel launches. What a run did
/// not take back is returned to the pool when it ends (`endRun`), so the
/// cache holds at most one run's buffers.
struct BlockCache {
  struct Block {
    CUdeviceptr ptr;
    uint64_t bytes;
    bool used;
  };
  /// The model's stream (its `RunHandles`): blocks are reused on it only.
  CUstream *stream = nullptr;
  std::vector<Block> free;
  /// The blocks handed out and not yet freed, with their sizes.
  std::unordered_map<CUdeviceptr, uint64_t> live;

  bool serves(CUstream s) const { return stream && *stream && s == *stream; }
  bool take(uint64_t bytes, CUdeviceptr &ptr) {
    for (size_t i = 0; i < free.size(); ++i)
      if (free[i].bytes == bytes) {
        ptr = free[i].ptr;
        free[i] = free.back();
        free.pop_back();
        live[ptr] = bytes;
        return true;
      }
    return false;
  }
  bool give(CUdeviceptr ptr) {
    auto it = live.find(ptr);
    if (it == live.end())
      return false;
    free.push_back({ptr, it->second, true});
    live.erase(it);
    return true;
  }
  /// No longer the cache's (a result the caller now owns).
  void disown(CUdeviceptr ptr) { live.erase(ptr); }
  /// Returns the blocks the run did not take back to the pool, on `s`.
  void endRun(Driver &driver, CUstream s) {
    size_t kept = 0;
    for (Block &block : free) {
      if (block.used) {
        block.used = false;
        free[kept++] = block;
      } else {
        driver.cuMemFreeAsync(block.ptr, s);
      }
    }
    free.resize(kept);
  }
  /// Returns every free block to the pool (after `s`'s work, or on the
  /// legacy stream), and forgets the live ones (freed by their owners).
  void clear(Driver &driver, CUstream s) {
    for (const Block &block : free)
      driver.cuMemFreeAsync(block.ptr, s);
    free.clear();
    live.clear();
  }
};

/// The block cache of the model run in this thread, if any.
BlockCache *&runBlocks() {
  thread_local BlockCache *blocks = nullptr;
  return blocks;
}

/// Frees memory from mgpuMemAlloc, ordered on `stream` where it came from
/// the stream-ordered pool (into the run's block cache where it came from
/// there). The context must be current. A failure is recorded unless
/// `record` is false.
void freeDeviceMemory(Driver &driver, CUdeviceptr ptr, CUstream stream,
                      bool record = true) {
  if (BlockCache *blocks = runBlocks()) {
    if (blocks->serves(stream) && blocks->give(ptr))
      return;
    // Freed on another stream: to the pool, and no longer the cache's.
    blocks->disown(ptr);
  }
  bool pooled =
      driver.streamOrderedAllocation && !managedAllocations().erase(ptr);
  CUresult result =
      pooled ? driver.cuMemFreeAsync(ptr, stream) : driver.cuMemFree_v2(ptr);
  if (record)
    check(driver, result, pooled ? "cuMemFreeAsync" : "cuMemFree");
}

/// Allocates device memory as mgpuMemAlloc does (from the stream-ordered
/// pool on `stream` where the driver has one), so that freeDeviceMemory frees
/// it. The context must be current. Records an error on failure.
bool allocateDeviceMemory(Driver &driver, CUdeviceptr &ptr, uint64_t bytes,
                          CUstream stream, const char *what) {
  if (driver.streamOrderedAllocation) {
    BlockCache *blocks = runBlocks();
    bool cached = blocks && blocks->serves(stream);
    if (cached && blocks->take(bytes, ptr))
      return true;
    if (!check(driver, driver.cuMemAllocAsync(&ptr, bytes, stream),
               "cuMemAllocAsync", what))
      return false;
    if (cached)
      blocks->live[ptr] = bytes;
    return true;
  }
  return check(driver, driver.cuMemAlloc_v2(&ptr, bytes), "cuMemAlloc", what);
}

/// The stream of the `moe_cuda_run_model` call running in this thread, if
/// any: the streams the entry creates are this one, so that the whole call
/// is ordered on one stream (and can be timed with two events).
CUstream &runStream() {
  thread_local CUstream stream = nullptr;
  return stream;
}

/// While the entry of a `moe_cuda_run_model` call runs in this thread: the
/// device memory it allocated and has not freed. The lowering frees its
/// scratch buffers but not the buffers one op hands to the next (routing ids,
/// dispatch permutations, expert rows); the run frees whatever is left once
/// the results are copied back.
std::vector<CUdeviceptr> *&runAllocations() {
  thread_local std::vector<CUdeviceptr> *allocations = nullptr;
  return allocations;
}

/// Per-kernel device times of model runs, when the environment variable
/// MOE_CUDA_PROFILE is set (to anything but 0): every launch inside a
/// `moe_cuda_run_model` call is bracketed by two events, and a table of the
/// kernels' times per run goes to stderr when the process exits. Never
/// destroyed, like the driver.
struct Profiler {
  struct Launch {
    CUfunction function;
    CUevent begin, end;
  };
  struct Totals {
    int64_t launches = 0;
    double ms = 0;
  };

  bool enabled = false;
  std::mutex mutex;
  std::unordered_map<CUfunction, std::string> names;
  std::unordered_map<std::string, Totals> kernels;
  int64_t runs = 0;
  double deviceMs = 0, kernelMs = 0, entryHostMs = 0;

  /// The launches of the run in this thread, not yet timed.
  static std::vector<Launch> &pending() {
    thread_local std::vector<Launch> launches;
    return launches;
  }

  void print() {
    std::lock_guard<std::mutex> lock(mutex);
    if (runs == 0)
      return;
    std::vector<std::pair<std::string, Totals>> rows(kernels.begin(),
                                                     kernels.end());
    std::sort(rows.begin(), rows.end(), [](const auto &a, const auto &b) {
      return a.second.ms > b.second.ms;
    });
    double n = double(runs);
    std::fprintf(stderr,
                 "moe: CUDA profile of %lld runs (per run: device %.4f ms, "
                 "kernels %.4f ms, host time in the entry %.4f ms)\n",
                 static_cast<long long>(runs), deviceMs / n, kernelMs / n,
                 entryHostMs / n);
    std::fprintf(stderr, "  %10s %8s %7s  %s\n", "ms/run", "launches", "%",
                 "kernel");
    for (const auto &[name, totals] : rows)
      std::fprintf(stderr, "  %10.4f %8.2f %6.1f%%  %s\n", totals.ms / n,
                   double(totals.launches) / n,
                   kernelMs > 0 ? 100.0 * totals.ms / kernelMs : 0.0,
                   name.c_str());
  }
};

Profiler &profiler() {
  static Profiler *instance = [] {
    auto *p = new Profiler();
    const char *env = std::getenv("MOE_CUDA_PROFILE");
    p->enabled = env && *env && std::strcmp(env, "0") != 0;
    if (p->enabled)
      std::atexit([] { profiler().print(); });
    return p;
  }();
  return *instance;
}

/// Whether `ptr` is memory the host can read directly (not device memory).
bool isHostMemory(Driver &driver, const void *ptr) {
  unsigned type = 0;
  if (driver.cuPointerGetAttribute(&type, kPointerAttributeMemoryType,
                                   reinterpret_cast<CUdeviceptr>(ptr)) !=
      kSuccess)
    return true; // Not known to CUDA: plain host memory.
  return type == kMemoryTypeHost;
}

/// The ordinal of the CUDA device whose memory `ptr` points to, or -1 for
/// memory the host can read directly.
int deviceOfMemory(Driver &driver, const void *ptr) {
  if (!ptr || isHostMemory(driver, ptr))
    return -1;
  int ordinal = 0;
  if (driver.cuPointerGetAttribute(&ordinal, kPointerAttributeDeviceOrdinal,
                                   reinterpret_cast<CUdeviceptr>(ptr)) !=
      kSuccess)
    return 0;
  return ordinal;
}

} // namespace

//===----------------------------------------------------------------------===//
// The mgpu* functions (MLIR's CudaRuntimeWrappers ABI)
//===----------------------------------------------------------------------===//

extern "C" {

CUmodule mgpuModuleLoad(void *data, size_t /*size*/) {
  return reinterpret_cast<CUmodule>(loadModule(data, 0, /*jit=*/false));
}

CUmodule mgpuModuleLoadJIT(void *data, int optLevel, size_t /*size*/) {
  return reinterpret_cast<CUmodule>(loadModule(data, optLevel, /*jit=*/true));
}

void mgpuModuleUnload(CUmodule module) {
  auto *loaded = reinterpret_cast<LoadedModule *>(module);
  if (!loaded)
    return;
  if (loaded->module) {
    Driver &driver = getDriver();
    if (driver.cuCtxPushCurrent_v2(driver.context) == kSuccess) {
      driver.cuModuleUnload(loaded->module);
      driver.cuCtxPopCurrent_v2(nullptr);
    }
  }
  delete loaded;
}

CUfunction mgpuModuleGetFunction(CUmodule module, const char *name) {
  Driver *driver = usableDriver();
  if (!driver)
    return nullptr;
  auto *loaded = reinterpret_cast<LoadedModule *>(module);
  if (!loaded) {
    recordError("moe: no kernel module is loaded");
    return nullptr;
  }
  if (!loaded->module) {
    recordError(loaded->error);
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(loaded->mutex);
  for (const auto &[known, function] : loaded->functions)
    if (known == name)
      return function;
  CUfunction function = nullptr;
  if (!check(*driver,
             driver->cuModuleGetFunction(&function, loaded->module, name),
             "cuModuleGetFunction", name))
    return nullptr;
  loaded->functions.emplace_back(name, function);
  if (Profiler &p = profiler(); p.enabled) {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.names.emplace(function, name);
  }
  return function;
}

void mgpuLaunchKernel(CUfunction function, intptr_t gridX, intptr_t gridY,
                      intptr_t gridZ, intptr_t blockX, intptr_t blockY,
                      intptr_t blockZ, int32_t smem, CUstream stream,
                      void **params, void **extra) {
  Driver *driver = usableDriver();
  if (!driver)
    return;
  // An empty grid (e.g. zero tokens) has no work; the driver would reject it.
  if (gridX == 0 || gridY == 0 || gridZ == 0)
    return;
  if (!function) {
    recordError("moe: kernel launch without a kernel");
    return;
  }
  auto fits = [](intptr_t v) { return v > 0 && v <= 0x7fffffff; };
  if (!fits(gridX) || !fits(gridY) || !fits(gridZ) || !fits(blockX) ||
      !fits(blockY) || !fits(blockZ) || smem < 0) {
    recordError(format("moe: invalid kernel launch: grid %ldx%ldx%ld, block "
                       "%ldx%ldx%ld, %d bytes of shared memory",
                       (long)gridX, (long)gridY, (long)gridZ, (long)blockX,
                       (long)blockY, (long)blockZ, (int)smem));
    return;
  }
  ScopedContext scope(*driver);
  if (!scope.ok())
    return;
  Profiler::Launch timed{function, nullptr, nullptr};
  bool profiled = profiler().enabled && stream && stream == runStream() &&
                  driver->cuEventElapsedTime &&
                  driver->cuEventCreate(&timed.begin, 0) == kSuccess &&
                  driver->cuEventCreate(&timed.end, 0) == kSuccess &&
                  driver->cuEventRecord(timed.begin, stream) == kSuccess;
  check(*driver,
        driver->cuLaunchKernel(function, gridX, gridY, gridZ, blockX, blockY,
                               blockZ, smem, stream, params, extra),
        "cuLaunchKernel");
  if (profiled && driver->cuEventRecord(timed.end, stream) == kSuccess) {
    Profiler::pending().push_back(timed);
  } else {
    if (timed.begin)
      driver->cuEventDestroy_v2(timed.begin);
    if (timed.end)
      driver->cuEventDestroy_v2(timed.end);
  }
}

CUstream mgpuStreamCreate() {
  Driver *driver = usableDriver();
  if (!driver)
    return nullptr;
  if (CUstream stream = runStream())
    return stream;
  ScopedContext scope(*driver);
  CUstream stream = nullptr;
  if (!scope.ok() ||
      !check(*driver, driver->cuStreamCreate(&stream, kStreamNonBlocking),
             "cuStreamCreate"))
    return nullptr;
  return stream;
}

void mgpuStreamDestroy(CUstream stream) {
  // Runs even after an error, so that streams are not leaked.
  Driver &driver = getDriver();
  if (!stream || driver.failed() || stream == runStream())
    return;
  check(driver, driver.cuStreamDestroy_v2(stream), "cuStreamDestroy");
}

void mgpuStreamSynchronize(CUstream stream) {
  Driver *driver = usableDriver();
  if (!driver || !stream)
    return;
  ScopedContext scope(*driver);
  if (scope.ok())
    check(*driver, driver->cuStreamSynchronize(stream), "cuStreamSynchronize");
}

void mgpuStreamWaitEvent(CUstream stream, CUevent event) {
  Driver *driver = usableDriver();
  if (!driver || !stream || !event)
    return;
  check(*driver, driver->cuStreamWaitEvent(stream, event, 0),
        "cuStreamWaitEvent");
}

CUevent mgpuEventCreate() {
  Driver *driver = usableDriver();
  if (!driver)
    return nullptr;
  ScopedContext scope(*driver);
  CUevent event = nullptr;
  if (!scope.ok() ||
      !check(*driver, driver->cuEventCreate(&event, kEventDisableTiming),
             "cuEventCreate"))
    return nullptr;
  return event;
}

void mgpuEventDestroy(CUevent event) {
  Driver &driver = getDriver();
  if (!event || driver.failed())
    return;
  check(driver, driver.cuEventDestroy_v2(event), "cuEventDestroy");
}

void mgpuEventSynchronize(CUevent event) {
  Driver *driver = usableDriver();
  if (!driver || !event)
    return;
  check(*driver, driver->cuEventSynchronize(event), "cuEventSynchronize");
}

void mgpuEventRecord(CUevent event, CUstream stream) {
  Driver *driver = usableDriver();
  if (!driver || !event)
    return;
  check(*driver, driver->cuEventRecord(event, stream), "cuEventRecord");
}

void *mgpuMemAlloc(uint64_t sizeBytes, CUstream stream, bool isHostShared) {
  Driver *driver = usableDriver();
  if (!driver || sizeBytes == 0)
    return nullptr;
  ScopedContext scope(*driver);
  if (!scope.ok())
    return nullptr;
  CUdeviceptr ptr = 0;
  bool ok;
  if (isHostShared) {
    ok = check(*driver,
               driver->cuMemAllocManaged(&ptr, sizeBytes, kMemAttachGlobal),
               "cuMemAllocManaged");
    if (ok)
      managedAllocations().insert(ptr);
  } else {
    ok = allocateDeviceMemory(*driver, ptr, sizeBytes, stream, nullptr);
  }
  if (ok && runAllocations())
    runAllocations()->push_back(ptr);
  return ok ? reinterpret_cast<void *>(ptr) : nullptr;
}

void mgpuMemFree(void *ptr, CUstream stream) {
  // Runs even after an error, so that device memory is not leaked.
  Driver &driver = getDriver();
  if (!ptr || driver.failed())
    return;
  if (runAllocations())
    eraseFrom(*runAllocations(), reinterpret_cast<CUdeviceptr>(ptr));
  ScopedContext scope(driver);
  if (scope.ok())
    freeDeviceMemory(driver, reinterpret_cast<CUdeviceptr>(ptr), stream);
}

void mgpuMemcpy(void *dst, void *src, size_t sizeBytes, CUstream stream) {
  Driver *driver = usableDriver();
  if (!driver || sizeBytes == 0)
    return;
  if (!dst || !src) {
    recordError("moe: copy of device memory from or to a null pointer");
    return;
  }
  ScopedContext scope(*driver);
  if (scope.ok())
    check(*driver,
          driver->cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                                reinterpret_cast<CUdeviceptr>(src), sizeBytes,
                                stream),
          "cuMemcpyAsync");
}

void mgpuMemset32(void *dst, unsigned value, size_t count, CUstream stream) {
  Driver *driver = usableDriver();
  if (!driver || count == 0)
    return;
  ScopedContext scope(*driver);
  if (scope.ok())
    check(*driver,
          driver->cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(dst), value,
                                   count, stream),
          "cuMemsetD32Async");
}

void mgpuMemset16(void *dst, unsigned short value, size_t count,
                  CUstream stream) {
  Driver *driver = usableDriver();
  if (!driver || count == 0)
    return;
  ScopedContext scope(*driver);
  if (scope.ok())
    check(*driver,
          driver->cuMemsetD16Async(reinterpret_cast<CUdeviceptr>(dst), value,
                                   count, stream),
          "cuMemsetD16Async");
}

void mgpuSetDefaultDevice(int32_t device) {
  if (device != 0)
    recordError(format("moe: only CUDA device 0 is supported, not %d",
                       static_cast<int>(device)));
}

//===----------------------------------------------------------------------===//
// moe/runtime/cuda.h
//===----------------------------------------------------------------------===//

const char *moe_cuda_driver_error(void) {
  Driver &driver = getDriver();
  return driver.failed() ? driver.error : nullptr;
}

const char *moe_cuda_take_error(void) {
  ThreadError &error = threadError();
  if (!error.failed)
    return nullptr;
  error.taken = std::move(error.message);
  error.message.clear();
  error.failed = false;
  return error.taken.c_str();
}

void *moe_cuda_host_alloc(size_t size) {
  Driver *driver = usableDriver();
  if (!driver || size == 0)
    return nullptr;
  ScopedContext scope(*driver);
  void *ptr = nullptr;
  if (!scope.ok() ||
      !check(*driver, driver->cuMemHostAlloc(&ptr, size, 0), "cuMemHostAlloc"))
    return nullptr;
  return ptr;
}

void moe_cuda_host_free(void *ptr) {
  Driver &driver = getDriver();
  if (!ptr || driver.failed())
    return;
  ScopedContext scope(driver);
  if (scope.ok())
    check(driver, driver.cuMemFreeHost(ptr), "cuMemFreeHost");
}

} // extern "C"

//===----------------------------------------------------------------------===//
// Running a model on device memory
//===----------------------------------------------------------------------===//

namespace {

/// A memref descriptor: {allocated, aligned, offset, sizes[R], strides[R]}.
struct DescriptorView {
  int64_t *fields;
  int32_t rank;

  void *&allocated() { return *reinterpret_cast<void **>(&fields[0]); }
  void *&aligned() { return *reinterpret_cast<void **>(&fields[1]); }
  int64_t &offset() { return fields[2]; }
  int64_t &size(int32_t i) { return fields[3 + i]; }
  int64_t &stride(int32_t i) { return fields[3 + rank + i]; }
  static size_t numFields(int32_t rank) { return 3 + 2 * size_t(rank); }
};

/// The number of elements between the first and one past the last element
/// of `desc`, or -1 if it cannot be described (negative strides, overflow).
int64_t spanElements(DescriptorView desc) {
  int64_t span = 1;
  for (int32_t i = 0; i < desc.rank; ++i) {
    if (desc.size(i) < 0)
      return -1;
    if (desc.size(i) == 0)
      return 0;
  }
  for (int32_t i = 0; i < desc.rank; ++i) {
    if (desc.stride(i) < 0)
      return -1;
    int64_t extent;
    if (__builtin_mul_overflow(desc.size(i) - 1, desc.stride(i), &extent) ||
        __builtin_add_overflow(span, extent, &span))
      return -1;
  }
  return span;
}

/// The bytes between the first and one past the last element of `desc`;
/// false if that cannot be described (negative strides, overflow).
bool spanBytes(DescriptorView desc, int32_t elementSize, uint64_t &bytes) {
  int64_t span = spanElements(desc);
  return span >= 0 &&
         !__builtin_mul_overflow(uint64_t(span), uint64_t(elementSize), &bytes);
}

/// Reserves `bytes` of the staging memory after `total` (64-byte aligned);
/// returns the region's offset.
uint64_t reserveStaging(uint64_t &total, uint64_t bytes) {
  uint64_t offset = total;
  total += (bytes + 63) / 64 * 64;
  return offset;
}

/// What a `--target=cuda` library keeps between runs (its
/// `moe_cuda_model_state_t`): the device copies of its weights, uploaded by
/// the first run and reused while the host weights stay where they were.
} // namespace

namespace {
/// The stream and events of model runs.
struct RunHandles {
  CUstream stream = nullptr;
  CUevent events[2] = {nullptr, nullptr};
  /// Recorded on the legacy default stream before a run with inputs in
  /// device memory; the run's stream waits for it.
  CUevent inputsReady = nullptr;

  /// Destroys the stream (after its work) and the events; the context must
  /// be current.
  void release(Driver &driver) {
    if (stream) {
      driver.cuStreamSynchronize(stream);
      driver.cuStreamDestroy_v2(stream);
    }
    for (CUevent *event : {&events[0], &events[1], &inputsReady}) {
      if (*event)
        driver.cuEventDestroy_v2(*event);
      *event = nullptr;
    }
    stream = nullptr;
  }
};
} // namespace

struct moe_cuda_model_state {
  /// Held for a whole run: runs of one library are serialized, and a run's
  /// weights cannot be replaced under it.
  std::mutex mutex;
  struct Weight {
    const void *host = nullptr;
    uint64_t bytes = 0;
    /// The device copy, or (`inPlace`) `host` itself: device memory the
    /// runtime gave (an expert cache's slots), used without a copy.
    CUdeviceptr device = 0;
    bool inPlace = false;
  };
  std::vector<Weight> weights;
  /// Page-locked host memory through which large inputs and results are
  /// copied (grown as needed): DMA from pageable memory goes through the
  /// driver's own small bounce buffers, synchronously, at a fraction of the
  /// bus bandwidth.
  void *staging = nullptr;
  size_t stagingBytes = 0;
  /// Milliseconds of device time of the last run, or -1.
  std::atomic<double> lastDeviceMs{-1.0};
  /// The stream and events of the runs (created by the first, kept while
  /// they succeed): creating and destroying a stream and three events cost a
  /// call at decode sizes a noticeable part of its time.
  RunHandles handles;
  /// The buffers its runs free, for the next run (on `handles.stream`).
  BlockCache blocks;

  /// Frees the device copies, the staging memory, the cached buffers, the
  /// stream and the events; the context must be current and no copy of this
  /// state's in flight.
  void release(Driver &driver) {
    blocks.clear(driver, handles.stream);
    handles.release(driver);
    releaseWeights(driver);
  }

  /// Frees the device copies of the weights and the staging memory (the
  /// stream's work that uses them must have completed or must not exist).
  void releaseWeights(Driver &driver) {
    for (Weight &weight : weights)
      if (weight.device && !weight.inPlace)
        driver.cuMemFree_v2(weight.device);
    weights.clear();
    if (staging)
      driver.cuMemFreeHost(staging);
    staging = nullptr;
    stagingBytes = 0;
  }

  /// Staging memory of at least `bytes`, or null (then copies go through
  /// pageable memory). `stream` is waited for before the buffer is replaced.
  char *stage(Driver &driver, size_t bytes, CUstream stream) {
    if (bytes <= stagingBytes)
      return static_cast<char *>(staging);
    if (staging) {
      driver.cuStreamSynchronize(stream);
      driver.cuMemFreeHost(staging);
      staging = nullptr;
      stagingBytes = 0;
    }
    if (driver.cuMemHostAlloc(&staging, bytes, 0) != kSuccess) {
      staging = nullptr;
      return nullptr;
    }
    stagingBytes = bytes;
    return static_cast<char *>(staging);
  }
};

namespace {
/// Inputs and results at least this large are copied through the staging
/// memory; for smaller ones the extra host copy is not worth it.
constexpr uint64_t kStagingMinBytes = 64 * 1024;
} // namespace

namespace {

/// Device memory, stream and events of one `moe_cuda_run_model` call. The
/// stream and events are the model state's where there is one (`shared`:
/// kept after a run that succeeded, destroyed after one that failed), else
/// the call's own.
class RunState {
public:
  RunState(Driver &driver, moe_cuda_model_state *shared)
      : driver(driver), shared(shared), handles(shared ? shared->handles : own),
        stream(handles.stream), events(handles.events),
        inputsReady(handles.inputsReady) {
    if (shared) {
      shared->blocks.stream = &handles.stream;
      runBlocks() = &shared->blocks;
    }
  }
  ~RunState() {
    // Stream-ordered frees on the stream (into the model's block cache),
    // then the stream's work is waited for.
    for (CUdeviceptr ptr : deviceBuffers)
      freeDeviceMemory(driver, ptr, stream);
    for (CUdeviceptr ptr : resultBuffers)
      freeDeviceMemory(driver, ptr, stream);
    if (shared) {
      // A failed run's stream is destroyed below: nothing is kept for it.
      if (succeeded)
        shared->blocks.endRun(driver, stream);
      else
        shared->blocks.clear(driver, stream);
    }
    runBlocks() = nullptr;
    // A run that succeeded waited for its stream after its last copy; what
    // it queued since are frees, which touch no host memory.
    if (stream && !(succeeded && synchronized))
      driver.cuStreamSynchronize(stream);
    // After the synchronization: copies may read them until then.
    for (void *ptr : hostBuffers)
      std::free(ptr);
    if (!shared || !succeeded)
      handles.release(driver);
    runStream() = nullptr;
  }

  Driver &driver;
  moe_cuda_model_state *shared;
  /// Set by a run that succeeded.
  bool succeeded = false;
  /// Set once the run waited for its stream after its last copy.
  bool synchronized = false;
  /// The call's own handles, used without a model state.
  RunHandles own;
  RunHandles &handles;
  CUstream &stream;
  CUevent (&events)[2];
  CUevent &inputsReady;
  std::vector<CUdeviceptr> deviceBuffers;
  std::vector<void *> hostBuffers;
  /// The device memory of results left on the device, freed unless the run
  /// succeeds (the caller then owns it).
  std::vector<CUdeviceptr> resultBuffers;
};

void zeroResults(void **args, const moe_cuda_arg_t *results,
                 int64_t numResults) {
  if (numResults <= 0 || !args[0])
    return;
  int64_t *fields = static_cast<int64_t *>(args[0]);
  for (int64_t i = 0; i < numResults; ++i) {
    size_t n = DescriptorView::numFields(results[i].rank);
    std::memset(fields, 0, n * sizeof(int64_t));
    fields += n;
  }
}

/// Adds the launches of the run that just ended in this thread (its stream
/// synchronized) to the profile, and frees their events.
void recordProfile(Driver &driver, double deviceMs, double entryHostMs) {
  Profiler &p = profiler();
  if (!p.enabled)
    return;
  std::vector<Profiler::Launch> &launches = Profiler::pending();
  std::lock_guard<std::mutex> lock(p.mutex);
  ++p.runs;
  p.deviceMs += deviceMs;
  p.entryHostMs += entryHostMs;
  for (const Profiler::Launch &launch : launches) {
    float ms = 0;
    if (driver.cuEventElapsedTime(&ms, launch.begin, launch.end) == kSuccess) {
      auto it = p.names.find(launch.function);
      Profiler::Totals &totals =
          p.kernels[it == p.names.end() ? std::string("?") : it->second];
      ++totals.launches;
      totals.ms += ms;
      p.kernelMs += ms;
    }
    driver.cuEventDestroy_v2(launch.begin);
    driver.cuEventDestroy_v2(launch.end);
  }
  launches.clear();
}

/// Whether the elements of `desc` lie in row-major order without gaps.
bool isRowMajor(DescriptorView desc) {
  int64_t expected = 1;
  for (int32_t i = desc.rank; i-- > 0;) {
    if (desc.size(i) != 1 && desc.stride(i) != expected)
      return false;
    expected *= desc.size(i);
  }
  return true;
}

/// Copies the elements of `desc` (strided, starting at `base`, readable by
/// the host) to `dst` in row-major order.
void gatherRowMajor(DescriptorView desc, const char *base, int32_t elementSize,
                    char *dst) {
  int64_t count = 1;
  for (int32_t i = 0; i < desc.rank; ++i)
    count *= desc.size(i);
  std::vector<int64_t> position(desc.rank, 0);
  for (int64_t n = 0; n < count; ++n) {
    int64_t element = 0;
    for (int32_t i = 0; i < desc.rank; ++i)
      element += position[i] * desc.stride(i);
    std::memcpy(dst + n * elementSize, base + element * elementSize,
                elementSize);
    for (int32_t i = desc.rank; i-- > 0;) {
      if (++position[i] < desc.size(i))
        break;
      position[i] = 0;
    }
  }
}

/// Whether a result at `ptr` (in the buffer `allocated`) is device memory:
/// one of `deviceResults` (the device buffers the run allocated, known
/// without asking the driver: a failed query must not make one look like
/// host memory, which std::free would then be given), else as the driver
/// says.
bool isDeviceResult(Driver &driver, const std::vector<void *> &deviceResults,
                    void *allocated, const void *ptr) {
  return std::find(deviceResults.begin(), deviceResults.end(), allocated) !=
             deviceResults.end() ||
         !isHostMemory(driver, ptr);
}

/// Leaves each result in device memory of its own, row-major with offset 0,
/// and points its descriptor (in `resultBlock`) there: a buffer the model
/// allocated for it is adopted as it is (removed from `toFree`); any other
/// result (in an input, a weight, host memory, a buffer another result took,
/// or with gaps) is copied into new device memory. The buffers are recorded in
/// `state.resultBuffers`. Returns false on an error (recorded).
bool placeResultsOnDevice(RunState &state, int64_t *resultBlock,
                          const moe_cuda_arg_t *results, int64_t numResults,
                          std::vector<void *> &toFree,
                          const std::vector<void *> &deviceResults) {
  Driver &driver = state.driver;
  int64_t *fields = resultBlock;
  for (int64_t i = 0; i < numResults; ++i) {
    DescriptorView desc{fields, results[i].rank};
    fields += DescriptorView::numFields(desc.rank);
    int32_t elementSize = results[i].element_size;
    uint64_t span;
    uint64_t bytes = uint64_t(elementSize);
    bool fits = spanBytes(desc, elementSize, span);
    for (int32_t d = 0; fits && d < desc.rank; ++d)
      fits = !__builtin_mul_overflow(bytes, uint64_t(desc.size(d)), &bytes);
    if (!fits) {
      recordError(format("moe: result %ld has an unsupported layout",
                         static_cast<long>(i)));
      return false;
    }
    bool rowMajor = isRowMajor(desc);
    void *placed = nullptr;
    if (bytes > 0 && !desc.aligned()) {
      recordError(format("moe: result %ld has no data", static_cast<long>(i)));
      return false;
    }
    auto owned = std::find(toFree.begin(), toFree.end(), desc.allocated());
    if (bytes == 0) {
      placed = nullptr;
    } else if (owned != toFree.end() && desc.aligned() == desc.allocated() &&
               desc.offset() == 0 && rowMajor &&
               isDeviceResult(driver, deviceResults, desc.allocated(),
                              desc.allocated())) {
      placed = desc.allocated();
      toFree.erase(owned);
      state.resultBuffers.push_back(reinterpret_cast<CUdeviceptr>(placed));
    } else {
      CUdeviceptr ptr = 0;
      if (!allocateDeviceMemory(driver, ptr, bytes, state.stream, "results"))
        return false;
      state.resultBuffers.push_back(ptr);
      placed = reinterpret_cast<void *>(ptr);
      const char *src = static_cast<const char *>(desc.aligned()) +
                        desc.offset() * elementSize;
      if (rowMajor) {
        if (!check(driver,
                   driver.cuMemcpyAsync(ptr, reinterpret_cast<CUdeviceptr>(src),
                                        bytes, state.stream),
                   "cuMemcpyAsync", "results"))
          return false;
      } else {
        // Gathered on the host once the stream is done (the entry returns
        // without waiting for the GPU): copied there first if it is device
        // memory.
        char *gathered = static_cast<char *>(std::malloc(bytes));
        if (!gathered) {
          recordError(format("moe: cannot allocate %llu bytes for result %ld",
                             static_cast<unsigned long long>(bytes),
                             static_cast<long>(i)));
          return false;
        }
        state.hostBuffers.push_back(gathered);
        const char *from = src;
        if (isDeviceResult(driver, deviceResults, desc.allocated(), src)) {
          char *copy = static_cast<char *>(std::malloc(span));
          if (copy)
            state.hostBuffers.push_back(copy);
          if (!copy ||
              !check(driver,
                     driver.cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(copy),
                                          reinterpret_cast<CUdeviceptr>(src),
                                          span, state.stream),
                     "cuMemcpyAsync", "results"))
            return false;
          from = copy;
        }
        if (!check(driver, driver.cuStreamSynchronize(state.stream),
                   "cuStreamSynchronize"))
          return false;
        gatherRowMajor(desc, from, elementSize, gathered);
        if (!check(driver,
                   driver.cuMemcpyAsync(ptr,
                                        reinterpret_cast<CUdeviceptr>(gathered),
                                        bytes, state.stream),
                   "cuMemcpyAsync", "results"))
          return false;
      }
    }
    desc.allocated() = desc.aligned() = placed;
    desc.offset() = 0;
    int64_t stride = 1;
    for (int32_t d = desc.rank; d-- > 0;) {
      desc.stride(d) = stride;
      stride *= desc.size(d);
    }
  }
  return true;
}

/// The body of moe_cuda_run_model once the context is current; returns false
/// on an error (recorded). With `keepResults` the results stay in device
/// memory (placeResultsOnDevice) instead of being copied to the host.
bool runModel(RunState &state, moe_cuda_model_state *model, void **args,
              const moe_cuda_arg_t *params, int64_t numInputs,
              int64_t numParams, const moe_cuda_arg_t *results,
              int64_t numResults, void (*entry)(void **), bool keepResults) {
  Driver &driver = state.driver;
  if (!state.stream &&
      !check(driver, driver.cuStreamCreate(&state.stream, kStreamNonBlocking),
             "cuStreamCreate"))
    return false;
  auto event = [&](CUevent &e, unsigned flags) {
    return e || driver.cuEventCreate(&e, flags) == kSuccess;
  };
  bool timed = driver.cuEventElapsedTime && event(state.events[0], 0) &&
               event(state.events[1], 0);
  if (model) {
    model->lastDeviceMs = -1.0;
    if (model->weights.size() != size_t(numParams - numInputs))
      model->releaseWeights(driver);
    model->weights.resize(numParams - numInputs);
  }

  // Inputs already in device memory are used in place, after the work queued
  // on the legacy default stream (where the caller, e.g. PyTorch, may still
  // be writing them).
  std::vector<char> inputOnDevice(numInputs, 0);
  bool anyOnDevice = false;
  for (int64_t i = 0; i < numInputs; ++i) {
    DescriptorView host{static_cast<int64_t *>(args[1 + i]), params[i].rank};
    uint64_t bytes;
    if (!spanBytes(host, params[i].element_size, bytes) || bytes == 0)
      continue; // Reported below, or nothing to read.
    int ordinal = deviceOfMemory(driver, host.aligned());
    if (ordinal > 0) {
      recordError(format("moe: input %ld is in the memory of CUDA device %d; "
                         "only device 0 is supported",
                         static_cast<long>(i), ordinal));
      return false;
    }
    inputOnDevice[i] = ordinal == 0;
    anyOnDevice = anyOnDevice || ordinal == 0;
  }
  if (anyOnDevice &&
      (!(state.inputsReady ||
         check(driver,
               driver.cuEventCreate(&state.inputsReady, kEventDisableTiming),
               "cuEventCreate")) ||
       !check(driver, driver.cuEventRecord(state.inputsReady, nullptr),
              "cuEventRecord") ||
       !check(driver,
              driver.cuStreamWaitEvent(state.stream, state.inputsReady, 0),
              "cuStreamWaitEvent")))
    return false;

  // Large inputs go through the staging memory, one region each.
  char *inputStaging = nullptr;
  std::vector<uint64_t> stagingOffset(numParams, ~0ull);
  if (model) {
    uint64_t total = 0;
    for (int64_t i = 0; i < numInputs; ++i) {
      DescriptorView host{static_cast<int64_t *>(args[1 + i]), params[i].rank};
      uint64_t bytes;
      if (inputOnDevice[i] || !spanBytes(host, params[i].element_size, bytes))
        continue; // In place, or reported below.
      if (bytes >= kStagingMinBytes)
        stagingOffset[i] = reserveStaging(total, bytes);
    }
    if (total)
      inputStaging = model->stage(driver, total, state.stream);
  }

  // Device copies of the inputs and weights (identity strides, per the ABI).
  std::vector<std::vector<int64_t>> paramDescriptors(numParams);
  std::vector<void *> deviceArgs(1 + numParams, nullptr);
  std::vector<void *> inputBuffers;
  for (int64_t i = 0; i < numParams; ++i) {
    DescriptorView host{static_cast<int64_t *>(args[1 + i]), params[i].rank};
    std::vector<int64_t> &fields = paramDescriptors[i];
    fields.assign(host.fields,
                  host.fields + DescriptorView::numFields(host.rank));
    DescriptorView device{fields.data(), host.rank};
    uint64_t bytes;
    if (!spanBytes(host, params[i].element_size, bytes)) {
      recordError(format("moe: argument %ld has an unsupported layout",
                         static_cast<long>(i)));
      return false;
    }
    device.offset() = 0;
    device.allocated() = device.aligned() = nullptr;
    const char *src = static_cast<const char *>(host.aligned()) +
                      host.offset() * params[i].element_size;
    if (bytes > 0 && model && i >= numInputs) {
      // A weight: its device copy outlives the run.
      moe_cuda_model_state::Weight &weight = model->weights[i - numInputs];
      if (weight.host != src || weight.bytes != bytes || !weight.device) {
        if (weight.device && !weight.inPlace)
          driver.cuMemFree_v2(weight.device);
        weight = {};
        int ordinal = deviceOfMemory(driver, src);
        if (ordinal > 0) {
          recordError(format("moe: weight %ld is in the memory of CUDA "
                             "device %d; only device 0 is supported",
                             static_cast<long>(i - numInputs), ordinal));
          return false;
        }
        if (ordinal == 0) {
          // Device memory already (an expert cache's slots): used in place.
          weight.inPlace = true;
          weight.device = reinterpret_cast<CUdeviceptr>(src);
        } else {
          CUdeviceptr ptr = 0;
          if (!check(driver, driver.cuMemAlloc_v2(&ptr, bytes), "cuMemAlloc",
                     "weights"))
            return false;
          // Recorded before the copy, so that a failed copy is redone.
          weight.device = ptr;
          if (!check(driver,
                     driver.cuMemcpyHtoDAsync_v2(ptr, src, bytes, state.stream),
                     "cuMemcpyHtoDAsync", "weights"))
            return false;
        }
        weight.host = src;
        weight.bytes = bytes;
      }
      device.allocated() = device.aligned() =
          reinterpret_cast<void *>(weight.device);
      inputBuffers.push_back(device.allocated());
    } else if (bytes > 0 && i < numInputs && inputOnDevice[i]) {
      device.allocated() = device.aligned() = const_cast<char *>(src);
      inputBuffers.push_back(device.allocated());
    } else if (bytes > 0) {
      CUdeviceptr ptr = 0;
      if (!allocateDeviceMemory(driver, ptr, bytes, state.stream, "inputs"))
        return false;
      state.deviceBuffers.push_back(ptr);
      if (inputStaging && stagingOffset[i] != ~0ull) {
        std::memcpy(inputStaging + stagingOffset[i], src, bytes);
        src = inputStaging + stagingOffset[i];
      }
      if (!check(driver,
                 driver.cuMemcpyHtoDAsync_v2(ptr, src, bytes, state.stream),
                 "cuMemcpyHtoDAsync"))
        return false;
      device.allocated() = device.aligned() = reinterpret_cast<void *>(ptr);
      inputBuffers.push_back(device.allocated());
    }
    deviceArgs[1 + i] = fields.data();
  }
  size_t resultFields = 0;
  for (int64_t i = 0; i < numResults; ++i)
    resultFields += DescriptorView::numFields(results[i].rank);
  std::vector<int64_t> resultBlock(resultFields, 0);
  deviceArgs[0] = numResults > 0 ? resultBlock.data() : args[0];
  // The entry's streams are this one (mgpuStreamCreate), so everything
  // below is ordered without a synchronization here.
  runStream() = state.stream;
  std::vector<CUdeviceptr> allocations;
  runAllocations() = &allocations;
  if (timed)
    timed = driver.cuEventRecord(state.events[0], state.stream) == kSuccess;
  auto entryStart = std::chrono::steady_clock::now();
  entry(deviceArgs.data());
  double entryHostMs = std::chrono::duration<double, std::milli>(
                           std::chrono::steady_clock::now() - entryStart)
                           .count();
  runAllocations() = nullptr;
  if (timed)
    timed = driver.cuEventRecord(state.events[1], state.stream) == kSuccess;

  // Results live in device memory (or, for host code, in host memory): copy
  // each into malloc'd memory with the same extents and strides.
  std::vector<void *> toFree;
  auto noteAllocation = [&](void *allocated) {
    if (!allocated || allocated == reinterpret_cast<void *>(0xdeadbeef))
      return;
    for (void *known : inputBuffers)
      if (known == allocated)
        return;
    for (void *known : toFree)
      if (known == allocated)
        return;
    toFree.push_back(allocated);
  };
  int64_t *fields = resultBlock.data();
  for (int64_t i = 0; i < numResults; ++i) {
    DescriptorView desc{fields, results[i].rank};
    fields += DescriptorView::numFields(desc.rank);
    noteAllocation(desc.allocated());
  }
  // The results in device memory the run allocated (isDeviceResult).
  std::vector<void *> deviceResults;
  for (void *result : toFree)
    if (eraseFrom(allocations, reinterpret_cast<CUdeviceptr>(result)))
      deviceResults.push_back(result);
  auto onDevice = [&driver, &deviceResults](void *allocated, const void *ptr) {
    return isDeviceResult(driver, deviceResults, allocated, ptr);
  };
  // The model's other allocations (buffers between its ops) go with the
  // run's own (freed on its stream when the run ends, whatever happens).
  state.deviceBuffers.insert(state.deviceBuffers.end(), allocations.begin(),
                             allocations.end());
  // Free what the model allocated, whatever happens below.
  struct Freer {
    Driver &driver;
    CUstream stream;
    std::vector<void *> &pointers;
    decltype(onDevice) &isDevice;
    ~Freer() {
      for (void *ptr : pointers) {
        if (isDevice(ptr, ptr))
          freeDeviceMemory(driver, reinterpret_cast<CUdeviceptr>(ptr), stream);
        else
          std::free(ptr);
      }
    }
  } freer{driver, state.stream, toFree, onDevice};
  if (threadError().failed)
    return false;

  if (keepResults) {
    if (!placeResultsOnDevice(state, resultBlock.data(), results, numResults,
                              toFree, deviceResults) ||
        !check(driver, driver.cuStreamSynchronize(state.stream),
               "cuStreamSynchronize"))
      return false;
    state.synchronized = true;
    float deviceMs = 0;
    if (model && timed &&
        driver.cuEventElapsedTime(&deviceMs, state.events[0],
                                  state.events[1]) == kSuccess)
      model->lastDeviceMs = deviceMs;
    recordProfile(driver, timed ? deviceMs : 0.0, entryHostMs);
    if (numResults > 0)
      std::memcpy(args[0], resultBlock.data(),
                  resultBlock.size() * sizeof(int64_t));
    // The caller owns them now.
    if (BlockCache *blocks = runBlocks())
      for (CUdeviceptr ptr : state.resultBuffers)
        blocks->disown(ptr);
    state.resultBuffers.clear();
    return true;
  }

  // Result bytes first, to size the staging memory for the large ones.
  std::vector<uint64_t> resultBytes(numResults, 0);
  std::vector<uint64_t> resultStaging(numResults, ~0ull);
  uint64_t stagedResults = 0;
  fields = resultBlock.data();
  for (int64_t i = 0; i < numResults; ++i) {
    DescriptorView desc{fields, results[i].rank};
    fields += DescriptorView::numFields(desc.rank);
    if (!spanBytes(desc, results[i].element_size, resultBytes[i])) {
      recordError(format("moe: result %ld has an unsupported layout",
                         static_cast<long>(i)));
      return false;
    }
    if (model && resultBytes[i] >= kStagingMinBytes && desc.aligned() &&
        onDevice(desc.allocated(), desc.aligned()))
      resultStaging[i] = reserveStaging(stagedResults, resultBytes[i]);
  }
  char *resultStagingBase =
      stagedResults ? model->stage(driver, stagedResults, state.stream)
                    : nullptr;

  std::vector<void *> hostResults;
  struct HostCopy {
    void *dst;
    const void *src;
    uint64_t bytes;
  };
  std::vector<HostCopy> hostCopies;
  fields = resultBlock.data();
  for (int64_t i = 0; i < numResults; ++i) {
    DescriptorView desc{fields, results[i].rank};
    fields += DescriptorView::numFields(desc.rank);
    uint64_t bytes = resultBytes[i];
    // 64-byte aligned, so that the runtime can adopt the buffer as the
    // output tensor's rather than copy it.
    void *host =
        std::aligned_alloc(64, bytes > 0 ? (bytes + 63) / 64 * 64 : 64);
    if (!host) {
      recordError(format("moe: cannot allocate %llu bytes for result %ld",
                         static_cast<unsigned long long>(bytes),
                         static_cast<long>(i)));
      return false;
    }
    state.hostBuffers.push_back(host);
    hostResults.push_back(host);
    if (bytes > 0) {
      char *src = static_cast<char *>(desc.aligned()) +
                  desc.offset() * results[i].element_size;
      if (!desc.aligned()) {
        recordError(
            format("moe: result %ld has no data", static_cast<long>(i)));
        return false;
      }
      void *dst = host;
      if (resultStagingBase && resultStaging[i] != ~0ull)
        dst = resultStagingBase + resultStaging[i];
      // Host memory is read once the stream is done (the entry returns
      // without waiting for the GPU: moe-drop-entry-wait).
      if (!onDevice(desc.allocated(), src))
        hostCopies.push_back({host, src, bytes});
      else if (!check(driver,
                      driver.cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                                           reinterpret_cast<CUdeviceptr>(src),
                                           bytes, state.stream),
                      "cuMemcpyAsync", "device to host"))
        return false;
    }
  }
  if (!check(driver, driver.cuStreamSynchronize(state.stream),
             "cuStreamSynchronize"))
    return false;
  state.synchronized = true;
  for (const HostCopy &copy : hostCopies)
    std::memcpy(copy.dst, copy.src, copy.bytes);
  for (int64_t i = 0; i < numResults; ++i)
    if (resultStagingBase && resultStaging[i] != ~0ull)
      std::memcpy(hostResults[i], resultStagingBase + resultStaging[i],
                  resultBytes[i]);
  float deviceMs = 0;
  if (model && timed &&
      driver.cuEventElapsedTime(&deviceMs, state.events[0], state.events[1]) ==
          kSuccess)
    model->lastDeviceMs = deviceMs;
  recordProfile(driver, timed ? deviceMs : 0.0, entryHostMs);

  // Hand the host copies over to the caller.
  fields = static_cast<int64_t *>(args[0]);
  int64_t *deviceFields = resultBlock.data();
  for (int64_t i = 0; i < numResults; ++i) {
    size_t n = DescriptorView::numFields(results[i].rank);
    std::memcpy(fields, deviceFields, n * sizeof(int64_t));
    DescriptorView desc{fields, results[i].rank};
    desc.allocated() = desc.aligned() = hostResults[i];
    desc.offset() = 0;
    fields += n;
    deviceFields += n;
  }
  state.hostBuffers.clear();
  return true;
}

/// moe_cuda_run_model and moe_cuda_run_model_device.
void runModelOnce(void **args, const moe_cuda_arg_t *params, int64_t num_inputs,
                  int64_t num_params, const moe_cuda_arg_t *results,
                  int64_t num_results, void (*entry)(void **),
                  moe_cuda_model_state_t **state, bool keepResults) {
  // Each call starts afresh: an earlier error in this thread is not its own.
  (void)moe_cuda_take_error();
  Driver *driver = usableDriver();
  if (!driver) {
    zeroResults(args, results, num_results);
    return;
  }
  moe_cuda_model_state *model = nullptr;
  if (state) {
    static std::mutex creation;
    std::lock_guard<std::mutex> lock(creation);
    if (!*state)
      *state = new moe_cuda_model_state();
    model = *state;
  }
  std::unique_lock<std::mutex> lock;
  if (model)
    lock = std::unique_lock<std::mutex>(model->mutex);
  ScopedContext scope(*driver);
  if (!scope.ok()) {
    zeroResults(args, results, num_results);
    return;
  }
  bool ok;
  {
    RunState run(*driver, model);
    ok = runModel(run, model, args, params, num_inputs, num_params, results,
                  num_results, entry, keepResults);
    run.succeeded = ok && !threadError().failed;
  }
  if (!ok)
    zeroResults(args, results, num_results);
}

} // namespace

extern "C" void moe_cuda_run_model(void **args, const moe_cuda_arg_t *params,
                                   int64_t num_inputs, int64_t num_params,
                                   const moe_cuda_arg_t *results,
                                   int64_t num_results, void (*entry)(void **),
                                   moe_cuda_model_state_t **state) {
  runModelOnce(args, params, num_inputs, num_params, results, num_results,
               entry, state, /*keepResults=*/false);
}

extern "C" void moe_cuda_run_model_device(
    void **args, const moe_cuda_arg_t *params, int64_t num_inputs,
    int64_t num_params, const moe_cuda_arg_t *results, int64_t num_results,
    void (*entry)(void **), moe_cuda_model_state_t **state) {
  runModelOnce(args, params, num_inputs, num_params, results, num_results,
               entry, state, /*keepResults=*/true);
}

extern "C" void *moe_cuda_device_alloc(size_t size) {
  (void)moe_cuda_take_error();
  Driver *driver = usableDriver();
  if (!driver || size == 0)
    return nullptr;
  ScopedContext scope(*driver);
  CUdeviceptr ptr = 0;
  if (!scope.ok() || !allocateDeviceMemory(*driver, ptr, size, nullptr,
                                           /*what=*/nullptr))
    return nullptr;
  // Usable on any stream once this returns.
  if (driver->streamOrderedAllocation &&
      !check(*driver, driver->cuStreamSynchronize(nullptr),
             "cuStreamSynchronize")) {
    freeDeviceMemory(*driver, ptr, nullptr, /*record=*/false);
    return nullptr;
  }
  return reinterpret_cast<void *>(ptr);
}

extern "C" void moe_cuda_device_free(void *ptr) {
  Driver &driver = getDriver();
  if (!ptr || driver.failed())
    return;
  if (driver.cuCtxPushCurrent_v2(driver.context) != kSuccess)
    return;
  freeDeviceMemory(driver, reinterpret_cast<CUdeviceptr>(ptr), nullptr,
                   /*record=*/false);
  driver.cuCtxPopCurrent_v2(nullptr);
}

extern "C" int moe_cuda_device_copy(void *dst, const void *src, size_t size) {
  (void)moe_cuda_take_error();
  Driver *driver = usableDriver();
  if (!driver)
    return 1;
  if (size == 0)
    return 0;
  if (!dst || !src) {
    recordError("moe: copy of device memory from or to a null pointer");
    return 1;
  }
  ScopedContext scope(*driver);
  bool ok = scope.ok() &&
            check(*driver,
                  driver->cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                                        reinterpret_cast<CUdeviceptr>(src),
                                        size, nullptr),
                  "cuMemcpyAsync") &&
            check(*driver, driver->cuStreamSynchronize(nullptr),
                  "cuStreamSynchronize");
  return ok ? 0 : 1;
}

extern "C" void moe_cuda_release_model(moe_cuda_model_state_t **state) {
  if (!state || !*state)
    return;
  moe_cuda_model_state *model = *state;
  {
    std::lock_guard<std::mutex> lock(model->mutex);
    Driver &driver = getDriver();
    if (!driver.failed()) {
      ScopedContext scope(driver);
      if (scope.ok())
        model->release(driver);
    }
    model->weights.clear();
  }
  // The state stays (a later run reuses it): the library may run again.
}

extern "C" double moe_cuda_device_ms(moe_cuda_model_state_t **state) {
  return state && *state ? (*state)->lastDeviceMs.load() : -1.0;
}

//===----------------------------------------------------------------------===//
// The GPU tier of the expert cache
//===----------------------------------------------------------------------===//

struct moe_cuda_tier {
  CUstream copies = nullptr;
  /// Per slot: recorded on the copy stream after its last load, and on a
  /// run's stream at its last release. Waiting for an event never recorded
  /// waits for nothing.
  std::vector<CUevent> loaded, released;
};

namespace {
void destroyTier(moe_cuda_tier_t *tier) {
  if (!tier)
    return;
  Driver &driver = getDriver();
  if (!driver.failed() &&
      driver.cuCtxPushCurrent_v2(driver.context) == kSuccess) {
    if (tier->copies) {
      driver.cuStreamSynchronize(tier->copies);
      driver.cuStreamDestroy_v2(tier->copies);
    }
    for (std::vector<CUevent> *events : {&tier->loaded, &tier->released})
      for (CUevent event : *events)
        if (event)
          driver.cuEventDestroy_v2(event);
    driver.cuCtxPopCurrent_v2(nullptr);
  }
  delete tier;
}

moe_cuda_tier_t *createTier(size_t numSlots) {
  (void)moe_cuda_take_error();
  Driver *driver = usableDriver();
  if (!driver)
    return nullptr;
  ScopedContext scope(*driver);
  if (!scope.ok())
    return nullptr;
  auto *tier = new moe_cuda_tier;
  tier->loaded.assign(numSlots, nullptr);
  tier->released.assign(numSlots, nullptr);
  bool ok =
      check(*driver, driver->cuStreamCreate(&tier->copies, kStreamNonBlocking),
            "cuStreamCreate", "the expert cache's copy stream");
  for (size_t i = 0; ok && i < numSlots; ++i)
    ok = check(*driver,
               driver->cuEventCreate(&tier->loaded[i], kEventDisableTiming),
               "cuEventCreate") &&
         check(*driver,
               driver->cuEventCreate(&tier->released[i], kEventDisableTiming),
               "cuEventCreate");
  if (ok)
    return tier;
  const char *taken = moe_cuda_take_error();
  std::string error = taken ? taken : "moe: cannot create the expert cache";
  destroyTier(tier);
  recordError(error);
  return nullptr;
}

/// The tier's driver with the context current for `scope`, or null (an
/// error recorded) for a bad slot or an unusable driver.
Driver *tierDriver(moe_cuda_tier_t *tier, size_t slot) {
  Driver *driver = usableDriver();
  if (driver && (!tier || slot >= tier->loaded.size())) {
    recordError(format("moe: expert cache slot %zu does not exist", slot));
    return nullptr;
  }
  return driver;
}

/// `op(driver)` for `slot` of `tier` with the context current: 0 if it
/// returned true, else 1 (its error recorded).
template <typename Op>
int onTierSlot(moe_cuda_tier_t *tier, size_t slot, Op op) {
  Driver *driver = tierDriver(tier, slot);
  if (!driver)
    return 1;
  ScopedContext scope(*driver);
  return scope.ok() && op(*driver) ? 0 : 1;
}

/// Whether the `count` regions of a load are one strided copy: equal sizes,
/// and sources and destinations each a constant pitch apart (the expert
/// cache lays a layer's tensors out so). Each copy costs the copy engine
/// about 2 us beyond its bytes on an H200 (bench/gpu/h2d_chunks.py), a
/// tenth of a 1 MB slice's time.
bool isStridedLoad(size_t count, void *const *dst, const void *const *src,
                   const size_t *bytes, size_t &dstPitch, size_t &srcPitch) {
  if (count < 2)
    return false;
  auto at = [](const void *p) { return reinterpret_cast<uintptr_t>(p); };
  if (at(dst[1]) <= at(dst[0]) || at(src[1]) <= at(src[0]))
    return false;
  dstPitch = at(dst[1]) - at(dst[0]);
  srcPitch = at(src[1]) - at(src[0]);
  // The driver takes pitches up to 2^31 - 1 bytes (CU_DEVICE_ATTRIBUTE_
  // MAX_PITCH on current GPUs); larger ones are separate copies.
  constexpr size_t kMaxPitch = (size_t(1) << 31) - 1;
  if (dstPitch > kMaxPitch || srcPitch > kMaxPitch || bytes[0] > dstPitch ||
      bytes[0] > srcPitch)
    return false;
  for (size_t i = 1; i < count; ++i)
    if (bytes[i] != bytes[0] || at(dst[i]) != at(dst[0]) + i * dstPitch ||
        at(src[i]) != at(src[0]) + i * srcPitch)
      return false;
  return true;
}

int loadTier(moe_cuda_tier_t *tier, size_t slot, size_t count, void *const *dst,
             const void *const *src, const size_t *bytes) {
  return onTierSlot(tier, slot, [&](Driver &driver) {
    bool ok = check(
        driver, driver.cuStreamWaitEvent(tier->copies, tier->released[slot], 0),
        "cuStreamWaitEvent", "an expert load");
    size_t dstPitch = 0, srcPitch = 0;
    if (ok && driver.cuMemcpy2DAsync_v2 &&
        isStridedLoad(count, dst, src, bytes, dstPitch, srcPitch)) {
      Memcpy2D copy = {};
      copy.srcMemoryType = kMemoryTypeHost;
      copy.srcHost = src[0];
      copy.srcPitch = srcPitch;
      copy.dstMemoryType = kMemoryTypeDevice;
      copy.dstDevice = reinterpret_cast<CUdeviceptr>(dst[0]);
      copy.dstPitch = dstPitch;
      copy.WidthInBytes = bytes[0];
      copy.Height = count;
      // Refused (a limit of this driver): the copies one by one below.
      if (driver.cuMemcpy2DAsync_v2(&copy, tier->copies) == kSuccess)
        count = 0;
    }
    for (size_t i = 0; ok && i < count; ++i)
      ok = check(
          driver,
          driver.cuMemcpyHtoDAsync_v2(reinterpret_cast<CUdeviceptr>(dst[i]),
                                      src[i], bytes[i], tier->copies),
          "cuMemcpyHtoDAsync", "an expert load");
    return ok &&
           check(driver, driver.cuEventRecord(tier->loaded[slot], tier->copies),
                 "cuEventRecord", "an expert load");
  });
}

int acquireTier(moe_cuda_tier_t *tier, size_t slot) {
  return onTierSlot(tier, slot, [&](Driver &driver) {
    return check(driver,
                 driver.cuStreamWaitEvent(runStream(), tier->loaded[slot], 0),
                 "cuStreamWaitEvent", "an expert acquire");
  });
}

int waitTier(moe_cuda_tier_t *tier, size_t slot) {
  return onTierSlot(tier, slot, [&](Driver &driver) {
    return check(driver, driver.cuEventSynchronize(tier->loaded[slot]),
                 "cuEventSynchronize", "an expert load");
  });
}

int releaseTier(moe_cuda_tier_t *tier, size_t slot) {
  return onTierSlot(tier, slot, [&](Driver &driver) {
    return check(driver,
                 driver.cuEventRecord(tier->released[slot], runStream()),
                 "cuEventRecord", "an expert release");
  });
}
} // namespace

extern "C" const moe_cuda_tier_api_t *moe_cuda_tier_api(void) {
  static const moe_cuda_tier_api_t api = {createTier,
                                          destroyTier,
                                          loadTier,
                                          acquireTier,
                                          releaseTier,
                                          moe_cuda_host_alloc,
                                          moe_cuda_host_free,
                                          moe_cuda_device_alloc,
                                          moe_cuda_device_free,
                                          moe_cuda_take_error,
                                          waitTier};
  return &api;
}
