// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-pack-expert-weights{panel-width=2}))' | FileCheck %s
// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-pack-expert-weights{panel-width=0}))' 2>&1 | FileCheck %s --check-prefix=ERR

// ERR: moe-pack-expert-weights needs a positive panel width

// A routed weight [E, K, N] = [1, 2, 4] in panels of 2 columns:
// packed[e][p][k][i] = w[e][k][2p + i]. The shared up weight [K, N] = [2, 4]
// too (and the shared gate weight); the shared down weight's N (2) is one panel, which would change
// nothing, and the router is not an expert weight.
// CHECK-LABEL: func.func @layer
// CHECK-DAG: %[[GATE:.*]] = arith.constant dense<{{\[}}{{\[}}{{\[}}[0.000000e+00, 1.000000e+00], [4.000000e+00, 5.000000e+00]], {{\[}}[2.000000e+00, 3.000000e+00], [6.000000e+00, 7.000000e+00]]]]> : tensor<1x2x2x2xf32>
// CHECK-DAG: %[[GE:.*]] = tensor.empty() : tensor<1x2x4xf32>
// CHECK-DAG: %[[G:.*]] = linalg.unpack %[[GATE]] outer_dims_perm = [0, 2, 1] inner_dims_pos = [2] inner_tiles = [2] into %[[GE]] : tensor<1x2x2x2xf32> -> tensor<1x2x4xf32>
// CHECK-DAG: %[[SUP:.*]] = arith.constant dense<{{\[}}{{\[}}[1.000000e+00, 2.000000e+00], [5.000000e+00, 6.000000e+00]], {{\[}}[3.000000e+00, 4.000000e+00], [7.000000e+00, 8.000000e+00]]]> : tensor<2x2x2xf32>
// CHECK-DAG: %[[SU:.*]] = linalg.unpack %[[SUP]] outer_dims_perm = [1, 0] inner_dims_pos = [1] inner_tiles = [2] into %{{.*}} : tensor<2x2x2xf32> -> tensor<2x4xf32>
// CHECK-DAG: %[[SD:.*]] = arith.constant dense<{{.*}}> : tensor<4x2xf32>
// CHECK-DAG: %[[R:.*]] = arith.constant dense<{{.*}}> : tensor<2x1xf32>
// CHECK: moe.layer %{{.*}}, %[[R]] gate(%[[G]] : tensor<1x2x4xf32>) up(%{{.*}} : tensor<1x2x4xf32>) down(%{{.*}} : tensor<1x4x2xf32>) shared_gate(%{{.*}} : tensor<2x4xf32>) shared_up(%[[SU]] : tensor<2x4xf32>) shared_down(%[[SD]] : tensor<4x2xf32>)
func.func @layer(%x: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %router = arith.constant dense<[[1.0], [2.0]]> : tensor<2x1xf32>
  %gate = arith.constant dense<[[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]]> : tensor<1x2x4xf32>
  %up = arith.constant dense<[[[1.0, 1.5, 2.0, 3.0], [4.0, 5.0, 6.5, 7.0]]]> : tensor<1x2x4xf32>
  %down = arith.constant dense<[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]]> : tensor<1x4x2xf32>
  %sup = arith.constant dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]> : tensor<2x4xf32>
  %sgate = arith.constant dense<[[2.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 9.0]]> : tensor<2x4xf32>
  %sdown = arith.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]> : tensor<4x2xf32>
  %y = moe.layer %x, %router gate(%gate : tensor<1x2x4xf32>) up(%up : tensor<1x2x4xf32>) down(%down : tensor<1x4x2xf32>) shared_gate(%sgate : tensor<2x4xf32>) shared_up(%sup : tensor<2x4xf32>) shared_down(%sdown : tensor<4x2xf32>)
         {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 1>}
         : (tensor<?x2xf32>, tensor<2x1xf32>) -> tensor<?x2xf32>
  return %y : tensor<?x2xf32>
}

// -----

// Left alone: a weight that something else reads too, a splat, a matrix
// that is one panel wide, and (below) matrices whose N the panel width does
// not divide.
// CHECK-LABEL: func.func @left_alone
// CHECK-NOT: linalg.unpack
// CHECK: return
func.func @left_alone(%x: tensor<?x2xf32>) -> (tensor<?x2xf32>, tensor<1x2x4xf32>) {
  %router = arith.constant dense<[[1.0], [2.0]]> : tensor<2x1xf32>
  %gate = arith.constant dense<[[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]]> : tensor<1x2x4xf32>
  %up = arith.constant dense<1.0> : tensor<1x2x4xf32>
  %down = arith.constant dense<[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]]> : tensor<1x4x2xf32>
  %y = moe.layer %x, %router gate(%gate : tensor<1x2x4xf32>) up(%up : tensor<1x2x4xf32>) down(%down : tensor<1x4x2xf32>)
         {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 1>}
         : (tensor<?x2xf32>, tensor<2x1xf32>) -> tensor<?x2xf32>
  return %y, %gate : tensor<?x2xf32>, tensor<1x2x4xf32>
}

// -----

// CHECK-LABEL: func.func @odd_columns
// CHECK-NOT: linalg.unpack
// CHECK: return
func.func @odd_columns(%x: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %router = arith.constant dense<[[1.0], [2.0]]> : tensor<2x1xf32>
  %gate = arith.constant dense<[[[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]]]> : tensor<1x2x3xf32>
  %up = arith.constant dense<[[[1.0, 1.0, 2.0], [4.0, 5.0, 6.0]]]> : tensor<1x2x3xf32>
  %down = arith.constant dense<[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]> : tensor<1x3x2xf32>
  %y = moe.layer %x, %router gate(%gate : tensor<1x2x3xf32>) up(%up : tensor<1x2x3xf32>) down(%down : tensor<1x3x2xf32>)
         {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 1>}
         : (tensor<?x2xf32>, tensor<2x1xf32>) -> tensor<?x2xf32>
  return %y : tensor<?x2xf32>
}
