// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// CHECK-LABEL: func @mixtral_layer
// CHECK: moe.layer %{{.*}}, %{{.*}} gate(%{{.*}} : tensor<8x64x128xf32>) up(%{{.*}} : tensor<8x64x128xf32>) down(%{{.*}} : tensor<8x128x64xf32>)
// CHECK-SAME: expert = #moe.expert<gated, silu>
// CHECK-SAME: routing = #moe.routing<k = 2, renormalize = true>
// CHECK-SAME: : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
func.func @mixtral_layer(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
    %wg: tensor<8x64x128xf32>, %wu: tensor<8x64x128xf32>,
    %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
         up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// bf16 weight matrices of an f32 layer.
// CHECK-LABEL: func @bf16_weights
// CHECK: moe.layer %{{.*}}, %{{.*}} gate(%{{.*}} : tensor<8x64x128xbf16>) up(%{{.*}} : tensor<8x64x128xbf16>) down(%{{.*}} : tensor<8x128x64xbf16>)
// CHECK-SAME: : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
func.func @bf16_weights(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
    %wg: tensor<8x64x128xbf16>, %wu: tensor<8x64x128xbf16>,
    %wd: tensor<8x128x64xbf16>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xbf16>)
         up(%wu : tensor<8x64x128xbf16>) down(%wd : tensor<8x128x64xbf16>)
         {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// CHECK-LABEL: func @deepseek_v3_layer
// CHECK: moe.layer %{{.*}}, %{{.*}} selection_bias(%{{.*}} : tensor<16xf32>)
// CHECK-SAME: shared_gate(%{{.*}} : tensor<32x64xf32>) shared_up(%{{.*}} : tensor<32x64xf32>) shared_down(%{{.*}} : tensor<64x32xf32>)
// CHECK-SAME: routing = #moe.routing<k = 4, scoring = sigmoid, renormalize = true, scale = 2.500000e+00, n_group = 4, topk_group = 2>
func.func @deepseek_v3_layer(%x: tensor<5x32xf32>, %router: tensor<32x16xf32>,
    %bias: tensor<16xf32>, %wg: tensor<16x32x24xf32>, %wu: tensor<16x32x24xf32>,
    %wd: tensor<16x24x32xf32>, %sg: tensor<32x64xf32>, %su: tensor<32x64xf32>,
    %sd: tensor<64x32xf32>) -> tensor<5x32xf32> {
  %y = moe.layer %x, %router selection_bias(%bias : tensor<16xf32>)
         gate(%wg : tensor<16x32x24xf32>) up(%wu : tensor<16x32x24xf32>)
         down(%wd : tensor<16x24x32xf32>)
         shared_gate(%sg : tensor<32x64xf32>) shared_up(%su : tensor<32x64xf32>)
         shared_down(%sd : tensor<64x32xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 4, scoring = sigmoid, renormalize = true,
                                 scale = 2.5, n_group = 4, topk_group = 2>}
         : (tensor<5x32xf32>, tensor<32x16xf32>) -> tensor<5x32xf32>
  return %y : tensor<5x32xf32>
}

// CHECK-LABEL: func @switch_layer_with_biases
// CHECK: moe.layer %{{.*}}, %{{.*}} up(%{{.*}} : tensor<4x16x64xf32>) down(%{{.*}} : tensor<4x64x16xf32>) up_bias(%{{.*}} : tensor<4x64xf32>) down_bias(%{{.*}} : tensor<4x16xf32>)
// CHECK-SAME: expert = #moe.expert<ffn, relu>
// CHECK-SAME: routing = #moe.routing<k = 1, capacity_factor = 1.250000e+00>
func.func @switch_layer_with_biases(%x: tensor<?x16xf32>, %router: tensor<16x4xf32>,
    %wu: tensor<4x16x64xf32>, %wd: tensor<4x64x16xf32>, %bu: tensor<4x64xf32>,
    %bd: tensor<4x16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x, %router up(%wu : tensor<4x16x64xf32>)
         down(%wd : tensor<4x64x16xf32>) up_bias(%bu : tensor<4x64xf32>)
         down_bias(%bd : tensor<4x16xf32>)
         {expert = #moe.expert<ffn, relu>,
          routing = #moe.routing<k = 1, capacity_factor = 1.25>}
         : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// CHECK-LABEL: func @qwen_shared_scale
// CHECK: shared_scale(%{{.*}} : tensor<16xf32>)
// CHECK-SAME: expert = #moe.expert<gated, gelu_tanh>
// CHECK-SAME: routing = #moe.routing<k = 2, temperature = 5.000000e-01, threshold = 8.000000e-01>
func.func @qwen_shared_scale(%x: tensor<?x16xf32>, %router: tensor<16x4xf32>,
    %wg: tensor<4x16x8xf32>, %wu: tensor<4x16x8xf32>, %wd: tensor<4x8x16xf32>,
    %sg: tensor<16x8xf32>, %su: tensor<16x8xf32>, %sd: tensor<8x16xf32>,
    %ss: tensor<16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<4x16x8xf32>)
         up(%wu : tensor<4x16x8xf32>) down(%wd : tensor<4x8x16xf32>)
         shared_gate(%sg : tensor<16x8xf32>) shared_up(%su : tensor<16x8xf32>)
         shared_down(%sd : tensor<8x16xf32>) shared_scale(%ss : tensor<16xf32>)
         {expert = #moe.expert<gated, gelu_tanh>,
          routing = #moe.routing<k = 2, temperature = 0.5, threshold = 0.8>}
         : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// A fixed capacity (token choice): in the routing and the dispatch.
// CHECK-LABEL: func @fixed_capacity
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 1, capacity = 2>} : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
// CHECK: moe.dispatch %{{.*}} {capacity = 2 : i64, num_experts = 4 : i64} : tensor<?x1xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x1xi32>
func.func @fixed_capacity(%l: tensor<?x4xf32>) -> (tensor<?xi32>, tensor<?x1xf32>) {
  %i, %w = moe.route %l {routing = #moe.routing<k = 1, capacity = 2>}
      : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %t, %o, %p = moe.dispatch %i {num_experts = 4, capacity = 2}
      : tensor<?x1xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x1xi32>
  return %t, %w : tensor<?xi32>, tensor<?x1xf32>
}

// CHECK-LABEL: func @explicit_plan
// CHECK: %[[IDS:.*]], %[[W:.*]] = moe.route %{{.*}} selection_bias(%{{.*}} : tensor<8xf32>) {routing = #moe.routing<k = 2, scoring = topk_softmax>} : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: %[[TOK:.*]], %[[OFF:.*]], %[[POS:.*]] = moe.dispatch %[[IDS]] {block_size = 4 : i64, capacity_factor = 1.500000e+00 : f64, num_experts = 8 : i64} : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
// CHECK: %[[R0:.*]] = moe.experts %{{.*}}, %[[TOK]], %[[OFF]] into %{{.*}} gate(%{{.*}} : tensor<6x64x128xf32>) up(%{{.*}} : tensor<6x64x128xf32>) down(%{{.*}} : tensor<6x128x64xf32>) gate_bias(%{{.*}} : tensor<6x128xf32>) up_bias(%{{.*}} : tensor<6x128xf32>) down_bias(%{{.*}} : tensor<6x64xf32>) {expert = #moe.expert<gated, silu, limit = 7.000000e+00, alpha = 1.702000e+00, beta = 1.000000e+00>}
// CHECK: %[[R1:.*]] = moe.zero_computation_experts %{{.*}}, %[[TOK]], %[[OFF]] into %[[R0]] constants(%{{.*}}, %{{.*}} : tensor<1x64xf32>, tensor<1x64x2xf32>) {first_expert = 6 : i64, kinds = [#moe.zero_computation<copy>, #moe.zero_computation<constant>]}
// CHECK: %[[S:.*]] = moe.shared_experts %{{.*}} up(%{{.*}} : tensor<64x32xf32>) down(%{{.*}} : tensor<32x64xf32>) {expert = #moe.expert<ffn, gelu>} : tensor<?x64xf32> -> tensor<?x64xf32>
// CHECK: moe.combine %[[R1]], %[[POS]], %[[W]] addend(%[[S]] : tensor<?x64xf32>) : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
func.func @explicit_plan(%x: tensor<?x64xf32>, %logits: tensor<?x8xf32>,
    %bias: tensor<8xf32>, %dest: tensor<?x64xf32>,
    %wg: tensor<6x64x128xf32>, %wu: tensor<6x64x128xf32>, %wd: tensor<6x128x64xf32>,
    %bg: tensor<6x128xf32>, %bu: tensor<6x128xf32>, %bd: tensor<6x64xf32>,
    %v: tensor<1x64xf32>, %wc: tensor<1x64x2xf32>,
    %su: tensor<64x32xf32>, %sd: tensor<32x64xf32>) -> tensor<?x64xf32> {
  %ids, %w = moe.route %logits selection_bias(%bias : tensor<8xf32>)
      {routing = #moe.routing<k = 2, scoring = topk_softmax>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %tok, %off, %pos = moe.dispatch %ids
      {num_experts = 8, block_size = 4, capacity_factor = 1.5}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  %r0 = moe.experts %x, %tok, %off into %dest
      gate(%wg : tensor<6x64x128xf32>) up(%wu : tensor<6x64x128xf32>)
      down(%wd : tensor<6x128x64xf32>) gate_bias(%bg : tensor<6x128xf32>)
      up_bias(%bu : tensor<6x128xf32>) down_bias(%bd : tensor<6x64xf32>)
      {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %r1 = moe.zero_computation_experts %x, %tok, %off into %r0
      constants(%v, %wc : tensor<1x64xf32>, tensor<1x64x2xf32>)
      {first_expert = 6, kinds = [#moe.zero_computation<copy>, #moe.zero_computation<constant>]}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %s = moe.shared_experts %x up(%su : tensor<64x32xf32>) down(%sd : tensor<32x64xf32>)
      {expert = #moe.expert<ffn, gelu>} : tensor<?x64xf32> -> tensor<?x64xf32>
  %out = moe.combine %r1, %pos, %w addend(%s : tensor<?x64xf32>)
      : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// CHECK-LABEL: func @gate_and_generic_experts
// CHECK: moe.gate %{{.*}}, %{{.*}} {routing = #moe.routing<k = 1>} : (tensor<3x16xf32>, tensor<16x4xf32>) -> tensor<3x1xi64>, tensor<3x1xf32>
// CHECK: moe.dispatch %{{.*}} {num_experts = 4 : i64} : tensor<3x1xi64> -> tensor<3xi64>, tensor<5xi64>, tensor<3x1xi64>
// CHECK: moe.generic_experts
// CHECK-SAME: first_expert = 0 : i64, num_experts = 4 : i64
// CHECK: ^bb0(%[[ROWS:.*]]: tensor<?x16xf32>, %{{.*}}: index):
// CHECK: moe.yield %{{.*}} : tensor<?x16xf32>
func.func @gate_and_generic_experts(%x: tensor<3x16xf32>, %router: tensor<16x4xf32>,
    %dest: tensor<3x16xf32>) -> tensor<3x16xf32> {
  %ids, %w = moe.gate %x, %router {routing = #moe.routing<k = 1>}
      : (tensor<3x16xf32>, tensor<16x4xf32>) -> tensor<3x1xi64>, tensor<3x1xf32>
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4}
      : tensor<3x1xi64> -> tensor<3xi64>, tensor<5xi64>, tensor<3x1xi64>
  %rows = moe.generic_experts %x, %tok, %off into %dest
      {first_expert = 0, num_experts = 4}
      : (tensor<3x16xf32>, tensor<3xi64>, tensor<5xi64>, tensor<3x16xf32>) -> tensor<3x16xf32> {
  ^bb0(%r: tensor<?x16xf32>, %e: index):
    %t = math.tanh %r : tensor<?x16xf32>
    moe.yield %t : tensor<?x16xf32>
  }
  %out = moe.combine %rows, %pos, %w
      : (tensor<3x16xf32>, tensor<3x1xi64>, tensor<3x1xf32>) -> tensor<3x16xf32>
  return %out : tensor<3x16xf32>
}

// Placement: slot buffers, prefetch and routing traces.
// CHECK-LABEL: func @placed_experts
// CHECK: moe.trace_routing %{{.*}} {layer = 0 : i64, num_experts = 8 : i64} : tensor<?x2xi32>
// CHECK: moe.prefetch %{{.*}} {layer = 1 : i64} : tensor<?x2xi32>
// CHECK: moe.expert_slots %{{.*}} {layer = 0 : i64} : tensor<8x16x32xf32> -> tensor<?x16x32xf32>
// CHECK: placement = #moe.placement<layer = 0, experts = 8, slots = 3, pinned = [5, 1]>
func.func @placed_experts(%x: tensor<?x16xf32>, %ids: tensor<?x2xi32>,
    %tok: tensor<?xi32>, %off: tensor<9xi32>, %dest: tensor<?x16xf32>,
    %g: tensor<8x16x32xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>,
    %bd: tensor<8x16xf32>) -> tensor<?x16xf32> {
  moe.trace_routing %ids {layer = 0 : i64, num_experts = 8 : i64} : tensor<?x2xi32>
  moe.prefetch %ids {layer = 1 : i64} : tensor<?x2xi32>
  %gs = moe.expert_slots %g {layer = 0 : i64} : tensor<8x16x32xf32> -> tensor<?x16x32xf32>
  %r = moe.experts %x, %tok, %off into %dest gate(%gs : tensor<?x16x32xf32>)
      up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      down_bias(%bd : tensor<8x16xf32>)
      {expert = #moe.expert<gated, silu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 3, pinned = [5, 1]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// A plan over two devices: the home device of each expert.
// CHECK-LABEL: func @placed_over_devices
// CHECK: placement = #moe.placement<layer = 1, experts = 8, slots = 3, pinned = [5, 2], devices = [0, 1, 1, 0, 0, 1, 0, 1]>
func.func @placed_over_devices(%x: tensor<?x16xf32>, %tok: tensor<?xi32>,
    %off: tensor<9xi32>, %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>,
    %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  %r = moe.experts %x, %tok, %off into %dest up(%u : tensor<?x16x32xf32>)
      down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 1, experts = 8, slots = 3, pinned = [5, 2], devices = [0, 1, 1, 0, 0, 1, 0, 1]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}


// CHECK-LABEL: func @expert_choice
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 8, capacity_factor = 2.000000e+00, selection = expert_choice>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
// CHECK: moe.route %{{.*}} {routing = #moe.routing<k = 8, scoring = sigmoid, selection = expert_choice, capacity = 3>} : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
func.func @expert_choice(%l: tensor<?x8xf32>) -> (tensor<?x8xi32>, tensor<?x8xf32>) {
  %i0, %w0 = moe.route %l {routing = #moe.routing<k = 8, selection = expert_choice, capacity_factor = 2.0>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  %i1, %w1 = moe.route %l {routing = #moe.routing<k = 8, scoring = sigmoid, selection = expert_choice, capacity = 3>}
      : tensor<?x8xf32> -> tensor<?x8xi32>, tensor<?x8xf32>
  return %i1, %w0 : tensor<?x8xi32>, tensor<?x8xf32>
}

// CHECK-LABEL: func @hash_route
// CHECK: moe.hash_route %{{.*}} table(%{{.*}} : tensor<100xi32>) {num_experts = 4 : i64} : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
// CHECK: moe.hash_route %{{.*}} {num_experts = 4 : i64} : tensor<?xi64> -> tensor<?x1xi64>, tensor<?x1xf64>
func.func @hash_route(%t: tensor<?xi32>, %t64: tensor<?xi64>, %table: tensor<100xi32>)
    -> (tensor<?x1xi32>, tensor<?x1xf64>) {
  %i0, %w0 = moe.hash_route %t table(%table : tensor<100xi32>) {num_experts = 4}
      : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
  %i1, %w1 = moe.hash_route %t64 {num_experts = 4}
      : tensor<?xi64> -> tensor<?x1xi64>, tensor<?x1xf64>
  return %i0, %w1 : tensor<?x1xi32>, tensor<?x1xf64>
}

// CHECK-LABEL: func @groups_and_residual
// CHECK: moe.route %{{.*}} token_groups(%{{.*}} : tensor<?xi32>) residual(%{{.*}} : tensor<?x6xf32>) {routing = #moe.routing<k = 2, renormalize = true, expert_groups = [4, 2]>} : tensor<?x6xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
// CHECK: moe.gate %{{.*}}, %{{.*}} token_groups(%{{.*}} : tensor<?xi64>) {routing = #moe.routing<k = 1, expert_groups = [3, 3]>} : (tensor<?x16xf32>, tensor<16x6xf32>) -> tensor<?x1xi32>, tensor<?x1xf32>
// CHECK: moe.gate %{{.*}}, %{{.*}} residual(%{{.*}} : tensor<?x6xf32>) {routing = #moe.routing<k = 2>} : (tensor<?x16xf32>, tensor<16x6xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
func.func @groups_and_residual(%l: tensor<?x6xf32>, %g: tensor<?xi32>, %g64: tensor<?xi64>,
    %prev: tensor<?x6xf32>, %x: tensor<?x16xf32>, %router: tensor<16x6xf32>)
    -> (tensor<?x2xf32>, tensor<?x1xf32>, tensor<?x2xf32>) {
  %i0, %w0 = moe.route %l token_groups(%g : tensor<?xi32>) residual(%prev : tensor<?x6xf32>)
      {routing = #moe.routing<k = 2, renormalize = true, expert_groups = [4, 2]>}
      : tensor<?x6xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %i1, %w1 = moe.gate %x, %router token_groups(%g64 : tensor<?xi64>)
      {routing = #moe.routing<k = 1, expert_groups = [3, 3]>}
      : (tensor<?x16xf32>, tensor<16x6xf32>) -> tensor<?x1xi32>, tensor<?x1xf32>
  %i2, %w2 = moe.gate %x, %router residual(%prev : tensor<?x6xf32>)
      {routing = #moe.routing<k = 2>}
      : (tensor<?x16xf32>, tensor<16x6xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %w0, %w1, %w2 : tensor<?x2xf32>, tensor<?x1xf32>, tensor<?x2xf32>
}

// CHECK-LABEL: func @quantized_experts
// CHECK: %[[R0:.*]] = moe.quantized_experts %{{.*}}, %{{.*}}, %{{.*}} into %{{.*}} gate(%{{.*}}, %{{.*}} : tensor<4x128x64xi8>, tensor<4x128x1xf32>) up(%{{.*}}, %{{.*}} : tensor<4x128x64xi8>, tensor<4x128x1xf32>) down(%{{.*}}, %{{.*}} : tensor<4x64x128xi8>, tensor<4x64x1xf32>) {bits = 8 : i64, expert = #moe.expert<gated, silu>} : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
// CHECK: moe.quantized_experts %{{.*}}, %{{.*}}, %{{.*}} into %[[R0]] up(%{{.*}}, %{{.*}} : tensor<4x128x32xi8>, tensor<4x128x2xf32>) down(%{{.*}}, %{{.*}} : tensor<4x64x64xi8>, tensor<4x64x4xf32>) up_bias(%{{.*}} : tensor<4x128xf32>) down_bias(%{{.*}} : tensor<4x64xf32>) {bits = 4 : i64, expert = #moe.expert<ffn, gelu>, first_expert = 4 : i64}
func.func @quantized_experts(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
    %dest: tensor<?x64xf32>,
    %g8: tensor<4x128x64xi8>, %gs8: tensor<4x128x1xf32>, %u8: tensor<4x128x64xi8>,
    %us8: tensor<4x128x1xf32>, %d8: tensor<4x64x128xi8>, %ds8: tensor<4x64x1xf32>,
    %u4: tensor<4x128x32xi8>, %us4: tensor<4x128x2xf32>, %d4: tensor<4x64x64xi8>,
    %ds4: tensor<4x64x4xf32>, %bu: tensor<4x128xf32>, %bd: tensor<4x64xf32>) -> tensor<?x64xf32> {
  // Experts 0-3 at 8 bits with one scale per row, 4-7 at 4 bits with blocks
  // of 32: one destination, two bit widths.
  %r0 = moe.quantized_experts %x, %tok, %off into %dest
      gate(%g8, %gs8 : tensor<4x128x64xi8>, tensor<4x128x1xf32>)
      up(%u8, %us8 : tensor<4x128x64xi8>, tensor<4x128x1xf32>)
      down(%d8, %ds8 : tensor<4x64x128xi8>, tensor<4x64x1xf32>)
      {bits = 8, expert = #moe.expert<gated, silu>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %r1 = moe.quantized_experts %x, %tok, %off into %r0
      up(%u4, %us4 : tensor<4x128x32xi8>, tensor<4x128x2xf32>)
      down(%d4, %ds4 : tensor<4x64x64xi8>, tensor<4x64x4xf32>)
      up_bias(%bu : tensor<4x128xf32>) down_bias(%bd : tensor<4x64xf32>)
      {bits = 4, first_expert = 4, expert = #moe.expert<ffn, gelu>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %r1 : tensor<?x64xf32>
}

// Explicit zero points, one per scale.
// CHECK-LABEL: func @quantized_zero_points
// CHECK: moe.quantized_experts %{{.*}}, %{{.*}}, %{{.*}} into %{{.*}} up(%{{.*}}, %{{.*}} : tensor<4x128x32xi8>, tensor<4x128x2xf32>) down(%{{.*}}, %{{.*}} : tensor<4x64x64xi8>, tensor<4x64x4xf32>) up_bias(%{{.*}} : tensor<4x128xf32>) up_zero_points(%{{.*}} : tensor<4x128x2xf32>) down_zero_points(%{{.*}} : tensor<4x64x4xf32>) {bits = 4 : i64, expert = #moe.expert<ffn, gelu>}
func.func @quantized_zero_points(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
    %dest: tensor<?x64xf32>, %u4: tensor<4x128x32xi8>, %us4: tensor<4x128x2xf32>,
    %uz4: tensor<4x128x2xf32>, %d4: tensor<4x64x64xi8>, %ds4: tensor<4x64x4xf32>,
    %dz4: tensor<4x64x4xf32>, %bu: tensor<4x128xf32>) -> tensor<?x64xf32> {
  %r = moe.quantized_experts %x, %tok, %off into %dest
      up(%u4, %us4 : tensor<4x128x32xi8>, tensor<4x128x2xf32>)
      down(%d4, %ds4 : tensor<4x64x64xi8>, tensor<4x64x4xf32>)
      up_bias(%bu : tensor<4x128xf32>)
      up_zero_points(%uz4 : tensor<4x128x2xf32>) down_zero_points(%dz4 : tensor<4x64x4xf32>)
      {bits = 4, expert = #moe.expert<ffn, gelu>}
      : (tensor<?x64xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %r : tensor<?x64xf32>
}

// GPT-OSS: a router bias, top-k softmax, clamped SwiGLU with biases.
// CHECK-LABEL: func @gptoss_layer
// CHECK: moe.layer %{{.*}}, %{{.*}} router_bias(%{{.*}} : tensor<8xf32>) gate(
// CHECK-SAME: routing = #moe.routing<k = 2, scoring = topk_softmax>
// CHECK: moe.gate %{{.*}}, %{{.*}} router_bias(%{{.*}} : tensor<8xf32>) {routing = #moe.routing<k = 2, scoring = topk_softmax>}
func.func @gptoss_layer(%x: tensor<?x16xf32>, %router: tensor<16x8xf32>,
    %rb: tensor<8xf32>, %wg: tensor<8x16x24xf32>, %wu: tensor<8x16x24xf32>,
    %wd: tensor<8x24x16xf32>, %bg: tensor<8x24xf32>, %bu: tensor<8x24xf32>,
    %bd: tensor<8x16xf32>) -> (tensor<?x16xf32>, tensor<?x2xi32>) {
  %y = moe.layer %x, %router router_bias(%rb : tensor<8xf32>)
         gate(%wg : tensor<8x16x24xf32>) up(%wu : tensor<8x16x24xf32>)
         down(%wd : tensor<8x24x16xf32>) gate_bias(%bg : tensor<8x24xf32>)
         up_bias(%bu : tensor<8x24xf32>) down_bias(%bd : tensor<8x16xf32>)
         {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>,
          routing = #moe.routing<k = 2, scoring = topk_softmax>}
         : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %ids, %w = moe.gate %x, %router router_bias(%rb : tensor<8xf32>)
      {routing = #moe.routing<k = 2, scoring = topk_softmax>}
      : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %y, %ids : tensor<?x16xf32>, tensor<?x2xi32>
}
