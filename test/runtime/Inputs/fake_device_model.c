/*===- fake_device_model.c - A model library with a pretend device
---------===*\
|*                                                                          *|
|* The optional device symbols of docs/CompiledModelABI.md over host memory, *|
|* so that the runtime's device path (moe_model_invoke_device, device       *|
|* tensors and their deleters, moe-run --device-io) runs without a GPU.     *|
|* y = 2 * x, x f32 ?x4. "Device" memory is malloc'd and counted; the count  *|
|* of live allocations is printed to stderr when the library is unloaded.   *|
|* FAKE_DEVICE_FAIL=alloc|copy|run makes that operation fail.               *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  float *allocated;
  float *aligned;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
} MemRef2;

static long live = 0;
static const char *error = NULL;

static int fails(const char *what) {
  const char *env = getenv("FAKE_DEVICE_FAIL");
  return env && strcmp(env, what) == 0;
}

const char *moe_model_signature(void) {
  return "moe-model 1\n"
         "input x f32 ?x4\n"
         "output y f32 2\n";
}

const char *moe_model_take_error(void) {
  const char *taken = error;
  error = NULL;
  return taken;
}

void *moe_model_device_alloc(size_t bytes) {
  if (fails("alloc")) {
    error = "fake: cannot allocate device memory";
    return NULL;
  }
  if (bytes == 0)
    return NULL;
  ++live;
  return malloc(bytes);
}

void moe_model_device_free(void *ptr) {
  if (!ptr)
    return;
  --live;
  free(ptr);
}

int moe_model_device_copy(void *dst, const void *src, size_t bytes) {
  if (fails("copy")) {
    error = "fake: cannot copy";
    return 1;
  }
  memcpy(dst, src, bytes);
  return 0;
}

static void run(void **args, int device) {
  MemRef2 *y = (MemRef2 *)args[0];
  const MemRef2 *x = (const MemRef2 *)args[1];
  int64_t n = x->sizes[0];
  memset(y, 0, sizeof(*y));
  if (device && fails("run")) {
    error = "fake: the kernel failed";
    return;
  }
  size_t bytes = (size_t)n * 4 * sizeof(float);
  float *out =
      device ? moe_model_device_alloc(bytes) : malloc(bytes ? bytes : 1);
  for (int64_t i = 0; i < n * 4; ++i)
    out[i] = 2 * x->aligned[x->offset + i];
  y->allocated = y->aligned = out;
  y->sizes[0] = n;
  y->sizes[1] = 4;
  y->strides[0] = 4;
  y->strides[1] = 1;
}

void moe_model_run(void **args) { run(args, 0); }
void moe_model_run_device(void **args) { run(args, 1); }

__attribute__((destructor)) static void report(void) {
  fprintf(stderr, "fake device: unloaded, %ld live allocations\n", live);
}
