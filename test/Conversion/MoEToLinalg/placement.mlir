// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s

// Placed experts: the loads of every expert with rows are queued first, then
// each expert's slot is acquired around its FFN and released once its rows
// are in place; the weights are sliced at the slot, the bias at the expert.
// CHECK-LABEL: func @placed
// CHECK: scf.for %[[E:.*]] = %{{.*}} to %{{.*}} step
// CHECK: scf.if
// CHECK: %[[QE:.*]] = arith.index_cast %[[E]] : index to i64
// CHECK: func.call @moe_rt_expert_prefetch(%c3_i64, %[[QE]]) : (i64, i64) -> ()
// CHECK: scf.for %[[L:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args
// CHECK: scf.if
// CHECK: %[[SLOT64:.*]] = func.call @moe_rt_expert_acquire(%c3_i64, %{{.*}}) : (i64, i64) -> i64
// CHECK: %[[SLOT:.*]] = arith.index_cast %[[SLOT64]] : i64 to index
// CHECK: tensor.extract_slice %{{.*}}[%[[SLOT]], 0, 0] [1, 16, 32] [1, 1, 1] : tensor<?x16x32xf32> to tensor<16x32xf32>
// CHECK: tensor.extract_slice %{{.*}}[%[[L]], 0] [1, 16] [1, 1] : tensor<8x16xf32> to tensor<16xf32>
// CHECK: linalg.matmul
// CHECK: tensor.insert_slice
// CHECK-NEXT: arith.index_cast
// CHECK-NEXT: func.call @moe_rt_expert_release(%c3_i64, %{{.*}}) : (i64, i64) -> ()
// CHECK-NEXT: scf.yield
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

// Predictions and traces: one call per assignment, skipping ids of -1.
// CHECK-LABEL: func @prefetch_and_trace
// CHECK: scf.for %[[T:.*]] =
// CHECK: scf.for %[[J:.*]] =
// CHECK: %[[ID:.*]] = tensor.extract %{{.*}}[%[[T]], %[[J]]] : tensor<?x2xi32>
// CHECK: %[[IDX:.*]] = arith.index_cast %[[ID]] : i32 to index
// CHECK: %[[OK:.*]] = arith.cmpi sge, %[[IDX]], %{{.*}} : index
// CHECK: scf.if %[[OK]]
// CHECK: func.call @moe_rt_expert_predict(%c1_i64, %{{.*}}) : (i64, i64) -> ()
// CHECK: func.call @moe_rt_trace_routing(%c0_i64, %c8_i64, %{{.*}}, %{{.*}}) : (i64, i64, i64, i64) -> ()
func.func @prefetch_and_trace(%ids: tensor<?x2xi32>) {
  moe.prefetch %ids {layer = 1 : i64} : tensor<?x2xi32>
  moe.trace_routing %ids {layer = 0 : i64, num_experts = 8 : i64} : tensor<?x2xi32>
  return
}

// -----

// The runtime functions are declared in the module, so the pass must run on
// it.
// RUN: not moe-opt %s --split-input-file \
// RUN:   --pass-pipeline='builtin.module(func.func(convert-moe-to-linalg))' 2>&1 \
// RUN:   | FileCheck %s --check-prefix=NESTED
// NESTED: error: convert-moe-to-linalg must run on the module to lower placed experts, moe.prefetch and moe.trace_routing (they declare runtime functions)
func.func @nested(%ids: tensor<?x2xi32>) {
  moe.prefetch %ids {layer = 1 : i64} : tensor<?x2xi32>
  return
}
