//===- PackWeights.cpp - Constant expert weights in column panels ---------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cstring>

namespace moe {
#define GEN_PASS_DEF_MOEPACKEXPERTWEIGHTS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// The raw row-major bytes of a non-splat dense or dense_resource constant,
/// or nothing.
static std::optional<ArrayRef<char>> getRawData(ElementsAttr value) {
  if (auto dense = dyn_cast<DenseElementsAttr>(value)) {
    if (dense.isSplat() || dense.getElementType().isInteger(1))
      return std::nullopt;
    return dense.getRawData();
  }
  if (auto resource = dyn_cast<DenseResourceElementsAttr>(value))
    if (AsmResourceBlob *blob = resource.getRawHandle().getBlob())
      return blob->getData();
  return std::nullopt;
}

/// Packs `op` (`[E, K, N]` or `[K, N]`) into panels of `panel` columns
/// viewed through a linalg.unpack, when every use is a weight matrix operand.
static void packConstant(arith::ConstantOp op, int64_t panel) {
  auto type = dyn_cast<RankedTensorType>(op.getType());
  auto value = dyn_cast<ElementsAttr>(op.getValue());
  if (!type || !value || !type.hasStaticShape() ||
      (type.getRank() != 2 && type.getRank() != 3) ||
      !isa<FloatType>(type.getElementType()) || op.use_empty() ||
      !llvm::all_of(op->getUses(), isExpertWeightMatrix))
    return;
  ArrayRef<int64_t> shape = type.getShape();
  int64_t n = shape.back(), k = shape[shape.size() - 2];
  int64_t matrices = type.getRank() == 3 ? shape[0] : 1;
  if (n % panel != 0 || n == panel)
    return;
  std::optional<ArrayRef<char>> raw = getRawData(value);
  int64_t elementBytes = type.getElementTypeBitWidth() / 8;
  if (!raw || type.getElementTypeBitWidth() % 8 != 0 ||
      static_cast<int64_t>(raw->size()) != type.getNumElements() * elementBytes)
    return;

  // packed[m][p][r][i] = original[m][r][p * panel + i].
  int64_t panels = n / panel, rowBytes = panel * elementBytes;
  std::vector<char> packed(raw->size());
  for (int64_t m = 0; m < matrices; ++m)
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t r = 0; r < k; ++r)
        std::memcpy(packed.data() + (((m * panels + p) * k + r) * rowBytes),
                    raw->data() + ((m * k + r) * n + p * panel) * elementBytes,
                    rowBytes);
  SmallVector<int64_t> packedShape;
  SmallVector<int64_t> outerPerm;
  if (type.getRank() == 3) {
    packedShape = {matrices, panels, k, panel};
    outerPerm = {0, 2, 1};
  } else {
    packedShape = {panels, k, panel};
    outerPerm = {1, 0};
  }
  auto packedType = RankedTensorType::get(packedShape, type.getElementType());
  OpBuilder b(op);
  Location loc = op.getLoc();
  auto packedConstant = arith::ConstantOp::create(
      b, loc, packedType,
      DenseElementsAttr::getFromRawBuffer(packedType, packed));
  if (Attribute name = op->getAttr("moe.name"))
    packedConstant->setAttr("moe.name", name);
  Value empty =
      tensor::EmptyOp::create(b, loc, shape, type.getElementType()).getResult();
  Value unpacked = linalg::UnPackOp::create(
                       b, loc, packedConstant, empty,
                       /*innerDimsPos=*/{type.getRank() - 1},
                       /*innerTiles=*/{b.getIndexAttr(panel)}, outerPerm)
                       .getResult();
  op.getResult().replaceAllUsesWith(unpacked);
  op.erase();
}

namespace {
struct MoEPackExpertWeightsPass
    : public moe::impl::MoEPackExpertWeightsBase<MoEPackExpertWeightsPass> {
  using MoEPackExpertWeightsBase::MoEPackExpertWeightsBase;

  void runOnOperation() override {
    if (panelWidth < 1) {
      getOperation().emitError()
          << "moe-pack-expert-weights needs a positive panel width";
      return signalPassFailure();
    }
    SmallVector<arith::ConstantOp> constants;
    getOperation().walk([&](arith::ConstantOp op) { constants.push_back(op); });
    for (arith::ConstantOp op : constants)
      packConstant(op, panelWidth);
  }
};
} // namespace
