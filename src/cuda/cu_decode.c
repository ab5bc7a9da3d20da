/* The CUDA decode path (kernels/decode.cu): split-KV attention for few query rows and every inference option
 * (seqlens_k, paged K/V, window, ALiBi, softcap), fa_combine, whose kernel also merges the splits, and
 * fa_kv_append.
 * Called with the context current (cu_context.c pushes it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_internal.h"
#include "decode.h"
#include "kernels/cuda_params.h"

_Static_assert(sizeof(fa_decode_params) == 12 * 8 + 22 * 8 + 18 * 4 + 2 * 4, "fa_decode_params has padding");
_Static_assert(sizeof(fa_combine_params) == 4 * 8 + 14 * 8 + 4 * 4, "fa_combine_params has padding");
_Static_assert(sizeof(fa_kv_append_params) == 6 * 8 + 16 * 8 + 8 * 4, "fa_kv_append_params has padding");

#define COMBINE_THREADS 128 /* kernels/decode.cu's COMBINE_WARPS x 32 */

/* Whether every row of a [n0, n1, n2, D] view starts on a 16-byte boundary. */
static int rows16(const fa_view *v, CUdeviceptr addr, int64_t n0, int64_t n1, int64_t n2, size_t es) {
  const int64_t n[3] = {n0, n1, n2};
  if (addr % 16) return 0;
  for (int i = 0; i < 3; i++)
    if (n[i] > 1 && ((uint64_t)v->stride[i] * es) % 16) return 0;
  return 1;
}

/* The combine kernel over filled-in part views; p gives the output views and shapes. */
static fa_status combine_launch(fa_context *ctx, const fa_problem *p, fa_combine_params *a, fa_dtype parts_dtype) {
  const size_t es = fa_dtype_size(p->dtype);
  a->o = (unsigned long long)fa_cu_addr(&p->o, es);
  a->o_sb = p->o.stride[0], a->o_ss = p->o.stride[1], a->o_sh = p->o.stride[2];
  if (p->lse.buf) {
    a->lse = (unsigned long long)fa_cu_addr(&p->lse, 4);
    a->l_sb = p->lse.stride[0], a->l_sh = p->lse.stride[1], a->l_ss = p->lse.stride[2];
  }
  a->head_dim = (int)p->head_dim;
  a->seqlen_q = (int)p->seqlen_q;
  char defines[64];
  snprintf(defines, sizeof defines, "%s -DFA_PART_DTYPE=%d -DHEAD_DIM=8 -DROWS=1", fa_cu_dtype_define(p->dtype),
           (int)parts_dtype);
  CUfunction fn;
  fa_status st = fa_cu_function(ctx, "decode.cu", defines, "fa_combine", 0, &fn);
  if (st != FA_SUCCESS) return st;
  const unsigned grid[3] = {(unsigned)p->seqlen_q, (unsigned)p->heads_q, (unsigned)p->batch};
  void *args[] = {a};
  return fa_cu_launch(ctx, fn, grid, COMBINE_THREADS, 0, args, "fa_combine");
}

fa_status fa_cu_combine(fa_context *ctx, const fa_problem *p) {
  if (p->seqlen_q > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_combine: Sq %lld is above 2^31-1", (long long)p->seqlen_q);
  fa_combine_params a;
  memset(&a, 0, sizeof a);
  a.op = (unsigned long long)fa_cu_addr(&p->o_parts, fa_dtype_size(p->parts_dtype));
  a.op_sb = p->o_parts.stride[0], a.op_ss = p->o_parts.stride[1], a.op_sh = p->o_parts.stride[2];
  a.op_stride = p->o_part_stride;
  a.lp = (unsigned long long)fa_cu_addr(&p->lse_parts, 4);
  a.lp_sb = p->lse_parts.stride[0], a.lp_sh = p->lse_parts.stride[1], a.lp_ss = p->lse_parts.stride[2];
  a.lp_stride = p->lse_part_stride;
  a.parts = (int)p->num_parts;
  return combine_launch(ctx, p, &a, p->parts_dtype);
}

/* The argument block of fa_decode for p, without the workspace and the plan. */
static void fill_params(const fa_problem *p, fa_decode_params *a) {
  const size_t es = fa_dtype_size(p->dtype);
  memset(a, 0, sizeof *a);
  a->q = fa_cu_addr(&p->q, es), a->k = fa_cu_addr(&p->k, es), a->v = fa_cu_addr(&p->v, es);
  a->o = fa_cu_addr(&p->o, es);
  a->q_sb = p->q.stride[0], a->q_ss = p->q.stride[1], a->q_sh = p->q.stride[2];
  a->k_sb = p->k.stride[0], a->k_ss = p->k.stride[1], a->k_sh = p->k.stride[2];
  a->v_sb = p->v.stride[0], a->v_ss = p->v.stride[1], a->v_sh = p->v.stride[2];
  a->o_sb = p->o.stride[0], a->o_ss = p->o.stride[1], a->o_sh = p->o.stride[2];
  if (p->lse.buf) {
    a->has_lse = 1;
    a->lse = fa_cu_addr(&p->lse, 4);
    a->lse_sb = p->lse.stride[0], a->lse_sh = p->lse.stride[1], a->lse_ss = p->lse.stride[2];
  }
  if (p->seqlens_k.buf) a->has_seqlens = 1, a->seqlens = fa_cu_addr(&p->seqlens_k, 4), a->sl_s = p->seqlens_k.stride[0];
  a->page_size = 1, a->num_pages = 1;
  if (p->block_table.buf) {
    a->paged = 1;
    a->table = fa_cu_addr(&p->block_table, 4);
    a->t_sb = p->block_table.stride[0], a->t_sp = p->block_table.stride[1];
    a->page_size = (int)p->page_size, a->num_pages = (int)p->num_pages;
  }
  if (p->alibi.buf) {
    a->has_alibi = 1;
    a->alibi = fa_cu_addr(&p->alibi, 4);
    a->al_sb = p->alibi.stride[0], a->al_sh = p->alibi.stride[1];
  }
  if (p->cu_seqlens_q.buf) {
    a->varlen = 1;
    a->cu_q = fa_cu_addr(&p->cu_seqlens_q, 4), a->cu_q_s = p->cu_seqlens_q.stride[0];
    a->cu_k = fa_cu_addr(&p->cu_seqlens_k, 4), a->cu_k_s = p->cu_seqlens_k.stride[0];
  }
  a->batch = (int)p->batch, a->seqlen_q = (int)p->seqlen_q, a->cap = (int)p->seqlen_k, a->heads_q = (int)p->heads_q;
  a->group = (int)(p->heads_q / p->heads_kv);
  a->causal = p->causal, a->window = p->window;
  a->wl = p->window ? (int)p->window_left : -1, a->wr = p->window ? (int)p->window_right : -1;
  a->scale = p->scale, a->softcap = p->softcap;
}

/* The knobs of fa_decode_mma, for measurements (read per call): FLASHATTN_DECODE_WARPS (8 for fewer than 32
 * groups, else 4; 2, 4 or 8 warps per block), FLASHATTN_DECODE_STAGES (3; ring depth 2..8; both lowered until the block's shared memory fits),
 * FLASHATTN_DECODE_WAVES (1: the split count fills the GPU's resident blocks about once),
 * FLASHATTN_DECODE_HEADS (1; KV heads per block, a power of two dividing Hkv and the warps),
 * FLASHATTN_DECODE_KERNEL (mma, or simple for the CUDA-core kernel where the mma one could run). H200, f16,
 * D 128, 2026-12-03: 8 warps x 3 stages (one block per SM, 21 chunks of 8 KB in flight) gave the best geometric
 * mean over B 1/8/64 x Sq 1/4 x Sk 32k/128k, 3.61 TB/s; 4 x 3 (two blocks per SM) 3.47; 2 x 4 3.25; 4 x 3 with
 * 2 waves 3.11 (more splits: the B 1 cases lost a third). */
static int env_int(const char *name, int def, int lo, int hi) {
  const char *e = getenv(name);
  if (!e || !*e) return def;
  const long v = strtol(e, NULL, 10);
  return v >= lo && v <= hi ? (int)v : def;
}

/* The kernel a problem takes and how it is launched. */
typedef struct dec_choice {
  int mma;              /* 1: fa_decode_mma; 0: fa_decode (CUDA cores) */
  int vec16;            /* every K and V row on a 16-byte boundary */
  int warps, stages;    /* fa_decode_mma's block */
  int heads;            /* KV heads per block (grid y: Hkv / heads) */
  size_t smem;          /* its dynamic shared memory */
  fa_decode_plan plan;
} dec_choice;

/* fa_decode_mma's shared memory: above D 128 Q (16 rows of D + 8 elements per head), then the rings (warps x
 * stages x K and V x 16 rows of D + 8 elements) or the merge (warps x 16 rows of D + 4 floats), whichever is
 * larger. */
static size_t mma_smem(int warps, int stages, int heads, int64_t d) {
  const size_t ring = (size_t)warps * (size_t)stages * 2 * 16 * (size_t)(d + 8) * 2;
  const size_t merge = (size_t)warps * 16 * (size_t)(d + 4) * 4;
  return (d > 128 ? (size_t)heads * 16 * (size_t)(d + 8) * 2 : 0) + (ring > merge ? ring : merge);
}

/* Whether fa_decode_mma can serve p, the alignment of its rows aside (fa_cu_decode_max_rows cannot see it):
 * it takes the element offsets of 16 rows of K and V in 32 bits. */
static int mma_fits(const fa_context *ctx, const fa_problem *p) {
  const char *kern = getenv("FLASHATTN_DECODE_KERNEL");
  const int64_t most = (INT32_MAX - p->head_dim) / 15;
  return fa_cu_of(ctx)->cc_major >= 8 && p->dtype != FA_F32 && p->head_dim % 16 == 0 && p->head_dim <= 256 &&
         p->k.stride[1] >= 0 && p->k.stride[1] <= most && p->v.stride[1] >= 0 && p->v.stride[1] <= most &&
         !(kern && strcmp(kern, "simple") == 0);
}

int fa_cu_decode_max_rows(const fa_context *ctx, const fa_problem *p) {
  return mma_fits(ctx, p) ? FA_CU_DECODE_MMA_ROWS : FA_CU_DECODE_SIMPLE_ROWS;
}

/* The tensor-core kernel takes 16-bit K and V with D a multiple of 16 up to 256 and 16-byte aligned rows, on
 * sm_80+; its blocks hold 16 query rows, so Sq x Hq / Hkv <= 16 rows read K and V once. The split count fills
 * the SMs' resident blocks (by shared memory, threads and a register file of 64 K at up to 255 registers a
 * thread) `waves` times over, rounded down so that the last wave is not a sliver of the GPU. */
static void choose(fa_context *ctx, const fa_problem *p, dec_choice *ch) {
  const fa_cu *c = fa_cu_of(ctx);
  const size_t es = fa_dtype_size(p->dtype);
  const int64_t n0 = p->block_table.buf ? p->num_pages : p->batch, n1 = p->block_table.buf ? p->page_size : p->seqlen_k;
  memset(ch, 0, sizeof *ch);
  ch->vec16 = rows16(&p->k, fa_cu_addr(&p->k, es), n0, n1, p->heads_kv, es) &&
              rows16(&p->v, fa_cu_addr(&p->v, es), n0, n1, p->heads_kv, es);
  ch->mma = mma_fits(ctx, p) && ch->vec16;
  if (!ch->mma) {
    fa_decode_plan_make(p, FA_CU_DECODE_SIMPLE_ROWS, c->sm_count, 4, &ch->plan);
    return;
  }
  /* Few (sequence, KV head, row block) groups (B 1): 8 warps a block, one block per SM, fewer and longer
   * splits; else 4 warps, two blocks per SM (H200: B 1 3.55 against 3.41 TB/s, B 8 and 64 4.22-4.27 against
   * 4.09-4.13). */
  const int64_t rows_total = (p->cu_seqlens_q.buf ? p->max_seqlen_q : p->seqlen_q) * (p->heads_q / p->heads_kv);
  const int64_t groups = (p->cu_seqlens_q.buf ? p->seqs : p->batch) * p->heads_kv * ((rows_total + 15) / 16);
  ch->warps = env_int("FLASHATTN_DECODE_WARPS", groups < 32 ? 8 : 4, 2, 8);
  if (ch->warps & (ch->warps - 1)) ch->warps = 4;
  ch->stages = env_int("FLASHATTN_DECODE_STAGES", 3, 2, 8);
  ch->heads = env_int("FLASHATTN_DECODE_HEADS", 1, 1, 8);
  while (mma_smem(ch->warps, ch->stages, 1, p->head_dim) > c->shared_optin && (ch->stages > 2 || ch->warps > 2)) {
    if (ch->stages > 2) ch->stages--;
    else ch->warps /= 2;
  }
  /* A power of two that divides Hkv and the warps, and whose Q rows fit beside the rings. */
  while (ch->heads > 1 && ((ch->heads & (ch->heads - 1)) || p->heads_kv % ch->heads || ch->warps % ch->heads ||
                           mma_smem(ch->warps, ch->stages, ch->heads, p->head_dim) > c->shared_optin))
    ch->heads--;
  ch->smem = mma_smem(ch->warps, ch->stages, ch->heads, p->head_dim);
  const int threads = 32 * ch->warps;
  int per_sm = (int)((c->shared_optin + 1024) / (ch->smem + 1024 + 1024));
  if (per_sm > c->max_threads / threads) per_sm = c->max_threads / threads;
  if (per_sm > 65536 / (threads * 256)) per_sm = 65536 / (threads * 256);
  if (per_sm < 1) per_sm = 1;
  fa_decode_plan_make(p, FA_CU_DECODE_MMA_ROWS, c->sm_count,
                      per_sm * ch->heads * env_int("FLASHATTN_DECODE_WAVES", 1, 1, 64), &ch->plan);
}

size_t fa_cu_decode_workspace(fa_context *ctx, const fa_problem *p) {
  dec_choice ch;
  choose(ctx, p, &ch);
  return fa_decode_workspace_bytes(p, &ch.plan);
}

fa_status fa_cu_decode(fa_context *ctx, const fa_problem *p) {
  const int64_t seqs = p->cu_seqlens_q.buf ? p->seqs : p->batch;
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX || p->heads_kv > 65535 || seqs > 65535)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "fa_forward: the decode kernel takes Sq and Sk below 2^31 and B, Hkv up to 65535 (got %lld, %lld, "
                   "%lld, %lld)",
                   (long long)p->seqlen_q, (long long)p->seqlen_k, (long long)seqs, (long long)p->heads_kv);
  dec_choice ch;
  choose(ctx, p, &ch);
  const fa_decode_plan plan = ch.plan;
  if ((int64_t)plan.row_blocks * plan.splits > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_forward: %d row blocks x %d splits exceed the grid",
                   plan.row_blocks, plan.splits);
  fa_decode_params a;
  fill_params(p, &a);
  a.splits = plan.splits, a.row_blocks = plan.row_blocks;
  const int64_t rows = p->batch * p->heads_q * p->seqlen_q;
  const size_t part_o = plan.splits > 1 ? (size_t)plan.splits * (size_t)rows * (size_t)p->head_dim : 0;
  fa_status st;
  if (plan.splits > 1) {
    CUdeviceptr ws;
    if ((st = fa_cu_workspace(ctx, fa_decode_workspace_bytes(p, &plan), &ws)) != FA_SUCCESS) return st;
    a.part_o = ws, a.part_lse = ws + part_o * sizeof(float);
  }
  char defines[192];
  const int mods = p->softcap > 0.0f || p->alibi.buf;
  if (ch.mma)
    snprintf(defines, sizeof defines,
             "%s -DHEAD_DIM=%d -DROWS=1 -DFA_DEC_MODS=%d -DFA_DEC_VEC16=1 -DFA_DEC_MMA=1 -DFA_DEC_WARPS=%d "
             "-DFA_DEC_STAGES=%d -DFA_DEC_HEADS=%d",
             fa_cu_dtype_define(p->dtype), (int)p->head_dim, mods, ch.warps, ch.stages, ch.heads);
  else
    snprintf(defines, sizeof defines, "%s -DHEAD_DIM=%d -DROWS=%d -DFA_DEC_MODS=%d -DFA_DEC_VEC16=%d",
             fa_cu_dtype_define(p->dtype), (int)p->head_dim, plan.rows, mods, ch.vec16);
  const char *kernel = ch.mma ? "fa_decode_mma" : "fa_decode";
  CUfunction fn;
  if ((st = fa_cu_function(ctx, "decode.cu", defines, kernel, ch.smem, &fn)) != FA_SUCCESS) return st;
  const unsigned grid[3] = {(unsigned)(plan.row_blocks * plan.splits), (unsigned)(p->heads_kv / (ch.mma ? ch.heads : 1)),
                            (unsigned)seqs};
  void *args[] = {&a};
  if ((st = fa_cu_launch(ctx, fn, grid, ch.mma ? 32u * (unsigned)ch.warps : 128u, ch.smem, args, kernel)) !=
          FA_SUCCESS ||
      plan.splits == 1)
    return st;
  const int64_t d = p->head_dim, sq = p->seqlen_q, hq = p->heads_q;
  fa_combine_params ca;
  memset(&ca, 0, sizeof ca);
  ca.op = a.part_o, ca.op_sb = hq * sq * d, ca.op_ss = d, ca.op_sh = sq * d, ca.op_stride = rows * d;
  ca.lp = a.part_lse, ca.lp_sb = hq * sq, ca.lp_sh = sq, ca.lp_ss = 1, ca.lp_stride = rows;
  ca.parts = plan.splits;
  return combine_launch(ctx, p, &ca, FA_F32);
}

fa_status fa_cu_kv_append(fa_context *ctx, const fa_problem *p) {
  if (p->seqlen_k > INT32_MAX || p->seqlen_new > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_kv_append: sequences above 2^31-1 keys");
  const size_t es = fa_dtype_size(p->dtype);
  fa_kv_append_params a;
  memset(&a, 0, sizeof a);
  a.k = fa_cu_addr(&p->k, es), a.v = fa_cu_addr(&p->v, es);
  a.k_new = fa_cu_addr(&p->k_new, es), a.v_new = fa_cu_addr(&p->v_new, es);
  a.k_sb = p->k.stride[0], a.k_ss = p->k.stride[1], a.k_sh = p->k.stride[2];
  a.v_sb = p->v.stride[0], a.v_ss = p->v.stride[1], a.v_sh = p->v.stride[2];
  a.kn_sb = p->k_new.stride[0], a.kn_ss = p->k_new.stride[1], a.kn_sh = p->k_new.stride[2];
  a.vn_sb = p->v_new.stride[0], a.vn_ss = p->v_new.stride[1], a.vn_sh = p->v_new.stride[2];
  a.seqlens = fa_cu_addr(&p->seqlens_k, 4), a.sl_s = p->seqlens_k.stride[0];
  a.page_size = 1, a.num_pages = 1;
  if (p->block_table.buf) {
    a.paged = 1, a.table = fa_cu_addr(&p->block_table, 4);
    a.t_sb = p->block_table.stride[0], a.t_sp = p->block_table.stride[1];
    a.page_size = (int)p->page_size, a.num_pages = (int)p->num_pages;
  }
  a.cap = (int)p->seqlen_k, a.seqlen_new = (int)p->seqlen_new, a.heads_kv = (int)p->heads_kv;
  a.head_dim = (int)p->head_dim;
  a.total = p->batch * p->seqlen_new * p->heads_kv * p->head_dim;
  char defines[64];
  snprintf(defines, sizeof defines, "%s -DHEAD_DIM=8 -DROWS=1", fa_cu_dtype_define(p->dtype));
  CUfunction fn;
  fa_status st = fa_cu_function(ctx, "decode.cu", defines, "fa_kv_append", 0, &fn);
  if (st != FA_SUCCESS) return st;
  const long long blocks = (a.total + 255) / 256;
  const unsigned grid[3] = {(unsigned)(blocks < (1 << 20) ? blocks : (1 << 20)), 1, 1};
  void *args[] = {&a};
  return fa_cu_launch(ctx, fn, grid, 256, 0, args, "fa_kv_append");
}
