/*===- cuda.h - The CUDA device of the moe-mlir runtime -----------*- C -*-===*
 *
 * Part of the moe-mlir project.
 *
 *===----------------------------------------------------------------------===*
 *
 * MoERuntimeCUDA (runtime/cuda) implements the `mgpu*` functions that MLIR's
 * gpu-to-llvm lowering calls, on the CUDA driver API loaded at run time with
 * dlopen("libcuda.so.1") (or $MOE_CUDA_DRIVER). Nothing links against libcuda:
 * a library compiled with `moe-compile --target=cuda` loads on a machine
 * without a driver, and its first GPU call records an error that
 * `moe_model_invoke` returns as a status. See docs/CUDA.md.
 *
 * The `mgpu*` functions return nothing or a handle and cannot report errors;
 * each failure is recorded in the calling thread (the first one since the
 * last `moe_cuda_take_error` is kept) and, when a GPU call fails, later GPU
 * calls in that thread do nothing until the error is taken.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_CUDA_H
#define MOE_RUNTIME_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Loads the driver (once per process), initializes it and checks that there
 * is a device. Returns NULL on success, else a message (static storage,
 * stable for the life of the process) such as
 * "moe: no CUDA driver found (libcuda.so.1: cannot open shared object file:
 * No such file or directory); this model was compiled for --target=cuda". */
const char *moe_cuda_driver_error(void);

/* The first error recorded in the calling thread since the last call, or
 * NULL; clears it. The string stays valid until the next call in the thread.
 */
const char *moe_cuda_take_error(void);

/* Page-locked host memory (cuMemHostAlloc / cuMemFreeHost). Returns NULL and
 * records an error on failure; `size` 0 gives NULL without an error. */
void *moe_cuda_host_alloc(size_t size);
void moe_cuda_host_free(void *ptr);

/* The rank and element size of one memref descriptor of the model ABI. */
typedef struct {
  int32_t rank;
  int32_t element_size;
} moe_cuda_arg_t;

/* What a `--target=cuda` library keeps between runs (one per library, in a
 * global of the library): the device copies of its weights and the device
 * time of the last run. Opaque. */
typedef struct moe_cuda_model_state moe_cuda_model_state_t;

/* Runs a model whose code works on device memory; what the `moe_model_run` of
 * a `--target=cuda` library calls. `args` is the ABI's argument array
 * (docs/CompiledModelABI.md): args[0] the result block, then one descriptor
 * per input and weight, described by `params` (the first `num_inputs` are
 * inputs, the rest weights); `results` describes the result descriptors.
 *
 * Inputs in host memory are copied to new device memory on every call;
 * inputs in device memory are used in place. Weights are copied
 * once, by the first call, into device memory kept in `*state` (created on
 * first use) and reused while each weight's host address and size stay the
 * same; calls with the same `state` are serialized. With `state` NULL the
 * weights are copied like inputs. The entry runs on one stream; the results
 * are copied into new malloc'd host memory (the descriptors in args[0] then
 * point to it) and the call's device memory is freed. On any error the result
 * descriptors are zeroed (allocated NULL, extents 0), nothing is leaked and
 * the error is left for `moe_cuda_take_error`. */
void moe_cuda_run_model(void **args, const moe_cuda_arg_t *params,
                        int64_t num_inputs, int64_t num_params,
                        const moe_cuda_arg_t *results, int64_t num_results,
                        void (*entry)(void **), moe_cuda_model_state_t **state);

/* As moe_cuda_run_model, but the results stay in device memory: on success
 * each result descriptor in args[0] points to device memory of its own
 * (allocated == aligned, offset 0, row-major strides; NULL when the result is
 * empty) that the caller owns and frees with moe_cuda_device_free. What the
 * `moe_model_run_device` of a `--target=cuda` library calls.
 *
 * In both functions an input whose data is already in device memory (of
 * device 0) is used in place, without a copy, after the work queued on the
 * legacy default stream; the compiled code does not write its inputs. */
void moe_cuda_run_model_device(void **args, const moe_cuda_arg_t *params,
                               int64_t num_inputs, int64_t num_params,
                               const moe_cuda_arg_t *results,
                               int64_t num_results, void (*entry)(void **),
                               moe_cuda_model_state_t **state);

/* Device memory as the runs allocate it (the device's stream-ordered pool
 * where the driver has one), usable on any stream once this returns. NULL and
 * an error for moe_cuda_take_error on failure; `size` 0 gives NULL without an
 * error. Clears the thread's earlier error first. */
void *moe_cuda_device_alloc(size_t size);

/* Frees device memory from moe_cuda_device_alloc or a result of
 * moe_cuda_run_model_device, ordered after the work queued on the legacy
 * default stream. Never records an error; NULL is allowed. */
void moe_cuda_device_free(void *ptr);

/* Copies `size` bytes between any two of host and device memory and waits
 * for the copy. Returns 0 on success, else non-zero with the error left for
 * moe_cuda_take_error. Clears the thread's earlier error first. */
int moe_cuda_device_copy(void *dst, const void *src, size_t size);

/* Frees the device copies of the weights in `*state` (the next run copies
 * them again); what a library's `moe_model_release` calls. NULL-safe. */
void moe_cuda_release_model(moe_cuda_model_state_t **state);

/* The device time in milliseconds of the last successful run with `state`,
 * from the start of its first kernel or copy after the inputs to the end of
 * its last one before the results are copied back; -1 if unknown (no run yet,
 * a failed run, or a driver without event timing). */
double moe_cuda_device_ms(moe_cuda_model_state_t **state);

/* The GPU tier of the expert cache (docs/ExpertCache.md): experts are
 * copied from page-locked host memory into device slots on a copy stream of
 * their own, ordered against the model runs with two events per slot. The
 * runtime (which does not link this library) reaches these functions
 * through the table a `--target=cuda` library returns from
 * `moe_model_cuda_tier_api`. Errors: a function that returns an int returns
 * non-zero and leaves the error for `take_error`; `create` returns NULL. */
typedef struct moe_cuda_tier moe_cuda_tier_t;
typedef struct {
  /* A copy stream and `num_slots` slots' events. */
  moe_cuda_tier_t *(*create)(size_t num_slots);
  /* Waits for the tier's copies, then frees it. NULL-safe. */
  void (*destroy)(moe_cuda_tier_t *tier);
  /* Queues on the copy stream, after the work the last `release` of `slot`
   * followed, the copies of `count` regions (`bytes[i]` bytes from host
   * memory `src[i]`, page-locked for an asynchronous copy, to device memory
   * `dst[i]`), then marks the slot loaded. Returns at once. */
  int (*load)(moe_cuda_tier_t *tier, size_t slot, size_t count,
              void *const *dst, const void *const *src, const size_t *bytes);
  /* Makes the work queued next by the calling thread's model run (or on
   * the legacy default stream outside a run) wait for the slot's last
   * load. */
  int (*acquire)(moe_cuda_tier_t *tier, size_t slot);
  /* Marks the work the calling thread's model run has queued so far as the
   * slot's last use: a later `load` into it waits for that work. */
  int (*release)(moe_cuda_tier_t *tier, size_t slot);
  /* moe_cuda_host_alloc, moe_cuda_host_free, moe_cuda_device_alloc,
   * moe_cuda_device_free and moe_cuda_take_error. */
  void *(*host_alloc)(size_t size);
  void (*host_free)(void *ptr);
  void *(*device_alloc)(size_t size);
  void (*device_free)(void *ptr);
  const char *(*take_error)(void);
  /* Waits (on the host) for the slot's last load to complete. */
  int (*wait)(moe_cuda_tier_t *tier, size_t slot);
} moe_cuda_tier_api_t;

/* The table above (static storage). */
const moe_cuda_tier_api_t *moe_cuda_tier_api(void);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_CUDA_H */
