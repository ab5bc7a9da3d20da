/* What the decode kernels (kernels/decode.cl, kernels/decode.cu) decide per sequence and per score, written
 * once for OpenCL C, CUDA and host C (the tests' reference states the same rules; the band, the varlen span and
 * the modifiers are kernels/masks.h's, which the flash kernels use too):
 *
 * - a sequence's length: seqlens_k[b] clamped into 0 .. capacity (the host checks the values unless the
 *   caller trusts them; the clamp keeps a bad one from reading out of bounds);
 * - the keys query row i sees: 0 .. len - 1, cut by causal (j <= p) and the window
 *   (p - window_left <= j <= p + window_right, -1 unbounded), where p = i + len - Sq is the row's diagonal;
 * - where key j lives: row j of sequence b, or row j % page_size of page block_table[b][j / page_size];
 * - the score modifiers on a scaled score s: softcap · tanh(s / softcap), then - slope · |p - j|. */
#ifndef FA_DECODE_H
#define FA_DECODE_H

#if !defined(__OPENCL_C_VERSION__) && !defined(__OPENCL_VERSION__)
#include "masks.h" /* FA_FN, FA_GMEM and the fixed-width types (OpenCL programs list it before this file) */
#endif

/* Keys in use by sequence b: its seqlens_k entry clamped into 0 .. cap, or cap without one. */
FA_FN int fa_dec_length(const FA_GMEM int *seqlens, fa_i64 stride, int has_seqlens, int b, int cap) {
  if (!has_seqlens) return cap;
  const int len = seqlens[b * stride];
  return len < 0 ? 0 : len > cap ? cap : len;
}

/* Varlen: sequence b's first row and row count on a token axis of `total` rows (masks.h's fa_seq_span). */
FA_FN void fa_dec_span(const FA_GMEM int *cu, fa_i64 stride, int b, int total, int *first, int *count) {
  fa_seq_span(cu, stride, b, total, first, count);
}

/* Sequence b's query rows *q0 .. *q0 + *sq - 1 and keys *kr0 .. *kr0 + *len - 1: varlen, on the packed token
 * axes of seqlen_q and cap rows; else rows 0 .. seqlen_q - 1 and seqlens_k's length (cap without one). */
FA_FN void fa_dec_sequence(const FA_GMEM int *cu_q, fa_i64 cuq_s, const FA_GMEM int *cu_k, fa_i64 cuk_s, int varlen,
                           const FA_GMEM int *seqlens, fa_i64 sl_s, int has_seqlens, int b, int seqlen_q, int cap,
                           int *q0, int *sq, int *kr0, int *len) {
  *sq = seqlen_q, *q0 = 0, *kr0 = 0;
  if (varlen) {
    fa_dec_span(cu_q, cuq_s, b, seqlen_q, q0, sq);
    fa_dec_span(cu_k, cuk_s, b, cap, kr0, len);
  } else {
    *len = fa_dec_length(seqlens, sl_s, has_seqlens, b, cap);
  }
}

/* Keys [*lo, *hi) that query row i sees in a sequence of len keys and sq query rows (empty: *hi == *lo): masks.h's
 * band. */
FA_FN void fa_dec_row_keys(int i, int sq, int len, int causal, int window, int wl, int wr, int *lo, int *hi) {
  const int a = fa_band_lo(i, sq, len, window ? wl : -1), e = fa_band_hi(i, sq, len, causal, window ? wr : -1);
  *lo = a;
  *hi = e < a ? a : e;
}

/* Element offset of key j's row in k or v (head 0): sb and ss step a batch (or a page) and a row. */
FA_FN fa_i64 fa_dec_key_offset(const FA_GMEM int *table, fa_i64 t_sb, fa_i64 t_sp, int paged, int page_size,
                               int num_pages, int b, int j, fa_i64 sb, fa_i64 ss) {
  if (!paged) return (fa_i64)b * sb + (fa_i64)j * ss;
  int page = table[(fa_i64)b * t_sb + (fa_i64)(j / page_size) * t_sp];
  page = page < 0 ? 0 : page >= num_pages ? num_pages - 1 : page;
  return (fa_i64)page * sb + (fa_i64)(j % page_size) * ss;
}

/* A scaled score after the softcap (softcap > 0) and ALiBi (slope != 0) for key j of a row at diagonal diag. */
FA_FN float fa_dec_modify(float s, float softcap, float slope, int diag, int j) {
  if (softcap > 0.0f) s = fa_softcap(s, softcap);
  return s + fa_alibi(slope, diag, j);
}

/* Keys [*lo, *hi) of split `split` of `splits` over a group's range [lo, hi): equal pieces of whole 16-key
 * runs, so that every split but the last starts and ends on a run. */
FA_FN void fa_dec_split_keys(int lo, int hi, int split, int splits, int *slo, int *shi) {
  const int n = hi - lo, per = ((n + splits - 1) / splits + 15) / 16 * 16;
  const fa_i64 a = (fa_i64)lo + (fa_i64)split * per, e = a + per;
  *slo = (int)(a < hi ? a : hi);
  *shi = (int)(e < hi ? e : hi);
}

#endif
