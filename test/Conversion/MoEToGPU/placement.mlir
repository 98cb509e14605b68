// RUN: moe-opt %s --convert-moe-to-gpu --canonicalize --split-input-file | FileCheck %s

// Placed experts: the offsets go to the host, every expert with rows is
// prefetched, then batches: acquire until the cache has no free slot (-1),
// the slots to the device, the GEMMs (which read the slots), release.
// CHECK-LABEL: func @placed
// CHECK: %[[HOSTOFF:.*]] = memref.alloc() {moe.host_buffer} : memref<9xi32>
// CHECK: gpu.memcpy %[[HOSTOFF]], %{{.*}} : memref<9xi32>, memref<9xi32>
// CHECK: scf.for
// CHECK: func.call @moe_rt_expert_prefetch(%c3_i64, %{{.*}}) : (i64, i64) -> ()
// CHECK: %[[HOSTSLOTS:.*]] = memref.alloc() {moe.host_buffer} : memref<8xi32>
// CHECK: %[[SLOTS:.*]] = gpu.alloc () : memref<8xi32>
// CHECK: scf.while (%[[FIRST:.*]] = %c0) : (index) -> index
// CHECK: memref.store %c-1_i32, %[[HOSTSLOTS]]
// CHECK: scf.for %{{.*}} = %[[FIRST]] to %c8 step %c1 iter_args
// CHECK: %[[SLOT:.*]] = func.call @moe_rt_expert_acquire(%c3_i64, %{{.*}}) : (i64, i64) -> i64
// CHECK: gpu.memcpy %[[SLOTS]], %[[HOSTSLOTS]] : memref<8xi32>, memref<8xi32>
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up_skinny {{.*}} args(%{{.*}} : memref<?xi32>, %{{.*}} : memref<9xi32>, %[[SLOTS]] : memref<8xi32>
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down_reduce {{.*}} args(%{{.*}} : memref<?xi32>, %{{.*}} : memref<9xi32>, %[[SLOTS]] : memref<8xi32>
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up {{.*}}, %[[SLOTS]] : memref<8xi32>
// CHECK: func.call @moe_rt_expert_release(%c3_i64, %{{.*}}) : (i64, i64) -> ()
// CHECK: scf.yield
// CHECK: gpu.dealloc %[[SLOTS]]
// CHECK: memref.dealloc %[[HOSTSLOTS]]
// CHECK: memref.dealloc %[[HOSTOFF]]
// The skinny kernels read a weight at the slot of their row group's expert.
// CHECK: gpu.func @moe_experts_up_skinny(%{{.*}}: memref<?xi32>, %{{.*}}: memref<9xi32>, %[[KSLOTS:.*]]: memref<8xi32>
// CHECK: memref.load %[[KSLOTS]]
// CHECK-DAG: func.func private @moe_rt_expert_acquire(i64, i64) -> i64
// CHECK-DAG: func.func private @moe_rt_expert_release(i64, i64)
// CHECK-DAG: func.func private @moe_rt_expert_prefetch(i64, i64)
func.func @placed(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
    %dest: tensor<?x16xf32>, %u: tensor<?x16x32xf32>, %d: tensor<?x32x16xf32>,
    %bd: tensor<8x16xf32>) -> tensor<?x16xf32> {
  %r = moe.experts %x, %tok, %off into %dest up(%u : tensor<?x16x32xf32>)
      down(%d : tensor<?x32x16xf32>) down_bias(%bd : tensor<8x16xf32>)
      {expert = #moe.expert<ffn, relu>,
       placement = #moe.placement<layer = 3, experts = 8, slots = 2>}
      : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

// Predictions and traces: the ids go to the host, one call per id >= 0.
// CHECK-LABEL: func @prefetch_and_trace
// CHECK: %[[IDS:.*]] = memref.alloc(%{{.*}}) {moe.host_buffer} : memref<?x2xi32>
// CHECK: gpu.memcpy %[[IDS]]
// CHECK: scf.for %[[T:.*]] =
// CHECK: scf.for %[[J:.*]] =
// CHECK: memref.load %[[IDS]][%[[T]], %[[J]]] : memref<?x2xi32>
// CHECK: arith.cmpi sge
// CHECK: func.call @moe_rt_expert_predict(%c1_i64, %{{.*}}) : (i64, i64) -> ()
// CHECK: memref.dealloc %[[IDS]]
// CHECK: func.call @moe_rt_trace_routing(%c0_i64, %c8_i64, %{{.*}}, %{{.*}}) : (i64, i64, i64, i64) -> ()
func.func @prefetch_and_trace(%ids: tensor<?x2xi32>) {
  moe.prefetch %ids {layer = 1 : i64} : tensor<?x2xi32>
  moe.trace_routing %ids {layer = 0 : i64, num_experts = 8 : i64} : tensor<?x2xi32>
  return
}
