// x·W + b and x·S: W is outlined as a weight, b (32 bytes) stays in the
// code, S is a splat outlined as a weight. W[i][j] = ((8i+j) mod 7 - 3)/8,
// b[j] = (j-4)/4, S = 0.25 everywhere (see compare.py).
func.func @affine(%x: tensor<?x16xf32> {moe.name = "x"})
    -> (tensor<?x8xf32> {moe.name = "y"}, tensor<?x8xf32>) {
  %W = arith.constant {moe.name = "W"} dense<[[-0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375],
      [-0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375, -0.25],
      [-0.125, 0.0, 0.125, 0.25, 0.375, -0.375, -0.25, -0.125],
      [0.0, 0.125, 0.25, 0.375, -0.375, -0.25, -0.125, 0.0],
      [0.125, 0.25, 0.375, -0.375, -0.25, -0.125, 0.0, 0.125],
      [0.25, 0.375, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25],
      [0.375, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375],
      [-0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375],
      [-0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375, -0.25],
      [-0.125, 0.0, 0.125, 0.25, 0.375, -0.375, -0.25, -0.125],
      [0.0, 0.125, 0.25, 0.375, -0.375, -0.25, -0.125, 0.0],
      [0.125, 0.25, 0.375, -0.375, -0.25, -0.125, 0.0, 0.125],
      [0.25, 0.375, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25],
      [0.375, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375],
      [-0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375],
      [-0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375, -0.25]]> : tensor<16x8xf32>
  %b = arith.constant dense<[-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]> : tensor<8xf32>
  %S = arith.constant dense<0.25> : tensor<16x8xf32>
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x16xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty(%n) : tensor<?x8xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %xw = linalg.matmul ins(%x, %W : tensor<?x16xf32>, tensor<16x8xf32>)
                      outs(%init : tensor<?x8xf32>) -> tensor<?x8xf32>
  %y = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%xw, %b : tensor<?x8xf32>, tensor<8xf32>) outs(%e : tensor<?x8xf32>) {
  ^bb0(%a: f32, %c: f32, %o: f32):
    %s = arith.addf %a, %c : f32
    linalg.yield %s : f32
  } -> tensor<?x8xf32>
  %init2 = linalg.fill ins(%zero : f32) outs(%e : tensor<?x8xf32>) -> tensor<?x8xf32>
  %z = linalg.matmul ins(%x, %S : tensor<?x16xf32>, tensor<16x8xf32>)
                     outs(%init2 : tensor<?x8xf32>) -> tensor<?x8xf32>
  return %y, %z : tensor<?x8xf32>, tensor<?x8xf32>
}
