// Two DeepSeek-V3-style layers (E = 8 in 4 groups of 2, 2 groups per token,
// k = 2, sigmoid scores); each expert is 3 * 16 * 32 * 4 =
// 6144 bytes, 98304 bytes in all. Used by plan-placement.mlir.
func.func @two(%x: tensor<?x16xf32>, %r0: tensor<16x8xf32>, %g0: tensor<8x16x32xf32>, %u0: tensor<8x16x32xf32>, %d0: tensor<8x32x16xf32>,
               %r1: tensor<16x8xf32>, %g1: tensor<8x16x32xf32>, %u1: tensor<8x16x32xf32>, %d1: tensor<8x32x16xf32>) -> tensor<?x16xf32> {
  %y0 = moe.layer %x, %r0 gate(%g0 : tensor<8x16x32xf32>) up(%u0 : tensor<8x16x32xf32>) down(%d0 : tensor<8x32x16xf32>)
        {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, scoring = sigmoid, renormalize = true, n_group = 4, topk_group = 2>}
        : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  %y1 = moe.layer %y0, %r1 gate(%g1 : tensor<8x16x32xf32>) up(%u1 : tensor<8x16x32xf32>) down(%d1 : tensor<8x32x16xf32>)
        {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, scoring = sigmoid, renormalize = true, n_group = 4, topk_group = 2>}
        : (tensor<?x16xf32>, tensor<16x8xf32>) -> tensor<?x16xf32>
  return %y1 : tensor<?x16xf32>
}
