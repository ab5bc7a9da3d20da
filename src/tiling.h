/* Tile sizes from the device's on-chip memory: pure functions, shared by both backends. */
#ifndef FA_TILING_H
#define FA_TILING_H

#include <stddef.h>

#include "backend.h"

/* What a device offers one work-group / thread block. */
typedef struct fa_tile_limits {
  size_t local_mem_bytes; /* on-chip budget per group, after FLASHATTN_LOCAL_MEM_BYTES */
  int max_group_size;     /* work-items / threads per group */
  int simd_width;         /* lanes executed together: 32 on NVIDIA, 1 where it does not matter */
} fa_tile_limits;

/* The paper's Algorithm 1 starting point for M bytes of SRAM and head dim d:
 * Bc = ceil(M / (4 d)) with M counted in float32 elements, Br = min(Bc, d). */
FA_HIDDEN void fa_tiles_paper(size_t bytes, int head_dim, int *block_q, int *block_k);

/* Tiles of the OpenCL flash kernels (kernels/flash_fwd.cl, flash_bwd.cl): see tiling.c for the layout
 * they size. Return FA_ERROR_UNSUPPORTED when even the smallest tile does not fit. */
FA_HIDDEN fa_status fa_tiles_opencl_forward(const fa_tile_limits *lim, int head_dim, fa_tiles *out);
FA_HIDDEN fa_status fa_tiles_opencl_backward(const fa_tile_limits *lim, int head_dim, fa_tiles *out);

/* Tiles of the CUDA flash kernels (kernels/flash_fwd.cu, flash_bwd.cu). */
FA_HIDDEN fa_status fa_tiles_cuda_forward(const fa_tile_limits *lim, int head_dim, fa_dtype dtype,
                                          fa_tiles *out);
/* Tiles of the Hopper forward (kernels/flash_fwd_sm90.cu): block_q = 64 x consumer warpgroups, threads
 * = block_q + 128 (the producer), *stages the K/V ring depth. banded: a row sees a band of the keys (causal,
 * or a sliding window); infer: 0, or the FA_INFER variant (varlen, window: 1; with ALiBi or softcap, whose code
 * takes registers: 2); seqlen_q (0: unknown;
 * varlen: the mean sequence) and the block mask's blocks mask_bq x mask_bk (0: none) steer the choice.
 * UNSUPPORTED when no key tile of 64 or more fits the budget (the sm_80 kernel serves those). */
FA_HIDDEN fa_status fa_tiles_cuda_sm90_forward(const fa_tile_limits *lim, int head_dim, int banded, int infer,
                                               int64_t seqlen_q, int mask_bq, int mask_bk, int *stages, fa_tiles *out);
/* Tiles of the Hopper backward (kernels/flash_bwd_sm90.cu): 64 queries x 128 keys, 384 threads; D <= 128. */
FA_HIDDEN fa_status fa_tiles_cuda_sm90_backward(const fa_tile_limits *lim, int head_dim, fa_tiles *out);
FA_HIDDEN fa_status fa_tiles_cuda_backward(const fa_tile_limits *lim, int head_dim, fa_dtype dtype,
                                           fa_tiles *out);
/* The tensor-core backward kernel's tiles (kernels/flash_bwd.cu flash_bwd_dkdv_tc, f16/bf16, sm_80+): block_q
 * = BM, block_k = BN, threads = 32 x warps; UNSUPPORTED when none fits. fa_tiles_cuda_backward returns these
 * for 16-bit dtypes when they fit, else the CUDA-core tiles (256 threads). */
FA_HIDDEN fa_status fa_tiles_cuda_backward_tc(const fa_tile_limits *lim, int head_dim, fa_tiles *out);
/* Its shared bytes with `buffers` (1 or 2) buffers of Q, dO, lse, di. */
FA_HIDDEN size_t fa_tiles_cuda_backward_tc_bytes(int d, int bm, int bn, int warps, int buffers);

#endif
