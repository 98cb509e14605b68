// Options and profile errors, reported on the module.
// RUN: not moe-opt %s --moe-prune-experts="profile=%S/Inputs/prune-profile.json" 2>&1 | FileCheck %s --check-prefix=KEEP
// RUN: not moe-opt %s --moe-prune-experts="keep=2" 2>&1 | FileCheck %s --check-prefix=NOPROFILE
// RUN: not moe-opt %s --moe-prune-experts="keep=2 profile=%S/Inputs/does-not-exist.json" 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: not moe-opt %s --moe-prune-experts="keep=2 profile=%S/Inputs/prune-not-json.json" 2>&1 | FileCheck %s --check-prefix=NOTJSON
// RUN: not moe-opt %s --moe-prune-experts="keep=2 profile=%S/Inputs/prune-negative.json" 2>&1 | FileCheck %s --check-prefix=MALFORMED
// RUN: not moe-opt %s --moe-prune-experts="keep=2 profile=%S/Inputs/prune-no-layers.json" 2>&1 | FileCheck %s --check-prefix=MALFORMED
// Layer errors, reported on the layer.
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-prune-experts="keep=2 profile=%S/Inputs/prune-one-layer.json"

// KEEP: error: moe-prune-experts: needs keep >= 1, got 0
// NOPROFILE: error: moe-prune-experts: needs profile=<routing profile JSON>
// MISSING: error: moe-prune-experts: cannot read routing profile '{{.*}}does-not-exist.json': No such file or directory
// NOTJSON: error: moe-prune-experts: routing profile '{{.*}}prune-not-json.json' is not valid JSON: {{.*}}
// MALFORMED: error: moe-prune-experts: routing profile '{{.*}}' must be {"layers": [{"counts": [numbers >= 0, ...]}, ...]}

func.func @two_layers(%x: tensor<?x8xf32>, %r: tensor<8x4xf32>, %u: tensor<4x8x4xf32>,
                      %d: tensor<4x4x8xf32>) -> tensor<?x8xf32> {
  %y0 = moe.layer %x, %r up(%u : tensor<4x8x4xf32>) down(%d : tensor<4x4x8xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
         : (tensor<?x8xf32>, tensor<8x4xf32>) -> tensor<?x8xf32>
  // expected-error @+1 {{'moe.layer' op is layer 1 but the routing profile has 1 layers}}
  %y1 = moe.layer %y0, %r up(%u : tensor<4x8x4xf32>) down(%d : tensor<4x4x8xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
         : (tensor<?x8xf32>, tensor<8x4xf32>) -> tensor<?x8xf32>
  return %y1 : tensor<?x8xf32>
}

// -----

func.func @count_mismatch(%x: tensor<?x8xf32>, %r: tensor<8x6xf32>, %u: tensor<6x8x4xf32>,
                          %d: tensor<6x4x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.layer' op has 6 experts but routing profile layer 0 has 4 counts}}
  %y = moe.layer %x, %r up(%u : tensor<6x8x4xf32>) down(%d : tensor<6x4x8xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
         : (tensor<?x8xf32>, tensor<8x6xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @grouped(%x: tensor<?x8xf32>, %r: tensor<8x4xf32>, %u: tensor<4x8x4xf32>,
                   %d: tensor<4x4x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.layer' op cannot prune experts under group-limited routing (n_group or expert_groups)}}
  %y = moe.layer %x, %r up(%u : tensor<4x8x4xf32>) down(%d : tensor<4x4x8xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1, n_group = 2, topk_group = 1>}
         : (tensor<?x8xf32>, tensor<8x4xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

func.func @k_above_keep(%x: tensor<?x8xf32>, %r: tensor<8x4xf32>, %u: tensor<4x8x4xf32>,
                        %d: tensor<4x4x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'moe.layer' op routes to k = 3 experts, more than keep = 2}}
  %y = moe.layer %x, %r up(%u : tensor<4x8x4xf32>) down(%d : tensor<4x4x8xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 3>}
         : (tensor<?x8xf32>, tensor<8x4xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}
