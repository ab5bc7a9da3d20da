/* The float64 CPU reference: see reference.h. Plain loops over (batch, query head, query row), in the
 * order the formulas are written, so that a reader can check them against the paper line by line. */
#include "reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t ref_q_elems(const ref_problem *p) {
  return (size_t)(p->batch * p->seqlen_q * p->heads_q * p->head_dim);
}

size_t ref_kv_elems(const ref_problem *p) {
  return (size_t)(p->batch * p->seqlen_k * p->heads_kv * p->head_dim);
}

size_t ref_lse_elems(const ref_problem *p) {
  return (size_t)(p->batch * p->heads_q * p->seqlen_q);
}

size_t ref_score_elems(const ref_problem *p) {
  return (size_t)(p->batch * p->heads_q * p->seqlen_q * p->seqlen_k);
}

int ref_visible(const ref_problem *p, int64_t i, int64_t j) {
  return !p->causal || j <= i + (p->seqlen_k - p->seqlen_q);
}

/* Index of score (i, j) of (b, h) in keep and dropout. */
static size_t score_at(const ref_problem *p, int64_t b, int64_t h, int64_t i, int64_t j) {
  return (size_t)(((b * p->heads_q + h) * p->seqlen_q + i) * p->seqlen_k + j);
}

/* Keys in use by batch b, and the diagonal position of its query row i. */
static int64_t len_of(const ref_problem *p, int64_t b) { return p->seqlens_k ? p->seqlens_k[b] : p->seqlen_k; }
static int64_t diag_of(const ref_problem *p, int64_t b, int64_t i) { return i + len_of(p, b) - p->seqlen_q; }

int ref_visible_at(const ref_problem *p, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t diag = diag_of(p, b, i);
  if (j >= len_of(p, b) || (p->causal && j > diag)) return 0;
  if (p->window && p->window_left >= 0 && j < diag - p->window_left) return 0;
  if (p->window && p->window_right >= 0 && j > diag + p->window_right) return 0;
  return !p->keep || p->keep[score_at(p, b, h, i, j)] != 0;
}

int ref_row_empty(const ref_problem *p, int64_t b, int64_t h, int64_t i) {
  for (int64_t j = 0; j < p->seqlen_k; j++)
    if (ref_visible_at(p, b, h, i, j)) return 0;
  return 1;
}

void ref_expand_block_mask(const ref_problem *p, const uint8_t *mask, int64_t mask_batch, int64_t mask_heads,
                           int64_t block_q, int64_t block_k, uint8_t *keep) {
  const int64_t rows = (p->seqlen_q + block_q - 1) / block_q, cols = (p->seqlen_k + block_k - 1) / block_k;
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t h = 0; h < p->heads_q; h++) {
      const uint8_t *m = mask + ((mask_batch == 1 ? 0 : b) * mask_heads + (mask_heads == 1 ? 0 : h)) * rows * cols;
      for (int64_t i = 0; i < p->seqlen_q; i++)
        for (int64_t j = 0; j < p->seqlen_k; j++)
          keep[score_at(p, b, h, i, j)] = m[(i / block_q) * cols + j / block_k] != 0;
    }
}

static size_t q_at(const ref_problem *p, int64_t b, int64_t i, int64_t h) {
  return (size_t)(((b * p->seqlen_q + i) * p->heads_q + h) * p->head_dim);
}

static size_t kv_at(const ref_problem *p, int64_t b, int64_t j, int64_t hk) {
  return (size_t)(((b * p->seqlen_k + j) * p->heads_kv + hk) * p->head_dim);
}

/* Scaled scores of query row (b, i, h) against every key into s[0..Sk); masked keys get -INFINITY.
 * Returns the row's log-sum-exp (natural log), -INFINITY when every key is masked. */
static double score_row(const ref_problem *p, const double *q, const double *k, int64_t b, int64_t i,
                        int64_t h, double *s) {
  const int64_t D = p->head_dim, hk = h / (p->heads_q / p->heads_kv);
  const double *qi = q + q_at(p, b, i, h);
  double m = -INFINITY;
  for (int64_t j = 0; j < p->seqlen_k; j++) {
    if (!ref_visible_at(p, b, h, i, j)) {
      s[j] = -INFINITY;
      continue;
    }
    const double *kj = k + kv_at(p, b, j, hk);
    double dot = 0;
    for (int64_t d = 0; d < D; d++) dot += qi[d] * kj[d];
    s[j] = p->scale * dot;
    if (p->softcap > 0) s[j] = p->softcap * tanh(s[j] / p->softcap);
    if (p->alibi) s[j] -= p->alibi[(p->alibi_batch == 1 ? 0 : b) * p->heads_q + h] * fabs((double)(diag_of(p, b, i) - j));
    if (s[j] > m) m = s[j];
  }
  if (m == -INFINITY) return -INFINITY; /* all masked: no exp(-inf - -inf) */
  double sum = 0;
  for (int64_t j = 0; j < p->seqlen_k; j++)
    if (s[j] != -INFINITY) sum += exp(s[j] - m);
  return m + log(sum);
}

/* Dropout multiplier of score (i, j) of (b, h): 1 without dropout. */
static double drop_at(const ref_problem *p, int64_t b, int64_t h, int64_t i, int64_t j) {
  return p->dropout ? p->dropout[score_at(p, b, h, i, j)] : 1.0;
}

/* P row in place (s becomes exp(s - lse), 0 where masked) and o_i = (P ∘ dropout) v. */
static void finish_row(const ref_problem *p, const double *v, int64_t b, int64_t h, int64_t i, double lse, double *s,
                       double *oi) {
  const int64_t D = p->head_dim, hk = h / (p->heads_q / p->heads_kv);
  for (int64_t d = 0; d < D; d++) oi[d] = 0;
  for (int64_t j = 0; j < p->seqlen_k; j++) {
    s[j] = (lse == -INFINITY || s[j] == -INFINITY) ? 0 : exp(s[j] - lse);
    const double pd = s[j] * drop_at(p, b, h, i, j);
    if (pd == 0) continue;
    const double *vj = v + kv_at(p, b, j, hk);
    for (int64_t d = 0; d < D; d++) oi[d] += pd * vj[d];
  }
}

int ref_forward(const ref_problem *p, const double *q, const double *k, const double *v, double *o,
                double *lse) {
  double *s = malloc(sizeof(double) * (size_t)(p->seqlen_k > 0 ? p->seqlen_k : 1));
  if (!s) return -1;
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t h = 0; h < p->heads_q; h++)
      for (int64_t i = 0; i < p->seqlen_q; i++) {
        double l = score_row(p, q, k, b, i, h, s);
        finish_row(p, v, b, h, i, l, s, o + q_at(p, b, i, h));
        if (lse) lse[(b * p->heads_q + h) * p->seqlen_q + i] = l;
      }
  free(s);
  return 0;
}

/* Standard attention backward (FlashAttention paper, eq. in section 3.1 / appendix B.2), with dropout
 * multipliers Z (Algorithm 4): P = softmax(S), O = (P ∘ Z) V,
 *   dV = (P ∘ Z)ᵀ dO, dP = (dO Vᵀ) ∘ Z, Di = rowsum(dO ∘ O), dS = P ∘ (dP − Di),
 *   dQ = scale · dS K, dK = scale · dSᵀ Q.
 * (Di = Σ_j P_ij dP_ij still, since O already carries Z.) */
int ref_backward(const ref_problem *p, const double *q, const double *k, const double *v,
                 const double *dout, double *dq, double *dk, double *dv) {
  const int64_t D = p->head_dim, Sk = p->seqlen_k, group = p->heads_q / p->heads_kv;
  double *s = malloc(sizeof(double) * (size_t)(Sk > 0 ? Sk : 1));
  double *oi = malloc(sizeof(double) * (size_t)D);
  if (!s || !oi) {
    free(s);
    free(oi);
    return -1;
  }
  memset(dq, 0, sizeof(double) * ref_q_elems(p));
  memset(dk, 0, sizeof(double) * ref_kv_elems(p));
  memset(dv, 0, sizeof(double) * ref_kv_elems(p));
  for (int64_t b = 0; b < p->batch; b++)
    for (int64_t h = 0; h < p->heads_q; h++)
      for (int64_t i = 0; i < p->seqlen_q; i++) {
        const int64_t hk = h / group;
        const double *qi = q + q_at(p, b, i, h), *doi = dout + q_at(p, b, i, h);
        double *dqi = dq + q_at(p, b, i, h);
        double l = score_row(p, q, k, b, i, h, s);
        if (l == -INFINITY) continue; /* every key masked: P = 0, all gradients of this row are 0 */
        finish_row(p, v, b, h, i, l, s, oi);
        double di = 0;
        for (int64_t d = 0; d < D; d++) di += doi[d] * oi[d];
        for (int64_t j = 0; j < Sk; j++) {
          if (s[j] == 0) continue; /* masked (or underflowed: contributes nothing either way) */
          const double *kj = k + kv_at(p, b, j, hk), *vj = v + kv_at(p, b, j, hk);
          double *dkj = dk + kv_at(p, b, j, hk), *dvj = dv + kv_at(p, b, j, hk);
          const double z = drop_at(p, b, h, i, j);
          double dp = 0;
          for (int64_t d = 0; d < D; d++) dp += doi[d] * vj[d];
          dp *= z;
          double ds = s[j] * (dp - di);
          if (p->softcap > 0) { /* d/dx cap tanh(x / cap) = 1 - tanh^2 at x = scale q.k; ALiBi adds no factor */
            double dot = 0;
            for (int64_t d = 0; d < D; d++) dot += qi[d] * kj[d];
            const double t = tanh(p->scale * dot / p->softcap);
            ds *= 1 - t * t;
          }
          for (int64_t d = 0; d < D; d++) {
            dqi[d] += p->scale * ds * kj[d];
            dkj[d] += p->scale * ds * qi[d];
            dvj[d] += s[j] * z * doi[d];
          }
        }
      }
  free(s);
  free(oi);
  return 0;
}

double ref_rel_error(const double *a, const double *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

double ref_max_abs_error_scaled(const double *a, const double *b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    double e;
    if (isnan(a[i]) || isnan(b[i]))
      e = NAN;
    else if (isinf(a[i]) || isinf(b[i]))
      e = a[i] == b[i] ? 0 : INFINITY;
    else
      e = fabs(a[i] - b[i]) / fmax(1.0, fabs(b[i]));
    if (isnan(e)) return NAN;
    if (e > worst) worst = e;
  }
  return worst;
}

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

uint16_t ref_f32_to_f16(float x) {
  uint32_t u = f32_bits(x), sign = (u >> 16) & 0x8000, ax = u & 0x7fffffff;
  if (ax >= 0x7f800000) /* inf stays inf; NaN stays NaN, quiet, with its top payload bits */
    return (uint16_t)(sign | (ax > 0x7f800000 ? 0x7e00 | ((ax >> 13) & 0x3ff) : 0x7c00));
  if (ax >= 0x477ff000) /* 65520 and up round to infinity (65504 is the largest half) */
    return (uint16_t)(sign | 0x7c00);
  if (ax < 0x38800000) { /* below 2^-14: a subnormal half, in units of 2^-24 */
    int e = (int)(ax >> 23);
    if (e < 102) return (uint16_t)sign; /* below 2^-25: rounds to zero */
    uint32_t m = (ax & 0x7fffff) | 0x800000, shift = (uint32_t)(126 - e);
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = (ax - 0x38000000) >> 13, rem = ax & 0x1fff; /* rebias 127 -> 15, drop 13 mantissa bits */
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;    /* a carry into the exponent is correct */
  return (uint16_t)(sign | h);
}

float ref_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) {
    float f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  if (e == 31) return bits_f32(sign | 0x7f800000 | (m << 13));
  return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t ref_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); /* NaN: keep it NaN, quiet */
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

float ref_bf16_to_f32(uint16_t h) {
  return bits_f32((uint32_t)h << 16);
}
