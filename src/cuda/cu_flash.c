/* The CUDA flash forward: picks the kernel variant (cu_variants.c: tensor cores for f16/bf16 on sm_80+, CUDA
 * cores otherwise), fills the argument block and launches kernels/flash_fwd.cu over (query blocks, heads,
 * batch). Called with the context current (cu_context.c pushes it). */
#include <stdio.h>
#include <string.h>

#include "cu_internal.h"
#include "kernels/cuda_params.h"

#define LOG2E 1.4426950408889634

/* The argument block must have one layout on both sides (no padding the two compilers could disagree on). */
_Static_assert(sizeof(fa_fwd_params) == 5 * 8 + 15 * 8 + 8 * 4 + 6 * 8 + 6 * 4, "fa_fwd_params has padding");

static fa_status plan(fa_context *ctx, int head_dim, fa_dtype dtype, int async, fa_cu_fwd_variant *var) {
  fa_tile_limits lim;
  fa_cu_tile_limits(ctx, &lim);
  if (fa_cu_forward_variant(&lim, fa_cu_of(ctx)->cc_major, head_dim, dtype, async, var) == FA_SUCCESS)
    return FA_SUCCESS;
  return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                 "fa_forward: head dim %d: no tile of the CUDA kernels fits %zu bytes of shared memory per block "
                 "(FLASHATTN_LOCAL_MEM_BYTES or the device's limit)",
                 head_dim, lim.local_mem_bytes);
}

fa_status fa_cu_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out) {
  fa_cu_fwd_variant var;
  fa_status st = plan(ctx, head_dim, dtype, 1, &var);
  if (st == FA_SUCCESS) *out = var.tiles;
  return st;
}

/* Whether every row of a view starts on an `align`-byte boundary: its address and every stride that is
 * stepped (dimension larger than 1) are multiples of it. */
static int rows_aligned(const fa_view *v, CUdeviceptr addr, const int64_t *shape3, size_t es, unsigned align) {
  if (addr % align) return 0;
  for (int i = 0; i < 3; i++)
    if (shape3[i] > 1 && ((uint64_t)v->stride[i] * es) % align) return 0;
  return 1;
}

fa_status fa_cu_forward(fa_context *ctx, const fa_problem *p) {
  const int d = (int)p->head_dim;
  const size_t es = fa_dtype_size(p->dtype);
  fa_fwd_params a;
  memset(&a, 0, sizeof a);
  a.q = fa_cu_addr(&p->q, es);
  a.k = fa_cu_addr(&p->k, es);
  a.v = fa_cu_addr(&p->v, es);
  a.o = fa_cu_addr(&p->o, es);
  a.lse = p->lse.buf ? fa_cu_addr(&p->lse, sizeof(float)) : 0;
  a.q_sb = p->q.stride[0], a.q_ss = p->q.stride[1], a.q_sh = p->q.stride[2];
  a.k_sb = p->k.stride[0], a.k_ss = p->k.stride[1], a.k_sh = p->k.stride[2];
  a.v_sb = p->v.stride[0], a.v_ss = p->v.stride[1], a.v_sh = p->v.stride[2];
  a.o_sb = p->o.stride[0], a.o_ss = p->o.stride[1], a.o_sh = p->o.stride[2];
  if (p->lse.buf) a.lse_sb = p->lse.stride[0], a.lse_sh = p->lse.stride[1], a.lse_ss = p->lse.stride[2];
  a.seqlen_q = (int)p->seqlen_q;
  a.seqlen_k = (int)p->seqlen_k;
  a.group = (int)(p->heads_q / p->heads_kv);
  a.causal = p->causal;
  a.scale_log2 = (float)(p->scale * LOG2E);
  a.heads_q = (int)p->heads_q;
  if (p->mask.buf) {
    a.mask = (unsigned long long)fa_cu_addr(&p->mask, 1); /* uint8: offset and strides are bytes */
    a.mask_sb = p->mask.stride[0], a.mask_sh = p->mask.stride[1];
    a.mask_sr = p->mask.stride[2], a.mask_sc = p->mask.stride[3];
    a.block_q = (int)p->block_q;
    a.block_k = (int)p->block_k;
  }
  if (p->dropout_p > 0.0f) {
    a.dropout_seed = p->dropout_seed;
    a.dropout_offset = p->dropout_offset;
    a.dropout_threshold = p->dropout_threshold;
    a.dropout_scale = p->dropout_scale;
  }

  const int64_t q_shape[3] = {p->batch, p->seqlen_q, p->heads_q};
  const int64_t kv_shape[3] = {p->batch, p->seqlen_k, p->heads_kv};
  a.o_pairs = es == 2 && rows_aligned(&p->o, (CUdeviceptr)a.o, q_shape, es, 4);
  /* cp.async moves 16-byte pieces: every row of q, k and v must start on a 16-byte boundary. */
  const int async = rows_aligned(&p->q, (CUdeviceptr)a.q, q_shape, es, 16) &&
                    rows_aligned(&p->k, (CUdeviceptr)a.k, kv_shape, es, 16) &&
                    rows_aligned(&p->v, (CUdeviceptr)a.v, kv_shape, es, 16);

  fa_cu_fwd_variant var;
  fa_status st = plan(ctx, d, p->dtype, async, &var);
  if (st != FA_SUCCESS) return st;
  fa_cu_forward_features(&var, p->mask.buf != NULL, p->dropout_p > 0.0f);
  CUfunction fn;
  st = fa_cu_function(ctx, "flash_fwd.cu", var.defines, var.kernel, var.tiles.local_mem_bytes, &fn);
  if (st != FA_SUCCESS) return st;

  /* Grid: x = query blocks, y = heads, z = batch; y and z stop at 65535, so larger counts take several
   * launches, each told its first head and batch. */
  const unsigned blocks_q = (unsigned)((p->seqlen_q + var.tiles.block_q - 1) / var.tiles.block_q);
  for (int64_t b0 = 0; b0 < p->batch; b0 += 65535) {
    for (int64_t h0 = 0; h0 < p->heads_q; h0 += 65535) {
      a.b0 = (int)b0;
      a.h0 = (int)h0;
      const unsigned grid[3] = {blocks_q, (unsigned)(p->heads_q - h0 < 65535 ? p->heads_q - h0 : 65535),
                                (unsigned)(p->batch - b0 < 65535 ? p->batch - b0 : 65535)};
      void *args[] = {&a};
      st = fa_cu_launch(ctx, fn, grid, (unsigned)var.tiles.threads, var.tiles.local_mem_bytes, args, var.kernel);
      if (st != FA_SUCCESS) return st;
    }
  }
  return FA_SUCCESS;
}
