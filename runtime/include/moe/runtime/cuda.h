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

/* Runs a model whose code works on device memory; what the `moe_model_run` of
 * a `--target=cuda` library calls. `args` is the ABI's argument array
 * (docs/CompiledModelABI.md): args[0] the result block, then one descriptor
 * per input and weight, described by `params`; `results` describes the result
 * descriptors. Copies every input and weight to new device memory, calls
 * `entry` with the same layout of arguments pointing to device descriptors,
 * copies each result into new malloc'd host memory (the descriptors in
 * args[0] then point to it), and frees the device memory. On any error the
 * result descriptors are zeroed (allocated NULL, extents 0), nothing is
 * leaked and the error is left for `moe_cuda_take_error`. */
void moe_cuda_run_model(void **args, const moe_cuda_arg_t *params,
                        int64_t num_params, const moe_cuda_arg_t *results,
                        int64_t num_results, void (*entry)(void **));

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_CUDA_H */
