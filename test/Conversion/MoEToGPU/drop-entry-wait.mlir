// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-drop-entry-wait="entry=main" | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-drop-entry-wait | FileCheck %s --check-prefix=NONE

// The entry's blocking wait right before its return goes; the one before a
// host read (the copy of the counts) stays, as do the waits of a function
// that is not the entry. Without an entry, nothing changes.
// CHECK-LABEL: func.func @main
// CHECK: gpu.memcpy async
// CHECK-NEXT: gpu.wait [
// CHECK-NEXT: memref.load
// CHECK: gpu.launch_func async
// CHECK-NEXT: return
// CHECK-LABEL: func.func @other
// CHECK: gpu.launch_func async
// CHECK-NEXT: gpu.wait [
// CHECK-NEXT: return
// NONE-LABEL: func.func @main
// NONE: gpu.launch_func async
// NONE-NEXT: gpu.wait [
// NONE-NEXT: return
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%arg0: memref<4xf32>) kernel {
      gpu.return
    }
  }
  func.func @main(%arg0: memref<4xf32>, %counts: memref<4xi32>) -> memref<4xf32> {
    %c1 = arith.constant 1 : index
    %c0 = arith.constant 0 : index
    %host = memref.alloc() : memref<4xi32>
    %t0 = gpu.wait async
    %t1 = gpu.memcpy async [%t0] %host, %counts : memref<4xi32>, memref<4xi32>
    gpu.wait [%t1]
    %n = memref.load %host[%c0] : memref<4xi32>
    %t2 = gpu.wait async
    %t3 = gpu.launch_func async [%t2] @kernels::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%arg0 : memref<4xf32>)
    gpu.wait [%t3]
    return %arg0 : memref<4xf32>
  }
  func.func @other(%arg0: memref<4xf32>) -> memref<4xf32> {
    %c1 = arith.constant 1 : index
    %t0 = gpu.wait async
    %t1 = gpu.launch_func async [%t0] @kernels::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%arg0 : memref<4xf32>)
    gpu.wait [%t1]
    return %arg0 : memref<4xf32>
  }
}

// -----

// An entry that another function calls keeps its wait: the caller reads the
// results.
// CHECK-LABEL: func.func @main
// CHECK: gpu.launch_func async
// CHECK-NEXT: gpu.wait [
// CHECK-NEXT: return
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%arg0: memref<4xf32>) kernel {
      gpu.return
    }
  }
  func.func @main(%arg0: memref<4xf32>) -> memref<4xf32> {
    %c1 = arith.constant 1 : index
    %t0 = gpu.wait async
    %t1 = gpu.launch_func async [%t0] @kernels::@k blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%arg0 : memref<4xf32>)
    gpu.wait [%t1]
    return %arg0 : memref<4xf32>
  }
  func.func @caller(%arg0: memref<4xf32>) -> f32 {
    %c0 = arith.constant 0 : index
    %r = func.call @main(%arg0) : (memref<4xf32>) -> memref<4xf32>
    %v = memref.load %r[%c0] : memref<4xf32>
    return %v : f32
  }
}

// -----

// expected-error @below {{moe-drop-entry-wait: no function 'main' with a body in the module}}
module {
  func.func private @main(memref<4xf32>)
}
