// --emit=mlir prints the lowered module with the ABI glue in the LLVM dialect.
// RUN: moe-compile %S/Inputs/affine.mlir --emit=mlir -o - | FileCheck %s

// The entry keeps its C interface but is private to the library.
// CHECK-DAG: llvm.func internal @affine(
// CHECK-DAG: llvm.func internal @_mlir_ciface_affine(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr)
// b (32 bytes) is below the threshold and stays in the code.
// CHECK-DAG: llvm.mlir.global private constant @{{.*}}(dense<[-1.000000e+00, -7.500000e-01
// CHECK-DAG: llvm.mlir.global internal constant @moe_model_signature_text("moe-model 1\0Ainput x f32 ?x16\0Aweight W f32 16x8 offset=0 bytes=512\0Aweight w1 f32 16x8 offset=512 bytes=512\0Aoutput y f32 2\0Aoutput out1 f32 2\0A\00")

// CHECK-LABEL: llvm.func @moe_model_signature() -> !llvm.ptr
// CHECK: llvm.mlir.addressof @moe_model_signature_text

// The result block, then x, W and S: args[0..3].
// CHECK-LABEL: llvm.func @moe_model_run(
// CHECK-SAME: %[[ARGS:.*]]: !llvm.ptr)
// CHECK: %[[P0:.*]] = llvm.getelementptr %[[ARGS]][0]
// CHECK: %[[R:.*]] = llvm.load %[[P0]] : !llvm.ptr -> !llvm.ptr
// CHECK: %[[P1:.*]] = llvm.getelementptr %[[ARGS]][1]
// CHECK: %[[X:.*]] = llvm.load %[[P1]]
// CHECK: %[[P2:.*]] = llvm.getelementptr %[[ARGS]][2]
// CHECK: %[[W:.*]] = llvm.load %[[P2]]
// CHECK: %[[P3:.*]] = llvm.getelementptr %[[ARGS]][3]
// CHECK: %[[S:.*]] = llvm.load %[[P3]]
// CHECK: llvm.call @_mlir_ciface_affine(%[[R]], %[[X]], %[[W]], %[[S]])
// CHECK-NOT: llvm.func @main
