func.func @zero_computation(%x: tensor<?x64xf32>, %tok: tensor<?xi32>, %off: tensor<3xi32>,
                            %dest: tensor<?x64xf32>) -> tensor<?x64xf32> {

  %y = moe.zero_computation_experts %x, %tok, %off into %dest
         {first_expert = 0, kinds = [#moe.zero_computation<zero>, #moe.zero_computation<copy>]}
         : (tensor<?x64xf32>, tensor<?xi32>, tensor<3xi32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}
