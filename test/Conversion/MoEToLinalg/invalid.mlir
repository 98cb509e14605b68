// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file --verify-diagnostics

func.func @f16(%rows: tensor<?x16xf16>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf16>) -> tensor<?x16xf16> {
  // expected-error @+1 {{'moe.combine' op with element type 'f16' is not supported by convert-moe-to-linalg (f32 and f64 are; moe-widen-narrow-floats computes f16/bf16 ops in f32)}}
  %y = moe.combine %rows, %pos, %w
      : (tensor<?x16xf16>, tensor<?x2xi32>, tensor<?x2xf16>) -> tensor<?x16xf16>
  return %y : tensor<?x16xf16>
}

// -----

func.func @f8_weights(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>, %init: tensor<?x16xf32>, %wu: tensor<4x16x32xf8E4M3FN>, %wd: tensor<4x32x16xf8E4M3FN>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.experts' op with weights in 'f8E4M3FN' is not supported by convert-moe-to-linalg (f16, bf16, f32 and f64 are)}}
  %y = moe.experts %x, %tok, %off into %init up(%wu : tensor<4x16x32xf8E4M3FN>)
         down(%wd : tensor<4x32x16xf8E4M3FN>) {expert = #moe.expert<ffn, relu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

func.func @layer(%x: tensor<?x16xf32>, %r: tensor<16x4xf32>, %wu: tensor<4x16x32xf32>, %wd: tensor<4x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.layer' op is not lowered by convert-moe-to-linalg; run moe-expand first}}
  %y = moe.layer %x, %r up(%wu : tensor<4x16x32xf32>) down(%wd : tensor<4x32x16xf32>)
     {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
     : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Slot views exist only until moe-compile realizes them.
func.func @unrealized_slots(%w: tensor<8x16x32xf32>) -> tensor<?x16x32xf32> {
  // expected-error @+1 {{'moe.expert_slots' op must be realized by moe-compile: its weights become expert-cache slots of the compiled model}}
  %s = moe.expert_slots %w {layer = 0 : i64} : tensor<8x16x32xf32> -> tensor<?x16x32xf32>
  return %s : tensor<?x16x32xf32>
}

// -----

// A plan over several devices is not lowered: the runtime runs one device.
func.func @placed_over_devices(%x: tensor<?x16xf32>, %tok: tensor<?xi32>,
    %off: tensor<9xi32>, %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>,
    %d: tensor<?x32x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.experts' op is placed over 2 devices; moe-mlir runs a layer on one device (a plan over several devices is for expert-parallel engines)}}
  %r = moe.experts %x, %tok, %off into %dest up(%u : tensor<?x16x32xf32>)
      down(%d : tensor<?x32x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 1, experts = 8, slots = 4, devices = [0, 1, 1, 0, 0, 1, 0, 1]>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}
