// RUN: moe-opt %s --moe-cpu-pipeline="generic-alloc=1" | FileCheck %s
// RUN: moe-opt %s --moe-cpu-pipeline | FileCheck %s --check-prefix=DEFAULT

// With generic-alloc (what moe-compile uses), heap buffers come from the
// generic functions of the memref lowering, which moe-compile links in
// (runtime/support/ModelAlloc.c: a cache of large blocks); by default,
// from malloc and free.

// CHECK-DAG: llvm.func @_mlir_memref_to_llvm_free(!llvm.ptr)
// CHECK-DAG: llvm.func @_mlir_memref_to_llvm_{{(aligned_)?}}alloc(
// CHECK-NOT: llvm.call @malloc
// CHECK: llvm.call @_mlir_memref_to_llvm_{{(aligned_)?}}alloc(
// CHECK: llvm.call @_mlir_memref_to_llvm_free(

// DEFAULT-NOT: _mlir_memref_to_llvm
// DEFAULT: llvm.call @{{(malloc|aligned_alloc)}}(
// DEFAULT: llvm.call @free(
func.func @scaled_sum(%x: tensor<?x64xf32>, %w: tensor<64x64xf32>) -> tensor<?x64xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x64xf32>
  %e = tensor.empty(%n) : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<?x64xf32>) -> tensor<?x64xf32>
  %h = linalg.matmul ins(%x, %w : tensor<?x64xf32>, tensor<64x64xf32>) outs(%z : tensor<?x64xf32>) -> tensor<?x64xf32>
  %e2 = tensor.empty(%n) : tensor<?x64xf32>
  %z2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<?x64xf32>) -> tensor<?x64xf32>
  %y = linalg.matmul ins(%h, %w : tensor<?x64xf32>, tensor<64x64xf32>) outs(%z2 : tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
