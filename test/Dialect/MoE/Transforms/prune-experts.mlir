// RUN: moe-opt %s --split-input-file --moe-prune-experts="keep=2 profile=%S/Inputs/prune-profile.json" | FileCheck %s

// Profile counts [5, 0, 9, 1]: experts 0 and 2 stay, in that order. Constant
// weights become smaller constants; argument weights are sliced.
// CHECK-LABEL: func @constants_and_arguments
// CHECK-SAME: (%[[X:.*]]: tensor<?x4xf32>, %[[WU:.*]]: tensor<4x4x2xf32>, %[[WD:.*]]: tensor<4x2x4xf32>)
// CHECK: %[[R:.*]] = arith.constant dense<{{\[}}[0.000000e+00, 2.000000e+00], [4.000000e+00, 6.000000e+00], [8.000000e+00, 1.000000e+01], [1.200000e+01, 1.400000e+01]]> : tensor<4x2xf32>
// CHECK: %[[U0:.*]] = tensor.empty() : tensor<2x4x2xf32>
// CHECK: %[[S0:.*]] = tensor.extract_slice %[[WU]][0, 0, 0] [1, 4, 2] [1, 1, 1]
// CHECK: %[[U1:.*]] = tensor.insert_slice %[[S0]] into %[[U0]][0, 0, 0] [1, 4, 2] [1, 1, 1]
// CHECK: %[[S2:.*]] = tensor.extract_slice %[[WU]][2, 0, 0] [1, 4, 2] [1, 1, 1]
// CHECK: %[[U:.*]] = tensor.insert_slice %[[S2]] into %[[U1]][1, 0, 0] [1, 4, 2] [1, 1, 1]
// CHECK: %[[D:.*]] = tensor.insert_slice %{{.*}} into %{{.*}}[1, 0, 0] [1, 2, 4]
// CHECK-DAG: %[[B:.*]] = arith.constant dense<[1.000000e-01, 3.000000e-01]> : tensor<2xf32>
// CHECK-DAG: %[[UB:.*]] = arith.constant dense<{{\[}}[1.000000e+00, 1.000000e+00], [3.000000e+00, 3.000000e+00]]> : tensor<2x2xf32>
// CHECK-DAG: %[[DB:.*]] = arith.constant dense<7.000000e+00> : tensor<2x4xf32>
// CHECK: moe.layer %[[X]], %[[R]] selection_bias(%[[B]] : tensor<2xf32>) up(%[[U]] : tensor<2x4x2xf32>) down(%[[D]] : tensor<2x2x4xf32>) up_bias(%[[UB]] : tensor<2x2xf32>) down_bias(%[[DB]] : tensor<2x4xf32>)
// CHECK-SAME: routing = #moe.routing<k = 1>
// CHECK-SAME: : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x4xf32>
func.func @constants_and_arguments(%x: tensor<?x4xf32>, %wu: tensor<4x4x2xf32>,
                                   %wd: tensor<4x2x4xf32>) -> tensor<?x4xf32> {
  %router = arith.constant dense<[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0],
                                  [8.0, 9.0, 10.0, 11.0], [12.0, 13.0, 14.0, 15.0]]> : tensor<4x4xf32>
  %bias = arith.constant dense<[0.1, 0.2, 0.3, 0.4]> : tensor<4xf32>
  %ub = arith.constant dense<[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]> : tensor<4x2xf32>
  %db = arith.constant dense<7.0> : tensor<4x4xf32>
  %y = moe.layer %x, %router selection_bias(%bias : tensor<4xf32>) up(%wu : tensor<4x4x2xf32>)
         down(%wd : tensor<4x2x4xf32>) up_bias(%ub : tensor<4x2xf32>) down_bias(%db : tensor<4x4xf32>)
         {expert = #moe.expert<ffn, relu>, routing = #moe.routing<k = 1>}
         : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}

// -----

// The second layer (counts [1, ..., 6]) keeps experts 4 and 5, one run: one
// slice per weight; expert choice gets k = keep.
// CHECK-LABEL: func @two_layers
// CHECK: moe.layer
// CHECK-SAME: tensor<2x8x4xf32>
// CHECK: %[[S:.*]] = tensor.extract_slice %{{.*}}[4, 0, 0] [2, 8, 4] [1, 1, 1] : tensor<6x8x4xf32> to tensor<2x8x4xf32>
// CHECK: moe.layer
// CHECK-SAME: routing = #moe.routing<k = 2, capacity_factor = 1.000000e+00, selection = expert_choice>
// CHECK-SAME: : (tensor<?x8xf32>, tensor<8x2xf32>) -> tensor<?x8xf32>
func.func @two_layers(%x: tensor<?x8xf32>, %r0: tensor<8x4xf32>, %g0: tensor<4x8x4xf32>,
                      %u0: tensor<4x8x4xf32>, %d0: tensor<4x4x8xf32>, %r1: tensor<8x6xf32>,
                      %g1: tensor<6x8x4xf32>, %u1: tensor<6x8x4xf32>,
                      %d1: tensor<6x4x8xf32>) -> tensor<?x8xf32> {
  %y0 = moe.layer %x, %r0 gate(%g0 : tensor<4x8x4xf32>) up(%u0 : tensor<4x8x4xf32>) down(%d0 : tensor<4x4x8xf32>)
         {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x8xf32>, tensor<8x4xf32>) -> tensor<?x8xf32>
  %y1 = moe.layer %y0, %r1 gate(%g1 : tensor<6x8x4xf32>) up(%u1 : tensor<6x8x4xf32>) down(%d1 : tensor<6x4x8xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 6, selection = expert_choice, capacity_factor = 1.0>}
         : (tensor<?x8xf32>, tensor<8x6xf32>) -> tensor<?x8xf32>
  return %y1 : tensor<?x8xf32>
}
