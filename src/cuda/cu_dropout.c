/* fa_dropout_mask on CUDA: kernels/dropout_mask.cu writes the uint8 keep-mask [B, Hq, Sq, Sk] through the
 * view's byte offset and strides, one thread per Philox group of four scores (kernels/masks.h). The table
 * entry itself, so it makes the context current here. */
#include <string.h>

#include "cu_internal.h"
#include "kernels/cuda_params.h"

#define THREADS 256
/* Grid-stride launch: enough blocks to fill any GPU, far below gridDim.x's 2^31 - 1. */
#define MAX_BLOCKS (1u << 20)

fa_status fa_cu_dropout_mask(fa_context *ctx, const fa_problem *p) {
  fa_dropout_params a;
  memset(&a, 0, sizeof a);
  a.keep = (unsigned long long)fa_cu_addr(&p->keep, 1);
  a.s_b = p->keep.stride[0], a.s_h = p->keep.stride[1], a.s_i = p->keep.stride[2], a.s_j = p->keep.stride[3];
  a.seed = p->dropout_seed;
  a.offset = p->dropout_offset;
  a.threshold = p->dropout_threshold; /* 0 when p = 0: every word keeps */
  a.seqlen_q = (int)p->seqlen_q;
  a.seqlen_k = (int)p->seqlen_k;
  a.heads_q = (int)p->heads_q;
  /* Row slots: the (i, i + 8) pairs with i % 16 < 8 and i < Sq (see the kernel). The work items are
   * B Hq x row slots x column pairs; a product that 64 bits (with the grid stride on top) cannot hold is
   * refused rather than wrapped. */
  a.row_slots = (unsigned long long)(8 * (p->seqlen_q / 16) + (p->seqlen_q % 16 < 8 ? p->seqlen_q % 16 : 8));
  a.col_pairs = (unsigned long long)((p->seqlen_k + 1) / 2);
  unsigned long long bh = (unsigned long long)p->batch * (unsigned long long)p->heads_q, groups;
  if (__builtin_mul_overflow(bh, a.row_slots, &groups) || __builtin_mul_overflow(groups, a.col_pairs, &groups) ||
      groups > ~0ull - (unsigned long long)THREADS * MAX_BLOCKS)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_dropout_mask: [%lld, %lld, %lld, %lld] is too large to index",
                   (long long)p->batch, (long long)p->heads_q, (long long)p->seqlen_q, (long long)p->seqlen_k);
  a.groups = groups;

  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  CUfunction fn;
  st = fa_cu_function(ctx, "dropout_mask.cu", "", "fa_dropout_mask_kernel", 0, &fn);
  if (st == FA_SUCCESS) {
    unsigned long long blocks = (groups + THREADS - 1) / THREADS;
    const unsigned grid[3] = {(unsigned)(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS), 1, 1};
    void *args[] = {&a};
    st = fa_cu_launch(ctx, fn, grid, THREADS, 0, args, "fa_dropout_mask_kernel");
  }
  fa_cu_pop(ctx);
  return st;
}
