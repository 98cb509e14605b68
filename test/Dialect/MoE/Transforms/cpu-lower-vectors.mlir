// RUN: moe-opt %s --split-input-file --verify-diagnostics --pass-pipeline='builtin.module(func.func(moe-cpu-lower-vectors))' | FileCheck %s

// A row with a unit leading dimension becomes a 1-d load and store.
// CHECK-LABEL: func.func @unit_row
// CHECK: %[[ROW:.*]] = memref.subview %{{.*}}[0, 0] [1, 16] [1, 1] : memref<1x16xf32, strided<[512, 1], offset: ?>> to memref<16xf32
// CHECK: %[[V:.*]] = vector.load %[[ROW]][%{{.*}}] : memref<16xf32, {{.*}}>, vector<16xf32>
// CHECK: %[[W:.*]] = arith.addf %[[V]], %[[V]] : vector<16xf32>
// CHECK: vector.store %[[W]], %{{.*}}[%{{.*}}] : memref<16xf32, {{.*}}>, vector<16xf32>
// CHECK-NOT: vector<1x16xf32>
func.func @unit_row(%src: memref<1x16xf32, strided<[512, 1], offset: ?>>, %dst: memref<1x16xf32, strided<[512, 1], offset: ?>>) {
  %c0 = arith.constant 0 : index
  %pad = arith.constant 0.0 : f32
  %v = vector.transfer_read %src[%c0, %c0], %pad {in_bounds = [true, true]} : memref<1x16xf32, strided<[512, 1], offset: ?>>, vector<1x16xf32>
  %w = arith.addf %v, %v : vector<1x16xf32>
  vector.transfer_write %w, %dst[%c0, %c0] {in_bounds = [true, true]} : vector<1x16xf32>, memref<1x16xf32, strided<[512, 1], offset: ?>>
  return
}

// -----

// A 2-d vector that is left is reported instead of reaching LLVM.
func.func @tile(%m: memref<4x16xf32>) -> vector<4x16xf32> {
  %c0 = arith.constant 0 : index
  %pad = arith.constant 0.0 : f32
  // expected-error @+1 {{has a vector of rank 2 or more, which the CPU pipeline does not lower to LLVM}}
  %v = vector.transfer_read %m[%c0, %c0], %pad {in_bounds = [true, true]} : memref<4x16xf32>, vector<4x16xf32>
  return %v : vector<4x16xf32>
}
