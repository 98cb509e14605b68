// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-host-buffers-to-gpu | FileCheck %s

// What bufferization allocated and copied in a function that launches
// kernels becomes device memory; the host buffer marked moe.host_buffer stays.
// CHECK-LABEL: func.func @launches
// CHECK-SAME: (%[[X:.*]]: memref<?x16xf32>, %[[N:.*]]: index)
// CHECK: %[[A:.*]] = gpu.alloc (%[[N]]) : memref<?x16xf32>
// CHECK-NEXT: gpu.memcpy %[[A]], %[[X]] : memref<?x16xf32>, memref<?x16xf32>
// CHECK: %[[H:.*]] = memref.alloc() {moe.host_buffer} : memref<5xi32>
// CHECK: gpu.launch_func @kernels::@k
// CHECK-SAME: args(%[[A]] : memref<?x16xf32>)
// CHECK: gpu.dealloc %[[A]] : memref<?x16xf32>
// CHECK: memref.dealloc %[[H]] : memref<5xi32>
// CHECK-NOT: memref.copy

// A function without launches runs on the host: untouched.
// CHECK-LABEL: func.func @host_only
// CHECK: memref.alloc
// CHECK: memref.copy
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%a: memref<?x16xf32>) kernel {
      gpu.return
    }
  }
  func.func @launches(%x: memref<?x16xf32>, %n: index) {
    %c1 = arith.constant 1 : index
    %a = memref.alloc(%n) {alignment = 64 : i64} : memref<?x16xf32>
    memref.copy %x, %a : memref<?x16xf32> to memref<?x16xf32>
    %h = memref.alloc() {moe.host_buffer} : memref<5xi32>
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1)
        threads in (%c1, %c1, %c1) args(%a : memref<?x16xf32>)
    memref.dealloc %a : memref<?x16xf32>
    memref.dealloc %h : memref<5xi32>
    return
  }
  func.func @host_only(%x: memref<4xf32>) {
    %a = memref.alloc() : memref<4xf32>
    memref.copy %x, %a : memref<4xf32> to memref<4xf32>
    return
  }
}

// -----

// A strided copy has no kernel: an error, not a host copy of device memory.
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%a: memref<4x4xf32>) kernel {
      gpu.return
    }
  }
  func.func @strided(%x: memref<4x8xf32>) {
    %c1 = arith.constant 1 : index
    %v = memref.subview %x[0, 0] [4, 4] [1, 1]
        : memref<4x8xf32> to memref<4x4xf32, strided<[8, 1]>>
    %a = memref.alloc() : memref<4x4xf32>
    // expected-error @below {{copies a strided view of device memory on the host; the CUDA target has no kernel for it}}
    memref.copy %v, %a : memref<4x4xf32, strided<[8, 1]>> to memref<4x4xf32>
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1)
        threads in (%c1, %c1, %c1) args(%a : memref<4x4xf32>)
    return
  }
}

// -----

// A shape that only the host writes and memref.reshape reads stays in host
// memory; the copy into a device buffer becomes gpu.memcpy.
// CHECK-LABEL: func.func @shape
// CHECK: %[[D:.*]] = gpu.alloc () : memref<16xf32>
// CHECK: gpu.memcpy %[[D]], %{{.*}} : memref<16xf32>, memref<16xf32>
// CHECK: %[[S:.*]] = memref.alloc() : memref<2xindex>
// CHECK: memref.store %{{.*}}, %[[S]]
// CHECK: memref.reshape %[[D]](%[[S]])
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%a: memref<?x?xf32>) kernel {
      gpu.return
    }
  }
  func.func @shape(%x: memref<16xf32>, %n: index) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    %d = memref.alloc() : memref<16xf32>
    memref.copy %x, %d : memref<16xf32> to memref<16xf32>
    %s = memref.alloc() : memref<2xindex>
    memref.store %n, %s[%c0] : memref<2xindex>
    memref.store %c4, %s[%c1] : memref<2xindex>
    %r = memref.reshape %d(%s) : (memref<16xf32>, memref<2xindex>) -> memref<?x?xf32>
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1)
        threads in (%c1, %c1, %c1) args(%r : memref<?x?xf32>)
    return
  }
}

// -----

// The host writing a buffer that a kernel then reads: an error.
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%a: memref<4xf32>) kernel {
      gpu.return
    }
  }
  func.func @mixed(%v: f32) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %a = memref.alloc() : memref<4xf32>
    // expected-error @below {{reads or writes on the host a buffer that also is device memory (a kernel or a copy uses it); the CUDA target cannot run it}}
    memref.store %v, %a[%c0] : memref<4xf32>
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1)
        threads in (%c1, %c1, %c1) args(%a : memref<4xf32>)
    return
  }
}

// -----

// The host reading an element of an argument (device memory): an error.
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%a: memref<4xf32>) kernel {
      gpu.return
    }
  }
  func.func @reads_argument(%x: memref<8xf32>) -> f32 {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %v = memref.subview %x[4] [4] [1] : memref<8xf32> to memref<4xf32, strided<[1], offset: 4>>
    // expected-error @below {{accesses device memory on the host (a function argument or a gpu.alloc buffer of a function that launches kernels); the CUDA target cannot run it}}
    %e = memref.load %v[%c0] : memref<4xf32, strided<[1], offset: 4>>
    %a = gpu.alloc () : memref<4xf32>
    gpu.launch_func @kernels::@k blocks in (%c1, %c1, %c1)
        threads in (%c1, %c1, %c1) args(%a : memref<4xf32>)
    return %e : f32
  }
}
