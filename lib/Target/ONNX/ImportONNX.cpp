//===- ImportONNX.cpp - ONNX ModelProto to MLIR ---------------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Parses a ModelProto with protobuf, turns graph inputs into arguments of
// `func.func @main`, initializers into `arith.constant`s and every node into
// IR through the handler registered for its (domain, op_type).
//
//===----------------------------------------------------------------------===//

#include "moe/Target/ONNX/ImportONNX.h"

#include "Importer.h"

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"

#include <google/protobuf/io/coded_stream.h>

#include <climits>
#include <cstring>

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

/// The key of the handler table: the default domain has two spellings.
static std::string handlerKey(StringRef domain, StringRef opType) {
  if (domain == "ai.onnx")
    domain = "";
  return (domain + "::" + opType).str();
}

static StringRef domainName(StringRef domain) {
  return domain.empty() ? StringRef("ai.onnx") : domain;
}

//===----------------------------------------------------------------------===//
// Node
//===----------------------------------------------------------------------===//

Node::Node(GraphImporter &importer, const onnx::NodeProto &proto, int64_t opset,
           Location loc)
    : importer(importer), proto(proto), opset(opset), loc(loc) {}

OpBuilder &Node::getBuilder() { return importer.getBuilder(); }
MLIRContext *Node::getContext() { return importer.getContext(); }

Value Node::getInput(unsigned i) {
  if (!hasInput(i))
    return {};
  return importer.lookup(proto.input(i));
}

RankedTensorType Node::getInputType(unsigned i) {
  Value value = getInput(i);
  return value ? cast<RankedTensorType>(value.getType()) : RankedTensorType();
}

DenseElementsAttr Node::getConstantInput(unsigned i) {
  if (!hasInput(i))
    return {};
  return importer.getConstant(proto.input(i));
}

FailureOr<SmallVector<int64_t>> Node::getConstantInts(unsigned i,
                                                      StringRef what) {
  DenseElementsAttr attr = getConstantInput(i);
  if (!attr || !isa<IntegerType>(attr.getElementType())) {
    emitError() << what << " (input " << i
                << ") must be a constant integer tensor";
    return failure();
  }
  SmallVector<int64_t> result;
  for (const APInt &v : attr.getValues<APInt>())
    result.push_back(v.getSExtValue());
  return result;
}

std::optional<SmallVector<OpFoldResult>> Node::getShapeValue(unsigned i) {
  if (!hasInput(i))
    return std::nullopt;
  if (DenseElementsAttr attr = getConstantInput(i)) {
    if (!isa<IntegerType>(attr.getElementType()) ||
        attr.getType().getRank() > 1)
      return std::nullopt;
    Builder b(getContext());
    SmallVector<OpFoldResult> result;
    for (const APInt &v : attr.getValues<APInt>())
      result.push_back(b.getIndexAttr(v.getSExtValue()));
    return result;
  }
  if (const SmallVector<OpFoldResult> *elements =
          importer.getShapeValue(proto.input(i)))
    return *elements;
  return std::nullopt;
}

FailureOr<SmallVector<OpFoldResult>> Node::getShapeOperand(unsigned i,
                                                           StringRef what) {
  if (std::optional<SmallVector<OpFoldResult>> elements = getShapeValue(i))
    return *elements;
  emitError() << what << " (input " << i
              << ") must be a constant integer tensor or computed from "
                 "tensor shapes";
  return failure();
}

const onnx::AttributeProto *Node::getAttr(StringRef name) const {
  for (const onnx::AttributeProto &attr : proto.attribute())
    if (attr.name() == name)
      return &attr;
  return nullptr;
}

int64_t Node::getInt(StringRef name, int64_t defaultValue) const {
  const onnx::AttributeProto *attr = getAttr(name);
  return attr ? attr->i() : defaultValue;
}

std::optional<double> Node::getFloat(StringRef name) const {
  const onnx::AttributeProto *attr = getAttr(name);
  if (!attr)
    return std::nullopt;
  return attr->f();
}

double Node::getFloat(StringRef name, double defaultValue) const {
  return getFloat(name).value_or(defaultValue);
}

std::string Node::getString(StringRef name, StringRef defaultValue) const {
  const onnx::AttributeProto *attr = getAttr(name);
  return attr ? attr->s() : defaultValue.str();
}

std::optional<SmallVector<int64_t>> Node::getInts(StringRef name) const {
  const onnx::AttributeProto *attr = getAttr(name);
  if (!attr)
    return std::nullopt;
  return SmallVector<int64_t>(attr->ints().begin(), attr->ints().end());
}

LogicalResult Node::checkAttributes(ArrayRef<StringRef> known) {
  for (const onnx::AttributeProto &attr : proto.attribute()) {
    if (llvm::is_contained(known, attr.name()))
      continue;
    emitError() << "attribute '" << attr.name() << "' is not supported";
    return failure();
  }
  return success();
}

LogicalResult Node::setResults(ValueRange results) {
  for (auto [i, value] : llvm::enumerate(results)) {
    if (i >= (size_t)proto.output_size())
      break;
    if (!proto.output(i).empty())
      importer.bind(proto.output(i), value);
  }
  for (int i = results.size(); i < proto.output_size(); ++i) {
    if (proto.output(i).empty())
      continue;
    emitError() << "output " << i << " ('" << proto.output(i)
                << "') is not supported";
    return failure();
  }
  return success();
}

void Node::setConstantResult(unsigned i, DenseElementsAttr value) {
  if (i < (unsigned)proto.output_size() && !proto.output(i).empty())
    importer.bindConstant(proto.output(i), value);
}

void Node::setShapeResult(unsigned i, ArrayRef<OpFoldResult> elements) {
  if (i < (unsigned)proto.output_size() && !proto.output(i).empty())
    importer.bindShapeValue(proto.output(i), elements);
}

InFlightDiagnostic Node::emitError() {
  InFlightDiagnostic diag = mlir::emitError(loc);
  diag << "ONNX op '" << proto.op_type() << "' (node '" << proto.name() << "', "
       << domainName(proto.domain()) << " opset " << opset << "): ";
  return diag;
}

//===----------------------------------------------------------------------===//
// GraphImporter
//===----------------------------------------------------------------------===//

GraphImporter::GraphImporter(MLIRContext *context,
                             const onnx::ModelProto &model, StringRef fileName,
                             StringRef modelDir, bool remarks)
    : context(context), model(model), fileName(fileName.str()),
      modelDir(modelDir.str()), remarks(remarks), builder(context),
      fileLoc(FileLineColLoc::get(context, fileName, 0, 0)) {
  for (ArrayRef<OpHandlerInfo> table :
       {getStandardOpHandlers(), getMicrosoftOpHandlers()})
    for (const OpHandlerInfo &info : table)
      handlers[handlerKey(info.domain, info.opType)] = &info;
}

Location GraphImporter::nodeLoc(const onnx::NodeProto &node) {
  StringRef name = node.name().empty() ? node.op_type() : node.name();
  return NameLoc::get(StringAttr::get(context, name), fileLoc);
}

FailureOr<Type> GraphImporter::convertElementType(int32_t dataType,
                                                  EmitErrorFn emitError,
                                                  StringRef what) {
  switch (dataType) {
  case onnx::TensorProto::FLOAT:
    return Type(builder.getF32Type());
  case onnx::TensorProto::FLOAT16:
    return Type(builder.getF16Type());
  case onnx::TensorProto::BFLOAT16:
    return Type(builder.getBF16Type());
  case onnx::TensorProto::DOUBLE:
    return Type(builder.getF64Type());
  case onnx::TensorProto::INT8:
    return Type(builder.getI8Type());
  case onnx::TensorProto::UINT8:
    return Type(builder.getIntegerType(8, /*isSigned=*/false));
  case onnx::TensorProto::INT16:
    return Type(builder.getI16Type());
  case onnx::TensorProto::INT32:
    return Type(builder.getI32Type());
  case onnx::TensorProto::INT64:
    return Type(builder.getI64Type());
  case onnx::TensorProto::BOOL:
    return Type(builder.getI1Type());
  default:
    break;
  }
  StringRef typeName = onnx::TensorProto::DataType_IsValid(dataType)
                           ? StringRef(onnx::TensorProto::DataType_Name(
                                 (onnx::TensorProto::DataType)dataType))
                           : StringRef("unknown");
  emitError() << what << ": ONNX data type " << typeName << " (" << dataType
              << ") is not supported";
  return failure();
}

/// The size in bytes of an element of `type` in ONNX's raw_data.
static unsigned rawElementSize(Type type) {
  if (type.isInteger(1))
    return 1;
  return type.getIntOrFloatBitWidth() / 8;
}

FailureOr<std::string>
GraphImporter::readExternalData(const onnx::TensorProto &tensor,
                                EmitErrorFn emitError, uint64_t expected) {
  std::string location;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
  for (const onnx::StringStringEntryProto &entry : tensor.external_data()) {
    StringRef value = entry.value();
    if (entry.key() == "location") {
      location = entry.value();
    } else if (entry.key() == "offset" || entry.key() == "length") {
      uint64_t parsed;
      if (value.getAsInteger(10, parsed)) {
        emitError() << "tensor '" << tensor.name() << "': external data "
                    << entry.key() << " '" << value << "' is not a number";
        return failure();
      }
      if (entry.key() == "offset")
        offset = parsed;
      else
        length = parsed;
    }
  }
  if (location.empty()) {
    emitError() << "tensor '" << tensor.name()
                << "': external data without a location";
    return failure();
  }
  if (llvm::sys::path::is_absolute(location) ||
      llvm::is_contained(llvm::make_range(llvm::sys::path::begin(location),
                                          llvm::sys::path::end(location)),
                         "..")) {
    emitError() << "tensor '" << tensor.name() << "': external data location '"
                << location << "' must be a path inside the model's directory";
    return failure();
  }
  SmallString<256> path(modelDir);
  llvm::sys::path::append(path, location);
  uint64_t fileSize;
  if (std::error_code ec = llvm::sys::fs::file_size(path, fileSize)) {
    emitError() << "tensor '" << tensor.name()
                << "': cannot open external data file '" << path
                << "': " << ec.message();
    return failure();
  }
  uint64_t size = length.value_or(expected);
  if (size != expected || offset > fileSize || fileSize - offset < size) {
    emitError() << "tensor '" << tensor.name() << "': external data file '"
                << path << "' (" << fileSize << " bytes) does not hold "
                << expected << " bytes at offset " << offset
                << (length ? " with the given length " : "")
                << (length ? Twine(*length) : Twine());
    return failure();
  }
  if (size == 0)
    return std::string();
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFileSlice(path, size, offset,
                                       /*IsVolatile=*/false);
  if (!buffer) {
    emitError() << "tensor '" << tensor.name()
                << "': cannot read external data file '" << path
                << "': " << buffer.getError().message();
    return failure();
  }
  return (*buffer)->getBuffer().str();
}

FailureOr<DenseElementsAttr>
GraphImporter::convertTensor(const onnx::TensorProto &tensor,
                             EmitErrorFn emitError) {
  std::string what = ("tensor '" + tensor.name() + "'");
  FailureOr<Type> elementType =
      convertElementType(tensor.data_type(), emitError, what);
  if (failed(elementType))
    return failure();
  SmallVector<int64_t> shape;
  uint64_t numElements = 1;
  for (int64_t dim : tensor.dims()) {
    if (dim < 0 || (dim > 0 && numElements > (UINT64_MAX >> 8) / dim)) {
      emitError() << what << " has an invalid dimension " << dim;
      return failure();
    }
    shape.push_back(dim);
    numElements *= dim;
  }
  auto type = RankedTensorType::get(shape, *elementType);
  if (tensor.has_segment()) {
    emitError() << what << ": segmented tensors are not supported";
    return failure();
  }
  unsigned elementSize = rawElementSize(*elementType);
  uint64_t expectedBytes = numElements * elementSize;

  std::string raw;
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    FailureOr<std::string> data =
        readExternalData(tensor, emitError, expectedBytes);
    if (failed(data))
      return failure();
    raw = std::move(*data);
  } else if (tensor.has_raw_data()) {
    if (tensor.raw_data().size() != expectedBytes) {
      emitError() << what << " has " << tensor.raw_data().size()
                  << " bytes of raw data, expected " << expectedBytes;
      return failure();
    }
    raw = tensor.raw_data();
  } else {
    // Typed fields: each data type has its own (see onnx.proto).
    auto checkCount = [&](int64_t count) -> LogicalResult {
      if ((uint64_t)count == numElements)
        return success();
      emitError() << what << " has " << count << " values, expected "
                  << numElements;
      return failure();
    };
    raw.resize(expectedBytes);
    char *out = raw.data();
    switch (tensor.data_type()) {
    case onnx::TensorProto::FLOAT:
      if (failed(checkCount(tensor.float_data_size())))
        return failure();
      if (numElements)
        std::memcpy(out, tensor.float_data().data(), expectedBytes);
      break;
    case onnx::TensorProto::DOUBLE:
      if (failed(checkCount(tensor.double_data_size())))
        return failure();
      if (numElements)
        std::memcpy(out, tensor.double_data().data(), expectedBytes);
      break;
    case onnx::TensorProto::INT64:
      if (failed(checkCount(tensor.int64_data_size())))
        return failure();
      if (numElements)
        std::memcpy(out, tensor.int64_data().data(), expectedBytes);
      break;
    default:
      // INT32, INT16, INT8, BOOL, FLOAT16 and BFLOAT16 (as bits) live in
      // int32_data, narrowed here to their raw size (little-endian).
      if (failed(checkCount(tensor.int32_data_size())))
        return failure();
      for (uint64_t i = 0; i < numElements; ++i) {
        int32_t v = tensor.int32_data(i);
        std::memcpy(out + i * elementSize, &v, elementSize);
      }
      break;
    }
  }

  if (elementType->isInteger(1)) {
    SmallVector<bool> bits;
    bits.reserve(numElements);
    for (char c : raw)
      bits.push_back(c != 0);
    return DenseElementsAttr::get(type, bits);
  }
  return DenseElementsAttr::getFromRawBuffer(
      type, ArrayRef<char>(raw.data(), raw.size()));
}

FailureOr<RankedTensorType>
GraphImporter::convertValueType(const onnx::ValueInfoProto &info,
                                Location loc) {
  std::string what = ("graph value '" + info.name() + "'");
  if (!info.type().has_tensor_type()) {
    mlir::emitError(loc) << what << " is not a tensor";
    return failure();
  }
  const onnx::TypeProto::Tensor &tensorType = info.type().tensor_type();
  FailureOr<Type> elementType = convertElementType(
      tensorType.elem_type(), [&] { return mlir::emitError(loc); }, what);
  if (failed(elementType))
    return failure();
  if (!tensorType.has_shape()) {
    mlir::emitError(loc) << what
                         << " has no shape; unranked tensors are not supported";
    return failure();
  }
  SmallVector<int64_t> shape;
  for (const onnx::TensorShapeProto::Dimension &dim :
       tensorType.shape().dim()) {
    if (dim.has_dim_value() && dim.dim_value() >= 0)
      shape.push_back(dim.dim_value());
    else
      shape.push_back(ShapedType::kDynamic);
  }
  return RankedTensorType::get(shape, *elementType);
}

LogicalResult GraphImporter::importInitializers() {
  for (const onnx::TensorProto &tensor : model.graph().initializer()) {
    Location loc =
        NameLoc::get(StringAttr::get(context, tensor.name()), fileLoc);
    FailureOr<DenseElementsAttr> attr =
        convertTensor(tensor, [&] { return mlir::emitError(loc); });
    if (failed(attr))
      return failure();
    Value value = arith::ConstantOp::create(builder, loc, *attr);
    bind(tensor.name(), value);
    bindConstant(tensor.name(), *attr);
  }
  for (const onnx::SparseTensorProto &sparse :
       model.graph().sparse_initializer()) {
    mlir::emitError(fileLoc) << "sparse initializer '" << sparse.values().name()
                             << "' is not supported";
    return failure();
  }
  return success();
}

/// `value` in printf's %g (six significant digits), for remarks.
static std::string shortest(double value) {
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%g", value);
  return text;
}

LogicalResult GraphImporter::raiseBlock(const onnx::NodeProto &node,
                                        bool &raised) {
  raised = false;
  auto it = blocks.find(&node);
  if (it == blocks.end())
    return success();
  const MoEBlock &block = it->second;
  Location anchorLoc = nodeLoc(*block.anchor);
  std::string why;
  if (failed(buildMoEBlock(*this, block, nodeLoc(node), why))) {
    if (remarks)
      mlir::emitRemark(anchorLoc)
          << "MoE block at " << block.anchor->op_type() << " '"
          << block.anchor->name() << "' not raised: " << why;
    return success();
  }
  raised = true;
  if (remarks) {
    int64_t numExperts = block.numExperts();
    InFlightDiagnostic diag = mlir::emitRemark(anchorLoc);
    diag << "raised MoE block (" << block.form << " form) at "
         << block.anchor->op_type() << " '" << block.anchor->name() << "' to "
         << (block.hashTable    ? "moe.hash_route"
             : block.expanded() ? "moe.route"
                                : "moe.layer")
         << ": " << numExperts << " experts, ";
    if (block.hashTable) {
      diag << "each token's expert hash_table[" << block.tokenIds
           << "] (a table of " << block.hashTable.getNumElements()
           << " entries), weight 1";
    } else if (block.expertChoice && block.capacity) {
      diag << "expert choice of " << block.capacity << " tokens each";
    } else if (block.expertChoice) {
      diag << "expert choice of min(ceil(" << shortest(block.capacityFactor)
           << " * T / " << numExperts << "), T) tokens each";
    } else {
      diag << "top-" << block.k;
    }
    if (block.threshold != 0.0)
      diag << " (top-p: while the scores before sum to under "
           << shortest(block.threshold) << ")";
    if (block.tokenCapacity)
      diag << " with a capacity of " << block.tokenCapacity
           << " tokens per expert"
           << (block.passDropped
                   ? " (dropped tokens pass through, scaled by their weight)"
                   : " (dropped tokens get zeros)");
    diag << (block.scoring == ScoringFunc::Sigmoid ? " of sigmoid scores"
             : block.scoring == ScoringFunc::TopkSoftmax
                 ? " of the logits, softmax over the chosen"
                 : "")
         << (block.routerBias ? " (router with a bias)" : "");
    if (block.temperature != 1.0)
      diag << " at softmax temperature " << shortest(block.temperature);
    diag << (block.selectionBias ? " with a selection bias" : "");
    if (!block.residual.empty())
      diag << " with the gating residual '" << block.residual << "'";
    if (block.nGroup)
      diag << " in the best " << block.topkGroup << " of " << block.nGroup
           << " expert groups";
    if (!block.expertGroups.empty()) {
      diag << " within the token's group of [";
      llvm::interleaveComma(block.expertGroups, diag);
      diag << "] (groups from '" << block.tokenGroups << "')";
    }
    diag << (block.renormalize ? " renormalized" : "");
    if (block.scale != 1.0) {
      SmallString<16> scale;
      APFloat(block.scale).toString(scale);
      diag << " scaled by " << scale;
    }
    diag << ", " << stringifyExpertKind(block.kind) << " "
         << stringifyActivation(block.activation) << " experts";
    if (block.limit != 0.0 || block.alpha != 1.0 || block.beta != 0.0)
      diag << " (limit " << shortest(block.limit) << ", alpha "
           << shortest(block.alpha) << ", beta " << shortest(block.beta) << ")";
    if (block.gateBias || block.upBias || block.downBias)
      diag << " with biases";
    if (!block.zeroKinds.empty()) {
      diag << " and MoE++'s";
      for (ZeroComputationKind kind : block.zeroKinds)
        diag << " " << stringifyZeroComputationKind(kind);
      diag << " experts";
    }
    if (block.sharedUp)
      diag << (block.sharedScale ? ", a shared expert scaled by sigmoid"
                                 : ", a shared expert");
    diag << "; result '" << node.output(0) << "' of " << node.op_type() << " '"
         << node.name() << "'";
  }
  return success();
}

LogicalResult GraphImporter::importNode(const onnx::NodeProto &node) {
  Location loc = nodeLoc(node);
  StringRef domain = node.domain();
  auto opsetIt = opsets.find(domain == "ai.onnx" ? "" : domain);
  int64_t opset = opsetIt == opsets.end() ? 0 : opsetIt->second;
  auto it = handlers.find(handlerKey(domain, node.op_type()));
  if (it == handlers.end()) {
    mlir::emitError(loc) << "unsupported ONNX op '" << node.op_type()
                         << "' (node '" << node.name() << "', "
                         << domainName(domain) << " opset " << opset << ")";
    return failure();
  }
  const OpHandlerInfo &info = *it->second;
  Node view(*this, node, opset, loc);
  if (opset == 0) {
    view.emitError() << "the model imports no opset for domain '"
                     << domainName(domain) << "'";
    return failure();
  }
  if (opset < info.minOpset || opset > info.maxOpset) {
    view.emitError() << "opset " << opset
                     << " is not supported (supported: " << info.minOpset
                     << " to " << info.maxOpset << ")";
    return failure();
  }
  // A raised MoE block reads its input rows alone (its other inputs may not
  // be imported: see importModel).
  bool raised;
  if (failed(raiseBlock(node, raised)))
    return failure();
  if (raised)
    return success();
  for (int i = 0; i < node.input_size(); ++i) {
    if (node.input(i).empty() || lookup(node.input(i)))
      continue;
    view.emitError() << "input '" << node.input(i) << "' is not defined";
    return failure();
  }
  // uint8 (ui8) tensors exist for QMoE's weights; the other handlers build
  // arith ops, which take signless integers only.
  if (node.op_type() != "QMoE")
    for (int i = 0; i < node.input_size(); ++i) {
      Value value = node.input(i).empty() ? Value() : lookup(node.input(i));
      if (!value || !getElementTypeOrSelf(value.getType()).isUnsignedInteger())
        continue;
      view.emitError() << "input '" << node.input(i)
                       << "' is uint8, which is supported only for the "
                          "weights of com.microsoft.QMoE";
      return failure();
    }
  if (failed(info.handler(view)))
    return failure();
  if (info.domain.empty())
    propagateShapeValues(view);
  return success();
}

LogicalResult GraphImporter::importGraphInputs(func::FuncOp func) {
  const onnx::GraphProto &graph = model.graph();
  llvm::StringSet<> initializers;
  for (const onnx::TensorProto &tensor : graph.initializer())
    initializers.insert(tensor.name());
  SmallVector<Type> inputTypes;
  SmallVector<std::string> names;
  for (const onnx::ValueInfoProto &input : graph.input()) {
    // Before IR version 4, initializers are listed among the inputs too.
    if (initializers.contains(input.name()))
      continue;
    Location loc =
        NameLoc::get(StringAttr::get(context, input.name()), fileLoc);
    FailureOr<RankedTensorType> type = convertValueType(input, loc);
    if (failed(type))
      return failure();
    inputTypes.push_back(*type);
    names.push_back(input.name());
  }
  func.setType(builder.getFunctionType(inputTypes, {}));
  Block *entry = func.addEntryBlock();
  for (auto [i, name] : llvm::enumerate(names)) {
    bind(name, entry->getArgument(i));
    func.setArgAttr(i, "moe.name", builder.getStringAttr(name));
  }
  builder.setInsertionPointToStart(entry);
  return success();
}

llvm::DenseSet<const onnx::NodeProto *>
GraphImporter::liveNodes(const onnx::GraphProto &graph) const {
  llvm::DenseSet<const onnx::NodeProto *> live;
  SmallVector<StringRef> worklist;
  for (const onnx::ValueInfoProto &output : graph.output())
    worklist.push_back(output.name());
  while (!worklist.empty()) {
    const onnx::NodeProto *node = producers.lookup(worklist.pop_back_val());
    if (!node || !live.insert(node).second)
      continue;
    // A raised block reads its input rows only (and hash routing's token
    // ids or the token groups).
    auto block = blocks.find(node);
    if (block != blocks.end()) {
      worklist.push_back(block->second.input);
      for (StringRef extra :
           {block->second.tokenIds, block->second.tokenGroups})
        if (!extra.empty())
          worklist.push_back(extra);
      continue;
    }
    for (const std::string &input : node->input())
      if (!input.empty())
        worklist.push_back(input);
  }
  return live;
}

OwningOpRef<ModuleOp> GraphImporter::importModel() {
  for (const onnx::OperatorSetIdProto &opset : model.opset_import()) {
    StringRef domain = opset.domain();
    opsets[domain == "ai.onnx" ? "" : domain] = opset.version();
  }
  if (model.opset_import_size() == 0 && model.ir_version() < 3)
    opsets[""] = 1;
  const onnx::GraphProto &graph = model.graph();
  for (const onnx::NodeProto &node : graph.node())
    for (const std::string &output : node.output())
      if (!output.empty())
        producers[output] = &node;

  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  builder.setInsertionPointToEnd(module->getBody());
  StringRef graphName = graph.name();
  Location funcLoc =
      graphName.empty()
          ? fileLoc
          : Location(NameLoc::get(builder.getStringAttr(graphName), fileLoc));
  auto func = func::FuncOp::create(builder, funcLoc, "main",
                                   builder.getFunctionType({}, {}));
  if (failed(importGraphInputs(func)) || failed(importInitializers()))
    return nullptr;
  for (MoEBlock &block :
       findMoEBlocks(*this, graph, remarks, [&](const onnx::NodeProto &node) {
         return nodeLoc(node);
       }))
    blocks[block.outputNode] = std::move(block);
  // The nodes only a raised block reads are imported too (and dropped as
  // dead once the block is), so that a block that fails to build is imported
  // op by op. Expert choice with a capacity computed from T has no op-by-op
  // form (TopK takes a constant K): with such a block, only the nodes the
  // graph's outputs need through the raised blocks are imported. Nor has
  // transformers' loop over the experts hit (a Split of a dynamic NonZero).
  bool prune = llvm::any_of(blocks, [](const auto &entry) {
    return (entry.second.expertChoice && entry.second.capacity == 0) ||
           entry.second.hitLoop;
  });
  llvm::DenseSet<const onnx::NodeProto *> live;
  if (prune)
    live = liveNodes(graph);
  for (const onnx::NodeProto &node : graph.node())
    if ((!prune || live.contains(&node)) && failed(importNode(node)))
      return nullptr;

  SmallVector<Value> results;
  SmallVector<Type> resultTypes;
  for (const onnx::ValueInfoProto &output : graph.output()) {
    Location loc = NameLoc::get(builder.getStringAttr(output.name()), fileLoc);
    Value value = lookup(output.name());
    if (!value) {
      mlir::emitError(loc) << "graph output '" << output.name()
                           << "' is not produced by the graph";
      return nullptr;
    }
    // A declared type that is more static than the inferred one wins.
    if (output.type().has_tensor_type() &&
        output.type().tensor_type().has_shape()) {
      FailureOr<RankedTensorType> declared = convertValueType(output, loc);
      if (failed(declared))
        return nullptr;
      if (*declared != value.getType() &&
          tensor::CastOp::areCastCompatible(value.getType(), *declared))
        value = tensor::CastOp::create(builder, loc, *declared, value);
    }
    results.push_back(value);
    resultTypes.push_back(value.getType());
  }
  func::ReturnOp::create(builder, funcLoc, results);
  func.setType(builder.getFunctionType(func.getArgumentTypes(), resultTypes));
  for (auto [i, output] : llvm::enumerate(graph.output()))
    func.setResultAttr(i, "moe.name", builder.getStringAttr(output.name()));

  // Handlers may leave operations nobody uses (a raised router matmul, the
  // original layout of rearranged weights); drop them. A run-time check goes
  // with the op it guards (the next guarded op after it in the block).
  SmallVector<Operation *> ops;
  for (Operation &op : func.getBody().front().without_terminator())
    ops.push_back(&op);
  bool guardedErased = false;
  for (Operation *op : llvm::reverse(ops)) {
    bool guarded = op->hasAttr(kGuardedAttr);
    bool dead =
        isOpTriviallyDead(op) || (op->hasAttr(kGuardAttr) && guardedErased);
    if (guarded)
      guardedErased = dead;
    if (dead) {
      op->erase();
      continue;
    }
    op->removeAttr(kGuardAttr);
    op->removeAttr(kGuardedAttr);
  }

  if (failed(verify(*module)))
    return nullptr;
  return module;
}

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

OwningOpRef<ModuleOp> moe::importONNX(StringRef bytes, StringRef fileName,
                                      StringRef modelDir, MLIRContext *context,
                                      const ImportONNXOptions &options) {
  DialectRegistry registry;
  registerImportONNXDialects(registry);
  context->appendDialectRegistry(registry);
  context->loadAllAvailableDialects();

  Location fileLoc = FileLineColLoc::get(context, fileName, 0, 0);
  if (bytes.empty()) {
    emitError(fileLoc) << "'" << fileName << "' is empty, not an ONNX model";
    return nullptr;
  }
  if (bytes.size() > INT_MAX) {
    emitError(fileLoc) << "'" << fileName
                       << "' is larger than the 2 GiB protobuf limit; keep "
                          "large weights in external data files";
    return nullptr;
  }
  onnx::ModelProto model;
  google::protobuf::io::CodedInputStream stream(
      reinterpret_cast<const uint8_t *>(bytes.data()), (int)bytes.size());
  stream.SetTotalBytesLimit(INT_MAX);
  if (!model.ParseFromCodedStream(&stream) || !stream.ConsumedEntireMessage()) {
    emitError(fileLoc) << "'" << fileName
                       << "' is not a valid ONNX model (protobuf parsing "
                          "failed; the file may be truncated or corrupt)";
    return nullptr;
  }
  if (!model.has_graph() || model.graph().output_size() == 0) {
    emitError(fileLoc) << "'" << fileName
                       << "' holds no ONNX graph with outputs";
    return nullptr;
  }
  GraphImporter importer(context, model, fileName, modelDir, options.remarks);
  return importer.importModel();
}

OwningOpRef<ModuleOp> moe::importONNXFile(StringRef path, MLIRContext *context,
                                          const ImportONNXOptions &options) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!buffer) {
    emitError(FileLineColLoc::get(context, path, 0, 0))
        << "cannot open '" << path << "': " << buffer.getError().message();
    return nullptr;
  }
  return importONNX((*buffer)->getBuffer(), path,
                    llvm::sys::path::parent_path(path), context, options);
}

void moe::registerImportONNXDialects(DialectRegistry &registry) {
  registry.insert<arith::ArithDialect, cf::ControlFlowDialect,
                  func::FuncDialect, linalg::LinalgDialect, math::MathDialect,
                  scf::SCFDialect, tensor::TensorDialect, MoEDialect>();
}

void moe::registerImportONNXTranslation() {
  static llvm::cl::opt<bool> remarks(
      "remarks",
      llvm::cl::desc("ONNX import: report which MoE blocks were raised to "
                     "moe.layer, and why others were not"),
      llvm::cl::init(false));
  TranslateToMLIRRegistration registration(
      "import-onnx", "import an ONNX model (.onnx) into MLIR",
      [](llvm::SourceMgr &sourceMgr,
         MLIRContext *context) -> OwningOpRef<Operation *> {
        const llvm::MemoryBuffer *buffer =
            sourceMgr.getMemoryBuffer(sourceMgr.getMainFileID());
        StringRef fileName = buffer->getBufferIdentifier();
        StringRef dir = llvm::sys::path::parent_path(fileName);
        OwningOpRef<ModuleOp> module =
            importONNX(buffer->getBuffer(), fileName, dir, context,
                       ImportONNXOptions{remarks});
        if (!module)
          return nullptr;
        return OwningOpRef<Operation *>(module.release());
      },
      registerImportONNXDialects);
}
