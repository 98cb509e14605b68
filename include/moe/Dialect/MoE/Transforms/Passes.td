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

def MoECPUTileAndVectorize
    : Pass<"moe-cpu-tile-and-vectorize", "::mlir::func::FuncOp"> {
  let summary = "Tile, parallelize and vectorize the linalg ops for the CPU";
  let description = [{
    Prepares the tensor-level linalg ops that `convert-moe-to-linalg`
    produces for a CPU with wide vectors (AVX-512 on the target):

    - `linalg.matmul`: an `scf.forall` over blocks of the output (the
      `parallel-tile-sizes`, one block per task), an `scf.for` over blocks of
      the reduction dimension (`reduction-tile-size`), then register tiles
      (`register-tile-sizes`, M x N x K) vectorized to `vector.contract`,
      masked where a dimension (the rows of an expert) is dynamic.
    - 2-d elementwise `linalg.generic`, `linalg.fill` and
      `linalg.broadcast` ops: rows of `vector-size` lanes.
    - with `approximate-math`, f32 `math.exp`, `math.tanh` and `math.erf`
      become polynomial approximations (vectorizable, no libm calls).

    Ops it cannot vectorize are left as they are (they lower to loops).

    Example:
    ```mlir
    %c = linalg.matmul ins(%a, %b : tensor<?x1024xf32>, tensor<1024x3584xf32>)
                       outs(%init : tensor<?x3584xf32>) -> tensor<?x3584xf32>
    ```
    becomes an `scf.forall` over 128-column blocks whose body loops over
    8x32 register tiles of `vector.contract`.
  }];
  let options = [
    ListOption<"parallelTileSizes", "parallel-tile-sizes", "int64_t",
               "M,N block of a matmul per parallel task (0 = untiled); "
               "default 0,128">,
    Option<"reductionTileSize", "reduction-tile-size", "int64_t",
           /*default=*/"256", "K block of a matmul (0 = untiled)">,
    ListOption<"registerTileSizes", "register-tile-sizes", "int64_t",
               "M,N,K register tile of a matmul; default 8,32,1">,
    Option<"vectorSize", "vector-size", "int64_t", /*default=*/"16",
           "Lanes of the vectorized elementwise ops">,
    Option<"approximateMath", "approximate-math", "bool", /*default=*/"true",
           "Replace f32 exp, tanh and erf by polynomial approximations">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MoEEmitCInterface : Pass<"moe-emit-c-interface", "::mlir::ModuleOp"> {
  let summary = "Give the public functions a C interface";
  let description = [{
    Adds `llvm.emit_c_interface` to every public `func.func` with a body, so
    that `convert-func-to-llvm` also emits `_mlir_ciface_<name>`, which takes
    memref descriptors by pointer: the entry point a runtime calls.

    Example: `func.func @layer(...)` becomes
    `func.func @layer(...) attributes {llvm.emit_c_interface}`.
  }];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
