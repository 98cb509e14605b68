//===- Passes.td - Conversion passes of moe-mlir -----------*- tablegen -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_PASSES_TD
#define MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// MoEToLinalg
//===----------------------------------------------------------------------===//

def ConvertMoEToLinalg : Pass<"convert-moe-to-linalg"> {
  let summary = "Lower the moe dialect to linalg, scf, tensor, arith and math";
  let description = [{
    Lowers `moe.route`, `moe.gate`, `moe.dispatch`, `moe.experts`,
    `moe.shared_experts`, `moe.zero_computation_experts`,
    `moe.generic_experts` and `moe.combine` to tensor-level IR
    (`moe.layer` must be expanded by `moe-expand` first):

    - routing: the scores of a block of tokens are `linalg.generic` ops over a
      `[block, E]` tile (for `moe.gate` the tile is the router matmul of the
      block, so the logits never leave it), then a per-token top-k loop.
    - dispatch: a counting sort (counts, exclusive prefix sum, stable
      placement in token order) with capacity dropping and block padding.
    - experts: two grouped GEMMs over the experts that have rows (listed at
      run time from the offsets), each an `scf.forall` over (column block,
      expert) tasks of `expert-column-block` columns (the divisor of the
      columns nearest to it among multiples of 32): the first gathers each
      expert's rows and computes a block of its activated hidden rows (gate
      and up columns, activation) into a `[rows, F]` tensor in dispatched
      row order, the second a block of the down projection's columns into
      the destination. Two parallel regions per layer, however many experts
      have rows. With 16 experts or more, a call with at least
      `expert-parallel-rows` rows per expert on average and 16 experts with
      rows takes an `scf.forall` over the experts that have rows instead
      (chosen at run time by an `scf.if`): each expert's work on one thread,
      its rows inserted in parallel. Placed experts (`#moe.placement`), and
      all experts with `expert-column-block=0`, are an `scf.for` over the
      experts, each expert's GEMMs one after another.
      `moe.quantized_experts` GEMMs are vector loops (`scf.forall` over
      column blocks) that dequantize int8/int4 bytes in the reduction loop.
    - combine: a per-token reduction over the `k` positions: vector loops
      over the hidden dimension (`vector-combine`), in parallel blocks of 16
      tokens for more than 16 tokens, or a `linalg.generic`.

    Element types other than f32 and f64 are reported as not supported yet.

    Example:
    ```mlir
    %tok, %off, %pos = moe.dispatch %ids {num_experts = 8}
        : tensor<?x2xi32> -> tensor<?xi32>, tensor<9xi32>, tensor<?x2xi32>
    ```
    becomes a few `scf.for` loops over `tensor.extract`/`tensor.insert`.
  }];
  let options = [
    Option<"gateBlockSize", "gate-block-size", "int64_t", /*default=*/"32",
           "Tokens per block of the fused router matmul of moe.gate">,
    Option<"expertParallelRows", "expert-parallel-rows", "int64_t",
           /*default=*/"8",
           "Rows per expert on average from which moe.experts (16 experts or "
           "more with rows, not placed) runs its experts in parallel: an "
           "scf.forall over the experts instead of an scf.for (0: never)">,
    Option<"expertColumnBlock", "expert-column-block", "int64_t",
           /*default=*/"256",
           "Columns of an expert matrix per task of the grouped expert GEMMs "
           "(moe.experts not placed, not expert-parallel); 0: an scf.for "
           "over the experts instead">,
    Option<"vectorCombine", "vector-combine", "bool", /*default=*/"true",
           "Lower moe.combine to vector loops 512 bits wide (parallel token "
           "blocks for more than 16 tokens) where the hidden size is a "
           "multiple of the width; off: a linalg.generic">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect",
    "::mlir::vector::VectorDialect"
  ];
}

//===----------------------------------------------------------------------===//
// MoEToGPU
//===----------------------------------------------------------------------===//

def ConvertMoEToGPU : Pass<"convert-moe-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Lower the moe dialect to GPU kernels and their launches";
  let description = [{
    Lowers `moe.gate`, `moe.route` (including expert choice), `moe.hash_route`,
    `moe.dispatch`, `moe.experts`, `moe.quantized_experts`,
    `moe.zero_computation_experts`, `moe.shared_experts` and `moe.combine`
    to `gpu.launch_func` of kernels
    written on memrefs in the `gpu.module @moe_kernels` of the module (which
    gets `gpu.container_module`). Kernels are specialized to the op's static
    sizes; only the token (row) count may be dynamic.

    - routing: one block per block of tokens; the logits tile (the router
      matmul for `moe.gate`) is built in workgroup memory, then one thread
      per token computes the scores, the selection (bias, group limit), the
      top-k and the mixing weights.
    - dispatch: ranks in token order from warp ballots per chunk of
      assignments, exclusive prefix sums and a stable placement; one block
      when the assignments fit in one chunk (decode); no atomics.
    - experts: a grouped GEMM that gathers the input rows and fuses the
      activation, then a second one for the down projection: for f16 and
      bf16 on tensor cores (`nvvm.mma.sync` m16n8k16, f32 accumulators,
      64x64 tiles per 4-warp block), for f32 and f64 a register-blocked
      SIMT kernel (128x64 f32 / 64x64 f64 tiles per 256-thread block, 8x4 /
      4x4 outputs per thread). For few rows per expert (decode, chosen at
      run time from the row count) skinny GEMMs instead, which read the
      weights once in 16-byte vectors and split K over blocks, summing the
      partial sums in a fixed order (no atomics).
    - combine: a per-token reduction of the k rows, no scatter.
    - placed `moe.experts` (`moe-plan-placement`, docs/ExpertCache.md): the
      offsets go to the host, which calls `moe_rt_expert_prefetch` and then
      `moe_rt_expert_acquire` for every expert with rows, copies the slots it
      got to the device (the GEMMs read expert `e`'s weights from slot
      `slots[e]` of the slot buffers), and calls `moe_rt_expert_release`
      after the launches. `moe.prefetch` and `moe.trace_routing` copy their
      ids to the host and call `moe_rt_expert_predict` /
      `moe_rt_trace_routing` for each.
    - `moe.generic_experts` (the region form): a host loop over the experts
      (the offsets copied to the host), for each expert with rows a gather
      kernel, the region's ops, and a kernel that writes the yielded rows.
    - tensor compute on the host, beside the moe ops or in an expert region
      (linalg ops on tensors, elementwise arith/math on tensors, `tensor.pad`
      with an invariant padding value, `tensor.insert_slice` of the same
      rank): one naive kernel per op, one thread
      per element of its parallel loops running its reduction loops, on views
      of its operands (any strides). Correct, not tuned.
    - the ONNX importer's data-dependent index checks (a reduction of the
      indices marked `moe.index_check` whose `tensor.extract` feeds a
      `cf.assert`) are dropped first: the host would read their result from
      device memory. The CUDA target does not check indices at run time.

    Host side, operands become buffers through `bufferization.to_buffer` and
    results are `gpu.alloc` buffers behind `bufferization.to_tensor`, so the
    host function is bufferized afterwards. `moe.layer` (run `moe-expand`),
    dynamic sizes other than the token count and element types other than
    f16, bf16, f32 and f64 are reported as errors naming the op. So is what
    would still run on the host against device memory (reading or inserting
    an element, a rank-reducing `tensor.insert_slice`, `tensor.concat`,
    linalg on memrefs)
    and constant tensors passed to kernels (they would be globals in host
    memory; `moe-compile --target=cuda` makes them weights), unless
    `allow-host-constants` is set.

    Example:
    ```mlir
    %out = moe.combine %rows, %pos, %w
        : (tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x64xf32>
    ```
    becomes
    ```mlir
    %out_buf = gpu.alloc(%t) : memref<?x64xf32>
    gpu.launch_func @moe_kernels::@moe_combine blocks in (%t, %c1, %c1)
        threads in (%c128, %c1, %c1) args(%rows_buf : memref<?x64xf32>, ...)
    %out = bufferization.to_tensor %out_buf restrict writable : ...
    ```
  }];
  let options = [
    Option<"allowHostConstants", "allow-host-constants", "bool",
           /*default=*/"false",
           "Accept constant tensors as kernel operands (for the kernel "
           "interpreter of test/lib, where every buffer is device memory)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::gpu::GPUDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::nvgpu::NVGPUDialect",
    "::mlir::NVVM::NVVMDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def MoEHostBuffersToGPU
    : Pass<"moe-host-buffers-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Put the host buffers of functions that launch kernels in "
                "device memory";
  let description = [{
    Runs after bufferization in the CUDA pipeline. In a function that
    launches kernels every buffer is device memory, which the host cannot
    read or write; bufferization may still create host buffers there (a
    `memref.alloc` for a tensor it copies, a `memref.copy` into it). This
    pass makes them device buffers: `memref.alloc` becomes `gpu.alloc`,
    `memref.dealloc` of it `gpu.dealloc`, and `memref.copy` between
    buffers of the identity layout `gpu.memcpy`. Host memory stays for a
    `memref.alloc` that only the host uses (element loads and stores, the
    shape operand of `memref.reshape`: a bufferized `tensor.from_elements`
    shape) and for one marked `moe.host_buffer` (data the host reads, such
    as the expert offsets of the region form, copied there with
    `gpu.memcpy`). A copy of a strided view, and a buffer that both the host
    and device code use, are reported as errors naming the op: the host
    cannot run them. Last, an element load or store (or a copy) on the host
    of device memory, a view of the function's arguments or of a `gpu.alloc`
    buffer, is an error naming the op, where it would fault at run time.
    Functions without launches are left alone (they run on the host).

    Example:
    ```mlir
    %a = memref.alloc(%n) : memref<?x16xf32>
    memref.copy %arg0, %a : memref<?x16xf32> to memref<?x16xf32>
    ```
    becomes
    ```mlir
    %a = gpu.alloc (%n) : memref<?x16xf32>
    gpu.memcpy %a, %arg0 : memref<?x16xf32>, memref<?x16xf32>
    ```
  }];
  let dependentDialects = [
    "::mlir::gpu::GPUDialect",
    "::mlir::memref::MemRefDialect"
  ];
}

def MoEDropEntryWait : Pass<"moe-drop-entry-wait", "::mlir::ModuleOp"> {
  let summary = "Drop the entry function's final wait for the GPU, which "
                "the moe-mlir runtime does after copying the results";
  let description = [{
    Runs after `gpu-async-region` in the CUDA pipeline of `moe-compile`
    (the pipeline's `runtime-entry` option). `gpu-async-region` ends a
    function that launches work with a blocking `gpu.wait` on it, so that
    the caller finds its results complete. The function that the moe-mlir
    runtime calls (`moe_cuda_run_model`, docs/CUDA.md) does not need it: all
    of a run's work is on one stream, the runtime queues its copies of the
    results on that stream and waits once after them (results in host
    memory are read only then). Dropping it saves a round trip between the
    host and the GPU per call: the host no longer waits for the kernels
    before it queues the results' copy. Only a blocking `gpu.wait` (no
    result) right before the `func.return` of the function named `entry` is
    erased; a function that other functions call keeps it. Without `entry`
    the pass does nothing; a name that is no function of the module is an
    error.

    Example (`entry=main`):
    ```mlir
    func.func @main(...) -> memref<?x16xf32> {
      ...
      %t = gpu.launch_func async [%t0] @kernels::@k ...
      gpu.wait [%t]
      return %out : memref<?x16xf32>
    }
    ```
    loses its `gpu.wait [%t]`.
  }];
  let options = [
    Option<"entry", "entry", "std::string", /*default=*/"\"\"",
           "The function the moe-mlir runtime calls">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

#endif // MOE_CONVERSION_PASSES_TD
