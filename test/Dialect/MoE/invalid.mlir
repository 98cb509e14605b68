// RUN: moe-opt %s --split-input-file --verify-diagnostics

//===----------------------------------------------------------------------===//
// #moe.routing
//===----------------------------------------------------------------------===//

// expected-error @+1 {{routing k must be at least 1, got 0}}
func.func private @f() attributes {r = #moe.routing<k = 0>}

// -----

// expected-error @+1 {{routing temperature must be positive, got 0}}
func.func private @f() attributes {r = #moe.routing<k = 1, temperature = 0.0>}

// -----

// expected-error @+1 {{routing temperature applies to softmax scoring only, not sigmoid}}
func.func private @f() attributes {r = #moe.routing<k = 1, scoring = sigmoid, temperature = 2.0>}

// -----

// expected-error @+1 {{routing scale must be positive, got -1}}
func.func private @f() attributes {r = #moe.routing<k = 1, scale = -1.0>}

// -----

// expected-error @+1 {{routing n_group and topk_group must be non-negative}}
func.func private @f() attributes {r = #moe.routing<k = 1, n_group = -2, topk_group = 1>}

// -----

// expected-error @+1 {{routing topk_group requires n_group}}
func.func private @f() attributes {r = #moe.routing<k = 1, topk_group = 1>}

// -----

// expected-error @+1 {{routing topk_group must be in [1, n_group = 4], got 5}}
func.func private @f() attributes {r = #moe.routing<k = 1, n_group = 4, topk_group = 5>}

// -----

// expected-error @+1 {{routing capacity_factor must be non-negative, got -5.000000e-01}}
func.func private @f() attributes {r = #moe.routing<k = 1, capacity_factor = -0.5>}

// -----

// expected-error @+1 {{routing threshold must be in [0, 1], got 1.5}}
func.func private @f() attributes {r = #moe.routing<k = 2, threshold = 1.5>}

// -----

// expected-error @+1 {{routing threshold (top-p) needs softmax scoring}}
func.func private @f() attributes {r = #moe.routing<k = 2, scoring = topk_softmax, threshold = 0.5>}

// -----

//===----------------------------------------------------------------------===//
// #moe.expert
//===----------------------------------------------------------------------===//

// expected-error @+1 {{expert limit must be non-negative, got -7}}
func.func private @f() attributes {e = #moe.expert<gated, silu, limit = -7.0>}

// -----

// expected-error @+1 {{expert alpha must be positive, got 0}}
func.func private @f() attributes {e = #moe.expert<gated, silu, alpha = 0.0>}

// -----

// expected-error @+1 {{expert limit, alpha and beta apply to gated experts only}}
func.func private @f() attributes {e = #moe.expert<ffn, relu, beta = 1.0>}

// -----

// expected-error @+1 {{expert limit and alpha need the silu activation}}
func.func private @f() attributes {e = #moe.expert<gated, gelu, limit = 7.0>}

// -----

//===----------------------------------------------------------------------===//
// moe.layer
//===----------------------------------------------------------------------===//

func.func @layer_input_rank(%x: tensor<64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op input must have rank 2, got 'tensor<64xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<64xf32>, tensor<64x8xf32>) -> tensor<64xf32>
  return
}

// -----

func.func @layer_dynamic_hidden(%x: tensor<4x?xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op input must have a static hidden size}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x?xf32>, tensor<64x8xf32>) -> tensor<4x?xf32>
  return
}

// -----

func.func @layer_router_dynamic_experts(%x: tensor<4x64xf32>, %r: tensor<64x?xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op router must have shape [H, E] with a static E, got 'tensor<64x?xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x?xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_router_hidden(%x: tensor<4x64xf32>, %r: tensor<32x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op router must have shape [64, 8], got 'tensor<32x8xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<32x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_router_type(%x: tensor<4x64xf32>, %r: tensor<64x8xf16>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op router must have element type 'f32', got 'f16'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf16>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_k_too_large(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op routing k = 9 exceeds the 8 experts}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 9>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_groups_divide(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op routing n_group = 3 does not divide the 8 experts}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2, n_group = 3, topk_group = 1>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_groups_too_few(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op routing k = 3 exceeds the 2 experts of the kept groups}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 3, n_group = 4, topk_group = 1>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_bias_shape(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %b: tensor<4xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op selection bias must have shape [8], got 'tensor<4xf32>'}}
  %y = moe.layer %x, %r selection_bias(%b : tensor<4xf32>)
      up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_router_bias_shape(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %b: tensor<8x1xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op router bias must have shape [8], got 'tensor<8x1xf32>'}}
  %y = moe.layer %x, %r router_bias(%b : tensor<8x1xf32>)
      up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @gate_router_bias_type(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %b: tensor<8xf16>) {
  // expected-error @+1 {{'moe.gate' op router bias must have element type 'f32', got 'f16'}}
  %i, %w = moe.gate %x, %r router_bias(%b : tensor<8xf16>) {routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @layer_gated_needs_gate(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op gated experts need gate weights}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_ffn_no_gate(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op ffn experts take no gate weights}}
  %y = moe.layer %x, %r gate(%u : tensor<8x64x32xf32>) up(%u : tensor<8x64x32xf32>)
      down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_ffn_no_gate_bias(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %b: tensor<8x32xf32>) {
  // expected-error @+1 {{'moe.layer' op ffn experts take no gate bias}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      gate_bias(%b : tensor<8x32xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_up_rank(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op up weights must have rank 3, got 'tensor<64x32xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_dynamic_ffn(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x?xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op up weights must have a static FFN size}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x?xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_up_experts(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<4x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op up weights must have shape [8, 64, 32], got 'tensor<4x64x32xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<4x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_down_shape(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x16x64xf32>) {
  // expected-error @+1 {{'moe.layer' op down weights must have shape [8, 32, 64], got 'tensor<8x16x64xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x16x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_gate_shape(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %g: tensor<8x64x16xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op gate weights must have shape [8, 64, 32], got 'tensor<8x64x16xf32>'}}
  %y = moe.layer %x, %r gate(%g : tensor<8x64x16xf32>) up(%u : tensor<8x64x32xf32>)
      down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_gate_bias(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %g: tensor<8x64x32xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %b: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.layer' op gate bias must have shape [8, 32], got 'tensor<8x64xf32>'}}
  %y = moe.layer %x, %r gate(%g : tensor<8x64x32xf32>) up(%u : tensor<8x64x32xf32>)
      down(%d : tensor<8x32x64xf32>) gate_bias(%b : tensor<8x64xf32>)
      {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_up_bias(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %b: tensor<32xf32>) {
  // expected-error @+1 {{'moe.layer' op up bias must have shape [8, 32], got 'tensor<32xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      up_bias(%b : tensor<32xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_down_bias(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %b: tensor<8x32xf32>) {
  // expected-error @+1 {{'moe.layer' op down bias must have shape [8, 64], got 'tensor<8x32xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      down_bias(%b : tensor<8x32xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_weight_type(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xbf16>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op down weights must have the element type of the up weights ('bf16'), got 'f32'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xbf16>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

// Weights may be narrower than the activations, not wider.
func.func @layer_weights_wider(%x: tensor<4x64xf16>, %r: tensor<64x8xf16>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op up weights must have element type 'f16' or a narrower float type, got 'f32'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf16>, tensor<64x8xf16>) -> tensor<4x64xf16>
  return
}

// -----

func.func @experts_bias_narrow(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
    %init: tensor<?x16xf32>, %wu: tensor<4x16x32xbf16>, %wd: tensor<4x32x16xbf16>, %bu: tensor<4x32xbf16>) {
  // expected-error @+1 {{'moe.experts' op up bias must have element type 'f32', got 'bf16'}}
  %y = moe.experts %x, %tok, %off into %init up(%wu : tensor<4x16x32xbf16>)
         down(%wd : tensor<4x32x16xbf16>) up_bias(%bu : tensor<4x32xbf16>) {expert = #moe.expert<ffn, relu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

func.func @layer_shared_incomplete(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %su: tensor<64x16xf32>) {
  // expected-error @+1 {{'moe.layer' op shared experts need shared_up and shared_down}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      shared_up(%su : tensor<64x16xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_shared_shape(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %su: tensor<64x16xf32>,
    %sd: tensor<16x32xf32>) {
  // expected-error @+1 {{'moe.layer' op down weights must have shape [16, 64], got 'tensor<16x32xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      shared_up(%su : tensor<64x16xf32>) shared_down(%sd : tensor<16x32xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_shared_scale(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>, %su: tensor<64x16xf32>,
    %sd: tensor<16x64xf32>, %ss: tensor<16xf32>) {
  // expected-error @+1 {{'moe.layer' op shared scale must have shape [64], got 'tensor<16xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      shared_up(%su : tensor<64x16xf32>) shared_down(%sd : tensor<16x64xf32>)
      shared_scale(%ss : tensor<16xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @layer_result_type(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>,
    %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.layer' op result type 'tensor<?x64xf32>' must match input type 'tensor<4x64xf32>'}}
  %y = moe.layer %x, %r up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.route / moe.gate
//===----------------------------------------------------------------------===//

func.func @route_logits_shape(%l: tensor<4x?xf32>) {
  // expected-error @+1 {{'moe.route' op logits must have shape [T, E] with a static E, got 'tensor<4x?xf32>'}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x?xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @route_ids_k(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op expert ids must have shape [4, 2], got 'tensor<4x3xi32>'}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x3xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @route_weights_tokens(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op weights must have shape [4, 2], got 'tensor<5x2xf32>'}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<5x2xf32>
  return
}

// -----

func.func @route_weights_type(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op weights must have element type 'f32', got 'f16'}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf16>
  return
}

// -----

func.func @route_bias_type(%l: tensor<4x8xf32>, %b: tensor<8xf16>) {
  // expected-error @+1 {{'moe.route' op selection bias must have element type 'f32', got 'f16'}}
  %i, %w = moe.route %l selection_bias(%b : tensor<8xf16>) {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @route_k_too_large(%l: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.route' op routing k = 3 exceeds the 2 experts}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 3>}
      : tensor<4x2xf32> -> tensor<4x3xi32>, tensor<4x3xf32>
  return
}

// -----

func.func @gate_router(%x: tensor<4x64xf32>, %r: tensor<32x8xf32>) {
  // expected-error @+1 {{'moe.gate' op router must have shape [64, 8], got 'tensor<32x8xf32>'}}
  %i, %w = moe.gate %x, %r {routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<32x8xf32>) -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @gate_input(%x: tensor<64xf32>, %r: tensor<64x8xf32>) {
  // expected-error @+1 {{'moe.gate' op input must have rank 2, got 'tensor<64xf32>'}}
  %i, %w = moe.gate %x, %r {routing = #moe.routing<k = 2>}
      : (tensor<64xf32>, tensor<64x8xf32>) -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @gate_router_type(%x: tensor<4x64xf32>, %r: tensor<64x8xf16>) {
  // expected-error @+1 {{'moe.gate' op router must have element type 'f32', got 'f16'}}
  %i, %w = moe.gate %x, %r {routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf16>) -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @gate_ids_tokens(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>) {
  // expected-error @+1 {{'moe.gate' op expert ids must have shape [4, 2], got 'tensor<3x2xi32>'}}
  %i, %w = moe.gate %x, %r {routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<3x2xi32>, tensor<4x2xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.dispatch
//===----------------------------------------------------------------------===//

func.func @dispatch_ids_shape(%ids: tensor<4x?xi32>) {
  // expected-error @+1 {{'moe.dispatch' op expert ids must have shape [T, k] with a static k, got 'tensor<4x?xi32>'}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8}
      : tensor<4x?xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_capacity(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op capacity_factor must be non-negative}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8, capacity_factor = -1.0}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_both_capacities(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op takes a capacity or a capacity_factor, not both}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8, capacity_factor = 1.0, capacity = 2}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_negative_capacity(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op attribute 'capacity' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8, capacity = -2}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_rows(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op token indices must have shape [8], got 'tensor<6xi32>'}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8}
      : tensor<4x2xi32> -> tensor<6xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_padded_rows(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op token indices must have shape [32], got 'tensor<8xi32>'}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8, block_size = 4}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_offsets(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op expert offsets must have shape [9], got 'tensor<8xi32>'}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<8xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_dynamic_offsets(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op expert offsets must have a static shape}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<?xi32>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_positions(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op positions must have shape [4, 2], got 'tensor<4x1xi32>'}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi32>, tensor<4x1xi32>
  return
}

// -----

func.func @dispatch_index_type(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op expert offsets must have element type 'i32', got 'i64'}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 8}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<9xi64>, tensor<4x2xi32>
  return
}

// -----

func.func @dispatch_num_experts(%ids: tensor<4x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op attribute 'num_experts' failed to satisfy constraint}}
  %t, %o, %p = moe.dispatch %ids {num_experts = 0}
      : tensor<4x2xi32> -> tensor<8xi32>, tensor<1xi32>, tensor<4x2xi32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.experts
//===----------------------------------------------------------------------===//

func.func @experts_up_shape(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %u: tensor<64x32xf32>, %d: tensor<32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op up weights must have shape [E, H, F] with a static E, got 'tensor<64x32xf32>'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<64x32xf32>) down(%d : tensor<32x64xf32>)
      {expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @experts_offsets_dynamic(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<?xi32>,
    %dest: tensor<8x64xf32>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op expert offsets must have a static shape [E + 1], got 'tensor<?xi32>'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<?xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @experts_offsets_short(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op expert offsets cover 8 experts, but the op uses experts up to 9}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>, first_expert = 2}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @experts_token_rank(%x: tensor<4x64xf32>, %t: tensor<8x1xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op token indices must have rank 1, got 'tensor<8x1xi32>'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8x1xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @experts_dest_rows(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<7x64xf32>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op dest must have shape [8, 64], got 'tensor<7x64xf32>'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<7x64xf32>) -> tensor<7x64xf32>
  return
}

// -----

func.func @experts_dest_type(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf16>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op dest must have element type 'f32', got 'f16'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf16>) -> tensor<8x64xf16>
  return
}

// -----

func.func @experts_result(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op result type 'tensor<?x64xf32>' must match dest type 'tensor<8x64xf32>'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @experts_gate_missing(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %u: tensor<8x64x32xf32>, %d: tensor<8x32x64xf32>) {
  // expected-error @+1 {{'moe.experts' op gated experts need gate weights}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<8x64x32xf32>) down(%d : tensor<8x32x64xf32>)
      {expert = #moe.expert<gated, silu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.zero_computation_experts
//===----------------------------------------------------------------------===//

func.func @zc_no_kinds(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.zero_computation_experts' op needs at least one expert kind}}
  %r = moe.zero_computation_experts %x, %t, %o into %dest {first_expert = 0, kinds = []}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @zc_unneeded_constants(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %v: tensor<1x64xf32>, %m: tensor<1x64x2xf32>) {
  // expected-error @+1 {{'moe.zero_computation_experts' op takes constants only with constant experts}}
  %r = moe.zero_computation_experts %x, %t, %o into %dest
      constants(%v, %m : tensor<1x64xf32>, tensor<1x64x2xf32>)
      {first_expert = 7, kinds = [#moe.zero_computation<copy>]}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @zc_missing_constants(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.zero_computation_experts' op needs constants for its 2 constant experts}}
  %r = moe.zero_computation_experts %x, %t, %o into %dest
      {first_expert = 6, kinds = [#moe.zero_computation<constant>, #moe.zero_computation<constant>]}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @zc_values_shape(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %v: tensor<2x64xf32>, %m: tensor<1x64x2xf32>) {
  // expected-error @+1 {{'moe.zero_computation_experts' op constant values must have shape [1, 64], got 'tensor<2x64xf32>'}}
  %r = moe.zero_computation_experts %x, %t, %o into %dest
      constants(%v, %m : tensor<2x64xf32>, tensor<1x64x2xf32>)
      {first_expert = 7, kinds = [#moe.zero_computation<constant>]}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @zc_mix_shape(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %v: tensor<1x64xf32>, %m: tensor<1x64x3xf32>) {
  // expected-error @+1 {{'moe.zero_computation_experts' op constant mix must have shape [1, 64, 2], got 'tensor<1x64x3xf32>'}}
  %r = moe.zero_computation_experts %x, %t, %o into %dest
      constants(%v, %m : tensor<1x64xf32>, tensor<1x64x3xf32>)
      {first_expert = 7, kinds = [#moe.zero_computation<constant>]}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @zc_values_type(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %v: tensor<1x64xf16>, %m: tensor<1x64x2xf32>) {
  // expected-error @+1 {{'moe.zero_computation_experts' op constant values must have element type 'f32', got 'f16'}}
  %r = moe.zero_computation_experts %x, %t, %o into %dest
      constants(%v, %m : tensor<1x64xf16>, tensor<1x64x2xf32>)
      {first_expert = 7, kinds = [#moe.zero_computation<constant>]}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.generic_experts
//===----------------------------------------------------------------------===//

func.func @generic_block_args(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.generic_experts' op body must take ('tensor<?x64xf32>', index)}}
  %r = moe.generic_experts %x, %t, %o into %dest {first_expert = 0, num_experts = 8}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%rows: tensor<4x64xf32>, %e: index):
    moe.yield %rows : tensor<4x64xf32>
  }
  return
}

// -----

func.func @generic_yield_type(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>, %other: tensor<?x32xf32>) {
  // expected-error @+1 {{'moe.generic_experts' op body must yield 'tensor<?x64xf32>', got 'tensor<?x32xf32>'}}
  %r = moe.generic_experts %x, %t, %o into %dest {first_expert = 0, num_experts = 8}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%rows: tensor<?x64xf32>, %e: index):
    moe.yield %other : tensor<?x32xf32>
  }
  return
}

// -----

func.func @generic_terminator(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>,
    %dest: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.generic_experts' op body must end with moe.yield}}
  %r = moe.generic_experts %x, %t, %o into %dest {first_expert = 0, num_experts = 8}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%rows: tensor<?x64xf32>, %e: index):
    llvm.unreachable
  }
  return
}

// -----

func.func @generic_offsets(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<5xi32>,
    %dest: tensor<8x64xf32>) {
  // expected-error @+1 {{'moe.generic_experts' op expert offsets cover 4 experts, but the op uses experts up to 7}}
  %r = moe.generic_experts %x, %t, %o into %dest {first_expert = 0, num_experts = 8}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<5xi32>, tensor<8x64xf32>) -> tensor<8x64xf32> {
  ^bb0(%rows: tensor<?x64xf32>, %e: index):
    moe.yield %rows : tensor<?x64xf32>
  }
  return
}

// -----

func.func @yield_parent(%v: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.yield' op expects parent op 'moe.generic_experts'}}
  moe.yield %v : tensor<?x64xf32>
}

// -----

//===----------------------------------------------------------------------===//
// moe.shared_experts
//===----------------------------------------------------------------------===//

func.func @shared_up_rank(%x: tensor<4x64xf32>, %u: tensor<2x64x32xf32>, %d: tensor<32x64xf32>) {
  // expected-error @+1 {{'moe.shared_experts' op up weights must have rank 2, got 'tensor<2x64x32xf32>'}}
  %s = moe.shared_experts %x up(%u : tensor<2x64x32xf32>) down(%d : tensor<32x64xf32>)
      {expert = #moe.expert<ffn, relu>} : tensor<4x64xf32> -> tensor<4x64xf32>
  return
}

// -----

func.func @shared_scale(%x: tensor<4x64xf32>, %u: tensor<64x32xf32>, %d: tensor<32x64xf32>,
    %s: tensor<64xf16>) {
  // expected-error @+1 {{'moe.shared_experts' op scale must have element type 'f32', got 'f16'}}
  %y = moe.shared_experts %x up(%u : tensor<64x32xf32>) down(%d : tensor<32x64xf32>)
      scale(%s : tensor<64xf16>)
      {expert = #moe.expert<ffn, relu>} : tensor<4x64xf32> -> tensor<4x64xf32>
  return
}

// -----

func.func @shared_input(%x: tensor<4x?xf32>, %u: tensor<64x32xf32>, %d: tensor<32x64xf32>) {
  // expected-error @+1 {{'moe.shared_experts' op input must have a static hidden size}}
  %y = moe.shared_experts %x up(%u : tensor<64x32xf32>) down(%d : tensor<32x64xf32>)
      {expert = #moe.expert<ffn, relu>} : tensor<4x?xf32> -> tensor<4x?xf32>
  return
}

// -----

func.func @shared_result(%x: tensor<4x64xf32>, %u: tensor<64x32xf32>, %d: tensor<32x64xf32>) {
  // expected-error @+1 {{'moe.shared_experts' op result type 'tensor<?x64xf32>' must match input type 'tensor<4x64xf32>'}}
  %y = moe.shared_experts %x up(%u : tensor<64x32xf32>) down(%d : tensor<32x64xf32>)
      {expert = #moe.expert<ffn, relu>} : tensor<4x64xf32> -> tensor<?x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.combine
//===----------------------------------------------------------------------===//

func.func @combine_rows(%r: tensor<8xf32>, %p: tensor<4x2xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.combine' op rows must have rank 2, got 'tensor<8xf32>'}}
  %y = moe.combine %r, %p, %w : (tensor<8xf32>, tensor<4x2xi32>, tensor<4x2xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @combine_positions(%r: tensor<8x64xf32>, %p: tensor<4x?xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.combine' op positions must have shape [T, k] with a static k, got 'tensor<4x?xi32>'}}
  %y = moe.combine %r, %p, %w : (tensor<8x64xf32>, tensor<4x?xi32>, tensor<4x2xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @combine_weights(%r: tensor<8x64xf32>, %p: tensor<4x2xi32>, %w: tensor<4x1xf32>) {
  // expected-error @+1 {{'moe.combine' op weights must have shape [4, 2], got 'tensor<4x1xf32>'}}
  %y = moe.combine %r, %p, %w : (tensor<8x64xf32>, tensor<4x2xi32>, tensor<4x1xf32>) -> tensor<4x64xf32>
  return
}

// -----

func.func @combine_weights_type(%r: tensor<8x64xf32>, %p: tensor<4x2xi32>, %w: tensor<4x2xf16>) {
  // expected-error @+1 {{'moe.combine' op weights must have element type 'f32', got 'f16'}}
  %y = moe.combine %r, %p, %w : (tensor<8x64xf32>, tensor<4x2xi32>, tensor<4x2xf16>) -> tensor<4x64xf32>
  return
}

// -----

func.func @combine_result(%r: tensor<8x64xf32>, %p: tensor<4x2xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.combine' op result must have shape [4, 64], got 'tensor<4x32xf32>'}}
  %y = moe.combine %r, %p, %w : (tensor<8x64xf32>, tensor<4x2xi32>, tensor<4x2xf32>) -> tensor<4x32xf32>
  return
}

// -----

func.func @combine_result_type(%r: tensor<8x64xf32>, %p: tensor<4x2xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{'moe.combine' op result must have element type 'f32', got 'f16'}}
  %y = moe.combine %r, %p, %w : (tensor<8x64xf32>, tensor<4x2xi32>, tensor<4x2xf32>) -> tensor<4x64xf16>
  return
}

// -----

func.func @combine_addend(%r: tensor<8x64xf32>, %p: tensor<4x2xi32>, %w: tensor<4x2xf32>,
    %a: tensor<?x64xf32>) {
  // expected-error @+1 {{'moe.combine' op addend type 'tensor<?x64xf32>' must match result type 'tensor<4x64xf32>'}}
  %y = moe.combine %r, %p, %w addend(%a : tensor<?x64xf32>)
      : (tensor<8x64xf32>, tensor<4x2xi32>, tensor<4x2xf32>) -> tensor<4x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Placement
//===----------------------------------------------------------------------===//

func.func @placement_slots_exceed(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement slots must be in [1, 8], got 9}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 9>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_pins_all(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement pins 2 experts but has only 2 slots; at least one must stay free}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 2, pinned = [0, 1]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_pin_range(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement pins expert 8, outside [0, 8)}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 4, pinned = [8]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_pin_twice(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement pins expert 3 twice}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 4, pinned = [3, 3]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_devices_count(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement devices must give the device of each of 8 experts, got 3}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 4, devices = [0, 1, 0]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_devices_negative(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement device must be non-negative, got -1}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 4, slots = 2, devices = [0, 1, -1, 0]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

// Each device's cache keeps a slot free: 1 of 2 slots pinned on device 0 is
// fine, 2 of 2 on device 1 is not.
func.func @placement_devices_pins(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement pins 2 experts on device 1 but has only 2 slots; at least one must stay free}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 2, pinned = [0, 1, 3], devices = [0, 1, 0, 1, 0, 1, 0, 1]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_layer(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+3 {{placement layer must be non-negative, got -1}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = -1, experts = 8, slots = 4>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_bias_extent(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>,
    %b: tensor<4x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.experts' op biases must have a leading extent of the 8 placed experts, got 'tensor<4x16xf32>'}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      down_bias(%b : tensor<4x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 0, experts = 8, slots = 4>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @placement_first_expert(%x: tensor<?x16xf32>, %t: tensor<?xi32>, %o: tensor<11xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.experts' op placement needs first_expert = 0}}
  %r = moe.experts %x, %t, %o into %dest up(%u : tensor<?x16x32xf32>) down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>, first_expert = 2 : i64,
       placement = #moe.placement<layer = 0, experts = 8, slots = 4>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<11xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @expert_slots_type(%w: tensor<8x16x32xf32>) -> tensor<4x16x32xf32> {
  // expected-error @+1 {{'moe.expert_slots' op slots must have type 'tensor<?x16x32xf32>', got 'tensor<4x16x32xf32>'}}
  %s = moe.expert_slots %w {layer = 0 : i64} : tensor<8x16x32xf32> -> tensor<4x16x32xf32>
  return %s : tensor<4x16x32xf32>
}

// -----

func.func @expert_slots_static(%w: tensor<?x16x32xf32>) -> tensor<?x16x32xf32> {
  // expected-error @+1 {{'moe.expert_slots' op weights must be a static [E, ...] tensor, got 'tensor<?x16x32xf32>'}}
  %s = moe.expert_slots %w {layer = 0 : i64} : tensor<?x16x32xf32> -> tensor<?x16x32xf32>
  return %s : tensor<?x16x32xf32>
}

// -----

// -----

//===----------------------------------------------------------------------===//
// Expert-choice routing
//===----------------------------------------------------------------------===//

// expected-error @+1 {{routing capacity must be non-negative, got -1}}
func.func private @f() attributes {r = #moe.routing<k = 4, selection = expert_choice, capacity = -1>}

// -----

// expected-error @+1 {{routing takes a capacity or a capacity_factor, not both}}
func.func private @f() attributes {r = #moe.routing<k = 2, capacity_factor = 1.0, capacity = 3>}

// -----

// expected-error @+1 {{expert_choice routing needs softmax or sigmoid scoring}}
func.func private @f() attributes {r = #moe.routing<k = 4, scoring = topk_softmax, selection = expert_choice, capacity = 2>}

// -----

// expected-error @+1 {{expert_choice routing takes no renormalize, threshold or group limit}}
func.func private @f() attributes {r = #moe.routing<k = 4, renormalize = true, selection = expert_choice, capacity = 2>}

// -----

// expected-error @+1 {{expert_choice routing takes no renormalize, threshold or group limit}}
func.func private @f() attributes {r = #moe.routing<k = 4, n_group = 2, topk_group = 1, selection = expert_choice, capacity = 2>}

// -----

// expected-error @+1 {{expert_choice routing needs a capacity or a capacity_factor}}
func.func private @f() attributes {r = #moe.routing<k = 4, selection = expert_choice>}

// -----

func.func @expert_choice_k(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op expert_choice routing has one slot per expert: k = 2 must equal the 8 experts}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 2, selection = expert_choice, capacity = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @expert_choice_gate(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>) {
  // expected-error @+1 {{'moe.gate' op cannot route by expert_choice: each expert's choice needs the logits of all tokens; use moe.route}}
  %i, %w = moe.gate %x, %r {routing = #moe.routing<k = 8, selection = expert_choice, capacity = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x8xi32>, tensor<4x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.hash_route
//===----------------------------------------------------------------------===//

func.func @hash_ids_rank(%t: tensor<4x1xi32>) {
  // expected-error @+1 {{'moe.hash_route' op token ids must have rank 1, got 'tensor<4x1xi32>'}}
  %i, %w = moe.hash_route %t {num_experts = 8}
      : tensor<4x1xi32> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @hash_table_rank(%t: tensor<4xi32>, %table: tensor<10x2xi32>) {
  // expected-error @+1 {{'moe.hash_route' op table must have rank 1, got 'tensor<10x2xi32>'}}
  %i, %w = moe.hash_route %t table(%table : tensor<10x2xi32>) {num_experts = 8}
      : tensor<4xi32> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @hash_table_empty(%t: tensor<4xi32>, %table: tensor<0xi32>) {
  // expected-error @+1 {{'moe.hash_route' op table must not be empty}}
  %i, %w = moe.hash_route %t table(%table : tensor<0xi32>) {num_experts = 8}
      : tensor<4xi32> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @hash_ids_shape(%t: tensor<4xi32>) {
  // expected-error @+1 {{'moe.hash_route' op expert ids must have shape [4, 1], got 'tensor<4x2xi32>'}}
  %i, %w = moe.hash_route %t {num_experts = 8}
      : tensor<4xi32> -> tensor<4x2xi32>, tensor<4x1xf32>
  return
}

// -----

func.func @hash_weights_shape(%t: tensor<?xi32>) {
  // expected-error @+1 {{'moe.hash_route' op weights must have shape [?, 1], got 'tensor<?x2xf32>'}}
  %i, %w = moe.hash_route %t {num_experts = 8}
      : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x2xf32>
  return
}

// -----

func.func @hash_num_experts(%t: tensor<4xi32>) {
  // expected-error @+1 {{'moe.hash_route' op attribute 'num_experts' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %i, %w = moe.hash_route %t {num_experts = 0}
      : tensor<4xi32> -> tensor<4x1xi32>, tensor<4x1xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Expert groups (modality-restricted routing) and gating residuals
//===----------------------------------------------------------------------===//

// expected-error @+1 {{routing expert_groups sizes must be positive}}
func.func private @f() attributes {r = #moe.routing<k = 1, expert_groups = [4, 0]>}

// -----

// expected-error @+1 {{routing expert_groups cannot be combined with n_group or expert_choice}}
func.func private @f() attributes {r = #moe.routing<k = 1, n_group = 2, topk_group = 1, expert_groups = [4, 4]>}

// -----

// expected-error @+1 {{routing expert_groups cannot be combined with n_group or expert_choice}}
func.func private @f() attributes {r = #moe.routing<k = 8, selection = expert_choice, capacity = 2, expert_groups = [4, 4]>}

// -----

// expected-error @+2 {{expected integer value}}
// expected-error @+1 {{failed to parse MoE_RoutingAttr parameter 'expert_groups' which is to be a `::llvm::ArrayRef<int64_t>`}}
func.func private @f() attributes {r = #moe.routing<k = 1, expert_groups = [4, x]>}

// -----

func.func @groups_sum(%l: tensor<4x8xf32>, %g: tensor<4xi32>) {
  // expected-error @+1 {{'moe.route' op routing expert_groups sum to 7, not the 8 experts}}
  %i, %w = moe.route %l token_groups(%g : tensor<4xi32>) {routing = #moe.routing<k = 2, expert_groups = [4, 3]>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @groups_k(%l: tensor<4x8xf32>, %g: tensor<4xi32>) {
  // expected-error @+1 {{'moe.route' op routing k = 3 exceeds the 2 experts of the smallest group}}
  %i, %w = moe.route %l token_groups(%g : tensor<4xi32>) {routing = #moe.routing<k = 3, expert_groups = [6, 2]>}
      : tensor<4x8xf32> -> tensor<4x3xi32>, tensor<4x3xf32>
  return
}

// -----

func.func @groups_missing(%l: tensor<4x8xf32>) {
  // expected-error @+1 {{'moe.route' op routing expert_groups needs token_groups}}
  %i, %w = moe.route %l {routing = #moe.routing<k = 2, expert_groups = [4, 4]>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @groups_unexpected(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %g: tensor<4xi32>) {
  // expected-error @+1 {{'moe.gate' op token_groups need routing expert_groups}}
  %i, %w = moe.gate %x, %r token_groups(%g : tensor<4xi32>) {routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @groups_shape(%l: tensor<4x8xf32>, %g: tensor<5xi32>) {
  // expected-error @+1 {{'moe.route' op token groups must have shape [4], got 'tensor<5xi32>'}}
  %i, %w = moe.route %l token_groups(%g : tensor<5xi32>) {routing = #moe.routing<k = 2, expert_groups = [4, 4]>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @groups_layer(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
                        %wu: tensor<8x64x128xf32>, %wd: tensor<8x128x64xf32>) {
  // expected-error @+1 {{'moe.layer' op takes no token groups for routing expert_groups; use moe.route}}
  %y = moe.layer %x, %router up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2, expert_groups = [4, 4]>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @residual_shape(%l: tensor<4x8xf32>, %p: tensor<4x6xf32>) {
  // expected-error @+1 {{'moe.route' op residual must have shape [4, 8], got 'tensor<4x6xf32>'}}
  %i, %w = moe.route %l residual(%p : tensor<4x6xf32>) {routing = #moe.routing<k = 2>}
      : tensor<4x8xf32> -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

func.func @residual_type(%x: tensor<4x64xf32>, %r: tensor<64x8xf32>, %p: tensor<4x8xf16>) {
  // expected-error @+1 {{'moe.gate' op residual must have element type 'f32', got 'f16'}}
  %i, %w = moe.gate %x, %r residual(%p : tensor<4x8xf16>) {routing = #moe.routing<k = 2>}
      : (tensor<4x64xf32>, tensor<64x8xf32>) -> tensor<4x2xi32>, tensor<4x2xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// moe.quantized_experts
//===----------------------------------------------------------------------===//

// -----

func.func @qexperts_zero_points_shape(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %g: tensor<8x32x64xi8>, %gs: tensor<8x32x2xf32>, %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>, %uz: tensor<8x32x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op up zero points must have shape [8, 32, 2], got 'tensor<8x32x1xf32>'}}
  %r = moe.quantized_experts %x, %t, %o into %dest gate(%g, %gs : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      up_zero_points(%uz : tensor<8x32x1xf32>)
      {bits = 8, expert = #moe.expert<gated, silu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_gate_zero_points_no_gate(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>, %gz: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op gate zero points need gate weights}}
  %r = moe.quantized_experts %x, %t, %o into %dest
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      gate_zero_points(%gz : tensor<8x32x2xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_bits(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %g: tensor<8x32x64xi8>, %gs: tensor<8x32x2xf32>, %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op bits must be 4 or 8, got 2}}
  %r = moe.quantized_experts %x, %t, %o into %dest gate(%g, %gs : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 2, expert = #moe.expert<gated, silu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_up_rank(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %g: tensor<8x32x64xi8>, %gs: tensor<8x32x2xf32>, %u: tensor<32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op up weights must have shape [E, F, H * bits / 8] with static E and F, got 'tensor<32x64xi8>'}}
  %r = moe.quantized_experts %x, %t, %o into %dest gate(%g, %gs : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      up(%u, %us : tensor<32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, expert = #moe.expert<gated, silu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_gated_no_gate(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %g: tensor<8x32x64xi8>, %gs: tensor<8x32x2xf32>, %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op gated experts need gate weights}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, expert = #moe.expert<gated, silu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_ffn_gate(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %g: tensor<8x32x64xi8>, %gs: tensor<8x32x2xf32>, %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op ffn experts take no gate weights}}
  %r = moe.quantized_experts %x, %t, %o into %dest gate(%g, %gs : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_ffn_gate_bias(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %gb: tensor<8x32xf32>, %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op ffn experts take no gate bias}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      gate_bias(%gb : tensor<8x32xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_up_bytes(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x16xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op up weights must have shape [8, 32, 32], got 'tensor<8x32x64xi8>'}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x16xi8>, tensor<8x64x1xf32>)
      {bits = 4, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_scales_rank(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op up scales must have shape [E, N, K / block] with a static, positive block count, got 'tensor<8x32xf32>'}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_scales_shape(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x32x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op down scales must have shape [8, 64, 1], got 'tensor<8x32x1xf32>'}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x32x1xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_scales_type(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf16>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op up scales must have element type 'f32', got 'f16'}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf16>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_blocks(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x3xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op up scales: 3 blocks do not split the 64 reduction values into blocks of whole bytes}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x3xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_odd_blocks(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x32xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x16xi8>, %ds: tensor<8x64x32xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op down scales: 32 blocks do not split the 32 reduction values into blocks of whole bytes}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x32xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x16xi8>, tensor<8x64x32xf32>)
      {bits = 4, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_bias(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>, %db: tensor<8x32xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op down bias must have shape [8, 64], got 'tensor<8x32xf32>'}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      down_bias(%db : tensor<8x32xf32>)
      {bits = 8, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_offsets(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op expert offsets cover 8 experts, but the op uses experts up to 10}}
  %r = moe.quantized_experts %x, %t, %o into %dest 
      up(%u, %us : tensor<8x32x64xi8>, tensor<8x32x2xf32>)
      down(%d, %ds : tensor<8x64x32xi8>, tensor<8x64x1xf32>)
      {bits = 8, first_expert = 3, expert = #moe.expert<ffn, relu>}
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @qexperts_gate_scales(%x: tensor<4x64xf32>, %t: tensor<8xi32>, %o: tensor<9xi32>, %dest: tensor<8x64xf32>,
    %g: tensor<8x32x64xi8>, %u: tensor<8x32x64xi8>, %us: tensor<8x32x2xf32>,
    %d: tensor<8x64x32xi8>, %ds: tensor<8x64x1xf32>) {
  // expected-error @+1 {{'moe.quantized_experts' op gate weights and gate scales go together}}
  %r = "moe.quantized_experts"(%x, %t, %o, %dest, %g, %u, %us, %d, %ds)
      <{bits = 8 : i64, expert = #moe.expert<gated, silu>,
        operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0>}>
      : (tensor<4x64xf32>, tensor<8xi32>, tensor<9xi32>, tensor<8x64xf32>, tensor<8x32x64xi8>,
         tensor<8x32x64xi8>, tensor<8x32x2xf32>, tensor<8x64x32xi8>, tensor<8x64x1xf32>) -> tensor<8x64xf32>
  return
}
