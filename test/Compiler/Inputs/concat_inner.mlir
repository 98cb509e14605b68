// Concatenation along the inner axis bufferizes to a strided memref.copy,
// which lowers to a call of MLIR's memrefCopy.
func.func @main(%x: tensor<?x3xf32> {moe.name = "x"}) -> tensor<?x5xf32> {
  %y = tensor.concat dim(1) %x, %x : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x6xf32>
  %c0 = arith.constant 0 : index
  %t = tensor.dim %x, %c0 : tensor<?x3xf32>
  %s = tensor.extract_slice %y[0, 1] [%t, 5] [1, 1] : tensor<?x6xf32> to tensor<?x5xf32>
  return %s : tensor<?x5xf32>
}
