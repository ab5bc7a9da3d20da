/* The decode kernels and the inference options (flashattn.h "Inference") vs the float64 reference, on every
 * backend that answers: KV-cache lengths (seqlens_k), paged K/V (block_table, pages in shuffled order, unused
 * pages left random), the sliding window, ALiBi, softcap, split-KV with the library's choice and forced
 * split counts; fa_combine on its own; and the argument checks, each with its sentence and nothing written.
 *
 * Each case: fresh random q, k, v (k and v as pages when paged: the reference reads the logical cache the
 * block table describes), random cache lengths with 0 and the full capacity among them, o and lse poisoned;
 * then o within the dtype's bound, lse within 1e-3 (exactly -inf on rows that see no key, where o must be 0),
 * nothing written outside o and lse, inputs untouched.
 *
 * FLASHATTN_DECODE_KERNEL=nv (suite decode-nv-emulate, and on an NVIDIA GPU): the OpenCL backend then runs
 * the tensor-core decode kernel or fails the call, so a case that passes has run it; the cases it cannot
 * serve (f32, D not a multiple of 16 or above 128, k or v rows off 16 bytes) are skipped on OpenCL, and the
 * varlen cases keep v packed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct dec_case {
  fa_dtype dtype;
  int head_dim, batch, seqlen_q, cap, heads_q, heads_kv;
  int causal;
  int lens;      /* 1: random seqlens_k (0 and cap among them) */
  int page_size; /* 0: contiguous cache */
  int window, wl, wr;
  int alibi;     /* 0 none, 1 [1, Hq], 2 [B, Hq] */
  float softcap;
  int splits;    /* desc->num_splits */
  th_layout in;
} dec_case;

#define F32 FA_F32
#define F16 FA_F16
#define BF16 FA_BF16
#define PACK TH_PACKED
#define PAD TH_PADDED
#define BHSD TH_BHSD

/* dtype, D, B, Sq, cap, Hq, Hkv, causal, lens, page, window, wl, wr, alibi, softcap, splits, layout */
static const dec_case cases[] = {
    /* plain decode through the library's split choice, and forced splits */
    {F32, 64, 2, 1, 300, 8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, PACK},
    {F32, 128, 1, 1, 1000, 4, 1, 1, 0, 0, 0, 0, 0, 0, 0, 7, PACK},
    {F16, 128, 3, 4, 257, 8, 2, 1, 0, 0, 0, 0, 0, 0, 0, 3, BHSD},
    {BF16, 64, 2, 2, 130, 6, 3, 0, 0, 0, 0, 0, 0, 0, 0, 2, PAD},
    /* KV-cache lengths, contiguous and paged (page sizes 16, 32, 48) */
    {F32, 64, 5, 1, 200, 4, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, PACK},
    {F16, 128, 4, 3, 256, 8, 2, 1, 1, 16, 0, 0, 0, 0, 0, 4, PACK},
    {BF16, 96, 3, 1, 288, 4, 4, 0, 1, 48, 0, 0, 0, 0, 0, 0, PACK},
    {F32, 32, 2, 5, 160, 2, 1, 1, 0, 32, 0, 0, 0, 0, 0, 1, PAD},
    /* sliding window, ALiBi, softcap, alone and together, through splits and pages */
    {F32, 64, 2, 1, 500, 4, 2, 1, 1, 0, 1, 100, 0, 0, 0, 5, PACK},
    {F32, 64, 1, 40, 120, 2, 1, 1, 0, 0, 1, 17, -1, 0, 0, 0, PACK}, /* longer query: row blocks */
    {F32, 64, 2, 8, 64, 2, 2, 0, 0, 0, 1, 5, 3, 0, 0, 0, PACK},     /* two-sided window, not causal */
    {F16, 128, 2, 1, 384, 8, 2, 1, 1, 32, 0, 0, 0, 1, 0, 3, PACK},
    {F32, 80, 2, 2, 100, 4, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, PACK},
    {BF16, 128, 2, 1, 300, 4, 2, 1, 1, 0, 0, 0, 0, 0, 30.0f, 4, PACK},
    {F32, 64, 3, 2, 192, 4, 2, 1, 1, 16, 1, 60, -1, 2, 5.0f, 3, BHSD},
    {F32, 256, 1, 1, 90, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, PACK},
    /* the CUDA kernel's lane layouts: 9 pieces a row (idle lanes), 2 pieces, 2 pieces per lane; wide groups */
    {F16, 72, 2, 1, 333, 4, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, PACK},
    {F16, 16, 1, 2, 100, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, PACK},
    {F32, 256, 1, 3, 100, 4, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, PAD},
    {BF16, 128, 1, 1, 64, 32, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, PACK}, /* 32 heads share one K/V head */
    {F32, 64, 1, 16, 100, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, PACK},  /* MHA, 16 query rows */
    /* the CUDA tensor-core kernel: 16 rows (Sq 4 x 4 heads) in one block, D 256 and 80, 3 row blocks with
     * the last one partial, pages of 16 and 48, a window starting off a 16-key chunk, many chunks per warp */
    {F16, 128, 3, 4, 700, 8, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, PACK},
    {BF16, 256, 2, 1, 496, 4, 1, 0, 1, 16, 0, 0, 0, 0, 0, 3, PACK},
    {F16, 64, 1, 9, 300, 4, 1, 1, 0, 0, 1, 37, -1, 1, 0, 0, BHSD},
    {F16, 80, 2, 2, 1488, 6, 2, 0, 1, 48, 0, 0, 0, 0, 20.0f, 0, PACK},
    {BF16, 128, 2, 1, 4000, 8, 2, 1, 1, 0, 0, 0, 0, 0, 0, 1, PACK},
};
static const int n_cases = (int)(sizeof cases / sizeof cases[0]);

static const char *layout_name(th_layout l) {
  static const char *names[] = {"packed", "bhsd", "padded", "bhsd+padded"};
  return names[l];
}

/* Whether the OpenCL backend must run the tensor-core decode kernel (FLASHATTN_DECODE_KERNEL=nv), and whether
 * that kernel serves a case: 16-bit, D a multiple of 16 up to 128, k and v rows on 16 bytes (the padded
 * layouts put a head's rows one element apart, and v five elements in). */
static int nv_only(int bi) {
  const char *e = getenv("FLASHATTN_DECODE_KERNEL");
  return e && strcmp(e, "nv") == 0 && th_backend_kind(bi) == FA_BACKEND_OPENCL;
}

static int nv_serves(const dec_case *c) {
  return c->dtype != F32 && c->head_dim % 16 == 0 && c->head_dim <= 128 && (c->in == PACK || c->in == BHSD);
}

/* Everything one case builds. */
typedef struct dec_run {
  th_tensor q, k, v, o, lse;
  th_small lens, table, alibi;
  int32_t *lens_host, *table_host;
  int64_t *lens64;
  float *alibi_host;
  double *alibi64, *k_log, *v_log; /* the logical cache [B, cap, Hkv, D] */
  int64_t max_pages, num_pages;
} dec_run;

/* Random lengths in 0 .. cap with the extremes among them. */
static void make_lengths(const dec_case *c, th_rng *r, dec_run *d) {
  d->lens_host = malloc(sizeof(int32_t) * (size_t)c->batch);
  d->lens64 = malloc(sizeof(int64_t) * (size_t)c->batch);
  for (int b = 0; b < c->batch; b++) {
    int32_t len = (int32_t)(th_rng_uniform(r) * (c->cap + 1));
    if (b == 0) len = c->cap;
    if (b == 1) len = c->batch > 2 ? 0 : 1;
    d->lens_host[b] = len > c->cap ? c->cap : len;
    d->lens64[b] = d->lens_host[b];
  }
}

/* Pages in shuffled order, a few spare ones, and the logical cache the table describes. */
static void make_pages(const dec_case *c, th_rng *r, dec_run *d) {
  const int ps = c->page_size;
  d->max_pages = c->cap / ps;
  d->num_pages = c->batch * d->max_pages + 3;
  int32_t *perm = malloc(sizeof(int32_t) * (size_t)d->num_pages);
  for (int64_t x = 0; x < d->num_pages; x++) perm[x] = (int32_t)x;
  for (int64_t x = d->num_pages - 1; x > 0; x--) {
    const int64_t y = (int64_t)(th_rng_uniform(r) * (double)(x + 1));
    const int32_t t = perm[x];
    perm[x] = perm[y];
    perm[y] = t;
  }
  d->table_host = malloc(sizeof(int32_t) * (size_t)c->batch * (size_t)d->max_pages);
  for (int64_t x = 0; x < c->batch * d->max_pages; x++) d->table_host[x] = perm[x];
  free(perm);
}

static void logical_cache(const dec_case *c, dec_run *d) {
  const int64_t D = c->head_dim, H = c->heads_kv, n = (int64_t)c->batch * c->cap * H * D;
  d->k_log = malloc(sizeof(double) * (size_t)n);
  d->v_log = malloc(sizeof(double) * (size_t)n);
  for (int64_t b = 0; b < c->batch; b++)
    for (int64_t j = 0; j < c->cap; j++) {
      const int64_t src_row = c->page_size ? d->table_host[b * d->max_pages + j / c->page_size] * (int64_t)c->page_size +
                                                 j % c->page_size
                                           : b * c->cap + j;
      memcpy(d->k_log + (b * c->cap + j) * H * D, d->k.host + src_row * H * D, sizeof(double) * (size_t)(H * D));
      memcpy(d->v_log + (b * c->cap + j) * H * D, d->v.host + src_row * H * D, sizeof(double) * (size_t)(H * D));
    }
}

static void check_outputs(const dec_case *c, int bi, uint64_t seed, dec_run *d) {
  const char *be = th_backend_label(bi);
  int o_ok = 0, l_ok = 0;
  ck_assert_int_eq(th_tensor_download(&d->o, &o_ok), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&d->lse, &l_ok), FA_SUCCESS);
  ref_problem p = {c->batch, c->seqlen_q, c->cap, c->heads_q, c->heads_kv, c->head_dim,
                   1.0 / sqrt((double)c->head_dim), c->causal};
  p.seqlens_k = c->lens ? d->lens64 : NULL;
  p.window = c->window, p.window_left = c->wl, p.window_right = c->wr;
  p.alibi = c->alibi ? d->alibi64 : NULL;
  p.alibi_batch = c->alibi == 2 ? c->batch : 1;
  p.softcap = c->softcap;
  double *ro = malloc(d->o.elems * sizeof(double)), *rl = malloc(d->lse.elems * sizeof(double));
  ck_assert(ro && rl);
  ck_assert_int_eq(ref_forward(&p, d->q.host, d->k_log, d->v_log, ro, rl), 0);
  const double err = ref_rel_error(d->o.host, ro, d->o.elems), tol = th_tolerance(c->dtype);
  const size_t nans = th_count_nan(d->o.host, d->o.elems);
  ck_assert_msg(nans == 0 && err <= tol, "%s: %s (seed %llu): o: relative error %.3g (bound %.0e), %zu NaN",
                th_case(), be, (unsigned long long)seed, err, tol, nans);
  const double lerr = ref_max_abs_error_scaled(d->lse.host, rl, d->lse.elems);
  ck_assert_msg(lerr <= 1e-3, "%s: %s (seed %llu): lse: error %.3g (bound 1e-3), a wrong -inf counts as inf",
                th_case(), be, (unsigned long long)seed, lerr);
  size_t empty = 0;
  for (int64_t b = 0; b < p.batch; b++)
    for (int64_t h = 0; h < p.heads_q; h++)
      for (int64_t i = 0; i < p.seqlen_q; i++) {
        if (!ref_row_empty(&p, b, h, i)) continue;
        empty++;
        for (int64_t x = 0; x < p.head_dim; x++) {
          const double o = d->o.host[((b * p.seqlen_q + i) * p.heads_q + h) * p.head_dim + x];
          ck_assert_msg(o == 0.0, "%s: %s: row (%lld, %lld, %lld) sees no key: o = %g, want 0", th_case(), be,
                        (long long)b, (long long)i, (long long)h, o);
        }
      }
  ck_assert_msg(o_ok && l_ok, "%s: %s: wrote outside o or lse", th_case(), be);
  ck_assert_msg(th_tensor_unchanged(&d->q) == 1 && th_tensor_unchanged(&d->k) == 1 && th_tensor_unchanged(&d->v) == 1,
                "%s: %s: an input was modified", th_case(), be);
  if (empty) th_diag("%s: %s: %zu rows without keys checked", th_case(), be, empty);
  free(ro);
  free(rl);
}

static void run_case(const dec_case *c, int case_number, int bi) {
  if (nv_only(bi) && !nv_serves(c)) {
    th_unsupported(bi, "FLASHATTN_DECODE_KERNEL=nv: not a case of the tensor-core decode kernel");
    return;
  }
  fa_context *ctx = th_context(bi);
  const uint64_t seed = th_case_seed(case_number);
  th_rng r;
  th_rng_init(&r, seed);
  dec_run d;
  memset(&d, 0, sizeof d);
  if (c->page_size) make_pages(c, &r, &d);
  const int64_t qshape[4] = {c->batch, c->seqlen_q, c->heads_q, c->head_dim};
  const int64_t kshape[4] = {c->page_size ? d.num_pages : c->batch, c->page_size ? c->page_size : c->cap,
                             c->heads_kv, c->head_dim};
  const int64_t lshape[4] = {c->batch, c->heads_q, c->seqlen_q, 1};
  ck_assert_int_eq(th_tensor_create(&d.q, ctx, c->dtype, qshape, c->in, 1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&d.k, ctx, c->dtype, kshape, c->in, 0), FA_SUCCESS);
  /* v misaligned (element loads) in the padded layout only: the others keep 16-byte rows (vector loads). */
  ck_assert_int_eq(th_tensor_create(&d.v, ctx, c->dtype, kshape, c->in, c->in == PAD ? 5 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&d.o, ctx, c->dtype, qshape, c->in, 2), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&d.lse, ctx, FA_F32, lshape, PACK, 3), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&d.q, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&d.k, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&d.v, &r, 1.0), FA_SUCCESS);
  logical_cache(c, &d);

  fa_attention_desc desc;
  fa_attention_desc_init(&desc);
  desc.causal = c->causal;
  desc.num_splits = c->splits;
  desc.window = c->window, desc.window_left = c->wl, desc.window_right = c->wr;
  desc.softcap = c->softcap;
  if (c->lens) {
    make_lengths(c, &r, &d);
    th_small_create(&d.lens, ctx, FA_I32, d.lens_host, c->batch, 1);
    desc.seqlens_k = &d.lens.t;
  }
  if (c->page_size) {
    th_small_create(&d.table, ctx, FA_I32, d.table_host, c->batch, d.max_pages);
    desc.block_table = &d.table.t;
  }
  if (c->alibi) {
    const int64_t ab = c->alibi == 2 ? c->batch : 1, n = ab * c->heads_q;
    d.alibi_host = malloc(sizeof(float) * (size_t)n);
    d.alibi64 = malloc(sizeof(double) * (size_t)n);
    for (int64_t x = 0; x < n; x++) d.alibi64[x] = d.alibi_host[x] = (float)(0.02 + 0.3 * th_rng_uniform(&r));
    th_small_create(&d.alibi, ctx, FA_F32, d.alibi_host, ab, c->heads_q);
    desc.alibi_slopes = &d.alibi.t;
  }
  fa_status st = fa_forward(ctx, &desc, &d.q.t, &d.k.t, &d.v.t, &d.o.t, &d.lse.t);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_forward: %s: %s", th_case(), th_backend_label(bi), fa_status_string(st),
                fa_context_last_error(ctx));
  ck_assert_int_eq(fa_synchronize(ctx), FA_SUCCESS);
  check_outputs(c, bi, seed, &d);
  th_ran(bi);
  th_tensor_destroy(&d.q);
  th_tensor_destroy(&d.k);
  th_tensor_destroy(&d.v);
  th_tensor_destroy(&d.o);
  th_tensor_destroy(&d.lse);
  fa_buffer_destroy(d.lens.buf);
  fa_buffer_destroy(d.table.buf);
  fa_buffer_destroy(d.alibi.buf);
  free(d.lens_host);
  free(d.lens64);
  free(d.table_host);
  free(d.alibi_host);
  free(d.alibi64);
  free(d.k_log);
  free(d.v_log);
}

START_TEST(t_decode) {
  const dec_case *c = &cases[_i];
  th_case_begin("decode %s D=%d B=%d Sq=%d cap=%d Hq=%d Hkv=%d%s%s%s page=%d window=%s%d,%d alibi=%d softcap=%g "
                "splits=%d %s",
                fa_dtype_name(c->dtype), c->head_dim, c->batch, c->seqlen_q, c->cap, c->heads_q, c->heads_kv,
                c->causal ? " causal" : "", c->lens ? " seqlens_k" : "", "", c->page_size, c->window ? "" : "off ",
                c->wl, c->wr, c->alibi, (double)c->softcap, c->splits, layout_name(c->in));
  for (int bi = 0; bi < th_backend_count(); bi++) run_case(c, _i, bi);
  th_finish_case();
}
END_TEST

/* ---- fa_combine on its own ---- */

/* Parts as one buffer [P][B, S, H, D] of `pdt`, with some rows' lse -inf in some parts (all parts, for one row). */
static void combine_case(int bi, fa_dtype pdt, fa_dtype odt, int parts) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  th_rng r;
  th_rng_init(&r, th_case_seed(1000 + parts));
  const int64_t B = 2, S = 3, H = 5, D = 64, rows = B * S * H;
  const int64_t ps[4] = {parts * B, S, H, D}, ls[4] = {parts * B, H, S, 1};
  const int64_t os[4] = {B, S, H, D}, lo[4] = {B, H, S, 1};
  th_tensor op, lp, o, lse;
  ck_assert_int_eq(th_tensor_create(&op, ctx, pdt, ps, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&lp, ctx, FA_F32, ls, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&o, ctx, odt, os, PAD, 1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&lse, ctx, FA_F32, lo, PACK, 2), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&op, &r, 1.0), FA_SUCCESS);
  for (size_t x = 0; x < lp.elems; x++) {
    const size_t row = x % (size_t)rows;
    lp.host[x] = row == 4 || th_rng_uniform(&r) < 0.15 ? -INFINITY : th_round_to(FA_F32, 5.0 * th_rng_normal(&r));
  }
  ck_assert_int_eq(th_tensor_upload(&lp), FA_SUCCESS);
  fa_tensor op0 = op.t, lp0 = lp.t;
  op0.shape[0] = B, lp0.shape[0] = B;
  fa_status st = fa_combine(ctx, parts, &op0, B * S * H * D, &lp0, B * H * S, &o.t, &lse.t);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_combine: %s", th_case(), be, fa_context_last_error(ctx));
  int ok1, ok2;
  ck_assert_int_eq(th_tensor_download(&o, &ok1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&lse, &ok2), FA_SUCCESS);
  ck_assert_msg(ok1 && ok2, "%s: %s: wrote outside o or lse", th_case(), be);
  double *ro = calloc((size_t)(rows * D), sizeof(double)), *rl = malloc(sizeof(double) * (size_t)rows);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < S; i++) {
        const int64_t lrow = (b * H + h) * S + i, orow = ((b * S + i) * H + h) * D;
        double mx = -INFINITY, sum = 0;
        for (int p = 0; p < parts; p++) mx = fmax(mx, lp.host[p * rows + lrow]);
        for (int p = 0; p < parts && mx > -INFINITY; p++) sum += exp(lp.host[p * rows + lrow] - mx);
        rl[lrow] = mx > -INFINITY ? mx + log(sum) : -INFINITY;
        for (int p = 0; p < parts && mx > -INFINITY; p++) {
          const double w = exp(lp.host[p * rows + lrow] - rl[lrow]);
          for (int64_t x = 0; x < D; x++) ro[orow + x] += w * op.host[p * rows * D + orow + x];
        }
      }
  const double err = ref_rel_error(o.host, ro, (size_t)(rows * D));
  const double tol = fmax(th_tolerance(pdt), th_tolerance(odt));
  ck_assert_msg(err <= tol, "%s: %s: o: relative error %.3g (bound %.0e)", th_case(), be, err, tol);
  ck_assert_msg(ref_max_abs_error_scaled(lse.host, rl, (size_t)rows) <= 1e-5, "%s: %s: lse differs", th_case(), be);
  free(ro);
  free(rl);
  th_tensor_destroy(&op);
  th_tensor_destroy(&lp);
  th_tensor_destroy(&o);
  th_tensor_destroy(&lse);
  th_ran(bi);
}

START_TEST(t_combine) {
  static const struct {
    fa_dtype p, o;
    int parts;
  } cc[] = {{F32, F32, 1}, {F32, F16, 5}, {F16, BF16, 3}, {BF16, F32, 16}};
  th_case_begin("combine parts=%d %s -> %s", cc[_i].parts, fa_dtype_name(cc[_i].p), fa_dtype_name(cc[_i].o));
  for (int bi = 0; bi < th_backend_count(); bi++) combine_case(bi, cc[_i].p, cc[_i].o, cc[_i].parts);
  th_finish_case();
}
END_TEST

/* ---- varlen: sequences packed along one token axis, each against the reference on its own ---- */

static void varlen_case(int bi, fa_dtype dt, int causal, int window, int alibi, int splits, const int *sq, const int *sk,
                        int nseq) {
  if (nv_only(bi) && dt == F32) {
    th_unsupported(bi, "FLASHATTN_DECODE_KERNEL=nv: f32 is not a case of the tensor-core decode kernel");
    return;
  }
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  th_rng r;
  th_rng_init(&r, th_case_seed(4000 + nseq * 10 + causal));
  const int64_t D = 64, Hq = 4, Hkv = 2;
  int32_t cq[8] = {0}, ck[8] = {0};
  for (int b = 0; b < nseq; b++) cq[b + 1] = cq[b] + sq[b], ck[b + 1] = ck[b] + sk[b];
  const int64_t qshape[4] = {1, cq[nseq], Hq, D}, kshape[4] = {1, ck[nseq], Hkv, D}, lshape[4] = {1, Hq, cq[nseq], 1};
  th_tensor q, k, v, o, lse;
  ck_assert_int_eq(th_tensor_create(&q, ctx, dt, qshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&k, ctx, dt, kshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&v, ctx, dt, kshape, nv_only(bi) ? PACK : PAD, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&o, ctx, dt, qshape, PACK, 3), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&lse, ctx, FA_F32, lshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&q, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&k, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&v, &r, 1.0), FA_SUCCESS);
  th_small tq, tk, ta;
  th_small_create(&tq, ctx, FA_I32, cq, nseq + 1, 1);
  th_small_create(&tk, ctx, FA_I32, ck, nseq + 1, 1);
  float slopes[8 * 4];
  double slopes64[8 * 4];
  for (int x = 0; x < nseq * Hq; x++) slopes64[x] = slopes[x] = (float)(0.05 + 0.2 * th_rng_uniform(&r));
  th_small_create(&ta, ctx, FA_F32, slopes, nseq, Hq);
  fa_attention_desc desc;
  fa_attention_desc_init(&desc);
  desc.cu_seqlens_q = &tq.t, desc.cu_seqlens_k = &tk.t;
  desc.causal = causal, desc.num_splits = splits;
  if (window) desc.window = 1, desc.window_left = window, desc.window_right = causal ? 0 : window;
  if (alibi) desc.alibi_slopes = &ta.t;
  fa_status st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lse.t);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_forward: %s", th_case(), be, fa_context_last_error(ctx));
  int ok1, ok2;
  ck_assert_int_eq(th_tensor_download(&o, &ok1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&lse, &ok2), FA_SUCCESS);
  ck_assert_msg(ok1 && ok2, "%s: %s: wrote outside o or lse", th_case(), be);
  double *ro = malloc(sizeof(double) * o.elems), *rl = malloc(sizeof(double) * lse.elems);
  double *sl = malloc(sizeof(double) * (size_t)(Hq * cq[nseq] + 1));
  for (int b = 0; b < nseq; b++) {
    ref_problem rp = {1, sq[b], sk[b], Hq, Hkv, D, 1.0 / sqrt((double)D), causal};
    rp.window = window != 0, rp.window_left = window, rp.window_right = causal ? 0 : window;
    rp.alibi = alibi ? slopes64 + b * Hq : NULL, rp.alibi_batch = 1;
    ck_assert_int_eq(ref_forward(&rp, q.host + cq[b] * Hq * D, k.host + ck[b] * Hkv * D, v.host + ck[b] * Hkv * D,
                                 ro + cq[b] * Hq * D, sl), 0);
    for (int64_t h = 0; h < Hq; h++)
      for (int i = 0; i < sq[b]; i++) rl[h * cq[nseq] + cq[b] + i] = sl[h * sq[b] + i];
  }
  const double err = ref_rel_error(o.host, ro, o.elems), tol = th_tolerance(dt);
  ck_assert_msg(err <= tol, "%s: %s: o: relative error %.3g (bound %.0e)", th_case(), be, err, tol);
  ck_assert_msg(ref_max_abs_error_scaled(lse.host, rl, lse.elems) <= 1e-3, "%s: %s: lse differs", th_case(), be);
  free(ro);
  free(rl);
  free(sl);
  th_tensor_destroy(&q);
  th_tensor_destroy(&k);
  th_tensor_destroy(&v);
  th_tensor_destroy(&o);
  th_tensor_destroy(&lse);
  fa_buffer_destroy(tq.buf);
  fa_buffer_destroy(tk.buf);
  fa_buffer_destroy(ta.buf);
  th_ran(bi);
}

/* Bad offsets and shapes: a status, a sentence naming the argument, nothing written. */
static void varlen_bad(int bi) {
  fa_context *ctx = th_context(bi);
  th_rng r;
  th_rng_init(&r, th_case_seed(4999));
  const int64_t qshape[4] = {1, 10, 2, 64}, kshape[4] = {1, 20, 2, 64};
  th_tensor q, k, v, o;
  ck_assert_int_eq(th_tensor_create(&q, ctx, F32, qshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&k, ctx, F32, kshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&v, ctx, F32, kshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&o, ctx, F32, qshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&q, &r, 1.0), FA_SUCCESS);
  static const struct {
    int32_t cq[3], ck[3];
    int64_t max_q, max_k;
    int only_q;
    const char *what;
  } bad[] = {{{0, 6, 4}, {0, 5, 20}, 0, 0, 0, "cu_seqlens_q: offset 2 is 4"},
             {{0, 6, 10}, {0, 5, 21}, 0, 0, 0, "cu_seqlens_k: offset 2 is 21"},
             {{0, 6, 10}, {0, 5, 20}, 3, 0, 0, "max_seqlen_q: 3, below"},
             {{0, 6, 10}, {0, 5, 20}, 0, 14, 0, "max_seqlen_k: 14, below the longest key sequence (15)"},
             {{0, 6, 10}, {0, 5, 20}, 0, 21, 0, "max_seqlen_k: 21, outside 0 .. k's 20 tokens"},
             {{0, 6, 10}, {0, 5, 20}, 0, -1, 0, "max_seqlen_k: -1, outside"},
             {{0, 6, 10}, {0, 5, 20}, 0, 0, 1, "cu_seqlens_k: NULL"}};
  for (size_t x = 0; x < sizeof bad / sizeof bad[0]; x++) {
    th_small tq, tk;
    th_small_create(&tq, ctx, FA_I32, bad[x].cq, 3, 1);
    th_small_create(&tk, ctx, FA_I32, bad[x].ck, 3, 1);
    fa_attention_desc desc;
    fa_attention_desc_init(&desc);
    desc.cu_seqlens_q = &tq.t;
    desc.cu_seqlens_k = bad[x].only_q ? NULL : &tk.t;
    desc.max_seqlen_q = bad[x].max_q;
    desc.max_seqlen_k = bad[x].max_k;
    const fa_status st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, NULL);
    const char *msg = fa_context_last_error(ctx);
    ck_assert_msg(st == FA_ERROR_INVALID_ARGUMENT && strstr(msg, bad[x].what), "%s: %s: got %s \"%s\", want \"%s\"",
                  th_case(), th_backend_label(bi), fa_status_string(st), msg, bad[x].what);
    ck_assert_msg(th_tensor_unchanged(&o) == 1, "%s: %s: a refused call wrote o", th_case(), th_backend_label(bi));
    th_diag("%s: %s: \"%s\"", th_case(), th_backend_label(bi), msg);
    fa_buffer_destroy(tq.buf);
    fa_buffer_destroy(tk.buf);
  }
  th_tensor_destroy(&q);
  th_tensor_destroy(&k);
  th_tensor_destroy(&v);
  th_tensor_destroy(&o);
  th_ran(bi);
}

START_TEST(t_varlen) {
  /* a decode batch, a mixed batch (prefill chunks beside decodes, an empty sequence), a prefill batch */
  static const int sq0[] = {1, 1, 1, 1}, sk0[] = {100, 7, 300, 64};
  static const int sq1[] = {5, 1, 0, 37, 2}, sk1[] = {40, 90, 10, 37, 1};
  static const int sq2[] = {70, 33}, sk2[] = {70, 80};
  th_case_begin("varlen case %d", _i);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    if (_i == 0) varlen_case(bi, F16, 1, 0, 0, 3, sq0, sk0, 4);
    if (_i == 1) varlen_case(bi, F32, 1, 0, 1, 0, sq1, sk1, 5);
    if (_i == 2) varlen_case(bi, BF16, 1, 20, 0, 2, sq2, sk2, 2);
    if (_i == 3) varlen_case(bi, F32, 0, 9, 1, 0, sq1, sk1, 5);
    if (_i == 4) varlen_bad(bi);
  }
  th_finish_case();
}
END_TEST

/* ---- fa_kv_append: the new rows land where seqlens_k and the block table say, nothing else changes ---- */

static void append_case(int bi, fa_dtype dt, int page_size, int s_new) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  th_rng r;
  th_rng_init(&r, th_case_seed(3000 + page_size + s_new));
  const dec_case c = {dt, 64, 3, 1, 96, 2, 2, 0, 0, page_size};
  dec_run d;
  memset(&d, 0, sizeof d);
  if (page_size) make_pages(&c, &r, &d);
  const int64_t kshape[4] = {page_size ? d.num_pages : c.batch, page_size ? page_size : c.cap, c.heads_kv, c.head_dim};
  const int64_t nshape[4] = {c.batch, s_new, c.heads_kv, c.head_dim};
  th_tensor kn, vn;
  ck_assert_int_eq(th_tensor_create(&d.k, ctx, dt, kshape, PAD, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&d.v, ctx, dt, kshape, PACK, 4), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&kn, ctx, dt, nshape, BHSD, 1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&vn, ctx, dt, nshape, PACK, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&d.k, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&d.v, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&kn, &r, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&vn, &r, 1.0), FA_SUCCESS);
  const size_t n = d.k.elems;
  double *k0 = malloc(n * sizeof(double)), *v0 = malloc(n * sizeof(double));
  memcpy(k0, d.k.host, n * sizeof(double));
  memcpy(v0, d.v.host, n * sizeof(double));
  int32_t lens[3] = {0, 40, c.cap - s_new};
  th_small_create(&d.lens, ctx, FA_I32, lens, c.batch, 1);
  if (page_size) th_small_create(&d.table, ctx, FA_I32, d.table_host, c.batch, d.max_pages);
  fa_status st = fa_kv_append(ctx, &d.k.t, &d.v.t, page_size ? &d.table.t : NULL, &d.lens.t, &kn.t, &vn.t, 0);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_kv_append: %s", th_case(), be, fa_context_last_error(ctx));
  int ok1, ok2;
  ck_assert_int_eq(th_tensor_download(&d.k, &ok1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&d.v, &ok2), FA_SUCCESS);
  ck_assert_msg(ok1 && ok2, "%s: %s: wrote outside the cache tensors", th_case(), be);
  /* Expected: the old cache with the new rows put in. */
  const int64_t row = c.heads_kv * c.head_dim;
  for (int64_t b = 0; b < c.batch; b++)
    for (int64_t t = 0; t < s_new; t++) {
      const int64_t j = lens[b] + t;
      const int64_t dst = page_size ? (int64_t)d.table_host[b * d.max_pages + j / page_size] * page_size + j % page_size
                                    : b * c.cap + j;
      memcpy(k0 + dst * row, kn.host + (b * s_new + t) * row, sizeof(double) * (size_t)row);
      memcpy(v0 + dst * row, vn.host + (b * s_new + t) * row, sizeof(double) * (size_t)row);
    }
  ck_assert_msg(memcmp(k0, d.k.host, n * sizeof(double)) == 0 && memcmp(v0, d.v.host, n * sizeof(double)) == 0,
                "%s: %s: the cache differs from the expected one", th_case(), be);
  /* A length that leaves no room: refused, nothing written. */
  ck_assert_int_eq(th_tensor_upload(&d.k), FA_SUCCESS);
  lens[1] = c.cap - s_new + 1;
  ck_assert_int_eq(fa_buffer_write(ctx, d.lens.buf, 12, lens, sizeof lens), FA_SUCCESS);
  st = fa_kv_append(ctx, &d.k.t, &d.v.t, page_size ? &d.table.t : NULL, &d.lens.t, &kn.t, &vn.t, 0);
  ck_assert_msg(st == FA_ERROR_INVALID_ARGUMENT && strstr(fa_context_last_error(ctx), "seqlens_k"),
                "%s: %s: overfull append: %s \"%s\"", th_case(), be, fa_status_string(st), fa_context_last_error(ctx));
  ck_assert_msg(th_tensor_unchanged(&d.k) == 1, "%s: %s: a refused append wrote", th_case(), be);
  free(k0);
  free(v0);
  th_tensor_destroy(&d.k);
  th_tensor_destroy(&d.v);
  th_tensor_destroy(&kn);
  th_tensor_destroy(&vn);
  fa_buffer_destroy(d.lens.buf);
  fa_buffer_destroy(d.table.buf);
  free(d.table_host);
  th_ran(bi);
}

START_TEST(t_append) {
  static const struct {
    fa_dtype dt;
    int page, s_new;
  } ac[] = {{F32, 0, 1}, {F16, 16, 5}, {BF16, 32, 33}};
  th_case_begin("kv_append %s page=%d S_new=%d", fa_dtype_name(ac[_i].dt), ac[_i].page, ac[_i].s_new);
  for (int bi = 0; bi < th_backend_count(); bi++) append_case(bi, ac[_i].dt, ac[_i].page, ac[_i].s_new);
  th_finish_case();
}
END_TEST

/* ---- argument checks: a status, a sentence naming the argument, nothing written ---- */

typedef struct bad_case {
  const char *what;   /* expected in the sentence */
  fa_status status;
  int lens_bad, table_bad, page_size, window_l, softcap_neg, alibi_mask, alibi_dropout, splits_neg, lens_dtype;
  int backward;
} bad_case;

static const bad_case bad_cases[] = {
    {"seqlens_k", FA_ERROR_INVALID_ARGUMENT, 1},
    {"block_table", FA_ERROR_INVALID_ARGUMENT, 0, 1},
    {"multiple of 16", FA_ERROR_INVALID_ARGUMENT, 0, 0, 24},
    {"window_left", FA_ERROR_INVALID_ARGUMENT, 0, 0, 0, 1},
    {"softcap", FA_ERROR_INVALID_ARGUMENT, 0, 0, 0, 0, 1},
    {"block mask", FA_ERROR_UNSUPPORTED, 0, 0, 0, 0, 0, 1},
    {"dropout", FA_ERROR_UNSUPPORTED, 0, 0, 0, 0, 0, 0, 1},
    {"num_splits", FA_ERROR_INVALID_ARGUMENT, 0, 0, 0, 0, 0, 0, 0, 1},
    {"seqlens_k: dtype", FA_ERROR_INVALID_ARGUMENT, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    {"fa_backward", FA_ERROR_UNSUPPORTED, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
};

START_TEST(t_errors) {
  const bad_case *c = &bad_cases[_i];
  th_case_begin("error: %s", c->what);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    th_rng r;
    th_rng_init(&r, th_case_seed(2000 + _i));
    const int ps = c->page_size ? c->page_size : 16, B = 2, pages = 4;
    const int64_t qs[4] = {B, 1, 4, 64}, ks[4] = {pages * B, ps, 2, 64}, ls[4] = {B, 4, 1, 1};
    th_tensor q, k, v, o, lse;
    ck_assert_int_eq(th_tensor_create(&q, ctx, F32, qs, PACK, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&k, ctx, F32, ks, PACK, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&v, ctx, F32, ks, PACK, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&o, ctx, F32, qs, PACK, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&lse, ctx, F32, ls, PACK, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&q, &r, 1.0), FA_SUCCESS);
    const int32_t lens[2] = {c->lens_bad ? pages * ps + 1 : 5, pages * ps};
    int32_t table[2 * 4] = {0, 1, 2, 3, 4, 5, 6, 7};
    if (c->table_bad) table[6] = pages * B; /* used by sequence 1, which has every page */
    const float slopes[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    th_small tl, tt, ta, tm;
    th_small_create(&tl, ctx, c->lens_dtype ? F32 : FA_I32, lens, B, 1);
    th_small_create(&tt, ctx, FA_I32, table, B, pages);
    th_small_create(&ta, ctx, F32, slopes, 1, 4);
    const uint8_t ones[4] = {1, 1, 1, 1};
    th_small_create(&tm, ctx, FA_U8, ones, 1, 1);
    fa_tensor_packed(&tm.t, tm.buf, 12, FA_U8, 1, 1, 1, 1);
    fa_attention_desc desc;
    fa_attention_desc_init(&desc);
    desc.seqlens_k = &tl.t;
    desc.block_table = &tt.t;
    if (c->window_l) desc.window = 1, desc.window_left = -2, desc.window_right = 0;
    if (c->softcap_neg) desc.softcap = -1.0f;
    if (c->alibi_mask || c->alibi_dropout) desc.alibi_slopes = &ta.t;
    if (c->alibi_mask) desc.block_mask = &tm.t, desc.block_q = 16, desc.block_k = 4096;
    if (c->alibi_dropout) desc.dropout_p = 0.1f;
    if (c->splits_neg) desc.num_splits = -1;
    fa_status st;
    if (c->backward)
      st = fa_backward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lse.t, &o.t, &q.t, &k.t, &v.t);
    else
      st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lse.t);
    const char *msg = fa_context_last_error(ctx);
    ck_assert_msg(st == c->status && strstr(msg, c->what), "%s: %s: got %s \"%s\", want %s naming \"%s\"", th_case(),
                  th_backend_label(bi), fa_status_string(st), msg, fa_status_string(c->status), c->what);
    if (!c->backward)
      ck_assert_msg(th_tensor_unchanged(&o) == 1 && th_tensor_unchanged(&lse) == 1, "%s: %s: output written",
                    th_case(), th_backend_label(bi));
    th_diag("%s: %s: \"%s\"", th_case(), th_backend_label(bi), msg);
    th_tensor_destroy(&q);
    th_tensor_destroy(&k);
    th_tensor_destroy(&v);
    th_tensor_destroy(&o);
    th_tensor_destroy(&lse);
    fa_buffer_destroy(tl.buf);
    fa_buffer_destroy(tt.buf);
    fa_buffer_destroy(ta.buf);
    fa_buffer_destroy(tm.buf);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("decode");
  TCase *tc = tcase_create("decode");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_decode, 0, n_cases);
  tcase_add_loop_test(tc, t_combine, 0, 4);
  tcase_add_loop_test(tc, t_append, 0, 3);
  tcase_add_loop_test(tc, t_varlen, 0, 5);
  tcase_add_loop_test(tc, t_errors, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_main(make_suite(), 1); }
