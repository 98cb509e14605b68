//===- ModelABI.cpp - Lowering and the compiled-model ABI glue ------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Lowers the model to the LLVM dialect and adds, in the LLVM dialect, the two
// symbols of docs/CompiledModelABI.md (and a `main` for executables).
//
//===----------------------------------------------------------------------===//

#include "CompilerInternal.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/Dialect/LLVMIR/FunctionCallUtils.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Pass/PassManager.h"

using namespace mlir;
using namespace moe;
using namespace moe::compiler;

LogicalResult compiler::lowerToLLVMDialect(ModuleOp module, func::FuncOp entry,
                                           const CompileOptions &options) {
  entry->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(),
                 UnitAttr::get(module.getContext()));
  PassManager pm(module.getContext());
  // The entry alone gets the C interface; the glue below calls it.
  CPUPipelineOptions pipelineOptions;
  pipelineOptions.emitCInterface = false;
  buildCPUPipeline(pm, pipelineOptions);
  if (failed(pm.run(module)))
    return emitError(UnknownLoc::get(module.getContext()))
           << "lowering to the LLVM dialect failed";
  return success();
}

/// The names of the functions the ABI glue defines; they keep external
/// linkage.
static bool isABISymbol(StringRef name) {
  return name == "moe_model_signature" || name == "moe_model_run" ||
         name == "main";
}

/// Adds `main(argc, argv)` calling `moe_run_main` with a config that loads
/// the model linked into the executable.
static void addExecutableMain(OpBuilder &builder, ModuleOp module,
                              LLVM::LLVMFuncOp signatureFn,
                              LLVM::LLVMFuncOp runFn) {
  MLIRContext *context = module.getContext();
  Location loc = module.getLoc();
  auto ptrType = LLVM::LLVMPointerType::get(context);
  auto i32Type = IntegerType::get(context, 32);
  auto i64Type = IntegerType::get(context, 64);

  builder.setInsertionPointToEnd(module.getBody());
  auto runMain = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_run_main",
      LLVM::LLVMFunctionType::get(i32Type, {i32Type, ptrType, ptrType}));
  auto mainFn = LLVM::LLVMFuncOp::create(
      builder, loc, "main",
      LLVM::LLVMFunctionType::get(i32Type, {i32Type, ptrType}));
  Block *body = mainFn.addEntryBlock(builder);
  builder.setInsertionPointToStart(body);

  // moe_runner_config_t: {program_name, model_from_self, signature_fn,
  // run_fn, default_weights_path}, see moe/runtime/runner.h.
  auto configType = LLVM::LLVMStructType::getLiteral(
      context, {ptrType, i32Type, ptrType, ptrType, ptrType});
  Value one = LLVM::ConstantOp::create(builder, loc, i64Type,
                                       builder.getI64IntegerAttr(1));
  Value configPtr =
      LLVM::AllocaOp::create(builder, loc, ptrType, configType, one);
  Value config = LLVM::ZeroOp::create(builder, loc, configType);
  Value fromSelf = LLVM::ConstantOp::create(builder, loc, i32Type,
                                            builder.getI32IntegerAttr(1));
  config = LLVM::InsertValueOp::create(builder, loc, config, fromSelf, 1);
  config = LLVM::InsertValueOp::create(
      builder, loc, config,
      LLVM::AddressOfOp::create(builder, loc, signatureFn), 2);
  config = LLVM::InsertValueOp::create(
      builder, loc, config, LLVM::AddressOfOp::create(builder, loc, runFn), 3);
  LLVM::StoreOp::create(builder, loc, config, configPtr);
  Value status =
      LLVM::CallOp::create(
          builder, loc, runMain,
          ValueRange{body->getArgument(0), body->getArgument(1), configPtr})
          .getResult();
  LLVM::ReturnOp::create(builder, loc, status);
}

LogicalResult compiler::addABIGlue(ModuleOp module, StringRef entryName,
                                   const ModelSignature &signature,
                                   bool withMain) {
  MLIRContext *context = module.getContext();
  Location loc = module.getLoc();
  std::string cifaceName = ("_mlir_ciface_" + entryName).str();
  auto ciface = module.lookupSymbol<LLVM::LLVMFuncOp>(cifaceName);
  if (!ciface || ciface.isExternal())
    return emitError(loc) << "the lowered module has no '" << cifaceName
                          << "' to call from moe_model_run";

  bool hasResults = !signature.outputs.empty();
  size_t numArgs = signature.inputs.size() + signature.weights.size();
  LLVM::LLVMFunctionType cifaceType = ciface.getFunctionType();
  auto ptrType = LLVM::LLVMPointerType::get(context);
  if (cifaceType.getNumParams() != numArgs + (hasResults ? 1 : 0) ||
      !isa<LLVM::LLVMVoidType>(cifaceType.getReturnType()) ||
      !llvm::all_of(cifaceType.getParams(),
                    [&](Type type) { return type == ptrType; }))
    return emitError(loc) << "'" << cifaceName << "' has type " << cifaceType
                          << "; expected one descriptor pointer per result "
                             "block, input and weight";

  // Everything but the ABI symbols is private to the library.
  for (auto func : module.getOps<LLVM::LLVMFuncOp>())
    if (!func.isExternal() && !isABISymbol(func.getSymName()))
      func.setLinkage(LLVM::Linkage::Internal);

  OpBuilder builder = OpBuilder::atBlockEnd(module.getBody());
  std::string text = signature.str();
  text.push_back('\0');
  auto textType =
      LLVM::LLVMArrayType::get(IntegerType::get(context, 8), text.size());
  auto textGlobal = LLVM::GlobalOp::create(
      builder, loc, textType, /*isConstant=*/true, LLVM::Linkage::Internal,
      "moe_model_signature_text", builder.getStringAttr(text));

  auto signatureFn =
      LLVM::LLVMFuncOp::create(builder, loc, "moe_model_signature",
                               LLVM::LLVMFunctionType::get(ptrType, {}));
  Block *body = signatureFn.addEntryBlock(builder);
  builder.setInsertionPointToStart(body);
  LLVM::ReturnOp::create(
      builder, loc,
      LLVM::AddressOfOp::create(builder, loc, textGlobal).getResult());

  builder.setInsertionPointToEnd(module.getBody());
  auto runFn = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_model_run",
      LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(context), {ptrType}));
  body = runFn.addEntryBlock(builder);
  builder.setInsertionPointToStart(body);
  Value args = body->getArgument(0);
  SmallVector<Value> operands;
  for (size_t i = hasResults ? 0 : 1; i <= numArgs; ++i) {
    Value slot =
        LLVM::GEPOp::create(builder, loc, ptrType, ptrType, args,
                            ArrayRef<LLVM::GEPArg>{static_cast<int32_t>(i)});
    operands.push_back(LLVM::LoadOp::create(builder, loc, ptrType, slot));
  }
  LLVM::CallOp::create(builder, loc, ciface, operands);
  LLVM::ReturnOp::create(builder, loc, ValueRange{});

  if (withMain)
    addExecutableMain(builder, module, signatureFn, runFn);
  return success();
}
