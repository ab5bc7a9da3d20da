/* The float64 reference checked on its own, with no device: every other suite trusts it.
 * - backward against central finite differences of the scalar loss L = sum(dO ∘ O) on tiny cases;
 * - forward against closed forms (one key: o = v; equal keys: o = mean of v; masked rows);
 * - float16 / bfloat16 conversions against known values, exhaustive round trips and an independent
 *   rounding (the compiler's _Float16 where it has one). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

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
  size_t nq = ref_q_elems(p), nkv = ref_kv_elems(p);
  double *q = alloc_random(nq, &r), *k = alloc_random(nkv, &r), *v = alloc_random(nkv, &r);
  double *dout = alloc_random(nq, &r);
  double *dq = malloc(nq * sizeof(double)), *dk = malloc(nkv * sizeof(double)),
         *dv = malloc(nkv * sizeof(double));
  ck_assert(dq && dk && dv);
  ck_assert_int_eq(ref_backward(p, q, k, v, dout, dq, dk, dv), 0);
  double eq = fd_error(p, q, k, v, dout, q, nq, dq);
  double ek = fd_error(p, q, k, v, dout, k, nkv, dk);
  double ev = fd_error(p, q, k, v, dout, v, nkv, dv);
  ck_assert_msg(eq < 1e-7 && ek < 1e-7 && ev < 1e-7, "%s (seed %llu): dq %.3g dk %.3g dv %.3g", th_case(),
                (unsigned long long)th_case_seed(_i), eq, ek, ev);
  /* Fully masked rows: zero gradient, exactly. */
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t i = 0; i < p->seqlen_q; i++) {
      if (ref_visible(p, i, 0)) continue;
      for (int64_t h = 0; h < p->heads_q; h++)
        for (int64_t d = 0; d < p->head_dim; d++)
          ck_assert(dq[((b * p->seqlen_q + i) * p->heads_q + h) * p->head_dim + d] == 0.0);
    }
  free(q), free(k), free(v), free(dout), free(dq), free(dk), free(dv);
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
  tcase_add_test(tc, t_forward_closed_forms);
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
