// Expert placement under a byte budget (Inputs/two-layers.mlir: 2 layers of
// 8 experts of 6144 bytes, k = 2).
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=98304 | FileCheck %s --check-prefix=ALL
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=49152 | FileCheck %s --check-prefix=HALF
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget-percent=25 | FileCheck %s --check-prefix=QUARTER
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=budget=73728 profile=%S/Inputs/profile.json" \
// RUN:   | FileCheck %s --check-prefix=PROFILE
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=61440 | FileCheck %s --check-prefix=UNEVEN

// Everything fits: nothing changes.
// ALL-NOT: moe.expert_slots
// ALL-NOT: placement

// Half: 4 slots per layer, every weight matrix viewed as slots.
// HALF: %[[G:.*]] = moe.expert_slots %arg2 {layer = 0 : i64} : tensor<8x16x32xf32> -> tensor<?x16x32xf32>
// HALF: %[[U:.*]] = moe.expert_slots %arg3 {layer = 0 : i64} : tensor<8x16x32xf32> -> tensor<?x16x32xf32>
// HALF: %[[D:.*]] = moe.expert_slots %arg4 {layer = 0 : i64} : tensor<8x32x16xf32> -> tensor<?x32x16xf32>
// HALF: moe.experts {{.*}} gate(%[[G]] : tensor<?x16x32xf32>) up(%[[U]] : tensor<?x16x32xf32>) down(%[[D]] : tensor<?x32x16xf32>)
// HALF-SAME: placement = #moe.placement<layer = 0, experts = 8, slots = 4>
// HALF: moe.expert_slots %arg6 {layer = 1 : i64}
// HALF: placement = #moe.placement<layer = 1, experts = 8, slots = 4>

// A quarter is the minimum working set: k = 2 slots per layer.
// QUARTER: placement = #moe.placement<layer = 0, experts = 8, slots = 2>
// QUARTER: placement = #moe.placement<layer = 1, experts = 8, slots = 2>

// With a profile (12 experts' bytes: 6 slots per layer), all but k slots are
// pinned: layer 0 by frequency (1, 3, 6, 0), layer 1 by frequency plus how
// often it follows layer 0's pinned experts (5: 1 + 11, 7: 2 + 4, 0: 3); an
// expert never chosen is not pinned, so layer 1 pins only 3.
// PROFILE: placement = #moe.placement<layer = 0, experts = 8, slots = 6, pinned = [1, 3, 6, 0]>
// PROFILE: placement = #moe.placement<layer = 1, experts = 8, slots = 6, pinned = [5, 7, 0]>

// 10 experts' bytes: 2 + 2 for k, 6 shared equally.
// UNEVEN: placement = #moe.placement<layer = 0, experts = 8, slots = 5>
// UNEVEN: placement = #moe.placement<layer = 1, experts = 8, slots = 5>

// Too small a budget is an error that says what is needed.
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=20000 2>&1 | FileCheck %s --check-prefix=SMALL
// SMALL: error: expert budget of 20000 bytes is below the minimum working set: 24576 bytes are needed (the k experts of each of the 2 MoE layers, of 98304 expert bytes in all)

// Bad profiles.
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=budget=49152 profile=%t.missing" 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: error: routing profile '{{.*}}.missing': cannot read it:
// RUN: echo '{"layers": [{"counts": [1, 2]}]}' > %t.short.json
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=budget=49152 profile=%t.short.json" 2>&1 | FileCheck %s --check-prefix=SHORT
// SHORT: error: routing profile '{{.*}}': it has 1 layers, the model has 2
// RUN: echo '{"layers": [{"counts": [1, 2]}, {"counts": []}]}' > %t.counts.json
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=budget=49152 profile=%t.counts.json" 2>&1 | FileCheck %s --check-prefix=COUNTS
// COUNTS: error: routing profile '{{.*}}': layer 0 needs "counts": 8 non-negative numbers
// RUN: echo 'not json' > %t.bad.json
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=budget=49152 profile=%t.bad.json" 2>&1 | FileCheck %s --check-prefix=JSON
// JSON: error: routing profile '{{.*}}': not valid JSON:

// Pre-gating: layer 1's router runs on layer 0's input right after layer
// 0's gate, and its choice is prefetched into layer 1's cache.
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=49152 --moe-insert-prefetch \
// RUN:   | FileCheck %s --check-prefix=PREFETCH
// PREFETCH: %[[IDS0:.*]], %{{.*}} = moe.gate %arg0, %arg1
// PREFETCH-NEXT: %[[PRED:.*]], %{{.*}} = moe.gate %arg0, %arg5 {routing = #moe.routing<k = 2, renormalize = true>}
// PREFETCH-NEXT: moe.prefetch %[[PRED]] {layer = 1 : i64} : tensor<?x2xi32>
// PREFETCH-NEXT: moe.dispatch %[[IDS0]]
// PREFETCH-NOT: moe.prefetch
// With router biases (GPT-OSS) the predicting gate takes layer 1's bias too.
// RUN: moe-opt %S/Inputs/two-gptoss-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=49152 --moe-insert-prefetch \
// RUN:   | FileCheck %s --check-prefix=PREFETCH-BIAS
// PREFETCH-BIAS: %[[IDS0:.*]], %{{.*}} = moe.gate %arg0, %arg1 router_bias(%arg2 : tensor<8xf32>)
// PREFETCH-BIAS-NEXT: %[[PRED:.*]], %{{.*}} = moe.gate %arg0, %arg6 router_bias(%arg7 : tensor<8xf32>) {routing = #moe.routing<k = 2, scoring = topk_softmax>}
// PREFETCH-BIAS-NEXT: moe.prefetch %[[PRED]] {layer = 1 : i64} : tensor<?x2xi32>
// Depth 0 inserts nothing; without placement nothing is prefetched.
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=budget=49152 --moe-insert-prefetch=depth=0 \
// RUN:   | FileCheck %s --check-prefix=NOPREFETCH
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-insert-prefetch | FileCheck %s --check-prefix=NOPREFETCH
// NOPREFETCH-NOT: moe.prefetch

// Routing traces, one per layer, numbered in program order.
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-instrument-routing | FileCheck %s --check-prefix=TRACE
// TRACE: %[[A:.*]], %{{.*}} = moe.gate %arg0, %arg1
// TRACE-NEXT: moe.trace_routing %[[A]] {layer = 0 : i64, num_experts = 8 : i64} : tensor<?x2xi32>
// TRACE: %[[B:.*]], %{{.*}} = moe.gate %{{.*}}, %arg5
// TRACE-NEXT: moe.trace_routing %[[B]] {layer = 1 : i64, num_experts = 8 : i64} : tensor<?x2xi32>

// Expert parallelism over devices. Without a profile each device gets a
// contiguous range of experts and, without a budget, a cache that holds
// them all.
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=devices=2 | FileCheck %s --check-prefix=DEV2
// DEV2: moe.expert_slots %arg2 {layer = 0 : i64}
// DEV2: placement = #moe.placement<layer = 0, experts = 8, slots = 4, devices = [0, 0, 0, 0, 1, 1, 1, 1]>
// DEV2: placement = #moe.placement<layer = 1, experts = 8, slots = 4, devices = [0, 0, 0, 0, 1, 1, 1, 1]>
// Three devices for 8 experts: 3, 3 and 2.
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=devices=3 | FileCheck %s --check-prefix=DEV3
// DEV3: placement = #moe.placement<layer = 0, experts = 8, slots = 3, devices = [0, 0, 0, 1, 1, 1, 2, 2]>
// The budget is per device: 4 experts' bytes give each device's cache of
// a layer the k = 2 slots of the minimum working set.
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=2 budget=24576" | FileCheck %s --check-prefix=DEVBUDGET
// DEVBUDGET: placement = #moe.placement<layer = 0, experts = 8, slots = 2, devices = [0, 0, 0, 0, 1, 1, 1, 1]>
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=2 budget=20000" 2>&1 | FileCheck %s --check-prefix=DEVSMALL
// DEVSMALL: error: expert budget of 20000 bytes is below the minimum working set: 24576 bytes are needed (the k experts of each of the 2 MoE layers on each of 2 devices, of 49152 expert bytes in all per device)

// With a profile: layer 0 balanced by counts (1: 9 and 3: 7 apart, then
// 6: 2 where it fits under 110% of the mean load of 9.5, ...); layer 1's
// experts follow their tokens (5 to device 1, where most of its tokens come
// from, 7 to device 0) until device 1 is overloaded, then 5 swaps with 1,
// the move that loses the least affinity. Each device pins its most used
// experts in all but k of its 3 slots, scoring affinity only from pinned
// experts on the same device (5 gets 1's 5 tokens, 7 gets 1's 4 tokens).
// RUN: moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=2 budget=36864 profile=%S/Inputs/profile.json plan-file=%t.plan.json" \
// RUN:   | FileCheck %s --check-prefix=DEVPROFILE
// DEVPROFILE: placement = #moe.placement<layer = 0, experts = 8, slots = 3, pinned = [1, 3], devices = [0, 0, 1, 1, 1, 0, 1, 0]>
// DEVPROFILE: placement = #moe.placement<layer = 1, experts = 8, slots = 3, pinned = [5, 0], devices = [1, 1, 0, 0, 1, 0, 1, 0]>
// The plan file: of the profile's 15 token pairs, 3 -> 5 (6) changes device
// (0.4); under contiguous ranges all do (1 and 3 on device 0, 5 and 7 on 1).
// RUN: FileCheck %s --check-prefix=PLANFILE < %t.plan.json
// PLANFILE: {"version": 1, "devices": 2, "budget_bytes_per_device": 36864, "profile_cross_device": 0.4000, "profile_cross_device_contiguous": 1.0000, "layers": [
// PLANFILE-NEXT: {"layer":0,"experts":8,"k":2,"expert_bytes":6144,"placed":true,"resident":false,"slots_per_device":3,"pinned":[1,3],"devices":[0,0,1,1,1,0,1,0],"device_load":[10,9]},
// PLANFILE-NEXT: {"layer":1,"experts":8,"k":2,"expert_bytes":6144,"placed":true,"resident":false,"slots_per_device":3,"pinned":[5,0],"devices":[1,1,0,0,1,0,1,0],"device_load":[3,3]}
// PLANFILE-NEXT: ]}

// Bad device counts.
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=devices=0 2>&1 | FileCheck %s --check-prefix=DEVZERO
// DEVZERO: error: moe-plan-placement devices must be at least 1, got 0
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   --moe-plan-placement=devices=9 2>&1 | FileCheck %s --check-prefix=DEVMANY
// DEVMANY: error: 'moe.experts' op cannot be spread over 9 devices: it has 8 experts
// RUN: not moe-opt %S/Inputs/two-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=2 plan-file=%t.nodir/plan.json" 2>&1 | FileCheck %s --check-prefix=NOPLANFILE
// NOPLANFILE: error: cannot write the placement plan '{{.*}}nodir/plan.json':

// Group-limited routing (Inputs/two-grouped-layers.mlir: 4 groups of 2
// experts, 2 groups per token): when the devices share the groups evenly,
// whole groups are placed, so a token reaches at most 2 devices. Layer 0's
// groups are balanced by their counts (10, 7, 0, 2); layer 1's follow their
// tokens until device 1 is overloaded, then group 2 (expert 5) swaps with
// group 1.
// RUN: moe-opt %S/Inputs/two-grouped-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=2 profile=%S/Inputs/profile.json plan-file=%t.groups.json" \
// RUN:   | FileCheck %s --check-prefix=GROUPS
// GROUPS: placement = #moe.placement<layer = 0, experts = 8, slots = 4, devices = [0, 0, 1, 1, 0, 0, 1, 1]>
// GROUPS: placement = #moe.placement<layer = 1, experts = 8, slots = 4, devices = [1, 1, 1, 1, 0, 0, 0, 0]>
// RUN: FileCheck %s --check-prefix=GROUPSFILE < %t.groups.json
// GROUPSFILE: {"layer":0,"experts":8,"k":2,"expert_bytes":6144,"placed":true,"group_size":2,"resident":true,
// Four devices: one group each.
// RUN: moe-opt %S/Inputs/two-grouped-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=4 profile=%S/Inputs/profile.json" \
// RUN:   | FileCheck %s --check-prefix=GROUPS4
// GROUPS4: placement = #moe.placement<layer = 0, experts = 8, slots = 2, devices = [0, 0, 1, 1, 3, 3, 2, 2]>
// Eight devices do not share 4 groups evenly: experts are placed one by one.
// RUN: moe-opt %S/Inputs/two-grouped-layers.mlir --moe-expand --moe-fuse-gating \
// RUN:   "--moe-plan-placement=devices=8 plan-file=%t.groups8.json" \
// RUN:   | FileCheck %s --check-prefix=GROUPS8
// GROUPS8: placement = #moe.placement<layer = 0, experts = 8, slots = 1, devices = [0, 1, 2, 3, 4, 5, 6, 7]>
// RUN: FileCheck %s --check-prefix=GROUPS8FILE < %t.groups8.json
// GROUPS8FILE-NOT: group_size
