// RUN: moe-opt %s --moe-cuda-pipeline="chip=sm_90" | FileCheck %s
// RUN: moe-opt %s --moe-cuda-pipeline="lower-host=false" | FileCheck %s --check-prefix=KERNELS
// RUN: moe-opt %s --moe-cuda-pipeline="chip=sm_90 runtime-entry=layer" | FileCheck %s --check-prefix=ENTRY
// RUN: moe-opt %S/Inputs/host-copies.mlir --moe-cuda-pipeline="chip=sm_90" | FileCheck %s --check-prefix=COPIES
// RUN: not moe-translate --moe-to-ptx %S/Inputs/no-kernels.mlir 2>&1 | FileCheck %s --check-prefix=NOPTX

// The host function is bufferized and lowered to LLVM; its launches call
// the mgpu* runtime wrappers; the kernels are a PTX object.
// CHECK-LABEL: llvm.func @layer
// CHECK-NOT: gpu.alloc
// CHECK: llvm.call @mgpuStreamCreate
// CHECK: llvm.call @mgpuMemAlloc
// CHECK: gpu.launch_func <%{{.*}} : !llvm.ptr> @moe_kernels::@moe_gate
// CHECK: gpu.launch_func <%{{.*}} : !llvm.ptr> @moe_kernels::@moe_combine
// CHECK: llvm.call @mgpuStreamSynchronize
// CHECK: llvm.return
// CHECK: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_90">, {{.*}}assembly = "
// CHECK-SAME: .target sm_90

// The function the moe-mlir runtime calls returns without waiting for the
// GPU (moe-drop-entry-wait): the runtime waits after copying its results.
// ENTRY-LABEL: llvm.func @layer
// ENTRY: gpu.launch_func <%{{.*}} : !llvm.ptr> @moe_kernels::@moe_combine
// ENTRY-NOT: llvm.call @mgpuStreamSynchronize
// ENTRY: llvm.return

// KERNELS-LABEL: func.func @layer
// KERNELS-SAME: tensor<?x64xf32>
// KERNELS: gpu.launch_func @moe_kernels::@moe_gate
// KERNELS: gpu.binary @moe_kernels [#gpu.object<#nvvm.target<O = 3, chip = "sm_80">

// No host copy of device memory: the arguments are read in place; the one
// host buffer is the region form's expert offsets, copied from the device.
// COPIES-LABEL: llvm.func @main
// COPIES-NOT: llvm.intr.memcpy
// COPIES: llvm.call @malloc
// COPIES-NOT: llvm.intr.memcpy
// COPIES: llvm.call @mgpuMemcpy
// COPIES-NOT: llvm.intr.memcpy
// COPIES-LABEL: llvm.func @collapsed
// COPIES-NOT: llvm.intr.memcpy
// COPIES-NOT: llvm.call @malloc
// COPIES: llvm.return

// NOPTX: error: no PTX in the module: no gpu.binary with an isa object
func.func @layer(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
                 %wg: tensor<8x64x128xf32>, %wu: tensor<8x64x128xf32>,
                 %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
         up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
