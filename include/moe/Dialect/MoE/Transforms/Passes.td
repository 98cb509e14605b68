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

def MoEWidenNarrowFloats
    : Pass<"moe-widen-narrow-floats", "::mlir::func::FuncOp"> {
  let summary = "Compute moe ops on f16/bf16 tensors in f32";
  let description = [{
    For the CPU, which has no 16-bit float arithmetic to speak of: every moe
    op with f16 or bf16 activations (operands other than the expert weight
    matrices, or results) computes in f32 instead. Its activation operands,
    router and biases are extended with `arith.extf`, its float results
    become f32 and are rounded back with `arith.truncf`, so the function's
    types, and the rounding of every op's results, stay as they were. The
    expert weight matrices keep their 16-bit type: the expert GEMMs read
    them as they are (half the bytes of f32) and widen each vector they load.

    Before:
    ```mlir
    %y = moe.experts %x, %tok, %off into %init up(%wu : tensor<8x64x128xbf16>)
           down(%wd : tensor<8x128x64xbf16>) {expert = #moe.expert<ffn, gelu>}
           : (tensor<?x64xbf16>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xbf16>)
           -> tensor<?x64xbf16>
    ```
    After:
    ```mlir
    %x32 = arith.extf %x : tensor<?x64xbf16> to tensor<?x64xf32>
    %init32 = arith.extf %init : tensor<?x64xbf16> to tensor<?x64xf32>
    %y32 = moe.experts %x32, %tok, %off into %init32
           up(%wu : tensor<8x64x128xbf16>) down(%wd : tensor<8x128x64xbf16>)
           {expert = #moe.expert<ffn, gelu>} : ... -> tensor<?x64xf32>
    %y = arith.truncf %y32 : tensor<?x64xf32> to tensor<?x64xbf16>
    ```

    `moe.generic_experts`, whose region computes in the element type, is
    left alone (convert-moe-to-linalg rejects it with 16-bit floats).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def MoEPackExpertWeights
    : Pass<"moe-pack-expert-weights", "::mlir::func::FuncOp"> {
  let summary = "Store constant expert weight matrices in column panels";
  let description = [{
    Rewrites each constant (`arith.constant` with dense or `dense_resource`
    elements) weight matrix of `moe.layer`, `moe.experts` and
    `moe.shared_experts` (`gate`, `up`, `down` and the shared ones), `[E, K,
    N]` or `[K, N]`, as a constant in panels of `panel-width` columns,
    `[E, N/P, K, P]` or `[N/P, K, P]`, viewed through a `linalg.unpack`:

    ```mlir
    %w = linalg.unpack %packed outer_dims_perm = [0, 2, 1]
        inner_dims_pos = [2] inner_tiles = [32] into %empty
        : tensor<64x16x1024x32xf32> -> tensor<64x1024x512xf32>
    ```

    `moe-cpu-tile-and-vectorize` reads the panels in place, so a register
    tile of C columns streams C/P contiguous runs of memory instead of K
    strided rows (a matrix-vector product over strided rows reaches about
    half the memory bandwidth of one over panels on an AMD EPYC). moe-compile
    runs it for the CPU target before the constants move to the weights file,
    so the file holds the panels. A matrix whose N is not a multiple of the
    panel width, or a weight used by anything else, is left alone.
  }];
  let options = [
    Option<"panelWidth", "panel-width", "int64_t", /*default=*/"32",
           "Columns per panel (a multiple of 16 lanes of f32)">
  ];
  let dependentDialects = [
    "::mlir::linalg::LinalgDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MoECPUTileAndVectorize
    : Pass<"moe-cpu-tile-and-vectorize", "::mlir::func::FuncOp"> {
  let summary = "Tile, parallelize and vectorize the linalg ops for the CPU";
  let description = [{
    Prepares the tensor-level linalg ops that `convert-moe-to-linalg`
    produces for a CPU with wide vectors (AVX-512 on the target). Every vector
    it creates is 1-d, so the result lowers to LLVM without n-d vector
    unrolling:

    - `linalg.matmul` with static K and N: an `scf.forall` over blocks of
      `parallel-tile-sizes` output columns (and rows, when the first size is
      set), one block per task. Inside a block, an `scf.for` walks K in
      blocks of `reduction-tile-size` (so that a block of weights stays in
      the L2 cache while every row tile uses it); inside it, `scf.for` loops
      walk the rows in register tiles of `register-tile-sizes` (M x N), then
      tiles of half as many rows and as many accumulators (so up to twice,
      four times... the columns) for the rows left over, down to single
      rows: a dynamic M (the rows of an expert) needs no masks and no
      padding. Across a block's columns a row of tiles is as many whole
      tiles as fit and one narrower tile for the columns left over. A register tile keeps its accumulators in 1-d vectors of
      `vector-size` lanes carried by the K loop (`scf.for` iter_args); per k
      it loads one vector per column block of the right-hand side, broadcasts
      one element per row of the left-hand side and issues one `vector.fma`
      per accumulator. The weights (right-hand side) are read in place: no
      packing at run time. Weights in column panels (a `linalg.unpack` that
      `moe-pack-expert-weights` made, possibly sliced) are read from the
      panels, and the unpack goes away; an unpack that something else reads
      becomes a transpose and copy. Tiles of 4 rows or more, which spend
      long enough on each weight vector that the hardware prefetcher falls
      behind, prefetch their panels `prefetch-distance` rows of K ahead
      (`memref.prefetch`). With one row (a token), this is a
      matrix-vector product that streams each weight row (or panel) once.
    - A matmul on weights in panels with at most `single-pass-rows` rows (a
      run-time `scf.if` and `scf.index_switch` on a dynamic M) is instead one
      pass over the weights: one row of register tiles exactly as high as the
      rows, each walking all of K (no K blocks), as wide as 28 accumulators
      allow (16 registers' worth below 512-bit vectors) up to 8 vectors: 1-3
      rows 128 columns, 4-7 rows 64, 8 rows 32. K blocks serve the rows left
      over after the tallest tiles (5 = 4 + 1 rows read the block twice);
      with one pass they only cut each panel's stream short.
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
    becomes an `scf.forall` over 14 blocks of 256 columns; each block loops
    over 4 blocks of 256 rows of K, and in each over 8x32 register tiles (16
    `vector<16xf32>` accumulators), then 4x64, 2x128 and 1x256 tiles for the
    last rows, each with a K loop of `vector.fma`.
  }];
  let options = [
    ListOption<"parallelTileSizes", "parallel-tile-sizes", "int64_t",
               "M,N block of a matmul per parallel task (0 = untiled); "
               "default 0,256">,
    Option<"reductionTileSize", "reduction-tile-size", "int64_t",
           /*default=*/"256",
           "K block of a matmul, a divisor of K at most this (0 = untiled)">,
    ListOption<"registerTileSizes", "register-tile-sizes", "int64_t",
               "M,N register tile of a matmul; default 8,32">,
    Option<"vectorSize", "vector-size", "int64_t", /*default=*/"16",
           "Lanes of an f32 vector (matmul accumulators, elementwise rows)">,
    Option<"prefetchDistance", "prefetch-distance", "int64_t",
           /*default=*/"32",
           "K steps ahead that register tiles of 4 or more rows prefetch "
           "weight panels (0 = never)">,
    Option<"singlePassRows", "single-pass-rows", "int64_t", /*default=*/"8",
           "Up to this many rows, a matmul on weights in panels is one pass "
           "of tiles exactly as high as its rows over all of K (0 = never, "
           "at most 16)">,
    Option<"approximateMath", "approximate-math", "bool", /*default=*/"true",
           "Replace f32 exp, tanh and erf by polynomial approximations">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MoECPULowerVectors
    : Pass<"moe-cpu-lower-vectors", "::mlir::func::FuncOp"> {
  let summary = "Lower the vector ops of the CPU pipeline to 1-d vectors";
  let description = [{
    Runs after bufferization and before `convert-vector-to-llvm`, which only
    converts transfers, inserts and extracts of 1-d vectors well. It drops
    unit dimensions (a `vector<1x16xf32>` row becomes a `vector<16xf32>`),
    and lowers in-bounds transfers with a minor identity map to
    `vector.load` and `vector.store` (broadcasts and shape casts with them). A vector op of rank 2 or more that is left is an error
    that names the op, instead of a partial conversion to LLVM.

    Example:
    ```mlir
    vector.transfer_write %zero, %m[%c0, %c0] {in_bounds = [true, true]}
        : vector<1x16xf32>, memref<1x16xf32, strided<[512, 1], offset: ?>>
    ```
    becomes
    ```mlir
    %row = memref.subview %m[0, 0] [1, 16] [1, 1] : ... to memref<16xf32, ...>
    vector.store %zero16, %row[%c0] : memref<16xf32, ...>, vector<16xf32>
    ```
  }];
  let dependentDialects = [
    "::mlir::memref::MemRefDialect",
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

def MoELowerRuntimeChecks
    : Pass<"moe-lower-runtime-checks", "::mlir::ModuleOp"> {
  let summary = "Turn failed run-time checks into an error of the call";
  let description = [{
    Lowers every `cf.assert` (the ONNX importer's run-time shape checks) to a
    branch that, where the condition is false, calls the runtime hook
    `moe_rt_fail(message)` (docs/CompiledModelABI.md) and does not return:
    the runtime ends the model call there and `moe_model_invoke` returns the
    message as its error, where upstream's lowering would print it and abort
    the process. The message is a private constant string. Only host code is
    lowered: a `cf.assert` in a nested kernel module (`gpu.module`) is left to
    the GPU lowering. The CPU pipeline runs it before the conversion to LLVM
    (which would lower `cf.assert` to an abort); the CUDA pipeline does not,
    since its host code runs inside the runtime's CUDA wrappers, whose frames
    must not be skipped (docs/CompiledModelABI.md).

    Example: `cf.assert %ok, "shapes differ"` becomes
    `cf.cond_br %ok, ^continue, ^fail` with `^fail` calling
    `llvm.call @moe_rt_fail(%message)` then `llvm.unreachable`.
  }];
  let dependentDialects = [
    "::mlir::cf::ControlFlowDialect",
    "::mlir::LLVM::LLVMDialect"
  ];
}

//===----------------------------------------------------------------------===//
// Placement, prefetch and profiling
//===----------------------------------------------------------------------===//

def MoEPlanPlacement : Pass<"moe-plan-placement", "::mlir::ModuleOp"> {
  let summary = "Plan which experts stay in fast memory under a byte budget";
  let description = [{
    Numbers the MoE layers of the module in program order (each
    `moe.experts` fed by a `moe.dispatch` of a `moe.route` or `moe.gate`)
    and fits their expert weights (gate, up and down matrices) into `budget`
    bytes of fast memory. When everything fits nothing changes. Otherwise
    each layer that does not fit whole gets an expert cache: `k` slots (one
    token's experts, the minimum working set) plus an equal share of what is
    left of the budget, as a `#moe.placement` on its `moe.experts`, whose
    weight matrices become `moe.expert_slots` views. With a routing `profile`
    (`moe-run --profile`), all but `k` of a layer's slots are pinned to the
    experts with the highest score: how often the expert is chosen plus how
    often it follows the previous layer's pinned experts (inter-layer
    affinity, as ExFlow). Without one, no expert is pinned (an LRU cache).

    A budget below the minimum working set (`k` experts of every layer) is
    an error that says how many bytes are needed.

    With `devices` > 1 the plan is for expert parallelism: every layer's
    experts are spread over the devices, an equal number on each (the
    first devices get one more when they do not divide), and `budget` is
    the fast memory of each device. Without a profile a device gets a
    contiguous range of experts. With one, layer 0's experts are balanced
    by how often they are chosen, and each later layer's experts go where
    the tokens come from: expert `j` to the device whose experts of the
    layer before most often precede `j` (inter-layer affinity, ExFlow),
    then pairwise swaps that keep more tokens on their device, as long as
    no device takes more than 10% above the mean load (or the load of the
    busiest expert). With group-limited routing (`n_group`) whose groups
    the devices share evenly, whole groups are placed, so that a token
    reaches at most `topk_group` devices. Every layer gets a
    `#moe.placement` with `devices`
    (the home device of each expert) and a cache of `slots` slots per
    device. moe-mlir's runtime runs a layer on one device: such a plan is
    for inspection and for expert-parallel engines, written by `plan-file`.

    `plan-file` writes the plan as JSON (docs/ExpertCache.md): per layer
    the slots, pinned experts and devices and, with a profile, each
    device's load and the share of consecutive-layer expert pairs that
    change device, against contiguous ranges.

    After (budget: 2 of 8 experts):
    ```mlir
    %wg = moe.expert_slots %gate {layer = 0 : i64}
        : tensor<8x64x128xf32> -> tensor<?x64x128xf32>
    ...
    %rows = moe.experts %x, %tok, %off into %e gate(%wg : ...) up(%wu : ...)
        down(%wd : ...) {expert = #moe.expert<gated, silu>,
        placement = #moe.placement<layer = 0, experts = 8, slots = 2>} : ...
    ```
  }];
  let options = [
    Option<"budget", "budget", "int64_t", /*default=*/"-1",
           "Bytes of fast memory for expert weights; -1 keeps all resident">,
    Option<"budgetPercent", "budget-percent", "double", /*default=*/"-1",
           "Or, when not negative, this percentage of all expert bytes">,
    Option<"profile", "profile", "std::string", /*default=*/"",
           "A routing profile (JSON, from moe-run --profile) to pin experts">,
    Option<"devices", "devices", "int64_t", /*default=*/"1",
           "Devices to spread each layer's experts over (expert parallelism); "
           "the budget is per device">,
    Option<"planFile", "plan-file", "std::string", /*default=*/"",
           "Write the plan to this JSON file">
  ];
}

def MoEInsertPrefetch : Pass<"moe-insert-prefetch", "::mlir::ModuleOp"> {
  let summary = "Pre-gating: predict later layers' experts and prefetch them";
  let description = [{
    For each MoE layer `l` whose routing is a `moe.gate`, and each later
    layer `l + d` (`d` in `[1, depth]`) with a `#moe.placement` and a
    `moe.gate`, applies layer `l + d`'s router and routing to layer `l`'s
    router input right after layer `l`'s gate, and issues a `moe.prefetch`
    of the predicted experts (Pre-gated MoE, Read-ME), so their loads overlap
    layer `l`'s expert computation. A later router that is not available at
    that point (defined after it) is skipped. Predictions never change
    results: a mispredicted expert is loaded on demand.
  }];
  let options = [
    Option<"depth", "depth", "int64_t", /*default=*/"1",
           "How many layers ahead to predict">
  ];
}

def MoEInstrumentRouting
    : Pass<"moe-instrument-routing", "::mlir::ModuleOp"> {
  let summary = "Record every layer's routing for a profile";
  let description = [{
    Adds a `moe.trace_routing` after the routing of every MoE layer (numbered
    as `moe-plan-placement` numbers them), so that `moe-run --profile=FILE`
    writes how often each expert is chosen and which experts follow which
    across consecutive layers: the profile `moe-plan-placement` reads.
  }];
}

def MoEPruneExperts : Pass<"moe-prune-experts", "::mlir::ModuleOp"> {
  let summary = "Drop the least-used experts of each moe.layer";
  let description = [{
    Keeps the `keep` most used experts of every `moe.layer` (in the module's
    walk order) according to a routing profile, a JSON file
    `{"layers": [{"counts": [c0, c1, ...]}, ...]}` with one entry per layer and
    one count per expert. Ties keep the lower expert index; kept experts keep
    their order. The dropped experts' slices of the expert weights, biases and
    selection bias, and their router columns, are removed (constant weights
    become smaller constants; other weights are sliced with
    `tensor.extract_slice`/`tensor.insert_slice`), so the layer routes among
    the kept experts only. Layers with at most `keep` experts are unchanged.
    The routing recipe is kept, except that expert-choice routing gets
    `k = keep`; group-limited recipes (`n_group`, `expert_groups`) and a `k`
    above `keep` are errors.

    Before (`keep=2`, counts `[5, 0, 9, 1]`):
    ```mlir
    %y = moe.layer %x, %router up(%wu : tensor<4x64x128xf32>)
           down(%wd : tensor<4x128x64xf32>)
           {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
           : (tensor<?x64xf32>, tensor<64x4xf32>) -> tensor<?x64xf32>
    ```
    After (experts 0 and 2):
    ```mlir
    %y = moe.layer %x, %router2 up(%wu2 : tensor<2x64x128xf32>)
           down(%wd2 : tensor<2x128x64xf32>)
           {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
           : (tensor<?x64xf32>, tensor<64x2xf32>) -> tensor<?x64xf32>
    ```
  }];
  let options = [
    Option<"keep", "keep", "int64_t", /*default=*/"0",
           "experts kept per layer">,
    Option<"profile", "profile", "std::string", /*default=*/"",
           "path of the JSON routing profile with per-layer expert counts">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_TD
