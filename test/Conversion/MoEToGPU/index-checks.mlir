// RUN: moe-opt %s --convert-moe-to-gpu | FileCheck %s

// The ONNX importer's data-dependent index check (a reduction of the
// indices marked moe.index_check, read on the host by a cf.assert) would
// read device memory on the host: convert-moe-to-gpu drops it with the ops
// only it uses; the gather itself becomes a kernel.
// CHECK-LABEL: func.func @gather
// CHECK-NOT: cf.assert
// CHECK-NOT: moe.index_check
// CHECK-NOT: tensor.from_elements
// CHECK: gpu.launch_func @moe_kernels::@moe_host_generic
// CHECK-NOT: cf.assert
// CHECK: return
func.func @gather(%data: tensor<?x4xf32>, %idx: tensor<?xi64>) -> tensor<?x4xf32> {
  %c0 = arith.constant 0 : index
  %true = arith.constant true
  %init = tensor.from_elements %true : tensor<i1>
  %n = tensor.dim %data, %c0 : tensor<?x4xf32>
  %all = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>], iterator_types = ["reduction"]} ins(%idx : tensor<?xi64>) outs(%init : tensor<i1>) attrs = {moe.index_check} {
  ^bb0(%in: i64, %acc: i1):
    %i = arith.index_cast %in : i64 to index
    %ok = arith.cmpi ult, %i, %n : index
    %r = arith.andi %ok, %acc : i1
    linalg.yield %r : i1
  } -> tensor<i1>
  %ok = tensor.extract %all[] : tensor<i1>
  cf.assert %ok, "Gather node 'g': an index is out of range for the data at run time"
  %m = tensor.dim %idx, %c0 : tensor<?xi64>
  %e = tensor.empty(%m) : tensor<?x4xf32>
  %y = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%idx : tensor<?xi64>) outs(%e : tensor<?x4xf32>) {
  ^bb0(%in: i64, %out: f32):
    %i = arith.index_cast %in : i64 to index
    %j = linalg.index 1 : index
    %v = tensor.extract %data[%i, %j] : tensor<?x4xf32>
    linalg.yield %v : f32
  } -> tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}
