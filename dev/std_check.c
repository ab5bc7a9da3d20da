/* std_check: FA_ALGO_STANDARD (scores in device memory, GEMMs through CLBlast or cuBLAS) against the float64
 * reference of tests/reference.c, forward and backward, through the public API on whichever backend
 * FLASHATTN_BACKEND selects (auto: CUDA when a device answers, else OpenCL).
 *
 *   std_check [check]        shapes x dtypes x layouts: o by ||o - ref|| / ||ref|| (f32 1e-5, f16 2e-3,
 *                            bf16 1e-2), lse by its largest error (<= 1e-3 max(1, |lse|), -inf exactly where
 *                            every key is masked), then dq, dk, dv by relative error; outputs are poisoned
 *                            (0xff, NaN) and the gaps of strided layouts must stay untouched. Exits 1 on a miss.
 *   std_check reduced        every third case
 *   std_check oom            a call whose score matrices cannot fit must return FA_ERROR_OUT_OF_MEMORY, write
 *                            nothing, and leave the context usable
 *   std_check bench [S D B H reps]   standard vs flash, fwd and bwd: median device time between events
 *                            (fa_event_record; wall time around fa_synchronize where the queue cannot time)
 *                            and the peak of fa_context_memory() (f16 on CUDA, f32 on OpenCL)
 *
 * Public API only. Builds with CUDA make BUILD/src/cuda/std_check (src/cuda/meson.build); otherwise, from the
 * repository root after ninja -C BUILD:
 *   cc -O2 -std=c11 -Iinclude -Itests dev/std_check.c tests/reference.c -LBUILD -lflashattn -lm \
 *      -Wl,-rpath,$PWD/BUILD -o BUILD/std_check
 * (dev/std_check.sh does that and runs it). */
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













/* Forward and backward of one case with FA_ALGO_STANDARD. Returns the number of failures (0 or 1). */
static int run_case(const shape *c) {
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
  float *lse = malloc(nl * sizeof(float));
  memset(lse, 0xff, nl * sizeof(float));
  CHECK_FA(fa_buffer_write(g_ctx, lb, 0, lse, nl * sizeof(float)));
  fa_tensor tl;
  fa_tensor_packed(&tl, lb, 0, FA_F32, c->b, c->hq, c->sq, 1);

  ref_problem rp = {.batch = c->b, .seqlen_q = c->sq, .seqlen_k = c->sk, .heads_q = c->hq, .heads_kv = c->hkv,
                    .head_dim = c->d, .scale = c->scale > 0 ? (double)c->scale : 1.0 / sqrt((double)c->d),
                    .causal = c->causal};
  double *ro = malloc(q.n * sizeof(double)), *rl = malloc(nl * sizeof(double));
  double *rq = malloc(q.n * sizeof(double)), *rk = malloc(k.n * sizeof(double)), *rv = malloc(k.n * sizeof(double));
  if (ref_forward(&rp, q.val, k.val, v.val, ro, rl) || ref_backward(&rp, q.val, k.val, v.val, g.val, rq, rk, rv)) {
    fprintf(stderr, "reference: out of host memory\n");
    exit(1);
  }

  double tol = c->dt == FA_F32 ? 1e-5 : c->dt == FA_F16 ? 2e-3 : 1e-2;
  fa_attention_desc desc = {.algo = FA_ALGO_STANDARD, .softmax_scale = c->scale, .causal = c->causal};
  char why[512] = "";
  int ok = 1;
  double eo = NAN, el = NAN, eq = NAN, ek = NAN, ev = NAN;
  fa_status st = fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl);
  if (st != FA_SUCCESS) {
    snprintf(why, sizeof why, " fa_forward: %s: %s", fa_status_string(st), fa_context_last_error(g_ctx));
    ok = 0;
  } else {
    int touched = fetch(&o, c);
    CHECK_FA(fa_buffer_read(g_ctx, lb, 0, lse, nl * sizeof(float)));
    double *dl = malloc(nl * sizeof(double));
    int inf_ok = 1;
    for (size_t i = 0; i < nl; i++) {
      dl[i] = lse[i];
      if (isinf(rl[i]) != isinf(dl[i]) || (isinf(rl[i]) && dl[i] > 0)) inf_ok = 0;
    }
    eo = rel_err(o.val, ro, q.n);
    el = ref_max_abs_error_scaled(dl, rl, nl);
    free(dl);
    if (!(eo <= tol) || !(el <= 1e-3) || !inf_ok || touched) {
      ok = 0;
      snprintf(why, sizeof why, "%s%s", touched ? " (o padding written)" : "", inf_ok ? "" : " (-inf rows differ)");
    }
    st = fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t);
    if (st != FA_SUCCESS) {
      size_t n = strlen(why);
      snprintf(why + n, sizeof why - n, " fa_backward: %s: %s", fa_status_string(st), fa_context_last_error(g_ctx));
      ok = 0;
    } else {
      touched = fetch(&dq, c) + fetch(&dk, c) + fetch(&dv, c);
      eq = rel_err(dq.val, rq, q.n), ek = rel_err(dk.val, rk, k.n), ev = rel_err(dv.val, rv, k.n);
      if (!(eq <= tol) || !(ek <= tol) || !(ev <= tol) || touched) ok = 0;
      if (touched) {
        size_t n = strlen(why);
        snprintf(why + n, sizeof why - n, " (gradient padding written)");
      }
    }
  }
  printf("%s %-4s B%d Sq%-4d Sk%-4d Hq%d Hkv%d D%-3d causal%d layout%d: o %.2e lse %.2e | dq %.2e dk %.2e dv %.2e%s\n",
         ok ? "ok  " : "FAIL", dname(c->dt), c->b, c->sq, c->sk, c->hq, c->hkv, c->d, c->causal, c->layout, eo, el, eq,
         ek, ev, why);
  fflush(stdout);
  drop(&q), drop(&k), drop(&v), drop(&o), drop(&g), drop(&dq), drop(&dk), drop(&dv);
  fa_buffer_destroy(lb);
  free(lse), free(ro), free(rl), free(rq), free(rk), free(rv);
  return !ok;
}

static int check(int reduced) {
  static const shape cases[] = {
      {1, 64, 64, 1, 1, 64, 0, FA_F32, 0, 0},
      {1, 64, 64, 1, 1, 64, 1, FA_F32, 0, 0},
      {2, 77, 131, 4, 2, 64, 0, FA_F32, 0, 0}, /* GQA, odd lengths, Sq < Sk */
      {2, 77, 131, 4, 2, 64, 1, FA_F32, 0, 0}, /* causal Sq < Sk */
      {1, 150, 40, 3, 1, 32, 1, FA_F32, 0, 0}, /* causal Sq > Sk: fully masked rows; MQA */
      {1, 1, 200, 2, 2, 128, 0, FA_F32, 0, 0}, /* Sq = 1 */
      {1, 1, 200, 2, 2, 128, 1, FA_F32, 0, 0},
      {3, 33, 33, 3, 3, 16, 1, FA_F32, 1, 0.3f}, /* BHSD strides, explicit scale */
      {1, 70, 90, 6, 2, 40, 0, FA_F32, 2, 0},    /* padded rows, offset, D 40 */
      {1, 50, 60, 2, 1, 8, 1, FA_F32, 0, 0},     /* D 8 */
      {1, 100, 130, 2, 1, 256, 1, FA_F32, 0, 0}, /* D 256 */
      {1, 96, 96, 2, 2, 96, 0, FA_F32, 2, 0},
      {1, 300, 260, 2, 2, 64, 0, FA_F32, 0, 0}, /* more than one 128-row pad block */
      {2, 77, 131, 4, 2, 64, 1, FA_F16, 0, 0},
      {1, 150, 40, 3, 1, 32, 1, FA_F16, 2, 0},
      {1, 1, 200, 2, 1, 80, 0, FA_F16, 1, 0},
      {2, 77, 131, 4, 2, 64, 1, FA_BF16, 1, 0},
      {1, 100, 130, 2, 1, 128, 0, FA_BF16, 0, 0},
      {1, 150, 40, 3, 1, 32, 1, FA_BF16, 2, 0},
  };
  int n = (int)(sizeof cases / sizeof cases[0]), bad = 0, ran = 0;
  for (int i = 0; i < n; i++) {
    if (reduced && i % 3 != 0 && i != 4) continue;
    bad += run_case(&cases[i]);
    ran++;
  }
  printf("%d of %d cases failed\n", bad, ran);
  return bad != 0;
}

/* Score matrices far beyond any device: both passes must refuse with FA_ERROR_OUT_OF_MEMORY, write nothing,
 * and leave the context working (a small case afterwards). */
static int oom(void) {
  const int S = 1 << 20;
  shape c = {1, S, S, 1, 1, 8, 0, FA_F16, 0, 0};
  operand q, k, v, o, g, dq, dk, dv;
  make(&q, &c, S, 1, 1, 1), make(&k, &c, S, 1, 1, 1), make(&v, &c, S, 1, 1, 1), make(&o, &c, S, 1, 1, 1);
  make(&g, &c, S, 1, 1, 1), make(&dq, &c, S, 1, 0, 0), make(&dk, &c, S, 1, 0, 0), make(&dv, &c, S, 1, 0, 0);
  fa_buffer *lb;
  CHECK_FA(fa_buffer_create(g_ctx, (size_t)S * sizeof(float), &lb));
  float *lse = malloc((size_t)S * sizeof(float));
  memset(lse, 0xff, (size_t)S * sizeof(float));
  CHECK_FA(fa_buffer_write(g_ctx, lb, 0, lse, (size_t)S * sizeof(float)));
  fa_tensor tl;
  fa_tensor_packed(&tl, lb, 0, FA_F32, 1, 1, S, 1);
  fa_attention_desc desc = {.algo = FA_ALGO_STANDARD};
  int bad = 0;

  /* The forward writes o: its host copy must come back as it went in. */
  unsigned char *before = malloc(o.span * 2);
  memcpy(before, o.raw, o.span * 2);
  fa_status st = fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl);
  printf("forward  Sq = Sk = 2^20: %s: %s\n", fa_status_string(st), fa_context_last_error(g_ctx));
  CHECK_FA(fa_buffer_read(g_ctx, o.buf, 0, o.raw, o.span * 2));
  float *lse2 = malloc((size_t)S * sizeof(float));
  CHECK_FA(fa_buffer_read(g_ctx, lb, 0, lse2, (size_t)S * sizeof(float)));
  int written = memcmp(before, o.raw, o.span * 2) != 0 || memcmp(lse, lse2, (size_t)S * sizeof(float)) != 0;
  if (st != FA_ERROR_OUT_OF_MEMORY || written) bad++;
  if (written) printf("  FAIL: o or lse written\n");

  st = fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t);
  printf("backward Sq = Sk = 2^20: %s: %s\n", fa_status_string(st), fa_context_last_error(g_ctx));
  written = fetch(&dq, &c) + fetch(&dk, &c) + fetch(&dv, &c) != 0;
  for (size_t i = 0; i < dq.n && !written; i++) written = !isnan(dq.val[i]) || !isnan(dk.val[i]) || !isnan(dv.val[i]);
  if (st != FA_ERROR_OUT_OF_MEMORY || written) bad++;
  if (written) printf("  FAIL: a gradient written\n");
  drop(&q), drop(&k), drop(&v), drop(&o), drop(&g), drop(&dq), drop(&dk), drop(&dv);
  fa_buffer_destroy(lb);
  free(lse), free(lse2), free(before);

  shape small = {1, 70, 90, 2, 1, 32, 1, FA_F32, 0, 0};
  bad += run_case(&small);
  printf("%s\n", bad ? "oom: FAIL" : "oom: ok");
  return bad != 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Device time of the work enqueued between two events, when the queue can time (fa_event_record); else
 * wall time around fa_synchronize. t0 is the wall clock at start. */
static double elapsed(fa_event *e0, double t0) {
  fa_event *e1 = NULL;
  double ms;
  if (e0 && fa_event_record(g_ctx, &e1) == FA_SUCCESS && fa_event_elapsed_ms(g_ctx, e0, e1, &ms) == FA_SUCCESS) {
    fa_event_destroy(e1);
    return ms * 1e-3;
  }
  fa_event_destroy(e1);
  CHECK_FA(fa_synchronize(g_ctx));
  return now() - t0;
}

static fa_event *mark(void) {
  fa_event *e = NULL;
  if (fa_event_record(g_ctx, &e) != FA_SUCCESS) e = NULL;
  return e;
}

static void bench(int S, int D, int B, int H, int reps, fa_dtype dt) {
  if (reps < 1) reps = 1;
  if (reps > 64) reps = 64;
  for (int algo = 0; algo < 2; algo++) {
    for (int causal = 0; causal < 2; causal++) {
      shape c = {B, S, S, H, H, D, causal, dt, 0, 0};
      operand q, k, v, o, g, dq, dk, dv;
      make(&q, &c, S, H, 1, 1), make(&k, &c, S, H, 1, 1), make(&v, &c, S, H, 1, 1), make(&o, &c, S, H, 0, 0);
      make(&g, &c, S, H, 1, 1), make(&dq, &c, S, H, 0, 0), make(&dk, &c, S, H, 0, 0), make(&dv, &c, S, H, 0, 0);
      fa_buffer *lb;
      CHECK_FA(fa_buffer_create(g_ctx, sizeof(float) * B * H * S, &lb));
      fa_tensor tl;
      fa_tensor_packed(&tl, lb, 0, FA_F32, B, H, S, 1);
      fa_attention_desc desc = {.algo = algo ? FA_ALGO_STANDARD : FA_ALGO_FLASH, .causal = causal};
      size_t cur, base, peak_f, peak_b;
      CHECK_FA(fa_context_memory(g_ctx, &base, &peak_f));
      double t0 = now();
      fa_status st = fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl);
      if (st == FA_SUCCESS) st = fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t);
      if (st == FA_SUCCESS) st = fa_synchronize(g_ctx);
      double first = now() - t0;
      if (st != FA_SUCCESS) {
        printf("%s B%d H%d S%d D%d causal%d: %s: %s\n", algo ? "standard" : "flash", B, H, S, D, causal,
               fa_status_string(st), fa_context_last_error(g_ctx));
      } else {
        double tf[64], tb[64];
        for (int r = 0; r < reps; r++) {
          CHECK_FA(fa_synchronize(g_ctx));
          CHECK_FA(fa_context_reset_peak_memory(g_ctx));
          fa_event *e0 = mark();
          t0 = now();
          CHECK_FA(fa_forward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl));
          tf[r] = elapsed(e0, t0);
          fa_event_destroy(e0);
          CHECK_FA(fa_context_memory(g_ctx, &cur, &peak_f));
          CHECK_FA(fa_synchronize(g_ctx));
          CHECK_FA(fa_context_reset_peak_memory(g_ctx));
          e0 = mark();
          t0 = now();
          CHECK_FA(fa_backward(g_ctx, &desc, &q.t, &k.t, &v.t, &o.t, &tl, &g.t, &dq.t, &dk.t, &dv.t));
          tb[r] = elapsed(e0, t0);
          fa_event_destroy(e0);
          CHECK_FA(fa_context_memory(g_ctx, &cur, &peak_b));
        }
        qsort(tf, reps, sizeof(double), cmp_double);
        qsort(tb, reps, sizeof(double), cmp_double);
        double f = tf[reps / 2], bw = tb[reps / 2];
        double flops = 4.0 * B * H * (double)S * S * D * (causal ? 0.5 : 1.0);
        printf(
            "%-8s %s B%d H%d S%d D%d causal%d: fwd %.3f ms (%.2f TFLOP/s, peak %.1f MiB)  bwd %.3f ms (%.2f TFLOP/s, "
            "peak %.1f MiB)  [first fwd+bwd %.2f s]\n",
            algo ? "standard" : "flash", dname(dt), B, H, S, D, causal, f * 1e3, flops / f * 1e-12, peak_f / 1048576.0,
            bw * 1e3, 2.5 * flops / bw * 1e-12, peak_b / 1048576.0, first);
      }
      fflush(stdout);
      drop(&q), drop(&k), drop(&v), drop(&o), drop(&g), drop(&dq), drop(&dk), drop(&dv);
      fa_buffer_destroy(lb);
    }
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "check";
  fa_context_options opt;
  fa_context_options_default(&opt);
  fa_status cs = fa_context_create(&opt, &g_ctx);
  if (cs != FA_SUCCESS) {
    fprintf(stderr, "fa_context_create: %s: %s\n", fa_status_string(cs), fa_last_create_error());
    return cs == FA_ERROR_BACKEND_UNAVAILABLE ? 77 : 1; /* 77: no such backend here (a skip) */
  }
  fa_device_info info;
  fa_device_info_init(&info);
  CHECK_FA(fa_context_info(g_ctx, &info));
  printf("backend %s, device: %s (%s)\n", fa_backend_name(info.backend), info.name, info.platform);
  int rc = 0;
  if (!strcmp(mode, "check") || !strcmp(mode, "reduced")) {
    rc = check(!strcmp(mode, "reduced"));
  } else if (!strcmp(mode, "oom")) {
    rc = oom();
  } else if (!strcmp(mode, "bench")) {
    int S = argc > 2 ? atoi(argv[2]) : 1024, D = argc > 3 ? atoi(argv[3]) : 64;
    int B = argc > 4 ? atoi(argv[4]) : 1, H = argc > 5 ? atoi(argv[5]) : 8;
    int reps = argc > 6 ? atoi(argv[6]) : 5;
    bench(S, D, B, H, reps, info.backend == FA_BACKEND_CUDA ? FA_F16 : FA_F32);
  } else {
    fprintf(stderr, "usage: %s check|reduced|oom|bench [S D B H reps]\n", argv[0]);
    rc = 2;
  }
  fa_context_destroy(g_ctx);
  return rc;
}
