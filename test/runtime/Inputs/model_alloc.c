/* Checks the heap functions of compiled CPU models (runtime/support/
 * ModelAlloc.c), linked statically: large blocks are reused, within a
 * quarter of their size and at the alignment asked for; cached blocks are
 * plain malloc blocks (free() takes them); the cache stays bounded; and two
 * threads using it at once get distinct blocks. Prints one line per check. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *_mlir_memref_to_llvm_alloc(size_t size);
void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment, size_t size);
void _mlir_memref_to_llvm_free(void *ptr);

enum { kMiB = 1 << 20 };

static void *worker(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  for (int i = 0; i < 2000; ++i) {
    size_t size = (size_t)(1 + rand_r(&seed) % 4) * 256 * 1024;
    unsigned char *p = _mlir_memref_to_llvm_alloc(size);
    unsigned char tag = (unsigned char)(seed & 0xff);
    memset(p, tag, size);
    for (size_t j = 0; j < size; j += 4096)
      if (p[j] != tag)
        return (void *)1; /* another thread wrote into this block */
    _mlir_memref_to_llvm_free(p);
  }
  return NULL;
}

int main(void) {
  void *a = _mlir_memref_to_llvm_alloc(kMiB);
  memset(a, 1, kMiB);
  _mlir_memref_to_llvm_free(a);
  void *b = _mlir_memref_to_llvm_alloc(kMiB);
  printf("same size reused: %d\n", a == b);
  _mlir_memref_to_llvm_free(b);
  void *c = _mlir_memref_to_llvm_alloc(900 * 1024);
  printf("smaller by less than a quarter reused: %d\n", c == b);
  _mlir_memref_to_llvm_free(c);
  void *d = _mlir_memref_to_llvm_alloc(600 * 1024);
  printf("smaller by more than a quarter reused: %d\n", d == c);
  void *e = _mlir_memref_to_llvm_alloc(2 * kMiB);
  printf("larger reused: %d\n", e == c);
  void *f = _mlir_memref_to_llvm_aligned_alloc(4096, 3 * kMiB);
  printf("aligned: %d\n", (uintptr_t)f % 4096 == 0);
  _mlir_memref_to_llvm_free(f);
  void *g = _mlir_memref_to_llvm_aligned_alloc(4096, 3 * kMiB);
  printf("aligned reused: %d\n", g == f && (uintptr_t)g % 4096 == 0);
  /* What the runtime does with a result buffer it adopts: free(). */
  free(g);
  printf("free() of a reused block: ok\n");
  /* Small blocks are not cached (a 1 KiB block is plain malloc memory). */
  void *s = _mlir_memref_to_llvm_alloc(1024);
  _mlir_memref_to_llvm_free(s);
  printf("small: ok\n");
  /* More freed blocks than the cache keeps: the oldest go, no crash. */
  void *many[100];
  for (int i = 0; i < 100; ++i)
    many[i] = _mlir_memref_to_llvm_alloc((size_t)(i + 1) * 128 * 1024);
  for (int i = 0; i < 100; ++i)
    _mlir_memref_to_llvm_free(many[i]);
  void *last = _mlir_memref_to_llvm_alloc(100 * 128 * 1024);
  printf("newest kept: %d\n", last == many[99]);
  void *first = _mlir_memref_to_llvm_alloc(2 * 128 * 1024);
  printf("oldest dropped: %d\n", first != many[1]);
  _mlir_memref_to_llvm_free(last);
  _mlir_memref_to_llvm_free(first);
  _mlir_memref_to_llvm_free(d);
  _mlir_memref_to_llvm_free(e);
  pthread_t threads[2];
  for (int i = 0; i < 2; ++i)
    pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)(i + 1));
  int clean = 1;
  for (int i = 0; i < 2; ++i) {
    void *result;
    pthread_join(threads[i], &result);
    clean = clean && result == NULL;
  }
  printf("two threads: %s\n", clean ? "ok" : "a block was shared");
  return 0;
}
