/* The inference options on the flash kernels, forward and backward, vs the float64 reference, on every backend
 * that answers: variable-length batches (cu_seqlens; uneven lengths, empty sequences, a sequence of one row,
 * rows after the last sequence that nobody writes), the sliding window (left only, right only, both, window 0),
 * ALiBi ([Hq] and [B, Hq]), softcap, and combinations, causal or not, GQA and MQA; deterministic gradients bit
 * for bit; the workspace query for varlen; and the combinations that are refused.
 *
 * Each case: fresh random q, k, v, dout; the library's forward (o, lse) against the reference per sequence (o
 * within the dtype's bound, lse within 1e-3, exactly -inf where a row sees no key); then, from the library's o
 * and lse as a caller would run it, one fa_backward with dq, dk, dv poisoned, each against the reference's
 * gradients within the dtype's bound. Every shape has more query rows per key/value head than the decode
 * kernels take (src/decode.c), so the flash kernels serve it; nothing is written outside the sequences' rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define F32 FA_F32
#define F16 FA_F16
#define BF16 FA_BF16
#define MAXSEQ 8

typedef struct inf_case {
  fa_dtype dtype;
  int head_dim, heads_q, heads_kv;
  int nseq;           /* sequences */
  int varlen;         /* 1: packed with cu_seqlens (lengths sq, sk); 0: a padded batch of nseq x (sq[0], sk[0]) */
  int sq[MAXSEQ], sk[MAXSEQ];
  int causal, window, wl, wr;
  int alibi;          /* 0 none, 1 [1, Hq], 2 [B, Hq] */
  float softcap;
  int deterministic;  /* backward twice with desc.deterministic = 1: the same bits */
} inf_case;

/* dtype, D, Hq, Hkv, nseq, varlen, sq, sk, causal, window, wl, wr, alibi, softcap, deterministic */
static const inf_case cases[] = {
    /* varlen: an empty query sequence, a sequence of one row, one with no keys, uneven lengths */
    {F32, 64, 4, 2, 5, 1, {50, 0, 1, 77, 33}, {50, 20, 1, 90, 0}, 1, 0, 0, 0, 0, 0, 0},
    {F16, 128, 4, 1, 2, 1, {130, 17}, {100, 300}, 0, 0, 0, 0, 2, 0, 0},
    {BF16, 64, 2, 2, 3, 1, {200, 9, 64}, {200, 9, 64}, 1, 1, 16, 0, 0, 0, 0}, /* sliding window, causal */
    {F16, 64, 4, 2, 4, 1, {70, 1, 0, 129}, {70, 33, 5, 129}, 1, 0, 0, 0, 0, 0, 1}, /* deterministic */
    /* padded batches: windows left only, right only, both, 0; Sq > Sk with causal (rows without keys) */
    {F32, 64, 2, 2, 2, 0, {100}, {120}, 0, 1, 30, -1, 0, 0, 0},
    {F32, 32, 3, 1, 1, 0, {90}, {90}, 0, 1, -1, 5, 0, 0, 0},
    {F16, 96, 4, 2, 2, 0, {80}, {100}, 0, 1, 7, 9, 0, 0, 0},
    {F32, 64, 2, 1, 1, 0, {70}, {70}, 0, 1, 0, 0, 0, 0, 0},
    {F32, 32, 2, 2, 1, 0, {120}, {50}, 1, 1, 10, -1, 0, 0, 0},
    /* ALiBi [Hq] and [B, Hq], softcap, and everything at once */
    {F16, 64, 4, 4, 2, 0, {64}, {96}, 1, 0, 0, 0, 1, 0, 0},
    {F32, 64, 2, 2, 2, 0, {40}, {60}, 1, 0, 0, 0, 0, 5.0f, 0},
    {BF16, 128, 4, 2, 3, 1, {90, 3, 140}, {100, 40, 140}, 1, 1, 50, -1, 2, 30.0f, 0},
    {F32, 64, 4, 2, 2, 0, {100}, {100}, 0, 1, 20, 20, 1, 2.0f, 1}, /* deterministic */
    /* 16-bit, for the Hopper backward: several key blocks whose window starts past block 0 (deterministic dQ
     * turns counted from the first block that reaches a query block), and the head-dim-split kernel */
    {F16, 128, 4, 2, 2, 0, {300}, {300}, 0, 1, 64, 64, 0, 0, 1},
    {BF16, 256, 4, 2, 2, 1, {150, 70}, {200, 64}, 1, 1, 40, 0, 1, 15.0f, 1},
    {BF16, 192, 2, 1, 2, 1, {100, 200}, {260, 130}, 0, 0, 0, 0, 0, 20.0f, 0},
};
static const int n_cases = (int)(sizeof cases / sizeof cases[0]);

/* The rows each sequence occupies: q rows cq[b] .. cq[b + 1] - 1 (of the batch's axis, or of batch b), k rows
 * ck[b] ..; varlen axes end with 3 (q) and 2 (k) rows that no sequence owns. */
typedef struct layout {
  int32_t cq[MAXSEQ + 1], ck[MAXSEQ + 1];
  int64_t total_q, total_k; /* rows per batch of the tensors */
  int64_t batch;            /* the tensors' batch: 1 with varlen */
} layout;

static void make_layout(const inf_case *c, layout *l) {
  l->cq[0] = l->ck[0] = 0;
  for (int b = 0; b < c->nseq; b++) {
    l->cq[b + 1] = l->cq[b] + (c->varlen ? c->sq[b] : c->sq[0]);
    l->ck[b + 1] = l->ck[b] + (c->varlen ? c->sk[b] : c->sk[0]);
  }
  l->batch = c->varlen ? 1 : c->nseq;
  l->total_q = c->varlen ? l->cq[c->nseq] + 3 : c->sq[0];
  l->total_k = c->varlen ? l->ck[c->nseq] + 2 : c->sk[0];
}

/* Element offsets of sequence b's first q (Hq heads) and k (Hkv heads) rows in the packed host arrays, and of its
 * lse row for head h. */
static int64_t q_at(const inf_case *c, const layout *l, int b) { return (int64_t)l->cq[b] * c->heads_q * c->head_dim; }
static int64_t k_at(const inf_case *c, const layout *l, int b) { return (int64_t)l->ck[b] * c->heads_kv * c->head_dim; }
static int64_t lse_at(const inf_case *c, const layout *l, int b, int64_t h) {
  return c->varlen ? h * l->total_q + l->cq[b] : ((int64_t)b * c->heads_q + h) * l->total_q;
}

static ref_problem ref_of(const inf_case *c, const layout *l, int b, const double *slopes) {
  ref_problem rp = {1, l->cq[b + 1] - l->cq[b], l->ck[b + 1] - l->ck[b], c->heads_q, c->heads_kv, c->head_dim,
                    1.0 / sqrt((double)c->head_dim), c->causal};
  rp.window = c->window, rp.window_left = c->wl, rp.window_right = c->wr;
  rp.alibi = c->alibi ? slopes + (c->alibi == 2 ? b * c->heads_q : 0) : NULL;
  rp.alibi_batch = 1;
  rp.softcap = c->softcap;
  return rp;
}

/* Rows [from, rows) of a [*, rows, heads, D] host array still hold poison (NaN): never written. */
static int rows_unwritten(const double *a, int64_t from, int64_t rows, int64_t heads, int64_t d) {
  for (int64_t x = from * heads * d; x < rows * heads * d; x++)
    if (!isnan(a[x])) return 0;
  return 1;
}

static double norm2(const double *a, int64_t n) {
  double s = 0;
  for (int64_t x = 0; x < n; x++) s += a[x] * a[x];
  return sqrt(s);
}

/* Relative error over the sequences' rows only (varlen leaves the rows after them unwritten). A gradient that is
 * exactly zero in the reference (window 0: each row sees one key, so P = 1 and dS = dP - Di = 0) is measured
 * against `scale`, the norm of what it would be proportional to, since relative to zero every rounding fails. */
static double seq_error(const double *got, const double *want, int64_t n, double scale) {
  return norm2(want, n) > 0 ? ref_rel_error(got, want, (size_t)n) : norm2(got, n) / scale;
}

typedef struct run {
  th_tensor q, k, v, o, lse, dout, dq, dk, dv;
  th_small cq, ck, alibi;
  float slopes[MAXSEQ * 64];
  double slopes64[MAXSEQ * 64];
} run;

static void set_desc(const inf_case *c, run *r, fa_attention_desc *desc) {
  fa_attention_desc_init(desc);
  desc->causal = c->causal;
  desc->window = c->window, desc->window_left = c->wl, desc->window_right = c->wr;
  desc->softcap = c->softcap;
  if (c->alibi) desc->alibi_slopes = &r->alibi.t;
  if (c->varlen) desc->cu_seqlens_q = &r->cq.t, desc->cu_seqlens_k = &r->ck.t;
}

static void run_case(const inf_case *c, int case_number, int bi) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  const uint64_t seed = th_case_seed(case_number);
  th_rng rng;
  th_rng_init(&rng, seed);
  layout l;
  make_layout(c, &l);
  const int64_t Hq = c->heads_q, Hkv = c->heads_kv, D = c->head_dim;
  const int64_t qs[4] = {l.batch, l.total_q, Hq, D}, ks[4] = {l.batch, l.total_k, Hkv, D};
  const int64_t ls[4] = {l.batch, Hq, l.total_q, 1};
  run r;
  memset(&r, 0, sizeof r);
  ck_assert_int_eq(th_tensor_create(&r.q, ctx, c->dtype, qs, TH_PACKED, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.k, ctx, c->dtype, ks, TH_BHSD, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.v, ctx, c->dtype, ks, TH_PADDED, 0), FA_SUCCESS);
  /* o 16-byte aligned for 16-bit types, so that the Hopper forward (TMA-fit operands only) serves them on sm_90;
   * float32's two elements off keep a misaligned output in the suite. */
  ck_assert_int_eq(th_tensor_create(&r.o, ctx, c->dtype, qs, TH_PACKED, c->dtype == F32 ? 2 : 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.lse, ctx, FA_F32, ls, TH_PACKED, 1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.dout, ctx, c->dtype, qs, TH_PACKED, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.dq, ctx, c->dtype, qs, TH_PADDED, 1), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.dk, ctx, c->dtype, ks, TH_PACKED, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&r.dv, ctx, c->dtype, ks, TH_BHSD, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&r.q, &rng, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&r.k, &rng, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&r.v, &rng, 1.0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_fill_random(&r.dout, &rng, 1.0), FA_SUCCESS);
  th_small_create(&r.cq, ctx, FA_I32, l.cq, c->nseq + 1, 1);
  th_small_create(&r.ck, ctx, FA_I32, l.ck, c->nseq + 1, 1);
  const int64_t na = (c->alibi == 2 ? c->nseq : 1) * Hq;
  for (int64_t x = 0; x < na; x++) r.slopes64[x] = r.slopes[x] = (float)(0.02 + 0.3 * th_rng_uniform(&rng));
  th_small_create(&r.alibi, ctx, FA_F32, r.slopes, c->alibi == 2 ? c->nseq : 1, Hq);
  fa_attention_desc desc;
  set_desc(c, &r, &desc);

  /* Forward. */
  fa_status st = fa_forward(ctx, &desc, &r.q.t, &r.k.t, &r.v.t, &r.o.t, &r.lse.t);
  if (st == FA_ERROR_UNSUPPORTED) {
    th_unsupported(bi, fa_context_last_error(ctx));
    goto done;
  }
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_forward: %s: %s", th_case(), be, fa_status_string(st),
                fa_context_last_error(ctx));
  int ok_o, ok_l;
  ck_assert_int_eq(th_tensor_download(&r.o, &ok_o), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&r.lse, &ok_l), FA_SUCCESS);
  ck_assert_msg(ok_o && ok_l, "%s: %s: wrote outside o or lse", th_case(), be);
  const size_t nq = r.q.elems, nk = r.k.elems;
  double *ro = malloc(nq * sizeof(double)), *rl = malloc(r.lse.elems * sizeof(double));
  double *rdq = malloc(nq * sizeof(double)), *rdk = malloc(nk * sizeof(double)), *rdv = malloc(nk * sizeof(double));
  double *sl = malloc(sizeof(double) * (size_t)(Hq * l.total_q + 1));
  ck_assert(ro && rl && rdq && rdk && rdv && sl);
  for (size_t x = 0; x < r.lse.elems; x++) rl[x] = NAN; /* the sequences' rows are filled below */
  size_t empty = 0;
  for (int b = 0; b < c->nseq; b++) {
    const ref_problem rp = ref_of(c, &l, b, r.slopes64);
    const int64_t qo = c->varlen ? q_at(c, &l, b) : b * l.total_q * Hq * D;
    const int64_t ko = c->varlen ? k_at(c, &l, b) : b * l.total_k * Hkv * D;
    ck_assert_int_eq(ref_forward(&rp, r.q.host + qo, r.k.host + ko, r.v.host + ko, ro + qo, sl), 0);
    ck_assert_int_eq(ref_backward(&rp, r.q.host + qo, r.k.host + ko, r.v.host + ko, r.dout.host + qo, rdq + qo,
                                  rdk + ko, rdv + ko), 0);
    for (int64_t h = 0; h < Hq; h++)
      for (int64_t i = 0; i < rp.seqlen_q; i++) {
        rl[lse_at(c, &l, b, h) + i] = sl[h * rp.seqlen_q + i];
        empty += sl[h * rp.seqlen_q + i] == -INFINITY;
      }
  }
  /* Varlen: the rows after the sequences are nobody's. */
  const int64_t q_rows = c->varlen ? l.cq[c->nseq] : l.batch * l.total_q, k_rows = c->varlen ? l.ck[c->nseq] : l.batch * l.total_k;
  if (c->varlen)
    ck_assert_msg(rows_unwritten(r.o.host, q_rows, l.total_q, Hq, D), "%s: %s: o written past the sequences", th_case(), be);
  const double tol = th_tolerance(c->dtype);
  double err = seq_error(r.o.host, ro, q_rows * Hq * D, 1.0);
  ck_assert_msg(err <= tol && th_count_nan(r.o.host, (size_t)(q_rows * Hq * D)) == 0,
                "%s: %s (seed %llu): o: relative error %.3g (bound %.0e)", th_case(), be, (unsigned long long)seed, err, tol);
  for (size_t x = 0; x < r.lse.elems; x++)
    if (isnan(rl[x])) { /* a row after the sequences: never written */
      ck_assert_msg(isnan(r.lse.host[x]), "%s: %s: lse written past the sequences", th_case(), be);
      rl[x] = r.lse.host[x] = 0;
    }
  const double lerr = ref_max_abs_error_scaled(r.lse.host, rl, r.lse.elems);
  ck_assert_msg(lerr <= 1e-3, "%s: %s (seed %llu): lse: error %.3g (bound 1e-3, a wrong -inf counts as inf)", th_case(),
                be, (unsigned long long)seed, lerr);

  /* Backward, from the library's o and lse; the workspace query first. */
  size_t ws = 0;
  st = fa_backward_workspace_size(ctx, &desc, &r.q.t, &r.k.t, &r.v.t, &r.o.t, &r.lse.t, &r.dout.t, &r.dq.t, &r.dk.t,
                                  &r.dv.t, &ws);
  ck_assert_msg(st == FA_SUCCESS && ws > 0, "%s: %s: fa_backward_workspace_size: %s (%zu bytes): %s", th_case(), be,
                fa_status_string(st), ws, fa_context_last_error(ctx));
  double *first[3] = {NULL, NULL, NULL};
  for (int rep = 0; rep < (c->deterministic ? 2 : 1); rep++) {
    desc.deterministic = c->deterministic;
    th_tensor *g[3] = {&r.dq, &r.dk, &r.dv};
    for (int x = 0; x < 3; x++) ck_assert_int_eq(th_tensor_poison(g[x]), FA_SUCCESS);
    st = fa_backward(ctx, &desc, &r.q.t, &r.k.t, &r.v.t, &r.o.t, &r.lse.t, &r.dout.t, &r.dq.t, &r.dk.t, &r.dv.t);
    if (st == FA_ERROR_UNSUPPORTED) {
      th_unsupported(bi, fa_context_last_error(ctx));
      break;
    }
    ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_backward: %s: %s", th_case(), be, fa_status_string(st),
                  fa_context_last_error(ctx));
    const double *want[3] = {rdq, rdk, rdv};
    const int64_t rows[3] = {q_rows, k_rows, k_rows}, heads[3] = {Hq, Hkv, Hkv}, all[3] = {l.total_q, l.total_k, l.total_k};
    static const char *const names[3] = {"dq", "dk", "dv"};
    for (int x = 0; x < 3; x++) {
      int ok;
      ck_assert_int_eq(th_tensor_download(g[x], &ok), FA_SUCCESS);
      ck_assert_msg(ok, "%s: %s: wrote outside %s", th_case(), be, names[x]);
      if (c->varlen)
        ck_assert_msg(rows_unwritten(g[x]->host, rows[x], all[x], heads[x], D), "%s: %s: %s written past the sequences",
                      th_case(), be, names[x]);
      const size_t n = (size_t)(rows[x] * heads[x] * D);
      err = seq_error(g[x]->host, want[x], (int64_t)n, norm2(r.dout.host, q_rows * Hq * D));
      ck_assert_msg(err <= tol && th_count_nan(g[x]->host, n) == 0,
                    "%s: %s (seed %llu): %s: relative error %.3g (bound %.0e), %zu NaN", th_case(), be,
                    (unsigned long long)seed, names[x], err, tol, th_count_nan(g[x]->host, n));
      if (rep == 0 && c->deterministic) {
        first[x] = malloc(n * sizeof(double));
        memcpy(first[x], g[x]->host, n * sizeof(double));
      } else if (rep == 1) {
        ck_assert_msg(memcmp(first[x], g[x]->host, n * sizeof(double)) == 0,
                      "%s: %s: deterministic %s differs between two runs", th_case(), be, names[x]);
      }
    }
  }
  ck_assert_msg(th_tensor_unchanged(&r.q) == 1 && th_tensor_unchanged(&r.k) == 1 && th_tensor_unchanged(&r.v) == 1 &&
                    th_tensor_unchanged(&r.dout) == 1,
                "%s: %s: an input was modified", th_case(), be);
  if (empty) th_diag("%s: %s: %zu rows without keys", th_case(), be, empty);
  for (int x = 0; x < 3; x++) free(first[x]);
  free(ro), free(rl), free(rdq), free(rdk), free(rdv), free(sl);
  th_ran(bi);
done:
  th_tensor_destroy(&r.q), th_tensor_destroy(&r.k), th_tensor_destroy(&r.v), th_tensor_destroy(&r.o);
  th_tensor_destroy(&r.lse), th_tensor_destroy(&r.dout), th_tensor_destroy(&r.dq), th_tensor_destroy(&r.dk);
  th_tensor_destroy(&r.dv);
  fa_buffer_destroy(r.cq.buf), fa_buffer_destroy(r.ck.buf), fa_buffer_destroy(r.alibi.buf);
}

START_TEST(t_infer) {
  const inf_case *c = &cases[_i];
  char lens[160] = "";
  for (int b = 0, n = 0; b < (c->varlen ? c->nseq : 1) && n < (int)sizeof lens; b++)
    n += snprintf(lens + n, sizeof lens - (size_t)n, "%s%dx%d", b ? "," : "", c->sq[b], c->sk[b]);
  th_case_begin("infer %s D=%d Hq=%d Hkv=%d %s%d x %s%s window=%s%d,%d alibi=%d softcap=%g%s", fa_dtype_name(c->dtype),
                c->head_dim, c->heads_q, c->heads_kv, c->varlen ? "varlen " : "batch ", c->nseq, lens,
                c->causal ? " causal" : "", c->window ? "" : "off ", c->wl, c->wr, c->alibi, (double)c->softcap,
                c->deterministic ? " deterministic" : "");
  for (int bi = 0; bi < th_backend_count(); bi++) run_case(c, _i, bi);
  th_finish_case();
}
END_TEST

/* ---- refused combinations: a status, a sentence naming the argument, nothing written ---- */

START_TEST(t_refused) {
  static const struct {
    const char *what;
    fa_status status;
    int varlen, window, dropout, mask, seqlens, backward;
  } bad[] = {
      {"dropout", FA_ERROR_UNSUPPORTED, 1, 0, 1, 0, 0, 1},
      {"block mask", FA_ERROR_UNSUPPORTED, 0, 1, 0, 1, 0, 1},
      {"fa_backward: seqlens_k", FA_ERROR_UNSUPPORTED, 0, 0, 0, 0, 1, 1},
      {"dropout", FA_ERROR_UNSUPPORTED, 0, 1, 1, 0, 0, 0},
  };
  th_case_begin("refused: %s%s", bad[_i].what, bad[_i].backward ? " (backward)" : "");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    th_rng rng;
    th_rng_init(&rng, th_case_seed(900 + _i));
    const int64_t qs[4] = {1, 40, 2, 32}, ls[4] = {1, 2, 40, 1};
    th_tensor q, o, lse, dq, dk, dv;
    ck_assert_int_eq(th_tensor_create(&q, ctx, F32, qs, TH_PACKED, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&o, ctx, F32, qs, TH_PACKED, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&lse, ctx, F32, ls, TH_PACKED, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&dq, ctx, F32, qs, TH_PACKED, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&dk, ctx, F32, qs, TH_PACKED, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_create(&dv, ctx, F32, qs, TH_PACKED, 0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&q, &rng, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&lse, &rng, 1.0), FA_SUCCESS);
    const int32_t cu[3] = {0, 25, 40}, lens[1] = {40};
    const uint8_t ones[4] = {1, 1, 1, 1};
    th_small tc, tl, tm;
    th_small_create(&tc, ctx, FA_I32, cu, 3, 1);
    th_small_create(&tl, ctx, FA_I32, lens, 1, 1);
    th_small_create(&tm, ctx, FA_U8, ones, 1, 1);
    fa_tensor_packed(&tm.t, tm.buf, 12, FA_U8, 1, 1, 1, 1);
    fa_attention_desc desc;
    fa_attention_desc_init(&desc);
    if (bad[_i].varlen) desc.cu_seqlens_q = desc.cu_seqlens_k = &tc.t;
    if (bad[_i].window) desc.window = 1, desc.window_left = 8, desc.window_right = 0;
    if (bad[_i].dropout) desc.dropout_p = 0.2f;
    if (bad[_i].mask) desc.block_mask = &tm.t, desc.block_q = 64, desc.block_k = 64;
    if (bad[_i].seqlens) desc.seqlens_k = &tl.t;
    fa_status st = bad[_i].backward
                       ? fa_backward(ctx, &desc, &q.t, &q.t, &q.t, &q.t, &lse.t, &q.t, &dq.t, &dk.t, &dv.t)
                       : fa_forward(ctx, &desc, &q.t, &q.t, &q.t, &o.t, &lse.t);
    const char *msg = fa_context_last_error(ctx);
    ck_assert_msg(st == bad[_i].status && strstr(msg, bad[_i].what), "%s: %s: got %s \"%s\", want %s naming \"%s\"",
                  th_case(), th_backend_label(bi), fa_status_string(st), msg, fa_status_string(bad[_i].status),
                  bad[_i].what);
    ck_assert_msg(th_tensor_unchanged(&o) == 1 && th_tensor_unchanged(&dq) == 1 && th_tensor_unchanged(&dk) == 1 &&
                      th_tensor_unchanged(&dv) == 1,
                  "%s: %s: a refused call wrote an output", th_case(), th_backend_label(bi));
    th_diag("%s: %s: \"%s\"", th_case(), th_backend_label(bi), msg);
    th_tensor_destroy(&q), th_tensor_destroy(&o), th_tensor_destroy(&lse);
    th_tensor_destroy(&dq), th_tensor_destroy(&dk), th_tensor_destroy(&dv);
    fa_buffer_destroy(tc.buf), fa_buffer_destroy(tl.buf), fa_buffer_destroy(tm.buf);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("infer");
  TCase *tc = tcase_create("infer");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_infer, 0, n_cases);
  tcase_add_loop_test(tc, t_refused, 0, 4);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return th_main(make_suite(), 1); }
