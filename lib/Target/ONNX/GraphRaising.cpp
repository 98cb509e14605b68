//===- GraphRaising.cpp - MoE blocks of standard ONNX ops to moe.layer ----===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Finds MoE blocks that exporters (torch.onnx.export) write with standard
// ops and raises each to one `moe.layer`. Matching works on the ONNX nodes,
// before import: the exported graph still spells the block out op by op
// (Softmax, TopK, OneHot, NonZero, ScatterElements, ...), while after import
// the same block is a web of linalg.generics and scf loops.
//
// Every TopK and ArgMax is a candidate. Its input must be the Softmax (or,
// for TopK, the Sigmoid) of a router `MatMul(x, W)` with a constant W; from
// there the consumers must be one of three forms:
//
//  - Mixtral (transformers' MixtralSparseMoeBlock): one_hot expert mask,
//    per expert `torch.where` (NonZero), the tokens gathered, a SwiGLU
//    expert, its output times the gathered routing weight scattered into a
//    zero accumulator (`index_add_`: ScatterElements + Add).
//  - Dense: every SwiGLU expert on every token, stacked, multiplied by the
//    top-k weights scattered into a [T, E] matrix and summed over experts;
//    optionally plus a shared SwiGLU expert scaled by sigmoid(x·ws).
//  - Switch: ArgMax and ReduceMax of the softmax, per-token expert weights
//    gathered and applied with Einsum, ReLU FFN with biases.
//
// Only the node that produces the block's result is replaced; the nodes
// before it are imported as usual, and those nothing uses any more are
// removed at the end of the import. A block that does not match (or whose
// types turn out not to fit when it is built) is imported op by op.
//
//===----------------------------------------------------------------------===//

#include "Importer.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstring>
#include <functional>

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

/// The longest chain of Casts or Reshapes the matchers follow.
static constexpr int kMaxChain = 64;

/// `BlockMatcher::skipCasts`'s `to` for a Cast to any float type a block
/// computes in (not an ONNX data type).
static constexpr int64_t kAnyFloat = -1;
static bool isRoutingFloat(int64_t dataType) {
  return dataType == onnx::TensorProto::FLOAT ||
         dataType == onnx::TensorProto::FLOAT16 ||
         dataType == onnx::TensorProto::BFLOAT16;
}

/// Input/output `i` of `node`, or "" where it has none (malformed graphs).
static StringRef inputOf(const onnx::NodeProto *node, int i) {
  return i < node->input_size() ? StringRef(node->input(i)) : StringRef();
}
static StringRef outputOf(const onnx::NodeProto *node, int i) {
  return i < node->output_size() ? StringRef(node->output(i)) : StringRef();
}

namespace {

/// A linear map `x·W (+ b)` with a constant W [in, out].
struct Linear {
  std::string input;
  DenseElementsAttr weight, bias;
};

/// An expert MLP: gated (SwiGLU) or a plain FFN.
struct ExpertMLP {
  std::string input;
  DenseElementsAttr gate, up, down, gateBias, upBias, downBias;
  /// SiLU for SwiGLU (gated); ReLU or GELU (erf or tanh) for a plain FFN.
  Activation activation = Activation::Silu;
  /// GPT-OSS's clamp and scales of the gated activation (GatedActivation).
  double limit = 0.0, alpha = 1.0, beta = 0.0;
  /// A zero-computation expert of MoE++ (no weights but, for a constant
  /// expert, its vector `v [H]` and mixing map `Wc [H, 2]`).
  std::optional<ZeroComputationKind> zero;
  DenseElementsAttr constantValue, constantMix;
};

/// The gated activation `act_alpha(clamp(g)) * (clamp(u) + beta)` of a
/// SwiGLU expert (matchGatedActivation): its two operands before the clamps.
struct GatedActivation {
  std::string gate, up;
  double limit = 0.0, alpha = 1.0, beta = 0.0;
};

/// DeepSeek-V3's group limit of a router (matchGroupLimit): the masked
/// scores' source, the groups (none: nGroup = 0), the fill value of the
/// masked experts and the two TopKs that choose the groups.
struct GroupLimit {
  std::string scores;
  int64_t nGroup = 0, groupSize = 0, topkGroup = 0;
  double fill = 0.0;
  SmallVector<const onnx::NodeProto *, 2> topks;
};

/// The router: `softmax(x·W (+ b))` along the last axis.
struct Router {
  /// The Softmax (or Sigmoid) that turns the logits into scores; with
  /// top-k softmax scoring the Softmax of the TopK values.
  const onnx::NodeProto *softmax = nullptr;
  std::string input;
  DenseElementsAttr weight;
  /// The logits' bias `[E]` (a Gemm's C or an Add), or null.
  DenseElementsAttr bias;
  /// The logits `x·W (+ b)`.
  std::string logits;
  ScoringFunc scoring = ScoringFunc::Softmax;
  /// The softmax temperature: the logits are divided by it (or multiplied
  /// by its inverse) before the Softmax.
  double temperature = 1.0;
  /// A gating residual `[T, E]` added to the logits (MoE++), or "".
  std::string residual;
  /// A constant `[E]` added to the scores for the choice only (TopK of
  /// `scores + bias`, weights gathered from `scores`), or null.
  DenseElementsAttr selectionBias;
  /// The group limit, if any.
  GroupLimit group;
  /// Modality groups (MoMa): the sizes of the consecutive expert groups and
  /// the `[T]` group id of each token; empty without them.
  SmallVector<int64_t> expertGroups;
  std::string tokenGroups;
};

/// The router whose `scoring` (`softmax`) reads the logits `logits` of the
/// linear map `linear`.
static Router routerOf(const onnx::NodeProto *softmax, const Linear &linear,
                       StringRef logits, ScoringFunc scoring) {
  Router router;
  router.softmax = softmax;
  router.input = linear.input;
  router.weight = linear.weight;
  router.bias = linear.bias;
  router.logits = logits.str();
  router.scoring = scoring;
  return router;
}

/// Matches the forms of one graph. Each `match*` returns false with `why`
/// set when the graph does not have the form.
class BlockMatcher {
public:
  BlockMatcher(GraphImporter &importer, const onnx::GraphProto &graph);

  /// Tries every form on the candidate `anchor` (a TopK or ArgMax, or a
  /// Gather that isHashCandidate accepts).
  std::optional<MoEBlock> match(const onnx::NodeProto &anchor);

  /// Whether `gather` could be hash routing's table lookup: a Gather of a
  /// 1-D int64 constant whose result is compared (Equal) with something.
  bool isHashCandidate(const onnx::NodeProto &gather) const {
    if (gather.input_size() != 2 || gather.output_size() != 1)
      return false;
    auto table = tensors.find(gather.input(0));
    return table != tensors.end() &&
           table->second->data_type() == onnx::TensorProto::INT64 &&
           table->second->dims_size() == 1 &&
           llvm::any_of(
               users(gather.output(0)),
               [](const onnx::NodeProto *user) { return is(user, "Equal"); });
  }

  std::string why;
  /// Why a block's export is likely wrong whatever the importer does (a hit
  /// loop traced with fewer experts than the router has): a warning, with or
  /// without remarks.
  std::string warning;

private:
  bool fail(const Twine &message) {
    why = message.str();
    return false;
  }

  const onnx::NodeProto *def(StringRef name) const {
    return name.empty() ? nullptr : importer.getProducer(name);
  }
  static bool is(const onnx::NodeProto *node, StringRef opType) {
    return node && node->op_type() == opType &&
           (node->domain().empty() || node->domain() == "ai.onnx");
  }
  const onnx::NodeProto *defOp(StringRef name, StringRef opType) const {
    const onnx::NodeProto *node = def(name);
    return is(node, opType) ? node : nullptr;
  }
  ArrayRef<const onnx::NodeProto *> users(StringRef name) const {
    auto it = consumers.find(name);
    if (it == consumers.end())
      return {};
    return it->second;
  }
  /// The single consumer of `name` of type `opType`, or null.
  const onnx::NodeProto *userOp(StringRef name, StringRef opType) const {
    const onnx::NodeProto *found = nullptr;
    for (const onnx::NodeProto *user : users(name)) {
      if (!is(user, opType))
        continue;
      if (found)
        return nullptr;
      found = user;
    }
    return found;
  }
  static StringRef describe(const onnx::NodeProto *node) {
    return node ? StringRef(node->op_type()) : StringRef("a graph input");
  }

  /// Skips Casts to any type.
  StringRef skipAnyCasts(StringRef name) const;
  /// `one_hot(argmax, E)`: the ArgMax's only OneHot user, over `numExperts`
  /// classes along the last axis with values 0 and 1; null with why set.
  const onnx::NodeProto *matchArgmaxOneHot(const onnx::NodeProto &argmax,
                                           int64_t numExperts);
  /// Skips Identity and Casts to `to`; by default, Casts to any of float,
  /// float16 and bfloat16 (a block in 16 bits casts its routing weights to
  /// float and back; the raised ops compute routing in at least f32).
  StringRef skipCasts(StringRef name, int64_t to = kAnyFloat) const;
  DenseElementsAttr constant(StringRef name);
  std::optional<int64_t> constantInt(StringRef name);
  /// The integer `name` computes from constants and `Shape(of)[axis]` (of a
  /// rank-`rank` value whose dimension `axis` is `extent`) by Add, Sub, Mul
  /// and Div, as torch exports `chunk` of a dynamic shape.
  std::optional<int64_t> extentExpr(StringRef name, StringRef of, int64_t rank,
                                    int64_t axis, int64_t extent,
                                    int depth = 0);
  /// A constant 2-D weight, or the transpose of one (`F.linear` by a weight
  /// that is not a parameter: MatMul(x, Transpose(W))).
  DenseElementsAttr linearWeight(StringRef name);
  std::optional<SmallVector<int64_t>> constantInts(StringRef name);
  static int64_t intAttr(const onnx::NodeProto &node, StringRef name,
                         int64_t defaultValue);
  static std::optional<SmallVector<int64_t>> intsAttr(const onnx::NodeProto &,
                                                      StringRef name);
  /// The axes of a Squeeze/Unsqueeze/Reduce* node (attribute or input 1).
  std::optional<SmallVector<int64_t>> axesOf(const onnx::NodeProto &node);
  bool isZeros(StringRef name);
  /// The value a ConstantOfShape `name` fills with (any int or float type).
  std::optional<double> fillValue(StringRef name);

  bool matchRouter(StringRef probs, Router &router);
  /// MoMa's modality mask of the logits: `name` is `Where(Not(Equal(groups,
  /// Unsqueeze(ids, 1))), -inf, logits)` (or `Where(Equal(...), logits,
  /// -inf)`) with `groups [1, E]` a constant of consecutive group ids 0, 1,
  /// ...; sets the router's expertGroups and tokenGroups and `logits`.
  /// Returns false without `why` where `name` is no Where.
  bool matchModalityMask(StringRef name, Router &router, StringRef &logits);
  /// DeepSeek-V3's group-limited choice (transformers'
  /// DeepseekV3TopkRouter.get_topk_indices): `name` is
  /// `Where(Not(bool(mask)), fill, s)` with the mask the top `topk_group`
  /// groups (by the sum of their two best scores of `s` viewed as [T, G,
  /// E / G]) scattered into zeros and expanded to their experts. Returns
  /// false without `why` where `name` is no Where (no group limit).
  bool matchGroupLimit(StringRef name, GroupLimit &limit);
  /// Skips a Reshape of `name` to `[-1 or 0, cols]` (a `view(-1, E)`).
  StringRef skipRowView(StringRef name, int64_t cols);
  bool matchLinear(StringRef name, Linear &linear);
  /// GPT-OSS's router: TopK of the logits `x·W (+ b)` whose values feed a
  /// Softmax (top-k softmax scoring). Returns false without `why` where
  /// `topk` has another form.
  bool matchTopKSoftmaxRouter(const onnx::NodeProto &topk, Router &router);
  /// An optional Clip of `name`: none gives 0 (no limit) and `input` =
  /// `name`; else its max L (equal to `limit` when that is > 0) with
  /// min -L (`symmetric`) or no min; null when the Clip has another form.
  std::optional<double> matchClip(StringRef name, double limit, bool symmetric,
                                  StringRef &input);
  /// `act_alpha(g) * (u + beta)` with act_alpha(g) = g * sigmoid(alpha * g)
  /// and GPT-OSS's optional clamps of g and u. Returns false without `why`
  /// where `name` has no such form, with `why` where the clamps differ.
  bool matchGatedActivation(StringRef name, GatedActivation &act);
  /// A SwiGLU expert `down(act(gate(x)) * (up(x) + beta))`, with or without
  /// biases and GPT-OSS's clamps.
  bool matchSwiGLU(StringRef name, ExpertMLP &mlp);
  /// MoE++'s zero-computation experts of Mixtral's loop: zeros_like(rows)
  /// (zero), `a[:, 0:1] * rows + a[:, 1:2] * v` with `a = softmax(rows·Wc)`
  /// (constant); anything else is taken for the rows themselves (copy), for
  /// the caller to check. Sets `mlp.input` to the rows.
  void matchZeroComputation(StringRef name, ExpertMLP &mlp);
  /// A routed expert: SwiGLU (without biases), or a ReLU or GELU FFN
  /// `down(act(up(x)))` with or without biases (ExpertMLP without a gate).
  bool matchExpert(StringRef name, ExpertMLP &mlp);
  /// The activation of a plain FFN expert: ReLU, GELU (erf) or GELU (tanh)
  /// of `input`.
  bool matchFfnActivation(StringRef name, StringRef &input,
                          Activation &activation);
  /// GELU (erf) as torch exports it: sets `input` to its argument.
  bool matchGelu(StringRef name, StringRef &input);
  /// GELU with the tanh approximation as torch exports it.
  bool matchGeluTanh(StringRef name, StringRef &input);
  /// The routing weights: TopK values (with a selection bias, the scores
  /// gathered at the TopK indices), renormalized or not, times an optional
  /// constant scale.
  bool matchWeights(const onnx::NodeProto &topk, StringRef name,
                    bool &renormalize);
  /// Whether `name` is the unscaled, unnormalized top-k weights.
  bool isTopKWeights(const onnx::NodeProto &topk, StringRef name);
  /// The router of the candidate being matched.
  const Router *router = nullptr;
  /// The routing scale found by matchWeights (1 without one).
  double scale = 1.0;
  /// The top-p threshold found by matchWeights (0 without one).
  double threshold = 0.0;
  /// The top-p mask of the TopK values `values`: `values * ((cumsum(values,
  /// -1) - values) < p)` (an expert is kept while the probability before it
  /// sums to less than p); returns p.
  std::optional<double> matchTopPMask(const onnx::NodeProto &topk,
                                      StringRef name);

  bool matchMixtral(const onnx::NodeProto &topk, const Router &router,
                    int64_t k, MoEBlock &block);
  bool matchDense(const onnx::NodeProto &topk, const Router &router, int64_t k,
                  MoEBlock &block);
  bool matchSwitch(const onnx::NodeProto &argmax, const Router &router,
                   MoEBlock &block);
  /// GPT-OSS's batched experts (transformers' GptOssExperts on GPUs): the
  /// router's rows repeated E times as [E, T, H], batched matmuls by
  /// constant [E, in, out] weights with [E, 1, out] biases, the outputs
  /// viewed as [E, B, -1, H] times `mix.T.view(E, B, -1)[..., None]`
  /// (`transpose` is the mix's), summed over the experts.
  bool matchBatchedExperts(const onnx::NodeProto &transpose,
                           const Router &router, MoEBlock &block);
  /// The experts of the batched forms: `out` is `down(act(up(rows)))` or
  /// a gated `down(act(gate(rows)) * (up(rows) + beta))`, each projection
  /// batched over the experts as `linear` matches it (`split` finds the gate
  /// and up projections of a gated activation). Sets `block`'s expert
  /// weights, kind and activation, and `rows` to what the projections read.
  bool matchBatchedMLP(
      StringRef out, function_ref<bool(StringRef, Linear &)> linear,
      function_ref<bool(const GatedActivation &, Linear &, Linear &)> split,
      MoEBlock &block, std::string &rows);
  /// The gate and up projections of GPT-OSS's batched experts: the columns
  /// of one fused projection that two constant Slices of its last axis take
  /// (`gate_up[..., ::2]`, `gate_up[..., 1::2]`), or two projections.
  /// (`linear` matches each projection: batched by default; the 2-D form
  /// takes the columns of the last axis the same way.)
  bool splitFusedGateUp(const GatedActivation &act, Linear &gate, Linear &up,
                        function_ref<bool(StringRef, Linear &)> linear = {});
  /// `x·W (+ b)` batched over the experts: MatMul (or, with `einsum`, an
  /// Einsum with that equation up to a renaming of its letters) by a
  /// constant W [E, in, out], optionally plus a constant [E, 1, out] (the
  /// bias is `[E, out]`).
  bool matchBatchedLinear(StringRef name, Linear &linear,
                          StringRef einsum = {});
  /// One element of a shape tensor built at run time: a constant `value`,
  /// or the Concat input `part` that computes it.
  struct ShapeElem {
    std::optional<int64_t> value;
    std::string part;
  };
  /// The elements of the 1-D shape `name`: a constant, or a Concat of
  /// one-element parts.
  std::optional<SmallVector<ShapeElem>> shapeElems(StringRef name);
  /// Whether `name` is `Shape(of)[dim]` (through skipScalarPlumbing).
  bool isDim(StringRef name, StringRef of, int64_t dim);
  bool matchExpertChoice(const onnx::NodeProto &topk, const Router &router,
                         int64_t capacity, double capacityFactor,
                         MoEBlock &block);
  /// Whether `node` is an Einsum with `pattern`'s equation up to a renaming
  /// of its letters.
  bool isEinsum(const onnx::NodeProto *node, StringRef pattern);
  /// Top-1 routing with a constant expert capacity C in GShard's einsum form
  /// (fairseq's top1gating, Mesh TensorFlow's Switch): one_hot(argmax),
  /// cumsum over the tokens, the assignments at slots >= C dropped, combine
  /// weights einsum("se,sc->sec"), the experts on einsum("sec,sm->ecm",
  /// dispatch mask, x) as batched einsums, the output einsum("sec,ecm->sm").
  bool matchCapacityEinsum(const onnx::NodeProto &argmax, const Router &router,
                           MoEBlock &block);
  /// transformers' SwitchTransformersSparseMLP: one_hot(argmax) masked by
  /// `cumsum(mask, -2) <= C`, each expert applied by boolean-mask indexing
  /// (`next_states[mask[..., e]] = expert_e(x[mask[..., e]])`: GatherND and
  /// ScatterND on NonZero of the mask's column e, in a chain from x), the
  /// result scaled by the top-1 probability; dropped tokens pass through.
  bool matchSwitchMaskLoop(const onnx::NodeProto &argmax, const Router &router,
                           MoEBlock &block);
  /// Hash routing: `lookup` is `Gather(table, ids)` of a constant table.
  bool matchHash(const onnx::NodeProto &lookup, MoEBlock &block);
  /// The scalar constant `name` (any int or float element type).
  std::optional<double> constantScalar(StringRef name);
  /// Whether `name` is a scalar constant equal to `value` as its type holds
  /// it: to 1e-6, or to the unit roundoff of a narrower float type (a bf16
  /// export's sqrt(2) is 1.4140625).
  bool isConstantNear(StringRef name, double value);
  /// Skips Casts (to any type), Identity, Reshape, Squeeze and Unsqueeze.
  StringRef skipScalarPlumbing(StringRef name) const;
  /// Whether `name` is the token count of `input`: `Shape(input)[0]`
  /// (Gather of index 0, or Shape with end = 1), through skipScalarPlumbing.
  bool isTokenCount(StringRef name, StringRef input);
  /// The capacity of expert choice computed from the token count T of
  /// `input`, as torch exports `min(ceil(T * f / E), T)` (products and
  /// quotients of T with constants, in any order; the min optional):
  /// returns f, with `why` set when `name` is no such expression.
  std::optional<double> matchCapacityFactor(StringRef name, StringRef input,
                                            int64_t numExperts);
  /// The index_add_ of one expert's rows: `rows` scattered at `tokens` (an
  /// Unsqueeze to a column, an Expand and a ScatterElements on zeros) and
  /// added to the running sum. Returns the Add, or null with `why` set.
  /// With `weighted` the scattered rows must be a product (the expert output
  /// times its weight; `rows` is the product), else anything (`rows`).
  const onnx::NodeProto *matchIndexAdd(StringRef tokens, StringRef &rows,
                                       const Twine &where,
                                       bool weighted = true);
  /// The expert `e` of `node` when it is `Gather(tensor, e, axis 0)` with a
  /// constant `e` in range that `seen` does not hold yet; marks it seen.
  /// The index may also be an iteration's id of a loop over the experts hit
  /// (hitIds); `vector` is set where the index is a one-element vector (the
  /// gathered value then has a leading axis of 1).
  std::optional<int64_t> expertIndex(const onnx::NodeProto *node,
                                     SmallVector<bool> &seen,
                                     bool *vector = nullptr);
  /// transformers' loop over the experts hit (`expert_hit =
  /// (mask.sum((-1, -2)) > 0).nonzero()`, `for expert_idx in expert_hit`),
  /// which tracing unrolls into a Split of the NonZero into one part per
  /// iteration: where `reduce` (a user of the [C, k, T] mask) starts that
  /// chain, checks it and records each part's id in hitIds. Sound only with
  /// as many parts as experts: the ids are strictly increasing and below E
  /// (the mask is a one_hot of top-k ids over E logits), and the Split
  /// requires as many as the graph has parts, so part i is expert i in every
  /// run the graph defines. Fewer parts (the example hit fewer experts): the
  /// export computes those experts only, whatever the input; fails with why.
  bool matchHitLoop(const onnx::NodeProto &reduce, int64_t numExperts);
  /// The expert id `name` holds: a constant, or the id of a hit loop's
  /// iteration (`expert_hit[i]`, or `expert_hit[i][0]`); `vector` as for
  /// expertIndex.
  std::optional<int64_t> indexValue(StringRef name, bool *vector = nullptr);
  /// `W[e]`: Gather(W, e, axis 0) of a constant W at a scalar expert id
  /// (indexValue), as a constant.
  DenseElementsAttr gatheredConstant(StringRef name);
  /// Whether `adds` form one chain from zeros (each adds one expert's
  /// scatter to the previous sum); sets `last` to its end.
  bool matchAddChain(ArrayRef<const onnx::NodeProto *> adds,
                     const onnx::NodeProto *&last);
  bool finishExperts(ArrayRef<ExpertMLP> experts, StringRef input,
                     int64_t numExperts, MoEBlock &block);

  GraphImporter &importer;
  llvm::StringMap<const onnx::TensorProto *> tensors;
  llvm::StringMap<DenseElementsAttr> converted;
  llvm::StringMap<SmallVector<const onnx::NodeProto *>> consumers;
  /// The iterations of the hit loops matched so far: each Split part's
  /// expert id (matchHitLoop).
  llvm::StringMap<int64_t> hitIds;
  /// The expert id each gathered constant was taken at (gatheredConstant),
  /// and the ids of those constant() returned since the caller cleared it:
  /// an expert's weights must be gathered at its own id.
  llvm::StringMap<int64_t> gatheredIdOf;
  SmallVector<int64_t> idsUsed;
  /// gatheredConstant's nesting (an id is itself at most a Gather of a
  /// constant; deeper, or a cycle in a malformed graph, is no constant).
  int gatherDepth = 0;
};

} // namespace

BlockMatcher::BlockMatcher(GraphImporter &importer,
                           const onnx::GraphProto &graph)
    : importer(importer) {
  for (const onnx::TensorProto &tensor : graph.initializer())
    tensors[tensor.name()] = &tensor;
  for (const onnx::NodeProto &node : graph.node()) {
    for (const std::string &input : node.input())
      if (!input.empty())
        consumers[input].push_back(&node);
    if (is(&node, "Constant") && node.attribute_size() == 1 &&
        node.attribute(0).name() == "value" && node.output_size() == 1)
      tensors[outputOf(&node, 0)] = &node.attribute(0).t();
  }
}

StringRef BlockMatcher::skipCasts(StringRef name, int64_t to) const {
  // Bounded: a malformed graph may have cycles.
  for (int steps = 0; steps < kMaxChain; ++steps) {
    const onnx::NodeProto *node = def(name);
    if (!node)
      break;
    int64_t castTo = intAttr(*node, "to", 0);
    bool cast = is(node, "Cast") &&
                (to == kAnyFloat ? isRoutingFloat(castTo) : castTo == to);
    if (!cast && !is(node, "Identity"))
      break;
    name = inputOf(node, 0);
  }
  return name;
}

DenseElementsAttr BlockMatcher::constant(StringRef name) {
  auto cached = converted.find(name);
  if (cached != converted.end()) {
    auto id = gatheredIdOf.find(name);
    if (id != gatheredIdOf.end())
      idsUsed.push_back(id->second);
    return cached->second;
  }
  auto it = tensors.find(name);
  if (it == tensors.end())
    return gatheredConstant(name);
  // Conversion errors are reported when the node itself is imported.
  ScopedDiagnosticHandler silence(importer.getContext(),
                                  [](Diagnostic &) { return success(); });
  FailureOr<DenseElementsAttr> attr = importer.convertTensor(*it->second, [&] {
    return mlir::emitError(UnknownLoc::get(importer.getContext()));
  });
  DenseElementsAttr result = succeeded(attr) ? *attr : DenseElementsAttr();
  converted[name] = result;
  return result;
}

std::optional<SmallVector<int64_t>> BlockMatcher::constantInts(StringRef name) {
  DenseElementsAttr attr = constant(name);
  if (!attr || !isa<IntegerType>(attr.getElementType()) ||
      attr.getType().getRank() > 1)
    return std::nullopt;
  SmallVector<int64_t> values;
  for (const APInt &v : attr.getValues<APInt>())
    values.push_back(v.getSExtValue());
  return values;
}

std::optional<int64_t> BlockMatcher::constantInt(StringRef name) {
  std::optional<SmallVector<int64_t>> values = constantInts(name);
  if (!values || values->size() != 1)
    return std::nullopt;
  return (*values)[0];
}

int64_t BlockMatcher::intAttr(const onnx::NodeProto &node, StringRef name,
                              int64_t defaultValue) {
  for (const onnx::AttributeProto &attr : node.attribute())
    if (attr.name() == name)
      return attr.i();
  return defaultValue;
}

std::optional<SmallVector<int64_t>>
BlockMatcher::intsAttr(const onnx::NodeProto &node, StringRef name) {
  for (const onnx::AttributeProto &attr : node.attribute())
    if (attr.name() == name)
      return SmallVector<int64_t>(attr.ints().begin(), attr.ints().end());
  return std::nullopt;
}

std::optional<SmallVector<int64_t>>
BlockMatcher::axesOf(const onnx::NodeProto &node) {
  if (std::optional<SmallVector<int64_t>> axes = intsAttr(node, "axes"))
    return axes;
  if (node.input_size() > 1)
    return constantInts(inputOf(&node, 1));
  return std::nullopt;
}

std::optional<double> BlockMatcher::fillValue(StringRef name) {
  const onnx::NodeProto *node = defOp(name, "ConstantOfShape");
  if (!node)
    return std::nullopt;
  for (const onnx::AttributeProto &attr : node->attribute()) {
    if (attr.name() != "value")
      continue;
    ScopedDiagnosticHandler silence(importer.getContext(),
                                    [](Diagnostic &) { return success(); });
    FailureOr<DenseElementsAttr> value = importer.convertTensor(attr.t(), [&] {
      return mlir::emitError(UnknownLoc::get(importer.getContext()));
    });
    if (failed(value) || !value->isSplat())
      return std::nullopt;
    if (isa<FloatType>(value->getElementType()))
      return value->getSplatValue<APFloat>().convertToDouble();
    if (value->getElementType().isInteger())
      return double(value->getSplatValue<APInt>().getSExtValue());
    return std::nullopt;
  }
  // ONNX's default value is a float 0.
  return 0.0;
}

bool BlockMatcher::isZeros(StringRef name) {
  const onnx::NodeProto *node = defOp(name, "ConstantOfShape");
  if (!node)
    return false;
  for (const onnx::AttributeProto &attr : node->attribute())
    if (attr.name() == "value" &&
        attr.t().data_type() != onnx::TensorProto::FLOAT &&
        attr.t().data_type() != onnx::TensorProto::DOUBLE &&
        attr.t().data_type() != onnx::TensorProto::FLOAT16 &&
        attr.t().data_type() != onnx::TensorProto::BFLOAT16)
      return false;
  return fillValue(name) == 0.0;
}

/// The transpose of the 2-D `attr`.
static DenseElementsAttr transpose2D(DenseElementsAttr attr) {
  ArrayRef<int64_t> shape = attr.getType().getShape();
  auto type =
      RankedTensorType::get({shape[1], shape[0]}, attr.getElementType());
  if (attr.isSplat())
    return attr.resizeSplat(type);
  size_t size = type.getElementType().getIntOrFloatBitWidth() / 8;
  std::vector<char> out(type.getNumElements() * size);
  ArrayRef<char> raw = attr.getRawData();
  for (int64_t i = 0; i < shape[1]; ++i)
    for (int64_t j = 0; j < shape[0]; ++j)
      std::memcpy(out.data() + (i * shape[0] + j) * size,
                  raw.data() + (j * shape[1] + i) * size, size);
  return DenseElementsAttr::getFromRawBuffer(type, out);
}

DenseElementsAttr BlockMatcher::linearWeight(StringRef name) {
  if (DenseElementsAttr weight = constant(name))
    return weight;
  const onnx::NodeProto *transpose = defOp(name, "Transpose");
  if (!transpose || intsAttr(*transpose, "perm") != SmallVector<int64_t>{1, 0})
    return {};
  DenseElementsAttr weight = constant(inputOf(transpose, 0));
  if (!weight || weight.getType().getRank() != 2)
    return {};
  return transpose2D(weight);
}

std::optional<int64_t> BlockMatcher::extentExpr(StringRef name, StringRef of,
                                                int64_t rank, int64_t axis,
                                                int64_t extent, int depth) {
  if (depth > 8)
    return std::nullopt;
  if (std::optional<int64_t> c = constantInt(name))
    return c;
  const onnx::NodeProto *node = def(name);
  if (is(node, "Gather")) {
    const onnx::NodeProto *shape = defOp(inputOf(node, 0), "Shape");
    std::optional<int64_t> index = constantInt(inputOf(node, 1));
    if (shape && inputOf(shape, 0) == of && intAttr(*shape, "start", 0) == 0 &&
        !intsAttr(*shape, "end") && node->attribute_size() <= 1 &&
        intAttr(*node, "axis", 0) == 0 && index &&
        (*index == axis || *index + rank == axis))
      return extent;
    return std::nullopt;
  }
  bool add = is(node, "Add"), sub = is(node, "Sub"), mul = is(node, "Mul"),
       div = is(node, "Div");
  if (!add && !sub && !mul && !div)
    return std::nullopt;
  std::optional<int64_t> a =
      extentExpr(inputOf(node, 0), of, rank, axis, extent, depth + 1);
  std::optional<int64_t> b =
      extentExpr(inputOf(node, 1), of, rank, axis, extent, depth + 1);
  if (!a || !b)
    return std::nullopt;
  // (Overflow, in a malformed graph, is no extent.)
  if (add)
    return llvm::checkedAdd(*a, *b);
  if (sub)
    return llvm::checkedSub(*a, *b);
  if (mul)
    return llvm::checkedMul(*a, *b);
  // Integer division of non-negative values (torch's chunk sizes).
  if (*a < 0 || *b <= 0)
    return std::nullopt;
  return *a / *b;
}

bool BlockMatcher::matchLinear(StringRef name, Linear &linear) {
  const onnx::NodeProto *node = def(name);
  DenseElementsAttr bias;
  if (is(node, "Add")) {
    for (int i = 0; i < 2 && !bias; ++i) {
      DenseElementsAttr b = constant(inputOf(node, i));
      if (b && b.getType().getRank() == 1 &&
          (is(def(inputOf(node, 1 - i)), "MatMul"))) {
        bias = b;
        node = def(inputOf(node, 1 - i));
      }
    }
  }
  if (is(node, "MatMul")) {
    DenseElementsAttr weight = linearWeight(inputOf(node, 1));
    if (!weight || weight.getType().getRank() != 2 ||
        !isa<FloatType>(weight.getElementType()))
      return fail("'" + node->name() +
                  "' does not multiply by a constant 2-D weight");
    linear = {inputOf(node, 0).str(), weight, bias};
    return true;
  }
  if (is(node, "Gemm") && !bias) {
    // torch.nn.Linear on 2-D inputs: Gemm(x, W [out, in], b, transB = 1).
    if (intAttr(*node, "transA", 0) != 0 || intAttr(*node, "transB", 0) != 1)
      return fail("'" + node->name() + "' is a Gemm other than x·Wᵀ + b");
    for (const onnx::AttributeProto &attr : node->attribute())
      if ((attr.name() == "alpha" || attr.name() == "beta") && attr.f() != 1.0f)
        return fail("'" + node->name() + "' scales by alpha or beta");
    DenseElementsAttr weight = constant(inputOf(node, 1));
    if (!weight || weight.getType().getRank() != 2 ||
        !isa<FloatType>(weight.getElementType()))
      return fail("'" + node->name() + "' has no constant 2-D weight");
    if (node->input_size() > 2 && !inputOf(node, 2).empty()) {
      bias = constant(inputOf(node, 2));
      if (!bias || bias.getType().getRank() != 1)
        return fail("'" + node->name() + "' has no constant 1-D bias");
    }
    linear = {inputOf(node, 0).str(), transpose2D(weight), bias};
    return true;
  }
  return fail("'" + name + "' is computed by " + describe(node) +
              ", not a linear map by a constant weight");
}

StringRef BlockMatcher::skipRowView(StringRef name, int64_t cols) {
  const onnx::NodeProto *reshape = defOp(name, "Reshape");
  if (!reshape)
    return name;
  std::optional<SmallVector<int64_t>> shape = constantInts(inputOf(reshape, 1));
  if (!shape || shape->size() != 2 || ((*shape)[0] != -1 && (*shape)[0] != 0) ||
      (*shape)[1] != cols)
    return name;
  return skipCasts(inputOf(reshape, 0));
}

bool BlockMatcher::matchGroupLimit(StringRef name, GroupLimit &limit) {
  const onnx::NodeProto *where = defOp(name, "Where");
  if (!where)
    return false;
  auto skipBool = [&](StringRef n) {
    return skipCasts(n, onnx::TensorProto::BOOL);
  };
  DenseElementsAttr fill = constant(inputOf(where, 1));
  if (!fill || !fill.isSplat() || !isa<FloatType>(fill.getElementType()))
    return fail("the masked scores' fill value is not a constant");
  limit.fill = fill.getSplatValue<APFloat>().convertToDouble();
  limit.scores = skipCasts(inputOf(where, 2)).str();
  const onnx::NodeProto *notOp = defOp(skipBool(inputOf(where, 0)), "Not");
  if (!notOp)
    return fail("the scores are masked by " +
                describe(def(skipBool(inputOf(where, 0)))) +
                ", not by Not(group mask)");
  // The mask: Reshape(Expand(Unsqueeze(ScatterElements(zeros, group ids,
  // ones), -1), [T, G, E / G]), [-1, E]).
  const onnx::NodeProto *reshape =
      defOp(skipBool(inputOf(notOp, 0)), "Reshape");
  const onnx::NodeProto *expand =
      reshape ? defOp(inputOf(reshape, 0), "Expand") : nullptr;
  const onnx::NodeProto *unsqueeze =
      expand ? defOp(inputOf(expand, 0), "Unsqueeze") : nullptr;
  std::optional<SmallVector<int64_t>> unsqueezeAxes =
      unsqueeze ? axesOf(*unsqueeze) : std::nullopt;
  const onnx::NodeProto *scatter =
      unsqueeze ? defOp(inputOf(unsqueeze, 0), "ScatterElements") : nullptr;
  if (!scatter || !unsqueezeAxes || unsqueezeAxes->size() != 1 ||
      ((*unsqueezeAxes)[0] != -1 && (*unsqueezeAxes)[0] != 2))
    return fail("the score mask is not the group mask expanded to the groups' "
                "experts");
  int64_t scatterAxis = intAttr(*scatter, "axis", 0);
  if (!isZeros(inputOf(scatter, 0)) || (scatterAxis != 1 && scatterAxis != -1))
    return fail("the group mask is not scattered into zeros along the groups");
  // The updates: ones (a constant, or a constant expanded).
  StringRef updates = inputOf(scatter, 2);
  if (const onnx::NodeProto *e = defOp(updates, "Expand"))
    updates = inputOf(e, 0);
  DenseElementsAttr ones = constant(updates);
  if (!ones || !ones.isSplat() || !isa<FloatType>(ones.getElementType()) ||
      ones.getSplatValue<APFloat>().isZero())
    return fail("the group mask's updates are not a nonzero constant");
  // The chosen groups: TopK(ReduceSum(TopK(view(s, [-1, G, E / G]), 2)
  // values, -1), topk_group) indices.
  const onnx::NodeProto *groupTopK = defOp(inputOf(scatter, 1), "TopK");
  if (!groupTopK || inputOf(scatter, 1) != outputOf(groupTopK, 1))
    return fail("the group mask's indices are not a TopK's");
  std::optional<int64_t> topkGroup = constantInt(inputOf(groupTopK, 1));
  const onnx::NodeProto *sum = defOp(inputOf(groupTopK, 0), "ReduceSum");
  std::optional<SmallVector<int64_t>> sumAxes =
      sum ? axesOf(*sum) : std::nullopt;
  const onnx::NodeProto *pairTopK =
      sum ? defOp(inputOf(sum, 0), "TopK") : nullptr;
  if (!topkGroup || !sum || !sumAxes || sumAxes->size() != 1 ||
      ((*sumAxes)[0] != -1 && (*sumAxes)[0] != 2) ||
      intAttr(*sum, "keepdims", 1) != 0 || !pairTopK ||
      inputOf(sum, 0) != outputOf(pairTopK, 0) ||
      constantInt(inputOf(pairTopK, 1)) != 2)
    return fail("the groups are not ranked by the sum of their two best "
                "scores");
  for (const onnx::NodeProto *topk : {groupTopK, pairTopK})
    if (intAttr(*topk, "largest", 1) != 1 || intAttr(*topk, "axis", -1) != -1)
      return fail("a group TopK is not the largest along the last axis");
  const onnx::NodeProto *view = defOp(inputOf(pairTopK, 0), "Reshape");
  std::optional<SmallVector<int64_t>> viewShape =
      view ? constantInts(inputOf(view, 1)) : std::nullopt;
  if (!viewShape || viewShape->size() != 3 ||
      ((*viewShape)[0] != -1 && (*viewShape)[0] != 0) ||
      skipCasts(inputOf(view, 0)) != limit.scores)
    return fail("the group scores do not view the masked scores as [T, G, "
                "E / G]");
  limit.nGroup = (*viewShape)[1];
  limit.groupSize = (*viewShape)[2];
  limit.topkGroup = *topkGroup;
  limit.topks = {pairTopK, groupTopK};
  return true;
}

bool BlockMatcher::matchModalityMask(StringRef name, Router &router,
                                     StringRef &logits) {
  const onnx::NodeProto *where = defOp(name, "Where");
  if (!where)
    return false;
  // Not(Equal) selects the masked experts, Equal the kept ones.
  StringRef cond = skipCasts(inputOf(where, 0), onnx::TensorProto::BOOL);
  const onnx::NodeProto *negation = defOp(cond, "Not");
  const onnx::NodeProto *equal =
      defOp(negation ? skipCasts(inputOf(negation, 0), onnx::TensorProto::BOOL)
                     : cond,
            "Equal");
  int fillAt = negation ? 1 : 2;
  std::optional<double> fill = constantScalar(inputOf(where, fillAt));
  if (!equal || !fill || !std::isinf(*fill) || *fill > 0)
    return fail("the logits pass a Where that is not a modality mask "
                "(masked_fill of the other groups' experts with -inf)");
  for (int i = 0; i < 2; ++i) {
    DenseElementsAttr groups = constant(inputOf(equal, i));
    const onnx::NodeProto *column = defOp(inputOf(equal, 1 - i), "Unsqueeze");
    std::optional<SmallVector<int64_t>> axes =
        column ? axesOf(*column) : std::nullopt;
    if (!groups || !isa<IntegerType>(groups.getElementType()) || !axes ||
        axes->size() != 1 || ((*axes)[0] != 1 && (*axes)[0] != -1))
      continue;
    ShapedType type = groups.getType();
    if (type.getRank() == 2 && type.getDimSize(0) != 1)
      continue;
    // Consecutive groups 0, 1, ...: their sizes.
    SmallVector<int64_t> sizes;
    for (const APInt &v : groups.getValues<APInt>()) {
      int64_t g = v.getSExtValue();
      if (g == (int64_t)sizes.size() - 1)
        ++sizes.back();
      else if (g == (int64_t)sizes.size())
        sizes.push_back(1);
      else
        return fail("the experts' modality groups are not consecutive "
                    "groups 0, 1, ...");
    }
    router.expertGroups = sizes;
    router.tokenGroups = inputOf(column, 0).str();
    logits = skipCasts(inputOf(where, 3 - fillAt));
    return true;
  }
  return fail("the logits are masked by something other than a comparison "
              "of the experts' groups with the token's group");
}

bool BlockMatcher::matchRouter(StringRef probs, Router &router) {
  StringRef name = skipCasts(probs);
  GroupLimit limit;
  bool grouped = matchGroupLimit(name, limit);
  if (!grouped && !why.empty())
    return false;
  if (grouped)
    name = limit.scores;
  // A selection bias: TopK(scores + bias) (DeepSeek-V3's
  // `scores_for_choice`).
  DenseElementsAttr selectionBias;
  if (const onnx::NodeProto *add = defOp(name, "Add")) {
    for (int i = 0; i < 2 && !selectionBias; ++i) {
      DenseElementsAttr bias = constant(inputOf(add, i));
      if (bias && bias.getType().getRank() == 2 &&
          bias.getType().getDimSize(0) == 1)
        bias = bias.reshape(RankedTensorType::get(
            {bias.getType().getDimSize(1)}, bias.getElementType()));
      StringRef other = skipCasts(inputOf(add, 1 - i));
      if (bias && bias.getType().getRank() == 1)
        other = skipRowView(other, bias.getType().getDimSize(0));
      if (bias && bias.getType().getRank() == 1 &&
          isa<FloatType>(bias.getElementType()) &&
          (defOp(other, "Sigmoid") || defOp(other, "Softmax"))) {
        selectionBias = bias;
        name = other;
      }
    }
  }
  const onnx::NodeProto *softmax = defOp(name, "Softmax");
  ScoringFunc scoring = ScoringFunc::Softmax;
  if (!softmax && (softmax = defOp(name, "Sigmoid")))
    scoring = ScoringFunc::Sigmoid;
  if (!softmax)
    return fail("the routing scores come from " + describe(def(name)) +
                ", not from a Softmax or Sigmoid of router logits");
  StringRef logits = skipCasts(inputOf(softmax, 0));
  // A softmax temperature: Softmax(logits / t) or Softmax(logits * (1 / t)).
  double temperature = 1.0;
  if (scoring == ScoringFunc::Softmax) {
    if (const onnx::NodeProto *div = defOp(logits, "Div")) {
      std::optional<double> t = constantScalar(inputOf(div, 1));
      if (t && *t > 0) {
        temperature = *t;
        logits = skipCasts(inputOf(div, 0));
      }
    } else if (const onnx::NodeProto *mul = defOp(logits, "Mul")) {
      for (int i = 0; i < 2; ++i) {
        std::optional<double> c = constantScalar(inputOf(mul, i));
        if (c && *c > 0) {
          temperature = 1.0 / *c;
          logits = skipCasts(inputOf(mul, 1 - i));
          break;
        }
      }
    }
  }
  Router modality;
  if (matchModalityMask(logits, modality, logits)) {
    if (scoring != ScoringFunc::Softmax || selectionBias || grouped)
      return fail("modality groups only with softmax scores, without a "
                  "selection bias or group limit");
  } else if (!why.empty()) {
    return false;
  }
  // A gating residual (MoE++): logits = x·W + r with r computed (the
  // previous layer's routing logits, or a map of them).
  std::string residual;
  Linear linear;
  if (const onnx::NodeProto *add = defOp(logits, "Add")) {
    for (int i = 0; i < 2 && residual.empty(); ++i) {
      StringRef other = inputOf(add, 1 - i);
      if (!constant(other) && !constant(inputOf(add, i)) &&
          matchLinear(inputOf(add, i), linear)) {
        residual = other.str();
        logits = inputOf(add, i);
      }
    }
    why.clear();
  }
  if (residual.empty() && !matchLinear(logits, linear))
    return fail("the router: " + why);
  router = routerOf(softmax, linear, logits, scoring);
  router.residual = residual;
  router.temperature = temperature;
  router.selectionBias = selectionBias;
  router.expertGroups = modality.expertGroups;
  router.tokenGroups = modality.tokenGroups;
  if (!router.expertGroups.empty() && llvm::sum_of(router.expertGroups) !=
                                          linear.weight.getType().getDimSize(1))
    return fail("the modality groups do not cover the router's experts");
  if (!grouped)
    return true;
  int64_t numExperts = linear.weight.getType().getDimSize(1);
  if (limit.nGroup < 1 || limit.groupSize < 2 ||
      limit.nGroup * limit.groupSize != numExperts || limit.topkGroup < 1 ||
      limit.topkGroup > limit.nGroup)
    return fail(llvm::formatv("the groups ({0} x {1}, top {2}) do not split "
                              "the {3} experts",
                              limit.nGroup, limit.groupSize, limit.topkGroup,
                              numExperts)
                    .str());
  // moe.routing masks the other groups' experts with -inf. A fill of 0
  // (transformers' masked_fill(..., 0.0)) chooses the same experts where
  // every kept expert scores above 0: positive scores plus a bias >= 0.
  if (!(std::isinf(limit.fill) && limit.fill < 0)) {
    bool positive = limit.fill == 0.0;
    if (positive && selectionBias)
      for (const APFloat &v : selectionBias.getValues<APFloat>())
        positive = positive && !v.isNegative();
    if (!positive) {
      SmallString<16> fill;
      APFloat(limit.fill).toString(fill);
      return fail("the other groups' experts are masked with " + fill +
                  ", not -inf, and the biased scores can be below it (a "
                  "masked expert could be chosen)");
    }
  }
  router.group = std::move(limit);
  return true;
}

bool BlockMatcher::matchTopKSoftmaxRouter(const onnx::NodeProto &topk,
                                          Router &router) {
  StringRef logits = skipCasts(inputOf(&topk, 0));
  const onnx::NodeProto *softmax = userOp(outputOf(&topk, 0), "Softmax");
  if (!softmax || !(is(def(logits), "MatMul") || is(def(logits), "Gemm") ||
                    is(def(logits), "Add")))
    return false;
  // Not this form: leave no reason behind for the other router forms.
  Linear linear;
  bool matched = matchLinear(logits, linear);
  why.clear();
  if (!matched)
    return false;
  router = routerOf(softmax, linear, logits, ScoringFunc::TopkSoftmax);
  return true;
}

std::optional<double> BlockMatcher::matchClip(StringRef name, double limit,
                                              bool symmetric,
                                              StringRef &input) {
  const onnx::NodeProto *clip = defOp(name, "Clip");
  if (!clip) {
    input = name;
    return 0.0;
  }
  input = inputOf(clip, 0);
  // Clip(x, min, max): GPT-OSS's clamp(max = limit) of the gate and
  // clamp(-limit, limit) of the up projection.
  std::optional<double> max =
      clip->input_size() > 2 && !inputOf(clip, 2).empty()
          ? constantScalar(inputOf(clip, 2))
          : std::nullopt;
  bool hasMin = clip->input_size() > 1 && !inputOf(clip, 1).empty();
  std::optional<double> min =
      hasMin ? constantScalar(inputOf(clip, 1)) : std::nullopt;
  if (!max || *max <= 0 || (limit > 0 && *max != limit) ||
      (symmetric ? !min || *min != -*max : hasMin))
    return std::nullopt;
  return *max;
}

bool BlockMatcher::matchGatedActivation(StringRef name, GatedActivation &act) {
  const onnx::NodeProto *mul = defOp(name, "Mul");
  if (!mul)
    return false;
  for (int i = 0; i < 2; ++i) {
    // act_alpha(g) = g * sigmoid(g) or g * sigmoid(g * alpha).
    const onnx::NodeProto *glu = defOp(inputOf(mul, i), "Mul");
    if (!glu)
      continue;
    for (int j = 0; j < 2; ++j) {
      StringRef g = inputOf(glu, j);
      const onnx::NodeProto *sigmoid = defOp(inputOf(glu, 1 - j), "Sigmoid");
      if (!sigmoid)
        continue;
      double alpha = 1.0;
      StringRef arg = inputOf(sigmoid, 0);
      if (arg != g) {
        const onnx::NodeProto *scaled = defOp(arg, "Mul");
        std::optional<double> c;
        for (int m = 0; m < 2 && scaled && !c; ++m)
          if (inputOf(scaled, 1 - m) == g)
            c = constantScalar(inputOf(scaled, m));
        if (!c)
          continue;
        alpha = *c;
      }
      // (u + beta) or u.
      StringRef u = inputOf(mul, 1 - i);
      double beta = 0.0;
      if (const onnx::NodeProto *plus = defOp(u, "Add")) {
        for (int m = 0; m < 2; ++m) {
          if (std::optional<double> c = constantScalar(inputOf(plus, m))) {
            beta = *c;
            u = inputOf(plus, 1 - m);
            break;
          }
        }
      }
      StringRef gateIn, upIn;
      std::optional<double> limit = matchClip(g, 0.0, false, gateIn);
      std::optional<double> upLimit =
          limit ? matchClip(u, *limit, true, upIn) : std::nullopt;
      if (!limit || !upLimit || *limit != *upLimit)
        return fail("'" + mul->name() +
                    "' clamps the gated activation otherwise than GPT-OSS "
                    "(gate at most L, up within [-L, L])");
      act = {gateIn.str(), upIn.str(), *limit, alpha, beta};
      return true;
    }
  }
  return false;
}

bool BlockMatcher::matchSwiGLU(StringRef name, ExpertMLP &mlp) {
  Linear down;
  if (!matchLinear(name, down))
    return fail("the expert output: " + why);
  const onnx::NodeProto *mul = defOp(down.input, "Mul");
  if (!mul)
    return fail("the expert's down projection reads " +
                describe(def(down.input)) + ", not a gated product");
  GatedActivation act;
  if (!matchGatedActivation(down.input, act)) {
    if (why.empty())
      why = "'" + mul->name() + "' is not silu(x·W1) * (x·W3)";
    return false;
  }
  Linear gate, up;
  // Two projections, or the columns of one fused projection (GPT-OSS's
  // interleaved gate_up).
  auto linear = [&](StringRef n, Linear &l) { return matchLinear(n, l); };
  if (!splitFusedGateUp(act, gate, up, linear))
    return fail("the SwiGLU expert's projections: " + why);
  if (gate.input != up.input)
    return fail("the expert's gate and up projections read different "
                "values");
  mlp = ExpertMLP();
  mlp.input = gate.input;
  mlp.gate = gate.weight;
  mlp.up = up.weight;
  mlp.down = down.weight;
  mlp.gateBias = gate.bias;
  mlp.upBias = up.bias;
  mlp.downBias = down.bias;
  mlp.limit = act.limit;
  mlp.alpha = act.alpha;
  mlp.beta = act.beta;
  return true;
}

void BlockMatcher::matchZeroComputation(StringRef name, ExpertMLP &mlp) {
  mlp = ExpertMLP();
  // zeros_like(rows): ConstantOfShape(Shape(rows)) of zeros.
  if (const onnx::NodeProto *zeros = defOp(name, "ConstantOfShape")) {
    const onnx::NodeProto *shape = defOp(inputOf(zeros, 0), "Shape");
    // The whole shape: no start or end.
    if (shape && isZeros(name) && shape->attribute_size() == 0) {
      mlp.input = inputOf(shape, 0).str();
      mlp.zero = ZeroComputationKind::Zero;
      return;
    }
  }
  // a[:, 0:1] * rows + a[:, 1:2] * v with a = softmax(rows·Wc).
  auto column = [&](StringRef n) -> std::pair<StringRef, int64_t> {
    const onnx::NodeProto *slice = defOp(n, "Slice");
    if (!slice || slice->input_size() < 4)
      return {StringRef(), -1};
    std::optional<int64_t> start = constantInt(inputOf(slice, 1));
    std::optional<int64_t> end = constantInt(inputOf(slice, 2));
    std::optional<int64_t> axis = constantInt(inputOf(slice, 3));
    std::optional<int64_t> step =
        slice->input_size() > 4 ? constantInt(inputOf(slice, 4)) : 1;
    if (!start || !end || !axis || step != 1 || *end != *start + 1 ||
        (*axis != -1 && *axis != 1))
      return {StringRef(), -1};
    return {inputOf(slice, 0), *start};
  };
  if (const onnx::NodeProto *add = defOp(name, "Add")) {
    for (int i = 0; i < 2; ++i) {
      const onnx::NodeProto *mulX = defOp(inputOf(add, i), "Mul");
      const onnx::NodeProto *mulV = defOp(inputOf(add, 1 - i), "Mul");
      if (!mulX || !mulV)
        continue;
      for (int j = 0; j < 2; ++j) {
        auto [sm0, c0] = column(inputOf(mulX, j));
        StringRef rows = inputOf(mulX, 1 - j);
        for (int m = 0; m < 2; ++m) {
          auto [sm1, c1] = column(inputOf(mulV, m));
          DenseElementsAttr v = constant(inputOf(mulV, 1 - m));
          const onnx::NodeProto *softmax = defOp(sm0, "Softmax");
          Linear mix;
          if (sm0.empty() || sm0 != sm1 || c0 != 0 || c1 != 1 || !v ||
              v.getType().getRank() != 1 || !softmax ||
              (intAttr(*softmax, "axis", -1) != -1 &&
               intAttr(*softmax, "axis", -1) != 1) ||
              !matchLinear(inputOf(softmax, 0), mix) || mix.bias ||
              mix.input != rows || mix.weight.getType().getDimSize(1) != 2 ||
              mix.weight.getType().getDimSize(0) != v.getType().getDimSize(0))
            continue;
          mlp.input = rows.str();
          mlp.zero = ZeroComputationKind::Constant;
          mlp.constantValue = v;
          mlp.constantMix = mix.weight;
          return;
        }
      }
    }
  }
  why.clear();
  // Anything else may be the rows themselves: a copy expert, if the caller
  // finds the rows there.
  mlp.input = name.str();
  mlp.zero = ZeroComputationKind::Copy;
}

bool BlockMatcher::matchExpert(StringRef name, ExpertMLP &mlp) {
  if (matchSwiGLU(name, mlp))
    return true;
  std::string swiglu = why;
  // A ReLU or GELU FFN: down(act(up(x))), with or without biases.
  Linear down, up;
  if (!matchLinear(name, down))
    return fail(swiglu + " (nor an FFN)");
  StringRef hidden;
  Activation activation;
  if (!matchFfnActivation(down.input, hidden, activation))
    return fail(swiglu + " (nor a ReLU or GELU FFN)");
  if (!matchLinear(hidden, up))
    return fail("the FFN expert's up projection: " + why);
  mlp = ExpertMLP();
  mlp.input = up.input;
  mlp.up = up.weight;
  mlp.down = down.weight;
  mlp.upBias = up.bias;
  mlp.downBias = down.bias;
  mlp.activation = activation;
  return true;
}

bool BlockMatcher::matchFfnActivation(StringRef name, StringRef &input,
                                      Activation &activation) {
  if (const onnx::NodeProto *relu = defOp(name, "Relu")) {
    input = inputOf(relu, 0);
    activation = Activation::Relu;
    return true;
  }
  if (matchGelu(name, input)) {
    activation = Activation::Gelu;
    return true;
  }
  if (matchGeluTanh(name, input)) {
    activation = Activation::GeluTanh;
    return true;
  }
  return false;
}

bool BlockMatcher::matchGelu(StringRef name, StringRef &input) {
  // 0.5 * (h * (1 + erf(h / sqrt(2)))), as torch exports F.gelu; the
  // operands of each Mul and Add in either order.
  auto other = [&](const onnx::NodeProto *node, double value) -> StringRef {
    for (int i = 0; i < 2; ++i)
      if (isConstantNear(inputOf(node, i), value))
        return inputOf(node, 1 - i);
    return {};
  };
  const onnx::NodeProto *half = defOp(name, "Mul");
  const onnx::NodeProto *product =
      half ? defOp(other(half, 0.5), "Mul") : nullptr;
  if (!product)
    return false;
  for (int i = 0; i < 2; ++i) {
    StringRef h = inputOf(product, i);
    const onnx::NodeProto *plus = defOp(inputOf(product, 1 - i), "Add");
    const onnx::NodeProto *erf =
        plus ? defOp(other(plus, 1.0), "Erf") : nullptr;
    const onnx::NodeProto *div = erf ? defOp(inputOf(erf, 0), "Div") : nullptr;
    if (div && inputOf(div, 0) == h &&
        isConstantNear(inputOf(div, 1), std::sqrt(2.0))) {
      input = h;
      return true;
    }
  }
  return false;
}

bool BlockMatcher::matchGeluTanh(StringRef name, StringRef &input) {
  // 0.5 * (h * (1 + tanh(sqrt(2/pi) * (h + 0.044715 * h^3)))), as torch
  // exports F.gelu(approximate="tanh"); h^3 as h * (h * h) or Pow(h, 3).
  auto other = [&](const onnx::NodeProto *node, double value) -> StringRef {
    for (int i = 0; node && i < 2; ++i)
      if (isConstantNear(inputOf(node, i), value))
        return inputOf(node, 1 - i);
    return {};
  };
  auto isCube = [&](StringRef cube, StringRef h) {
    if (const onnx::NodeProto *pow = defOp(cube, "Pow")) {
      std::optional<double> e = constantScalar(inputOf(pow, 1));
      return inputOf(pow, 0) == h && e && *e == 3.0;
    }
    const onnx::NodeProto *mul = defOp(cube, "Mul");
    for (int i = 0; mul && i < 2; ++i) {
      const onnx::NodeProto *square = defOp(inputOf(mul, 1 - i), "Mul");
      if (inputOf(mul, i) == h && square && inputOf(square, 0) == h &&
          inputOf(square, 1) == h)
        return true;
    }
    return false;
  };
  const onnx::NodeProto *product = defOp(other(defOp(name, "Mul"), 0.5), "Mul");
  for (int i = 0; product && i < 2; ++i) {
    StringRef h = inputOf(product, i);
    const onnx::NodeProto *tanh =
        defOp(other(defOp(inputOf(product, 1 - i), "Add"), 1.0), "Tanh");
    const onnx::NodeProto *sum =
        tanh ? defOp(
                   other(defOp(inputOf(tanh, 0), "Mul"), std::sqrt(2.0 / M_PI)),
                   "Add")
             : nullptr;
    for (int j = 0; sum && j < 2; ++j) {
      if (inputOf(sum, j) == h &&
          isCube(other(defOp(inputOf(sum, 1 - j), "Mul"), 0.044715), h)) {
        input = h;
        return true;
      }
    }
  }
  return false;
}

bool BlockMatcher::isTopKWeights(const onnx::NodeProto &topk, StringRef name) {
  name = skipCasts(name);
  // Top-k softmax: the Softmax of the TopK values.
  if (router && router->scoring == ScoringFunc::TopkSoftmax)
    return name == outputOf(router->softmax, 0) &&
           inputOf(router->softmax, 0) == outputOf(&topk, 0);
  if (!router || !router->selectionBias)
    return name == outputOf(&topk, 0);
  // With a selection bias the weights are the unbiased scores at the chosen
  // ids: GatherElements(scores, ids, axis = -1).
  const onnx::NodeProto *gather = defOp(name, "GatherElements");
  if (!gather)
    return false;
  int64_t axis = intAttr(*gather, "axis", 0);
  return skipCasts(inputOf(gather, 0)) == outputOf(router->softmax, 0) &&
         skipCasts(inputOf(gather, 1)) == outputOf(&topk, 1) &&
         (axis == -1 || axis == 1);
}

bool BlockMatcher::matchWeights(const onnx::NodeProto &topk, StringRef name,
                                bool &renormalize) {
  name = skipCasts(name);
  // An optional constant scale (routed_scaling_factor) last.
  double found = 1.0;
  if (const onnx::NodeProto *mul = defOp(name, "Mul")) {
    for (int i = 0; i < 2; ++i) {
      DenseElementsAttr c = constant(inputOf(mul, i));
      if (c && c.isSplat() && isa<FloatType>(c.getElementType())) {
        found = c.getSplatValue<APFloat>().convertToDouble();
        name = skipCasts(inputOf(mul, 1 - i));
        break;
      }
    }
  }
  if (found != scale && found != 1.0 && scale != 1.0)
    return fail("the experts use different routing scales");
  if (found != 1.0)
    scale = found;
  // The top-k values, or their top-p mask (one threshold for the block).
  bool sameThreshold = true;
  auto isBase = [&](StringRef n) {
    if (isTopKWeights(topk, n))
      return true;
    std::optional<double> p = matchTopPMask(topk, skipCasts(n));
    if (!p)
      return false;
    sameThreshold = sameThreshold && (threshold == 0.0 || threshold == *p);
    threshold = *p;
    return true;
  };
  if (isBase(name)) {
    renormalize = false;
    return sameThreshold || fail("the experts use different top-p thresholds");
  }
  const onnx::NodeProto *div = defOp(name, "Div");
  const onnx::NodeProto *sum =
      div ? defOp(inputOf(div, 1), "ReduceSum") : nullptr;
  if (div && sum && isBase(inputOf(div, 0)) && isBase(inputOf(sum, 0))) {
    if (!sameThreshold)
      return fail("the experts use different top-p thresholds");
    std::optional<SmallVector<int64_t>> axes = axesOf(*sum);
    if (!axes || axes->size() != 1 || (*axes)[0] != -1 ||
        intAttr(*sum, "keepdims", 1) != 1)
      return fail("the routing weights are divided by a sum other than over "
                  "the chosen experts");
    renormalize = true;
    return true;
  }
  return fail("the routing weights are computed by " + describe(def(name)) +
              " from the top-k values, neither used as they are nor "
              "renormalized by their sum");
}

std::optional<double> BlockMatcher::matchTopPMask(const onnx::NodeProto &topk,
                                                  StringRef name) {
  StringRef values = outputOf(&topk, 0);
  const onnx::NodeProto *mul = defOp(name, "Mul");
  for (int i = 0; mul && i < 2; ++i) {
    if (skipCasts(inputOf(mul, i)) != values)
      continue;
    // The mask, through a Cast to float (or of bool).
    StringRef mask = inputOf(mul, 1 - i);
    if (const onnx::NodeProto *cast = defOp(mask, "Cast"))
      mask = inputOf(cast, 0);
    const onnx::NodeProto *less = defOp(mask, "Less");
    const onnx::NodeProto *sub =
        less ? defOp(inputOf(less, 0), "Sub") : nullptr;
    const onnx::NodeProto *cumsum =
        sub ? defOp(inputOf(sub, 0), "CumSum") : nullptr;
    std::optional<double> p =
        less ? constantScalar(inputOf(less, 1)) : std::nullopt;
    std::optional<int64_t> axis =
        cumsum ? constantInt(inputOf(cumsum, 1)) : std::nullopt;
    if (cumsum && skipCasts(inputOf(cumsum, 0)) == values &&
        skipCasts(inputOf(sub, 1)) == values && axis && *axis == -1 &&
        intAttr(*cumsum, "exclusive", 0) == 0 &&
        intAttr(*cumsum, "reverse", 0) == 0 && p && *p > 0)
      return p;
  }
  return std::nullopt;
}

bool BlockMatcher::finishExperts(ArrayRef<ExpertMLP> experts, StringRef input,
                                 int64_t numExperts, MoEBlock &block) {
  if ((int64_t)experts.size() != numExperts)
    return fail(llvm::formatv("{0} experts for a router over {1}",
                              experts.size(), numExperts)
                    .str());
  block.zeroKinds.clear();
  // MoE++'s zero-computation experts follow the FFN experts.
  size_t numFfn = 0;
  while (numFfn < experts.size() && !experts[numFfn].zero)
    ++numFfn;
  if (numFfn == 0)
    return fail("no expert is an FFN (only zero-computation experts)");
  SmallVector<DenseElementsAttr> values, mixes;
  for (const ExpertMLP &mlp : experts.drop_front(numFfn)) {
    if (!mlp.zero)
      return fail("an FFN expert after MoE++'s zero-computation experts");
    block.zeroKinds.push_back(*mlp.zero);
    if (mlp.zero != ZeroComputationKind::Constant)
      continue;
    if (!values.empty() &&
        (values[0].getType() != mlp.constantValue.getType() ||
         mixes[0].getType() != mlp.constantMix.getType()))
      return fail("the constant experts have different shapes");
    values.push_back(mlp.constantValue);
    mixes.push_back(mlp.constantMix);
  }
  if (!values.empty()) {
    block.constantValues = stackWeights(values);
    block.constantMix = stackWeights(mixes);
  }
  experts = experts.take_front(numFfn);
  auto typeOf = [](DenseElementsAttr attr) {
    return attr ? attr.getType() : ShapedType();
  };
  for (const ExpertMLP &mlp : experts) {
    if (typeOf(mlp.gate) != typeOf(experts[0].gate) ||
        typeOf(mlp.up) != typeOf(experts[0].up) ||
        typeOf(mlp.down) != typeOf(experts[0].down) ||
        typeOf(mlp.gateBias) != typeOf(experts[0].gateBias) ||
        typeOf(mlp.upBias) != typeOf(experts[0].upBias) ||
        typeOf(mlp.downBias) != typeOf(experts[0].downBias) ||
        mlp.activation != experts[0].activation ||
        mlp.limit != experts[0].limit || mlp.alpha != experts[0].alpha ||
        mlp.beta != experts[0].beta)
      return fail("the experts have different shapes or kinds");
  }
  auto stack = [&](auto get) {
    if (!get(experts[0]))
      return DenseElementsAttr();
    SmallVector<DenseElementsAttr> parts;
    for (const ExpertMLP &mlp : experts)
      parts.push_back(get(mlp));
    return stackWeights(parts);
  };
  block.gate = stack([](const ExpertMLP &m) { return m.gate; });
  block.up = stack([](const ExpertMLP &m) { return m.up; });
  block.down = stack([](const ExpertMLP &m) { return m.down; });
  block.gateBias = stack([](const ExpertMLP &m) { return m.gateBias; });
  block.upBias = stack([](const ExpertMLP &m) { return m.upBias; });
  block.downBias = stack([](const ExpertMLP &m) { return m.downBias; });
  // SwiGLU experts have a gate; the others are ReLU or GELU FFNs.
  block.kind = block.gate ? ExpertKind::Gated : ExpertKind::Ffn;
  block.activation = experts[0].activation;
  block.limit = experts[0].limit;
  block.alpha = experts[0].alpha;
  block.beta = experts[0].beta;
  block.input = input.str();
  return true;
}

bool BlockMatcher::matchMixtral(const onnx::NodeProto &topk,
                                const Router &router, int64_t k,
                                MoEBlock &block) {
  const onnx::NodeProto *oneHot = userOp(outputOf(&topk, 1), "OneHot");
  int64_t numExperts = router.weight.getType().getDimSize(1);
  // The top-k ids' scores, scattered into a [T, E] matrix (GPT-OSS's router
  // scores, which its experts take their weights from).
  const onnx::NodeProto *scores = userOp(outputOf(&topk, 1), "ScatterElements");
  if (scores && (inputOf(scores, 1) != outputOf(&topk, 1) ||
                 !(intAttr(*scores, "axis", 0) == 1 ||
                   intAttr(*scores, "axis", 0) == -1) ||
                 !isZeros(inputOf(scores, 0))))
    scores = nullptr;
  // The number of classes: E, or E + 1 (transformers 4.57's GPT-OSS adds a
  // class no router picks); E as a constant or the scores' dimension 1.
  auto expertCount = [&](StringRef name) -> std::optional<int64_t> {
    if (std::optional<int64_t> c = constantInt(name))
      return c;
    if (scores && isDim(name, outputOf(scores, 0), 1))
      return numExperts;
    if (isDim(name, router.logits, 1))
      return numExperts;
    return std::nullopt;
  };
  std::optional<int64_t> depth =
      oneHot ? expertCount(inputOf(oneHot, 1)) : std::nullopt;
  if (oneHot && !depth)
    if (const onnx::NodeProto *plus = defOp(inputOf(oneHot, 1), "Add"))
      for (int i = 0; i < 2 && !depth; ++i)
        if (constantInt(inputOf(plus, i)) == 1)
          if (std::optional<int64_t> n = expertCount(inputOf(plus, 1 - i)))
            depth = *n + 1;
  std::optional<SmallVector<int64_t>> onOff =
      oneHot ? constantInts(inputOf(oneHot, 2)) : std::nullopt;
  if (!depth || (*depth != numExperts && *depth != numExperts + 1) || !onOff ||
      *onOff != SmallVector<int64_t>{0, 1} ||
      intAttr(*oneHot, "axis", -1) != -1)
    return fail("the expert mask is not one_hot(ids, num_experts)");
  const onnx::NodeProto *mask = userOp(outputOf(oneHot, 0), "Transpose");
  if (!mask || intsAttr(*mask, "perm") != SmallVector<int64_t>{2, 1, 0})
    return fail("the expert mask is not permuted to [E, k, T]");

  SmallVector<ExpertMLP> experts(numExperts);
  SmallVector<bool> seen(numExperts, false);
  std::optional<bool> renormalize;
  // The accumulator: Add(previous, scatter) per expert, in a chain.
  SmallVector<const onnx::NodeProto *> adds;
  // transformers 4.52+ loops over the experts hit only.
  const onnx::NodeProto *hitLoop = nullptr;
  for (const onnx::NodeProto *user : users(outputOf(mask, 0))) {
    if (!is(user, "ReduceSum"))
      continue;
    if (!matchHitLoop(*user, numExperts))
      return false;
    hitLoop = user;
  }
  if (*depth != numExperts && !hitLoop)
    return fail("the expert mask is not one_hot(ids, num_experts)");
  for (const onnx::NodeProto *gather : users(outputOf(mask, 0))) {
    if (gather == hitLoop)
      continue;
    bool vector = false;
    std::optional<int64_t> e = expertIndex(gather, seen, &vector);
    if (!e)
      return fail("the expert mask is used other than as mask[e] for each "
                  "expert e once");
    std::string where = llvm::formatv("expert {0}: ", *e).str();
    // idx, top_x = torch.where(mask[e]) (mask[expert_hit[i]].squeeze(0) in
    // the hit loop).
    StringRef maskE = outputOf(gather, 0);
    if (vector) {
      const onnx::NodeProto *squeeze = userOp(maskE, "Squeeze");
      if (!squeeze || axesOf(*squeeze) != SmallVector<int64_t>{0})
        return fail(where + "mask[[e]] is not squeezed to [k, T]");
      maskE = outputOf(squeeze, 0);
    }
    if (const onnx::NodeProto *cast = userOp(maskE, "Cast"))
      maskE = outputOf(cast, 0);
    const onnx::NodeProto *nonZero = userOp(maskE, "NonZero");
    const onnx::NodeProto *pairs =
        nonZero ? userOp(outputOf(nonZero, 0), "Transpose") : nullptr;
    const onnx::NodeProto *split =
        pairs ? userOp(outputOf(pairs, 0), "Split") : nullptr;
    if (!split || split->output_size() != 2 || intAttr(*split, "axis", 0) != 1)
      return fail(where + "torch.where(mask[e]) is not NonZero -> "
                          "Transpose -> Split");
    const onnx::NodeProto *slotSq = userOp(outputOf(split, 0), "Squeeze");
    const onnx::NodeProto *tokenSq = userOp(outputOf(split, 1), "Squeeze");
    // GPT-OSS takes its weights from the [T, E] scores: no slot.
    if (!tokenSq)
      return fail(where + "the NonZero pairs are not squeezed");
    StringRef slot = slotSq ? outputOf(slotSq, 0) : StringRef();
    StringRef token = outputOf(tokenSq, 0);

    // index_add_(0, top_x, expert(x[top_x]) * w[top_x, idx])
    StringRef scattered;
    const onnx::NodeProto *add = matchIndexAdd(token, scattered, where);
    if (!add)
      return false;
    const onnx::NodeProto *mul = defOp(scattered, "Mul");
    bool found = false;
    std::string expertWhy;
    for (int i = 0; i < 2 && !found; ++i) {
      ExpertMLP mlp;
      idsUsed.clear();
      bool matched = matchExpert(inputOf(mul, i), mlp);
      // Weights gathered at an id (a hit loop's): this expert's own.
      if (matched &&
          llvm::any_of(idsUsed, [&](int64_t id) { return id != *e; }))
        return fail(where + "the expert's weights are gathered at another "
                            "expert's id");
      if (!matched) {
        // MoE++'s zero, copy and constant experts.
        expertWhy = why;
        matchZeroComputation(inputOf(mul, i), mlp);
      }
      // The expert's rows: x[None, top_x].reshape(-1, H), or x[top_x].
      const onnx::NodeProto *reshape = defOp(mlp.input, "Reshape");
      const onnx::NodeProto *rows =
          reshape ? defOp(inputOf(reshape, 0), "Gather") : nullptr;
      const onnx::NodeProto *unsq =
          rows ? defOp(inputOf(rows, 0), "Unsqueeze") : nullptr;
      const onnx::NodeProto *direct = defOp(mlp.input, "Gather");
      // (The router may view the rows as [-1, H] once more.)
      int64_t hidden = router.weight.getType().getDimSize(0);
      bool directRows =
          direct &&
          (inputOf(direct, 0) == router.input ||
           inputOf(direct, 0) == skipRowView(router.input, hidden)) &&
          inputOf(direct, 1) == token && intAttr(*direct, "axis", 0) == 0;
      if (!directRows && (!unsq || inputOf(rows, 1) != token ||
                          intAttr(*rows, "axis", 0) != 1 ||
                          axesOf(*unsq) != SmallVector<int64_t>{0} ||
                          inputOf(unsq, 0) != router.input)) {
        // Taken for a copy expert, the operand may be the weight instead.
        if (mlp.zero == ZeroComputationKind::Copy) {
          why = expertWhy;
          continue;
        }
        return fail(where + "the expert does not read the router input's "
                            "rows at the expert's tokens");
      }
      // The weight: routing_weights[top_x, idx, None], exported as a Gather
      // of the flattened weights at top_x * k + idx.
      StringRef weight = inputOf(mul, 1 - i);
      for (int steps = 0; steps < kMaxChain; ++steps) {
        const onnx::NodeProto *r = defOp(weight, "Reshape");
        if (!r)
          break;
        weight = inputOf(r, 0);
      }
      const onnx::NodeProto *pick = defOp(weight, "Gather");
      // GPT-OSS: routing_weights[token_idx, expert_idx, None] of the [T, E]
      // scores: Gather(Unsqueeze(scores[:, e], 1), token_idx).
      const onnx::NodeProto *column =
          pick ? defOp(inputOf(pick, 0), "Unsqueeze") : nullptr;
      const onnx::NodeProto *ofScores =
          column ? defOp(inputOf(column, 0), "Gather") : nullptr;
      // The routing weights the expert's rows are scaled by.
      StringRef weights;
      if (ofScores && scores && inputOf(pick, 1) == token &&
          intAttr(*pick, "axis", 0) == 0 &&
          axesOf(*column) == SmallVector<int64_t>{1} &&
          inputOf(ofScores, 0) == outputOf(scores, 0) &&
          intAttr(*ofScores, "axis", 0) == 1 &&
          indexValue(inputOf(ofScores, 1)) == *e) {
        weights = inputOf(scores, 2);
      } else {
        const onnx::NodeProto *flat =
            pick ? defOp(inputOf(pick, 0), "Flatten") : nullptr;
        const onnx::NodeProto *unsqW =
            flat ? defOp(inputOf(flat, 0), "Unsqueeze") : nullptr;
        const onnx::NodeProto *linear =
            pick ? defOp(inputOf(pick, 1), "Add") : nullptr;
        if (!unsqW || !linear || intAttr(*pick, "axis", 0) != 0 ||
            intAttr(*flat, "axis", 1) != 2 ||
            axesOf(*unsqW) != SmallVector<int64_t>{2})
          return fail(where + "the expert output is not scaled by "
                              "routing_weights[top_x, idx]");
        bool linearOk = false;
        for (int j = 0; j < 2 && !linearOk; ++j) {
          const onnx::NodeProto *times = defOp(inputOf(linear, 1 - j), "Mul");
          if (inputOf(linear, j) != slot || !times)
            continue;
          for (int m = 0; m < 2 && !linearOk; ++m) {
            if (inputOf(times, m) != token)
              continue;
            StringRef stride = inputOf(times, 1 - m);
            // k, as a constant or as dimension 1 of the weights' shape.
            if (constantInt(stride) == k) {
              linearOk = true;
              break;
            }
            const onnx::NodeProto *dim = defOp(stride, "Gather");
            const onnx::NodeProto *shape =
                dim ? defOp(inputOf(dim, 0), "Shape") : nullptr;
            linearOk = shape && constantInt(inputOf(dim, 1)) == 1 &&
                       inputOf(shape, 0) == outputOf(unsqW, 0);
          }
        }
        if (!linearOk)
          return fail(where + "the routing weight is not picked at "
                              "top_x * k + idx");
        weights = inputOf(unsqW, 0);
      }
      bool renorm;
      if (!matchWeights(topk, weights, renorm))
        return fail(where + why);
      if (renormalize && *renormalize != renorm)
        return fail(where + "the experts use different routing weights");
      renormalize = renorm;
      experts[*e] = mlp;
      found = true;
    }
    if (!found)
      return fail(where + why);
    adds.push_back(add);
  }
  if (llvm::count(seen, false))
    return fail("not every expert reads its mask");
  const onnx::NodeProto *last = nullptr;
  if (!matchAddChain(adds, last))
    return false;
  block.form =
      hitLoop ? "transformers' loop over the experts hit" : "Mixtral sparse";
  block.hitLoop = hitLoop != nullptr;
  block.outputNode = last;
  block.k = k;
  block.renormalize = *renormalize;
  return finishExperts(experts, router.input, numExperts, block);
}

std::optional<int64_t> BlockMatcher::expertIndex(const onnx::NodeProto *node,
                                                 SmallVector<bool> &seen,
                                                 bool *vector) {
  std::optional<int64_t> e =
      is(node, "Gather") && intAttr(*node, "axis", 0) == 0
          ? indexValue(inputOf(node, 1), vector)
          : std::nullopt;
  if (!e || *e < 0 || *e >= static_cast<int64_t>(seen.size()) || seen[*e])
    return std::nullopt;
  seen[*e] = true;
  return e;
}

std::optional<int64_t> BlockMatcher::indexValue(StringRef name, bool *vector) {
  if (vector)
    *vector = false;
  if (std::optional<int64_t> c = constantInt(name)) {
    DenseElementsAttr attr = constant(name);
    if (vector)
      *vector = attr.getType().getRank() == 1;
    return c;
  }
  // expert_hit[i][0]: Gather(part, 0) of the squeezed part; expert_hit[i]:
  // the squeezed part itself, a one-element vector.
  bool isVector = true;
  if (const onnx::NodeProto *first = defOp(name, "Gather")) {
    if (intAttr(*first, "axis", 0) != 0 || constantInt(inputOf(first, 1)) != 0)
      return std::nullopt;
    name = inputOf(first, 0);
    isVector = false;
  }
  const onnx::NodeProto *squeeze = defOp(name, "Squeeze");
  if (!squeeze || axesOf(*squeeze) != SmallVector<int64_t>{0})
    return std::nullopt;
  auto it = hitIds.find(inputOf(squeeze, 0));
  if (it == hitIds.end())
    return std::nullopt;
  if (vector)
    *vector = isVector;
  return it->second;
}

DenseElementsAttr BlockMatcher::gatheredConstant(StringRef name) {
  const onnx::NodeProto *gather = defOp(name, "Gather");
  if (!gather || intAttr(*gather, "axis", 0) != 0 || gatherDepth >= 2)
    return {};
  ++gatherDepth;
  llvm::scope_exit restore([&] { --gatherDepth; });
  bool vector = false;
  std::optional<int64_t> e = indexValue(inputOf(gather, 1), &vector);
  if (!e || vector)
    return {};
  DenseElementsAttr table = constant(inputOf(gather, 0));
  if (!table || table.getType().getRank() == 0 || *e < 0 ||
      *e >= table.getType().getDimSize(0))
    return {};
  ShapedType type = table.getType();
  auto result = RankedTensorType::get(type.getShape().drop_front(),
                                      type.getElementType());
  DenseElementsAttr slice;
  if (table.isSplat()) {
    slice = table.resizeSplat(result);
  } else {
    size_t bytes = result.getNumElements() *
                   (type.getElementType().getIntOrFloatBitWidth() / 8);
    ArrayRef<char> raw = table.getRawData();
    slice = DenseElementsAttr::getFromRawBuffer(result,
                                                raw.slice(*e * bytes, bytes));
  }
  converted[name] = slice;
  gatheredIdOf[name] = *e;
  idsUsed.push_back(*e);
  return slice;
}

bool BlockMatcher::matchHitLoop(const onnx::NodeProto &reduce,
                                int64_t numExperts) {
  std::optional<SmallVector<int64_t>> axes = axesOf(reduce);
  if (axes)
    llvm::sort(*axes);
  if (!axes || intAttr(reduce, "keepdims", 1) != 0 ||
      (*axes != SmallVector<int64_t>{1, 2} &&
       *axes != SmallVector<int64_t>{-2, -1}))
    return fail("the expert mask is summed otherwise than over its last two "
                "axes");
  const onnx::NodeProto *greater = userOp(outputOf(&reduce, 0), "Greater");
  std::optional<double> zero =
      greater ? constantScalar(inputOf(greater, 1)) : std::nullopt;
  const onnx::NodeProto *nonZero =
      greater ? userOp(outputOf(greater, 0), "NonZero") : nullptr;
  const onnx::NodeProto *transpose =
      nonZero ? userOp(outputOf(nonZero, 0), "Transpose") : nullptr;
  const onnx::NodeProto *split =
      transpose ? userOp(outputOf(transpose, 0), "Split") : nullptr;
  if (!zero || *zero != 0.0 || inputOf(greater, 0) != outputOf(&reduce, 0) ||
      !split || intsAttr(*transpose, "perm") != SmallVector<int64_t>{1, 0} ||
      intAttr(*split, "axis", 0) != 0)
    return fail("the experts hit are not (mask.sum((-1, -2)) > 0).nonzero() "
                "split into the loop's iterations");
  int64_t parts = split->output_size();
  std::optional<SmallVector<int64_t>> sizes =
      split->input_size() > 1 ? constantInts(inputOf(split, 1))
                              : intsAttr(*split, "split");
  if (!sizes || (int64_t)sizes->size() != parts ||
      llvm::any_of(*sizes, [](int64_t v) { return v != 1; }))
    return fail("the loop over the experts hit is not split into one id per "
                "iteration");
  if (parts != numExperts) {
    warning = llvm::formatv(
                  "the loop over the experts hit was traced with {0} of the "
                  "{1} experts hit: the export computes those {0} whatever "
                  "the input, and fails where another number is hit (export "
                  "with an example that hits every expert)",
                  parts, numExperts)
                  .str();
    return fail(warning);
  }
  for (int64_t i = 0; i < parts; ++i)
    hitIds[outputOf(split, i)] = i;
  return true;
}

const onnx::NodeProto *BlockMatcher::matchIndexAdd(StringRef tokens,
                                                   StringRef &rows,
                                                   const Twine &where,
                                                   bool weighted) {
  auto failed = [&](const Twine &message) -> const onnx::NodeProto * {
    fail(where + message);
    return nullptr;
  };
  const onnx::NodeProto *tokenCol = nullptr;
  for (const onnx::NodeProto *user : users(tokens))
    if (is(user, "Unsqueeze") && axesOf(*user) == SmallVector<int64_t>{1})
      tokenCol = user;
  const onnx::NodeProto *indexExpand =
      tokenCol ? userOp(outputOf(tokenCol, 0), "Expand") : nullptr;
  const onnx::NodeProto *scatter =
      indexExpand ? userOp(outputOf(indexExpand, 0), "ScatterElements")
                  : nullptr;
  if (!scatter || inputOf(scatter, 1) != outputOf(indexExpand, 0) ||
      intAttr(*scatter, "axis", 0) != 0 || !isZeros(inputOf(scatter, 0)))
    return failed("no index_add_ at the expert's tokens (Expand of the token "
                  "ids into ScatterElements on zeros)");
  for (const onnx::AttributeProto &attr : scatter->attribute())
    if (attr.name() == "reduction" && attr.s() != "none" && attr.s() != "add")
      return failed("the scatter reduces by '" + attr.s() + "'");
  const onnx::NodeProto *updates = defOp(inputOf(scatter, 2), "Expand");
  if (!updates)
    return failed("the scattered rows are not expanded to the index's shape");
  StringRef scattered = skipCasts(inputOf(updates, 0));
  const onnx::NodeProto *mul = defOp(scattered, "Mul");
  if (weighted && !mul)
    return failed("the scattered rows are not a product of the expert output "
                  "and its weight");
  const onnx::NodeProto *add = userOp(outputOf(scatter, 0), "Add");
  if (!add)
    return failed("the scattered rows are not added to the result");
  rows = scattered;
  return add;
}

bool BlockMatcher::matchAddChain(ArrayRef<const onnx::NodeProto *> adds,
                                 const onnx::NodeProto *&last) {
  // The Adds form one chain from zeros: each adds to the previous one.
  llvm::DenseSet<StringRef> addOutputs;
  for (const onnx::NodeProto *add : adds)
    addOutputs.insert(outputOf(add, 0));
  last = nullptr;
  unsigned starts = 0;
  for (const onnx::NodeProto *add : adds) {
    bool fromZeros = false, fromChain = false;
    for (int i = 0; i < 2; ++i) {
      StringRef other = inputOf(add, i);
      if (defOp(other, "ScatterElements"))
        continue;
      fromZeros |= isZeros(other);
      fromChain |= addOutputs.contains(other);
    }
    starts += fromZeros;
    if (!fromZeros && !fromChain)
      return fail("the expert outputs are not summed in one chain from zeros");
    unsigned chained = 0;
    for (const onnx::NodeProto *user : users(outputOf(add, 0)))
      chained += llvm::is_contained(adds, user);
    if (chained == 0) {
      if (last)
        return fail("the expert outputs are summed in more than one chain");
      last = add;
    }
  }
  if (starts != 1 || !last)
    return fail("the expert outputs are not summed in one chain from zeros");
  return true;
}

/// The value of a one-element int or float `attr`.
static std::optional<double> scalarValue(DenseElementsAttr attr) {
  if (!attr || attr.getNumElements() != 1)
    return std::nullopt;
  Type type = attr.getElementType();
  if (isa<FloatType>(type))
    return (*attr.getValues<APFloat>().begin()).convertToDouble();
  if (type.isInteger())
    return double((*attr.getValues<APInt>().begin()).getSExtValue());
  return std::nullopt;
}

std::optional<double> BlockMatcher::constantScalar(StringRef name) {
  return scalarValue(constant(name));
}

bool BlockMatcher::isConstantNear(StringRef name, double value) {
  DenseElementsAttr attr = constant(name);
  std::optional<double> c = scalarValue(attr);
  if (!c)
    return false;
  double tolerance = 1e-6;
  if (auto type = dyn_cast<FloatType>(attr.getElementType()))
    tolerance =
        std::max(tolerance, std::ldexp(1.0, -type.getFPMantissaWidth()));
  return std::abs(*c - value) <= tolerance * std::abs(value);
}

StringRef BlockMatcher::skipScalarPlumbing(StringRef name) const {
  // Bounded: a malformed graph may have cycles.
  for (int steps = 0; steps < kMaxChain; ++steps) {
    const onnx::NodeProto *node = def(name);
    if (!is(node, "Cast") && !is(node, "Identity") && !is(node, "Reshape") &&
        !is(node, "Squeeze") && !is(node, "Unsqueeze"))
      break;
    name = inputOf(node, 0);
  }
  return name;
}

bool BlockMatcher::isTokenCount(StringRef name, StringRef input) {
  name = skipScalarPlumbing(name);
  if (defOp(name, "Gather"))
    return isDim(name, input, 0);
  const onnx::NodeProto *shape = defOp(name, "Shape");
  return shape && inputOf(shape, 0) == input &&
         intAttr(*shape, "start", 0) == 0 && intAttr(*shape, "end", 0) == 1;
}

std::optional<double> BlockMatcher::matchCapacityFactor(StringRef name,
                                                        StringRef input,
                                                        int64_t numExperts) {
  auto failed = [&](const Twine &message) -> std::optional<double> {
    fail(message);
    return std::nullopt;
  };
  name = skipScalarPlumbing(name);
  // min(C, T), either order.
  if (const onnx::NodeProto *min = defOp(name, "Min")) {
    if (min->input_size() != 2)
      return failed("the capacity is a Min of other than two values");
    int capacitySide = isTokenCount(inputOf(min, 1), input)   ? 0
                       : isTokenCount(inputOf(min, 0), input) ? 1
                                                              : -1;
    if (capacitySide < 0)
      return failed("the capacity is a Min without the token count");
    name = skipScalarPlumbing(inputOf(min, capacitySide));
  }
  const onnx::NodeProto *ceil = defOp(name, "Ceil");
  if (!ceil)
    return failed("k is neither a constant nor ceil(T * f / E) of the token "
                  "count T");
  // The coefficient c of c * T, through Mul and Div by constants.
  std::function<std::optional<double>(StringRef, int)> linear =
      [&](StringRef value, int depth) -> std::optional<double> {
    value = skipScalarPlumbing(value);
    if (depth > kMaxChain)
      return std::nullopt;
    if (isTokenCount(value, input))
      return 1.0;
    const onnx::NodeProto *node = def(value);
    if (!node || node->input_size() != 2)
      return std::nullopt;
    bool mul = is(node, "Mul"), div = is(node, "Div");
    if (!mul && !div)
      return std::nullopt;
    std::optional<double> rhs = constantScalar(inputOf(node, 1));
    if (rhs) {
      std::optional<double> lhs = linear(inputOf(node, 0), depth + 1);
      if (!lhs || (div && *rhs == 0.0))
        return std::nullopt;
      return mul ? *lhs * *rhs : *lhs / *rhs;
    }
    std::optional<double> lhs = constantScalar(inputOf(node, 0));
    if (!lhs || !mul)
      return std::nullopt;
    std::optional<double> factor = linear(inputOf(node, 1), depth + 1);
    if (!factor)
      return std::nullopt;
    return *lhs * *factor;
  };
  std::optional<double> coefficient = linear(inputOf(ceil, 0), 0);
  if (!coefficient || *coefficient <= 0.0)
    return failed("the capacity is not ceil(T * f / E) of the token count T "
                  "with constant f > 0");
  return *coefficient * double(numExperts);
}

bool BlockMatcher::matchExpertChoice(const onnx::NodeProto &topk,
                                     const Router &router, int64_t capacity,
                                     double capacityFactor, MoEBlock &block) {
  int64_t numExperts = router.weight.getType().getDimSize(1);
  if (router.selectionBias || router.group.nGroup)
    return fail("expert choice with a selection bias or a group limit");
  SmallVector<ExpertMLP> experts(numExperts);
  SmallVector<bool> seen(numExperts, false);
  SmallVector<const onnx::NodeProto *> adds;
  // Per expert e: tokens = indices[e]; y = index_add(y, tokens,
  // expert(x[tokens]) * values[e, :, None]).
  for (const onnx::NodeProto *gather : users(outputOf(&topk, 1))) {
    std::optional<int64_t> e = expertIndex(gather, seen);
    if (!e)
      return fail("the chosen tokens are used other than as indices[e] for "
                  "each expert e once");
    std::string where = llvm::formatv("expert {0}: ", *e).str();
    StringRef tokens = outputOf(gather, 0);
    StringRef scattered;
    const onnx::NodeProto *add = matchIndexAdd(tokens, scattered, where);
    if (!add)
      return false;
    adds.push_back(add);
    const onnx::NodeProto *mul = defOp(scattered, "Mul");
    bool found = false;
    for (int i = 0; i < 2 && !found; ++i) {
      ExpertMLP mlp;
      if (!matchExpert(inputOf(mul, i), mlp))
        continue;
      const onnx::NodeProto *rows = defOp(mlp.input, "Gather");
      if (!rows || inputOf(rows, 0) != router.input ||
          inputOf(rows, 1) != tokens || intAttr(*rows, "axis", 0) != 0)
        return fail(where + "the expert does not read the router input's "
                            "rows at the expert's tokens");
      // values[e, :, None]
      const onnx::NodeProto *column = defOp(inputOf(mul, 1 - i), "Unsqueeze");
      const onnx::NodeProto *pick =
          column ? defOp(inputOf(column, 0), "Gather") : nullptr;
      if (!pick || axesOf(*column) != SmallVector<int64_t>{1} ||
          inputOf(pick, 0) != outputOf(&topk, 0) ||
          intAttr(*pick, "axis", 0) != 0 || constantInt(inputOf(pick, 1)) != *e)
        return fail(where + "the expert output is not scaled by the "
                            "expert's TopK values");
      experts[*e] = mlp;
      found = true;
    }
    if (!found)
      return fail(where + why);
  }
  if (llvm::count(seen, false))
    return fail("not every expert takes its chosen tokens");
  const onnx::NodeProto *last = nullptr;
  if (!matchAddChain(adds, last))
    return false;
  block.form = "expert choice";
  block.outputNode = last;
  block.k = numExperts;
  block.expertChoice = true;
  block.capacity = capacity;
  block.capacityFactor = capacityFactor;
  return finishExperts(experts, router.input, numExperts, block);
}

bool BlockMatcher::matchDense(const onnx::NodeProto &topk, const Router &router,
                              int64_t k, MoEBlock &block) {
  int64_t numExperts = router.weight.getType().getDimSize(1);
  const onnx::NodeProto *scatter =
      userOp(outputOf(&topk, 1), "ScatterElements");
  // Axis 1 is the last one where the logits are 2-D: a Gemm's, or those of
  // rows reshaped to [-1, H].
  int64_t hidden = router.weight.getType().getDimSize(0);
  bool rows2D = is(def(router.logits), "Gemm") ||
                skipRowView(router.input, hidden) != router.input;
  int64_t axis = scatter ? intAttr(*scatter, "axis", 0) : 0;
  if (!scatter || inputOf(scatter, 1) != outputOf(&topk, 1) ||
      !(axis == -1 || (axis == 1 && rows2D)) ||
      !defOp(inputOf(scatter, 0), "ConstantOfShape") ||
      !isZeros(inputOf(scatter, 0)))
    return fail("the top-k weights are not scattered into a zero [T, E] "
                "matrix along the last axis");
  bool renormalize;
  if (!matchWeights(topk, inputOf(scatter, 2), renormalize))
    return false;
  block.k = k;
  block.renormalize = renormalize;
  // transformers' GPT-OSS experts on GPUs: every expert on every token as
  // one batched matmul over [E, T, H], weighted by the transposed matrix.
  if (const onnx::NodeProto *transpose =
          userOp(outputOf(scatter, 0), "Transpose"))
    return matchBatchedExperts(*transpose, router, block);
  const onnx::NodeProto *mixCol = userOp(outputOf(scatter, 0), "Unsqueeze");
  const onnx::NodeProto *mul =
      mixCol ? userOp(outputOf(mixCol, 0), "Mul") : nullptr;
  const onnx::NodeProto *sum =
      mul ? userOp(outputOf(mul, 0), "ReduceSum") : nullptr;
  if (!mixCol || axesOf(*mixCol) != SmallVector<int64_t>{-1} || !sum ||
      axesOf(*sum) != SmallVector<int64_t>{-2} ||
      intAttr(*sum, "keepdims", 1) != 0)
    return fail("the mixing matrix is not applied as (outs * mix[..., None])"
                ".sum(-2)");
  StringRef stacked = inputOf(mul, 0) == outputOf(mixCol, 0)
                          ? StringRef(inputOf(mul, 1))
                          : StringRef(inputOf(mul, 0));
  const onnx::NodeProto *concat = defOp(stacked, "Concat");
  if (!concat || intAttr(*concat, "axis", 0) != -2)
    return fail("the expert outputs are not stacked along axis -2");
  SmallVector<ExpertMLP> experts;
  for (const std::string &part : concat->input()) {
    const onnx::NodeProto *unsq = defOp(part, "Unsqueeze");
    if (!unsq || axesOf(*unsq) != SmallVector<int64_t>{-2})
      return fail("a stacked expert output is not unsqueezed at -2");
    ExpertMLP mlp;
    if (!matchExpert(inputOf(unsq, 0), mlp))
      return false;
    if (mlp.input != router.input)
      return fail("an expert reads another value than the router");
    experts.push_back(mlp);
  }
  block.form = "dense";
  block.outputNode = sum;
  if (!finishExperts(experts, router.input, numExperts, block))
    return false;

  // y + sigmoid(x·ws) * shared(x), or y + shared(x); a shared expert is
  // SwiGLU, so the routed ones must be too (moe.layer has one expert kind).
  const onnx::NodeProto *add = userOp(outputOf(sum, 0), "Add");
  if (!add || users(outputOf(sum, 0)).size() != 1 ||
      block.kind != ExpertKind::Gated || block.gateBias || block.upBias ||
      block.downBias || block.limit != 0.0 || block.alpha != 1.0 ||
      block.beta != 0.0)
    return true;
  StringRef other = inputOf(add, 0) == outputOf(sum, 0)
                        ? StringRef(inputOf(add, 1))
                        : StringRef(inputOf(add, 0));
  SmallVector<DenseElementsAttr> scale;
  ExpertMLP shared;
  std::string saved = why;
  auto matchShared = [&](StringRef name) {
    return matchSwiGLU(name, shared) && shared.input == router.input &&
           !shared.gateBias && !shared.upBias && !shared.downBias &&
           shared.limit == 0.0 && shared.alpha == 1.0 && shared.beta == 0.0;
  };
  bool matched = false;
  if (matchShared(other)) {
    matched = true;
  } else if (const onnx::NodeProto *scaled = defOp(other, "Mul")) {
    for (int i = 0; i < 2 && !matched; ++i) {
      const onnx::NodeProto *sigmoid = defOp(inputOf(scaled, i), "Sigmoid");
      Linear gateLinear;
      if (!sigmoid || !matchLinear(inputOf(sigmoid, 0), gateLinear) ||
          gateLinear.bias || gateLinear.input != router.input ||
          gateLinear.weight.getType().getDimSize(1) != 1 ||
          !matchShared(inputOf(scaled, 1 - i)))
        continue;
      auto type =
          RankedTensorType::get({gateLinear.weight.getType().getDimSize(0)},
                                gateLinear.weight.getElementType());
      scale.push_back(gateLinear.weight.reshape(type));
      matched = true;
    }
  }
  why = saved;
  if (!matched)
    return true;
  block.sharedGate = shared.gate;
  block.sharedUp = shared.up;
  block.sharedDown = shared.down;
  if (!scale.empty())
    block.sharedScale = scale[0];
  block.outputNode = add;
  block.form = "dense with a shared expert";
  return true;
}

std::optional<SmallVector<BlockMatcher::ShapeElem>>
BlockMatcher::shapeElems(StringRef name) {
  SmallVector<ShapeElem> elems;
  if (std::optional<SmallVector<int64_t>> values = constantInts(name)) {
    for (int64_t v : *values)
      elems.push_back({v, ""});
    return elems;
  }
  const onnx::NodeProto *concat = defOp(name, "Concat");
  if (!concat || intAttr(*concat, "axis", 0) != 0)
    return std::nullopt;
  for (const std::string &part : concat->input()) {
    std::optional<SmallVector<int64_t>> values = constantInts(part);
    if (values && values->size() != 1)
      return std::nullopt;
    elems.push_back(
        {values ? std::optional<int64_t>((*values)[0]) : std::nullopt, part});
  }
  return elems;
}

bool BlockMatcher::isDim(StringRef name, StringRef of, int64_t dim) {
  name = skipScalarPlumbing(name);
  const onnx::NodeProto *gather = defOp(name, "Gather");
  const onnx::NodeProto *shape =
      gather ? defOp(inputOf(gather, 0), "Shape") : nullptr;
  return shape && inputOf(shape, 0) == of && intAttr(*shape, "start", 0) == 0 &&
         intAttr(*gather, "axis", 0) == 0 &&
         constantInt(inputOf(gather, 1)) == dim;
}

bool BlockMatcher::matchBatchedLinear(StringRef name, Linear &linear,
                                      StringRef einsum) {
  // A MatMul, or an Einsum with `einsum`'s equation.
  auto isProduct = [&](const onnx::NodeProto *n) {
    return einsum.empty() ? is(n, "MatMul") : isEinsum(n, einsum);
  };
  const onnx::NodeProto *node = def(name);
  DenseElementsAttr bias;
  if (is(node, "Add")) {
    for (int i = 0; i < 2 && !bias; ++i) {
      DenseElementsAttr b = constant(inputOf(node, i));
      // bias[..., None, :]: [E, 1, out].
      if (b && b.getType().getRank() == 3 && b.getType().getDimSize(1) == 1 &&
          isProduct(def(inputOf(node, 1 - i)))) {
        ArrayRef<int64_t> shape = b.getType().getShape();
        bias = b.reshape(
            RankedTensorType::get({shape[0], shape[2]}, b.getElementType()));
        node = def(inputOf(node, 1 - i));
      }
    }
  }
  DenseElementsAttr weight =
      isProduct(node) ? constant(inputOf(node, 1)) : DenseElementsAttr();
  if (!weight || weight.getType().getRank() != 3 ||
      !isa<FloatType>(weight.getElementType()))
    return fail("'" + name + "' is computed by " + describe(node) +
                (einsum.empty() ? std::string(", not a batched matmul")
                                : ", not Einsum \"" + einsum.str() + "\"") +
                " by constant [E, in, out] weights");
  if (bias && (bias.getType().getDimSize(0) != weight.getType().getDimSize(0) ||
               bias.getType().getDimSize(1) != weight.getType().getDimSize(2)))
    return fail("'" + name +
                "' adds a bias of another shape than its "
                "weights' [E, 1, out]");
  linear = {inputOf(node, 0).str(), weight, bias};
  return true;
}

/// The columns `cols` of the last axis of `attr`.
static DenseElementsAttr takeColumns(DenseElementsAttr attr,
                                     ArrayRef<int64_t> cols) {
  ShapedType type = attr.getType();
  SmallVector<int64_t> shape(type.getShape());
  int64_t width = shape.back();
  shape.back() = cols.size();
  auto result = RankedTensorType::get(shape, type.getElementType());
  if (attr.isSplat())
    return attr.resizeSplat(result);
  size_t size = type.getElementType().getIntOrFloatBitWidth() / 8;
  ArrayRef<char> raw = attr.getRawData();
  int64_t rows = type.getNumElements() / width;
  std::vector<char> out;
  out.reserve(rows * cols.size() * size);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c : cols)
      out.insert(out.end(), raw.begin() + (r * width + c) * size,
                 raw.begin() + (r * width + c + 1) * size);
  return DenseElementsAttr::getFromRawBuffer(result, out);
}

bool BlockMatcher::matchBatchedMLP(
    StringRef out, function_ref<bool(StringRef, Linear &)> linear,
    function_ref<bool(const GatedActivation &, Linear &, Linear &)> split,
    MoEBlock &block, std::string &rows) {
  Linear down, up, gate;
  if (!linear(out, down))
    return fail("the batched down projection: " + why);
  // GPT-OSS's clamped SwiGLU (or plain SwiGLU), or a ReLU or GELU FFN.
  GatedActivation act;
  Activation activation = Activation::Silu;
  if (matchGatedActivation(down.input, act)) {
    if (!split(act, gate, up))
      return false;
    if (gate.input != up.input)
      return fail("the gate and up projections read different values");
  } else if (!why.empty()) {
    return false;
  } else {
    StringRef hidden;
    if (!matchFfnActivation(down.input, hidden, activation))
      return fail("the batched down projection reads " +
                  describe(def(down.input)) +
                  ", not a gated product nor a ReLU or GELU");
    if (!linear(hidden, up))
      return fail("the batched up projection: " + why);
  }
  if (down.weight.getType().getDimSize(0) != up.weight.getType().getDimSize(0))
    return fail("the up and down projections have different expert counts");
  block.gate = gate.weight;
  block.gateBias = gate.bias;
  block.up = up.weight;
  block.upBias = up.bias;
  block.down = down.weight;
  block.downBias = down.bias;
  block.kind = gate.weight ? ExpertKind::Gated : ExpertKind::Ffn;
  block.activation = activation;
  block.limit = act.limit;
  block.alpha = act.alpha;
  block.beta = act.beta;
  rows = up.input;
  return true;
}

bool BlockMatcher::splitFusedGateUp(
    const GatedActivation &act, Linear &gate, Linear &up,
    function_ref<bool(StringRef, Linear &)> linear) {
  auto batched = [&](StringRef n, Linear &l) {
    return matchBatchedLinear(n, l);
  };
  if (!linear)
    linear = batched;
  const onnx::NodeProto *gateSlice = defOp(act.gate, "Slice");
  const onnx::NodeProto *upSlice = defOp(act.up, "Slice");
  if (gateSlice && upSlice && inputOf(gateSlice, 0) == inputOf(upSlice, 0)) {
    // gate_up[..., ::2] and gate_up[..., 1::2] (or any two constant slices
    // of the last axis).
    Linear fused;
    if (!linear(inputOf(gateSlice, 0), fused))
      return fail("the fused gate/up projection: " + why);
    int64_t lastAxis = fused.weight.getType().getRank() - 1;
    int64_t width = fused.weight.getType().getDimSize(lastAxis);
    auto columns = [&](const onnx::NodeProto *slice)
        -> std::optional<SmallVector<int64_t>> {
      if (slice->input_size() < 4)
        return std::nullopt;
      // Constants, or chunk's bounds computed from the fused width.
      auto bound = [&](StringRef n) -> std::optional<SmallVector<int64_t>> {
        if (std::optional<SmallVector<int64_t>> c = constantInts(n))
          return c;
        if (std::optional<int64_t> v =
                extentExpr(n, inputOf(slice, 0), lastAxis + 1, lastAxis, width))
          return SmallVector<int64_t>{*v};
        return std::nullopt;
      };
      std::optional<SmallVector<int64_t>> starts = bound(inputOf(slice, 1));
      std::optional<SmallVector<int64_t>> ends = bound(inputOf(slice, 2));
      std::optional<SmallVector<int64_t>> axes =
          constantInts(inputOf(slice, 3));
      std::optional<SmallVector<int64_t>> steps =
          slice->input_size() > 4 ? constantInts(inputOf(slice, 4))
                                  : SmallVector<int64_t>{1};
      if (!starts || !ends || !axes || !steps || starts->size() != 1 ||
          ends->size() != 1 || axes->size() != 1 || steps->size() != 1 ||
          ((*axes)[0] != -1 && (*axes)[0] != lastAxis) || (*steps)[0] < 1 ||
          (*starts)[0] < 0 || (*starts)[0] >= width)
        return std::nullopt;
      SmallVector<int64_t> cols;
      for (int64_t c = (*starts)[0]; c < std::min((*ends)[0], width);
           c += (*steps)[0])
        cols.push_back(c);
      return cols;
    };
    std::optional<SmallVector<int64_t>> gateCols = columns(gateSlice);
    std::optional<SmallVector<int64_t>> upCols = columns(upSlice);
    // Halves of one width (that it is the down projection's, moe.layer's
    // verifier checks).
    if (!gateCols || !upCols || gateCols->empty() ||
        gateCols->size() != upCols->size())
      return fail("the fused gate/up projection is not split into two "
                  "constant slices of its last axis of one width");
    gate = {fused.input, takeColumns(fused.weight, *gateCols),
            fused.bias ? takeColumns(fused.bias, *gateCols)
                       : DenseElementsAttr()};
    up = {fused.input, takeColumns(fused.weight, *upCols),
          fused.bias ? takeColumns(fused.bias, *upCols) : DenseElementsAttr()};
  } else if (!linear(act.gate, gate) || !linear(act.up, up)) {
    return fail("the gated activation's projections: " + why);
  }
  return true;
}

bool BlockMatcher::matchBatchedExperts(const onnx::NodeProto &transpose,
                                       const Router &router, MoEBlock &block) {
  int64_t numExperts = router.weight.getType().getDimSize(1);
  int64_t hidden = router.weight.getType().getDimSize(0);
  StringRef mix = inputOf(&transpose, 0);
  // An extent E in a shape: a constant, or dimension 1 of the [T, E] mix.
  auto isExperts = [&](const ShapeElem &elem) {
    return elem.value ? *elem.value == numExperts : isDim(elem.part, mix, 1);
  };
  // The rows are `x.reshape(-1, H)`; the results are viewed as x's [B, S, H].
  StringRef x = skipRowView(router.input, hidden);
  if (x == router.input)
    return fail("the batched experts' input is not x.reshape(-1, H)");
  auto isBatch = [&](const ShapeElem &elem) {
    return !elem.value && isDim(elem.part, x, 0);
  };
  // routing_weights.transpose(0, 1).view(E, B, -1)[..., None]
  const onnx::NodeProto *mixView = userOp(outputOf(&transpose, 0), "Reshape");
  const onnx::NodeProto *mixCol =
      mixView ? userOp(outputOf(mixView, 0), "Unsqueeze") : nullptr;
  const onnx::NodeProto *mul =
      mixCol ? userOp(outputOf(mixCol, 0), "Mul") : nullptr;
  const onnx::NodeProto *sum =
      mul ? userOp(outputOf(mul, 0), "ReduceSum") : nullptr;
  std::optional<SmallVector<ShapeElem>> mixShape =
      mixView ? shapeElems(inputOf(mixView, 1)) : std::nullopt;
  std::optional<SmallVector<int64_t>> colAxes =
      mixCol ? axesOf(*mixCol) : std::nullopt;
  if (intsAttr(transpose, "perm") != SmallVector<int64_t>{1, 0} || !sum ||
      !mixShape || mixShape->size() != 3 || !isExperts((*mixShape)[0]) ||
      !isBatch((*mixShape)[1]) || (*mixShape)[2].value != -1 || !colAxes ||
      colAxes->size() != 1 || ((*colAxes)[0] != -1 && (*colAxes)[0] != 3) ||
      axesOf(*sum) != SmallVector<int64_t>{0} ||
      intAttr(*sum, "keepdims", 1) != 0)
    return fail("the transposed mixing matrix is not applied as (outs * "
                "mix.T.view(E, B, -1)[..., None]).sum(0)");
  // next_states.view(E, B, -1, H)
  StringRef outs = inputOf(mul, 0) == outputOf(mixCol, 0)
                       ? StringRef(inputOf(mul, 1))
                       : StringRef(inputOf(mul, 0));
  const onnx::NodeProto *outView = defOp(outs, "Reshape");
  std::optional<SmallVector<ShapeElem>> outShape =
      outView ? shapeElems(inputOf(outView, 1)) : std::nullopt;
  if (!outShape || outShape->size() != 4 || !isExperts((*outShape)[0]) ||
      !isBatch((*outShape)[1]) || (*outShape)[2].value != -1 ||
      (*outShape)[3].value != hidden)
    return fail("the batched expert outputs are not viewed as [E, B, -1, H]");
  std::string rows;
  auto linear = [&](StringRef name, Linear &l) {
    return matchBatchedLinear(name, l);
  };
  auto split = [&](const GatedActivation &act, Linear &gate, Linear &up) {
    return splitFusedGateUp(act, gate, up);
  };
  if (!matchBatchedMLP(inputOf(outView, 0), linear, split, block, rows))
    return false;
  // hidden_states.repeat(E, 1).view(E, -1, H): Tile (after an Expand to
  // ones, which repeat adds) of the rows, viewed as [E, T, H].
  const onnx::NodeProto *inView = defOp(rows, "Reshape");
  const onnx::NodeProto *tile =
      inView ? defOp(inputOf(inView, 0), "Tile") : nullptr;
  StringRef tiled = tile ? StringRef(inputOf(tile, 0)) : StringRef();
  if (const onnx::NodeProto *expand = defOp(tiled, "Expand"))
    if (fillValue(inputOf(expand, 1)) == 1.0)
      tiled = inputOf(expand, 0);
  std::optional<SmallVector<ShapeElem>> repeats =
      tile ? shapeElems(inputOf(tile, 1)) : std::nullopt;
  std::optional<SmallVector<ShapeElem>> inShape =
      inView ? shapeElems(inputOf(inView, 1)) : std::nullopt;
  if (tiled != router.input || !repeats || repeats->size() != 2 ||
      !isExperts((*repeats)[0]) || (*repeats)[1].value != 1 || !inShape ||
      inShape->size() != 3 || !isExperts((*inShape)[0]) ||
      (*inShape)[1].value != -1 || (*inShape)[2].value != hidden)
    return fail("the batched experts do not read the router's rows repeated "
                "E times and viewed as [E, -1, H]");
  if (block.numExperts() != numExperts)
    return fail(llvm::formatv("batched expert weights of {0} experts for a "
                              "router over {1}",
                              block.numExperts(), numExperts)
                    .str());
  // The result is viewed as x's [B, S, H]: the block reads x.
  block.input = x.str();
  block.form = "batched dense";
  block.outputNode = sum;
  return true;
}

bool BlockMatcher::matchSwitch(const onnx::NodeProto &argmax,
                               const Router &router, MoEBlock &block) {
  int64_t numExperts = router.weight.getType().getDimSize(1);
  if (intAttr(argmax, "axis", 0) != -1 || intAttr(argmax, "keepdims", 1) != 0 ||
      intAttr(argmax, "select_last_index", 0) != 0)
    return fail("the ArgMax is not over the last axis without keepdims");
  StringRef index = outputOf(&argmax, 0);
  // Per-token expert parameters: Gather(param [E, ...], index).
  auto gathered = [&](StringRef name, int64_t rank) -> DenseElementsAttr {
    const onnx::NodeProto *g = defOp(name, "Gather");
    if (!g || inputOf(g, 1) != index || intAttr(*g, "axis", 0) != 0)
      return {};
    DenseElementsAttr param = constant(inputOf(g, 0));
    if (!param || param.getType().getRank() != rank ||
        param.getType().getDimSize(0) != numExperts ||
        !isa<FloatType>(param.getElementType()))
      return {};
    return param;
  };
  // Einsum "ab,abc->ac" (a batched vector-matrix product), any letters.
  auto isVecMat = [&](const onnx::NodeProto *e) {
    if (!is(e, "Einsum"))
      return false;
    std::string eq;
    for (const onnx::AttributeProto &attr : e->attribute())
      if (attr.name() == "equation")
        for (char c : attr.s())
          if (c != ' ')
            eq.push_back(c);
    return eq.size() == 10 && eq[2] == ',' && eq[6] == '-' && eq[7] == '>' &&
           eq[0] == eq[3] && eq[1] == eq[4] && eq[8] == eq[0] &&
           eq[9] == eq[5] && eq[0] != eq[1] && eq[1] != eq[5] && eq[0] != eq[5];
  };
  for (const onnx::NodeProto *user : users(outputOf(router.softmax, 0))) {
    if (!is(user, "ReduceMax"))
      continue;
    if (axesOf(*user) != SmallVector<int64_t>{-1} ||
        intAttr(*user, "keepdims", 1) != 1)
      continue;
    const onnx::NodeProto *scale = userOp(outputOf(user, 0), "Mul");
    if (!scale)
      continue;
    StringRef y = inputOf(scale, 0) == outputOf(user, 0)
                      ? StringRef(inputOf(scale, 1))
                      : StringRef(inputOf(scale, 0));
    DenseElementsAttr downBias, upBias;
    const onnx::NodeProto *out = def(y);
    if (is(out, "Add")) {
      for (int i = 0; i < 2 && !downBias; ++i)
        if ((downBias = gathered(inputOf(out, i), 2)))
          out = def(inputOf(out, 1 - i));
    }
    if (!isVecMat(out))
      return fail("the expert output is not an Einsum of the per-token "
                  "down weights");
    DenseElementsAttr down = gathered(inputOf(out, 1), 3);
    const onnx::NodeProto *act = defOp(inputOf(out, 0), "Relu");
    if (!down || !act)
      return fail("the experts are not ReLU FFNs on gathered expert weights");
    const onnx::NodeProto *hidden = def(inputOf(act, 0));
    if (is(hidden, "Add")) {
      for (int i = 0; i < 2 && !upBias; ++i)
        if ((upBias = gathered(inputOf(hidden, i), 2)))
          hidden = def(inputOf(hidden, 1 - i));
    }
    if (!isVecMat(hidden) || inputOf(hidden, 0) != router.input)
      return fail("the expert's first layer is not an Einsum of the router "
                  "input and the per-token up weights");
    DenseElementsAttr up = gathered(inputOf(hidden, 1), 3);
    if (!up)
      return fail("the expert's up weights are not gathered constants");
    block.form = "Switch";
    block.outputNode = scale;
    block.k = 1;
    block.renormalize = false;
    block.kind = ExpertKind::Ffn;
    block.activation = Activation::Relu;
    block.up = up;
    block.down = down;
    block.upBias = upBias;
    block.downBias = downBias;
    block.input = router.input;
    return true;
  }
  return fail("the top-1 probability (ReduceMax of the softmax) does not "
              "scale the expert output");
}

bool BlockMatcher::isEinsum(const onnx::NodeProto *node, StringRef pattern) {
  if (!is(node, "Einsum"))
    return false;
  std::string eq;
  for (const onnx::AttributeProto &attr : node->attribute())
    if (attr.name() == "equation")
      for (char c : attr.s())
        if (c != ' ')
          eq.push_back(c);
  // The same equation up to a one-to-one renaming of the letters.
  if (eq.size() != pattern.size())
    return false;
  llvm::DenseMap<char, char> forward, backward;
  for (auto [c, p] : llvm::zip(eq, pattern)) {
    bool letter = std::isalpha(static_cast<unsigned char>(p));
    if (!letter) {
      if (c != p)
        return false;
      continue;
    }
    if (!std::isalpha(static_cast<unsigned char>(c)))
      return false;
    auto [f, fNew] = forward.try_emplace(p, c);
    auto [r, rNew] = backward.try_emplace(c, p);
    if (f->second != c || r->second != p)
      return false;
  }
  return true;
}

const onnx::NodeProto *
BlockMatcher::matchArgmaxOneHot(const onnx::NodeProto &argmax,
                                int64_t numExperts) {
  const onnx::NodeProto *onehot = userOp(outputOf(&argmax, 0), "OneHot");
  std::optional<SmallVector<int64_t>> onOff =
      onehot ? constantInts(inputOf(onehot, 2)) : std::nullopt;
  if (!onehot || constantInt(inputOf(onehot, 1)) != numExperts ||
      intAttr(*onehot, "axis", -1) != -1 || !onOff ||
      *onOff != SmallVector<int64_t>{0, 1}) {
    fail("the argmax is not one-hot encoded over the experts");
    return nullptr;
  }
  return onehot;
}

StringRef BlockMatcher::skipAnyCasts(StringRef name) const {
  for (int steps = 0; steps < kMaxChain; ++steps) {
    const onnx::NodeProto *cast = defOp(name, "Cast");
    if (!cast)
      break;
    name = inputOf(cast, 0);
  }
  return name;
}

bool BlockMatcher::matchCapacityEinsum(const onnx::NodeProto &argmax,
                                       const Router &router, MoEBlock &block) {
  int64_t numExperts = router.weight.getType().getDimSize(1);
  int64_t axis = intAttr(argmax, "axis", 0);
  if ((axis != 1 && axis != -1) || intAttr(argmax, "keepdims", 1) != 0 ||
      intAttr(argmax, "select_last_index", 0) != 0)
    return fail("the ArgMax is not over the experts without keepdims");
  // The one operand of `node` that is not `known`.
  auto other = [&](const onnx::NodeProto *node, StringRef known) -> StringRef {
    if (!node || node->input_size() != 2)
      return {};
    if (skipAnyCasts(inputOf(node, 0)) == known)
      return inputOf(node, 1);
    if (skipAnyCasts(inputOf(node, 1)) == known)
      return inputOf(node, 0);
    return {};
  };
  auto sumOver1 = [&](const onnx::NodeProto *sum) {
    return sum && axesOf(*sum) == SmallVector<int64_t>{1} &&
           intAttr(*sum, "keepdims", 1) == 0;
  };
  // mask = one_hot(argmax(gates), E).
  const onnx::NodeProto *onehot = matchArgmaxOneHot(argmax, numExperts);
  if (!onehot)
    return false;
  StringRef mask = outputOf(onehot, 0);
  // locations = cumsum(mask, 0) - 1; keep = mask * (locations < C).
  const onnx::NodeProto *cumsum = userOp(mask, "CumSum");
  const onnx::NodeProto *sub =
      cumsum ? userOp(outputOf(cumsum, 0), "Sub") : nullptr;
  const onnx::NodeProto *less =
      sub ? userOp(outputOf(sub, 0), "Less") : nullptr;
  std::optional<int64_t> capacity =
      less ? constantInt(inputOf(less, 1)) : std::nullopt;
  if (!cumsum || !sub || !less || constantInt(inputOf(cumsum, 1)) != 0 ||
      intAttr(*cumsum, "exclusive", 0) != 0 ||
      intAttr(*cumsum, "reverse", 0) != 0 ||
      inputOf(sub, 0) != outputOf(cumsum, 0) ||
      constantInt(inputOf(sub, 1)) != 1 ||
      inputOf(less, 0) != outputOf(sub, 0) || !capacity)
    return fail("the one-hot mask's running count along the tokens "
                "(cumsum - 1) is not compared with a constant capacity");
  if (*capacity < 1)
    return fail("a capacity below one token per expert");
  StringRef locations = outputOf(sub, 0);
  const onnx::NodeProto *keep = nullptr;
  for (const onnx::NodeProto *user : users(mask))
    if (is(user, "Mul") && skipAnyCasts(other(user, mask)) == outputOf(less, 0))
      keep = user;
  if (!keep)
    return fail("the one-hot mask is not multiplied by the capacity test");
  StringRef kept = outputOf(keep, 0);
  // The combine weights: einsum("se,sc->sec", gate[:, None] * kept,
  // one_hot(sum(locations * kept, 1), C)), gate = sum(gates * kept, 1).
  const onnx::NodeProto *combine = nullptr;
  for (const onnx::NodeProto *user : users(outputOf(router.softmax, 0))) {
    if (!is(user, "Mul") ||
        skipAnyCasts(other(user, outputOf(router.softmax, 0))) != kept)
      continue;
    const onnx::NodeProto *sum = userOp(outputOf(user, 0), "ReduceSum");
    const onnx::NodeProto *col =
        sum && sumOver1(sum) ? userOp(outputOf(sum, 0), "Unsqueeze") : nullptr;
    const onnx::NodeProto *scaled =
        col && (axesOf(*col) == SmallVector<int64_t>{1} ||
                axesOf(*col) == SmallVector<int64_t>{-1})
            ? userOp(outputOf(col, 0), "Mul")
            : nullptr;
    const onnx::NodeProto *einsum =
        scaled && skipAnyCasts(other(scaled, outputOf(col, 0))) == kept
            ? userOp(outputOf(scaled, 0), "Einsum")
            : nullptr;
    if (einsum && isEinsum(einsum, "se,sc->sec") &&
        inputOf(einsum, 0) == outputOf(scaled, 0))
      combine = einsum;
  }
  if (!combine)
    return fail("no combine weights einsum(\"se,sc->sec\", gate[:, None] * "
                "mask, one_hot(location, C)) of the kept top-1 gate");
  const onnx::NodeProto *slot =
      defOp(skipAnyCasts(inputOf(combine, 1)), "OneHot");
  const onnx::NodeProto *where =
      slot ? defOp(inputOf(slot, 0), "ReduceSum") : nullptr;
  const onnx::NodeProto *product =
      where && sumOver1(where) ? defOp(inputOf(where, 0), "Mul") : nullptr;
  std::optional<SmallVector<int64_t>> slotOnOff =
      slot ? constantInts(inputOf(slot, 2)) : std::nullopt;
  if (!product || constantInt(inputOf(slot, 1)) != *capacity ||
      intAttr(*slot, "axis", -1) != -1 || !slotOnOff ||
      *slotOnOff != SmallVector<int64_t>{0, 1} ||
      skipAnyCasts(other(product, locations)) != kept)
    return fail("the combine weights' slots are not one_hot(sum(locations * "
                "mask, 1), C)");
  // The output: einsum("sec,ecm->sm", combine, expert outputs); the experts'
  // input: einsum("sec,sm->ecm", bool(combine), x).
  StringRef combined = outputOf(combine, 0);
  const onnx::NodeProto *output = nullptr, *dispatch = nullptr;
  for (const onnx::NodeProto *user : users(combined))
    if (isEinsum(user, "sec,ecm->sm") && inputOf(user, 0) == combined)
      output = user;
  // dispatch_mask = combine.bool(), as Casts to bool and back.
  for (const onnx::NodeProto *toBool : users(combined)) {
    if (!is(toBool, "Cast") ||
        intAttr(*toBool, "to", 0) != onnx::TensorProto::BOOL)
      continue;
    for (const onnx::NodeProto *back : users(outputOf(toBool, 0)))
      if (is(back, "Cast"))
        for (const onnx::NodeProto *user : users(outputOf(back, 0)))
          if (isEinsum(user, "sec,sm->ecm") &&
              inputOf(user, 0) == outputOf(back, 0) &&
              inputOf(user, 1) == router.input)
            dispatch = user;
  }
  if (!output || !dispatch)
    return fail("the combine weights are not applied as einsum(\"sec,ecm->sm\","
                " ...) to experts that read einsum(\"sec,sm->ecm\", "
                "bool(combine), x)");
  // The experts on [E, C, M]: down(act(up(x))) or SwiGLU, as batched
  // einsums by constant weights.
  std::string rows;
  auto linear = [&](StringRef name, Linear &l) {
    // The down projection's pattern, or the up and gate projections'.
    return matchBatchedLinear(name, l, "ecf,efm->ecm") ||
           matchBatchedLinear(name, l, "ecm,emf->ecf");
  };
  auto split = [&](const GatedActivation &act, Linear &gate, Linear &up) {
    if (!linear(act.gate, gate) || !linear(act.up, up))
      return fail("the gated activation's projections: " + why);
    return true;
  };
  if (!matchBatchedMLP(inputOf(output, 1), linear, split, block, rows))
    return false;
  if (rows != outputOf(dispatch, 0))
    return fail("the experts do not read the dispatched rows");
  if (block.numExperts() != numExperts)
    return fail("the expert weights are not stacked over the router's experts");
  block.form = "capacity einsum";
  block.outputNode = output;
  block.k = 1;
  block.renormalize = false;
  block.tokenCapacity = *capacity;
  block.input = router.input;
  return true;
}

bool BlockMatcher::matchSwitchMaskLoop(const onnx::NodeProto &argmax,
                                       const Router &router, MoEBlock &block) {
  int64_t numExperts = router.weight.getType().getDimSize(1);
  if (intAttr(argmax, "axis", 0) != -1 || intAttr(argmax, "keepdims", 1) != 0 ||
      intAttr(argmax, "select_last_index", 0) != 0)
    return fail("the ArgMax is not over the last axis without keepdims");
  // mask = one_hot(argmax, E); kept = mask * (cumsum(mask, axis) <= C).
  const onnx::NodeProto *onehot = matchArgmaxOneHot(argmax, numExperts);
  if (!onehot)
    return false;
  StringRef mask = outputOf(onehot, 0);
  const onnx::NodeProto *cumsum = userOp(mask, "CumSum");
  const onnx::NodeProto *test =
      cumsum ? userOp(outputOf(cumsum, 0), "LessOrEqual") : nullptr;
  std::optional<int64_t> axis =
      cumsum ? constantInt(inputOf(cumsum, 1)) : std::nullopt;
  std::optional<int64_t> capacity =
      test ? constantInt(inputOf(test, 1)) : std::nullopt;
  if (!test || !axis || intAttr(*cumsum, "exclusive", 0) != 0 ||
      intAttr(*cumsum, "reverse", 0) != 0 ||
      inputOf(test, 0) != outputOf(cumsum, 0) || !capacity)
    return fail("the one-hot mask's running count along the tokens is not "
                "compared (<=) with a constant capacity");
  if (*capacity < 1)
    return fail("a capacity below one token per expert");
  const onnx::NodeProto *keep = nullptr;
  for (const onnx::NodeProto *user : users(mask))
    if (is(user, "Mul") && user->input_size() == 2 &&
        skipAnyCasts(inputOf(user, inputOf(user, 0) == mask ? 1 : 0)) ==
            outputOf(test, 0))
      keep = user;
  if (!keep)
    return fail("the one-hot mask is not multiplied by the capacity test");
  // selected = bool(kept); column e of it picks expert e's tokens.
  const onnx::NodeProto *toBool = nullptr;
  for (const onnx::NodeProto *user : users(outputOf(keep, 0)))
    if (is(user, "Cast") && intAttr(*user, "to", 0) == onnx::TensorProto::BOOL)
      toBool = user;
  if (!toBool)
    return fail("the kept mask is not cast to bool");
  StringRef selected = outputOf(toBool, 0);
  // The expert of a column `Gather(selected, e, axis = last)`, or -1.
  auto expertOfColumn = [&](StringRef name) -> int64_t {
    const onnx::NodeProto *g = defOp(name, "Gather");
    if (!g || inputOf(g, 0) != selected)
      return -1;
    int64_t a = intAttr(*g, "axis", 0);
    std::optional<int64_t> e = constantInt(inputOf(g, 1));
    if ((a != -1 && a != 2 && a != 1) || !e || *e < 0 || *e >= numExperts)
      return -1;
    return *e;
  };
  // `Transpose(NonZero(v), [1, 0])`: v's true positions as rows; returns v.
  auto positionsOf = [&](StringRef name) -> StringRef {
    const onnx::NodeProto *t = defOp(name, "Transpose");
    const onnx::NodeProto *nz = t ? defOp(inputOf(t, 0), "NonZero") : nullptr;
    std::optional<SmallVector<int64_t>> perm =
        t ? intsAttr(*t, "perm") : std::nullopt;
    if (!nz || !perm || *perm != SmallVector<int64_t>{1, 0})
      return {};
    return inputOf(nz, 0);
  };
  // The output: probs * state, probs = max(softmax, -1) (keepdims, or
  // without them and unsqueezed).
  auto isTopProbability = [&](StringRef name) {
    const onnx::NodeProto *max = defOp(name, "ReduceMax");
    if (const onnx::NodeProto *unsq = defOp(name, "Unsqueeze")) {
      max = defOp(inputOf(unsq, 0), "ReduceMax");
      std::optional<SmallVector<int64_t>> axes = axesOf(*unsq);
      if (!max || intAttr(*max, "keepdims", 1) != 0 || !axes ||
          axes->size() != 1 ||
          ((*axes)[0] != -1 && (*axes)[0] != 2 && (*axes)[0] != 1))
        return false;
    } else if (!max || intAttr(*max, "keepdims", 1) != 1) {
      return false;
    }
    std::optional<SmallVector<int64_t>> axes = axesOf(*max);
    return inputOf(max, 0) == outputOf(router.softmax, 0) && axes &&
           axes->size() == 1 && (*axes)[0] == -1;
  };
  const onnx::NodeProto *output = nullptr;
  StringRef state;
  for (const onnx::NodeProto *user : users(outputOf(router.softmax, 0))) {
    if (!is(user, "ReduceMax"))
      continue;
    StringRef probs = outputOf(user, 0);
    if (const onnx::NodeProto *unsq = userOp(probs, "Unsqueeze"))
      probs = outputOf(unsq, 0);
    const onnx::NodeProto *mul = userOp(probs, "Mul");
    if (!mul || mul->input_size() != 2 || !isTopProbability(probs))
      continue;
    output = mul;
    state = inputOf(mul, inputOf(mul, 0) == probs ? 1 : 0);
  }
  if (!output)
    return fail("the top-1 probability (ReduceMax of the softmax) does not "
                "scale the experts' results");
  // The state is a chain of ScatterND from x: expert e's rows written at
  // the positions of Expand(column e, shape) with its flattened outputs.
  SmallVector<ExpertMLP> experts(numExperts);
  SmallVector<bool> seen(numExperts, false);
  for (int steps = 0; steps <= numExperts; ++steps) {
    if (state == router.input)
      break;
    const onnx::NodeProto *scatter = defOp(state, "ScatterND");
    if (!scatter || scatter->input_size() != 3 || steps == numExperts)
      return fail("the experts' results are not written into a copy of x by "
                  "a chain of ScatterND, one per expert");
    const onnx::NodeProto *expand =
        defOp(positionsOf(inputOf(scatter, 1)), "Expand");
    int64_t e = expand ? expertOfColumn(inputOf(expand, 0)) : -1;
    if (e < 0 || seen[e])
      return fail("a ScatterND does not write the positions of one expert's "
                  "column of the kept mask (or writes an expert twice)");
    // updates = Slice(Reshape(expert_e(rows), [-1]), 0, count).
    const onnx::NodeProto *slice = defOp(inputOf(scatter, 2), "Slice");
    const onnx::NodeProto *flat =
        slice ? defOp(inputOf(slice, 0), "Reshape") : nullptr;
    std::optional<SmallVector<int64_t>> flatShape =
        flat ? constantInts(inputOf(flat, 1)) : std::nullopt;
    if (!flat || !flatShape || *flatShape != SmallVector<int64_t>{-1} ||
        slice->input_size() < 3 || constantInt(inputOf(slice, 1)) != 0)
      return fail("a ScatterND's values are not an expert's rows flattened");
    ExpertMLP mlp;
    if (!matchExpert(inputOf(flat, 0), mlp))
      return fail(llvm::formatv("expert {0}: {1}", e, why).str());
    // rows = GatherND(x, positions of the same column).
    const onnx::NodeProto *rows = defOp(mlp.input, "GatherND");
    if (!rows || inputOf(rows, 0) != router.input ||
        positionsOf(inputOf(rows, 1)) != inputOf(expand, 0))
      return fail(llvm::formatv("expert {0} does not read x at its column's "
                                "positions",
                                e)
                      .str());
    experts[e] = mlp;
    seen[e] = true;
    state = inputOf(scatter, 0);
  }
  if (llvm::count(seen, true) != numExperts)
    return fail(llvm::formatv("{0} of the {1} experts are in the export (a "
                              "loop over the experts hit when it was traced)",
                              llvm::count(seen, true), numExperts)
                    .str());
  if (!finishExperts(experts, router.input, numExperts, block))
    return false;
  if (!block.zeroKinds.empty())
    return fail("zero-computation experts in the mask-indexing loop");
  block.form = "Switch mask-indexing loop";
  block.outputNode = output;
  block.k = 1;
  block.renormalize = false;
  block.tokenCapacity = *capacity;
  block.capacityAxis = *axis;
  block.passDropped = true;
  return true;
}

bool BlockMatcher::matchHash(const onnx::NodeProto &lookup, MoEBlock &block) {
  // selected = hash_table[input_ids]
  DenseElementsAttr table = constant(inputOf(&lookup, 0));
  if (!table || table.getType().getRank() != 1 ||
      !table.getElementType().isInteger(64) || intAttr(lookup, "axis", 0) != 0)
    return fail("not a lookup of the token ids in a constant int64 table");
  StringRef selected = outputOf(&lookup, 0);
  // Per expert e: top_x = torch.where(selected == e)[0].
  SmallVector<std::pair<int64_t, StringRef>> tokensOf;
  for (const onnx::NodeProto *user : users(selected)) {
    std::optional<int64_t> e;
    if (is(user, "Equal"))
      for (int i = 0; i < 2 && !e; ++i)
        if (inputOf(user, 1 - i) == selected)
          e = constantInt(inputOf(user, i));
    if (!e)
      return fail("the expert ids are used other than compared with each "
                  "expert's index");
    const onnx::NodeProto *nonZero = userOp(outputOf(user, 0), "NonZero");
    const onnx::NodeProto *column =
        nonZero ? userOp(outputOf(nonZero, 0), "Transpose") : nullptr;
    StringRef token = column ? outputOf(column, 0) : StringRef();
    if (const onnx::NodeProto *split =
            column ? userOp(token, "Split") : nullptr)
      token = split->output_size() == 1 ? outputOf(split, 0) : StringRef();
    const onnx::NodeProto *squeeze =
        token.empty() ? nullptr : userOp(token, "Squeeze");
    if (!squeeze)
      return fail(llvm::formatv("expert {0}: torch.where(ids == e) is not "
                                "NonZero -> Transpose -> Squeeze",
                                *e)
                      .str());
    tokensOf.emplace_back(*e, outputOf(squeeze, 0));
  }
  int64_t numExperts = tokensOf.size();
  if (numExperts == 0)
    return fail("no expert compares the expert ids with its index");
  SmallVector<ExpertMLP> experts(numExperts);
  SmallVector<bool> seen(numExperts, false);
  SmallVector<const onnx::NodeProto *> adds;
  std::string input;
  for (auto [e, token] : tokensOf) {
    std::string where = llvm::formatv("expert {0}: ", e).str();
    if (e < 0 || e >= numExperts || seen[e])
      return fail(where + "the experts are not 0 .. E-1, each once");
    seen[e] = true;
    // index_add_(0, top_x, expert(x[top_x])), unweighted.
    StringRef rows;
    const onnx::NodeProto *add = matchIndexAdd(token, rows, where, false);
    if (!add)
      return false;
    ExpertMLP mlp;
    if (!matchExpert(rows, mlp))
      return fail(where + why);
    const onnx::NodeProto *gather = defOp(mlp.input, "Gather");
    if (!gather || inputOf(gather, 1) != token ||
        intAttr(*gather, "axis", 0) != 0 ||
        (!input.empty() && inputOf(gather, 0) != input))
      return fail(where + "the expert does not read one input's rows at "
                          "the expert's tokens");
    input = inputOf(gather, 0).str();
    experts[e] = mlp;
    adds.push_back(add);
  }
  const onnx::NodeProto *last = nullptr;
  if (!matchAddChain(adds, last))
    return false;
  block.form = "hash";
  block.anchor = &lookup;
  block.outputNode = last;
  block.k = 1;
  block.hashTable = table;
  block.tokenIds = inputOf(&lookup, 1).str();
  return finishExperts(experts, input, numExperts, block);
}

std::optional<MoEBlock> BlockMatcher::match(const onnx::NodeProto &anchor) {
  if (is(&anchor, "Gather")) {
    MoEBlock block;
    if (!matchHash(anchor, block))
      return std::nullopt;
    return block;
  }
  Router router;
  // Expert choice takes the TopK of the scores transposed to [E, T].
  StringRef scores = inputOf(&anchor, 0);
  const onnx::NodeProto *transpose =
      is(&anchor, "TopK") ? defOp(scores, "Transpose") : nullptr;
  if (transpose && intsAttr(*transpose, "perm") == SmallVector<int64_t>{1, 0})
    scores = inputOf(transpose, 0);
  else
    transpose = nullptr;
  // GPT-OSS: the TopK reads the logits, a Softmax its values.
  bool topkSoftmax = !transpose && is(&anchor, "TopK") &&
                     matchTopKSoftmaxRouter(anchor, router);
  if (!topkSoftmax && !matchRouter(scores, router))
    return std::nullopt;
  if (inputOf(router.softmax, 0).empty())
    return std::nullopt;
  MoEBlock block;
  block.routerBias = router.bias;
  block.residual = router.residual;
  block.anchor = &anchor;
  block.softmax = router.softmax;
  block.router = router.weight;
  block.scoring = router.scoring;
  block.temperature = router.temperature;
  block.selectionBias = router.selectionBias;
  block.nGroup = router.group.nGroup;
  block.topkGroup = router.group.topkGroup;
  block.groupTopKs = router.group.topks;
  block.expertGroups = router.expertGroups;
  block.tokenGroups = router.tokenGroups;
  this->router = &router;
  scale = 1.0;
  threshold = 0.0;
  bool modality = !router.expertGroups.empty();
  if (modality && (!is(&anchor, "TopK") || transpose ||
                   !userOp(outputOf(&anchor, 1), "OneHot"))) {
    fail("modality groups are raised in the Mixtral form only");
    return std::nullopt;
  }
  if (is(&anchor, "ArgMax")) {
    if (router.scoring != ScoringFunc::Softmax || router.selectionBias) {
      fail("the Switch form needs softmax routing scores without a bias");
      return std::nullopt;
    }
    // GShard's einsum form with a capacity (one-hot of the argmax),
    // transformers' Switch (the same one-hot, a mask-indexing loop), else
    // Switch without a capacity.
    if (const onnx::NodeProto *onehot =
            userOp(outputOf(&anchor, 0), "OneHot")) {
      const onnx::NodeProto *cumsum = userOp(outputOf(onehot, 0), "CumSum");
      bool loop = cumsum && userOp(outputOf(cumsum, 0), "LessOrEqual");
      if (loop ? !matchSwitchMaskLoop(anchor, router, block)
               : !matchCapacityEinsum(anchor, router, block))
        return std::nullopt;
      return block;
    }
    if (!matchSwitch(anchor, router, block))
      return std::nullopt;
    return block;
  }
  std::optional<int64_t> k =
      anchor.input_size() > 1 ? constantInt(inputOf(&anchor, 1)) : std::nullopt;
  if (intAttr(anchor, "largest", 1) != 1 || intAttr(anchor, "axis", -1) != -1) {
    fail("the TopK is not the largest along the last axis");
    return std::nullopt;
  }
  if (transpose) {
    // Expert choice: a constant capacity, or one computed from T.
    double capacityFactor = 0.0;
    if (!k) {
      std::optional<double> factor =
          anchor.input_size() > 1
              ? matchCapacityFactor(inputOf(&anchor, 1), router.input,
                                    router.weight.getType().getDimSize(1))
              : std::nullopt;
      if (!factor)
        return std::nullopt;
      capacityFactor = *factor;
    }
    if (!matchExpertChoice(anchor, router, k.value_or(0), capacityFactor,
                           block))
      return std::nullopt;
    return block;
  }
  if (!k) {
    fail("k is not a constant");
    return std::nullopt;
  }
  if (userOp(outputOf(&anchor, 1), "OneHot")) {
    if (!matchMixtral(anchor, router, *k, block))
      return std::nullopt;
    block.scale = scale;
    block.threshold = threshold;
    // The masked softmax is over the token's group, moe.routing's over all
    // experts: the same weights only once renormalized over the top-k.
    if (modality && !block.renormalize) {
      fail("modality groups without renormalization: the softmax over the "
           "token's group (the masked logits) and moe.routing's over all "
           "experts give different weights");
      return std::nullopt;
    }
    if (modality && *k > *llvm::min_element(block.expertGroups)) {
      fail("top-k larger than a modality group");
      return std::nullopt;
    }
    return block;
  }
  if (userOp(outputOf(&anchor, 1), "ScatterElements")) {
    if (!matchDense(anchor, router, *k, block))
      return std::nullopt;
    block.scale = scale;
    block.threshold = threshold;
    return block;
  }
  fail("the expert ids feed neither OneHot (Mixtral's expert loop) nor "
       "ScatterElements (dense mixing)");
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

DenseElementsAttr onnx_import::stackWeights(ArrayRef<DenseElementsAttr> parts) {
  ShapedType partType = parts[0].getType();
  SmallVector<int64_t> shape = {(int64_t)parts.size()};
  llvm::append_range(shape, partType.getShape());
  auto type = RankedTensorType::get(shape, partType.getElementType());
  size_t size = partType.getElementType().getIntOrFloatBitWidth() / 8;
  int64_t count = partType.getNumElements();
  std::vector<char> out;
  out.reserve(parts.size() * count * size);
  for (DenseElementsAttr part : parts) {
    ArrayRef<char> raw = part.getRawData();
    if (part.isSplat()) {
      for (int64_t i = 0; i < count; ++i)
        out.insert(out.end(), raw.begin(), raw.begin() + size);
      continue;
    }
    out.insert(out.end(), raw.begin(), raw.end());
  }
  return DenseElementsAttr::getFromRawBuffer(type, out);
}

std::vector<MoEBlock> onnx_import::findMoEBlocks(
    GraphImporter &importer, const onnx::GraphProto &graph, bool remarks,
    function_ref<Location(const onnx::NodeProto &)> loc) {
  BlockMatcher matcher(importer, graph);
  std::vector<MoEBlock> blocks;
  llvm::DenseSet<const onnx::NodeProto *> outputs;
  // Candidates that did not match, reported at the end unless they are
  // inside a raised block (the group-limited router's own TopKs).
  SmallVector<std::pair<const onnx::NodeProto *, std::string>> misses;
  for (const onnx::NodeProto &node : graph.node()) {
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      continue;
    // Hash routing's candidates: a Gather of an integer initializer whose
    // result is compared with something (the expert indices).
    if (node.op_type() == "Gather") {
      if (!matcher.isHashCandidate(node))
        continue;
    } else if (node.op_type() != "TopK" && node.op_type() != "ArgMax") {
      continue;
    }
    if (node.input_size() < 1 || node.output_size() < 1)
      continue;
    if (node.op_type() == "TopK" && node.output_size() < 2)
      continue;
    matcher.why.clear();
    matcher.warning.clear();
    std::optional<MoEBlock> block = matcher.match(node);
    if (!block && !matcher.warning.empty() && !remarks)
      mlir::emitWarning(loc(node))
          << "MoE block at " << node.op_type() << " '" << node.name()
          << "' not raised: " << matcher.warning;
    // A result node without an output (a malformed graph) has nothing to
    // replace.
    if (block && block->outputNode->output_size() < 1) {
      block.reset();
      matcher.why = "the block's result node has no output";
    }
    if (block && !outputs.insert(block->outputNode).second) {
      block.reset();
      matcher.why = "its result is already raised with another block";
    }
    if (!block) {
      misses.emplace_back(&node, matcher.why);
      continue;
    }
    blocks.push_back(std::move(*block));
  }
  llvm::DenseSet<const onnx::NodeProto *> inner;
  for (const MoEBlock &block : blocks)
    inner.insert(block.groupTopKs.begin(), block.groupTopKs.end());
  if (remarks)
    for (auto &[node, why] : misses)
      if (!inner.contains(node))
        mlir::emitRemark(loc(*node))
            << "MoE block at " << node->op_type() << " '" << node->name()
            << "' not raised: " << why;
  return blocks;
}

/// Verifies `ops` (built but not inserted), or destroys them and fails with
/// the first diagnostic in `why`.
static LogicalResult verifyBuilt(MLIRContext *ctx, ArrayRef<Operation *> ops,
                                 std::string &why) {
  std::string message;
  ScopedDiagnosticHandler capture(ctx, [&](Diagnostic &diag) {
    if (message.empty())
      message = diag.str();
    return success();
  });
  for (Operation *op : ops) {
    if (succeeded(mlir::verify(op)))
      continue;
    why = op->getName().getStringRef().str() + " does not verify: " + message;
    for (Operation *built : llvm::reverse(ops))
      built->destroy();
    return failure();
  }
  return success();
}

/// What every block's build checks (the input rank-2 or more): a router's
/// softmax is over the experts (the last axis of the scores), and every
/// weight has the input's element type.
static LogicalResult checkScoresAndWeights(GraphImporter &importer,
                                           const MoEBlock &block,
                                           RankedTensorType inputType,
                                           std::string &why) {
  auto axis = [&](const onnx::NodeProto *softmax) {
    for (const onnx::AttributeProto &attr : softmax->attribute())
      if (attr.name() == "axis")
        return attr.i();
    return int64_t(-1);
  };
  // Only hash routing has no router.
  const onnx::NodeProto *softmax = block.softmax;
  if (!softmax && !block.hashTable) {
    why = "the softmax is not over the experts";
    return failure();
  }
  if (softmax && block.scoring != ScoringFunc::Sigmoid) {
    // The scores' rank: the Softmax's input where it is imported (the
    // logits, or the top-k values), else the input's.
    int64_t rank = inputType.getRank();
    if (Value scores = importer.lookup(inputOf(softmax, 0)))
      if (auto type = dyn_cast<RankedTensorType>(scores.getType()))
        rank = type.getRank();
    if (axis(softmax) != -1 && axis(softmax) != rank - 1) {
      why = block.scoring == ScoringFunc::TopkSoftmax
                ? "the softmax is not over the chosen experts"
                : "the softmax is not over the experts";
      return failure();
    }
  }
  for (DenseElementsAttr weight :
       {block.router, block.routerBias, block.selectionBias, block.gate,
        block.up, block.down, block.gateBias, block.upBias, block.downBias,
        block.sharedGate, block.sharedUp, block.sharedDown, block.sharedScale,
        block.constantValues, block.constantMix}) {
    if (weight && weight.getElementType() != inputType.getElementType()) {
      why = "the weights and the input have different element types";
      return failure();
    }
  }
  return success();
}

/// The routing recipe and expert kind of `block`.
static RoutingAttr routingOf(MLIRContext *ctx, const MoEBlock &block) {
  return RoutingAttr::get(
      ctx, block.k, block.scoring, block.renormalize,
      APFloat(block.temperature), APFloat(block.scale), block.nGroup,
      block.topkGroup, APFloat(block.expertChoice ? block.capacityFactor : 0.0),
      APFloat(block.threshold),
      block.expertChoice ? SelectionMode::ExpertChoice
                         : SelectionMode::TokenChoice,
      block.expertChoice ? block.capacity : block.tokenCapacity,
      block.expertGroups);
}
static ExpertAttr expertOf(MLIRContext *ctx, const MoEBlock &block) {
  return ExpertAttr::get(ctx, block.kind, block.activation,
                         APFloat(block.limit), APFloat(block.alpha),
                         APFloat(block.beta));
}

/// The reassociation that collapses all but the last of `rank` dimensions.
static SmallVector<ReassociationIndices> collapseLeading(int64_t rank) {
  ReassociationIndices leading;
  for (int64_t d = 0; d < rank - 1; ++d)
    leading.push_back(d);
  return {leading, {rank - 1}};
}

/// The blocks moe.layer cannot express, as the expanded ops: the routing
/// (hash: `moe.hash_route` of the token ids through the table; otherwise
/// the router matmul, its bias, and `moe.route`, with `token_groups` for
/// modality groups), then `moe.dispatch`, `moe.experts` and `moe.combine`.
/// An input `[..., H]` of rank > 2 is collapsed to rows and the result
/// expanded back.
static LogicalResult buildExpandedBlock(GraphImporter &importer,
                                        const MoEBlock &block, Location loc,
                                        std::string &why) {
  OpBuilder &b = importer.getBuilder();
  MLIRContext *ctx = importer.getContext();
  bool hash = static_cast<bool>(block.hashTable);
  bool groups = !block.expertGroups.empty();
  Value original = importer.lookup(block.input);
  Value residual;
  if (!block.residual.empty()) {
    residual = importer.lookup(block.residual);
    auto type = residual ? dyn_cast<RankedTensorType>(residual.getType())
                         : RankedTensorType();
    if (!type || type.getRank() != 2 ||
        type.getDimSize(1) != block.numExperts()) {
      why = "the gating residual is not [T, E] logits defined before the "
            "block's result";
      return failure();
    }
  }
  Value ids;
  if (hash || groups)
    ids = importer.lookup(hash ? block.tokenIds : block.tokenGroups);
  if (!original || ((hash || groups) && !ids)) {
    why = "the experts' input or the token " +
          std::string(hash ? "ids" : "groups") +
          " are not defined before the block's result";
    return failure();
  }
  auto originalType = cast<RankedTensorType>(original.getType());
  int64_t rank = originalType.getRank();
  if (ids &&
      (rank != 2 || cast<RankedTensorType>(ids.getType()).getRank() != 1)) {
    why = "the block takes [T, H] rows and [T] token " +
          std::string(hash ? "ids" : "groups");
    return failure();
  }
  if (rank < 2) {
    why = "the block's input is not [..., H]";
    return failure();
  }
  if (block.sharedUp) {
    why = "a shared expert is built with moe.layer only";
    return failure();
  }
  if (failed(checkScoresAndWeights(importer, block, originalType, why)))
    return failure();
  if (block.capacityAxis) {
    // A capacity per sequence is one over all tokens where there is one
    // sequence.
    int64_t axis = *block.capacityAxis < 0 ? *block.capacityAxis + rank
                                           : *block.capacityAxis;
    if (axis != rank - 2 ||
        llvm::any_of(originalType.getShape().take_front(rank - 2),
                     [](int64_t d) { return d != 1; })) {
      why = llvm::formatv("the capacity is counted along axis {0} of the "
                          "{1}-d input, per sequence, and there is not "
                          "statically one sequence",
                          *block.capacityAxis, rank)
                .str();
      return failure();
    }
  }
  Type elementType = originalType.getElementType();
  int64_t numExperts = block.numExperts();
  int64_t k = block.k;
  Type i32 = b.getI32Type();
  // The ops are created detached and inserted once all of them verify.
  OpBuilder detached(ctx);
  SmallVector<Operation *> ops;
  auto constant = [&](Attribute value) {
    auto op = arith::ConstantOp::create(detached, loc, cast<TypedAttr>(value));
    ops.push_back(op);
    return op.getResult();
  };
  auto optional = [&](DenseElementsAttr attr) {
    return attr ? constant(attr) : Value();
  };
  Value input = original;
  if (rank > 2) {
    auto collapse = tensor::CollapseShapeOp::create(detached, loc, original,
                                                    collapseLeading(rank));
    ops.push_back(collapse);
    input = collapse;
  }
  auto inputType = cast<RankedTensorType>(input.getType());
  int64_t tokens = inputType.getDimSize(0);
  if (!hash &&
      inputType.getDimSize(1) != block.router.getType().getDimSize(0)) {
    why = llvm::formatv("the router input is not [..., {0}]",
                        block.router.getType().getDimSize(0))
              .str();
    return failure();
  }
  auto perToken = [&](Type type) {
    return RankedTensorType::get({tokens, k}, type);
  };
  SmallVector<Value> tokenSizes;
  if (ShapedType::isDynamic(tokens)) {
    auto dim = tensor::DimOp::create(detached, loc, input,
                                     constant(detached.getIndexAttr(0)));
    ops.push_back(dim);
    tokenSizes.push_back(dim);
  }
  Value expertIds, weights;
  if (hash) {
    auto route = HashRouteOp::create(
        detached, loc, perToken(i32), perToken(elementType), ids,
        constant(block.hashTable), b.getI64IntegerAttr(numExperts));
    ops.push_back(route);
    expertIds = route.getExpertIds();
    weights = route.getWeights();
  } else {
    // logits = x·W (+ b): the matmul accumulates into zeros, or into the
    // bias broadcast over the rows.
    auto empty = tensor::EmptyOp::create(detached, loc,
                                         ArrayRef<int64_t>{tokens, numExperts},
                                         elementType, tokenSizes);
    ops.push_back(empty);
    Value init;
    if (block.routerBias) {
      auto broadcast =
          linalg::BroadcastOp::create(detached, loc, constant(block.routerBias),
                                      empty, ArrayRef<int64_t>{0});
      ops.push_back(broadcast);
      init = broadcast.getResult()[0];
    } else {
      auto zeros = linalg::FillOp::create(
          detached, loc,
          ValueRange{constant(detached.getZeroAttr(elementType))},
          ValueRange{empty});
      ops.push_back(zeros);
      init = zeros.result();
    }
    auto logits = linalg::MatmulOp::create(
        detached, loc, ValueRange{input, constant(block.router)},
        ValueRange{init});
    ops.push_back(logits);
    auto route =
        RouteOp::create(detached, loc, perToken(i32), perToken(elementType),
                        logits.getResult(0), optional(block.selectionBias), ids,
                        residual, routingOf(ctx, block));
    ops.push_back(route);
    expertIds = route.getExpertIds();
    weights = route.getWeights();
  }
  int64_t rows =
      ShapedType::isDynamic(tokens) ? ShapedType::kDynamic : tokens * k;
  auto dispatch = DispatchOp::create(
      detached, loc, RankedTensorType::get({rows}, i32),
      RankedTensorType::get({numExperts + 1}, i32), perToken(i32), expertIds,
      b.getI64IntegerAttr(numExperts), b.getI64IntegerAttr(1),
      b.getF64FloatAttr(0.0),
      b.getI64IntegerAttr(block.expertChoice ? 0 : block.tokenCapacity));
  ops.push_back(dispatch);
  SmallVector<Value> rowSizes;
  if (!tokenSizes.empty()) {
    auto times = arith::MulIOp::create(detached, loc, tokenSizes[0],
                                       constant(detached.getIndexAttr(k)));
    ops.push_back(times);
    rowSizes.push_back(times);
  }
  auto dest = tensor::EmptyOp::create(
      detached, loc, ArrayRef<int64_t>{rows, inputType.getDimSize(1)},
      elementType, rowSizes);
  ops.push_back(dest);
  auto experts = ExpertsOp::create(
      detached, loc, dest.getType(), input, dispatch.getTokenIndices(),
      dispatch.getExpertOffsets(), dest, optional(block.gate),
      constant(block.up), constant(block.down), optional(block.gateBias),
      optional(block.upBias), optional(block.downBias), expertOf(ctx, block),
      b.getI64IntegerAttr(0), /*placement=*/PlacementAttr());
  ops.push_back(experts);
  Value expertRows = experts.getResult();
  if (!block.zeroKinds.empty()) {
    // MoE++'s zero-computation experts take the last expert ids.
    SmallVector<Attribute> kinds;
    for (ZeroComputationKind kind : block.zeroKinds)
      kinds.push_back(ZeroComputationKindAttr::get(ctx, kind));
    auto zero = ZeroComputationExpertsOp::create(
        detached, loc, dest.getType(), input, dispatch.getTokenIndices(),
        dispatch.getExpertOffsets(), expertRows, optional(block.constantValues),
        optional(block.constantMix), detached.getArrayAttr(kinds),
        detached.getI64IntegerAttr(block.up.getType().getDimSize(0)));
    ops.push_back(zero);
    expertRows = zero.getResult();
  }
  auto combine = CombineOp::create(detached, loc, inputType, expertRows,
                                   dispatch.getPositions(), weights, Value());
  ops.push_back(combine);
  Value combined = combine.getResult();
  if (block.passDropped) {
    // y[t] += w[t, j] * x[t] for each assignment j the capacity dropped
    // (position -1 of a valid expert id).
    MLIRContext *c = ctx;
    AffineExpr t = getAffineDimExpr(0, c), h = getAffineDimExpr(1, c);
    SmallVector<AffineMap> maps = {AffineMap::get(2, 0, {t, h}, c)};
    SmallVector<Value> inputs = {input};
    for (int64_t j = 0; j < k; ++j) {
      AffineMap slot =
          AffineMap::get(2, 0, {t, getAffineConstantExpr(j, c)}, c);
      maps.append({slot, slot, slot});
      inputs.append({expertIds, dispatch.getPositions(), weights});
    }
    maps.push_back(AffineMap::get(2, 0, {t, h}, c));
    SmallVector<utils::IteratorType> iterators(2,
                                               utils::IteratorType::parallel);
    auto pass = linalg::GenericOp::create(
        detached, loc, TypeRange{inputType}, inputs, ValueRange{combined}, maps,
        iterators, [&](OpBuilder &nb, Location nl, ValueRange args) {
          Value acc = args.back();
          Value zero = arith::ConstantOp::create(
              nb, nl, nb.getIntegerAttr(args[1].getType(), 0));
          for (int64_t j = 0; j < k; ++j) {
            Value id = args[1 + 3 * j], pos = args[2 + 3 * j];
            Value w = args[3 + 3 * j];
            Value dropped = arith::AndIOp::create(
                nb, nl,
                arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::sge, id,
                                      zero),
                arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::slt, pos,
                                      zero));
            Value added = arith::AddFOp::create(
                nb, nl, acc, arith::MulFOp::create(nb, nl, w, args[0]));
            acc = arith::SelectOp::create(nb, nl, dropped, added, acc);
          }
          linalg::YieldOp::create(nb, nl, acc);
        });
    ops.push_back(pass);
    combined = pass.getResult(0);
  }
  if (failed(verifyBuilt(ctx, ops, why)))
    return failure();
  for (Operation *op : ops)
    b.insert(op);
  Value result = combined;
  if (rank > 2)
    result =
        buildExpandShape(b, loc, originalType, result, collapseLeading(rank),
                         tensor::getMixedSizes(b, loc, original));
  importer.bind(outputOf(block.outputNode, 0), result);
  return success();
}

LogicalResult onnx_import::buildMoEBlock(GraphImporter &importer,
                                         const MoEBlock &block, Location loc,
                                         std::string &why) {
  if (block.expanded())
    return buildExpandedBlock(importer, block, loc, why);
  OpBuilder &b = importer.getBuilder();
  MLIRContext *ctx = importer.getContext();
  Value input = importer.lookup(block.input);
  if (!input) {
    why = "the router input is not defined before the block's result";
    return failure();
  }
  auto inputType = cast<RankedTensorType>(input.getType());
  int64_t rank = inputType.getRank();
  ShapedType routerType = block.router.getType();
  int64_t hidden = routerType.getDimSize(0);
  if (rank < 2 || inputType.getDimSize(rank - 1) != hidden) {
    why = llvm::formatv("the router input is not [..., {0}]", hidden).str();
    return failure();
  }
  if (failed(checkScoresAndWeights(importer, block, inputType, why)))
    return failure();
  auto constant = [&](DenseElementsAttr attr) -> Value {
    if (!attr)
      return {};
    return arith::ConstantOp::create(b, loc, attr);
  };
  Value tokens = input;
  if (rank > 2)
    tokens =
        tensor::CollapseShapeOp::create(b, loc, input, collapseLeading(rank));
  // The op's verifier checks the weight shapes against each other; a
  // mismatch leaves the block to the generic path.
  OperationState state(loc, LayerOp::getOperationName());
  Value router = constant(block.router);
  LayerOp::build(
      b, state, tokens.getType(), tokens, router, constant(block.routerBias),
      constant(block.selectionBias), constant(block.gate), constant(block.up),
      constant(block.down), constant(block.gateBias), constant(block.upBias),
      constant(block.downBias), constant(block.sharedGate),
      constant(block.sharedUp), constant(block.sharedDown),
      constant(block.sharedScale), routingOf(ctx, block), expertOf(ctx, block));
  Operation *op = Operation::create(state);
  if (failed(verifyBuilt(ctx, {op}, why)))
    return failure();
  b.insert(op);
  Value result = op->getResult(0);
  if (rank > 2)
    result = buildExpandShape(b, loc, inputType, result, collapseLeading(rank),
                              tensor::getMixedSizes(b, loc, input));
  importer.bind(outputOf(block.outputNode, 0), result);
  return success();
}
