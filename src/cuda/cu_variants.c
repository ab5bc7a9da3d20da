/* Which forward kernel variant serves a problem: the kernel, its tiles and the -D defines it is compiled
 * with. Pure (no device, no context), so the dev workshops' nvrtc mode (dev/fwd.c, bwd.c, decode.c)
 * enumerates exactly what the library compiles. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"

const char *fa_cu_dtype_define(fa_dtype dtype) {
  switch (dtype) {
  case FA_F16: return "-DFA_DTYPE=1";
  case FA_BF16: return "-DFA_DTYPE=2";
  default: return "-DFA_DTYPE=0";
  }
}

fa_status fa_cu_forward_variant(const fa_tile_limits *lim, int cc_major, int head_dim, fa_dtype dtype, int async,
                                fa_cu_fwd_variant *out) {
  memset(out, 0, sizeof *out);
  /* Tensor cores need mma.m16n8k16 with f16/bf16 inputs: sm_80 and later. Before that, and when the budget
   * (FLASHATTN_LOCAL_MEM_BYTES) is too small for the tensor-core tiles, 16-bit types take the CUDA-core
   * kernel, which converts them to float32 in shared memory. */
  if (dtype != FA_F32 && cc_major >= 8 && fa_tiles_cuda_forward(lim, head_dim, dtype, &out->tiles) == FA_SUCCESS) {
    out->tc = 1;
    out->q_regs = head_dim <= 128; /* the layout fa_tiles_cuda_forward sized */
    out->kernel = "flash_fwd_tc";
    /* FLASHATTN_CUDA_DEFINES: extra -D defines for tuning runs, limited to those that leave the shared-memory
     * layout alone (MIN_BLOCKS, the blocks per SM that the register allocation must allow). */
    const char *extra = getenv("FLASHATTN_CUDA_DEFINES");
    snprintf(out->defines, sizeof out->defines,
             "-DFA_TC=1 %s -DHEAD_DIM=%d -DBLOCK_N=%d -DFA_ASYNC=%d -DQ_IN_REGS=%d%s%.64s",
             fa_cu_dtype_define(dtype), head_dim, out->tiles.block_k, async != 0, out->q_regs,
             extra && *extra ? " " : "", extra ? extra : "");
    return FA_SUCCESS;
  }
  fa_status st = fa_tiles_cuda_forward(lim, head_dim, FA_F32, &out->tiles);
  if (st != FA_SUCCESS) return st;
  out->kernel = "flash_fwd_simt";
  snprintf(out->defines, sizeof out->defines, "-DFA_TC=0 %s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d",
           fa_cu_dtype_define(dtype), head_dim, out->tiles.block_q, out->tiles.block_k);
  return FA_SUCCESS;
}

void fa_cu_forward_features(fa_cu_fwd_variant *var, int block_mask, int dropout) {
  /* Appended only when on: a dense call keeps the defines (and the kernel, and its cache entry) it had. */
  size_t n = strlen(var->defines);
  snprintf(var->defines + n, sizeof var->defines - n, "%s%s", block_mask ? " -DFA_BLOCK_MASK=1" : "",
           dropout ? " -DFA_DROPOUT=1" : "");
}

void fa_cu_forward_infer(fa_cu_fwd_variant *var, int mods) {
  const size_t n = strlen(var->defines);
  snprintf(var->defines + n, sizeof var->defines - n, " -DFA_INFER=1 -DFA_INFER_MODS=%d", mods != 0);
}

fa_status fa_cu_forward_sm90_variant(const fa_tile_limits *lim, int head_dim, fa_dtype dtype, int banded, int infer,
                                     int64_t seqlen_q, int mask_bq, int mask_bk, fa_cu_fwd_variant *out) {
  memset(out, 0, sizeof *out);
  if (dtype != FA_F16 && dtype != FA_BF16) return FA_ERROR_UNSUPPORTED;
  int stages = 0;
  fa_status st =
      fa_tiles_cuda_sm90_forward(lim, head_dim, banded, infer, seqlen_q, mask_bq, mask_bk, &stages, &out->tiles);
  if (st != FA_SUCCESS) return st;
  /* FLASHATTN_SM90_TILE=BMxBN replaces the tile for tuning runs when it fits (BM 64, 128 or 192; BN a
   * multiple of 16 from 64 to 256 that tools/gen_wgmma.py generated). */
  const char *tile = getenv("FLASHATTN_SM90_TILE");
  int bm, bn;
  if (tile && sscanf(tile, "%dx%d", &bm, &bn) == 2 && (bm == 64 || bm == 128 || bm == 192) && bn >= 64 &&
      bn <= 256 && bn % 16 == 0 && (bn <= 192 || bn == 256)) {
    const size_t bytes = out->tiles.local_mem_bytes +
                         (size_t)(head_dim + 63) / 64 * 128 * ((size_t)(bm - out->tiles.block_q) +
                                                             2 * (size_t)stages * (bn - out->tiles.block_k));
    if (bytes <= lim->local_mem_bytes && 2 * bm + 128 <= lim->max_group_size) {
      out->tiles.block_q = bm;
      out->tiles.block_k = bn;
      out->tiles.threads = 2 * bm + 128;
      out->tiles.local_mem_bytes = bytes;
    }
  }
  out->tc = 1;
  out->kernel = "flash_fwd_sm90";
  /* FLASHATTN_SM90_DEFINES: extra defines for comparisons (-DFA_SM90_OVERLAP=0, -DFA_SM90_PINGPONG=0). */
  const char *extra = getenv("FLASHATTN_SM90_DEFINES");
  snprintf(out->defines, sizeof out->defines, "%s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DNWG=%d -DSTAGES=%d%s%.64s",
           fa_cu_dtype_define(dtype), head_dim, out->tiles.block_q, out->tiles.block_k, out->tiles.block_q / 64,
           stages, extra && *extra ? " " : "", extra ? extra : "");
  return FA_SUCCESS;
}
