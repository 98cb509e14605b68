//===- PythonErrors.h - Raising moe_mlir's exceptions -----------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Used by the compiler extension of the moe_mlir package (the runtime half
// raises from Python, moe_mlir/_moe_runtime.py).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PYTHON_BINDINGS_PYTHONERRORS_H
#define MOE_PYTHON_BINDINGS_PYTHONERRORS_H

#include <pybind11/pybind11.h>

#include <string>

namespace moe::python {

/// Raises `moe_mlir.<typeName>(message, *extra)`; the types are defined in
/// moe_mlir/_errors.py.
[[noreturn]] inline void raise(const char *typeName, const std::string &message,
                               pybind11::object extra = pybind11::none()) {
  pybind11::object type =
      pybind11::module_::import("moe_mlir._errors").attr(typeName);
  pybind11::object value =
      extra.is_none() ? type(message) : type(message, std::move(extra));
  PyErr_SetObject(type.ptr(), value.ptr());
  throw pybind11::error_already_set();
}

} // namespace moe::python

#endif // MOE_PYTHON_BINDINGS_PYTHONERRORS_H
