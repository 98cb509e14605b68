// RUN: moe-opt %s --moe-fuse-gating --split-input-file | FileCheck %s

// CHECK-LABEL: func @fused
// CHECK-SAME: (%[[X:.*]]: tensor<?x64xf32>, %[[R:.*]]: tensor<64x8xf32>, %[[B:.*]]: tensor<8xf32>)
// CHECK-NOT: linalg.matmul
// CHECK: %[[I:.*]], %[[W:.*]] = moe.gate %[[X]], %[[R]] selection_bias(%[[B]] : tensor<8xf32>) {routing = #moe.routing<k = 2, renormalize = true>} : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: return %[[I]], %[[W]]
func.func @fused(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>, %b: tensor<8xf32>)
    -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<?x64xf32>, tensor<64x8xf32>)
                     outs(%z : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l selection_bias(%b : tensor<8xf32>)
      {routing = #moe.routing<k = 2, renormalize = true>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// A router bias: the matmul accumulates into the bias broadcast over the
// tokens (moe-expand's form of moe.layer's router_bias).
// CHECK-LABEL: func @router_bias
// CHECK-SAME: (%[[X:.*]]: tensor<?x64xf32>, %[[R:.*]]: tensor<64x8xf32>, %[[B:.*]]: tensor<8xf32>)
// CHECK-NOT: linalg.matmul
// CHECK-NOT: linalg.broadcast
// CHECK: %[[I:.*]], %[[W:.*]] = moe.gate %[[X]], %[[R]] router_bias(%[[B]] : tensor<8xf32>) {routing = #moe.routing<k = 2, scoring = topk_softmax>}
func.func @router_bias(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>, %b: tensor<8xf32>)
    -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %bb = linalg.broadcast ins(%b : tensor<8xf32>) outs(%e : tensor<?x8xf32>) dimensions = [0]
  %l = linalg.matmul ins(%x, %r : tensor<?x64xf32>, tensor<64x8xf32>)
                     outs(%bb : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 2, scoring = topk_softmax>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The logits are used elsewhere: they must be materialized, no fusion.
// CHECK-LABEL: func @logits_escape
// CHECK: linalg.matmul
// CHECK: moe.route
// CHECK-NOT: moe.gate
func.func @logits_escape(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>)
    -> (tensor<4x2xi32>, tensor<4x8xf32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<4x8xf32>) -> tensor<4x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<4x64xf32>, tensor<64x8xf32>)
                     outs(%z : tensor<4x8xf32>) -> tensor<4x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return %i, %l : tensor<4x2xi32>, tensor<4x8xf32>
}

// -----

// Accumulating into a non-zero tensor is not a plain router matmul.
// CHECK-LABEL: func @accumulate
// CHECK: linalg.matmul
// CHECK-NOT: moe.gate
func.func @accumulate(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %acc: tensor<4x8xf32>)
    -> tensor<4x2xi32> {
  %l = linalg.matmul ins(%x, %r : tensor<4x64xf32>, tensor<64x8xf32>)
                     outs(%acc : tensor<4x8xf32>) -> tensor<4x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return %i : tensor<4x2xi32>
}

// -----

// A transposed router is not fused.
// CHECK-LABEL: func @transposed
// CHECK: linalg.matmul
// CHECK-NOT: moe.gate
#map0 = affine_map<(m, n, k) -> (m, k)>
#map1 = affine_map<(m, n, k) -> (n, k)>
#map2 = affine_map<(m, n, k) -> (m, n)>
func.func @transposed(%x: tensor<4x64xf32>, %r: tensor<8x64xf32>) -> tensor<4x2xi32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<4x8xf32>) -> tensor<4x8xf32>
  %l = linalg.matmul indexing_maps = [#map0, #map1, #map2]
                     ins(%x, %r : tensor<4x64xf32>, tensor<8x64xf32>)
                     outs(%z : tensor<4x8xf32>) -> tensor<4x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return %i : tensor<4x2xi32>
}

// -----

// Expert choice needs every token's logits: no fusion.
// CHECK-LABEL: func @expert_choice
// CHECK: linalg.matmul
// CHECK: moe.route
// CHECK-NOT: moe.gate
func.func @expert_choice(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>)
    -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<?x64xf32>, tensor<64x8xf32>)
                     outs(%z : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l
      {routing = #moe.routing<k = 8, selection = expert_choice, capacity_factor = 1.0>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i, %w : tensor<?x8xi32>, tensor<?x8xf32>
}

// -----

// Token groups and a gating residual move to the fused op.
// CHECK-LABEL: func @groups_residual
// CHECK-SAME: (%[[X:.*]]: tensor<?x64xf32>, %[[R:.*]]: tensor<64x8xf32>, %[[G:.*]]: tensor<?xi32>, %[[P:.*]]: tensor<?x8xf32>)
// CHECK-NOT: linalg.matmul
// CHECK: moe.gate %[[X]], %[[R]] token_groups(%[[G]] : tensor<?xi32>) residual(%[[P]] : tensor<?x8xf32>) {routing = #moe.routing<k = 2, expert_groups = [4, 4]>}
func.func @groups_residual(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>, %g: tensor<?xi32>,
                           %p: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<?x64xf32>, tensor<64x8xf32>)
                     outs(%z : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l token_groups(%g : tensor<?xi32>) residual(%p : tensor<?x8xf32>)
      {routing = #moe.routing<k = 2, expert_groups = [4, 4]>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}
