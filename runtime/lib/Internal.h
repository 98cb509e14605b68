//===- Internal.h - Helpers shared by the runtime sources -------*- C++ -*-===//
//
// Not installed, not part of the C API.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIB_INTERNAL_H
#define MOE_RUNTIME_LIB_INTERNAL_H

#include "moe/runtime/runtime.h"

#include <cstdint>
#include <string>

namespace moe::runtime {

/// Creates a status holding `message`.
moe_status_t *makeStatus(const std::string &message);

/// Formats extents as the ABI does: "2x3", "?x4" (for MOE_DYNAMIC_DIM) or
/// "scalar" for rank 0.
std::string formatDims(const int64_t *dims, size_t rank);

/// Multiplies the extents, returning false on a negative extent or overflow
/// of `limit`.
bool checkedNumElements(const int64_t *dims, size_t rank, int64_t limit,
                        int64_t &result);

/// Quotes a path for a message: 'path'.
std::string quote(const std::string &s);

/// Escapes control characters as \xNN so that text read from a file keeps a
/// message on one line.
std::string escape(const std::string &s);

} // namespace moe::runtime

#endif // MOE_RUNTIME_LIB_INTERNAL_H
