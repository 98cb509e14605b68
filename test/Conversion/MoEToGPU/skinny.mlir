// RUN: moe-opt %s --convert-moe-to-gpu --canonicalize --cse --split-input-file | FileCheck %s

// The skinny (decode) path of the expert GEMMs and its run-time selection:
// both paths are launched, the one not taken with an empty grid and empty
// buffers (no scf.if, whose regions would make gpu-async-region synchronize).

// Grouped, f16, GPT-OSS epilogue: the skinny path runs when the rows average
// at most 8 per expert (8 experts: 64 rows).
// CHECK-LABEL: func @experts
// CHECK: %[[ROWS:.*]] = tensor.dim %{{.*}}, %c0 : tensor<?xi32>
// CHECK: %[[OUT:.*]] = gpu.alloc (%[[ROWS]]) : memref<?x64xf16>
// CHECK: %[[SKINNY:.*]] = arith.cmpi ule, %[[ROWS]], %c64 : index
// Row groups of 4: rows / 4 + min(rows, experts) bounds them.
// CHECK: %[[Q:.*]] = arith.divui %[[ROWS]], %c4
// CHECK: %[[M:.*]] = arith.minsi %[[ROWS]], %c8
// CHECK: %[[GROUPS:.*]] = arith.addi %[[Q]], %[[M]]
// K splits: as many as keep the grid within one wave of 264 blocks (two per
// SM of a 132-SM GPU), at least one.
// CHECK: %[[UWANT:.*]] = arith.divui %c264
// CHECK: arith.maxsi %[[UWANT]], %c1
// CHECK: %[[UCHUNK:.*]] = arith.minsi %{{.*}}, %c256 : index
// CHECK: %[[USPLITS:.*]] = arith.ceildivui %c64, %[[UCHUNK]] : index
// CHECK: arith.divui %c264
// CHECK: %[[DCHUNK:.*]] = arith.minsi %{{.*}}, %c256 : index
// CHECK: %[[DSPLITS:.*]] = arith.ceildivui %c128, %[[DCHUNK]] : index
// CHECK: %[[R:.*]] = arith.select %[[SKINNY]], %[[ROWS]], %c0 : index
// Both partial-sum buffers in one allocation.
// CHECK: %[[SCRATCH:.*]] = gpu.alloc (%{{.*}}) : memref<?xi8>
// CHECK: %[[UP:.*]] = memref.view %[[SCRATCH]][%c0][%[[USPLITS]], %[[R]]] : memref<?xi8> to memref<?x?x2x128xf32>
// CHECK: %[[DOWN:.*]] = memref.view %[[SCRATCH]][%{{.*}}][%[[DSPLITS]], %[[R]]] : memref<?xi8> to memref<?x?x64xf32>
// CHECK: %[[G:.*]] = arith.select %[[SKINNY]], %[[GROUPS]], %c0 : index
// Grid: strips of 64 columns, K splits, row groups.
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up_skinny blocks in (%c2, %[[USPLITS]], %[[G]]) threads in (%c256, %c1, %c1) args(%{{.*}} : memref<?xi32>, %{{.*}} : memref<9xi32>, %{{.*}} : memref<?x64xf16>, %{{.*}} : memref<8x64x128xf16>, %{{.*}} : memref<8x64x128xf16>, %[[UP]] : memref<?x?x2x128xf32>, %[[UCHUNK]] : index)
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down_skinny blocks in (%c1, %[[DSPLITS]], %[[G]]) threads in (%c256, %c1, %c1) args(%{{.*}} : memref<?xi32>, %{{.*}} : memref<9xi32>, %[[UP]] : memref<?x?x2x128xf32>, %{{.*}} : memref<8x128xf16>, %{{.*}} : memref<8x128xf16>, %{{.*}} : memref<8x128x64xf16>, %{{.*}} : memref<8x64xf16>, %[[DOWN]] : memref<?x?x64xf32>, %[[DCHUNK]] : index)
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down_reduce blocks in (%c1, %[[R]], %c1) threads in (%c128, %c1, %c1) args(%{{.*}} : memref<?xi32>, %{{.*}} : memref<9xi32>, %[[DOWN]] : memref<?x?x64xf32>, %[[OUT]] : memref<?x64xf16>)
// CHECK: gpu.dealloc %[[SCRATCH]]
// The tiled path, empty unless there are more rows.
// CHECK: %[[TILED:.*]] = arith.cmpi ugt, %[[ROWS]], %c64 : index
// CHECK: %[[HR:.*]] = arith.select %[[TILED]], %[[ROWS]], %c0 : index
// CHECK: %[[H:.*]] = gpu.alloc (%[[HR]]) : memref<?x128xf16>
// CHECK: %[[TILES:.*]] = arith.select %[[TILED]], %{{.*}}, %c0 : index
// The cp.async kernels when the input and the weights are 16-byte aligned,
// the register-staged ones else.
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: arith.remui %{{.*}}, %c16 : index
// CHECK: %[[UNALIGNED_TILES:.*]] = arith.select %[[ALIGNED:.*]], %c0, %[[TILES]] : index
// CHECK: %[[ALIGNED_TILES:.*]] = arith.select %[[ALIGNED]], %[[TILES]], %c0 : index
// Aligned, the gated up GEMM on the 64 x 64 tiles; the down GEMM on the
// 128 x 128 ones (256 threads) from 128 rows per expert on average, on the
// 64 x 64 ones below.
// CHECK: %[[LARGE:.*]] = arith.cmpi uge, %[[ROWS]], %c1024 : index
// CHECK: %[[TAKEN:.*]] = arith.cmpi ugt, %[[ALIGNED_TILES]], %c0 : index
// CHECK: %[[USE_LARGE:.*]] = arith.andi %[[TAKEN]], %[[LARGE]] : i1
// CHECK: arith.divui %{{.*}}, %c128 : index
// CHECK: %[[LARGE_TILES:.*]] = arith.select %[[USE_LARGE]], %{{.*}}, %c0 : index
// CHECK: %[[SMALL_TILES:.*]] = arith.select %[[LARGE]], %c0, %[[ALIGNED_TILES]] : index
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up blocks in (%[[ALIGNED_TILES]], %c2, %c1) threads in (%c128,
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up_unaligned blocks in (%[[UNALIGNED_TILES]],
// CHECK-NOT: moe_experts_up_large
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down blocks in (%[[SMALL_TILES]], %c1, %c1) threads in (%c128,
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down_unaligned blocks in (%[[UNALIGNED_TILES]],
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down_large blocks in (%[[LARGE_TILES]], %c1, %c1) threads in (%c256,
// CHECK: gpu.dealloc %[[H]]

// CHECK-LABEL: gpu.func @moe_experts_up_skinny
// CHECK-SAME: workgroup(%[[A:.*]] : memref<4x256xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[RED:.*]] : memref<8x2x4x64xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>, nvvm.minctasm = 2 : i32
// The block's row group: a shuffle scan of the experts' group counts.
// CHECK: gpu.block_id z
// CHECK-COUNT-5: gpu.shuffle up
// CHECK-COUNT-5: gpu.shuffle xor %{{.*}} : i32
// Blocks past the last group skip everything, barriers included.
// CHECK: scf.if
// 16-byte loads of the up and gate strips, 4 rows per slice in flight,
// where both buffers are aligned (checked once, the same for every thread).
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: scf.if %{{.*}} -> (f32
// The first round's weight loads are issued before A is staged.
// CHECK-COUNT-8: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x64x128xf16>, vector<8xf16>
// Input rows gathered through the token indices.
// CHECK: memref.load %{{.*}} : memref<?xi32>
// CHECK: scf.if %{{.*}} -> (f32)
// CHECK: arith.extf %{{.*}} : f16 to f32
// CHECK: memref.store %{{.*}}, %[[A]]
// CHECK: gpu.barrier
// Each round: the FMAs of the loaded round, then the next round's loads
// (the last round's again after the last, from cache), carried to the next
// iteration.
// CHECK: scf.for {{.*}} -> ({{(f32, )+}}vector<8xf16>
// CHECK: memref.load %[[A]]
// CHECK: vector.extract
// CHECK: arith.mulf
// CHECK-NOT: scf.if
// CHECK-COUNT-8: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x64x128xf16>, vector<8xf16>
// CHECK: scf.yield
// Element loads otherwise.
// CHECK: } else {
// CHECK-NOT: vector.load
// CHECK: memref.load %{{.*}} : memref<8x64x128xf16>
// CHECK: gpu.barrier
// CHECK: scf.for
// CHECK-NOT: vector.load
// CHECK: memref.load %{{.*}} : memref<8x64x128xf16>
// CHECK: scf.yield
// Slices summed within the warp, then warp by warp.
// CHECK: gpu.shuffle xor %{{.*}}, %c8_i32, %c32_i32 : f32
// CHECK: gpu.shuffle xor %{{.*}}, %c16_i32, %c32_i32 : f32
// CHECK: memref.store %{{.*}}, %[[RED]]
// CHECK: gpu.barrier
// CHECK-COUNT-8: memref.load %[[RED]]
// CHECK: memref.store %{{.*}} : memref<?x?x2x128xf32>
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return

// The hidden rows: up partials summed over their splits, biases, clamped
// SwiGLU; then the down strip, with the down bias in split 0.
// CHECK-LABEL: gpu.func @moe_experts_down_skinny
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x128x64xf16>, vector<8xf16>
// CHECK: scf.for
// CHECK: memref.load %{{.*}} : memref<?x?x2x128xf32>
// CHECK: scf.yield
// CHECK: arith.minimumf
// CHECK: math.exp
// f16 hidden values are rounded once, as on the tensor-core path.
// CHECK: arith.truncf %{{.*}} : f32 to f16
// CHECK: arith.extf %{{.*}} : f16 to f32
// CHECK: gpu.barrier
// CHECK: scf.for
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x128x64xf16>, vector<8xf16>
// CHECK: gpu.barrier
// CHECK: arith.cmpi eq, %block_id_y, %c0
// CHECK: memref.store %{{.*}} : memref<?x?x64xf32>
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return

// Rows of this op's experts that hold a token; splits summed in order.
// CHECK-LABEL: gpu.func @moe_experts_down_reduce
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK: arith.cmpi sge, %{{.*}}, %c0 : index
// CHECK: scf.for
// CHECK-COUNT-8: memref.load %{{.*}} : memref<?x?x64xf32>
// CHECK: arith.truncf %{{.*}} : f32 to f16
// CHECK: memref.store
func.func @experts(%x: tensor<?x64xf16>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
                   %wg: tensor<8x64x128xf16>, %wu: tensor<8x64x128xf16>,
                   %wd: tensor<8x128x64xf16>, %bg: tensor<8x128xf16>,
                   %bu: tensor<8x128xf16>, %bd: tensor<8x64xf16>, %n: index)
    -> tensor<?x64xf16> {
  %init = tensor.empty(%n) : tensor<?x64xf16>
  %y = moe.experts %x, %tok, %off into %init
         gate(%wg : tensor<8x64x128xf16>) up(%wu : tensor<8x64x128xf16>)
         down(%wd : tensor<8x128x64xf16>) gate_bias(%bg : tensor<8x128xf16>)
         up_bias(%bu : tensor<8x128xf16>) down_bias(%bd : tensor<8x64xf16>)
         {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>}
         : (tensor<?x64xf16>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf16>)
         -> tensor<?x64xf16>
  return %y : tensor<?x64xf16>
}

// -----

// Dense shared experts, f32: skinny up to 32 rows, one row group of 4 per
// block (no expert scan), the row scale applied by the reduce kernel; a
// K of 300 splits in two chunks of 256 at most. 4-float vectors.
// CHECK-LABEL: func @shared
// CHECK: %[[ROWS:.*]] = tensor.dim %{{.*}}, %c0 : tensor<?x300xf32>
// CHECK: %[[S:.*]] = gpu.alloc (%[[ROWS]]) : memref<?xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_scale
// CHECK: %[[SKINNY:.*]] = arith.cmpi ule, %[[ROWS]], %c32 : index
// CHECK: %[[GROUPS:.*]] = arith.divui %{{.*}}, %c4 : index
// CHECK: %[[G:.*]] = arith.select %[[SKINNY]], %[[GROUPS]], %c0 : index
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_up_skinny blocks in (%c5, %{{.*}}, %[[G]])
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_down_skinny blocks in (%c10, %{{.*}}, %[[G]])
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_down_reduce {{.*}} args(%{{.*}} : memref<?x?x300xf32>, %[[S]] : memref<?xf32>, %{{.*}} : memref<?x300xf32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_up blocks
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_down blocks
// CHECK: gpu.dealloc %[[S]]
// CHECK-LABEL: gpu.func @moe_shared_up_skinny
// CHECK-SAME: workgroup(%{{.*}} : memref<4x512xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<8x2x4x32xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK-NOT: gpu.shuffle up
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<300x160xf32>, vector<4xf32>
// CHECK-LABEL: gpu.func @moe_shared_down_reduce
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<?xf32>
// CHECK: arith.mulf
func.func @shared(%x: tensor<?x300xf32>, %sg: tensor<300x160xf32>, %su: tensor<300x160xf32>,
                  %sd: tensor<160x300xf32>, %scale: tensor<300xf32>) -> tensor<?x300xf32> {
  %s = moe.shared_experts %x gate(%sg : tensor<300x160xf32>)
         up(%su : tensor<300x160xf32>) down(%sd : tensor<160x300xf32>)
         scale(%scale : tensor<300xf32>) {expert = #moe.expert<gated, silu>}
         : tensor<?x300xf32> -> tensor<?x300xf32>
  return %s : tensor<?x300xf32>
}

// -----

// Widths that are not multiples of 8 bf16 take narrower aligned vectors:
// 4 (8 bytes) for N = 100, 2 (4 bytes) for N = 38.
// CHECK-LABEL: gpu.func @moe_experts_up_skinny
// CHECK: vector.load %{{.*}} {alignment = 8 : i64} : memref<4x38x100xbf16>, vector<4xbf16>
// CHECK: arith.extf %{{.*}} : bf16 to f32
// CHECK-LABEL: gpu.func @moe_experts_down_skinny
// CHECK: vector.load %{{.*}} {alignment = 4 : i64} : memref<4x100x38xbf16>, vector<2xbf16>
func.func @narrow(%x: tensor<?x38xbf16>, %tok: tensor<?xi64>, %off: tensor<5xi64>,
                  %wu: tensor<4x38x100xbf16>, %wd: tensor<4x100x38xbf16>, %n: index)
    -> tensor<?x38xbf16> {
  %init = tensor.empty(%n) : tensor<?x38xbf16>
  %y = moe.experts %x, %tok, %off into %init
         up(%wu : tensor<4x38x100xbf16>) down(%wd : tensor<4x100x38xbf16>)
         {expert = #moe.expert<ffn, relu>}
         : (tensor<?x38xbf16>, tensor<?xi64>, tensor<5xi64>, tensor<?x38xbf16>)
         -> tensor<?x38xbf16>
  return %y : tensor<?x38xbf16>
}
