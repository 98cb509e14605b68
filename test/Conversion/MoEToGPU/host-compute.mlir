// RUN: moe-opt %s --convert-moe-to-gpu --split-input-file | FileCheck %s

// The region form: the offsets copied to the host, then for each expert
// with rows a gather, the region's ops (here a matmul, become a kernel) on
// the local expert's weight slice, and a scatter into a copy of dest.
// CHECK-LABEL: func.func @region
// CHECK-SAME: %[[TOK:[a-z0-9]+]]: tensor<?xi32>, %[[OFF:[a-z0-9]+]]: tensor<7xi32>, %[[DEST:[a-z0-9]+]]: tensor<?x64xf32>, %[[W:[a-z0-9]+]]: tensor<4x64x64xf32>
// CHECK: %[[OUT:.*]] = gpu.alloc (%{{.*}}) : memref<?x64xf32>
// CHECK: %[[DB:.*]] = bufferization.to_buffer %[[DEST]]
// CHECK: gpu.memcpy %[[OUT]], %[[DB]]
// CHECK: %[[HOST:.*]] = memref.alloc() {moe.host_buffer} : memref<7xi32>
// CHECK: %[[OB:.*]] = bufferization.to_buffer %[[OFF]]
// CHECK: gpu.memcpy %[[HOST]], %[[OB]]
// CHECK: scf.for %[[E:.*]] = %{{.*}} to %[[C4:.*]] step
// CHECK: %[[G:.*]] = arith.addi %[[E]], %[[C2:.*]] : index
// CHECK: memref.load %[[HOST]][%[[G]]]
// CHECK: scf.if
// CHECK: %[[ROWS:.*]] = gpu.alloc (%{{.*}}) : memref<?x64xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_generic_gather {{.*}} args({{.*}}, %[[ROWS]] : memref<?x64xf32>)
// CHECK: tensor.extract_slice %[[W]][%[[E]], 0, 0]
// CHECK: gpu.launch_func @moe_kernels::@moe_host_matmul
// CHECK: gpu.launch_func @moe_kernels::@moe_generic_scatter {{.*}}, %[[OUT]] : memref<?x64xf32>)
// CHECK: memref.dealloc %[[HOST]]
// CHECK: bufferization.to_tensor %[[OUT]] restrict writable
// The gather reads token max(t, 0); the scatter skips padding rows (t < 0).
// CHECK: gpu.func @moe_generic_gather
// CHECK: arith.maxsi
// CHECK: gpu.func @moe_generic_scatter
// CHECK: arith.cmpi sge
// The matmul: one thread per output element, the K loop carrying the sum
// from the init (which the payload reads).
// CHECK: gpu.func @moe_host_matmul(%{{.*}}: index, %{{.*}}: index, %[[K:.*]]: index, %{{.*}}: memref<?x64xf32, strided<[?, ?], offset: ?>>, %{{.*}}: memref<64x64xf32, strided<[?, ?], offset: ?>>, %[[INIT:.*]]: memref<?x64xf32, strided<[?, ?], offset: ?>>, %[[MO:.*]]: memref<?x64xf32>) kernel
// CHECK: %[[ACC0:.*]] = memref.load %[[INIT]]
// CHECK: %[[SUM:.*]] = scf.for %{{.*}} = %{{.*}} to %[[K]] step %{{.*}} iter_args(%{{.*}} = %[[ACC0]]) -> (f32)
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: memref.store %[[SUM]], %[[MO]]

func.func @region(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<7xi32>,
                  %dest: tensor<?x64xf32>, %w: tensor<4x64x64xf32>) -> tensor<?x64xf32> {
  %y = moe.generic_experts %x, %tok, %off into %dest {first_expert = 2, num_experts = 4}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<7xi32>, tensor<?x64xf32>) -> tensor<?x64xf32> {
  ^bb0(%rows: tensor<?x64xf32>, %e: index):
    %we = tensor.extract_slice %w[%e, 0, 0] [1, 64, 64] [1, 1, 1] : tensor<4x64x64xf32> to tensor<64x64xf32>
    %p = linalg.matmul ins(%rows, %we : tensor<?x64xf32>, tensor<64x64xf32>) outs(%rows : tensor<?x64xf32>) -> tensor<?x64xf32>
    moe.yield %p : tensor<?x64xf32>
  }
  return %y : tensor<?x64xf32>
}

// -----

// Elementwise arith on tensors becomes a generic kernel; a payload that does
// not read its init gets none; a scalar of the host that it uses is passed.
// CHECK-LABEL: func.func @elementwise
// CHECK-SAME: %[[S:[a-z0-9]+]]: f32
// CHECK: gpu.launch_func @moe_kernels::@moe_host_generic_0 {{.*}} args(%{{.*}} : index, %{{.*}} : index, %{{.*}} : memref<?x8xf32, strided<[?, ?], offset: ?>>, %{{.*}} : memref<?x8xf32, strided<[?, ?], offset: ?>>, %{{.*}} : memref<?x8xf32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_host_generic {{.*}} args(%{{.*}} : index, %{{.*}} : index, %{{.*}} : memref<?x8xf32, strided<[?, ?], offset: ?>>, %{{.*}} : memref<?x8xf32>, %[[S]] : f32)
// CHECK: gpu.func @moe_host_generic(%{{.*}}: index, %{{.*}}: index, %[[IN:.*]]: memref<?x8xf32, strided<[?, ?], offset: ?>>, %[[O:.*]]: memref<?x8xf32>, %[[SA:.*]]: f32)
// CHECK: %[[V:.*]] = memref.load %[[IN]]
// CHECK: %[[M:.*]] = arith.mulf %[[V]], %[[SA]]
// CHECK: memref.store %[[M]], %[[O]]
// CHECK: gpu.func @moe_host_generic_0
// CHECK: arith.addf

func.func @elementwise(%a: tensor<?x8xf32>, %b: tensor<?x8xf32>, %s: f32) -> tensor<?x8xf32> {
  %c = arith.addf %a, %b : tensor<?x8xf32>
  %d = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
                       iterator_types = ["parallel", "parallel"]}
      ins(%c : tensor<?x8xf32>) outs(%a : tensor<?x8xf32>) {
    ^bb0(%v: f32, %o: f32):
      %m = arith.mulf %v, %s : f32
      linalg.yield %m : f32
  } -> tensor<?x8xf32>
  return %d : tensor<?x8xf32>
}

// -----

// tensor.pad with a constant value: the source where the position minus the
// low padding is in range (unsigned compare), the value elsewhere.
// CHECK-LABEL: func.func @pad
// CHECK: %[[V:.*]] = arith.constant 5.000000e-01 : f32
// CHECK: %[[OUT:.*]] = gpu.alloc (%{{.*}}) : memref<?x11xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_host_pad {{.*}} args(%{{.*}} : memref<?x8xf32, strided<[?, ?], offset: ?>>, %[[V]] : f32, %{{.*}} : index, %{{.*}} : index, %[[OUT]] : memref<?x11xf32>)
// CHECK: gpu.func @moe_host_pad
// CHECK: arith.cmpi ult
// CHECK: scf.if %{{.*}} -> (f32)
// CHECK: memref.load
// CHECK: else
// CHECK: scf.yield %{{.*}} : f32

func.func @pad(%a: tensor<?x8xf32>) -> tensor<?x11xf32> {
  %z = arith.constant 0.5 : f32
  %p = tensor.pad %a low[0, 1] high[0, 2] {
  ^bb0(%i: index, %j: index):
    tensor.yield %z : f32
  } : tensor<?x8xf32> to tensor<?x11xf32>
  return %p : tensor<?x11xf32>
}

// -----

// A Gather as the importer writes it: the payload reads the table with
// tensor.extract (the table becomes a view argument, the extract a load);
// a splat constant input is a scalar in the kernel, not a buffer.
// CHECK-LABEL: func.func @gather
// CHECK-SAME: %[[IDS:[a-z0-9]+]]: tensor<?xi64>, %[[TABLE:[a-z0-9]+]]: tensor<32x8xf32>
// CHECK: %[[TV:.*]] = bufferization.to_buffer %[[TABLE]] read_only : tensor<32x8xf32> to memref<32x8xf32, strided<[?, ?], offset: ?>>
// CHECK: gpu.launch_func @moe_kernels::@moe_host_generic {{.*}} args(%{{.*}} : index, %{{.*}} : index, %{{.*}} : memref<?xi64, strided<[?], offset: ?>>, %{{.*}} : memref<?x8xf32>, %[[TV]] : memref<32x8xf32, strided<[?, ?], offset: ?>>)
// CHECK: gpu.func @moe_host_generic(%{{.*}}: index, %{{.*}}: index, %[[I:.*]]: memref<?xi64, strided<[?], offset: ?>>, %[[O:.*]]: memref<?x8xf32>, %[[T:.*]]: memref<32x8xf32, strided<[?, ?], offset: ?>>)
// CHECK: %[[TWO:.*]] = arith.constant 2.000000e+00 : f32
// CHECK: %[[ID:.*]] = memref.load %[[I]]
// CHECK: %[[ROW:.*]] = arith.index_cast %[[ID]]
// CHECK: %[[V:.*]] = memref.load %[[T]][%[[ROW]], %{{.*}}]
// CHECK: %[[M:.*]] = arith.mulf %[[V]], %[[TWO]]
// CHECK: memref.store %[[M]], %[[O]]
func.func @gather(%ids: tensor<?xi64>, %table: tensor<32x8xf32>) -> tensor<?x8xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %ids, %c0 : tensor<?xi64>
  %two = arith.constant dense<2.0> : tensor<8xf32>
  %e = tensor.empty(%n) : tensor<?x8xf32>
  %g = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (j)>, affine_map<(i, j) -> (i, j)>],
                       iterator_types = ["parallel", "parallel"]}
      ins(%ids, %two : tensor<?xi64>, tensor<8xf32>) outs(%e : tensor<?x8xf32>) {
    ^bb0(%id: i64, %t: f32, %o: f32):
      %row = arith.index_cast %id : i64 to index
      %col = linalg.index 1 : index
      %v = tensor.extract %table[%row, %col] : tensor<32x8xf32>
      %m = arith.mulf %v, %t : f32
      linalg.yield %m : f32
  } -> tensor<?x8xf32>
  return %g : tensor<?x8xf32>
}

// -----

// A Concat as two tensor.insert_slice: the first into an empty tensor reads
// only its source (nothing of the empty destination), the second keeps the
// first's elements outside its slice.
// CHECK-LABEL: func.func @concat
// CHECK: %[[FIRST:.*]] = gpu.alloc (%{{.*}}) : memref<?x12xf32>
// CHECK: gpu.launch_func @moe_kernels::@[[K1:moe_host_insert_slice[_0-9]*]] {{.*}} args(%{{.*}} : memref<?x8xf32, strided<[?, ?], offset: ?>>, %{{.*}} : index, %{{.*}} : index, %{{.*}} : index, %{{.*}} : index, %[[FIRST]] : memref<?x12xf32>)
// CHECK: %[[T:.*]] = bufferization.to_tensor %[[FIRST]]
// CHECK: %[[DV:.*]] = bufferization.to_buffer %[[T]] read_only
// CHECK: gpu.launch_func @moe_kernels::@[[K2:moe_host_insert_slice[_0-9]*]] {{.*}} args(%{{.*}} : memref<?x4xf32, strided<[?, ?], offset: ?>>, %[[DV]] : memref<?x12xf32, strided<[?, ?], offset: ?>>,
// CHECK-DAG: gpu.func @[[K1]](%{{[^)]*}}: memref<?x8xf32, strided<[?, ?], offset: ?>>, %{{[^)]*}}: index, %{{[^)]*}}: index, %{{[^)]*}}: index, %{{[^)]*}}: index, %{{[^)]*}}: memref<?x12xf32>)
// CHECK-DAG: gpu.func @[[K2]](%{{[^)]*}}: memref<?x4xf32, strided<[?, ?], offset: ?>>, %{{[^)]*}}: memref<?x12xf32, strided<[?, ?], offset: ?>>,
// CHECK-DAG: scf.if %{{.*}} -> (f32)
func.func @concat(%a: tensor<?x8xf32>, %b: tensor<?x4xf32>) -> tensor<?x12xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %a, %c0 : tensor<?x8xf32>
  %e = tensor.empty(%n) : tensor<?x12xf32>
  %x = tensor.insert_slice %a into %e[0, 0] [%n, 8] [1, 1] : tensor<?x8xf32> into tensor<?x12xf32>
  %y = tensor.insert_slice %b into %x[0, 8] [%n, 4] [1, 1] : tensor<?x4xf32> into tensor<?x12xf32>
  return %y : tensor<?x12xf32>
}

// -----

// A reduction into an empty tensor (its values undefined): the kernel does
// not read it (it would be host memory) and starts from zero.
// CHECK-LABEL: func.func @reduce_into_empty
// CHECK: gpu.launch_func @moe_kernels::@moe_host_reduce {{.*}} args(%{{.*}} : index, %{{.*}} : index, %{{.*}} : memref<?x8xf32, strided<[?, ?], offset: ?>>, %{{.*}} : memref<?xf32>)
// CHECK: gpu.func @moe_host_reduce(
// CHECK: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: scf.for {{.*}} iter_args(%{{.*}} = %[[ZERO]]) -> (f32)
func.func @reduce_into_empty(%a: tensor<?x8xf32>) -> tensor<?xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %a, %c0 : tensor<?x8xf32>
  %e = tensor.empty(%n) : tensor<?xf32>
  %r = linalg.reduce ins(%a : tensor<?x8xf32>) outs(%e : tensor<?xf32>) dimensions = [1]
    (%x: f32, %acc: f32) {
      %s = arith.addf %x, %acc : f32
      linalg.yield %s : f32
    }
  return %r : tensor<?xf32>
}
