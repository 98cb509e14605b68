// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s

// The GEMMs read the int4 bytes (16 bytes = 32 codes per step), center the
// codes on the zero point 8 (b ^ 0x88 in 32 bits, then the low nibble by
// << 28 >> 28 for the even reduction indices and the high one by << 24 >> 28
// for the odd ones), and split the inputs into even and odd indices to
// match; each block's sums are scaled once after the block's loop. No
// dequantized weight tensor, no linalg.matmul, no shuffle of the codes.
// CHECK-LABEL: func.func @int4
// CHECK-NOT: moe.quantized_experts
// CHECK-NOT: linalg.matmul
// CHECK: scf.forall
// CHECK: %[[TOTALS:.*]]:8 = scf.for %[[BLOCK:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[T0:[^ ]*]] = %{{[^,]*}},
// CHECK: %[[SUMS:.*]]:8 = scf.for %[[K:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[A0:[^ ]*]] = %{{[^,]*}},
// CHECK: %[[B:.*]] = vector.transfer_read %{{.*}} : tensor<4x32x32xi8>, vector<16xi8>
// CHECK: %[[W:.*]] = arith.extui %[[B]] : vector<16xi8> to vector<16xi32>
// CHECK: %[[C:.*]] = arith.xori %[[W]], %{{.*}} : vector<16xi32>
// CHECK: %[[L1:.*]] = arith.shli %[[C]]
// CHECK: %[[L2:.*]] = arith.shrsi %[[L1]]
// CHECK: %[[H1:.*]] = arith.shli %[[C]]
// CHECK: %[[H2:.*]] = arith.shrsi %[[H1]]
// CHECK: %[[LO:.*]] = arith.sitofp %[[L2]] : vector<16xi32> to vector<16xf32>
// CHECK: %[[HI:.*]] = arith.sitofp %[[H2]] : vector<16xi32> to vector<16xf32>
// CHECK: %[[X:.*]] = vector.transfer_read %{{.*}} : tensor<?x64xf32>, vector<32xf32>
// CHECK: %[[EVEN:.*]], %[[ODD:.*]] = vector.deinterleave %[[X]] : vector<32xf32> -> vector<16xf32>
// CHECK: %[[ACC:.*]] = vector.fma %[[LO]], %[[EVEN]], %[[A0]] : vector<16xf32>
// CHECK: vector.fma %[[HI]], %[[ODD]], %[[ACC]] : vector<16xf32>
// CHECK: %[[S:.*]] = tensor.extract %{{.*}}[%{{.*}}, %{{.*}}, %[[BLOCK]]] : tensor<4x32x2xf32>
// CHECK: %[[SPLAT:.*]] = vector.broadcast %[[S]] : f32 to vector<16xf32>
// CHECK: vector.fma %[[SUMS]]#0, %[[SPLAT]], %[[T0]] : vector<16xf32>
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

// int8: 16 codes are 16 bytes, centered on 128 by q ^ 0x80 read as signed;
// gate and up are two GEMMs over the same rows.
// CHECK-LABEL: func.func @int8
// CHECK-NOT: linalg.matmul
// CHECK: %[[B:.*]] = vector.transfer_read %{{.*}} : tensor<2x32x64xi8>, vector<16xi8>
// CHECK-NOT: vector.deinterleave
// CHECK: %[[FLIP:.*]] = arith.constant dense<-128> : vector<16xi8>
// CHECK: %[[C:.*]] = arith.xori %[[B]], %[[FLIP]] : vector<16xi8>
// CHECK: arith.sitofp %[[C]] : vector<16xi8> to vector<16xf32>
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
