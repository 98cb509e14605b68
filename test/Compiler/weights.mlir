// Weights of every kind: a dense_resource blob (used twice, outlined once),
// a non-splat i8 tensor, an i1 tensor (one byte per element), an unused
// constant (dropped) and a 16-byte constant (kept in the code).
//
// RUN: rm -rf %t && mkdir -p %t
// RUN: moe-compile %s -o %t/w.so
// RUN: moe-run %t/w.so --print-signature | FileCheck %s --check-prefix=SIG
// RUN: %python %S/Inputs/weights_check.py data %t/w.weights | FileCheck %s --check-prefix=DATA
// RUN: %python %S/Inputs/weights_check.py gen %t
// RUN: moe-run %t/w.so --input=@%t/x.npy --output=@%t/o0.npy --output=@%t/o1.npy --output=@%t/o2.npy --output=@%t/o3.npy
// RUN: %python %S/Inputs/weights_check.py check %t | FileCheck %s --check-prefix=OUT

// SIG:      moe-model 1
// SIG-NEXT: input arg0 f32 32
// SIG-NEXT: weight r f32 32 offset=0 bytes=128
// SIG-NEXT: weight w1 i8 100 offset=128 bytes=100
// SIG-NEXT: weight w2 i1 80 offset=256 bytes=80
// SIG-NEXT: output sum f32 1
// SIG-NEXT: output out1 i8 1
// SIG-NEXT: output out2 i1 1
// SIG-NEXT: output out3 f32 1
// SIG-NOT:  {{.}}

// DATA: size 384 file 448
// DATA-NEXT: r matches
// DATA-NEXT: i8 matches
// DATA-NEXT: i1 matches

// OUT: sum OK
// OUT-NEXT: i8 OK
// OUT-NEXT: i1 OK
// OUT-NEXT: small OK

func.func @weights(%x: tensor<32xf32>)
    -> (tensor<32xf32> {moe.name = "sum"}, tensor<100xi8>, tensor<80xi1>, tensor<4xf32>) {
  %r = arith.constant {moe.name = "r"} dense_resource<blob1> : tensor<32xf32>
  %r2 = arith.constant dense_resource<blob1> : tensor<32xf32>
  %unused = arith.constant dense<7.0> : tensor<64xf32>
  %a = arith.addf %x, %r : tensor<32xf32>
  %b = arith.addf %a, %r2 : tensor<32xf32>
  %i8 = arith.constant dense<[-128, -91, -54, -17, 20, 57, 94, -125, -88, -51, -14, 23, 60, 97, -122, -85, -48, -11, 26, 63, 100, -119, -82, -45, -8, 29, 66, 103, -116, -79, -42, -5, 32, 69, 106, -113, -76, -39, -2, 35, 72, 109, -110, -73, -36, 1, 38, 75, 112, -107, -70, -33, 4, 41, 78, 115, -104, -67, -30, 7, 44, 81, 118, -101, -64, -27, 10, 47, 84, 121, -98, -61, -24, 13, 50, 87, 124, -95, -58, -21, 16, 53, 90, 127, -92, -55, -18, 19, 56, 93, -126, -89, -52, -15, 22, 59, 96, -123, -86, -49]> : tensor<100xi8>
  %i1 = arith.constant dense<[true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false, false, true, false]> : tensor<80xi1>
  %small = arith.constant dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>
  return %b, %i8, %i1, %small : tensor<32xf32>, tensor<100xi8>, tensor<80xi1>, tensor<4xf32>
}

{-#
  dialect_resources: {
    builtin: {
      blob1: "0x04000000000080C0000070C0000060C0000050C0000040C0000030C0000020C0000010C0000000C00000E0BF0000C0BF0000A0BF000080BF000040BF000000BF000080BE000000000000803E0000003F0000403F0000803F0000A03F0000C03F0000E03F0000004000001040000020400000304000004040000050400000604000007040"
    }
  }
#-}
