// REQUIRES: ptxas
// Every kernel of the f32 layers, compiled to PTX for sm_80 and sm_90 and
// assembled by ptxas for each.
// RUN: moe-translate --moe-to-ptx --ptx-chip=sm_80 %s -o %t.sm80.ptx
// RUN: /usr/local/cuda/bin/ptxas -arch=sm_80 %t.sm80.ptx -o %t.sm80.cubin
// RUN: moe-translate --moe-to-ptx --ptx-chip=sm_90 %s -o %t.sm90.ptx
// RUN: /usr/local/cuda/bin/ptxas -arch=sm_90 %t.sm90.ptx -o %t.sm90.cubin
// RUN: FileCheck %s --check-prefixes=CHECK,SM80 < %t.sm80.ptx
// RUN: FileCheck %s --check-prefixes=CHECK,SM90 < %t.sm90.ptx
// RUN: FileCheck %s --check-prefix=NOMMA < %t.sm90.ptx

// SM80: .target sm_80
// SM90: .target sm_90
// libdevice is linked in: no call is left unresolved.
// CHECK-NOT: .extern .func
// CHECK-DAG: .entry moe_gate(
// CHECK-DAG: .entry moe_dispatch_single(
// The dispatch ranks come from warp ballots.
// CHECK-DAG: vote.sync.ballot.b32
// CHECK-DAG: .entry moe_dispatch_count(
// CHECK-DAG: .entry moe_dispatch_scan(
// CHECK-DAG: .entry moe_dispatch_place(
// CHECK-DAG: .entry moe_experts_up(
// CHECK-DAG: .entry moe_experts_down(
// CHECK-DAG: .entry moe_shared_scale(
// CHECK-DAG: .entry moe_shared_up(
// CHECK-DAG: .entry moe_shared_down(
// CHECK-DAG: .entry moe_combine(
// CHECK-DAG: .entry moe_route(
// CHECK-DAG: .entry moe_gate_0(
// CHECK-DAG: .entry moe_experts_up_1(
// CHECK-DAG: bar.sync
// f32 keeps CUDA-core GEMMs (the register-blocked SIMT kernel), with a
// narrow-tile variant for a few dozen rows per expert.
// CHECK-DAG: .entry moe_experts_up_narrow(
// CHECK-DAG: .entry moe_experts_down_narrow(
// CHECK-DAG: .entry moe_shared_up_narrow(
// CHECK-DAG: .entry moe_shared_down_narrow(
// NOMMA-NOT: mma.sync
// The skinny (decode) path beside the tiled one, for every FFN.
// CHECK-DAG: .entry moe_experts_up_skinny(
// CHECK-DAG: .entry moe_experts_down_skinny(
// CHECK-DAG: .entry moe_experts_down_reduce(
// CHECK-DAG: .entry moe_shared_up_skinny(
// CHECK-DAG: .entry moe_shared_down_skinny(
// CHECK-DAG: .entry moe_shared_down_reduce(
// CHECK-DAG: .entry moe_experts_up_skinny_2(
// CHECK-DAG: .entry moe_experts_down_reduce_2(
// 16-byte weight loads, the row-group scan and the slice reduction in warp
// shuffles, two blocks per SM.
// CHECK-DAG: ld.global.v4.b32
// CHECK-DAG: shfl.sync.up.b32
// CHECK-DAG: shfl.sync.bfly.b32
// CHECK-DAG: .minnctapersm 2

// Mixtral: softmax, top-2, renormalized, SwiGLU experts.
func.func @mixtral(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
                   %wg: tensor<8x64x128xf32>, %wu: tensor<8x64x128xf32>,
                   %wd: tensor<8x128x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x128xf32>)
         up(%wu : tensor<8x64x128xf32>) down(%wd : tensor<8x128x64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 2, renormalize = true>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// DeepSeek-V3: sigmoid scores, selection bias, group-limited top-k, scaled
// weights, shared experts with a sigmoid gate.
func.func @deepseek(%x: tensor<?x64xf32>, %router: tensor<64x16xf32>, %bias: tensor<16xf32>,
                    %wg: tensor<16x64x32xf32>, %wu: tensor<16x64x32xf32>,
                    %wd: tensor<16x32x64xf32>, %sg: tensor<64x96xf32>,
                    %su: tensor<64x96xf32>, %sd: tensor<96x64xf32>,
                    %ss: tensor<64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router selection_bias(%bias : tensor<16xf32>)
         gate(%wg : tensor<16x64x32xf32>) up(%wu : tensor<16x64x32xf32>)
         down(%wd : tensor<16x32x64xf32>)
         shared_gate(%sg : tensor<64x96xf32>) shared_up(%su : tensor<64x96xf32>)
         shared_down(%sd : tensor<96x64xf32>) shared_scale(%ss : tensor<64xf32>)
         {expert = #moe.expert<gated, silu>,
          routing = #moe.routing<k = 4, scoring = sigmoid, renormalize = true,
                                 scale = 2.5, n_group = 4, topk_group = 2>}
         : (tensor<?x64xf32>, tensor<64x16xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// GPT-OSS: top-k then softmax, clamped SwiGLU with biases.
func.func @gpt_oss(%x: tensor<?x64xf32>, %router: tensor<64x8xf32>,
                   %wg: tensor<8x64x48xf32>, %wu: tensor<8x64x48xf32>,
                   %wd: tensor<8x48x64xf32>, %bg: tensor<8x48xf32>,
                   %bu: tensor<8x48xf32>, %bd: tensor<8x64xf32>) -> tensor<?x64xf32> {
  %y = moe.layer %x, %router gate(%wg : tensor<8x64x48xf32>)
         up(%wu : tensor<8x64x48xf32>) down(%wd : tensor<8x48x64xf32>)
         gate_bias(%bg : tensor<8x48xf32>) up_bias(%bu : tensor<8x48xf32>)
         down_bias(%bd : tensor<8x64xf32>)
         {expert = #moe.expert<gated, silu, limit = 7.0, alpha = 1.702, beta = 1.0>,
          routing = #moe.routing<k = 2, scoring = topk_softmax>}
         : (tensor<?x64xf32>, tensor<64x8xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// Switch: top-1 with capacity, GELU FFN; logits given, block-padded rows;
// top-p routing with a temperature.
func.func @switch(%logits: tensor<32x4xf32>, %x: tensor<32x64xf32>,
                  %wu: tensor<4x64x128xf32>, %wd: tensor<4x128x64xf32>)
    -> (tensor<32x64xf32>, tensor<32x2xi64>, tensor<32x2xf32>) {
  %ids, %w = moe.route %logits {routing = #moe.routing<k = 1, capacity_factor = 1.25>}
      : tensor<32x4xf32> -> tensor<32x1xi32>, tensor<32x1xf32>
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4, block_size = 16, capacity_factor = 1.25}
      : tensor<32x1xi32> -> tensor<92xi32>, tensor<5xi32>, tensor<32x1xi32>
  %init = tensor.empty() : tensor<92x64xf32>
  %rows = moe.experts %x, %tok, %off into %init
         up(%wu : tensor<4x64x128xf32>) down(%wd : tensor<4x128x64xf32>)
         {expert = #moe.expert<ffn, gelu>}
         : (tensor<32x64xf32>, tensor<92xi32>, tensor<5xi32>, tensor<92x64xf32>)
         -> tensor<92x64xf32>
  %out = moe.combine %rows, %pos, %w
      : (tensor<92x64xf32>, tensor<32x1xi32>, tensor<32x1xf32>) -> tensor<32x64xf32>
  %ids2, %w2 = moe.route %logits {routing = #moe.routing<k = 2, temperature = 0.5, threshold = 0.7>}
      : tensor<32x4xf32> -> tensor<32x2xi64>, tensor<32x2xf32>
  return %out, %ids2, %w2 : tensor<32x64xf32>, tensor<32x2xi64>, tensor<32x2xf32>
}
