// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s
// RUN: moe-opt %s --convert-moe-to-linalg="expert-column-block=64" --split-input-file | FileCheck %s --check-prefix=B64
// RUN: moe-opt %s --convert-moe-to-linalg="expert-column-block=0" --split-input-file | FileCheck %s --check-prefix=SERIAL
// RUN: not moe-opt %s --convert-moe-to-linalg="expert-column-block=-1" 2>&1 | FileCheck %s --check-prefix=BAD

// The experts of a layer as two grouped GEMMs: one scf.forall over (column
// block, expert) tasks computes the activated hidden rows [rows, F] of every
// expert that has rows (gate and up columns, their activation), one more the
// down projection's columns into the destination. Task i is column block
// i / n of the (i mod n)-th expert listed (n experts have rows), so a
// thread's contiguous share of the tasks holds columns of every expert.
// Column blocks are the divisor of the columns nearest to
// expert-column-block (256) among multiples of 32: F = 352 (11 x 32) is one
// block of 352 (32 is further from 256), H = 1024 four blocks of 256.
// CHECK-LABEL: func.func @grouped
// CHECK-SAME: (%[[X:[^:]*]]: tensor<?x1024xf32>, %[[TOK:[^:]*]]: tensor<?xi32>, %[[OFF:[^:]*]]: tensor<9xi32>, %[[D:[^:]*]]: tensor<?x1024xf32>, %[[WG:[^:]*]]: tensor<8x1024x352xf32>, %[[WU:[^:]*]]: tensor<8x1024x352xf32>, %[[WD:[^:]*]]: tensor<8x352x1024xf32>, %[[BD:[^:]*]]: tensor<8x1024xf32>)
// CHECK: %[[ACTIVE:.*]]:2 = scf.for
// CHECK: %[[ROWS:.*]] = tensor.dim %[[TOK]]
// CHECK: %[[H0:.*]] = tensor.empty(%[[ROWS]]) : tensor<?x352xf32>
// CHECK: %[[HID:.*]] = scf.forall (%[[I:.*]]) in (%[[ACTIVE]]#0) shared_outs(%[[HOUT:.*]] = %[[H0]]) -> (tensor<?x352xf32>) {
// CHECK: %[[E:.*]] = tensor.extract %[[ACTIVE]]#1[%[[I]]] : tensor<8xindex>
// CHECK: tensor.extract %[[OFF]]
// CHECK: %[[START:.*]] = arith.index_cast
// CHECK: tensor.extract %[[OFF]]
// CHECK: %[[COUNT:.*]] = arith.subi
// CHECK: tensor.extract_slice %[[TOK]][%[[START]]] [%[[COUNT]]] [1]
// CHECK: tensor.extract_slice %[[WG]][%[[E]], 0, 0] [1, 1024, 352] [1, 1, 1]
// CHECK: tensor.extract_slice %[[WU]][%[[E]], 0, 0] [1, 1024, 352] [1, 1, 1]
// CHECK: linalg.matmul
// CHECK: linalg.matmul
// CHECK: %[[ACT:.*]] = linalg.generic
// CHECK: tensor.parallel_insert_slice %[[ACT]] into %[[HOUT]][%[[START]], %{{.*}}] [%[[COUNT]], 352] [1, 1]
// CHECK: %[[N:.*]] = arith.muli %[[ACTIVE]]#0, %c4 : index
// CHECK: scf.forall (%[[J:.*]]) in (%[[N]]) shared_outs(%[[OUT:.*]] = %[[D]]) -> (tensor<?x1024xf32>) {
// CHECK: %[[K:.*]] = arith.remui %[[J]], %[[ACTIVE]]#0 : index
// CHECK: %[[B:.*]] = arith.divui %[[J]], %[[ACTIVE]]#0 : index
// CHECK: %[[COL:.*]] = arith.muli %[[B]], %c256 : index
// CHECK: %[[E2:.*]] = tensor.extract %[[ACTIVE]]#1[%[[K]]] : tensor<8xindex>
// CHECK: %[[START2:.*]] = arith.index_cast
// CHECK: %[[COUNT2:.*]] = arith.subi
// CHECK: tensor.extract_slice %[[HID]][%[[START2]], 0] [%[[COUNT2]], 352] [1, 1]
// CHECK: %[[DE:.*]] = tensor.extract_slice %[[WD]][%[[E2]], 0, 0] [1, 352, 1024] [1, 1, 1]
// CHECK: tensor.extract_slice %[[DE]][0, %[[COL]]] [352, 256] [1, 1]
// CHECK: %[[BE:.*]] = tensor.extract_slice %[[BD]][%[[E2]], 0] [1, 1024] [1, 1]
// CHECK: tensor.extract_slice %[[BE]][%[[COL]]] [256] [1]
// CHECK: linalg.broadcast
// CHECK: linalg.matmul
// Offsets that are not a moe.dispatch's may hold padding rows (token -1):
// they keep the destination's values.
// CHECK: tensor.extract_slice %[[OUT]][%[[START2]], %[[COL]]] [%[[COUNT2]], 256] [1, 1]
// CHECK: %[[MERGED:.*]] = linalg.generic
// CHECK: arith.select
// CHECK: tensor.parallel_insert_slice %[[MERGED]] into %[[OUT]][%[[START2]], %[[COL]]] [%[[COUNT2]], 256] [1, 1]
// A smaller block: F = 352 in 11 blocks of 32, H = 1024 in 16 of 64.
// B64-LABEL: func.func @grouped
// B64: arith.muli %{{.*}}#0, %c11 : index
// B64: arith.muli %{{.*}}, %c32 : index
// B64: tensor.parallel_insert_slice %{{.*}} [%{{.*}}, 32] [1, 1]
// B64: arith.muli %{{.*}}#0, %c16 : index
// B64: arith.muli %{{.*}}, %c64 : index
// B64: tensor.parallel_insert_slice %{{.*}} [%{{.*}}, 64] [1, 1]
// SERIAL-LABEL: func.func @grouped
// SERIAL-NOT: scf.forall (
// SERIAL: scf.for
// SERIAL: tensor.insert_slice
// SERIAL: return
// BAD: error: expert-column-block must not be negative
func.func @grouped(%x: tensor<?x1024xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
                   %d: tensor<?x1024xf32>, %wg: tensor<8x1024x352xf32>,
                   %wu: tensor<8x1024x352xf32>, %wd: tensor<8x352x1024xf32>,
                   %bd: tensor<8x1024xf32>) -> tensor<?x1024xf32> {
  %y = moe.experts %x, %tok, %off into %d gate(%wg : tensor<8x1024x352xf32>)
         up(%wu : tensor<8x1024x352xf32>) down(%wd : tensor<8x352x1024xf32>)
         down_bias(%bd : tensor<8x1024xf32>)
         {expert = #moe.expert<gated, silu>}
         : (tensor<?x1024xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x1024xf32>) -> tensor<?x1024xf32>
  return %y : tensor<?x1024xf32>
}

// -----

// Columns that are not a multiple of 32: blocks of a multiple of 16 (F = 48:
// 48, nearer to 256 than 16), else of any divisor (H = 100: 100). Offsets
// from a moe.dispatch without block padding have no padding rows: no merge.
// CHECK-LABEL: func.func @odd_sizes
// CHECK: scf.forall (
// CHECK: tensor.parallel_insert_slice %{{.*}} [%{{.*}}, 48] [1, 1] : tensor<?x48xf32>
// CHECK: scf.forall (
// CHECK-NOT: arith.select
// CHECK: tensor.parallel_insert_slice %{{.*}} [%{{.*}}, 100] [1, 1] : tensor<?x100xf32>
func.func @odd_sizes(%x: tensor<?x100xf32>, %ids: tensor<?x2xi32>, %d: tensor<?x100xf32>,
                     %wu: tensor<4x100x48xf32>, %wd: tensor<4x48x100xf32>) -> tensor<?x100xf32> {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
  %y = moe.experts %x, %tok, %off into %d up(%wu : tensor<4x100x48xf32>)
         down(%wd : tensor<4x48x100xf32>) {expert = #moe.expert<ffn, relu>}
         : (tensor<?x100xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x100xf32>) -> tensor<?x100xf32>
  return %y : tensor<?x100xf32>
}
