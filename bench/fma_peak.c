/* The machine's vector FMA throughput: every thread (OpenMP) runs 12
 * independent chains of the widest FMA the compiler targets (-march=native:
 * AVX-512 where the CPU has it) on registers only. Prints one line,
 * "fma_peak_gflops: X", the best of 5 runs. A ceiling for the compute-bound
 * cells of bench/moe_bench.py; built and run by it. */
#include <omp.h>
#include <stdio.h>
#include <time.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const long iters = 20000000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = now();
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
      vec a[12], b, c;
      for (int i = 0; i < 12; ++i)
        for (int l = 0; l < LANES; ++l)
          a[i][l] = 1e-3f * (float)(i + l);
      for (int l = 0; l < LANES; ++l) {
        b[l] = 0.999f;
        c[l] = 1e-4f;
      }
      for (long n = 0; n < iters; ++n)
#pragma clang loop unroll(full)
        for (int i = 0; i < 12; ++i)
          a[i] = a[i] * b + c;
      for (int i = 0; i < 12; ++i)
        for (int l = 0; l < LANES; ++l)
          sink += a[i][l];
    }
    double t = now() - t0;
    double gflops =
        (double)iters * 12 * LANES * 2 * omp_get_max_threads() / t / 1e9;
    if (gflops > best && sink == sink)
      best = gflops;
  }
  printf("fma_peak_gflops: %.1f\n", best);
  return 0;
}
