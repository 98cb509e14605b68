//===- MoEAttrs.td - Attributes and enums of the moe dialect -*- tablegen -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEATTRS_TD
#define MOE_DIALECT_MOE_IR_MOEATTRS_TD

include "moe/Dialect/MoE/IR/MoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def MoE_ScoringFunc : I32EnumAttr<"ScoringFunc", "how router logits become scores", [
    I32EnumAttrCase<"Softmax", 0, "softmax">,
    I32EnumAttrCase<"Sigmoid", 1, "sigmoid">,
    I32EnumAttrCase<"TopkSoftmax", 2, "topk_softmax">
  ]> {
  let cppNamespace = "::moe";
  let genSpecializedAttr = 0;
}

def MoE_SelectionMode : I32EnumAttr<"SelectionMode",
    "who chooses: tokens their experts, or experts their tokens", [
    I32EnumAttrCase<"TokenChoice", 0, "token_choice">,
    I32EnumAttrCase<"ExpertChoice", 1, "expert_choice">
  ]> {
  let cppNamespace = "::moe";
  let genSpecializedAttr = 0;
}

def MoE_ExpertKind : I32EnumAttr<"ExpertKind", "the body of an FFN expert", [
    I32EnumAttrCase<"Gated", 0, "gated">,
    I32EnumAttrCase<"Ffn", 1, "ffn">
  ]> {
  let cppNamespace = "::moe";
  let genSpecializedAttr = 0;
}

def MoE_Activation : I32EnumAttr<"Activation", "an elementwise activation", [
    I32EnumAttrCase<"Silu", 0, "silu">,
    I32EnumAttrCase<"Gelu", 1, "gelu">,
    I32EnumAttrCase<"GeluTanh", 2, "gelu_tanh">,
    I32EnumAttrCase<"Relu", 3, "relu">,
    I32EnumAttrCase<"Identity", 4, "identity">
  ]> {
  let cppNamespace = "::moe";
  let genSpecializedAttr = 0;
}

def MoE_ZeroComputationKind : I32EnumAttr<"ZeroComputationKind",
    "a zero-computation expert (MoE++)", [
    I32EnumAttrCase<"Zero", 0, "zero">,
    I32EnumAttrCase<"Copy", 1, "copy">,
    I32EnumAttrCase<"Constant", 2, "constant">
  ]> {
  let cppNamespace = "::moe";
  let genSpecializedAttr = 0;
}
def MoE_ZeroComputationKindAttr
    : EnumAttr<MoE_Dialect, MoE_ZeroComputationKind, "zero_computation"> {
  let assemblyFormat = "`<` $value `>`";
}
def MoE_ZeroComputationKindArrayAttr
    : TypedArrayAttrBase<MoE_ZeroComputationKindAttr,
                         "array of zero-computation expert kinds">;

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

/// A double-precision parameter printed and parsed as a float literal.
class MoE_DoubleParameter<string desc, string default>
    : DefaultValuedParameter<"::llvm::APFloat", "::llvm::APFloat(" # default # ")",
                             desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<::llvm::APFloat> {
    double value;
    if ($_parser.parseFloat(value))
      return ::mlir::failure();
    return ::llvm::APFloat(value);
  }() }];
  let printer = [{ $_printer.printFloat($_self) }];
  let comparator = "$_lhs.bitwiseIsEqual($_rhs)";
}

/// Sizes printed and parsed as `[a, b, ...]`; empty by default.
class MoE_SizesParameter<string desc>
    : OptionalArrayRefParameter<"int64_t", desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<::llvm::SmallVector<int64_t>> {
    ::llvm::SmallVector<int64_t> sizes;
    if ($_parser.parseCommaSeparatedList(
            ::mlir::AsmParser::Delimiter::Square,
            [&] { return $_parser.parseInteger(sizes.emplace_back()); }))
      return ::mlir::failure();
    return sizes;
  }() }];
  let printer = [{
    $_printer << '[';
    ::llvm::interleaveComma($_self, $_printer);
    $_printer << ']';
  }];
}

class MoE_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<MoE_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

//===----------------------------------------------------------------------===//
// RoutingAttr
//===----------------------------------------------------------------------===//

def MoE_RoutingAttr : MoE_Attr<"Routing", "routing"> {
  let summary = "the routing recipe: scoring, selection and mixing weights";
  let description = [{
    Describes how router logits `z [T, E]` become, per token, a set of chosen
    experts and their mixing weights. Parameters (defaults in brackets):

    - `k`: experts per token; with `threshold` the most experts per token.
    - `scoring` [softmax]: `softmax` (p = softmax(z / temperature)),
      `sigmoid` (s = sigmoid(z)) or `topk_softmax` (choose by z, weights are
      the softmax over the chosen logits, GPT-OSS style).
    - `renormalize` [false]: divide the chosen weights by their sum.
    - `temperature` [1.0]: softmax temperature.
    - `scale` [1.0]: factor applied to the final weights
      (`routed_scaling_factor`).
    - `n_group`, `topk_group` [0, 0]: group-limited selection (DeepSeek-V3):
      experts fall in `n_group` equal groups, a group's score is the sum of
      its two best selection scores, only the `topk_group` best groups are
      eligible.
    - `capacity_factor` [0.0]: per-expert capacity
      `C = ceil(capacity_factor * T * k / E)`; assignments past an expert's
      C-th slot (in token order) are dropped and contribute zero. 0 means
      dropless.
    - `capacity` [0]: a fixed per-expert capacity `C`, whatever T (the
      constant `expert_capacity` of GShard/fairseq's and Switch's code, or a
      capacity traced into an export); assignments past it are dropped as
      with `capacity_factor`, which must then be 0. With `expert_choice`, the
      number of tokens each expert takes (below).
    - `threshold` [0.0]: dynamic k (top-p): experts are taken in decreasing
      score until their scores sum to at least `threshold` (at least one, at
      most `k`); unused slots get expert id -1 and weight 0. 0 means exactly
      `k` experts.

    - `selection` [token_choice]: `expert_choice` (Zhou et al. 2022) turns
      the choice around: each expert takes the `C` tokens with the best
      selection scores in its column (ties to the lower token index), so a
      token is chosen by 0 to E experts. `k` must equal E: slot `e` of a
      token holds expert `e` when it chose the token and -1 otherwise, and
      its weight is the token's score for the expert (times `scale`), 0 when
      not chosen. `C` is `capacity` when it is set, otherwise
      `ceil(capacity_factor * T / E)`, at most T. Scoring must be `softmax`
      or `sigmoid`; `renormalize`, `threshold` and group limits do not apply.
    - `expert_groups` [none]: modality-restricted routing (MoMa): the sizes
      of consecutive groups of experts (summing to E). The op then takes a
      group id per token (`token_groups [T]`), and a token's top-k is taken
      among the experts of its group only (softmax scores stay over all E
      experts). A token whose group id is out of range is routed nowhere
      (ids -1, weights 0). `k` must not exceed the smallest group; no group
      limit (`n_group`) nor expert choice with it.

    Example: Mixtral is `#moe.routing<k = 2, renormalize = true>`;
    DeepSeek-V3 is `#moe.routing<k = 8, scoring = sigmoid, renormalize = true,
    scale = 2.5, n_group = 8, topk_group = 4>` with a selection bias; expert
    choice over 8 experts with each expert taking a quarter of the tokens is
    `#moe.routing<k = 8, selection = expert_choice, capacity_factor = 2.0>`.
  }];
  let parameters = (ins
    "int64_t":$k,
    DefaultValuedParameter<"ScoringFunc", "ScoringFunc::Softmax",
                           "the scoring function">:$scoring,
    DefaultValuedParameter<"bool", "false",
                           "renormalize the chosen weights">:$renormalize,
    MoE_DoubleParameter<"softmax temperature", "1.0">:$temperature,
    MoE_DoubleParameter<"routed scaling factor", "1.0">:$scale,
    DefaultValuedParameter<"int64_t", "0", "number of expert groups">:$n_group,
    DefaultValuedParameter<"int64_t", "0", "groups kept per token">:$topk_group,
    MoE_DoubleParameter<"expert capacity factor, 0 = dropless", "0.0">:$capacity_factor,
    MoE_DoubleParameter<"top-p threshold, 0 = fixed k", "0.0">:$threshold,
    DefaultValuedParameter<"SelectionMode", "SelectionMode::TokenChoice",
                           "tokens choose experts or experts choose tokens">:$selection,
    DefaultValuedParameter<"int64_t", "0",
                           "fixed per-expert capacity, 0 = from capacity_factor">:$capacity,
    MoE_SizesParameter<"sizes of the expert groups (modalities)">:$expert_groups
  );
  let builders = [
    AttrBuilder<(ins "int64_t":$k, "ScoringFunc":$scoring, "bool":$renormalize,
                     "::llvm::APFloat":$temperature, "::llvm::APFloat":$scale,
                     "int64_t":$n_group, "int64_t":$topk_group,
                     "::llvm::APFloat":$capacity_factor,
                     "::llvm::APFloat":$threshold), [{
      return $_get($_ctxt, k, scoring, renormalize, temperature, scale,
                   n_group, topk_group, capacity_factor, threshold,
                   SelectionMode::TokenChoice, 0, ::llvm::ArrayRef<int64_t>());
    }]>
  ];
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Whether the selection is group-limited.
    bool isGroupLimited() const { return getNGroup() > 0; }
    /// Whether the number of experts per token is dynamic (top-p).
    bool hasDynamicK() const { return getThreshold().isNonZero(); }
    /// Whether experts have a capacity and drop tokens past it.
    bool hasCapacity() const {
      return getCapacityFactor().isNonZero() || getCapacity() > 0;
    }
    /// Whether experts choose their tokens (expert-choice routing).
    bool isExpertChoice() const {
      return getSelection() == SelectionMode::ExpertChoice;
    }
    /// Whether tokens choose among the experts of their group only.
    bool hasExpertGroups() const { return !getExpertGroups().empty(); }
    /// Checks the recipe against the number of experts of an op using it.
    ::mlir::LogicalResult verifyForNumExperts(
        ::llvm::function_ref<::mlir::InFlightDiagnostic()> emitError,
        int64_t numExperts) const;
  }];
}

//===----------------------------------------------------------------------===//
// ExpertAttr
//===----------------------------------------------------------------------===//

def MoE_ExpertAttr : MoE_Attr<"Expert", "expert"> {
  let summary = "the body of an FFN expert";
  let description = [{
    - `gated` (SwiGLU, GeGLU): `y = (act(x·Wg + bg) ⊙ (x·Wu + bu))·Wd + bd`.
    - `ffn`: `y = act(x·Wu + bu)·Wd + bd`.

    With `limit` > 0 the gated form is GPT-OSS's clamped SwiGLU:
    `g = min(x·Wg + bg, limit)`, `u = clamp(x·Wu + bu, -limit, limit)`,
    `h = g · sigmoid(alpha · g) · (u + beta)` (activation must be `silu`).
    Without a limit, `alpha` and `beta` apply in the same way:
    `h = act_alpha(g) · (u + beta)` where `act_alpha(g) = g·sigmoid(alpha·g)`
    for `silu`; `alpha` must be 1 for other activations.

    Example: `#moe.expert<gated, silu>`,
    `#moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>`,
    `#moe.expert<ffn, relu>`.
  }];
  let parameters = (ins
    EnumParameter<MoE_ExpertKind>:$kind,
    EnumParameter<MoE_Activation>:$activation,
    MoE_DoubleParameter<"clamp limit, 0 = no clamp", "0.0">:$limit,
    MoE_DoubleParameter<"sigmoid scale of the gated activation", "1.0">:$alpha,
    MoE_DoubleParameter<"offset added to the linear branch", "0.0">:$beta
  );
  let assemblyFormat = [{
    `<` $kind `,` $activation (`,` struct($limit, $alpha, $beta)^)? `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    bool isGated() const { return getKind() == ExpertKind::Gated; }
  }];
}

//===----------------------------------------------------------------------===//
// PlacementAttr
//===----------------------------------------------------------------------===//

def MoE_PlacementAttr : MoE_Attr<"Placement", "placement"> {
  let summary = "where the experts of one layer live: a cache of slots";
  let description = [{
    Set on a `moe.experts` op by `moe-plan-placement`. The experts of MoE
    layer `layer` (numbered in program order) live in a weights file and in
    an expert cache of `slots` slots in fast memory; the op's weight matrices
    are then the cache's slot buffers `[?, d1, d2]` (the runtime may choose
    another slot count), and the weights of expert `e` are in the slot the
    runtime returns when it acquires `e`. `pinned` lists the experts the plan
    keeps resident, expert `pinned[i]` in slot `i`, loaded before the first
    run and never evicted; the other slots hold experts on demand and
    prefetched ones. `experts` is the number of experts of the layer.

    Example: `#moe.placement<layer = 0, experts = 64, slots = 16,
    pinned = [3, 17, 42]>`.

    A plan for expert parallelism over several devices (`moe-plan-placement`
    with `devices` > 1) adds `devices`: the home device of each expert
    (`devices[e]` for expert `e`). Each device then has its own cache of
    `slots` slots for its home experts, and the pinned experts of a device
    live in its cache, the first in slot 0. Such a plan is for inspection
    and for expert-parallel engines (`plan-file`): moe-mlir's runtime runs a
    layer on one device, and the lowerings reject it.

    Example: `#moe.placement<layer = 1, experts = 8, slots = 3,
    pinned = [5, 2], devices = [0, 1, 1, 0, 0, 1, 0, 1]>`.
  }];
  let parameters = (ins
    "int64_t":$layer,
    "int64_t":$experts,
    "int64_t":$slots,
    MoE_SizesParameter<"experts resident in slots 0..">:$pinned,
    MoE_SizesParameter<"home device of each expert (several devices)">:$devices
  );
  let builders = [
    AttrBuilder<(ins "int64_t":$layer, "int64_t":$experts, "int64_t":$slots,
                     "::llvm::ArrayRef<int64_t>":$pinned), [{
      return $_get($_ctxt, layer, experts, slots, pinned,
                   ::llvm::ArrayRef<int64_t>());
    }]>
  ];
  let extraClassDeclaration = [{
    /// The number of devices of the plan (1 without `devices`).
    int64_t getNumDevices() const;
  }];
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // MOE_DIALECT_MOE_IR_MOEATTRS_TD
