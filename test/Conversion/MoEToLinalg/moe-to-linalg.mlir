// RUN: moe-opt %s --convert-moe-to-linalg --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @dispatch
// CHECK-NOT: moe.dispatch
// CHECK: linalg.fill
// CHECK: scf.for
// CHECK: scf.for
// CHECK: tensor.insert
// CHECK: scf.if
func.func @dispatch(%ids: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>) {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4, capacity_factor = 1.0}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<5xi32>, tensor<?x2xi32>
}

// -----

// A fixed capacity: each expert's count is clamped to the constant, not to
// a capacity computed from T.
// CHECK-LABEL: func.func @dispatch_fixed_capacity
// CHECK-NOT: math.ceil
// CHECK: %[[C:.*]] = arith.constant 3 : index
// CHECK: arith.minsi %{{.*}}, %[[C]] : index
func.func @dispatch_fixed_capacity(%ids: tensor<?x1xi32>) -> (tensor<?xi32>, tensor<5xi32>, tensor<?x1xi32>) {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 4, capacity = 3}
      : tensor<?x1xi32> -> tensor<?xi32>, tensor<5xi32>, tensor<?x1xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<5xi32>, tensor<?x1xi32>
}

// -----

// More than one block of 32 tokens: the blocks in parallel (an scf.forall
// whose blocks insert their ids and weights); else one after another.
// CHECK-LABEL: func.func @gate
// CHECK-NOT: moe.gate
// CHECK: %[[MANY:.*]] = arith.cmpi sgt, %{{.*}}, %c32 : index
// CHECK: scf.if %[[MANY]]
// CHECK: scf.forall (%{{.*}}) in (%{{.*}}) shared_outs(%[[IDS:.*]] = %{{.*}}, %[[WTS:.*]] = %{{.*}})
// CHECK: tensor.extract_slice
// CHECK: linalg.matmul
// CHECK: math.exp
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[IDS]]
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[WTS]]
// CHECK: } else {
// CHECK: scf.for {{.*}} step %c32 iter_args
// CHECK: tensor.extract_slice
// CHECK: linalg.matmul
// CHECK: math.exp
// CHECK: tensor.insert_slice
func.func @gate(%x: tensor<?x16xf32>, %r: tensor<16x4xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %w = moe.gate %x, %r {routing = #moe.routing<k = 2, renormalize = true>}
      : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// A router bias: each block's logits accumulate into it, broadcast over the
// block's rows.
// CHECK-LABEL: func.func @gate_router_bias
// CHECK-SAME: %[[B:[a-z0-9]+]]: tensor<4xf32>
// CHECK-NOT: moe.gate
// CHECK: scf.forall (
// CHECK: %[[E:.*]] = tensor.empty(%{{.*}}) : tensor<?x4xf32>
// CHECK-NEXT: %[[BB:.*]] = linalg.broadcast ins(%[[B]] : tensor<4xf32>) outs(%[[E]] : tensor<?x4xf32>) dimensions = [0]
// CHECK: linalg.matmul ins(%{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<16x4xf32>) outs(%[[BB]] : tensor<?x4xf32>)
// CHECK: } else {
// CHECK: linalg.broadcast ins(%[[B]] : tensor<4xf32>)
func.func @gate_router_bias(%x: tensor<?x16xf32>, %r: tensor<16x4xf32>, %b: tensor<4xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %w = moe.gate %x, %r router_bias(%b : tensor<4xf32>) {routing = #moe.routing<k = 2, scoring = topk_softmax>}
      : (tensor<?x16xf32>, tensor<16x4xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The experts as two grouped GEMMs (experts-grouped.mlir has the details):
// the experts with rows listed, then an scf.forall for the gate, up and
// activation of every listed expert, and one for the down projection.
// CHECK-LABEL: func.func @experts
// CHECK-NOT: moe.experts
// CHECK: scf.for
// CHECK: scf.if
// CHECK: scf.forall (
// CHECK: linalg.generic
// CHECK: tensor.extract
// CHECK: linalg.matmul
// CHECK: linalg.matmul
// CHECK: tensor.parallel_insert_slice
// CHECK: scf.forall (
// CHECK: linalg.matmul
// CHECK: tensor.parallel_insert_slice
func.func @experts(%x: tensor<?x16xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
                   %d: tensor<?x16xf32>, %wg: tensor<4x16x32xf32>,
                   %wu: tensor<4x16x32xf32>, %wd: tensor<4x32x16xf32>) -> tensor<?x16xf32> {
  %y = moe.experts %x, %tok, %off into %d gate(%wg : tensor<4x16x32xf32>)
         up(%wu : tensor<4x16x32xf32>) down(%wd : tensor<4x32x16xf32>)
         {expert = #moe.expert<gated, silu>}
         : (tensor<?x16xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A hidden size that is a multiple of 16 f32 lanes: vector loops. Per token
// the k positions and weights are read once; each 16-lane vector of the
// output is the fused multiply-add of the k rows' vectors (a position of -1
// adds nothing). More than 16 tokens: parallel blocks of 16 tokens.
// CHECK-LABEL: func.func @combine
// CHECK-SAME: (%[[ROWS:.*]]: tensor<?x16xf32>, %[[POS:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>)
// CHECK-NOT: moe.combine
// CHECK: %[[MANY:.*]] = arith.cmpi sgt, %{{.*}}, %c16 : index
// CHECK: scf.if %[[MANY]]
// CHECK: scf.forall (%{{.*}}) in (%{{.*}}) shared_outs(%[[OUT:.*]] = %{{.*}})
// CHECK: scf.for
// CHECK: tensor.extract %[[POS]]
// CHECK: %[[W0:.*]] = vector.broadcast %{{.*}} : f32 to vector<16xf32>
// CHECK: tensor.extract %[[POS]]
// CHECK: %[[W1:.*]] = vector.broadcast %{{.*}} : f32 to vector<16xf32>
// CHECK: scf.for
// CHECK: %[[R0:.*]] = vector.transfer_read %[[ROWS]]
// CHECK: %[[F0:.*]] = vector.fma %[[W0]], %[[R0]]
// CHECK: arith.select %{{.*}}, %[[F0]]
// CHECK: %[[R1:.*]] = vector.transfer_read %[[ROWS]]
// CHECK: vector.fma %[[W1]], %[[R1]]
// CHECK: vector.transfer_write
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[OUT]]
// CHECK: } else {
// CHECK: scf.for
// CHECK: vector.fma
// CHECK-NOT: linalg.generic
// CHECK: return
func.func @combine(%rows: tensor<?x16xf32>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x16xf32> {
  %y = moe.combine %rows, %pos, %w
      : (tensor<?x16xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Other hidden sizes: a linalg.generic over [T, H].
// CHECK-LABEL: func.func @combine_odd
// CHECK-NOT: moe.combine
// CHECK-NOT: vector.fma
// CHECK: linalg.generic
// CHECK: arith.select
// CHECK-NOT: scatter
func.func @combine_odd(%rows: tensor<?x12xf32>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x12xf32> {
  %y = moe.combine %rows, %pos, %w
      : (tensor<?x12xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x12xf32>
  return %y : tensor<?x12xf32>
}

// -----

// Expert choice: the rank of each token in its expert's column, then a
// comparison with C = min(ceil(capacity_factor * T / E), T).
// CHECK-LABEL: func.func @expert_choice
// CHECK-NOT: moe.route
// CHECK: math.exp
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: arith.cmpf ogt
// CHECK: arith.cmpf oeq
// CHECK: arith.constant 2.500000e-01 : f64
// CHECK: math.ceil
// CHECK: arith.minimumf
// CHECK: %[[C:.*]] = arith.minsi
// CHECK: linalg.generic
// CHECK: arith.cmpi slt, %{{.*}}, %[[C]] : i64
// CHECK: arith.constant -1 : i32
// CHECK: linalg.generic
// CHECK: arith.cmpi slt, %{{.*}}, %[[C]] : i64
func.func @expert_choice(%l: tensor<?x4xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %ids, %w = moe.route %l {routing = #moe.routing<k = 4, selection = expert_choice, capacity_factor = 1.0>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// An explicit capacity, clamped to the token count.
// CHECK-LABEL: func.func @expert_choice_capacity
// CHECK: %[[CAP:.*]] = arith.constant 3 : i64
// CHECK: arith.minsi %[[CAP]]
func.func @expert_choice_capacity(%l: tensor<?x4xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>) {
  %ids, %w = moe.route %l {routing = #moe.routing<k = 4, scoring = sigmoid, selection = expert_choice, capacity = 3>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %ids, %w : tensor<?x4xi32>, tensor<?x4xf32>
}

// -----

// CHECK-LABEL: func.func @hash_table
// CHECK-NOT: moe.hash_route
// CHECK: tensor.generate
// CHECK: scf.if
// CHECK: tensor.extract %{{.*}} : tensor<?xi32>
// CHECK: } else {
// CHECK: tensor.generate
// CHECK: arith.constant 1.000000e+00 : f32
func.func @hash_table(%t: tensor<?xi32>, %table: tensor<?xi32>) -> (tensor<?x1xi32>, tensor<?x1xf32>) {
  %ids, %w = moe.hash_route %t table(%table : tensor<?xi32>) {num_experts = 4}
      : tensor<?xi32> -> tensor<?x1xi32>, tensor<?x1xf32>
  return %ids, %w : tensor<?x1xi32>, tensor<?x1xf32>
}

// -----

// CHECK-LABEL: func.func @hash_function
// CHECK: tensor.generate
// CHECK: arith.constant 2654435761 : i64
// CHECK: arith.muli
// CHECK: arith.andi
// CHECK: arith.remui
func.func @hash_function(%t: tensor<?xi64>) -> (tensor<?x1xi64>, tensor<?x1xf64>) {
  %ids, %w = moe.hash_route %t {num_experts = 6}
      : tensor<?xi64> -> tensor<?x1xi64>, tensor<?x1xf64>
  return %ids, %w : tensor<?x1xi64>, tensor<?x1xf64>
}

// -----

// Per token block: the slices of the token groups and of the residual; the
// residual is added to the block's logits, and each token's argmax runs over
// the experts of its group [starts[g], starts[g + 1]).
// CHECK-LABEL: func.func @gate_groups_residual
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xf32>, %[[R:.*]]: tensor<16x6xf32>, %[[G:.*]]: tensor<?xi32>, %[[P:.*]]: tensor<?x6xf32>)
// The serial form (after the parallel one of @gate).
// CHECK: } else {
// CHECK: scf.for %[[T0:.*]] = {{.*}} step %{{.*}} iter_args
// CHECK: %[[L:.*]] = linalg.matmul
// CHECK: %[[GS:.*]] = tensor.extract_slice %[[G]][%[[T0]]]
// CHECK: %[[PS:.*]] = tensor.extract_slice %[[P]][%[[T0]], 0]
// CHECK: linalg.generic {{.*}} ins(%[[L]], %[[PS]] :
// CHECK: arith.addf
// CHECK: %[[STARTS:.*]] = arith.constant dense<[0, 2, 6]> : tensor<3xindex>
// CHECK: scf.for
// CHECK: tensor.extract %[[GS]]
// CHECK: %[[LO:.*]] = tensor.extract %[[STARTS]]
// CHECK: %[[HI:.*]] = tensor.extract %[[STARTS]]
// CHECK: scf.for
// CHECK: scf.for %[[E:[a-z0-9_]+]] =
// CHECK: arith.cmpi sge, %[[E]], %[[LO]]
// CHECK: arith.cmpi slt, %[[E]], %[[HI]]
func.func @gate_groups_residual(%x: tensor<?x16xf32>, %r: tensor<16x6xf32>, %g: tensor<?xi32>,
                                %p: tensor<?x6xf32>) -> (tensor<?x2xi32>, tensor<?x2xf32>) {
  %ids, %w = moe.gate %x, %r token_groups(%g : tensor<?xi32>) residual(%p : tensor<?x6xf32>)
      {routing = #moe.routing<k = 2, renormalize = true, expert_groups = [2, 4]>}
      : (tensor<?x16xf32>, tensor<16x6xf32>) -> tensor<?x2xi32>, tensor<?x2xf32>
  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>
}

// -----

// The residual also feeds expert choice.
// CHECK-LABEL: func.func @expert_choice_residual
// CHECK-SAME: (%[[L:.*]]: tensor<?x4xf32>, %[[P:.*]]: tensor<?x4xf32>)
// CHECK: linalg.generic {{.*}} ins(%[[L]], %[[P]] :
// CHECK: arith.addf
// CHECK: math.exp
func.func @expert_choice_residual(%l: tensor<?x4xf32>, %p: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %ids, %w = moe.route %l residual(%p : tensor<?x4xf32>) {routing = #moe.routing<k = 4, selection = expert_choice, capacity = 1>}
      : tensor<?x4xf32> -> tensor<?x4xi32>, tensor<?x4xf32>
  return %w : tensor<?x4xf32>
}
