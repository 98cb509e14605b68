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
#include "moe/Pipelines/CUDAPipeline.h"
#include "moe/Pipelines/Pipelines.h"

#include "moe/Conversion/RuntimeHooks.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
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
  if (options.target == "cuda") {
    // moe_cuda_run_model gives the entry fresh device copies of its inputs
    // and weights, so it may write them. Read-only arguments would make
    // bufferization copy them with host code, which cannot read device
    // memory.
    for (unsigned i = 0, e = entry.getNumArguments(); i < e; ++i)
      entry.removeArgAttr(
          i, bufferization::BufferizationDialect::kWritableAttrName);
    CUDAPipelineOptions pipelineOptions;
    pipelineOptions.chip = options.gpuArch;
    pipelineOptions.format = "isa";
    // moe_cuda_run_model waits for the GPU after copying the results.
    pipelineOptions.runtimeEntry = entry.getSymName().str();
    buildCUDAPipeline(pm, pipelineOptions);
  } else {
    // The entry alone gets the C interface; the glue below calls it. Heap
    // buffers go through the generic functions, whose caching versions
    // (runtime/support/ModelAlloc.c) linkObject links in.
    CPUPipelineOptions pipelineOptions;
    if (failed(pipelineOptions.parseFromString(options.cpuPipeline)))
      return emitError(UnknownLoc::get(module.getContext()))
             << "bad --cpu-pipeline='" << options.cpuPipeline << "'";
    pipelineOptions.emitCInterface = false;
    pipelineOptions.genericAlloc = true;
    buildCPUPipeline(pm, pipelineOptions);
  }
  if (failed(pm.run(module)))
    return emitError(UnknownLoc::get(module.getContext()))
           << "lowering to the LLVM dialect failed";
  return success();
}

/// The names of the functions the ABI glue defines; they keep external
/// linkage.
static bool isABISymbol(StringRef name) {
  return name == "moe_model_signature" || name == "moe_model_run" ||
         name == "moe_model_take_error" || name == "moe_model_bind_host" ||
         name == "moe_model_release" || name == "moe_model_device_ms" ||
         name == "moe_model_run_device" || name == "moe_model_device_alloc" ||
         name == "moe_model_device_free" || name == "moe_model_device_copy" ||
         name == "moe_model_cuda_tier_api" || name == "main";
}

/// The runtime hooks the lowering of placed experts, moe.prefetch and
/// moe.trace_routing calls, in the order of their function pointers in
/// `moe_host_api_t` (after its context pointer); see docs/ExpertCache.md.
static constexpr StringLiteral kHostHooks[] = {kAcquireHook,  kReleaseHook,
                                               kPrefetchHook, kPredictHook,
                                               kTraceHook,    "moe_rt_fail"};

/// Defines the runtime hooks the module declares: each loads its function
/// pointer from the table the runtime passed to `moe_model_bind_host` and
/// calls it with the table's context first. A hook called before binding
/// traps. Returns whether any hook is used.
static bool addHostHooks(OpBuilder &builder, ModuleOp module) {
  MLIRContext *context = module.getContext();
  Location loc = module.getLoc();
  auto ptrType = LLVM::LLVMPointerType::get(context);
  SmallVector<std::pair<LLVM::LLVMFuncOp, int32_t>> hooks;
  for (auto [index, name] : llvm::enumerate(kHostHooks))
    if (auto fn = module.lookupSymbol<LLVM::LLVMFuncOp>(name))
      if (fn.isExternal())
        hooks.push_back({fn, static_cast<int32_t>(index) + 1});
  if (hooks.empty())
    return false;

  builder.setInsertionPointToEnd(module.getBody());
  auto table = LLVM::GlobalOp::create(
      builder, loc, ptrType, /*isConstant=*/false, LLVM::Linkage::Internal,
      "moe_model_host_api", Attribute());
  {
    Block *init = builder.createBlock(&table.getInitializerRegion());
    builder.setInsertionPointToStart(init);
    LLVM::ReturnOp::create(builder, loc,
                           LLVM::ZeroOp::create(builder, loc, ptrType));
  }
  builder.setInsertionPointToEnd(module.getBody());
  auto bind = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_model_bind_host",
      LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(context), {ptrType}));
  Block *body = bind.addEntryBlock(builder);
  builder.setInsertionPointToStart(body);
  LLVM::StoreOp::create(builder, loc, body->getArgument(0),
                        LLVM::AddressOfOp::create(builder, loc, table));
  LLVM::ReturnOp::create(builder, loc, ValueRange{});

  for (auto [fn, index] : hooks) {
    fn.setLinkage(LLVM::Linkage::Internal);
    Block *entry = fn.addEntryBlock(builder);
    Block *trap = builder.createBlock(&fn.getBody());
    Block *call = builder.createBlock(&fn.getBody());
    builder.setInsertionPointToStart(entry);
    Value api = LLVM::LoadOp::create(
        builder, loc, ptrType, LLVM::AddressOfOp::create(builder, loc, table));
    Value unbound =
        LLVM::ICmpOp::create(builder, loc, LLVM::ICmpPredicate::eq, api,
                             LLVM::ZeroOp::create(builder, loc, ptrType));
    LLVM::CondBrOp::create(builder, loc, unbound, trap, call);
    builder.setInsertionPointToStart(trap);
    LLVM::Trap::create(builder, loc);
    LLVM::UnreachableOp::create(builder, loc);
    builder.setInsertionPointToStart(call);
    auto field = [&](int32_t i) -> Value {
      Value at = LLVM::GEPOp::create(builder, loc, ptrType, ptrType, api,
                                     ArrayRef<LLVM::GEPArg>{i});
      return LLVM::LoadOp::create(builder, loc, ptrType, at);
    };
    SmallVector<Value> operands = {field(index), field(0)};
    llvm::append_range(operands, entry->getArguments());
    LLVM::LLVMFunctionType type = fn.getFunctionType();
    SmallVector<Type> params = {ptrType};
    llvm::append_range(params, type.getParams());
    auto callType = LLVM::LLVMFunctionType::get(type.getReturnType(), params);
    auto result = LLVM::CallOp::create(builder, loc, callType, operands);
    LLVM::ReturnOp::create(builder, loc, result.getResults());
  }
  builder.setInsertionPointToEnd(module.getBody());
  return true;
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

/// The size in bytes of an element of the ABI type `dtype` (i1: one byte).
static int32_t getElementSize(StringRef dtype) {
  if (dtype == "f64" || dtype == "i64")
    return 8;
  if (dtype == "f32" || dtype == "i32")
    return 4;
  if (dtype == "f16" || dtype == "bf16" || dtype == "i16")
    return 2;
  return 1;
}

/// An internal constant array of `moe_cuda_arg_t` ({i32 rank, i32 element
/// size}) for `specs`; never empty.
static LLVM::GlobalOp createArgTable(OpBuilder &builder, ModuleOp module,
                                     StringRef name,
                                     ArrayRef<TensorSpec> specs) {
  SmallVector<int32_t> values;
  for (const TensorSpec &spec : specs) {
    values.push_back(static_cast<int32_t>(spec.shape.size()));
    values.push_back(getElementSize(spec.dtype));
  }
  if (values.empty())
    values.assign({0, 0});
  auto i32Type = builder.getI32Type();
  auto tensorType =
      RankedTensorType::get({static_cast<int64_t>(values.size())}, i32Type);
  auto arrayType = LLVM::LLVMArrayType::get(i32Type, values.size());
  return LLVM::GlobalOp::create(
      builder, module.getLoc(), arrayType, /*isConstant=*/true,
      LLVM::Linkage::Internal, name,
      DenseElementsAttr::get(tensorType, ArrayRef<int32_t>(values)));
}

/// Adds `moe_model_run(args)` calling `moe_cuda_run_model(args, params,
/// numInputs, numParams, results, numResults, entryFn, &state)`,
/// `moe_model_take_error` calling `moe_cuda_take_error`,
/// `moe_model_release()` calling `moe_cuda_release_model(&state)` and
/// `moe_model_device_ms()` calling `moe_cuda_device_ms(&state)`, where
/// `state` is a zero-initialized internal global (the device copies of the
/// weights live there between runs); also `moe_model_run_device(args)`
/// calling `moe_cuda_run_model_device` as `moe_model_run` does, and
/// `moe_model_device_{alloc,free,copy}` forwarding to
/// `moe_cuda_device_{alloc,free,copy}`, and `moe_model_cuda_tier_api`
/// returning `moe_cuda_tier_api()` (the expert cache's GPU tier). Returns
/// `moe_model_run`.
static LLVM::LLVMFuncOp addCUDARun(OpBuilder &builder, ModuleOp module,
                                   const ModelSignature &signature,
                                   LLVM::LLVMFuncOp entryFn) {
  MLIRContext *context = module.getContext();
  Location loc = module.getLoc();
  auto ptrType = LLVM::LLVMPointerType::get(context);
  auto i64Type = IntegerType::get(context, 64);
  auto i32Type = IntegerType::get(context, 32);
  auto f64Type = Float64Type::get(context);
  auto voidType = LLVM::LLVMVoidType::get(context);

  builder.setInsertionPointToEnd(module.getBody());
  SmallVector<TensorSpec> params(signature.inputs.begin(),
                                 signature.inputs.end());
  for (const WeightSpec &weight : signature.weights)
    params.push_back(weight.tensor);
  LLVM::GlobalOp paramTable =
      createArgTable(builder, module, "moe_cuda_params", params);
  LLVM::GlobalOp resultTable =
      createArgTable(builder, module, "moe_cuda_results", signature.outputs);
  auto stateGlobal = LLVM::GlobalOp::create(
      builder, loc, ptrType, /*isConstant=*/false, LLVM::Linkage::Internal,
      "moe_cuda_model_state", Attribute());
  {
    // A null initializer region.
    OpBuilder::InsertionGuard guard(builder);
    Block *init = builder.createBlock(&stateGlobal.getInitializerRegion());
    builder.setInsertionPointToStart(init);
    LLVM::ReturnOp::create(builder, loc,
                           LLVM::ZeroOp::create(builder, loc, ptrType));
  }

  auto runModelType = LLVM::LLVMFunctionType::get(
      voidType,
      {ptrType, ptrType, i64Type, i64Type, ptrType, i64Type, ptrType, ptrType});
  auto runModel = LLVM::LLVMFuncOp::create(builder, loc, "moe_cuda_run_model",
                                           runModelType);
  auto runModelDevice = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_cuda_run_model_device", runModelType);
  auto deviceAlloc =
      LLVM::LLVMFuncOp::create(builder, loc, "moe_cuda_device_alloc",
                               LLVM::LLVMFunctionType::get(ptrType, {i64Type}));
  auto deviceFree = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_cuda_device_free",
      LLVM::LLVMFunctionType::get(voidType, {ptrType}));
  auto deviceCopy = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_cuda_device_copy",
      LLVM::LLVMFunctionType::get(i32Type, {ptrType, ptrType, i64Type}));
  auto takeError =
      LLVM::LLVMFuncOp::create(builder, loc, "moe_cuda_take_error",
                               LLVM::LLVMFunctionType::get(ptrType, {}));
  auto releaseModel = LLVM::LLVMFuncOp::create(
      builder, loc, "moe_cuda_release_model",
      LLVM::LLVMFunctionType::get(voidType, {ptrType}));
  auto deviceMs =
      LLVM::LLVMFuncOp::create(builder, loc, "moe_cuda_device_ms",
                               LLVM::LLVMFunctionType::get(f64Type, {ptrType}));
  auto tierApi =
      LLVM::LLVMFuncOp::create(builder, loc, "moe_cuda_tier_api",
                               LLVM::LLVMFunctionType::get(ptrType, {}));

  auto count = [&](size_t n) -> Value {
    return LLVM::ConstantOp::create(builder, loc, i64Type,
                                    builder.getI64IntegerAttr(n));
  };
  auto state = [&]() -> Value {
    return LLVM::AddressOfOp::create(builder, loc, stateGlobal);
  };
  // `name(args)` calling `callee(args, tables..., &state)`.
  auto addRun = [&](StringRef name, LLVM::LLVMFuncOp callee) {
    builder.setInsertionPointToEnd(module.getBody());
    auto fn = LLVM::LLVMFuncOp::create(
        builder, loc, name, LLVM::LLVMFunctionType::get(voidType, {ptrType}));
    Block *body = fn.addEntryBlock(builder);
    builder.setInsertionPointToStart(body);
    LLVM::CallOp::create(
        builder, loc, callee,
        ValueRange{body->getArgument(0),
                   LLVM::AddressOfOp::create(builder, loc, paramTable),
                   count(signature.inputs.size()), count(params.size()),
                   LLVM::AddressOfOp::create(builder, loc, resultTable),
                   count(signature.outputs.size()),
                   LLVM::AddressOfOp::create(builder, loc, entryFn), state()});
    LLVM::ReturnOp::create(builder, loc, ValueRange{});
    return fn;
  };
  LLVM::LLVMFuncOp runFn = addRun("moe_model_run", runModel);
  addRun("moe_model_run_device", runModelDevice);

  // `name(params)` returning `callee(args(params))`: the glue's forwarders.
  auto forward = [&](StringRef name, LLVM::LLVMFuncOp callee,
                     ArrayRef<Type> paramTypes,
                     function_ref<SmallVector<Value>(Block *)> args) {
    builder.setInsertionPointToEnd(module.getBody());
    Type result = callee.getFunctionType().getReturnType();
    auto fn = LLVM::LLVMFuncOp::create(
        builder, loc, name, LLVM::LLVMFunctionType::get(result, paramTypes));
    Block *body = fn.addEntryBlock(builder);
    builder.setInsertionPointToStart(body);
    auto call = LLVM::CallOp::create(builder, loc, callee, args(body));
    if (isa<LLVM::LLVMVoidType>(result))
      LLVM::ReturnOp::create(builder, loc, ValueRange{});
    else
      LLVM::ReturnOp::create(builder, loc, call.getResult());
  };
  auto withState = [&](Block *) { return SmallVector<Value>{state()}; };
  auto passThrough = [](Block *body) {
    return SmallVector<Value>(body->getArguments());
  };
  forward("moe_model_take_error", takeError, {},
          [](Block *) { return SmallVector<Value>(); });
  forward("moe_model_release", releaseModel, {}, withState);
  forward("moe_model_device_ms", deviceMs, {}, withState);
  forward("moe_model_device_alloc", deviceAlloc, {i64Type}, passThrough);
  forward("moe_model_device_free", deviceFree, {ptrType}, passThrough);
  forward("moe_model_device_copy", deviceCopy, {ptrType, ptrType, i64Type},
          passThrough);
  forward("moe_model_cuda_tier_api", tierApi, {}, passThrough);
  builder.setInsertionPointToEnd(module.getBody());
  return runFn;
}

LogicalResult compiler::addABIGlue(ModuleOp module, StringRef entryName,
                                   const ModelSignature &signature,
                                   bool withMain, bool cuda) {
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
  addHostHooks(builder, module);
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

  // `moe_model_run` calls the entry directly for the CPU; for CUDA it passes
  // the same unpacking, as `moe_model_entry`, to moe_cuda_run_model.
  builder.setInsertionPointToEnd(module.getBody());
  auto voidType = LLVM::LLVMVoidType::get(context);
  auto runType = LLVM::LLVMFunctionType::get(voidType, {ptrType});
  auto runFn = LLVM::LLVMFuncOp::create(
      builder, loc, cuda ? "moe_model_entry" : "moe_model_run", runType);
  if (cuda)
    runFn.setLinkage(LLVM::Linkage::Internal);
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
  if (cuda)
    runFn = addCUDARun(builder, module, signature, runFn);

  if (withMain)
    addExecutableMain(builder, module, signatureFn, runFn);
  return success();
}
