/* The key-tile walk of the forward kernels (flash_fwd.cu, flash_fwd_sm90.cu): how many key tiles a block of
 * query rows needs under the causal mask, which tiles need masking, and with FA_BLOCK_MASK the next tile a
 * block must visit. Everything here is uniform across a block (or, for the votes, a warp). */
#ifndef FA_FLASH_FWD_TILES_CUH
#define FA_FLASH_FWD_TILES_CUH

#include "cuda_params.h"
#if FA_BLOCK_MASK
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

#endif
