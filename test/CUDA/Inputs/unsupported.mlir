// More experts than the dispatch kernels keep counts of in workgroup memory.
func.func @main(%ids: tensor<?x2xi32>) -> (tensor<?xi32>, tensor<6145xi32>, tensor<?x2xi32>) {
  %tok, %off, %pos = moe.dispatch %ids {num_experts = 6144}
      : tensor<?x2xi32> -> tensor<?xi32>, tensor<6145xi32>, tensor<?x2xi32>
  return %tok, %off, %pos : tensor<?xi32>, tensor<6145xi32>, tensor<?x2xi32>
}
