//===- LLVM.h - LLVM and MLIR names in the moe namespace --------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Brings the MLIR and ADT names every file of the project uses into the `moe`
// namespace, after CIRCT's Support/LLVM.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_SUPPORT_LLVM_H
#define MOE_SUPPORT_LLVM_H

#include "mlir/Support/LLVM.h"

namespace moe {
using namespace mlir;
} // namespace moe

#endif // MOE_SUPPORT_LLVM_H
