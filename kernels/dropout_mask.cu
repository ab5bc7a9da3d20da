/* fa_dropout_mask for CUDA: write the dropout keep-mask keep[b, h, i, j] (uint8, 1 kept, 0 dropped) that the
 * flash kernels apply, through kernels/masks.h's Philox counter layout so the bits are those of
 * fa_dropout_keep on the host.
 *
 * One thread per Philox group: the four scores (i, j), (i, j + 1), (i + 8, j), (i + 8, j + 1) with
 * i % 16 < 8 and j even, which one fa_dropout_words call yields (word 2 (i / 8 % 2) + j % 2, the
 * fa_dropout_lane order). Work items g in [0, groups), 64-bit: col pair c = g % col_pairs, row slot
 * r = g / col_pairs % row_slots, batch-head bh = g / (col_pairs row_slots). Row slot r is row
 * i = 16 (r / 8) + r % 8 (plus i + 8); only the last group of 16 rows can be short, so the slots that have
 * a row i < Sq are exactly the first 8 (Sq / 16) + min(Sq % 16, 8): no thread idles on padding rows.
 * A grid-stride loop covers any count with a grid the host keeps within limits. */
#include "cuda_params.h"
#include "masks.h"

extern "C" __global__ void __launch_bounds__(256) fa_dropout_mask_kernel(const fa_dropout_params p) {
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long g = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; g < p.groups;
       g += stride) {
    const unsigned long long c = g % p.col_pairs, t = g / p.col_pairs;
    const unsigned long long r = t % p.row_slots, bh = t / p.row_slots;
    const int i = (int)(16 * (r / 8) + r % 8), j = (int)(2 * c);
    const long long b = (long long)(bh / (unsigned)p.heads_q), h = (long long)(bh % (unsigned)p.heads_q);
    unsigned w[4];
    /* The counter holds b * Hq + h in 32 bits: fa_dropout_mask checks B * Hq <= 2^32 when p > 0, and with
     * p = 0 (threshold 0) every word keeps. */
    fa_dropout_words(p.seed, p.offset, (unsigned)bh, (unsigned)i, (unsigned)j, w);
    unsigned char *base = (unsigned char *)p.keep + b * p.s_b + h * p.s_h;
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int ii = i + 8 * (e / 2), jj = j + e % 2;
      if (ii < p.seqlen_q && jj < p.seqlen_k)
        base[ii * p.s_i + jj * p.s_j] = w[e] >= p.threshold ? 1 : 0; /* e = fa_dropout_lane(ii, jj) */
    }
  }
}
