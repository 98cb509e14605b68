/* The error path of MoERuntimeCUDA without a usable driver: every mgpu*
 * function returns (NULL handles, nothing launched), the first error of the
 * thread is kept until taken, and moe_cuda_run_model zeroes the results. */
#include "moe/runtime/cuda.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

void *mgpuStreamCreate(void);
void mgpuStreamSynchronize(void *stream);
void mgpuStreamDestroy(void *stream);
void *mgpuMemAlloc(uint64_t size, void *stream, _Bool host_shared);
void mgpuMemFree(void *ptr, void *stream);
void mgpuMemcpy(void *dst, void *src, size_t size, void *stream);
void *mgpuEventCreate(void);
void *mgpuModuleLoadJIT(void *data, int opt_level, size_t size);
void *mgpuModuleGetFunction(void *module, const char *name);
void mgpuModuleUnload(void *module);
void mgpuLaunchKernel(void *function, intptr_t gx, intptr_t gy, intptr_t gz,
                      intptr_t bx, intptr_t by, intptr_t bz, int32_t smem,
                      void *stream, void **params, void **extra);

static int entered = 0;
static void entry(void **args) {
  (void)args;
  entered = 1;
}

static void show(const char *what) {
  const char *error = moe_cuda_take_error();
  printf("%s: %s\n", what, error ? error : "(none)");
}

int main(void) {
  const char *driver = moe_cuda_driver_error();
  printf("driver: %s\n", driver ? driver : "(none)");

  /* The first error is kept; later calls do not replace it. */
  void *stream = mgpuStreamCreate();
  void *ptr = mgpuMemAlloc(1024, stream, 0);
  printf("stream: %s, ptr: %s\n", stream ? "set" : "null",
         ptr ? "set" : "null");
  show("stream");
  show("again");

  /* Zero-sized work is no work and no error. */
  mgpuMemFree(NULL, NULL);
  show("free");

  /* Loading the kernels (as the library constructor does) does not fail;
   * the first use of the module reports why it could not be loaded. */
  static char ptx[] = ".version 7.0\n";
  void *module = mgpuModuleLoadJIT(ptx, 3, sizeof(ptx));
  show("load");
  void *function = mgpuModuleGetFunction(module, "moe_gate");
  printf("function: %s\n", function ? "set" : "null");
  show("get");
  mgpuLaunchKernel(function, 1, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL);
  show("launch");
  mgpuModuleUnload(module);

  void *event = mgpuEventCreate();
  printf("event: %s\n", event ? "set" : "null");
  show("event");
  printf("host: %s\n", moe_cuda_host_alloc(64) ? "set" : "null");
  show("host");

  /* A model run: one rank-1 f32 input of 4 elements, one rank-2 result. */
  float data[4] = {1, 2, 3, 4};
  int64_t input[5] = {(int64_t)(intptr_t)data, (int64_t)(intptr_t)data, 0, 4,
                      1};
  int64_t result[7];
  memset(result, 0x5a, sizeof(result));
  void *args[2] = {result, input};
  moe_cuda_arg_t params[1] = {{1, 4}};
  moe_cuda_arg_t results[1] = {{2, 4}};
  moe_cuda_model_state_t *state = NULL;
  moe_cuda_run_model(args, params, 1, 1, results, 1, entry, &state);
  int zeroed = 1;
  for (int i = 0; i < 7; ++i)
    zeroed = zeroed && result[i] == 0;
  printf("entered: %d, results zeroed: %d\n", entered, zeroed);
  show("run");
  show("run again");
  printf("device ms: %g\n", moe_cuda_device_ms(&state));

  /* Results left on the device, device memory and copies. */
  memset(result, 0x5a, sizeof(result));
  entered = 0;
  moe_cuda_run_model_device(args, params, 1, 1, results, 1, entry, &state);
  zeroed = 1;
  for (int i = 0; i < 7; ++i)
    zeroed = zeroed && result[i] == 0;
  printf("device run entered: %d, results zeroed: %d\n", entered, zeroed);
  show("device run");
  printf("alloc: %s\n", moe_cuda_device_alloc(64) ? "set" : "null");
  show("alloc");
  printf("copy: %d\n", moe_cuda_device_copy(data, data + 2, 8));
  show("copy");
  moe_cuda_device_free(data);
  show("device free");
  moe_cuda_release_model(&state);
  moe_cuda_release_model(NULL);
  return 0;
}
