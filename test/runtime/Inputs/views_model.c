/*===- views_model.c - Results that are views, aliases and scalars --------===*\
|*                                                                          *|
|* A weight-less model library exercising the result rules of the ABI:      *|
|* strided and offset results, two results sharing one allocation, a       *|
|* result that aliases an input, a rank-0 result, an i1 result and a       *|
|* constant global.                                                         *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  void *allocated;
  void *aligned;
  int64_t offset;
  int64_t sizes[2];
  int64_t strides[2];
} MemRef2;

typedef struct {
  void *allocated;
  void *aligned;
  int64_t offset;
  int64_t sizes[1];
  int64_t strides[1];
} MemRef1;

typedef struct {
  void *allocated;
  void *aligned;
  int64_t offset;
} MemRef0;

/* The result block: one descriptor per output line, in order. */
typedef struct {
  MemRef2 t;
  MemRef2 u;
  MemRef1 alias;
  MemRef1 tail;
  MemRef0 sum;
  MemRef1 positive;
  MemRef1 constant;
} Results;

static const float constantData[3] = {1.5f, -2.0f, 3.25f};

const char *moe_model_signature(void) {
  return "moe-model 1\n"
         "input a i32 2x3\n"
         "input b f64 ?\n"
         "output t i32 2\n"
         "output u i32 2\n"
         "output alias f64 1\n"
         "output tail f64 1\n"
         "output sum f64 0\n"
         "output positive i1 1\n"
         "output constant f32 1\n";
}

void moe_model_run(void **args) {
  Results *r = (Results *)args[0];
  const MemRef2 *a = (const MemRef2 *)args[1];
  const MemRef1 *b = (const MemRef1 *)args[2];
  const int32_t *aData = (const int32_t *)a->aligned + a->offset;
  const double *bData = (const double *)b->aligned + b->offset;
  int64_t n = b->sizes[0];

  /* t: the transpose of a copy of a, as a strided view; u: the copy itself,
   * sharing t's allocation. */
  int32_t *copy = (int32_t *)malloc(6 * sizeof(int32_t));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      copy[i * 3 + j] = aData[i * a->strides[0] + j * a->strides[1]];
  r->t = (MemRef2){copy, copy, 0, {3, 2}, {1, 3}};
  r->u = (MemRef2){copy, copy, 0, {2, 3}, {3, 1}};

  /* alias: the input itself, which the runtime must not free. */
  r->alias = (MemRef1){b->allocated, b->aligned, b->offset, {n}, {1}};

  /* tail: b[1:] as an offset view of a fresh copy. */
  double *bCopy = (double *)malloc((size_t)(n + 1) * sizeof(double));
  memcpy(bCopy, bData, (size_t)n * sizeof(double));
  r->tail = (MemRef1){bCopy, bCopy, 1, {n > 0 ? n - 1 : 0}, {1}};

  double *sum = (double *)malloc(sizeof(double));
  *sum = 0;
  for (int64_t i = 0; i < n; ++i)
    *sum += bData[i];
  r->sum = (MemRef0){sum, sum, 0};

  uint8_t *positive = (uint8_t *)malloc((size_t)n + 1);
  for (int64_t i = 0; i < n; ++i)
    positive[i] = bData[i] > 0;
  r->positive = (MemRef1){positive, positive, 0, {n}, {1}};

  /* constant: a global inside the library, marked as MLIR marks the result
   * of memref.get_global; the runtime must not free it. */
  r->constant =
      (MemRef1){(void *)0xdeadbeef, (void *)constantData, 0, {3}, {1}};
}
