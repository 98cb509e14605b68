/*===- ModelAlloc.c - Heap allocations of compiled CPU models -------------===*
 *
 * The allocation functions that MLIR's memref lowering calls when it is told
 * to use generic functions (`finalize-memref-to-llvm{use-generic-functions}`,
 * the CPU pipeline's `generic-alloc`), linked into every CPU model library
 * and executable that moe-compile makes (docs/Runtime.md, "Heap memory of a
 * CPU model").
 *
 * A model allocates the same large buffers on every call (gathered rows,
 * hidden activations, expert outputs: tens of MB at T = 1024). glibc serves
 * blocks that large with mmap and returns them with munmap, so every call
 * paid page faults and the kernel's zeroing of fresh pages (about 13% of S2
 * at T = 1024 on a 2-core Zen 5). Here, freed blocks of at least
 * kMinCachedBytes are kept (at most kMaxCached of them and kMaxCachedBytes
 * in all; the oldest go first) and handed out again to a request that they
 * fit within a quarter, at its alignment. Small blocks go to malloc and free.
 *
 * Every block is a plain malloc/aligned_alloc block, so memory that leaves
 * the model (a result buffer the runtime adopts or frees) may be given to
 * `free`; the cache learns a block's size from malloc_usable_size. The cache
 * belongs to the library it is linked into (hidden symbols), is thread-safe,
 * and is emptied when the library is unloaded.
 *===----------------------------------------------------------------------===*/

#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define MOE_HIDDEN __attribute__((visibility("hidden")))

enum {
  kMinCachedBytes = 64 * 1024,
  kMaxCached = 64,
};
static const size_t kMaxCachedBytes = (size_t)4 << 30;

typedef struct {
  void *ptr;
  size_t capacity;
  uint64_t age;
} Entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Entry cache[kMaxCached];
static int cached;
static size_t cachedBytes;
static uint64_t ageCounter;

/* Removes entry `i` (lock held). */
static void *take(int i) {
  void *ptr = cache[i].ptr;
  cachedBytes -= cache[i].capacity;
  cache[i] = cache[--cached];
  return ptr;
}

static void *allocate(size_t align, size_t size) {
  if (size == 0)
    size = 1;
  if (size >= kMinCachedBytes) {
    pthread_mutex_lock(&lock);
    int best = -1;
    for (int i = 0; i < cached; ++i)
      if (cache[i].capacity >= size && cache[i].capacity - size <= size / 4 &&
          (align == 0 || (uintptr_t)cache[i].ptr % align == 0) &&
          (best < 0 || cache[i].capacity < cache[best].capacity))
        best = i;
    void *ptr = best >= 0 ? take(best) : NULL;
    pthread_mutex_unlock(&lock);
    if (ptr)
      return ptr;
  }
  if (align <= _Alignof(max_align_t))
    return malloc(size);
  /* aligned_alloc wants a size that is a multiple of the alignment. */
  size_t rounded = size + (align - size % align) % align;
  return rounded < size ? NULL : aligned_alloc(align, rounded);
}

MOE_HIDDEN void *_mlir_memref_to_llvm_alloc(size_t size) {
  return allocate(0, size);
}

MOE_HIDDEN void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment,
                                                    size_t size) {
  return allocate(alignment, size);
}

MOE_HIDDEN void _mlir_memref_to_llvm_free(void *ptr) {
  if (!ptr)
    return;
  size_t capacity = malloc_usable_size(ptr);
  if (capacity < kMinCachedBytes || capacity > kMaxCachedBytes) {
    free(ptr);
    return;
  }
  pthread_mutex_lock(&lock);
  /* Make room: the oldest entries go. */
  while (cached > 0 &&
         (cached == kMaxCached || cachedBytes + capacity > kMaxCachedBytes)) {
    int oldest = 0;
    for (int i = 1; i < cached; ++i)
      if (cache[i].age < cache[oldest].age)
        oldest = i;
    free(take(oldest));
  }
  cache[cached].ptr = ptr;
  cache[cached].capacity = capacity;
  cache[cached].age = ++ageCounter;
  ++cached;
  cachedBytes += capacity;
  pthread_mutex_unlock(&lock);
}

/* The library is being unloaded: give the cached blocks back. */
__attribute__((destructor)) static void releaseCache(void) {
  pthread_mutex_lock(&lock);
  while (cached > 0)
    free(take(cached - 1));
  pthread_mutex_unlock(&lock);
}
