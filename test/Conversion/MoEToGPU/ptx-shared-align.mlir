// REQUIRES: ptxas
// Workgroup buffers are declared 16-byte aligned. LLVM merges adjacent scalar
// accesses into vector ones (here the routing kernel's per-thread partial
// sums, [512 x 4] f32, stored as one 16-byte vector per thread), and with a
// static token count it also splits the score tiles into pieces; with the
// default 4-byte alignment those vector accesses were misaligned
// (CUDA_ERROR_MISALIGNED_ADDRESS on an H200).
// RUN: moe-translate --moe-to-ptx --ptx-chip=sm_90 %s -o %t.ptx
// RUN: /usr/local/cuda/bin/ptxas -arch=sm_90 %t.ptx -o %t.cubin
// RUN: FileCheck %s < %t.ptx

// CHECK-LABEL: .entry moe_gate(
// CHECK: .shared .align 16 .b8 __wg_moe_gate_0[8192];
// CHECK-NOT: .shared .align 4 .b8
// CHECK: .shared .align 16 .b8 __wg_moe_gate_2[8192];
// CHECK: st.shared.v4.b32
func.func @main(%x: tensor<64x64xf32>, %router: tensor<64x8xf32>,
                %gate: tensor<8x64x224xf32>, %up: tensor<8x64x224xf32>,
                %down: tensor<8x224x64xf32>) -> tensor<64x64xf32> {
  %y = moe.layer %x, %router gate(%gate : tensor<8x64x224xf32>) up(%up : tensor<8x64x224xf32>) down(%down : tensor<8x224x64xf32>)
      {expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, renormalize = true>}
      : (tensor<64x64xf32>, tensor<64x8xf32>) -> tensor<64x64xf32>
  return %y : tensor<64x64xf32>
}
