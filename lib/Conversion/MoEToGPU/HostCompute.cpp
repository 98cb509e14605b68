//===- HostCompute.cpp - Region experts and tensor compute as GPU kernels -===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Two things that convert-moe-to-gpu lowers beside the moe ops' own kernels:
//
// - `moe.generic_experts` (the region form: convolution or attention
//   experts, any IR): a host loop over the experts. The expert offsets are
//   copied to the host; for each expert with rows a kernel gathers its input
//   rows, the region's ops run on them, and a kernel writes the rows it
//   yields into the result (padding rows keep `dest`'s values).
// - Tensor compute on the host (a linalg op, arith/math on tensors,
//   `tensor.pad` with a constant value, `tensor.insert_slice`), there or in
//   an expert region: each op becomes one naive kernel, one thread per
//   element of its parallel iteration space that runs the reduction loops
//   itself, on views of its operands (any strides, so slices of weights are
//   not copied) into a new device buffer. Correct for any linalg op, not
//   tuned: the moe ops keep their own kernels.
//
//===----------------------------------------------------------------------===//

#include "KernelSupport.h"
#include "moe/Conversion/MoEToGPU/MoEToGPU.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Affine/Utils.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Transforms/DialectConversion.h"
#include "mlir/Transforms/RegionUtils.h"

using namespace mlir;
using namespace moe;
using namespace moe::gpu_lowering;

/// Threads per block of the kernels of this file (one per element).
static constexpr int64_t kElementThreads = 256;

/// The product of `values` (1 for none).
static Value product(const KernelBuilder &b, ValueRange values) {
  Value result = b.idx(1);
  for (Value v : values)
    result = b.mul(result, v);
  return result;
}

/// Blocks of kElementThreads threads for `count` elements.
static Value elementBlocks(const KernelBuilder &b, Value count) {
  return arith::CeilDivUIOp::create(b.b, b.loc, count, b.idx(kElementThreads));
}

namespace {
/// In a kernel of this file: the thread's element, and whether it is below
/// the element count.
struct ElementId {
  Value id;
  Value inRange;
};
} // namespace

static ElementId elementId(const KernelBuilder &b, Value count) {
  Value block = b.blockId();
  Value thread = b.threadId();
  Value id = b.add(b.mul(block, b.idx(kElementThreads)), thread);
  return {id, b.cmpI(arith::CmpIPredicate::ult, id, count)};
}

/// The multi-index of element `linear` of a row-major space of `sizes`.
static SmallVector<Value> delinearize(const KernelBuilder &b, Value linear,
                                      ArrayRef<Value> sizes) {
  SmallVector<Value> ivs(sizes.size());
  for (int64_t d = int64_t(sizes.size()) - 1; d >= 0; --d) {
    ivs[d] = b.rem(linear, sizes[d]);
    linear = b.div(linear, sizes[d]);
  }
  return ivs;
}

//===----------------------------------------------------------------------===//
// moe.generic_experts
//===----------------------------------------------------------------------===//

namespace {
/// The row kernels of the region form. `gather`: rows[i, :] = x[max(tok[
/// start + i], 0), :] for the expert's `n` rows. Otherwise (scatter):
/// out[start + i, :] = y[i, :] where tok[start + i] >= 0 (padding rows keep
/// their values).
Kernel buildRowsKernel(RewriterBase &rewriter, Operation *op, bool gather,
                       TypeRange argTypes) {
  OpBuilder::InsertionGuard guard(rewriter);
  Kernel k = createKernel(rewriter, op,
                          gather ? "moe_generic_gather" : "moe_generic_scatter",
                          argTypes, {}, kElementThreads);
  Location loc = op->getLoc();
  KernelBuilder b{rewriter, loc, Type()};
  Value src = k.args[0], tokens = k.args[1], start = k.args[2], n = k.args[3],
        dst = k.args[4];
  Value hidden = memref::DimOp::create(rewriter, loc, src, 1);
  ElementId element = elementId(b, b.mul(n, hidden));
  b.ifThen(element.inRange, [&] {
    Value i = b.div(element.id, hidden);
    Value h = b.rem(element.id, hidden);
    Value row = b.add(start, i);
    Value token = b.loadI(tokens, row);
    if (gather) {
      Value v = memref::LoadOp::create(rewriter, loc, src,
                                       ValueRange{b.maxI(token, b.idx(0)), h});
      memref::StoreOp::create(rewriter, loc, v, dst, ValueRange{i, h});
      return;
    }
    b.ifThen(b.cmpI(arith::CmpIPredicate::sge, token, b.idx(0)), [&] {
      Value v = memref::LoadOp::create(rewriter, loc, src, ValueRange{i, h});
      memref::StoreOp::create(rewriter, loc, v, dst, ValueRange{row, h});
    });
  });
  return k;
}

/// The region form: a host loop over the experts (the offsets copied to the
/// host), the region's ops inlined for each expert with rows between a gather
/// and a scatter kernel. The inlined ops are tensor compute on the host,
/// which the patterns of populateHostComputeToGPUPatterns then turn into
/// kernels.
struct GenericExpertsOpLowering : public OpConversionPattern<GenericExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(GenericExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    Value dest = adaptor.getDest();
    Value numRows = tensor::DimOp::create(rewriter, loc, dest, 0);
    Value out = host.rowsInto(resultType, numRows, dest);

    // The offsets, on the host: each expert's row count sizes its buffers.
    Value hostOffsets = host.hostCopy(adaptor.getExpertOffsets());

    Value input = host.view(adaptor.getInput());
    Value tokens = host.buffer(adaptor.getTokenIndices());
    auto rowsTensorType =
        RankedTensorType::get({ShapedType::kDynamic, resultType.getDimSize(1)},
                              resultType.getElementType());
    Block &body = op.getBody().front();
    auto yieldType = cast<RankedTensorType>(
        cast<YieldOp>(body.getTerminator()).getValue().getType());
    Kernel gather = buildRowsKernel(
        rewriter, op, /*gather=*/true,
        {input.getType(), tokens.getType(), rewriter.getIndexType(),
         rewriter.getIndexType(), bufferType(rowsTensorType)});
    Kernel scatter = buildRowsKernel(rewriter, op, /*gather=*/false,
                                     {stridedBufferType(yieldType),
                                      tokens.getType(), rewriter.getIndexType(),
                                      rewriter.getIndexType(), out.getType()});

    KernelBuilder b{rewriter, loc, Type()};
    Value c0 = b.idx(0), c1 = b.idx(1);
    auto loop =
        scf::ForOp::create(rewriter, loc, c0, b.idx(op.getNumExperts()), c1);
    {
      OpBuilder::InsertionGuard guard(rewriter);
      rewriter.setInsertionPointToStart(loop.getBody());
      Value local = loop.getInductionVar();
      Value global = b.add(local, b.idx(op.getFirstExpert()));
      Value start = b.loadI(hostOffsets, global);
      Value count = b.sub(b.loadI(hostOffsets, b.add(global, c1)), start);
      auto ifOp = scf::IfOp::create(
          rewriter, loc, b.cmpI(arith::CmpIPredicate::sgt, count, c0),
          /*withElse=*/false);
      rewriter.setInsertionPointToStart(ifOp.thenBlock());
      Value rows = host.alloc(bufferType(rowsTensorType), {count});
      // The gather and the scatter: one thread per element of the rows.
      Value blocks =
          elementBlocks(b, b.mul(count, b.idx(resultType.getDimSize(1))));
      host.launch(gather, blocks, c1, kElementThreads, 1,
                  {input, tokens, start, count, rows});
      IRMapping mapping;
      mapping.map(body.getArgument(0), host.tensor(rowsTensorType, rows));
      mapping.map(body.getArgument(1), local);
      for (Operation &inner : body.without_terminator())
        rewriter.clone(inner, mapping);
      Value yielded = mapping.lookupOrDefault(
          cast<YieldOp>(body.getTerminator()).getValue());
      host.launch(scatter, blocks, c1, kElementThreads, 1,
                  {host.view(yielded), tokens, start, count, out});
    }
    memref::DeallocOp::create(rewriter, loc, hostOffsets);
    rewriter.replaceOp(op, host.tensor(resultType, out));
    return success();
  }
};
} // namespace

void gpu_lowering::populateGenericExpertsToGPUPatterns(
    RewritePatternSet &patterns) {
  patterns.add<GenericExpertsOpLowering>(patterns.getContext());
}

//===----------------------------------------------------------------------===//
// Tensor compute on the host
//===----------------------------------------------------------------------===//

/// The name of the kernel of a linalg op: `moe_host_` and the op's name
/// (`moe_host_matmul`, `moe_host_generic`, ...).
static std::string hostKernelName(Operation *op) {
  std::string name = "moe_host_" + op->getName().stripDialect().str();
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

/// The element of a splat constant tensor, or null.
static TypedAttr splatValue(Value value) {
  DenseElementsAttr dense;
  if (!isa<RankedTensorType>(value.getType()) ||
      !matchPattern(value, m_Constant(&dense)) || !dense.isSplat())
    return {};
  return dense.getSplatValue<TypedAttr>();
}

/// Loads `memref[map(ivs)]`; a scalar operand is its own value.
static Value loadAt(OpBuilder &b, Location loc, Value operand, AffineMap map,
                    ArrayRef<Value> ivs) {
  if (!isa<MemRefType>(operand.getType()))
    return operand;
  SmallVector<Value> indices = *affine::expandAffineMap(b, loc, map, ivs);
  return memref::LoadOp::create(b, loc, operand, indices);
}

namespace {
/// A linalg op on tensors as a kernel: one thread per point of the parallel
/// loops, which runs the reduction loops (in order) and stores its outputs.
struct LinalgOpToKernel : public OpInterfaceRewritePattern<linalg::LinalgOp> {
  using OpInterfaceRewritePattern::OpInterfaceRewritePattern;

  LogicalResult matchAndRewrite(linalg::LinalgOp linalgOp,
                                PatternRewriter &rewriter) const override {
    if (!linalgOp.hasPureTensorSemantics() ||
        linalgOp->getParentOfType<gpu::GPUModuleOp>())
      return rewriter.notifyMatchFailure(linalgOp, "not on host tensors");
    std::string name = hostKernelName(linalgOp);
    auto op = dyn_cast<linalg::GenericOp>(linalgOp.getOperation());
    if (!op) {
      FailureOr<linalg::GenericOp> generic =
          linalg::generalizeNamedOp(rewriter, linalgOp);
      if (failed(generic))
        return rewriter.notifyMatchFailure(linalgOp, "cannot generalize");
      op = *generic;
    }
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    unsigned numLoops = op.getNumLoops();
    SmallVector<Value> hostArgs;
    for (Range range : cast<linalg::LinalgOp>(op.getOperation())
                           .createLoopRanges(rewriter, loc))
      hostArgs.push_back(
          getValueOrCreateConstantIndexOp(rewriter, loc, range.size));
    SmallVector<Value> parallelSizes;
    for (unsigned d = 0; d < numLoops; ++d)
      if (linalg::isParallelIterator(op.getIteratorTypesArray()[d]))
        parallelSizes.push_back(hostArgs[d]);
    KernelBuilder kb{rewriter, loc, Type()};
    Value total = product(kb, parallelSizes);

    // A splat constant input is a scalar in the kernel, not a buffer.
    for (OpOperand *input : op.getDpsInputOperands())
      if (!splatValue(input->get()))
        hostArgs.push_back(isa<RankedTensorType>(input->get().getType())
                               ? host.view(input->get())
                               : input->get());
    SmallVector<bool> readsInit;
    for (OpOperand &init : op.getDpsInitsMutable()) {
      // An empty init's values are undefined, and it would be host memory
      // after bufferization: the kernel starts from zeros instead.
      readsInit.push_back(op.payloadUsesValueFromOperand(&init) &&
                          !init.get().getDefiningOp<tensor::EmptyOp>());
      if (readsInit.back())
        hostArgs.push_back(host.view(init.get()));
    }
    SmallVector<Value> outputs;
    for (Value init : op.getDpsInits()) {
      auto type = cast<RankedTensorType>(init.getType());
      SmallVector<Value> sizes;
      for (int64_t d = 0; d < type.getRank(); ++d)
        if (type.isDynamicDim(d))
          sizes.push_back(tensor::DimOp::create(rewriter, loc, init, d));
      outputs.push_back(host.alloc(bufferType(type), sizes));
    }
    hostArgs.append(outputs);
    // Values of the host that the payload uses: scalar constants are cloned
    // into the kernel, other scalars passed to it, and tensors that it reads
    // elements of (`tensor.extract`, e.g. a Gather's table) passed as views.
    SetVector<Value> captured;
    getUsedValuesDefinedAbove(op.getRegion(), captured);
    SmallVector<Value> passed;
    for (Value v : captured) {
      if (isa<RankedTensorType>(v.getType())) {
        Block *body = &op.getRegion().front();
        bool splat = static_cast<bool>(splatValue(v));
        for (OpOperand &use : v.getUses()) {
          Operation *user = use.getOwner();
          if (!op->isProperAncestor(user))
            continue;
          if (user->getBlock() != body || use.getOperandNumber() != 0 ||
              !isa<tensor::ExtractOp, tensor::DimOp>(user))
            return rewriter.notifyMatchFailure(
                op, "payload uses a tensor other than by tensor.extract");
        }
        if (!splat) {
          passed.push_back(v);
          hostArgs.push_back(host.view(v));
        }
        continue;
      }
      if (matchPattern(v, m_Constant()))
        continue;
      if (!v.getType().isIntOrIndexOrFloat())
        return rewriter.notifyMatchFailure(op, "payload uses a non-scalar");
      passed.push_back(v);
      hostArgs.push_back(v);
    }

    SmallVector<Type> argTypes;
    for (Value v : hostArgs)
      argTypes.push_back(v.getType());
    Kernel kernel = buildKernel(rewriter, op, name, argTypes, readsInit,
                                captured.getArrayRef(), passed);
    host.launch(kernel, elementBlocks(kb, total), kb.idx(1), kElementThreads, 1,
                hostArgs);
    SmallVector<Value> results;
    for (auto [result, buffer] : llvm::zip(op.getResults(), outputs))
      results.push_back(host.tensor(result.getType(), buffer));
    rewriter.replaceOp(op, results);
    return success();
  }

  static Kernel buildKernel(PatternRewriter &rewriter, linalg::GenericOp op,
                            StringRef name, TypeRange argTypes,
                            ArrayRef<bool> readsInit, ArrayRef<Value> captured,
                            ArrayRef<Value> passed) {
    OpBuilder::InsertionGuard guard(rewriter);
    Kernel k = createKernel(rewriter, op, name, argTypes, {}, kElementThreads);
    Location loc = op.getLoc();
    OpBuilder &b = rewriter;
    unsigned numLoops = op.getNumLoops();
    auto iterators = op.getIteratorTypesArray();
    ArrayRef<Value> args = k.args;
    ArrayRef<Value> sizes = args.take_front(numLoops);
    args = args.drop_front(numLoops);
    SmallVector<Value> inputs;
    for (OpOperand *input : op.getDpsInputOperands()) {
      if (TypedAttr splat = splatValue(input->get())) {
        inputs.push_back(arith::ConstantOp::create(b, loc, splat));
        continue;
      }
      inputs.push_back(args.front());
      args = args.drop_front();
    }
    SmallVector<Value> inits;
    for (bool reads : readsInit) {
      inits.push_back(reads ? args.front() : Value());
      if (reads)
        args = args.drop_front();
    }
    ArrayRef<Value> outputs = args.take_front(op.getNumDpsInits());
    IRMapping above;
    for (auto [value, arg] :
         llvm::zip(passed, args.drop_front(op.getNumDpsInits())))
      above.map(value, arg);
    // Scalar constants are cloned; a splat tensor is its element (see
    // payload).
    for (Value v : captured)
      if (!above.contains(v))
        above.map(
            v,
            splatValue(v)
                ? arith::ConstantOp::create(b, loc, splatValue(v)).getResult()
                : b.clone(*v.getDefiningOp())->getResult(0));

    SmallVector<Value> parallelSizes;
    for (unsigned d = 0; d < numLoops; ++d)
      if (linalg::isParallelIterator(iterators[d]))
        parallelSizes.push_back(sizes[d]);
    KernelBuilder kb{b, loc, Type()};
    ElementId element = elementId(kb, product(kb, parallelSizes));
    kb.ifThen(element.inRange, [&] {
      SmallVector<Value> ivs(numLoops, kb.idx(0));
      SmallVector<Value> parallelIvs =
          delinearize(kb, element.id, parallelSizes);
      for (unsigned d = 0, p = 0; d < numLoops; ++d)
        if (linalg::isParallelIterator(iterators[d]))
          ivs[d] = parallelIvs[p++];
      // Output maps use only parallel loops: the reduction ivs are 0 here.
      SmallVector<Value> accs;
      for (auto [i, init] : llvm::enumerate(op.getDpsInitsMutable())) {
        AffineMap map = op.getMatchingIndexingMap(&init);
        Type elementType = getElementTypeOrSelf(init.get().getType());
        accs.push_back(
            inits[i] ? loadAt(b, loc, inits[i], map, ivs)
                     : arith::ConstantOp::create(b, loc, elementType,
                                                 b.getZeroAttr(elementType))
                           .getResult());
      }
      SmallVector<unsigned> reductionDims;
      for (unsigned d = 0; d < numLoops; ++d)
        if (!linalg::isParallelIterator(iterators[d]))
          reductionDims.push_back(d);
      SmallVector<Value> results =
          reduce(b, loc, op, sizes, inputs, above, reductionDims, ivs, accs);
      for (auto [i, init] : llvm::enumerate(op.getDpsInitsMutable())) {
        SmallVector<Value> indices = *affine::expandAffineMap(
            b, loc, op.getMatchingIndexingMap(&init), ivs);
        memref::StoreOp::create(b, loc, results[i], outputs[i], indices);
      }
    });
    return k;
  }

  /// The loops over `reductionDims` (outermost first) around the payload,
  /// carrying the accumulators; without reduction loops, the payload once.
  static SmallVector<Value> reduce(OpBuilder &b, Location loc,
                                   linalg::GenericOp op, ArrayRef<Value> sizes,
                                   ArrayRef<Value> inputs,
                                   const IRMapping &above,
                                   ArrayRef<unsigned> reductionDims,
                                   SmallVector<Value> &ivs, ValueRange accs) {
    if (reductionDims.empty())
      return payload(b, loc, op, inputs, above, ivs, accs);
    unsigned d = reductionDims.front();
    KernelBuilder kb{b, loc, Type()};
    return kb.loop(kb.idx(0), sizes[d], kb.idx(1), accs,
                   [&](Value iv, ValueRange carried) {
                     ivs[d] = iv;
                     return reduce(b, loc, op, sizes, inputs, above,
                                   reductionDims.drop_front(), ivs, carried);
                   });
  }

  /// The payload of `op` at `ivs` with the output values `accs`; returns
  /// what it yields.
  static SmallVector<Value> payload(OpBuilder &b, Location loc,
                                    linalg::GenericOp op,
                                    ArrayRef<Value> inputs,
                                    const IRMapping &above, ArrayRef<Value> ivs,
                                    ValueRange accs) {
    Block &body = op.getRegion().front();
    IRMapping mapping = above;
    for (auto [i, input] : llvm::enumerate(op.getDpsInputOperands()))
      mapping.map(
          body.getArgument(i),
          loadAt(b, loc, inputs[i], op.getMatchingIndexingMap(input), ivs));
    for (auto [i, acc] : llvm::enumerate(accs))
      mapping.map(body.getArgument(op.getNumDpsInputs() + i), acc);
    body.walk([&](linalg::IndexOp index) {
      mapping.map(index.getResult(), ivs[index.getDim()]);
    });
    for (Operation &inner : body.without_terminator()) {
      if (isa<linalg::IndexOp>(inner))
        continue;
      // Reads of a captured tensor, now a view (or of a splat constant, now
      // its element).
      Value source = inner.getNumOperands()
                         ? mapping.lookupOrDefault(inner.getOperand(0))
                         : Value();
      if (isa<tensor::ExtractOp>(inner) && splatValue(inner.getOperand(0))) {
        mapping.map(inner.getResult(0), source);
        continue;
      }
      if (source && isa<MemRefType>(source.getType())) {
        if (auto extract = dyn_cast<tensor::ExtractOp>(inner)) {
          SmallVector<Value> indices;
          for (Value index : extract.getIndices())
            indices.push_back(mapping.lookupOrDefault(index));
          mapping.map(extract.getResult(),
                      memref::LoadOp::create(b, loc, source, indices));
          continue;
        }
        if (auto dim = dyn_cast<tensor::DimOp>(inner)) {
          mapping.map(
              dim.getResult(),
              memref::DimOp::create(b, loc, source,
                                    mapping.lookupOrDefault(dim.getIndex())));
          continue;
        }
      }
      b.clone(inner, mapping);
    }
    SmallVector<Value> results;
    for (Value v : body.getTerminator()->getOperands())
      results.push_back(mapping.lookupOrDefault(v));
    return results;
  }
};

/// Where an element of the result comes from the source (`args[0]`): sets
/// `srcIvs` and returns whether it does.
using LocateFn =
    function_ref<Value(const KernelBuilder &, ArrayRef<Value> args,
                       ArrayRef<Value> ivs, SmallVectorImpl<Value> &srcIvs)>;
/// The value of an element that is not from the source.
using OtherwiseFn = function_ref<Value(
    const KernelBuilder &, ArrayRef<Value> args, ArrayRef<Value> ivs)>;

/// A kernel over the elements of a new `resultType` buffer of `sizes` (host
/// values), each thread storing its element from the source where `locate`
/// says so and `otherwise`'s value elsewhere (without `otherwise`, nothing:
/// the element stays undefined). `hostArgs` are the kernel's arguments, the
/// source's view first; the output buffer is appended. Returns the result.
static Value copyFromSource(PatternRewriter &rewriter, Operation *op,
                            StringRef name, RankedTensorType resultType,
                            ArrayRef<Value> sizes, SmallVector<Value> hostArgs,
                            LocateFn locate, OtherwiseFn otherwise) {
  Location loc = op->getLoc();
  Host host{rewriter, loc};
  SmallVector<Value> dynamicSizes;
  for (int64_t d = 0; d < resultType.getRank(); ++d)
    if (resultType.isDynamicDim(d))
      dynamicSizes.push_back(sizes[d]);
  Value out = host.alloc(bufferType(resultType), dynamicSizes);
  hostArgs.push_back(out);
  SmallVector<Type> argTypes;
  for (Value v : hostArgs)
    argTypes.push_back(v.getType());
  Kernel k;
  {
    OpBuilder::InsertionGuard guard(rewriter);
    k = createKernel(rewriter, op, name, argTypes, {}, kElementThreads);
    OpBuilder &b = rewriter;
    ArrayRef<Value> args = k.args;
    Value src = args.front(), dst = args.back();
    SmallVector<Value> outSizes;
    for (int64_t d = 0; d < resultType.getRank(); ++d)
      outSizes.push_back(memref::DimOp::create(b, loc, dst, d));
    KernelBuilder kb{b, loc, Type()};
    ElementId element = elementId(kb, product(kb, outSizes));
    kb.ifThen(element.inRange, [&] {
      SmallVector<Value> ivs = delinearize(kb, element.id, outSizes);
      SmallVector<Value> srcIvs;
      Value inside = locate(kb, args, ivs, srcIvs);
      if (!otherwise) {
        kb.ifThen(inside, [&] {
          memref::StoreOp::create(
              b, loc, memref::LoadOp::create(b, loc, src, srcIvs), dst, ivs);
        });
        return;
      }
      auto select = scf::IfOp::create(
          b, loc, inside,
          [&](OpBuilder &nb, Location nloc) {
            scf::YieldOp::create(
                nb, nloc,
                memref::LoadOp::create(nb, nloc, src, srcIvs).getResult());
          },
          [&](OpBuilder &nb, Location nloc) {
            scf::YieldOp::create(nb, nloc, otherwise(kb, args, ivs));
          });
      memref::StoreOp::create(b, loc, select.getResult(0), dst, ivs);
    });
  }
  KernelBuilder kb{rewriter, loc, Type()};
  host.launch(k, elementBlocks(kb, product(kb, sizes)), kb.idx(1),
              kElementThreads, 1, hostArgs);
  return host.tensor(resultType, out);
}

/// `tensor.pad` with a padding value defined outside its region: the source
/// where the position minus the low padding is in range (unsigned: a
/// position before it wraps), the value elsewhere.
struct PadOpToKernel : public OpRewritePattern<tensor::PadOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(tensor::PadOp op,
                                PatternRewriter &rewriter) const override {
    if (op->getParentOfType<gpu::GPUModuleOp>())
      return failure();
    Value padValue = op.getConstantPaddingValue();
    if (!padValue)
      return rewriter.notifyMatchFailure(op, "padding value not invariant");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    int64_t rank = op.getResultType().getRank();
    SmallVector<Value> hostArgs = {host.view(op.getSource()), padValue};
    for (OpFoldResult low : op.getMixedLowPad())
      hostArgs.push_back(getValueOrCreateConstantIndexOp(rewriter, loc, low));
    ReifiedRankedShapedTypeDims reified;
    if (failed(reifyResultShapes(rewriter, op, reified)))
      return rewriter.notifyMatchFailure(op, "cannot reify the result shape");
    SmallVector<Value> sizes;
    for (OpFoldResult size : reified[0])
      sizes.push_back(getValueOrCreateConstantIndexOp(rewriter, loc, size));
    Value result = copyFromSource(
        rewriter, op, "moe_host_pad", op.getResultType(), sizes, hostArgs,
        [&](const KernelBuilder &b, ArrayRef<Value> args, ArrayRef<Value> ivs,
            SmallVectorImpl<Value> &srcIvs) {
          Value inside = b.boolean(true);
          for (int64_t d = 0; d < rank; ++d) {
            Value s = b.sub(ivs[d], args[2 + d]);
            Value size = memref::DimOp::create(b.b, b.loc, args[0], d);
            inside = b.andI(inside, b.cmpI(arith::CmpIPredicate::ult, s, size));
            srcIvs.push_back(s);
          }
          return inside;
        },
        [](const KernelBuilder &, ArrayRef<Value> args, ArrayRef<Value>) {
          return args[1];
        });
    rewriter.replaceOp(op, result);
    return success();
  }
};

/// `tensor.insert_slice` (not rank-reducing; a Concat is a chain of them):
/// the source where the element lies in the slice, the destination
/// elsewhere (an empty destination has no values to keep, and no device
/// buffer to read them from).
struct InsertSliceOpToKernel : public OpRewritePattern<tensor::InsertSliceOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(tensor::InsertSliceOp op,
                                PatternRewriter &rewriter) const override {
    if (op->getParentOfType<gpu::GPUModuleOp>())
      return failure();
    int64_t rank = op.getResultType().getRank();
    if (op.getSourceType().getRank() != rank)
      return rewriter.notifyMatchFailure(op, "rank-reducing");
    Location loc = op.getLoc();
    Host host{rewriter, loc};
    bool keepDest = !op.getDest().getDefiningOp<tensor::EmptyOp>();
    SmallVector<Value> hostArgs = {host.view(op.getSource())};
    if (keepDest)
      hostArgs.push_back(host.view(op.getDest()));
    unsigned first = hostArgs.size();
    for (OpFoldResult v :
         llvm::concat<OpFoldResult>(op.getMixedOffsets(), op.getMixedStrides()))
      hostArgs.push_back(getValueOrCreateConstantIndexOp(rewriter, loc, v));
    SmallVector<Value> sizes;
    for (int64_t d = 0; d < rank; ++d)
      sizes.push_back(tensor::DimOp::create(rewriter, loc, op.getDest(), d));
    auto locate = [&](const KernelBuilder &b, ArrayRef<Value> args,
                      ArrayRef<Value> ivs, SmallVectorImpl<Value> &srcIvs) {
      Value inside = b.boolean(true);
      for (int64_t d = 0; d < rank; ++d) {
        // (iv - offset) / stride below the source's size (unsigned: a
        // position before the offset wraps), with no remainder.
        Value rel = b.sub(ivs[d], args[first + d]);
        Value stride = args[first + rank + d];
        Value i = b.div(rel, stride);
        Value exact =
            b.cmpI(arith::CmpIPredicate::eq, b.rem(rel, stride), b.idx(0));
        Value size = memref::DimOp::create(b.b, b.loc, args[0], d);
        Value below = b.cmpI(arith::CmpIPredicate::ult, i, size);
        inside = b.andI(inside, b.andI(exact, below));
        srcIvs.push_back(i);
      }
      return inside;
    };
    auto keep = [](const KernelBuilder &b, ArrayRef<Value> args,
                   ArrayRef<Value> ivs) {
      return memref::LoadOp::create(b.b, b.loc, args[1], ivs).getResult();
    };
    Value result = copyFromSource(rewriter, op, "moe_host_insert_slice",
                                  op.getResultType(), sizes, hostArgs, locate,
                                  keepDest ? OtherwiseFn(keep) : OtherwiseFn());
    rewriter.replaceOp(op, result);
    return success();
  }
};
} // namespace

void moe::populateHostComputeToGPUPatterns(RewritePatternSet &patterns) {
  linalg::populateElementwiseToLinalgConversionPatterns(patterns);
  patterns.add<LinalgOpToKernel, PadOpToKernel, InsertSliceOpToKernel>(
      patterns.getContext());
}
