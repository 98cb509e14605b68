//===- Passes.td - Transformations of the moe dialect ------*- tablegen -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEExpand : Pass<"moe-expand"> {
  let summary = "Split moe.layer into routing, dispatch, experts and combine";
  let description = [{
    Rewrites every `moe.layer` into its explicit routing plan: the router
    matmul (`linalg.matmul`), `moe.route`, `moe.dispatch`, `moe.experts` over
    the permuted rows, `moe.shared_experts` when the layer has shared experts,
    and `moe.combine`.

    Before:
    ```mlir
    %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
           up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
           {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2>}
           : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
    ```
    After:
    ```mlir
    %logits = linalg.matmul ins(%x, %router : ...) outs(%zero : tensor<?x8xf32>)
    %ids, %w = moe.route %logits {routing = #moe.routing<k = 2>} : ...
    %tok, %off, %pos = moe.dispatch %ids {num_experts = 8} : ...
    %rows = moe.experts %x, %tok, %off into %empty gate(...) up(...) down(...)
    %y = moe.combine %rows, %pos, %w : ...
    ```
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MoEFuseGating : Pass<"moe-fuse-gating"> {
  let summary = "Fuse the router matmul into the routing";
  let description = [{
    Replaces a router matmul `x·router` (a `linalg.matmul` into a zero-filled
    tensor) whose only user is a `moe.route` with one `moe.gate`, so that the
    `[T, E]` logits are computed per token block and never reach memory
    beyond a tile.

    Before:
    ```mlir
    %zero = linalg.fill ins(%c0 : f32) outs(%empty : tensor<?x8xf32>) -> tensor<?x8xf32>
    %logits = linalg.matmul ins(%x, %router : tensor<?x64xf32>, tensor<64x8xf32>)
                            outs(%zero : tensor<?x8xf32>) -> tensor<?x8xf32>
    %ids, %w = moe.route %logits {routing = #moe.routing<k = 2>} : ...
    ```
    After:
    ```mlir
    %ids, %w = moe.gate %x, %router {routing = #moe.routing<k = 2>} : ...
    ```
  }];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
