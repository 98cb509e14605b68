/*===- moe/runtime/runtime.h - MoE runtime C API ----------------*- C -*-===*\
|*                                                                          *|
|* The C API for loading and running models compiled by moe-compile. The   *|
|* model library follows docs/CompiledModelABI.md; this API hides the      *|
|* signature text, the memref descriptors and the weights file.            *|
|*                                                                          *|
|* Every fallible function returns a moe_status_t *: NULL on success, else *|
|* a heap-allocated status the caller frees with moe_status_free.          *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_RUNTIME_H
#define MOE_RUNTIME_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MOE_PRINTF_FORMAT(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define MOE_PRINTF_FORMAT(fmt, args)
#endif

/*===----------------------------------------------------------------------===*/
/* Status                                                                     */
/*===----------------------------------------------------------------------===*/

/// An error. NULL means success; any other value owns a message.
typedef struct moe_status moe_status_t;

/// Creates an error status with a printf-formatted message. Never returns
/// NULL (a static out-of-memory status is returned if allocation fails).
moe_status_t *moe_status_make(const char *format, ...) MOE_PRINTF_FORMAT(1, 2);

/// Returns the message of `status`, or "OK" for NULL. The string lives as long
/// as the status.
const char *moe_status_message(const moe_status_t *status);

/// Frees `status`. NULL is allowed.
void moe_status_free(moe_status_t *status);

/*===----------------------------------------------------------------------===*/
/* Element types                                                              */
/*===----------------------------------------------------------------------===*/

/// The element types of the ABI, in the order the ABI lists them.
typedef enum moe_dtype {
  MOE_DTYPE_F32 = 0,
  MOE_DTYPE_F64,
  MOE_DTYPE_F16,
  MOE_DTYPE_BF16,
  MOE_DTYPE_I8,
  MOE_DTYPE_I16,
  MOE_DTYPE_I32,
  MOE_DTYPE_I64,
  MOE_DTYPE_U8,
  /// Booleans, one byte per element holding 0 or 1.
  MOE_DTYPE_I1,
  MOE_DTYPE_COUNT
} moe_dtype_t;

/// Size of one element in bytes, or 0 for an invalid dtype.
size_t moe_dtype_size(moe_dtype_t dtype);

/// The ABI spelling ("f32", "bf16", ...), or "invalid".
const char *moe_dtype_name(moe_dtype_t dtype);

/// Parses an ABI spelling. Returns 1 and sets `*out` on success, 0 otherwise.
int moe_dtype_parse(const char *name, moe_dtype_t *out);

/*===----------------------------------------------------------------------===*/
/* Tensors                                                                    */
/*===----------------------------------------------------------------------===*/

/// A dense row-major tensor: dtype, rank, extents and a data pointer. Either
/// owns its data (freed by moe_tensor_free) or wraps caller memory.
typedef struct moe_tensor moe_tensor_t;

/// Creates a tensor owning fresh zero-filled, 64-byte-aligned storage.
/// `shape` holds `rank` non-negative extents (may be NULL when rank is 0).
moe_status_t *moe_tensor_create(moe_dtype_t dtype, size_t rank,
                                const int64_t *shape, moe_tensor_t **out);

/// Creates a tensor over existing row-major `data`. If `take_ownership` is
/// non-zero, moe_tensor_free calls free(data); otherwise the caller keeps
/// `data` alive for the tensor's lifetime. The shape is copied.
moe_status_t *moe_tensor_wrap(void *data, moe_dtype_t dtype, size_t rank,
                              const int64_t *shape, int take_ownership,
                              moe_tensor_t **out);

/// Releases the data of a tensor made by moe_tensor_wrap_device.
typedef void (*moe_tensor_deleter_t)(void *data, void *context);

/// Creates a tensor over row-major `data` in CUDA device memory (device 0).
/// If `deleter` is non-NULL, moe_tensor_free calls deleter(data, context)
/// (also for NULL data); otherwise the caller keeps `data` alive for the
/// tensor's lifetime. The shape is copied. A tensor made by moe_tensor_wrap
/// over device memory works as an input too (a CUDA model checks where every
/// input lives); this one also says so through moe_tensor_is_device.
moe_status_t *moe_tensor_wrap_device(void *data, moe_dtype_t dtype, size_t rank,
                                     const int64_t *shape,
                                     moe_tensor_deleter_t deleter,
                                     void *context, moe_tensor_t **out);

/// Frees the tensor (and its data if owned). NULL is allowed.
void moe_tensor_free(moe_tensor_t *tensor);

void *moe_tensor_data(const moe_tensor_t *tensor);
moe_dtype_t moe_tensor_dtype(const moe_tensor_t *tensor);
size_t moe_tensor_rank(const moe_tensor_t *tensor);
/// The `rank` extents; NULL for rank 0.
const int64_t *moe_tensor_shape(const moe_tensor_t *tensor);
/// Product of the extents (1 for rank 0).
int64_t moe_tensor_num_elements(const moe_tensor_t *tensor);
/// moe_tensor_num_elements times the element size.
size_t moe_tensor_byte_size(const moe_tensor_t *tensor);
/// Non-zero if moe_tensor_free releases the data.
int moe_tensor_owns_data(const moe_tensor_t *tensor);
/// Non-zero if the data is in device memory (moe_tensor_wrap_device,
/// moe_model_invoke_device, moe_model_tensor_to_device): the host must not
/// read it.
int moe_tensor_is_device(const moe_tensor_t *tensor);

/*===----------------------------------------------------------------------===*/
/* Models                                                                     */
/*===----------------------------------------------------------------------===*/

/// The value of a dynamic (`?`) extent in moe_model_input_dims.
#define MOE_DYNAMIC_DIM ((int64_t)-1)

/// A loaded model: its library handle, parsed signature and mapped weights.
typedef struct moe_model moe_model_t;

/// The two symbols of the compiled-model ABI.
typedef const char *(*moe_model_signature_fn_t)(void);
typedef void (*moe_model_run_fn_t)(void **args);
/// The optional third symbol: the error of the calling thread's last
/// `moe_model_run`, or NULL (and clears it); see docs/CompiledModelABI.md.
typedef const char *(*moe_model_take_error_fn_t)(void);

/// Loads the model library at `lib_path` (dlopen RTLD_NOW|RTLD_LOCAL), parses
/// its signature and maps its weights. `weights_path` may be NULL: the
/// default is `lib_path` with a trailing ".so" replaced by ".weights" (or
/// ".weights" appended). In every moe_model_load* function the weights file
/// is opened (and must exist) only if the signature has `weight` lines.
moe_status_t *moe_model_load(const char *lib_path, const char *weights_path,
                             moe_model_t **out);

/// Loads the model linked into the running executable: looks the ABI symbols
/// up with dlopen(NULL), so the executable must export them (-rdynamic).
/// `weights_path` may be NULL only if the model has no weights.
moe_status_t *moe_model_load_from_self(const char *weights_path,
                                       moe_model_t **out);

/// Loads a model from its two ABI entry points directly (no dlopen, no
/// -rdynamic needed). `weights_path` may be NULL only if the model has no
/// weights.
moe_status_t *moe_model_load_from_symbols(moe_model_signature_fn_t signature,
                                          moe_model_run_fn_t run,
                                          const char *weights_path,
                                          moe_model_t **out);

/// Sets the optional `moe_model_take_error` of a model loaded with
/// moe_model_load_from_symbols (the other loaders look it up themselves).
void moe_model_set_take_error(moe_model_t *model,
                              moe_model_take_error_fn_t take_error);

/// Unmaps the weights, closes the library and frees the model. NULL is
/// allowed.
void moe_model_free(moe_model_t *model);

/// The device time in milliseconds of the model's last successful
/// moe_model_invoke, for a library that reports it (`--target=cuda`: from its
/// first device operation after the inputs are on the device to its last
/// before the results are copied back); -1 otherwise.
double moe_model_last_device_ms(const moe_model_t *model);

/// The signature text exactly as the library returned it.
const char *moe_model_signature_text(const moe_model_t *model);
/// The weights file in use, or NULL if none was opened.
const char *moe_model_weights_path(const moe_model_t *model);

size_t moe_model_num_inputs(const moe_model_t *model);
const char *moe_model_input_name(const moe_model_t *model, size_t index);
moe_dtype_t moe_model_input_dtype(const moe_model_t *model, size_t index);
size_t moe_model_input_rank(const moe_model_t *model, size_t index);
/// The `rank` extents of input `index`, MOE_DYNAMIC_DIM for `?`; NULL for
/// rank 0.
const int64_t *moe_model_input_dims(const moe_model_t *model, size_t index);

size_t moe_model_num_outputs(const moe_model_t *model);
const char *moe_model_output_name(const moe_model_t *model, size_t index);
moe_dtype_t moe_model_output_dtype(const moe_model_t *model, size_t index);
size_t moe_model_output_rank(const moe_model_t *model, size_t index);

/// Runs the model once. Checks the input count and each input's dtype, rank
/// and static extents, then calls the library's moe_model_run. On success
/// `outputs[i]` receives a new owning tensor per output (free each with
/// moe_tensor_free); on error no output is set. The model may be invoked
/// concurrently from several threads if its compiled code is reentrant.
///
/// A `--target=cuda` model uses inputs whose data is already in device
/// memory in place (no copy); other models need host inputs (an input made
/// by moe_tensor_wrap_device is an error for them).
///
/// (Named `invoke`, not `run`, because the ABI's own entry point is called
/// `moe_model_run` and both are linked into standalone executables.)
moe_status_t *moe_model_invoke(moe_model_t *model,
                               const moe_tensor_t *const *inputs,
                               size_t n_inputs, moe_tensor_t **outputs,
                               size_t n_outputs);

/// The checks moe_model_invoke makes before it runs anything: the input count
/// and each input's dtype, rank and static extents.
moe_status_t *moe_model_check_inputs(const moe_model_t *model,
                                     const moe_tensor_t *const *inputs,
                                     size_t n_inputs);

/*===----------------------------------------------------------------------===*/
/* Inputs and outputs in device memory (`--target=cuda` models)               */
/*===----------------------------------------------------------------------===*/

/// Non-zero if the model can leave its outputs in device memory and copy
/// tensors to and from it (a library built with moe-compile --target=cuda).
/// Says nothing about whether a driver and a GPU are present.
int moe_model_has_device(const moe_model_t *model);

/// As moe_model_invoke, but the outputs stay in device memory: each
/// `outputs[i]` is a device tensor (moe_tensor_is_device) of its own,
/// row-major, whose memory moe_tensor_free releases through the model's CUDA
/// runtime (also after moe_model_free). Inputs may be in host or device
/// memory. The outputs are complete when this returns. An error for a model
/// without a device ("... was not compiled with moe-compile --target=cuda")
/// and, as for moe_model_invoke, without a CUDA driver or GPU.
moe_status_t *moe_model_invoke_device(moe_model_t *model,
                                      const moe_tensor_t *const *inputs,
                                      size_t n_inputs, moe_tensor_t **outputs,
                                      size_t n_outputs);

/// Copies `tensor` (host or device memory) into new device memory of the
/// model's device: `*out` is a device tensor freed by moe_tensor_free.
moe_status_t *moe_model_tensor_to_device(moe_model_t *model,
                                         const moe_tensor_t *tensor,
                                         moe_tensor_t **out);

/// Copies `tensor` (device or host memory) into a new host tensor.
moe_status_t *moe_model_tensor_to_host(moe_model_t *model,
                                       const moe_tensor_t *tensor,
                                       moe_tensor_t **out);

/*===----------------------------------------------------------------------===*/
/* Expert cache and routing profile (docs/ExpertCache.md)                     */
/*===----------------------------------------------------------------------===*/

/// How the expert cache of a model compiled with --expert-budget behaves.
typedef enum moe_cache_mode {
  /// Every acquired expert is read when needed and dropped after use.
  MOE_CACHE_ONDEMAND = 0,
  /// Experts stay in their slots (LRU eviction, pinned residents); the
  /// experts a layer needs are queued for loading when it starts.
  MOE_CACHE_LRU = 1,
  /// As MOE_CACHE_LRU, plus the pre-gating predictions of later layers are
  /// loaded ahead (the default).
  MOE_CACHE_PREFETCH = 2,
} moe_cache_mode_t;

/// The counters of a model's expert cache.
typedef struct moe_cache_stats {
  /// Experts acquired by the compiled code, and how many were resident then.
  uint64_t acquires, hits;
  /// Acquires that had to wait for a load, and the total time waited.
  uint64_t misses, stall_ns;
  /// Experts read from the weights file: for a layer's own demand, and ahead
  /// of time for a pre-gating prediction.
  uint64_t demand_loads, prefetch_loads;
  /// Prefetched experts later acquired before being evicted.
  uint64_t prefetch_used;
  /// Predictions received from the compiled code (duplicates included).
  uint64_t predictions;
  uint64_t bytes_read, evictions;
  /// Time the I/O thread spent reading (the disk busy with the cache).
  uint64_t read_ns;
  /// Bytes of slot memory held, and experts pinned resident.
  uint64_t slot_bytes, pinned;
  /// Whether the weights file is read with O_DIRECT (else buffered reads
  /// that drop the pages after use).
  int direct_io;
} moe_cache_stats_t;

/// Parses an expert cache budget as `moe-run --expert-budget` and
/// `moe-compile --expert-budget` write it: bytes ("123"; "64K", "512M", "2G"
/// in powers of 1024) or a percentage ("25%"). Returns non-zero and sets
/// `*bytes` (and `*percent` to -1), or `*percent` (and `*bytes` to -1); zero
/// for text that is not a budget, leaving both unchanged.
int moe_parse_expert_budget(const char *text, int64_t *bytes, double *percent);

/// Non-zero if the model keeps some experts in an expert cache.
int moe_model_has_cache(const moe_model_t *model);
/// Rebuilds the expert cache with a new budget and mode: `budget_bytes` of
/// slot memory, or `budget_percent` (0-100) of all cached expert bytes when
/// `budget_bytes` is negative; both negative keep the compiled slot counts.
/// An error if the budget cannot hold one expert of every cached layer.
moe_status_t *moe_model_configure_cache(moe_model_t *model,
                                        int64_t budget_bytes,
                                        double budget_percent,
                                        moe_cache_mode_t mode);
/// Reads the counters (all zero without a cache).
void moe_model_cache_stats(const moe_model_t *model, moe_cache_stats_t *out);
void moe_model_reset_cache_stats(moe_model_t *model);

/// Writes the routing profile gathered by all invocations so far as JSON
/// (the format moe-compile --placement-profile reads).
moe_status_t *moe_model_write_profile(const moe_model_t *model,
                                      const char *path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOE_RUNTIME_RUNTIME_H */
