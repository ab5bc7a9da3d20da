/* Workshop check of the OpenCL forward with block masks and dropout, and of fa_dropout_mask(), against the
 * float64 reference (tests/reference.c) and the host masks.h, until tests/test_sparse.c and test_dropout.c
 * land. Public API only.
 *
 *   cl_sparse_check          all cases; prints one line each, exits 1 on a miss
 *   cl_sparse_check bench    B1 H8 S2048 D64 f32: dense, random block masks 1/2 and 1/4 (blocks 64, 128),
 *                            dropout 0.1; median of 5 wall-clock runs after a warm-up
 *
 * Build, after `ninja -C build-clf`:
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Ikernels -Itests dev/cl_sparse_check.c tests/reference.c \
 *       -o build-clf/cl_sparse_check -Lbuild-clf -lflashattn -Wl,-rpath,$PWD/build-clf -lm
 * Knobs the library reads: FLASHATTN_OPENCL_TILES=gpu, FLASHATTN_LOCAL_MEM_BYTES, FLASHATTN_OPENCL_NV_TC=emulate
 * (the NVIDIA tensor-core kernel with emulated mma: f16/bf16 cases then take it). */
#include <flashattn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "masks.h"
#include "reference.h"

static fa_context *g_ctx;

#define CHECK_FA(call)                                                                                \
  do {                                                                                                \
    fa_status st_ = (call);                                                                           \
    if (st_ != FA_SUCCESS) {                                                                          \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, fa_context_last_error(g_ctx)); \
      exit(1);                                                                                        \
    }                                                                                                 \
  } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (double)(rng >> 11) / (double)(1ull << 53);
}

typedef struct tcase {
  fa_dtype dt;
  int B, Hq, Hkv, Sq, Sk, D, causal;
  int mask;        /* 0 none, 1 random, 2 random with rows fully off */
  int mb, mh;      /* mask batch / heads: 1 broadcasts */
  int bq, bk;
  double density;
  float p;
} tcase;

static fa_buffer *upload(const double *x, size_t n, fa_dtype dt) {
  size_t es = fa_dtype_size(dt);
  unsigned char *h = malloc(n * es);
  for (size_t i = 0; i < n; i++) {
    if (dt == FA_F32) ((float *)h)[i] = (float)x[i];
    else if (dt == FA_F16) ((uint16_t *)h)[i] = ref_f32_to_f16((float)x[i]);
    else ((uint16_t *)h)[i] = ref_f32_to_bf16((float)x[i]);
  }
  fa_buffer *b;
  CHECK_FA(fa_buffer_create(g_ctx, n * es, &b));
  CHECK_FA(fa_buffer_write(g_ctx, b, 0, h, n * es));
  free(h);
  return b;
}

static void rounded(double *x, size_t n, fa_dtype dt) { /* the values the device sees */
  for (size_t i = 0; i < n; i++) {
    if (dt == FA_F32) x[i] = (float)x[i];
    else if (dt == FA_F16) x[i] = ref_f16_to_f32(ref_f32_to_f16((float)x[i]));
    else x[i] = ref_bf16_to_f32(ref_f32_to_bf16((float)x[i]));
  }
}

static double to_double(const unsigned char *h, size_t i, fa_dtype dt) {
  if (dt == FA_F32) return ((const float *)h)[i];
  if (dt == FA_F16) return ref_f16_to_f32(((const uint16_t *)h)[i]);
  return ref_bf16_to_f32(((const uint16_t *)h)[i]);
}

/* fa_dropout_mask against the host masks.h, in a strided (transposed, padded) layout. */
static int check_keep(int B, int H, int Sq, int Sk, float p, uint64_t seed, uint32_t off) {
  /* layout [B, H, Sk, Sq+3] in memory, i.e. strides (H*Sk*(Sq+3), Sk*(Sq+3), 1, Sq+3), plus an offset of 5 */
  const int64_t ld = Sq + 3;
  const size_t bytes = 5 + (size_t)B * H * Sk * ld;
  fa_buffer *buf;
  CHECK_FA(fa_buffer_create(g_ctx, bytes, &buf));
  unsigned char *h = malloc(bytes);
  memset(h, 7, bytes);
  CHECK_FA(fa_buffer_write(g_ctx, buf, 0, h, bytes));
  fa_tensor t = {buf, 5, FA_U8, {B, H, Sq, Sk}, {(int64_t)H * Sk * ld, (int64_t)Sk * ld, 1, ld}};
  fa_attention_desc desc = {0};
  desc.dropout_p = p, desc.dropout_seed = seed, desc.dropout_offset = off;
  CHECK_FA(fa_dropout_mask(g_ctx, &desc, &t));
  CHECK_FA(fa_buffer_read(g_ctx, buf, 0, h, bytes));
  const double thr_d = nearbyint((double)p * 4294967296.0);
  const uint32_t thr = thr_d > 4294967295.0 ? UINT32_MAX : (uint32_t)thr_d;
  long bad = 0, kept = 0, total = 0;
  for (size_t x = 0; x < bytes; x++) {
    size_t y = x < 5 ? 0 : (x - 5) % (size_t)ld;
    if (x < 5 || (int64_t)y >= Sq) bad += h[x] != 7; /* gaps untouched */
  }
  for (int b = 0; b < B; b++)
    for (int hh = 0; hh < H; hh++)
      for (int i = 0; i < Sq; i++)
        for (int j = 0; j < Sk; j++) {
          int want = fa_dropout_keep(seed, off, thr, (uint32_t)(b * H + hh), (uint32_t)i, (uint32_t)j);
          int got = h[5 + (size_t)b * H * Sk * ld + (size_t)hh * Sk * ld + (size_t)j * ld + i];
          bad += got != want, kept += got == 1, total++;
        }
  printf("%-4s keep B%d H%d Sq%d Sk%d p%.2f: %ld mismatches, kept %.4f\n", bad ? "FAIL" : "ok", B, H, Sq, Sk,
         (double)p, bad, (double)kept / (double)total);
  free(h);
  fa_buffer_destroy(buf);
  return bad == 0;
}

static int run_case(const tcase *c, int verbose) {
  ref_problem rp = {c->B, c->Sq, c->Sk, c->Hq, c->Hkv, c->D, 1.0 / sqrt((double)c->D), c->causal, NULL, NULL};
  const size_t nq = ref_q_elems(&rp), nkv = ref_kv_elems(&rp), nl = ref_lse_elems(&rp), ns = ref_score_elems(&rp);
  double *q = malloc(nq * sizeof *q), *k = malloc(nkv * sizeof *k), *v = malloc(nkv * sizeof *v);
  for (size_t i = 0; i < nq; i++) q[i] = 2 * urand() - 1;
  for (size_t i = 0; i < nkv; i++) k[i] = 2 * urand() - 1, v[i] = 2 * urand() - 1;
  rounded(q, nq, c->dt), rounded(k, nkv, c->dt), rounded(v, nkv, c->dt);
  fa_buffer *bq = upload(q, nq, c->dt), *bk = upload(k, nkv, c->dt), *bv = upload(v, nkv, c->dt), *bo, *bl;
  const size_t es = fa_dtype_size(c->dt);
  CHECK_FA(fa_buffer_create(g_ctx, nq * es, &bo));
  CHECK_FA(fa_buffer_create(g_ctx, nl * 4, &bl));
  fa_tensor tq, tk, tv, to, tl, tm;
  fa_tensor_packed(&tq, bq, 0, c->dt, c->B, c->Sq, c->Hq, c->D);
  fa_tensor_packed(&tk, bk, 0, c->dt, c->B, c->Sk, c->Hkv, c->D);
  fa_tensor_packed(&tv, bv, 0, c->dt, c->B, c->Sk, c->Hkv, c->D);
  fa_tensor_packed(&to, bo, 0, c->dt, c->B, c->Sq, c->Hq, c->D);
  fa_tensor_packed(&tl, bl, 0, FA_F32, c->B, c->Hq, c->Sq, 1);
  fa_attention_desc desc = {0};
  desc.causal = c->causal;

  uint8_t *keep = NULL, *mask = NULL;
  fa_buffer *bm = NULL;
  if (c->mask) {
    const int rows = (c->Sq + c->bq - 1) / c->bq, cols = (c->Sk + c->bk - 1) / c->bk;
    const size_t nm = (size_t)c->mb * c->mh * rows * cols;
    mask = malloc(nm);
    for (size_t x = 0; x < nm; x++) mask[x] = urand() < c->density ? (uint8_t)(1 + (x % 5)) : 0;
    if (c->mask == 2) /* a block row fully off: those rows see nothing */
      for (int hb = 0; hb < c->mb * c->mh; hb++) memset(mask + ((size_t)hb * rows + rows / 2) * cols, 0, cols);
    CHECK_FA(fa_buffer_create(g_ctx, nm, &bm));
    CHECK_FA(fa_buffer_write(g_ctx, bm, 0, mask, nm));
    fa_tensor_packed(&tm, bm, 0, FA_U8, c->mb, c->mh, rows, cols);
    desc.block_mask = &tm, desc.block_q = c->bq, desc.block_k = c->bk;
    keep = malloc(ns);
    ref_expand_block_mask(&rp, mask, c->mb, c->mh, c->bq, c->bk, keep);
    rp.keep = keep;
  }
  double *drop = NULL;
  if (c->p > 0) {
    desc.dropout_p = c->p, desc.dropout_seed = 0x123456789abcdefull ^ (uint64_t)c->Sq, desc.dropout_offset = 77;
    const double thr_d = nearbyint((double)c->p * 4294967296.0);
    const uint32_t thr = (uint32_t)thr_d;
    const double scale = 1.0 / (1.0 - (double)c->p);
    drop = malloc(ns * sizeof *drop);
    size_t x = 0;
    for (int b = 0; b < c->B; b++)
      for (int h = 0; h < c->Hq; h++)
        for (int i = 0; i < c->Sq; i++)
          for (int j = 0; j < c->Sk; j++, x++)
            drop[x] = fa_dropout_keep(desc.dropout_seed, desc.dropout_offset, thr, (uint32_t)(b * c->Hq + h), (uint32_t)i,
                                      (uint32_t)j) ? scale : 0.0;
    rp.dropout = drop;
  }
  CHECK_FA(fa_forward(g_ctx, &desc, &tq, &tk, &tv, &to, &tl));
  unsigned char *ho = malloc(nq * es);
  float *hl = malloc(nl * 4);
  CHECK_FA(fa_buffer_read(g_ctx, bo, 0, ho, nq * es));
  CHECK_FA(fa_buffer_read(g_ctx, bl, 0, hl, nl * 4));
  double *o = malloc(nq * sizeof *o), *lse = malloc(nl * sizeof *lse), *ro = malloc(nq * sizeof *ro),
         *rl = malloc(nl * sizeof *rl);
  for (size_t i = 0; i < nq; i++) o[i] = to_double(ho, i, c->dt);
  for (size_t i = 0; i < nl; i++) lse[i] = hl[i];
  ref_forward(&rp, q, k, v, ro, rl);
  const double eo = ref_rel_error(o, ro, nq), el = ref_max_abs_error_scaled(lse, rl, nl);
  const double tol = c->dt == FA_F32 ? 1e-5 : c->dt == FA_F16 ? 2e-3 : 1e-2;
  int empty = 0;
  for (size_t i = 0; i < nl; i++) empty += isinf(rl[i]) != 0;
  const int ok = eo <= tol && el <= tol * 10 && !isnan(eo);
  if (verbose || !ok)
    printf("%-4s %s B%d Hq%d Hkv%d Sq%d Sk%d D%d causal%d mask%d[%dx%d] b%dx%d dens%.2f p%.2f: o %.2e lse %.2e (empty rows %d)\n",
           ok ? "ok" : "FAIL", fa_dtype_name(c->dt), c->B, c->Hq, c->Hkv, c->Sq, c->Sk, c->D, c->causal, c->mask, c->mb,
           c->mh, c->bq, c->bk, c->density, (double)c->p, eo, el, empty);
  free(q), free(k), free(v), free(ho), free(hl), free(o), free(lse), free(ro), free(rl), free(keep), free(mask),
      free(drop);
  fa_buffer_destroy(bq), fa_buffer_destroy(bk), fa_buffer_destroy(bv), fa_buffer_destroy(bo), fa_buffer_destroy(bl),
      fa_buffer_destroy(bm);
  return ok;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) { return *(const double *)a < *(const double *)b ? -1 : 1; }

static void bench(void) {
  const int B = 1, H = 8, S = 2048, D = 64;
  const size_t n = (size_t)B * S * H * D;
  double *x = malloc(n * sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = 2 * urand() - 1;
  fa_buffer *bq = upload(x, n, FA_F32), *bk = upload(x, n, FA_F32), *bv = upload(x, n, FA_F32), *bo;
  CHECK_FA(fa_buffer_create(g_ctx, n * 4, &bo));
  fa_tensor tq, tk, tv, to;
  fa_tensor_packed(&tq, bq, 0, FA_F32, B, S, H, D);
  fa_tensor_packed(&tk, bk, 0, FA_F32, B, S, H, D);
  fa_tensor_packed(&tv, bv, 0, FA_F32, B, S, H, D);
  fa_tensor_packed(&to, bo, 0, FA_F32, B, S, H, D);
  struct { const char *name; int block; double density; float p; } runs[] = {
      {"dense", 0, 1, 0},         {"mask b64 d1/2", 64, 0.5, 0},   {"mask b64 d1/4", 64, 0.25, 0},
      {"mask b128 d1/2", 128, 0.5, 0}, {"mask b128 d1/4", 128, 0.25, 0}, {"mask b128 d1", 128, 1.0, 0},
      {"dropout 0.1", 0, 1, 0.1f},
  };
  enum { NR = sizeof runs / sizeof runs[0], ROUNDS = 5 };
  fa_attention_desc descs[NR];
  fa_buffer *bms[NR];
  fa_tensor tms[NR];
  double visible[NR], best[NR], t[NR][ROUNDS];
  for (int r = 0; r < NR; r++) {
    fa_attention_desc desc = {0};
    bms[r] = NULL;
    visible[r] = 1.0;
    if (runs[r].block) {
      const int nb = S / runs[r].block;
      uint8_t *m = malloc((size_t)H * nb * nb);
      /* exactly density * nb blocks on per block row, at random columns */
      const int on = (int)(runs[r].density * nb + 0.5);
      for (int hb = 0; hb < H * nb; hb++) {
        uint8_t *row = m + (size_t)hb * nb;
        memset(row, 0, nb);
        for (int c = 0; c < on;) {
          int j = (int)(urand() * nb);
          if (!row[j]) row[j] = 1, c++;
        }
      }
      visible[r] = (double)on / nb;
      CHECK_FA(fa_buffer_create(g_ctx, (size_t)H * nb * nb, &bms[r]));
      CHECK_FA(fa_buffer_write(g_ctx, bms[r], 0, m, (size_t)H * nb * nb));
      free(m);
      fa_tensor_packed(&tms[r], bms[r], 0, FA_U8, 1, H, nb, nb);
      desc.block_mask = &tms[r], desc.block_q = runs[r].block, desc.block_k = runs[r].block;
    }
    desc.dropout_p = runs[r].p, desc.dropout_seed = 42;
    descs[r] = desc;
    CHECK_FA(fa_forward(g_ctx, &descs[r], &tq, &tk, &tv, &to, NULL)); /* compile, warm up */
    CHECK_FA(fa_synchronize(g_ctx));
    best[r] = 1e30;
  }
  /* Round-robin, so that load from other processes spreads over every configuration; best and median. */
  for (int it = 0; it < ROUNDS; it++)
    for (int r = 0; r < NR; r++) {
      double t0 = now_ms();
      CHECK_FA(fa_forward(g_ctx, &descs[r], &tq, &tk, &tv, &to, NULL));
      CHECK_FA(fa_synchronize(g_ctx));
      t[r][it] = now_ms() - t0;
      if (t[r][it] < best[r]) best[r] = t[r][it];
    }
  for (int r = 0; r < NR; r++) {
    qsort(t[r], ROUNDS, sizeof t[r][0], cmp_d);
    printf("%-16s visible %.3f  best %8.1f ms  median %8.1f ms\n", runs[r].name, visible[r], best[r], t[r][ROUNDS / 2]);
    fa_buffer_destroy(bms[r]);
  }
  fa_buffer_destroy(bq), fa_buffer_destroy(bk), fa_buffer_destroy(bv), fa_buffer_destroy(bo);
  free(x);
}

int main(int argc, char **argv) {
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_OPENCL;
  if (fa_context_create(&opt, &g_ctx) != FA_SUCCESS) {
    fprintf(stderr, "context: %s\n", fa_last_create_error());
    return 1;
  }
  fa_tiles tl;
  CHECK_FA(fa_context_tiles(g_ctx, 64, FA_F32, &tl));
  printf("# tiles D64: Br %d Bc %d threads %d\n", tl.block_q, tl.block_k, tl.threads);
  if (argc > 1 && strcmp(argv[1], "bench") == 0) {
    bench();
    fa_context_destroy(g_ctx);
    return 0;
  }
  const char *only = argc > 1 ? argv[1] : NULL; /* "f32", "f16", "bf16": one dtype */
  int fails = 0, n = 0;
  if (!only || strcmp(only, "keep") == 0) {
    fails += !check_keep(2, 3, 37, 45, 0.3f, 0x0123456789abcdefull, 5);
    fails += !check_keep(1, 2, 64, 130, 0.1f, 99, 0);
    fails += !check_keep(1, 1, 17, 9, 0.0f, 1, 1);
    fails += !check_keep(1, 2, 4100, 4097, 0.25f, 0xfeedfacecafebeefull, 3); /* 8.4M groups: work-items loop */
    n += 4;
  }
  const fa_dtype dts[3] = {FA_F32, FA_F16, FA_BF16};
  for (int di = 0; di < 3; di++) {
    if (only && strcmp(only, fa_dtype_name(dts[di])) != 0) continue;
    const fa_dtype dt = dts[di];
    tcase cs[] = {
        /* dense through the new host path: still dense */
        {dt, 1, 2, 2, 100, 130, 64, 0, 0, 1, 1, 1, 1, 1, 0},
        /* masks: block sizes of every kind, broadcast or not, causal or not, GQA */
        {dt, 2, 4, 2, 200, 190, 64, 0, 1, 2, 4, 64, 64, 0.5, 0},
        {dt, 1, 2, 1, 150, 170, 32, 1, 1, 1, 2, 3, 7, 0.6, 0},
        {dt, 2, 2, 2, 129, 257, 64, 0, 1, 1, 1, 100, 33, 0.5, 0},
        {dt, 1, 2, 2, 300, 300, 64, 1, 1, 1, 2, 128, 128, 0.5, 0},
        {dt, 1, 1, 1, 70, 90, 16, 0, 1, 1, 1, 1, 1, 0.5, 0},
        {dt, 1, 2, 1, 130, 140, 64, 0, 2, 1, 2, 16, 1000, 0.7, 0},
        {dt, 1, 2, 2, 200, 150, 128, 1, 2, 1, 2, 40, 24, 0.5, 0},
        {dt, 1, 1, 1, 64, 64, 64, 0, 1, 1, 1, 64, 64, 0.0, 0}, /* everything off */
        /* dropout, with and without masks */
        {dt, 2, 3, 3, 77, 91, 64, 0, 0, 1, 1, 1, 1, 1, 0.2f},
        {dt, 1, 2, 1, 200, 300, 32, 1, 0, 1, 1, 1, 1, 1, 0.5f},
        {dt, 1, 2, 2, 160, 128, 64, 0, 1, 1, 2, 16, 32, 0.5, 0.1f},
        {dt, 1, 1, 1, 33, 17, 128, 1, 2, 1, 1, 5, 3, 0.6, 0.3f},
    };
    for (size_t x = 0; x < sizeof cs / sizeof cs[0]; x++) fails += !run_case(&cs[x], 1), n++;
  }
  printf("%d of %d failed\n", fails, n);
  fa_context_destroy(g_ctx);
  return fails != 0;
}
