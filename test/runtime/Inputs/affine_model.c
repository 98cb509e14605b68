/*===- affine_model.c - A hand-written model library for tests ------------===*\
|*                                                                          *|
|* Implements docs/CompiledModelABI.md as a compiler would: y = x * w + b   *|
|* with x f32 ?x4 supplied by the caller and w, b from the weights file.    *|
|* The result is allocated with malloc (over-aligned by hand, as MLIR does) *|
|* and reported through a strided descriptor.                               *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include <stdint.h>
#include <stdlib.h>
#ifdef AFFINE_TRACE
#include <stdio.h>
#endif

typedef struct {
  float *allocated;
  float *aligned;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
} MemRef2;

typedef struct {
  float *allocated;
  float *aligned;
  int64_t offset;
  int64_t sizes[1];
  int64_t strides[1];
} MemRef1;

const char *moe_model_signature(void) {
  return "moe-model 1\n"
         "input x f32 ?x4\n"
         "weight w f32 4x3 offset=0 bytes=48\n"
         "weight b f32 3 offset=64 bytes=12\n"
         "output y f32 2\n";
}

void moe_model_run(void **args) {
  MemRef2 *y = (MemRef2 *)args[0];
  const MemRef2 *x = (const MemRef2 *)args[1];
  const MemRef2 *w = (const MemRef2 *)args[2];
  const MemRef1 *b = (const MemRef1 *)args[3];
  int64_t rows = x->sizes[0];
#ifdef AFFINE_TRACE
  /* Tests of the runner: each call appends x[0][0] to $AFFINE_TRACE. */
  const char *trace = getenv("AFFINE_TRACE");
  FILE *file = trace && rows > 0 ? fopen(trace, "a") : NULL;
  if (file) {
    fprintf(file, "%g\n", x->aligned[x->offset]);
    fclose(file);
  }
#endif
  /* Over-allocate and align, leaving allocated != aligned and a non-zero
   * offset, so the runtime must honour all three fields. */
  float *memory = (float *)malloc(sizeof(float) * (size_t)(rows * 3 + 32));
  float *aligned = (float *)(((uintptr_t)memory + 63) & ~(uintptr_t)63);
  int64_t offset = 5;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      float sum = b->aligned[b->offset + j * b->strides[0]];
      for (int64_t k = 0; k < 4; ++k)
        sum += x->aligned[x->offset + i * x->strides[0] + k * x->strides[1]] *
               w->aligned[w->offset + k * w->strides[0] + j * w->strides[1]];
      aligned[offset + i * 3 + j] = sum;
    }
  }
  y->allocated = memory;
  y->aligned = aligned;
  y->offset = offset;
  y->sizes[0] = rows;
  y->sizes[1] = 3;
  y->strides[0] = 3;
  y->strides[1] = 1;
}
