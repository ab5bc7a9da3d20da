/* The float64 CPU reference that every suite compares with: attention forward (o, lse) and backward
 * (dq, dk, dv) with the library's whole contract (DESIGN.md "Semantics"), on packed double arrays, plus
 * float16 / bfloat16 conversions and the relative error the accuracy thresholds are stated in.
 *
 * Layouts (packed, row-major): q, o, dout, dq [B, Sq, Hq, D]; k, v, dk, dv [B, Sk, Hkv, D]; lse [B, Hq, Sq].
 * It is written for clarity, not speed: O(B · Hq · Sq · Sk · D), fine for the test sizes. */
#ifndef FA_TEST_REFERENCE_H
#define FA_TEST_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ref_problem {
  int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
  double scale; /* already resolved: the caller turns "0 means 1/sqrt(D)" into a number */
  int causal;   /* mask key j for query i when j > i + (Sk - Sq) */
} ref_problem;

/* Element counts of the packed arrays. */
size_t ref_q_elems(const ref_problem *p);   /* also o, dout, dq */
size_t ref_kv_elems(const ref_problem *p);  /* also dk, dv */
size_t ref_lse_elems(const ref_problem *p);

/* Whether key j is visible to query i under p's mask. */
int ref_visible(const ref_problem *p, int64_t i, int64_t j);

/* o = softmax(scale · q kᵀ + mask) v; lse = log Σ exp(scale · q kᵀ) over visible keys (natural log).
 * A row with every key masked gets o = 0 and lse = -INFINITY. lse may be NULL.
 * Returns 0, or -1 when out of memory. */
int ref_forward(const ref_problem *p, const double *q, const double *k, const double *v, double *o,
                double *lse);

/* Gradients of a loss L with dL/do = dout, from the same q, k, v (the forward is recomputed inside).
 * With GQA, dk and dv sum over the query heads that share a key/value head. Masked rows give zeros.
 * Returns 0, or -1 when out of memory. */
int ref_backward(const ref_problem *p, const double *q, const double *k, const double *v,
                 const double *dout, double *dq, double *dk, double *dv);

/* ‖a − b‖₂ / ‖b‖₂ (b is the reference); ‖a − b‖₂ when ‖b‖ = 0. NaN anywhere gives NaN. */
double ref_rel_error(const double *a, const double *b, size_t n);

/* Largest |a − b| / max(1, |b|), with -inf == -inf counted as 0 and a mismatch of infinities as +inf. */
double ref_max_abs_error_scaled(const double *a, const double *b, size_t n);

/* float32 <-> float16 (IEEE binary16) and bfloat16 bits. Float to half rounds to nearest even, with
 * subnormals, overflow to infinity and NaN kept NaN (quiet). */
uint16_t ref_f32_to_f16(float x);
float ref_f16_to_f32(uint16_t h);
uint16_t ref_f32_to_bf16(float x);
float ref_bf16_to_f32(uint16_t h);

#endif
