/*===- fake_tier_model.c - A model library with a pretend GPU tier --------===*\
|*                                                                          *|
|* The expert cache's GPU tier (moe_model_cuda_tier_api, docs/ExpertCache.md)*|
|* over host memory, and a model that calls the cache as the code of        *|
|* convert-moe-to-gpu does, so that the runtime's GPU tier runs without a   *|
|* GPU. The model: y[i] = (w[ids[i]], v[ids[i]]) (two 2x4 matrices per     *|
|* expert, flattened), 6 experts in 3 slots (expert 5 pinned). As the      *|
|* generated host code: every                                               *|
|* expert with rows is prefetched, then batches: acquire in expert order    *|
|* until the cache returns -1, "run" the batch through the slots, release.  *|
|* The pretend tier checks the ordering contract: no load into a slot that *|
|* is acquired and not released, no acquire of a slot never loaded, no wait *|
|* for a slot never loaded (FAKE_TIER_PREDICT adds predictions). Printed    *|
|* to stderr when the library is unloaded: violations, loads (and how many *|
|* were one strided copy: the cache's layout of a layer's tensors), batches.*|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include "moe/runtime/cuda.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kExperts = 6, kValues = 8 };

typedef struct {
  int32_t *allocated;
  int32_t *aligned;
  int64_t offset;
  int64_t sizes[1];
  int64_t strides[1];
} IdsRef;

typedef struct {
  float *allocated;
  float *aligned;
  int64_t offset;
  int64_t sizes[3];
  int64_t strides[3];
} SlotsRef;

typedef struct {
  float *allocated;
  float *aligned;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
} OutRef;

const char *moe_model_signature(void) {
  return "moe-model 1\n"
         "input ids i32 ?\n"
         "weight w f32 6x2x4 offset=0 bytes=192 layer=0\n"
         "weight v f32 6x2x4 offset=192 bytes=192 layer=0\n"
         "cache 0 experts=6 slots=3 pinned=5\n"
         "output y f32 2\n";
}

/* The runtime's hook table (moe_host_api_t). */
typedef struct {
  void *ctx;
  int64_t (*acquire)(void *, int64_t, int64_t);
  void (*release)(void *, int64_t, int64_t);
  void (*prefetch)(void *, int64_t, int64_t);
  void (*predict)(void *, int64_t, int64_t);
  void (*trace)(void *, int64_t, int64_t, int64_t, int64_t);
  void (*fail)(void *, const char *);
} HostAPI;
static const HostAPI *host;
/* The runtime calls this through a pointer to its C++ type of the table
 * (moe::runtime::HostAPI), which no C type matches for a sanitizer build's
 * function-type check: left unchecked, as the compiled libraries' (defined in
 * LLVM IR) are. */
__attribute__((no_sanitize("function"))) void
moe_model_bind_host(const HostAPI *api) {
  host = api;
}

/* The pretend tier, with the types of moe/runtime/cuda.h (a sanitizer build
 * checks the types of functions called through pointers). */
struct moe_cuda_tier {
  size_t slots;
  int *loaded, *held;
};
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static long violations, loads, strided, batches, live;
/* The pitches of the first strided load: every later one has the same. */
static ptrdiff_t dstPitch, srcPitch;

static moe_cuda_tier_t *create(size_t slots) {
  moe_cuda_tier_t *tier = calloc(1, sizeof(moe_cuda_tier_t));
  tier->slots = slots;
  tier->loaded = calloc(slots, sizeof(int));
  tier->held = calloc(slots, sizeof(int));
  return tier;
}
static void destroy(moe_cuda_tier_t *tier) {
  if (!tier)
    return;
  free(tier->loaded);
  free(tier->held);
  free(tier);
}
static int load(moe_cuda_tier_t *tier, size_t slot, size_t count,
                void *const *dst, const void *const *src, const size_t *bytes) {
  pthread_mutex_lock(&mutex);
  if (slot >= tier->slots || tier->held[slot])
    ++violations;
  /* The cache lays a layer's tensors out so that an expert's slices are one
   * strided copy: equal sizes, sources and destinations a pitch apart. */
  if (count == 2 && bytes[0] == bytes[1]) {
    ptrdiff_t dp = (const char *)dst[1] - (const char *)dst[0];
    ptrdiff_t sp = (const char *)src[1] - (const char *)src[0];
    if (!dstPitch) {
      dstPitch = dp;
      srcPitch = sp;
    }
    if (dp == dstPitch && sp == srcPitch && dp >= (ptrdiff_t)bytes[0] &&
        sp >= (ptrdiff_t)bytes[0])
      ++strided;
  }
  for (size_t i = 0; i < count; ++i)
    memcpy(dst[i], src[i], bytes[i]);
  tier->loaded[slot] = 1;
  ++loads;
  pthread_mutex_unlock(&mutex);
  return 0;
}
static int acquire(moe_cuda_tier_t *tier, size_t slot) {
  pthread_mutex_lock(&mutex);
  if (slot >= tier->slots || !tier->loaded[slot])
    ++violations;
  else
    ++tier->held[slot];
  pthread_mutex_unlock(&mutex);
  return 0;
}
static int release(moe_cuda_tier_t *tier, size_t slot) {
  pthread_mutex_lock(&mutex);
  if (slot >= tier->slots || tier->held[slot] <= 0)
    ++violations;
  else
    --tier->held[slot];
  pthread_mutex_unlock(&mutex);
  return 0;
}
static int wait(moe_cuda_tier_t *tier, size_t slot) {
  pthread_mutex_lock(&mutex);
  if (slot >= tier->slots || !tier->loaded[slot])
    ++violations;
  pthread_mutex_unlock(&mutex);
  return 0;
}
static void *alloc(size_t bytes) {
  __atomic_add_fetch(&live, 1, __ATOMIC_SEQ_CST);
  return malloc(bytes);
}
static void dealloc(void *p) {
  if (p)
    __atomic_sub_fetch(&live, 1, __ATOMIC_SEQ_CST);
  free(p);
}
static const char *takeError(void) { return NULL; }

static const moe_cuda_tier_api_t api = {create,  destroy,   load,    acquire,
                                        release, alloc,     dealloc, alloc,
                                        dealloc, takeError, wait};
const moe_cuda_tier_api_t *moe_model_cuda_tier_api(void) { return &api; }

void moe_model_run(void **args) {
  OutRef *y = (OutRef *)args[0];
  const IdsRef *ids = (const IdsRef *)args[1];
  const SlotsRef *w = (const SlotsRef *)args[2];
  const SlotsRef *v = (const SlotsRef *)args[3];
  int64_t n = ids->sizes[0];
  int rows[kExperts] = {0};
  for (int64_t i = 0; i < n; ++i) {
    int32_t id = ids->aligned[ids->offset + i * ids->strides[0]];
    if (id >= 0 && id < kExperts)
      ++rows[id];
  }
  float *out = malloc(sizeof(float) * (size_t)(n * 2 * kValues + 1));
  /* FAKE_TIER_PREDICT: pre-gating predictions of the same experts first,
   * loaded by the cache's worker thread while this one goes on. */
  if (getenv("FAKE_TIER_PREDICT"))
    for (int e = kExperts - 1; e >= 0; --e)
      if (rows[e])
        host->predict(host->ctx, 0, e);
  for (int e = 0; e < kExperts; ++e)
    if (rows[e])
      host->prefetch(host->ctx, 0, e);
  for (int first = 0; first < kExperts;) {
    int64_t slot[kExperts];
    int next = first;
    for (int e = 0; e < kExperts; ++e)
      slot[e] = -1;
    for (; next < kExperts; ++next) {
      if (!rows[next])
        continue;
      slot[next] = host->acquire(host->ctx, 0, next);
      if (slot[next] < 0)
        break;
    }
    ++batches;
    for (int64_t i = 0; i < n; ++i) {
      int32_t id = ids->aligned[ids->offset + i * ids->strides[0]];
      if (id < 0 || id >= kExperts || slot[id] < 0)
        continue;
      for (int j = 0; j < kValues; ++j) {
        out[i * 2 * kValues + j] =
            w->aligned[w->offset + slot[id] * kValues + j];
        out[i * 2 * kValues + kValues + j] =
            v->aligned[v->offset + slot[id] * kValues + j];
      }
    }
    for (int e = first; e < next; ++e)
      if (rows[e])
        host->release(host->ctx, 0, e);
    first = next > first ? next : kExperts;
  }
  memset(y, 0, sizeof(*y));
  y->allocated = y->aligned = out;
  y->sizes[0] = n;
  y->sizes[1] = 2 * kValues;
  y->strides[0] = 2 * kValues;
  y->strides[1] = 1;
}

__attribute__((destructor)) static void report(void) {
  fprintf(stderr,
          "fake tier: %ld violations, %ld loads (%ld strided), %ld batches, "
          "%ld live allocations\n",
          violations, loads, strided, batches, live);
}
