// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s

// The GEMMs read the int4 bytes (16 bytes = 32 codes per step), split the
// low nibbles (even reduction indices) from the high ones (odd indices),
// convert and scale them in the reduction loop, and split the inputs into
// even and odd indices to match: no dequantized weight tensor, no
// linalg.matmul, no shuffle of the codes.
// CHECK-LABEL: func.func @int4
// CHECK-NOT: moe.quantized_experts
// CHECK-NOT: linalg.matmul
// CHECK: scf.forall
// CHECK: %[[B:.*]] = vector.transfer_read %{{.*}} : tensor<4x32x32xi8>, vector<16xi8>
// CHECK: %[[LO:.*]] = arith.andi %[[B]]
// CHECK: %[[HI:.*]] = arith.shrui %[[B]]
// CHECK: %[[FLO:.*]] = arith.uitofp %[[LO]] : vector<16xi8> to vector<16xf32>
// CHECK: %[[WLO:.*]] = vector.fma %[[FLO]], %{{.*}}, %{{.*}} : vector<16xf32>
// CHECK: %[[FHI:.*]] = arith.uitofp %[[HI]] : vector<16xi8> to vector<16xf32>
// CHECK: %[[WHI:.*]] = vector.fma %[[FHI]], %{{.*}}, %{{.*}} : vector<16xf32>
// CHECK: %[[X:.*]] = vector.transfer_read %{{.*}} : tensor<?x64xf32>, vector<32xf32>
// CHECK: %[[EVEN:.*]], %[[ODD:.*]] = vector.deinterleave %[[X]] : vector<32xf32> -> vector<16xf32>
// CHECK: %[[ACC:.*]] = vector.fma %[[WLO]], %[[EVEN]], %{{.*}} : vector<16xf32>
// CHECK: vector.fma %[[WHI]], %[[ODD]], %[[ACC]] : vector<16xf32>
// CHECK: vector.reduction <add>
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

// int8: 16 codes are 16 bytes; gate and up are two GEMMs over the same rows.
// CHECK-LABEL: func.func @int8
// CHECK-NOT: linalg.matmul
// CHECK: vector.transfer_read %{{.*}} : tensor<2x32x64xi8>, vector<16xi8>
// CHECK-NOT: vector.deinterleave
// CHECK: arith.uitofp %{{.*}} : vector<16xi8> to vector<16xf32>
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
