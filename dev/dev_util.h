/* What the dev check programs share (dev/std_check.c, cl_bwd_bench.c, cl_bwd_sparse.c): the context their
 * CHECK_FA() names in its message, a fixed-seed generator, clocks, and dtype storage through the conversions
 * of tests/reference.c. Header-only: each program is one file, built by meson or by the cc line in its
 * comment. */
#ifndef FA_DEV_UTIL_H
#define FA_DEV_UTIL_H

#include <flashattn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "reference.h"

static fa_context *g_ctx;

#define CHECK_FA(call)                                                                                                 \
  do {                                                                                                                 \
    fa_status st_ = (call);                                                                                            \
    if (st_ != FA_SUCCESS) {                                                                                           \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, fa_status_string(st_),                         \
              fa_context_last_error(g_ctx));                                                                           \
      exit(1);                                                                                                         \
    }                                                                                                                  \
  } while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline double urand(void) { /* uniform in [-1, 1) */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process, PoCL's worker threads included: on a CPU device shared with other jobs it
 * says what the kernels cost, whatever the wall clock says. */
static inline double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Store x in dtype at element i of raw; return the value actually stored. */
static inline double put(void *raw, size_t i, fa_dtype dt, double x) {
  if (dt == FA_F32) return ((float *)raw)[i] = (float)x;
  if (dt == FA_F16) return ref_f16_to_f32(((uint16_t *)raw)[i] = ref_f32_to_f16((float)x));
  return ref_bf16_to_f32(((uint16_t *)raw)[i] = ref_f32_to_bf16((float)x));
}

static inline double get(const void *raw, size_t i, fa_dtype dt) {
  if (dt == FA_F32) return ((const float *)raw)[i];
  if (dt == FA_F16) return ref_f16_to_f32(((const uint16_t *)raw)[i]);
  return ref_bf16_to_f32(((const uint16_t *)raw)[i]);
}

static inline size_t dsize(fa_dtype dt) { return dt == FA_F32 ? 4 : 2; }

static inline const char *dname(fa_dtype dt) { return dt == FA_F32 ? "f32" : dt == FA_F16 ? "f16" : "bf16"; }

#endif
