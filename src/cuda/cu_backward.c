/* The CUDA flash backward: tiles (src/tiling.c), kernels of kernels/flash_bwd.cu, the workspace and the
 * launches. Called with the context current (cu_context.c pushes it) for FA_ALGO_FLASH.
 *
 * Three launches, FlashAttention-2's order: flash_bwd_pre (di = rowsum(dO o O) into the workspace), then
 * the dK/dV kernel (one block per block of keys) and the dQ part, one of three schemes:
 *   atomic    the dK/dV kernel adds dS K into a float32 accumulator with atomicAdd, then flash_bwd_dq_convert
 *             writes dq. Workspace B Hq Sq (D + 1) floats. Not bit-reproducible.
 *   ordered   (deterministic on tensor cores) the same, the additions into each query block ordered by key
 *             block with a semaphore per (query head, query block): bit-identical runs. Workspace B Hq Sq
 *             (D + 1) floats + B Hq ceil(Sq / block_q) int32.
 *   separate  flash_bwd_dq_simt, one block per block of queries walking the key blocks (recomputing S and dP):
 *             no atomics, a fixed order of summation: deterministic. Workspace B Hq Sq floats.
 * p->deterministic takes the ordered scheme on tensor cores and the separate one on CUDA cores, otherwise the
 * atomic one; FLASHATTN_CUDA_BWD_DQ=separate takes the separate one for every call (so that test suites
 * cover it).
 *
 * Block-sparse masks and dropout (p->mask.buf, p->dropout_p) compile variants with -DFA_BLOCK_MASK=1 and
 * -DFA_DROPOUT=1 (both defines appended, to both kernels' defines, only when one is on: dense calls keep
 * their kernels and cache entries); the kernels skip the tiles the mask hides and regenerate the forward's
 * dropout keep bits from the seed. The inference options (varlen, window, ALiBi, softcap) compile
 * -DFA_INFER=1 the same way, and always take these kernels (the Hopper backward has no such variant yet):
 * varlen launches the block kernels over the longest sequence once per sequence.
 *
 * f16 and bf16 on sm_80+ take flash_bwd_dkdv_tc (tensor cores, every head dim, tiles from
 * fa_tiles_cuda_backward_tc for the budget) in place of flash_bwd_dkdv_simt. FLASHATTN_CUDA_BWD=simt keeps
 * them on CUDA cores, for comparisons.
 *
 * Everything that can fail short of a launch (tiles, kernel builds, workspace) is done before the first
 * launch, so that an error leaves every output untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"
#define FA_BWD_PARAMS_ONLY
#include "kernels/flash_bwd.cu"

#define LOG2E 1.4426950408889634

/* Launch `fn` over (blocks, heads, batch), several launches when heads or batch exceed the grid's 65535. */
static fa_status launch3(fa_context *ctx, CUfunction fn, fa_bwd_params *a, unsigned blocks, int64_t heads,
                         int64_t batch, unsigned threads, size_t shared, const char *what) {
  for (int64_t b0 = 0; b0 < batch; b0 += 65535) {
    for (int64_t h0 = 0; h0 < heads; h0 += 65535) {
      a->b0 = (int)b0;
      a->h0 = (int)h0;
      const unsigned grid[3] = {blocks, (unsigned)(heads - h0 < 65535 ? heads - h0 : 65535),
                                (unsigned)(batch - b0 < 65535 ? batch - b0 : 65535)};
      void *args[] = {a};
      fa_status st = fa_cu_launch(ctx, fn, grid, threads, shared, args, what);
      if (st != FA_SUCCESS) return st;
    }
  }
  return FA_SUCCESS;
}

/* Whether every row of a view starts on a 16-byte boundary: its address and every stride that is stepped
 * (dimension larger than 1) are multiples of 16 bytes. */
static int rows_aligned16(const fa_view *v, CUdeviceptr addr, int64_t d0, int64_t d1, int64_t d2, size_t es) {
  const int64_t shape[3] = {d0, d1, d2};
  if (addr % 16) return 0;
  for (int i = 0; i < 3; i++)
    if (shape[i] > 1 && ((uint64_t)v->stride[i] * es) % 16) return 0;
  return 1;
}

/* FLASHATTN_CUDA_BWD=simt keeps 16-bit types on the CUDA-core kernels (to compare them with tensor cores). */
static int simt_forced(void) {
  const char *env = getenv("FLASHATTN_CUDA_BWD");
  return env && strcmp(env, "simt") == 0;
}

/* FLASHATTN_CUDA_BWD_DQ=separate: the deterministic dQ scheme for every call (never the other way round). */
static int separate_forced(void) {
  const char *env = getenv("FLASHATTN_CUDA_BWD_DQ");
  return env && strcmp(env, "separate") == 0;
}

/* Which kernels serve p: the CUDA-core tiles (any dtype; also the separate dQ kernel's), and the tensor-core
 * ones for 16-bit types on sm_80+ when they fit; dQ through atomics into dq_acc, in key-block order when
 * deterministic on tensor cores (FA_DQ_ORDERED), or the separate CUDA-core kernel when deterministic on CUDA
 * cores or when forced. */
typedef struct sm80_plan {
  fa_tile_limits lim;
  fa_tiles simt, tct;
  int tc, atomic, ordered;
} sm80_plan;

static fa_status plan_sm80(fa_context *ctx, const fa_problem *p, sm80_plan *pl) {
  const int d = (int)p->head_dim;
  fa_cu_tile_limits(ctx, &pl->lim);
  if (fa_tiles_cuda_backward(&pl->lim, d, FA_F32, &pl->simt) != FA_SUCCESS)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "fa_backward: head dim %d: no tile of the CUDA backward kernels fits %zu bytes of shared memory "
                   "per block (FLASHATTN_LOCAL_MEM_BYTES or the device's limit)",
                   d, pl->lim.local_mem_bytes);
  pl->tc = p->dtype != FA_F32 && fa_cu_of(ctx)->cc_major >= 8 && !simt_forced() &&
           fa_tiles_cuda_backward_tc(&pl->lim, d, &pl->tct) == FA_SUCCESS;
  pl->atomic = !separate_forced() && (pl->tc || !p->deterministic);
  pl->ordered = pl->atomic && p->deterministic;
  return FA_SUCCESS;
}

/* Workspace: di [B, Hq, Sq] (`rows` floats), then (atomic) the dQ accumulator [B, Hq, Sq, D], float32, then
 * (ordered) the semaphores [B, Hq, ceil(Sq / BM)] (with the inference options [B, Hq, Sq]: varlen's query
 * blocks start at any row), int32, from byte *sem_at on. */
static fa_status sm80_workspace(fa_context *ctx, const fa_problem *p, const sm80_plan *pl, size_t *rows,
                                size_t *sem_at, size_t *bytes) {
  const fa_tiles *kt = pl->tc ? &pl->tct : &pl->simt;
  size_t floats, sems = 0;
  const size_t q_tiles =
      fa_problem_flash_infer(p) ? (size_t)p->seqlen_q : (size_t)((p->seqlen_q + kt->block_q - 1) / kt->block_q);
  if (__builtin_mul_overflow((size_t)p->batch, (size_t)p->heads_q, rows) ||
      (pl->ordered && __builtin_mul_overflow(*rows, q_tiles, &sems)) ||
      __builtin_mul_overflow(*rows, (size_t)p->seqlen_q, rows) ||
      __builtin_mul_overflow(*rows, pl->atomic ? (size_t)p->head_dim + 1 : 1, &floats) ||
      __builtin_add_overflow(floats, sems, &floats) ||
      __builtin_mul_overflow(floats, sizeof(float), bytes))
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY,
                   "fa_backward: workspace for %lld x %lld x %lld rows overflows size_t", (long long)p->batch,
                   (long long)p->heads_q, (long long)p->seqlen_q);
  *sem_at = (floats - sems) * sizeof(float);
  return FA_SUCCESS;
}

fa_status fa_cu_backward_sm80_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  sm80_plan pl;
  size_t rows, sem_at;
  fa_status st = plan_sm80(ctx, p, &pl);
  return st != FA_SUCCESS ? st : sm80_workspace(ctx, p, &pl, &rows, &sem_at, bytes);
}

fa_status fa_cu_backward(fa_context *ctx, const fa_problem *p) {
  const int sm90 = fa_cu_backward_sm90_choice(ctx, p);
  if (sm90 != 0) return sm90 > 0 ? fa_cu_backward_sm90(ctx, p) : FA_ERROR_UNSUPPORTED;
  const int d = (int)p->head_dim;
  const size_t es = fa_dtype_size(p->dtype);
  sm80_plan pl;
  fa_status st = plan_sm80(ctx, p, &pl);
  if (st != FA_SUCCESS) return st;
  const fa_tile_limits lim = pl.lim;
  const fa_tiles simt = pl.simt;
  fa_tiles tct = pl.tct;
  const int tc = pl.tc, atomic = pl.atomic, ordered = pl.ordered;

  const int masked = p->mask.buf != NULL, dropout = p->dropout_p > 0.f, infer = fa_problem_flash_infer(p);
  char sparse[64] = "";
  if (masked || dropout) snprintf(sparse, sizeof sparse, " -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d", masked, dropout);
  if (infer) snprintf(sparse, sizeof sparse, " -DFA_INFER=1");
  char simt_defs[256], tc_defs[320];
  snprintf(simt_defs, sizeof simt_defs, FA_BWD_DEFINES_FMT "%s", fa_cu_dtype_define(p->dtype), d, simt.block_q,
           simt.block_k, atomic, sparse);
  /* The tensor-core kernel double-buffers Q, dO, lse2 and di (FA_BWD_PIPELINE) when the second buffer fits the
   * budget. FLASHATTN_CUDA_BWD_DEFINES: extra -D defines for its tuning runs, limited to those that leave the
   * shared layout alone (MIN_BLOCKS, the blocks per SM that the register allocation must allow) and
   * -DFA_BWD_PIPELINE=0 (one buffer, the kernel before the pipeline). */
  const char *extra = getenv("FLASHATTN_CUDA_BWD_DEFINES");
  if (!extra) extra = "";
  int pipe = 0;
  if (tc) {
    const size_t two = fa_tiles_cuda_backward_tc_bytes(d, tct.block_q, tct.block_k, tct.threads / 32, 2);
    pipe = !strstr(extra, "FA_BWD_PIPELINE=0") && two <= lim.local_mem_bytes;
    if (pipe) tct.local_mem_bytes = two;
  }
  snprintf(tc_defs, sizeof tc_defs,
           FA_BWD_TC_DEFINES_FMT "%s%s%.64s",
           fa_cu_dtype_define(p->dtype), d, tct.block_q, tct.block_k, atomic, tct.threads / 32, ordered, pipe,
           sparse, *extra ? " " : "", extra);
  const char *defs = tc ? tc_defs : simt_defs;
  const char *dkdv_name = tc ? "flash_bwd_dkdv_tc" : "flash_bwd_dkdv_simt";
  const fa_tiles *kt = tc ? &tct : &simt;
  CUfunction pre, dkdv, dq;
  st = fa_cu_function(ctx, "flash_bwd.cu", defs, "flash_bwd_pre", 0, &pre);
  if (st == FA_SUCCESS) st = fa_cu_function(ctx, "flash_bwd.cu", defs, dkdv_name, kt->local_mem_bytes, &dkdv);
  if (st == FA_SUCCESS)
    st = atomic ? fa_cu_function(ctx, "flash_bwd.cu", defs, "flash_bwd_dq_convert", 0, &dq)
                : fa_cu_function(ctx, "flash_bwd.cu", simt_defs, "flash_bwd_dq_simt", simt.local_mem_bytes, &dq);
  if (st != FA_SUCCESS) return st;

  size_t rows = 0, sem_at = 0, bytes = 0;
  if ((st = sm80_workspace(ctx, p, &pl, &rows, &sem_at, &bytes)) != FA_SUCCESS) return st;
  CUdeviceptr ws;
  if ((st = fa_cu_workspace(ctx, bytes, &ws)) != FA_SUCCESS) return st;

  fa_bwd_params a;
  memset(&a, 0, sizeof a);
  a.q = fa_cu_addr(&p->q, es);
  a.k = fa_cu_addr(&p->k, es);
  a.v = fa_cu_addr(&p->v, es);
  a.o = fa_cu_addr(&p->o, es);
  a.dout = fa_cu_addr(&p->dout, es);
  a.lse = fa_cu_addr(&p->lse, sizeof(float));
  a.dq = fa_cu_addr(&p->dq, es);
  a.dk = fa_cu_addr(&p->dk, es);
  a.dv = fa_cu_addr(&p->dv, es);
  a.di = ws;
  a.dq_acc = atomic ? ws + rows * sizeof(float) : 0;
  a.sem = ordered ? ws + sem_at : 0;
  a.q_sb = p->q.stride[0], a.q_ss = p->q.stride[1], a.q_sh = p->q.stride[2];
  a.k_sb = p->k.stride[0], a.k_ss = p->k.stride[1], a.k_sh = p->k.stride[2];
  a.v_sb = p->v.stride[0], a.v_ss = p->v.stride[1], a.v_sh = p->v.stride[2];
  a.o_sb = p->o.stride[0], a.o_ss = p->o.stride[1], a.o_sh = p->o.stride[2];
  a.do_sb = p->dout.stride[0], a.do_ss = p->dout.stride[1], a.do_sh = p->dout.stride[2];
  a.dq_sb = p->dq.stride[0], a.dq_ss = p->dq.stride[1], a.dq_sh = p->dq.stride[2];
  a.dk_sb = p->dk.stride[0], a.dk_ss = p->dk.stride[1], a.dk_sh = p->dk.stride[2];
  a.dv_sb = p->dv.stride[0], a.dv_ss = p->dv.stride[1], a.dv_sh = p->dv.stride[2];
  a.lse_sb = p->lse.stride[0], a.lse_sh = p->lse.stride[1], a.lse_ss = p->lse.stride[2];
  a.seqlen_q = (int)p->seqlen_q;
  a.seqlen_k = (int)p->seqlen_k;
  a.heads_q = (int)p->heads_q;
  a.group = (int)(p->heads_q / p->heads_kv);
  a.causal = p->causal != 0;
  a.scale = p->scale;
  a.scale_log2 = (float)(p->scale * LOG2E);
  if (masked) {
    a.mask = fa_cu_addr(&p->mask, 1); /* offset and strides in bytes */
    a.mask_sb = p->mask.stride[0], a.mask_sh = p->mask.stride[1];
    a.mask_sr = p->mask.stride[2], a.mask_sc = p->mask.stride[3];
    a.block_q = (int)p->block_q;
    a.block_k = (int)p->block_k;
  }
  if (dropout) {
    a.dropout_seed = p->dropout_seed;
    a.dropout_offset = p->dropout_offset;
    a.dropout_threshold = p->dropout_threshold;
    a.dropout_scale = p->dropout_scale;
  }
  const int varlen = p->cu_seqlens_q.buf != NULL;
  fa_cu_infer_params(p, &a.inf);
  a.vec16 = rows_aligned16(&p->q, a.q, p->batch, p->seqlen_q, p->heads_q, es) &&
            rows_aligned16(&p->dout, a.dout, p->batch, p->seqlen_q, p->heads_q, es) &&
            rows_aligned16(&p->k, a.k, p->batch, p->seqlen_k, p->heads_kv, es) &&
            rows_aligned16(&p->v, a.v, p->batch, p->seqlen_k, p->heads_kv, es);

  /* Row kernels: one warp per row, 8 rows per block, over the token axis. The block kernels: over the longest
   * sequence, once per sequence, with varlen (blocks past their own sequence leave). */
  const unsigned row_blocks = (unsigned)((p->seqlen_q + 7) / 8);
  st = launch3(ctx, pre, &a, row_blocks, p->heads_q, p->batch, 256, 0, "flash_bwd_pre");
  if (st != FA_SUCCESS) return st;
  const int64_t sq = varlen ? p->max_seqlen_q : p->seqlen_q, sk = varlen ? p->max_seqlen_k : p->seqlen_k;
  const int64_t seqs = varlen ? p->seqs : p->batch;
  const unsigned kv_blocks = (unsigned)((sk + kt->block_k - 1) / kt->block_k);
  if (kv_blocks) /* zero with varlen whose key sequences are all empty: dq is then all zeros, written below */
    st = launch3(ctx, dkdv, &a, kv_blocks, p->heads_kv, seqs, (unsigned)kt->threads, kt->local_mem_bytes, dkdv_name);
  if (st != FA_SUCCESS) return st;
  if (atomic) return launch3(ctx, dq, &a, row_blocks, p->heads_q, p->batch, 256, 0, "flash_bwd_dq_convert");
  const unsigned q_blocks = (unsigned)((sq + simt.block_q - 1) / simt.block_q);
  if (!q_blocks) return FA_SUCCESS;
  return launch3(ctx, dq, &a, q_blocks, p->heads_q, seqs, 256, simt.local_mem_bytes, "flash_bwd_dq_simt");
}
