/*===- fake_cuda_driver.c - A pretend libcuda for tests without a GPU -----===*\
|*                                                                          *|
|* The driver entry points that runtime/cuda/CUDAWrappers.cpp loads, over   *|
|* host memory, for MOE_CUDA_DRIVER: "device" memory is calloc'd, copies    *|
|* are memcpy, kernels are not run (a launch only counts). So the host side *|
|* of a --target=cuda library (its allocations, copies, the expert cache's  *|
|* GPU tier) runs on a machine without a GPU; the results are not the       *|
|* model's. At exit it prints to stderr how often each entry point was      *|
|* called ("fake cuda: NAME COUNT", those called at least once) and how     *|
|* many copies touched memory outside every allocation ("fake cuda: bad     *|
|* copies N") and how many allocations were never freed. FAKE_CUDA_FAIL=NAME
makes that entry point fail              *|
|* (CUDA_ERROR_OUT_OF_MEMORY, 2) from its FAKE_CUDA_FAIL_AFTER-th call on   *|
|* (default 0: every call).                                                 *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum { kSuccess = 0, kOutOfMemory = 2, kInvalidValue = 1 };

/* Calls per entry point. */
enum {
#define FAKE_FUNCTIONS(X)                                                      \
  X(cuInit)                                                                    \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuCtxPushCurrent_v2)                                                       \
  X(cuCtxPopCurrent_v2)                                                        \
  X(cuModuleLoadData)                                                          \
  X(cuModuleLoadDataEx)                                                        \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuLaunchKernel)                                                            \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy_v2)                                                        \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamWaitEvent)                                                         \
  X(cuEventCreate)                                                             \
  X(cuEventDestroy_v2)                                                         \
  X(cuEventSynchronize)                                                        \
  X(cuEventRecord)                                                             \
  X(cuEventElapsedTime)                                                        \
  X(cuMemAlloc_v2)                                                             \
  X(cuMemAllocManaged)                                                         \
  X(cuMemAllocAsync)                                                           \
  X(cuMemFree_v2)                                                              \
  X(cuMemFreeAsync)                                                            \
  X(cuMemHostAlloc)                                                            \
  X(cuMemFreeHost)                                                             \
  X(cuMemcpyAsync)                                                             \
  X(cuMemcpyHtoDAsync_v2)                                                      \
  X(cuMemcpy2DAsync_v2)                                                        \
  X(cuMemsetD32Async)                                                          \
  X(cuMemsetD16Async)                                                          \
  X(cuPointerGetAttribute)                                                     \
  X(cuDeviceGetDefaultMemPool)                                                 \
  X(cuMemPoolSetAttribute)
#define FAKE_ENUM(name) k_##name,
  FAKE_FUNCTIONS(FAKE_ENUM)
#undef FAKE_ENUM
      kNumFunctions
};
static const char *const names[] = {
#define FAKE_NAME(name) #name,
    FAKE_FUNCTIONS(FAKE_NAME)
#undef FAKE_NAME
};
static long calls[kNumFunctions];
static long badCopies;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;

/* Counts a call of `fn`; whether it is to fail (FAKE_CUDA_FAIL). */
static int called(int fn) {
  pthread_mutex_lock(&mutex);
  long n = calls[fn]++;
  pthread_mutex_unlock(&mutex);
  const char *fail = getenv("FAKE_CUDA_FAIL");
  if (!fail || strcmp(fail, names[fn]) != 0)
    return 0;
  const char *after = getenv("FAKE_CUDA_FAIL_AFTER");
  return n >= (after ? atol(after) : 0);
}
#define ENTER(name)                                                            \
  if (called(k_##name))                                                        \
  return kOutOfMemory

/* The live allocations: device (1) or page-locked host (0) memory. */
typedef struct {
  char *base;
  size_t bytes;
  int device;
} Allocation;
static Allocation *allocations;
static size_t numAllocations, capacity;

static void *allocate(size_t bytes, int device) {
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p)
    return NULL;
  pthread_mutex_lock(&mutex);
  if (numAllocations == capacity) {
    capacity = capacity ? 2 * capacity : 64;
    allocations = realloc(allocations, capacity * sizeof(Allocation));
  }
  allocations[numAllocations++] = (Allocation){p, bytes, device};
  pthread_mutex_unlock(&mutex);
  return p;
}

static CUresult release(void *p) {
  pthread_mutex_lock(&mutex);
  for (size_t i = 0; i < numAllocations; ++i)
    if (allocations[i].base == p) {
      allocations[i] = allocations[--numAllocations];
      pthread_mutex_unlock(&mutex);
      free(p);
      return kSuccess;
    }
  pthread_mutex_unlock(&mutex);
  return kInvalidValue;
}

/* The allocation holding [p, p + bytes), or NULL. */
static const Allocation *holding(const void *p, size_t bytes) {
  const Allocation *found = NULL;
  pthread_mutex_lock(&mutex);
  for (size_t i = 0; i < numAllocations; ++i) {
    const Allocation *a = &allocations[i];
    if ((const char *)p >= a->base &&
        (const char *)p + bytes <= a->base + a->bytes)
      found = a;
  }
  pthread_mutex_unlock(&mutex);
  return found;
}

/* A copy into `dst` (device memory) from `src` (any memory the host reads,
 * or with `sourceAllocated` one of the allocations above): counted as bad
 * unless `dst` lies inside one device allocation (and `src` inside one
 * allocation). */
static void copy(void *dst, const void *src, size_t bytes,
                 int sourceAllocated) {
  const Allocation *a = holding(dst, bytes);
  if (!a || !a->device || (sourceAllocated && !holding(src, bytes))) {
    pthread_mutex_lock(&mutex);
    ++badCopies;
    pthread_mutex_unlock(&mutex);
    return;
  }
  memmove(dst, src, bytes);
}

CUresult cuInit(unsigned flags) {
  (void)flags;
  ENTER(cuInit);
  return kSuccess;
}
CUresult cuGetErrorName(CUresult error, const char **name) {
  called(k_cuGetErrorName);
  *name = error == kOutOfMemory ? "CUDA_ERROR_OUT_OF_MEMORY"
                                : "CUDA_ERROR_INVALID_VALUE";
  return kSuccess;
}
CUresult cuGetErrorString(CUresult error, const char **text) {
  called(k_cuGetErrorString);
  *text = error == kOutOfMemory ? "out of memory (fake)"
                                : "invalid argument (fake)";
  return kSuccess;
}
CUresult cuDeviceGetCount(int *count) {
  ENTER(cuDeviceGetCount);
  *count = 1;
  return kSuccess;
}
CUresult cuDeviceGet(int *device, int ordinal) {
  ENTER(cuDeviceGet);
  *device = ordinal;
  return kSuccess;
}
static int context, module, function, pool;
CUresult cuDevicePrimaryCtxRetain(void **ctx, int device) {
  (void)device;
  ENTER(cuDevicePrimaryCtxRetain);
  *ctx = &context;
  return kSuccess;
}
CUresult cuCtxPushCurrent_v2(void *ctx) {
  (void)ctx;
  ENTER(cuCtxPushCurrent_v2);
  return kSuccess;
}
CUresult cuCtxPopCurrent_v2(void **ctx) {
  ENTER(cuCtxPopCurrent_v2);
  if (ctx)
    *ctx = &context;
  return kSuccess;
}
CUresult cuModuleLoadData(void **mod, const void *image) {
  (void)image;
  ENTER(cuModuleLoadData);
  *mod = &module;
  return kSuccess;
}
CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned n,
                            int *options, void **values) {
  (void)image, (void)n, (void)options, (void)values;
  ENTER(cuModuleLoadDataEx);
  *mod = &module;
  return kSuccess;
}
CUresult cuModuleUnload(void *mod) {
  (void)mod;
  ENTER(cuModuleUnload);
  return kSuccess;
}
CUresult cuModuleGetFunction(void **fn, void *mod, const char *name) {
  (void)mod, (void)name;
  ENTER(cuModuleGetFunction);
  *fn = &function;
  return kSuccess;
}
CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz,
                        unsigned bx, unsigned by, unsigned bz, unsigned smem,
                        void *stream, void **params, void **extra) {
  (void)fn, (void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz;
  (void)smem, (void)stream, (void)params, (void)extra;
  ENTER(cuLaunchKernel);
  return kSuccess;
}
/* Streams and events are distinct non-null handles (not heap memory, so
 * that a destroy made to fail leaks nothing a leak checker would report). */
static void *handle(void) {
  static char handles[1 << 16];
  static unsigned next;
  pthread_mutex_lock(&mutex);
  void *h = &handles[next++ % sizeof(handles)];
  pthread_mutex_unlock(&mutex);
  return h;
}
CUresult cuStreamCreate(void **stream, unsigned flags) {
  (void)flags;
  ENTER(cuStreamCreate);
  *stream = handle();
  return kSuccess;
}
CUresult cuStreamDestroy_v2(void *stream) {
  (void)stream;
  ENTER(cuStreamDestroy_v2);
  return kSuccess;
}
CUresult cuStreamSynchronize(void *stream) {
  (void)stream;
  ENTER(cuStreamSynchronize);
  return kSuccess;
}
CUresult cuStreamWaitEvent(void *stream, void *event, unsigned flags) {
  (void)stream, (void)event, (void)flags;
  ENTER(cuStreamWaitEvent);
  return kSuccess;
}
CUresult cuEventCreate(void **event, unsigned flags) {
  (void)flags;
  ENTER(cuEventCreate);
  *event = handle();
  return kSuccess;
}
CUresult cuEventDestroy_v2(void *event) {
  (void)event;
  ENTER(cuEventDestroy_v2);
  return kSuccess;
}
CUresult cuEventSynchronize(void *event) {
  (void)event;
  ENTER(cuEventSynchronize);
  return kSuccess;
}
CUresult cuEventRecord(void *event, void *stream) {
  (void)event, (void)stream;
  ENTER(cuEventRecord);
  return kSuccess;
}
CUresult cuEventElapsedTime(float *ms, void *begin, void *end) {
  (void)begin, (void)end;
  ENTER(cuEventElapsedTime);
  *ms = 0.001f;
  return kSuccess;
}
CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
  ENTER(cuMemAlloc_v2);
  *ptr = (CUdeviceptr)(uintptr_t)allocate(bytes, 1);
  return *ptr ? kSuccess : kOutOfMemory;
}
CUresult cuMemAllocManaged(CUdeviceptr *ptr, size_t bytes, unsigned flags) {
  (void)flags;
  ENTER(cuMemAllocManaged);
  *ptr = (CUdeviceptr)(uintptr_t)allocate(bytes, 1);
  return *ptr ? kSuccess : kOutOfMemory;
}
CUresult cuMemAllocAsync(CUdeviceptr *ptr, size_t bytes, void *stream) {
  (void)stream;
  ENTER(cuMemAllocAsync);
  *ptr = (CUdeviceptr)(uintptr_t)allocate(bytes, 1);
  return *ptr ? kSuccess : kOutOfMemory;
}
CUresult cuMemFree_v2(CUdeviceptr ptr) {
  ENTER(cuMemFree_v2);
  return release((void *)(uintptr_t)ptr);
}
CUresult cuMemFreeAsync(CUdeviceptr ptr, void *stream) {
  (void)stream;
  ENTER(cuMemFreeAsync);
  return release((void *)(uintptr_t)ptr);
}
CUresult cuMemHostAlloc(void **ptr, size_t bytes, unsigned flags) {
  (void)flags;
  ENTER(cuMemHostAlloc);
  *ptr = allocate(bytes, 0);
  return *ptr ? kSuccess : kOutOfMemory;
}
CUresult cuMemFreeHost(void *ptr) {
  ENTER(cuMemFreeHost);
  return release(ptr);
}
CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes,
                       void *stream) {
  (void)stream;
  ENTER(cuMemcpyAsync);
  /* Unified addressing: either side may be host memory. */
  memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, bytes);
  return kSuccess;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes,
                              void *stream) {
  (void)stream;
  ENTER(cuMemcpyHtoDAsync_v2);
  copy((void *)(uintptr_t)dst, src, bytes, 0);
  return kSuccess;
}
/* CUDA_MEMCPY2D of cuda.h; host to device only. */
typedef struct {
  size_t srcXInBytes, srcY;
  int srcMemoryType;
  const void *srcHost;
  CUdeviceptr srcDevice;
  void *srcArray;
  size_t srcPitch;
  size_t dstXInBytes, dstY;
  int dstMemoryType;
  void *dstHost;
  CUdeviceptr dstDevice;
  void *dstArray;
  size_t dstPitch;
  size_t WidthInBytes, Height;
} Memcpy2D;
CUresult cuMemcpy2DAsync_v2(const Memcpy2D *c, void *stream) {
  (void)stream;
  ENTER(cuMemcpy2DAsync_v2);
  if (c->srcMemoryType != 1 || c->dstMemoryType != 2 || c->srcXInBytes ||
      c->srcY || c->dstXInBytes || c->dstY || c->WidthInBytes > c->srcPitch ||
      c->WidthInBytes > c->dstPitch)
    return kInvalidValue;
  for (size_t row = 0; row < c->Height; ++row)
    copy((char *)(uintptr_t)c->dstDevice + row * c->dstPitch,
         (const char *)c->srcHost + row * c->srcPitch, c->WidthInBytes, 1);
  return kSuccess;
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned value, size_t count,
                          void *stream) {
  (void)stream;
  ENTER(cuMemsetD32Async);
  for (size_t i = 0; i < count; ++i)
    ((unsigned *)(uintptr_t)dst)[i] = value;
  return kSuccess;
}
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short value, size_t count,
                          void *stream) {
  (void)stream;
  ENTER(cuMemsetD16Async);
  for (size_t i = 0; i < count; ++i)
    ((unsigned short *)(uintptr_t)dst)[i] = value;
  return kSuccess;
}
/* CU_POINTER_ATTRIBUTE_MEMORY_TYPE (2) and _DEVICE_ORDINAL (9) of the
 * allocations above; other pointers are not known to CUDA. */
CUresult cuPointerGetAttribute(void *data, int attribute, CUdeviceptr ptr) {
  ENTER(cuPointerGetAttribute);
  const Allocation *a = holding((const void *)(uintptr_t)ptr, 1);
  if (!a)
    return kInvalidValue;
  if (attribute == 2)
    *(unsigned *)data = a->device ? 2 : 1;
  else if (attribute == 9)
    *(int *)data = 0;
  else
    return kInvalidValue;
  return kSuccess;
}
CUresult cuDeviceGetDefaultMemPool(void **memPool, int device) {
  (void)device;
  ENTER(cuDeviceGetDefaultMemPool);
  *memPool = &pool;
  return kSuccess;
}
CUresult cuMemPoolSetAttribute(void *memPool, int attribute, void *value) {
  (void)memPool, (void)attribute, (void)value;
  ENTER(cuMemPoolSetAttribute);
  return kSuccess;
}

__attribute__((destructor)) static void report(void) {
  for (int i = 0; i < kNumFunctions; ++i)
    if (calls[i])
      fprintf(stderr, "fake cuda: %s %ld\n", names[i], calls[i]);
  fprintf(stderr, "fake cuda: bad copies %ld\n", badCopies);
  size_t device = 0, host = 0;
  for (size_t i = 0; i < numAllocations; ++i)
    ++*(allocations[i].device ? &device : &host);
  fprintf(stderr, "fake cuda: live device allocations %zu, host %zu\n", device,
          host);
}
