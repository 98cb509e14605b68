// RUN: moe-opt %s --moe-lower-runtime-checks --split-input-file | FileCheck %s

// Each cf.assert becomes a conditional branch to a block that calls the
// runtime's moe_rt_fail hook with the message (one private string per
// distinct message) and does not return.
// CHECK-DAG: llvm.mlir.global private constant @moe_check_message_0("n differs\00")
// CHECK-DAG: llvm.mlir.global private constant @moe_check_message_1("m differs\00")
// CHECK-LABEL: func.func @checks
// CHECK: %[[A:.*]] = arith.cmpi eq, %arg0, %arg1 : index
// CHECK: cf.cond_br %[[A]], ^[[OK:.*]], ^[[FAIL:.*]]
// CHECK: ^[[FAIL]]:
// CHECK-NEXT: %[[M:.*]] = llvm.mlir.addressof @moe_check_message_0 : !llvm.ptr
// CHECK-NEXT: llvm.call @moe_rt_fail(%[[M]]) : (!llvm.ptr) -> ()
// CHECK-NEXT: llvm.unreachable
// CHECK: ^[[OK]]:
// CHECK: %[[B:.*]] = arith.cmpi eq, %arg0, %arg2 : index
// CHECK: cf.cond_br %[[B]], ^[[OK2:.*]], ^[[FAIL2:.*]]
// CHECK: ^[[FAIL2]]:
// CHECK-NEXT: llvm.mlir.addressof @moe_check_message_1
// CHECK: ^[[OK2]]:
// CHECK-NEXT: cf.cond_br %[[A]], ^[[OK3:.*]], ^[[FAIL3:.*]]
// CHECK: ^[[FAIL3]]:
// CHECK-NEXT: llvm.mlir.addressof @moe_check_message_0
// CHECK: ^[[OK3]]:
// CHECK-NEXT: return %arg0 : index
// CHECK-NOT: cf.assert
// CHECK: llvm.func @moe_rt_fail(!llvm.ptr)
func.func @checks(%n: index, %m: index, %p: index) -> index {
  %a = arith.cmpi eq, %n, %m : index
  cf.assert %a, "n differs"
  %b = arith.cmpi eq, %n, %p : index
  cf.assert %b, "m differs"
  cf.assert %a, "n differs"
  return %n : index
}

// A module without checks is left alone: no hook declared.
// RUN: moe-opt %s --moe-lower-runtime-checks --split-input-file 2>&1 | FileCheck %s --check-prefix=NONE
// NONE: // -----
// NONE-NOT: moe_rt_fail
// NONE: func.func @none

// -----

func.func @none(%n: index) -> index {
  return %n : index
}

// -----

// Host code only: a check inside a kernel module stays for the GPU lowering.
// RUN: moe-opt %s --moe-lower-runtime-checks --split-input-file | FileCheck %s --check-prefix=GPU
// GPU-LABEL: gpu.module @kernels
// GPU: cf.assert %{{.*}}, "in a kernel"
// GPU-LABEL: func.func @host
// GPU-NOT: cf.assert
// GPU: llvm.call @moe_rt_fail
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @k(%c: i1) kernel {
      cf.assert %c, "in a kernel"
      gpu.return
    }
  }
  func.func @host(%c: i1) {
    cf.assert %c, "on the host"
    return
  }
}
