// Two GPT-OSS-style layers (E = 8, k = 2, router biases, top-k softmax,
// clamped SwiGLU); each expert is 3 * 16 * 32 * 4 = 6144 bytes. Used by
// plan-placement.mlir.
func.func @two(%x: tensor<?x16xf32>, %r0: tensor<16x8xf32>, %b0: tensor<8xf32>, %g0: tensor<8x16x32xf32>, %u0: tensor<8x16x32xf32>, %d0: tensor<8x32x16xf32>,
               %r1: tensor<16x8xf32>, %b1: tensor<8xf32>, %g1: tensor<8x16x32xf32>, %u1: tensor<8x16x32xf32>, %d1: tensor<8x32x16xf32>) -> tensor<?x16xf32> {
  %y0 = moe.layer %x, %r0 router_bias(%b0 : tensor<8xf32>) gate(%g0 : tensor<8x16x32xf32>) up(%u0 : tensor<8x16x32xf32>) down(%d0 : tensor<8x32x16xf32>)
        {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>, routing = #moe.routing<k = 2, scoring = topk_softmax>}
        : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %y1 = moe.layer %y0, %r1 router_bias(%b1 : tensor<8xf32>) gate(%g1 : tensor<8x16x32xf32>) up(%u1 : tensor<8x16x32xf32>) down(%d1 : tensor<8x32x16xf32>)
        {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>, routing = #moe.routing<k = 2, scoring = topk_softmax>}
        : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  return %y1 : tensor<?x16xf32>
}
