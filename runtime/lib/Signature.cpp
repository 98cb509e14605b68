//===- Signature.cpp - The model signature text ---------------------------===//
//
// A strict parser: anything the ABI does not describe is an error naming the
// offending line.
//
//===----------------------------------------------------------------------===//

#include "Signature.h"
#include "Internal.h"

#include <cstring>
#include <set>

using namespace moe::runtime;

/// The largest rank accepted; far above anything a model uses, it keeps
/// descriptor sizes bounded.
static constexpr size_t kMaxRank = 64;

/// Parses a non-negative decimal integer no larger than `limit`.
static bool parseUnsigned(const std::string &s, uint64_t limit,
                          uint64_t &result) {
  if (s.empty() || s.size() > 20)
    return false;
  uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9')
      return false;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (limit - digit) / 10)
      return false;
    value = value * 10 + digit;
  }
  result = value;
  return true;
}

/// Parses `DIMS`: `scalar` or `x`-separated extents, each `?` or a number.
static bool parseDims(const std::string &s, std::vector<int64_t> &dims,
                      std::string &error) {
  dims.clear();
  if (s == "scalar")
    return true;
  size_t start = 0;
  while (true) {
    size_t end = s.find('x', start);
    std::string piece =
        s.substr(start, end == std::string::npos ? end : end - start);
    uint64_t extent;
    if (piece == "?") {
      dims.push_back(MOE_DYNAMIC_DIM);
    } else if (parseUnsigned(piece, INT64_MAX, extent)) {
      dims.push_back(static_cast<int64_t>(extent));
    } else {
      error = "invalid extent '" + piece + "' in dimensions '" + s + "'";
      return false;
    }
    if (dims.size() > kMaxRank) {
      error = "rank exceeds " + std::to_string(kMaxRank) + " in dimensions '" +
              s + "'";
      return false;
    }
    if (end == std::string::npos)
      return true;
    start = end + 1;
  }
}

/// Parses `KEY=VALUE` with an unsigned value.
static bool parseKeyValue(const std::string &token, const char *key,
                          uint64_t &value) {
  size_t keyLength = std::strlen(key);
  if (token.compare(0, keyLength, key) != 0 || token.size() <= keyLength ||
      token[keyLength] != '=')
    return false;
  return parseUnsigned(token.substr(keyLength + 1), UINT64_MAX, value);
}

/// Splits on runs of spaces.
static std::vector<std::string> splitTokens(const std::string &line) {
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < line.size()) {
    if (line[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = line.find(' ', i);
    if (end == std::string::npos)
      end = line.size();
    tokens.push_back(line.substr(i, end - i));
    i = end;
  }
  return tokens;
}

/// Parses `cache L experts=E slots=S [pinned=a,b,...]`.
static std::string parseCache(const std::vector<std::string> &tokens,
                              Signature &sig) {
  if (tokens.size() != 4 && tokens.size() != 5)
    return "expected 'cache L experts=E slots=S [pinned=A,B,...]', got " +
           std::to_string(tokens.size()) + " fields";
  CacheSpec cache;
  uint64_t layer, experts, slots;
  if (!parseUnsigned(tokens[1], INT32_MAX, layer))
    return "invalid cache layer '" + tokens[1] + "'";
  if (!parseKeyValue(tokens[2], "experts", experts) || experts < 1 ||
      experts > INT32_MAX)
    return "expected 'experts=E' (E >= 1), got '" + tokens[2] + "'";
  if (!parseKeyValue(tokens[3], "slots", slots) || slots < 1 || slots > experts)
    return "expected 'slots=S' with 1 <= S <= " + std::to_string(experts) +
           ", got '" + tokens[3] + "'";
  cache.layer = static_cast<int64_t>(layer);
  cache.experts = static_cast<int64_t>(experts);
  cache.slots = static_cast<int64_t>(slots);
  if (tokens.size() == 5) {
    const std::string &list = tokens[4];
    if (list.compare(0, 7, "pinned=") != 0)
      return "expected 'pinned=A,B,...', got '" + list + "'";
    size_t start = 7;
    std::set<int64_t> seen;
    while (true) {
      size_t end = list.find(',', start);
      uint64_t e;
      if (!parseUnsigned(list.substr(start, end == std::string::npos
                                                ? std::string::npos
                                                : end - start),
                         experts - 1, e) ||
          !seen.insert(static_cast<int64_t>(e)).second)
        return "invalid pinned expert list '" + list + "'";
      cache.pinned.push_back(static_cast<int64_t>(e));
      if (end == std::string::npos)
        break;
      start = end + 1;
    }
    if (cache.pinned.size() >= slots)
      return "cache " + tokens[1] + " pins " +
             std::to_string(cache.pinned.size()) + " experts in " +
             std::to_string(slots) + " slots";
  }
  for (const CacheSpec &other : sig.caches)
    if (other.layer == cache.layer)
      return "duplicate cache layer " + tokens[1];
  sig.caches.push_back(std::move(cache));
  return "";
}

/// Parses one `input`/`weight`/`output` line into `sig`. Returns an empty
/// string on success, else what is wrong.
static std::string parseEntry(const std::vector<std::string> &tokens,
                              Signature &sig, std::set<std::string> &inputs,
                              std::set<std::string> &weights,
                              std::set<std::string> &outputs) {
  const std::string &kind = tokens[0];
  bool isInput = kind == "input", isWeight = kind == "weight",
       isOutput = kind == "output";
  if (kind == "cache")
    return parseCache(tokens, sig);
  if (!isInput && !isWeight && !isOutput)
    return "unknown entry '" + kind + "'";
  size_t expected = isWeight ? 6 : 4;
  if (isWeight && tokens.size() == 7)
    expected = 7;
  if (tokens.size() != expected) {
    const char *form = isInput    ? "input NAME DTYPE DIMS"
                       : isWeight ? "weight NAME DTYPE DIMS offset=O bytes=B"
                                  : "output NAME DTYPE RANK";
    return "expected '" + std::string(form) + "', got " +
           std::to_string(tokens.size()) + " fields";
  }
  moe_dtype_t dtype;
  if (!moe_dtype_parse(tokens[2].c_str(), &dtype))
    return "unknown dtype '" + tokens[2] + "'";

  std::set<std::string> &names = isInput    ? inputs
                                 : isWeight ? weights
                                            : outputs;
  if (!names.insert(tokens[1]).second)
    return "duplicate " + kind + " name '" + tokens[1] + "'";

  if (isOutput) {
    uint64_t rank;
    if (!parseUnsigned(tokens[3], kMaxRank, rank))
      return "invalid output rank '" + tokens[3] + "'";
    sig.outputs.push_back({tokens[1], dtype, static_cast<size_t>(rank)});
    return "";
  }

  ArgumentSpec arg;
  arg.name = tokens[1];
  arg.dtype = dtype;
  std::string error;
  if (!parseDims(tokens[3], arg.dims, error))
    return error;
  if (isInput) {
    sig.inputs.push_back(std::move(arg));
    return "";
  }

  for (int64_t dim : arg.dims)
    if (dim == MOE_DYNAMIC_DIM)
      return "weight '" + arg.name + "' has a dynamic extent";
  if (!parseKeyValue(tokens[4], "offset", arg.offset))
    return "expected 'offset=O', got '" + tokens[4] + "'";
  if (!parseKeyValue(tokens[5], "bytes", arg.bytes))
    return "expected 'bytes=B', got '" + tokens[5] + "'";
  if (arg.offset % 64 != 0)
    return "weight '" + arg.name + "' offset " + std::to_string(arg.offset) +
           " is not a multiple of 64";
  if (tokens.size() == 7) {
    uint64_t layer;
    if (!parseKeyValue(tokens[6], "layer", layer) || layer > INT32_MAX)
      return "expected 'layer=L', got '" + tokens[6] + "'";
    if (arg.dims.size() < 2)
      return "cached weight '" + arg.name + "' needs rank 2 or more";
    arg.cacheLayer = static_cast<int64_t>(layer);
  }
  int64_t numElements;
  int64_t elementSize = static_cast<int64_t>(moe_dtype_size(dtype));
  if (!checkedNumElements(arg.dims.data(), arg.dims.size(),
                          INT64_MAX / elementSize, numElements))
    return "weight '" + arg.name + "' is too large";
  uint64_t expectedBytes = static_cast<uint64_t>(numElements * elementSize);
  if (arg.bytes != expectedBytes)
    return "weight '" + arg.name + "' of type " + tokens[2] + " and shape " +
           tokens[3] + " has " + std::to_string(expectedBytes) +
           " bytes, not " + std::to_string(arg.bytes);
  sig.weights.push_back(std::move(arg));
  return "";
}

moe_status_t *moe::runtime::parseSignature(const char *text,
                                           const std::string &source,
                                           Signature &result) {
  std::string prefix = "malformed model signature in " + quote(source);
  if (!text)
    return makeStatus(prefix + ": moe_model_signature returned NULL");

  std::vector<std::string> lines;
  const char *p = text;
  while (*p) {
    const char *end = std::strchr(p, '\n');
    if (!end) {
      lines.emplace_back(p);
      break;
    }
    lines.emplace_back(p, end);
    p = end + 1;
  }
  if (lines.empty())
    return makeStatus(prefix + ": the signature is empty");

  Signature sig;
  std::set<std::string> inputs, weights, outputs;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string &line = lines[i];
    std::string where =
        prefix + ", line " + std::to_string(i + 1) + " '" + line + "': ";
    for (char c : line)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        return makeStatus(prefix + ", line " + std::to_string(i + 1) +
                          ": control character in line");
    std::vector<std::string> tokens = splitTokens(line);
    if (tokens.empty())
      return makeStatus(where + "empty line");
    if (i == 0) {
      if (tokens[0] != "moe-model" || tokens.size() != 2)
        return makeStatus(where + "expected 'moe-model 1'");
      if (tokens[1] != "1")
        return makeStatus(where + "unsupported signature version '" +
                          tokens[1] + "' (expected 1)");
      continue;
    }
    std::string error = parseEntry(tokens, sig, inputs, weights, outputs);
    if (!error.empty())
      return makeStatus(where + error);
  }
  // Every cached weight has its cache, and its leading extent is the
  // cache's expert count.
  for (const ArgumentSpec &weight : sig.weights) {
    if (weight.cacheLayer < 0)
      continue;
    const CacheSpec *cache = nullptr;
    for (const CacheSpec &c : sig.caches)
      if (c.layer == weight.cacheLayer)
        cache = &c;
    if (!cache)
      return makeStatus(prefix + ": weight '" + weight.name + "' is in layer " +
                        std::to_string(weight.cacheLayer) +
                        " which has no 'cache' line");
    if (weight.dims[0] != cache->experts)
      return makeStatus(prefix + ": weight '" + weight.name +
                        "' has leading extent " +
                        std::to_string(weight.dims[0]) + " but cache " +
                        std::to_string(cache->layer) + " has " +
                        std::to_string(cache->experts) + " experts");
  }
  result = std::move(sig);
  return nullptr;
}
