/* Workshop for the OpenCL flash backward's block-sparse and dropout variants (kernels/flash_bwd.cl):
 * gradients against tests/reference.c given the same masks, with o and lse from the float64 reference (so it
 * does not lean on the forward), determinism, and timings.
 *
 *   cl_bwd_sparse check                 shapes x dtypes x block sizes x dropout; exits 1 on a miss
 *   cl_bwd_sparse bench [S D B H reps]  backward times: dense, block mask density 1/2 and 1/4 (blocks of 64
 *                                       and 128), dropout 0.1, both (o and lse from the library's forward,
 *                                       whatever it computes: the backward's cost does not depend on them)
 *
 * Build (from the repository root, after ninja -C build-clb):
 *   cc -O2 -std=c11 -Iinclude -Itests -I. dev/cl_bwd_sparse.c tests/reference.c -Lbuild-clb -lflashattn -lm \
 *      -Wl,-rpath,$PWD/build-clb -o build-clb/cl_bwd_sparse
 * Knobs: FLASHATTN_OPENCL_TILES=gpu (the GPU layout on PoCL), FLASHATTN_LOCAL_MEM_BYTES,
 * FLASHATTN_OPENCL_BWD_DQ=atomic. */
#define _POSIX_C_SOURCE 200809L
#include <flashattn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/masks.h"
#include "dev_util.h"
#include "reference.h"

/* A packed [d0, d1, d2, d3] device tensor with its float64 values (as stored in dtype). */
typedef struct operand {
  double *val;
  void *raw;
  size_t n;
  fa_buffer *buf;
  fa_tensor t;
} operand;

static void make(operand *o, fa_dtype dt, int64_t d0, int64_t d1, int64_t d2, int64_t d3, double amp,
                 const double *from) {
  o->n = (size_t)(d0 * d1 * d2 * d3);
  o->val = calloc(o->n, sizeof(double));
  o->raw = calloc(o->n, dsize(dt));
  for (size_t i = 0; i < o->n; i++) o->val[i] = put(o->raw, i, dt, from ? from[i] : amp * urand());
  CHECK_FA(fa_buffer_create(g_ctx, o->n * dsize(dt), &o->buf));
  CHECK_FA(fa_buffer_write(g_ctx, o->buf, 0, o->raw, o->n * dsize(dt)));
  fa_tensor_packed(&o->t, o->buf, 0, dt, d0, d1, d2, d3);
}
static void fetch(operand *o) {
  CHECK_FA(fa_buffer_read(g_ctx, o->buf, 0, o->raw, o->n * dsize(o->t.dtype)));
  for (size_t i = 0; i < o->n; i++) o->val[i] = get(o->raw, i, o->t.dtype);
}
static void drop(operand *o) {
  fa_buffer_destroy(o->buf);
  free(o->val);
  free(o->raw);
}

typedef struct scase {
  int b, sq, sk, hq, hkv, d, causal;
  fa_dtype dt;
  int bq, bk;     /* 0: no block mask */
  int mb, mh;     /* mask batch and heads: 1 (broadcast) or B, Hq */
  double density; /* of nonzero blocks */
  float p;        /* dropout */
} scase;

/* The block mask of c on the device, padded by 3 bytes per row of blocks and behind a 5-byte offset (the
 * strides are honoured), and packed on the host for the reference. */
static uint8_t *make_mask(const scase *c, fa_buffer **buf, fa_tensor *t) {
  const int64_t rows = (c->sq + c->bq - 1) / c->bq, cols = (c->sk + c->bk - 1) / c->bk, pitch = cols + 3;
  const size_t n = (size_t)(c->mb * c->mh * rows * cols);
  uint8_t *m = malloc(n), *dev = calloc((size_t)(5 + c->mb * c->mh * rows * pitch), 1);
  for (size_t i = 0; i < n; i++) m[i] = (urand() + 1) / 2 < c->density ? (uint8_t)(1 + (i % 7)) : 0;
  for (int64_t bh = 0; bh < c->mb * c->mh; bh++)
    for (int64_t r = 0; r < rows; r++) memcpy(dev + 5 + (bh * rows + r) * pitch, m + (bh * rows + r) * cols, cols);
  size_t bytes = (size_t)(5 + c->mb * c->mh * rows * pitch);
  CHECK_FA(fa_buffer_create(g_ctx, bytes, buf));
  CHECK_FA(fa_buffer_write(g_ctx, *buf, 0, dev, bytes));
  free(dev);
  *t = (fa_tensor){*buf, 5, FA_U8, {c->mb, c->mh, rows, cols}, {c->mh * rows * pitch, rows * pitch, pitch, 1}};
  return m;
}

/* Backward of c (twice: the bits must agree) against the reference; 0 when within tolerance. */
static int run_case(const scase *c) {
  ref_problem rp = {c->b, c->sq, c->sk, c->hq, c->hkv, c->d, 1.0 / sqrt((double)c->d), c->causal, NULL, NULL};
  const size_t nq = ref_q_elems(&rp), nk = ref_kv_elems(&rp), nl = ref_lse_elems(&rp), ns = ref_score_elems(&rp);
  operand q, k, v, g;
  make(&q, c->dt, c->b, c->sq, c->hq, c->d, 2, NULL);
  make(&k, c->dt, c->b, c->sk, c->hkv, c->d, 2, NULL);
  make(&v, c->dt, c->b, c->sk, c->hkv, c->d, 1, NULL);
  make(&g, c->dt, c->b, c->sq, c->hq, c->d, 1, NULL);
  /* Deterministic, unless FLASHATTN_OPENCL_BWD_DQ=atomic asks for the atomic dQ (then the bits may differ). */
  const char *dqenv = getenv("FLASHATTN_OPENCL_BWD_DQ");
  const int atomic = dqenv && !strcmp(dqenv, "atomic");
  fa_attention_desc desc = {.algo = FA_ALGO_FLASH, .causal = c->causal, .deterministic = !atomic};
  uint8_t *keep = NULL, *mhost = NULL;
  double *dmul = NULL;
  fa_buffer *mbuf = NULL;
  fa_tensor mt;
  if (c->bq) {
    mhost = make_mask(c, &mbuf, &mt);
    keep = malloc(ns);
    ref_expand_block_mask(&rp, mhost, c->mb, c->mh, c->bq, c->bk, keep);
    rp.keep = keep;
    desc.block_mask = &mt, desc.block_q = c->bq, desc.block_k = c->bk;
  }
  if (c->p > 0) {
    desc.dropout_p = c->p, desc.dropout_seed = 0x123456789abcdefull ^ (uint64_t)c->sq, desc.dropout_offset = 77;
    const double t = ldexp((double)c->p, 32);
    const uint32_t thr = t > 4294967295.0 ? 0xffffffffu : (uint32_t)llround(t);
    const double sc = 1.0 / (1.0 - (double)c->p);
    dmul = malloc(ns * sizeof(double));
    for (int64_t b = 0; b < c->b; b++)
      for (int64_t h = 0; h < c->hq; h++)
        for (int64_t i = 0; i < c->sq; i++)
          for (int64_t j = 0; j < c->sk; j++)
            dmul[((b * c->hq + h) * c->sq + i) * c->sk + j] =
                fa_dropout_keep(desc.dropout_seed, 77, thr, (uint32_t)(b * c->hq + h), (uint32_t)i, (uint32_t)j) ? sc
                                                                                                                   : 0.0;
    rp.dropout = dmul;
  }
  double *ro = malloc(nq * sizeof(double)), *rl = malloc(nl * sizeof(double));
  if (ref_forward(&rp, q.val, k.val, v.val, ro, rl)) exit(1);
  operand o, dq, dk, dv;
  make(&o, c->dt, c->b, c->sq, c->hq, c->d, 0, ro);
  make(&dq, c->dt, c->b, c->sq, c->hq, c->d, 0, NULL);
  make(&dk, c->dt, c->b, c->sk, c->hkv, c->d, 0, NULL);
  make(&dv, c->dt, c->b, c->sk, c->hkv, c->d, 0, NULL);
  float *lf = malloc(nl * sizeof(float));
  for (size_t i = 0; i < nl; i++) lf[i] = (float)rl[i];
  fa_buffer *lb;
  CHECK_FA(fa_buffer_create(g_ctx, nl * sizeof(float), &lb));
  CHECK_FA(fa_buffer_write(g_ctx, lb, 0, lf, nl * sizeof(float)));
  fa_tensor tl;
  fa_tensor_packed(&tl, lb, 0, FA_F32, c->b, c->hq, c->sq, 1);

  CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
  fetch(&dq), fetch(&dk), fetch(&dv);
  const size_t es = dsize(c->dt);
  unsigned char *bits = malloc((2 * nq + 2 * nk) * es);
  memcpy(bits, dq.raw, nq * es), memcpy(bits + nq * es, dk.raw, nk * es), memcpy(bits + (nq + nk) * es, dv.raw, nk * es);
  CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
  fetch(&dq), fetch(&dk), fetch(&dv);
  const int same = atomic || (!memcmp(bits, dq.raw, nq * es) && !memcmp(bits + nq * es, dk.raw, nk * es) &&
                              !memcmp(bits + (nq + nk) * es, dv.raw, nk * es));

  double *rq = malloc(nq * sizeof(double)), *rk = malloc(nk * sizeof(double)), *rv = malloc(nk * sizeof(double));
  if (ref_backward(&rp, q.val, k.val, v.val, g.val, rq, rk, rv)) exit(1);
  double eq = ref_rel_error(dq.val, rq, nq), ek = ref_rel_error(dk.val, rk, nk), ev = ref_rel_error(dv.val, rv, nk);
  const double tol = c->dt == FA_F32 ? 1e-5 : c->dt == FA_F16 ? 2e-3 : 1e-2;
  const int ok = eq <= tol && ek <= tol && ev <= tol && same;
  printf("%s B%d Sq%d Sk%d H%d/%d D%d causal%d dt%d mask %dx%d [%dx%d] dens %.2f p %.2f: dq %.2e dk %.2e dv %.2e%s\n",
         ok ? "ok  " : "FAIL", c->b, c->sq, c->sk, c->hq, c->hkv, c->d, c->causal, (int)c->dt, c->bq, c->bk, c->mb,
         c->mh, c->density, (double)c->p, eq, ek, ev, same ? "" : " (bits differ run to run)");
  fflush(stdout);
  drop(&q), drop(&k), drop(&v), drop(&g), drop(&o), drop(&dq), drop(&dk), drop(&dv);
  fa_buffer_destroy(lb);
  if (mbuf) fa_buffer_destroy(mbuf);
  free(keep), free(mhost), free(dmul), free(ro), free(rl), free(lf), free(bits), free(rq), free(rk), free(rv);
  return ok ? 0 : 1;
}

static int check(int reduced) {
  int fails = 0;
  const int shapes[][7] = {/* b, sq, sk, hq, hkv, d, causal */
                           {1, 128, 128, 2, 2, 64, 0}, {2, 77, 131, 4, 2, 32, 1}, {1, 200, 96, 2, 1, 64, 1},
                           {1, 33, 300, 3, 3, 16, 0},  {1, 256, 256, 1, 1, 128, 1}};
  const int blocks[][2] = {{64, 64}, {1, 1}, {3, 100}, {16, 48}, {1000, 7}, {128, 128}};
  const int nshapes = reduced ? 3 : 5, nblocks = reduced ? 3 : 6;
  for (int s = 0; s < nshapes; s++)
    for (int m = 0; m <= nblocks; m++)
      for (int dr = 0; dr < 2; dr++) {
        const int *x = shapes[s];
        scase c = {x[0], x[1], x[2], x[3], x[4], x[5], x[6], (fa_dtype)((s + m) % 3), 0, 0, 1, 1, 0.5, dr ? 0.2f : 0};
        if (m < nblocks) {
          c.bq = blocks[m][0], c.bk = blocks[m][1];
          c.mb = (m & 1) ? c.b : 1, c.mh = (m & 2) ? 1 : c.hq;
          c.density = m == 1 ? 0.7 : 0.5;
        } else if (!dr) {
          continue; /* dense without dropout: test_backward's job */
        }
        fails += run_case(&c);
      }
  /* Full and empty masks, dropout near 1. */
  scase full = {1, 100, 100, 2, 1, 32, 1, FA_F32, 50, 50, 1, 1, 2.0, 0};
  scase empty = {1, 100, 100, 2, 1, 32, 0, FA_F32, 50, 25, 1, 2, -1.0, 0.5f};
  scase heavy = {1, 64, 80, 2, 2, 32, 0, FA_F32, 0, 0, 1, 1, 0, 0.9f};
  fails += run_case(&full) + run_case(&empty) + run_case(&heavy);
  printf("%s: %d failures\n", fails ? "FAIL" : "PASS", fails);
  return fails != 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Backward wall time of one configuration (median of reps after a warm-up); *cpu its CPU time (median). */
static double time_bwd(double *cpu, const fa_attention_desc *desc, operand *q, operand *k, operand *v, operand *o, fa_tensor *tl,
                       operand *g, operand *dq, operand *dk, operand *dv, int reps) {
  CHECK_FA(fa_forward(g_ctx, desc, &q->t, &k->t, &v->t, &o->t, tl));
  CHECK_FA(fa_backward(g_ctx, desc, &q->t, &k->t, &v->t, &o->t, tl, &g->t, &dq->t, &dk->t, &dv->t));
  CHECK_FA(fa_synchronize(g_ctx));
  double t[64], c[64];
  for (int r = 0; r < reps; r++) {
    double t0 = now(), c0 = cpu_now();
    CHECK_FA(fa_backward(g_ctx, desc, &q->t, &k->t, &v->t, &o->t, tl, &g->t, &dq->t, &dk->t, &dv->t));
    CHECK_FA(fa_synchronize(g_ctx));
    t[r] = now() - t0;
    c[r] = cpu_now() - c0;
  }
  qsort(t, reps, sizeof(double), cmp_double);
  qsort(c, reps, sizeof(double), cmp_double);
  *cpu = c[reps / 2];
  return t[reps / 2];
}

static void bench(int S, int D, int B, int H, int reps) {
  if (reps > 64) reps = 64;
  operand q, k, v, o, g, dq, dk, dv;
  make(&q, FA_F32, B, S, H, D, 1, NULL), make(&k, FA_F32, B, S, H, D, 1, NULL), make(&v, FA_F32, B, S, H, D, 1, NULL);
  make(&o, FA_F32, B, S, H, D, 0, NULL), make(&g, FA_F32, B, S, H, D, 1, NULL);
  make(&dq, FA_F32, B, S, H, D, 0, NULL), make(&dk, FA_F32, B, S, H, D, 0, NULL), make(&dv, FA_F32, B, S, H, D, 0, NULL);
  fa_buffer *lb;
  CHECK_FA(fa_buffer_create(g_ctx, sizeof(float) * B * H * S, &lb));
  fa_tensor tl;
  fa_tensor_packed(&tl, lb, 0, FA_F32, B, H, S, 1);
  fa_attention_desc dense = {.algo = FA_ALGO_FLASH};
  double c_dense, c;
  double t_dense = time_bwd(&c_dense, &dense, &q, &k, &v, &o, &tl, &g, &dq, &dk, &dv, reps);
  printf("B%d H%d S%d D%d f32 backward (wall, CPU s): dense %.1f ms, %.3f s\n", B, H, S, D, t_dense * 1e3, c_dense);
  fflush(stdout);
  const int only_dropout = getenv("BENCH_ONLY_DROPOUT") != NULL; /* for quick experiments */
  const int blocks[] = {64, 128};
  const int keep_every[] = {2, 4}; /* density 1/2, 1/4: block (r, c) kept when (r + c) % n == 0 */
  for (int bi = 0; bi < 2 && !only_dropout; bi++)
    for (int ki = 0; ki < 2; ki++) {
      const int bs = blocks[bi], n = (S + bs - 1) / bs;
      uint8_t *m = malloc((size_t)n * n);
      for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++) m[r * n + c] = (r + c) % keep_every[ki] == 0;
      fa_buffer *mb;
      CHECK_FA(fa_buffer_create(g_ctx, (size_t)n * n, &mb));
      CHECK_FA(fa_buffer_write(g_ctx, mb, 0, m, (size_t)n * n));
      fa_tensor mt;
      fa_tensor_packed(&mt, mb, 0, FA_U8, 1, 1, n, n);
      fa_attention_desc d = {.algo = FA_ALGO_FLASH, .block_mask = &mt, .block_q = bs, .block_k = bs};
      double t = time_bwd(&c, &d, &q, &k, &v, &o, &tl, &g, &dq, &dk, &dv, reps);
      printf("  block %d density 1/%d: %.1f ms (%.2fx dense), %.3f s (%.2fx)\n", bs, keep_every[ki], t * 1e3,
             t / t_dense, c, c / c_dense);
      fflush(stdout);
      fa_buffer_destroy(mb);
      free(m);
    }
  fa_attention_desc dr = {.algo = FA_ALGO_FLASH, .dropout_p = 0.1f, .dropout_seed = 42};
  double t = time_bwd(&c, &dr, &q, &k, &v, &o, &tl, &g, &dq, &dk, &dv, reps);
  printf("  dropout 0.1: %.1f ms (%.2fx dense), %.3f s (%.2fx)\n", t * 1e3, t / t_dense, c, c / c_dense);
  drop(&q), drop(&k), drop(&v), drop(&o), drop(&g), drop(&dq), drop(&dk), drop(&dv);
  fa_buffer_destroy(lb);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "check";
  fa_context_options opt = {.backend = FA_BACKEND_OPENCL, .device = 0};
  if (fa_context_create(&opt, &g_ctx) != FA_SUCCESS) {
    fprintf(stderr, "fa_context_create: %s\n", fa_last_create_error());
    return 1;
  }
  int rc = 0;
  if (!strcmp(mode, "check") || !strcmp(mode, "reduced")) {
    rc = check(!strcmp(mode, "reduced"));
  } else if (!strcmp(mode, "bench")) {
    int S = argc > 2 ? atoi(argv[2]) : 2048, D = argc > 3 ? atoi(argv[3]) : 64;
    int B = argc > 4 ? atoi(argv[4]) : 1, H = argc > 5 ? atoi(argv[5]) : 8, reps = argc > 6 ? atoi(argv[6]) : 3;
    bench(S, D, B, H, reps);
  } else {
    fprintf(stderr, "usage: %s check|reduced|bench [S D B H reps]\n", argv[0]);
    rc = 2;
  }
  fa_context_destroy(g_ctx);
  return rc;
}
