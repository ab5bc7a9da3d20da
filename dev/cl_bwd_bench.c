/* Workshop for the OpenCL flash backward (kernels/flash_bwd.cl): correctness against the float64 reference of
 * tests/reference.c, determinism, and timings.
 *
 *   cl_bwd_bench check            many shapes, dtypes, layouts, both dQ schemes; relative errors of dq, dk, dv;
 *                                 exits 1 on a miss
 *   cl_bwd_bench determinism      a few shapes twice with desc.deterministic: the gradients' bits must match
 *   cl_bwd_bench bench [S D B H]  fwd and bwd times (median of wall-clock runs after a warm-up), causal and not
 *
 * Public API only. Build (from the repository root, after ninja -C build-bwd):
 *   cc -O2 -std=c11 -Iinclude -Itests dev/cl_bwd_bench.c tests/reference.c -Lbuild-bwd -lflashattn -lm \
 *      -Wl,-rpath,$PWD/build-bwd -o build-bwd/cl_bwd_bench
 * Knobs the library reads: FLASHATTN_LOCAL_MEM_BYTES, FLASHATTN_OPENCL_BWD_DQ=atomic|separate,
 * FLASHATTN_OPENCL_BWD_TILES=BRxBC, FLASHATTN_OPENCL_VEC. FLOPs: forward 4 B H Sq Sk D, backward 2.5x that,
 * halved when causal. */
#define _POSIX_C_SOURCE 200809L
#include <flashattn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dev_operand.h"
#include "reference.h"

/* Forward, then backward (twice when check_bits: the two must agree bit for bit). Returns 0 when within
 * tolerance. */
static int run_case(const shape *c, int deterministic, int check_bits) {
  operand q, k, v, o, g, dq, dk, dv;
  make(&q, c, c->sq, c->hq, 2, 1);
  make(&k, c, c->sk, c->hkv, 2, 1);
  make(&v, c, c->sk, c->hkv, 1, 1);
  make(&o, c, c->sq, c->hq, 0, 0);
  make(&g, c, c->sq, c->hq, 1, 1);
  make(&dq, c, c->sq, c->hq, 0, 0);
  make(&dk, c, c->sk, c->hkv, 0, 0);
  make(&dv, c, c->sk, c->hkv, 0, 0);
  size_t nl = (size_t)c->b * c->hq * c->sq;
  fa_buffer *lb;
  CHECK_FA(fa_buffer_create(g_ctx, nl * sizeof(float), &lb));
  fa_tensor tl;
  fa_tensor_packed(&tl, lb, 0, FA_F32, c->b, c->hq, c->sq, 1);
  fa_attention_desc desc = {.algo = FA_ALGO_FLASH, .softmax_scale = c->scale, .causal = c->causal,
                            .deterministic = deterministic};
  CHECK_FA(fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl));
  CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
  int touched = fetch(&dq, c) + fetch(&dk, c) + fetch(&dv, c);
  int same = 1;
  if (check_bits) {
    size_t es = dsize(c->dt);
    unsigned char *a = malloc(dq.span * es), *b2 = malloc(dk.span * es), *c2 = malloc(dv.span * es);
    memcpy(a, dq.raw, dq.span * es), memcpy(b2, dk.raw, dk.span * es), memcpy(c2, dv.raw, dv.span * es);
    CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
    fetch(&dq, c), fetch(&dk, c), fetch(&dv, c);
    same = !memcmp(a, dq.raw, dq.span * es) && !memcmp(b2, dk.raw, dk.span * es) && !memcmp(c2, dv.raw, dv.span * es);
    free(a), free(b2), free(c2);
  }

  ref_problem rp = {.batch = c->b, .seqlen_q = c->sq, .seqlen_k = c->sk, .heads_q = c->hq, .heads_kv = c->hkv,
                    .head_dim = c->d, .scale = c->scale > 0 ? (double)c->scale : 1.0 / sqrt((double)c->d),
                    .causal = c->causal};
  double *rq = malloc(q.n * sizeof(double)), *rk = malloc(k.n * sizeof(double)), *rv = malloc(k.n * sizeof(double));
  if (ref_backward(&rp, q.val, k.val, v.val, g.val, rq, rk, rv)) exit(1);
  double eq = rel_err(dq.val, rq, q.n), ek = rel_err(dk.val, rk, k.n), ev = rel_err(dv.val, rv, k.n);
  double tol = c->dt == FA_F32 ? 1e-5 : c->dt == FA_F16 ? 2e-3 : 1e-2;
  int ok = eq <= tol && ek <= tol && ev <= tol && !touched && same;
  printf("%s %-4s B%d Sq%-4d Sk%-4d Hq%d Hkv%d D%-3d causal%d layout%d det%d: dq %.2e dk %.2e dv %.2e%s%s\n",
         ok ? "ok  " : "FAIL", c->dt == FA_F32 ? "f32" : c->dt == FA_F16 ? "f16" : "bf16", c->b, c->sq, c->sk, c->hq,
         c->hkv, c->d, c->causal, c->layout, deterministic, eq, ek, ev, touched ? " (padding written)" : "",
         same ? "" : " (runs differ)");
  fflush(stdout);
  drop(&q), drop(&k), drop(&v), drop(&o), drop(&g), drop(&dq), drop(&dk), drop(&dv);
  fa_buffer_destroy(lb);
  free(rq), free(rk), free(rv);
  return !ok;
}

static int check(int reduced) {
  static const shape cases[] = {
      {1, 64, 64, 1, 1, 64, 0, FA_F32, 0, 0},
      {1, 64, 64, 1, 1, 64, 1, FA_F32, 0, 0},
      {2, 77, 131, 4, 2, 64, 0, FA_F32, 0, 0},  /* GQA, odd lengths, Sq < Sk */
      {2, 77, 131, 4, 2, 64, 1, FA_F32, 0, 0},  /* causal Sq < Sk */
      {1, 150, 40, 3, 1, 32, 1, FA_F32, 0, 0},  /* causal Sq > Sk: fully masked rows; MQA */
      {1, 1, 200, 2, 2, 128, 0, FA_F32, 0, 0},  /* Sq = 1 */
      {1, 1, 200, 2, 2, 128, 1, FA_F32, 0, 0},
      {3, 33, 33, 3, 3, 16, 1, FA_F32, 1, 0.3f}, /* BHSD strides, explicit scale */
      {1, 70, 90, 6, 2, 40, 0, FA_F32, 2, 0},    /* padded rows, offset, D 40 */
      {1, 50, 60, 2, 1, 8, 1, FA_F32, 0, 0},     /* D 8 */
      {1, 100, 130, 2, 1, 256, 1, FA_F32, 0, 0}, /* D 256 */
      {1, 96, 96, 2, 2, 96, 0, FA_F32, 2, 0},
      {2, 77, 131, 4, 2, 64, 1, FA_F16, 0, 0},
      {1, 150, 40, 3, 1, 32, 1, FA_F16, 2, 0},
      {2, 77, 131, 4, 2, 64, 1, FA_BF16, 1, 0},
      {1, 100, 130, 2, 1, 128, 0, FA_BF16, 0, 0},
  };
  int n = (int)(sizeof cases / sizeof cases[0]), bad = 0, runs = 0;
  for (int i = 0; i < n; i++) {
    if (reduced && i % 3 != 0 && i != 4) continue;
    bad += run_case(&cases[i], 0, 0);
    bad += run_case(&cases[i], 1, i % 4 == 0);
    runs += 2;
  }
  printf("%d of %d runs failed\n", bad, runs);
  return bad != 0;
}

static int determinism(void) {
  static const shape cases[] = {
      {2, 300, 280, 4, 2, 64, 0, FA_F32, 0, 0},
      {1, 257, 513, 4, 1, 32, 1, FA_F32, 0, 0},
      {1, 200, 200, 2, 2, 64, 1, FA_BF16, 0, 0},
  };
  int bad = 0;
  for (int i = 0; i < 3; i++) bad += run_case(&cases[i], 1, 1);
  return bad != 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void bench(int S, int D, int B, int H, int reps) {
  for (int causal = 0; causal < 2; causal++) {
    shape c = {B, S, S, H, H, D, causal, FA_F32, 0, 0};
    operand q, k, v, o, g, dq, dk, dv;
    make(&q, &c, S, H, 1, 1), make(&k, &c, S, H, 1, 1), make(&v, &c, S, H, 1, 1), make(&o, &c, S, H, 0, 0);
    make(&g, &c, S, H, 1, 1), make(&dq, &c, S, H, 0, 0), make(&dk, &c, S, H, 0, 0), make(&dv, &c, S, H, 0, 0);
    fa_buffer *lb;
    CHECK_FA(fa_buffer_create(g_ctx, sizeof(float) * B * H * S, &lb));
    fa_tensor tl;
    fa_tensor_packed(&tl, lb, 0, FA_F32, B, H, S, 1);
    fa_attention_desc desc = {.algo = FA_ALGO_FLASH, .causal = causal};
    double t0 = now();
    CHECK_FA(fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl));
    CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
    CHECK_FA(fa_synchronize(g_ctx));
    double first = now() - t0;
    double tf[64], tb[64], cf[64], cb[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps; r++) {
      double c0 = cpu_now();
      t0 = now();
      CHECK_FA(fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl));
      CHECK_FA(fa_synchronize(g_ctx));
      double t1 = now(), c1 = cpu_now();
      CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
      CHECK_FA(fa_synchronize(g_ctx));
      tf[r] = t1 - t0;
      tb[r] = now() - t1;
      cf[r] = c1 - c0;
      cb[r] = cpu_now() - c1;
    }
    qsort(tf, reps, sizeof(double), cmp_double);
    qsort(tb, reps, sizeof(double), cmp_double);
    qsort(cf, reps, sizeof(double), cmp_double);
    qsort(cb, reps, sizeof(double), cmp_double);
    double f = tf[reps / 2], bw = tb[reps / 2];
    double flops = 4.0 * B * H * (double)S * S * D * (causal ? 0.5 : 1.0);
    printf("B%d H%d S%d D%d causal%d: fwd %.1f ms (min %.1f, %.2f GFLOP/s)  bwd %.1f ms (min %.1f, %.2f GFLOP/s)  "
           "fwd+bwd %.1f ms (%.2f GFLOP/s)  cpu-s fwd %.3f bwd %.3f  [first call incl. build %.1f s]\n",
           B, H, S, D, causal, f * 1e3, tf[0] * 1e3, flops / f * 1e-9, bw * 1e3, tb[0] * 1e3, 2.5 * flops / bw * 1e-9,
           (f + bw) * 1e3, 3.5 * flops / (f + bw) * 1e-9, cf[reps / 2], cb[reps / 2], first);
    fflush(stdout);
    drop(&q), drop(&k), drop(&v), drop(&o), drop(&g), drop(&dq), drop(&dk), drop(&dv);
    fa_buffer_destroy(lb);
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "check";
  fa_context_options opt = {.backend = FA_BACKEND_OPENCL, .device = 0};
  if (fa_context_create(&opt, &g_ctx) != FA_SUCCESS) {
    fprintf(stderr, "fa_context_create: %s\n", fa_last_create_error());
    return 1;
  }
  fa_device_info info;
  fa_device_info_init(&info);
  CHECK_FA(fa_context_info(g_ctx, &info));
  printf("device: %s (%s), local memory budget %zu bytes\n", info.name, info.platform, info.local_mem_bytes);
  int rc = 0;
  if (!strcmp(mode, "check") || !strcmp(mode, "reduced")) {
    rc = check(!strcmp(mode, "reduced"));
  } else if (!strcmp(mode, "determinism")) {
    rc = determinism();
  } else if (!strcmp(mode, "bench")) {
    int S = argc > 2 ? atoi(argv[2]) : 1024, D = argc > 3 ? atoi(argv[3]) : 64;
    int B = argc > 4 ? atoi(argv[4]) : 1, H = argc > 5 ? atoi(argv[5]) : 8;
    int reps = argc > 6 ? atoi(argv[6]) : 5;
    bench(S, D, B, H, reps);
  } else {
    fprintf(stderr, "usage: %s check|reduced|determinism|bench [S D B H reps]\n", argv[0]);
    rc = 2;
  }
  fa_context_destroy(g_ctx);
  return rc;
}
