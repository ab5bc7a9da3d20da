/* The Hopper backward (kernels/flash_bwd_sm90.cu, sm_90a): whether it serves a problem, its workspace and
 * its three launches (pre, main, dq). cu_backward.c calls it first on sm_90 and falls back to the sm_80
 * kernels when sm90_bwd_reason() says why not. Called with the context current.
 * FLASHATTN_CUDA_BWD=sm80 never takes it; =sm90 makes a problem it cannot serve an error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"

#define LOG2E 1.4426950408889634

/* NULL when the kernel serves p on this context, else why not. */
static const char *sm90_bwd_reason(fa_context *ctx, const fa_problem *p, fa_tiles *t) {
  static _Thread_local char why[160];
  const fa_cu *c = fa_cu_of(ctx);
  if (c->cc_major != 9) return "the device is not compute capability 9.0";
  if (!c->cu->TensorMapEncodeTiled) return "the driver has no cuTensorMapEncodeTiled";
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return "it serves f16 and bf16 only";
  if (p->seqlen_q > INT32_MAX / 2 || p->seqlen_k > INT32_MAX / 2) return "a sequence is longer than 2^30";
  fa_tile_limits lim;
  fa_cu_tile_limits(ctx, &lim);
  if (fa_tiles_cuda_sm90_backward(&lim, (int)p->head_dim, t) != FA_SUCCESS)
    return "it serves head dims up to 256 within the shared-memory budget";
  const int64_t qs[3] = {p->batch, p->seqlen_q, p->heads_q}, ks[3] = {p->batch, p->seqlen_k, p->heads_kv};
  const struct {
    const char *name;
    const fa_view *v;
    const int64_t *shape;
  } ops[6] = {{"q", &p->q, qs}, {"k", &p->k, ks}, {"v", &p->v, ks}, {"dout", &p->dout, qs},
              {"dk", &p->dk, ks}, {"dv", &p->dv, ks}};
  for (int i = 0; i < 6; i++) {
    const char *r = fa_cu_tma_unfit(ops[i].v, ops[i].shape, 2);
    if (r) {
      snprintf(why, sizeof why, "%s: %s", ops[i].name, r);
      return why;
    }
  }
  return NULL;
}

/* 0: the sm_80 kernels; 1: this one; -1: FLASHATTN_CUDA_BWD=sm90 asked for it and it cannot (error set). */
int fa_cu_backward_sm90_choice(fa_context *ctx, const fa_problem *p) {
  const char *env = getenv("FLASHATTN_CUDA_BWD");
  if (env && strcmp(env, "sm90") != 0 && env[0]) return 0; /* sm80, simt: the older kernels */
  fa_tiles t;
  const char *why = sm90_bwd_reason(ctx, p, &t);
  if (!why) return 1;
  if (env && strcmp(env, "sm90") == 0) {
    fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_backward: FLASHATTN_CUDA_BWD=sm90, but the sm90 kernel cannot run: %s", why);
    return -1;
  }
  return 0;
}

/* The batches the kernels see: varlen's sequences, each as long as the longest, or the batch. */
static int64_t seqs_of(const fa_problem *p) { return p->cu_seqlens_q.buf ? p->seqs : p->batch; }
static int64_t rows_q(const fa_problem *p) { return p->cu_seqlens_q.buf ? p->max_seqlen_q : p->seqlen_q; }
static int64_t rows_k(const fa_problem *p) { return p->cu_seqlens_q.buf ? p->max_seqlen_k : p->seqlen_k; }

/* Workspace: lse2, di [S Hq][Sq_pad] (`rows` floats each); dq_acc [S Hq][Sq_pad][slabs x 64] (`acc`);
 * sem [S Hq][n_m][slabs] (deterministic). S and Sq: seqs_of and rows_q. */
static fa_status workspace_layout(fa_context *ctx, const fa_problem *p, const fa_tiles *t, size_t *rows, size_t *acc,
                                  size_t *bytes) {
  const int slabs = ((int)p->head_dim + 63) / 64;
  const int64_t n_m = (rows_q(p) + t->block_q - 1) / t->block_q, sq_pad = n_m * t->block_q;
  size_t sems;
  if (__builtin_mul_overflow((size_t)seqs_of(p), (size_t)p->heads_q, rows) ||
      __builtin_mul_overflow(*rows, (size_t)sq_pad, rows) ||
      __builtin_mul_overflow(*rows, (size_t)slabs * 64, acc) ||
      __builtin_mul_overflow((size_t)seqs_of(p) * (size_t)p->heads_q, (size_t)n_m * (size_t)slabs, &sems) ||
      __builtin_mul_overflow(2 * *rows + *acc + (p->deterministic ? sems : 0), sizeof(float), bytes))
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "fa_backward: the workspace for %lld x %lld x %lld rows overflows size_t",
                   (long long)seqs_of(p), (long long)p->heads_q, (long long)rows_q(p));
  return FA_SUCCESS;
}

fa_status fa_cu_backward_sm90_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  fa_tiles t;
  size_t rows, acc;
  if (sm90_bwd_reason(ctx, p, &t)) return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_backward: no sm90 kernel");
  return workspace_layout(ctx, p, &t, &rows, &acc, bytes);
}

fa_status fa_cu_backward_sm90(fa_context *ctx, const fa_problem *p) {
  fa_cu *c = fa_cu_of(ctx);
  fa_tiles t;
  if (sm90_bwd_reason(ctx, p, &t)) return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_backward: no sm90 kernel");
  const int d = (int)p->head_dim, ordered = p->deterministic != 0;
  const int64_t n_m = (rows_q(p) + t.block_q - 1) / t.block_q, sq_pad = n_m * t.block_q, seqs = seqs_of(p);
  const int masked = p->mask.buf != NULL, dropout = p->dropout_p > 0.f, infer = fa_problem_flash_infer(p);

  char defs[256];
  snprintf(defs, sizeof defs,
           "%s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DFA_DQ_ORDERED=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d -DFA_INFER=%d "
           "-DFA_INFER_MODS=%d",
           fa_cu_dtype_define(p->dtype), d, t.block_q, t.block_k, ordered, masked, dropout, infer,
           infer && fa_problem_score_mods(p));
  CUfunction pre, main_fn, conv;
  fa_status st = fa_cu_function_arch(ctx, "sm_90a", "flash_bwd_sm90.cu", defs, "flash_bwd_sm90_pre", 0, &pre);
  if (st == FA_SUCCESS)
    st = fa_cu_function_arch(ctx, "sm_90a", "flash_bwd_sm90.cu", defs, "flash_bwd_sm90", t.local_mem_bytes, &main_fn);
  if (st == FA_SUCCESS) st = fa_cu_function_arch(ctx, "sm_90a", "flash_bwd_sm90.cu", defs, "flash_bwd_sm90_dq", 0, &conv);
  if (st != FA_SUCCESS) return st;

  size_t rows = 0, acc = 0, bytes = 0;
  if ((st = workspace_layout(ctx, p, &t, &rows, &acc, &bytes)) != FA_SUCCESS) return st;
  CUdeviceptr ws;
  if ((st = fa_cu_workspace(ctx, bytes, &ws)) != FA_SUCCESS) return st;

  fa_bwd_sm90_params a;
  memset(&a, 0, sizeof a);
  const size_t es = 2;
  a.q = fa_cu_addr(&p->q, es), a.k = fa_cu_addr(&p->k, es), a.v = fa_cu_addr(&p->v, es);
  a.o = fa_cu_addr(&p->o, es), a.dout = fa_cu_addr(&p->dout, es), a.lse = fa_cu_addr(&p->lse, sizeof(float));
  a.dq = fa_cu_addr(&p->dq, es), a.dk = fa_cu_addr(&p->dk, es), a.dv = fa_cu_addr(&p->dv, es);
  a.lse2 = ws;
  a.di = ws + rows * sizeof(float);
  a.dq_acc = ws + 2 * rows * sizeof(float);
  a.sem = ordered ? a.dq_acc + acc * sizeof(float) : 0;
  const fa_view *views[8] = {&p->q, &p->k, &p->v, &p->o, &p->dout, &p->dq, &p->dk, &p->dv};
  long long *strides[8] = {&a.q_sb, &a.k_sb, &a.v_sb, &a.o_sb, &a.do_sb, &a.dq_sb, &a.dk_sb, &a.dv_sb};
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 3; j++) strides[i][j] = views[i]->stride[j];
  a.lse_sb = p->lse.stride[0], a.lse_sh = p->lse.stride[1], a.lse_ss = p->lse.stride[2];
  if (masked) {
    a.mask = fa_cu_addr(&p->mask, 1);
    a.mask_sb = p->mask.stride[0], a.mask_sh = p->mask.stride[1];
    a.mask_sr = p->mask.stride[2], a.mask_sc = p->mask.stride[3];
    a.block_q = (int)p->block_q, a.block_k = (int)p->block_k;
  }
  if (dropout) {
    a.dropout_seed = p->dropout_seed, a.dropout_offset = p->dropout_offset;
    a.dropout_threshold = p->dropout_threshold, a.dropout_scale = p->dropout_scale;
  }
  a.seqlen_q = (int)p->seqlen_q, a.seqlen_k = (int)p->seqlen_k, a.seqlen_q_pad = (int)sq_pad, a.n_mblocks = (int)n_m;
  a.heads_q = (int)p->heads_q, a.group = (int)(p->heads_q / p->heads_kv), a.causal = p->causal != 0;
  a.scale = p->scale, a.scale_log2 = (float)(p->scale * LOG2E);
  fa_cu_infer_params(p, &a.inf);

  fa_bwd_sm90_maps maps;
  memset(&maps, 0, sizeof maps);
  if ((st = fa_cu_tma_map(ctx, &maps.q, &p->q, p->dtype, p->batch, p->seqlen_q, p->heads_q, d, t.block_q, "q")) != FA_SUCCESS ||
      (st = fa_cu_tma_map(ctx, &maps.dout, &p->dout, p->dtype, p->batch, p->seqlen_q, p->heads_q, d, t.block_q, "dout")) != FA_SUCCESS ||
      (st = fa_cu_tma_map(ctx, &maps.k, &p->k, p->dtype, p->batch, p->seqlen_k, p->heads_kv, d, t.block_k, "k")) != FA_SUCCESS ||
      (st = fa_cu_tma_map(ctx, &maps.v, &p->v, p->dtype, p->batch, p->seqlen_k, p->heads_kv, d, t.block_k, "v")) != FA_SUCCESS)
    return st;

  /* Everything that can fail short of a launch is done: now zero the accumulators and launch. */
  CUresult r = c->cu->MemsetD32Async(a.dq_acc, 0, bytes / sizeof(float) - 2 * rows, c->stream);
  if (r != CUDA_SUCCESS) return fa_cu_fail(ctx, "cuMemsetD32Async(dq accumulator)", r);
  void *args1[] = {&a};
  /* Over the sequences (varlen: each as long as the longest; blocks past their own sequence leave). */
  if (sq_pad) /* zero with varlen whose query sequences are all empty: dk and dv are then zeros */
    st = fa_cu_launch_split(ctx, pre, (unsigned)((sq_pad + 7) / 8), p->heads_q, seqs, 256, 0, args1, &a.b0, &a.h0,
                            "flash_bwd_sm90_pre");
  if (st != FA_SUCCESS) return st;
  void *args2[] = {&a, &maps};
  const unsigned kv_blocks = (unsigned)((rows_k(p) + t.block_k - 1) / t.block_k);
  if (kv_blocks) /* zero with varlen whose key sequences are all empty: dq is then zeros, written below */
    st = fa_cu_launch_split(ctx, main_fn, kv_blocks, p->heads_kv, seqs, (unsigned)t.threads, t.local_mem_bytes, args2,
                            &a.b0, &a.h0, "flash_bwd_sm90");
  if (st != FA_SUCCESS || !sq_pad) return st;
  return fa_cu_launch_split(ctx, conv, (unsigned)((rows_q(p) + 7) / 8), p->heads_q, seqs, 256, 0, args1, &a.b0,
                            &a.h0, "flash_bwd_sm90_dq");
}
