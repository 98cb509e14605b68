// A layer whose output is also added to its input on the host: the addition
// would run on the host against GPU memory.
func.func @main(%x: tensor<?x64xf32> {moe.name = "x"}, %router: tensor<64x8xf32>,
                %wu: tensor<8x64x128xf32>, %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  %h = arith.addf %x, %y : tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}
