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

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Support/LLVM.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/DenseSet.h"
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
  /// The elements of a small integer input (0-D or 1-D) that is a constant or
  /// was computed from tensor shapes (Shape -> Gather -> Concat chains): each
  /// an index attribute or an index-typed value.
  std::optional<SmallVector<OpFoldResult>> getShapeValue(unsigned i);
  /// getShapeValue, or failure with a diagnostic naming `what`.
  FailureOr<SmallVector<OpFoldResult>> getShapeOperand(unsigned i,
                                                       StringRef what);

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
  /// Records the elements of output `i` as a shape value.
  void setShapeResult(unsigned i, ArrayRef<OpFoldResult> elements);

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
LogicalResult importMicrosoftQMoE(Node &node);

/// Handlers of indexing ops with data-dependent results (IndexingOps.cpp).
LogicalResult importNonZero(Node &node);
LogicalResult importOneHot(Node &node);
LogicalResult importScatterElements(Node &node);
LogicalResult importScatterND(Node &node);
LogicalResult importGatherElements(Node &node);
LogicalResult importGatherND(Node &node);
LogicalResult importArgMax(Node &node);
LogicalResult importArgMin(Node &node);
LogicalResult importTrilu(Node &node);
LogicalResult importEinsum(Node &node);

/// A MoE block of standard ops found in the graph (GraphRaising.cpp): the
/// node `outputNode` is replaced by one `moe.layer` on `input`.
struct MoEBlock {
  /// The name of the form, for remarks ("Mixtral sparse", "dense", ...).
  std::string form;
  /// The router's TopK or ArgMax (hash routing: the table lookup).
  const onnx::NodeProto *anchor = nullptr;
  /// The router's Softmax (or Sigmoid).
  const onnx::NodeProto *softmax = nullptr;
  /// The node whose output 0 is the block's result.
  const onnx::NodeProto *outputNode = nullptr;
  /// The tokens `[..., H]` the router and the experts read.
  std::string input;
  /// Weights in moe.layer's layout.
  DenseElementsAttr router, gate, up, down, gateBias, upBias, downBias,
      sharedGate, sharedUp, sharedDown, sharedScale;
  /// A bias `[E]` of the router logits (GPT-OSS), or null.
  DenseElementsAttr routerBias;
  int64_t k = 1;
  bool renormalize = false;
  /// Softmax, sigmoid scores (a Sigmoid router, TopK forms only), or the
  /// softmax of the top-k logits (GPT-OSS: `softmax` is then the Softmax
  /// of the TopK values).
  ScoringFunc scoring = ScoringFunc::Softmax;
  /// The softmax temperature (the logits divided by it).
  double temperature = 1.0;
  /// A gating residual (MoE++): the `[T, E]` value added to the logits; the
  /// block is then built as the router matmul and `moe.route` with it.
  std::string residual;
  /// Top-p routing (a dynamic number of experts): the experts are taken in
  /// decreasing score while the scores before them sum to less than it; 0:
  /// a fixed k.
  double threshold = 0.0;
  /// A selection bias `[E]` (choice only), or null.
  DenseElementsAttr selectionBias;
  /// The group limit (DeepSeek-V3; 0: none) and the router's group TopKs,
  /// which are part of the block rather than candidates of their own.
  int64_t nGroup = 0, topkGroup = 0;
  SmallVector<const onnx::NodeProto *, 2> groupTopKs;
  /// The routed scaling factor applied to the weights.
  double scale = 1.0;
  /// Expert-choice routing (each expert takes its `capacity` best tokens,
  /// or min(ceil(`capacityFactor` * T / E), T) where `capacity` is 0; `k`
  /// is then the number of experts).
  bool expertChoice = false;
  /// The experts are transformers' loop over the experts hit (the Split of
  /// a dynamic NonZero into the traced iterations), which has no op-by-op
  /// form: only the nodes the graph's outputs need are imported.
  bool hitLoop = false;
  int64_t capacity = 0;
  double capacityFactor = 0.0;
  /// Token choice with a fixed expert capacity (GShard's einsum form): each
  /// expert keeps its first `tokenCapacity` assignments in token order,
  /// whatever the token count (moe.routing's `capacity`); 0: dropless.
  int64_t tokenCapacity = 0;
  /// The capacity is counted along this axis of the block's input (a CumSum
  /// along the sequence, per sequence: transformers' Switch), which the
  /// builder accepts only where the dimensions before it are 1; none: along
  /// all tokens.
  std::optional<int64_t> capacityAxis;
  /// Assignments dropped for capacity pass their token through scaled by
  /// its weight (transformers' Switch: `next_states = hidden_states.clone()`
  /// then `router_probs * next_states`) instead of contributing zero.
  bool passDropped = false;
  ExpertKind kind = ExpertKind::Gated;
  Activation activation = Activation::Silu;
  /// GPT-OSS's clamped SwiGLU (`#moe.expert`'s limit, alpha and beta; a
  /// limit of 0 is no clamp).
  double limit = 0.0, alpha = 1.0, beta = 0.0;
  /// Hash routing (the hash form; no router): each token's expert is
  /// `hashTable[tokenIds[t]]`, weight 1.
  DenseElementsAttr hashTable;
  std::string tokenIds;
  /// Modality groups (MoMa, Mixtral form): the sizes of the consecutive
  /// expert groups and the `[T]` group ids of the tokens; the block is then
  /// built as moe.route with token_groups (moe.layer has no group operand).
  SmallVector<int64_t> expertGroups;
  std::string tokenGroups;
  /// MoE++'s zero-computation experts, after the FFN experts (their ids
  /// follow), and the constant experts' `values [C, H]` and `mix [C, H, 2]`.
  SmallVector<ZeroComputationKind> zeroKinds;
  DenseElementsAttr constantValues, constantMix;
  /// The number of experts.
  int64_t numExperts() const {
    return up.getType().getDimSize(0) + zeroKinds.size();
  }
  /// Whether moe.layer cannot express the block (hash routing, modality
  /// groups, a gating residual, zero-computation experts): it is built as the
  /// routing op, moe.dispatch, moe.experts and moe.combine.
  bool expanded() const {
    return hashTable || !expertGroups.empty() || !residual.empty() ||
           !zeroKinds.empty() || passDropped;
  }
};

/// Matches every TopK/ArgMax of `graph` against the known MoE forms. With
/// `remarks`, reports each candidate that does not match and why.
std::vector<MoEBlock>
findMoEBlocks(GraphImporter &importer, const onnx::GraphProto &graph,
              bool remarks,
              function_ref<Location(const onnx::NodeProto &)> loc);

/// Builds the `moe.layer` of `block` and binds the block's output to it, or
/// fails with the reason in `why` (types that do not fit) and builds nothing
/// that is used.
LogicalResult buildMoEBlock(GraphImporter &importer, const MoEBlock &block,
                            Location loc, std::string &why);

/// Stacks same-typed tensors along a new leading dimension.
DenseElementsAttr stackWeights(ArrayRef<DenseElementsAttr> parts);

/// After a node of the default domain was imported, records the shape values
/// (see Node::getShapeValue) of its outputs where its inputs have them
/// (ShapeValues.cpp).
void propagateShapeValues(Node &node);

/// Imports one GraphProto into `func.func @main`.
class GraphImporter {
public:
  GraphImporter(MLIRContext *context, const onnx::ModelProto &model,
                StringRef fileName, StringRef modelDir, bool remarks);

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
  const SmallVector<OpFoldResult> *getShapeValue(StringRef name) const {
    auto it = shapeValues.find(name);
    return it == shapeValues.end() ? nullptr : &it->second;
  }
  void bindShapeValue(StringRef name, ArrayRef<OpFoldResult> elements) {
    shapeValues[name] = SmallVector<OpFoldResult>(elements);
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
  /// Replaces `node` by the MoE block it ends, if any; `raised` tells whether
  /// it did.
  LogicalResult raiseBlock(const onnx::NodeProto &node, bool &raised);

  MLIRContext *context;
  const onnx::ModelProto &model;
  std::string fileName;
  std::string modelDir;
  bool remarks;
  OpBuilder builder;
  Location fileLoc;
  llvm::StringMap<int64_t> opsets;
  llvm::StringMap<Value> values;
  llvm::StringMap<DenseElementsAttr> constants;
  llvm::StringMap<SmallVector<OpFoldResult>> shapeValues;
  llvm::StringMap<const onnx::NodeProto *> producers;
  llvm::StringMap<const OpHandlerInfo *> handlers;
  llvm::DenseMap<const onnx::NodeProto *, MoEBlock> blocks;
  /// The nodes that the graph's outputs need, reading each MoE block of
  /// `blocks` as a node of its input alone.
  llvm::DenseSet<const onnx::NodeProto *>
  liveNodes(const onnx::GraphProto &graph) const;
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

/// Unit attributes of the import only: a run-time check (cf.assert; below and
/// buildElementwise), and the op it guards, which follows it in the block.
inline constexpr llvm::StringLiteral kGuardAttr = "moe.import_check";
inline constexpr llvm::StringLiteral kGuardedAttr = "moe.import_checked";

/// Run-time checks of the import (cf.assert with kGuardAttr; the caller
/// marks the op they guard, built right after, with kGuardedAttr):
/// - that every element of the integer tensor `indices` lies in
///   [-size, size): `sizes` holds one size for every element, or one per
///   position along the last axis (GatherND, ScatterND). Nothing for a
///   constant `indices` (the importer checks those where it folds them).
void checkIndicesAtRunTime(Node &node, Value indices,
                           ArrayRef<OpFoldResult> sizes);
/// - that dimension `dimsA[i]` of `a` equals dimension `dimsB[i]` of `b` for
///   every i where either is dynamic; `what` names the pair in the message.
void checkDimsAtRunTime(Node &node, Value a, ArrayRef<int64_t> dimsA, Value b,
                        ArrayRef<int64_t> dimsB, StringRef what);

/// An elementwise `linalg.generic` over `operands` with numpy broadcasting;
/// `body` computes the result element from the operand elements. Dynamic
/// dimensions paired by the broadcast are checked equal at run time unless
/// `checkDynamic` is false.
using ElementwiseBody =
    function_ref<Value(OpBuilder &, Location, ValueRange args)>;
FailureOr<Value> buildElementwise(Node &node, ValueRange operands,
                                  Type resultElementType, ElementwiseBody body,
                                  bool checkDynamic = true);

/// Inserts unit dimensions at the (sorted, normalized) result positions
/// `axes`.
Value insertUnitDims(OpBuilder &b, Location loc, Value value,
                     ArrayRef<int64_t> axes);
/// Removes the static unit dimensions at the (sorted) positions `axes`.
Value dropUnitDims(OpBuilder &b, Location loc, Value value,
                   ArrayRef<int64_t> axes);

/// `tensor.expand_shape` of `value` to `type`, or a `tensor.reshape` where a
/// group has more than one dynamic size.
Value buildExpandShape(OpBuilder &b, Location loc, RankedTensorType type,
                       Value value, ArrayRef<ReassociationIndices> groups,
                       ArrayRef<OpFoldResult> sizes);

/// A 2-D matmul `a [M, K] x b [K, N]` with a zero-filled accumulator of
/// `accumulator` elements (the operands' when null).
Value buildMatmul2D(OpBuilder &b, Location loc, Value lhs, Value rhs,
                    Type accumulator = {});

} // namespace onnx_import
} // namespace moe

#endif // MOE_LIB_TARGET_ONNX_IMPORTER_H
