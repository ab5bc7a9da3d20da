/* The two masks beyond causal, written once for OpenCL C, CUDA and host C (the tests' reference and the
 * CUDA/OpenCL agreement both rest on every backend computing the same bits):
 *
 * Block-sparse mask: uint8 [B or 1, Hq or 1, ceil(Sq / bq), ceil(Sk / bk)]; score (i, j) is masked when
 * block (i / bq, j / bk) is 0. Kernels classify each tile of scores before touching it: a tile whose blocks
 * are all 0 is skipped (no loads, no math), one whose blocks are all nonzero needs no per-score test.
 *
 * Dropout: score (i, j) of batch b, query head h is dropped when its 32-bit word is below the threshold
 * t = round(p * 2^32) (so P(drop) = t / 2^32). The word comes from Philox-4x32-10 (Salmon et al., SC'11):
 *   key     = (seed & 0xffffffff, seed >> 32)
 *   counter = (j / 2, 8 * (i / 16) + i % 8, b * Hq + h, offset)
 *   word    = output[2 * ((i / 8) % 2) + j % 2]
 * One call yields the four scores (i, j), (i, j+1), (i+8, j), (i+8, j+1) (i % 16 < 8, j even): exactly the
 * four accumulators one thread holds in an m16n8 tensor-core fragment, so the CUDA kernels draw each word
 * once. Kept probabilities are scaled by 1 / (1 - p).
 *
 * The inference options on the flash kernels (and the decode kernels' rules, kernels/decode.h), below the
 * block mask: a sequence's span on a packed token axis (varlen), the band of keys a query row sees (causal and
 * the sliding window), the tile classification and loop bounds it gives, and the score modifiers (softcap,
 * ALiBi) with the factor softcap puts on the backward's dS. */
#ifndef FA_MASKS_H
#define FA_MASKS_H

#if defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__)
#define FA_FN inline
#define FA_GMEM __global
typedef uint fa_u32;
typedef ulong fa_u64;
typedef uchar fa_u8;
typedef long fa_i64;
#elif defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FA_FN static __device__ __forceinline__
#define FA_GMEM
typedef unsigned int fa_u32;
typedef unsigned long long fa_u64;
typedef unsigned char fa_u8;
typedef long long fa_i64;
#else
#include <math.h>
#include <stdint.h>
#define FA_FN static inline
#define FA_GMEM
typedef uint32_t fa_u32;
typedef uint64_t fa_u64;
typedef uint8_t fa_u8;
typedef int64_t fa_i64;
#endif

/* ---- Philox-4x32-10 ---- */

#define FA_PHILOX_M0 0xD2511F53u
#define FA_PHILOX_M1 0xCD9E8D57u
#define FA_PHILOX_W0 0x9E3779B9u
#define FA_PHILOX_W1 0xBB67AE85u

/* Ten rounds on c[0..3] in place, keyed by (k0, k1). On devices the products are split into 32-bit high and
 * low halves: from one 64-bit product NVVM carried 64-bit multiplies and xors through the rounds, and the
 * CUDA forward with dropout ran 9% slower (H100, D = 64). */
FA_FN void fa_philox4x32_10(fa_u32 *c, fa_u32 k0, fa_u32 k1) {
  for (int r = 0; r < 10; r++) {
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
    const fa_u32 h0 = __umulhi(FA_PHILOX_M0, c[0]), l0 = FA_PHILOX_M0 * c[0];
    const fa_u32 h1 = __umulhi(FA_PHILOX_M1, c[2]), l1 = FA_PHILOX_M1 * c[2];
#elif defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__)
    const fa_u32 h0 = mul_hi(FA_PHILOX_M0, c[0]), l0 = FA_PHILOX_M0 * c[0];
    const fa_u32 h1 = mul_hi(FA_PHILOX_M1, c[2]), l1 = FA_PHILOX_M1 * c[2];
#else
    const fa_u64 p0 = (fa_u64)FA_PHILOX_M0 * c[0];
    const fa_u64 p1 = (fa_u64)FA_PHILOX_M1 * c[2];
    const fa_u32 h0 = (fa_u32)(p0 >> 32), l0 = (fa_u32)p0, h1 = (fa_u32)(p1 >> 32), l1 = (fa_u32)p1;
#endif
    const fa_u32 n0 = h1 ^ c[1] ^ k0;
    const fa_u32 n2 = h0 ^ c[3] ^ k1;
    c[1] = l1;
    c[3] = l0;
    c[0] = n0;
    c[2] = n2;
    k0 += FA_PHILOX_W0;
    k1 += FA_PHILOX_W1;
  }
}

/* The four words of the group holding score (i, j) of batch-head bh = b * Hq + h; word e belongs to score
 * (16 * (i / 16) + i % 8 + 8 * (e / 2), 2 * (j / 2) + e % 2). */
FA_FN void fa_dropout_words(fa_u64 seed, fa_u32 offset, fa_u32 bh, fa_u32 i, fa_u32 j, fa_u32 *w) {
  w[0] = j >> 1;
  w[1] = ((i >> 4) << 3) | (i & 7u);
  w[2] = bh;
  w[3] = offset;
  fa_philox4x32_10(w, (fa_u32)seed, (fa_u32)(seed >> 32));
}

/* Which of the four words score (i, j) takes. */
FA_FN int fa_dropout_lane(fa_u32 i, fa_u32 j) { return (int)(((i >> 3) & 1u) * 2u + (j & 1u)); }

/* 1 when score (i, j) is kept, 0 when dropped; threshold as above. The word is picked by selects: indexing
 * w with a run-time lane would put it in (slow) local memory on GPUs. */
FA_FN int fa_dropout_keep(fa_u64 seed, fa_u32 offset, fa_u32 threshold, fa_u32 bh, fa_u32 i, fa_u32 j) {
  fa_u32 w[4];
  fa_dropout_words(seed, offset, bh, i, j, w);
  const int e = fa_dropout_lane(i, j);
  return ((e & 2) ? ((e & 1) ? w[3] : w[2]) : ((e & 1) ? w[1] : w[0])) >= threshold;
}

/* Dropout on one m16n8 accumulator fragment of a tensor-core kernel: acc[2 rr + e] holds score (row0 + 8 rr,
 * col + e), with row0 % 16 < 8 and col even, so the four are exactly one Philox group, in its word order.
 * Zeroes the dropped ones (the scale 1 / (1 - p) is the caller's). */
FA_FN void fa_dropout_fragment(fa_u64 seed, fa_u32 offset, fa_u32 threshold, fa_u32 bh, fa_u32 row0, fa_u32 col,
                               float *acc) {
  fa_u32 w[4];
  fa_dropout_words(seed, offset, bh, row0, col, w);
  for (int e = 0; e < 4; e++)
    if (w[e] < threshold) acc[e] = 0.0f;
}

/* ---- block-sparse mask ---- */

#define FA_TILE_SKIP 0    /* every score of the tile is masked */
#define FA_TILE_PARTIAL 1 /* some are: test each score with fa_block_keep */
#define FA_TILE_FULL 2    /* none is */

/* Classify rows [r0, r1) x keys [c0, c1) (both non-empty, within Sq and Sk) against the mask of one batch
 * and head: m points at its block (0, 0), s_row and s_col step one block down and right. One flat loop over
 * the blocks, row by row, that stops once the answer is PARTIAL: ptxas spilled registers around nested
 * loops in the CUDA-core forward. */
FA_FN int fa_block_tile(const FA_GMEM fa_u8 *m, fa_i64 s_row, fa_i64 s_col, int bq, int bk, int r0, int r1, int c0,
                        int c1) {
  const int bj0 = c0 / bk, bi1 = (r1 - 1) / bq, bj1 = (c1 - 1) / bk;
  int any = 0, all = 1;
  for (int bi = r0 / bq, bj = bj0; bi <= bi1;) {
    const int on = m[bi * s_row + bj * s_col] != 0;
    any |= on;
    all &= on;
    if (any && !all) break;
    if (++bj > bj1) {
      bj = bj0;
      bi++;
    }
  }
  return any ? (all ? FA_TILE_FULL : FA_TILE_PARTIAL) : FA_TILE_SKIP;
}

/* 1 when score (i, j) is kept by the block mask. */
FA_FN int fa_block_keep(const FA_GMEM fa_u8 *m, fa_i64 s_row, fa_i64 s_col, int bq, int bk, int i, int j) {
  return m[(fa_i64)(i / bq) * s_row + (fa_i64)(j / bk) * s_col] != 0;
}

/* ---- sequences, the causal / sliding-window band, score modifiers ----
 *
 * Varlen: sequence b holds rows cu[b] .. cu[b + 1] - 1 of a packed token axis of `total` rows; fa_seq_span
 * clamps the offsets into the axis, so that untrusted ones stay in bounds. What follows is per sequence: sq
 * query rows, sk keys.
 *
 * Band: query row i sits at the diagonal position p = i + sk - sq (bottom-right alignment, as causal) and sees
 * the keys [lo(i), hi(i)):
 *   lo = max(0, p - wl) when wl >= 0, else 0;   hi = min(sk, p + 1 when causal, p + wr + 1 when wr >= 0).
 * (wl, wr) is the window (window_left, window_right); without a window both are -1 and the band is the causal
 * mask alone (or every key). lo and hi never decrease with i, so tile rows [r0, r1) x keys [c0, c1) meets the
 * band exactly when c0 < hi(r1 - 1) and c1 > lo(r0), and lies inside it exactly when c0 >= lo(r1 - 1) and
 * c1 <= hi(r0) (c1 past sk is then never inside: keys past sk get the per-score test).
 *
 * Modifiers, on a scaled score s (scale q.k; or that times log2 e, with cap and slope given in the same unit):
 * softcap s -> cap tanh(s / cap) (cap > 0), then ALiBi s -> s - slope |p - j|. Backward: with t = tanh(s / cap),
 * the gradient of the raw scaled score is that of the capped one times 1 - t^2 (fa_softcap_grad, from the capped
 * value); ALiBi's bias depends on neither q nor k, so it changes P (through lse) but adds no factor. */

#if defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__)
#define FA_TANH(x) tanh(x)
#define FA_FABS(x) fabs(x)
#else
#define FA_TANH(x) tanhf(x)
#define FA_FABS(x) fabsf(x)
#endif

#if defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__)
/* The options as the OpenCL flash kernels' arguments (FA_INFER variants of flash_fwd.cl and flash_bwd.cl; the
 * host's arg_infer in src/opencl/cl_args.h): varlen offsets (int32, element offset and stride; varlen 0: padded
 * batches), the window (-1 unbounded), ALiBi's slopes [B or 1, Hq] (element offset and strides; has_alibi 0:
 * none), softcap times log2 e (0: off). */
#define FA_INFER_CL_PARAMS                                                                                    \
  , __global const int *cu_q, long cuq_off, long cuq_s, __global const int *cu_k, long cuk_off, long cuk_s,   \
      int varlen, int wl, int wr, __global const float *alibi, long al_off, long al_sb, long al_sh, int has_alibi, \
      float softcap2
#endif

/* Sequence b's first row and row count on a token axis of `total` rows, from offsets cu[b], cu[b + 1]. */
FA_FN void fa_seq_span(const FA_GMEM int *cu, fa_i64 stride, int b, int total, int *first, int *count) {
  int a = cu[b * stride], e = cu[(b + 1) * stride];
  a = a < 0 ? 0 : a > total ? total : a;
  e = e < a ? a : e > total ? total : e;
  *first = a;
  *count = e - a;
}

/* The first key row i sees, in 0 .. sk. */
FA_FN int fa_band_lo(int i, int sq, int sk, int wl) {
  if (wl < 0) return 0;
  const fa_i64 a = (fa_i64)i + sk - sq - wl;
  return a < 0 ? 0 : a > sk ? sk : (int)a;
}

/* One past the last key row i sees, in 0 .. sk (at most lo: none seen). */
FA_FN int fa_band_hi(int i, int sq, int sk, int causal, int wr) {
  const fa_i64 p = (fa_i64)i + sk - sq;
  fa_i64 e = sk;
  if (causal && p + 1 < e) e = p + 1;
  if (wr >= 0 && p + wr + 1 < e) e = p + wr + 1;
  return e < 0 ? 0 : (int)e;
}

/* Classify rows [r0, r1) (non-empty, within sq) x keys [c0, c1) (c0 < sk; c1 may pass sk) against the band:
 * FA_TILE_SKIP (no score visible: not loaded), FA_TILE_FULL (every score visible: no per-score test) or
 * FA_TILE_PARTIAL. */
FA_FN int fa_band_tile(int r0, int r1, int c0, int c1, int sq, int sk, int causal, int wl, int wr) {
  if (c0 >= fa_band_hi(r1 - 1, sq, sk, causal, wr) || c1 <= fa_band_lo(r0, sq, sk, wl)) return FA_TILE_SKIP;
  return c0 >= fa_band_lo(r1 - 1, sq, sk, wl) && c1 <= fa_band_hi(r0, sq, sk, causal, wr) ? FA_TILE_FULL
                                                                                         : FA_TILE_PARTIAL;
}

/* The query rows [*r0, *r1) that see some key of [c0, c1) (within sk): the rows whose hi passes c0 and whose lo
 * is below c1, the walk of a kernel that owns a block of keys. */
FA_FN void fa_band_rows(int c0, int c1, int sq, int sk, int causal, int wl, int wr, int *r0, int *r1) {
  const fa_i64 diag = (fa_i64)sk - sq;
  fa_i64 a = 0, e = sq;
  if (causal || wr >= 0) a = (fa_i64)c0 - diag - (causal ? 0 : wr); /* hi(i) > c0 */
  if (wl >= 0) e = (fa_i64)c1 - diag + wl;                          /* lo(i) < c1 */
  a = a < 0 ? 0 : a > sq ? sq : a;
  e = e < a ? a : e > sq ? sq : e;
  *r0 = (int)a;
  *r1 = (int)e;
}

/* softcap: s -> cap tanh(s / cap), cap > 0. */
FA_FN float fa_softcap(float s, float cap) { return cap * FA_TANH(s / cap); }

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
/* The same with tanh x = 1 - 2 / (1 + 2^(2 x log2 e)), one exp2 and one fast division: |error| below 1e-6 of
 * cap, for the 16-bit tensor-core kernels, whose registers tanhf's evaluation spilled (flash_fwd_tc at D = 128:
 * 84 bytes). */
FA_FN float fa_softcap_fast(float s, float cap) {
  return cap * (1.0f - __fdividef(2.0f, 1.0f + exp2f(s * (2.8853900817779268f / cap))));
}
#elif defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__)
/* The same for the OpenCL tensor-core kernels (kernels/flash_fwd_nv.cl, flash_bwd_nv.cl), whose registers are
 * as tight. */
FA_FN float fa_softcap_fast(float s, float cap) {
  return cap * (1.0f - native_divide(2.0f, 1.0f + native_exp2(s * (2.8853900817779268f / cap))));
}
#endif

/* The backward's factor on dS for a capped score c = fa_softcap(s, cap): d c / d s = 1 - tanh^2(s / cap). */
FA_FN float fa_softcap_grad(float c, float cap) {
  const float t = c / cap;
  return 1.0f - t * t;
}

/* ALiBi's bias on key j of a row at diagonal position p = i + sk - sq: - slope |p - j|. */
FA_FN float fa_alibi(float slope, fa_i64 p, int j) { return -slope * FA_FABS((float)(p - j)); }

#endif
