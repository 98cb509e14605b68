// REQUIRES: ptxas
// The kernels of the variants (hash routing with and without a table, token
// groups with a gating residual, expert choice with the router matmul folded
// in, the zero-computation experts of MoE++, int8 experts with bf16
// activations), compiled to PTX for sm_80 and sm_90 and assembled by ptxas.
// RUN: moe-translate --moe-to-ptx --ptx-chip=sm_80 %s -o %t.sm80.ptx
// RUN: /usr/local/cuda/bin/ptxas -arch=sm_80 %t.sm80.ptx -o %t.sm80.cubin
// RUN: moe-translate --moe-to-ptx --ptx-chip=sm_90 %s -o %t.sm90.ptx
// RUN: /usr/local/cuda/bin/ptxas -arch=sm_90 %t.sm90.ptx -o %t.sm90.cubin
// RUN: FileCheck %s < %t.sm80.ptx
// RUN: FileCheck %s < %t.sm90.ptx

// CHECK-NOT: .extern .func
// CHECK-DAG: .entry moe_hash_route(
// CHECK-DAG: .entry moe_hash_route_0(
// CHECK-DAG: .entry moe_gate(
// CHECK-DAG: .entry moe_gate_0(
// CHECK-DAG: .entry moe_expert_choice(
// CHECK-DAG: .entry moe_zero_computation_experts(
// CHECK-DAG: .entry moe_quantized_up(
// CHECK-DAG: .entry moe_quantized_down(
// Explicit zero points (int4, gated, f16): a second pair of kernels.
// CHECK-DAG: .entry moe_quantized_up_0(
// CHECK-DAG: .entry moe_quantized_down_0(

func.func @hash_table(%t: tensor<?xi32>, %table: tensor<40xi32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) {
  %i, %w = moe.hash_route %t table(%table : tensor<40xi32>) {num_experts = 5}
      : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return %i, %w : tensor<?x1xi32>, tensor<?x1xf32>
}

func.func @hash_function(%t: tensor<?xi64>) -> (tensor<?x1xi32>, tensor<?x1xf16>) {
  %i, %w = moe.hash_route %t {num_experts = 7}
      : tensor<?xi64> -> tensor<?x1xi32>, tensor<?x1xf16>
  return %i, %w : tensor<?x1xi32>, tensor<?x1xf16>
}

func.func @gate_groups_residual(%x: tensor<?x16xbf16>, %r: tensor<16x8xbf16>, %g: tensor<?xi32>,
                                %p: tensor<?x8xbf16>) -> (tensor<?x2xi32>, tensor<?x2xbf16>) {
  %i, %w = moe.gate %x, %r token_groups(%g : tensor<?xi32>) residual(%p : tensor<?x8xbf16>)
      {routing = #moe.routing<k = 2, scoring = sigmoid, renormalize = true, expert_groups = [3, 5]>}
      : (tensor<?x16xbf16>, tensor<16x8xbf16>) -> tensor<?x2xi32>, tensor<?x2xbf16>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xbf16>
}

func.func @expert_choice(%x: tensor<?x16xf32>, %r: tensor<16x8xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %t = tensor.dim %x, %c0 : tensor<?x16xf32>
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<?x16xf32>, tensor<16x8xf32>) outs(%f : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 8, selection = expert_choice, capacity = 3, scoring = sigmoid, scale = 1.5>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

func.func @zero_computation(%x: tensor<?x64xf16>, %tok: tensor<?xi32>, %off: tensor<7xi32>,
                            %dest: tensor<?x64xf16>, %v: tensor<2x64xf16>, %m: tensor<2x64x2xf16>)
    -> tensor<?x64xf16> {
  %y = moe.zero_computation_experts %x, %tok, %off into %dest
         constants(%v, %m : tensor<2x64xf16>, tensor<2x64x2xf16>)
         {first_expert = 2, kinds = [#moe.zero_computation<zero>, #moe.zero_computation<constant>,
                                     #moe.zero_computation<copy>, #moe.zero_computation<constant>]}
         : (tensor<?x64xf16>, tensor<?xi32>, tensor<7xi32>, tensor<?x64xf16>) -> tensor<?x64xf16>
  return %y : tensor<?x64xf16>
}

func.func @quantized(%x: tensor<?x64xbf16>, %tok: tensor<?xi32>, %off: tensor<9xi32>, %init: tensor<?x64xbf16>,
                     %qu: tensor<8x128x64xi8>, %su: tensor<8x128x2xbf16>,
                     %qd: tensor<8x64x128xi8>, %sd: tensor<8x64x1xbf16>, %bd: tensor<8x64xbf16>)
    -> tensor<?x64xbf16> {
  %y = moe.quantized_experts %x, %tok, %off into %init
         up(%qu, %su : tensor<8x128x64xi8>, tensor<8x128x2xbf16>)
         down(%qd, %sd : tensor<8x64x128xi8>, tensor<8x64x1xbf16>)
         down_bias(%bd : tensor<8x64xbf16>)
         {bits = 8, expert = #moe.expert<ffn, gelu>}
         : (tensor<?x64xbf16>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xbf16>) -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}

func.func @quantized_zero_points(%x: tensor<?x64xf16>, %tok: tensor<?xi32>, %off: tensor<5xi32>, %init: tensor<?x64xf16>,
                     %qg: tensor<4x96x32xi8>, %sg: tensor<4x96x4xf16>, %zg: tensor<4x96x4xf16>,
                     %qu: tensor<4x96x32xi8>, %su: tensor<4x96x4xf16>, %zu: tensor<4x96x4xf16>,
                     %qd: tensor<4x64x48xi8>, %sd: tensor<4x64x1xf16>, %zd: tensor<4x64x1xf16>)
    -> tensor<?x64xf16> {
  %y = moe.quantized_experts %x, %tok, %off into %init
         gate(%qg, %sg : tensor<4x96x32xi8>, tensor<4x96x4xf16>)
         up(%qu, %su : tensor<4x96x32xi8>, tensor<4x96x4xf16>)
         down(%qd, %sd : tensor<4x64x48xi8>, tensor<4x64x1xf16>)
         gate_zero_points(%zg : tensor<4x96x4xf16>)
         up_zero_points(%zu : tensor<4x96x4xf16>)
         down_zero_points(%zd : tensor<4x64x1xf16>)
         {bits = 4, expert = #moe.expert<gated, silu>}
         : (tensor<?x64xf16>, tensor<?xi32>, tensor<5xi32>, tensor<?x64xf16>) -> tensor<?x64xf16>
  return %y : tensor<?x64xf16>
}
