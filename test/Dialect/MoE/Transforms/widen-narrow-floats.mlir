// RUN: moe-opt %s --moe-widen-narrow-floats --split-input-file | FileCheck %s

// An f16 layer's ops compute in f32: activations, router and biases are
// extended, results rounded back; the expert weight matrices stay f16.
// CHECK-LABEL: func @f16_ops
// CHECK-SAME: (%[[X:.*]]: tensor<?x64xf16>, %[[R:.*]]: tensor<64x8xf16>, %[[WU:.*]]: tensor<8x64x128xf16>, %[[WD:.*]]: tensor<8x128x64xf16>, %[[BD:.*]]: tensor<8x64xf16>)
// CHECK: %[[X32:.*]] = arith.extf %[[X]] : tensor<?x64xf16> to tensor<?x64xf32>
// CHECK: %[[R32:.*]] = arith.extf %[[R]] : tensor<64x8xf16> to tensor<64x8xf32>
// CHECK: %[[IDS:.*]], %[[W32:.*]] = moe.gate %[[X32]], %[[R32]] {{.*}} -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: %[[W:.*]] = arith.truncf %[[W32]] : tensor<?x2xf32> to tensor<?x2xf16>
// CHECK: moe.dispatch
// CHECK: %[[BD32:.*]] = arith.extf %[[BD]] : tensor<8x64xf16> to tensor<8x64xf32>
// CHECK: %[[Y32:.*]] = moe.experts {{.*}} up(%[[WU]] : tensor<8x64x128xf16>) down(%[[WD]] : tensor<8x128x64xf16>) down_bias(%[[BD32]] : tensor<8x64xf32>)
// CHECK-SAME: -> tensor<?x64xf32>
// CHECK: %[[Y:.*]] = arith.truncf %[[Y32]] : tensor<?x64xf32> to tensor<?x64xf16>
// CHECK: %[[Y2:.*]] = arith.extf %[[Y]] : tensor<?x64xf16> to tensor<?x64xf32>
// CHECK: %[[W2:.*]] = arith.extf %[[W]] : tensor<?x2xf16> to tensor<?x2xf32>
// CHECK: %[[OUT32:.*]] = moe.combine %[[Y2]], %{{.*}}, %[[W2]] : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
// CHECK: %[[OUT:.*]] = arith.truncf %[[OUT32]] : tensor<?x64xf32> to tensor<?x64xf16>
// CHECK: return %[[OUT]]
func.func @f16_ops(%x: tensor<?x64xf16>, %router: tensor<64x8xf16>,
    %wu: tensor<8x64x128xf16>, %wd: tensor<8x128x64xf16>,
    %bd: tensor<8x64xf16>) -> tensor<?x64xf16> {
  %ids, %w = moe.gate %x, %router {routing = #moe.routing<k = 2>}
      : (tensor<?x64xf16>, tensor<64x8xf16>) -> tensor<?x2xi32>, tensor<?x2xf16>
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 8}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  %c0 = arith.constant 0 : index
  %n = tensor.dim %tok, %c0 : tensor<?xi32>
  %init = tensor.empty(%n) : tensor<?x64xf16>
  %y = moe.experts %x, %tok, %off into %init up(%wu : tensor<8x64x128xf16>)
         down(%wd : tensor<8x128x64xf16>) down_bias(%bd : tensor<8x64xf16>)
         {expert = #moe.expert<ffn, relu>}
         : (tensor<?x64xf16>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf16>) -> tensor<?x64xf16>
  %out = moe.combine %y, %pos, %w
      : (tensor<?x64xf16>, tensor<?x2xi32>, tensor<?x2xf16>) -> tensor<?x64xf16>
  return %out : tensor<?x64xf16>
}

// -----

// f32 activations with bf16 weights: nothing to widen.
// CHECK-LABEL: func @bf16_weights
// CHECK-NOT: arith.extf
// CHECK: moe.experts {{.*}} up(%{{.*}} : tensor<4x16x32xbf16>) down(%{{.*}} : tensor<4x32x16xbf16>)
// CHECK-NOT: arith.truncf
func.func @bf16_weights(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
    %init: tensor<?x16xf32>, %wu: tensor<4x16x32xbf16>, %wd: tensor<4x32x16xbf16>) -> tensor<?x16xf32> {
  %y = moe.experts %x, %tok, %off into %init up(%wu : tensor<4x16x32xbf16>)
         down(%wd : tensor<4x32x16xbf16>) {expert = #moe.expert<ffn, relu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// f64 layers are left alone too.
// CHECK-LABEL: func @f64
// CHECK-NOT: arith.extf
func.func @f64(%rows: tensor<?x16xf64>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf64>) -> tensor<?x16xf64> {
  %y = moe.combine %rows, %pos, %w
      : (tensor<?x16xf64>, tensor<?x2xi32>, tensor<?x2xf64>) -> tensor<?x16xf64>
  return %y : tensor<?x16xf64>
}
