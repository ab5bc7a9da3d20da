/* The OpenCL flash backward on NVIDIA tensor cores (kernels/flash_bwd_nv.cl): f16/bf16, D <= 256, sm_80+, or
 * anywhere with FLASHATTN_OPENCL_NV_TC=emulate (cl_flash_nv.c has the modes). Three launches: flash_bwd_nv_pre
 * (Di into the workspace), flash_bwd_nv_dkdv, flash_bwd_nv_dq; no atomics, so every call is deterministic.
 * What it does not serve, and a kernel the driver refuses to build, return FA_ERROR_UNSUPPORTED: cl_backward.c
 * then runs the portable kernels. Everything that can fail short of the driver's launch is done before the
 * first launch, so that an error leaves every output untouched. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "cl_args.h"
#include "cl_internal.h"

#define NV_THREADS 128
/* flash_bwd_nv_dkdv's keys and flash_bwd_nv_dq's queries per group (BLOCK_KEYS, BLOCK_ROWS): 64, or 32 where
 * the head dim is split between two warps (padded D > 128, NSPLIT 2), which also takes the partial-sum
 * exchange's 8 KiB of local memory. */
#define NV_SPLIT(dp) ((dp) > 128 ? 2 : 1)
#define NV_XCH_BYTES 8192

/* The last device whose driver refused the dense kernels, and the masked / dropout variants (cl_flash_nv.c's
 * fa_cl_nv_kernel). */
static _Atomic uintptr_t nv_failed_device;
static _Atomic uintptr_t nv_failed_device_masked;

/* The widest query block of flash_bwd_nv_dkdv (Q, dO row-major, lse and Di) and key tile of flash_bwd_nv_dq
 * (K, V row-major) that fit `budget` bytes of local memory; 0 when none does. */
/* Above D 64 at most 32: 64 fits at D 128 but spills registers (ptxas through clang's PTX: 200 bytes in dkdv,
 * 120 in dq). */
static int dkdv_block(int dp, size_t budget, size_t extra) {
  for (int bm = dp > 64 ? 32 : 64; bm >= 16; bm /= 2)
    if ((size_t)2 * bm * (dp + 8) * 2 + (size_t)2 * bm * 4 + extra <= budget) return bm;
  return 0;
}
static int dq_block(int dp, size_t budget, size_t extra) {
  for (int bn = dp > 64 ? 32 : 64; bn >= 16; bn /= 2)
    if ((size_t)2 * bn * (dp + 8) * 2 + extra <= budget) return bn;
  return 0;
}

fa_status fa_cl_flash_nv_backward(fa_context *ctx, const fa_problem *p) {
  const fa_cl *cl = fa_cl_of(ctx);
  const fa_cl_nv_mode mode = fa_cl_nv_mode_of(cl);
  if (mode == FA_CL_NV_OFF) return FA_ERROR_UNSUPPORTED;
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERROR_UNSUPPORTED;
  if (p->head_dim > FA_CL_NV_BWD_MAX_D || p->head_dim % 8 != 0) return FA_ERROR_UNSUPPORTED;
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX) return FA_ERROR_UNSUPPORTED;
  const int emulate = mode == FA_CL_NV_EMULATE;
  const int d = (int)p->head_dim, dp = fa_cl_nv_dp(d);
  const size_t budget = fa_env_local_mem((size_t)cl->local_mem_bytes), extra = emulate ? NV_THREADS * 24 : 0;
  const int split = NV_SPLIT(dp), per_group = 64 / split;
  const size_t xch = split > 1 ? NV_XCH_BYTES : 0;
  const int bm = dkdv_block(dp, budget, extra + xch), bn = dq_block(dp, budget, extra + xch);
  if (!bm || !bn) return FA_ERROR_UNSUPPORTED;

  const int masked = p->mask.buf != NULL, dropout = p->dropout_p > 0.0f, infer = fa_problem_flash_infer(p);
  const int aligned = fa_cl_nv_aligned8(&p->q) && fa_cl_nv_aligned8(&p->k) && fa_cl_nv_aligned8(&p->v) &&
                      fa_cl_nv_aligned8(&p->dout);
  char options[256];
  snprintf(options, sizeof options,
           "%s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DFA_ALIGNED=%d -DFA_NV_EMULATE=%d -DFA_BLOCK_MASK=%d "
           "-DFA_DROPOUT=%d -DFA_INFER=%d",
           fa_cl_dtype_define(p->dtype), d, bm, bn, aligned, emulate, masked, dropout, infer);
  const char *files = "masks.h nv_warp.cl flash_bwd_nv.cl";
  _Atomic uintptr_t *failed = masked || dropout || infer ? &nv_failed_device_masked : &nv_failed_device;
  cl_kernel pre, dkdv, dq;
  fa_status s;
  if ((s = fa_cl_nv_kernel(ctx, mode, failed, files, options, "flash_bwd_nv_pre", &pre)) != FA_SUCCESS) return s;
  if ((s = fa_cl_nv_kernel(ctx, mode, failed, files, options, "flash_bwd_nv_dkdv", &dkdv)) != FA_SUCCESS) return s;
  if ((s = fa_cl_nv_kernel(ctx, mode, failed, files, options, "flash_bwd_nv_dq", &dq)) != FA_SUCCESS) return s;
  if ((s = fa_cl_check_group(ctx, pre, NV_THREADS, "flash_bwd_nv_pre")) != FA_SUCCESS) return s;
  if ((s = fa_cl_check_group(ctx, dkdv, NV_THREADS, "flash_bwd_nv_dkdv")) != FA_SUCCESS) return s;
  if ((s = fa_cl_check_group(ctx, dq, NV_THREADS, "flash_bwd_nv_dq")) != FA_SUCCESS) return s;

  size_t rows, bytes;
  if ((s = fa_cl_flash_bwd_workspace(ctx, p, 0, &rows, &bytes)) != FA_SUCCESS) return s;
  cl_mem ws;
  if ((s = fa_cl_workspace(ctx, bytes, &ws)) != FA_SUCCESS) return s;
  const int group = (int)(p->heads_q / p->heads_kv);
  const float scale_log2 = p->scale * 1.4426950408889634f;

  arg_list a = args_of(ctx, pre, "flash_bwd_nv_pre");
  arg_view(&a, &p->o);
  arg_view(&a, &p->dout);
  arg_mem(&a, ws);
  arg_long(&a, 0);
  arg_int(&a, p->seqlen_q);
  arg_int(&a, p->heads_q);
  if (a.status != FA_SUCCESS) return a.status;

  a = args_of(ctx, dkdv, "flash_bwd_nv_dkdv");
  const fa_view *dkdv_views[7] = {&p->q, &p->k, &p->v, &p->dout, &p->dk, &p->dv, &p->lse};
  for (int x = 0; x < 7; x++) arg_view(&a, dkdv_views[x]);
  arg_mem(&a, ws);
  arg_long(&a, 0);
  arg_walk(&a, p, group, scale_log2);
  if (a.status != FA_SUCCESS) return a.status;

  a = args_of(ctx, dq, "flash_bwd_nv_dq");
  const fa_view *dq_views[6] = {&p->q, &p->k, &p->v, &p->dout, &p->dq, &p->lse};
  for (int x = 0; x < 6; x++) arg_view(&a, dq_views[x]);
  arg_mem(&a, ws);
  arg_long(&a, 0);
  arg_walk(&a, p, group, scale_log2);
  if (a.status != FA_SUCCESS) return a.status;

  /* Varlen: the block kernels' grids cover the longest sequence, once per sequence (groups past their own
   * sequence leave); flash_bwd_nv_pre covers the token axis. */
  const int varlen = p->cu_seqlens_q.buf != NULL;
  const int64_t sq = varlen ? p->max_seqlen_q : p->seqlen_q, sk = varlen ? p->max_seqlen_k : p->seqlen_k;
  const size_t seqs = (size_t)(varlen ? p->seqs : p->batch);
  const size_t local[3] = {NV_THREADS, 1, 1};
  const size_t pre_global[3] = {(size_t)(p->seqlen_q + 3) / 4 * NV_THREADS, (size_t)p->heads_q, (size_t)p->batch};
  const size_t kv_global[3] = {(size_t)(sk + per_group - 1) / per_group * NV_THREADS, (size_t)p->heads_kv, seqs};
  const size_t q_global[3] = {(size_t)(sq + per_group - 1) / per_group * NV_THREADS, (size_t)p->heads_q, seqs};
  if ((s = fa_cl_launch(ctx, pre, 3, pre_global, local, "flash_bwd_nv_pre")) != FA_SUCCESS) return s;
  /* Varlen whose sequences are all empty on one side: no group on that side (the other writes its zeros). */
  if (kv_global[0] && (s = fa_cl_launch(ctx, dkdv, 3, kv_global, local, "flash_bwd_nv_dkdv")) != FA_SUCCESS) return s;
  return q_global[0] ? fa_cl_launch(ctx, dq, 3, q_global, local, "flash_bwd_nv_dq") : FA_SUCCESS;
}
