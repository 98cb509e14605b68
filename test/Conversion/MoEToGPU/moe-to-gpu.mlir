// RUN: moe-opt %s --convert-moe-to-gpu --split-input-file | FileCheck %s

// CHECK-LABEL: module attributes {gpu.container_module}
// CHECK-LABEL: func @gate
// CHECK-SAME: (%[[X:.*]]: tensor<?x64xf32>, %[[R:.*]]: tensor<64x8xf32>, %[[B:.*]]: tensor<8xf32>)
// CHECK-DAG: %[[XB:.*]] = bufferization.to_buffer %[[X]] read_only : tensor<?x64xf32> to memref<?x64xf32>
// CHECK-DAG: %[[RB:.*]] = bufferization.to_buffer %[[R]]
// CHECK-DAG: %[[BB:.*]] = bufferization.to_buffer %[[B]]
// CHECK: %[[T:.*]] = memref.dim %[[XB]], %{{.*}} : memref<?x64xf32>
// CHECK: %[[IDS:.*]] = gpu.alloc (%[[T]]) : memref<?x2xi32>
// CHECK: %[[W:.*]] = gpu.alloc (%[[T]]) : memref<?x2xf32>
// CHECK: %[[GRID:.*]] = arith.ceildivui %{{.*}}, %[[BT:.*]] : index
// CHECK: gpu.launch_func @moe_kernels::@moe_gate blocks in (%[[GRID]], %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args(%[[XB]] : memref<?x64xf32>, %[[RB]] : memref<64x8xf32>, %[[BB]] : memref<8xf32>, %[[IDS]] : memref<?x2xi32>, %[[W]] : memref<?x2xf32>)
// CHECK-DAG: bufferization.to_tensor %[[IDS]] restrict writable : memref<?x2xi32> to tensor<?x2xi32>
// CHECK-DAG: bufferization.to_tensor %[[W]] restrict writable : memref<?x2xf32> to tensor<?x2xf32>
// CHECK: gpu.module @moe_kernels
// CHECK: gpu.func @moe_gate(%{{.*}}: memref<?x64xf32>, %{{.*}}: memref<64x8xf32>, %{{.*}}: memref<8xf32>, %{{.*}}: memref<?x2xi32>, %{{.*}}: memref<?x2xf32>)
// CHECK-SAME: workgroup(%[[SCORES:.*]] : memref<256x8xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[SEL:.*]] : memref<256x8xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[PART:.*]] : memref<512x4xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK-SAME: kernel attributes {known_block_size = array<i32: 512, 1, 1>}
// Tokens per block from the token count: ceil(T / 396) (three blocks per SM
// of a 132-SM GPU), in [1, 256].
// CHECK: arith.divui %{{.*}}, %c396
// The logits tile: the router matmul of the block, four router columns per
// 16-byte load where the router is aligned, its hidden dimension split over
// threads (partial sums added by a tree over the slices) when the block has fewer
// (token, column group) pairs than half its threads, whole pairs per thread
// else.
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: arith.cmpi ugt
// CHECK: scf.if
// CHECK: scf.if
// CHECK: scf.for
// CHECK-COUNT-4: vector.load %{{.*}} {alignment = 16 : i64} : memref<64x8xf32>, vector<4xf32>
// CHECK: } else {
// CHECK: scf.for
// CHECK: memref.store %{{.*}}, %[[PART]]
// CHECK: gpu.barrier
// CHECK: memref.load %[[PART]]
// CHECK: memref.store %{{.*}}, %[[SCORES]]
// CHECK: arith.cmpi eq
// CHECK: scf.if
// CHECK: memref.store %{{.*}}, %[[SCORES]]
// CHECK: gpu.barrier
// One warp per token: warp w takes tokens w, w + 16, ...; lane l experts
// l, l + 32, ...
// CHECK: arith.remui %thread_id_x, %c32
// CHECK: arith.divui %thread_id_x, %c32
// CHECK: scf.for
// CHECK: scf.if
// Sigmoid scores and the selection bias, per lane.
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c32
// CHECK: math.exp
// CHECK: memref.store %{{.*}}, %[[SEL]]
// The other lanes' scores are read after a warp barrier.
// CHECK: nvvm.bar.warp.sync
// Group limit, then top-k: the lane's best eligible expert, then the warp's
// by a butterfly of shuffles (value and index).
// CHECK: arith.cmpf ogt
// CHECK: scf.for %{{.*}} = %{{.*}} to %c2{{(_[0-9]+)?}} step %c32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c32
// CHECK: arith.cmpf olt
// CHECK-COUNT-5: gpu.shuffle xor %{{.*}} : f32
// CHECK: arith.index_cast %{{.*}} : index to i32
// Lane j holds choice j (k <= 32): renormalization and scale there, and
// lanes j < k store the token's ids and weights together.
// CHECK: arith.cmpi eq, %{{.*}}, %arg
// CHECK: arith.divf
// CHECK: arith.mulf
// CHECK: scf.if
// CHECK: memref.store %{{.*}} : memref<?x2xi32>
// CHECK: memref.store %{{.*}} : memref<?x2xf32>
// CHECK: gpu.return
func.func @gate(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>, %b: tensor<8xf32>)
    -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %w = moe.gate %x, %r selection_bias(%b : tensor<8xf32>)
      {routing = #moe.routing<k = 2, scoring = sigmoid, renormalize = true,
                              scale = 2.5, n_group = 4, topk_group = 2>}
      : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// A router bias: an argument of the routing kernel, added to each logit as
// it is stored into the scores tile.
// CHECK-LABEL: func @gate_router_bias
// CHECK: gpu.launch_func @moe_kernels::@moe_gate{{.*}} args(%{{.*}} : memref<?x64xf32>, %{{.*}} : memref<64x8xf32>, %{{.*}} : memref<8xf32>, %{{.*}} : memref<?x2xi32>, %{{.*}} : memref<?x2xf32>)
// CHECK: gpu.func @moe_gate{{.*}}(%{{.*}}: memref<?x64xf32>, %{{.*}}: memref<64x8xf32>, %[[RBIAS:.*]]: memref<8xf32>, %{{.*}}: memref<?x2xi32>, %{{.*}}: memref<?x2xf32>)
// CHECK: %[[BV:.*]] = memref.load %[[RBIAS]][%{{.*}}] : memref<8xf32>
// CHECK-NEXT: %[[SUM:.*]] = arith.addf %{{.*}}, %[[BV]] : f32
// CHECK-NEXT: memref.store %[[SUM]], %{{.*}} : memref<256x8xf32, #gpu.address_space<workgroup>>
func.func @gate_router_bias(%x: tensor<?x64xf32>, %r: tensor<64x8xf32>, %b: tensor<8xf32>)
    -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %w = moe.gate %x, %r router_bias(%b : tensor<8xf32>)
      {routing = #moe.routing<k = 2, scoring = topk_softmax>}
      : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// CHECK-LABEL: func @route
// CHECK: gpu.launch_func @moe_kernels::@moe_route
// CHECK-SAME: args(%{{.*}} : memref<16x8xf32>, %{{.*}} : memref<16x2xi64>, %{{.*}} : memref<16x2xf32>)
// CHECK: gpu.func @moe_route(%[[L:.*]]: memref<16x8xf32>,
// CHECK: memref.load %[[L]]
// CHECK: gpu.barrier
// Softmax: max, exponentials, division.
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: arith.divf
func.func @route(%logits: tensor<16x8xf32>) -> (tensor<16x2xi64>, tensor<16x2xf32>) {
  %ids, %w = moe.route %logits {routing = #moe.routing<k = 2>}
      : tensor<16x8xf32> -> tensor<16x2xi64>, tensor<16x2xf32>
  return %ids, %w : tensor<16x2xi64>, tensor<16x2xf32>
}

// -----

// CHECK-LABEL: func @dispatch
// CHECK-SAME: (%[[IDS:.*]]: tensor<?x2xi32>)
// CHECK: %[[IB:.*]] = bufferization.to_buffer %[[IDS]]
// One block when the T * k assignments fit in a chunk (8 warps x 4 passes
// x 32 lanes), else one count and place block per chunk: both paths are
// launched, the one not taken with an empty grid.
// CHECK: %[[SINGLE:.*]] = arith.cmpi ule, %{{.*}}, %[[CHUNK:.*]] : index
// CHECK: %[[CHUNKS:.*]] = arith.select %[[SINGLE]], %{{.*}}, %{{.*}} : index
// CHECK: %[[TOK:.*]] = gpu.alloc (%{{.*}}) : memref<?xi32>
// CHECK: %[[OFF:.*]] = gpu.alloc () : memref<9xi32>
// CHECK: %[[POS:.*]] = gpu.alloc (%{{.*}}) : memref<?x2xi32>
// CHECK: %[[CNT:.*]] = gpu.alloc (%[[CHUNKS]]) : memref<?x8xi32>
// CHECK: %[[ONE:.*]] = arith.select %[[SINGLE]], %{{.*}}, %{{.*}} : index
// CHECK: gpu.launch_func @moe_kernels::@moe_dispatch_single blocks in (%[[ONE]], {{.*}} args(%[[IB]] : memref<?x2xi32>, %[[OFF]] : memref<9xi32>, %[[TOK]] : memref<?xi32>, %[[POS]] : memref<?x2xi32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_dispatch_count blocks in (%[[CHUNKS]], {{.*}} args(%[[IB]] : memref<?x2xi32>, %[[CNT]] : memref<?x8xi32>)
// CHECK: %[[SCAN:.*]] = arith.select %[[SINGLE]], %{{.*}}, %{{.*}} : index
// CHECK: gpu.launch_func @moe_kernels::@moe_dispatch_scan blocks in (%[[SCAN]], {{.*}} args(%[[IB]] : memref<?x2xi32>, %[[CNT]] : memref<?x8xi32>, %[[OFF]] : memref<9xi32>, %[[TOK]] : memref<?xi32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_dispatch_place blocks in (%[[CHUNKS]], {{.*}} args(%[[IB]] : memref<?x2xi32>, %[[CNT]] : memref<?x8xi32>, %[[OFF]] : memref<9xi32>, %[[TOK]] : memref<?xi32>, %[[POS]] : memref<?x2xi32>)
// CHECK: gpu.dealloc %[[CNT]]
// CHECK: gpu.func @moe_dispatch_single
// CHECK-SAME: workgroup(%{{.*}} : memref<8x8xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<8xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<256xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// Capacity: ceil(capacity_factor * T * k / E).
// CHECK: math.ceil
// Ranks: the lanes with the same expert (4 bits: 8 experts and none) by
// ballots, then their lower lanes counted.
// CHECK-COUNT-4: nvvm.vote.sync ballot
// CHECK: llvm.intr.ctpop
// CHECK: nvvm.bar.warp.sync
// CHECK: gpu.barrier
// Offsets: padding to the block size.
// CHECK: arith.divui
// CHECK: gpu.barrier
// CHECK: gpu.func @moe_dispatch_count
// CHECK-COUNT-4: nvvm.vote.sync ballot
// CHECK: gpu.func @moe_dispatch_scan
// CHECK-SAME: workgroup(%{{.*}} : memref<8xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<256xi32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK: gpu.barrier
// CHECK: math.ceil
// CHECK: gpu.func @moe_dispatch_place
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return
func.func @dispatch(%ids: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>) {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 8, block_size = 4, capacity_factor = 1.5}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
}

// -----

// f32 experts: the SIMT kernel, 256 threads per 128 x 64 output tile (8 x 4
// outputs per thread), grid x = ceil(rows / 128) + experts; beside it the
// narrow one (32 x 128 tiles, grid x = ceil(rows / 32) + experts), taken
// for at most 32 rows per expert (256 rows here): the other gets an empty
// grid.
// CHECK-LABEL: func @experts
// CHECK: %[[OUT:.*]] = gpu.alloc (%{{.*}}) : memref<?x64xf32>
// CHECK-NOT: gpu.memcpy
// CHECK: %[[H:.*]] = gpu.alloc (%{{.*}}) : memref<?x128xf32>
// CHECK: %[[C127:.*]] = arith.constant 127 : index
// CHECK: %[[R127:.*]] = arith.addi %{{.*}}, %[[C127]]
// CHECK: %[[C128:.*]] = arith.constant 128 : index
// CHECK: %[[TILES:.*]] = arith.divui %[[R127]], %[[C128]]
// CHECK: %[[C8:.*]] = arith.constant 8 : index
// CHECK: %[[GX:.*]] = arith.addi %[[TILES]], %[[C8]]
// CHECK: %[[GXS:.*]] = arith.select %[[ON:.*]], %[[GX]], %{{.*}} : index
// CHECK: %[[C256R:.*]] = arith.constant 256 : index
// CHECK: %[[NARROW:.*]] = arith.cmpi ule, %{{.*}}, %[[C256R]] : index
// CHECK: %[[C31:.*]] = arith.constant 31 : index
// CHECK: %[[R31:.*]] = arith.addi %{{.*}}, %[[C31]]
// CHECK: %[[C32:.*]] = arith.constant 32 : index
// CHECK: %[[NTILES:.*]] = arith.divui %[[R31]], %[[C32]]
// CHECK: %[[NGX:.*]] = arith.addi %[[NTILES]], %{{.*}}
// CHECK: %[[NON:.*]] = arith.andi %[[ON]], %[[NARROW]] : i1
// CHECK: %[[NGXS:.*]] = arith.select %[[NON]], %[[NGX]], %{{.*}} : index
// CHECK: %[[WGXS:.*]] = arith.select %[[NARROW]], %{{.*}}, %[[GXS]] : index
// CHECK: %[[C2:.*]] = arith.constant 2 : index
// CHECK: %[[C256:.*]] = arith.constant 256 : index
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up blocks in (%[[WGXS]], %[[C2]], %{{.*}}) threads in (%[[C256]], %{{.*}}, %{{.*}}) args({{.*}} : memref<?xi32>, {{.*}} : memref<9xi32>, {{.*}} : memref<?x64xf32>, {{.*}} : memref<8x64x128xf32>, {{.*}} : memref<8x64x128xf32>, {{.*}} : memref<8x128xf32>, %[[H]] : memref<?x128xf32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up_narrow blocks in (%[[NGXS]], %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args({{.*}}, %[[H]] : memref<?x128xf32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down blocks in (%[[WGXS]], %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args({{.*}} : memref<?xi32>, {{.*}} : memref<9xi32>, %[[H]] : memref<?x128xf32>, {{.*}} : memref<8x128x64xf32>, %[[OUT]] : memref<?x64xf32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down_narrow blocks in (%[[NGXS]], %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args({{.*}}, %[[OUT]] : memref<?x64xf32>)
// CHECK: gpu.dealloc %[[H]]
// Workgroup tiles: A transposed (16 x 128), B and the gate's B 16 x 64.
// CHECK: gpu.func @moe_experts_up(
// CHECK-SAME: workgroup(%[[A:.*]] : memref<16x128xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[BU:.*]] : memref<16x64xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[BG:.*]] : memref<16x64xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>, nvvm.minctasm = 2 : i32
// The tile's expert: a walk over the offsets.
// CHECK: scf.for
// CHECK: arith.select
// CHECK: scf.if
// The first K step's loads, gathered rows through the token indices: 16-byte
// vectors where the buffer is aligned, elementwise otherwise.
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<?xi32>
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<?x64xf32>, vector<4xf32>
// CHECK: memref.load %{{.*}} : memref<?x64xf32>
// CHECK: vector.from_elements
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<8x64x128xf32>, vector<4xf32>
// K steps of 16: the prefetched A is stored transposed, B as vectors.
// CHECK: scf.for
// CHECK-COUNT-8: memref.store %{{.*}}, %[[A]]
// CHECK: vector.store %{{.*}}, %[[BU]]
// CHECK: vector.store %{{.*}}, %[[BG]]
// CHECK: gpu.barrier
// The next step's loads, then the 8 x 4 micro-tiles of up and gate.
// CHECK: vector.load %{{.*}} : memref<?x64xf32>, vector<4xf32>
// CHECK: scf.for
// CHECK: vector.load %[[A]]
// CHECK: vector.load %[[A]]
// CHECK: vector.load %[[BU]]
// CHECK-COUNT-32: math.fma
// CHECK: vector.load %[[BG]]
// CHECK-COUNT-32: math.fma
// CHECK: gpu.barrier
// Epilogue on the registers: up bias, clamp, SwiGLU.
// CHECK: arith.minimumf
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: memref.store %{{.*}} : memref<?x128xf32>
// CHECK: gpu.func @moe_experts_down(
// CHECK-SAME: workgroup(%{{.*}} : memref<16x128xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<16x64xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel
// CHECK-COUNT-32: math.fma
// Only rows that hold a token are written.
// CHECK: arith.cmpi sge
// CHECK: memref.store %{{.*}} : memref<?x64xf32>
func.func @experts(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
                   %wg: tensor<8x64x128xf32>, %wu: tensor<8x64x128xf32>,
                   %wd: tensor<8x128x64xf32>, %bu: tensor<8x128xf32>, %n: index)
    -> tensor<?x64xf32> {
  %init = tensor.empty(%n) : tensor<?x64xf32>
  %y = moe.experts %x, %tok, %off into %init
         gate(%wg : tensor<8x64x128xf32>) up(%wu : tensor<8x64x128xf32>)
         down(%wd : tensor<8x128x64xf32>) up_bias(%bu : tensor<8x128xf32>)
         {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>)
         -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// Rows of other experts pass through from a dest that is not empty.
// CHECK-LABEL: func @experts_into
// CHECK-SAME: tensor<9xi32>, %[[DEST:[^:]*]]: tensor<?x64xf32>
// CHECK: %[[OUT:.*]] = gpu.alloc
// CHECK: %[[DB:.*]] = bufferization.to_buffer %[[DEST]]
// CHECK: gpu.memcpy %[[OUT]], %[[DB]]
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up
// CHECK: gpu.func @moe_experts_up(
// CHECK-SAME: workgroup(%{{.*}} : memref<16x128xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<16x64xf32, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel
// ReLU FFN: no gate tile.
// CHECK: arith.maximumf
func.func @experts_into(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
                        %dest: tensor<?x64xf32>, %wu: tensor<4x64x32xf32>,
                        %wd: tensor<4x32x64xf32>) -> tensor<?x64xf32> {
  %y = moe.experts %x, %tok, %off into %dest
         up(%wu : tensor<4x64x32xf32>) down(%wd : tensor<4x32x64xf32>)
         {expert = #moe.expert<ffn, relu>, first_expert = 4}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf32>)
         -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

// f16 experts run on tensor cores: 128-thread blocks (4 warps) over 64x64
// output tiles, grid x = ceil(rows / 64) + experts, hidden rows in f16.
// CHECK-LABEL: func @experts_f16
// CHECK: %[[R:.*]] = memref.dim %{{.*}}, %{{.*}} : memref<?xi32>
// CHECK: %[[OUT:.*]] = gpu.alloc (%[[R]]) : memref<?x64xf16>
// CHECK: %[[H:.*]] = gpu.alloc (%{{.*}}) : memref<?x128xf16>
// CHECK: %[[C63:.*]] = arith.constant 63 : index
// CHECK: %[[R63:.*]] = arith.addi %[[R]], %[[C63]]
// CHECK: %[[C64:.*]] = arith.constant 64 : index
// CHECK: %[[TILES:.*]] = arith.divui %[[R63]], %[[C64]]
// CHECK: %[[C8:.*]] = arith.constant 8 : index
// CHECK: %[[GX:.*]] = arith.addi %[[TILES]], %[[C8]]
// Empty when the rows take the skinny path (skinny.mlir).
// CHECK: %[[GXS:.*]] = arith.select %{{.*}}, %[[GX]], %{{.*}} : index
// The cp.async kernels on 16-byte-aligned operands (skinny.mlir).
// CHECK: %[[GXA:.*]] = arith.select %{{.*}}, %[[GXS]], %{{.*}} : index
// Below 128 rows per expert on average (skinny.mlir).
// CHECK: %[[GXM:.*]] = arith.select %{{.*}}, %{{.*}}, %[[GXA]] : index
// CHECK: %[[C2:.*]] = arith.constant 2 : index
// CHECK: %[[C128:.*]] = arith.constant 128 : index
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_up blocks in (%[[GXA]], %[[C2]], %{{.*}}) threads in (%[[C128]], %{{.*}}, %{{.*}}) args({{.*}} : memref<?xi32>, {{.*}} : memref<9xi32>, {{.*}} : memref<?x64xf16>, {{.*}} : memref<8x64x128xf16>, {{.*}} : memref<8x64x128xf16>, {{.*}} : memref<8x128xf16>, %[[H]] : memref<?x128xf16>)
// CHECK: gpu.launch_func @moe_kernels::@moe_experts_down blocks in (%[[GXM]], %{{.*}}, %{{.*}}) threads in (%{{.*}}, %{{.*}}, %{{.*}}) args({{.*}} : memref<?xi32>, {{.*}} : memref<9xi32>, %[[H]] : memref<?x128xf16>, {{.*}} : memref<8x128x64xf16>, %[[OUT]] : memref<?x64xf16>)
// The cp.async kernel: three stages of each tile; two K steps in flight
// before the loop (16-byte copies of 8 elements, zero bytes from rows past
// the matrices), then per step: wait for the oldest group, barrier, the mma
// work of its stage, the copies of the step two ahead.
// CHECK: gpu.func @moe_experts_up(
// CHECK-SAME: workgroup(%[[PA:.*]] : memref<3x64x40xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[PBU:.*]] : memref<3x32x72xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[PBG:.*]] : memref<3x32x72xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK: nvgpu.device_async_copy %{{.*}}[%{{.*}}, %{{.*}}], %[[PA]][%c0{{.*}}, %{{.*}}, %{{.*}}], 8, %{{.*}} : memref<?x64xf16> to memref<3x64x40xf16, #gpu.address_space<workgroup>>
// CHECK: nvgpu.device_async_create_group
// CHECK: nvgpu.device_async_copy %{{.*}}, %[[PA]][%c1
// CHECK: %[[GROUP:.*]] = nvgpu.device_async_create_group
// CHECK: scf.for {{.*}} iter_args({{.*}}%{{.*}} = %[[GROUP]])
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 1 : i32}
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix %[[PA]]
// CHECK: nvvm.mma.sync
// CHECK: nvgpu.device_async_copy
// CHECK: nvgpu.device_async_create_group
// CHECK: scf.yield
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 0 : i32}
// The register-staged kernel for operands that are not 16-byte aligned.
// Workgroup tiles in the element type, each row padded by 16 bytes: A 64 x 32
// (K contiguous), B and the gate's B 32 x 64 (N contiguous).
// CHECK: gpu.func @moe_experts_up_unaligned(
// CHECK-SAME: workgroup(%[[A:.*]] : memref<64x40xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[BU:.*]] : memref<32x72xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[BG:.*]] : memref<32x72xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// The tile's expert: a walk over the offsets.
// CHECK: scf.for
// CHECK: arith.select
// CHECK: scf.if
// 16-byte loads where the buffer is aligned, elementwise loads otherwise.
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<?x64xf16>, vector<8xf16>
// CHECK: vector.from_elements
// The K loop: store the prefetched tiles (rows k and k + 16 of B), barrier,
// prefetch the next step, then per K substep ldmatrix.x4 for the two A
// fragments and (transposed) for two B column tiles at a time, and 2 x 4
// m16n8k16 tiles per warp for up and for gate, barrier.
// CHECK: scf.for
// CHECK: vector.store %{{.*}}, %[[A]]
// CHECK: vector.store %{{.*}}, %[[BU]]
// CHECK: vector.store %{{.*}}, %[[BG]]
// CHECK: vector.store %{{.*}}, %[[BU]]
// CHECK: vector.store %{{.*}}, %[[BG]]
// CHECK: gpu.barrier
// The warp reconverges after the guarded prefetch loads, before mma.sync.
// CHECK: nvvm.bar.warp.sync %{{.*}} : i32
// CHECK-COUNT-2: nvgpu.ldmatrix %[[A]][%{{.*}}, %{{.*}}] {numTiles = 4 : i32, transpose = false} : memref<64x40xf16, #gpu.address_space<workgroup>> -> vector<4x2xf16>
// CHECK-COUNT-2: nvgpu.ldmatrix %[[BU]][%{{.*}}, %{{.*}}] {numTiles = 4 : i32, transpose = true} : memref<32x72xf16, #gpu.address_space<workgroup>> -> vector<4x2xf16>
// CHECK-COUNT-8: nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK-COUNT-2: nvgpu.ldmatrix %[[BG]]
// CHECK-COUNT-8: nvvm.mma.sync
// CHECK-COUNT-2: nvgpu.ldmatrix %[[A]]
// CHECK-COUNT-2: nvgpu.ldmatrix %[[BU]]
// CHECK-COUNT-8: nvvm.mma.sync
// CHECK-COUNT-2: nvgpu.ldmatrix %[[BG]]
// CHECK-COUNT-8: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: gpu.barrier
// CHECK: scf.yield
// Epilogue on the accumulators: up bias, clamp, SwiGLU, f16 hidden rows.
// CHECK: arith.minimumf
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: arith.truncf %{{.*}} : f32 to f16
// CHECK: memref.store %{{.*}}, %{{.*}} : memref<?x128xf16>
// No large tiles for the gated GEMM (kMmaLarge).
// CHECK-NOT: gpu.func @moe_experts_up_large(
// The second GEMMs have no gate tiles.
// CHECK: gpu.func @moe_experts_down(
// CHECK-SAME: workgroup(%{{.*}} : memref<3x64x40xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<3x32x72xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel
// CHECK: gpu.func @moe_experts_down_unaligned(
// CHECK-SAME: workgroup(%{{.*}} : memref<64x40xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<32x72xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel
// CHECK-COUNT-16: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// Only rows that hold a token are written.
// CHECK: arith.cmpi sge
// CHECK: memref.store %{{.*}}, %{{.*}} : memref<?x64xf16>
// The large tiles (128 x 128, 8 warps of 64 x 32): K steps of 16 in four
// stages of the 128 x 16 A and 16 x 128 B tiles; per step 4 A and 2 B
// ldmatrix.x4 and 4 x 4 m16n8k16 tiles per warp.
// CHECK: gpu.func @moe_experts_down_large(
// CHECK-SAME: workgroup(%[[LA:.*]] : memref<4x128x24xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %[[LB:.*]] : memref<4x16x136xf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}) kernel
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK: scf.for
// CHECK: nvgpu.device_async_wait %{{.*}} {numGroups = 2 : i32}
// CHECK: gpu.barrier
// CHECK-COUNT-4: nvgpu.ldmatrix %[[LA]]
// CHECK-COUNT-2: nvgpu.ldmatrix %[[LB]]
// CHECK-COUNT-16: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: nvgpu.device_async_copy
func.func @experts_f16(%x: tensor<?x64xf16>, %tok: tensor<?xi32>, %off: tensor<9xi32>,
                       %wg: tensor<8x64x128xf16>, %wu: tensor<8x64x128xf16>,
                       %wd: tensor<8x128x64xf16>, %bu: tensor<8x128xf16>, %n: index)
    -> tensor<?x64xf16> {
  %init = tensor.empty(%n) : tensor<?x64xf16>
  %y = moe.experts %x, %tok, %off into %init
         gate(%wg : tensor<8x64x128xf16>) up(%wu : tensor<8x64x128xf16>)
         down(%wd : tensor<8x128x64xf16>) up_bias(%bu : tensor<8x128xf16>)
         {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>}
         : (tensor<?x64xf16>, tensor<?xi32>, tensor<9xi32>, tensor<?x64xf16>)
         -> tensor<?x64xf16>
  return %y : tensor<?x64xf16>
}

// -----

// bf16 shared experts: the same tensor-core kernels, dense over the tokens;
// bf16 fragments are i32 words. Sizes that are not multiples of 8 (H = 36,
// F = 20) have no vector loads; the row scale applies in the epilogue.
// CHECK-LABEL: func @shared_bf16
// CHECK: %[[S:.*]] = gpu.alloc (%{{.*}}) : memref<?xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_scale
// CHECK: %[[H:.*]] = gpu.alloc (%{{.*}}) : memref<?x20xbf16>
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_up {{.*}} threads in (%[[C128:.*]], %{{.*}}, %{{.*}}) args({{.*}} : memref<?x36xbf16>, {{.*}} : memref<36x20xbf16>, %[[H]] : memref<?x20xbf16>)
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_down {{.*}} args(%[[H]] : memref<?x20xbf16>, {{.*}} : memref<20x36xbf16>, %[[S]] : memref<?xf32>, {{.*}} : memref<?x36xbf16>)
// CHECK: gpu.func @moe_shared_scale
// CHECK: gpu.func @moe_shared_up(
// CHECK-SAME: workgroup(%{{.*}} : memref<64x40xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64}, %{{.*}} : memref<32x72xbf16, #gpu.address_space<workgroup>> {llvm.align = 16 : i64})
// CHECK-NOT: vector.load
// CHECK-NOT: memref.extract_aligned_pointer_as_index
// CHECK: vector.from_elements
// bf16 pairs go to mma.sync as i32 words.
// CHECK: nvgpu.ldmatrix
// CHECK: vector.bitcast %{{.*}} : vector<2xbf16> to vector<1xi32>
// CHECK: nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: gpu.func @moe_shared_down(
// CHECK: nvvm.mma.sync
// The row scale in the epilogue.
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<?xf32>
func.func @shared_bf16(%x: tensor<?x36xbf16>, %su: tensor<36x20xbf16>,
                       %sd: tensor<20x36xbf16>, %scale: tensor<36xbf16>)
    -> tensor<?x36xbf16> {
  %s = moe.shared_experts %x up(%su : tensor<36x20xbf16>)
         down(%sd : tensor<20x36xbf16>) scale(%scale : tensor<36xbf16>)
         {expert = #moe.expert<ffn, gelu>}
         : tensor<?x36xbf16> -> tensor<?x36xbf16>
  return %s : tensor<?x36xbf16>
}

// -----

// CHECK-LABEL: func @shared
// CHECK: %[[S:.*]] = gpu.alloc (%{{.*}}) : memref<?xf32>
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_scale {{.*}} args({{.*}} : memref<?x64xf32>, {{.*}} : memref<64xf32>, %[[S]] : memref<?xf32>)
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_up
// CHECK: gpu.launch_func @moe_kernels::@moe_shared_down {{.*}} args({{.*}} : memref<?x256xf32>, {{.*}} : memref<256x64xf32>, %[[S]] : memref<?xf32>, {{.*}} : memref<?x64xf32>)
// CHECK: gpu.func @moe_shared_scale
// CHECK: math.exp
// CHECK: gpu.func @moe_shared_up(
// CHECK: gpu.func @moe_shared_down(
// The row scale in the epilogue.
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<?xf32>
func.func @shared(%x: tensor<?x64xf32>, %sg: tensor<64x256xf32>, %su: tensor<64x256xf32>,
                  %sd: tensor<256x64xf32>, %scale: tensor<64xf32>) -> tensor<?x64xf32> {
  %s = moe.shared_experts %x gate(%sg : tensor<64x256xf32>)
         up(%su : tensor<64x256xf32>) down(%sd : tensor<256x64xf32>)
         scale(%scale : tensor<64xf32>) {expert = #moe.expert<gated, silu>}
         : tensor<?x64xf32> -> tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// CHECK-LABEL: func @combine
// CHECK: %[[T:.*]] = memref.dim %{{.*}}, %{{.*}} : memref<?x2xi32>
// CHECK: %[[OUT:.*]] = gpu.alloc (%[[T]]) : memref<?x64xbf16>
// CHECK: gpu.launch_func @moe_kernels::@moe_combine blocks in (%[[T]], %{{.*}}, %{{.*}}) threads in ({{.*}}) args({{.*}} : memref<?x64xbf16>, {{.*}} : memref<?x2xi32>, {{.*}} : memref<?x2xbf16>, {{.*}} : memref<?x64xbf16>, %[[OUT]] : memref<?x64xbf16>)
// CHECK: gpu.func @moe_combine
// Computed in f32, one term per slot, no scatter.
// CHECK: arith.extf %{{.*}} : bf16 to f32
// CHECK-COUNT-2: arith.cmpi sge
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK-NOT: memref.atomic_rmw
// CHECK: gpu.return
func.func @combine(%rows: tensor<?x64xbf16>, %pos: tensor<?x2xi32>, %w: tensor<?x2xbf16>,
                   %add: tensor<?x64xbf16>) -> tensor<?x64xbf16> {
  %out = moe.combine %rows, %pos, %w addend(%add : tensor<?x64xbf16>)
      : (tensor<?x64xbf16>, tensor<?x2xi32>, tensor<?x2xbf16>) -> tensor<?x64xbf16>
  return %out : tensor<?x64xbf16>
}

// -----

// A fixed capacity: a constant in the dispatch kernels, not ceil(f * T * k
// / E) of the token count.
// CHECK-LABEL: module attributes {gpu.container_module}
// CHECK: func.func @dispatch_fixed_capacity
// CHECK: gpu.func @moe_dispatch_single
// CHECK-NOT: math.ceil
// CHECK: %[[C:.*]] = arith.constant 5 : index
// CHECK: arith.minsi %{{.*}}, %[[C]] : index
// CHECK: gpu.func @moe_dispatch_scan
// CHECK-NOT: math.ceil
// CHECK: gpu.func @moe_dispatch_place
// CHECK-NOT: math.ceil
func.func @dispatch_fixed_capacity(%ids: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>) {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 8, capacity = 5}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
}
