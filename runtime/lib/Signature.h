//===- Signature.h - The model signature text -------------------*- C++ -*-===//
//
// Parses the line-oriented signature of docs/CompiledModelABI.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIB_SIGNATURE_H
#define MOE_RUNTIME_LIB_SIGNATURE_H

#include "moe/runtime/runtime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moe::runtime {

/// An `input` or `weight` line. Weights have only static extents.
struct ArgumentSpec {
  std::string name;
  moe_dtype_t dtype;
  /// MOE_DYNAMIC_DIM for `?`.
  std::vector<int64_t> dims;
  /// Weights only: the byte range in the data section.
  uint64_t offset = 0;
  uint64_t bytes = 0;
  /// Weights only: the layer whose expert cache holds its slices
  /// (`layer=L`), or -1.
  int64_t cacheLayer = -1;
};

/// A `cache` line: the expert cache of one layer.
struct CacheSpec {
  int64_t layer = 0;
  int64_t experts = 0;
  int64_t slots = 0;
  std::vector<int64_t> pinned;
};

/// An `output` line.
struct OutputSpec {
  std::string name;
  moe_dtype_t dtype;
  size_t rank;
};

struct Signature {
  std::vector<ArgumentSpec> inputs;
  std::vector<ArgumentSpec> weights;
  std::vector<OutputSpec> outputs;
  std::vector<CacheSpec> caches;
};

/// Parses `text`. On error returns a status naming `source` and the line.
moe_status_t *parseSignature(const char *text, const std::string &source,
                             Signature &result);

} // namespace moe::runtime

#endif // MOE_RUNTIME_LIB_SIGNATURE_H
