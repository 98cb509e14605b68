//===- Tensor.cpp - Dense row-major tensors -------------------------------===//
//
// Implements moe_tensor_t.
//
//===----------------------------------------------------------------------===//

#include "Internal.h"

#include <cstdlib>
#include <cstring>
#include <vector>

using namespace moe::runtime;

struct moe_tensor {
  void *data;
  moe_dtype_t dtype;
  std::vector<int64_t> shape;
  int64_t numElements;
  bool ownsData;
  /// Whether `data` is device memory (moe_tensor_wrap_device).
  bool onDevice = false;
  /// Releases `data` instead of free() when set.
  moe_tensor_deleter_t deleter = nullptr;
  void *deleterContext = nullptr;
};

/// Validates dtype and shape and computes the element count and byte size.
static moe_status_t *checkShape(moe_dtype_t dtype, size_t rank,
                                const int64_t *shape, int64_t &numElements,
                                size_t &byteSize) {
  size_t elementSize = moe_dtype_size(dtype);
  if (elementSize == 0)
    return moe_status_make("invalid dtype %d", static_cast<int>(dtype));
  if (rank > 0 && !shape)
    return moe_status_make("tensor of rank %zu has no shape", rank);
  for (size_t i = 0; i < rank; ++i)
    if (shape[i] < 0)
      return moe_status_make("tensor extent %zu is negative (%lld)", i,
                             static_cast<long long>(shape[i]));
  if (!checkedNumElements(shape, rank,
                          INT64_MAX / static_cast<int64_t>(elementSize),
                          numElements))
    return makeStatus("tensor of shape " + formatDims(shape, rank) +
                      " is too large");
  byteSize = static_cast<size_t>(numElements) * elementSize;
  return nullptr;
}

static moe_tensor_t *newTensor(void *data, moe_dtype_t dtype, size_t rank,
                               const int64_t *shape, int64_t numElements,
                               bool ownsData) {
  auto *tensor = new moe_tensor;
  tensor->data = data;
  tensor->dtype = dtype;
  tensor->shape.assign(shape, shape + rank);
  tensor->numElements = numElements;
  tensor->ownsData = ownsData;
  return tensor;
}

moe_status_t *moe_tensor_create(moe_dtype_t dtype, size_t rank,
                                const int64_t *shape, moe_tensor_t **out) {
  int64_t numElements;
  size_t byteSize;
  if (moe_status_t *status =
          checkShape(dtype, rank, shape, numElements, byteSize))
    return status;
  // Round up so that even an empty tensor has a distinct, aligned buffer.
  size_t allocSize = (byteSize + 63) / 64 * 64;
  if (allocSize == 0)
    allocSize = 64;
  void *data = nullptr;
  if (posix_memalign(&data, 64, allocSize) != 0)
    return moe_status_make("cannot allocate %zu bytes for a %s tensor",
                           byteSize, moe_dtype_name(dtype));
  std::memset(data, 0, allocSize);
  *out = newTensor(data, dtype, rank, shape, numElements, true);
  return nullptr;
}

/// The checks of wrapping `data` as a tensor of `shape`: a valid shape, and
/// data unless it is empty.
static moe_status_t *checkWrap(const void *data, moe_dtype_t dtype, size_t rank,
                               const int64_t *shape, int64_t &numElements) {
  size_t byteSize;
  if (moe_status_t *status =
          checkShape(dtype, rank, shape, numElements, byteSize))
    return status;
  if (!data && byteSize != 0)
    return moe_status_make("cannot wrap a NULL pointer as %zu bytes", byteSize);
  return nullptr;
}

moe_status_t *moe_tensor_wrap(void *data, moe_dtype_t dtype, size_t rank,
                              const int64_t *shape, int take_ownership,
                              moe_tensor_t **out) {
  int64_t numElements;
  if (moe_status_t *status = checkWrap(data, dtype, rank, shape, numElements))
    return status;
  *out = newTensor(data, dtype, rank, shape, numElements, take_ownership != 0);
  return nullptr;
}

moe_status_t *moe_tensor_wrap_device(void *data, moe_dtype_t dtype, size_t rank,
                                     const int64_t *shape,
                                     moe_tensor_deleter_t deleter,
                                     void *context, moe_tensor_t **out) {
  int64_t numElements;
  if (moe_status_t *status = checkWrap(data, dtype, rank, shape, numElements))
    return status;
  moe_tensor_t *tensor =
      newTensor(data, dtype, rank, shape, numElements, deleter != nullptr);
  tensor->onDevice = true;
  tensor->deleter = deleter;
  tensor->deleterContext = context;
  *out = tensor;
  return nullptr;
}

void moe_tensor_free(moe_tensor_t *tensor) {
  if (!tensor)
    return;
  if (tensor->deleter)
    tensor->deleter(tensor->data, tensor->deleterContext);
  else if (tensor->ownsData)
    std::free(tensor->data);
  delete tensor;
}

void *moe_tensor_data(const moe_tensor_t *tensor) { return tensor->data; }

moe_dtype_t moe_tensor_dtype(const moe_tensor_t *tensor) {
  return tensor->dtype;
}

size_t moe_tensor_rank(const moe_tensor_t *tensor) {
  return tensor->shape.size();
}

const int64_t *moe_tensor_shape(const moe_tensor_t *tensor) {
  return tensor->shape.empty() ? nullptr : tensor->shape.data();
}

int64_t moe_tensor_num_elements(const moe_tensor_t *tensor) {
  return tensor->numElements;
}

size_t moe_tensor_byte_size(const moe_tensor_t *tensor) {
  return static_cast<size_t>(tensor->numElements) *
         moe_dtype_size(tensor->dtype);
}

int moe_tensor_owns_data(const moe_tensor_t *tensor) {
  return tensor->ownsData ? 1 : 0;
}

int moe_tensor_is_device(const moe_tensor_t *tensor) {
  return tensor->onDevice ? 1 : 0;
}
