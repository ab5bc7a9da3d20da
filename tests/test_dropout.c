/* Dropout (desc->dropout_p, _seed, _offset) on every backend that answers.
 *
 * The mask is a function of (seed, offset, batch, head, row, column) through Philox-4x32-10, written once in
 * kernels/masks.h; the tests include that file and compute the mask on the host:
 *   fa_dropout_mask against fa_dropout_keep on the host, bit for bit, in several layouts (poison left outside);
 *   the kept fraction within 4 sigma of 1 - p over 2^20 elements (p = 0.1 and 0.5);
 *   p = 0: every element kept, and the forward bit-identical to a call without dropout;
 *   the same seed and offset: the same mask and the same forward bits; another seed, or another offset: masks
 *   that differ in a fraction within 4 sigma of 2p(1 - p);
 *   the forward's dropped pattern read out exactly (q = 0 so P is uniform, v_j = e_j so o_ij = P z_ij s) and
 *   the backward's (dout_i = e_i, so dv_ji = P z_ij s): both equal to the host's mask;
 *   forward (o, lse) and backward (from the reference's o and lse) against the reference given the
 *   materialised mask, with causal, GQA, a block mask on top, f32 and one f16 case;
 *   with two backends (CUDA and OpenCL on one machine): their masks and dropped patterns identical.
 * Kernel variants are a compile each on PoCL: D = 32 throughout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/masks.h"

/* The drop threshold the library derives from p (api.c): round(p · 2^32), P(drop) = threshold / 2^32. */
static uint32_t threshold_of(float p) {
  const double t = nearbyint((double)p * 4294967296.0);
  return t > 4294967295.0 ? 0xffffffffu : (uint32_t)t;
}

/* The mask on the host, packed [B, H, Sq, Sk]: 1 kept, 0 dropped. */
static void host_mask(const fa_attention_desc *desc, int64_t B, int64_t H, int64_t Sq, int64_t Sk, uint8_t *out) {
  const uint32_t t = threshold_of(desc->dropout_p);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < Sq; i++)
        for (int64_t j = 0; j < Sk; j++)
          out[((b * H + h) * Sq + i) * Sk + j] = (uint8_t)fa_dropout_keep(
              desc->dropout_seed, desc->dropout_offset, t, (uint32_t)(b * H + h), (uint32_t)i, (uint32_t)j);
}

/* fa_dropout_mask on backend bi into a fresh poisoned u8 tensor of shape [B, H, Sq, Sk] in `layout` with
 * `offset` bytes before it; returns the mask packed (malloc'ed), having checked that nothing was written
 * outside the tensor and that every element is 0 or 1. */
static uint8_t *device_mask(int bi, const fa_attention_desc *desc, int64_t B, int64_t H, int64_t Sq, int64_t Sk,
                            th_layout layout, int64_t offset) {
  fa_context *ctx = th_context(bi);
  const char *be = th_backend_label(bi);
  const int64_t shape[4] = {B, H, Sq, Sk};
  th_tensor m;
  ck_assert_int_eq(th_tensor_create(&m, ctx, FA_U8, shape, layout, offset), FA_SUCCESS);
  fa_status st = fa_dropout_mask(ctx, desc, &m.t);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_dropout_mask: %s: %s", th_case(), be, fa_status_string(st),
                fa_context_last_error(ctx));
  st = fa_synchronize(ctx);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_synchronize: %s: %s", th_case(), be, fa_status_string(st),
                fa_context_last_error(ctx));
  int outside_ok = 0;
  ck_assert_int_eq(th_tensor_download(&m, &outside_ok), FA_SUCCESS);
  ck_assert_msg(outside_ok, "%s: %s: fa_dropout_mask wrote outside the mask (gaps, offset or past the end)",
                th_case(), be);
  uint8_t *out = malloc(m.elems);
  ck_assert_ptr_nonnull(out);
  /* One assertion at the end: Check writes a record per ck_assert, a system call each. */
  size_t bad = m.elems;
  for (size_t e = m.elems; e-- > 0;) {
    if (m.host[e] != 0 && m.host[e] != 1) bad = e;
    out[e] = (uint8_t)m.host[e];
  }
  ck_assert_msg(bad == m.elems, "%s: %s: mask element %zu is %g (%s), want 0 or 1", th_case(), be, bad,
                bad < m.elems ? m.host[bad] : 0.0, bad < m.elems && m.host[bad] == 0xa5 ? "never written" : "a value");
  th_tensor_destroy(&m);
  return out;
}

/* Index of the first difference of two masks, or -1. */
static int64_t first_difference(const uint8_t *a, const uint8_t *b, size_t n) {
  for (size_t e = 0; e < n; e++)
    if (a[e] != b[e]) return (int64_t)e;
  return -1;
}

static void expect_same_mask(const char *what, const uint8_t *got, const uint8_t *want, int64_t B, int64_t H,
                             int64_t Sq, int64_t Sk) {
  (void)B;
  const int64_t e = first_difference(got, want, (size_t)(B * H * Sq * Sk));
  ck_assert_msg(e < 0, "%s: %s: first difference at b %lld h %lld row %lld col %lld: %d, want %d", th_case(), what,
                (long long)(e / (H * Sq * Sk)), (long long)(e / (Sq * Sk) % H), (long long)(e / Sk % Sq),
                (long long)(e % Sk), e < 0 ? 0 : got[e], e < 0 ? 0 : want[e]);
}

/* ---- the mask itself ---- */

typedef struct mask_case {
  int64_t B, H, Sq, Sk;
  float p;
  uint64_t seed;
  uint32_t offset;
  th_layout layout;
  int64_t tensor_offset;
} mask_case;

static const mask_case mask_cases[] = {
    {2, 3, 37, 50, 0.3f, 0x0123456789abcdefull, 0, TH_PACKED, 0},
    {1, 2, 100, 33, 0.5f, 42, 7, TH_PADDED, 3},
    {3, 1, 17, 129, 0.1f, 0x8000000000000005ull, 0xffffffffu, TH_BHSD, 0},
    {1, 1, 1, 1, 0.9f, 1, 1, TH_BHSD_PADDED, 1},
};

START_TEST(t_mask_vs_host) {
  const mask_case *c = &mask_cases[_i];
  th_case_begin("fa_dropout_mask vs the host: [%lld, %lld, %lld, %lld] p=%g seed=0x%llx offset=%u layout %d",
                (long long)c->B, (long long)c->H, (long long)c->Sq, (long long)c->Sk, (double)c->p,
                (unsigned long long)c->seed, c->offset, (int)c->layout);
  fa_attention_desc desc = {0};
  desc.dropout_p = c->p, desc.dropout_seed = c->seed, desc.dropout_offset = c->offset;
  uint8_t *want = malloc((size_t)(c->B * c->H * c->Sq * c->Sk));
  ck_assert_ptr_nonnull(want);
  host_mask(&desc, c->B, c->H, c->Sq, c->Sk, want);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    uint8_t *got = device_mask(bi, &desc, c->B, c->H, c->Sq, c->Sk, c->layout, c->tensor_offset);
    expect_same_mask(th_backend_label(bi), got, want, c->B, c->H, c->Sq, c->Sk);
    free(got);
    th_ran(bi);
  }
  free(want);
  th_finish_case();
}
END_TEST

START_TEST(t_kept_fraction) {
  const float p = _i == 0 ? 0.1f : 0.5f;
  const int64_t B = 1, H = 4, S = 512;
  const double n = (double)(B * H * S * S);
  th_case_begin("dropout p=%g: kept fraction within 4 sigma of 1 - p over %.0f elements, and equal to the host's",
                (double)p, n);
  fa_attention_desc desc = {0};
  desc.dropout_p = p, desc.dropout_seed = th_case_seed(10 + _i), desc.dropout_offset = (uint32_t)_i;
  uint8_t *want = malloc((size_t)n);
  ck_assert_ptr_nonnull(want);
  host_mask(&desc, B, H, S, S, want);
  const double q = (double)threshold_of(p) / 4294967296.0, sigma = sqrt(n * q * (1 - q));
  for (int bi = 0; bi < th_backend_count(); bi++) {
    uint8_t *got = device_mask(bi, &desc, B, H, S, S, TH_PACKED, 0);
    double kept = 0;
    for (size_t e = 0; e < (size_t)n; e++) kept += got[e];
    th_diag("%s: %s: kept %.0f of %.0f (%.5f; expected %.5f, sigma %.0f elements)", th_case(), th_backend_label(bi),
            kept, n, kept / n, 1 - q, sigma);
    ck_assert_msg(fabs(kept - n * (1 - q)) <= 4 * sigma, "%s: %s: kept %.0f, expected %.0f +- %.0f (4 sigma)",
                  th_case(), th_backend_label(bi), kept, n * (1 - q), 4 * sigma);
    expect_same_mask(th_backend_label(bi), got, want, B, H, S, S);
    free(got);
    th_ran(bi);
  }
  free(want);
  th_finish_case();
}
END_TEST

START_TEST(t_other_seed_or_offset) {
  const float p = 0.3f;
  const int64_t B = 2, H = 2, S = 256;
  const double n = (double)(B * H * S * S), q = 2 * (double)p * (1 - (double)p), sigma = sqrt(q * (1 - q) / n);
  th_case_begin("dropout p=%g: the same seed and offset give the same mask; another seed or offset one that "
                "differs in 2p(1-p) = %.2f of %.0f elements (4 sigma = %.4f)", (double)p, q, n, 4 * sigma);
  fa_attention_desc a = {0};
  a.dropout_p = p, a.dropout_seed = 0x5eed0000000000f1ull, a.dropout_offset = 11;
  fa_attention_desc other_seed = a, other_offset = a;
  other_seed.dropout_seed ^= 1;
  other_offset.dropout_offset += 1;
  for (int bi = 0; bi < th_backend_count(); bi++) {
    uint8_t *m1 = device_mask(bi, &a, B, H, S, S, TH_PACKED, 0);
    uint8_t *m2 = device_mask(bi, &a, B, H, S, S, TH_PADDED, 1);
    expect_same_mask("same seed and offset twice", m2, m1, B, H, S, S);
    const uint8_t *others[2] = {device_mask(bi, &other_seed, B, H, S, S, TH_PACKED, 0),
                                device_mask(bi, &other_offset, B, H, S, S, TH_PACKED, 0)};
    for (int x = 0; x < 2; x++) {
      double diff = 0;
      for (size_t e = 0; e < (size_t)n; e++) diff += m1[e] != others[x][e];
      th_diag("%s: %s: %s: %.4f of the elements differ", th_case(), th_backend_label(bi),
              x ? "offset + 1" : "seed ^ 1", diff / n);
      ck_assert_msg(fabs(diff / n - q) <= 4 * sigma, "%s: %s: %s: %.4f of the mask differs, expected %.4f +- %.4f",
                    th_case(), th_backend_label(bi), x ? "offset + 1" : "seed ^ 1", diff / n, q, 4 * sigma);
      free((void *)others[x]);
    }
    free(m1);
    free(m2);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* ---- attention with dropout ---- */

typedef struct operands {
  th_tensor q, k, v, o, lse, dout, dq, dk, dv, mask;
} operands;

typedef struct drop_case {
  fa_dtype dtype;
  int head_dim, batch, seqlen_q, seqlen_k, heads_q, heads_kv;
  int causal;
  float p;
  int block_q, block_k; /* 0: no block mask; else a random one (density 0.6) of shape [B, H, ...] */
  th_layout in, out;
} drop_case;

static void create_operands(fa_context *ctx, const drop_case *c, operands *t) {
  const int64_t qshape[4] = {c->batch, c->seqlen_q, c->heads_q, c->head_dim};
  const int64_t kshape[4] = {c->batch, c->seqlen_k, c->heads_kv, c->head_dim};
  const int64_t lshape[4] = {c->batch, c->heads_q, c->seqlen_q, 1};
  memset(t, 0, sizeof *t);
  ck_assert_int_eq(th_tensor_create(&t->q, ctx, c->dtype, qshape, c->in, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->k, ctx, c->dtype, kshape, c->in, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->v, ctx, c->dtype, kshape, c->in, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dout, ctx, c->dtype, qshape, c->in, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->o, ctx, c->dtype, qshape, c->out, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->lse, ctx, FA_F32, lshape, c->out, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dq, ctx, c->dtype, qshape, c->out, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dk, ctx, c->dtype, kshape, c->out, 0), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_create(&t->dv, ctx, c->dtype, kshape, c->out, 0), FA_SUCCESS);
  if (c->block_q) {
    const int64_t mshape[4] = {c->batch, c->heads_q, (c->seqlen_q + c->block_q - 1) / c->block_q,
                               (c->seqlen_k + c->block_k - 1) / c->block_k};
    ck_assert_int_eq(th_tensor_create(&t->mask, ctx, FA_U8, mshape, TH_PADDED, 2), FA_SUCCESS);
  }
}

static void destroy_operands(operands *t) {
  th_tensor *all[] = {&t->q, &t->k, &t->v, &t->o, &t->lse, &t->dout, &t->dq, &t->dk, &t->dv, &t->mask};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (all[i]->host) th_tensor_destroy(all[i]);
}

static void expect_success(int bi, const char *call, fa_status st) {
  fa_context *ctx = th_context(bi);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: %s: %s: %s", th_case(), th_backend_label(bi), call, fa_status_string(st),
                fa_context_last_error(ctx));
  st = fa_synchronize(ctx);
  ck_assert_msg(st == FA_SUCCESS, "%s: %s: fa_synchronize after %s: %s: %s", th_case(), th_backend_label(bi), call,
                fa_status_string(st), fa_context_last_error(ctx));
}

static fa_status call_forward(int bi, const fa_attention_desc *desc, operands *t) {
  return fa_forward(th_context(bi), desc, &t->q.t, &t->k.t, &t->v.t, &t->o.t, &t->lse.t);
}

static fa_status call_backward(int bi, const fa_attention_desc *desc, operands *t) {
  return fa_backward(th_context(bi), desc, &t->q.t, &t->k.t, &t->v.t, &t->o.t, &t->lse.t, &t->dout.t, &t->dq.t,
                     &t->dk.t, &t->dv.t);
}

/* Runs the forward into freshly poisoned o and lse and downloads them (nothing written outside). */
static void run_forward(int bi, const fa_attention_desc *desc, operands *t) {
  ck_assert_int_eq(th_tensor_poison(&t->o), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_poison(&t->lse), FA_SUCCESS);
  expect_success(bi, "fa_forward", call_forward(bi, desc, t));
  int o_ok = 0, l_ok = 0;
  ck_assert_int_eq(th_tensor_download(&t->o, &o_ok), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_download(&t->lse, &l_ok), FA_SUCCESS);
  ck_assert_msg(o_ok && l_ok, "%s: %s: wrote outside o (%s) or lse (%s)", th_case(), th_backend_label(bi),
                o_ok ? "ok" : "written", l_ok ? "ok" : "written");
}

static const drop_case p0_case = {FA_F32, 32, 2, 70, 90, 4, 2, 1, 0.0f, 0, 0, TH_PACKED, TH_PACKED};

START_TEST(t_p_zero) {
  th_case_begin("dropout p=0 (seed and offset set): the mask is all ones, the forward is the dense one bit for bit");
  const drop_case *c = &p0_case;
  fa_attention_desc desc = {0};
  desc.causal = c->causal, desc.dropout_p = 0.0f, desc.dropout_seed = 12345, desc.dropout_offset = 6;
  for (int bi = 0; bi < th_backend_count(); bi++) {
    uint8_t *m = device_mask(bi, &desc, 2, 3, 20, 33, TH_PADDED, 1);
    size_t zeros = 0;
    for (size_t e = 0; e < 2 * 3 * 20 * 33; e++) zeros += m[e] != 1;
    ck_assert_msg(zeros == 0, "%s: %s: %zu mask elements are 0", th_case(), th_backend_label(bi), zeros);
    free(m);
    operands t;
    th_rng r;
    th_rng_init(&r, th_case_seed(20));
    create_operands(th_context(bi), c, &t);
    ck_assert_int_eq(th_tensor_fill_random(&t.q, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.k, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.v, &r, 1.0), FA_SUCCESS);
    run_forward(bi, &desc, &t);
    double *o1 = malloc(t.o.elems * sizeof(double)), *l1 = malloc(t.lse.elems * sizeof(double));
    ck_assert(o1 && l1);
    memcpy(o1, t.o.host, t.o.elems * sizeof(double));
    memcpy(l1, t.lse.host, t.lse.elems * sizeof(double));
    fa_attention_desc dense = {0};
    dense.causal = c->causal;
    run_forward(bi, &dense, &t);
    ck_assert_msg(memcmp(o1, t.o.host, t.o.elems * sizeof(double)) == 0 &&
                      memcmp(l1, t.lse.host, t.lse.elems * sizeof(double)) == 0,
                  "%s: %s: p = 0 differs from no dropout", th_case(), th_backend_label(bi));
    free(o1);
    free(l1);
    destroy_operands(&t);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

START_TEST(t_same_seed_same_forward) {
  th_case_begin("dropout p=0.2: the same seed and offset give the same forward bits twice");
  const drop_case c = {FA_F32, 32, 1, 64, 64, 2, 2, 0, 0.2f, 0, 0, TH_PACKED, TH_PACKED};
  fa_attention_desc desc = {0};
  desc.dropout_p = c.p, desc.dropout_seed = 99, desc.dropout_offset = 3;
  for (int bi = 0; bi < th_backend_count(); bi++) {
    operands t;
    th_rng r;
    th_rng_init(&r, th_case_seed(21));
    create_operands(th_context(bi), &c, &t);
    ck_assert_int_eq(th_tensor_fill_random(&t.q, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.k, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.v, &r, 1.0), FA_SUCCESS);
    run_forward(bi, &desc, &t);
    double *o1 = malloc(t.o.elems * sizeof(double));
    ck_assert_ptr_nonnull(o1);
    memcpy(o1, t.o.host, t.o.elems * sizeof(double));
    run_forward(bi, &desc, &t);
    ck_assert_msg(memcmp(o1, t.o.host, t.o.elems * sizeof(double)) == 0, "%s: %s: two forwards differ", th_case(),
                  th_backend_label(bi));
    free(o1);
    destroy_operands(&t);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* The dropped pattern of the forward and the backward, read out exactly. q = 0: every score is 0, P = 1 / Sk
 * on every key; v_j = e_j (Sk = D), so o_ij = z_ij · s / Sk: zero exactly where dropped. Backward with
 * dout_i = e_i (Sq = D): dv_j[i] = P_ij z_ij s = z_ij · s / Sk. Fills pattern (packed [B, H, Sq, Sk]) with
 * the forward's pattern and checks the backward's against it. */
enum { RO_B = 2, RO_H = 2, RO_S = 32 };

static void readout_patterns(int bi, const fa_attention_desc *desc, uint8_t *fwd_pattern) {
  const drop_case c = {FA_F32, RO_S, RO_B, RO_S, RO_S, RO_H, RO_H, 0, desc->dropout_p, 0, 0, TH_PACKED, TH_PACKED};
  const double s = 1.0 / (1.0 - (double)desc->dropout_p);
  const char *be = th_backend_label(bi);
  operands t;
  create_operands(th_context(bi), &c, &t);
  const int64_t D = RO_S;
  for (int64_t b = 0; b < RO_B; b++)
    for (int64_t x = 0; x < RO_S; x++)
      for (int64_t h = 0; h < RO_H; h++)
        for (int64_t d = 0; d < D; d++) {
          const size_t at = (size_t)(((b * RO_S + x) * RO_H + h) * D + d);
          t.q.host[at] = 0;
          t.k.host[at] = 0.5; /* any value: the scores are 0 */
          t.v.host[at] = d == x;
          t.dout.host[at] = d == x;
        }
  ck_assert_int_eq(th_tensor_upload(&t.q), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&t.k), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&t.v), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&t.dout), FA_SUCCESS);
  run_forward(bi, desc, &t);
  const double want = s / RO_S;
  int64_t bad = -1; /* the first wrong element's index into o: one assertion, not one per element */
  for (int64_t b = 0; b < RO_B; b++)
    for (int64_t h = 0; h < RO_H; h++)
      for (int64_t i = 0; i < RO_S; i++)
        for (int64_t j = 0; j < RO_S; j++) {
          const int64_t at = ((b * RO_S + i) * RO_H + h) * D + j;
          const double x = t.o.host[at];
          if (bad < 0 && !(x == 0 || fabs(x - want) <= 1e-6 * want)) bad = at;
          fwd_pattern[((b * RO_H + h) * RO_S + i) * RO_S + j] = x != 0;
        }
  ck_assert_msg(bad < 0, "%s: %s: o[b %lld, row %lld, h %lld, %lld] = %.9g: neither 0 nor s / Sk = %.9g", th_case(), be,
                (long long)(bad / (RO_S * RO_H * D)), (long long)(bad / (RO_H * D) % RO_S), (long long)(bad / D % RO_H),
                (long long)(bad % D), bad < 0 ? 0.0 : t.o.host[bad], want);
  /* o and lse as the forward left them are the backward's inputs. */
  ck_assert_int_eq(th_tensor_upload(&t.o), FA_SUCCESS);
  ck_assert_int_eq(th_tensor_upload(&t.lse), FA_SUCCESS);
  expect_success(bi, "fa_backward", call_backward(bi, desc, &t));
  int ok = 0;
  ck_assert_int_eq(th_tensor_download(&t.dv, &ok), FA_SUCCESS);
  ck_assert_msg(ok, "%s: %s: wrote outside dv", th_case(), be);
  int64_t bad_b = 0, bad_h = 0, bad_i = 0, bad_j = 0, wrong = 0;
  for (int64_t b = 0; b < RO_B; b++)
    for (int64_t h = 0; h < RO_H; h++)
      for (int64_t i = 0; i < RO_S; i++)
        for (int64_t j = 0; j < RO_S; j++) {
          const double x = t.dv.host[((b * RO_S + j) * RO_H + h) * D + i];
          const int kept = fwd_pattern[((b * RO_H + h) * RO_S + i) * RO_S + j];
          if (!(kept ? fabs(x - want) <= 1e-5 * want : x == 0) && !wrong++) bad_b = b, bad_h = h, bad_i = i, bad_j = j;
        }
  const int kept = fwd_pattern[((bad_b * RO_H + bad_h) * RO_S + bad_i) * RO_S + bad_j];
  ck_assert_msg(wrong == 0, "%s: %s: %lld wrong; first: dv[b %lld, key %lld, h %lld, %lld] = %.9g, but the forward %s "
                "score (%lld, %lld)", th_case(), be, (long long)wrong, (long long)bad_b, (long long)bad_j,
                (long long)bad_h, (long long)bad_i, t.dv.host[((bad_b * RO_S + bad_j) * RO_H + bad_h) * D + bad_i],
                kept ? "kept" : "dropped", (long long)bad_i, (long long)bad_j);
  destroy_operands(&t);
}

START_TEST(t_readout) {
  const float p = _i == 0 ? 0.5f : 0.1f;
  th_case_begin("dropout p=%g: the forward's and the backward's dropped patterns, read out exactly, are the host's "
                "mask and fa_dropout_mask's", (double)p);
  fa_attention_desc desc = {0};
  desc.dropout_p = p, desc.dropout_seed = th_case_seed(30 + _i), desc.dropout_offset = 5 + (uint32_t)_i;
  const size_t n = RO_B * RO_H * RO_S * RO_S;
  uint8_t *want = malloc(n), *pattern = malloc(n);
  ck_assert(want && pattern);
  host_mask(&desc, RO_B, RO_H, RO_S, RO_S, want);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    readout_patterns(bi, &desc, pattern);
    expect_same_mask("forward's dropped pattern vs the host's mask", pattern, want, RO_B, RO_H, RO_S, RO_S);
    uint8_t *m = device_mask(bi, &desc, RO_B, RO_H, RO_S, RO_S, TH_PACKED, 0);
    expect_same_mask("fa_dropout_mask vs the host's mask", m, want, RO_B, RO_H, RO_S, RO_S);
    free(m);
    th_ran(bi);
  }
  free(want);
  free(pattern);
  th_finish_case();
}
END_TEST

/* CUDA and OpenCL drop the same scores: masks byte for byte, and the forwards' read-out patterns. */
START_TEST(t_backends_agree) {
  th_case_begin("dropout: every backend materialises the same mask and drops the same scores");
  fa_attention_desc desc = {0};
  desc.dropout_p = 0.3f, desc.dropout_seed = th_case_seed(40), desc.dropout_offset = 77;
  const int64_t B = 2, H = 3, Sq = 70, Sk = 90;
  const size_t nr = RO_B * RO_H * RO_S * RO_S;
  uint8_t *first = NULL, *first_pattern = malloc(nr), *pattern = malloc(nr);
  ck_assert(first_pattern && pattern);
  if (th_backend_count() < 2) th_unsupported(0, "only one backend answers here: nothing to compare");
  for (int bi = 0; bi < th_backend_count() && th_backend_count() >= 2; bi++) {
    uint8_t *m = device_mask(bi, &desc, B, H, Sq, Sk, bi ? TH_BHSD : TH_PACKED, 0);
    readout_patterns(bi, &desc, bi ? pattern : first_pattern);
    if (bi == 0) {
      first = m;
      continue;
    }
    char what[128];
    snprintf(what, sizeof what, "%s's mask vs %s's", th_backend_label(bi), th_backend_label(0));
    expect_same_mask(what, m, first, B, H, Sq, Sk);
    snprintf(what, sizeof what, "%s's forward's dropped pattern vs %s's", th_backend_label(bi), th_backend_label(0));
    expect_same_mask(what, pattern, first_pattern, RO_B, RO_H, RO_S, RO_S);
    free(m);
    th_ran(bi);
  }
  free(first);
  free(first_pattern);
  free(pattern);
  th_finish_case();
}
END_TEST

/* dtype, D, B, Sq, Sk, Hq, Hkv, causal, p, block_q, block_k, in, out */
static const drop_case cases[] = {
    {FA_F32, 32, 2, 100, 77, 4, 2, 0, 0.2f, 0, 0, TH_PACKED, TH_PACKED},   /* GQA */
    {FA_F32, 32, 1, 130, 100, 2, 2, 1, 0.5f, 0, 0, TH_BHSD, TH_PADDED},    /* causal, Sq > Sk: rows masked */
    {FA_F32, 32, 2, 64, 96, 2, 1, 0, 0.3f, 16, 32, TH_PACKED, TH_PACKED},  /* a block mask on top, MQA */
    {FA_F32, 32, 1, 77, 150, 2, 2, 1, 0.1f, 24, 40, TH_PADDED, TH_PACKED}, /* block mask and causal */
    {FA_F16, 32, 1, 100, 130, 4, 2, 1, 0.15f, 0, 0, TH_PACKED, TH_PACKED},
    {FA_F16, 128, 1, 1024, 1024, 2, 2, 1, 0.1f, 64, 64, TH_PACKED, TH_PACKED}, /* the GPU kernels' main path */
    {FA_BF16, 64, 1, 512, 700, 2, 1, 0, 0.2f, 0, 0, TH_PACKED, TH_PACKED},
    {FA_BF16, 256, 1, 96, 130, 2, 1, 1, 0.2f, 0, 0, TH_PACKED, TH_PACKED}, /* OpenCL on NVIDIA: split head dim */
};

START_TEST(t_attention) {
  const drop_case *c = &cases[_i];
  char blocks[48] = "";
  if (c->block_q) snprintf(blocks, sizeof blocks, " block mask %dx%d", c->block_q, c->block_k);
  th_case_begin("dropout p=%g %s D=%d B=%d Sq=%d Sk=%d Hq=%d Hkv=%d%s%s: forward and backward vs the reference "
                "given the materialised mask", (double)c->p, fa_dtype_name(c->dtype), c->head_dim, c->batch,
                c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->causal ? " causal" : "", blocks);
  const uint64_t seed = th_case_seed(50 + _i);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    const char *be = th_backend_label(bi);
    th_rng r;
    th_rng_init(&r, seed);
    operands t;
    create_operands(th_context(bi), c, &t);
    ck_assert_int_eq(th_tensor_fill_random(&t.q, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.k, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.v, &r, 1.0), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_fill_random(&t.dout, &r, 1.0), FA_SUCCESS);
    fa_attention_desc desc = {0};
    desc.causal = c->causal;
    desc.dropout_p = c->p, desc.dropout_seed = th_rng_next(&r), desc.dropout_offset = (uint32_t)th_rng_next(&r);
    ref_problem p = {c->batch, c->seqlen_q, c->seqlen_k, c->heads_q, c->heads_kv, c->head_dim,
                     1.0 / sqrt((double)c->head_dim), c->causal};
    const size_t ns = ref_score_elems(&p);
    uint8_t *keep = NULL;
    if (c->block_q) {
      uint8_t *bm = malloc(t.mask.elems);
      keep = malloc(ns);
      ck_assert(bm && keep);
      for (size_t e = 0; e < t.mask.elems; e++) t.mask.host[e] = bm[e] = th_rng_uniform(&r) < 0.6;
      ck_assert_int_eq(th_tensor_upload(&t.mask), FA_SUCCESS);
      ref_expand_block_mask(&p, bm, c->batch, c->heads_q, c->block_q, c->block_k, keep);
      free(bm);
      desc.block_mask = &t.mask.t, desc.block_q = c->block_q, desc.block_k = c->block_k;
      p.keep = keep;
    }
    /* The reference's dropout from the materialised mask (itself checked against the host's). */
    uint8_t *z = device_mask(bi, &desc, c->batch, c->heads_q, c->seqlen_q, c->seqlen_k, TH_PACKED, 0);
    uint8_t *zh = malloc(ns);
    double *mult = malloc(ns * sizeof(double));
    ck_assert(zh && mult);
    host_mask(&desc, c->batch, c->heads_q, c->seqlen_q, c->seqlen_k, zh);
    expect_same_mask(be, z, zh, c->batch, c->heads_q, c->seqlen_q, c->seqlen_k);
    const double s = 1.0 / (1.0 - (double)c->p);
    for (size_t e = 0; e < ns; e++) mult[e] = z[e] ? s : 0.0;
    p.dropout = mult;

    /* forward */
    run_forward(bi, &desc, &t);
    double *ro = malloc(t.o.elems * sizeof(double)), *rl = malloc(t.lse.elems * sizeof(double));
    ck_assert(ro && rl);
    ck_assert_int_eq(ref_forward(&p, t.q.host, t.k.host, t.v.host, ro, rl), 0);
    const double tol = th_tolerance(c->dtype);
    double err = ref_rel_error(t.o.host, ro, t.o.elems), lerr = ref_max_abs_error_scaled(t.lse.host, rl, t.lse.elems);
    size_t nans = th_count_nan(t.o.host, t.o.elems);
    ck_assert_msg(nans == 0 && err <= tol, "%s: %s (seed %llu): o: relative error %.3g (bound %.0e), %zu NaN",
                  th_case(), be, (unsigned long long)seed, err, tol, nans);
    ck_assert_msg(lerr <= 1e-3, "%s: %s (seed %llu): lse: error %.3g (bound 1e-3 · max(1, |lse|)); dropout must not "
                  "change it", th_case(), be, (unsigned long long)seed, lerr);
    for (int64_t b = 0; b < p.batch; b++)
      for (int64_t h = 0; h < p.heads_q; h++)
        for (int64_t i = 0; i < p.seqlen_q; i++)
          if (ref_row_empty(&p, b, h, i))
            for (int64_t d = 0; d < p.head_dim; d++)
              ck_assert_msg(t.o.host[((b * p.seqlen_q + i) * p.heads_q + h) * p.head_dim + d] == 0.0,
                            "%s: %s: row %lld of b %lld h %lld sees no key: o not 0", th_case(), be, (long long)i,
                            (long long)b, (long long)h);

    /* backward, from the reference's o and lse as stored */
    memcpy(t.o.host, ro, t.o.elems * sizeof(double));
    memcpy(t.lse.host, rl, t.lse.elems * sizeof(double));
    ck_assert_int_eq(th_tensor_upload(&t.o), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_upload(&t.lse), FA_SUCCESS);
    expect_success(bi, "fa_backward", call_backward(bi, &desc, &t));
    int ok_q = 0, ok_k = 0, ok_v = 0;
    ck_assert_int_eq(th_tensor_download(&t.dq, &ok_q), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_download(&t.dk, &ok_k), FA_SUCCESS);
    ck_assert_int_eq(th_tensor_download(&t.dv, &ok_v), FA_SUCCESS);
    ck_assert_msg(ok_q && ok_k && ok_v, "%s: %s: wrote outside dq, dk or dv", th_case(), be);
    const size_t nq = t.dq.elems, nkv = t.dk.elems;
    double *rq = malloc(nq * sizeof(double)), *rk = malloc(nkv * sizeof(double)), *rv = malloc(nkv * sizeof(double));
    ck_assert(rq && rk && rv);
    ck_assert_int_eq(ref_backward(&p, t.q.host, t.k.host, t.v.host, t.dout.host, rq, rk, rv), 0);
    double eq = ref_rel_error(t.dq.host, rq, nq), ek = ref_rel_error(t.dk.host, rk, nkv),
           ev = ref_rel_error(t.dv.host, rv, nkv);
    nans = th_count_nan(t.dq.host, nq) + th_count_nan(t.dk.host, nkv) + th_count_nan(t.dv.host, nkv);
    ck_assert_msg(nans == 0 && eq <= tol && ek <= tol && ev <= tol,
                  "%s: %s (seed %llu): backward: relative errors dq %.3g dk %.3g dv %.3g (bound %.0e), %zu NaN",
                  th_case(), be, (unsigned long long)seed, eq, ek, ev, tol, nans);
    for (int64_t b = 0; b < p.batch; b++)
      for (int64_t h = 0; h < p.heads_q; h++)
        for (int64_t i = 0; i < p.seqlen_q; i++)
          if (ref_row_empty(&p, b, h, i))
            for (int64_t d = 0; d < p.head_dim; d++)
              ck_assert_msg(t.dq.host[((b * p.seqlen_q + i) * p.heads_q + h) * p.head_dim + d] == 0.0,
                            "%s: %s: row %lld of b %lld h %lld sees no key: dq not 0", th_case(), be, (long long)i,
                            (long long)b, (long long)h);
    th_diag("%s: %s: errors o %.2g lse %.2g dq %.2g dk %.2g dv %.2g", th_case(), be, err, lerr, eq, ek, ev);
    ck_assert_msg(th_tensor_unchanged(&t.q) == 1 && th_tensor_unchanged(&t.k) == 1 && th_tensor_unchanged(&t.v) == 1 &&
                      th_tensor_unchanged(&t.dout) == 1 && th_tensor_unchanged(&t.o) == 1 &&
                      th_tensor_unchanged(&t.lse) == 1 && (!c->block_q || th_tensor_unchanged(&t.mask) == 1),
                  "%s: %s: an input was modified", th_case(), be);
    free(ro), free(rl), free(rq), free(rk), free(rv), free(z), free(zh), free(mult), free(keep);
    destroy_operands(&t);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("dropout");
  TCase *tc = tcase_create("dropout");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_mask_vs_host, 0, (int)(sizeof mask_cases / sizeof mask_cases[0]));
  tcase_add_loop_test(tc, t_kept_fraction, 0, 2);
  tcase_add_test(tc, t_other_seed_or_offset);
  tcase_add_test(tc, t_p_zero);
  tcase_add_test(tc, t_same_seed_same_forward);
  tcase_add_loop_test(tc, t_readout, 0, 2);
  tcase_add_test(tc, t_backends_agree);
  tcase_add_loop_test(tc, t_attention, 0, (int)(sizeof cases / sizeof cases[0]));
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return th_main(make_suite(), 1);
}
