// RUN: moe-opt %s --moe-cpu-pipeline | FileCheck %s
// RUN: moe-opt %s --moe-cpu-pipeline=vectorize=false | FileCheck %s --check-prefix=SCALAR

// The default CPU pipeline vectorizes a moe.layer down to LLVM: the expert
// GEMMs are AVX-512-wide fused multiply-adds in OpenMP parallel loops, and no
// vector dialect op is left.
// CHECK-LABEL: llvm.func @layer
// CHECK: omp.parallel
// CHECK: omp.wsloop
// CHECK: llvm.intr.fmuladd({{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
// CHECK-NOT: vector.

// SCALAR-LABEL: llvm.func @layer
// SCALAR-NOT: vector<16xf32>
func.func @layer(%x: tensor<?x64xf32>, %r: tensor<64x4xf32>, %wg: tensor<4x64x512xf32>, %wu: tensor<4x64x512xf32>, %wd: tensor<4x512x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %r gate(%wg : tensor<4x64x512xf32>) up(%wu : tensor<4x64x512xf32>) down(%wd : tensor<4x512x64xf32>)
     {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, renormalize = true>}
     : (tensor<?x64xf32>, tensor<64x4xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
