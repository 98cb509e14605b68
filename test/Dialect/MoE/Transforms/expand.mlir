// RUN: moe-opt %s --moe-expand --split-input-file | FileCheck %s

// CHECK-LABEL: func @dynamic_tokens
// CHECK-SAME: (%[[X:.*]]: tensor<?x64xf32>, %[[R:.*]]: tensor<64x8xf32>, %[[G:.*]]: tensor<8x64x128xf32>, %[[U:.*]]: tensor<8x64x128xf32>, %[[D:.*]]: tensor<8x128x64xf32>)
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
// CHECK: %[[T:.*]] = tensor.dim %[[X]], %[[C0]]
// CHECK: %[[E:.*]] = tensor.empty(%[[T]]) : tensor<?x8xf32>
// CHECK: %[[Z:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[E]] : tensor<?x8xf32>)
// CHECK: %[[L:.*]] = linalg.matmul ins(%[[X]], %[[R]] : tensor<?x64xf32>, tensor<64x8xf32>) outs(%[[Z]] : tensor<?x8xf32>)
// CHECK: %[[IDS:.*]], %[[W:.*]] = moe.route %[[L]] {routing = #moe.routing<k = 2, renormalize = true>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: %[[TOK:.*]], %[[OFF:.*]], %[[POS:.*]] = moe.dispatch %[[IDS]] {{{.*}}num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
// CHECK: %[[ROWS:.*]] = arith.muli %[[T]], %[[C2]]
// CHECK: %[[DEST:.*]] = tensor.empty(%[[ROWS]]) : tensor<?x64xf32>
// CHECK: %[[Y:.*]] = moe.experts %[[X]], %[[TOK]], %[[OFF]] into %[[DEST]] gate(%[[G]] : tensor<8x64x128xf32>) up(%[[U]] : tensor<8x64x128xf32>) down(%[[D]] : tensor<8x128x64xf32>) {expert = #moe.expert<gated, silu>{{.*}}}
// CHECK: %[[OUT:.*]] = moe.combine %[[Y]], %[[POS]], %[[W]] : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
// CHECK: return %[[OUT]]
func.func @dynamic_tokens(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
    %wg: tensor<8x64x128xf32>, %wu: tensor<8x64x128xf32>,
    %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
         up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Static tokens, selection bias, capacity, biases and shared experts.
// CHECK-LABEL: func @static_tokens_shared
// CHECK-NOT: tensor.dim
// CHECK: %[[IDS:.*]], %[[W:.*]] = moe.route %{{.*}} selection_bias(%{{.*}} : tensor<4xf32>) {routing = #moe.routing<k = 1, scoring = sigmoid, capacity_factor = 1.500000e+00>} : tensor<6x4xf32> -> tensor<6x1xi32>, tensor<6x1xf32>
// CHECK: %[[TOK:.*]], %[[OFF:.*]], %[[POS:.*]] = moe.dispatch %[[IDS]] {capacity_factor = 1.500000e+00 : f64, num_experts = 4 : i64} : tensor<6x1xi32> -> tensor<6xi32>, tensor<5xi32>, tensor<6x1xi32>
// CHECK: %[[DEST:.*]] = tensor.empty() : tensor<6x16xf32>
// CHECK: %[[Y:.*]] = moe.experts %{{.*}}, %[[TOK]], %[[OFF]] into %[[DEST]] up(%{{.*}} : tensor<4x16x32xf32>) down(%{{.*}} : tensor<4x32x16xf32>) up_bias(%{{.*}} : tensor<4x32xf32>) down_bias(%{{.*}} : tensor<4x16xf32>)
// CHECK: %[[S:.*]] = moe.shared_experts %{{.*}} up(%{{.*}} : tensor<16x8xf32>) down(%{{.*}} : tensor<8x16xf32>) scale(%{{.*}} : tensor<16xf32>) {expert = #moe.expert<ffn, relu>}
// CHECK: moe.combine %[[Y]], %[[POS]], %[[W]] addend(%[[S]] : tensor<6x16xf32>)
func.func @static_tokens_shared(%x: tensor<6x16xf32>, %router: tensor<16x4xf32>,
    %b: tensor<4xf32>, %wu: tensor<4x16x32xf32>, %wd: tensor<4x32x16xf32>,
    %bu: tensor<4x32xf32>, %bd: tensor<4x16xf32>, %su: tensor<16x8xf32>,
    %sd: tensor<8x16xf32>, %ss: tensor<16xf32>) -> tensor<6x16xf32> {
  %y = moe.layer %x, %router selection_bias(%b : tensor<4xf32>)
         up(%wu : tensor<4x16x32xf32>) down(%wd : tensor<4x32x16xf32>)
         up_bias(%bu : tensor<4x32xf32>) down_bias(%bd : tensor<4x16xf32>)
         shared_up(%su : tensor<16x8xf32>) shared_down(%sd : tensor<8x16xf32>)
         shared_scale(%ss : tensor<16xf32>)
         {expert = #moe.expert<ffn, relu>,
          routing = #moe.routing<k = 1, scoring = sigmoid, capacity_factor = 1.5>}
         : (tensor<6x16xf32>, tensor<16x4xf32>) -> tensor<6x16xf32>
  return %y : tensor<6x16xf32>
}

// -----

// A fixed capacity goes to the dispatch as it is.
// CHECK-LABEL: func @fixed_capacity
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 1, capacity = 3>}
// CHECK: moe.dispatch %{{.*}} {capacity = 3 : i64, num_experts = 4 : i64}
func.func @fixed_capacity(%x: tensor<?x16xf32>, %router: tensor<16x4xf32>,
    %wu: tensor<4x16x32xf32>, %wd: tensor<4x32x16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x, %router up(%wu : tensor<4x16x32xf32>) down(%wd : tensor<4x32x16xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1, capacity = 3>}
         : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Expert choice keeps C tokens per expert in moe.route: the dispatch drops
// nothing, and every token has one slot per expert.
// CHECK-LABEL: func @expert_choice
// CHECK: %[[IDS:.*]], %[[W:.*]] = moe.route %{{.*}} {routing = #moe.routing<k = 4, capacity_factor = 1.500000e+00, selection = expert_choice>} : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
// CHECK: %{{.*}}, %{{.*}}, %[[POS:.*]] = moe.dispatch %[[IDS]] {num_experts = 4 : i64} : tensor<?x4xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x4xi32>
// CHECK: moe.combine %{{.*}}, %[[POS]], %[[W]] : (tensor<?x32xf32>, tensor<?x4xi32>, tensor<?x4xf32>) -> tensor<?x32xf32>
func.func @expert_choice(%x: tensor<?x32xf32>, %router: tensor<32x4xf32>,
    %wu: tensor<4x32x16xf32>, %wd: tensor<4x16x32xf32>) -> tensor<?x32xf32> {
  %y = moe.layer %x, %router up(%wu : tensor<4x32x16xf32>) down(%wd : tensor<4x16x32xf32>)
         {expert = #moe.expert<ffn, relu>,
          routing = #moe.routing<k = 4, selection = expert_choice, capacity_factor = 1.5>}
         : (tensor<?x32xf32>, tensor<32x4xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// A router bias: the logits accumulate into it, broadcast over the tokens.
// CHECK-LABEL: func @router_bias
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>, %[[R:.*]]: tensor<16x4xf32>, %[[B:.*]]: tensor<4xf32>
// CHECK: %[[E:.*]] = tensor.empty(%{{.*}}) : tensor<?x4xf32>
// CHECK-NEXT: %[[BB:.*]] = linalg.broadcast ins(%[[B]] : tensor<4xf32>) outs(%[[E]] : tensor<?x4xf32>) dimensions = [0]
// CHECK: %[[L:.*]] = linalg.matmul ins(%[[X]], %[[R]] : tensor<?x16xf32>, tensor<16x4xf32>) outs(%[[BB]] : tensor<?x4xf32>)
// CHECK: moe.route %[[L]] {routing = #moe.routing<k = 2, scoring = topk_softmax>}
func.func @router_bias(%x: tensor<?x16xf32>, %router: tensor<16x4xf32>,
    %b: tensor<4xf32>, %wg: tensor<4x16x8xf32>, %wu: tensor<4x16x8xf32>,
    %wd: tensor<4x8x16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x, %router router_bias(%b : tensor<4xf32>)
         gate(%wg : tensor<4x16x8xf32>) up(%wu : tensor<4x16x8xf32>)
         down(%wd : tensor<4x8x16xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, scoring = topk_softmax>}
         : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
