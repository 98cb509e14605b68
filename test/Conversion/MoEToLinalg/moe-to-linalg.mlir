// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @dispatch
// CHECK-NOT: moe.dispatch
// CHECK: linalg.fill
// CHECK: scf.for
// CHECK: scf.for
// CHECK: tensor.insert
// CHECK: scf.if
func.func @dispatch(%ids: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>) {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4, capacity_factor = 1.0}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
}

// -----

// CHECK-LABEL: func.func @gate
// CHECK-NOT: moe.gate
// CHECK: scf.for {{.*}} step %{{.*}} iter_args
// CHECK: tensor.extract_slice
// CHECK: linalg.matmul
// CHECK: math.exp
// CHECK: tensor.insert_slice
func.func @gate(%x: tensor<?x16xf32>, %r: tensor<16x4xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %w = moe.gate %x, %r {routing = #moe.routing<k = 2, renormalize = true>}
      : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// CHECK-LABEL: func.func @experts
// CHECK-NOT: moe.experts
// CHECK: scf.for
// CHECK: scf.if
// CHECK: linalg.generic
// CHECK: tensor.extract
// CHECK: linalg.matmul
// CHECK: linalg.matmul
// CHECK: linalg.matmul
// CHECK: tensor.insert_slice
func.func @experts(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
                   %d: tensor<?x16xf32>, %wg: tensor<4x16x32xf32>,
                   %wu: tensor<4x16x32xf32>, %wd: tensor<4x32x16xf32>) -> tensor<?x16xf32> {
  %y = moe.experts %x, %tok, %off into %d gate(%wg : tensor<4x16x32xf32>)
         up(%wu : tensor<4x16x32xf32>) down(%wd : tensor<4x32x16xf32>)
         {expert = #moe.expert<gated, silu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// CHECK-LABEL: func.func @combine
// CHECK-NOT: moe.combine
// CHECK: linalg.generic
// CHECK: arith.select
// CHECK-NOT: scatter
func.func @combine(%rows: tensor<?x16xf32>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %y = moe.combine %rows, %pos, %w
      : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
