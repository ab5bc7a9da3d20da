/* Forward pass vs the float64 reference, on every backend that answers.
 *
 * Each case: fresh random q, k, v (values rounded to the dtype, so the reference sees what the device
 * stores) in some layout, o and lse poisoned with NaN, one fa_forward, then
 *   ‖o − ref‖/‖ref‖ within DESIGN.md's bound for the dtype (f32 1e-5, f16 2e-3, bf16 1e-2);
 *   lse within 1e-3 · max(1, |ref|) absolute, and exactly -inf on rows whose keys are all masked
 *   (where o must be exactly 0);
 *   nothing written outside o's and lse's elements (gaps, offsets, the end of the buffer stay poison);
 *   q, k, v untouched.
 * `--reduced` runs a short list: tests/meson.build registers it again under small on-chip budgets
 * (FLASHATTN_LOCAL_MEM_BYTES), where each (head dim, dtype) is a new kernel compile.
 * A (head dim, dtype) pair is a compile of seconds on PoCL: all head dims in f32, a few in f16 / bf16. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct fwd_case {
  fa_dtype dtype;
  int head_dim, batch, seqlen_q, seqlen_k, heads_q, heads_kv;
  int causal;
  float scale;       /* 0: the default 1/sqrt(D) */
  th_layout in, out; /* layout of q, k, v; of o and lse */
  int offset;        /* elements before each tensor (varied per tensor below) */
  int lse;           /* ask for lse */
  fa_algo algo;
} fwd_case;

#define F32 FA_F32
#define F16 FA_F16
#define BF16 FA_BF16
#define PACK TH_PACKED
#define BHSD TH_BHSD
#define PAD TH_PADDED
#define BPAD TH_BHSD_PADDED
#define FLASH FA_ALGO_FLASH
#define STD FA_ALGO_STANDARD

/* dtype, D, B, Sq, Sk, Hq, Hkv, causal, scale, in, out, offset, lse, algo */
static const fwd_case full_cases[] = {
    /* every head dim in f32, each with a different mix of the other features */
    {F32, 16, 1, 1, 1, 1, 1, 0, 0, PACK, PACK, 0, 1, FLASH},
    {F32, 16, 3, 17, 100, 5, 5, 1, 0, PACK, PACK, 0, 1, FLASH},     /* causal, Sq < Sk, odd B and H */
    {F32, 32, 1, 100, 17, 3, 3, 1, 0, PACK, PAD, 0, 1, FLASH},      /* causal, Sq > Sk: 83 rows masked */
    {F32, 32, 2, 1, 257, 3, 1, 0, 0, BHSD, PACK, 5, 1, FLASH},      /* Sq = 1, MQA */
    {F32, 64, 2, 257, 257, 6, 2, 0, 0, BHSD, BHSD, 0, 1, FLASH},    /* GQA, strided BHSD */
    {F32, 64, 1, 1, 257, 4, 1, 1, 0, PAD, PAD, 3, 1, FLASH},        /* Sq = 1 causal sees every key */
    {F32, 64, 1, 200, 1, 2, 2, 1, 0, PACK, PACK, 0, 1, FLASH},      /* Sk = 1 causal: only the last row */
    {F32, 64, 1, 128, 128, 2, 1, 1, 0, PACK, PACK, 0, 1, FLASH},    /* exact tile multiples */
    {F32, 80, 1, 33, 65, 2, 2, 0, 0.5f, PACK, PACK, 0, 1, FLASH},   /* large custom scale */
    {F32, 96, 3, 64, 64, 3, 3, 1, 0, PAD, PAD, 1, 1, FLASH},        /* padded, offsets */
    {F32, 128, 1, 128, 300, 6, 2, 1, 0, BHSD, PACK, 0, 0, FLASH},   /* lse = NULL */
    {F32, 128, 1, 300, 100, 2, 1, 1, 2.0f, PACK, BPAD, 7, 1, FLASH}, /* very peaked softmax, masked rows */
    {F32, 160, 1, 77, 45, 1, 1, 1, 0, PACK, PACK, 2, 1, FLASH},
    {F32, 192, 2, 50, 129, 3, 1, 0, 0.01f, BPAD, PACK, 0, 1, FLASH}, /* small scale: near-uniform */
    {F32, 224, 1, 31, 31, 2, 2, 1, 0, PAD, PAD, 0, 1, FLASH},
    {F32, 256, 1, 65, 130, 2, 1, 0, 0, BHSD, BHSD, 0, 1, FLASH},
    {F32, 256, 1, 1, 1, 1, 1, 1, 0, PACK, PACK, 0, 1, FLASH},
    /* f16 and bf16 at a few head dims */
    {F16, 64, 2, 100, 257, 6, 2, 1, 0, PACK, PACK, 0, 1, FLASH},
    {F16, 64, 1, 1, 33, 3, 3, 0, 0, BPAD, PAD, 1, 1, FLASH},
    {F16, 128, 1, 257, 100, 2, 2, 1, 0, PAD, PAD, 3, 1, FLASH},
    {BF16, 64, 1, 77, 77, 6, 3, 1, 0, BHSD, PACK, 0, 1, FLASH},
    {BF16, 256, 1, 33, 70, 2, 1, 1, 0, PACK, PAD, 1, 1, FLASH},
    /* 16-bit with 16-byte aligned rows (the Hopper kernel's TMA path on sm_90): every head-dim class, several
     * query and key tiles with tails, causal both ways, GQA, BHSD strides, an aligned offset */
    {BF16, 64, 2, 300, 300, 4, 2, 1, 0, PACK, PACK, 0, 1, FLASH},
    {F16, 64, 1, 1000, 700, 2, 2, 0, 0, PACK, PACK, 0, 1, FLASH},
    {F16, 72, 1, 130, 140, 2, 2, 0, 0, PACK, PACK, 0, 1, FLASH},
    {BF16, 96, 1, 200, 333, 2, 1, 1, 0, PACK, PACK, 8, 1, FLASH},
    {F16, 128, 2, 384, 384, 2, 2, 0, 0, PACK, PACK, 0, 1, FLASH},
    {BF16, 128, 1, 129, 700, 4, 1, 1, 0, BHSD, BHSD, 0, 1, FLASH},
    {F16, 128, 1, 500, 200, 2, 2, 1, 0, PACK, PACK, 0, 1, FLASH},
    {BF16, 128, 1, 1, 300, 4, 4, 0, 0, PACK, PACK, 0, 1, FLASH},
    {BF16, 192, 1, 150, 260, 2, 2, 0, 0, PACK, PACK, 0, 0, FLASH},
    {F16, 256, 1, 140, 300, 2, 1, 1, 0, PACK, PACK, 0, 1, FLASH},
    {BF16, 256, 2, 64, 81, 2, 2, 0, 0.3f, PACK, PACK, 0, 1, FLASH},
    /* the standard algorithm (scores in device memory): skipped where not built */
    {F32, 64, 1, 100, 257, 6, 2, 1, 0, PACK, PACK, 0, 1, STD},
    {F32, 64, 2, 65, 33, 2, 2, 1, 0, BHSD, PAD, 1, 1, STD},
    {F16, 64, 1, 100, 100, 2, 1, 0, 0, PACK, PACK, 0, 1, STD},
    {BF16, 64, 1, 17, 50, 2, 2, 1, 0, PACK, PACK, 0, 1, STD},
};

/* Under a small on-chip budget: few pairs, each a new compile. */
static const fwd_case reduced_cases[] = {
    {F32, 64, 2, 100, 257, 6, 2, 1, 0, PACK, PACK, 0, 1, FLASH},
    {F32, 64, 1, 257, 33, 3, 1, 1, 0, BHSD, PAD, 3, 1, FLASH},
    {F32, 128, 1, 130, 65, 2, 2, 0, 0, PACK, PACK, 0, 1, FLASH},
    {F32, 256, 1, 33, 70, 2, 1, 1, 0, PAD, PACK, 0, 1, FLASH},
    {F16, 64, 1, 65, 129, 4, 2, 1, 0, PACK, PACK, 0, 1, FLASH},
    {BF16, 128, 1, 40, 20, 2, 2, 1, 0, PACK, PACK, 1, 1, FLASH},
};

static const fwd_case *cases = full_cases;
static int n_cases = (int)(sizeof full_cases / sizeof full_cases[0]);

static const char *layout_name(th_layout l) {
  static const char *names[] = {"packed", "bhsd", "padded", "bhsd+padded"};
  return names[l];
}

/* Whether a backend may answer FA_ERROR_UNSUPPORTED for this valid case without failing it. */
static int may_be_unsupported(const fwd_case *c, fa_context *ctx) {
  fa_device_info info;
  fa_device_info_init(&info);
  if (c->algo == FA_ALGO_STANDARD) return 1; /* needs CLBlast / cuBLAS, optional in a build */
  /* DESIGN: every head dim up to 256 from 48 KiB up; a smaller budget may not fit the largest tiles. */
  return fa_context_info(ctx, &info) == FA_SUCCESS && info.local_mem_bytes < 49152;
}

/* After a successful call: o and lse against the reference, masked rows, nothing written elsewhere. */
static void check_outputs(const fwd_case *c, int bi, uint64_t seed, th_tensor *q, th_tensor *k, th_tensor *v,
                          th_tensor *o, th_tensor *lse) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  int o_outside_ok = 0, lse_outside_ok = 0;
  ck_assert_int_eq(th_tensor_download(o, &o_outside_ok), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(lse, &lse_outside_ok), FA_SUCCESS);

  ref_problem p = {c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->head_dim,
                   c->scale ? (double)c->scale : 1.0 / sqrt((double)c->head_dim), c->causal};
  double *ro = malloc(o->elems * sizeof(double)), *rl = malloc(lse->elems * sizeof(double));
  ck_assert(ro && rl);
  ck_assert_int_eq(ref_forward(&p, q->host, k->host, v->host, ro, rl), 0);
  double err = ref_rel_error(o->host, ro, o->elems), tol = th_tolerance(c->dtype);
  size_t nans = th_count_nan(o->host, o->elems);
  ck_assert_msg(nans == 0 && err <= tol, "%s: %s (seed %llu): o: relative error %.3g (bound %.0e), %zu NaN of %zu",
                th_case(), be, (unsigned long long)seed, err, tol, nans, o->elems);
  ck_assert_msg(o_outside_ok, "%s: %s: o: wrote outside the tensor (gaps, offset or past the end)", th_case(), be);

  /* Rows with every key masked: o exactly 0 (lse exactly -inf is part of the lse check below). */
  size_t masked_rows = 0;
  for (int64_t b = 0; b < p.batch; b++)
    for (int64_t i = 0; i < p.seqlen_q; i++) {
      if (ref_visible(&p, i, 0)) continue;
      masked_rows++;
      for (int64_t h = 0; h < p.heads_q; h++)
        for (int64_t d = 0; d < p.head_dim; d++) {
          double x = o->host[((b * p.seqlen_q + i) * p.heads_q + h) * p.head_dim + d];
          ck_assert_msg(x == 0.0, "%s: %s: masked row %lld head %lld: o = %g, want 0", th_case(), be,
                        (long long)i, (long long)h, x);
        }
    }
  if (c->lse) {
    double lerr = ref_max_abs_error_scaled(lse->host, rl, lse->elems);
    ck_assert_msg(lerr <= 1e-3, "%s: %s (seed %llu): lse: error %.3g (bound 1e-3 · max(1, |lse|)), "
                  "NaN or a wrong -inf counts as inf", th_case(), be, (unsigned long long)seed, lerr);
    ck_assert_msg(lse_outside_ok, "%s: %s: lse: wrote outside the tensor", th_case(), be);
  } else {
    ck_assert_msg(th_tensor_unchanged(lse) == 1, "%s: %s: lse buffer written though lse was NULL", th_case(), be);
  }
  ck_assert_msg(th_tensor_unchanged(q) == 1 && th_tensor_unchanged(k) == 1 && th_tensor_unchanged(v) == 1,
                "%s: %s: an input was modified", th_case(), be);
  if (masked_rows) th_diag("%s: %s: %zu fully masked rows checked", th_case(), be, masked_rows);
  fa_tiles tl;
  if (c->algo == FA_ALGO_FLASH && fa_context_tiles(ctx, c->head_dim, c->dtype, &tl) == FA_SUCCESS)
    th_diag("%s: %s: tiles Br=%d Bc=%d threads=%d local=%zu bytes", th_case(), be, tl.block_q, tl.block_k,
            tl.threads, tl.local_mem_bytes);
  free(ro);
  free(rl);
}

static void run_case(const fwd_case *c, int case_number, int bi) {
  fa_context *ctx = th_context(bi);
  const uint64_t seed = th_case_seed(case_number);
  const char *be = th_backend_label(bi);
  th_rng r;
  th_rng_init(&r, seed);

  const int64_t qshape[4] = {c->batch, c->seqlen_q, c->heads_q, c->head_dim};
  const int64_t kshape[4] = {c->batch, c->seqlen_k, c->heads_kv, c->head_dim};
  const int64_t lshape[4] = {c->batch, c->heads_q, c->seqlen_q, 1};
  th_tensor q, k, v, o, lse;
  int off = c->offset;
  /* Different offsets per tensor, so that mixing two tensors' offsets up reads the wrong elements. */
  ck_assert_int_eq(th_tensor_create(&q, ctx, c->dtype, qshape, c->in, off), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&k, ctx, c->dtype, kshape, c->in, off ? off + 3 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&v, ctx, c->dtype, kshape, c->in, off ? off + 6 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&o, ctx, c->dtype, qshape, c->out, off ? off + 1 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&lse, ctx, FA_F32, lshape, c->out, off ? off + 2 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&q, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&k, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&v, &r, 1.0), FA_SUCCESS);

  fa_attention_desc desc = {0};
  desc.algo = c->algo;
  desc.softmax_scale = c->scale;
  desc.causal = c->causal;
  fa_status st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, c->lse ? &lse.t : NULL);
  if (st == FA_ERROR_UNSUPPORTED && may_be_unsupported(c, ctx)) {
    th_unsupported(bi, fa_context_last_error(ctx));
    ck_assert_msg(th_tensor_unchanged(&o) == 1, "%s: %s: o written by a call that failed", th_case(), be);
  } else {
    ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_forward: %s: %s", th_case(), be, fa_status_string(st),
                  fa_context_last_error(ctx));
    st = fa_synchronize(ctx);
    ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_synchronize: %s: %s", th_case(), be, fa_status_string(st),
                  fa_context_last_error(ctx));
    check_outputs(c, bi, seed, &q, &k, &v, &o, &lse);
    th_ran(bi);
  }
  th_tensor_destroy(&q);
  th_tensor_destroy(&k);
  th_tensor_destroy(&v);
  th_tensor_destroy(&o);
  th_tensor_destroy(&lse);
}

START_TEST(t_forward) {
  const fwd_case *c = &cases[_i];
  char scale[32] = "";
  if (c->scale) snprintf(scale, sizeof scale, " scale=%g", (double)c->scale);
  th_case_begin("%s %s D=%d B=%d Sq=%d Sk=%d Hq=%d Hkv=%d%s%s in=%s out=%s%s%s",
                c->algo == FA_ALGO_STANDARD ? "standard" : "flash", fa_dtype_name(c->dtype), c->head_dim,
                c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->causal ? " causal" : "",
                scale, layout_name(c->in), layout_name(c->out), c->offset ? " offsets" : "",
                c->lse ? " lse" : " lse=NULL");
  for (int bi = 0; bi < th_backend_count(); bi++) run_case(c, _i, bi);
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("forward");
  TCase *tc = tcase_create("forward");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_forward, 0, n_cases);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--reduced") == 0) {
    cases = reduced_cases;
    n_cases = (int)(sizeof reduced_cases / sizeof reduced_cases[0]);
  }
  return th_main(make_suite(), 1);
}
