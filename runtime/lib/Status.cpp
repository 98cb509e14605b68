//===- Status.cpp - Error statuses and dtypes -----------------------------===//
//
// Implements moe_status_t, the dtype table and the shared helpers of
// Internal.h.
//
//===----------------------------------------------------------------------===//

#include "Internal.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

struct moe_status {
  /// NUL-terminated; points just past the struct for allocated statuses.
  const char *message;
};

/// Returned when allocating a status fails; never freed.
static moe_status outOfMemory = {"out of memory"};

/// Allocates a status with room for a `length`-byte message after it.
static moe_status_t *allocateStatus(size_t length, char *&buffer) {
  void *memory = std::malloc(sizeof(moe_status) + length + 1);
  if (!memory)
    return nullptr;
  auto *status = static_cast<moe_status_t *>(memory);
  buffer = reinterpret_cast<char *>(status + 1);
  status->message = buffer;
  return status;
}

static moe_status_t *copyStatus(const char *message, size_t length) {
  char *buffer;
  moe_status_t *status = allocateStatus(length, buffer);
  if (!status)
    return &outOfMemory;
  std::memcpy(buffer, message, length);
  buffer[length] = '\0';
  return status;
}

moe_status_t *moe_status_make(const char *format, ...) {
  va_list args;
  va_start(args, format);
  va_list copy;
  va_copy(copy, args);
  int length = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (length < 0) {
    va_end(args);
    return copyStatus(format, std::strlen(format));
  }
  char *buffer;
  moe_status_t *status = allocateStatus(static_cast<size_t>(length), buffer);
  if (!status) {
    va_end(args);
    return &outOfMemory;
  }
  std::vsnprintf(buffer, static_cast<size_t>(length) + 1, format, args);
  va_end(args);
  return status;
}

const char *moe_status_message(const moe_status_t *status) {
  return status ? status->message : "OK";
}

void moe_status_free(moe_status_t *status) {
  if (status != &outOfMemory)
    std::free(status);
}

namespace {
struct DTypeInfo {
  const char *name;
  size_t size;
};
} // namespace

static const DTypeInfo dtypeInfos[MOE_DTYPE_COUNT] = {
    {"f32", 4}, {"f64", 8}, {"f16", 2}, {"bf16", 2}, {"i8", 1},
    {"i16", 2}, {"i32", 4}, {"i64", 8}, {"u8", 1},   {"i1", 1},
};

size_t moe_dtype_size(moe_dtype_t dtype) {
  if (dtype < 0 || dtype >= MOE_DTYPE_COUNT)
    return 0;
  return dtypeInfos[dtype].size;
}

const char *moe_dtype_name(moe_dtype_t dtype) {
  if (dtype < 0 || dtype >= MOE_DTYPE_COUNT)
    return "invalid";
  return dtypeInfos[dtype].name;
}

int moe_dtype_parse(const char *name, moe_dtype_t *out) {
  if (!name)
    return 0;
  for (int i = 0; i < MOE_DTYPE_COUNT; ++i) {
    if (std::strcmp(name, dtypeInfos[i].name) == 0) {
      *out = static_cast<moe_dtype_t>(i);
      return 1;
    }
  }
  return 0;
}

namespace moe::runtime {

moe_status_t *makeStatus(const std::string &message) {
  return copyStatus(message.data(), message.size());
}

std::string formatDims(const int64_t *dims, size_t rank) {
  if (rank == 0)
    return "scalar";
  std::string result;
  for (size_t i = 0; i < rank; ++i) {
    if (i)
      result += 'x';
    result += dims[i] == MOE_DYNAMIC_DIM ? "?" : std::to_string(dims[i]);
  }
  return result;
}

bool checkedNumElements(const int64_t *dims, size_t rank, int64_t limit,
                        int64_t &result) {
  int64_t n = 1;
  for (size_t i = 0; i < rank; ++i) {
    if (dims[i] < 0)
      return false;
    if (dims[i] != 0 && n > limit / dims[i])
      return false;
    n *= dims[i];
  }
  result = n;
  return true;
}

std::string quote(const std::string &s) { return "'" + s + "'"; }

std::string escape(const std::string &s) {
  std::string result;
  for (char c : s) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f) {
      result += c;
      continue;
    }
    char buffer[5];
    std::snprintf(buffer, sizeof(buffer), "\\x%02x", byte);
    result += buffer;
  }
  return result;
}

} // namespace moe::runtime
