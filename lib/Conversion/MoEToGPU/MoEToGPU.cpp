//===- MoEToGPU.cpp - Lower the moe dialect to GPU kernels ----------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Each moe op becomes a few `gpu.launch_func` of kernels written directly on
// memrefs with scf/arith/math/memref ops and `gpu` thread/block ids, barriers
// and workgroup memory. The kernels are specialized to the op's static sizes
// (experts, hidden and FFN sizes, k), which the op verifiers require to be
// static; only the token (row) count is dynamic. On the
// host side the tensor operands become buffers through
// `bufferization.to_buffer`, the results are `gpu.alloc` buffers returned
// through `bufferization.to_tensor`, so one-shot bufferization of the host
// function follows the conversion.
//
// Kernels compute in f32 (f64 for f64 tensors); f16 and bf16 tensors are
// loaded and stored in their own type, and their expert GEMMs run on tensor
// cores (`nvvm.mma.sync`, f32 accumulators).
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/MoEToGPU/MoEToGPU.h"
#include "KernelSupport.h"
#include "moe/Conversion/ExpertMath.h"
#include "moe/Conversion/Passes.h"
#include "moe/Conversion/RuntimeHooks.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/DialectConversion.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/RegionUtils.h"

#include <cmath>
#include <limits>

namespace moe {
#define GEN_PASS_DEF_CONVERTMOETOGPU
#include "moe/Conversion/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;
using namespace moe::gpu_lowering;

/// Threads per block of the one-dimensional kernels.
static constexpr int64_t kThreads = 128;
/// Passes of a dispatch warp over its assignments, 32 (one per lane) each.
static constexpr int64_t kDispatchPasses = 4;
/// Workgroup memory for the per-warp expert counts of a dispatch block; it
/// bounds the warps per block when there are many experts.
static constexpr int64_t kDispatchCountBytes = 16 * 1024;
/// Threads of the dispatch scan kernel.
static constexpr int64_t kDispatchScanThreads = 256;
/// Chunk counts the dispatch scan kernel loads at once per expert.
static constexpr int64_t kDispatchScanUnroll = 8;
/// Elements of the routing kernel's two workgroup score tiles together.
static constexpr int64_t kRoutingTileElements = 4096;
/// Threads per block of the routing kernel: its router matmul splits the
/// hidden dimension across threads when a block has few (token, expert)
/// pairs, as at decode.
static constexpr int64_t kRoutingThreads = 512;
/// Hidden elements per step of a routing thread's dot products (loads in
/// flight).
static constexpr int64_t kRoutingUnroll = 4;
/// The SMs of the GPUs the grid sizes are tuned for (an H100 or H200 has
/// 132). A tuning value, not a correctness one.
static constexpr int64_t kTargetSMs = 132;
/// Blocks the routing kernel aims at: tokens per block are chosen at run time
/// from the token count so that small batches spread over the GPU (one token
/// per block up to this many tokens). Three per SM (as many as fit: 512
/// threads of 40 registers), so that a thread's share of the router matmul
/// stays short at large T: with one per SM, S2 at
/// T = 4096 (E = 64; 32 tokens a block, 512 hidden elements times 8 experts
/// a thread) spent 0.19 ms in routing on an H100, a fifth of the layer.
static constexpr int64_t kRoutingTargetBlocks = 3 * kTargetSMs;
/// Bytes of workgroup memory of the routing kernel's partial sums (one
/// 16-byte router vector of compute-type sums per thread, at most 32 bytes).
static constexpr int64_t kRoutingPartialBytes = kRoutingThreads * 32;
/// Static workgroup memory available to one block.
static constexpr int64_t kMaxWorkgroupBytes = 48 * 1024;

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// Whether `type` is an element type the kernels handle.
static bool isSupportedFloat(Type type) {
  return type.isF16() || type.isBF16() || type.isF32() || type.isF64();
}

/// The type the kernels compute in for tensors of `elementType`.
static Type computeType(Type elementType) {
  if (elementType.isF64())
    return elementType;
  return Float32Type::get(elementType.getContext());
}

/// A workgroup (shared) memory buffer type.
static MemRefType workgroupType(ArrayRef<int64_t> shape, Type elementType) {
  MLIRContext *ctx = elementType.getContext();
  return MemRefType::get(
      shape, elementType, MemRefLayoutAttrInterface{},
      gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup));
}

//===----------------------------------------------------------------------===//
// IR building helpers for kernels and host code
//===----------------------------------------------------------------------===//

/// `gpu.shuffle` of an i32 or float value across the lanes of a warp.
static Value shuffle(const KernelBuilder &b, Value v, int32_t offset,
                     gpu::ShuffleMode mode) {
  return gpu::ShuffleOp::create(b.b, b.loc, v, offset, int32_t(kWarpSize), mode)
      .getShuffleResult();
}

/// `combine` of `v` over the lanes `first`, 2 `first`, ... apart (all of
/// the warp for `first` = 1), by a butterfly of XOR shuffles in that order.
/// With a commutative `combine` every lane ends with the same bits.
static Value warpReduce(const KernelBuilder &b, Value v,
                        function_ref<Value(Value, Value)> combine,
                        int64_t first = 1) {
  for (int64_t d = first; d < kWarpSize; d *= 2)
    v = combine(v, shuffle(b, v, d, gpu::ShuffleMode::XOR));
  return v;
}

/// The maximum of an i32 over the warp, in every lane.
static Value warpMax(const KernelBuilder &b, Value v) {
  return warpReduce(b, v, [&](Value x, Value y) -> Value {
    return arith::MaxSIOp::create(b.b, b.loc, x, y);
  });
}

/// `__syncwarp()`: the whole warp reconverges, and the lanes' workgroup
/// memory writes before it are visible to each other after it.
static void syncWarp(const KernelBuilder &b) {
  NVVM::SyncWarpOp::create(
      b.b, b.loc,
      arith::ConstantOp::create(b.b, b.loc, b.b.getI32IntegerAttr(-1)));
}

/// The elements of `type` from `indices` on along the last dimension of
/// `mem` (of `type`'s element type), zero where `valid` is false and at or
/// past `bound` in that dimension. Where `vectorOk` (uniform) holds, one
/// vector load reads them: the caller guarantees then that `mem` is aligned
/// to the vector's size and that its rows and `bound` are multiples of the
/// vector's length, so that a vector at an index that is a multiple of it is
/// all in or all out; elsewhere (or without `vectorOk`) element loads.
static Value loadMaskedVector(const KernelBuilder &b, VectorType type,
                              Value mem, SmallVector<Value> indices,
                              Value valid, Value bound, Value vectorOk) {
  OpBuilder &ob = b.b;
  Location loc = b.loc;
  Type elementType = type.getElementType();
  int64_t width = type.getNumElements();
  Value first = indices.back();
  auto select = [&](Value cond, function_ref<Value()> then,
                    function_ref<Value()> otherwise) {
    auto ifOp = scf::IfOp::create(
        ob, loc, cond,
        [&](OpBuilder &, Location) { scf::YieldOp::create(ob, loc, then()); },
        [&](OpBuilder &, Location) {
          scf::YieldOp::create(ob, loc, otherwise());
        });
    return ifOp.getResult(0);
  };
  auto scalar = [&]() -> Value {
    SmallVector<Value> elements;
    for (int64_t j = 0; j < width; ++j) {
      Value c = b.add(first, b.idx(j));
      indices.back() = c;
      elements.push_back(select(
          b.andI(valid, b.lt(c, bound)),
          [&] { return memref::LoadOp::create(ob, loc, mem, indices); },
          [&] {
            return arith::ConstantOp::create(ob, loc,
                                             ob.getFloatAttr(elementType, 0.0));
          }));
    }
    indices.back() = first;
    return vector::FromElementsOp::create(ob, loc, type, elements);
  };
  if (!vectorOk)
    return scalar();
  auto vectorized = [&]() -> Value {
    return select(
        b.andI(valid, b.lt(first, bound)),
        [&] {
          return vector::LoadOp::create(
              ob, loc, type, mem, indices, /*nontemporal=*/false,
              /*alignment=*/
              llvm::Align(width * elementType.getIntOrFloatBitWidth() / 8));
        },
        [&] {
          return arith::ConstantOp::create(
              ob, loc,
              DenseElementsAttr::get(type, ob.getFloatAttr(elementType, 0.0)));
        });
  };
  return select(vectorOk, vectorized, scalar);
}

/// The non-null values of `values`.
static SmallVector<Value> present(ArrayRef<Value> values) {
  SmallVector<Value> result;
  for (Value v : values)
    if (v)
      result.push_back(v);
  return result;
}

/// The types of `values`.
static SmallVector<Type> typesOf(ArrayRef<Value> values) {
  SmallVector<Type> types;
  for (Value v : values)
    types.push_back(v.getType());
  return types;
}

//===----------------------------------------------------------------------===//
// Support checks
//===----------------------------------------------------------------------===//

/// Warps per block of the dispatch kernels: up to 8, fewer when their
/// per-warp counts of `numExperts` experts would exceed kDispatchCountBytes.
static int64_t dispatchWarps(int64_t numExperts) {
  return std::clamp<int64_t>(kDispatchCountBytes / (4 * numExperts), 1, 8);
}

/// Workgroup memory of the largest dispatch kernel (per-warp counts, expert
/// totals and a scan buffer per thread, in i32).
static int64_t dispatchWorkgroupBytes(int64_t numExperts) {
  int64_t warps = dispatchWarps(numExperts);
  return 4 * (warps * numExperts + numExperts +
              std::max<int64_t>(32 * warps, kDispatchScanThreads));
}

/// Why `op` cannot be lowered, or an empty string when it can.
static std::string unsupportedReason(Operation *op) {
  if (isa<LayerOp>(op))
    return "is not lowered by convert-moe-to-gpu; run moe-expand first";
  if (auto experts = dyn_cast<ExpertsOp>(op);
      experts && experts.getPlacementAttr() &&
      experts.getPlacementAttr().getNumDevices() > 1)
    return "is placed over " +
           std::to_string(experts.getPlacementAttr().getNumDevices()) +
           " devices; moe-mlir runs a layer on one device (a plan over "
           "several devices is for expert-parallel engines)";
  if (auto quantized = dyn_cast<QuantizedExpertsOp>(op);
      quantized && !tensorType(quantized.getInput()).getElementType().isF32() &&
      !tensorType(quantized.getInput()).getElementType().isF16() &&
      !tensorType(quantized.getInput()).getElementType().isBF16())
    return "with 64-bit activations is not lowered by convert-moe-to-gpu (the "
           "quantized kernels reduce in 32-bit warp shuffles)";
  if (!isa<GateOp, RouteOp, DispatchOp, ExpertsOp, SharedExpertsOp, CombineOp,
           HashRouteOp, ZeroComputationExpertsOp, QuantizedExpertsOp>(op))
    return "";
  for (Type type :
       llvm::concat<const Type>(op->getOperandTypes(), op->getResultTypes())) {
    auto shaped = cast<RankedTensorType>(type);
    Type elementType = shaped.getElementType();
    if (isa<FloatType>(elementType) && !isSupportedFloat(elementType)) {
      std::string message;
      llvm::raw_string_ostream os(message);
      os << "with element type " << elementType
         << " is not supported by convert-moe-to-gpu (f16, bf16, f32 and f64 "
            "are)";
      return message;
    }
  }
  // The kernels read the weight matrices in the activations' type.
  for (OpOperand &operand : op->getOpOperands()) {
    if (!isExpertWeightMatrix(operand))
      continue;
    Type weightType = tensorType(operand.get()).getElementType();
    Type inputType = tensorType(op->getOperand(0)).getElementType();
    if (weightType != inputType) {
      std::string message;
      llvm::raw_string_ostream os(message);
      os << "with weights in " << weightType << " and activations in "
         << inputType
         << " is not lowered by convert-moe-to-gpu (the kernels read the "
            "weights in the activations' type)";
      return message;
    }
  }
  // The routing kernel keeps a [tokens, E] score and selection tile in
  // workgroup memory, at least one token's worth, and a partial sum per
  // thread.
  int64_t numExperts = 0;
  if (auto route = dyn_cast<RouteOp>(op))
    numExperts = route.getLogits().getType().getDimSize(1);
  if (auto gate = dyn_cast<GateOp>(op))
    numExperts = gate.getRouter().getType().getDimSize(1);
  constexpr int64_t maxExperts =
      (kMaxWorkgroupBytes - kRoutingPartialBytes) / (2 * 8);
  if (numExperts > maxExperts)
    return "with more than " + std::to_string(maxExperts) +
           " experts is not supported by convert-moe-to-gpu";
  // The dispatch kernels keep per-warp and total counts of every expert in
  // workgroup memory.
  if (auto dispatch = dyn_cast<DispatchOp>(op);
      dispatch &&
      dispatchWorkgroupBytes(dispatch.getNumExperts()) > kMaxWorkgroupBytes)
    return "with " + std::to_string(dispatch.getNumExperts()) +
           " experts is not supported by convert-moe-to-gpu (the dispatch "
           "kernels keep per-expert counts in workgroup memory)";
  return "";
}

LogicalResult moe::checkMoEToGPUSupport(Operation *root) {
  WalkResult result = root->walk([](Operation *op) {
    if (!isa<MoEDialect>(op->getDialect()))
      return WalkResult::advance();
    std::string reason = unsupportedReason(op);
    if (reason.empty())
      return WalkResult::advance();
    op->emitOpError(reason);
    return WalkResult::interrupt();
  });
  return failure(result.wasInterrupted());
}

//===----------------------------------------------------------------------===//
// Routing: one block per block of tokens
//===----------------------------------------------------------------------===//

/// The most tokens a block of the routing kernel takes for `numExperts`
/// experts (the rows of its workgroup score tiles).
static int64_t routingBlockTokens(int64_t numExperts, Type ct) {
  int64_t budget = kRoutingTileElements / (ct.isF64() ? 2 : 1);
  return std::clamp<int64_t>(budget / (2 * numExperts), 1, kRoutingThreads);
}

/// The tokens per block of a routing launch over `numTokens` tokens, the same
/// on the host (for the grid) and in the kernel: enough blocks for the GPU
/// (kRoutingTargetBlocks) up to `maxTokens` tokens each.
static Value routingTokensPerBlock(const KernelBuilder &b, Value numTokens,
                                   int64_t maxTokens) {
  Value perBlock = b.ceilDiv(numTokens, kRoutingTargetBlocks);
  return b.minI(b.maxI(perBlock, b.idx(1)), b.idx(maxTokens));
}

/// Router columns a routing thread reads with one 16-byte load (1 when the
/// expert count does not allow it).
static int64_t routingGroup(int64_t numExperts, Type elementType) {
  int64_t group = 16 / (elementType.getIntOrFloatBitWidth() / 8);
  return numExperts % group == 0 ? group : 1;
}

/// Builds `moe_expert_choice`: one thread per (token t, expert e) counts the
/// tokens with a better selection score in column e (greater, or equal with
/// a lower index) and keeps (t, e) when that rank is below the capacity C:
/// slot e of token t then holds e and the score (times `scale`), else -1 and
/// 0. O(T^2 E) comparisons, as the CPU lowering; C = `capacity`, or
/// ceil(capacity_factor * T / E), at most T. Arguments: scores, selection
/// ([T, E], compute type), ids, weights.
static Kernel buildExpertChoiceKernel(RewriterBase &rewriter, Operation *op,
                                      RoutingAttr routing, int64_t numExperts,
                                      TypeRange argTypes, Type ct) {
  Location loc = op->getLoc();
  Kernel kernel =
      createKernel(rewriter, op, "moe_expert_choice", argTypes, {}, kThreads);
  KernelBuilder b{rewriter, loc, ct};
  Value scores = kernel.args[0], selection = kernel.args[1];
  Value ids = kernel.args[2], weights = kernel.args[3];
  Value c0 = b.idx(0), c1 = b.idx(1), cE = b.idx(numExperts);
  Value numTokens = b.dim(ids, 0);
  Value i = b.add(b.mul(b.blockId(), b.idx(kThreads)), b.threadId());
  b.ifThen(b.lt(i, b.mul(numTokens, cE)), [&] {
    Value t = b.div(i, cE), e = b.rem(i, cE);
    Value mine = b.loadF(selection, {t, e});
    Value rank = b.loop(c0, numTokens, c1, c0, [&](Value o, ValueRange acc) {
      Value other = b.loadF(selection, {o, e});
      Value better =
          b.orI(b.cmpF(arith::CmpFPredicate::OGT, other, mine),
                b.andI(b.cmpF(arith::CmpFPredicate::OEQ, other, mine),
                       b.cmpI(arith::CmpIPredicate::ult, o, t)));
      return SmallVector<Value>{b.add(acc[0], b.select(better, c1, c0))};
    })[0];
    OpBuilder &ob = b.b;
    Value capacity = arith::IndexCastOp::create(
        ob, loc, ob.getIndexType(),
        buildExpertChoiceCapacity(
            ob, loc, routing, numExperts,
            arith::IndexCastOp::create(ob, loc, ob.getI64Type(), numTokens)));
    Value chosen = b.lt(rank, capacity);
    Value w = b.loadF(scores, {t, e});
    double scale = routing.getScale().convertToDouble();
    if (scale != 1.0)
      w = b.mul(w, b.flt(scale));
    b.storeI(b.select(chosen, e, b.idx(-1)), ids, {t, e});
    b.storeF(b.select(chosen, w, b.flt(0.0)), weights, {t, e});
  });
  return kernel;
}

/// Emits the routing kernel and its launch for `moe.gate` (with `router`,
/// and its `routerBias` if any) or `moe.route` (without): the block's logits
/// tile is built in workgroup memory by all threads (the router matmul for
/// `moe.gate`), then one warp per token computes the scores, the selection
/// (bias, group limit), the top-k and the mixing weights.
static std::pair<Value, Value>
lowerRouting(Operation *op, RewriterBase &rewriter, Value input, Value router,
             Value routerBias, Value bias, Value tokenGroups, Value residual,
             RoutingAttr routing, RankedTensorType idsType,
             RankedTensorType weightsType) {
  Location loc = op->getLoc();
  Type elementType = tensorType(input).getElementType();
  Type ct = computeType(elementType);
  int64_t numExperts = router ? tensorType(router).getDimSize(1)
                              : tensorType(input).getDimSize(1);
  int64_t hidden = router ? tensorType(router).getDimSize(0) : 0;
  int64_t k = routing.getK();
  int64_t blockTokens = routingBlockTokens(numExperts, ct);

  bool expertChoice = routing.isExpertChoice();

  Host host{rewriter, loc};
  Value inputBuf = host.buffer(input);
  Value routerBuf = host.buffer(router);
  Value routerBiasBuf = host.buffer(routerBias);
  Value biasBuf = host.buffer(bias);
  Value groupsBuf = host.buffer(tokenGroups);
  Value residualBuf = host.buffer(residual);
  SmallVector<Value> dyn;
  if (idsType.isDynamicDim(0))
    dyn.push_back(memref::DimOp::create(rewriter, loc, inputBuf, 0));
  Value idsBuf = host.alloc(bufferType(idsType), dyn);
  Value weightsBuf = host.alloc(bufferType(weightsType), dyn);
  // Expert choice ranks tokens across the whole batch: the routing kernel
  // only writes each token's scores and selection scores, [T, E] in the
  // compute type, and a second kernel makes the choice.
  Value ecScoresBuf, ecSelectionBuf;
  if (expertChoice) {
    Value numTokens = memref::DimOp::create(rewriter, loc, inputBuf, 0);
    auto scratch = MemRefType::get({ShapedType::kDynamic, numExperts}, ct);
    ecScoresBuf = host.alloc(scratch, numTokens);
    ecSelectionBuf = host.alloc(scratch, numTokens);
  }
  SmallVector<Value> args =
      present({inputBuf, routerBuf, routerBiasBuf, biasBuf, groupsBuf,
               residualBuf, idsBuf, weightsBuf, ecScoresBuf, ecSelectionBuf});

  Kernel kernel;
  {
    OpBuilder::InsertionGuard guard(rewriter);
    MemRefType tile = workgroupType({blockTokens, numExperts}, ct);
    int64_t group = router ? routingGroup(numExperts, elementType) : 1;
    MemRefType partialsType = workgroupType({kRoutingThreads, group}, ct);
    kernel = createKernel(rewriter, op, router ? "moe_gate" : "moe_route",
                          typesOf(args), {tile, tile, partialsType},
                          kRoutingThreads);
    KernelBuilder b{rewriter, loc, ct};
    auto it = kernel.args.begin();
    Value x = *it++;
    Value w = router ? *it++ : Value();
    Value routerBiasArg = routerBias ? *it++ : Value();
    Value biasArg = bias ? *it++ : Value();
    Value groupsArg = tokenGroups ? *it++ : Value();
    Value residualArg = residual ? *it++ : Value();
    Value ids = *it++, weights = *it++;
    Value ecScores = expertChoice ? *it++ : Value();
    Value ecSelection = expertChoice ? *it++ : Value();
    Value scores = kernel.workgroup[0], selection = kernel.workgroup[1];

    Value tid = b.threadId();
    Value numTokens = b.dim(ids, 0);
    Value perBlock = routingTokensPerBlock(b, numTokens, blockTokens);
    Value t0 = b.mul(b.blockId(), perBlock);
    Value cE = b.idx(numExperts), c0 = b.idx(0), c1 = b.idx(1);
    double negInf = -std::numeric_limits<double>::infinity();

    // Phase 1: the logits of the block's tokens into `scores`. The router
    // bias and a gating residual (MoE++) are added to the logits before
    // scoring.
    auto storeLogit = [&](Value lt, Value e, Value logit) {
      if (routerBiasArg)
        logit = b.add(logit, b.loadF(routerBiasArg, {e}));
      if (residualArg)
        logit = b.add(logit, b.loadF(residualArg, {b.add(t0, lt), e}));
      b.storeF(logit, scores, {lt, e});
    };
    Value cR = b.idx(kRoutingThreads);
    if (w) {
      // The router matmul: P = (valid tokens) x (E / G) pairs, each the dot
      // products of a token row with G adjacent router columns (G = 16 bytes
      // of a router row, read with one vector load where the router is
      // aligned). With P < threads/2 (decode, small blocks), each pair is
      // split over S = threads / P slices of the hidden dimension (h = s mod
      // S) whose partial sums meet in workgroup memory and are added by a
      // tree over the slices; else a thread takes whole pairs.
      Value cG = b.idx(group), groups = b.idx(numExperts / group);
      Value valid = b.minI(perBlock, b.sub(numTokens, t0));
      Value pairs = b.mul(valid, groups);
      Value slices = b.maxI(c1, b.div(cR, pairs));
      Value cH = b.idx(hidden), last = b.idx(hidden - 1);
      Type wElem = cast<MemRefType>(w.getType()).getElementType();
      VectorType wVec = VectorType::get({group}, wElem);
      Value aligned = group > 1 ? b.isAligned(w, 16) : Value();
      // The G sums of `pair` over the hidden elements slice, slice + step, ...
      auto dot = [&](Value pair, Value slice, Value step, bool vectorLoads) {
        Value t = b.add(t0, b.div(pair, groups));
        Value e0 = b.mul(b.rem(pair, groups), cG);
        SmallVector<Value> init(group, b.flt(0.0));
        return b.loop(
            slice, cH, b.mul(step, b.idx(kRoutingUnroll)), init,
            [&](Value h0, ValueRange acc) {
              SmallVector<Value> next(acc.begin(), acc.end());
              for (int64_t u = 0; u < kRoutingUnroll; ++u) {
                Value h = b.add(h0, b.mul(step, b.idx(u)));
                Value in = b.lt(h, cH);
                // Clamped, so that the loads stay in bounds; masked below.
                Value hc = b.minI(h, last);
                Value xv = b.loadF(x, {t, hc});
                SmallVector<Value> wv;
                if (vectorLoads) {
                  Value v = vector::LoadOp::create(
                      rewriter, loc, wVec, w, ValueRange{hc, e0},
                      /*nontemporal=*/false,
                      /*alignment=*/llvm::Align(16));
                  for (int64_t g = 0; g < group; ++g)
                    wv.push_back(b.convertFloat(
                        vector::ExtractOp::create(rewriter, loc, v, g), ct));
                } else {
                  for (int64_t g = 0; g < group; ++g)
                    wv.push_back(b.loadF(w, {hc, b.add(e0, b.idx(g))}));
                }
                for (int64_t g = 0; g < group; ++g)
                  next[g] = b.add(next[g],
                                  b.select(in, b.mul(xv, wv[g]), b.flt(0.0)));
              }
              return next;
            });
      };
      // Vector loads where the router is aligned (uniform), else scalar.
      auto sums = [&](Value pair, Value slice, Value step) {
        if (group == 1)
          return dot(pair, slice, step, false);
        auto ifOp = scf::IfOp::create(
            rewriter, loc, aligned,
            [&](OpBuilder &, Location) {
              scf::YieldOp::create(rewriter, loc, dot(pair, slice, step, true));
            },
            [&](OpBuilder &, Location) {
              scf::YieldOp::create(rewriter, loc,
                                   dot(pair, slice, step, false));
            });
        return SmallVector<Value>(ifOp.getResults());
      };
      auto storeLogits = [&](Value pair, ArrayRef<Value> logits) {
        Value lt = b.div(pair, groups);
        Value e0 = b.mul(b.rem(pair, groups), cG);
        for (int64_t g = 0; g < group; ++g)
          storeLogit(lt, b.add(e0, b.idx(g)), logits[g]);
      };
      // Both conditions are uniform across the block (barrier inside).
      Value split = b.cmpI(arith::CmpIPredicate::ugt, slices, c1);
      b.ifThen(split, [&] {
        Value pair = b.rem(tid, pairs), slice = b.div(tid, pairs);
        Value partials = kernel.workgroup[2];
        b.ifThen(b.lt(slice, slices), [&] {
          SmallVector<Value> part = sums(pair, slice, slices);
          for (int64_t g = 0; g < group; ++g)
            b.storeF(part[g], partials, {tid, b.idx(g)});
        });
        b.barrier();
        // A tree over the slices, all threads at once (one thread walking
        // 512 slices was most of the kernel's time at decode): while n > 1
        // slices are left, slice s < n - ceil(n / 2) adds in slice
        // s + ceil(n / 2). A fixed order for a given slice count.
        int64_t rounds = llvm::Log2_64_Ceil(kRoutingThreads);
        b.loop(c0, b.idx(rounds), c1, slices, [&](Value, ValueRange left) {
          Value n = left[0];
          Value half = b.div(b.add(n, c1), b.idx(2));
          b.ifThen(b.cmpI(arith::CmpIPredicate::ugt, n, c1), [&] {
            b.ifThen(b.lt(slice, b.sub(n, half)), [&] {
              Value other = b.add(tid, b.mul(half, pairs));
              for (int64_t g = 0; g < group; ++g) {
                Value v = b.add(b.loadF(partials, {tid, b.idx(g)}),
                                b.loadF(partials, {other, b.idx(g)}));
                b.storeF(v, partials, {tid, b.idx(g)});
              }
            });
            b.barrier();
          });
          return SmallVector<Value>{b.minI(n, half)};
        });
        b.ifThen(b.lt(tid, pairs), [&] {
          SmallVector<Value> logits;
          for (int64_t g = 0; g < group; ++g)
            logits.push_back(b.loadF(partials, {tid, b.idx(g)}));
          storeLogits(tid, logits);
        });
      });
      b.ifThen(b.cmpI(arith::CmpIPredicate::eq, slices, c1), [&] {
        b.loop(tid, pairs, cR,
               [&](Value pair) { storeLogits(pair, sums(pair, c0, c1)); });
      });
    } else {
      b.loop(tid, b.mul(perBlock, cE), cR, [&](Value i) {
        Value lt = b.div(i, cE), e = b.rem(i, cE);
        b.ifThen(b.lt(b.add(t0, lt), numTokens), [&] {
          storeLogit(lt, e, b.loadF(x, {b.add(t0, lt), e}));
        });
      });
    }
    b.barrier();

    // Phase 2: one warp per token (warp w takes the block's tokens w, w + 16,
    // ...), lane l the experts l, l + 32, ... of the token's rows of `scores`
    // and `selection` (consecutive words across a warp: no bank conflicts).
    // Maxima, sums and each top-k step's argmax are butterflies of shuffles
    // whose combining functions are commutative, so every lane ends with the
    // same value and the scalar steps after them agree in every lane; lane 0
    // writes the token's ids and weights. The loop bounds and branches are
    // uniform per warp and there is no block barrier below.
    constexpr int64_t numWarps = kRoutingThreads / kWarpSize;
    Value cW = b.idx(kWarpSize);
    Value lane = b.rem(tid, cW), warpId = b.div(tid, cW);
    Value isLane0 = b.cmpI(arith::CmpIPredicate::eq, lane, c0);
    auto shuffleIndex = [&](Value v, int32_t d) {
      OpBuilder &ob = b.b;
      Value i32 = arith::IndexCastOp::create(ob, loc, ob.getI32Type(), v);
      return arith::IndexCastOp::create(
          ob, loc, ob.getIndexType(),
          shuffle(b, i32, d, gpu::ShuffleMode::XOR));
    };
    b.loop(c0, b.ceilDiv(perBlock, numWarps), c1, [&](Value q) {
      Value lt = b.add(b.mul(q, b.idx(numWarps)), warpId);
      Value t = b.add(t0, lt);
      b.ifThen(b.andI(b.lt(lt, perBlock), b.lt(t, numTokens)), [&] {
        double temperature = routing.getTemperature().convertToDouble();
        auto forExperts = [&](function_ref<void(Value)> body) {
          b.loop(lane, cE, cW, body);
        };
        // Scores.
        switch (routing.getScoring()) {
        case ScoringFunc::Softmax: {
          Value max =
              warpReduce(b,
                         b.loop(lane, cE, cW, b.flt(negInf),
                                [&](Value e, ValueRange acc) {
                                  return SmallVector<Value>{
                                      b.maxF(acc[0], b.loadF(scores, {lt, e}))};
                                })[0],
                         [&](Value x, Value y) { return b.maxF(x, y); });
          Value sum = warpReduce(
              b,
              b.loop(lane, cE, cW, b.flt(0.0),
                     [&](Value e, ValueRange acc) {
                       Value d = b.sub(b.loadF(scores, {lt, e}), max);
                       if (temperature != 1.0)
                         d = b.div(d, b.flt(temperature));
                       Value p = b.exp(d);
                       b.storeF(p, scores, {lt, e});
                       return SmallVector<Value>{b.add(acc[0], p)};
                     })[0],
              [&](Value x, Value y) { return b.add(x, y); });
          forExperts([&](Value e) {
            b.storeF(b.div(b.loadF(scores, {lt, e}), sum), scores, {lt, e});
          });
          break;
        }
        case ScoringFunc::Sigmoid:
          forExperts([&](Value e) {
            b.storeF(b.sigmoid(b.loadF(scores, {lt, e})), scores, {lt, e});
          });
          break;
        case ScoringFunc::TopkSoftmax:
          break;
        }
        // Selection scores: scores plus the bias.
        auto selectionAt = [&](Value e) {
          Value s = b.loadF(scores, {lt, e});
          return biasArg ? b.add(s, b.loadF(biasArg, {e})) : s;
        };
        forExperts([&](Value e) {
          b.storeF(selectionAt(e), selection, {lt, e});
        });
        if (expertChoice) {
          // The choice is made across tokens by moe_expert_choice.
          forExperts([&](Value e) {
            b.storeF(b.loadF(scores, {lt, e}), ecScores, {t, e});
            b.storeF(b.loadF(selection, {lt, e}), ecSelection, {t, e});
          });
          return;
        }
        // Below, lanes read the scores of every expert.
        syncWarp(b);
        // Expert groups (MoMa): the token's top-k is taken among the experts
        // [lo, hi) of its group; a group id out of range routes it nowhere.
        Value groupValid, lo, hi;
        if (groupsArg) {
          ArrayRef<int64_t> sizes = routing.getExpertGroups();
          Value g = b.loadI(groupsArg, {t});
          groupValid = b.andI(b.cmpI(arith::CmpIPredicate::sge, g, c0),
                              b.lt(g, b.idx(sizes.size())));
          lo = c0;
          hi = c0;
          int64_t start = 0;
          for (auto [i, size] : llvm::enumerate(sizes)) {
            Value here = b.cmpI(arith::CmpIPredicate::eq, g, b.idx(i));
            lo = b.select(here, b.idx(start), lo);
            hi = b.select(here, b.idx(start + size), hi);
            start += size;
          }
        }
        // Group limit: the experts of groups ranked topk_group or worse
        // become -inf. Every lane ranks every group (from the scores, which
        // the masking does not change) and masks its own experts.
        if (routing.isGroupLimited()) {
          int64_t numGroups = routing.getNGroup();
          int64_t groupSize = numExperts / numGroups;
          Value cG = b.idx(numGroups), cGs = b.idx(groupSize);
          auto groupScore = [&](Value g) {
            SmallVector<Value> top =
                b.loop(c0, cGs, c1, {b.flt(negInf), b.flt(negInf)},
                       [&](Value j, ValueRange best) {
                         Value v = selectionAt(b.add(b.mul(g, cGs), j));
                         Value aboveFirst =
                             b.cmpF(arith::CmpFPredicate::OGT, v, best[0]);
                         Value aboveSecond =
                             b.cmpF(arith::CmpFPredicate::OGT, v, best[1]);
                         Value first = b.select(aboveFirst, v, best[0]);
                         Value second =
                             b.select(aboveFirst, best[0],
                                      b.select(aboveSecond, v, best[1]));
                         return SmallVector<Value>{first, second};
                       });
            return groupSize == 1 ? top[0] : b.add(top[0], top[1]);
          };
          b.loop(c0, cG, c1, [&](Value g) {
            Value mine = groupScore(g);
            Value rank =
                b.loop(c0, cG, c1, b.idx(0), [&](Value o, ValueRange acc) {
                  Value other = groupScore(o);
                  Value better = b.orI(
                      b.cmpF(arith::CmpFPredicate::OGT, other, mine),
                      b.andI(b.cmpF(arith::CmpFPredicate::OEQ, other, mine),
                             b.cmpI(arith::CmpIPredicate::ult, o, g)));
                  return SmallVector<Value>{
                      b.add(acc[0], b.select(better, c1, c0))};
                })[0];
            b.ifThen(b.cmpI(arith::CmpIPredicate::sge, rank,
                            b.idx(routing.getTopkGroup())),
                     [&] {
                       // The group's experts e = g * Gs + j with e = lane
                       // (mod 32).
                       Value first = b.rem(
                           b.sub(b.add(lane, cW), b.rem(b.mul(g, cGs), cW)),
                           cW);
                       b.loop(first, cGs, cW, [&](Value j) {
                         b.storeF(b.flt(negInf), selection,
                                  {lt, b.add(b.mul(g, cGs), j)});
                       });
                     });
          });
        }
        // Top-k: k steps of argmax, each below the previous choice in the
        // order (selection descending, expert ascending): the lane's best
        // expert, then the warp's. With k <= 32, lane j keeps choice j in
        // registers and the lanes write the token's ids and mixing weights
        // at the end, together; with more, lane 0 writes each choice and
        // reads them back for the mixing weights.
        bool dynamicK = routing.hasDynamicK();
        double threshold = routing.getThreshold().convertToDouble();
        bool held = k <= kWarpSize;
        Value cK = b.idx(k), noExpert = b.idx(-1);
        SmallVector<Value> topkInit = {
            b.flt(std::numeric_limits<double>::infinity()),
            noExpert,
            b.flt(0.0),
            b.boolean(false),
            b.flt(0.0),
            b.flt(negInf)};
        if (held)
          topkInit.append({noExpert, b.flt(0.0)});
        SmallVector<Value> topk =
            b.loop(c0, cK, c1, topkInit, [&](Value j, ValueRange st) {
              Value prevVal = st[0], prevIdx = st[1];
              SmallVector<Value> best = b.loop(
                  lane, cE, cW, {b.flt(negInf), noExpert},
                  [&](Value e, ValueRange best) {
                    Value v = b.loadF(selection, {lt, e});
                    Value eligible = b.orI(
                        b.cmpF(arith::CmpFPredicate::OLT, v, prevVal),
                        b.andI(b.cmpF(arith::CmpFPredicate::OEQ, v, prevVal),
                               b.cmpI(arith::CmpIPredicate::sgt, e, prevIdx)));
                    if (groupsArg)
                      eligible = b.andI(
                          eligible,
                          b.andI(b.cmpI(arith::CmpIPredicate::sge, e, lo),
                                 b.lt(e, hi)));
                    Value take = b.andI(
                        eligible,
                        b.orI(b.lt(best[1], c0),
                              b.cmpF(arith::CmpFPredicate::OGT, v, best[0])));
                    return SmallVector<Value>{b.select(take, v, best[0]),
                                              b.select(take, e, best[1])};
                  });
              // The warp's best: an eligible expert beats none, then the
              // higher selection score, then the lower index. Eligible
              // scores are never NaN, so the order is total.
              Value bestVal = best[0], bestIdx = best[1];
              for (int32_t d = 1; d < kWarpSize; d *= 2) {
                Value ov = shuffle(b, bestVal, d, gpu::ShuffleMode::XOR);
                Value oi = shuffleIndex(bestIdx, d);
                Value better = b.orI(
                    b.cmpF(arith::CmpFPredicate::OGT, ov, bestVal),
                    b.andI(b.cmpF(arith::CmpFPredicate::OEQ, ov, bestVal),
                           b.cmpI(arith::CmpIPredicate::slt, oi, bestIdx)));
                Value take = b.andI(b.cmpI(arith::CmpIPredicate::sge, oi, c0),
                                    b.orI(b.lt(bestIdx, c0), better));
                bestVal = b.select(take, ov, bestVal);
                bestIdx = b.select(take, oi, bestIdx);
              }
              Value score = b.loadF(scores, {lt, b.maxI(bestIdx, c0)});
              Value id = bestIdx, wgt = score, cum = st[2], done = st[3];
              if (dynamicK) {
                id = b.select(done, noExpert, bestIdx);
                wgt = b.select(done, b.flt(0.0), score);
                cum = b.add(cum, wgt);
                done = b.cmpF(arith::CmpFPredicate::OGE, cum, b.flt(threshold));
              }
              if (groupsArg) {
                id = b.select(groupValid, id, noExpert);
                wgt = b.select(groupValid, wgt, b.flt(0.0));
              }
              SmallVector<Value> next = {
                  bestVal, bestIdx,           cum,
                  done,    b.add(st[4], wgt), b.maxF(st[5], wgt)};
              if (held) {
                Value mine = b.cmpI(arith::CmpIPredicate::eq, lane, j);
                next.push_back(b.select(mine, id, st[6]));
                next.push_back(b.select(mine, wgt, st[7]));
              } else {
                b.ifThen(isLane0, [&] {
                  b.storeI(id, ids, {t, j});
                  b.storeF(wgt, weights, {t, j});
                });
              }
              return next;
            });
        double scale = routing.getScale().convertToDouble();
        // GPT-OSS: the softmax over the chosen logits, before its sum.
        auto softmaxTerm = [&](Value logit) {
          Value d = b.sub(logit, topk[5]);
          if (temperature != 1.0)
            d = b.div(d, b.flt(temperature));
          return b.exp(d);
        };
        // Renormalization, scale, and weights of 0 for a token routed
        // nowhere (not 0 / 0).
        auto finishWeight = [&](Value v, Value divisor) {
          if (divisor)
            v = b.div(v, divisor);
          if (scale != 1.0)
            v = b.mul(v, b.flt(scale));
          if (groupsArg)
            v = b.select(groupValid, v, b.flt(0.0));
          return v;
        };
        if (held) {
          // Lane j < k: choice j's mixing weight.
          Value chosen = b.lt(lane, cK);
          Value v = topk[7], divisor;
          if (routing.getScoring() == ScoringFunc::TopkSoftmax) {
            v = b.select(chosen, softmaxTerm(v), b.flt(0.0));
            divisor =
                warpReduce(b, v, [&](Value x, Value y) { return b.add(x, y); });
          } else if (routing.getRenormalize()) {
            divisor = topk[4];
          }
          v = finishWeight(v, divisor);
          b.ifThen(chosen, [&] {
            b.storeI(topk[6], ids, {t, lane});
            b.storeF(v, weights, {t, lane});
          });
          return;
        }
        // Mixing weights, by lane 0 (which wrote them).
        b.ifThen(isLane0, [&] {
          Value divisor;
          if (routing.getScoring() == ScoringFunc::TopkSoftmax) {
            divisor =
                b.loop(c0, cK, c1, b.flt(0.0), [&](Value j, ValueRange acc) {
                  Value p = softmaxTerm(b.loadF(weights, {t, j}));
                  b.storeF(p, weights, {t, j});
                  return SmallVector<Value>{b.add(acc[0], p)};
                })[0];
          } else if (routing.getRenormalize()) {
            divisor = topk[4];
          }
          if (divisor || scale != 1.0 || groupsArg)
            b.loop(c0, cK, c1, [&](Value j) {
              b.storeF(finishWeight(b.loadF(weights, {t, j}), divisor), weights,
                       {t, j});
            });
        });
      });
    });
  }

  KernelBuilder hb{rewriter, loc, ct};
  Value hostTokens = memref::DimOp::create(rewriter, loc, idsBuf, 0);
  Value grid = arith::CeilDivUIOp::create(
      rewriter, loc, hostTokens,
      routingTokensPerBlock(hb, hostTokens, blockTokens));
  host.launch(kernel, grid, arith::ConstantIndexOp::create(rewriter, loc, 1),
              kRoutingThreads, 1, args);
  if (expertChoice) {
    SmallVector<Value> choiceArgs = {ecScoresBuf, ecSelectionBuf, idsBuf,
                                     weightsBuf};
    Kernel choice;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      choice = buildExpertChoiceKernel(rewriter, op, routing, numExperts,
                                       typesOf(choiceArgs), ct);
    }
    Value elements = hb.mul(memref::DimOp::create(rewriter, loc, idsBuf, 0),
                            hb.idx(numExperts));
    host.launch(choice, hb.ceilDiv(elements, kThreads), hb.idx(1), kThreads, 1,
                choiceArgs);
    host.dealloc(ecScoresBuf);
    host.dealloc(ecSelectionBuf);
  }
  return {host.tensor(idsType, idsBuf), host.tensor(weightsType, weightsBuf)};
}

namespace {
struct GateOpLowering : public OpConversionPattern<GateOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(GateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    auto [ids, weights] = lowerRouting(
        op, rewriter, adaptor.getInput(), adaptor.getRouter(),
        adaptor.getRouterBias(), adaptor.getSelectionBias(),
        adaptor.getTokenGroups(), adaptor.getResidual(), op.getRouting(),
        op.getExpertIds().getType(), op.getWeights().getType());
    rewriter.replaceOp(op, {ids, weights});
    return success();
  }
};

struct RouteOpLowering : public OpConversionPattern<RouteOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(RouteOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    // moe-fuse-gating leaves the router matmul of expert choice outside
    // moe.route (its CPU lowering needs every token's logits first); here the
    // routing kernel writes every token's scores to memory anyway, so the
    // matmul is folded in as for moe.gate and computes no [T, E] tensor on
    // the host.
    Value input = adaptor.getLogits(), router, routerBias;
    if (op.getRouting().isExpertChoice())
      if (std::optional<RouterMatmul> matmul = matchRouterMatmul(op)) {
        input = matmul->input;
        router = matmul->router;
        routerBias = matmul->bias;
      }
    auto [ids, weights] = lowerRouting(
        op, rewriter, input, router, routerBias, adaptor.getSelectionBias(),
        adaptor.getTokenGroups(), adaptor.getResidual(), op.getRouting(),
        op.getExpertIds().getType(), op.getWeights().getType());
    rewriter.replaceOp(op, {ids, weights});
    return success();
  }
};
} // namespace

namespace {
/// `moe.hash_route`: one thread per token looks its expert up in the table
/// (or hashes its id: ((id * 2654435761) mod 2^32) mod E); an id or entry
/// out of range gives expert -1 and weight 0, else weight 1.
struct HashRouteOpLowering : public OpConversionPattern<HashRouteOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(HashRouteOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    auto idsType = op.getExpertIds().getType();
    auto weightsType = op.getWeights().getType();
    Type ct = computeType(weightsType.getElementType());
    int64_t numExperts = op.getNumExperts();
    Host host{rewriter, loc};
    Value tokenIdsBuf = host.buffer(adaptor.getTokenIds());
    Value tableBuf = host.buffer(adaptor.getTable());
    SmallVector<Value> dyn;
    if (idsType.isDynamicDim(0))
      dyn.push_back(memref::DimOp::create(rewriter, loc, tokenIdsBuf, 0));
    Value idsBuf = host.alloc(bufferType(idsType), dyn);
    Value weightsBuf = host.alloc(bufferType(weightsType), dyn);
    SmallVector<Value> args =
        present({tokenIdsBuf, tableBuf, idsBuf, weightsBuf});
    Kernel kernel;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      kernel = createKernel(rewriter, op, "moe_hash_route", typesOf(args), {},
                            kThreads);
      KernelBuilder b{rewriter, loc, ct};
      auto it = kernel.args.begin();
      Value tokenIds = *it++;
      Value table = tableBuf ? *it++ : Value();
      Value ids = *it++, weights = *it++;
      Value c0 = b.idx(0);
      Value t = b.add(b.mul(b.blockId(), b.idx(kThreads)), b.threadId());
      b.ifThen(b.lt(t, b.dim(ids, 0)), [&] {
        Value id = b.loadI(tokenIds, {t});
        Value valid = b.cmpI(arith::CmpIPredicate::sge, id, c0);
        Value expert;
        if (table) {
          valid = b.andI(valid, b.lt(id, b.dim(table, 0)));
          auto lookup = scf::IfOp::create(
              rewriter, loc, valid,
              [&](OpBuilder &, Location) {
                scf::YieldOp::create(rewriter, loc, b.loadI(table, {id}));
              },
              [&](OpBuilder &, Location) {
                scf::YieldOp::create(rewriter, loc, b.idx(-1));
              });
          expert = lookup.getResult(0);
        } else {
          expert = buildHashExpert(rewriter, loc, id, numExperts);
        }
        valid =
            b.andI(valid, b.andI(b.cmpI(arith::CmpIPredicate::sge, expert, c0),
                                 b.lt(expert, b.idx(numExperts))));
        b.storeI(b.select(valid, expert, b.idx(-1)), ids, {t, c0});
        b.storeF(b.select(valid, b.flt(1.0), b.flt(0.0)), weights, {t, c0});
      });
    }
    KernelBuilder hb{rewriter, loc, ct};
    host.launch(
        kernel,
        hb.ceilDiv(memref::DimOp::create(rewriter, loc, idsBuf, 0), kThreads),
        hb.idx(1), kThreads, 1, args);
    rewriter.replaceOp(op, {host.tensor(idsType, idsBuf),
                            host.tensor(weightsType, weightsBuf)});
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// Dispatch: ranks by warp ballots, prefix sums and a stable placement
//===----------------------------------------------------------------------===//

/// A fixed `capacity`, `ceil(capacity_factor * T * k / E)`, or `T * k` without
/// a capacity, as an index computed from `numTokens`.
static Value emitCapacity(const KernelBuilder &b, Value numTokens, int64_t k,
                          int64_t numExperts, double capacityFactor,
                          int64_t capacity) {
  if (capacity > 0)
    return b.idx(capacity);
  Value assignments = b.mul(numTokens, b.idx(k));
  if (capacityFactor <= 0.0)
    return assignments;
  Type f64 = b.b.getF64Type();
  Value n = arith::UIToFPOp::create(
      b.b, b.loc, f64,
      arith::IndexCastUIOp::create(b.b, b.loc, b.b.getI64Type(), assignments));
  auto f64Const = [&](double v) {
    return arith::ConstantOp::create(b.b, b.loc, b.b.getF64FloatAttr(v));
  };
  Value c = arith::MulFOp::create(b.b, b.loc, f64Const(capacityFactor), n);
  c = arith::DivFOp::create(b.b, b.loc, c, f64Const(double(numExperts)));
  c = math::CeilOp::create(b.b, b.loc, c);
  return arith::IndexCastOp::create(
      b.b, b.loc, b.b.getIndexType(),
      arith::FPToSIOp::create(b.b, b.loc, b.b.getI64Type(), c));
}

namespace {
/// The sizes the dispatch kernels are specialized to. The `[T, k]`
/// assignments are taken flat, in row-major order, which is the order of
/// each expert's rows (token order, then slot order). A chunk of `chunk()`
/// consecutive assignments is one block of the count and place kernels, or
/// all of them for the single-block kernel; warp w of a block takes the
/// chunk's assignments `[w * 32 * kDispatchPasses, (w + 1) * 32 *
/// kDispatchPasses)`, 32 consecutive ones per pass.
struct DispatchShape {
  int64_t numExperts, k, blockSize;
  double capacityFactor;
  int64_t capacity;
  int64_t warps;

  int64_t threads() const { return 32 * warps; }
  int64_t chunk() const { return threads() * kDispatchPasses; }
  /// Bits of an expert id, and of E (no expert).
  int64_t bits() const { return llvm::Log2_64_Ceil(numExperts + 1); }
};

/// An assignment a lane ranked: its flat index, its expert (E for none: id
/// -1 or out of range, or past the last assignment) and the number of
/// assignments of its warp before it with that expert.
struct DispatchLane {
  Value index, expert, rank;
};
} // namespace

/// Ranks the assignments of the chunk at `begin` in their warps (see
/// DispatchShape). In each pass the lanes with the same expert find each
/// other with one `vote.sync.ballot` per bit of the expert; a lane's rank is
/// `warpCounts[w][e]` (the warp's earlier passes) plus its lower lanes with
/// that expert, and the last of them adds their count to `warpCounts[w][e]`.
/// Then each expert's `warpCounts[.][e]` becomes the exclusive prefix over
/// the warps and `perExpert(e, total)` gets the chunk's count. Starts by
/// zeroing `warpCounts` ([warps, E] i32, workgroup) and ends with a barrier.
static SmallVector<DispatchLane>
emitWarpRanks(const KernelBuilder &b, const DispatchShape &s, Value ids,
              Value begin, Value warpCounts,
              function_ref<void(Value, Value)> perExpert) {
  OpBuilder &ob = b.b;
  Location loc = b.loc;
  Type i32 = ob.getI32Type();
  auto i32Const = [&](int64_t v) -> Value {
    return arith::ConstantOp::create(ob, loc, ob.getI32IntegerAttr(v));
  };
  auto popc = [&](Value mask) {
    return arith::IndexCastOp::create(ob, loc, ob.getIndexType(),
                                      LLVM::CtPopOp::create(ob, loc, mask));
  };
  Value numExperts = b.idx(s.numExperts);
  Value tid = b.threadId();
  b.loop(tid, b.idx(s.warps * s.numExperts), b.idx(s.threads()), [&](Value i) {
    b.storeI(b.idx(0), warpCounts,
             {b.div(i, numExperts), b.rem(i, numExperts)});
  });
  b.barrier();

  Value numAssignments = b.mul(b.dim(ids, 0), b.idx(s.k));
  Value warp = b.div(tid, b.idx(32));
  Value lane = b.rem(tid, b.idx(32));
  Value full = i32Const(-1);
  Value lowerLanes = b.sub(
      arith::ShLIOp::create(ob, loc, i32Const(1),
                            arith::IndexCastOp::create(ob, loc, i32, lane)),
      i32Const(1));
  Value warpBegin = b.add(begin, b.mul(warp, b.idx(32 * kDispatchPasses)));
  SmallVector<DispatchLane> lanes;
  for (int64_t pass = 0; pass < kDispatchPasses; ++pass) {
    Value index = b.add(warpBegin, b.add(b.idx(32 * pass), lane));
    auto load = scf::IfOp::create(
        ob, loc, b.lt(index, numAssignments),
        [&](OpBuilder &, Location) {
          Value t = b.div(index, b.idx(s.k)), j = b.rem(index, b.idx(s.k));
          scf::YieldOp::create(ob, loc, b.loadI(ids, {t, j}));
        },
        [&](OpBuilder &, Location) {
          scf::YieldOp::create(ob, loc, b.idx(-1));
        });
    Value id = load.getResult(0);
    Value isExpert = b.andI(b.cmpI(arith::CmpIPredicate::sge, id, b.idx(0)),
                            b.lt(id, numExperts));
    Value expert = b.select(isExpert, id, numExperts);
    Value expert32 = arith::IndexCastOp::create(ob, loc, i32, expert);
    Value peers = full;
    for (int64_t bit = 0; bit < s.bits(); ++bit) {
      Value set = b.cmpI(
          arith::CmpIPredicate::ne,
          b.andI(arith::ShRUIOp::create(ob, loc, expert32, i32Const(bit)),
                 i32Const(1)),
          i32Const(0));
      Value ballot = NVVM::VoteSyncOp::create(ob, loc, i32, full, set,
                                              NVVM::VoteSyncKind::ballot);
      peers =
          b.andI(peers, b.select(set, ballot,
                                 arith::XOrIOp::create(ob, loc, ballot, full)));
    }
    Value before = popc(b.andI(peers, lowerLanes));
    Value count = popc(peers);
    Value slot = b.minI(expert, b.idx(s.numExperts - 1));
    Value earlier = b.loadI(warpCounts, {warp, slot});
    lanes.push_back({index, expert, b.add(earlier, before)});
    // Every lane reads the warp's count before the last of its peers
    // updates it, and the next pass reads the update.
    syncWarp(b);
    b.ifThen(b.andI(isExpert, b.cmpI(arith::CmpIPredicate::eq, before,
                                     b.sub(count, b.idx(1)))),
             [&] {
               b.storeI(b.add(earlier, count), warpCounts, {warp, slot});
             });
    syncWarp(b);
  }
  b.barrier();

  b.loop(tid, numExperts, b.idx(s.threads()), [&](Value e) {
    Value total = b.loop(b.idx(0), b.idx(s.warps), b.idx(1), b.idx(0),
                         [&](Value w, ValueRange run) {
                           Value n = b.loadI(warpCounts, {w, e});
                           b.storeI(run[0], warpCounts, {w, e});
                           return SmallVector<Value>{b.add(run[0], n)};
                         })[0];
    perExpert(e, total);
  });
  b.barrier();
  return lanes;
}

/// Writes the expert offsets from the experts' assignment counts `totals`
/// ([E] i32, workgroup): expert e keeps `min(totals[e], capacity)` rows,
/// rounded up to the block size. Each of the block's `threads` threads
/// takes a run of consecutive experts and sums it; the sums are scanned in
/// `sums` ([threads] i32, workgroup; Hillis-Steele), then each thread writes
/// the offsets of its run and -1 into its experts' padding rows of `tokens`.
/// Ends with a barrier, after which `offsets` may be read.
static void emitExpertOffsets(const KernelBuilder &b, const DispatchShape &s,
                              int64_t threads, Value totals, Value sums,
                              Value capacity, Value offsets, Value tokens) {
  int64_t perThread = llvm::divideCeil(s.numExperts, threads);
  Value numExperts = b.idx(s.numExperts);
  Value tid = b.threadId();
  Value first = b.minI(b.mul(tid, b.idx(perThread)), numExperts);
  Value last = b.minI(b.add(first, b.idx(perThread)), numExperts);
  auto keptRows = [&](Value e) {
    return b.minI(b.loadI(totals, {e}), capacity);
  };
  auto paddedRows = [&](Value kept) {
    if (s.blockSize == 1)
      return kept;
    return b.mul(b.ceilDiv(kept, s.blockSize), b.idx(s.blockSize));
  };
  Value sum =
      b.loop(first, last, b.idx(1), b.idx(0), [&](Value e, ValueRange acc) {
        return SmallVector<Value>{b.add(acc[0], paddedRows(keptRows(e)))};
      })[0];
  b.storeI(sum, sums, {tid});
  b.barrier();
  Value inclusive = sum;
  for (int64_t d = 1; d < threads; d *= 2) {
    Value has = b.cmpI(arith::CmpIPredicate::uge, tid, b.idx(d));
    Value other = b.loadI(sums, {b.select(has, b.sub(tid, b.idx(d)), tid)});
    b.barrier();
    inclusive = b.add(inclusive, b.select(has, other, b.idx(0)));
    b.storeI(inclusive, sums, {tid});
    b.barrier();
  }
  b.loop(first, last, b.idx(1), b.sub(inclusive, sum),
         [&](Value e, ValueRange run) {
           b.storeI(run[0], offsets, {e});
           Value kept = keptRows(e);
           Value padded = paddedRows(kept);
           if (s.blockSize > 1)
             b.loop(b.add(run[0], kept), b.add(run[0], padded), b.idx(1),
                    [&](Value r) { b.storeI(b.idx(-1), tokens, {r}); });
           return SmallVector<Value>{b.add(run[0], padded)};
         });
  b.ifThen(b.cmpI(arith::CmpIPredicate::eq, tid, b.idx(0)), [&] {
    b.storeI(b.loadI(sums, {b.idx(threads - 1)}), offsets, {numExperts});
  });
  b.barrier();
}

/// Sets the rows of `tokens` past the last expert's, `[offsets[E], R)`, to
/// -1: rows `offsets[E] + start`, then every `step`.
static void emitTailRows(const KernelBuilder &b, const DispatchShape &s,
                         Value offsets, Value tokens, Value start, Value step) {
  Value used = b.loadI(offsets, {b.idx(s.numExperts)});
  b.loop(b.add(used, start), b.dim(tokens, 0), step,
         [&](Value r) { b.storeI(b.idx(-1), tokens, {r}); });
}

/// Writes the ranked assignments: an assignment of expert e whose rank in
/// the whole token order (`chunkRank(e)`, the chunk's first rank of e, plus
/// the warp's prefix and the lane's rank) is below the capacity goes to row
/// `offsets[e] + rank` of `tokens` and `positions`; the others (no expert,
/// dropped) get -1 in `positions`.
static void emitPlacement(const KernelBuilder &b, const DispatchShape &s,
                          ArrayRef<DispatchLane> lanes, Value ids,
                          Value warpCounts,
                          function_ref<Value(Value)> chunkRank, Value capacity,
                          Value offsets, Value tokens, Value positions) {
  Value numAssignments = b.mul(b.dim(ids, 0), b.idx(s.k));
  Value warp = b.div(b.threadId(), b.idx(32));
  for (const DispatchLane &lane : lanes) {
    b.ifThen(b.lt(lane.index, numAssignments), [&] {
      Value t = b.div(lane.index, b.idx(s.k));
      Value j = b.rem(lane.index, b.idx(s.k));
      Value slot = b.minI(lane.expert, b.idx(s.numExperts - 1));
      Value rank = b.add(
          b.add(chunkRank(slot), b.loadI(warpCounts, {warp, slot})), lane.rank);
      Value keep =
          b.andI(b.lt(lane.expert, b.idx(s.numExperts)), b.lt(rank, capacity));
      Value row = b.add(b.loadI(offsets, {slot}), rank);
      b.storeI(b.select(keep, row, b.idx(-1)), positions, {t, j});
      b.ifThen(keep, [&] { b.storeI(t, tokens, {row}); });
    });
  }
}

namespace {
/// A deterministic counting sort of the assignments by expert; no atomics,
/// so nothing depends on scheduling. Assignments are ranked by warp ballots
/// in chunks (emitWarpRanks). When they fit in one chunk (T * k <=
/// `chunk()`, e.g. decode), one block does it all: `moe_dispatch_single`
/// ranks, computes the offsets and places. Otherwise three kernels:
/// `count` (one block per chunk) writes each chunk's count per expert;
/// `scan` (one block) turns them into exclusive prefixes over the chunks per
/// expert and the totals into the offsets; `place` (one block per chunk)
/// ranks again and places. Both paths are launched and the one not taken
/// gets empty grids (the runtime launches nothing; an scf.if would make
/// gpu-async-region synchronize the stream around it). The expert padding
/// rows are set to -1 with the offsets, the rows past the last expert's by
/// `single` or `place`.
struct DispatchOpLowering : public OpConversionPattern<DispatchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(DispatchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    int64_t numExperts = op.getNumExperts();
    auto idsType = tensorType(adaptor.getExpertIds());
    DispatchShape s{numExperts,
                    idsType.getDimSize(1),
                    int64_t(op.getBlockSize()),
                    op.getCapacityFactor().convertToDouble(),
                    int64_t(op.getCapacity()),
                    dispatchWarps(numExperts)};
    int64_t threads = s.threads();
    Type f32 = rewriter.getF32Type();
    Type i32 = rewriter.getI32Type();

    Host host{rewriter, loc};
    KernelBuilder hb{rewriter, loc, f32};
    Value idsBuf = host.buffer(adaptor.getExpertIds());
    Value numTokens = hb.dim(idsBuf, 0);
    Value single = hb.cmpI(arith::CmpIPredicate::ule,
                           hb.mul(numTokens, hb.idx(s.k)), hb.idx(s.chunk()));
    Value numChunks =
        hb.select(single, hb.idx(0),
                  hb.ceilDiv(hb.mul(numTokens, hb.idx(s.k)), s.chunk()));
    auto tokType = op.getTokenIndices().getType();
    SmallVector<Value> rowSizes;
    if (tokType.isDynamicDim(0))
      rowSizes.push_back(hb.add(hb.mul(numTokens, hb.idx(s.k)),
                                hb.idx(numExperts * (s.blockSize - 1))));
    Value tokensBuf = host.alloc(bufferType(tokType), rowSizes);
    Value offsetsBuf =
        host.alloc(bufferType(op.getExpertOffsets().getType()), {});
    SmallVector<Value> posSizes;
    if (idsType.isDynamicDim(0))
      posSizes.push_back(numTokens);
    Value positionsBuf =
        host.alloc(bufferType(op.getPositions().getType()), posSizes);
    auto countsType = MemRefType::get({ShapedType::kDynamic, numExperts}, i32);
    Value countsBuf = host.alloc(countsType, numChunks);

    MemRefType warpCountsType = workgroupType({s.warps, numExperts}, i32);
    MemRefType totalsType = workgroupType({numExperts}, i32);
    Kernel oneBlock, count, scan, place;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      oneBlock = createKernel(
          rewriter, op, "moe_dispatch_single",
          {idsBuf.getType(), offsetsBuf.getType(), tokensBuf.getType(),
           positionsBuf.getType()},
          {warpCountsType, totalsType, workgroupType({threads}, i32)}, threads);
      {
        KernelBuilder b{rewriter, loc, f32};
        Value ids = oneBlock.args[0], offsets = oneBlock.args[1],
              tokens = oneBlock.args[2], positions = oneBlock.args[3];
        Value warpCounts = oneBlock.workgroup[0],
              totals = oneBlock.workgroup[1], sums = oneBlock.workgroup[2];
        Value capacity = emitCapacity(b, b.dim(ids, 0), s.k, numExperts,
                                      s.capacityFactor, s.capacity);
        SmallVector<DispatchLane> lanes = emitWarpRanks(
            b, s, ids, b.idx(0), warpCounts,
            [&](Value e, Value total) { b.storeI(total, totals, {e}); });
        emitExpertOffsets(b, s, threads, totals, sums, capacity, offsets,
                          tokens);
        emitTailRows(b, s, offsets, tokens, b.threadId(), b.idx(threads));
        emitPlacement(
            b, s, lanes, ids, warpCounts, [&](Value) { return b.idx(0); },
            capacity, offsets, tokens, positions);
      }

      // count: counts[chunk, e] = the chunk's assignments of expert e.
      count = createKernel(rewriter, op, "moe_dispatch_count",
                           {idsBuf.getType(), countsType}, {warpCountsType},
                           threads);
      {
        KernelBuilder b{rewriter, loc, f32};
        Value ids = count.args[0], counts = count.args[1];
        Value begin = b.mul(b.blockId(), b.idx(s.chunk()));
        emitWarpRanks(b, s, ids, begin, count.workgroup[0],
                      [&](Value e, Value total) {
                        b.storeI(total, counts, {b.blockId(), e});
                      });
      }

      // scan: exclusive prefixes over the chunks, then the expert offsets.
      scan =
          createKernel(rewriter, op, "moe_dispatch_scan",
                       {idsBuf.getType(), countsType, offsetsBuf.getType(),
                        tokensBuf.getType()},
                       {totalsType, workgroupType({kDispatchScanThreads}, i32)},
                       kDispatchScanThreads);
      {
        KernelBuilder b{rewriter, loc, f32};
        Value ids = scan.args[0], counts = scan.args[1], offsets = scan.args[2],
              tokens = scan.args[3];
        Value totals = scan.workgroup[0], sums = scan.workgroup[1];
        // Per expert, the chunks in steps of kDispatchScanUnroll: the loads
        // of a step before its stores, so that they are all in flight.
        Value chunks = b.dim(counts, 0);
        auto scanChunks = [&](Value e, Value first, int64_t n, Value run) {
          SmallVector<Value> counted;
          for (int64_t i = 0; i < n; ++i)
            counted.push_back(b.loadI(counts, {b.add(first, b.idx(i)), e}));
          for (int64_t i = 0; i < n; ++i) {
            b.storeI(run, counts, {b.add(first, b.idx(i)), e});
            run = b.add(run, counted[i]);
          }
          return SmallVector<Value>{run};
        };
        b.loop(b.threadId(), b.idx(numExperts), b.idx(kDispatchScanThreads),
               [&](Value e) {
                 Value stepped =
                     b.sub(chunks, b.rem(chunks, b.idx(kDispatchScanUnroll)));
                 Value run = b.loop(
                     b.idx(0), stepped, b.idx(kDispatchScanUnroll), b.idx(0),
                     [&](Value c, ValueRange acc) {
                       return scanChunks(e, c, kDispatchScanUnroll, acc[0]);
                     })[0];
                 run = b.loop(stepped, chunks, b.idx(1), run,
                              [&](Value c, ValueRange acc) {
                                return scanChunks(e, c, 1, acc[0]);
                              })[0];
                 b.storeI(run, totals, {e});
               });
        b.barrier();
        Value capacity = emitCapacity(b, b.dim(ids, 0), s.k, numExperts,
                                      s.capacityFactor, s.capacity);
        emitExpertOffsets(b, s, kDispatchScanThreads, totals, sums, capacity,
                          offsets, tokens);
      }

      // place: ranks again, the rows past the last expert's, the placement.
      place = createKernel(rewriter, op, "moe_dispatch_place",
                           {idsBuf.getType(), countsType, offsetsBuf.getType(),
                            tokensBuf.getType(), positionsBuf.getType()},
                           {warpCountsType}, threads);
      {
        KernelBuilder b{rewriter, loc, f32};
        Value ids = place.args[0], counts = place.args[1],
              offsets = place.args[2], tokens = place.args[3],
              positions = place.args[4];
        Value warpCounts = place.workgroup[0];
        Value begin = b.mul(b.blockId(), b.idx(s.chunk()));
        SmallVector<DispatchLane> lanes =
            emitWarpRanks(b, s, ids, begin, warpCounts, [](Value, Value) {});
        emitTailRows(b, s, offsets, tokens,
                     b.add(b.mul(b.blockId(), b.idx(threads)), b.threadId()),
                     b.mul(b.dim(counts, 0), b.idx(threads)));
        Value capacity = emitCapacity(b, b.dim(ids, 0), s.k, numExperts,
                                      s.capacityFactor, s.capacity);
        emitPlacement(
            b, s, lanes, ids, warpCounts,
            [&](Value e) {
              return b.loadI(counts, {b.blockId(), e});
            },
            capacity, offsets, tokens, positions);
      }
    }

    Value zero = hb.idx(0), one = hb.idx(1);
    host.launch(oneBlock, hb.select(single, one, zero), one, threads, 1,
                {idsBuf, offsetsBuf, tokensBuf, positionsBuf});
    host.launch(count, numChunks, one, threads, 1, {idsBuf, countsBuf});
    host.launch(scan, hb.select(single, zero, one), one, kDispatchScanThreads,
                1, {idsBuf, countsBuf, offsetsBuf, tokensBuf});
    host.launch(place, numChunks, one, threads, 1,
                {idsBuf, countsBuf, offsetsBuf, tokensBuf, positionsBuf});
    host.dealloc(countsBuf);
    rewriter.replaceOp(
        op, {host.tensor(tokType, tokensBuf),
             host.tensor(op.getExpertOffsets().getType(), offsetsBuf),
             host.tensor(op.getPositions().getType(), positionsBuf)});
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// Experts: tiled GEMMs over the permuted rows
//===----------------------------------------------------------------------===//

namespace {
/// Which rows a GEMM kernel computes and where its operands come from.
struct GemmSpec {
  /// Rows come from `moe.dispatch` offsets (one expert per row tile, 3-d
  /// weights); otherwise the rows are the tokens (2-d weights).
  bool grouped = false;
  /// The first GEMM: A rows are the input rows (gathered through the token
  /// indices when grouped), B is `up` (and `gate`), the epilogue applies the
  /// activation and writes the hidden rows. Otherwise the second GEMM:
  /// A is the hidden rows, B is `down`, the epilogue adds the bias, applies
  /// the row scale and writes the output rows that hold a token.
  bool first = true;
  bool gated = false;
  bool hasGateBias = false, hasUpBias = false, hasDownBias = false;
  bool hasRowScale = false;
  /// The weight matrices are the slot buffers of an expert cache
  /// (docs/ExpertCache.md): expert `e` (local) reads slot `slots[e]` of them;
  /// biases stay indexed by expert. Grouped GEMMs only.
  bool slotted = false;
  int64_t k = 0, n = 0;
  int64_t firstExpert = 0, numExperts = 1;
  ExpertAttr expert;
};

/// The row tile of a GEMM block: its expert (0 when not grouped), first row,
/// row bound (exclusive), and whether the block has a tile at all.
struct RowTile {
  Value expert, rowStart, rowEnd, found;
};
} // namespace

namespace {
/// The arguments of a tiled (SIMT or tensor-core) GEMM kernel, in the order
/// of buildGemmKernel's documentation; absent ones are null.
struct GemmArgs {
  Value tokens, offsets, slots, a, gate, b, gateBias, bias, rowScale, out;

  static GemmArgs unpack(const GemmSpec &spec, ArrayRef<Value> args) {
    const Value *it = args.begin();
    auto next = [&](bool present) { return present ? *it++ : Value(); };
    GemmArgs r;
    r.tokens = next(spec.grouped);
    r.offsets = next(spec.grouped);
    r.slots = next(spec.grouped && spec.slotted);
    r.a = next(true);
    r.gate = next(spec.first && spec.gated);
    r.b = next(true);
    r.gateBias = next(spec.first && spec.hasGateBias);
    r.bias = next(spec.first ? spec.hasUpBias : spec.hasDownBias);
    r.rowScale = next(!spec.first && spec.hasRowScale);
    r.out = next(true);
    return r;
  }
};
} // namespace

/// Whether a block computes its row tile: it has one and, for placed
/// experts (`slots` set), the tile's expert has a slot in this batch (slot
/// -1: the expert runs in another batch; see ExpertsOpLowering).
static Value slotFound(const KernelBuilder &b, Value slots,
                       const RowTile &tile) {
  if (!slots)
    return tile.found;
  Value slot = b.loadI(slots, {b.maxI(tile.expert, b.idx(0))});
  return b.andI(tile.found, b.cmpI(arith::CmpIPredicate::sge, slot, b.idx(0)));
}

/// Finds the rows of row tile `tileIdx` (tiles of `tileRows` rows). Grouped:
/// every expert's rows `[offsets[e], offsets[e + 1])` are cut into tiles in
/// expert order, so the tile's expert is found by walking the offsets; grid x
/// is an upper bound and blocks past the last tile find none. Dense: tile
/// `tileIdx` of the rows of `out`.
static RowTile findRowTile(const KernelBuilder &b, const GemmSpec &spec,
                           int64_t tileRows, Value offsets, Value out,
                           Value tileIdx) {
  Value c0 = b.idx(0), c1 = b.idx(1), cT = b.idx(tileRows);
  if (!spec.grouped)
    return {c0, b.mul(tileIdx, cT), b.dim(out, 0), b.boolean(true)};
  SmallVector<Value> walk =
      b.loop(c0, b.idx(spec.numExperts), c1, {c0, b.idx(-1), c0, c0},
             [&](Value e, ValueRange st) {
               Value global = b.add(e, b.idx(spec.firstExpert));
               Value start = b.loadI(offsets, {global});
               Value end = b.loadI(offsets, {b.add(global, c1)});
               Value tiles = b.ceilDiv(b.maxI(b.sub(end, start), c0), tileRows);
               Value next = b.add(st[0], tiles);
               Value here = b.andI(b.lt(st[1], c0), b.lt(tileIdx, next));
               Value first = b.add(start, b.mul(b.sub(tileIdx, st[0]), cT));
               return SmallVector<Value>{next, b.select(here, e, st[1]),
                                         b.select(here, first, st[2]),
                                         b.select(here, end, st[3])};
             });
  return {walk[1], walk[2], walk[3],
          b.cmpI(arith::CmpIPredicate::sge, walk[1], c0)};
}

/// Threads of a SIMT GEMM block (f32/f64 operands).
static constexpr int64_t kSimtThreads = 256;
/// Bytes of one vector load or store of the SIMT GEMM (global staging loads
/// where the sizes and alignment allow, workgroup tile accesses).
static constexpr int64_t kSimtVectorBytes = 16;

namespace {
/// The tile shape of a SIMT GEMM: a block of kSimtThreads threads computes a
/// `tileM` x `tileN` output tile over K steps of `tileK`, each thread a
/// `microM` x `microN` micro-tile in registers.
struct SimtGemmShape {
  int64_t tileM, tileN, tileK, microM, microN;
  /// The blocks per SM that ptxas must allow for (`nvvm.minctasm`; 1: no
  /// bound on the registers but the 255 of a thread).
  int64_t blocksPerSM;
};
} // namespace

/// The SIMT GEMM shape for compute type `ct`: f32 128 x 64 tiles, 8 x 4 per
/// thread; f64 64 x 64 tiles, 4 x 4 per thread (its values take two
/// registers: the gated GEMM's 2 x 16 accumulators stay within the registers
/// of 256-thread blocks). The `narrow` shapes (32-row tiles: f32 32 x 128,
/// 4 x 4 per thread, f64 32 x 64, 2 x 4) are for a few dozen rows per expert,
/// where most rows of a 128- or 64-row tile would be empty but still cost
/// their FMAs.
static SimtGemmShape simtGemmShape(Type ct, bool narrow = false) {
  if (ct.isF64())
    return narrow ? SimtGemmShape{32, 64, 16, 2, 4, 1}
                  : SimtGemmShape{64, 64, 16, 4, 4, 1};
  return narrow ? SimtGemmShape{32, 128, 32, 4, 4, 2}
                : SimtGemmShape{128, 64, 16, 8, 4, 2};
}

/// Rows per expert (grouped) or rows (dense) up to which the tiled f32/f64
/// path takes the narrow SIMT tiles: about as many as a narrow tile holds.
static constexpr int64_t kNarrowRowsPerExpert = 32;
static constexpr int64_t kNarrowDenseRows = 256;

/// Builds a register-blocked SIMT GEMM kernel (f32/f64 operands, hidden rows
/// in the same type). A block of kSimtThreads threads computes one output
/// tile of simtGemmShape(ct); thread (tm, tn) = (tid / (tileN / microN),
/// tid % (tileN / microN)) owns rows [tm * microM, + microM) and microN
/// columns of it (in 16-byte groups, tn's among the other threads'), with
/// its accumulators in registers. Per K
/// step the block stages the A tile (tileM x tileK, rows gathered through
/// the token indices for the first GEMM) transposed in workgroup memory
/// (`[tileK][tileM]`) and the B tiles (tileK x tileN of up or down, and of
/// gate) as they are, zero outside the matrices and for rows without a token;
/// then, for each k of the step, a thread reads its microM A values and its
/// microN B values with 16-byte vector loads (a warp reads two A addresses,
/// broadcast, and 16 consecutive B vectors per load: no bank conflicts) and
/// updates its micro-tile with FMAs. The global loads of the next K step are
/// issued before the FMAs of the current one (register prefetch); they are
/// 16-byte vectors when K (A) or N (B) is a multiple of the vector width and
/// the buffer is 16-byte aligned (checked at run time), elementwise otherwise.
/// The epilogue works on the registers and writes each element.
///
/// Grid x enumerates the row tiles (for grouped GEMMs an upper bound: the
/// tiles of every expert, found by walking the offsets), grid y the column
/// tiles. Arguments, in order: grouped: tokens, offsets; first: input,
/// [gate], up, [gate bias], [up bias], hidden; second: hidden, down, [down
/// bias], [row scale], out.
static Kernel buildGemmKernel(RewriterBase &rewriter, Operation *op,
                              StringRef name, const GemmSpec &spec,
                              TypeRange argTypes, Type ct,
                              const SimtGemmShape &shape) {
  Location loc = op->getLoc();
  const int64_t tileM = shape.tileM, tileN = shape.tileN, tileK = shape.tileK;
  const int64_t microM = shape.microM, microN = shape.microN;
  // Elements of a 16-byte vector.
  const int64_t width = kSimtVectorBytes * 8 / ct.getIntOrFloatBitWidth();
  // Staging: A elements per thread (K-consecutive, of one row), B elements
  // per thread (column-consecutive, of one row).
  const int64_t aPerThread = tileM * tileK / kSimtThreads;
  const int64_t bPerThread = tileK * tileN / kSimtThreads;
  assert((tileM / microM) * (tileN / microN) == kSimtThreads &&
         kSimtThreads % tileM == 0 && aPerThread % width == 0 &&
         bPerThread % width == 0 && microM % width == 0 &&
         microN % width == 0 && "SIMT GEMM shape does not fit its block");

  MemRefType aTileType = workgroupType({tileK, tileM}, ct);
  MemRefType bTileType = workgroupType({tileK, tileN}, ct);
  SmallVector<Type> workgroup = {aTileType, bTileType};
  bool gated = spec.first && spec.gated;
  if (gated)
    workgroup.push_back(bTileType);
  // The tiles are read (and B written) as whole vectors (createKernel aligns
  // them).
  Kernel kernel =
      createKernel(rewriter, op, name, argTypes, workgroup, kSimtThreads);
  // At most 128 registers a thread, so that two blocks fit an SM.
  if (shape.blocksPerSM > 1)
    kernel.func->setAttr("nvvm.minctasm",
                         rewriter.getI32IntegerAttr(shape.blocksPerSM));
  KernelBuilder b{rewriter, loc, ct};
  GemmArgs args = GemmArgs::unpack(spec, kernel.args);
  Value tokens = args.tokens, offsets = args.offsets, a = args.a;
  Value gate = args.gate, bMat = args.b, gateBias = args.gateBias;
  Value bias = args.bias, rowScale = args.rowScale, out = args.out;
  Value aTile = kernel.workgroup[0], bTile = kernel.workgroup[1];
  Value gTile = gated ? kernel.workgroup[2] : Value();

  Value c0 = b.idx(0), c1 = b.idx(1);
  Value tid = b.threadId();
  Value colStart = b.mul(b.blockId(gpu::Dimension::y), b.idx(tileN));
  RowTile tile =
      findRowTile(b, spec, tileM, offsets, out, b.blockId(gpu::Dimension::x));
  Value expert = tile.expert, rowStart = tile.rowStart, rowEnd = tile.rowEnd;

  // The whole block takes the same branch, so the barriers inside are
  // reached by every thread.
  b.ifThen(slotFound(b, args.slots, tile), [&] {
    int64_t numK = spec.k, numN = spec.n;
    Value cK = b.idx(numK), cN = b.idx(numN);
    // Where row `row` (global) reads its A row, whether it holds a token,
    // and whether it is a row of this tile at all.
    struct RowInfo {
      Value valid, hasToken, source;
    };
    auto rowInfo = [&](Value row) {
      Value valid = b.lt(row, rowEnd);
      if (!spec.grouped)
        return RowInfo{valid, valid, row};
      Value token = b.loadI(tokens, {b.minI(row, b.sub(b.dim(tokens, 0), c1))});
      Value has = b.andI(valid, b.cmpI(arith::CmpIPredicate::sge, token, c0));
      return RowInfo{valid, has, token};
    };
    // Placed experts read their weights from the slot the cache gave them.
    Value weightExpert =
        args.slots ? b.loadI(args.slots, {b.maxI(expert, c0)}) : expert;
    auto weightAt = [&](Value r, Value c) -> SmallVector<Value> {
      if (spec.grouped)
        return {weightExpert, r, c};
      return {r, c};
    };
    VectorType vecType = VectorType::get({width}, ct);
    auto aligned = [&](Value mem) {
      return b.isAligned(mem, kSimtVectorBytes);
    };
    auto loadVector = [&](Value mem, SmallVector<Value> indices, Value valid,
                          Value bound, Value vectorOk) {
      return loadMaskedVector(b, vecType, mem, std::move(indices), valid, bound,
                              vectorOk);
    };

    // Staging assignments, fixed over the K loop. A: thread `tid` reads
    // elements [aK, aK + aPerThread) of tile row tid % tileM, so that a warp
    // reads 32 rows and stores 32 consecutive elements of each `aTile` row.
    // B: elements [bCol, bCol + bPerThread) of tile row bRow (a warp reads
    // contiguous row segments).
    Value aLocalRow = b.rem(tid, b.idx(tileM));
    Value aLocalK = b.mul(b.div(tid, b.idx(tileM)), b.idx(aPerThread));
    // The first GEMM reads the token's input row; the second the hidden row
    // itself.
    Value aSource = b.add(rowStart, aLocalRow);
    Value aValid = b.lt(aSource, rowEnd);
    if (spec.first) {
      RowInfo info = rowInfo(aSource);
      aSource = info.source;
      aValid = info.hasToken;
    }
    int64_t bThreadsPerRow = tileN / bPerThread;
    Value bLocalRow = b.div(tid, b.idx(bThreadsPerRow));
    Value bLocalCol =
        b.mul(b.rem(tid, b.idx(bThreadsPerRow)), b.idx(bPerThread));
    Value bCol = b.add(colStart, bLocalCol);
    // Vector loads where the sizes keep every vector inside one row (and
    // aligned there) and the buffer is aligned.
    Value aVectorOk = numK % width == 0 ? aligned(a) : Value();
    auto bVectorOk = [&](Value w) {
      return numN % width == 0 ? aligned(w) : Value();
    };
    Value upVectorOk = bVectorOk(bMat);
    Value gateVectorOk = gate ? bVectorOk(gate) : Value();

    // The global loads of the tiles of K step `k0`, as vectors: A's, then
    // B's and the gate's. Issued one step ahead; past K every element is
    // masked and nothing is read.
    auto loadStep = [&](Value k0) {
      SmallVector<Value> staged;
      Value ak = b.add(k0, aLocalK);
      for (int64_t v = 0; v < aPerThread; v += width)
        staged.push_back(loadVector(a, {aSource, b.add(ak, b.idx(v))}, aValid,
                                    cK, aVectorOk));
      Value bk = b.add(k0, bLocalRow);
      Value bValid = b.lt(bk, cK);
      auto loadB = [&](Value w, Value vectorOk) {
        for (int64_t v = 0; v < bPerThread; v += width)
          staged.push_back(loadVector(w, weightAt(bk, b.add(bCol, b.idx(v))),
                                      bValid, cN, vectorOk));
      };
      loadB(bMat, upVectorOk);
      if (gate)
        loadB(gate, gateVectorOk);
      return staged;
    };
    auto storeStep = [&](ValueRange staged) {
      size_t next = 0;
      for (int64_t v = 0; v < aPerThread; v += width, ++next)
        for (int64_t j = 0; j < width; ++j)
          memref::StoreOp::create(
              rewriter, loc,
              vector::ExtractOp::create(rewriter, loc, staged[next], j), aTile,
              ValueRange{b.add(aLocalK, b.idx(v + j)), aLocalRow});
      auto storeB = [&](Value dst) {
        for (int64_t v = 0; v < bPerThread; v += width, ++next)
          vector::StoreOp::create(
              rewriter, loc, staged[next], dst,
              ValueRange{bLocalRow, b.add(bLocalCol, b.idx(v))},
              /*nontemporal=*/false,
              /*alignment=*/llvm::Align(kSimtVectorBytes));
      };
      storeB(bTile);
      if (gTile)
        storeB(gTile);
    };

    // The thread's micro-tile within the block's tile: rows [microRow, +
    // microM); its columns come in vectors of `width`, vector v of thread
    // column tn at (v * threadsN + tn) * width, so that the threads of a warp
    // read consecutive 16-byte words of a B row (one vector each for f32;
    // for f64 interleaving the two vectors avoids 2-way bank conflicts).
    const int64_t threadsN = tileN / microN;
    Value tn = b.rem(tid, b.idx(threadsN));
    Value microRow = b.mul(b.div(tid, b.idx(threadsN)), b.idx(microM));
    auto microCol = [&](int64_t j) {
      Value group = b.add(tn, b.idx(j / width * threadsN));
      return b.add(b.mul(group, b.idx(width)), b.idx(j % width));
    };
    // The elements of row `k` of a workgroup tile at `starts` (a vector from
    // each).
    auto readTile = [&](Value tileMem, Value k, ArrayRef<Value> starts) {
      SmallVector<Value> values;
      for (Value start : starts) {
        Value vec = vector::LoadOp::create(
            rewriter, loc, vecType, tileMem, ValueRange{k, start},
            /*nontemporal=*/false,
            /*alignment=*/llvm::Align(kSimtVectorBytes));
        for (int64_t j = 0; j < width; ++j)
          values.push_back(vector::ExtractOp::create(rewriter, loc, vec, j));
      }
      return values;
    };
    SmallVector<Value> aStarts, bStarts;
    for (int64_t v = 0; v < microM; v += width)
      aStarts.push_back(b.add(microRow, b.idx(v)));
    for (int64_t v = 0; v < microN; v += width)
      bStarts.push_back(microCol(v));
    // Accumulator (i, j) of the up/down product, then of the gate's.
    const int64_t perMatrix = microM * microN;
    const int64_t numAcc = gated ? 2 * perMatrix : perMatrix;
    SmallVector<Value> inits(numAcc, b.flt(0.0));
    llvm::append_range(inits, loadStep(c0));
    SmallVector<Value> acc =
        b.loop(c0, cK, b.idx(tileK), inits, [&](Value k0, ValueRange carried) {
          storeStep(carried.drop_front(numAcc));
          b.barrier();
          SmallVector<Value> prefetched = loadStep(b.add(k0, b.idx(tileK)));
          SmallVector<Value> next = b.loop(
              c0, b.idx(tileK), c1, carried.take_front(numAcc),
              [&](Value k, ValueRange accs) {
                SmallVector<Value> av = readTile(aTile, k, aStarts);
                SmallVector<Value> result(accs.begin(), accs.end());
                auto multiply = [&](Value src, int64_t base) {
                  SmallVector<Value> bv = readTile(src, k, bStarts);
                  for (int64_t i = 0; i < microM; ++i)
                    for (int64_t j = 0; j < microN; ++j) {
                      Value &c = result[base + i * microN + j];
                      c = math::FmaOp::create(rewriter, loc, av[i], bv[j], c);
                    }
                };
                multiply(bTile, 0);
                if (gTile)
                  multiply(gTile, perMatrix);
                return result;
              });
          // The tiles are restaged by the next step.
          b.barrier();
          llvm::append_range(next, prefetched);
          return next;
        });
    acc.resize(numAcc);

    // Epilogue on the registers.
    auto biasAt = [&](Value biasMem, Value col) {
      // Clamped, so that the load is in bounds for columns past the end.
      Value c = b.minI(col, b.idx(numN - 1));
      if (spec.grouped)
        return b.loadF(biasMem, {expert, c});
      return b.loadF(biasMem, {c});
    };
    struct Col {
      Value col, valid, bias, gateBias;
    };
    SmallVector<Col> cols;
    for (int64_t j = 0; j < microN; ++j) {
      Value col = b.add(colStart, microCol(j));
      Col info{col, b.lt(col, cN), Value(), Value()};
      if (bias)
        info.bias = biasAt(bias, col);
      if (gateBias)
        info.gateBias = biasAt(gateBias, col);
      cols.push_back(info);
    }
    for (int64_t i = 0; i < microM; ++i) {
      Value row = b.add(rowStart, b.add(microRow, b.idx(i)));
      RowInfo info = rowInfo(row);
      // The first GEMM writes every row of the tile (rows without a token
      // too, which the second GEMM reads but does not write); the second
      // only rows that hold a token.
      b.ifThen(spec.first ? info.valid : info.hasToken, [&] {
        Value scale;
        if (rowScale)
          scale = b.loadF(rowScale, {row});
        for (int64_t j = 0; j < microN; ++j) {
          const Col &col = cols[j];
          Value v = acc[i * microN + j];
          b.ifThen(col.valid, [&] {
            if (spec.first) {
              Value u = col.bias ? b.add(v, col.bias) : v;
              Value g;
              if (gated) {
                g = acc[perMatrix + i * microN + j];
                if (col.gateBias)
                  g = b.add(g, col.gateBias);
              }
              b.storeF(buildExpertHidden(b.b, b.loc, spec.expert, g, u), out,
                       {row, col.col});
              return;
            }
            Value y = col.bias ? b.add(v, col.bias) : v;
            if (scale)
              y = b.mul(y, scale);
            b.storeF(y, out, {row, col.col});
          });
        }
      });
    }
  });
  return kernel;
}

//===----------------------------------------------------------------------===//
// Experts: tensor-core GEMMs (f16, bf16)
//===----------------------------------------------------------------------===//

/// The shape of an `mma.sync.m16n8k16` instruction.
static constexpr int64_t kMmaM = 16, kMmaN = 8, kMmaK = 16;

namespace {
/// The blocking of a tensor-core GEMM kernel: a block of warpsM x warpsN
/// warps computes a tileM x tileN output tile, each warp a (tileM / warpsM)
/// x (tileN / warpsN) part of it as tiles of `mma.sync.m16n8k16`, with K
/// steps of tileK (tileK / 16 substeps each). The pipelined kernel keeps
/// `stages` copies of the tiles of a K step in workgroup memory.
struct MmaShape {
  int64_t tileM, tileN, tileK, warpsM, warpsN, stages;

  int64_t threads() const { return warpsM * warpsN * kWarpSize; }
  int64_t warpM() const { return tileM / warpsM; }
  int64_t warpN() const { return tileN / warpsN; }
  /// Row strides, in elements, of the workgroup tiles: A row-major (tileM x
  /// tileK, K contiguous), B row-major (tileK x tileN, N contiguous), each
  /// padded by 16 bytes. The fragments are read with `ldmatrix` (B with
  /// `.trans`), whose eight row addresses per 8 x 8 matrix are then 48 or 80
  /// (A) and 144 or 272 (B) bytes apart: 8 distinct 16-byte bank groups,
  /// free of bank conflicts.
  int64_t aStride() const { return tileK + 8; }
  int64_t bStride() const { return tileN + 8; }
};
} // namespace

/// The tensor-core GEMM for up to a few hundred rows per expert: 4 warps in
/// a 2 x 2 grid, 32 x 32 each, K steps of 32 in 3 stages (3 x 14 KiB of
/// workgroup memory for the gated first GEMM).
static constexpr MmaShape kMmaSmall{64, 64, 32, 2, 2, 3};
/// The tensor-core GEMM for many rows per expert (prefill) without a gate:
/// 8 warps in a 2 x 4 grid, 64 x 32 each. A 128 x 128 tile reads half the
/// operand bytes per multiply-add of a 64 x 64 one. K steps of 16 keep the
/// stages in the 48 KiB of static workgroup memory (4 x 10.3 KiB; 118
/// registers a thread: two blocks per SM). On an H100 at T = 4096 (GPU run
/// 14) the down GEMMs took 7-15% less time than with kMmaSmall, but the gated
/// up GEMMs (3 stages, 190 registers: one block per SM) 17-35% more, so the
/// host takes these tiles for GEMMs without a gate only.
static constexpr MmaShape kMmaLarge{128, 128, 16, 2, 4, 4};
/// The host takes the large tiles from this many rows per expert on
/// average (grouped GEMMs) or rows (dense ones).
static constexpr int64_t kMmaLargeRowsPerExpert = 128;
static constexpr int64_t kMmaLargeDenseRows = 1024;
/// Elements of one global load of the staging (16 bytes of f16/bf16) where
/// the sizes and the buffer's alignment allow it.
static constexpr int64_t kVector = 8, kVectorBytes = 16;

/// Whether the FFN GEMMs of `elementType` use the tensor-core kernel:
/// `mma.sync` has f16 and bf16 multiplicands with f32 accumulators.
static bool useTensorCores(Type elementType) {
  return elementType.isF16() || elementType.isBF16();
}

/// Builds a tensor-core GEMM kernel with the arguments and the semantics of
/// buildGemmKernel's for f16/bf16 operands (the hidden rows are in the
/// element type too): the warps of `shape` compute a tileM x tileN output
/// tile with f32 accumulators in registers. Per K step the block stages the
/// A tile (tileM x tileK, rows gathered through the token indices for the
/// first GEMM) and the B tiles (tileK x tileN of up or down, and of gate) in
/// workgroup memory, zero outside the matrices and for rows without a
/// token; then each warp
/// loads its fragments with `nvgpu.ldmatrix` (four 8 x 8 matrices per
/// instruction, transposed for B), which delivers the layout of the PTX
/// ISA's `mma.m16n8k16` (row-major A, column-major B), and issues
/// `nvvm.mma.sync`. The epilogue works on the accumulator registers, whose
/// positions that layout gives too (c0, c1: row g, columns 2t and 2t + 1;
/// c2, c3: row g + 8), and writes every element straight to global memory.
static Kernel buildMmaGemmKernel(RewriterBase &rewriter, Operation *op,
                                 StringRef name, const GemmSpec &spec,
                                 TypeRange argTypes, Type elementType,
                                 bool pipelined,
                                 const MmaShape &shape = kMmaSmall) {
  Location loc = op->getLoc();
  MLIRContext *ctx = rewriter.getContext();
  Type i32 = rewriter.getI32Type();
  Type f32 = rewriter.getF32Type();
  bool isF16 = elementType.isF16();
  const int64_t threads = shape.threads(), tileK = shape.tileK;
  const int64_t stages = shape.stages;
  // The pipelined kernel keeps `stages` copies of each tile.
  auto staged = [&](ArrayRef<int64_t> dims2) {
    SmallVector<int64_t> dims;
    if (pipelined)
      dims.push_back(stages);
    llvm::append_range(dims, dims2);
    return workgroupType(dims, elementType);
  };
  MemRefType aTileType = staged({shape.tileM, shape.aStride()});
  MemRefType bTileType = staged({tileK, shape.bStride()});
  // The gate's B tiles for the gated first GEMM.
  bool gatedFirst = spec.first && spec.gated;
  SmallVector<Type> workgroup = {aTileType, bTileType};
  if (gatedFirst)
    workgroup.push_back(bTileType);
  // The staging stores whole vectors (createKernel aligns the tiles).
  Kernel kernel =
      createKernel(rewriter, op, name, argTypes, workgroup, threads);
  KernelBuilder b{rewriter, loc, f32};
  GemmArgs args = GemmArgs::unpack(spec, kernel.args);
  Value tokens = args.tokens, offsets = args.offsets, a = args.a;
  Value gate = args.gate, bMat = args.b, gateBias = args.gateBias;
  Value bias = args.bias, rowScale = args.rowScale, out = args.out;
  Value aTile = kernel.workgroup[0], bTile = kernel.workgroup[1];
  Value gTile = gatedFirst ? kernel.workgroup[2] : Value();

  Value c0 = b.idx(0), c1 = b.idx(1);
  Value tid = b.threadId();
  Value colStart = b.mul(b.blockId(gpu::Dimension::y), b.idx(shape.tileN));
  RowTile tile = findRowTile(b, spec, shape.tileM, offsets, out,
                             b.blockId(gpu::Dimension::x));
  Value expert = tile.expert, rowStart = tile.rowStart, rowEnd = tile.rowEnd;

  // The whole block takes the same branch, so the barriers inside are
  // reached by every thread.
  b.ifThen(slotFound(b, args.slots, tile), [&] {
    int64_t numK = spec.k, numN = spec.n;
    Value cK = b.idx(numK), cN = b.idx(numN);
    // Where row `row` (global) reads its A row, whether it holds a token,
    // and whether it is a row of this tile at all.
    struct RowInfo {
      Value valid, hasToken, source;
    };
    auto rowInfo = [&](Value row) {
      Value valid = b.lt(row, rowEnd);
      if (!spec.grouped)
        return RowInfo{valid, valid, row};
      Value token = b.loadI(tokens, {b.minI(row, b.sub(b.dim(tokens, 0), c1))});
      Value has = b.andI(valid, b.cmpI(arith::CmpIPredicate::sge, token, c0));
      return RowInfo{valid, has, token};
    };
    VectorType vecType = VectorType::get({kVector}, elementType);
    auto aligned16 = [&](Value mem) { return b.isAligned(mem, kVectorBytes); };
    auto loadVector = [&](Value mem, SmallVector<Value> indices, Value valid,
                          Value bound, Value vectorOk) {
      return loadMaskedVector(b, vecType, mem, std::move(indices), valid, bound,
                              vectorOk);
    };
    // Placed experts read their weights from the slot the cache gave them.
    Value weightExpert =
        args.slots ? b.loadI(args.slots, {b.maxI(expert, c0)}) : expert;
    auto weightAt = [&](Value r, Value c) -> SmallVector<Value> {
      if (spec.grouped)
        return {weightExpert, r, c};
      return {r, c};
    };

    // Staging assignments, fixed over the K loop: vectors of 8 elements.
    // A: thread `tid` stages elements [8 (tid % V), + 8) of the tile rows
    // tid / V + i * threads / V (V = tileK / 8 vectors per row: V threads
    // read a row's contiguous bytes). B: elements [8 (tid % W), + 8) of the
    // rows tid / W + i * threads / W (W = tileN / 8).
    const int64_t aVectorsPerRow = tileK / kVector;
    const int64_t aCopies = shape.tileM * aVectorsPerRow / threads;
    const int64_t bVectorsPerRow = shape.tileN / kVector;
    const int64_t bRowsPerCopy = threads / bVectorsPerRow;
    const int64_t bCopies = tileK / bRowsPerCopy;
    assert(aCopies * threads == shape.tileM * aVectorsPerRow &&
           bCopies * bRowsPerCopy == tileK && "the threads stage whole tiles");
    Value aCol = b.mul(b.rem(tid, b.idx(aVectorsPerRow)), b.idx(kVector));
    Value aRow0 = b.div(tid, b.idx(aVectorsPerRow));
    SmallVector<Value> aLocalRows, aSources, aValid;
    for (int64_t i = 0; i < aCopies; ++i) {
      Value local = b.add(aRow0, b.idx(i * threads / aVectorsPerRow));
      RowInfo info = rowInfo(b.add(rowStart, local));
      aLocalRows.push_back(local);
      // The first GEMM reads the token's input row; the second the hidden
      // row itself.
      aSources.push_back(spec.first ? info.source : b.add(rowStart, local));
      aValid.push_back(spec.first ? info.hasToken : info.valid);
    }
    Value bRow = b.div(tid, b.idx(bVectorsPerRow));
    auto bLocalRow = [&](int64_t copy) {
      return b.add(bRow, b.idx(copy * bRowsPerCopy));
    };
    Value bLocalCol = b.mul(b.rem(tid, b.idx(bVectorsPerRow)), b.idx(kVector));
    Value bCol = b.add(colStart, bLocalCol);
    // Vector loads where the sizes keep every vector inside one row (and
    // 16-byte aligned there) and the buffer is aligned.
    Value aVectorOk = numK % kVector == 0 ? aligned16(a) : Value();
    auto bVectorOk = [&](Value w) {
      return numN % kVector == 0 ? aligned16(w) : Value();
    };
    Value upVectorOk = bVectorOk(bMat);
    Value gateVectorOk = gate ? bVectorOk(gate) : Value();

    // The warp's part of the tile and the lane's place in the fragments.
    Value warp = b.div(tid, b.idx(kWarpSize));
    Value lane = b.rem(tid, b.idx(kWarpSize));
    Value warpRow =
        b.mul(b.div(warp, b.idx(shape.warpsN)), b.idx(shape.warpM()));
    Value warpCol =
        b.mul(b.rem(warp, b.idx(shape.warpsN)), b.idx(shape.warpN()));
    Value group = b.div(lane, b.idx(4)), inGroup = b.rem(lane, b.idx(4));

    const int64_t tilesM = shape.warpM() / kMmaM;
    const int64_t tilesN = shape.warpN() / kMmaN;
    assert(tilesN % 2 == 0 && "B fragments come two column tiles per ldmatrix");
    const int64_t accPerMatrix = tilesM * tilesN * 4;
    auto accIndex = [tilesN](int64_t mi, int64_t ni, int64_t r) {
      return (mi * tilesN + ni) * 4 + r;
    };
    // A fragment register: element pair `reg` of an ldmatrix result; mma
    // takes f16 pairs as vector<2xf16> and bf16 pairs as i32.
    VectorType fragType = VectorType::get({4, 2}, elementType);
    auto mmaOperand = [&](Value frag, int64_t reg) -> Value {
      Value pair = vector::ExtractOp::create(rewriter, loc, frag, reg);
      if (isF16)
        return pair;
      Value word = vector::BitCastOp::create(rewriter, loc,
                                             VectorType::get({1}, i32), pair);
      return vector::ExtractOp::create(rewriter, loc, word, 0);
    };
    // The row and column each lane addresses in an ldmatrix.x4: A (16 x 16
    // at r0, k0): lane l gives row r0 + l % 16 at k0 + 8 (l / 16), so the
    // matrices are a0..a3 (rows +0/+8, columns +0/+8). B (16 K rows x 16
    // columns at k0, n0, transposed): matrix m = l / 8 has rows
    // k0 + 8 (m % 2) + l % 8 at column n0 + 8 (m / 2), giving b0, b1 of
    // columns [n0, n0 + 8) and b0, b1 of [n0 + 8, n0 + 16).
    Value aLaneRow = b.rem(lane, b.idx(16));
    Value aLaneCol = b.mul(b.div(lane, b.idx(16)), b.idx(8));
    Value bLaneMatrix = b.div(lane, b.idx(8));
    Value bLaneRow = b.add(b.mul(b.rem(bLaneMatrix, b.idx(2)), b.idx(8)),
                           b.rem(lane, b.idx(8)));
    Value bLaneCol = b.mul(b.div(bLaneMatrix, b.idx(2)), b.idx(8));
    auto ldmatrix = [&](Value tile, Value stage, Value row, Value col,
                        bool transpose) {
      SmallVector<Value> indices;
      if (stage)
        indices.push_back(stage);
      llvm::append_range(indices, ValueRange{row, col});
      return nvgpu::LdMatrixOp::create(rewriter, loc, fragType, tile, indices,
                                       transpose, /*numTiles=*/4);
    };
    Type resultType =
        LLVM::LLVMStructType::getLiteral(ctx, {f32, f32, f32, f32});
    NVVM::MMATypes ptxType = isF16 ? NVVM::MMATypes::f16 : NVVM::MMATypes::bf16;

    // The global loads of the tiles of K step `k0`, as the vectors to
    // store: A (aCopies vectors), then rows k and k + 1 of B and of the
    // gate's B. They are issued one step ahead (register prefetch), so that
    // their latency hides behind the mma of the current step; past K every
    // element is masked and nothing is read.
    auto loadStep = [&](Value k0) {
      SmallVector<Value> staged;
      Value ak = b.add(k0, aCol);
      for (int64_t i = 0; i < aCopies; ++i)
        staged.push_back(
            loadVector(a, {aSources[i], ak}, aValid[i], cK, aVectorOk));
      auto loadB = [&](Value w, Value vectorOk) {
        for (int64_t r = 0; r < bCopies; ++r) {
          Value bk = b.add(k0, bLocalRow(r));
          staged.push_back(
              loadVector(w, weightAt(bk, bCol), b.lt(bk, cK), cN, vectorOk));
        }
      };
      loadB(bMat, upVectorOk);
      if (gate)
        loadB(gate, gateVectorOk);
      return staged;
    };
    auto storeStep = [&](ValueRange staged) {
      auto store = [&](Value v, Value dst, Value row, Value col) {
        vector::StoreOp::create(rewriter, loc, v, dst, ValueRange{row, col},
                                /*nontemporal=*/false,
                                /*alignment=*/llvm::Align(kVectorBytes));
      };
      for (int64_t i = 0; i < aCopies; ++i)
        store(staged[i], aTile, aLocalRows[i], aCol);
      for (int64_t r = 0; r < bCopies; ++r) {
        store(staged[aCopies + r], bTile, bLocalRow(r), bLocalCol);
        if (gate)
          store(staged[aCopies + bCopies + r], gTile, bLocalRow(r), bLocalCol);
      }
    };

    // The mma work of one K step on the tiles (of stage `stage` when
    // pipelined), accumulating into `acc`.
    auto multiplyStep = [&](Value stage, SmallVector<Value> acc) {
      for (int64_t ks = 0; ks < tileK / kMmaK; ++ks) {
        Value k0 = b.idx(ks * kMmaK);
        // A fragments of rows [r0, r0 + 16): a0 row g, a1 row g + 8, a2 and
        // a3 the same rows 8 columns further.
        SmallVector<SmallVector<Value, 4>> aFrags;
        for (int64_t mi = 0; mi < tilesM; ++mi) {
          Value r = b.add(b.add(warpRow, b.idx(mi * kMmaM)), aLaneRow);
          Value frag = ldmatrix(aTile, stage, r, b.add(k0, aLaneCol), false);
          SmallVector<Value, 4> regs;
          for (int64_t reg = 0; reg < 4; ++reg)
            regs.push_back(mmaOperand(frag, reg));
          aFrags.push_back(regs);
        }
        // B fragments of columns [c0, c0 + 8): b0 rows 2t, 2t + 1 of column
        // g, b1 rows 2t + 8, 2t + 9; two column tiles per ldmatrix.
        auto bFrags = [&](Value src) {
          SmallVector<SmallVector<Value, 2>> frags;
          for (int64_t ni = 0; ni < tilesN; ni += 2) {
            Value col = b.add(b.add(warpCol, b.idx(ni * kMmaN)), bLaneCol);
            Value frag = ldmatrix(src, stage, b.add(k0, bLaneRow), col, true);
            frags.push_back({mmaOperand(frag, 0), mmaOperand(frag, 1)});
            frags.push_back({mmaOperand(frag, 2), mmaOperand(frag, 3)});
          }
          return frags;
        };
        auto multiply = [&](Value src, int64_t base) {
          auto frags = bFrags(src);
          for (int64_t mi = 0; mi < tilesM; ++mi)
            for (int64_t ni = 0; ni < tilesN; ++ni) {
              SmallVector<Value, 4> c;
              for (int64_t r = 0; r < 4; ++r)
                c.push_back(acc[base + accIndex(mi, ni, r)]);
              Value d = NVVM::MmaOp::create(
                  rewriter, loc, resultType, aFrags[mi], frags[ni], c,
                  {kMmaM, kMmaN, kMmaK}, std::nullopt, std::nullopt,
                  std::array<NVVM::MMATypes, 2>{ptxType, ptxType},
                  std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                                 NVVM::MMALayout::col});
              for (int64_t r = 0; r < 4; ++r)
                acc[base + accIndex(mi, ni, r)] =
                    LLVM::ExtractValueOp::create(rewriter, loc, d, r);
            }
        };
        multiply(bTile, 0);
        if (gate)
          multiply(gTile, accPerMatrix);
      }
      return acc;
    };

    SmallVector<Value> inits(spec.gated ? 2 * accPerMatrix : accPerMatrix,
                             b.flt(0.0));
    size_t numAcc = inits.size();
    SmallVector<Value> acc;
    if (pipelined) {
      // cp.async pipeline (sm_80+): the copies of K step i + stages - 1
      // go straight from global to workgroup memory while step i is
      // multiplied, with no staging registers. Rows past the matrices or
      // without a token copy zero bytes (the rest of the 16 is zero-filled);
      // their source indices are clamped so that every address is in bounds.
      // The host launches this kernel where K and N are multiples of 8 and
      // the operands 16-byte aligned, so that a 16-byte copy is all in or all
      // out.
      Type tokenType = nvgpu::DeviceAsyncTokenType::get(ctx);
      auto issueStep = [&](Value k0, Value stage) -> Value {
        SmallVector<Value> tokens;
        auto copy = [&](Value src, SmallVector<Value> srcIndices, Value dst,
                        Value row, Value col, Value in) {
          tokens.push_back(nvgpu::DeviceAsyncCopyOp::create(
              rewriter, loc, tokenType, dst, ValueRange{stage, row, col}, src,
              srcIndices, rewriter.getIndexAttr(kVector),
              b.select(in, b.idx(kVector), c0), UnitAttr()));
        };
        Value ak = b.add(k0, aCol);
        Value akIn = b.lt(ak, cK), akc = b.minI(ak, b.idx(numK - kVector));
        Value lastRow = b.sub(b.dim(a, 0), c1);
        for (int64_t i = 0; i < aCopies; ++i) {
          Value row = b.minI(b.maxI(aSources[i], c0), lastRow);
          copy(a, {row, akc}, aTile, aLocalRows[i], aCol,
               b.andI(aValid[i], akIn));
        }
        Value colIn = b.lt(bCol, cN);
        Value colc = b.minI(bCol, b.idx(numN - kVector));
        for (int64_t r = 0; r < bCopies; ++r) {
          Value local = bLocalRow(r);
          Value bk = b.add(k0, local);
          Value in = b.andI(b.lt(bk, cK), colIn);
          Value bkc = b.minI(bk, b.idx(numK - 1));
          copy(bMat, weightAt(bkc, colc), bTile, local, bLocalCol, in);
          if (gate)
            copy(gate, weightAt(bkc, colc), gTile, local, bLocalCol, in);
        }
        return nvgpu::DeviceAsyncCreateGroupOp::create(rewriter, loc, tokenType,
                                                       tokens);
      };
      Value group;
      for (int64_t st = 0; st + 1 < stages; ++st)
        group = issueStep(b.idx(st * tileK), b.idx(st));
      inits.push_back(group);
      Value cStages = b.idx(stages);
      acc = b.loop(
          c0, cK, b.idx(tileK), inits, [&](Value k0, ValueRange carried) {
            // Step i's group is complete once at most stages - 2 newer
            // ones are pending; the barrier makes every thread's copies
            // visible and ends the reads of the stage that is refilled below
            // (the one of step i - 1).
            nvgpu::DeviceAsyncWaitOp::create(
                rewriter, loc, carried.back(),
                rewriter.getI32IntegerAttr(stages - 2));
            b.barrier();
            Value step = b.div(k0, b.idx(tileK));
            SmallVector<Value> next = multiplyStep(
                b.rem(step, cStages),
                SmallVector<Value>(carried.begin(), carried.begin() + numAcc));
            next.push_back(
                issueStep(b.add(k0, b.idx((stages - 1) * tileK)),
                          b.rem(b.add(step, b.idx(stages - 1)), cStages)));
            return next;
          });
      // The copies past K (zero fills) end before the block does.
      nvgpu::DeviceAsyncWaitOp::create(rewriter, loc, acc.back(),
                                       rewriter.getI32IntegerAttr(0));
    } else {
      llvm::append_range(inits, loadStep(c0));
      acc = b.loop(
          c0, cK, b.idx(tileK), inits, [&](Value k0, ValueRange carried) {
            storeStep(carried.drop_front(numAcc));
            b.barrier();
            SmallVector<Value> prefetched = loadStep(b.add(k0, b.idx(tileK)));
            // `mma.sync.aligned` needs the whole warp converged; the guarded
            // loads above branch per thread, so reconverge explicitly
            // (__syncwarp) rather than rely on where ptxas rejoins them.
            syncWarp(b);
            SmallVector<Value> next = multiplyStep(
                Value(),
                SmallVector<Value>(carried.begin(), carried.begin() + numAcc));
            // The tiles are restaged by the next step.
            b.barrier();
            llvm::append_range(next, prefetched);
            return next;
          });
    }
    acc.resize(numAcc);

    // Epilogue on the registers: accumulator r of tile (mi, ni) is at row
    // g + 8 (r / 2) and column 2t + r % 2 of that tile.
    struct Row {
      Value row;
      RowInfo info;
      Value scale;
    };
    SmallVector<Row> rows;
    for (int64_t mi = 0; mi < tilesM; ++mi)
      for (int64_t h = 0; h < 2; ++h) {
        Value row = b.add(
            rowStart, b.add(b.add(warpRow, b.idx(mi * kMmaM + h * 8)), group));
        Row r{row, rowInfo(row), Value()};
        // Clamped, so that the load is in bounds for rows past the end.
        if (rowScale)
          r.scale =
              b.loadF(rowScale, {b.minI(row, b.sub(b.dim(rowScale, 0), c1))});
        rows.push_back(r);
      }
    struct Col {
      Value col, valid, bias, gateBias;
    };
    auto biasAt = [&](Value biasMem, Value col) {
      Value c = b.minI(col, b.idx(numN - 1));
      if (spec.grouped)
        return b.loadF(biasMem, {expert, c});
      return b.loadF(biasMem, {c});
    };
    SmallVector<Col> cols;
    for (int64_t ni = 0; ni < tilesN; ++ni)
      for (int64_t c = 0; c < 2; ++c) {
        Value col = b.add(colStart, b.add(b.add(warpCol, b.idx(ni * kMmaN + c)),
                                          b.mul(inGroup, b.idx(2))));
        Col info{col, b.lt(col, cN), Value(), Value()};
        if (bias)
          info.bias = biasAt(bias, col);
        if (gateBias)
          info.gateBias = biasAt(gateBias, col);
        cols.push_back(info);
      }
    for (int64_t mi = 0; mi < tilesM; ++mi)
      for (int64_t ni = 0; ni < tilesN; ++ni)
        for (int64_t r = 0; r < 4; ++r) {
          const Row &row = rows[mi * 2 + r / 2];
          const Col &col = cols[ni * 2 + r % 2];
          Value v = acc[accIndex(mi, ni, r)];
          if (spec.first) {
            b.ifThen(b.andI(row.info.valid, col.valid), [&] {
              Value u = col.bias ? b.add(v, col.bias) : v;
              Value g;
              if (spec.gated) {
                g = acc[accPerMatrix + accIndex(mi, ni, r)];
                if (col.gateBias)
                  g = b.add(g, col.gateBias);
              }
              b.storeF(buildExpertHidden(b.b, b.loc, spec.expert, g, u), out,
                       {row.row, col.col});
            });
          } else {
            b.ifThen(b.andI(row.info.hasToken, col.valid), [&] {
              Value y = col.bias ? b.add(v, col.bias) : v;
              if (row.scale)
                y = b.mul(y, row.scale);
              b.storeF(y, out, {row.row, col.col});
            });
          }
        }
  });
  return kernel;
}

/// Builds `rowScale[t] = sigmoid(x[t] · scale)`, one thread per token.
static Kernel buildRowScaleKernel(RewriterBase &rewriter, Operation *op,
                                  TypeRange argTypes, Type ct) {
  Location loc = op->getLoc();
  Kernel kernel =
      createKernel(rewriter, op, "moe_shared_scale", argTypes, {}, kThreads);
  KernelBuilder b{rewriter, loc, ct};
  Value x = kernel.args[0], scale = kernel.args[1], out = kernel.args[2];
  Value t = b.add(b.mul(b.blockId(), b.idx(kThreads)), b.threadId());
  b.ifThen(b.lt(t, b.dim(x, 0)), [&] {
    Value dot =
        b.loop(b.idx(0), b.dim(x, 1), b.idx(1), b.flt(0.0),
               [&](Value h, ValueRange acc) {
                 return SmallVector<Value>{b.add(
                     acc[0], b.mul(b.loadF(x, {t, h}), b.loadF(scale, {h})))};
               })[0];
    b.storeF(b.sigmoid(dot), out, {t});
  });
  return kernel;
}

//===----------------------------------------------------------------------===//
// Experts: skinny GEMMs for few rows per expert (decode)
//===----------------------------------------------------------------------===//
//
// With a few rows per expert the FFN is a matrix-vector product per expert:
// the time is the time to stream the weights from memory once, and the tiled
// kernels above are latency bound instead (their 16- or 64-row tiles hold a
// row or two, and K advances a tile per barrier pair, in a block per expert
// and column tile). The skinny kernels read every weight byte once, in 16-byte
// vector loads that cover 128 contiguous bytes of a weight row per group of
// 8 threads, and split K across blocks so that even two active experts fill
// the GPU:
//
// - grid x: column strips of `cols` columns (8 threads x one vector each);
// - grid y: K splits, `chunk` K rows each (chosen on the host from the token
//   count, so that strips x splits x groups is about kSkinnyTargetBlocks);
// - grid z: row groups of at most kSkinnyRows rows of one expert, numbered in
//   expert order (an upper bound for grouped GEMMs; blocks past the last
//   group, like those of experts without rows, exit at once).
//
// A block has 256 threads: `lanes` threads across the strip times `slices`
// K slices. The block's A rows (its K range of up to kSkinnyRows rows) are
// staged in workgroup memory, each thread accumulates its strip columns for
// all rows of the group over its K slice, the slices are summed by a fixed
// butterfly of shuffles inside each warp and then warp by warp in workgroup
// memory, and the block writes f32 (f64) partial sums per split. The sums
// over splits are fused into the next step: the down kernel stages its A
// rows (the hidden activations) by summing the up partials over splits and
// applying biases and the activation, and a small reduce kernel sums the
// down partials and writes the output rows that hold a token. Every sum has
// a fixed order (no atomics), so results do not depend on scheduling; they
// do depend on the split count, i.e. on the shapes and the token count.

/// Threads per block of the skinny GEMM kernels (8 warps).
static constexpr int64_t kSkinnyThreads = 256;
/// Rows of one expert that a skinny block computes together, reading the
/// weight strip once for all of them.
static constexpr int64_t kSkinnyRows = 4;
/// Bytes of one weight load of a thread.
static constexpr int64_t kSkinnyVectorBytes = 16;
/// Threads across a strip: 8 x 16 bytes = 128 contiguous bytes of a row.
static constexpr int64_t kSkinnyLanes = 8;
/// Weight vectors a thread has in flight per round (in 32-bit registers:
/// 4 per vector, 32 in all), shared by the matrices of the GEMM.
static constexpr int64_t kSkinnyLoadsInFlight = 8;
/// K splits: at most ceil(K / kSkinnyMinChunk) of them (enough loads per
/// thread to be worth a block), at most kSkinnyMaxChunk K rows each (the
/// width of the A tile in workgroup memory).
static constexpr int64_t kSkinnyMinChunk = 256;
static constexpr int64_t kSkinnyMaxChunk = 1024;
/// Blocks of a skinny GEMM resident per SM (a launch bound for ptxas), and
/// the blocks the host aims at when it splits K: that many per SM of the
/// target (kTargetSMs). Tuning values, not correctness ones.
static constexpr int64_t kSkinnyBlocksPerSM = 2;
static constexpr int64_t kSkinnyTargetBlocks = kSkinnyBlocksPerSM * kTargetSMs;
/// Split partials summed per unrolled step (loads in flight per thread).
static constexpr int64_t kSplitBatch = 8;
/// Row thresholds of the skinny path: grouped GEMMs when the rows average at
/// most this many per expert (experts then have one or two row groups, and
/// the tiled kernels would leave most of their 64- or 128-row tiles empty);
/// dense GEMMs up to this many rows (groups are blocks, so more rows only
/// mean more blocks reading the same strips, from L2).
static constexpr int64_t kSkinnyRowsPerExpert = 8;
static constexpr int64_t kSkinnyDenseRows = 32;

namespace {
/// The static shape of one skinny GEMM (K x N, `matrices` weight matrices
/// sharing the A rows: 2 for the gated first GEMM).
struct SkinnyPlan {
  int64_t k = 0, n = 0;
  int64_t matrices = 1;
  /// Elements of one weight vector load (16 bytes when N allows it, so that
  /// every vector is aligned).
  int64_t vec = 1;
  /// Threads across a strip, K slices of a block, strip width.
  int64_t lanes = 1, slices = 1, cols = 1;
  int64_t strips = 1;
  /// Weight rows per slice loaded before their FMAs (per matrix), and the K
  /// rows a block consumes per round: `slices * unroll`.
  int64_t unroll = 1, round = 1;
  /// Bounds of the K rows per block: multiples of `round`.
  int64_t minChunk = 1, maxChunk = 1;
};
} // namespace

static SkinnyPlan planSkinny(int64_t k, int64_t n, Type weightType,
                             int64_t matrices) {
  SkinnyPlan plan;
  plan.k = k;
  plan.n = n;
  plan.matrices = matrices;
  int64_t bytes = weightType.getIntOrFloatBitWidth() / 8;
  plan.vec = std::max<int64_t>(1, kSkinnyVectorBytes / bytes);
  // Rows of N elements stay aligned to the vector only if N is a multiple.
  while (n % plan.vec)
    plan.vec /= 2;
  plan.lanes = std::min<int64_t>(
      kSkinnyLanes, llvm::PowerOf2Ceil((n + plan.vec - 1) / plan.vec));
  plan.slices = kSkinnyThreads / plan.lanes;
  plan.cols = plan.lanes * plan.vec;
  plan.strips = (n + plan.cols - 1) / plan.cols;
  plan.unroll = std::max<int64_t>(1, std::min(kSkinnyLoadsInFlight / matrices,
                                              kSkinnyMinChunk / plan.slices));
  plan.round = plan.slices * plan.unroll;
  plan.minChunk = llvm::alignTo(kSkinnyMinChunk, plan.round);
  // The A tile is staged in whole rows of threads (and no wider than K
  // needs); `round` divides kSkinnyThreads, so the bounds are multiples of
  // both.
  plan.maxChunk =
      std::min<int64_t>(kSkinnyMaxChunk, llvm::alignTo(k, kSkinnyThreads));
  assert(kSkinnyThreads % plan.round == 0 &&
         kSkinnyMaxChunk % kSkinnyThreads == 0 && "uneven skinny plan");
  return plan;
}

/// The row group of block `slot` of a grouped skinny kernel. Each expert's
/// rows form `ceil(rows / kSkinnyRows)` groups, numbered in expert order;
/// every warp scans the offsets 32 experts at a time (an inclusive prefix
/// sum of the group counts by shuffles) and finds the expert whose groups
/// hold `slot`, so no barrier is needed and all warps agree. Returns the
/// local expert (-1 past the last group), the first row and the row end.
static std::array<Value, 3> emitFindRowGroup(const KernelBuilder &b,
                                             const GemmSpec &spec,
                                             Value offsets, Value slot,
                                             Value lane) {
  OpBuilder &ob = b.b;
  Location loc = b.loc;
  Type i32 = ob.getI32Type();
  auto i32c = [&](int64_t v) {
    return arith::ConstantOp::create(ob, loc, ob.getI32IntegerAttr(v))
        .getResult();
  };
  auto toI32 = [&](Value v) {
    return arith::IndexCastOp::create(ob, loc, i32, v).getResult();
  };
  int64_t numExperts = spec.numExperts;
  int64_t numChunks = (numExperts + kWarpSize - 1) / kWarpSize;
  // Chunks of 32 experts per step: their offsets are all loaded before the
  // scans, so a step costs one memory latency.
  int64_t perStep = std::min<int64_t>(numChunks, 8);
  int64_t steps = (numChunks + perStep - 1) / perStep;
  Value slot32 = toI32(slot);
  Value lane32 = toI32(lane);

  auto step = [&](Value stepIdx, ValueRange state) {
    Value base = state[0], expert = state[1], firstGroup = state[2];
    SmallVector<Value> groups, experts;
    for (int64_t c = 0; c < perStep; ++c) {
      Value e = b.add(b.mul(b.add(b.mul(stepIdx, b.idx(perStep)), b.idx(c)),
                            b.idx(kWarpSize)),
                      lane);
      Value valid = b.lt(e, b.idx(numExperts));
      Value global =
          b.add(b.minI(e, b.idx(numExperts - 1)), b.idx(spec.firstExpert));
      Value start = b.loadI(offsets, {global});
      Value end = b.loadI(offsets, {b.add(global, b.idx(1))});
      Value rows = b.maxI(b.sub(end, start), b.idx(0));
      Value n = b.select(valid, b.ceilDiv(rows, kSkinnyRows), b.idx(0));
      groups.push_back(toI32(n));
      experts.push_back(toI32(e));
    }
    for (int64_t c = 0; c < perStep; ++c) {
      // Inclusive prefix sum of the group counts over the lanes.
      Value p = groups[c];
      for (int32_t d = 1; d < kWarpSize; d *= 2) {
        Value up = shuffle(b, p, d, gpu::ShuffleMode::UP);
        Value has = b.cmpI(arith::CmpIPredicate::sge, lane32, i32c(d));
        p = b.add(p, b.select(has, up, i32c(0)));
      }
      Value total = shuffle(b, p, kWarpSize - 1, gpu::ShuffleMode::IDX);
      Value first = b.sub(b.add(base, p), groups[c]);
      Value hit = b.andI(b.cmpI(arith::CmpIPredicate::sge, slot32, first),
                         b.lt(slot32, b.add(base, p)));
      expert = arith::MaxSIOp::create(
          ob, loc, expert, warpMax(b, b.select(hit, experts[c], i32c(-1))));
      firstGroup = arith::MaxSIOp::create(
          ob, loc, firstGroup, warpMax(b, b.select(hit, first, i32c(-1))));
      base = b.add(base, total);
    }
    return SmallVector<Value>{base, expert, firstGroup};
  };
  SmallVector<Value> init = {i32c(0), i32c(-1), i32c(-1)};
  SmallVector<Value> found =
      steps == 1 ? step(b.idx(0), init)
                 : b.loop(b.idx(0), b.idx(steps), b.idx(1), init, step);
  auto toIndex = [&](Value v) {
    return arith::IndexCastOp::create(ob, loc, ob.getIndexType(), v)
        .getResult();
  };
  Value expert = toIndex(found[1]);
  Value global = b.add(b.maxI(expert, b.idx(0)), b.idx(spec.firstExpert));
  Value start = b.loadI(offsets, {global});
  Value end = b.loadI(offsets, {b.add(global, b.idx(1))});
  Value rowStart =
      b.add(start, b.mul(b.sub(slot, toIndex(found[2])), b.idx(kSkinnyRows)));
  Value rowEnd = b.minI(end, b.add(rowStart, b.idx(kSkinnyRows)));
  return {expert, rowStart, rowEnd};
}

/// `sum_{s < splits} load(s)` in split order, `kSplitBatch` loads at a time
/// (the loads of a batch are independent, so they are in flight together).
/// `load` must be valid for every `s < splits`; the batch's tail loads the
/// last split again and adds zero instead.
static Value emitSumOverSplits(const KernelBuilder &b, Value splits,
                               function_ref<Value(Value)> load) {
  Value batches = b.ceilDiv(splits, kSplitBatch);
  return b.loop(b.idx(0), batches, b.idx(1), b.flt(0.0),
                [&](Value q, ValueRange acc) {
                  SmallVector<Value> values, valid;
                  for (int64_t i = 0; i < kSplitBatch; ++i) {
                    Value s = b.add(b.mul(q, b.idx(kSplitBatch)), b.idx(i));
                    valid.push_back(b.lt(s, splits));
                    values.push_back(load(b.minI(s, b.sub(splits, b.idx(1)))));
                  }
                  Value sum = acc[0];
                  for (int64_t i = 0; i < kSplitBatch; ++i)
                    sum = b.add(sum, b.select(valid[i], values[i], b.flt(0.0)));
                  return SmallVector<Value>{sum};
                })[0];
}

/// Builds a skinny GEMM kernel (see above): block (strip, split, group)
/// computes the group's rows over the split's K range for the strip's
/// columns and writes them to `partial[split][row]`. The first GEMM gathers
/// the input rows through the token indices (zero for rows without a token)
/// and writes the projections before bias and activation, `[splits, rows,
/// matrices, F]` (matrix 1 is the gate); the second sums those partials over
/// their splits, adds the biases and applies the activation to make its A
/// rows, and writes `[splits, rows, H]` with the down bias in split 0.
/// Arguments, in order: grouped: tokens, offsets; first: input, [gate], up,
/// partial, chunk; second: up partials, [gate bias], [up bias], down, [down
/// bias], partial, chunk.
static Kernel buildSkinnyGemmKernel(RewriterBase &rewriter, Operation *op,
                                    StringRef name, const GemmSpec &spec,
                                    const SkinnyPlan &plan, TypeRange argTypes,
                                    Type ct) {
  Location loc = op->getLoc();
  constexpr int64_t rowsPerGroup = kSkinnyRows;
  constexpr int64_t numWarps = kSkinnyThreads / kWarpSize;
  int64_t numMatrices = plan.matrices;
  MemRefType aTileType = workgroupType({rowsPerGroup, plan.maxChunk}, ct);
  MemRefType redType =
      workgroupType({numWarps, numMatrices, rowsPerGroup, plan.cols}, ct);
  Kernel kernel = createKernel(rewriter, op, name, argTypes,
                               {aTileType, redType}, kSkinnyThreads);
  // Two blocks per SM (ptxas then keeps to 128 registers a thread): while
  // one block stages, reduces or writes, the other's loads are in flight.
  kernel.func->setAttr("nvvm.minctasm",
                       rewriter.getI32IntegerAttr(kSkinnyBlocksPerSM));
  KernelBuilder b{rewriter, loc, ct};
  auto it = kernel.args.begin();
  Value tokens = spec.grouped ? *it++ : Value();
  Value offsets = spec.grouped ? *it++ : Value();
  Value slots = spec.grouped && spec.slotted ? *it++ : Value();
  Value a = *it++;
  Value gateBias, upBias;
  // Matrix 0 is up (down for the second GEMM), matrix 1 the gate.
  SmallVector<Value> weights;
  if (spec.first) {
    Value gate = spec.gated ? *it++ : Value();
    weights.push_back(*it++);
    if (gate)
      weights.push_back(gate);
  } else {
    gateBias = spec.hasGateBias ? *it++ : Value();
    upBias = spec.hasUpBias ? *it++ : Value();
    weights.push_back(*it++);
  }
  Value downBias = !spec.first && spec.hasDownBias ? *it++ : Value();
  Value partial = *it++;
  Value chunk = *it++;
  Type elementType = cast<MemRefType>(weights[0].getType()).getElementType();
  Value aTile = kernel.workgroup[0], red = kernel.workgroup[1];

  Value c0 = b.idx(0), c1 = b.idx(1);
  Value tid = b.threadId();
  Value lane = b.rem(tid, b.idx(kWarpSize));
  Value warp = b.div(tid, b.idx(kWarpSize));
  Value colLane = b.rem(tid, b.idx(plan.lanes));
  Value slice = b.div(tid, b.idx(plan.lanes));
  Value strip = b.blockId(gpu::Dimension::x);
  Value split = b.blockId(gpu::Dimension::y);
  Value slot = b.blockId(gpu::Dimension::z);
  Value numRows = b.dim(partial, 1);
  Value kBegin = b.mul(split, chunk);
  Value kEnd = b.minI(b.idx(plan.k), b.add(kBegin, chunk));
  Value kLen = b.sub(kEnd, kBegin);
  // This thread's first column; past N it loads the last vector instead
  // (always in bounds) and its sums are never written.
  Value col =
      b.add(b.mul(strip, b.idx(plan.cols)), b.mul(colLane, b.idx(plan.vec)));
  Value colIn = b.minI(col, b.idx(plan.n - plan.vec));

  Value expert = c0, rowStart, rowEnd, found;
  if (spec.grouped) {
    std::array<Value, 3> group = emitFindRowGroup(b, spec, offsets, slot, lane);
    expert = group[0];
    rowStart = group[1];
    rowEnd = group[2];
    found = b.cmpI(arith::CmpIPredicate::sge, expert, c0);
  } else {
    rowStart = b.mul(slot, b.idx(rowsPerGroup));
    rowEnd = b.minI(numRows, b.add(rowStart, b.idx(rowsPerGroup)));
    found = b.lt(rowStart, numRows);
  }
  auto biasAt = [&](Value mem, Value c) {
    if (spec.grouped)
      return b.loadF(mem, {expert, c});
    return b.loadF(mem, {c});
  };
  // Placed experts read their weights from the slot the cache gave them;
  // experts without one (-1) run in another batch.
  Value weightExpert = expert;
  if (slots) {
    weightExpert = b.loadI(slots, {b.maxI(expert, c0)});
    found = b.andI(found, b.cmpI(arith::CmpIPredicate::sge, weightExpert, c0));
  }

  // The branch is uniform over the block (the row group comes from the block
  // ids and loads every thread makes alike), so every thread reaches the
  // barriers inside it.
  b.ifThen(found, [&] {
    // Stage A[r][kk] (row rowStart + r, K row kBegin + kk), zero outside the
    // group and the split. Element j of this thread is static: row
    // j / perRow, K offset (j % perRow) * threads + tid. All loads are
    // issued before the stores.
    auto stageA = [&] {
      int64_t perRow = plan.maxChunk / kSkinnyThreads;
      int64_t perThread = rowsPerGroup * perRow;
      auto element = [&](int64_t j) {
        Value row = b.add(rowStart, b.idx(j / perRow));
        Value kk = b.add(b.idx((j % perRow) * kSkinnyThreads), tid);
        Value ok = b.andI(b.lt(row, rowEnd), b.lt(kk, kLen));
        return std::make_tuple(row, kk, ok);
      };
      SmallVector<Value> staged;
      if (spec.first) {
        for (int64_t j = 0; j < perThread; ++j) {
          Value row, kk, ok;
          std::tie(row, kk, ok) = element(j);
          Value token = row;
          if (spec.grouped) {
            token = b.loadI(tokens, {b.minI(row, b.sub(numRows, c1))});
            ok = b.andI(ok, b.cmpI(arith::CmpIPredicate::sge, token, c0));
          }
          auto ifOp = scf::IfOp::create(
              rewriter, loc, ok,
              [&](OpBuilder &, Location) {
                scf::YieldOp::create(rewriter, loc,
                                     b.loadF(a, {token, b.add(kBegin, kk)}));
              },
              [&](OpBuilder &, Location) {
                scf::YieldOp::create(rewriter, loc, b.flt(0.0));
              });
          staged.push_back(ifOp.getResult(0));
        }
      } else {
        // The hidden activations: the first GEMM's partials summed over its
        // splits (in split order), plus biases, through the activation. Out
        // of range elements read a valid element (row rowStart, K row kBegin)
        // and are replaced by zero.
        int64_t upMatrices = cast<MemRefType>(a.getType()).getDimSize(2);
        Value upSplits = b.dim(a, 0);
        SmallVector<Value> rowIn, kIn, oks;
        for (int64_t j = 0; j < perThread; ++j) {
          auto [row, kk, ok] = element(j);
          rowIn.push_back(b.select(ok, row, rowStart));
          kIn.push_back(b.select(ok, b.add(kBegin, kk), kBegin));
          oks.push_back(ok);
        }
        SmallVector<Value> init(perThread * upMatrices, b.flt(0.0));
        SmallVector<Value> sums =
            b.loop(c0, upSplits, c1, init, [&](Value s, ValueRange acc) {
              SmallVector<Value> next;
              for (int64_t j = 0; j < perThread; ++j)
                for (int64_t m = 0; m < upMatrices; ++m)
                  next.push_back(b.loadF(a, {s, rowIn[j], b.idx(m), kIn[j]}));
              for (int64_t i = 0, e = next.size(); i < e; ++i)
                next[i] = b.add(acc[i], next[i]);
              return next;
            });
        for (int64_t j = 0; j < perThread; ++j) {
          Value u = sums[j * upMatrices];
          if (upBias)
            u = b.add(u, biasAt(upBias, kIn[j]));
          Value g;
          if (upMatrices == 2) {
            g = sums[j * upMatrices + 1];
            if (gateBias)
              g = b.add(g, biasAt(gateBias, kIn[j]));
          }
          Value h = buildExpertHidden(rewriter, loc, spec.expert, g, u);
          // f16/bf16 hidden rows are rounded to the element type once, as the
          // tensor-core path stores them (and as PyTorch computes them).
          if (useTensorCores(elementType))
            h = b.convertFloat(b.convertFloat(h, elementType), ct);
          staged.push_back(b.select(oks[j], h, b.flt(0.0)));
        }
      }
      for (int64_t j = 0; j < perThread; ++j)
        memref::StoreOp::create(
            rewriter, loc, staged[j], aTile,
            ValueRange{b.idx(j / perRow), std::get<1>(element(j))});
      b.barrier();
    };

    // Rounds of `unroll` weight rows per slice and matrix: an iteration does
    // the FMAs of one round, then issues all loads of the next. K rows past
    // the split read the split's last row and count as zero (as does their A
    // value), so the loads stay in bounds and need no branch. The first
    // round's loads are issued before A is staged (they do not depend on
    // it), so that the staging's latency hides behind them.
    int64_t vec = plan.vec;
    VectorType vecType = VectorType::get({vec}, elementType);
    uint64_t alignment = vec * elementType.getIntOrFloatBitWidth() / 8;
    auto accIndex = [&](int64_t m, int64_t r, int64_t v) {
      return (m * rowsPerGroup + r) * vec + v;
    };
    Value rounds = b.ceilDiv(kLen, plan.round);
    // Row `u` of round `q` of this thread's slice: its K index, clamped into
    // the split, and whether it is inside.
    auto roundRow = [&](Value q, int64_t u) {
      Value k = b.add(b.add(b.add(kBegin, b.mul(q, b.idx(plan.round))), slice),
                      b.idx(u * plan.slices));
      return std::make_pair(b.minI(k, b.sub(kEnd, c1)), b.lt(k, kEnd));
    };
    // The weight loads of round `q`: per row u and matrix m, one vector
    // (`vectorized`: aligned vector loads) or `vec` elements.
    auto loadRound = [&](Value q, bool vectorized) {
      SmallVector<Value> loaded;
      for (int64_t u = 0; u < plan.unroll; ++u) {
        Value k = roundRow(q, u).first;
        for (Value w : weights) {
          SmallVector<Value> indices = {k, colIn};
          if (spec.grouped)
            indices.insert(indices.begin(), weightExpert);
          if (vectorized) {
            loaded.push_back(vector::LoadOp::create(
                rewriter, loc, vecType, w, indices, /*nontemporal=*/false,
                llvm::MaybeAlign(alignment)));
            continue;
          }
          for (int64_t j = 0; j < vec; ++j) {
            indices.back() = b.add(colIn, b.idx(j));
            loaded.push_back(memref::LoadOp::create(rewriter, loc, w, indices));
          }
        }
      }
      return loaded;
    };
    // Element v of matrix m's row u in `loaded`.
    auto loadedAt = [&](ValueRange loaded, bool vectorized, int64_t u,
                        int64_t m, int64_t v) {
      int64_t perLoad = vectorized ? 1 : vec;
      int64_t slot = (u * numMatrices + m) * perLoad;
      if (vectorized)
        return Value(vector::ExtractOp::create(rewriter, loc, loaded[slot], v));
      return loaded[slot + v];
    };
    auto fmaRound = [&](Value q, ValueRange loaded, bool vectorized,
                        ValueRange accIn) {
      SmallVector<Value> next(accIn.begin(), accIn.end());
      for (int64_t u = 0; u < plan.unroll; ++u) {
        auto [k, kOk] = roundRow(q, u);
        Value kk = b.sub(k, kBegin);
        SmallVector<Value> av;
        for (int64_t r = 0; r < rowsPerGroup; ++r) {
          Value v = memref::LoadOp::create(rewriter, loc, aTile,
                                           ValueRange{b.idx(r), kk});
          av.push_back(b.select(kOk, v, b.flt(0.0)));
        }
        for (int64_t m = 0; m < numMatrices; ++m)
          for (int64_t v = 0; v < vec; ++v) {
            Value w = b.select(
                kOk, b.convertFloat(loadedAt(loaded, vectorized, u, m, v), ct),
                b.flt(0.0));
            for (int64_t r = 0; r < rowsPerGroup; ++r) {
              Value &sum = next[accIndex(m, r, v)];
              sum = b.add(sum, b.mul(av[r], w));
            }
          }
      }
      return next;
    };
    int64_t numAcc = numMatrices * rowsPerGroup * vec;
    auto mainLoop = [&](bool vectorized) {
      SmallVector<Value> init(numAcc, b.flt(0.0));
      append_range(init, loadRound(c0, vectorized));
      stageA();
      // The last iteration reloads the last round (from cache) rather than
      // branch: a branch would join the pending loads' registers with the
      // carried ones, and the moves at the join wait for the loads (run 9 on
      // an H200: the up kernel at T = 1 went from 19 to 28 us).
      Value last = b.sub(rounds, c1);
      SmallVector<Value> out =
          b.loop(c0, rounds, c1, init, [&](Value q, ValueRange carried) {
            SmallVector<Value> next =
                fmaRound(q, carried.drop_front(numAcc), vectorized,
                         carried.take_front(numAcc));
            append_range(next,
                         loadRound(b.minI(b.add(q, c1), last), vectorized));
            return next;
          });
      out.resize(numAcc);
      return out;
    };
    SmallVector<Value> acc;
    if (vec == 1) {
      acc = mainLoop(/*vectorized=*/false);
    } else {
      // Whether every weight buffer is aligned to the vector, the same for
      // every thread. Device allocations are 256-byte aligned, so this only
      // fails for unusual views, which then take the element loads.
      Value aligned = b.boolean(true);
      for (Value w : weights)
        aligned = b.andI(aligned, b.isAligned(w, alignment));
      auto ifOp = scf::IfOp::create(
          rewriter, loc, aligned,
          [&](OpBuilder &, Location) {
            scf::YieldOp::create(rewriter, loc, mainLoop(true));
          },
          [&](OpBuilder &, Location) {
            scf::YieldOp::create(rewriter, loc, mainLoop(false));
          });
      acc.assign(ifOp.getResults().begin(), ifOp.getResults().end());
    }

    // Sum the slices of a warp (`lanes`, 2 `lanes`, ... lanes apart: the same
    // columns), then the warps in order through workgroup memory.
    for (Value &sum : acc)
      sum = warpReduce(
          b, sum, [&](Value x, Value y) { return b.add(x, y); }, plan.lanes);
    b.ifThen(b.lt(lane, b.idx(plan.lanes)), [&] {
      for (int64_t m = 0; m < numMatrices; ++m)
        for (int64_t r = 0; r < rowsPerGroup; ++r)
          for (int64_t v = 0; v < vec; ++v)
            memref::StoreOp::create(
                rewriter, loc, acc[accIndex(m, r, v)], red,
                ValueRange{warp, b.idx(m), b.idx(r),
                           b.add(b.mul(colLane, b.idx(vec)), b.idx(v))});
    });
    b.barrier();
    int64_t outputs = numMatrices * rowsPerGroup * plan.cols;
    for (int64_t base = 0; base < outputs; base += kSkinnyThreads) {
      Value o = b.add(tid, b.idx(base));
      Value c = b.rem(o, b.idx(plan.cols));
      Value r = b.rem(b.div(o, b.idx(plan.cols)), b.idx(rowsPerGroup));
      Value m = b.div(o, b.idx(plan.cols * rowsPerGroup));
      Value row = b.add(rowStart, r);
      Value outCol = b.add(b.mul(strip, b.idx(plan.cols)), c);
      Value ok = b.andI(b.lt(row, rowEnd), b.lt(outCol, b.idx(plan.n)));
      if (outputs - base < kSkinnyThreads)
        ok = b.andI(ok, b.lt(o, b.idx(outputs)));
      b.ifThen(ok, [&] {
        Value sum =
            memref::LoadOp::create(rewriter, loc, red, ValueRange{c0, m, r, c});
        for (int64_t w = 1; w < numWarps; ++w)
          sum =
              b.add(sum, memref::LoadOp::create(rewriter, loc, red,
                                                ValueRange{b.idx(w), m, r, c}));
        if (spec.first) {
          memref::StoreOp::create(rewriter, loc, sum, partial,
                                  ValueRange{split, row, m, outCol});
          return;
        }
        if (downBias) {
          Value withBias = b.add(sum, biasAt(downBias, outCol));
          sum = b.select(b.cmpI(arith::CmpIPredicate::eq, split, c0), withBias,
                         sum);
        }
        memref::StoreOp::create(rewriter, loc, sum, partial,
                                ValueRange{split, row, outCol});
      });
    }
  });
  return kernel;
}

/// Builds the last step of the skinny path: one thread per output element
/// sums the down partials over the splits in order, applies the row scale
/// and writes the rows that hold a token (for grouped GEMMs: rows of this
/// op's experts whose token index is not -1, and of placed experts only
/// those with a slot). Arguments: grouped: tokens, offsets, [slots]; partial,
/// [row scale], out.
static Kernel buildSkinnyReduceKernel(RewriterBase &rewriter, Operation *op,
                                      StringRef name, const GemmSpec &spec,
                                      TypeRange argTypes, Type ct) {
  Location loc = op->getLoc();
  Kernel kernel = createKernel(rewriter, op, name, argTypes, {}, kThreads);
  KernelBuilder b{rewriter, loc, ct};
  auto it = kernel.args.begin();
  Value tokens = spec.grouped ? *it++ : Value();
  Value offsets = spec.grouped ? *it++ : Value();
  Value slots = spec.grouped && spec.slotted ? *it++ : Value();
  Value partial = *it++;
  Value rowScale = spec.hasRowScale ? *it++ : Value();
  Value out = *it++;
  Value c0 = b.idx(0);
  Value row = b.blockId(gpu::Dimension::y);
  Value col =
      b.add(b.mul(b.blockId(gpu::Dimension::x), b.idx(kThreads)), b.threadId());
  Value ok = b.lt(col, b.idx(spec.n));
  if (spec.grouped) {
    // Rows outside this op's experts keep what `dest` put there.
    Value lo = b.loadI(offsets, {b.idx(spec.firstExpert)});
    Value hi = b.loadI(offsets, {b.idx(spec.firstExpert + spec.numExperts)});
    Value token = b.loadI(tokens, {row});
    ok = b.andI(
        ok, b.andI(b.cmpI(arith::CmpIPredicate::sge, row, lo), b.lt(row, hi)));
    ok = b.andI(ok, b.cmpI(arith::CmpIPredicate::sge, token, c0));
    if (slots) {
      // Placed experts: only the rows of experts in this batch (with a
      // slot); the row's expert is the number of experts that end at or
      // before it.
      Value expert =
          b.loop(c0, b.idx(spec.numExperts), b.idx(1), {c0},
                 [&](Value e, ValueRange st) {
                   Value end = b.loadI(offsets,
                                       {b.add(e, b.idx(spec.firstExpert + 1))});
                   Value before = b.cmpI(arith::CmpIPredicate::sle, end, row);
                   return SmallVector<Value>{
                       b.add(st[0], b.select(before, b.idx(1), c0))};
                 })[0];
      Value slot = b.loadI(slots, {b.minI(expert, b.idx(spec.numExperts - 1))});
      ok = b.andI(ok, b.cmpI(arith::CmpIPredicate::sge, slot, c0));
    }
  }
  b.ifThen(ok, [&] {
    Value y = emitSumOverSplits(b, b.dim(partial, 0), [&](Value s) {
      return b.loadF(partial, {s, row, col});
    });
    if (rowScale)
      y = b.mul(y, b.loadF(rowScale, {row}));
    b.storeF(y, out, {row, col});
  });
  return kernel;
}

/// Emits the skinny path of an FFN (see above) into `outBuf`: host code that
/// picks the K splits of both GEMMs from the row count, the partial-sum
/// buffers and the three launches. Where `enabled` is false at run time the
/// grids and the buffers are empty.
static void emitSkinnyFfn(RewriterBase &rewriter, Operation *op,
                          const Host &host, GemmSpec spec, Value tokensBuf,
                          Value offsetsBuf, Value slotsBuf, Value inputBuf,
                          Value gateBuf, Value upBuf, Value downBuf,
                          Value gateBiasBuf, Value upBiasBuf, Value downBiasBuf,
                          Value rowScaleBuf, Value outBuf, Value numRows,
                          Value enabled) {
  Location loc = op->getLoc();
  Type elementType = cast<MemRefType>(inputBuf.getType()).getElementType();
  Type ct = computeType(elementType);
  auto upType = cast<MemRefType>(upBuf.getType());
  int64_t hidden = upType.getDimSize(upType.getRank() - 2);
  int64_t ffn = upType.getDimSize(upType.getRank() - 1);
  int64_t upMatrices = spec.gated ? 2 : 1;
  auto weightType = [](Value w) {
    return cast<MemRefType>(w.getType()).getElementType();
  };
  SkinnyPlan upPlan = planSkinny(hidden, ffn, weightType(upBuf), upMatrices);
  SkinnyPlan downPlan = planSkinny(ffn, hidden, weightType(downBuf), 1);
  KernelBuilder hb{rewriter, loc, ct};

  // Row groups: for grouped GEMMs sum_e ceil(rows_e / R) <= rows / R + the
  // experts with rows, of which there are at most min(E, rows).
  Value groups = hb.ceilDiv(numRows, kSkinnyRows);
  if (spec.grouped)
    groups = hb.add(hb.div(numRows, hb.idx(kSkinnyRows)),
                    hb.minI(numRows, hb.idx(spec.numExperts)));
  // K rows per split: as many splits as keep the grid within one wave of
  // kSkinnyTargetBlocks blocks (at least one; a second, partial wave would
  // take as long as the first), within the plan's chunk bounds; then as few
  // splits as cover K.
  auto ceilDiv = [&](Value x, Value y) -> Value {
    return arith::CeilDivUIOp::create(rewriter, loc, x, y);
  };
  auto chooseChunk = [&](const SkinnyPlan &plan) {
    Value perSplit = hb.mul(hb.maxI(groups, hb.idx(1)), hb.idx(plan.strips));
    int64_t maxSplits = (plan.k + plan.minChunk - 1) / plan.minChunk;
    Value wanted = hb.minI(
        hb.maxI(hb.div(hb.idx(kSkinnyTargetBlocks), perSplit), hb.idx(1)),
        hb.idx(maxSplits));
    Value chunk =
        hb.mul(hb.ceilDiv(ceilDiv(hb.idx(plan.k), wanted), plan.round),
               hb.idx(plan.round));
    chunk = hb.minI(chunk, hb.idx(plan.maxChunk));
    return std::make_pair(chunk, ceilDiv(hb.idx(plan.k), chunk));
  };
  auto [upChunk, upSplits] = chooseChunk(upPlan);
  auto [downChunk, downSplits] = chooseChunk(downPlan);

  // Both partial-sum buffers in one allocation (device allocations and
  // frees are costly next to decode-sized kernels).
  Value zero = hb.idx(0);
  Value rows = hb.select(enabled, numRows, zero);
  int64_t ctBytes = ct.getIntOrFloatBitWidth() / 8;
  Value upBytes =
      hb.mul(hb.mul(upSplits, rows), hb.idx(upMatrices * ffn * ctBytes));
  Value downBytes = hb.mul(hb.mul(downSplits, rows), hb.idx(hidden * ctBytes));
  Value scratch =
      host.alloc(MemRefType::get({ShapedType::kDynamic}, rewriter.getI8Type()),
                 hb.add(upBytes, downBytes));
  Value upPartial = memref::ViewOp::create(
      rewriter, loc,
      MemRefType::get(
          {ShapedType::kDynamic, ShapedType::kDynamic, upMatrices, ffn}, ct),
      scratch, zero, ValueRange{upSplits, rows});
  Value downPartial = memref::ViewOp::create(
      rewriter, loc,
      MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic, hidden}, ct),
      scratch, upBytes, ValueRange{downSplits, rows});
  groups = hb.select(enabled, groups, zero);

  SmallVector<Value> firstArgs =
      present({tokensBuf, offsetsBuf, slotsBuf, inputBuf, gateBuf, upBuf,
               upPartial, upChunk});
  SmallVector<Value> secondArgs =
      present({tokensBuf, offsetsBuf, slotsBuf, upPartial, gateBiasBuf,
               upBiasBuf, downBuf, downBiasBuf, downPartial, downChunk});
  SmallVector<Value> reduceArgs = present(
      {tokensBuf, offsetsBuf, slotsBuf, downPartial, rowScaleBuf, outBuf});
  Kernel first, second, reduce;
  {
    OpBuilder::InsertionGuard guard(rewriter);
    StringRef prefix = spec.grouped ? "moe_experts" : "moe_shared";
    spec.first = true;
    spec.k = hidden;
    spec.n = ffn;
    first = buildSkinnyGemmKernel(rewriter, op, (prefix + "_up_skinny").str(),
                                  spec, upPlan, typesOf(firstArgs), ct);
    spec.first = false;
    spec.k = ffn;
    spec.n = hidden;
    second =
        buildSkinnyGemmKernel(rewriter, op, (prefix + "_down_skinny").str(),
                              spec, downPlan, typesOf(secondArgs), ct);
    reduce =
        buildSkinnyReduceKernel(rewriter, op, (prefix + "_down_reduce").str(),
                                spec, typesOf(reduceArgs), ct);
  }
  host.launch(first, hb.idx(upPlan.strips), upSplits, kSkinnyThreads, 1,
              firstArgs, groups);
  host.launch(second, hb.idx(downPlan.strips), downSplits, kSkinnyThreads, 1,
              secondArgs, groups);
  host.launch(reduce, hb.idx((hidden + kThreads - 1) / kThreads), rows,
              kThreads, 1, reduceArgs);
  host.dealloc(scratch);
}

/// Emits the tiled path of an FFN into `outBuf`: the two GEMMs through a
/// buffer of hidden rows. f16 and bf16 use the tensor-core GEMMs with hidden
/// rows in the element type (rounded once, as PyTorch does, so that the second
/// GEMM's A tile is staged as is); f32 and f64 the register-blocked SIMT
/// GEMMs with hidden rows in the compute type. Where `enabled` is false at run
/// time the grids and the buffer are empty.
static void emitTiledFfn(RewriterBase &rewriter, Operation *op,
                         const Host &host, GemmSpec spec, Value tokensBuf,
                         Value offsetsBuf, Value slotsBuf, Value inputBuf,
                         Value gateBuf, Value upBuf, Value downBuf,
                         Value gateBiasBuf, Value upBiasBuf, Value downBiasBuf,
                         Value rowScaleBuf, Value outBuf, Value numRows,
                         Value enabled) {
  Location loc = op->getLoc();
  Type elementType = cast<MemRefType>(inputBuf.getType()).getElementType();
  Type ct = computeType(elementType);
  auto upType = cast<MemRefType>(upBuf.getType());
  int64_t hidden = upType.getDimSize(upType.getRank() - 2);
  int64_t ffn = upType.getDimSize(upType.getRank() - 1);
  KernelBuilder hb{rewriter, loc, ct};
  bool mma = useTensorCores(elementType);

  Value hiddenBuf = host.alloc(
      MemRefType::get({ShapedType::kDynamic, ffn}, mma ? elementType : ct),
      hb.select(enabled, numRows, hb.idx(0)));

  SmallVector<Value> firstArgs =
      present({tokensBuf, offsetsBuf, slotsBuf, inputBuf, gateBuf, upBuf,
               gateBiasBuf, upBiasBuf, hiddenBuf});
  SmallVector<Value> secondArgs =
      present({tokensBuf, offsetsBuf, slotsBuf, hiddenBuf, downBuf, downBiasBuf,
               rowScaleBuf, outBuf});
  // Tensor-core GEMMs are pipelined with cp.async where every 16-byte copy
  // is all inside a matrix row or all outside (K and N multiples of 8) and,
  // chosen at run time, the operands are 16-byte aligned; a kernel with
  // register staging (`_unaligned`) takes the rest.
  bool pipelined = mma && hidden % kVector == 0 && ffn % kVector == 0;
  // The SIMT GEMMs come in two tile shapes (simtGemmShape): the narrow one
  // for a few dozen rows per expert. The pipelined tensor-core GEMMs without
  // a gate too (kMmaSmall, kMmaLarge): the large one from
  // kMmaLargeRowsPerExpert rows per expert.
  bool narrowed = !mma;
  bool large = pipelined;
  bool largeFirst = large && !spec.gated;
  Kernel first, second, firstUnaligned, secondUnaligned, firstNarrow,
      secondNarrow, firstLarge, secondLarge;
  {
    OpBuilder::InsertionGuard guard(rewriter);
    auto build = [&](StringRef name, TypeRange argTypes, bool async,
                     bool narrow = false) {
      if (mma)
        return buildMmaGemmKernel(rewriter, op, name, spec, argTypes,
                                  elementType, async);
      return buildGemmKernel(rewriter, op, name, spec, argTypes, ct,
                             simtGemmShape(ct, narrow));
    };
    auto buildLarge = [&](StringRef name, TypeRange argTypes) {
      return buildMmaGemmKernel(rewriter, op, (name + "_large").str(), spec,
                                argTypes, elementType, /*pipelined=*/true,
                                kMmaLarge);
    };
    spec.first = true;
    spec.k = hidden;
    spec.n = ffn;
    StringRef firstName = spec.grouped ? "moe_experts_up" : "moe_shared_up";
    first = build(firstName, typesOf(firstArgs), pipelined);
    if (pipelined)
      firstUnaligned =
          build((firstName + "_unaligned").str(), typesOf(firstArgs), false);
    if (narrowed)
      firstNarrow = build((firstName + "_narrow").str(), typesOf(firstArgs),
                          false, /*narrow=*/true);
    if (largeFirst)
      firstLarge = buildLarge(firstName, typesOf(firstArgs));
    spec.first = false;
    spec.k = ffn;
    spec.n = hidden;
    StringRef secondName =
        spec.grouped ? "moe_experts_down" : "moe_shared_down";
    second = build(secondName, typesOf(secondArgs), pipelined);
    if (pipelined)
      secondUnaligned =
          build((secondName + "_unaligned").str(), typesOf(secondArgs), false);
    if (narrowed)
      secondNarrow = build((secondName + "_narrow").str(), typesOf(secondArgs),
                           false, /*narrow=*/true);
    if (large)
      secondLarge = buildLarge(secondName, typesOf(secondArgs));
  }

  // Row tiles: for grouped GEMMs every expert may end with a partial tile.
  SimtGemmShape simt = simtGemmShape(ct);
  int64_t tileRows = mma ? kMmaSmall.tileM : simt.tileM;
  int64_t tileCols = mma ? kMmaSmall.tileN : simt.tileN;
  int64_t blockX = mma ? kMmaSmall.threads() : kSimtThreads;
  // Row tiles of `tileM` rows: an upper bound for grouped GEMMs.
  auto countRowTiles = [&](int64_t tileM) {
    Value tiles = hb.ceilDiv(numRows, tileM);
    if (spec.grouped)
      tiles = hb.add(tiles, hb.idx(spec.numExperts));
    return tiles;
  };
  Value rowTiles = hb.select(enabled, countRowTiles(tileRows), hb.idx(0));
  Value unalignedRowTiles;
  if (pipelined) {
    // Empty grids for the variant not taken (no scf.if; see emitFfn).
    Value aligned = hb.boolean(true);
    for (Value buf : present({inputBuf, gateBuf, upBuf, downBuf}))
      aligned = hb.andI(aligned, hb.isAligned(buf, kVectorBytes));
    unalignedRowTiles = hb.select(aligned, hb.idx(0), rowTiles);
    rowTiles = hb.select(aligned, rowTiles, hb.idx(0));
  }
  Value largeRowTiles, firstRowTiles = rowTiles;
  if (large) {
    // Empty grids for the shape not taken, as for the alignment above.
    int64_t largeRows = spec.grouped ? kMmaLargeRowsPerExpert * spec.numExperts
                                     : kMmaLargeDenseRows;
    Value useLarge =
        hb.cmpI(arith::CmpIPredicate::uge, numRows, hb.idx(largeRows));
    Value taken = hb.cmpI(arith::CmpIPredicate::ugt, rowTiles, hb.idx(0));
    largeRowTiles = hb.select(hb.andI(taken, useLarge),
                              countRowTiles(kMmaLarge.tileM), hb.idx(0));
    rowTiles = hb.select(useLarge, hb.idx(0), rowTiles);
    if (largeFirst)
      firstRowTiles = rowTiles;
  }
  Value narrowRowTiles;
  SimtGemmShape narrow = simtGemmShape(ct, /*narrow=*/true);
  if (narrowed) {
    // Empty grids for the shape not taken, as for the alignment above.
    int64_t narrowRows = spec.grouped ? kNarrowRowsPerExpert * spec.numExperts
                                      : kNarrowDenseRows;
    Value useNarrow =
        hb.cmpI(arith::CmpIPredicate::ule, numRows, hb.idx(narrowRows));
    Value tiles = countRowTiles(narrow.tileM);
    narrowRowTiles = hb.select(hb.andI(enabled, useNarrow), tiles, hb.idx(0));
    rowTiles = hb.select(useNarrow, hb.idx(0), rowTiles);
    firstRowTiles = rowTiles;
  }
  Value firstCols = hb.idx(llvm::divideCeil(ffn, tileCols));
  Value secondCols = hb.idx(llvm::divideCeil(hidden, tileCols));
  host.launch(first, firstRowTiles, firstCols, blockX, 1, firstArgs);
  if (pipelined)
    host.launch(firstUnaligned, unalignedRowTiles, firstCols, blockX, 1,
                firstArgs);
  if (narrowed)
    host.launch(firstNarrow, narrowRowTiles,
                hb.idx(llvm::divideCeil(ffn, narrow.tileN)), blockX, 1,
                firstArgs);
  if (largeFirst)
    host.launch(firstLarge, largeRowTiles,
                hb.idx(llvm::divideCeil(ffn, kMmaLarge.tileN)),
                kMmaLarge.threads(), 1, firstArgs);
  host.launch(second, rowTiles, secondCols, blockX, 1, secondArgs);
  if (pipelined)
    host.launch(secondUnaligned, unalignedRowTiles, secondCols, blockX, 1,
                secondArgs);
  if (narrowed)
    host.launch(secondNarrow, narrowRowTiles,
                hb.idx(llvm::divideCeil(hidden, narrow.tileN)), blockX, 1,
                secondArgs);
  if (large)
    host.launch(secondLarge, largeRowTiles,
                hb.idx(llvm::divideCeil(hidden, kMmaLarge.tileN)),
                kMmaLarge.threads(), 1, secondArgs);
  host.dealloc(hiddenBuf);
}

/// Emits the kernels and launches of an FFN into `outBuf`: the row-scale
/// kernel when there is a scale, then, chosen at run time from the row
/// count, the skinny path (few rows per expert: decode) or the tiled one.
static void emitFfn(RewriterBase &rewriter, Operation *op, const Host &host,
                    GemmSpec spec, Value tokensBuf, Value offsetsBuf,
                    Value slotsBuf, Value inputBuf, Value gateBuf, Value upBuf,
                    Value downBuf, Value gateBiasBuf, Value upBiasBuf,
                    Value downBiasBuf, Value scaleBuf, Value outBuf,
                    Value numRows) {
  Location loc = op->getLoc();
  Type elementType = cast<MemRefType>(inputBuf.getType()).getElementType();
  Type ct = computeType(elementType);
  KernelBuilder hb{rewriter, loc, ct};

  Value rowScaleBuf;
  if (scaleBuf) {
    rowScaleBuf =
        host.alloc(MemRefType::get({ShapedType::kDynamic}, ct), numRows);
    Kernel scale;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      scale = buildRowScaleKernel(
          rewriter, op,
          {inputBuf.getType(), scaleBuf.getType(), rowScaleBuf.getType()}, ct);
    }
    host.launch(scale, hb.ceilDiv(numRows, kThreads), hb.idx(1), kThreads, 1,
                {inputBuf, scaleBuf, rowScaleBuf});
  }

  // The row count is only known at run time, so both paths are emitted and
  // the one not taken gets empty grids (the runtime launches nothing) and
  // empty buffers. Not an scf.if: gpu-async-region makes the host wait for
  // the stream around every region that holds GPU work, a blocking
  // synchronization in the middle of the layer.
  int64_t skinnyRows =
      spec.grouped ? kSkinnyRowsPerExpert * spec.numExperts : kSkinnyDenseRows;
  Value skinny =
      hb.cmpI(arith::CmpIPredicate::ule, numRows, hb.idx(skinnyRows));
  emitSkinnyFfn(rewriter, op, host, spec, tokensBuf, offsetsBuf, slotsBuf,
                inputBuf, gateBuf, upBuf, downBuf, gateBiasBuf, upBiasBuf,
                downBiasBuf, rowScaleBuf, outBuf, numRows, skinny);
  emitTiledFfn(rewriter, op, host, spec, tokensBuf, offsetsBuf, slotsBuf,
               inputBuf, gateBuf, upBuf, downBuf, gateBiasBuf, upBiasBuf,
               downBiasBuf, rowScaleBuf, outBuf, numRows,
               arith::XOrIOp::create(rewriter, loc, skinny, hb.boolean(true)));
  if (rowScaleBuf)
    host.dealloc(rowScaleBuf);
}

namespace {
/// A grouped GEMM pair over the permuted rows: the first GEMM gathers the
/// input rows through the token indices and fuses the (gated) activation in
/// its epilogue; the second writes the rows that hold a token. Rows of
/// `dest` that no expert of the op owns are copied from `dest`.
struct ExpertsOpLowering : public OpConversionPattern<ExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(ExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    Value inputBuf = host.buffer(adaptor.getInput());
    Value tokensBuf = host.buffer(adaptor.getTokenIndices());
    Value offsetsBuf = host.buffer(adaptor.getExpertOffsets());
    auto resultType = op.getResult().getType();
    Value numRows = memref::DimOp::create(rewriter, loc, tokensBuf, 0);
    Value outBuf = host.rowsInto(resultType, numRows, adaptor.getDest());

    GemmSpec spec;
    spec.grouped = true;
    spec.gated = op.getExpert().isGated();
    spec.hasGateBias = adaptor.getGateBias() != nullptr;
    spec.hasUpBias = adaptor.getUpBias() != nullptr;
    spec.hasDownBias = adaptor.getDownBias() != nullptr;
    spec.firstExpert = op.getFirstExpert();
    spec.numExperts = op.getNumExperts();
    spec.expert = op.getExpert();
    Value gateBuf = host.buffer(adaptor.getGate());
    Value upBuf = host.buffer(adaptor.getUp());
    Value downBuf = host.buffer(adaptor.getDown());
    Value gateBiasBuf = host.buffer(adaptor.getGateBias());
    Value upBiasBuf = host.buffer(adaptor.getUpBias());
    Value downBiasBuf = host.buffer(adaptor.getDownBias());
    auto ffn = [&](Value slotsBuf) {
      emitFfn(rewriter, op, host, spec, tokensBuf, offsetsBuf, slotsBuf,
              inputBuf, gateBuf, upBuf, downBuf, gateBiasBuf, upBiasBuf,
              downBiasBuf, Value(), outBuf, numRows);
    };
    if (PlacementAttr placement = op.getPlacementAttr()) {
      spec.slotted = true;
      emitPlacedBatches(rewriter, host, op, placement.getLayer(),
                        adaptor.getExpertOffsets(), ffn);
    } else {
      ffn(Value());
    }
    rewriter.replaceOp(op, host.tensor(resultType, outBuf));
    return success();
  }

  /// Whether expert `global` has rows in `hostOffsets`.
  static Value hasRows(const KernelBuilder &b, Value hostOffsets,
                       Value global) {
    Value start = b.loadI(hostOffsets, {global});
    Value end = b.loadI(hostOffsets, {b.add(global, b.idx(1))});
    return b.cmpI(arith::CmpIPredicate::sgt, end, start);
  }

  /// Calls `body(local, global)` on the host for each expert of `op` in
  /// `[from, to)` (local indices) with rows in `hostOffsets`.
  static void forEachExpertWithRows(RewriterBase &rewriter, ExpertsOp op,
                                    Value hostOffsets, Value from, Value to,
                                    function_ref<void(Value, Value)> body) {
    KernelBuilder b{rewriter, op.getLoc(), Type()};
    b.loop(from, to, b.idx(1), [&](Value local) {
      Value global = b.add(local, b.idx(op.getFirstExpert()));
      b.ifThen(hasRows(b, hostOffsets, global), [&] { body(local, global); });
    });
  }

  /// A placed layer (docs/ExpertCache.md). The offsets go to the host (which
  /// waits for the routing and dispatch kernels) and every expert with rows
  /// is prefetched. Then, in batches: experts are acquired in order until
  /// the cache has no free slot (acquire returns -1), their slots go to the
  /// device (-1 for the other experts), `ffn(slots)` launches the GEMMs,
  /// which compute only the rows of experts with a slot, reading expert
  /// `e`'s weights from slot `slots[e]`, and the batch's experts are
  /// released (the runtime reuses a slot only after the work queued before
  /// its release). One batch when the slots hold every expert with rows.
  static void emitPlacedBatches(RewriterBase &rewriter, const Host &host,
                                ExpertsOp op, int64_t layerId, Value offsets,
                                function_ref<void(Value)> ffn) {
    Location loc = op.getLoc();
    KernelBuilder b{rewriter, loc, Type()};
    Type i64 = rewriter.getI64Type();
    Value layer = arith::ConstantOp::create(
        rewriter, loc, rewriter.getI64IntegerAttr(layerId));
    Value c0 = b.idx(0), c1 = b.idx(1);
    Value numExperts = b.idx(op.getNumExperts());
    Value hostOffsets = host.hostCopy(offsets);
    // Every load is queued before the first acquire waits for one.
    forEachExpertWithRows(
        rewriter, op, hostOffsets, c0, numExperts, [&](Value, Value global) {
          callRuntimeHook(rewriter, loc, kPrefetchHook, {layer, global});
        });
    auto slotsType =
        MemRefType::get({op.getNumExperts()}, rewriter.getI32Type());
    auto hostSlotsOp = memref::AllocOp::create(rewriter, loc, slotsType);
    hostSlotsOp->setAttr(kHostBufferAttrName, rewriter.getUnitAttr());
    Value hostSlots = hostSlotsOp;
    Value slots = host.alloc(slotsType, {});

    Type indexType = rewriter.getIndexType();
    auto loop = scf::WhileOp::create(rewriter, loc, TypeRange{indexType},
                                     ValueRange{c0});
    {
      OpBuilder::InsertionGuard guard(rewriter);
      Block *before =
          rewriter.createBlock(&loop.getBefore(), {}, {indexType}, {loc});
      Value first = before->getArgument(0);
      scf::ConditionOp::create(rewriter, loc, b.lt(first, numExperts),
                               ValueRange{first});
      Block *after =
          rewriter.createBlock(&loop.getAfter(), {}, {indexType}, {loc});
      first = after->getArgument(0);
      b.loop(c0, numExperts, c1,
             [&](Value local) { b.storeI(b.idx(-1), hostSlots, {local}); });
      // Acquire from `first` on until one fails; `next` is the first expert
      // not acquired (it stays behind `local` once an acquire failed).
      Value next = b.loop(
          first, numExperts, c1, {first},
          [&](Value local, ValueRange st) -> SmallVector<Value> {
            Value going = b.cmpI(arith::CmpIPredicate::eq, st[0], local);
            Value global = b.add(local, b.idx(op.getFirstExpert()));
            auto ifOp = scf::IfOp::create(
                rewriter, loc, b.andI(going, hasRows(b, hostOffsets, global)),
                [&](OpBuilder &, Location) {
                  Value slot = callRuntimeHook(rewriter, loc, kAcquireHook,
                                               {layer, global}, i64)[0];
                  Value slotIndex = arith::IndexCastOp::create(rewriter, loc,
                                                               indexType, slot);
                  Value got = b.cmpI(arith::CmpIPredicate::sge, slotIndex, c0);
                  b.ifThen(got,
                           [&] { b.storeI(slotIndex, hostSlots, {local}); });
                  scf::YieldOp::create(
                      rewriter, loc,
                      ValueRange{b.select(got, b.add(local, c1), local)});
                },
                [&](OpBuilder &, Location) {
                  // No rows: skipped, unless an acquire failed before.
                  scf::YieldOp::create(
                      rewriter, loc,
                      ValueRange{b.select(going, b.add(local, c1), st[0])});
                });
            return {ifOp.getResult(0)};
          })[0];
      gpu::MemcpyOp::create(rewriter, loc, Type(), ValueRange{}, slots,
                            hostSlots);
      ffn(slots);
      forEachExpertWithRows(
          rewriter, op, hostOffsets, first, next, [&](Value, Value global) {
            callRuntimeHook(rewriter, loc, kReleaseHook, {layer, global});
          });
      // An acquire that failed with nothing acquired (the runtime reports
      // why) ends the loop rather than retrying forever.
      Value progressed = b.cmpI(arith::CmpIPredicate::ugt, next, first);
      scf::YieldOp::create(rewriter, loc,
                           ValueRange{b.select(progressed, next, numExperts)});
    }
    host.dealloc(slots);
    memref::DeallocOp::create(rewriter, loc, hostSlots);
    memref::DeallocOp::create(rewriter, loc, hostOffsets);
  }
};

/// Calls `body(token, id)` on the host for every entry `id >= 0` of the
/// `[T, k]` expert ids `ids` (copied to the host first).
static void forEachHostAssignment(RewriterBase &rewriter, const Host &host,
                                  Value ids,
                                  function_ref<void(Value, Value)> body) {
  KernelBuilder b{rewriter, host.loc, Type()};
  Value hostIds = host.hostCopy(ids);
  b.loop(b.idx(0), b.dim(hostIds, 0), b.idx(1), [&](Value t) {
    b.loop(b.idx(0), b.dim(hostIds, 1), b.idx(1), [&](Value j) {
      Value id = b.loadI(hostIds, {t, j});
      b.ifThen(b.cmpI(arith::CmpIPredicate::sge, id, b.idx(0)),
               [&] { body(t, id); });
    });
  });
  memref::DeallocOp::create(rewriter, host.loc, hostIds);
}

/// `moe.prefetch` and `moe.trace_routing`: the ids go to the host, which
/// hands each to the runtime: pre-gating predictions to the expert cache
/// (their copies then overlap the layer's GEMMs), routing decisions to the
/// profile.
template <typename OpT>
struct HostHookOpLowering : public OpConversionPattern<OpT> {
  using OpConversionPattern<OpT>::OpConversionPattern;
  using OpAdaptor = typename OpT::Adaptor;

  LogicalResult
  matchAndRewrite(OpT op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    auto i64 = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(rewriter, loc,
                                       rewriter.getI64IntegerAttr(v));
    };
    Value layer = i64(op.getLayer());
    Value experts;
    if constexpr (std::is_same_v<OpT, TraceRoutingOp>)
      experts = i64(op.getNumExperts());
    forEachHostAssignment(
        rewriter, host, adaptor.getExpertIds(), [&](Value t, Value id) {
          if (experts)
            callRuntimeHook(rewriter, loc, kTraceHook, {layer, experts, t, id});
          else
            callRuntimeHook(rewriter, loc, kPredictHook, {layer, id});
        });
    rewriter.eraseOp(op);
    return success();
  }
};

/// The dense FFN of the shared experts over every token, with the optional
/// `sigmoid(x·scale)` row factor applied in the second GEMM's epilogue.
struct SharedExpertsOpLowering : public OpConversionPattern<SharedExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(SharedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    Value inputBuf = host.buffer(adaptor.getInput());
    auto resultType = op.getResult().getType();
    Value numRows = memref::DimOp::create(rewriter, loc, inputBuf, 0);
    SmallVector<Value> dyn;
    if (resultType.isDynamicDim(0))
      dyn.push_back(numRows);
    Value outBuf = host.alloc(bufferType(resultType), dyn);
    GemmSpec spec;
    spec.gated = op.getExpert().isGated();
    spec.hasRowScale = adaptor.getScale() != nullptr;
    spec.expert = op.getExpert();
    emitFfn(rewriter, op, host, spec, Value(), Value(), Value(), inputBuf,
            host.buffer(adaptor.getGate()), host.buffer(adaptor.getUp()),
            host.buffer(adaptor.getDown()), Value(), Value(), Value(),
            host.buffer(adaptor.getScale()), outBuf, numRows);
    rewriter.replaceOp(op, host.tensor(resultType, outBuf));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Combine
//===----------------------------------------------------------------------===//

//===----------------------------------------------------------------------===//
// Quantized experts: warp-per-output GEMV over the packed codes
//===----------------------------------------------------------------------===//

/// Rows of an expert computed together by the quantized kernels: each code
/// read from memory is used for this many rows.
static constexpr int64_t kQuantRows = 4;
/// Warps per block of the quantized kernels (one output column each).
static constexpr int64_t kQuantWarps = kThreads / 32;

namespace {
/// What one quantized GEMM kernel computes (see buildQuantizedKernel).
struct QuantSpec {
  bool first = true;
  bool gated = false;
  bool hasGateBias = false, hasBias = false;
  /// Explicit zero points of the gate and of the up (first) or down
  /// (second) matrix.
  bool hasGateZeroPoints = false, hasZeroPoints = false;
  int64_t bits = 8;
  /// Output columns N, reduction K, and the reduction block of a scale
  /// (gate/up and down may differ).
  int64_t n = 0, k = 0, blockSize = 0;
  int64_t firstExpert = 0;
  ExpertAttr expert;
};
} // namespace

/// Builds a quantized grouped GEMM for `moe.quantized_experts`, shaped for
/// decode: grid x = the op's experts, grid y = output columns in groups of
/// kQuantWarps; a warp computes one output column n of one expert for the
/// expert's rows, kQuantRows at a time: its lanes stride over the packed
/// codes of weight row n (output-row major, so a warp reads consecutive
/// bytes), dequantize `s * (q - zp)` and accumulate, then a butterfly
/// shuffle reduction gives every lane the sums and lane 0 writes them
/// through the epilogue. Arguments: tokens, offsets, then first: input,
/// [gate codes, gate scales, [gate zero points]], up codes, up scales, [up
/// zero points], [gate bias], [up bias], hidden (f32); second: hidden, down
/// codes, down scales, [down zero points], [down bias], out.
static Kernel buildQuantizedKernel(RewriterBase &rewriter, Operation *op,
                                   StringRef name, const QuantSpec &spec,
                                   TypeRange argTypes, Type ct) {
  Location loc = op->getLoc();
  Kernel kernel = createKernel(rewriter, op, name, argTypes, {}, kThreads);
  KernelBuilder b{rewriter, loc, ct};
  auto it = kernel.args.begin();
  Value tokens = *it++, offsets = *it++, a = *it++;
  Value gateCodes, gateScales, gateZeroPoints;
  if (spec.first && spec.gated) {
    gateCodes = *it++;
    gateScales = *it++;
    if (spec.hasGateZeroPoints)
      gateZeroPoints = *it++;
  }
  Value codes = *it++, scales = *it++;
  Value zeroPoints = spec.hasZeroPoints ? *it++ : Value();
  Value gateBias = spec.first && spec.hasGateBias ? *it++ : Value();
  Value bias = spec.hasBias ? *it++ : Value();
  Value out = *it++;

  OpBuilder &ob = b.b;
  Type i32 = ob.getI32Type();
  Value c0 = b.idx(0), c1 = b.idx(1);
  // The op's weights hold its experts only: `expert` indexes them, the
  // offsets are indexed by the global expert id.
  Value expert = b.blockId(gpu::Dimension::x);
  Value global = b.add(expert, b.idx(spec.firstExpert));
  Value start = b.loadI(offsets, {global});
  Value end = b.loadI(offsets, {b.add(global, c1)});
  Value tid = b.threadId();
  Value warp = b.div(tid, b.idx(32)), lane = b.rem(tid, b.idx(32));
  Value n =
      b.add(b.mul(b.blockId(gpu::Dimension::y), b.idx(kQuantWarps)), warp);
  int64_t zeroPoint = int64_t(1) << (spec.bits - 1);
  int64_t codeBytes = spec.bits == 4 ? spec.k / 2 : spec.k;
  Value numRows = b.dim(tokens, 0);

  // The centered, scaled weight of reduction index k (from `byte`):
  // s * (q - zp), with the block's zero point from `zeroMem` if given.
  auto weightOf = [&](Value codesMem, Value scalesMem, Value zeroMem,
                      Value byteVal, bool highNibble, Value k) {
    Value v = arith::ExtUIOp::create(ob, loc, i32, byteVal);
    if (spec.bits == 4) {
      auto i32Const = [&](int64_t c) -> Value {
        return arith::ConstantOp::create(ob, loc, ob.getI32IntegerAttr(c));
      };
      if (highNibble)
        v = arith::ShRUIOp::create(ob, loc, v, i32Const(4));
      else
        v = arith::AndIOp::create(ob, loc, v, i32Const(0xF));
    }
    Value block = b.div(k, b.idx(spec.blockSize));
    Value w;
    if (zeroMem) {
      w = b.sub(arith::UIToFPOp::create(ob, loc, ct, v),
                b.loadF(zeroMem, {expert, n, block}));
    } else {
      Value centered = arith::SubIOp::create(
          ob, loc, v,
          arith::ConstantOp::create(ob, loc, ob.getI32IntegerAttr(zeroPoint)));
      w = arith::SIToFPOp::create(ob, loc, ct, centered);
    }
    Value scale = b.loadF(scalesMem, {expert, n, block});
    return b.mul(w, scale);
  };

  b.ifThen(b.lt(n, b.idx(spec.n)), [&] {
    b.loop(start, end, b.idx(kQuantRows), [&](Value r0) {
      // The rows of this group, their tokens and whether they hold one.
      SmallVector<Value> rows, srcRows, valid;
      for (int64_t i = 0; i < kQuantRows; ++i) {
        Value row = b.add(r0, b.idx(i));
        Value inRange = b.lt(row, end);
        Value clamped = b.minI(row, b.sub(numRows, c1));
        Value token = b.loadI(tokens, {clamped});
        Value has =
            b.andI(inRange, b.cmpI(arith::CmpIPredicate::sge, token, c0));
        rows.push_back(row);
        // The first GEMM reads the token's input row, the second the
        // hidden row itself.
        srcRows.push_back(spec.first ? b.maxI(token, c0) : clamped);
        valid.push_back(spec.first ? has : inRange);
      }
      int64_t numAcc = kQuantRows * (gateCodes ? 2 : 1);
      SmallVector<Value> inits(numAcc, b.flt(0.0));
      SmallVector<Value> acc = b.loop(
          lane, b.idx(codeBytes), b.idx(32), inits,
          [&](Value kb, ValueRange accs) {
            SmallVector<Value> next(accs.begin(), accs.end());
            Value byteU = memref::LoadOp::create(ob, loc, codes,
                                                 ValueRange{expert, n, kb});
            Value byteG;
            if (gateCodes)
              byteG = memref::LoadOp::create(ob, loc, gateCodes,
                                             ValueRange{expert, n, kb});
            int64_t perByte = spec.bits == 4 ? 2 : 1;
            for (int64_t half = 0; half < perByte; ++half) {
              Value k =
                  spec.bits == 4 ? b.add(b.mul(kb, b.idx(2)), b.idx(half)) : kb;
              Value wU =
                  weightOf(codes, scales, zeroPoints, byteU, half == 1, k);
              Value wG = gateCodes
                             ? weightOf(gateCodes, gateScales, gateZeroPoints,
                                        byteG, half == 1, k)
                             : Value();
              for (int64_t i = 0; i < kQuantRows; ++i) {
                // Rows past the expert's read a valid row and are dropped.
                Value xv = b.loadF(a, {srcRows[i], k});
                next[i] = b.add(next[i], b.mul(xv, wU));
                if (wG)
                  next[kQuantRows + i] =
                      b.add(next[kQuantRows + i], b.mul(xv, wG));
              }
            }
            return next;
          });
      // Butterfly reduction: every lane ends with the full sums.
      for (Value &v : acc)
        for (int64_t offset = 16; offset >= 1; offset /= 2)
          v = b.add(v, shuffle(b, v, offset, gpu::ShuffleMode::XOR));
      b.ifThen(b.cmpI(arith::CmpIPredicate::eq, lane, c0), [&] {
        for (int64_t i = 0; i < kQuantRows; ++i) {
          b.ifThen(valid[i], [&] {
            Value y = acc[i];
            if (bias)
              y = b.add(y, b.loadF(bias, {expert, n}));
            if (spec.first) {
              Value g;
              if (gateCodes) {
                g = acc[kQuantRows + i];
                if (gateBias)
                  g = b.add(g, b.loadF(gateBias, {expert, n}));
              }
              y = buildExpertHidden(ob, loc, spec.expert, g, y);
            }
            b.storeF(y, out, {rows[i], n});
          });
        }
      });
    });
  });
  return kernel;
}

namespace {
/// `moe.quantized_experts`: the two quantized GEMMs through an f32 buffer of
/// hidden rows, as `moe.experts`; rows of other experts pass through from
/// `dest`.
struct QuantizedExpertsOpLowering
    : public OpConversionPattern<QuantizedExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(QuantizedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    Value inputBuf = host.buffer(adaptor.getInput());
    Value tokensBuf = host.buffer(adaptor.getTokenIndices());
    Value offsetsBuf = host.buffer(adaptor.getExpertOffsets());
    auto resultType = op.getResult().getType();
    Type ct = computeType(resultType.getElementType());
    Value numRows = memref::DimOp::create(rewriter, loc, tokensBuf, 0);
    Value outBuf = host.rowsInto(resultType, numRows, adaptor.getDest());

    auto upType = tensorType(adaptor.getUp());
    auto upScalesType = tensorType(adaptor.getUpScales());
    auto downScalesType = tensorType(adaptor.getDownScales());
    int64_t ffn = upType.getDimSize(1);
    int64_t hidden = resultType.getDimSize(1);
    QuantSpec spec;
    spec.gated = op.getExpert().isGated();
    spec.bits = op.getBits();
    spec.firstExpert = op.getFirstExpert();
    spec.expert = op.getExpert();
    Value hiddenBuf =
        host.alloc(MemRefType::get({ShapedType::kDynamic, ffn}, ct), numRows);
    SmallVector<Value> firstArgs = present(
        {tokensBuf, offsetsBuf, inputBuf, host.buffer(adaptor.getGate()),
         host.buffer(adaptor.getGateScales()),
         host.buffer(adaptor.getGateZeroPoints()), host.buffer(adaptor.getUp()),
         host.buffer(adaptor.getUpScales()),
         host.buffer(adaptor.getUpZeroPoints()),
         host.buffer(adaptor.getGateBias()), host.buffer(adaptor.getUpBias()),
         hiddenBuf});
    SmallVector<Value> secondArgs = present(
        {tokensBuf, offsetsBuf, hiddenBuf, host.buffer(adaptor.getDown()),
         host.buffer(adaptor.getDownScales()),
         host.buffer(adaptor.getDownZeroPoints()),
         host.buffer(adaptor.getDownBias()), outBuf});
    Kernel first, second;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      spec.first = true;
      spec.hasGateBias = adaptor.getGateBias() != nullptr;
      spec.hasBias = adaptor.getUpBias() != nullptr;
      spec.hasGateZeroPoints = adaptor.getGateZeroPoints() != nullptr;
      spec.hasZeroPoints = adaptor.getUpZeroPoints() != nullptr;
      spec.n = ffn;
      spec.k = hidden;
      spec.blockSize = hidden / upScalesType.getDimSize(2);
      first = buildQuantizedKernel(rewriter, op, "moe_quantized_up", spec,
                                   typesOf(firstArgs), ct);
      spec.first = false;
      spec.hasGateBias = false;
      spec.hasBias = adaptor.getDownBias() != nullptr;
      spec.hasGateZeroPoints = false;
      spec.hasZeroPoints = adaptor.getDownZeroPoints() != nullptr;
      spec.n = hidden;
      spec.k = ffn;
      spec.blockSize = ffn / downScalesType.getDimSize(2);
      second = buildQuantizedKernel(rewriter, op, "moe_quantized_down", spec,
                                    typesOf(secondArgs), ct);
    }
    KernelBuilder hb{rewriter, loc, ct};
    Value experts = hb.idx(op.getNumExperts());
    host.launch(first, experts, hb.idx((ffn + kQuantWarps - 1) / kQuantWarps),
                kThreads, 1, firstArgs);
    host.launch(second, experts,
                hb.idx((hidden + kQuantWarps - 1) / kQuantWarps), kThreads, 1,
                secondArgs);
    host.dealloc(hiddenBuf);
    rewriter.replaceOp(op, host.tensor(resultType, outBuf));
    return success();
  }
};
} // namespace

namespace {
/// Zero, copy and constant experts (MoE++): one block per permuted row.
/// The block finds the row's expert by walking the offsets of the op's
/// experts (block-uniform, so the barriers of the constant kind are reached
/// by every thread); rows of other experts and padding rows (token -1) are
/// left as they are (`dest`'s rows, copied first). A constant expert's
/// mixing coefficients softmax(x . Wc) come from a block reduction of the
/// two dot products in workgroup memory.
struct ZeroComputationExpertsOpLowering
    : public OpConversionPattern<ZeroComputationExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(ZeroComputationExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    Value inputBuf = host.buffer(adaptor.getInput());
    Value tokensBuf = host.buffer(adaptor.getTokenIndices());
    Value offsetsBuf = host.buffer(adaptor.getExpertOffsets());
    Value valuesBuf = host.buffer(adaptor.getValues());
    Value mixBuf = host.buffer(adaptor.getMix());
    auto resultType = op.getResult().getType();
    Type ct = computeType(resultType.getElementType());
    Value numRows = memref::DimOp::create(rewriter, loc, tokensBuf, 0);
    Value outBuf = host.rowsInto(resultType, numRows, adaptor.getDest());
    SmallVector<Value> args =
        present({inputBuf, tokensBuf, offsetsBuf, valuesBuf, mixBuf, outBuf});
    int64_t hidden = resultType.getDimSize(1);
    int64_t firstExpert = op.getFirstExpert();
    SmallVector<ZeroComputationKind> kinds;
    for (Attribute attr : op.getKinds())
      kinds.push_back(cast<ZeroComputationKindAttr>(attr).getValue());

    Kernel kernel;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      kernel = createKernel(rewriter, op, "moe_zero_computation_experts",
                            typesOf(args), {workgroupType({2, kThreads}, ct)},
                            kThreads);
      KernelBuilder b{rewriter, loc, ct};
      auto it = kernel.args.begin();
      Value x = *it++, tokens = *it++, offsets = *it++;
      Value values = valuesBuf ? *it++ : Value();
      Value mix = mixBuf ? *it++ : Value();
      Value out = *it++;
      Value partial = kernel.workgroup[0];
      Value c0 = b.idx(0), c1 = b.idx(1), cH = b.idx(hidden);
      Value tid = b.threadId(), row = b.blockId();
      // The row's expert among the op's, or -1.
      Value local =
          b.loop(c0, b.idx(kinds.size()), c1, b.idx(-1),
                 [&](Value e, ValueRange found) {
                   Value global = b.add(e, b.idx(firstExpert));
                   Value start = b.loadI(offsets, {global});
                   Value end = b.loadI(offsets, {b.add(global, c1)});
                   Value mine =
                       b.andI(b.cmpI(arith::CmpIPredicate::sge, row, start),
                              b.lt(row, end));
                   return SmallVector<Value>{b.select(mine, e, found[0])};
                 })[0];
      Value token = b.loadI(tokens, {row});
      b.ifThen(
          b.andI(b.cmpI(arith::CmpIPredicate::sge, local, c0),
                 b.cmpI(arith::CmpIPredicate::sge, token, c0)),
          [&] {
            int64_t constantIndex = 0;
            for (size_t i = 0; i < kinds.size(); ++i) {
              ZeroComputationKind kind = kinds[i];
              int64_t j =
                  kind == ZeroComputationKind::Constant ? constantIndex++ : -1;
              b.ifThen(b.cmpI(arith::CmpIPredicate::eq, local, b.idx(i)), [&] {
                emitRow(b, kind, j, x, token, values, mix, partial, out, row,
                        tid, cH);
              });
            }
          });
    }
    KernelBuilder hb{rewriter, loc, ct};
    host.launch(kernel, numRows, hb.idx(1), kThreads, 1, args);
    rewriter.replaceOp(op, host.tensor(resultType, outBuf));
    return success();
  }

  /// One row of a kind-`kind` expert (`j`: its index among the constant
  /// experts).
  static void emitRow(const KernelBuilder &b, ZeroComputationKind kind,
                      int64_t j, Value x, Value token, Value values, Value mix,
                      Value partial, Value out, Value row, Value tid,
                      Value cH) {
    Value step = b.idx(kThreads);
    switch (kind) {
    case ZeroComputationKind::Zero:
      b.loop(tid, cH, step, [&](Value h) {
        b.storeF(b.flt(0.0), out, {row, h});
      });
      return;
    case ZeroComputationKind::Copy:
      b.loop(tid, cH, step, [&](Value h) {
        b.storeF(b.loadF(x, {token, h}), out, {row, h});
      });
      return;
    case ZeroComputationKind::Constant:
      break;
    }
    Value cj = b.idx(j), c0 = b.idx(0), c1 = b.idx(1);
    SmallVector<Value> dots = b.loop(
        tid, cH, step, {b.flt(0.0), b.flt(0.0)}, [&](Value h, ValueRange acc) {
          Value xv = b.loadF(x, {token, h});
          return SmallVector<Value>{
              b.add(acc[0], b.mul(xv, b.loadF(mix, {cj, h, c0}))),
              b.add(acc[1], b.mul(xv, b.loadF(mix, {cj, h, c1})))};
        });
    memref::StoreOp::create(b.b, b.loc, dots[0], partial, ValueRange{c0, tid});
    memref::StoreOp::create(b.b, b.loc, dots[1], partial, ValueRange{c1, tid});
    b.barrier();
    // Every thread sums the partials in the same order: the same result.
    SmallVector<Value> sums = b.loop(
        c0, step, c1, {b.flt(0.0), b.flt(0.0)}, [&](Value i, ValueRange acc) {
          Value p0 =
              memref::LoadOp::create(b.b, b.loc, partial, ValueRange{c0, i});
          Value p1 =
              memref::LoadOp::create(b.b, b.loc, partial, ValueRange{c1, i});
          return SmallVector<Value>{b.add(acc[0], p0), b.add(acc[1], p1)};
        });
    Value m = b.maxF(sums[0], sums[1]);
    Value e0 = b.exp(b.sub(sums[0], m)), e1 = b.exp(b.sub(sums[1], m));
    Value total = b.add(e0, e1);
    Value a0 = b.div(e0, total), a1 = b.div(e1, total);
    b.loop(tid, cH, step, [&](Value h) {
      Value v = b.add(b.mul(a0, b.loadF(x, {token, h})),
                      b.mul(a1, b.loadF(values, {cj, h})));
      b.storeF(v, out, {row, h});
    });
  }
};
} // namespace

/// One thread per output element: `addend + sum_i w[t,i] * rows[pos[t,i]]`
/// in slot order, a per-token reduction without any scatter.
struct CombineOpLowering : public OpConversionPattern<CombineOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(CombineOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!unsupportedReason(op).empty())
      return rewriter.notifyMatchFailure(op, "not supported");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    Value rowsBuf = host.buffer(adaptor.getRows());
    Value positionsBuf = host.buffer(adaptor.getPositions());
    Value weightsBuf = host.buffer(adaptor.getWeights());
    Value addendBuf = host.buffer(adaptor.getAddend());
    auto resultType = op.getResult().getType();
    Type ct = computeType(resultType.getElementType());
    KernelBuilder hb{rewriter, loc, ct};
    Value numTokens = hb.dim(positionsBuf, 0);
    SmallVector<Value> dyn;
    if (resultType.isDynamicDim(0))
      dyn.push_back(numTokens);
    Value outBuf = host.alloc(bufferType(resultType), dyn);
    int64_t hidden = resultType.getDimSize(1);
    int64_t k = tensorType(adaptor.getPositions()).getDimSize(1);

    SmallVector<Value> args =
        present({rowsBuf, positionsBuf, weightsBuf, addendBuf, outBuf});
    Kernel kernel;
    {
      OpBuilder::InsertionGuard guard(rewriter);
      kernel = createKernel(rewriter, op, "moe_combine", typesOf(args), {},
                            kThreads);
      KernelBuilder b{rewriter, loc, ct};
      auto it = kernel.args.begin();
      Value rows = *it++, positions = *it++, weights = *it++;
      Value addend = addendBuf ? *it++ : Value();
      Value out = *it++;
      Value t = b.blockId(gpu::Dimension::x);
      Value h = b.add(b.mul(b.blockId(gpu::Dimension::y), b.idx(kThreads)),
                      b.threadId());
      b.ifThen(b.lt(h, b.idx(hidden)), [&] {
        Value acc = addend ? b.loadF(addend, {t, h}) : b.flt(0.0);
        for (int64_t i = 0; i < k; ++i) {
          Value ci = b.idx(i);
          Value pos = b.loadI(positions, {t, ci});
          Value w = b.loadF(weights, {t, ci});
          Value valid = b.cmpI(arith::CmpIPredicate::sge, pos, b.idx(0));
          Value v = b.loadF(rows, {b.maxI(pos, b.idx(0)), h});
          acc = b.add(acc, b.select(valid, b.mul(w, v), b.flt(0.0)));
        }
        b.storeF(acc, out, {t, h});
      });
    }
    host.launch(kernel, numTokens, hb.idx((hidden + kThreads - 1) / kThreads),
                kThreads, 1, args);
    rewriter.replaceOp(op, host.tensor(resultType, outBuf));
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

void moe::populateMoEToGPUConversionPatterns(RewritePatternSet &patterns) {
  patterns.add<GateOpLowering, RouteOpLowering, HashRouteOpLowering,
               DispatchOpLowering, ExpertsOpLowering, SharedExpertsOpLowering,
               ZeroComputationExpertsOpLowering, QuantizedExpertsOpLowering,
               CombineOpLowering, HostHookOpLowering<PrefetchOp>,
               HostHookOpLowering<TraceRoutingOp>>(patterns.getContext());
  populateGenericExpertsToGPUPatterns(patterns);
}

namespace {
struct ConvertMoEToGPUPass
    : public moe::impl::ConvertMoEToGPUBase<ConvertMoEToGPUPass> {
  using ConvertMoEToGPUBase::ConvertMoEToGPUBase;

  void runOnOperation() override {
    dropIndexChecks();
    if (failed(checkMoEToGPUSupport(getOperation())))
      return signalPassFailure();
    // Placed experts, moe.prefetch and moe.trace_routing call the runtime.
    WalkResult needsRuntime = getOperation()->walk([](Operation *op) {
      auto experts = dyn_cast<ExpertsOp>(op);
      if (isa<PrefetchOp, TraceRoutingOp>(op) ||
          (experts && experts.getPlacementAttr()))
        return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (needsRuntime.wasInterrupted())
      declareRuntimeHooks(getOperation());
    ConversionTarget target(getContext());
    target.addIllegalDialect<MoEDialect>();
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    RewritePatternSet patterns(&getContext());
    populateMoEToGPUConversionPatterns(patterns);
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      return signalPassFailure();
    // Then the tensor compute left on the host (beside the moe ops, and the
    // bodies of moe.generic_experts) as kernels of its own.
    // Only the patterns: no folding, constant CSE or region simplification,
    // so that the rest of the module stays as the conversion built it.
    RewritePatternSet hostPatterns(&getContext());
    populateHostComputeToGPUPatterns(hostPatterns);
    FrozenRewritePatternSet frozen(std::move(hostPatterns));
    GreedyRewriteConfig config;
    config.enableFolding(false)
        .enableConstantCSE(false)
        .setRegionSimplificationLevel(GreedySimplifyRegionLevel::Disabled);
    for (auto func : getOperation().getOps<FunctionOpInterface>())
      (void)applyPatternsGreedily(func->getRegions().front(), frozen, config);
    if (failed(checkHostCode()))
      signalPassFailure();
  }

  /// The ONNX importer's data-dependent index checks (a reduction of the
  /// indices marked `moe.index_check`, extracted on the host into a
  /// cf.assert) would read device memory on the host: dropped, with the ops
  /// only they use. The CUDA target does not check indices at run time yet.
  void dropIndexChecks() {
    SmallVector<cf::AssertOp> checks;
    getOperation().walk([&](cf::AssertOp op) {
      auto extract = op.getArg().getDefiningOp<tensor::ExtractOp>();
      Operation *reduction =
          extract ? extract.getTensor().getDefiningOp() : nullptr;
      if (reduction && reduction->hasAttr(kIndexCheckAttrName))
        checks.push_back(op);
    });
    for (cf::AssertOp op : checks) {
      llvm::SetVector<Operation *> dead;
      dead.insert(op);
      while (!dead.empty()) {
        Operation *next = dead.pop_back_val();
        SmallVector<Value> operands(next->getOperands());
        next->erase();
        for (Value v : operands)
          if (Operation *def = v.getDefiningOp())
            if (def->use_empty() && isMemoryEffectFree(def))
              dead.insert(def);
      }
    }
  }

  /// Code left beside the kernel launches runs on the host, on buffers in
  /// device memory that the host cannot read: computing on tensors there
  /// (a linalg op, elementwise arith/math on tensors, reading an element)
  /// would crash or read garbage at run time, so it is an error here, naming
  /// the op. Ops whose results are dead (canonicalization removes them) and
  /// constants are fine.
  LogicalResult checkHostCode() {
    // What the conversion left dead (e.g. a router matmul folded into the
    // routing kernel) goes first.
    IRRewriter rewriter(&getContext());
    (void)runRegionDCE(rewriter, getOperation()->getRegions());
    return forEachLaunchingFunction(
        getOperation(),
        [&](FunctionOpInterface func) { return checkHostFunction(func); });
  }

  /// The checks of checkHostCode for the ops of `func`, which launches
  /// kernels.
  LogicalResult checkHostFunction(FunctionOpInterface func) {
    auto isTensor = [](Type type) { return isa<RankedTensorType>(type); };
    // Pre-order: an op is named before the ops of its regions.
    WalkResult result = func->walk<WalkOrder::PreOrder>([&](Operation *op) {
      // A constant tensor becomes a global in host memory, which a kernel
      // cannot read.
      if (auto launch = dyn_cast<gpu::LaunchFuncOp>(op)) {
        if (allowHostConstants)
          return WalkResult::advance();
        for (Value operand : launch.getKernelOperands()) {
          auto toBuffer = operand.getDefiningOp<bufferization::ToBufferOp>();
          if (!toBuffer)
            continue;
          // Through views: a slice of a constant is host memory too.
          Value tensor = toBuffer.getTensor();
          while (Operation *def = tensor.getDefiningOp()) {
            if (!isa<tensor::ExtractSliceOp, tensor::ExpandShapeOp,
                     tensor::CollapseShapeOp, tensor::CastOp>(def))
              break;
            tensor = def->getOperand(0);
          }
          if (!tensor.getDefiningOp<arith::ConstantOp>())
            continue;
          tensor.getDefiningOp()->emitOpError()
              << "is a kernel operand but would stay in host memory, which "
                 "the GPU cannot read; make it a function argument "
                 "(moe-compile --target=cuda outlines such constants into "
                 "the weights file)";
          return WalkResult::interrupt();
        }
        return WalkResult::advance();
      }
      if (isOpTriviallyDead(op) || op->hasTrait<OpTrait::ConstantLike>())
        return WalkResult::advance();
      bool computes =
          isa<linalg::LinalgDialect>(op->getDialect()) ||
          isa<tensor::ExtractOp, tensor::InsertOp, tensor::InsertSliceOp,
              tensor::PadOp, tensor::ConcatOp, tensor::GenerateOp,
              tensor::SplatOp, tensor::GatherOp, tensor::ScatterOp>(op) ||
          (isa<arith::ArithDialect, math::MathDialect>(op->getDialect()) &&
           llvm::any_of(op->getOperandTypes(), isTensor));
      if (!computes)
        return WalkResult::advance();
      op->emitOpError()
          << "would run on the host, on tensors that live in GPU memory; "
             "convert-moe-to-gpu makes kernels of the moe ops, of linalg ops "
             "and elementwise arith/math on tensors, of tensor.pad with an "
             "invariant padding value and of tensor.insert_slice of the same "
             "rank, and keeps only shape plumbing on the host";
      return WalkResult::interrupt();
    });
    return failure(result.wasInterrupted());
  }
};
} // namespace
