//===- MoEOps.td - Operations of the moe dialect -----------*- tablegen -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_TD
#define MOE_DIALECT_MOE_IR_MOEOPS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "moe/Dialect/MoE/IR/MoEAttrs.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/IR/OpAsmInterface.td"

def MoE_FloatTensor : RankedTensorOf<[AnyFloat]>;
def MoE_IndexTensor : RankedTensorOf<[I32, I64]>;
def MoE_WeightTensor : RankedTensorOf<[AnyFloat]>;

//===----------------------------------------------------------------------===//
// moe.layer
//===----------------------------------------------------------------------===//

def MoE_LayerOp : MoE_Op<"layer", [Pure, AttrSizedOperandSegments]> {
  let summary = "a whole Mixture-of-Experts block";
  let description = [{
    The whole MoE block as importers produce it: hidden states `x [T, H]` are
    routed by `router [H, E]` (logits `x·router`) under the `routing` recipe,
    each token's chosen experts run the FFN described by `expert`, and their
    outputs are mixed with the routing weights. Optional operands:

    - `router_bias [E]`: added to the logits (`x·router + router_bias`, as
      GPT-OSS's router has it).
    - `selection_bias [E]`: added to the scores for the choice only
      (DeepSeek-V3's `e_score_correction_bias`).
    - `gate [E, H, F]` (required for `gated` experts, absent for `ffn`),
      `up [E, H, F]`, `down [E, F, H]`, and biases `gate_bias`/`up_bias`
      `[E, F]` and `down_bias [E, H]`.
    - Shared experts that every token uses (DeepSeekMoE, Qwen-MoE), with the
      same body as the routed ones: `shared_gate`, `shared_up [H, Fs]`,
      `shared_down [Fs, H]` (several shared experts are concatenated along
      Fs) and `shared_scale [H]`, which scales the shared output by
      `sigmoid(x·shared_scale)`.

    The weight matrices (`gate`, `up`, `down` and their shared forms) may be
    stored in a narrower float type than `x` (bf16 or f16 weights of an f32
    layer), the same for all matrices of an FFN; they are computed in `x`'s
    type. Biases, the router and the results have `x`'s type.

    `moe-expand` rewrites it into `moe.route`, `moe.dispatch`, `moe.experts`,
    `moe.shared_experts` and `moe.combine`.

    Example (Mixtral-style, 8 experts, top-2):
    ```mlir
    %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
           up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
           {expert = #moe.expert<gated, silu>,
            routing = #moe.routing<k = 2, renormalize = true>}
           : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_FloatTensor:$router,
    Optional<MoE_FloatTensor>:$router_bias,
    Optional<MoE_FloatTensor>:$selection_bias,
    Optional<MoE_WeightTensor>:$gate,
    MoE_WeightTensor:$up,
    MoE_WeightTensor:$down,
    Optional<MoE_FloatTensor>:$gate_bias,
    Optional<MoE_FloatTensor>:$up_bias,
    Optional<MoE_FloatTensor>:$down_bias,
    Optional<MoE_WeightTensor>:$shared_gate,
    Optional<MoE_WeightTensor>:$shared_up,
    Optional<MoE_WeightTensor>:$shared_down,
    Optional<MoE_FloatTensor>:$shared_scale,
    MoE_RoutingAttr:$routing,
    MoE_ExpertAttr:$expert
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $router
    (`router_bias` `(` $router_bias^ `:` type($router_bias) `)`)?
    (`selection_bias` `(` $selection_bias^ `:` type($selection_bias) `)`)?
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    `up` `(` $up `:` type($up) `)`
    `down` `(` $down `:` type($down) `)`
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`up_bias` `(` $up_bias^ `:` type($up_bias) `)`)?
    (`down_bias` `(` $down_bias^ `:` type($down_bias) `)`)?
    (`shared_gate` `(` $shared_gate^ `:` type($shared_gate) `)`)?
    (`shared_up` `(` $shared_up^ `:` type($shared_up) `)`)?
    (`shared_down` `(` $shared_down^ `:` type($shared_down) `)`)?
    (`shared_scale` `(` $shared_scale^ `:` type($shared_scale) `)`)?
    attr-dict `:` `(` type($input) `,` type($router) `)` `->` type($result)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts();
    bool hasSharedExperts() { return getSharedUp() != nullptr; }
  }];
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

def MoE_RouteOp : MoE_Op<"route", [Pure, AttrSizedOperandSegments]> {
  let summary = "router logits to chosen experts and mixing weights";
  let description = [{
    Applies the `routing` recipe to `logits [T, E]`, giving per token the ids
    of the chosen experts `[T, k]` (i32 or i64) and their mixing weights
    `[T, k]`. The ids of a token are in decreasing order of selection score.
    With dynamic k (`threshold`), unused slots hold id -1 and weight 0.
    `selection_bias [E]`, when present, is added to the scores for the choice
    only; the weights come from the unbiased scores.
    `token_groups [T]` gives each token's group for a recipe with
    `expert_groups` (and is required by it). `residual [T, E]` is a gating
    residual (MoE++): the routing sees `logits + residual`, where `residual`
    is the previous layer's routing logits (with their own residual), so a
    stack of layers threads them.

    Example:
    ```mlir
    %ids, %w = moe.route %logits {routing = #moe.routing<k = 2>}
        : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$logits,
    Optional<MoE_FloatTensor>:$selection_bias,
    Optional<MoE_IndexTensor>:$token_groups,
    Optional<MoE_FloatTensor>:$residual,
    MoE_RoutingAttr:$routing
  );
  let results = (outs MoE_IndexTensor:$expert_ids, MoE_FloatTensor:$weights);
  let assemblyFormat = [{
    $logits (`selection_bias` `(` $selection_bias^ `:` type($selection_bias) `)`)?
    (`token_groups` `(` $token_groups^ `:` type($token_groups) `)`)?
    (`residual` `(` $residual^ `:` type($residual) `)`)?
    attr-dict `:` type($logits) `->` type($expert_ids) `,` type($weights)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def MoE_GateOp : MoE_Op<"gate", [Pure, AttrSizedOperandSegments]> {
  let summary = "fused router matmul and routing";
  let description = [{
    `moe.route` applied to the logits `input·router (+ router_bias)`,
    computed per block of tokens so that the `[T, E]` logits never reach
    memory beyond a tile. `moe-fuse-gating` forms it from a router matmul
    (into zeros, or into `router_bias [E]` broadcast over the tokens) feeding
    a `moe.route`. `token_groups` and `residual` are those of `moe.route`.

    Example:
    ```mlir
    %ids, %w = moe.gate %x, %router {routing = #moe.routing<k = 2>}
        : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_FloatTensor:$router,
    Optional<MoE_FloatTensor>:$router_bias,
    Optional<MoE_FloatTensor>:$selection_bias,
    Optional<MoE_IndexTensor>:$token_groups,
    Optional<MoE_FloatTensor>:$residual,
    MoE_RoutingAttr:$routing
  );
  let results = (outs MoE_IndexTensor:$expert_ids, MoE_FloatTensor:$weights);
  let assemblyFormat = [{
    $input `,` $router
    (`router_bias` `(` $router_bias^ `:` type($router_bias) `)`)?
    (`selection_bias` `(` $selection_bias^ `:` type($selection_bias) `)`)?
    (`token_groups` `(` $token_groups^ `:` type($token_groups) `)`)?
    (`residual` `(` $residual^ `:` type($residual) `)`)?
    attr-dict `:` `(` type($input) `,` type($router) `)` `->`
    type($expert_ids) `,` type($weights)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

def MoE_DispatchOp : MoE_Op<"dispatch", [Pure]> {
  let summary = "the token permutation that groups rows by expert";
  let description = [{
    A counting sort of the `[T, k]` assignments by expert. Results:

    - `token_indices [R]`: the token of each row of the permuted order; the
      rows of expert `e` are `[expert_offsets[e], expert_offsets[e+1])`, in
      token order. Rows that are padding hold -1.
    - `expert_offsets [E + 1]`: where each expert's rows start;
      `expert_offsets[E]` is the number of rows in use.
    - `positions [T, k]`: the row of each assignment, or -1 where the
      assignment has id -1 or was dropped for capacity.

    `R` is `T * k` rounded up with `E * (block_size - 1)` rows of padding when
    `block_size` > 1 (each expert's row count is then a multiple of
    `block_size`, for GEMM tiles). With `capacity_factor` > 0 at most
    `ceil(capacity_factor * T * k / E)` assignments are kept per expert, the
    first in token order; with `capacity` > 0 at most `capacity` (a fixed
    count, whatever T). At most one of the two is set.

    Example:
    ```mlir
    %tok, %off, %pos = moe.dispatch %ids {num_experts = 8}
        : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
    ```
  }];
  let arguments = (ins
    MoE_IndexTensor:$expert_ids,
    ConfinedAttr<I64Attr, [IntPositive]>:$num_experts,
    DefaultValuedAttr<ConfinedAttr<I64Attr, [IntPositive]>, "1">:$block_size,
    DefaultValuedAttr<F64Attr, "0.0">:$capacity_factor,
    DefaultValuedAttr<ConfinedAttr<I64Attr, [IntNonNegative]>, "0">:$capacity
  );
  let results = (outs
    MoE_IndexTensor:$token_indices,
    MoE_IndexTensor:$expert_offsets,
    MoE_IndexTensor:$positions
  );
  let assemblyFormat = [{
    $expert_ids attr-dict `:` type($expert_ids) `->` type($token_indices) `,`
    type($expert_offsets) `,` type($positions)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    /// The number of permuted rows for a given token count.
    int64_t getNumRows(int64_t numTokens);
  }];
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

class MoE_ExpertsBase<string mnemonic, list<Trait> traits = []>
    : MoE_Op<mnemonic, !listconcat(traits, [AttrSizedOperandSegments])>;

def MoE_ExpertsOp : MoE_ExpertsBase<"experts", [Pure]> {
  let summary = "grouped FFN experts over the permuted rows";
  let description = [{
    For each expert `e` in `[first_expert, first_expert + E)` (E is the
    leading extent of the weights), computes the FFN of `expert` on the input
    rows `input[token_indices[r]]` for `r` in
    `[expert_offsets[e], expert_offsets[e+1])` with the weights of index
    `e - first_expert`, and writes them to those rows of `dest [R, H]`. Other
    rows of `dest` pass through, so several expert ops (FFN experts,
    zero-computation experts, region experts) can fill one buffer. No work is
    done for rows of other experts or padding rows.

    With a `placement` (`moe-plan-placement`), `gate`, `up` and `down` are the
    slot buffers of the layer's expert cache, `[?, H, F]` and `[?, F, H]`:
    each expert with rows is acquired from the cache (loaded on a miss),
    computed from its slot and released; E is the placement's `experts`.
    Biases stay indexed by expert.

    As for `moe.layer`, the weight matrices may be stored in a narrower float
    type than the rows (e.g. bf16 for f32 rows); biases have the rows' type.

    Example:
    ```mlir
    %y = moe.experts %x, %tok, %off into %init
           gate(%wg : tensor<8x64x128xf32>) up(%wu : tensor<8x64x128xf32>)
           down(%wd : tensor<8x128x64xf32>) {expert = #moe.expert<gated, silu>}
           : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>)
           -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_IndexTensor:$token_indices,
    MoE_IndexTensor:$expert_offsets,
    MoE_FloatTensor:$dest,
    Optional<MoE_WeightTensor>:$gate,
    MoE_WeightTensor:$up,
    MoE_WeightTensor:$down,
    Optional<MoE_FloatTensor>:$gate_bias,
    Optional<MoE_FloatTensor>:$up_bias,
    Optional<MoE_FloatTensor>:$down_bias,
    MoE_ExpertAttr:$expert,
    DefaultValuedAttr<ConfinedAttr<I64Attr, [IntNonNegative]>, "0">:$first_expert,
    OptionalAttr<MoE_PlacementAttr>:$placement
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $token_indices `,` $expert_offsets `into` $dest
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    `up` `(` $up `:` type($up) `)`
    `down` `(` $down `:` type($down) `)`
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`up_bias` `(` $up_bias^ `:` type($up_bias) `)`)?
    (`down_bias` `(` $down_bias^ `:` type($down_bias) `)`)?
    attr-dict `:` `(` type($input) `,` type($token_indices) `,`
    type($expert_offsets) `,` type($dest) `)` `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts();
  }];
}

def MoE_ZeroComputationExpertsOp
    : MoE_ExpertsBase<"zero_computation_experts", [Pure]> {
  let summary = "zero, copy and constant experts (MoE++)";
  let description = [{
    Experts that cost no GEMM. Expert `first_expert + i` has kind `kinds[i]`:

    - `zero`: the row is 0.
    - `copy`: the row is the token's input.
    - `constant`: the row is `a1·x + a2·v` with `(a1, a2) = softmax(x·Wc)`,
      where `v [H]` and `Wc [H, 2]` are the `j`-th rows of `values [C, H]`
      and `mix [C, H, 2]`, `j` counting the constant experts before it.

    Rows of other experts pass through from `dest`.

    Example:
    ```mlir
    %y = moe.zero_computation_experts %x, %tok, %off into %dest
           constants(%v, %wc : tensor<1x64xf32>, tensor<1x64x2xf32>)
           {first_expert = 8, kinds = [#moe.zero_computation<zero>,
            #moe.zero_computation<copy>, #moe.zero_computation<constant>]}
           : (tensor<?x64xf32>, tensor<?xi32>, tensor<12xi32>, tensor<?x64xf32>)
           -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_IndexTensor:$token_indices,
    MoE_IndexTensor:$expert_offsets,
    MoE_FloatTensor:$dest,
    Optional<MoE_FloatTensor>:$values,
    Optional<MoE_FloatTensor>:$mix,
    MoE_ZeroComputationKindArrayAttr:$kinds,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$first_expert
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $token_indices `,` $expert_offsets `into` $dest
    (`constants` `(` $values^ `,` $mix `:` type($values) `,` type($mix) `)`)?
    attr-dict `:` `(` type($input) `,` type($token_indices) `,`
    type($expert_offsets) `,` type($dest) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_GenericExpertsOp : MoE_Op<"generic_experts", [
    SingleBlock, RecursiveMemoryEffects]> {
  let summary = "experts given by a region (region form)";
  let description = [{
    Experts whose computation is any IR: for each expert `e` in
    `[first_expert, first_expert + num_experts)` the region is applied to the
    expert's input rows (a `tensor<?xH>` of the rows gathered through
    `token_indices`) and the local expert index `e - first_expert`; it yields
    the output rows, which are written to the expert's rows of `dest`. Weights
    are captured from above. Use it for convolution or attention experts.

    Example:
    ```mlir
    %y = moe.generic_experts %x, %tok, %off into %dest
           {first_expert = 0, num_experts = 4}
           : (tensor<?x64xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x64xf32>)
           -> tensor<?x64xf32> {
    ^bb0(%rows: tensor<?x64xf32>, %e: index):
      %r = math.tanh %rows : tensor<?x64xf32>
      moe.yield %r : tensor<?x64xf32>
    }
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_IndexTensor:$token_indices,
    MoE_IndexTensor:$expert_offsets,
    MoE_FloatTensor:$dest,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$first_expert,
    ConfinedAttr<I64Attr, [IntPositive]>:$num_experts
  );
  let results = (outs MoE_FloatTensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $input `,` $token_indices `,` $expert_offsets `into` $dest
    attr-dict `:` `(` type($input) `,` type($token_indices) `,`
    type($expert_offsets) `,` type($dest) `)` `->` type($result) $body
  }];
  let hasRegionVerifier = 1;
  let hasVerifier = 1;
}

def MoE_YieldOp : MoE_Op<"yield", [Pure, Terminator, ReturnLike,
                                    HasParent<"GenericExpertsOp">]> {
  let summary = "yields an expert's output rows";
  let description = [{
    Terminates the body of `moe.generic_experts` with the expert's output
    rows, one per input row.

    Example: `moe.yield %rows : tensor<?x64xf32>`
  }];
  let arguments = (ins MoE_FloatTensor:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

def MoE_SharedExpertsOp : MoE_Op<"shared_experts",
                                 [Pure, AttrSizedOperandSegments]> {
  let summary = "dense FFN experts that every token uses";
  let description = [{
    The shared experts of DeepSeekMoE and Qwen-MoE: the FFN of `expert` on
    every token with `up [H, Fs]`, `down [Fs, H]` (and `gate [H, Fs]` for
    gated experts). Several shared experts are one FFN concatenated along
    Fs. With `scale [H]` the output is multiplied by `sigmoid(x·scale)`.

    Example:
    ```mlir
    %s = moe.shared_experts %x gate(%sg : tensor<64x256xf32>)
           up(%su : tensor<64x256xf32>) down(%sd : tensor<256x64xf32>)
           {expert = #moe.expert<gated, silu>}
           : tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    Optional<MoE_WeightTensor>:$gate,
    MoE_WeightTensor:$up,
    MoE_WeightTensor:$down,
    Optional<MoE_FloatTensor>:$scale,
    MoE_ExpertAttr:$expert
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input
    (`gate` `(` $gate^ `:` type($gate) `)`)?
    `up` `(` $up `:` type($up) `)`
    `down` `(` $down `:` type($down) `)`
    (`scale` `(` $scale^ `:` type($scale) `)`)?
    attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Combine
//===----------------------------------------------------------------------===//

def MoE_CombineOp : MoE_Op<"combine", [Pure]> {
  let summary = "per-token weighted reduction of the expert outputs";
  let description = [{
    `result[t] = addend[t] + sum_i weights[t, i] * rows[positions[t, i]]`
    over the `k` assignments of token `t`, skipping positions of -1. A
    reduction per token, deterministic and free of atomics (never a
    scatter-add). `addend` (e.g. the shared experts' output) is optional.

    Example:
    ```mlir
    %out = moe.combine %rows, %pos, %w
        : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$rows,
    MoE_IndexTensor:$positions,
    MoE_FloatTensor:$weights,
    Optional<MoE_FloatTensor>:$addend
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $rows `,` $positions `,` $weights (`addend` `(` $addend^ `:` type($addend) `)`)?
    attr-dict `:` `(` type($rows) `,` type($positions) `,` type($weights) `)`
    `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Placement and movement
//===----------------------------------------------------------------------===//

def MoE_ExpertSlotsOp : MoE_Op<"expert_slots", [Pure]> {
  let summary = "the expert-cache slot buffers that back a weight tensor";
  let description = [{
    Stands for the slot buffers `[?, d1, d2]` of layer `layer`'s expert
    cache that hold slices of `weights [E, d1, d2]`. Inserted by
    `moe-plan-placement` for the weights of a placed `moe.experts`;
    `moe-compile` realizes it: `weights` must be a weight of the entry
    function, which the runtime then reads from the weights file into the
    slots instead of mapping it whole.

    Example:
    ```mlir
    %slots = moe.expert_slots %w {layer = 0 : i64}
        : tensor<64x1024x512xf32> -> tensor<?x1024x512xf32>
    ```
  }];
  let arguments = (ins
    MoE_WeightTensor:$weights,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$layer
  );
  let results = (outs MoE_WeightTensor:$slots);
  let assemblyFormat = [{
    $weights attr-dict `:` type($weights) `->` type($slots)
  }];
  let hasVerifier = 1;
}

def MoE_PrefetchOp : MoE_Op<"prefetch",
    [MemoryEffects<[MemWrite<DefaultResource>]>]> {
  let summary = "asks the expert cache to load experts ahead of use";
  let description = [{
    A hint to the runtime's expert cache: the experts `expert_ids [T, k]`
    (entries of -1 are skipped) of layer `layer` are likely to run soon, so
    loads of the non-resident ones start now on the cache's I/O thread.
    Inserted by `moe-insert-prefetch` with ids predicted by applying a later
    layer's router early (pre-gating). It never changes results.

    Example:
    ```mlir
    moe.prefetch %ids {layer = 1 : i64} : tensor<?x8xi32>
    ```
  }];
  let arguments = (ins
    MoE_IndexTensor:$expert_ids,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$layer
  );
  let assemblyFormat = "$expert_ids attr-dict `:` type($expert_ids)";
}

def MoE_TraceRoutingOp : MoE_Op<"trace_routing",
    [MemoryEffects<[MemWrite<DefaultResource>]>]> {
  let summary = "records a layer's routing decisions in the runtime profile";
  let description = [{
    Reports the chosen experts `expert_ids [T, k]` of layer `layer` (of
    `num_experts` experts) to the runtime, which counts, per layer, how often
    each expert is chosen and how often expert j of this layer follows expert
    i of the previous layer for the same token (`moe-run --profile`).
    Inserted by `moe-instrument-routing` (`moe-compile --instrument-routing`).

    Example:
    ```mlir
    moe.trace_routing %ids {layer = 0 : i64, num_experts = 8 : i64}
        : tensor<?x2xi32>
    ```
  }];
  let arguments = (ins
    MoE_IndexTensor:$expert_ids,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$layer,
    ConfinedAttr<I64Attr, [IntPositive]>:$num_experts
  );
  let assemblyFormat = "$expert_ids attr-dict `:` type($expert_ids)";
}

//===----------------------------------------------------------------------===//
// Hash routing
//===----------------------------------------------------------------------===//

def MoE_HashRouteOp : MoE_Op<"hash_route", [Pure]> {
  let summary = "token ids to experts through a fixed hash (hash layers)";
  let description = [{
    Hash routing (Roller et al. 2021): each token goes to one expert picked
    from its token id, with weight 1, and no router is learned. With `table
    [V]`, token `t` goes to expert `table[token_ids[t]]`; without it, to
    `((id * 2654435761) mod 2^32) mod E` (Knuth's multiplicative hash) for
    `E = num_experts`. A negative id, an id past the table or a table entry
    outside `[0, E)` gives expert id -1 and weight 0: the token is routed
    nowhere. The results `[T, 1]` feed `moe.dispatch` and `moe.combine`
    like those of `moe.route`.

    Example:
    ```mlir
    %ids, %w = moe.hash_route %token_ids table(%table : tensor<32000xi32>)
        {num_experts = 8} : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
    ```
  }];
  let arguments = (ins
    MoE_IndexTensor:$token_ids,
    Optional<MoE_IndexTensor>:$table,
    ConfinedAttr<I64Attr, [IntPositive]>:$num_experts
  );
  let results = (outs MoE_IndexTensor:$expert_ids, MoE_FloatTensor:$weights);
  let assemblyFormat = [{
    $token_ids (`table` `(` $table^ `:` type($table) `)`)?
    attr-dict `:` type($token_ids) `->` type($expert_ids) `,` type($weights)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Quantized experts
//===----------------------------------------------------------------------===//

def MoE_QuantizedWeightTensor : RankedTensorOf<[I8]>;

def MoE_QuantizedExpertsOp : MoE_ExpertsBase<"quantized_experts", [Pure]> {
  let summary = "grouped FFN experts with int8 or int4 weights";
  let description = [{
    `moe.experts` with weights quantized to `bits` (8 or 4) bits per value,
    blockwise along the reduction dimension, in ONNX Runtime's QMoE layout:
    each matrix is stored output-row major, `[E, N, K * bits / 8]` bytes
    (`i8`, read as unsigned codes `q`; with 4 bits two codes per byte, the
    low nibble first), with scales `[E, N, K / B]` of the activations'
    element type for blocks of `B` consecutive reduction indices (`B = K`:
    one scale per row). The weight is `W[n, k] = s[n, k / B] * (q[n, k] -
    zp[n, k / B])`: the zero points are the optional `*_zero_points`
    tensors, `[E, N, K / B]` like the scales and of their type, holding the
    integer code of each block's zero (ONNX Runtime's QMoE inputs 11-12,
    unpacked); a matrix without them has the symmetric zero point `2^(bits
    - 1)` (128 for int8, 8 for int4), as ONNX Runtime's QMoE default.

    Shapes (`N x K` is output x reduction): `gate`, `up` are `[E, F, H]`
    matrices and `down` is `[E, H, F]`, i.e. the transposes of the
    `moe.experts` weights. Rows, routing, biases and `first_expert` are as
    for `moe.experts`. Experts with different bit widths are separate ops
    over consecutive expert ranges filling one `dest`.

    Lowering dequantizes inside the GEMM loop (per register tile, from the
    bytes), never a dequantized copy of the weights.

    Example (int4, blocks of 32 along H = 64 and F = 128):
    ```mlir
    %y = moe.quantized_experts %x, %tok, %off into %init
           gate(%qg, %sg : tensor<8x128x32xi8>, tensor<8x128x2xf32>)
           up(%qu, %su : tensor<8x128x32xi8>, tensor<8x128x2xf32>)
           down(%qd, %sd : tensor<8x64x64xi8>, tensor<8x64x4xf32>)
           {bits = 4, expert = #moe.expert<gated, silu>}
           : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>)
           -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_IndexTensor:$token_indices,
    MoE_IndexTensor:$expert_offsets,
    MoE_FloatTensor:$dest,
    Optional<MoE_QuantizedWeightTensor>:$gate,
    Optional<MoE_FloatTensor>:$gate_scales,
    MoE_QuantizedWeightTensor:$up,
    MoE_FloatTensor:$up_scales,
    MoE_QuantizedWeightTensor:$down,
    MoE_FloatTensor:$down_scales,
    Optional<MoE_FloatTensor>:$gate_bias,
    Optional<MoE_FloatTensor>:$up_bias,
    Optional<MoE_FloatTensor>:$down_bias,
    Optional<MoE_FloatTensor>:$gate_zero_points,
    Optional<MoE_FloatTensor>:$up_zero_points,
    Optional<MoE_FloatTensor>:$down_zero_points,
    MoE_ExpertAttr:$expert,
    I64Attr:$bits,
    DefaultValuedAttr<ConfinedAttr<I64Attr, [IntNonNegative]>, "0">:$first_expert
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $token_indices `,` $expert_offsets `into` $dest
    (`gate` `(` $gate^ `,` $gate_scales `:` type($gate) `,` type($gate_scales) `)`)?
    `up` `(` $up `,` $up_scales `:` type($up) `,` type($up_scales) `)`
    `down` `(` $down `,` $down_scales `:` type($down) `,` type($down_scales) `)`
    (`gate_bias` `(` $gate_bias^ `:` type($gate_bias) `)`)?
    (`up_bias` `(` $up_bias^ `:` type($up_bias) `)`)?
    (`down_bias` `(` $down_bias^ `:` type($down_bias) `)`)?
    (`gate_zero_points` `(` $gate_zero_points^ `:` type($gate_zero_points) `)`)?
    (`up_zero_points` `(` $up_zero_points^ `:` type($up_zero_points) `)`)?
    (`down_zero_points` `(` $down_zero_points^ `:` type($down_zero_points) `)`)?
    attr-dict `:` `(` type($input) `,` type($token_indices) `,`
    type($expert_offsets) `,` type($dest) `)` `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts();
    /// The symmetric zero point, of matrices without zero points: 128 for 8
    /// bits, 8 for 4 bits.
    int64_t getZeroPoint() { return int64_t(1) << (getBits() - 1); }
  }];
}

#endif // MOE_DIALECT_MOE_IR_MOEOPS_TD
