/* The key-tile walk of the forward kernels (flash_fwd.cu, flash_fwd_sm90.cu): how many key tiles a block of
 * query rows needs under the causal mask, which tiles need masking, with FA_BLOCK_MASK the next tile a block
 * must visit, and with FA_INFER its sequence, band and score modifiers (fa_walk_of). Everything here is uniform
 * across a block (or, for the votes, a warp). */
#ifndef FA_FLASH_FWD_TILES_CUH
#define FA_FLASH_FWD_TILES_CUH

#include "cuda_params.h"
#ifndef FA_INFER
#define FA_INFER 0
#endif
#if FA_BLOCK_MASK || FA_INFER
#include "masks.h"
#endif

/* Number of key tiles of `bn` keys that rows [m0, m0 + bm) need: all of them, or up to the causal limit of
 * the block's last row. 0 when every row of the block is fully masked. */
static __device__ __forceinline__ int fa_key_tiles(const fa_fwd_params &p, int m0, int bm, int bn) {
  const int last_row = min(m0 + bm, p.seqlen_q) - 1;
  long long max_key = (long long)p.seqlen_k - 1;
  if (p.causal) {
    const long long lim = (long long)last_row + p.seqlen_k - p.seqlen_q;
    if (lim < max_key) max_key = lim;
  }
  return max_key < 0 ? 0 : (int)(max_key / bn) + 1;
}

/* Whether key tile [n0, n0 + bn) needs masking for rows from m0 on: it reaches past Sk, or (causal) past the
 * first row's limit. Uniform across the block. */
static __device__ __forceinline__ bool fa_tile_masked(const fa_fwd_params &p, int m0, int n0, int bn) {
  const long long end = (long long)n0 + bn;
  if (end > p.seqlen_k) return true;
  return p.causal && end - 1 > (long long)m0 + p.seqlen_k - p.seqlen_q;
}

/* The last key row `row` may see. */
static __device__ __forceinline__ long long fa_key_limit(const fa_fwd_params &p, int row) {
  long long lim = (long long)p.seqlen_k - 1;
  if (p.causal) {
    const long long c = (long long)row + p.seqlen_k - p.seqlen_q;
    if (c < lim) lim = c;
  }
  return lim;
}

#if FA_BLOCK_MASK
/* fa_block_tile for rows [r0, r1) x keys [c0, c1) of mask m, shared out over the W lanes of a warp (lane
 * `lane`, `full` their shuffle mask): lane l classifies block rows l, l + W, ... and the warp votes. Equal to
 * one fa_block_tile call over the whole range (SKIP: no block on, FULL: every block on), at 1 / W of the
 * loads when blocks are small; every warp computes the same value, so the result is uniform in the block. */
static __device__ __forceinline__ int fa_tile_class(const fa_fwd_params &p, const unsigned char *m, int r0, int r1,
                                                    int c0, int c1, int lane, int W, unsigned full) {
  int any = 0, all = 1;
  const long long bq = p.block_q;
  for (int bi = r0 / p.block_q + lane; bi <= (r1 - 1) / p.block_q; bi += W) {
    const int a = (int)max((long long)r0, bi * bq), e = (int)min((long long)r1, (bi + 1) * bq);
    const int c = fa_block_tile(m, p.mask_sr, p.mask_sc, p.block_q, p.block_k, a, e, c0, c1);
    any |= c != FA_TILE_SKIP;
    all &= c == FA_TILE_FULL;
  }
  any = __any_sync(full, any);
  all = __all_sync(full, all);
  return any ? (all ? FA_TILE_FULL : FA_TILE_PARTIAL) : FA_TILE_SKIP;
}

/* The first key tile of `bn` keys at or after j (below n_tiles) that rows [r0, r1) must visit, and its class
 * in *cls; n_tiles when none is left. Uniform across the block (warp votes on the same loads). Used by the
 * tensor-core kernel (the CUDA-core one calls fa_block_tile per thread: ptxas spills its loop around
 * these votes). Blocks of at least 32 x 32 put at most 3 x 3 blocks in a tile (64 rows, <= 64 keys): then each lane
 * classifies a tile of its own with fa_block_tile and a ballot finds the first visited one, so a sparse
 * mask costs one round of loads per W tiles skipped, not one per tile. Smaller blocks split each tile's
 * block rows over the lanes instead (fa_tile_class). */
static __device__ __forceinline__ int fa_next_tile(const fa_fwd_params &p, const unsigned char *m, int r0, int r1,
                                                   int bn, int j, int n_tiles, int lane, int W, unsigned full,
                                                   int *cls) {
  if (p.block_q >= 32 && p.block_k >= 32) {
    for (; j < n_tiles; j += W) {
      const int jl = j + lane;
      int c = FA_TILE_SKIP;
      if (jl < n_tiles) {
        const int c0 = jl * bn;
        c = fa_block_tile(m, p.mask_sr, p.mask_sc, p.block_q, p.block_k, r0, r1, c0, c0 + min(bn, p.seqlen_k - c0));
      }
      const unsigned hit = __ballot_sync(full, c != FA_TILE_SKIP);
      if (hit) {
        const int first = __ffs(hit) - 1;
        *cls = __shfl_sync(full, c, first);
        return j + first;
      }
    }
    *cls = FA_TILE_SKIP;
    return n_tiles;
  }
  for (; j < n_tiles; j++) {
    const int c0 = j * bn; /* j < n_tiles <= ceil(Sk / bn): below Sk */
    const int c = fa_tile_class(p, m, r0, r1, c0, c0 + min(bn, p.seqlen_k - c0), lane, W, full);
    if (c != FA_TILE_SKIP) {
      *cls = c;
      return j;
    }
  }
  *cls = FA_TILE_SKIP;
  return n_tiles;
}
#endif

#if FA_INFER
/* The block's sequence: rows qfirst .. qfirst + sq - 1 and keys kfirst .. kfirst + sk - 1 of tensor batch bt
 * (varlen: batch 0, the grid's b-th sequence), and ALiBi's slope of head h in base 2 (0: none). */
struct fa_seq {
  int sq, sk, qfirst, kfirst, bt;
  float slope2;
};
static __device__ __forceinline__ fa_seq fa_seq_of(const fa_fwd_params &p, int b, int h) {
  fa_seq s = {p.seqlen_q, p.seqlen_k, 0, 0, b, 0.f};
  if (p.inf.varlen) {
    fa_seq_span((const int *)p.inf.cu_q, p.inf.cu_q_s, b, p.seqlen_q, &s.qfirst, &s.sq);
    fa_seq_span((const int *)p.inf.cu_k, p.inf.cu_k_s, b, p.seqlen_k, &s.kfirst, &s.sk);
    s.bt = 0;
  }
  if (p.inf.has_alibi) s.slope2 = ((const float *)p.inf.alibi)[b * p.inf.al_sb + h * p.inf.al_sh] * 1.4426950408889634f;
  return s;
}

/* Softcap and ALiBi on a score already in base 2 (scale log2 e applied), of key `col` for a row at diagonal
 * position `diag` of the sequence. FAST: the fast tanh, for the 16-bit tensor-core kernels (their registers are
 * full). */
template <bool FAST>
static __device__ __forceinline__ float fa_modify2(const fa_fwd_params &p, const fa_seq &s, float x, int diag, int col) {
  if (p.inf.softcap2 > 0.f) x = FAST ? fa_softcap_fast(x, p.inf.softcap2) : fa_softcap(x, p.inf.softcap2);
  return s.slope2 != 0.f ? x + fa_alibi(s.slope2, diag, col) : x;
}
#endif

/* What a block of rows [m0, m0 + bm) walks, for both kernels: its sequence's rows and keys (tensor batch bt, its
 * first rows qrow0 and krow0 on the axes), the key tiles [j_first, n_tiles) of bn keys (the causal limit, or
 * with FA_INFER the band of its rows), and the scale the softmax puts on a score (1 when FA_INFER has scaled
 * them before the modifiers). */
struct fa_walk {
  int sq, sk, bt, j_first, n_tiles;
  long long qrow0, krow0;
  float sm_scale;
#if FA_INFER
  fa_seq seq; /* for the modifiers */
#endif
};
static __device__ __forceinline__ fa_walk fa_walk_of(const fa_fwd_params &p, int b, int h, int m0, int bm, int bn) {
  fa_walk w;
#if FA_INFER
  w.seq = fa_seq_of(p, b, h);
  w.sq = w.seq.sq, w.sk = w.seq.sk, w.bt = w.seq.bt, w.qrow0 = w.seq.qfirst, w.krow0 = w.seq.kfirst;
  w.j_first = fa_band_lo(m0, w.sq, w.sk, p.inf.wl) / bn;
  w.n_tiles = m0 < w.sq ? (fa_band_hi(min(m0 + bm, w.sq) - 1, w.sq, w.sk, p.causal, p.inf.wr) + bn - 1) / bn : 0;
  w.sm_scale = 1.f;
#else
  (void)h;
  w.sq = p.seqlen_q, w.sk = p.seqlen_k, w.bt = b, w.qrow0 = w.krow0 = 0;
  w.j_first = 0, w.n_tiles = fa_key_tiles(p, m0, bm, bn);
  w.sm_scale = p.scale_log2;
#endif
  return w;
}

#endif
