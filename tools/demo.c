/* flashattn-demo: flash attention on the default backend at a few sizes, dense, block-sparse and with
 * dropout, against the float64 reference, with the error and the time of each. Exit status 1 when a result
 * misses its accuracy bound. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flashattn.h"
#include "reference.h"

typedef struct demo_case {
  fa_dtype dtype;
  int64_t batch, heads, seqlen, head_dim;
  int causal;
  int64_t butterfly_block; /* > 0: block-sparse with fa_block_mask_butterfly's pattern in blocks of this size */
  float dropout;
} demo_case;

static const demo_case cases[] = {
    {FA_F32, 1, 4, 256, 64, 0, 0, 0},
    {FA_F32, 2, 4, 512, 64, 1, 0, 0},
    {FA_F16, 1, 8, 1024, 64, 1, 0, 0},
    {FA_BF16, 1, 2, 1000, 128, 0, 0, 0},
    {FA_F32, 1, 4, 1024, 64, 0, 128, 0},
    {FA_F16, 1, 4, 1024, 64, 1, 0, 0.1f},
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double tolerance(fa_dtype d) { return d == FA_F32 ? 1e-5 : d == FA_F16 ? 2e-3 : 1e-2; }

/* Round a value to the dtype and write its bits at dst[i]. */
static void store(fa_dtype d, void *dst, size_t i, double x) {
  if (d == FA_F32) ((float *)dst)[i] = (float)x;
  else if (d == FA_F16) ((uint16_t *)dst)[i] = ref_f32_to_f16((float)x);
  else ((uint16_t *)dst)[i] = ref_f32_to_bf16((float)x);
}

static double load(fa_dtype d, const void *src, size_t i) {
  if (d == FA_F32) return ((const float *)src)[i];
  if (d == FA_F16) return ref_f16_to_f32(((const uint16_t *)src)[i]);
  return ref_bf16_to_f32(((const uint16_t *)src)[i]);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The case's butterfly block mask on the device (desc points at *mt) and, for the reference, expanded to one
 * byte per score in keep (malloc'd). */
static fa_status add_block_mask(fa_context *ctx, const demo_case *c, const ref_problem *rp, fa_attention_desc *desc,
                                fa_buffer **buf, fa_tensor *mt, uint8_t **keep) {
  const int64_t nb = (c->seqlen + c->butterfly_block - 1) / c->butterfly_block;
  uint8_t *mask = malloc((size_t)(nb * nb));
  *keep = malloc((size_t)(c->batch * c->heads * c->seqlen * c->seqlen));
  fa_status st = mask && *keep ? fa_block_mask_butterfly(mask, nb, nb) : FA_ERROR_OUT_OF_MEMORY;
  if (st == FA_SUCCESS) st = fa_buffer_create(ctx, (size_t)(nb * nb), buf);
  if (st == FA_SUCCESS) st = fa_buffer_write(ctx, *buf, 0, mask, (size_t)(nb * nb));
  if (st == FA_SUCCESS) {
    fa_tensor_packed(mt, *buf, 0, FA_U8, 1, 1, nb, nb);
    desc->block_mask = mt;
    desc->block_q = desc->block_k = c->butterfly_block;
    ref_expand_block_mask(rp, mask, 1, 1, c->butterfly_block, c->butterfly_block, *keep);
  }
  free(mask);
  return st;
}

/* The dropout mask the forward applies, read back through fa_dropout_mask as the reference's multipliers
 * (0 or 1 / (1 - p)), malloc'd. */
static fa_status dropout_multipliers(fa_context *ctx, const demo_case *c, const fa_attention_desc *desc,
                                     double **mult) {
  const size_t n = (size_t)(c->batch * c->heads * c->seqlen * c->seqlen);
  uint8_t *bits = malloc(n);
  fa_buffer *buf = NULL;
  fa_tensor t;
  *mult = malloc(n * sizeof(double));
  fa_status st = bits && *mult ? fa_buffer_create(ctx, n, &buf) : FA_ERROR_OUT_OF_MEMORY;
  if (st == FA_SUCCESS) {
    fa_tensor_packed(&t, buf, 0, FA_U8, c->batch, c->heads, c->seqlen, c->seqlen);
    st = fa_dropout_mask(ctx, desc, &t);
  }
  if (st == FA_SUCCESS) st = fa_buffer_read(ctx, buf, 0, bits, n);
  for (size_t e = 0; st == FA_SUCCESS && e < n; e++) (*mult)[e] = bits[e] ? 1.0 / (1.0 - (double)c->dropout) : 0.0;
  fa_buffer_destroy(buf);
  free(bits);
  return st;
}

/* Runs one case; returns 0 when within bounds, 1 when not, -1 on an error (printed). */
static int run_case(fa_context *ctx, const demo_case *c, unsigned seed) {
  ref_problem rp = {.batch = c->batch, .seqlen_q = c->seqlen, .seqlen_k = c->seqlen, .heads_q = c->heads,
                    .heads_kv = c->heads, .head_dim = c->head_dim, .scale = 1.0 / sqrt((double)c->head_dim),
                    .causal = c->causal};
  size_t n = ref_q_elems(&rp), es = fa_dtype_size(c->dtype), bytes = n * es;
  double *host[4], *ref_o = malloc(n * sizeof(double));
  void *stored = malloc(bytes);
  fa_buffer *buf[4] = {0}, *mask_buf = NULL;
  fa_tensor t[4], mask_t;
  uint8_t *keep = NULL;
  double *mult = NULL;
  int result = -1;
  srand(seed);
  for (int i = 0; i < 4; i++) host[i] = malloc(n * sizeof(double));
  for (int i = 0; i < 4; i++) {
    if (fa_buffer_create(ctx, bytes, &buf[i]) != FA_SUCCESS) goto fail;
    fa_tensor_packed(&t[i], buf[i], 0, c->dtype, c->batch, c->seqlen, c->heads, c->head_dim);
    if (i == 3) break; /* o: written by the call */
    for (size_t e = 0; e < n; e++) {
      store(c->dtype, stored, e, 2.0 * rand() / RAND_MAX - 1.0);
      host[i][e] = load(c->dtype, stored, e); /* the reference sees exactly what the device stores */
    }
    if (fa_buffer_write(ctx, buf[i], 0, stored, bytes) != FA_SUCCESS) goto fail;
  }
  fa_attention_desc desc = {0};
  desc.causal = c->causal;
  desc.dropout_p = c->dropout;
  desc.dropout_seed = seed;
  if (c->butterfly_block > 0 && add_block_mask(ctx, c, &rp, &desc, &mask_buf, &mask_t, &keep) != FA_SUCCESS) goto fail;
  if (c->dropout > 0 && dropout_multipliers(ctx, c, &desc, &mult) != FA_SUCCESS) goto fail;
  rp.keep = keep;
  rp.dropout = mult;
  double times[7];
  for (int r = 0; r < 8; r++) { /* the first run compiles the kernel (or loads it from the cache) */
    fa_event *e0 = NULL, *e1 = NULL;
    double t0 = now_s(), ms = -1;
    if (fa_event_record(ctx, &e0) != FA_SUCCESS) e0 = NULL;
    fa_status st = fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], NULL);
    if (st == FA_SUCCESS && e0 && fa_event_record(ctx, &e1) != FA_SUCCESS) e1 = NULL;
    if (st == FA_SUCCESS) st = fa_synchronize(ctx);
    double host = now_s() - t0;
    if (st == FA_SUCCESS && e1 && fa_event_elapsed_ms(ctx, e0, e1, &ms) != FA_SUCCESS) ms = -1;
    fa_event_destroy(e0);
    fa_event_destroy(e1);
    if (st != FA_SUCCESS) goto fail;
    if (r > 0) times[r - 1] = ms >= 0 ? ms * 1e-3 : host; /* device time where the queue can time */
  }
  qsort(times, 7, sizeof *times, cmp_double);
  if (fa_buffer_read(ctx, buf[3], 0, stored, bytes) != FA_SUCCESS) goto fail;
  for (size_t e = 0; e < n; e++) host[3][e] = load(c->dtype, stored, e);
  if (ref_forward(&rp, host[0], host[1], host[2], ref_o, NULL) != 0) goto fail;
  double err = ref_rel_error(host[3], ref_o, n);
  /* FLOPs of the scores left visible: what a kernel that skips masked tiles has to do */
  double visible = 0;
  for (int64_t i = 0; i < c->seqlen; i++)
    for (int64_t j = 0; j < c->seqlen; j++)
      visible += (!c->causal || j <= i) && (!keep || keep[i * c->seqlen + j]);
  double flops = 4.0 * c->batch * c->heads * visible * c->head_dim;
  char what[48] = "";
  if (c->butterfly_block) snprintf(what, sizeof what, " butterfly %lld", (long long)c->butterfly_block);
  if (c->dropout > 0) snprintf(what, sizeof what, " dropout %g", (double)c->dropout);
  result = !(err <= tolerance(c->dtype));
  printf("%-4s B=%lld H=%lld S=%-5lld D=%-3lld %-6s%-14s  error %.2e (bound %.0e) %-4s  %8.3f ms  %7.1f GFLOP/s\n",
         fa_dtype_name(c->dtype), (long long)c->batch, (long long)c->heads, (long long)c->seqlen,
         (long long)c->head_dim, c->causal ? "causal" : "full", what, err, tolerance(c->dtype), result ? "FAIL" : "ok",
         times[3] * 1e3, flops / times[3] * 1e-9);
  goto done;
fail:
  printf("%-4s S=%lld D=%lld: %s\n", fa_dtype_name(c->dtype), (long long)c->seqlen, (long long)c->head_dim,
         fa_context_last_error(ctx));
done:
  for (int i = 0; i < 4; i++) {
    fa_buffer_destroy(buf[i]);
    free(host[i]);
  }
  fa_buffer_destroy(mask_buf);
  free(keep);
  free(mult);
  free(ref_o);
  free(stored);
  return result;
}

int main(int argc, char **argv) {
  if (argc > 1) {
    printf("usage: %s\nRuns flash attention on the default backend (FLASHATTN_BACKEND, FLASHATTN_DEVICE)\n"
           "at a few sizes and compares each result with a float64 CPU reference.\n",
           argv[0]);
    return 0;
  }
  fa_context *ctx;
  if (fa_context_create(NULL, &ctx) != FA_SUCCESS) {
    fprintf(stderr, "flashattn-demo: %s\n", fa_last_create_error());
    return 1;
  }
  fa_device_info info;
  fa_device_info_init(&info);
  fa_context_info(ctx, &info);
  printf("flashattn %s on %s: %s (%s)\n", fa_version_string(), fa_backend_name(info.backend), info.name,
         info.platform);
  printf("time: median of 7 runs after a warm-up, device events around fa_forward\n");
  int bad = 0;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) bad |= run_case(ctx, &cases[i], 1234u + (unsigned)i) != 0;
  fa_context_destroy(ctx);
  return bad;
}
