//===- MoEDialect.td - The moe dialect ---------------------*- tablegen -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEDIALECT_TD
#define MOE_DIALECT_MOE_IR_MOEDIALECT_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::moe";
  let summary = "Sparse Mixture-of-Experts layers with an explicit routing plan";
  let description = [{
    The `moe` dialect makes the parts of a Mixture-of-Experts layer explicit.

    - `moe.layer` is the whole block, as importers produce it: hidden states,
      router weights and expert weights in, the mixed output out.
    - `moe-expand` splits it into routing (`moe.route`, or the fused
      `moe.gate`), dispatch (`moe.dispatch`: the token permutation sorted by
      expert and the per-expert offsets), the experts' computation over the
      permuted rows (`moe.experts`, `moe.zero_computation_experts`,
      `moe.generic_experts`, `moe.shared_experts`) and the combine
      (`moe.combine`: a per-token weighted reduction, never a scatter-add).

    Selection scores and mixing weights are kept apart: a selection bias
    changes which experts are chosen but not how their outputs are mixed.
    All ops work on ranked tensors; the token count may be dynamic, the number
    of experts and the hidden sizes are static.
  }];
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::tensor::TensorDialect"
  ];
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_TD
