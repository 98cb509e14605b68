//===- Importer.h - Internals shared by the ONNX importer -------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The graph importer and the view of one node that op handlers work on. Each
// ONNX op is imported by one handler, found in a table keyed by
// (domain, op_type) after onnx-mlir's FrontendDialectTransformer.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TARGET_ONNX_IMPORTER_H
#define MOE_LIB_TARGET_ONNX_IMPORTER_H

#include "moe/Support/LLVM.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/StringMap.h"

#include "onnx/onnx_pb.h"

#include <optional>
#include <string>

namespace moe {
namespace onnx_import {

class GraphImporter;

/// Starts a diagnostic; the ONNX node's prefix where there is a node.
using EmitErrorFn = function_ref<InFlightDiagnostic()>;

/// One node being imported: its inputs, attributes and where its results go.
class Node {
public:
  Node(GraphImporter &importer, const onnx::NodeProto &proto, int64_t opset,
       Location loc);

  const onnx::NodeProto &getProto() const { return proto; }
  StringRef getOpType() const { return proto.op_type(); }
  StringRef getName() const { return proto.name(); }
  int64_t getOpset() const { return opset; }
  Location getLoc() const { return loc; }
  OpBuilder &getBuilder();
  MLIRContext *getContext();
  GraphImporter &getImporter() { return importer; }

  /// Inputs: ONNX marks a missing optional input with an empty name.
  unsigned getNumInputs() const { return proto.input_size(); }
  bool hasInput(unsigned i) const {
    return i < (unsigned)proto.input_size() && !proto.input(i).empty();
  }
  StringRef getInputName(unsigned i) const { return proto.input(i); }
  Value getInput(unsigned i);
  RankedTensorType getInputType(unsigned i);
  /// The value of input `i` when it is an initializer or a constant.
  DenseElementsAttr getConstantInput(unsigned i);
  /// The integers of a constant input (axes, shapes, k), or failure with a
  /// diagnostic.
  FailureOr<SmallVector<int64_t>> getConstantInts(unsigned i, StringRef what);

  /// Attributes.
  const onnx::AttributeProto *getAttr(StringRef name) const;
  int64_t getInt(StringRef name, int64_t defaultValue) const;
  std::optional<double> getFloat(StringRef name) const;
  double getFloat(StringRef name, double defaultValue) const;
  std::string getString(StringRef name, StringRef defaultValue) const;
  std::optional<SmallVector<int64_t>> getInts(StringRef name) const;
  /// Emits a diagnostic unless every attribute of the node is in `known`.
  LogicalResult checkAttributes(ArrayRef<StringRef> known);

  /// Binds the node's outputs to `values`, in order.
  LogicalResult setResults(ValueRange values);
  /// Records a compile-time value of output `i` (small integer tensors from
  /// Shape, Constant, ... feeding Reshape and friends).
  void setConstantResult(unsigned i, DenseElementsAttr value);

  /// The one diagnostic of a failing node: names the op type, the node and
  /// the opset.
  InFlightDiagnostic emitError();

private:
  GraphImporter &importer;
  const onnx::NodeProto &proto;
  int64_t opset;
  Location loc;
};

using OpHandler = LogicalResult (*)(Node &node);

/// One entry of the handler table: the op is supported for opsets
/// [minOpset, maxOpset] of its domain.
struct OpHandlerInfo {
  StringRef domain;
  StringRef opType;
  int64_t minOpset;
  int64_t maxOpset;
  OpHandler handler;
};

/// The handlers of the default ONNX domain.
ArrayRef<OpHandlerInfo> getStandardOpHandlers();
/// The handlers of ONNX Runtime's com.microsoft domain.
ArrayRef<OpHandlerInfo> getMicrosoftOpHandlers();

/// com.microsoft.MoE, raised to `moe.layer` (MoERaising.cpp).
LogicalResult importMicrosoftMoE(Node &node);

/// Imports one GraphProto into `func.func @main`.
class GraphImporter {
public:
  GraphImporter(MLIRContext *context, const onnx::ModelProto &model,
                StringRef fileName, StringRef modelDir);

  /// Builds the module; null after a diagnostic.
  OwningOpRef<ModuleOp> importModel();

  MLIRContext *getContext() { return context; }
  OpBuilder &getBuilder() { return builder; }

  Value lookup(StringRef name) const { return values.lookup(name); }
  DenseElementsAttr getConstant(StringRef name) const {
    return constants.lookup(name);
  }
  /// The node that produces `name`, or null for graph inputs/initializers.
  const onnx::NodeProto *getProducer(StringRef name) const {
    return producers.lookup(name);
  }
  void bind(StringRef name, Value value) { values[name] = value; }
  void bindConstant(StringRef name, DenseElementsAttr value) {
    constants[name] = value;
  }

  /// The MLIR element type of an ONNX TensorProto data type.
  FailureOr<Type> convertElementType(int32_t dataType, EmitErrorFn emitError,
                                     StringRef what);
  /// A TensorProto (inline or external data) as a dense attribute.
  FailureOr<DenseElementsAttr> convertTensor(const onnx::TensorProto &tensor,
                                             EmitErrorFn emitError);

private:
  LogicalResult importGraphInputs(func::FuncOp func);
  LogicalResult importInitializers();
  LogicalResult importNode(const onnx::NodeProto &node);
  FailureOr<RankedTensorType> convertValueType(const onnx::ValueInfoProto &info,
                                               Location loc);
  FailureOr<std::string> readExternalData(const onnx::TensorProto &tensor,
                                          EmitErrorFn emitError,
                                          uint64_t expected);
  Location nodeLoc(const onnx::NodeProto &node);

  MLIRContext *context;
  const onnx::ModelProto &model;
  std::string fileName;
  std::string modelDir;
  OpBuilder builder;
  Location fileLoc;
  llvm::StringMap<int64_t> opsets;
  llvm::StringMap<Value> values;
  llvm::StringMap<DenseElementsAttr> constants;
  llvm::StringMap<const onnx::NodeProto *> producers;
  llvm::StringMap<const OpHandlerInfo *> handlers;
};

//===----------------------------------------------------------------------===//
// Builders shared by the handlers
//===----------------------------------------------------------------------===//

/// Normalizes an axis in [-rank, rank) to [0, rank), or fails.
FailureOr<int64_t> normalizeAxis(Node &node, int64_t axis, int64_t rank);

/// The sizes of `value`, static ones as attributes.
SmallVector<OpFoldResult> getDims(OpBuilder &b, Location loc, Value value);

/// `tensor.empty` of the given sizes.
Value createEmpty(OpBuilder &b, Location loc, ArrayRef<OpFoldResult> sizes,
                  Type elementType);

/// A scalar `arith.constant` of `type` (float or integer) holding `value`.
Value createScalar(OpBuilder &b, Location loc, Type type, double value);

/// An elementwise `linalg.generic` over `operands` with numpy broadcasting;
/// `body` computes the result element from the operand elements.
using ElementwiseBody =
    function_ref<Value(OpBuilder &, Location, ValueRange args)>;
FailureOr<Value> buildElementwise(Node &node, ValueRange operands,
                                  Type resultElementType, ElementwiseBody body);

/// Inserts unit dimensions at the (sorted, normalized) result positions
/// `axes`.
Value insertUnitDims(OpBuilder &b, Location loc, Value value,
                     ArrayRef<int64_t> axes);
/// Removes the static unit dimensions at the (sorted) positions `axes`.
Value dropUnitDims(OpBuilder &b, Location loc, Value value,
                   ArrayRef<int64_t> axes);

/// A 2-D matmul `a [M, K] x b [K, N]` with a zero-filled accumulator.
Value buildMatmul2D(OpBuilder &b, Location loc, Value lhs, Value rhs);

} // namespace onnx_import
} // namespace moe

#endif // MOE_LIB_TARGET_ONNX_IMPORTER_H
