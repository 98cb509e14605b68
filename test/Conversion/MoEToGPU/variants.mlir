// RUN: moe-opt %s --convert-moe-to-gpu --split-input-file | FileCheck %s

// Hash routing through a table: one thread per token, the table looked up
// only for ids in range, weight 1 where an expert was found.
// CHECK-LABEL: func @hash_table
// CHECK: gpu.launch_func @moe_kernels::@moe_hash_route
// CHECK-SAME: args(%{{.*}} : memref<?xi32>, %{{.*}} : memref<40xi32>, %{{.*}} : memref<?x1xi32>, %{{.*}} : memref<?x1xf32>)
// CHECK: gpu.func @moe_hash_route(%[[IDS:.*]]: memref<?xi32>, %[[TABLE:.*]]: memref<40xi32>,
// CHECK: memref.load %[[IDS]]
// CHECK: scf.if
// CHECK: memref.load %[[TABLE]]
// CHECK: arith.select
func.func @hash_table(%t: tensor<?xi32>, %table: tensor<40xi32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) {
  %i, %w = moe.hash_route %t table(%table : tensor<40xi32>) {num_experts = 5}
      : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return %i, %w : tensor<?x1xi32>, tensor<?x1xf32>
}

// -----

// Without a table: Knuth's multiplicative hash, mod 2^32, mod E.
// CHECK-LABEL: func @hash_function
// CHECK: gpu.func @moe_hash_route
// CHECK-DAG: arith.constant 2654435761 : i64
// CHECK-DAG: arith.constant 4294967295 : i64
// CHECK: arith.remui
func.func @hash_function(%t: tensor<?xi32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) {
  %i, %w = moe.hash_route %t {num_experts = 5}
      : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return %i, %w : tensor<?x1xi32>, tensor<?x1xf32>
}

// -----

// Token groups (MoMa) and a gating residual through moe.gate: the residual
// is added to the logits tile; the group bounds restrict the top-k, and a
// token with a group id out of range keeps weights of 0.
// CHECK-LABEL: func @gate_groups_residual
// CHECK: gpu.launch_func @moe_kernels::@moe_gate
// CHECK-SAME: args(%{{.*}} : memref<?x16xf32>, %{{.*}} : memref<16x8xf32>, %{{.*}} : memref<?xi32>, %{{.*}} : memref<?x8xf32>, %{{.*}} : memref<?x2xi32>, %{{.*}} : memref<?x2xf32>)
// CHECK: gpu.func @moe_gate(%{{.*}}: memref<?x16xf32>, %{{.*}}: memref<16x8xf32>, %[[G:.*]]: memref<?xi32>, %[[RES:.*]]: memref<?x8xf32>,
// CHECK: memref.load %[[RES]]
// CHECK: arith.addf
// CHECK: gpu.barrier
// CHECK: memref.load %[[G]]
// CHECK: arith.cmpi slt
// CHECK: arith.select
// CHECK: gpu.return
func.func @gate_groups_residual(%x: tensor<?x16xf32>, %r: tensor<16x8xf32>, %g: tensor<?xi32>,
                                %p: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.gate %x, %r token_groups(%g : tensor<?xi32>) residual(%p : tensor<?x8xf32>)
      {routing = #moe.routing<k = 2, scoring = topk_softmax, expert_groups = [4, 4]>}
      : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Expert choice: the router matmul that moe-fuse-gating leaves outside
// moe.route is folded into the routing kernel, which writes every token's
// scores and selection scores; moe_expert_choice then ranks each column.
// CHECK-LABEL: func @expert_choice
// CHECK-NOT: linalg.matmul
// CHECK: gpu.alloc (%{{.*}}) : memref<?x8xi32>
// CHECK: gpu.alloc (%{{.*}}) : memref<?x8xf32>
// CHECK: %[[S:.*]] = gpu.alloc (%{{.*}}) : memref<?x8xf32>
// CHECK: %[[SEL:.*]] = gpu.alloc (%{{.*}}) : memref<?x8xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_gate
// CHECK: gpu.launch_func @moe_kernels::@moe_expert_choice {{.*}} args(%[[S]] : memref<?x8xf32>, %[[SEL]] : memref<?x8xf32>,
// CHECK-DAG: gpu.dealloc %[[S]]
// CHECK-DAG: gpu.dealloc %[[SEL]]
// CHECK: gpu.func @moe_expert_choice
// The rank: a loop over every token of the column.
// CHECK: scf.for
// CHECK: arith.cmpf ogt
// CHECK: arith.cmpf oeq
// The capacity from the capacity factor: ceil(2.0 / 8 * T), at most T.
// CHECK: arith.constant 2.500000e-01 : f64
// CHECK: math.ceil
// CHECK: arith.minimumf
// CHECK: arith.minsi
func.func @expert_choice(%x: tensor<?x16xf32>, %r: tensor<16x8xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %t = tensor.dim %x, %c0 : tensor<?x16xf32>
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<?x16xf32>, tensor<16x8xf32>) outs(%f : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 8, selection = expert_choice, capacity_factor = 2.0>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

// -----

// Zero, copy and constant experts (MoE++): `dest` is copied, then one block
// per row finds the row's expert among the op's and writes it; the constant
// expert reduces its two mixing logits in workgroup memory.
// CHECK-LABEL: func @zero_computation
// CHECK: %[[OUT:.*]] = gpu.alloc (%{{.*}}) : memref<?x64xf32>
// CHECK: gpu.memcpy %[[OUT]], %{{.*}} : memref<?x64xf32>, memref<?x64xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_zero_computation_experts
// CHECK-SAME: args(%{{.*}} : memref<?x64xf32>, %{{.*}} : memref<?xi32>, %{{.*}} : memref<6xi32>, %{{.*}} : memref<1x64xf32>, %{{.*}} : memref<1x64x2xf32>, %[[OUT]] : memref<?x64xf32>)
// CHECK: gpu.func @moe_zero_computation_experts
// CHECK-SAME: workgroup(%[[P:.*]] : memref<2x128xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK: scf.for
// CHECK: memref.store %{{.*}}, %[[P]]
// CHECK: gpu.barrier
// CHECK: math.exp
func.func @zero_computation(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<6xi32>,
                            %dest: tensor<?x64xf32>, %v: tensor<1x64xf32>, %m: tensor<1x64x2xf32>)
    -> tensor<?x64xf32> {
  %y = moe.zero_computation_experts %x, %tok, %off into %dest
         constants(%v, %m : tensor<1x64xf32>, tensor<1x64x2xf32>)
         {first_expert = 2, kinds = [#moe.zero_computation<zero>, #moe.zero_computation<copy>,
                                     #moe.zero_computation<constant>]}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<6xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Quantized experts (int4, blocks of 16): one warp per output column and
// expert, lanes striding over the packed codes, low nibble first, centered
// by the zero point 8 and scaled per block; a shuffle reduction; the gated
// epilogue on lane 0.
// CHECK-LABEL: func @quantized
// CHECK: %[[H:.*]] = gpu.alloc (%{{.*}}) : memref<?x128xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_quantized_up blocks in (%{{.*}}, %{{.*}}, %{{.*}})
// CHECK: gpu.launch_func @moe_kernels::@moe_quantized_down
// CHECK: gpu.dealloc %[[H]]
// CHECK: gpu.func @moe_quantized_up
// CHECK: memref.load %{{.*}} : memref<8x128x32xi8>
// CHECK: arith.extui %{{.*}} : i8 to i32
// CHECK-DAG: arith.andi %{{.*}}, %c15_i32
// CHECK-DAG: arith.shrui %{{.*}}, %c4_i32
// CHECK: arith.subi %{{.*}}, %c8_i32
// CHECK: gpu.shuffle  xor
// CHECK: math.exp
// CHECK: gpu.func @moe_quantized_down
func.func @quantized(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>, %init: tensor<?x64xf32>,
                     %qg: tensor<8x128x32xi8>, %sg: tensor<8x128x4xf32>, %qu: tensor<8x128x32xi8>,
                     %su: tensor<8x128x4xf32>, %qd: tensor<8x64x64xi8>, %sd: tensor<8x64x8xf32>)
    -> tensor<?x64xf32> {
  %y = moe.quantized_experts %x, %tok, %off into %init
         gate(%qg, %sg : tensor<8x128x32xi8>, tensor<8x128x4xf32>)
         up(%qu, %su : tensor<8x128x32xi8>, tensor<8x128x4xf32>)
         down(%qd, %sd : tensor<8x64x64xi8>, tensor<8x64x8xf32>)
         {bits = 4, expert = #moe.expert<gated, silu>}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
