// The region form on a function argument, and a layer on a collapsed 3-D
// argument: bufferization copied both arguments on the host (to_buffer that
// was not read-only), which crashed on a GPU. See pipeline.mlir.
func.func @main(%x: tensor<?x16xf32>, %router: tensor<16x4xf32>, %W: tensor<4x16x16xf32>, %b: tensor<4x16xf32>) -> tensor<?x16xf32> {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %T = tensor.dim %x, %c0 : tensor<?x16xf32>
  %e = tensor.empty(%T) : tensor<?x4xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<?x4xf32>) -> tensor<?x4xf32>
  %logits = linalg.matmul ins(%x, %router : tensor<?x16xf32>, tensor<16x4xf32>) outs(%z : tensor<?x4xf32>) -> tensor<?x4xf32>
  %ids, %w = moe.route %logits {routing = #moe.routing<k = 2, scoring = sigmoid>}
      : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4, block_size = 1}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
  %c2 = arith.constant 2 : index
  %cpad = arith.constant 0 : index
  %TK = arith.muli %T, %c2 : index
  %R = arith.addi %TK, %cpad : index
  %dest = tensor.empty(%R) : tensor<?x16xf32>
  %rows = moe.generic_experts %x, %tok, %off into %dest {first_expert = 0, num_experts = 4}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32> {
  ^bb0(%in: tensor<?x16xf32>, %ex: index):
    %c0i = arith.constant 0 : index
    %n = tensor.dim %in, %c0i : tensor<?x16xf32>
    %we = tensor.extract_slice %W[%ex, 0, 0] [1, 16, 16] [1, 1, 1] : tensor<4x16x16xf32> to tensor<16x16xf32>
    %be = tensor.extract_slice %b[%ex, 0] [1, 16] [1, 1] : tensor<4x16xf32> to tensor<16xf32>
    %acc0 = tensor.empty(%n) : tensor<?x16xf32>
    %acc = linalg.fill ins(%zero : f32) outs(%acc0 : tensor<?x16xf32>) -> tensor<?x16xf32>
    %p = linalg.matmul ins(%in, %we : tensor<?x16xf32>, tensor<16x16xf32>) outs(%acc : tensor<?x16xf32>) -> tensor<?x16xf32>
    %th = math.tanh %p : tensor<?x16xf32>
    %bb = linalg.broadcast ins(%be : tensor<16xf32>) outs(%acc0 : tensor<?x16xf32>) dimensions = [0]
    %r = arith.addf %th, %bb : tensor<?x16xf32>
    moe.yield %r : tensor<?x16xf32>
  }
  %y = moe.combine %rows, %pos, %w : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

func.func @collapsed(%x3: tensor<1x?x64xf32>, %router: tensor<64x8xf32>,
                     %wg: tensor<8x64x128xf32>, %wu: tensor<8x64x128xf32>,
                     %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %x = tensor.collapse_shape %x3 [[0, 1], [2]] : tensor<1x?x64xf32> into tensor<?x64xf32>
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
         up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
