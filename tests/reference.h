/* The float64 CPU reference that every suite compares with: attention forward (o, lse) and backward
 * (dq, dk, dv) with the library's whole contract (DESIGN.md "Semantics"), on packed double arrays, plus
 * float16 / bfloat16 conversions and the relative error the accuracy thresholds are stated in.
 *
 * Layouts (packed, row-major): q, o, dout, dq [B, Sq, Hq, D]; k, v, dk, dv [B, Sk, Hkv, D]; lse [B, Hq, Sq];
 * the per-score arrays keep and dropout [B, Hq, Sq, Sk].
 * It is written for clarity, not speed: O(B · Hq · Sq · Sk · D), fine for the test sizes. */
#ifndef FA_TEST_REFERENCE_H
#define FA_TEST_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ref_problem {
  int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
  double scale; /* already resolved: the caller turns "0 means 1/sqrt(D)" into a number */
  int causal;   /* mask key j for query i when j > i + (Sk - Sq) */
  /* Block-sparse attention, expanded to scores (ref_expand_block_mask): 0 masks score (i, j) of (b, h) on
   * top of causal, exactly like it. NULL: no mask. */
  const uint8_t *keep;
  /* Dropout: multiplier of P_ij after the softmax (0 where dropped, 1 / (1 - p) where kept); lse and the
   * softmax's sum are those before dropout. NULL: no dropout. */
  const double *dropout;
  /* Inference options (flashattn.h "Inference"): keys in use per batch (NULL: Sk), whose count replaces Sk in
   * the causal alignment and the window; a sliding window (window_left / window_right, -1 unbounded) around
   * the diagonal p = i + len - Sq; ALiBi slopes [alibi_batch (1 or B)][Hq] (NULL: none), adding -slope |p - j|;
   * softcap > 0: s -> softcap tanh(s / softcap) before ALiBi. The backward takes them all: softcap's
   * derivative 1 - tanh^2 multiplies dS, ALiBi's bias adds nothing. Varlen is a batch of such problems. */
  const int64_t *seqlens_k;
  int window;
  int64_t window_left, window_right;
  const double *alibi;
  int64_t alibi_batch;
  double softcap;
} ref_problem;

/* Element counts of the packed arrays. */
size_t ref_q_elems(const ref_problem *p);   /* also o, dout, dq */
size_t ref_kv_elems(const ref_problem *p);  /* also dk, dv */
size_t ref_lse_elems(const ref_problem *p);
size_t ref_score_elems(const ref_problem *p); /* keep, dropout: B · Hq · Sq · Sk */

/* Whether key j is visible to query i under p's causal mask (keep not consulted). */
int ref_visible(const ref_problem *p, int64_t i, int64_t j);

/* Whether score (i, j) of batch b, query head h is visible: causal and keep. */
int ref_visible_at(const ref_problem *p, int64_t b, int64_t h, int64_t i, int64_t j);

/* Whether query row i of (b, h) sees no key at all (o = 0, lse = -inf, zero dq). */
int ref_row_empty(const ref_problem *p, int64_t b, int64_t h, int64_t i);

/* keep[B, Hq, Sq, Sk] from a block mask packed as [mask_batch, mask_heads, ceil(Sq / block_q),
 * ceil(Sk / block_k)] (mask_batch 1 or B, mask_heads 1 or Hq: a size of 1 broadcasts): score (i, j) of
 * (b, h) is kept when block (i / block_q, j / block_k) of (b or 0, h or 0) is nonzero. Uses p's shapes. */
void ref_expand_block_mask(const ref_problem *p, const uint8_t *mask, int64_t mask_batch, int64_t mask_heads,
                           int64_t block_q, int64_t block_k, uint8_t *keep);

/* o = (softmax(scale · q kᵀ + mask) ∘ dropout) v; lse = log Σ exp(scale · q kᵀ) over visible keys (natural
 * log, before dropout). A row with every key masked gets o = 0 and lse = -INFINITY. lse may be NULL.
 * Returns 0, or -1 when out of memory. */
int ref_forward(const ref_problem *p, const double *q, const double *k, const double *v, double *o,
                double *lse);

/* Gradients of a loss L with dL/do = dout, from the same q, k, v (the forward is recomputed inside), with
 * p's keep and dropout (fixed multipliers, so the gradient is exact). With GQA, dk and dv sum over the query
 * heads that share a key/value head. Masked rows give zeros.
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
