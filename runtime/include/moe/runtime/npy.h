/*===- moe/runtime/npy.h - NumPy .npy files ---------------------*- C -*-===*\
|*                                                                          *|
|* Reads .npy format 1.0/2.0/3.0 and writes 1.0. Only little-endian, C-    *|
|* order arrays of <f4 <f8 <f2 i1 i2 i4 i8 u1 b1 are supported; anything   *|
|* else is an error status.                                                 *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_NPY_H
#define MOE_RUNTIME_NPY_H

#include "moe/runtime/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Parses an in-memory .npy image into a new owning tensor. `name` is used in
/// error messages (usually the file path).
moe_status_t *moe_npy_parse(const void *data, size_t size, const char *name,
                            moe_tensor_t **out);

/// Reads the .npy file at `path` into a new owning tensor.
moe_status_t *moe_npy_read(const char *path, moe_tensor_t **out);

/// Writes `tensor` to `path` as a version 1.0 .npy file. bf16 has no .npy
/// equivalent and is an error.
moe_status_t *moe_npy_write(const char *path, const moe_tensor_t *tensor);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOE_RUNTIME_NPY_H */
