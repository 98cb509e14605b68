func.func @generic(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<5xi32>,
                   %dest: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %y = moe.generic_experts %x, %tok, %off into %dest {first_expert = 0, num_experts = 4}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<5xi32>, tensor<?x64xf32>) -> tensor<?x64xf32> {
  ^bb0(%rows: tensor<?x64xf32>, %e: index):
    %r = math.tanh %rows : tensor<?x64xf32>
    moe.yield %r : tensor<?x64xf32>
  }
  return %y : tensor<?x64xf32>
}
