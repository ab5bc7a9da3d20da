/* Block-sparse attention (desc->block_mask) vs the float64 reference, forward and backward, on every backend
 * that answers.
 *
 * Each case: random q, k, v, dout; a uint8 block mask [B or 1, Hq or 1, ceil(Sq / bq), ceil(Sk / bk)] of one
 * kind (all ones, random at some density, with emptied block rows, all zeros, the butterfly and local+global
 * helpers' patterns) in some layout; the reference gets the mask expanded to scores (ref_expand_block_mask).
 *   forward: o within the dtype's bound, lse within 1e-3 · max(1, |ref|); rows that see no key (mask and
 *            causal together) have o exactly 0 and lse exactly -inf;
 *   backward: from the reference's o and lse (rounded as stored), so that a forward bug does not show up here
 *            too: dq, dk, dv within the bound; rows that see no key have dq exactly 0, and keys that no row
 *            sees have dk, dv exactly 0;
 *   outputs poisoned before each call and poison left outside them; inputs and the mask untouched.
 * An all-ones mask must give the dense call's bits (FULL tiles run the dense code): the same backend without
 * a mask, compared bit for bit (the backward with deterministic = 1 on both sides); should a backend differ
 * legitimately, the dtype's bound applies and a diagnostic says so.
 * Kernel variants are a compile each on PoCL: f32 at D = 32 and 64 mostly, one f16 and one bf16 case. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef enum mask_kind {
  ONES,         /* every block on: must equal dense */
  RANDOM,       /* each block on with probability `density` */
  EMPTY_ROWS,   /* RANDOM, then block row 1 off in every slice (and row 0 in the last): rows with no key */
  ZEROS,        /* every block off: o = 0, lse = -inf, zero gradients */
  BUTTERFLY,    /* fa_block_mask_butterfly */
  LOCAL_GLOBAL, /* fa_block_mask_local_global, window 1, global 1 */
} mask_kind;

typedef struct sparse_case {
  fa_dtype dtype;
  int head_dim, batch, seqlen_q, seqlen_k, heads_q, heads_kv;
  int causal;
  int block_q, block_k;
  mask_kind kind;
  double density;
  int bcast_batch, bcast_heads; /* the mask has size 1 there */
  th_layout mask_layout, in, out;
  int offset;
} sparse_case;

#define F32 FA_F32
#define F16 FA_F16
#define BF16 FA_BF16
#define PACK TH_PACKED
#define BHSD TH_BHSD
#define PAD TH_PADDED
#define BPAD TH_BHSD_PADDED

/* dtype, D, B, Sq, Sk, Hq, Hkv, causal, bq, bk, kind, density, bcast B, bcast H, mask layout, in, out, offset */
static const sparse_case cases[] = {
    {F32, 32, 2, 100, 77, 4, 2, 0, 24, 40, ONES, 1, 0, 0, PACK, PACK, PACK, 0},     /* blocks do not divide S */
    {F32, 64, 1, 130, 130, 2, 2, 1, 64, 64, ONES, 1, 1, 1, PAD, PACK, PACK, 0},     /* causal, broadcast */
    {F32, 32, 2, 100, 77, 4, 2, 0, 24, 40, RANDOM, 0.5, 0, 0, PAD, PACK, PACK, 0},  /* GQA, full mask, padded */
    {F32, 32, 1, 200, 300, 2, 2, 0, 16, 16, RANDOM, 0.15, 1, 0, BHSD, PACK, PACK, 0}, /* sparse, [1, H] */
    {F32, 32, 1, 40, 50, 2, 1, 0, 1, 1, RANDOM, 0.5, 1, 0, PACK, PACK, PAD, 0},     /* 1 x 1 blocks */
    {F32, 32, 2, 50, 70, 3, 3, 0, 128, 256, RANDOM, 0.5, 0, 0, PAD, BHSD, PACK, 0}, /* one block > S per head */
    {F32, 32, 1, 40, 50, 2, 2, 1, INT32_MAX, 3, RANDOM, 0.5, 1, 0, PACK, PACK, PACK, 0}, /* a huge block_q */
    {F32, 32, 2, 77, 100, 2, 1, 1, 8, 12, RANDOM, 0.5, 0, 1, BPAD, PACK, PACK, 0},  /* causal, [B, 1], MQA */
    {F32, 32, 1, 100, 60, 2, 2, 1, 32, 20, RANDOM, 0.6, 1, 1, BHSD, PACK, BPAD, 1}, /* causal Sq > Sk, [1, 1] */
    {F32, 32, 2, 64, 96, 2, 2, 0, 16, 32, EMPTY_ROWS, 0.5, 0, 0, PACK, BHSD, PAD, 3}, /* emptied rows, offsets */
    {F32, 32, 1, 33, 45, 2, 2, 0, 8, 8, ZEROS, 0, 1, 1, PACK, PACK, PACK, 0},
    {F32, 64, 1, 256, 256, 2, 1, 0, 32, 32, BUTTERFLY, 0, 1, 1, PACK, PACK, PACK, 0},
    {F32, 32, 1, 200, 200, 2, 2, 1, 16, 16, LOCAL_GLOBAL, 0, 1, 1, PAD, PACK, PACK, 0},
    {F16, 64, 1, 100, 130, 4, 2, 0, 32, 48, RANDOM, 0.5, 1, 0, PAD, PACK, PACK, 0},
    {BF16, 64, 2, 65, 65, 2, 2, 1, 24, 40, RANDOM, 0.4, 0, 1, BHSD, PACK, PACK, 0},
    /* Long rows of tiles for the GPU kernels' tile search and prefetch: aligned blocks (only skipped and full
     * tiles), unaligned ones (partial tiles) with causal, and the largest head dim. */
    {BF16, 128, 1, 1024, 1024, 2, 1, 0, 64, 64, RANDOM, 0.3, 0, 0, PACK, PACK, PACK, 0},
    {F16, 128, 1, 1024, 1024, 2, 2, 1, 48, 80, RANDOM, 0.3, 1, 0, PACK, PACK, PACK, 0},
    {F16, 256, 1, 300, 300, 2, 2, 0, 64, 64, RANDOM, 0.5, 1, 1, PACK, PACK, PACK, 0},
};
static const int n_cases = (int)(sizeof cases / sizeof cases[0]);

static const char *layout_name(th_layout l) {
  static const char *names[] = {"packed", "bhsd", "padded", "bhsd+padded"};
  return names[l];
}

static const char *kind_name(mask_kind k) {
  static const char *names[] = {"ones", "random", "emptied rows", "zeros", "butterfly", "local+global"};
  return names[k];
}

typedef struct operands {
  th_tensor q, k, v, o, lse, dout, dq, dk, dv, mask;
  int64_t mask_batch, mask_heads, rows, cols;
} operands;

/* The host mask, packed [mask_batch, mask_heads, rows, cols], per the case's kind. */
static void fill_mask(const sparse_case *c, const operands *t, th_rng *r, uint8_t *m) {
  const int64_t slice = t->rows * t->cols, slices = t->mask_batch * t->mask_heads;
  for (int64_t s = 0; s < slices; s++) {
    uint8_t *ms = m + s * slice;
    switch (c->kind) {
    case ONES: memset(ms, 1, (size_t)slice); break;
    case ZEROS: memset(ms, 0, (size_t)slice); break;
    case RANDOM:
    case EMPTY_ROWS:
      for (int64_t e = 0; e < slice; e++) ms[e] = th_rng_uniform(r) < c->density;
      if (c->kind == EMPTY_ROWS) {
        memset(ms + 1 * t->cols, 0, (size_t)t->cols);
        if (s == slices - 1) memset(ms, 0, (size_t)t->cols);
      }
      break;
    case BUTTERFLY: ck_assert_int_eq(fa_block_mask_butterfly(ms, t->rows, t->cols), FA_SUCCESS); break;
    case LOCAL_GLOBAL: ck_assert_int_eq(fa_block_mask_local_global(ms, t->rows, t->cols, 1, 1), FA_SUCCESS); break;
    }
  }
}

static void create_operands(const sparse_case *c, fa_context *ctx, operands *t) {
  const int64_t qshape[4] = {c->batch, c->seqlen_q, c->heads_q, c->head_dim};
  const int64_t kshape[4] = {c->batch, c->seqlen_k, c->heads_kv, c->head_dim};
  const int64_t lshape[4] = {c->batch, c->heads_q, c->seqlen_q, 1};
  t->mask_batch = c->bcast_batch ? 1 : c->batch;
  t->mask_heads = c->bcast_heads ? 1 : c->heads_q;
  t->rows = ((int64_t)c->seqlen_q + c->block_q - 1) / c->block_q;
  t->cols = ((int64_t)c->seqlen_k + c->block_k - 1) / c->block_k;
  const int64_t mshape[4] = {t->mask_batch, t->mask_heads, t->rows, t->cols};
  const int off = c->offset;
  ck_assert_int_eq(th_tensor_create(&t->q, ctx, c->dtype, qshape, c->in, off), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->k, ctx, c->dtype, kshape, c->in, off ? off + 1 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->v, ctx, c->dtype, kshape, c->in, off ? off + 2 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dout, ctx, c->dtype, qshape, c->in, off ? off + 3 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->o, ctx, c->dtype, qshape, c->out, off ? off + 4 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->lse, ctx, FA_F32, lshape, c->out, off ? off + 5 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dq, ctx, c->dtype, qshape, c->out, off ? off + 6 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dk, ctx, c->dtype, kshape, c->out, off ? off + 7 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dv, ctx, c->dtype, kshape, c->out, off ? off + 8 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->mask, ctx, FA_U8, mshape, c->mask_layout, off ? off + 9 : 0), FA_SUCCESS);
}

static void destroy_operands(operands *t) {
  th_tensor *all[] = {&t->q, &t->k, &t->v, &t->o, &t->lse, &t->dout, &t->dq, &t->dk, &t->dv, &t->mask};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) th_tensor_destroy(all[i]);
}

/* a (the masked call) against b (the same call without a mask): the same bits, or, should they differ, within
 * the bound with a diagnostic. lse-like arrays (with -inf) compare by ref_max_abs_error_scaled. */
static void same_as_dense(int bi, const char *what, const double *a, const double *b, size_t n, double tol, int is_lse) {
  if (memcmp(a, b, n * sizeof(double)) == 0) return;
  size_t diff = 0;
  for (size_t e = 0; e < n; e++) diff += memcmp(&a[e], &b[e], sizeof(double)) != 0;
  double err = is_lse ? ref_max_abs_error_scaled(a, b, n) : ref_rel_error(a, b, n);
  th_diag("%s: %s: all-ones mask vs dense: %s differs in %zu of %zu elements (error %.3g)", th_case(),
          th_backend_label(bi), what, diff, n, err);
  ck_assert_msg(err <= tol, "%s: %s: all-ones mask vs dense: %s differs in %zu of %zu elements, error %.3g > %.0e",
                th_case(), th_backend_label(bi), what, diff, n, err, tol);
}

static void check_call(int bi, const char *call, fa_status st) {
  fa_context *ctx = th_context(bi);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: %s: %s: %s", th_case(), th_backend_label(bi), call, fa_status_string(st),
                fa_context_last_error(ctx));
  st = fa_synchronize(ctx);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_synchronize after %s: %s: %s", th_case(), th_backend_label(bi), call,
                fa_status_string(st), fa_context_last_error(ctx));
}

static void check_inputs_untouched(int bi, operands *t) {
  ck_assert_msg(th_tensor_unchanged(&t->q) == 1 && th_tensor_unchanged(&t->k) == 1 &&
                    th_tensor_unchanged(&t->v) == 1 && th_tensor_unchanged(&t->dout) == 1,
                "%s: %s: an input (q, k, v or dout) was modified", th_case(), th_backend_label(bi));
  ck_assert_msg(th_tensor_unchanged(&t->mask) == 1, "%s: %s: the block mask was modified", th_case(),
                th_backend_label(bi));
}

static void forward(const sparse_case *c, int bi, uint64_t seed, const fa_attention_desc *desc, operands *t,
                    const ref_problem *p) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  check_call(bi, "fa_forward", fa_forward(ctx, desc, &t->q.t, &t->k.t, &t->v.t, &t->o.t, &t->lse.t));
  int o_ok = 0, l_ok = 0;
  ck_assert_int_eq(th_tensor_download(&t->o, &o_ok), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&t->lse, &l_ok), FA_SUCCESS);
  ck_assert_msg(o_ok && l_ok, "%s: %s: wrote outside o (%s) or lse (%s)", th_case(), be, o_ok ? "ok" : "written",
                l_ok ? "ok" : "written");

  double *ro = malloc(t->o.elems * sizeof(double)), *rl = malloc(t->lse.elems * sizeof(double));
  ck_assert(ro && rl);
  ck_assert_int_eq(ref_forward(p, t->q.host, t->k.host, t->v.host, ro, rl), 0);
  const double tol = th_tolerance(c->dtype);
  double err = ref_rel_error(t->o.host, ro, t->o.elems);
  size_t nans = th_count_nan(t->o.host, t->o.elems);
  ck_assert_msg(nans == 0 && err <= tol, "%s: %s (seed %llu): o: relative error %.3g (bound %.0e), %zu NaN", th_case(),
                be, (unsigned long long)seed, err, tol, nans);
  double lerr = ref_max_abs_error_scaled(t->lse.host, rl, t->lse.elems);
  ck_assert_msg(lerr <= 1e-3, "%s: %s (seed %llu): lse: error %.3g (bound 1e-3 · max(1, |lse|)); NaN or a wrong "
                "-inf counts as inf", th_case(), be, (unsigned long long)seed, lerr);
  size_t empty = 0;
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t h = 0; h < p->heads_q; h++)
      for (int64_t i = 0; i < p->seqlen_q; i++) {
        if (!ref_row_empty(p, b, h, i)) continue;
        empty++;
        ck_assert_msg(isinf(t->lse.host[(b * p->heads_q + h) * p->seqlen_q + i]) &&
                          t->lse.host[(b * p->heads_q + h) * p->seqlen_q + i] < 0,
                      "%s: %s: row %lld of b %lld h %lld sees no key: lse %g, want -inf", th_case(), be, (long long)i,
                      (long long)b, (long long)h, t->lse.host[(b * p->heads_q + h) * p->seqlen_q + i]);
        for (int64_t d = 0; d < p->head_dim; d++) {
          double x = t->o.host[((b * p->seqlen_q + i) * p->heads_q + h) * p->head_dim + d];
          ck_assert_msg(x == 0.0, "%s: %s: row %lld of b %lld h %lld sees no key: o = %g, want 0", th_case(), be,
                        (long long)i, (long long)b, (long long)h, x);
        }
      }
  th_diag("%s: %s: forward: o error %.2g, lse error %.2g, %zu rows with no key", th_case(), be, err, lerr, empty);

  if (c->kind == ONES) {
    /* The same call without the mask, into freshly poisoned outputs. */
    double *mo = malloc(t->o.elems * sizeof(double)), *ml = malloc(t->lse.elems * sizeof(double));
    ck_assert(mo && ml);
    memcpy(mo, t->o.host, t->o.elems * sizeof(double));
    memcpy(ml, t->lse.host, t->lse.elems * sizeof(double));
    ck_assert_int_eq(th_tensor_poison(&t->o), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_poison(&t->lse), FA_SUCCESS);
    fa_attention_desc dense = *desc;
    dense.block_mask = NULL, dense.block_q = 0, dense.block_k = 0;
    check_call(bi, "fa_forward (dense)", fa_forward(ctx, &dense, &t->q.t, &t->k.t, &t->v.t, &t->o.t, &t->lse.t));
    ck_assert_int_eq(th_tensor_download(&t->o, NULL), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_download(&t->lse, NULL), FA_SUCCESS);
    same_as_dense(bi, "o", mo, t->o.host, t->o.elems, tol, 0);
    same_as_dense(bi, "lse", ml, t->lse.host, t->lse.elems, 1e-3, 1);
    free(mo);
    free(ml);
  }
  check_inputs_untouched(bi, t);
  /* The backward's o and lse: the reference's, as the device stores them. */
  memcpy(t->o.host, ro, t->o.elems * sizeof(double));
  memcpy(t->lse.host, rl, t->lse.elems * sizeof(double));
  ck_assert_int_eq(th_tensor_upload(&t->o), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&t->lse), FA_SUCCESS);
  free(ro);
  free(rl);
}

static fa_status call_backward(fa_context *ctx, const fa_attention_desc *desc, operands *t) {
  return fa_backward(ctx, desc, &t->q.t, &t->k.t, &t->v.t, &t->o.t, &t->lse.t, &t->dout.t, &t->dq.t, &t->dk.t,
                     &t->dv.t);
}

static void backward(const sparse_case *c, int bi, uint64_t seed, const fa_attention_desc *desc, operands *t,
                     const ref_problem *p) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  check_call(bi, "fa_backward", call_backward(ctx, desc, t));
  int ok_q = 0, ok_k = 0, ok_v = 0;
  ck_assert_int_eq(th_tensor_download(&t->dq, &ok_q), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&t->dk, &ok_k), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&t->dv, &ok_v), FA_SUCCESS);
  ck_assert_msg(ok_q && ok_k && ok_v, "%s: %s: wrote outside dq (%s), dk (%s) or dv (%s)", th_case(), be,
                ok_q ? "ok" : "written", ok_k ? "ok" : "written", ok_v ? "ok" : "written");

  const size_t nq = t->dq.elems, nkv = t->dk.elems;
  double *rq = malloc(nq * sizeof(double)), *rk = malloc(nkv * sizeof(double)), *rv = malloc(nkv * sizeof(double));
  ck_assert(rq && rk && rv);
  ck_assert_int_eq(ref_backward(p, t->q.host, t->k.host, t->v.host, t->dout.host, rq, rk, rv), 0);
  const double tol = th_tolerance(c->dtype);
  double eq = ref_rel_error(t->dq.host, rq, nq), ek = ref_rel_error(t->dk.host, rk, nkv),
         ev = ref_rel_error(t->dv.host, rv, nkv);
  size_t nans = th_count_nan(t->dq.host, nq) + th_count_nan(t->dk.host, nkv) + th_count_nan(t->dv.host, nkv);
  ck_assert_msg(nans == 0 && eq <= tol && ek <= tol && ev <= tol,
                "%s: %s (seed %llu): backward: relative errors dq %.3g dk %.3g dv %.3g (bound %.0e), %zu NaN",
                th_case(), be, (unsigned long long)seed, eq, ek, ev, tol, nans);

  /* Rows that see no key: dq exactly 0. Keys that no row of any head of their group sees: dk, dv exactly 0. */
  const int64_t D = p->head_dim, group = p->heads_q / p->heads_kv;
  size_t unseen = 0;
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t h = 0; h < p->heads_q; h++)
      for (int64_t i = 0; i < p->seqlen_q; i++) {
        if (!ref_row_empty(p, b, h, i)) continue;
        for (int64_t d = 0; d < D; d++)
          ck_assert_msg(t->dq.host[((b * p->seqlen_q + i) * p->heads_q + h) * D + d] == 0.0,
                        "%s: %s: row %lld of b %lld h %lld sees no key: dq not 0", th_case(), be, (long long)i,
                        (long long)b, (long long)h);
      }
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t hk = 0; hk < p->heads_kv; hk++)
      for (int64_t j = 0; j < p->seqlen_k; j++) {
        int seen = 0;
        for (int64_t h = hk * group; h < (hk + 1) * group && !seen; h++)
          for (int64_t i = 0; i < p->seqlen_q && !seen; i++) seen = ref_visible_at(p, b, h, i, j);
        if (seen) continue;
        unseen++;
        for (int64_t d = 0; d < D; d++) {
          const size_t at = (size_t)(((b * p->seqlen_k + j) * p->heads_kv + hk) * D + d);
          ck_assert_msg(t->dk.host[at] == 0.0 && t->dv.host[at] == 0.0,
                        "%s: %s: key %lld of b %lld kv head %lld is seen by no row: dk %g dv %g, want 0", th_case(),
                        be, (long long)j, (long long)b, (long long)hk, t->dk.host[at], t->dv.host[at]);
        }
      }
  th_diag("%s: %s: backward: errors dq %.2g dk %.2g dv %.2g, %zu keys seen by no row", th_case(), be, eq, ek, ev,
          unseen);

  if (c->kind == ONES) {
    double *g[3] = {rq, rk, rv};
    th_tensor *gt[3] = {&t->dq, &t->dk, &t->dv};
    for (int x = 0; x < 3; x++) {
      memcpy(g[x], gt[x]->host, gt[x]->elems * sizeof(double));
      ck_assert_int_eq(th_tensor_poison(gt[x]), FA_SUCCESS);
    }
    fa_attention_desc dense = *desc;
    dense.block_mask = NULL, dense.block_q = 0, dense.block_k = 0;
    check_call(bi, "fa_backward (dense)", call_backward(ctx, &dense, t));
    static const char *names[3] = {"dq", "dk", "dv"};
    for (int x = 0; x < 3; x++) {
      ck_assert_int_eq(th_tensor_download(gt[x], NULL), FA_SUCCESS);
      same_as_dense(bi, names[x], g[x], gt[x]->host, gt[x]->elems, tol, 0);
    }
  }
  check_inputs_untouched(bi, t);
  ck_assert_msg(th_tensor_unchanged(&t->o) == 1 && th_tensor_unchanged(&t->lse) == 1,
                "%s: %s: the backward modified o or lse", th_case(), be);
  free(rq);
  free(rk);
  free(rv);
}

static void run_case(const sparse_case *c, int case_number, int bi) {
  fa_context *ctx = th_context(bi);
  const uint64_t seed = th_case_seed(case_number);
  th_rng r;
  th_rng_init(&r, seed);
  operands t;
  create_operands(c, ctx, &t);
  ck_assert_int_eq(th_tensor_fill_random(&t.q, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&t.k, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&t.v, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&t.dout, &r, 1.0), FA_SUCCESS);
  uint8_t *m = malloc(t.mask.elems);
  ck_assert_ptr_nonnull(m);
  fill_mask(c, &t, &r, m);
  for (size_t e = 0; e < t.mask.elems; e++) t.mask.host[e] = m[e];
  ck_assert_int_eq(th_tensor_upload(&t.mask), FA_SUCCESS);

  ref_problem p = {c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->head_dim,
                   1.0 / sqrt((double)c->head_dim), c->causal};
  uint8_t *keep = malloc(ref_score_elems(&p));
  ck_assert_ptr_nonnull(keep);
  ref_expand_block_mask(&p, m, t.mask_batch, t.mask_heads, c->block_q, c->block_k, keep);
  p.keep = keep;

  fa_attention_desc desc = {0};
  desc.causal = c->causal;
  desc.block_mask = &t.mask.t;
  desc.block_q = c->block_q;
  desc.block_k = c->block_k;
  /* ONES: bit-for-bit against dense. 16-bit: CUDA's deterministic dQ orders its additions by key block with
   * semaphores that the tiles a mask skips must still count (kernels/flash_bwd.cu): these cases cover that. */
  desc.deterministic = c->kind == ONES || c->dtype != FA_F32;
  forward(c, bi, seed, &desc, &t, &p);
  backward(c, bi, seed, &desc, &t, &p);
  th_ran(bi);
  free(keep);
  free(m);
  destroy_operands(&t);
}

START_TEST(t_sparse) {
  const sparse_case *c = &cases[_i];
  char density[32] = "";
  if (c->kind == RANDOM || c->kind == EMPTY_ROWS) snprintf(density, sizeof density, "(%g)", c->density);
  th_case_begin("sparse %s D=%d B=%d Sq=%d Sk=%d Hq=%d Hkv=%d%s blocks %dx%d mask %s%s [%s, %s] %s in=%s out=%s%s",
                fa_dtype_name(c->dtype), c->head_dim, c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv,
                c->causal ? " causal" : "", c->block_q, c->block_k, kind_name(c->kind), density,
                c->bcast_batch ? "1" : "B", c->bcast_heads ? "1" : "H", layout_name(c->mask_layout),
                layout_name(c->in), layout_name(c->out), c->offset ? " offsets" : "");
  for (int bi = 0; bi < th_backend_count(); bi++) run_case(c, _i, bi);
  th_finish_case();
}
END_TEST

/* The pattern helpers on the host: their definitions, symmetry, diagonal, and density formulas. */
START_TEST(t_butterfly_pattern) {
  th_case_begin("fa_block_mask_butterfly: definition, symmetry, diagonal, density (1 + log2 n) / n");
  static const int64_t sizes[][2] = {{1, 1}, {2, 2}, {8, 8}, {16, 16}, {64, 64}, {5, 7}, {12, 3}, {1, 9}};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    const int64_t R = sizes[s][0], C = sizes[s][1];
    uint8_t *m = malloc((size_t)(R * C) + 1);
    ck_assert_ptr_nonnull(m);
    m[R * C] = 0xa5; /* must stay: nothing written past rows x cols */
    ck_assert_int_eq(fa_block_mask_butterfly(m, R, C), FA_SUCCESS);
    ck_assert_int_eq(m[R * C], 0xa5);
    int64_t ones = 0;
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < C; j++) {
        const uint64_t x = (uint64_t)(i ^ j);
        ck_assert_msg(m[i * C + j] == ((x & (x - 1)) == 0), "%lldx%lld: block (%lld, %lld) is %d", (long long)R,
                      (long long)C, (long long)i, (long long)j, m[i * C + j]);
        if (i == j) ck_assert(m[i * C + j] == 1);
        if (R == C) ck_assert(m[i * C + j] == m[j * C + i]);
        ones += m[i * C + j];
      }
    if (R == C && (R & (R - 1)) == 0) { /* n = 2^k: every row holds itself and its k neighbours */
      int k = 0;
      while (((int64_t)1 << k) < R) k++;
      ck_assert_msg(ones == R * (1 + k), "%lldx%lld: %lld blocks on, want n (1 + log2 n) = %lld", (long long)R,
                    (long long)C, (long long)ones, (long long)(R * (1 + k)));
    }
    free(m);
  }
  th_ran(0);
  th_finish_case();
}
END_TEST

START_TEST(t_local_global_pattern) {
  th_case_begin("fa_block_mask_local_global: definition, symmetry, diagonal, count n^2 - (m-w-1)(m-w)");
  static const int64_t sizes[][4] = {/* rows, cols, window, global */
                                     {1, 1, 0, 0}, {8, 8, 0, 0}, {8, 8, 1, 0}, {16, 16, 2, 1}, {16, 16, 0, 3},
                                     {10, 10, 20, 0}, {6, 6, 1, 6}, {7, 12, 1, 2}, {12, 5, 0, 1}};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    const int64_t R = sizes[s][0], C = sizes[s][1], w = sizes[s][2], g = sizes[s][3];
    uint8_t *m = malloc((size_t)(R * C) + 1);
    ck_assert_ptr_nonnull(m);
    m[R * C] = 0xa5;
    ck_assert_int_eq(fa_block_mask_local_global(m, R, C, w, g), FA_SUCCESS);
    ck_assert_int_eq(m[R * C], 0xa5);
    int64_t ones = 0;
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < C; j++) {
        const int want = llabs(i - j) <= w || i < g || j < g;
        ck_assert_msg(m[i * C + j] == want, "%lldx%lld w %lld g %lld: block (%lld, %lld) is %d", (long long)R,
                      (long long)C, (long long)w, (long long)g, (long long)i, (long long)j, m[i * C + j]);
        if (i == j) ck_assert(m[i * C + j] == 1);
        if (R == C) ck_assert(m[i * C + j] == m[j * C + i]);
        ones += m[i * C + j];
      }
    if (R == C) { /* off: the (n-g) x (n-g) corner's pairs further than w apart, (m-w-1)(m-w) of them */
      const int64_t mm = R - g, off = mm - w - 1 > 0 ? (mm - w - 1) * (mm - w) : 0;
      ck_assert_msg(ones == R * R - off, "%lldx%lld w %lld g %lld: %lld blocks on, want %lld", (long long)R,
                    (long long)C, (long long)w, (long long)g, (long long)ones, (long long)(R * R - off));
    }
    free(m);
  }
  th_ran(0);
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("sparse");
  TCase *tc = tcase_create("sparse");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_test(tc, t_butterfly_pattern);
  tcase_add_test(tc, t_local_global_pattern);
  tcase_add_loop_test(tc, t_sparse, 0, n_cases);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return th_main(make_suite(), 1);
}
