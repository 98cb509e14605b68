// RUN: moe-opt %s --convert-moe-to-linalg | FileCheck %s
// RUN: moe-opt %s --convert-moe-to-linalg="expert-parallel-rows=0" | FileCheck %s --check-prefix=SERIAL
// RUN: not moe-opt %s --convert-moe-to-linalg="expert-parallel-rows=-1" 2>&1 | FileCheck %s --check-prefix=BAD

// 16 experts: at 8 rows per expert on average (128 rows) or more, with 16
// experts that have rows, the experts run in parallel (an scf.forall over the
// list of experts that have rows, each expert's rows inserted with
// tensor.parallel_insert_slice); else as grouped GEMMs (experts-grouped.mlir).
// CHECK-LABEL: func.func @experts16
// The experts with rows: a list built over the offsets.
// CHECK: %[[LIST0:.*]] = tensor.empty() : tensor<16xindex>
// CHECK: %[[ACTIVE:.*]]:2 = scf.for %[[E:.*]] = {{.*}} iter_args(%[[N:.*]] = %{{.*}}, %[[L:.*]] = %[[LIST0]]) -> (index, tensor<16xindex>)
// CHECK: arith.cmpi sgt
// CHECK: tensor.insert %[[E]] into %[[L]][%[[N]]] : tensor<16xindex>
// CHECK: %[[ROWS:.*]] = tensor.dim %{{.*}}, %{{.*}} : tensor<?xi32>
// CHECK: %[[MANY_ROWS:.*]] = arith.cmpi sge, %[[ROWS]], %c128 : index
// CHECK: %[[MANY_EXPERTS:.*]] = arith.cmpi sge, %[[ACTIVE]]#0, %c16{{.*}} : index
// CHECK: %[[PAR:.*]] = arith.andi %[[MANY_ROWS]], %[[MANY_EXPERTS]] : i1
// CHECK: scf.if %[[PAR]] -> (tensor<?x16xf32>) {
// CHECK: scf.forall (%[[I:.*]]) in (%[[ACTIVE]]#0) shared_outs(%[[OUT:.*]] = %{{.*}}) -> (tensor<?x16xf32>) {
// CHECK: tensor.extract %[[ACTIVE]]#1[%[[I]]] : tensor<16xindex>
// CHECK: linalg.matmul
// CHECK: linalg.matmul
// CHECK: linalg.matmul
// Padding rows (offsets that are not moe.dispatch's) keep the destination's
// values: the expert's slice of the shared output is read.
// CHECK: tensor.extract_slice %[[OUT]]
// CHECK: linalg.generic
// CHECK: scf.forall.in_parallel {
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[OUT]]
// CHECK: } else {
// CHECK: scf.forall (%{{.*}}) in (%[[ACTIVE]]#0)
// CHECK: scf.forall (%{{.*}}) in (%[[ACTIVE]]#0)
// CHECK: scf.yield
// The grouped GEMMs alone.
// SERIAL-LABEL: func.func @experts16
// SERIAL-NOT: arith.andi
// SERIAL: scf.forall (
// SERIAL: scf.forall (
// SERIAL-NOT: scf.forall (
// SERIAL: return
// BAD: error: expert-parallel-rows must not be negative
func.func @experts16(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<17xi32>,
                     %d: tensor<?x16xf32>, %wg: tensor<16x16x32xf32>,
                     %wu: tensor<16x16x32xf32>, %wd: tensor<16x32x16xf32>) -> tensor<?x16xf32> {
  %y = moe.experts %x, %tok, %off into %d gate(%wg : tensor<16x16x32xf32>)
         up(%wu : tensor<16x16x32xf32>) down(%wd : tensor<16x32x16xf32>)
         {expert = #moe.expert<gated, silu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<17xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// Fewer experts than 16: always the grouped GEMMs.
// CHECK-LABEL: func.func @experts8
// CHECK-NOT: arith.andi
// CHECK: scf.forall (
// CHECK: scf.forall (
// CHECK-NOT: scf.forall (
// CHECK: return
func.func @experts8(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
                    %d: tensor<?x16xf32>, %wu: tensor<8x16x32xf32>,
                    %wd: tensor<8x32x16xf32>) -> tensor<?x16xf32> {
  %y = moe.experts %x, %tok, %off into %d up(%wu : tensor<8x16x32xf32>)
         down(%wd : tensor<8x32x16xf32>) {expert = #moe.expert<ffn, relu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
