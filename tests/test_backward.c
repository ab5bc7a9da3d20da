/* Backward pass vs the float64 reference, on every backend that answers.
 *
 * Each case: fresh random q, k, v, dout; the library's own forward gives o and lse (as a caller would run
 * it); dq, dk, dv poisoned; one fa_backward; then ‖grad − ref‖/‖ref‖ within the forward's bounds for the
 * dtype (f32 1e-5, f16 2e-3, bf16 1e-2) for each of dq, dk, dv; rows whose keys are all masked have dq
 * exactly 0; nothing written outside dq, dk, dv; every input untouched. Cases marked deterministic run the
 * backward twice with desc.deterministic = 1 and need the same bits.
 * A backend that answers FA_ERROR_UNSUPPORTED (the backward not written yet) gives a TAP skip, never a pass.
 * The reference gradients are exact for the stored inputs; the library works from its own rounded o. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct bwd_case {
  fa_dtype dtype;
  int head_dim, batch, seqlen_q, seqlen_k, heads_q, heads_kv;
  int causal;
  float scale;
  th_layout in, out; /* q, k, v, o, lse, dout; dq, dk, dv */
  int offset;
  int deterministic; /* run twice with desc.deterministic = 1, compare bits */
} bwd_case;

#define F32 FA_F32
#define F16 FA_F16
#define BF16 FA_BF16
#define PACK TH_PACKED
#define BHSD TH_BHSD
#define PAD TH_PADDED
#define BPAD TH_BHSD_PADDED

/* dtype, D, B, Sq, Sk, Hq, Hkv, causal, scale, in, out, offset, deterministic */
static const bwd_case cases[] = {
    {F32, 64, 1, 64, 64, 2, 2, 0, 0, PACK, PACK, 0, 0},
    {F32, 32, 2, 17, 100, 6, 2, 1, 0, PACK, PACK, 0, 0},     /* GQA, causal Sq < Sk */
    {F32, 64, 1, 100, 33, 3, 3, 1, 0, BHSD, PAD, 0, 0},      /* causal Sq > Sk: 67 rows masked; strided */
    {F32, 128, 1, 65, 130, 4, 1, 1, 0.3f, PAD, BPAD, 3, 0},  /* MQA, padded, offsets, custom scale */
    {F32, 96, 3, 1, 77, 1, 1, 0, 0, PACK, PAD, 1, 0},        /* Sq = 1 */
    {F32, 256, 1, 40, 40, 2, 1, 1, 0, PACK, PACK, 0, 0},
    {F16, 64, 1, 100, 100, 4, 2, 1, 0, PACK, PACK, 0, 0},
    {F16, 128, 1, 77, 40, 2, 2, 1, 0, PAD, PAD, 1, 0},       /* masked rows */
    {BF16, 64, 2, 33, 65, 2, 2, 0, 0, BHSD, PACK, 0, 0},
    {F32, 64, 1, 200, 200, 8, 1, 1, 0, PACK, PACK, 0, 1},    /* deterministic: 8 query heads share dk, dv */
    {F16, 64, 2, 130, 70, 4, 2, 0, 0, PACK, BHSD, 0, 1},
    /* 16-bit with 16-byte aligned rows (the Hopper backward's TMA path on sm_90): several key and query blocks
     * with tails, causal both ways with masked rows, GQA and MQA, padded head dims, deterministic */
    {BF16, 64, 2, 300, 300, 4, 2, 1, 0, PACK, PACK, 0, 0},
    {F16, 64, 1, 1000, 700, 2, 2, 0, 0, PACK, PACK, 0, 1},
    {BF16, 32, 1, 70, 90, 2, 2, 0, 0.3f, PACK, PACK, 0, 0},
    {F16, 72, 1, 130, 140, 2, 2, 0, 0, PACK, PACK, 0, 0},
    {BF16, 96, 1, 200, 333, 2, 1, 1, 0, PACK, PACK, 8, 1},
    {F16, 128, 2, 384, 384, 2, 2, 0, 0, PACK, PACK, 0, 0},
    {BF16, 128, 1, 129, 700, 4, 1, 1, 0, BHSD, BHSD, 0, 1},
    {F16, 128, 1, 500, 200, 2, 2, 1, 0, PACK, PACK, 0, 0},
    {BF16, 128, 1, 1, 300, 4, 4, 0, 0, PACK, PACK, 0, 0},
    /* 16-bit, every tensor-core shape of the CUDA backward (D > 128: two warps per key group), several key
     * and query blocks, so that deterministic dQ orders real additions. */
    {BF16, 64, 1, 300, 170, 2, 2, 0, 0, PACK, PACK, 0, 1},
    {F16, 96, 1, 150, 190, 4, 2, 0, 0, PACK, PACK, 0, 1},    /* GQA */
    {BF16, 128, 1, 250, 250, 4, 2, 1, 0, PACK, PACK, 0, 1},  /* causal, GQA */
    {BF16, 160, 1, 130, 97, 2, 1, 1, 0, PACK, PACK, 0, 0},   /* causal Sq > Sk, MQA */
    {F16, 192, 2, 77, 200, 2, 2, 1, 0, BHSD, PAD, 1, 1},     /* causal Sq < Sk, strided, offsets */
    {BF16, 256, 1, 200, 200, 2, 1, 0, 0, PACK, PACK, 0, 1},  /* MQA */
    {F16, 256, 1, 65, 129, 2, 2, 1, 0.2f, PAD, PACK, 3, 0},  /* causal, custom scale, padded */
    {F16, 256, 1, 190, 190, 2, 2, 1, 0, PACK, PACK, 0, 1},   /* causal */
    /* 16-bit shapes for the tensor-core kernels (kernels/flash_bwd_nv.cl; run there with
     * FLASHATTN_OPENCL_NV_TC=emulate too): D padded to the mma's 16, several key and query blocks with GQA,
     * D = 256 (the forward's key tiles of 32; the backward falls back). */
    {BF16, 40, 1, 90, 70, 4, 2, 1, 0, PACK, PACK, 0, 1},
    {BF16, 128, 1, 130, 200, 4, 1, 1, 0, BHSD, PACK, 0, 0},
    {F16, 256, 1, 50, 70, 2, 1, 0, 0, PACK, PAD, 0, 0},
};
static const int n_cases = (int)(sizeof cases / sizeof cases[0]);

static const char *layout_name(th_layout l) {
  static const char *names[] = {"packed", "bhsd", "padded", "bhsd+padded"};
  return names[l];
}

typedef struct grads {
  th_tensor dq, dk, dv;
} grads;

static fa_status run_backward(fa_context *ctx, const fa_attention_desc *desc, th_tensor *q, th_tensor *k,
                              th_tensor *v, th_tensor *o, th_tensor *lse, th_tensor *dout, grads *g) {
  return fa_backward(ctx, desc, &q->t, &k->t, &v->t, &o->t, &lse->t, &dout->t, &g->dq.t, &g->dk.t, &g->dv.t);
}

/* After the call returned st: the gradients against the reference, masked rows, nothing written elsewhere,
 * inputs untouched; deterministic cases run the call again and compare bits. */
static void check_gradients(const bwd_case *c, int bi, uint64_t seed, const fa_attention_desc *desc, fa_status st,
                            th_tensor *q, th_tensor *k, th_tensor *v, th_tensor *o, th_tensor *lse, th_tensor *dout,
                            grads *g) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_backward: %s: %s", th_case(), be, fa_status_string(st),
                fa_context_last_error(ctx));
  st = fa_synchronize(ctx);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_synchronize: %s: %s", th_case(), be, fa_status_string(st),
                fa_context_last_error(ctx));

  int ok_q = 0, ok_k = 0, ok_v = 0;
  ck_assert_int_eq(th_tensor_download(&g->dq, &ok_q), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&g->dk, &ok_k), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&g->dv, &ok_v), FA_SUCCESS);
  ck_assert_msg(ok_q && ok_k && ok_v, "%s: %s: wrote outside dq (%s), dk (%s) or dv (%s)", th_case(), be,
                ok_q ? "ok" : "written", ok_k ? "ok" : "written", ok_v ? "ok" : "written");

  ref_problem p = {c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->head_dim,
                   c->scale ? (double)c->scale : 1.0 / sqrt((double)c->head_dim), c->causal};
  double *rq = malloc(q->elems * sizeof(double)), *rk = malloc(k->elems * sizeof(double)),
         *rv = malloc(v->elems * sizeof(double));
  ck_assert(rq && rk && rv);
  ck_assert_int_eq(ref_backward(&p, q->host, k->host, v->host, dout->host, rq, rk, rv), 0);
  const double tol = th_tolerance(c->dtype);
  double eq = ref_rel_error(g->dq.host, rq, q->elems), ek = ref_rel_error(g->dk.host, rk, k->elems),
         ev = ref_rel_error(g->dv.host, rv, v->elems);
  size_t nans = th_count_nan(g->dq.host, q->elems) + th_count_nan(g->dk.host, k->elems) +
                th_count_nan(g->dv.host, v->elems);
  ck_assert_msg(nans == 0 && eq <= tol && ek <= tol && ev <= tol,
                "%s: %s (seed %llu): relative errors dq %.3g dk %.3g dv %.3g (bound %.0e), %zu NaN", th_case(), be,
                (unsigned long long)seed, eq, ek, ev, tol, nans);
  th_diag("%s: %s: relative errors dq %.2g dk %.2g dv %.2g", th_case(), be, eq, ek, ev);

  for (int64_t b = 0; b < p.batch; b++)
    for (int64_t i = 0; i < p.seqlen_q; i++) {
      if (ref_visible(&p, i, 0)) continue;
      for (int64_t h = 0; h < p.heads_q; h++)
        for (int64_t d = 0; d < p.head_dim; d++)
          ck_assert_msg(g->dq.host[((b * p.seqlen_q + i) * p.heads_q + h) * p.head_dim + d] == 0.0,
                        "%s: %s: masked row %lld: dq not 0", th_case(), be, (long long)i);
    }
  ck_assert_msg(th_tensor_unchanged(q) == 1 && th_tensor_unchanged(k) == 1 && th_tensor_unchanged(v) == 1 &&
                    th_tensor_unchanged(o) == 1 && th_tensor_unchanged(lse) == 1 &&
                    th_tensor_unchanged(dout) == 1,
                "%s: %s: an input (q, k, v, o, lse or dout) was modified", th_case(), be);

  if (c->deterministic) {
    /* Same call again into freshly poisoned gradients: the same bits. */
    double *first[3] = {rq, rk, rv};
    th_tensor *t[3] = {&g->dq, &g->dk, &g->dv};
    for (int i = 0; i < 3; i++) {
      memcpy(first[i], t[i]->host, t[i]->elems * sizeof(double));
      ck_assert_int_eq(th_tensor_poison(t[i]), FA_SUCCESS);
    }
    st = run_backward(ctx, desc, q, k, v, o, lse, dout, g);
    ck_assert_msg(st == FA_SUCCESS, "%s: %s: second fa_backward: %s", th_case(), be, fa_status_string(st));
    for (int i = 0; i < 3; i++) {
      ck_assert_int_eq(th_tensor_download(t[i], NULL), FA_SUCCESS);
      ck_assert_msg(memcmp(first[i], t[i]->host, t[i]->elems * sizeof(double)) == 0,
                    "%s: %s: deterministic = 1, but %s differs between two runs", th_case(), be,
                    i == 0 ? "dq" : i == 1 ? "dk" : "dv");
    }
  }
  free(rq);
  free(rk);
  free(rv);
}

static void run_case(const bwd_case *c, int case_number, int bi) {
  fa_context *ctx = th_context(bi);
  const uint64_t seed = th_case_seed(case_number);
  const char *be = th_backend_label(bi);
  th_rng r;
  th_rng_init(&r, seed);

  const int64_t qshape[4] = {c->batch, c->seqlen_q, c->heads_q, c->head_dim};
  const int64_t kshape[4] = {c->batch, c->seqlen_k, c->heads_kv, c->head_dim};
  const int64_t lshape[4] = {c->batch, c->heads_q, c->seqlen_q, 1};
  const int off = c->offset;
  th_tensor q, k, v, o, lse, dout;
  grads g;
  ck_assert_int_eq(th_tensor_create(&q, ctx, c->dtype, qshape, c->in, off), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&k, ctx, c->dtype, kshape, c->in, off ? off + 1 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&v, ctx, c->dtype, kshape, c->in, off ? off + 2 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&o, ctx, c->dtype, qshape, c->in, off ? off + 3 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&lse, ctx, FA_F32, lshape, c->in, off ? off + 4 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&dout, ctx, c->dtype, qshape, c->in, off ? off + 5 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&g.dq, ctx, c->dtype, qshape, c->out, off ? off + 6 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&g.dk, ctx, c->dtype, kshape, c->out, off ? off + 7 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&g.dv, ctx, c->dtype, kshape, c->out, off ? off + 8 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&q, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&k, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&v, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&dout, &r, 1.0), FA_SUCCESS);

  fa_attention_desc desc = {0};
  desc.softmax_scale = c->scale;
  desc.causal = c->causal;
  desc.deterministic = c->deterministic;
  fa_status st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lse.t);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_forward: %s: %s", th_case(), be, fa_status_string(st),
                fa_context_last_error(ctx));
  /* o and lse as the forward left them are inputs now: keep that image for the "untouched" check. */
  ck_assert_int_eq(th_tensor_download(&o, NULL), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&o), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&lse, NULL), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&lse), FA_SUCCESS);

  st = run_backward(ctx, &desc, &q, &k, &v, &o, &lse, &dout, &g);
  if (st == FA_ERROR_UNSUPPORTED) {
    th_unsupported(bi, fa_context_last_error(ctx));
    ck_assert_msg(th_tensor_unchanged(&g.dq) == 1 && th_tensor_unchanged(&g.dk) == 1 &&
                      th_tensor_unchanged(&g.dv) == 1,
                  "%s: %s: a gradient was written by a call that failed", th_case(), be);
  } else {
    check_gradients(c, bi, seed, &desc, st, &q, &k, &v, &o, &lse, &dout, &g);
    th_ran(bi);
  }
  th_tensor_destroy(&q);
  th_tensor_destroy(&k);
  th_tensor_destroy(&v);
  th_tensor_destroy(&o);
  th_tensor_destroy(&lse);
  th_tensor_destroy(&dout);
  th_tensor_destroy(&g.dq);
  th_tensor_destroy(&g.dk);
  th_tensor_destroy(&g.dv);
}

START_TEST(t_backward) {
  const bwd_case *c = &cases[_i];
  char scale[32] = "";
  if (c->scale) snprintf(scale, sizeof scale, " scale=%g", (double)c->scale);
  th_case_begin("backward %s D=%d B=%d Sq=%d Sk=%d Hq=%d Hkv=%d%s%s in=%s out=%s%s%s", fa_dtype_name(c->dtype),
                c->head_dim, c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->causal ? " causal" : "",
                scale, layout_name(c->in), layout_name(c->out), c->offset ? " offsets" : "",
                c->deterministic ? " deterministic" : "");
  for (int bi = 0; bi < th_backend_count(); bi++) run_case(c, _i, bi);
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("backward");
  TCase *tc = tcase_create("backward");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_backward, 0, n_cases);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return th_main(make_suite(), 1);
}
