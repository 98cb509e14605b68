//===- Passes.td - Conversion passes of moe-mlir -----------*- tablegen -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_PASSES_TD
#define MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// MoEToLinalg
//===----------------------------------------------------------------------===//

def ConvertMoEToLinalg : Pass<"convert-moe-to-linalg"> {
  let summary = "Lower the moe dialect to linalg, scf, tensor, arith and math";
  let description = [{
    Lowers `moe.route`, `moe.gate`, `moe.dispatch`, `moe.experts`,
    `moe.shared_experts`, `moe.zero_computation_experts`,
    `moe.generic_experts` and `moe.combine` to tensor-level IR
    (`moe.layer` must be expanded by `moe-expand` first):

    - routing: the scores of a block of tokens are `linalg.generic` ops over a
      `[block, E]` tile (for `moe.gate` the tile is the router matmul of the
      block, so the logits never leave it), then a per-token top-k loop.
    - dispatch: a counting sort (counts, exclusive prefix sum, stable
      placement in token order) with capacity dropping and block padding.
    - experts: an `scf.for` over the experts; each expert gathers its own
      rows (a dynamic count read from the offsets), runs its GEMMs and
      activation, and inserts the rows into the destination.
    - combine: a per-token reduction over the `k` positions.

    Element types other than f32 and f64 are reported as not supported yet.

    Example:
    ```mlir
    %tok, %off, %pos = moe.dispatch %ids {num_experts = 8}
        : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
    ```
    becomes a few `scf.for` loops over `tensor.extract`/`tensor.insert`.
  }];
  let options = [
    Option<"gateBlockSize", "gate-block-size", "int64_t", /*default=*/"32",
           "Tokens per block of the fused router matmul of moe.gate">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOE_CONVERSION_PASSES_TD
