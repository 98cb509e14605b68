// RUN: moe-opt %s --convert-moe-to-gpu --split-input-file --verify-diagnostics

func.func @layer(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
                 %wu: tensor<8x64x128xf32>, %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{'moe.layer' op is not lowered by convert-moe-to-gpu; run moe-expand first}}
  %y = moe.layer %x, %router up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// A region that reads an element on the host: its tensors live in GPU memory.
func.func @generic(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
                   %dest: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y = moe.generic_experts %x, %tok, %off into %dest {first_expert = 0, num_experts = 4}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x64xf32>) -> tensor<?x64xf32> {
  ^bb0(%rows: tensor<?x64xf32>, %e: index):
    %c0 = arith.constant 0 : index
    // expected-error @+1 {{'tensor.extract' op would run on the host, on tensors that live in GPU memory}}
    %s = tensor.extract %rows[%c0, %c0] : tensor<?x64xf32>
    %r = linalg.fill ins(%s : f32) outs(%rows : tensor<?x64xf32>) -> tensor<?x64xf32>
    moe.yield %r : tensor<?x64xf32>
  }
  return %y : tensor<?x64xf32>
}

// -----

func.func @f8(%rows: tensor<?x64xf8E4M3FN>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf8E4M3FN>)
    -> tensor<?x64xf8E4M3FN> {
  // expected-error @+1 {{'moe.combine' op with element type f8E4M3FN is not supported by convert-moe-to-gpu (f16, bf16, f32 and f64 are)}}
  %out = moe.combine %rows, %pos, %w
      : (tensor<?x64xf8E4M3FN>, tensor<?x2xi32>, tensor<?x2xf8E4M3FN>) -> tensor<?x64xf8E4M3FN>
  return %out : tensor<?x64xf8E4M3FN>
}

// -----

func.func @too_many_experts(%logits: tensor<?x4096xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  // expected-error @+1 {{'moe.route' op with more than 2048 experts is not supported by convert-moe-to-gpu}}
  %ids, %w = moe.route %logits {routing = #moe.routing<k = 2>}
      : tensor<?x4096xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}


// -----

func.func @host_compute(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>) -> (tensor<?x2xf32>, tensor<8xf32>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %t = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%t) : tensor<?x8xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %l = linalg.matmul ins(%x, %r : tensor<?x64xf32>, tensor<64x8xf32>) outs(%f : tensor<?x8xf32>) -> tensor<?x8xf32>
  %i, %w = moe.route %l {routing = #moe.routing<k = 2>}
      : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  // The first token's logits, copied on the host: the fill and the matmul
  // become kernels, the slice insertion would run on the host.
  %first = tensor.extract_slice %l[0, 0] [1, 8] [1, 1] : tensor<?x8xf32> to tensor<8xf32>
  %d = tensor.empty() : tensor<2x8xf32>
  // expected-error @+1 {{'tensor.insert_slice' op would run on the host, on tensors that live in GPU memory}}
  %ins = tensor.insert_slice %first into %d[0, 0] [1, 8] [1, 1] : tensor<8xf32> into tensor<2x8xf32>
  %back = tensor.extract_slice %ins[1, 0] [1, 8] [1, 1] : tensor<2x8xf32> to tensor<8xf32>
  return %w, %back : tensor<?x2xf32>, tensor<8xf32>
}

// -----

func.func @constant_operand(%x: tensor<?x16xf32>, %r: tensor<16x8xf32>) -> tensor<?x2xf32> {
  // expected-error @+1 {{'arith.constant' op is a kernel operand but would stay in host memory}}
  %b = arith.constant dense<0.5> : tensor<8xf32>
  %i, %w = moe.gate %x, %r selection_bias(%b : tensor<8xf32>) {routing = #moe.routing<k = 2>}
      : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %w : tensor<?x2xf32>
}

// -----

func.func @dispatch_too_many_experts(%ids: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<6145xi32>, tensor<?x2xi32>) {
  // expected-error @+1 {{'moe.dispatch' op with 6144 experts is not supported by convert-moe-to-gpu (the dispatch kernels keep per-expert counts in workgroup memory)}}
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 6144}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<6145xi32>, tensor<?x2xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<6145xi32>, tensor<?x2xi32>
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

// -----

// Weights narrower than the activations are a CPU lowering (the kernels read
// the weights in the activations' type).
func.func @narrow_weights(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
    %init: tensor<?x16xf32>, %wu: tensor<4x16x32xbf16>, %wd: tensor<4x32x16xbf16>) -> tensor<?x16xf32> {
  // expected-error @+1 {{'moe.experts' op with weights in bf16 and activations in f32 is not lowered by convert-moe-to-gpu (the kernels read the weights in the activations' type)}}
  %y = moe.experts %x, %tok, %off into %init up(%wu : tensor<4x16x32xbf16>)
         down(%wd : tensor<4x32x16xbf16>) {expert = #moe.expert<ffn, relu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
