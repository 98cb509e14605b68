//===- Npy.cpp - NumPy .npy files -----------------------------------------===//
//
// The format is described in numpy/lib/format.py: a magic string, a version,
// a header length, a Python dict literal with 'descr', 'fortran_order' and
// 'shape', and the raw array data.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/npy.h"
#include "Internal.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace moe::runtime;

static constexpr char kNpyMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

namespace {
struct NpyDType {
  const char *descr;
  moe_dtype_t dtype;
};
} // namespace

/// Accepted descriptors; the first one per dtype is what we write. numpy has
/// no bfloat16: bf16 tensors are their raw bits as uint16 (as the Python
/// binding passes them), and moe has no u16 for `<u2` to mean otherwise.
static const NpyDType npyDTypes[] = {
    {"<f4", MOE_DTYPE_F32},  {"<f8", MOE_DTYPE_F64}, {"<f2", MOE_DTYPE_F16},
    {"<u2", MOE_DTYPE_BF16}, {"|i1", MOE_DTYPE_I8},  {"<i1", MOE_DTYPE_I8},
    {"<i2", MOE_DTYPE_I16},  {"<i4", MOE_DTYPE_I32}, {"<i8", MOE_DTYPE_I64},
    {"|u1", MOE_DTYPE_U8},   {"<u1", MOE_DTYPE_U8},  {"|b1", MOE_DTYPE_I1},
    {"<b1", MOE_DTYPE_I1},
};

namespace {
/// A cursor over the header dict literal.
class HeaderParser {
public:
  explicit HeaderParser(const std::string &text) : text(text) {}

  /// Parses the dict; returns an empty string or what is wrong.
  std::string parse(std::string &descr, bool &fortranOrder,
                    std::vector<int64_t> &shape) {
    bool haveDescr = false, haveOrder = false, haveShape = false;
    skipSpace();
    if (!consume('{'))
      return "header is not a dict";
    while (true) {
      skipSpace();
      if (consume('}'))
        break;
      std::string key;
      if (!parseString(key))
        return "expected a quoted key in header";
      skipSpace();
      if (!consume(':'))
        return "expected ':' after '" + escape(key) + "' in header";
      skipSpace();
      if (key == "descr") {
        if (!parseString(descr))
          return "unsupported dtype (only simple dtypes are supported)";
        haveDescr = true;
      } else if (key == "fortran_order") {
        if (!parseBool(fortranOrder))
          return "'fortran_order' is not True or False";
        haveOrder = true;
      } else if (key == "shape") {
        std::string error = parseShape(shape);
        if (!error.empty())
          return error;
        haveShape = true;
      } else {
        return "unexpected key '" + escape(key) + "' in header";
      }
      skipSpace();
      if (consume(','))
        continue;
      skipSpace();
      if (!consume('}'))
        return "expected ',' or '}' in header";
      break;
    }
    skipSpace();
    if (pos != text.size())
      return "trailing characters after the header dict";
    if (!haveDescr || !haveOrder || !haveShape)
      return "header lacks 'descr', 'fortran_order' or 'shape'";
    return "";
  }

private:
  void skipSpace() {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n' ||
                                 text[pos] == '\t' || text[pos] == '\r'))
      ++pos;
  }

  bool consume(char c) {
    if (pos >= text.size() || text[pos] != c)
      return false;
    ++pos;
    return true;
  }

  bool parseString(std::string &result) {
    if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"'))
      return false;
    char quoteChar = text[pos];
    size_t end = text.find(quoteChar, pos + 1);
    if (end == std::string::npos)
      return false;
    result = text.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    return true;
  }

  bool parseBool(bool &result) {
    for (bool value : {true, false}) {
      const char *word = value ? "True" : "False";
      size_t length = std::strlen(word);
      if (text.compare(pos, length, word) == 0) {
        pos += length;
        result = value;
        return true;
      }
    }
    return false;
  }

  std::string parseShape(std::vector<int64_t> &shape) {
    shape.clear();
    if (!consume('('))
      return "'shape' is not a tuple";
    while (true) {
      skipSpace();
      if (consume(')'))
        return "";
      size_t start = pos;
      int64_t value = 0;
      while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
        int64_t digit = text[pos] - '0';
        if (value > (INT64_MAX - digit) / 10)
          return "'shape' extent is too large";
        value = value * 10 + digit;
        ++pos;
      }
      if (pos == start)
        return "'shape' holds something other than non-negative integers";
      shape.push_back(value);
      if (shape.size() > 64)
        return "'shape' has more than 64 dimensions";
      skipSpace();
      if (consume(','))
        continue;
      skipSpace();
      if (!consume(')'))
        return "expected ',' or ')' in 'shape'";
      return "";
    }
  }

  const std::string &text;
  size_t pos = 0;
};
} // namespace

moe_status_t *moe_npy_parse(const void *data, size_t size, const char *name,
                            moe_tensor_t **out) {
  std::string file = quote(name ? name : "<memory>");
  const auto *bytes = static_cast<const uint8_t *>(data);
  if (size < 10 || std::memcmp(bytes, kNpyMagic, sizeof(kNpyMagic)) != 0)
    return makeStatus(file + " is not a .npy file (bad magic)");
  unsigned major = bytes[6], minor = bytes[7];
  size_t headerStart, headerLength;
  if (major == 1) {
    headerStart = 10;
    headerLength = bytes[8] | (size_t)bytes[9] << 8;
  } else if (major == 2 || major == 3) {
    headerStart = 12;
    if (size < headerStart)
      return makeStatus(file + " is truncated in its header");
    headerLength = bytes[8] | (size_t)bytes[9] << 8 | (size_t)bytes[10] << 16 |
                   (size_t)bytes[11] << 24;
  } else {
    return makeStatus(file + " has unsupported .npy version " +
                      std::to_string(major) + "." + std::to_string(minor));
  }
  if (headerLength > size - headerStart)
    return makeStatus(file + " is truncated in its header");

  std::string header(reinterpret_cast<const char *>(bytes + headerStart),
                     headerLength);
  std::string descr;
  bool fortranOrder = false;
  std::vector<int64_t> shape;
  std::string error = HeaderParser(header).parse(descr, fortranOrder, shape);
  if (!error.empty())
    return makeStatus(file + ": malformed .npy header: " + error);
  if (fortranOrder)
    return makeStatus(file + ": Fortran-order arrays are not supported");
  if (!descr.empty() && descr[0] == '>')
    return makeStatus(file + ": big-endian dtype '" + escape(descr) +
                      "' is not supported");
  const NpyDType *match = nullptr;
  for (const NpyDType &candidate : npyDTypes)
    if (descr == candidate.descr)
      match = &candidate;
  if (!match)
    return makeStatus(file + ": unsupported dtype '" + escape(descr) + "'");

  size_t elementSize = moe_dtype_size(match->dtype);
  int64_t numElements;
  size_t dataStart = headerStart + headerLength;
  size_t available = size - dataStart;
  if (!checkedNumElements(shape.data(), shape.size(),
                          INT64_MAX / static_cast<int64_t>(elementSize),
                          numElements) ||
      static_cast<uint64_t>(numElements) * elementSize > available)
    return makeStatus(file + " is truncated: shape " +
                      formatDims(shape.data(), shape.size()) + " of " + descr +
                      " needs more than the " + std::to_string(available) +
                      " data bytes present");
  size_t dataSize = static_cast<size_t>(numElements) * elementSize;
  if (dataSize != available)
    return makeStatus(file + " has " + std::to_string(available - dataSize) +
                      " bytes after the array data");

  moe_tensor_t *tensor;
  if (moe_status_t *status = moe_tensor_create(match->dtype, shape.size(),
                                               shape.data(), &tensor)) {
    moe_status_t *wrapped =
        makeStatus(file + ": " + moe_status_message(status));
    moe_status_free(status);
    return wrapped;
  }
  if (dataSize)
    std::memcpy(moe_tensor_data(tensor), bytes + dataStart, dataSize);
  *out = tensor;
  return nullptr;
}

moe_status_t *moe_npy_read(const char *path, moe_tensor_t **out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeStatus("cannot open " + quote(path) + ": " +
                      std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return makeStatus(quote(path) + " is not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    close(fd);
    return makeStatus(quote(path) + " is not a .npy file (empty)");
  }
  void *mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int mapErrno = errno;
  close(fd);
  if (mapping == MAP_FAILED)
    return makeStatus("cannot map " + quote(path) + ": " +
                      std::strerror(mapErrno));
  moe_status_t *status = moe_npy_parse(mapping, size, path, out);
  munmap(mapping, size);
  return status;
}

moe_status_t *moe_npy_write(const char *path, const moe_tensor_t *tensor) {
  if (moe_tensor_is_device(tensor))
    return makeStatus("cannot write " + quote(path) +
                      ": the tensor is in device memory (copy it to the host "
                      "first, e.g. with moe_model_tensor_to_host)");
  moe_dtype_t dtype = moe_tensor_dtype(tensor);
  const char *descr = nullptr;
  for (const NpyDType &candidate : npyDTypes) {
    if (candidate.dtype == dtype) {
      descr = candidate.descr;
      break;
    }
  }
  if (!descr)
    return makeStatus(std::string("cannot write ") + moe_dtype_name(dtype) +
                      " to " + quote(path) + ": .npy has no such dtype");

  size_t rank = moe_tensor_rank(tensor);
  const int64_t *shape = moe_tensor_shape(tensor);
  std::string header = std::string("{'descr': '") + descr +
                       "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < rank; ++i) {
    if (i)
      header += ", ";
    header += std::to_string(shape[i]);
  }
  header += rank == 1 ? ",), }" : "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 0xffff)
    return makeStatus("cannot write " + quote(path) +
                      ": the .npy header is too long for version 1.0");

  std::string prefix(kNpyMagic, sizeof(kNpyMagic));
  prefix += '\x01';
  prefix += '\x00';
  prefix += static_cast<char>(header.size() & 0xff);
  prefix += static_cast<char>(header.size() >> 8);
  prefix += header;

  FILE *f = std::fopen(path, "wb");
  if (!f)
    return makeStatus("cannot create " + quote(path) + ": " +
                      std::strerror(errno));
  size_t dataSize = moe_tensor_byte_size(tensor);
  bool ok = std::fwrite(prefix.data(), 1, prefix.size(), f) == prefix.size();
  ok = ok && (dataSize == 0 ||
              std::fwrite(moe_tensor_data(tensor), 1, dataSize, f) == dataSize);
  int writeErrno = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    writeErrno = errno;
  }
  if (ok)
    return nullptr;
  unlink(path);
  return makeStatus("cannot write " + quote(path) + ": " +
                    std::strerror(writeErrno));
}
