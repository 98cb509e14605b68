// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-cpu-tile-and-vectorize,canonicalize,cse))' | FileCheck %s
// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-cpu-tile-and-vectorize{parallel-tile-sizes=0,64 reduction-tile-size=0 register-tile-sizes=4,16}))' | FileCheck %s --check-prefix=SMALL
// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-cpu-tile-and-vectorize{prefetch-distance=0}))' | FileCheck %s --check-prefix=NOPF
// RUN: moe-opt %s --pass-pipeline='builtin.module(func.func(moe-cpu-tile-and-vectorize{single-pass-rows=0}))' | FileCheck %s --check-prefix=NOSP
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-cpu-tile-and-vectorize{register-tile-sizes=8,32,1}))' 2>&1 | FileCheck %s --check-prefix=ERR
// RUN: not moe-opt %s --pass-pipeline='builtin.module(func.func(moe-cpu-tile-and-vectorize{single-pass-rows=17}))' 2>&1 | FileCheck %s --check-prefix=ERR

// ERR: moe-cpu-tile-and-vectorize needs 2 non-negative parallel tile sizes, a non-negative reduction tile size, 2 positive register tile sizes, a positive vector size, a non-negative prefetch distance and a single-pass row count from 0 to 16

// The rows of one expert (dynamic M): a parallel loop over blocks of 256
// columns, a loop over blocks of 256 rows of K, then 8x32 register tiles
// (16 accumulators of vector<16xf32> carried by the K loop), then 4x64,
// 2x128 and 1x256 tiles for the rows left over.
// CHECK-LABEL: func.func @expert_matmul
// CHECK-SAME: %[[A:[a-z0-9]+]]: tensor<?x512xf32>, %[[B:[a-z0-9]+]]: tensor<512x1024xf32>
// CHECK: scf.forall (%[[N:.*]]) = (0) to (1024) step (256) shared_outs
// CHECK: %[[BT:.*]] = tensor.extract_slice %[[B]][0, %[[N]]] [512, 256] [1, 1]
// CHECK: scf.for %[[K0:.*]] = %c0 to %c512 step %c256
// CHECK: scf.for %[[M:.*]] = %{{.*}} to %{{.*}} step %c8
// CHECK: scf.for %[[N0:.*]] = %{{.*}} to %c256 step %c32
// CHECK-COUNT-16: vector.transfer_read {{.*}} : tensor<?x256xf32>, vector<16xf32>
// CHECK: %[[K1:.*]] = arith.addi %[[K0]], %c256
// CHECK: scf.for %[[K:.*]] = %[[K0]] to %[[K1]] step %c1 iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK: vector.transfer_read %[[BT]][%[[K]], %[[N0]]]{{.*}} : tensor<512x256xf32>, vector<16xf32>
// CHECK: vector.transfer_read %[[BT]]
// CHECK: %[[A0:.*]] = tensor.extract %{{.*}}[%[[M]], %[[K]]] : tensor<?x512xf32>
// CHECK: %[[SPLAT:.*]] = vector.broadcast %[[A0]] : f32 to vector<16xf32>
// CHECK-COUNT-16: vector.fma {{.*}} : vector<16xf32>
// CHECK: scf.yield
// CHECK-COUNT-16: vector.transfer_write {{.*}} : vector<16xf32>, tensor<?x256xf32>
// CHECK: scf.for {{.*}} step %c4
// CHECK: scf.for {{.*}} to %c256 step %c64
// CHECK: scf.for {{.*}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK: scf.for {{.*}} step %c2
// CHECK: scf.for {{.*}} to %c256 step %c128
// CHECK: scf.for {{.*}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK: scf.for {{.*}} step %c1
// CHECK: scf.for {{.*}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK-NOT: linalg.matmul
// CHECK: return

// SMALL-LABEL: func.func @expert_matmul
// SMALL: scf.forall ({{.*}}) = (0) to (1024) step (64)
// SMALL-NOT: step %c256
// SMALL: scf.for {{.*}} step %c4
// SMALL: scf.for {{.*}} step %c16
// SMALL: scf.for {{.*}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
func.func @expert_matmul(%a: tensor<?x512xf32>, %b: tensor<512x1024xf32>, %c: tensor<?x1024xf32>) -> tensor<?x1024xf32> {
  %r = linalg.matmul ins(%a, %b : tensor<?x512xf32>, tensor<512x1024xf32>) outs(%c : tensor<?x1024xf32>) -> tensor<?x1024xf32>
  return %r : tensor<?x1024xf32>
}

// Eight columns (the router of eight experts): vectors of eight lanes, no
// parallel loop, one 4x8 tile for four rows.
// CHECK-LABEL: func.func @router_matmul
// CHECK-NOT: scf.forall
// CHECK: scf.for {{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK-COUNT-4: vector.fma {{.*}} : vector<8xf32>
// CHECK-NOT: linalg.matmul
// CHECK: return
func.func @router_matmul(%a: tensor<4x64xf32>, %b: tensor<64x8xf32>, %c: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %r = linalg.matmul ins(%a, %b : tensor<4x64xf32>, tensor<64x8xf32>) outs(%c : tensor<4x8xf32>) -> tensor<4x8xf32>
  return %r : tensor<4x8xf32>
}

// Elementwise ops: rows of 16 lanes.
// CHECK-LABEL: func.func @fill_rows
// CHECK: scf.for
// CHECK: scf.for {{.*}} to %c256 step %c16
// CHECK: vector.transfer_write {{.*}} : vector<16xf32>, tensor<1x16xf32>
func.func @fill_rows(%c: tensor<?x256xf32>) -> tensor<?x256xf32> {
  %zero = arith.constant 0.0 : f32
  %r = linalg.fill ins(%zero : f32) outs(%c : tensor<?x256xf32>) -> tensor<?x256xf32>
  return %r : tensor<?x256xf32>
}

// Masks (i1) stay scalar: a vector of i1 would pack bits in memory.
// CHECK-LABEL: func.func @mask_rows
// CHECK-NOT: vector.
// CHECK: linalg.fill
// CHECK-NOT: vector.
// CHECK: return
func.func @mask_rows(%c: tensor<?x64xi1>) -> tensor<?x64xi1> {
  %false = arith.constant false
  %r = linalg.fill ins(%false : i1) outs(%c : tensor<?x64xi1>) -> tensor<?x64xi1>
  return %r : tensor<?x64xi1>
}

// An expert's input rows gathered through token indices (as
// convert-moe-to-linalg builds them) and read by two matmuls: the matmuls
// read the rows of %x in place (row max(tokens[m], 0) per register-tile
// row, computed outside the K loop) and the gathered copy is not built.
// CHECK-LABEL: func.func @gathered_rows
// CHECK-SAME: %[[X:[a-z0-9]+]]: tensor<?x64xf32>, %[[T:[a-z0-9]+]]: tensor<?xi32>
// CHECK-NOT: linalg.generic
// CHECK: scf.for %[[M:.*]] = %{{.*}} to %{{.*}} step %c8
// CHECK: %[[TOK:.*]] = tensor.extract %[[T]][%[[M]]] : tensor<?xi32>
// CHECK: %[[IDX:.*]] = arith.index_cast %[[TOK]] : i32 to index
// CHECK: %[[ROW:.*]] = arith.maxsi %[[IDX]], %c0 : index
// CHECK: scf.for %[[K:.*]] = {{.*}} iter_args
// CHECK: tensor.extract %[[X]][%[[ROW]], %[[K]]] : tensor<?x64xf32>
// CHECK-NOT: linalg.generic
// CHECK: return
func.func @gathered_rows(%x: tensor<?x64xf32>, %tokens: tensor<?xi32>, %w1: tensor<64x32xf32>, %w2: tensor<64x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %tokens, %c0 : tensor<?xi32>
  %e = tensor.empty(%n) : tensor<?x64xf32>
  %rows = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%tokens : tensor<?xi32>) outs(%e : tensor<?x64xf32>) {
  ^bb0(%in: i32, %out: f32):
    %t = arith.index_cast %in : i32 to index
    %zero = arith.constant 0 : index
    %r = arith.maxsi %t, %zero : index
    %h = linalg.index 1 : index
    %v = tensor.extract %x[%r, %h] : tensor<?x64xf32>
    linalg.yield %v : f32
  } -> tensor<?x64xf32>
  %m = tensor.dim %rows, %c0 : tensor<?x64xf32>
  %cst = arith.constant 0.0 : f32
  %o = tensor.empty(%m) : tensor<?x32xf32>
  %z = linalg.fill ins(%cst : f32) outs(%o : tensor<?x32xf32>) -> tensor<?x32xf32>
  %a = linalg.matmul ins(%rows, %w1 : tensor<?x64xf32>, tensor<64x32xf32>) outs(%z : tensor<?x32xf32>) -> tensor<?x32xf32>
  %b = linalg.matmul ins(%rows, %w2 : tensor<?x64xf32>, tensor<64x32xf32>) outs(%z : tensor<?x32xf32>) -> tensor<?x32xf32>
  return %a, %b : tensor<?x32xf32>, tensor<?x32xf32>
}

// A gather that something else reads too stays (tiled row by row); the
// matmul still reads %x in place.
// CHECK-LABEL: func.func @gathered_rows_kept
// CHECK-SAME: %[[X:[a-z0-9]+]]: tensor<?x64xf32>
// CHECK: scf.for
// CHECK: linalg.generic
// CHECK: tensor.extract %[[X]]
// CHECK: scf.for {{.*}} step %c8
// CHECK: scf.for {{.*}} -> (vector<16xf32>
// CHECK: tensor.extract %[[X]][%{{.*}}, %{{.*}}] : tensor<?x64xf32>
// CHECK: return
func.func @gathered_rows_kept(%x: tensor<?x64xf32>, %tokens: tensor<?xi32>, %w1: tensor<64x32xf32>) -> (tensor<?x32xf32>, tensor<?x64xf32>) {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %tokens, %c0 : tensor<?xi32>
  %e = tensor.empty(%n) : tensor<?x64xf32>
  %rows = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%tokens : tensor<?xi32>) outs(%e : tensor<?x64xf32>) {
  ^bb0(%in: i32, %out: f32):
    %t = arith.index_cast %in : i32 to index
    %h = linalg.index 1 : index
    %v = tensor.extract %x[%t, %h] : tensor<?x64xf32>
    linalg.yield %v : f32
  } -> tensor<?x64xf32>
  %cst = arith.constant 0.0 : f32
  %o = tensor.empty(%n) : tensor<?x32xf32>
  %z = linalg.fill ins(%cst : f32) outs(%o : tensor<?x32xf32>) -> tensor<?x32xf32>
  %a = linalg.matmul ins(%rows, %w1 : tensor<?x64xf32>, tensor<64x32xf32>) outs(%z : tensor<?x32xf32>) -> tensor<?x32xf32>
  return %a, %rows : tensor<?x32xf32>, tensor<?x64xf32>
}

// An expert's weights in column panels (moe-pack-expert-weights): the tiles
// read the panels in place, [expert, column / 32, k, column % 32], and the
// unpack is gone. Up to 8 rows (single-pass-rows), one pass of register tiles
// exactly as high as the rows walks all of K: 1-3 rows 128 columns wide (8,
// 16, 24 accumulators), 4-7 rows 64 columns, 8 rows 32; tiles of 4 rows or
// more prefetch their panels 32 rows of K ahead. More rows: K blocks of 256
// (a block stays in L2 while the tiles of every pass read it), 8x32 tiles,
// then 4x64, 2x128, 1x256.
// CHECK-LABEL: func.func @panels
// CHECK-SAME: %[[P:[a-z0-9]+]]: tensor<4x32x512x32xf32>, %[[E:[a-z0-9]+]]: index
// CHECK-NOT: linalg.unpack
// CHECK: scf.forall
// CHECK: %[[FEW:.*]] = arith.cmpi ule, %[[M:.*]], %c8 : index
// CHECK: scf.if %[[FEW]]
// CHECK: scf.index_switch %[[M]]
// CHECK: case 1 {
// CHECK: scf.for {{.*}} = %c0 to %c256 step %c128
// CHECK: %{{.*}}:8 = scf.for %{{.*}} = %c0 to %c512 step %c1
// CHECK-NOT: memref.prefetch
// CHECK: case 2 {
// CHECK: scf.for {{.*}} = %c0 to %c256 step %c128
// CHECK: %{{.*}}:16 = scf.for %{{.*}} = %c0 to %c512 step %c1
// CHECK-NOT: memref.prefetch
// CHECK: case 3 {
// CHECK: %{{.*}}:24 = scf.for %{{.*}} = %c0 to %c512 step %c1
// CHECK-NOT: memref.prefetch
// CHECK: case 4 {
// CHECK: scf.for {{.*}} = %c0 to %c256 step %c64
// CHECK: %[[PANEL:.*]] = arith.divui %[[COL:.*]], %c32 : index
// CHECK: %[[INNER:.*]] = arith.remui %[[COL]], %c32 : index
// CHECK: %{{.*}}:16 = scf.for %[[K:[a-z0-9]+]] = %c0 to %c512 step %c1
// CHECK: vector.transfer_read %[[P]][%[[E]], %[[PANEL]], %[[K]], %[[INNER]]]{{.*}} : tensor<4x32x512x32xf32>, vector<16xf32>
// CHECK: %[[AHEAD:.*]] = arith.addi %[[K]], %c32
// CHECK: memref.prefetch %{{.*}}[%[[E]], %[[PANEL]], %[[AHEAD]], %[[INNER]]], read, locality<3>, data
// CHECK: case 7 {
// CHECK: %{{.*}}:28 = scf.for %{{.*}} = %c0 to %c512 step %c1
// CHECK: memref.prefetch
// CHECK: case 8 {
// CHECK: scf.for {{.*}} = %c0 to %c256 step %c32
// CHECK: %{{.*}}:16 = scf.for %{{.*}} = %c0 to %c512 step %c1
// CHECK: memref.prefetch
// CHECK: default {
// CHECK: } else {
// CHECK: scf.for {{.*}} = %c0 to %c512 step %c256
// CHECK: scf.for {{.*}} step %c8
// CHECK: scf.for {{.*}} = %c0 to %c256 step %c32
// CHECK: %{{.*}}:16 = scf.for %{{.*}} = %{{.*}} to %{{.*}} step %c1
// CHECK: memref.prefetch
// CHECK: scf.for {{.*}} step %c4
// CHECK: scf.for {{.*}} step %c2
// CHECK-NOT: memref.prefetch
// CHECK: scf.for {{.*}} step %c1
// CHECK-NOT: memref.prefetch
// CHECK-NOT: linalg.unpack
// CHECK: return
// NOPF-LABEL: func.func @panels
// NOPF-NOT: memref.prefetch
// NOPF: return
// NOSP-LABEL: func.func @panels
// NOSP-NOT: scf.index_switch
// NOSP: scf.for {{.*}} = %c0 to %c512 step %c256
// NOSP: return
func.func @panels(%a: tensor<?x512xf32>, %packed: tensor<4x32x512x32xf32>, %e: index) -> tensor<?x1024xf32> {
  %c0 = arith.constant 0 : index
  %m = tensor.dim %a, %c0 : tensor<?x512xf32>
  %empty = tensor.empty() : tensor<4x512x1024xf32>
  %w = linalg.unpack %packed outer_dims_perm = [0, 2, 1] inner_dims_pos = [2] inner_tiles = [32] into %empty : tensor<4x32x512x32xf32> -> tensor<4x512x1024xf32>
  %b = tensor.extract_slice %w[%e, 0, 0] [1, 512, 1024] [1, 1, 1] : tensor<4x512x1024xf32> to tensor<512x1024xf32>
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty(%m) : tensor<?x1024xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%init : tensor<?x1024xf32>) -> tensor<?x1024xf32>
  %c = linalg.matmul ins(%a, %b : tensor<?x512xf32>, tensor<512x1024xf32>) outs(%acc : tensor<?x1024xf32>) -> tensor<?x1024xf32>
  return %c : tensor<?x1024xf32>
}

// Panels that something else reads unpacked: the matmul still reads the
// panels; the other reader gets a transposed copy.
// CHECK-LABEL: func.func @panels_kept
// CHECK-SAME: %[[P:[a-z0-9]+]]: tensor<8x64x32xf32>
// CHECK-NOT: linalg.unpack
// CHECK: linalg.transpose ins(%[[P]] : tensor<8x64x32xf32>)
// CHECK: vector.transfer_read %[[P]][%{{.*}}, %{{.*}}, %{{.*}}]{{.*}} : tensor<8x64x32xf32>, vector<16xf32>
func.func @panels_kept(%a: tensor<?x64xf32>, %packed: tensor<8x64x32xf32>) -> (tensor<?x256xf32>, tensor<64x256xf32>) {
  %c0 = arith.constant 0 : index
  %m = tensor.dim %a, %c0 : tensor<?x64xf32>
  %empty = tensor.empty() : tensor<64x256xf32>
  %b = linalg.unpack %packed outer_dims_perm = [1, 0] inner_dims_pos = [1] inner_tiles = [32] into %empty : tensor<8x64x32xf32> -> tensor<64x256xf32>
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty(%m) : tensor<?x256xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%init : tensor<?x256xf32>) -> tensor<?x256xf32>
  %c = linalg.matmul ins(%a, %b : tensor<?x64xf32>, tensor<64x256xf32>) outs(%acc : tensor<?x256xf32>) -> tensor<?x256xf32>
  return %c, %b : tensor<?x256xf32>, tensor<64x256xf32>
}

// N = 352 (22 vectors): tasks of 176 columns (11 vectors, a prime). Each row
// tile takes as many whole tiles as fit and one narrower tile for the rest:
// 8x32 tiles to column 160, then one 8x16 tile (8 accumulators); 4x64 to 128,
// then 4x48 (12); 2x128, then 2x48 (6); 1x176 (11).
// CHECK-LABEL: func.func @leftover_columns
// CHECK: scf.forall (%{{.*}}) = (0) to (352) step (176)
// CHECK: scf.for {{.*}} step %c8
// CHECK: scf.for {{.*}} = %c0 to %c160 step %c32
// CHECK: scf.for {{.*}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// CHECK: %{{.*}}:8 = scf.for
// CHECK: scf.for {{.*}} step %c4
// CHECK: scf.for {{.*}} = %c0 to %c128 step %c64
// CHECK: %{{.*}}:16 = scf.for
// CHECK: %{{.*}}:12 = scf.for
// CHECK: scf.for {{.*}} step %c2
// CHECK: %{{.*}}:16 = scf.for
// CHECK: %{{.*}}:6 = scf.for
// CHECK: %{{.*}}:11 = scf.for
func.func @leftover_columns(%a: tensor<?x64xf32>, %b: tensor<64x352xf32>) -> tensor<?x352xf32> {
  %c0 = arith.constant 0 : index
  %m = tensor.dim %a, %c0 : tensor<?x64xf32>
  %zero = arith.constant 0.0 : f32
  %init = tensor.empty(%m) : tensor<?x352xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%init : tensor<?x352xf32>) -> tensor<?x352xf32>
  %c = linalg.matmul ins(%a, %b : tensor<?x64xf32>, tensor<64x352xf32>) outs(%acc : tensor<?x352xf32>) -> tensor<?x352xf32>
  return %c : tensor<?x352xf32>
}

// N = 522 = 32 x 16 + 10 (GPT-OSS-like odd widths): vectors of 16 lanes for
// 512 columns and a tail of 5 vectors of 2 lanes (the largest power of two
// dividing 10), built first in each row tile; one task over all columns.
// Before, the lanes were the largest power of two dividing N (2), and 8x32
// register tiles had 128 accumulators (minutes to compile).
// CHECK-LABEL: func.func @odd_columns
// CHECK-NOT: scf.forall
// CHECK: scf.for {{.*}} step %c8
// CHECK: %{{.*}}:40 = scf.for {{.*}} -> (vector<2xf32>,
// CHECK-COUNT-40: vector.fma {{.*}} : vector<2xf32>
// CHECK: scf.for {{.*}} = %c0 to %c512 step %c32
// CHECK: %{{.*}}:16 = scf.for {{.*}} -> (vector<16xf32>,
// CHECK: scf.for {{.*}} step %c4
// CHECK: %{{.*}}:20 = scf.for {{.*}} -> (vector<2xf32>,
// CHECK: scf.for {{.*}} = %c0 to %c512 step %c64
// CHECK: %{{.*}}:16 = scf.for {{.*}} -> (vector<16xf32>,
// CHECK-NOT: vector<1xf32>
// CHECK: return
func.func @odd_columns(%a: tensor<?x64xf32>, %b: tensor<64x522xf32>, %acc: tensor<?x522xf32>) -> tensor<?x522xf32> {
  %c = linalg.matmul ins(%a, %b : tensor<?x64xf32>, tensor<64x522xf32>) outs(%acc : tensor<?x522xf32>) -> tensor<?x522xf32>
  return %c : tensor<?x522xf32>
}

// N = 7, narrower than a vector: 4 lanes, then a tail of 3 columns in vectors
// of one lane.
// CHECK-LABEL: func.func @narrow_columns
// CHECK-COUNT-3: vector.fma {{.*}} : vector<1xf32>
// CHECK: vector.fma {{.*}} : vector<4xf32>
// CHECK: return
func.func @narrow_columns(%a: tensor<2x64xf32>, %b: tensor<64x7xf32>, %acc: tensor<2x7xf32>) -> tensor<2x7xf32> {
  %c = linalg.matmul ins(%a, %b : tensor<2x64xf32>, tensor<64x7xf32>) outs(%acc : tensor<2x7xf32>) -> tensor<2x7xf32>
  return %c : tensor<2x7xf32>
}

// A matmul inside an scf.forall (convert-moe-to-linalg's experts in
// parallel) is one thread's work: no scf.forall of its own; the K blocks and
// the 8x32 register tiles (one row of them: 8 rows) span all 1024 columns.
// CHECK-LABEL: func.func @matmul_in_forall
// CHECK: scf.forall (%{{.*}}) in (4) shared_outs
// CHECK-NOT: scf.forall
// CHECK: scf.for {{.*}} = %c0 to %c512 step %c256
// CHECK: scf.for {{.*}} = %c0 to %c1024 step %c32
// CHECK-NOT: linalg.matmul
// CHECK: scf.forall.in_parallel
func.func @matmul_in_forall(%a: tensor<4x8x512xf32>, %b: tensor<4x512x1024xf32>, %c: tensor<32x1024xf32>) -> tensor<32x1024xf32> {
  %c8 = arith.constant 8 : index
  %r = scf.forall (%e) in (4) shared_outs(%out = %c) -> (tensor<32x1024xf32>) {
    %ae = tensor.extract_slice %a[%e, 0, 0] [1, 8, 512] [1, 1, 1] : tensor<4x8x512xf32> to tensor<8x512xf32>
    %be = tensor.extract_slice %b[%e, 0, 0] [1, 512, 1024] [1, 1, 1] : tensor<4x512x1024xf32> to tensor<512x1024xf32>
    %row = arith.muli %e, %c8 : index
    %ce = tensor.extract_slice %out[%row, 0] [8, 1024] [1, 1] : tensor<32x1024xf32> to tensor<8x1024xf32>
    %m = linalg.matmul ins(%ae, %be : tensor<8x512xf32>, tensor<512x1024xf32>) outs(%ce : tensor<8x1024xf32>) -> tensor<8x1024xf32>
    scf.forall.in_parallel {
      tensor.parallel_insert_slice %m into %out[%row, 0] [8, 1024] [1, 1] : tensor<8x1024xf32> into tensor<32x1024xf32>
    }
  }
  return %r : tensor<32x1024xf32>
}

// A static row count within single-pass-rows: just the single pass, 6 rows
// high (no run-time choice); beyond it, just the K blocks.
// CHECK-LABEL: func.func @panels_static_rows
// CHECK-NOT: scf.index_switch
// CHECK: %{{.*}}:24 = scf.for %{{.*}} = %c0 to %c512 step %c1
// CHECK: memref.prefetch
// CHECK-NOT: scf.index_switch
// CHECK: scf.for {{.*}} = %c0 to %c512 step %c256
// CHECK: return
func.func @panels_static_rows(%a: tensor<6x512xf32>, %b: tensor<12x512xf32>, %packed: tensor<8x512x32xf32>) -> (tensor<6x256xf32>, tensor<12x256xf32>) {
  %empty = tensor.empty() : tensor<512x256xf32>
  %w = linalg.unpack %packed outer_dims_perm = [1, 0] inner_dims_pos = [1] inner_tiles = [32] into %empty : tensor<8x512x32xf32> -> tensor<512x256xf32>
  %zero = arith.constant 0.0 : f32
  %i3 = tensor.empty() : tensor<6x256xf32>
  %f3 = linalg.fill ins(%zero : f32) outs(%i3 : tensor<6x256xf32>) -> tensor<6x256xf32>
  %c3 = linalg.matmul ins(%a, %w : tensor<6x512xf32>, tensor<512x256xf32>) outs(%f3 : tensor<6x256xf32>) -> tensor<6x256xf32>
  %i12 = tensor.empty() : tensor<12x256xf32>
  %f12 = linalg.fill ins(%zero : f32) outs(%i12 : tensor<12x256xf32>) -> tensor<12x256xf32>
  %c12 = linalg.matmul ins(%b, %w : tensor<12x512xf32>, tensor<512x256xf32>) outs(%f12 : tensor<12x256xf32>) -> tensor<12x256xf32>
  return %c3, %c12 : tensor<6x256xf32>, tensor<12x256xf32>
}
