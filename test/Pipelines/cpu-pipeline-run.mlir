// RUN: moe-opt %s --moe-cpu-pipeline | mlir-runner -e main -entry-point-result=void -shared-libs=/usr/lib/llvm-22/lib/libmlir_c_runner_utils.so,/usr/lib/llvm-22/lib/libmlir_runner_utils.so,/usr/lib/llvm-22/lib/libomp.so | FileCheck %s
// Parallel tasks over rows and columns (a partial block of rows), K blocks.
// RUN: moe-opt %s --moe-cpu-pipeline="parallel-tile-sizes=2,16 reduction-tile-size=8 register-tile-sizes=2,16" | mlir-runner -e main -entry-point-result=void -shared-libs=/usr/lib/llvm-22/lib/libmlir_c_runner_utils.so,/usr/lib/llvm-22/lib/libmlir_runner_utils.so,/usr/lib/llvm-22/lib/libomp.so | FileCheck %s
// Reference (numpy, float64): every row is 0.00638963 (identical experts,
// renormalized top-2 weights sum to one).
// CHECK: sizes = [3, 16]
// CHECK-COUNT-3: [0.00638963,   0.00638963,
func.func @layer(%x: tensor<?x16xf32>, %r: tensor<16x4xf32>, %wg: tensor<4x16x32xf32>, %wu: tensor<4x16x32xf32>, %wd: tensor<4x32x16xf32>) -> tensor<?x16xf32> {
  %y = moe.layer %x, %r gate(%wg : tensor<4x16x32xf32>) up(%wu : tensor<4x16x32xf32>) down(%wd : tensor<4x32x16xf32>)
     {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, renormalize = true>}
     : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
func.func private @printMemrefF32(tensor<*xf32>)
func.func @main() {
  %x0 = arith.constant dense<0.5> : tensor<3x16xf32>
  %x = tensor.cast %x0 : tensor<3x16xf32> to tensor<?x16xf32>
  %r0 = arith.constant dense<[0.1, -0.2, 0.3, 0.05]> : tensor<4xf32>
  %rb = tensor.empty() : tensor<16x4xf32>
  %rr = linalg.broadcast ins(%r0 : tensor<4xf32>) outs(%rb : tensor<16x4xf32>) dimensions = [0]
  %wg = arith.constant dense<0.01> : tensor<4x16x32xf32>
  %wu = arith.constant dense<0.02> : tensor<4x16x32xf32>
  %wd = arith.constant dense<0.03> : tensor<4x32x16xf32>
  %y = func.call @layer(%x, %rr, %wg, %wu, %wd) : (tensor<?x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x16xf32>
  %u = tensor.cast %y : tensor<?x16xf32> to tensor<*xf32>
  func.call @printMemrefF32(%u) : (tensor<*xf32>) -> ()
  return
}
