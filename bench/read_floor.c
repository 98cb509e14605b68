/* The I/O floor of one MoE layer call, measured side by side with the
 * contenders: the time to stream exactly the weight bytes the call must read
 * (the router, the shared experts and the distinct routed experts its tokens
 * select) from memory, with the benchmark's threads, and nothing else. With
 * --rotate the calls take the expert sets of the rotated inputs in turn, as the
 * contenders' calls do.
 *
 *   read_floor EXPERT_FLOATS NUM_EXPERTS FIXED_FLOATS SETS_FILE MIN_TIME_S
 *
 * EXPERT_FLOATS: floats of one routed expert (3 H F); FIXED_FLOATS: floats
 * every call reads besides (router H E, shared experts 3 H Fs); SETS_FILE: a
 * line per call, the expert ids it reads. The experts lie one after another in
 * one buffer (as in the compiled layer's weights file); a call's bytes are
 * split evenly into one contiguous run per thread, read as eight concurrent
 * streams (stream()). Prints "median_ms: M min_ms: m max_ms: X calls: N".
 * Build: clang -O3 -march=native -fopenmp read_floor.c (bench/moe_bench.py
 * does). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The sum of n floats at p (64-byte aligned): STREAMS concurrent streams over
 * equal parts, one 16-float accumulator each (GCC/clang vector extensions), so
 * that the loop is bound by loads with several in flight. Eight streams read
 * fastest on the benchmark's machine (1.63 ms for S1's two experts against 1.64
 * with four, 1.69 with sixteen and 1.71 with one). */
typedef float v16 __attribute__((vector_size(64)));
#ifndef STREAMS
#define STREAMS 8
#endif
static float stream(const float *p, size_t n) {
  /* STREAMS concurrent streams over equal parts (more loads in flight). */
  size_t q = n / STREAMS / 16 * 16, m = q / 16;
  v16 a[STREAMS];
  for (int s = 0; s < STREAMS; ++s)
    a[s] = (v16){0};
  const v16 *w = (const v16 *)p;
  for (size_t i = 0; i < m; ++i)
#pragma unroll
    for (int s = 0; s < STREAMS; ++s)
      a[s] += w[s * m + i];
  v16 t = a[0];
  for (int s = 1; s < STREAMS; ++s)
    t += a[s];
  float r = 0;
  for (int j = 0; j < 16; ++j)
    r += t[j];
  for (size_t i = STREAMS * q; i < n; ++i)
    r += p[i];
  return r;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: read_floor EXPERT_FLOATS NUM_EXPERTS FIXED_FLOATS "
                    "SETS_FILE MIN_TIME_S\n");
    return 2;
  }
  size_t expert = strtoull(argv[1], 0, 10);
  int numExperts = atoi(argv[2]);
  size_t fixed = strtoull(argv[3], 0, 10);
  double minTime = atof(argv[5]);
  /* Round the parts to whole 128-float blocks (at most 512 bytes short). */
  expert -= expert % 128;
  fixed -= fixed % 128;
  FILE *f = fopen(argv[4], "r");
  if (!f || numExperts <= 0 || expert == 0) {
    fprintf(stderr, "read_floor: bad arguments or no sets file '%s'\n",
            argv[4]);
    return 2;
  }
  /* The sets: ids per line. */
  int cap = 64, numSets = 0, *lens = malloc(cap * sizeof(int));
  int **sets = malloc(cap * sizeof(int *));
  char line[65536];
  while (fgets(line, sizeof line, f)) {
    int *ids = malloc(numExperts * sizeof(int)), n = 0;
    for (char *tok = strtok(line, " \t\n"); tok && n < numExperts;
         tok = strtok(0, " \t\n")) {
      int id = atoi(tok);
      if (id < 0 || id >= numExperts) {
        fprintf(stderr, "read_floor: expert id %d out of range\n", id);
        return 2;
      }
      ids[n++] = id;
    }
    if (numSets == cap) {
      cap *= 2;
      lens = realloc(lens, cap * sizeof(int));
      sets = realloc(sets, cap * sizeof(int *));
    }
    lens[numSets] = n;
    sets[numSets++] = ids;
  }
  fclose(f);
  if (numSets == 0) {
    fprintf(stderr, "read_floor: no sets in '%s'\n", argv[4]);
    return 2;
  }
  size_t total = fixed + expert * (size_t)numExperts;
  float *buf = aligned_alloc(64, total * sizeof(float));
  if (!buf) {
    fprintf(stderr, "read_floor: out of memory\n");
    return 2;
  }
  /* Written by the threads that read it (first touch), like the contenders'
   * weights. */
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < total; ++i)
    buf[i] = 1.0f / (float)(i % 1000 + 1);

  int threads = omp_get_max_threads();
  /* Per call, the runs (offset, floats) it reads: the fixed part, then its
   * experts. */
  volatile float sink = 0;
  double *times = malloc(sizeof(double) * 1000000);
  int calls = 0, warm = 3;
  double start = now();
  for (int c = 0;; ++c) {
    int s = c % numSets;
    size_t offs[1025], lensF[1025];
    int runs = 0;
    if (fixed)
      offs[runs] = 0, lensF[runs++] = fixed;
    for (int i = 0; i < lens[s] && runs < 1025; ++i)
      offs[runs] = fixed + (size_t)sets[s][i] * expert, lensF[runs++] = expert;
    size_t bytes = 0;
    for (int r = 0; r < runs; ++r)
      bytes += lensF[r];
    double t0 = now();
    float acc = 0;
#pragma omp parallel reduction(+ : acc)
    {
      /* Thread t reads floats [t * per, (t + 1) * per) of the call's runs. */
      size_t per = (bytes / threads + 127) / 128 * 128;
      size_t lo = per * omp_get_thread_num(), hi = lo + per;
      if (hi > bytes)
        hi = bytes;
      size_t pos = 0;
      for (int r = 0; r < runs && lo < hi; ++r) {
        size_t a = pos, b = pos + lensF[r];
        pos = b;
        if (b <= lo || a >= hi)
          continue;
        size_t from = lo > a ? lo : a, to = hi < b ? hi : b;
        acc += stream(buf + offs[r] + (from - a), to - from);
      }
    }
    sink += acc;
    double t = now() - t0;
    if (c >= warm)
      times[calls++] = t;
    if (calls >= 20 && (now() - start >= minTime || calls >= 1000000))
      break;
  }
  qsort(times, calls, sizeof(double), cmp);
  printf("median_ms: %.4f min_ms: %.4f max_ms: %.4f calls: %d\n",
         times[calls / 2] * 1e3, times[0] * 1e3, times[calls - 1] * 1e3, calls);
  return sink == 12345.0f;
}
