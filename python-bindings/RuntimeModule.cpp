//===- RuntimeModule.cpp - The runtime half of moe_mlir -------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// `moe_mlir._moe_runtime`: `Model` wraps a loaded model of the runtime C API
// (runtime/include/moe/runtime/runtime.h) and runs it on numpy arrays (and
// on arrays in GPU memory for target="cuda" models). It links the runtime
// only, not MLIR or LLVM: `moe_mlir.load` works on a machine that has the
// compiled model and this package but no MLIR installed (a GPU server).
//
//===----------------------------------------------------------------------===//

#include "PythonErrors.h"
#include "moe/runtime/runtime.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;
using moe::python::raise;

namespace {

/// Owns a runtime status; raises ModelError with its message.
struct StatusDeleter {
  void operator()(moe_status_t *status) const { moe_status_free(status); }
};
using StatusPtr = std::unique_ptr<moe_status_t, StatusDeleter>;

void check(moe_status_t *rawStatus) {
  StatusPtr status(rawStatus);
  if (status)
    raise("ModelError", moe_status_message(status.get()));
}

struct TensorDeleter {
  void operator()(moe_tensor_t *tensor) const { moe_tensor_free(tensor); }
};
using TensorPtr = std::unique_ptr<moe_tensor_t, TensorDeleter>;

//===----------------------------------------------------------------------===//
// Models
//===----------------------------------------------------------------------===//

/// The numpy dtype holding elements of `dtype`; bf16 travels as its raw bits
/// in uint16.
py::dtype toNumpy(moe_dtype_t dtype) {
  switch (dtype) {
  case MOE_DTYPE_F32:
    return py::dtype("float32");
  case MOE_DTYPE_F64:
    return py::dtype("float64");
  case MOE_DTYPE_F16:
    return py::dtype("float16");
  case MOE_DTYPE_BF16:
    return py::dtype("uint16");
  case MOE_DTYPE_I8:
    return py::dtype("int8");
  case MOE_DTYPE_I16:
    return py::dtype("int16");
  case MOE_DTYPE_I32:
    return py::dtype("int32");
  case MOE_DTYPE_I64:
    return py::dtype("int64");
  case MOE_DTYPE_U8:
    return py::dtype("uint8");
  case MOE_DTYPE_I1:
    return py::dtype("bool");
  case MOE_DTYPE_COUNT:
    break;
  }
  raise("ModelError", "invalid element type " + std::to_string(dtype));
}

/// The element type of numpy `dtype`, given that the model expects
/// `expected` (uint16 is bf16 only where bf16 is expected).
std::optional<moe_dtype_t> fromNumpy(const py::dtype &dtype,
                                     moe_dtype_t expected) {
  char kind = dtype.kind();
  py::ssize_t size = dtype.itemsize();
  if (kind == 'f' && size == 4)
    return MOE_DTYPE_F32;
  if (kind == 'f' && size == 8)
    return MOE_DTYPE_F64;
  if (kind == 'f' && size == 2)
    return MOE_DTYPE_F16;
  if (kind == 'i' && size == 1)
    return MOE_DTYPE_I8;
  if (kind == 'i' && size == 2)
    return MOE_DTYPE_I16;
  if (kind == 'i' && size == 4)
    return MOE_DTYPE_I32;
  if (kind == 'i' && size == 8)
    return MOE_DTYPE_I64;
  if (kind == 'u' && size == 1)
    return MOE_DTYPE_U8;
  if (kind == 'u' && size == 2 && expected == MOE_DTYPE_BF16)
    return MOE_DTYPE_BF16;
  if (kind == 'b' && size == 1)
    return MOE_DTYPE_I1;
  return std::nullopt;
}

/// A shape tuple with None for dynamic extents.
py::tuple shapeTuple(const int64_t *dims, size_t rank) {
  py::tuple shape(rank);
  for (size_t i = 0; i < rank; ++i)
    shape[i] = dims[i] == MOE_DYNAMIC_DIM ? py::object(py::none())
                                          : py::object(py::int_(dims[i]));
  return shape;
}

/// Frees a loaded model once the Python model and every DeviceArray it made
/// are gone.
struct ModelDeleter {
  void operator()(moe_model_t *model) const { moe_model_free(model); }
};
using ModelHandle = std::shared_ptr<moe_model_t>;

/// The shape of a tensor as a tuple of extents.
py::tuple tensorShape(const moe_tensor_t *tensor) {
  size_t rank = moe_tensor_rank(tensor);
  const int64_t *dims = moe_tensor_shape(tensor);
  py::tuple shape(rank);
  for (size_t i = 0; i < rank; ++i)
    shape[i] = py::int_(dims[i]);
  return shape;
}

/// A tensor in the device memory of a `target="cuda"` model: a result of
/// `run(..., device=True)` or of `to_device`. Owns the memory (freed with
/// the object, through the model's CUDA runtime) and keeps the model loaded.
/// Exports `__cuda_array_interface__` (version 3) for other GPU libraries.
class DeviceArray {
public:
  DeviceArray(TensorPtr tensor, ModelHandle model)
      : tensor(std::move(tensor)), model(std::move(model)) {}

  const moe_tensor_t *get() const { return tensor.get(); }
  py::tuple shape() const { return tensorShape(tensor.get()); }
  py::dtype dtype() const { return toNumpy(moe_tensor_dtype(tensor.get())); }
  uintptr_t pointer() const {
    return reinterpret_cast<uintptr_t>(moe_tensor_data(tensor.get()));
  }

  /// Copies the tensor into a new numpy array.
  py::array numpy() const {
    moe_tensor_t *host = nullptr;
    moe_status_t *status;
    {
      py::gil_scoped_release release;
      status = moe_model_tensor_to_host(model.get(), tensor.get(), &host);
    }
    check(status);
    TensorPtr owned(host);
    size_t rank = moe_tensor_rank(owned.get());
    const int64_t *dims = moe_tensor_shape(owned.get());
    py::array result(dtype(), std::vector<py::ssize_t>(dims, dims + rank));
    std::memcpy(result.mutable_data(), moe_tensor_data(owned.get()),
                moe_tensor_byte_size(owned.get()));
    return result;
  }

  /// Version 3 of CUDA's array interface: row-major (no strides), complete
  /// when it is read (no stream to wait on), writable.
  py::dict cudaArrayInterface() const {
    py::dict interface;
    interface["shape"] = shape();
    interface["typestr"] = dtype().attr("str");
    interface["data"] = py::make_tuple(pointer(), false);
    interface["strides"] = py::none();
    interface["stream"] = py::none();
    interface["version"] = 3;
    return interface;
  }

private:
  TensorPtr tensor;
  ModelHandle model;
};

/// The row-major strides in bytes of `shape` with `itemSize`-byte elements.
std::vector<int64_t> rowMajorStrides(const std::vector<int64_t> &shape,
                                     int64_t itemSize) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = itemSize;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

class Model {
public:
  Model(const std::string &libraryPath,
        const std::optional<std::string> &weightsPath) {
    moe_model_t *loaded = nullptr;
    moe_status_t *status;
    {
      py::gil_scoped_release release;
      status =
          moe_model_load(libraryPath.c_str(),
                         weightsPath ? weightsPath->c_str() : nullptr, &loaded);
    }
    check(status);
    handle = ModelHandle(loaded, ModelDeleter());
  }
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  std::string signature() const { return moe_model_signature_text(model()); }

  std::optional<std::string> weightsPath() const {
    const char *path = moe_model_weights_path(model());
    return path ? std::optional<std::string>(path) : std::nullopt;
  }

  /// [(name, element type, numpy dtype, shape)] with None for `?`.
  py::list inputs() const {
    py::list specs;
    for (size_t i = 0, e = moe_model_num_inputs(model()); i < e; ++i) {
      moe_dtype_t dtype = moe_model_input_dtype(model(), i);
      specs.append(
          py::make_tuple(moe_model_input_name(model(), i),
                         moe_dtype_name(dtype), toNumpy(dtype),
                         shapeTuple(moe_model_input_dims(model(), i),
                                    moe_model_input_rank(model(), i))));
    }
    return specs;
  }

  /// [(name, element type, numpy dtype, shape)]; the signature gives only
  /// the rank of a result, so every extent is None.
  py::list outputs() const {
    py::list specs;
    for (size_t i = 0, e = moe_model_num_outputs(model()); i < e; ++i) {
      moe_dtype_t dtype = moe_model_output_dtype(model(), i);
      size_t rank = moe_model_output_rank(model(), i);
      std::vector<int64_t> dims(rank, MOE_DYNAMIC_DIM);
      specs.append(py::make_tuple(moe_model_output_name(model(), i),
                                  moe_dtype_name(dtype), toNumpy(dtype),
                                  shapeTuple(dims.data(), rank)));
    }
    return specs;
  }

  /// Runs the model on `args` (numpy arrays and array-likes, DeviceArrays,
  /// objects with `__cuda_array_interface__`); returns numpy arrays, or
  /// DeviceArrays with `device`.
  py::list run(const py::args &args, bool device) {
    if (device)
      requireDevice("run(..., device=True)");
    size_t numInputs = moe_model_num_inputs(model());
    size_t numOutputs = moe_model_num_outputs(model());
    std::vector<moe_tensor_t *> rawOutputs(numOutputs, nullptr);
    if (args.size() != numInputs) {
      // The runtime checks the count before it looks at any input.
      std::vector<const moe_tensor_t *> none(args.size(), nullptr);
      check(moe_model_invoke(model(), none.data(), none.size(),
                             rawOutputs.data(), rawOutputs.size()));
      raise("ModelError", "the model expects " + std::to_string(numInputs) +
                              " inputs, got " + std::to_string(args.size()));
    }

    // Keeps every array whose memory a tensor wraps alive during the call.
    std::vector<py::object> keepAlive;
    std::vector<TensorPtr> wrapped;
    std::vector<const moe_tensor_t *> inputs;
    for (size_t i = 0; i < numInputs; ++i) {
      py::handle arg = args[i];
      if (py::isinstance<DeviceArray>(arg)) {
        inputs.push_back(arg.cast<const DeviceArray &>().get());
        continue;
      }
      TensorPtr tensor = py::hasattr(arg, "__cuda_array_interface__")
                             ? wrapDevice(i, arg)
                             : wrapHost(i, arg, keepAlive);
      inputs.push_back(tensor.get());
      wrapped.push_back(std::move(tensor));
    }

    moe_status_t *status;
    {
      py::gil_scoped_release release;
      status =
          device
              ? moe_model_invoke_device(model(), inputs.data(), inputs.size(),
                                        rawOutputs.data(), rawOutputs.size())
              : moe_model_invoke(model(), inputs.data(), inputs.size(),
                                 rawOutputs.data(), rawOutputs.size());
    }
    check(status);
    std::vector<TensorPtr> outputs;
    for (moe_tensor_t *output : rawOutputs)
      outputs.emplace_back(output);

    py::list results;
    for (TensorPtr &output : outputs) {
      if (device) {
        results.append(py::cast(DeviceArray(std::move(output), handle)));
        continue;
      }
      // Each array takes over its tensor's buffer: the capsule frees the
      // tensor when numpy releases the array.
      py::dtype dtype = toNumpy(moe_tensor_dtype(output.get()));
      size_t rank = moe_tensor_rank(output.get());
      const int64_t *dims = moe_tensor_shape(output.get());
      std::vector<int64_t> shape(dims, dims + rank);
      std::vector<int64_t> strides = rowMajorStrides(shape, dtype.itemsize());
      void *data = moe_tensor_data(output.get());
      py::capsule owner(output.get(), [](void *tensor) {
        moe_tensor_free(static_cast<moe_tensor_t *>(tensor));
      });
      output.release();
      results.append(
          py::array(dtype, std::vector<py::ssize_t>(shape.begin(), shape.end()),
                    std::vector<py::ssize_t>(strides.begin(), strides.end()),
                    data, owner));
    }
    return results;
  }

  /// Copies `array` (array-like, DeviceArray or `__cuda_array_interface__`)
  /// into new device memory of the model's device.
  DeviceArray toDevice(py::handle array) {
    requireDevice("to_device");
    std::vector<py::object> keepAlive;
    TensorPtr source;
    const moe_tensor_t *tensor;
    if (py::isinstance<DeviceArray>(array)) {
      tensor = array.cast<const DeviceArray &>().get();
    } else {
      source = py::hasattr(array, "__cuda_array_interface__")
                   ? wrapDevice(std::nullopt, array)
                   : wrapHost(std::nullopt, array, keepAlive);
      tensor = source.get();
    }
    moe_tensor_t *copy = nullptr;
    moe_status_t *status;
    {
      py::gil_scoped_release release;
      status = moe_model_tensor_to_device(model(), tensor, &copy);
    }
    check(status);
    return DeviceArray(TensorPtr(copy), handle);
  }

  bool hasDevice() const { return moe_model_has_device(model()) != 0; }

  /// The expert cache's counters (docs/ExpertCache.md); empty without a
  /// cache.
  py::dict stats() const {
    py::dict result;
    if (!moe_model_has_cache(model()))
      return result;
    moe_cache_stats_t s;
    moe_model_cache_stats(model(), &s);
    result["acquires"] = s.acquires;
    result["hits"] = s.hits;
    result["misses"] = s.misses;
    result["stall_ms"] = s.stall_ns / 1e6;
    result["demand_loads"] = s.demand_loads;
    result["prefetch_loads"] = s.prefetch_loads;
    result["prefetch_used"] = s.prefetch_used;
    result["predictions"] = s.predictions;
    result["bytes_read"] = s.bytes_read;
    result["read_ms"] = s.read_ns / 1e6;
    result["evictions"] = s.evictions;
    result["slot_bytes"] = s.slot_bytes;
    result["pinned"] = s.pinned;
    result["direct_io"] = s.direct_io != 0;
    return result;
  }

  void resetStats() { moe_model_reset_cache_stats(model()); }

  void configureCache(int64_t budgetBytes, double budgetPercent,
                      const std::string &mode) {
    moe_cache_mode_t cacheMode;
    if (mode == "ondemand")
      cacheMode = MOE_CACHE_ONDEMAND;
    else if (mode == "lru")
      cacheMode = MOE_CACHE_LRU;
    else if (mode == "prefetch")
      cacheMode = MOE_CACHE_PREFETCH;
    else
      throw py::value_error("unknown expert cache mode '" + mode +
                            "'; expected ondemand, lru or prefetch");
    check(moe_model_configure_cache(model(), budgetBytes, budgetPercent,
                                    cacheMode));
  }

  void writeProfile(const std::string &path) {
    check(moe_model_write_profile(model(), path.c_str()));
  }

  double deviceMs() const { return moe_model_last_device_ms(model()); }

private:
  /// A ModelError for `what` on a model without a device.
  void requireDevice(const char *what) const {
    if (!hasDevice())
      raise("ModelError", std::string(what) +
                              " needs a model compiled with target=\"cuda\" "
                              "(moe-compile --target=cuda); this one runs on "
                              "the CPU");
  }

  /// "input 2 ('x')", or "the array" outside a run.
  std::string describe(std::optional<size_t> index) const {
    if (!index)
      return "the array";
    return "input " + std::to_string(*index) + " ('" +
           moe_model_input_name(model(), *index) + "')";
  }

  /// The element type of numpy `dtype` for input `index`, or a ModelError.
  moe_dtype_t elementType(std::optional<size_t> index,
                          const py::dtype &dtype) const {
    moe_dtype_t expected =
        index ? moe_model_input_dtype(model(), *index) : MOE_DTYPE_COUNT;
    std::optional<moe_dtype_t> type = fromNumpy(dtype, expected);
    if (!type)
      raise("ModelError", describe(index) + ": numpy dtype " +
                              py::str(dtype).cast<std::string>() +
                              " has no moe-mlir element type" +
                              (index ? std::string(" (expected ") +
                                           moe_dtype_name(expected) + ")"
                                     : std::string()));
    return *type;
  }

  /// A host tensor over `arg` as a numpy array (zero-copy when the array is
  /// dense, aligned and native-endian; else a contiguous copy, kept in
  /// `keepAlive`).
  TensorPtr wrapHost(std::optional<size_t> index, py::handle arg,
                     std::vector<py::object> &keepAlive) const {
    py::module_ numpy = py::module_::import("numpy");
    py::array array = numpy.attr("asarray")(arg);
    moe_dtype_t dtype = elementType(index, array.dtype());
    int flags = array.flags();
    bool native = array.dtype().attr("isnative").cast<bool>();
    if (!(flags & py::array::c_style) ||
        !(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_) || !native)
      array = numpy.attr("ascontiguousarray")(
          array, array.dtype().attr("newbyteorder")("="));
    std::vector<int64_t> shape(array.shape(), array.shape() + array.ndim());
    // The compiled code never writes its inputs (they are passed as
    // non-writable), so read-only arrays are fine.
    moe_tensor_t *tensor = nullptr;
    check(moe_tensor_wrap(const_cast<void *>(array.data()), dtype, shape.size(),
                          shape.data(),
                          /*take_ownership=*/0, &tensor));
    keepAlive.push_back(std::move(array));
    return TensorPtr(tensor);
  }

  /// A device tensor over the memory an object's `__cuda_array_interface__`
  /// (versions 0 to 3) describes: row-major, no mask. Its producer's work
  /// must be complete or queued on the legacy default stream.
  TensorPtr wrapDevice(std::optional<size_t> index, py::handle arg) const {
    py::object interface = arg.attr("__cuda_array_interface__");
    if (!py::isinstance<py::dict>(interface))
      throw py::value_error(describe(index) +
                            ": __cuda_array_interface__ is not a dict");
    py::dict dict = interface.cast<py::dict>();
    for (const char *key : {"shape", "typestr", "data"})
      if (!dict.contains(key))
        throw py::value_error(describe(index) +
                              ": __cuda_array_interface__ has no '" + key +
                              "'");
    if (dict.contains("mask") && !dict["mask"].is_none())
      throw py::value_error(describe(index) +
                            ": masked device arrays are not supported");
    std::vector<int64_t> shape;
    for (py::handle extent : dict["shape"].cast<py::tuple>())
      shape.push_back(extent.cast<int64_t>());
    py::dtype numpyType(dict["typestr"].cast<std::string>());
    moe_dtype_t dtype = elementType(index, numpyType);
    if (dict.contains("strides") && !dict["strides"].is_none()) {
      std::vector<int64_t> strides;
      for (py::handle stride : dict["strides"].cast<py::tuple>())
        strides.push_back(stride.cast<int64_t>());
      std::vector<int64_t> dense = rowMajorStrides(shape, numpyType.itemsize());
      bool empty = std::find(shape.begin(), shape.end(), 0) != shape.end();
      for (size_t i = 0; i < shape.size() && !empty; ++i)
        if (shape[i] > 1 && (i >= strides.size() || strides[i] != dense[i]))
          throw py::value_error(describe(index) +
                                ": the device array is not row-major "
                                "contiguous (make a contiguous copy first)");
    }
    auto data = dict["data"].cast<py::tuple>();
    if (data.size() != 2)
      throw py::value_error(describe(index) +
                            ": __cuda_array_interface__'s 'data' is not "
                            "(pointer, read_only)");
    void *pointer = reinterpret_cast<void *>(data[0].cast<uintptr_t>());
    moe_tensor_t *tensor = nullptr;
    check(moe_tensor_wrap_device(pointer, dtype, shape.size(), shape.data(),
                                 /*deleter=*/nullptr, /*context=*/nullptr,
                                 &tensor));
    return TensorPtr(tensor);
  }

  moe_model_t *model() const { return handle.get(); }

  ModelHandle handle;
};

} // namespace

PYBIND11_MODULE(_moe_runtime, m) {
  m.doc() = "The runtime half of moe_mlir: loads and runs compiled models "
            "(no MLIR dependency).";
  m.def(
      "parse_expert_budget",
      [](const std::string &text) -> py::object {
        int64_t bytes = -1;
        double percent = -1;
        if (!moe_parse_expert_budget(text.c_str(), &bytes, &percent))
          return py::none();
        return py::make_tuple(bytes, percent);
      },
      py::arg("text"));
  py::class_<DeviceArray>(m, "DeviceArray")
      .def_property_readonly("shape", &DeviceArray::shape)
      .def_property_readonly("dtype", &DeviceArray::dtype)
      .def_property_readonly("pointer", &DeviceArray::pointer)
      .def_property_readonly("__cuda_array_interface__",
                             &DeviceArray::cudaArrayInterface)
      .def("numpy", &DeviceArray::numpy);
  py::class_<Model>(m, "Model")
      .def(py::init<const std::string &, const std::optional<std::string> &>(),
           py::arg("library"), py::arg("weights") = py::none())
      .def_property_readonly("signature", &Model::signature)
      .def_property_readonly("weights_path", &Model::weightsPath)
      .def_property_readonly("inputs", &Model::inputs)
      .def_property_readonly("outputs", &Model::outputs)
      .def("run", &Model::run, py::arg("device") = false)
      .def("to_device", &Model::toDevice, py::arg("array"))
      .def_property_readonly("has_device", &Model::hasDevice)
      .def("stats", &Model::stats)
      .def("reset_stats", &Model::resetStats)
      .def("device_ms", &Model::deviceMs)
      .def("configure_cache", &Model::configureCache)
      .def("write_profile", &Model::writeProfile);
}
