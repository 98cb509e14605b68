// A Mixtral-style layer with dense weights outlined by moe-compile.
func.func @layer(%x: tensor<?x64xf32> {moe.name = "x"},
                 %router: tensor<64x8xf32> {moe.name = "router"},
                 %wg: tensor<8x64x128xf32> {moe.name = "gate"},
                 %wu: tensor<8x64x128xf32> {moe.name = "up"},
                 %wd: tensor<8x128x64xf32> {moe.name = "down"})
    -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
         up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
