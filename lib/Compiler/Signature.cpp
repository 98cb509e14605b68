//===- Signature.cpp - Entry point, signature and weights -----------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Picks the entry function, describes it with the signature text of
// docs/CompiledModelABI.md, and moves its large constant tensors into the
// weights file as trailing arguments.
//
//===----------------------------------------------------------------------===//

#include "CompilerInternal.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace moe;
using namespace moe::compiler;

/// The attribute naming an entry argument, result or weight constant.
static constexpr llvm::StringLiteral kNameAttr = "moe.name";

/// The ABI spelling of `type`, or an empty string if the ABI has none.
static StringRef getABIElementType(Type type) {
  if (type.isF32())
    return "f32";
  if (type.isF64())
    return "f64";
  if (type.isF16())
    return "f16";
  if (type.isBF16())
    return "bf16";
  auto intType = dyn_cast<IntegerType>(type);
  if (!intType)
    return "";
  unsigned width = intType.getWidth();
  if (intType.isUnsigned())
    return width == 8 ? "u8" : "";
  switch (width) {
  case 1:
    return "i1";
  case 8:
    return "i8";
  case 16:
    return "i16";
  case 32:
    return "i32";
  case 64:
    return "i64";
  default:
    return "";
  }
}

/// Bytes per element in memory (i1 takes one byte, as in MLIR memrefs).
static uint64_t getElementBytes(Type type) {
  unsigned bits = type.getIntOrFloatBitWidth();
  return bits == 1 ? 1 : bits / 8;
}

static std::string formatDims(ArrayRef<int64_t> shape) {
  if (shape.empty())
    return "scalar";
  std::string text;
  llvm::raw_string_ostream os(text);
  llvm::interleave(
      shape, os,
      [&](int64_t dim) {
        if (ShapedType::isDynamic(dim))
          os << '?';
        else
          os << dim;
      },
      "x");
  return text;
}

std::string ModelSignature::str() const {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "moe-model 1\n";
  for (const TensorSpec &input : inputs)
    os << "input " << input.name << ' ' << input.dtype << ' '
       << formatDims(input.shape) << '\n';
  for (const WeightSpec &weight : weights) {
    os << "weight " << weight.tensor.name << ' ' << weight.tensor.dtype << ' '
       << formatDims(weight.tensor.shape) << " offset=" << weight.offset
       << " bytes=" << weight.bytes;
    if (weight.cacheLayer >= 0)
      os << " layer=" << weight.cacheLayer;
    os << '\n';
  }
  for (const CacheLayerSpec &cache : cacheLayers) {
    os << "cache " << cache.layer << " experts=" << cache.experts
       << " slots=" << cache.slots;
    if (!cache.pinned.empty()) {
      os << " pinned=";
      llvm::interleave(cache.pinned, os, ",");
    }
    os << '\n';
  }
  for (const TensorSpec &output : outputs)
    os << "output " << output.name << ' ' << output.dtype << ' '
       << output.shape.size() << '\n';
  return text;
}

FailureOr<func::FuncOp> compiler::selectEntry(ModuleOp module, StringRef name) {
  if (!name.empty()) {
    auto entry = module.lookupSymbol<func::FuncOp>(name);
    if (!entry)
      return emitError(module.getLoc())
             << "no function named '" << name << "' (from --entry)";
    if (entry.isExternal())
      return emitError(entry.getLoc())
             << "entry function '" << name << "' has no body";
    return entry;
  }
  SmallVector<func::FuncOp> candidates;
  for (auto func : module.getOps<func::FuncOp>())
    if (func.isPublic() && !func.isExternal())
      candidates.push_back(func);
  if (candidates.size() == 1)
    return candidates.front();
  if (candidates.empty())
    return emitError(module.getLoc())
           << "no public func.func with a body to use as the entry point";
  InFlightDiagnostic diag = emitError(module.getLoc())
                            << "several public functions could be the entry "
                               "point; choose one with --entry: ";
  llvm::interleaveComma(candidates, diag,
                        [&](func::FuncOp func) { diag << func.getSymName(); });
  return diag;
}

FailureOr<std::string> compiler::renameReservedSymbols(ModuleOp module,
                                                       func::FuncOp entry) {
  static constexpr llvm::StringLiteral kReserved[] = {
      "main", "moe_model_run", "moe_model_signature",
      "moe_model_signature_text", "moe_run_main"};
  SymbolTable symbolTable(module);
  for (StringRef reserved : kReserved) {
    Operation *op = symbolTable.lookup(reserved);
    if (!op)
      continue;
    // Symbols keep their name when they can stay unchanged: external
    // declarations of the runtime's functions are not ours to rename.
    auto func = dyn_cast<func::FuncOp>(op);
    if (func && func.isExternal())
      return emitError(op->getLoc())
             << "external function '" << reserved
             << "' collides with a symbol of the compiled-model ABI";
    std::string base = ("moe_user_" + reserved).str();
    std::string name = base;
    for (unsigned i = 1; symbolTable.lookup(name); ++i)
      name = base + "_" + std::to_string(i);
    if (failed(symbolTable.rename(op, name)))
      return emitError(op->getLoc()) << "cannot rename '" << reserved << "'";
  }
  return entry.getSymName().str();
}

/// Returns `name` made of characters the signature's tokens allow.
static std::string sanitizeName(StringRef name) {
  std::string result;
  for (char c : name)
    result.push_back(llvm::isAlnum(c) || c == '_' || c == '.' || c == '-' ||
                             c == ':' || c == '/'
                         ? c
                         : '_');
  return result;
}

namespace {
/// Hands out unique names for the signature.
class NameTable {
public:
  std::string get(StringRef preferred, StringRef fallback) {
    std::string base =
        preferred.empty() ? fallback.str() : sanitizeName(preferred);
    std::string name = base;
    for (unsigned i = 1; !used.insert(name).second; ++i)
      name = base + "_" + std::to_string(i);
    return name;
  }

private:
  llvm::StringSet<> used;
};
} // namespace

static StringRef getNameAttr(DictionaryAttr attrs) {
  if (!attrs)
    return "";
  if (auto name = attrs.getAs<StringAttr>(kNameAttr))
    return name.getValue();
  return "";
}

/// Checks that `type` can cross the ABI and describes it.
static FailureOr<TensorSpec> describeBoundaryType(Type type, Location loc,
                                                  StringRef what) {
  auto tensorType = dyn_cast<RankedTensorType>(type);
  StringRef dtype =
      tensorType ? getABIElementType(tensorType.getElementType()) : "";
  if (dtype.empty())
    return emitError(loc)
           << what << " has type " << type
           << "; the compiled-model ABI passes only ranked tensors of f32, "
              "f64, f16, bf16, i8, i16, i32, i64, ui8 or i1";
  TensorSpec spec;
  spec.dtype = dtype.str();
  spec.shape.assign(tensorType.getShape().begin(), tensorType.getShape().end());
  return spec;
}

/// The bytes of `value` in the weights file, or 0 if it cannot be outlined.
static uint64_t getOutlinableBytes(ElementsAttr value) {
  if (!isa<DenseElementsAttr, DenseResourceElementsAttr>(value))
    return 0;
  auto type = dyn_cast<RankedTensorType>(value.getType());
  if (!type || !type.hasStaticShape() ||
      getABIElementType(type.getElementType()).empty())
    return 0;
  return static_cast<uint64_t>(type.getNumElements()) *
         getElementBytes(type.getElementType());
}

void compiler::layOutWeights(ModelSignature &signature) {
  uint64_t offset = 0;
  for (WeightSpec &weight : signature.weights) {
    if (weight.cacheLayer >= 0)
      offset =
          llvm::alignTo(kWeightAlignment + offset, kCachedWeightAlignment) -
          kWeightAlignment;
    weight.offset = offset;
    offset = llvm::alignTo(offset + weight.bytes, kWeightAlignment);
  }
  signature.dataBytes = offset;
}

FailureOr<ModelSignature> compiler::buildSignatureAndOutlineWeights(
    func::FuncOp entry, uint64_t thresholdBytes, bool outlineMoEOperands) {
  MLIRContext *context = entry.getContext();
  ModelSignature signature;
  NameTable names;

  FunctionType type = entry.getFunctionType();
  for (auto [index, argType] : llvm::enumerate(type.getInputs())) {
    std::string what = "entry argument #" + std::to_string(index);
    FailureOr<TensorSpec> spec =
        describeBoundaryType(argType, entry.getArgument(index).getLoc(), what);
    if (failed(spec))
      return failure();
    spec->name = names.get(getNameAttr(entry.getArgAttrDict(index)),
                           "arg" + std::to_string(index));
    signature.inputs.push_back(std::move(*spec));
  }
  for (auto [index, resultType] : llvm::enumerate(type.getResults())) {
    std::string what = "entry result #" + std::to_string(index);
    FailureOr<TensorSpec> spec =
        describeBoundaryType(resultType, entry.getLoc(), what);
    if (failed(spec))
      return failure();
    spec->name = names.get(getNameAttr(entry.getResultAttrDict(index)),
                           "out" + std::to_string(index));
    signature.outputs.push_back(std::move(*spec));
  }

  // Constants large enough to outline, in program order; identical values
  // share one weight.
  SmallVector<arith::ConstantOp> constants;
  entry.walk([&](arith::ConstantOp op) {
    auto value = dyn_cast<ElementsAttr>(op.getValue());
    if (!value || op.use_empty())
      return;
    uint64_t bytes = getOutlinableBytes(value);
    // For the GPU, every tensor a kernel reads must be in device memory: the
    // operands of moe ops, and non-splat tensors that linalg ops or
    // elementwise ops read (they become kernels too; a splat becomes a
    // scalar in its kernel).
    auto isKernelOperand = [&](Operation *user) {
      if (isa<moe::MoEDialect>(user->getDialect()))
        return true;
      if (auto dense = dyn_cast<DenseElementsAttr>(value);
          dense && dense.isSplat())
        return false;
      return isa<linalg::LinalgOp>(user) ||
             user->getParentOfType<linalg::LinalgOp>() ||
             (isa<arith::ArithDialect, math::MathDialect>(user->getDialect()) &&
              llvm::any_of(user->getOperandTypes(), llvm::IsaPred<TensorType>));
    };
    bool moeOperand = outlineMoEOperands && bytes > 0 &&
                      llvm::any_of(op->getUsers(), isKernelOperand);
    if (bytes <= thresholdBytes && !moeOperand)
      return;
    // A new argument is visible only where the region sees the function's.
    if (op->getParentWithTrait<OpTrait::IsIsolatedFromAbove>() != entry)
      return;
    constants.push_back(op);
  });

  if (!constants.empty() && !SymbolTable::symbolKnownUseEmpty(
                                entry, entry->getParentOfType<ModuleOp>()))
    return emitError(entry.getLoc())
           << "entry function '" << entry.getSymName()
           << "' is called inside the module; its weights cannot become "
              "arguments";

  llvm::DenseMap<Attribute, BlockArgument> outlined;
  for (arith::ConstantOp op : constants) {
    auto value = cast<ElementsAttr>(op.getValue());
    auto it = outlined.find(value);
    if (it != outlined.end()) {
      op.getResult().replaceAllUsesWith(it->second);
      op.erase();
      continue;
    }
    unsigned index = entry.getNumArguments();
    if (failed(entry.insertArgument(index, op.getType(), {}, op.getLoc())))
      return emitError(op.getLoc()) << "cannot add a weight argument";
    BlockArgument arg = entry.getArgument(index);

    WeightSpec weight;
    auto tensorType = cast<RankedTensorType>(value.getType());
    weight.tensor.dtype = getABIElementType(tensorType.getElementType()).str();
    weight.tensor.shape.assign(tensorType.getShape().begin(),
                               tensorType.getShape().end());
    StringRef preferred;
    if (auto name = op->getAttrOfType<StringAttr>(kNameAttr))
      preferred = name.getValue();
    else if (auto nameLoc = dyn_cast<NameLoc>(op.getLoc()))
      preferred = nameLoc.getName().getValue();
    weight.tensor.name =
        names.get(preferred, "w" + std::to_string(signature.weights.size()));
    weight.bytes = getOutlinableBytes(value);
    weight.value = value;
    signature.weights.push_back(std::move(weight));

    outlined[value] = arg;
    op.getResult().replaceAllUsesWith(arg);
    op.erase();
  }
  layOutWeights(signature);

  // The caller's inputs and the mapped weights are never written in place.
  auto readOnly = BoolAttr::get(context, false);
  for (unsigned i = 0, e = entry.getNumArguments(); i < e; ++i) {
    entry.removeArgAttr(i, kNameAttr);
    entry.setArgAttr(i, bufferization::BufferizationDialect::kWritableAttrName,
                     readOnly);
  }
  for (unsigned i = 0, e = entry.getNumResults(); i < e; ++i)
    entry.removeResultAttr(i, StringAttr::get(context, kNameAttr));
  return signature;
}

/// Writes the elements of `value` row-major, one byte per i1.
static LogicalResult writeElements(ElementsAttr value, uint64_t bytes,
                                   llvm::raw_ostream &os, Location loc) {
  Type elementType = value.getElementType();
  if (auto dense = dyn_cast<DenseElementsAttr>(value)) {
    if (elementType.isInteger(1)) {
      for (bool bit : dense.getValues<bool>())
        os << static_cast<char>(bit ? 1 : 0);
      return success();
    }
    ArrayRef<char> raw = dense.getRawData();
    if (!dense.isSplat()) {
      os.write(raw.data(), raw.size());
      return success();
    }
    uint64_t elementBytes = getElementBytes(elementType);
    for (uint64_t written = 0; written < bytes; written += elementBytes)
      os.write(raw.data(), elementBytes);
    return success();
  }
  auto resource = cast<DenseResourceElementsAttr>(value);
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob)
    return emitError(loc) << "the dense_resource '"
                          << resource.getRawHandle().getKey()
                          << "' has no data in the input";
  ArrayRef<char> data = blob->getData();
  if (data.size() != bytes)
    return emitError(loc) << "the dense_resource '"
                          << resource.getRawHandle().getKey() << "' holds "
                          << data.size() << " bytes, its type needs " << bytes;
  os.write(data.data(), data.size());
  return success();
}

LogicalResult compiler::writeWeightsFile(const ModelSignature &signature,
                                         llvm::raw_ostream &os, Location loc) {
  char header[kWeightAlignment] = {};
  memcpy(header, "MOEWGHT1", 8);
  llvm::support::endian::write64le(header + 8, signature.dataBytes);
  os.write(header, sizeof(header));
  uint64_t position = 0;
  for (const WeightSpec &weight : signature.weights) {
    os.write_zeros(weight.offset - position);
    if (failed(writeElements(weight.value, weight.bytes, os, loc)))
      return failure();
    position = weight.offset + weight.bytes;
  }
  os.write_zeros(signature.dataBytes - position);
  return success();
}

void compiler::writeHeader(const ModelSignature &signature, StringRef guardName,
                           llvm::raw_ostream &os) {
  std::string guard = "MOE_MODEL_";
  for (char c : guardName)
    guard.push_back(llvm::isAlnum(c) ? llvm::toUpper(c) : '_');
  guard += "_H";
  os << "/* Generated by moe-compile; see docs/CompiledModelABI.md.\n"
     << " *\n"
     << " * Signature:\n";
  std::string text = signature.str();
  SmallVector<StringRef> lines;
  StringRef(text).split(lines, '\n', -1, /*KeepEmpty=*/false);
  for (StringRef line : lines)
    os << " *   " << line << '\n';
  os << " */\n\n"
     << "#ifndef " << guard << "\n#define " << guard << "\n\n"
     << "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
     << "/* The signature text above, NUL-terminated. */\n"
     << "const char *moe_model_signature(void);\n"
     << "/* args[0]: the result block; args[1..]: one memref descriptor per\n"
     << " * input, then per weight, in signature order. */\n"
     << "void moe_model_run(void **args);\n\n"
     << "#ifdef __cplusplus\n} /* extern \"C\" */\n#endif\n\n"
     << "#endif /* " << guard << " */\n";
}
