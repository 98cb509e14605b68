// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s

// The GEMMs read the int4 bytes (16 bytes = 32 codes per step), take the
// codes as they are (zero-extended to 32 bits; the low nibble by a mask for
// the even reduction indices, the high one by a shift for the odd ones), split
// the inputs into even and odd indices to match, and sum each row's inputs;
// after each block's loop the zero point 8 comes off once (sums - 8 * input
// sum) and the block's scale multiplies. No dequantized weight tensor, no
// linalg.matmul, no shuffle of the codes.
// CHECK-LABEL: func.func @int4
// CHECK-NOT: moe.quantized_experts
// CHECK-NOT: linalg.matmul
// CHECK: scf.forall
// CHECK: %[[TOTALS:.*]]:8 = scf.for %[[BLOCK:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[T0:[^ ]*]] = %{{[^,]*}},
// CHECK: %[[SUMS:.*]]:10 = scf.for %[[K:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[A0:[^ ]*]] = %{{[^,]*}},
// CHECK: %[[B:.*]] = vector.transfer_read %{{.*}} : tensor<4x32x32xi8>, vector<16xi8>
// CHECK: %[[W:.*]] = arith.extui %[[B]] : vector<16xi8> to vector<16xi32>
// CHECK: %[[L:.*]] = arith.andi %[[W]], %{{.*}} : vector<16xi32>
// CHECK: %[[H:.*]] = arith.shrui %[[W]], %{{.*}} : vector<16xi32>
// CHECK: %[[LO:.*]] = arith.sitofp %[[L]] : vector<16xi32> to vector<16xf32>
// CHECK: %[[HI:.*]] = arith.sitofp %[[H]] : vector<16xi32> to vector<16xf32>
// CHECK-NOT: arith.xori
// CHECK: %[[X:.*]] = vector.transfer_read %{{.*}} : tensor<?x64xf32>, vector<32xf32>
// CHECK: %[[EVEN:.*]], %[[ODD:.*]] = vector.deinterleave %[[X]] : vector<32xf32> -> vector<16xf32>
// CHECK: %[[ACC:.*]] = vector.fma %[[LO]], %[[EVEN]], %[[A0]] : vector<16xf32>
// CHECK: vector.fma %[[HI]], %[[ODD]], %[[ACC]] : vector<16xf32>
// CHECK: %[[XS:.*]] = arith.addf %{{.*}}, %[[EVEN]] : vector<16xf32>
// CHECK: arith.addf %[[XS]], %[[ODD]] : vector<16xf32>
// CHECK: %[[ZP:.*]] = arith.constant dense<-8.000000e+00> : vector<16xf32>
// CHECK: %[[S:.*]] = tensor.extract %{{.*}}[%{{.*}}, %{{.*}}, %[[BLOCK]]] : tensor<4x32x2xf32>
// CHECK: %[[SPLAT:.*]] = vector.broadcast %[[S]] : f32 to vector<16xf32>
// CHECK: %[[C:.*]] = vector.fma %[[ZP]], %[[SUMS]]#8, %[[SUMS]]#0 : vector<16xf32>
// CHECK: vector.fma %[[C]], %[[SPLAT]], %[[T0]] : vector<16xf32>
// CHECK: vector.reduction <add>, %[[TOTALS]]#0
// CHECK: scf.forall
// CHECK: vector.transfer_read %{{.*}} : tensor<4x64x16xi8>, vector<16xi8>
func.func @int4(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
    %dest: tensor<?x64xf32>, %u: tensor<4x32x32xi8>, %us: tensor<4x32x2xf32>,
    %d: tensor<4x64x16xi8>, %ds: tensor<4x64x1xf32>) -> tensor<?x64xf32> {
  %r = moe.quantized_experts %x, %tok, %off into %dest
      up(%u, %us : tensor<4x32x32xi8>, tensor<4x32x2xf32>)
      down(%d, %ds : tensor<4x64x16xi8>, tensor<4x64x1xf32>)
      {bits = 4, expert = #moe.expert<ffn, relu>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %r : tensor<?x64xf32>
}

// -----

// int8: 16 codes are 16 bytes, zero-extended and converted; the zero point
// 128 comes off per block. gate and up are two GEMMs over the same rows.
// CHECK-LABEL: func.func @int8
// CHECK-NOT: linalg.matmul
// CHECK: %[[B:.*]] = vector.transfer_read %{{.*}} : tensor<2x32x64xi8>, vector<16xi8>
// CHECK-NOT: vector.deinterleave
// CHECK: %[[W:.*]] = arith.extui %[[B]] : vector<16xi8> to vector<16xi32>
// CHECK: arith.sitofp %[[W]] : vector<16xi32> to vector<16xf32>
// CHECK: arith.constant dense<-1.280000e+02> : vector<16xf32>
// CHECK: vector.transfer_read %{{.*}} : tensor<2x32x64xi8>, vector<16xi8>
// CHECK: vector.transfer_read %{{.*}} : tensor<2x64x32xi8>, vector<16xi8>
func.func @int8(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<3xi32>,
    %dest: tensor<?x64xf32>, %g: tensor<2x32x64xi8>, %gs: tensor<2x32x1xf32>,
    %u: tensor<2x32x64xi8>, %us: tensor<2x32x1xf32>,
    %d: tensor<2x64x32xi8>, %ds: tensor<2x64x2xf32>) -> tensor<?x64xf32> {
  %r = moe.quantized_experts %x, %tok, %off into %dest
      gate(%g, %gs : tensor<2x32x64xi8>, tensor<2x32x1xf32>)
      up(%u, %us : tensor<2x32x64xi8>, tensor<2x32x1xf32>)
      down(%d, %ds : tensor<2x64x32xi8>, tensor<2x64x2xf32>)
      {bits = 8, expert = #moe.expert<gated, silu>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %r : tensor<?x64xf32>
}

// -----

// Explicit zero points: the block's zero point is read beside its scale and
// comes off as -zp * (input sum) before the scale multiplies.
// CHECK-LABEL: func.func @zero_points
// CHECK: %{{.*}}:{{[0-9]+}} = scf.for
// CHECK: %[[SUMS:.*]]:{{[0-9]+}} = scf.for
// CHECK: %[[S:.*]] = tensor.extract %{{.*}} : tensor<2x32x2xf32>
// CHECK: %[[SPLAT:.*]] = vector.broadcast %[[S]] : f32 to vector<16xf32>
// CHECK: %[[Z:.*]] = tensor.extract %{{.*}} : tensor<2x32x2xf32>
// CHECK: %[[ZV:.*]] = vector.broadcast %[[Z]] : f32 to vector<16xf32>
// CHECK: %[[NZ:.*]] = arith.negf %[[ZV]] : vector<16xf32>
// CHECK: %[[C:.*]] = vector.fma %[[NZ]], %[[SUMS]]#{{[0-9]+}}, %[[SUMS]]#0 : vector<16xf32>
// CHECK: vector.fma %[[C]], %[[SPLAT]], %{{.*}} : vector<16xf32>
func.func @zero_points(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<3xi32>,
    %dest: tensor<?x64xf32>, %u: tensor<2x32x64xi8>, %us: tensor<2x32x2xf32>,
    %uz: tensor<2x32x2xf32>, %d: tensor<2x64x32xi8>, %ds: tensor<2x64x1xf32>) -> tensor<?x64xf32> {
  %r = moe.quantized_experts %x, %tok, %off into %dest
      up(%u, %us : tensor<2x32x64xi8>, tensor<2x32x2xf32>)
      down(%d, %ds : tensor<2x64x32xi8>, tensor<2x64x1xf32>)
      up_zero_points(%uz : tensor<2x32x2xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %r : tensor<?x64xf32>
}
