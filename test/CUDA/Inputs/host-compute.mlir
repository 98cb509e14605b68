// A layer whose output is concatenated with its input on the host: the
// concatenation would copy GPU memory on the host (elementwise ops and linalg
// ops there become kernels; tensor.concat does not).
func.func @main(%x: tensor<?x64xf32> {moe.name = "x"}, %router: tensor<64x8xf32>,
                %wu: tensor<8x64x128xf32>, %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 2>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  %h = tensor.concat dim(0) %x, %y : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}
