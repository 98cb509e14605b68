// RUN: moe-opt %s --canonicalize --split-input-file | FileCheck %s

// Softmax over all E experts already sums to one: renormalize is dropped.
// CHECK-LABEL: func @renormalize_all_experts
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 4>}
func.func @renormalize_all_experts(%l: tensor<?x4xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 4, renormalize = true>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %i, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// Softmax over the top-k logits sums to one: renormalize is dropped.
// CHECK-LABEL: func @renormalize_topk_softmax
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 2, scoring = topk_softmax>}
func.func @renormalize_topk_softmax(%l: tensor<?x8xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 2, scoring = topk_softmax, renormalize = true>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// Renormalization of a proper subset is kept, and so is it for sigmoid.
// CHECK-LABEL: func @renormalize_kept
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 2, renormalize = true>}
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 8, scoring = sigmoid, renormalize = true>}
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 8, renormalize = true, threshold = 5.000000e-01>}
func.func @renormalize_kept(%l: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 2, renormalize = true>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i2, %w2 = moe.route %l {routing = #moe.routing<k = 8, scoring = sigmoid, renormalize = true>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %i3, %w3 = moe.route %l {routing = #moe.routing<k = 8, renormalize = true, threshold = 0.5>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %w, %w2, %w3 : tensor<?x2xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}

// -----

// A group limit that keeps every group limits nothing.
// CHECK-LABEL: func @all_groups_kept
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 2, scoring = sigmoid>}
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 2, scoring = sigmoid, n_group = 4, topk_group = 2>}
func.func @all_groups_kept(%l: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x2xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 2, scoring = sigmoid, n_group = 4, topk_group = 4>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i2, %w2 = moe.route %l {routing = #moe.routing<k = 2, scoring = sigmoid, n_group = 4, topk_group = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %w, %w2 : tensor<?x2xf32>, tensor<?x2xf32>
}

// -----

// A splat selection bias shifts every score equally and cannot change the
// choice; a non-splat one can.
// CHECK-LABEL: func @splat_bias
// CHECK: moe.route %{{.*}} {routing
// CHECK: moe.route %{{.*}} selection_bias(%{{.*}} : tensor<4xf32>)
func.func @splat_bias(%l: tensor<?x4xf32>) -> (tensor<?x2xi32>, tensor<?x2xi32>) {
  %b = arith.constant dense<0.25> : tensor<4xf32>
  %i, %w = moe.route %l selection_bias(%b : tensor<4xf32>) {routing = #moe.routing<k = 2, scoring = sigmoid>}
      : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %b2 = arith.constant dense<[0.0, 1.0, 0.0, 0.0]> : tensor<4xf32>
  %i2, %w2 = moe.route %l selection_bias(%b2 : tensor<4xf32>) {routing = #moe.routing<k = 2, scoring = sigmoid>}
      : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %i, %i2 : tensor<?x2xi32>, tensor<?x2xi32>
}

// -----

// The same simplifications apply to the whole-layer op.
// CHECK-LABEL: func @layer
// CHECK: moe.layer %{{.*}}, %{{.*}} up(
// CHECK-SAME: routing = #moe.routing<k = 4>
func.func @layer(%x: tensor<?x16xf32>, %r: tensor<16x4xf32>, %u: tensor<4x16x8xf32>,
    %d: tensor<4x8x16xf32>) -> tensor<?x16xf32> {
  %b = arith.constant dense<0.0> : tensor<4xf32>
  %y = moe.layer %x, %r selection_bias(%b : tensor<4xf32>) up(%u : tensor<4x16x8xf32>)
      down(%d : tensor<4x8x16xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 4, renormalize = true>}
      : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Every token chooses every expert: the counting sort has a closed form.
// CHECK-LABEL: func @dispatch_all_experts
// CHECK-SAME: (%[[L:.*]]: tensor<?x4xf32>)
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
// CHECK: %[[IDS:.*]], %{{.*}} = moe.route %[[L]]
// CHECK-NOT: moe.dispatch
// CHECK: %[[T:.*]] = tensor.dim %[[IDS]], %[[C0]]
// CHECK: %[[R:.*]] = arith.muli %[[T]], %[[C4]]
// CHECK: %[[TOK:.*]] = tensor.generate %[[R]] {
// CHECK: ^bb0(%[[ROW:.*]]: index):
// CHECK:   %[[REM:.*]] = arith.remui %[[ROW]], %[[T]]
// CHECK:   %[[CAST:.*]] = arith.index_cast %[[REM]] : index to i32
// CHECK:   tensor.yield %[[CAST]]
// CHECK: } : tensor<?xi32>
// CHECK: %[[OFF:.*]] = tensor.generate {
// CHECK: ^bb0(%[[E:.*]]: index):
// CHECK:   arith.muli %[[E]], %[[T]]
// CHECK: } : tensor<5xi32>
// CHECK: %[[POS:.*]] = tensor.generate %[[T]] {
// CHECK: ^bb0(%[[TI:.*]]: index, %[[KI:.*]]: index):
// CHECK:   %[[ID:.*]] = tensor.extract %[[IDS]][%[[TI]], %[[KI]]]
// CHECK:   %[[IDX:.*]] = arith.index_cast %[[ID]] : i32 to index
// CHECK:   %[[MUL:.*]] = arith.muli %[[IDX]], %[[T]]
// CHECK:   %[[ADD:.*]] = arith.addi %[[MUL]], %[[TI]]
// CHECK: } : tensor<?x4xi32>
// CHECK: return %[[TOK]], %[[OFF]], %[[POS]]
func.func @dispatch_all_experts(%l: tensor<?x4xf32>) -> (tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 4>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %t, %o, %p = moe.dispatch %i {num_experts = 4}
      : tensor<?x4xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>
  return %t, %o, %p : tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>
}

// -----

// Not when some tokens may choose fewer (top-p), nor with capacity.
// CHECK-LABEL: func @dispatch_kept
// CHECK: moe.dispatch
// CHECK: moe.dispatch
func.func @dispatch_kept(%l: tensor<?x4xf32>) -> (tensor<?xi32>, tensor<?xi32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 4, threshold = 0.5>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %t, %o, %p = moe.dispatch %i {num_experts = 4}
      : tensor<?x4xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>
  %i2, %w2 = moe.route %l {routing = #moe.routing<k = 4>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %t2, %o2, %p2 = moe.dispatch %i2 {num_experts = 4, capacity_factor = 0.5}
      : tensor<?x4xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>
  return %t, %t2 : tensor<?xi32>, tensor<?xi32>
}

// -----

// Nor with expert choice: a token's slot e holds -1 unless expert e chose it.
// CHECK-LABEL: func @dispatch_expert_choice
// CHECK: moe.dispatch
func.func @dispatch_expert_choice(%l: tensor<?x4xf32>) -> tensor<?xi32> {
  %i, %w = moe.route %l {routing = #moe.routing<k = 4, selection = expert_choice, capacity = 2>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  %t, %o, %p = moe.dispatch %i {num_experts = 4}
      : tensor<?x4xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>
  return %t : tensor<?xi32>
}
