/* The float64 reference checked on its own, with no device: every other suite trusts it.
 * - backward against central finite differences of the scalar loss L = sum(dO ∘ O) on tiny cases, also
 *   with a score mask (keep) and dropout multipliers;
 * - forward against closed forms (one key: o = v; equal keys: o = mean of v; masked rows; dropout);
 * - the block-mask expansion against a hand-written case;
 * - kernels/masks.h's Philox-4x32-10 against Random123's known-answer vectors, and its counter layout;
 * - float16 / bfloat16 conversions against known values, exhaustive round trips and an independent
 *   rounding (the compiler's _Float16 where it has one). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/masks.h"

static double *alloc_random(size_t n, th_rng *r) {
  double *a = malloc(n * sizeof(double));
  ck_assert_ptr_nonnull(a);
  for (size_t i = 0; i < n; i++) a[i] = th_rng_normal(r);
  return a;
}

static double loss(const ref_problem *p, const double *q, const double *k, const double *v,
                   const double *dout) {
  size_t n = ref_q_elems(p);
  double *o = malloc(n * sizeof(double));
  ck_assert_ptr_nonnull(o);
  ck_assert_int_eq(ref_forward(p, q, k, v, o, NULL), 0);
  double l = 0;
  for (size_t i = 0; i < n; i++) l += dout[i] * o[i];
  free(o);
  return l;
}

/* Central differences of loss() in every element of x (one of q, k, v), compared with grad. */
static double fd_error(const ref_problem *p, double *q, double *k, double *v, const double *dout, double *x,
                       size_t n, const double *grad) {
  const double h = 1e-5;
  double *fd = malloc(n * sizeof(double));
  ck_assert_ptr_nonnull(fd);
  for (size_t i = 0; i < n; i++) {
    double keep = x[i];
    x[i] = keep + h;
    double lp = loss(p, q, k, v, dout);
    x[i] = keep - h;
    double lm = loss(p, q, k, v, dout);
    x[i] = keep;
    fd[i] = (lp - lm) / (2 * h);
  }
  double e = ref_rel_error(grad, fd, n);
  free(fd);
  return e;
}

/* ref_backward at random q, k, v and dout (drawn from rng) against central differences of loss() in every
 * input; returns dq (malloc'd) for the callers' checks of masked rows. */
static double *backward_vs_fd(const ref_problem *p, th_rng *rng, uint64_t seed) {
  size_t nq = ref_q_elems(p), nkv = ref_kv_elems(p);
  double *q = alloc_random(nq, rng), *k = alloc_random(nkv, rng), *v = alloc_random(nkv, rng);
  double *dout = alloc_random(nq, rng);
  double *dq = malloc(nq * sizeof(double)), *dk = malloc(nkv * sizeof(double)), *dv = malloc(nkv * sizeof(double));
  ck_assert(dq && dk && dv);
  ck_assert_int_eq(ref_backward(p, q, k, v, dout, dq, dk, dv), 0);
  double eq = fd_error(p, q, k, v, dout, q, nq, dq);
  double ek = fd_error(p, q, k, v, dout, k, nkv, dk);
  double ev = fd_error(p, q, k, v, dout, v, nkv, dv);
  ck_assert_msg(eq < 1e-7 && ek < 1e-7 && ev < 1e-7, "%s (seed %llu): dq %.3g dk %.3g dv %.3g", th_case(),
                (unsigned long long)seed, eq, ek, ev);
  free(q), free(k), free(v), free(dout), free(dk), free(dv);
  return dq;
}

static const ref_problem fd_cases[] = {
    /* B, Sq, Sk, Hq, Hkv, D, scale, causal */
    {2, 3, 5, 4, 2, 4, 0.7, 0},  /* GQA, Sq < Sk */
    {1, 5, 3, 2, 1, 3, 1.3, 1},  /* MQA, causal with Sq > Sk: rows 0 and 1 see no key */
    {1, 4, 6, 2, 2, 5, 0.45, 1}, /* causal with Sq < Sk */
};

START_TEST(t_backward_vs_finite_differences) {
  const ref_problem *p = &fd_cases[_i];
  th_case_begin("reference backward vs finite differences, case %d", _i);
  th_rng r;
  th_rng_init(&r, th_case_seed(_i));
  double *dq = backward_vs_fd(p, &r, th_case_seed(_i));
  /* Fully masked rows: zero gradient, exactly. */
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t i = 0; i < p->seqlen_q; i++) {
      if (ref_visible(p, i, 0)) continue;
      for (int64_t h = 0; h < p->heads_q; h++)
        for (int64_t d = 0; d < p->head_dim; d++)
          ck_assert(dq[((b * p->seqlen_q + i) * p->heads_q + h) * p->head_dim + d] == 0.0);
    }
  free(dq);
  th_finish_case();
}
END_TEST

/* The same with a score mask and dropout: keep random (~60 % of the scores, row 1 of every head emptied,
 * on top of causal in some cases), dropout multipliers 0 or 1 / (1 - 0.3) at random. */
static const ref_problem fd_mask_cases[] = {
    /* B, Sq, Sk, Hq, Hkv, D, scale, causal */
    {2, 3, 5, 4, 2, 4, 0.7, 0},
    {1, 5, 4, 2, 1, 3, 1.1, 1},
    {1, 4, 6, 3, 3, 2, 0.5, 0},
};

START_TEST(t_backward_masked_vs_finite_differences) {
  ref_problem p = fd_mask_cases[_i / 3];
  const int mode = _i % 3; /* 0: keep, 1: dropout, 2: both */
  th_case_begin("reference backward vs finite differences with %s, case %d",
                mode == 0 ? "a score mask" : mode == 1 ? "dropout" : "a score mask and dropout", _i / 3);
  th_rng r;
  th_rng_init(&r, th_case_seed(200 + _i));
  size_t ns = ref_score_elems(&p);
  uint8_t *keep = malloc(ns);
  double *drop = malloc(ns * sizeof(double));
  ck_assert(keep && drop);
  for (size_t e = 0; e < ns; e++) {
    const int64_t i = (int64_t)(e / (size_t)p.seqlen_k) % p.seqlen_q;
    keep[e] = i != 1 && th_rng_uniform(&r) < 0.6;
    drop[e] = th_rng_uniform(&r) < 0.3 ? 0.0 : 1.0 / 0.7;
  }
  if (mode != 1) p.keep = keep;
  if (mode != 0) p.dropout = drop;
  double *dq = backward_vs_fd(&p, &r, th_case_seed(200 + _i));
  /* Rows with no visible key: zero dq, exactly; row 1 is one whenever keep is on. */
  size_t empty = 0;
  for (int64_t b = 0; b < p.batch; b++)
    for (int64_t h = 0; h < p.heads_q; h++)
      for (int64_t i = 0; i < p.seqlen_q; i++) {
        if (!ref_row_empty(&p, b, h, i)) continue;
        empty++;
        for (int64_t d = 0; d < p.head_dim; d++)
          ck_assert(dq[((b * p.seqlen_q + i) * p.heads_q + h) * p.head_dim + d] == 0.0);
      }
  if (p.keep) ck_assert_uint_ge(empty, (size_t)(p.batch * p.heads_q));
  free(dq), free(keep), free(drop);
  th_finish_case();
}
END_TEST

/* kernels/masks.h's band against the reference's visibility, exhaustively on small shapes: each row's key range,
 * the class of every tile (brute force over its scores) and the rows that see a block of keys. */
START_TEST(t_band_vs_reference) {
  th_case_begin("masks.h band (causal, window) vs the reference's visibility");
  long checked = 0;
  for (int sq = 1; sq <= 9; sq++)
    for (int sk = 1; sk <= 9; sk++)
      for (int causal = 0; causal < 2; causal++)
        for (int wl = -1; wl <= 4; wl++)
          for (int wr = -1; wr <= 4; wr++) {
            ref_problem p = {1, sq, sk, 1, 1, 8, 1.0, causal};
            p.window = wl >= 0 || wr >= 0, p.window_left = wl, p.window_right = wr;
            for (int i = 0; i < sq; i++) {
              const int lo = fa_band_lo(i, sq, sk, wl), hi = fa_band_hi(i, sq, sk, causal, wr);
              for (int j = 0; j < sk; j++)
                ck_assert_msg(ref_visible_at(&p, 0, 0, i, j) == (j >= lo && j < hi),
                              "sq %d sk %d causal %d window (%d, %d): row %d key %d: band [%d, %d)", sq, sk, causal, wl,
                              wr, i, j, lo, hi);
            }
            for (int r0 = 0; r0 < sq; r0++)
              for (int r1 = r0 + 1; r1 <= sq; r1++)
                for (int c0 = 0; c0 < sk; c0++)
                  for (int c1 = c0 + 1; c1 <= sk + 2; c1++) { /* c1 may pass sk, as a kernel's last tile does */
                    int any = 0, all = 1;
                    for (int i = r0; i < r1; i++)
                      for (int j = c0; j < c1; j++) {
                        const int v = j < sk && ref_visible_at(&p, 0, 0, i, j);
                        any |= v, all &= v;
                      }
                    const int want = any ? (all ? FA_TILE_FULL : FA_TILE_PARTIAL) : FA_TILE_SKIP;
                    ck_assert_msg(fa_band_tile(r0, r1, c0, c1, sq, sk, causal, wl, wr) == want,
                                  "sq %d sk %d causal %d window (%d, %d): tile [%d, %d) x [%d, %d): class %d, want %d",
                                  sq, sk, causal, wl, wr, r0, r1, c0, c1,
                                  fa_band_tile(r0, r1, c0, c1, sq, sk, causal, wl, wr), want);
                    checked++;
                  }
            for (int c0 = 0; c0 < sk; c0++)
              for (int c1 = c0 + 1; c1 <= sk; c1++) {
                int a, e, first = sq, last = -1;
                fa_band_rows(c0, c1, sq, sk, causal, wl, wr, &a, &e);
                for (int i = 0; i < sq; i++)
                  for (int j = c0; j < c1; j++)
                    if (ref_visible_at(&p, 0, 0, i, j)) first = i < first ? i : first, last = i > last ? i : last;
                /* Every row that sees a key lies in [a, e); the rows in between see one too (the band is convex). */
                ck_assert_msg(last < 0 || (a <= first && e >= last + 1 && e - a == last - first + 1),
                              "sq %d sk %d causal %d window (%d, %d): keys [%d, %d): rows [%d, %d), seen by %d .. %d",
                              sq, sk, causal, wl, wr, c0, c1, a, e, first, last);
                ck_assert_msg(last >= 0 || a == e, "keys [%d, %d) seen by no row, rows [%d, %d)", c0, c1, a, e);
              }
          }
  th_diag("%ld tiles classified", checked);
  th_finish_case();
}
END_TEST

/* The inference options (window, ALiBi, softcap, alone and together, causal or not) in the backward. */
START_TEST(t_backward_infer_vs_finite_differences) {
  static const struct {
    int causal, window, wl, wr, alibi;
    double softcap;
  } ic[] = {{0, 1, 1, 2, 0, 0}, {1, 1, 2, -1, 0, 0}, {0, 0, 0, 0, 1, 0}, {1, 0, 0, 0, 0, 1.5}, {0, 1, -1, 0, 1, 2.0}};
  ref_problem p = {2, 5, 6, 4, 2, 3, 0.8, ic[_i].causal};
  p.window = ic[_i].window, p.window_left = ic[_i].wl, p.window_right = ic[_i].wr, p.softcap = ic[_i].softcap;
  const double slopes[2 * 4] = {0.3, 0.1, 0.7, 0.25, 0.05, 0.5, 0.2, 0.9};
  if (ic[_i].alibi) p.alibi = slopes, p.alibi_batch = 2;
  th_case_begin("reference backward vs finite differences with window %d (%d, %d), alibi %d, softcap %g",
                p.window, (int)p.window_left, (int)p.window_right, ic[_i].alibi, p.softcap);
  th_rng r;
  th_rng_init(&r, th_case_seed(250 + _i));
  free(backward_vs_fd(&p, &r, th_case_seed(250 + _i)));
  th_finish_case();
}
END_TEST

/* Masks and dropout in the forward, against direct constructions: an all-ones keep and all-ones dropout
 * change nothing (bit for bit), a keep equal to the causal mask gives the causal result, dropout scales each
 * P_ij (one key per row: o = z · v), and the lse never sees dropout. */
START_TEST(t_forward_masks_closed_forms) {
  th_case_begin("reference forward with keep and dropout: closed forms");
  th_rng r;
  th_rng_init(&r, th_case_seed(300));
  ref_problem p = {2, 7, 9, 2, 1, 5, 0.6, 0};
  size_t nq = ref_q_elems(&p), nkv = ref_kv_elems(&p), ns = ref_score_elems(&p), nl = ref_lse_elems(&p);
  double *q = alloc_random(nq, &r), *k = alloc_random(nkv, &r), *v = alloc_random(nkv, &r);
  double *o0 = malloc(nq * sizeof(double)), *o1 = malloc(nq * sizeof(double));
  double *l0 = malloc(nl * sizeof(double)), *l1 = malloc(nl * sizeof(double));
  uint8_t *keep = malloc(ns);
  double *drop = malloc(ns * sizeof(double));
  ck_assert(o0 && o1 && l0 && l1 && keep && drop);
  ck_assert_int_eq(ref_forward(&p, q, k, v, o0, l0), 0);
  memset(keep, 1, ns);
  for (size_t e = 0; e < ns; e++) drop[e] = 1.0;
  p.keep = keep, p.dropout = drop;
  ck_assert_int_eq(ref_forward(&p, q, k, v, o1, l1), 0);
  ck_assert(memcmp(o0, o1, nq * sizeof(double)) == 0 && memcmp(l0, l1, nl * sizeof(double)) == 0);

  /* keep = the causal mask, written out, vs causal = 1. */
  p.keep = NULL, p.dropout = NULL, p.causal = 1;
  ck_assert_int_eq(ref_forward(&p, q, k, v, o0, l0), 0);
  for (int64_t b = 0; b < p.batch; b++)
    for (int64_t h = 0; h < p.heads_q; h++)
      for (int64_t i = 0; i < p.seqlen_q; i++)
        for (int64_t j = 0; j < p.seqlen_k; j++)
          keep[((b * p.heads_q + h) * p.seqlen_q + i) * p.seqlen_k + j] = j <= i + p.seqlen_k - p.seqlen_q;
  p.causal = 0, p.keep = keep;
  ck_assert_int_eq(ref_forward(&p, q, k, v, o1, l1), 0);
  ck_assert(memcmp(o0, o1, nq * sizeof(double)) == 0 && memcmp(l0, l1, nl * sizeof(double)) == 0);

  /* Dropout: o = Σ_j P_ij z_ij v_j with lse unchanged; with z = 2 everywhere, o doubles exactly. */
  p.keep = NULL;
  ck_assert_int_eq(ref_forward(&p, q, k, v, o0, l0), 0);
  for (size_t e = 0; e < ns; e++) drop[e] = 2.0;
  p.dropout = drop;
  ck_assert_int_eq(ref_forward(&p, q, k, v, o1, l1), 0);
  for (size_t e = 0; e < nq; e++) ck_assert(o1[e] == 2.0 * o0[e]);
  ck_assert(memcmp(l0, l1, nl * sizeof(double)) == 0);

  /* One key: o = z · v, lse = its score. */
  ref_problem p1 = {1, 4, 1, 1, 1, 3, 1.0, 0};
  double q1[12], k1[3], v1[3], o[12], l[4], z[4] = {0.0, 1.25, 0.0, 1.25};
  for (int e = 0; e < 12; e++) q1[e] = th_rng_normal(&r);
  for (int e = 0; e < 3; e++) k1[e] = th_rng_normal(&r), v1[e] = th_rng_normal(&r);
  p1.dropout = z;
  ck_assert_int_eq(ref_forward(&p1, q1, k1, v1, o, l), 0);
  for (int i = 0; i < 4; i++) {
    double dot = 0;
    for (int d = 0; d < 3; d++) {
      ck_assert(o[i * 3 + d] == z[i] * v1[d]);
      dot += q1[i * 3 + d] * k1[d];
    }
    ck_assert_double_eq_tol(l[i], dot, 1e-14);
  }
  free(q), free(k), free(v), free(o0), free(o1), free(l0), free(l1), free(keep), free(drop);
  th_finish_case();
}
END_TEST

/* ref_expand_block_mask on a case worked by hand: Sq = 5, Sk = 4, blocks 2 x 3 (3 x 2 blocks, the last
 * ones partial), a mask per head broadcast over the batch. */
START_TEST(t_expand_block_mask) {
  th_case_begin("block mask expansion");
  ref_problem p = {2, 5, 4, 2, 1, 1, 1.0, 0};
  /* [1, 2, 3, 2]: head 0 is the identity-like pattern, head 1 masks only block (1, 0). */
  const uint8_t mask[12] = {1, 0, 0, 1, 1, 0, /* head 0 */ 1, 1, 0, 1, 1, 1 /* head 1 */};
  static const char *want[2] = {
      "1110" "1110" "0001" "0001" "1110", /* head 0: rows of 4 keys */
      "1111" "1111" "0001" "0001" "1111", /* head 1 */
  };
  uint8_t keep[2 * 2 * 5 * 4];
  ref_expand_block_mask(&p, mask, 1, 2, 2, 3, keep);
  for (int b = 0; b < 2; b++)
    for (int h = 0; h < 2; h++)
      for (int e = 0; e < 20; e++)
        ck_assert_msg(keep[(b * 2 + h) * 20 + e] == (want[h][e] == '1'), "b %d h %d row %d key %d", b, h, e / 4,
                      e % 4);
  /* Broadcast over both, and every block on: all kept; a score of the row emptied is not visible. */
  const uint8_t one[6] = {1, 1, 1, 1, 0, 0};
  ref_expand_block_mask(&p, one, 1, 1, 2, 3, keep);
  p.keep = keep;
  for (int b = 0; b < 2; b++)
    for (int h = 0; h < 2; h++)
      for (int i = 0; i < 5; i++) ck_assert_int_eq(ref_row_empty(&p, b, h, i), i == 4);
  ck_assert(!ref_visible_at(&p, 1, 1, 4, 0) && ref_visible_at(&p, 1, 1, 3, 3));
  th_finish_case();
}
END_TEST

/* kernels/masks.h is the one implementation of the dropout mask (kernels and tests both include it), so it
 * is checked against the published answers: Random123's kat_vectors, "philox4x32 10" lines
 * (counter[4], key[2] -> output[4]). */
START_TEST(t_philox_known_answers) {
  th_case_begin("Philox-4x32-10 known-answer vectors (Random123)");
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
       0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
       0x24126ea1},
  };
  for (int t = 0; t < 3; t++) {
    uint32_t c[4] = {kat[t][0], kat[t][1], kat[t][2], kat[t][3]};
    fa_philox4x32_10(c, kat[t][4], kat[t][5]);
    for (int w = 0; w < 4; w++)
      ck_assert_msg(c[w] == kat[t][6 + w], "vector %d word %d: 0x%08x, want 0x%08x", t, w, c[w], kat[t][6 + w]);
  }
  /* The counter layout: the four scores (i, j), (i, j+1), (i+8, j), (i+8, j+1) (i % 16 < 8, j even) share one
   * call, each taking its own word; a neighbouring group differs. */
  const uint64_t seed = 0x0123456789abcdefull;
  for (uint32_t i = 0; i < 40; i += 3)
    for (uint32_t j = 0; j < 9; j++) {
      uint32_t w[4], u[4];
      fa_dropout_words(seed, 7, 5, i, j, w);
      const uint32_t i0 = 16 * (i / 16) + i % 8, j0 = j & ~1u;
      for (int e = 0; e < 4; e++) {
        const uint32_t ie = i0 + 8 * (uint32_t)(e / 2), je = j0 + (uint32_t)(e % 2);
        fa_dropout_words(seed, 7, 5, ie, je, u);
        ck_assert(memcmp(w, u, sizeof w) == 0);
        ck_assert_int_eq(fa_dropout_lane(ie, je), e);
        ck_assert_int_eq(fa_dropout_keep(seed, 7, 0x80000000u, 5, ie, je), w[e] >= 0x80000000u);
      }
      fa_dropout_words(seed, 7, 5, i0 + 1, j, u); /* (i0 + 1) % 8 differs: another group */
      ck_assert(memcmp(w, u, sizeof w) != 0);
    }
  ck_assert_int_eq(fa_dropout_keep(seed, 7, 0, 5, 3, 4), 1); /* threshold 0: nothing dropped */
  th_finish_case();
}
END_TEST

START_TEST(t_forward_closed_forms) {
  th_case_begin("reference forward closed forms");
  th_rng r;
  th_rng_init(&r, th_case_seed(100));
  /* One key: o = v, lse = scale · q·k. */
  ref_problem p1 = {2, 3, 1, 2, 1, 8, 0.3, 0};
  double *q = alloc_random(ref_q_elems(&p1), &r), *k = alloc_random(ref_kv_elems(&p1), &r);
  double *v = alloc_random(ref_kv_elems(&p1), &r);
  double *o = malloc(ref_q_elems(&p1) * sizeof(double)), *lse = malloc(ref_lse_elems(&p1) * sizeof(double));
  ck_assert(o && lse);
  ck_assert_int_eq(ref_forward(&p1, q, k, v, o, lse), 0);
  for (int64_t b = 0; b < 2; b++)
    for (int64_t i = 0; i < 3; i++)
      for (int64_t h = 0; h < 2; h++) {
        double dot = 0;
        for (int d = 0; d < 8; d++) {
          ck_assert_double_eq_tol(o[((b * 3 + i) * 2 + h) * 8 + d], v[b * 8 + d], 1e-15);
          dot += q[((b * 3 + i) * 2 + h) * 8 + d] * k[b * 8 + d];
        }
        ck_assert_double_eq_tol(lse[(b * 2 + h) * 3 + i], 0.3 * dot, 1e-14);
      }
  free(q), free(k), free(v), free(o), free(lse);

  /* Equal keys: uniform attention, o = mean of the visible v rows, lse = s + log(n visible). With
   * causal and Sq = 4 > Sk = 3, row i sees keys 0 .. i - 1: row 0 none (o = 0, lse = -inf). */
  ref_problem p2 = {1, 4, 3, 1, 1, 4, 0.5, 1};
  double q2[16], k2[12], v2[12], o2[16], lse2[4];
  for (int i = 0; i < 16; i++) q2[i] = th_rng_normal(&r);
  for (int i = 0; i < 12; i++) k2[i] = (double)(i % 4) - 1.5, v2[i] = th_rng_normal(&r);
  ck_assert_int_eq(ref_forward(&p2, q2, k2, v2, o2, lse2), 0);
  for (int i = 0; i < 4; i++) {
    int n = i; /* keys j <= i - 1 */
    double s = 0;
    for (int d = 0; d < 4; d++) s += 0.5 * q2[i * 4 + d] * k2[d];
    if (n == 0) {
      ck_assert(isinf(lse2[i]) && lse2[i] < 0);
    } else {
      ck_assert_double_eq_tol(lse2[i], s + log((double)n), 1e-13);
    }
    for (int d = 0; d < 4; d++) {
      double mean = 0;
      for (int j = 0; j < n; j++) mean += v2[j * 4 + d] / n;
      ck_assert_double_eq_tol(o2[i * 4 + d], mean, 1e-14);
    }
  }
  th_finish_case();
}
END_TEST

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

START_TEST(t_half_known_values) {
  th_case_begin("f16/bf16 conversions: known values");
  static const struct {
    float x;
    uint16_t h;
  } f16[] = {
      {1.0f, 0x3c00},          {-2.0f, 0xc000},          {65504.0f, 0x7bff},
      {65519.99f, 0x7bff},     {65520.0f, 0x7c00},       {1e9f, 0x7c00},
      {0x1p-24f, 0x0001},      {0x1p-25f, 0x0000},       {0x1.8p-25f, 0x0001},
      {0x1p-14f, 0x0400},      {0x1.ffcp-15f, 0x0400},   {0x1.ff8p-15f, 0x03ff},
      {0x1.ff0p-15f, 0x03fe},
      {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02}, {-0.0f, 0x8000},
      {0.1f, 0x2e66},          {3.14159265f, 0x4248},    {0x1p-15f, 0x0200},
  };
  for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++)
    ck_assert_msg(ref_f32_to_f16(f16[i].x) == f16[i].h, "f16(%a) = 0x%04x, want 0x%04x", (double)f16[i].x,
                  ref_f32_to_f16(f16[i].x), f16[i].h);
  ck_assert(ref_f32_to_f16(INFINITY) == 0x7c00 && ref_f32_to_f16(-INFINITY) == 0xfc00);
  ck_assert(isnan(ref_f16_to_f32(ref_f32_to_f16(NAN))));
  ck_assert(isnan(ref_f16_to_f32(ref_f32_to_f16(float_of(0x7f800001))))); /* signalling, tiny payload */
  static const struct {
    float x;
    uint16_t h;
  } bf[] = {
      {1.0f, 0x3f80}, {1.0f + 0x1p-8f, 0x3f80}, {1.0f + 0x3p-8f, 0x3f82}, {-0.0f, 0x8000},
      {3.4e38f, 0x7f80}, {0x1p-133f, 0x0001}, {0.1f, 0x3dcd},
  };
  for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++)
    ck_assert_msg(ref_f32_to_bf16(bf[i].x) == bf[i].h, "bf16(%a) = 0x%04x, want 0x%04x", (double)bf[i].x,
                  ref_f32_to_bf16(bf[i].x), bf[i].h);
  ck_assert(isnan(ref_bf16_to_f32(ref_f32_to_bf16(float_of(0x7f800001)))));
  th_finish_case();
}
END_TEST

START_TEST(t_half_round_trips) {
  th_case_begin("f16/bf16 conversions: every half value round-trips");
  for (uint32_t h = 0; h < 0x10000; h++) {
    uint16_t x = (uint16_t)h;
    int f16_nan = (x & 0x7c00) == 0x7c00 && (x & 0x3ff);
    int bf_nan = (x & 0x7f80) == 0x7f80 && (x & 0x7f);
    if (!f16_nan) ck_assert_msg(ref_f32_to_f16(ref_f16_to_f32(x)) == x, "f16 0x%04x", h);
    else ck_assert(isnan(ref_f16_to_f32(x)));
    if (!bf_nan) ck_assert_msg(ref_f32_to_bf16(ref_bf16_to_f32(x)) == x, "bf16 0x%04x", h);
    else ck_assert(isnan(ref_bf16_to_f32(x)));
  }
  th_finish_case();
}
END_TEST

/* Round to nearest even by brute force: of the two neighbours in the target set, the nearer (ties to the
 * even bit pattern). Independent of the bit tricks in reference.c. */
static uint16_t nearest(float x, float (*to_f32)(uint16_t), uint16_t below) {
  double lo = to_f32(below), hi = to_f32((uint16_t)(below + 1)), d = fabs((double)x);
  if (isinf(hi)) hi = 2 * (double)to_f32((uint16_t)(below & 0xff80)); /* next power of two */
  if (d - lo < hi - d) return below;
  if (d - lo > hi - d) return (uint16_t)(below + 1);
  return (below & 1) ? (uint16_t)(below + 1) : below;
}

START_TEST(t_half_rounding_sampled) {
  th_case_begin("f16/bf16 conversions: rounding of sampled floats");
  for (uint64_t u = 0; u < 0x7f800000; u += 4099) {
    float x = float_of((uint32_t)u);
    /* bf16: the pattern just below |x| is x's top 16 bits (truncation). */
    uint16_t want_bf = nearest(x, ref_bf16_to_f32, (uint16_t)(u >> 16));
    ck_assert_msg(ref_f32_to_bf16(x) == want_bf, "bf16(%a)", (double)x);
#ifdef __FLT16_MAX__
    _Float16 hx = (_Float16)x;
    uint16_t want_h;
    memcpy(&want_h, &hx, 2);
    ck_assert_msg(ref_f32_to_f16(x) == want_h, "f16(%a) = 0x%04x, compiler 0x%04x", (double)x,
                  ref_f32_to_f16(x), want_h);
    ck_assert(ref_f32_to_f16(-x) == (want_h | 0x8000));
#endif
  }
  th_finish_case();
}
END_TEST

START_TEST(t_rel_error) {
  th_case_begin("relative error helpers");
  double a[3] = {1, 2, 2}, b[3] = {1, 2, 3};
  ck_assert_double_eq_tol(ref_rel_error(a, b, 3), 1 / sqrt(14.0), 1e-15);
  ck_assert_double_eq(ref_rel_error(b, b, 3), 0);
  double c[2] = {NAN, 0};
  ck_assert(isnan(ref_rel_error(c, b, 2)));
  double l1[3] = {-INFINITY, 5.0, 100.0}, l2[3] = {-INFINITY, 5.001, 100.5};
  ck_assert_double_eq_tol(ref_max_abs_error_scaled(l2, l1, 3), 0.005, 1e-12);
  double l3[1] = {-1e30};
  ck_assert(isinf(ref_max_abs_error_scaled(l3, l1, 1)));
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("reference");
  TCase *tc = tcase_create("reference");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_backward_vs_finite_differences, 0, (int)(sizeof fd_cases / sizeof fd_cases[0]));
  tcase_add_loop_test(tc, t_backward_infer_vs_finite_differences, 0, 5);
  tcase_add_test(tc, t_band_vs_reference);
  tcase_add_loop_test(tc, t_backward_masked_vs_finite_differences, 0,
                      3 * (int)(sizeof fd_mask_cases / sizeof fd_mask_cases[0]));
  tcase_add_test(tc, t_forward_closed_forms);
  tcase_add_test(tc, t_forward_masks_closed_forms);
  tcase_add_test(tc, t_expand_block_mask);
  tcase_add_test(tc, t_philox_known_answers);
  tcase_add_test(tc, t_half_known_values);
  tcase_add_test(tc, t_half_round_trips);
  tcase_add_test(tc, t_half_rounding_sampled);
  tcase_add_test(tc, t_rel_error);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return th_main(make_suite(), 0);
}
