/* The inference options as the CUDA backward kernels read them (flash_bwd.cu and flash_bwd_sm90.cu), over any
 * argument block P with seqlen_q, seqlen_k, scale_log2 and inf (fa_infer_params): a block's sequence and the
 * score modifiers. The rules themselves are kernels/masks.h's. */
#ifndef FA_FLASH_INFER_CUH
#define FA_FLASH_INFER_CUH

#include "masks.h"

/* A block's sequence: query rows qfirst .. qfirst + sq - 1 and keys kfirst .. kfirst + sk - 1 of tensor batch bt
 * (varlen: batch 0, the grid's b-th sequence; otherwise all of batch b). */
struct seq_span {
  int sq, sk, qfirst, kfirst, bt;
};
template <class P> static __device__ __forceinline__ seq_span seq_of(const P &p, int b) {
  seq_span s = {p.seqlen_q, p.seqlen_k, 0, 0, b};
#if FA_INFER
  if (p.inf.varlen) {
    fa_seq_span((const int *)p.inf.cu_q, p.inf.cu_q_s, b, p.seqlen_q, &s.qfirst, &s.sq);
    fa_seq_span((const int *)p.inf.cu_k, p.inf.cu_k_s, b, p.seqlen_k, &s.kfirst, &s.sk);
    s.bt = 0;
  }
#endif
  return s;
}

/* ALiBi's slope of head h of sequence b in base 2 (0: none). */
template <class P> static __device__ __forceinline__ float slope2_of(const P &p, int b, int h) {
  return p.inf.has_alibi ? ((const float *)p.inf.alibi)[b * p.inf.al_sb + h * p.inf.al_sh] * 1.4426950408889634f
                         : 0.f;
}

/* The base-2 score of raw q.k x for a row at diagonal position diag and key j (scaled, capped, ALiBi's bias
 * added), and in g softcap's factor on dS (1 without it). FAST: the fast tanh (the 16-bit kernels). */
template <bool FAST, class P>
static __device__ __forceinline__ float mod_score(const P &p, float x, float slope2, int diag, int j, float &g) {
  x *= p.scale_log2;
  g = 1.f;
  if (p.inf.softcap2 > 0.f) {
    x = FAST ? fa_softcap_fast(x, p.inf.softcap2) : fa_softcap(x, p.inf.softcap2);
    g = fa_softcap_grad(x, p.inf.softcap2);
  }
  return slope2 != 0.f ? x + fa_alibi(slope2, diag, j) : x;
}

#endif
