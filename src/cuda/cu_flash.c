/* The CUDA flash forward: picks the kernel family and variant, fills the argument block and launches over
 * (query blocks, heads, batch). Called with the context current (cu_context.c pushes it).
 *   sm90  kernels/flash_fwd_sm90.cu (wgmma, TMA, warp-specialised; compiled for sm_90a) for f16/bf16 on
 *         compute capability 9.0 when every operand suits TMA (sm90_reason says why not), with the inference
 *         options (varlen, window, ALiBi, softcap) in its FA_INFER variant;
 *   sm80  kernels/flash_fwd.cu: tensor cores (mma.sync) for f16/bf16 on sm_80+, CUDA cores otherwise
 *         (cu_variants.c), the inference options in their FA_INFER variants.
 * FLASHATTN_CUDA_FWD=sm80|sm90 forces a family for comparisons (sm90 where it cannot run is an error). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"
#include "kernels/cuda_params.h"

#define LOG2E 1.4426950408889634

/* The argument block must have one layout on both sides (no padding the two compilers could disagree on). */
_Static_assert(sizeof(fa_fwd_params) == 5 * 8 + 15 * 8 + 8 * 4 + 6 * 8 + 6 * 4 + 7 * 8 + 6 * 4,
               "fa_fwd_params has padding");

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

void fa_cu_infer_params(const fa_problem *p, fa_infer_params *a) {
  memset(a, 0, sizeof *a);
  if (p->cu_seqlens_q.buf) {
    a->varlen = 1;
    a->seqs = (int)p->seqs;
    a->cu_q = fa_cu_addr(&p->cu_seqlens_q, 4), a->cu_q_s = p->cu_seqlens_q.stride[0];
    a->cu_k = fa_cu_addr(&p->cu_seqlens_k, 4), a->cu_k_s = p->cu_seqlens_k.stride[0];
  }
  if (p->alibi.buf) {
    a->has_alibi = 1;
    a->alibi = fa_cu_addr(&p->alibi, 4), a->al_sb = p->alibi.stride[0], a->al_sh = p->alibi.stride[1];
  }
  a->wl = fa_problem_window_left(p), a->wr = fa_problem_window_right(p);
  a->softcap2 = (float)(p->softcap * LOG2E);
}

/* The argument block both families read. */
static void fill_params(const fa_problem *p, fa_fwd_params *a_out) {
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
  fa_cu_infer_params(p, &a.inf);
  const int64_t q_shape[3] = {p->batch, p->seqlen_q, p->heads_q};
  a.o_pairs = es == 2 && rows_aligned(&p->o, (CUdeviceptr)a.o, q_shape, es, 4);
  *a_out = a;
}

/* Launch over (query blocks, heads, batch); varlen: blocks for the longest sequence, and the sequences. */
static fa_status launch_grid(fa_context *ctx, CUfunction fn, const fa_problem *p, fa_fwd_params *a, void **args,
                             const fa_tiles *t, const char *kernel) {
  const int varlen = p->cu_seqlens_q.buf != NULL;
  const unsigned blocks_q = (unsigned)(((varlen ? p->max_seqlen_q : p->seqlen_q) + t->block_q - 1) / t->block_q);
  if (!blocks_q) return FA_SUCCESS; /* varlen with every sequence empty: nothing to write */
  return fa_cu_launch_split(ctx, fn, blocks_q, p->heads_q, varlen ? p->seqs : p->batch, (unsigned)t->threads,
                            t->local_mem_bytes, args, &a->b0, &a->h0, kernel);
}

/* ---- sm90 ---- */

/* NULL when the sm90 family serves p on this context, else why not. */
static const char *sm90_reason(fa_context *ctx, const fa_problem *p, fa_cu_fwd_variant *var) {
  static char why[160];
  const fa_cu *c = fa_cu_of(ctx);
  if (c->cc_major != 9) return "the device is not compute capability 9.0";
  if (!c->cu->TensorMapEncodeTiled) return "the driver has no cuTensorMapEncodeTiled";
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return "it serves f16 and bf16 only";
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX) return "a sequence is longer than 2^31";
  fa_tile_limits lim;
  fa_cu_tile_limits(ctx, &lim);
  const int mbq = p->mask.buf ? (int)p->block_q : 0, mbk = p->mask.buf ? (int)p->block_k : 0;
  /* Varlen: the mean sequence stands for the lengths in the tile choice (each sequence pads its last block). */
  const int64_t sq = p->cu_seqlens_q.buf ? p->seqlen_q / (p->seqs > 0 ? p->seqs : 1) : p->seqlen_q;
  const int infer = fa_problem_flash_infer(p) ? 1 + fa_problem_score_mods(p) : 0;
  if (fa_cu_forward_sm90_variant(&lim, (int)p->head_dim, p->dtype, p->causal || p->window, infer,
                                 sq, mbq, mbk, var) != FA_SUCCESS)
    return "no tile fits the shared-memory budget";
  const size_t es = 2;
  const int64_t q_shape[3] = {p->batch, p->seqlen_q, p->heads_q}, kv_shape[3] = {p->batch, p->seqlen_k, p->heads_kv};
  const struct {
    const char *name;
    const fa_view *v;
    const int64_t *shape;
  } ops[4] = {{"q", &p->q, q_shape}, {"k", &p->k, kv_shape}, {"v", &p->v, kv_shape}, {"o", &p->o, q_shape}};
  for (int i = 0; i < 4; i++) {
    const char *r = fa_cu_tma_unfit(ops[i].v, ops[i].shape, es);
    if (r) {
      snprintf(why, sizeof why, "%s: %s", ops[i].name, r);
      return why;
    }
  }
  return NULL;
}

static fa_status forward_sm90(fa_context *ctx, const fa_problem *p, fa_cu_fwd_variant *var) {
  fa_fwd_params a;
  fill_params(p, &a);
  fa_fwd_sm90_maps maps;
  memset(&maps, 0, sizeof maps);
  const fa_tiles *t = &var->tiles;
  fa_status st;
  if ((st = fa_cu_tma_map(ctx, &maps.q, &p->q, p->dtype, p->batch, p->seqlen_q, p->heads_q, p->head_dim, t->block_q,
                       "q")) != FA_SUCCESS ||
      (st = fa_cu_tma_map(ctx, &maps.k, &p->k, p->dtype, p->batch, p->seqlen_k, p->heads_kv, p->head_dim, t->block_k,
                       "k")) != FA_SUCCESS ||
      (st = fa_cu_tma_map(ctx, &maps.v, &p->v, p->dtype, p->batch, p->seqlen_k, p->heads_kv, p->head_dim, t->block_k,
                       "v")) != FA_SUCCESS)
    return st;
  fa_cu_forward_features(var, p->mask.buf != NULL, p->dropout_p > 0.0f);
  if (fa_problem_flash_infer(p)) fa_cu_forward_infer(var, fa_problem_score_mods(p));
  CUfunction fn;
  st = fa_cu_function_arch(ctx, "sm_90a", "flash_fwd_sm90.cu", var->defines, var->kernel, t->local_mem_bytes, &fn);
  if (st != FA_SUCCESS) return st;
  void *args[] = {&a, &maps};
  return launch_grid(ctx, fn, p, &a, args, t, var->kernel);
}

/* FLASHATTN_CUDA_FWD: "sm80", "sm90", or anything else for the automatic choice. */
static const char *forced_family(void) {
  const char *env = getenv("FLASHATTN_CUDA_FWD");
  return env && (strcmp(env, "sm80") == 0 || strcmp(env, "sm90") == 0) ? env : NULL;
}

void fa_cu_describe_kernels(const fa_context *ctx, char *buf, size_t len) {
  const fa_cu *c = fa_cu_of(ctx);
  const char *forced = forced_family();
  const char *fwd;
  if (c->cc_major == 9 && c->cu->TensorMapEncodeTiled && !(forced && strcmp(forced, "sm80") == 0))
    fwd = "forward: sm90 (wgmma, TMA, warp-specialised) for f16/bf16 whose tensors suit TMA (16-byte aligned "
          "bases and strides), varlen, window, ALiBi and softcap included, else sm80 (mma.sync tensor cores) for "
          "f16/bf16 and CUDA cores for f32";
  else if (c->cc_major >= 8)
    fwd = "forward: sm80 (mma.sync tensor cores) for f16/bf16, CUDA cores for f32";
  else
    fwd = "forward: CUDA cores";
  const char *sm80_bwd = c->cc_major >= 8 ? "mma.sync tensor cores for f16/bf16 dK/dV at D <= 128, CUDA cores otherwise"
                                          : "CUDA cores";
  const char *bwd_env = getenv("FLASHATTN_CUDA_BWD");
  if (c->cc_major == 9 && c->cu->TensorMapEncodeTiled && !(bwd_env && bwd_env[0] && strcmp(bwd_env, "sm90") != 0))
    snprintf(buf, len, "%s; backward: sm90 (wgmma, TMA, dQ by bulk reduction) for f16/bf16 at D <= 128 whose tensors "
             "suit TMA, without varlen, window, ALiBi or softcap, else %s", fwd, sm80_bwd);
  else
    snprintf(buf, len, "%s; backward: %s", fwd, sm80_bwd);
}

/* ---- dispatch ---- */

fa_status fa_cu_forward(fa_context *ctx, const fa_problem *p) {
  const int d = (int)p->head_dim;
  const size_t es = fa_dtype_size(p->dtype);
  const char *forced = forced_family();
  if (!forced || strcmp(forced, "sm90") == 0) {
    fa_cu_fwd_variant var;
    const char *why = sm90_reason(ctx, p, &var);
    if (!why) return forward_sm90(ctx, p, &var);
    if (forced)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_forward: FLASHATTN_CUDA_FWD=sm90, but the sm90 kernel cannot run: %s",
                     why);
  }
  fa_fwd_params a;
  fill_params(p, &a);
  const int64_t q_shape[3] = {p->batch, p->seqlen_q, p->heads_q};
  const int64_t kv_shape[3] = {p->batch, p->seqlen_k, p->heads_kv};
  /* cp.async moves 16-byte pieces: every row of q, k and v must start on a 16-byte boundary. */
  const int async = rows_aligned(&p->q, (CUdeviceptr)a.q, q_shape, es, 16) &&
                    rows_aligned(&p->k, (CUdeviceptr)a.k, kv_shape, es, 16) &&
                    rows_aligned(&p->v, (CUdeviceptr)a.v, kv_shape, es, 16);

  fa_cu_fwd_variant var;
  fa_status st = plan(ctx, d, p->dtype, async, &var);
  if (st != FA_SUCCESS) return st;
  fa_cu_forward_features(&var, p->mask.buf != NULL, p->dropout_p > 0.0f);
  if (fa_problem_flash_infer(p)) fa_cu_forward_infer(&var, fa_problem_score_mods(p));
  CUfunction fn;
  st = fa_cu_function(ctx, "flash_fwd.cu", var.defines, var.kernel, var.tiles.local_mem_bytes, &fn);
  if (st != FA_SUCCESS) return st;
  void *args[] = {&a};
  return launch_grid(ctx, fn, p, &a, args, &var.tiles, var.kernel);
}
