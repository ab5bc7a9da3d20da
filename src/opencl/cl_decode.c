/* The OpenCL decode path (kernels/decode.cl): split-KV attention for few query rows and every inference
 * option (seqlens_k, paged K/V, window, ALiBi, softcap), fa_combine, whose kernel also merges the splits, and
 * fa_kv_append. */
#include <stdio.h>
#include <string.h>

#include "cl_internal.h"
#include "decode.h"

#define WG 64             /* work-items per group, and keys per tile */
#define COMBINE_WG 128    /* kernels/decode.cl's FA_COMBINE_WG, unless the device allows fewer */
#define COMBINE_WG_MIN 32 /* its slice of work-items */

/* Set arguments from a list of (size, pointer) pairs, numbering from *arg. */
static fa_status set_args(fa_context *ctx, cl_kernel kern, cl_uint *arg, int n, const size_t *sizes,
                          const void *const *values, const char *what) {
  fa_status s = FA_SUCCESS;
  for (int x = 0; x < n && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, (*arg)++, sizes[x], values[x], what);
  return s;
}

/* A buffer and the first n_longs of its view's (offset, stride[0], stride[1], stride[2]); for an absent view,
 * the fallback's buffer and zeros. */
static fa_status view_args(fa_context *ctx, cl_kernel kern, cl_uint *arg, const fa_view *v, const fa_buffer *fallback,
                           int n_longs, const char *what) {
  cl_mem mem = fa_cl_mem(v->buf ? v->buf : fallback);
  cl_long vals[4] = {0, 0, 0, 0};
  if (v->buf) vals[0] = v->offset, vals[1] = v->stride[0], vals[2] = v->stride[1], vals[3] = v->stride[2];
  const size_t sizes[5] = {sizeof mem, 8, 8, 8, 8};
  const void *values[5] = {&mem, &vals[0], &vals[1], &vals[2], &vals[3]};
  return set_args(ctx, kern, arg, 1 + n_longs, sizes, values, what);
}

/* fa_combine's kernel over part views given as raw numbers (the public call and the split workspace). */
typedef struct combine_parts {
  cl_mem o_mem, lse_mem;
  cl_long o_off, o_sb, o_ss, o_sh, o_stride;
  cl_long l_off, l_sb, l_sh, l_ss, l_stride;
  fa_dtype dtype;
  int parts;
} combine_parts;

static fa_status combine_launch(fa_context *ctx, const fa_problem *p, const combine_parts *c) {
  /* COMBINE_WG work-items a group, or one slice of 32 where the device grants fewer to the kernel as built
   * (llvmpipe's rusticl: 32). */
  cl_kernel kern;
  size_t wg = COMBINE_WG;
  int fits = 0;
  fa_status s;
  for (;;) {
    char options[128];
    snprintf(options, sizeof options,
             "%s -DFA_PART_DTYPE=%d -DHEAD_DIM=%d -DROWS=1 -DWG=%d -DFA_DEC_MODS=0 -DFA_COMBINE_WG=%zu",
             fa_cl_dtype_define(p->dtype), (int)c->dtype, (int)p->head_dim, WG, wg);
    if ((s = fa_cl_kernel(ctx, "masks.h decode.h decode.cl", options, "fa_combine", &kern)) != FA_SUCCESS) return s;
    fa_tile_limits lim = {0, (int)wg, 1};
    if ((s = fa_cl_fit_kernel(ctx, kern, wg, &lim, &fits)) != FA_SUCCESS) return s;
    if (fits || wg == COMBINE_WG_MIN) break;
    wg = COMBINE_WG_MIN;
  }
  cl_uint arg = 0;
  const size_t sz[12] = {sizeof c->o_mem, 8, 8, 8, 8, 8, sizeof c->lse_mem, 8, 8, 8, 8, 8};
  const void *val[12] = {&c->o_mem, &c->o_off, &c->o_sb, &c->o_ss, &c->o_sh, &c->o_stride,
                         &c->lse_mem, &c->l_off, &c->l_sb, &c->l_sh, &c->l_ss, &c->l_stride};
  if ((s = set_args(ctx, kern, &arg, 12, sz, val, "fa_combine")) != FA_SUCCESS) return s;
  if ((s = view_args(ctx, kern, &arg, &p->o, NULL, 4, "fa_combine")) != FA_SUCCESS) return s;
  if ((s = view_args(ctx, kern, &arg, &p->lse, p->o.buf, 4, "fa_combine")) != FA_SUCCESS) return s;
  const cl_int ints[3] = {p->lse.buf != NULL, c->parts, (cl_int)p->head_dim};
  const size_t isz[3] = {4, 4, 4};
  const void *ival[3] = {&ints[0], &ints[1], &ints[2]};
  if ((s = set_args(ctx, kern, &arg, 3, isz, ival, "fa_combine")) != FA_SUCCESS) return s;
  if (!fits && (s = fa_cl_check_group(ctx, kern, wg, "fa_combine")) != FA_SUCCESS) return s;
  const size_t local[3] = {wg, 1, 1};
  const size_t global[3] = {(size_t)p->seqlen_q * wg, (size_t)p->heads_q, (size_t)p->batch};
  return fa_cl_launch(ctx, kern, 3, global, local, "fa_combine");
}

fa_status fa_cl_combine(fa_context *ctx, const fa_problem *p) {
  if (p->seqlen_q > 65535 * 16 || p->heads_q > INT32_MAX || p->batch > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_combine: Sq %lld is above the launch's limit",
                   (long long)p->seqlen_q);
  combine_parts c = {fa_cl_mem(p->o_parts.buf), fa_cl_mem(p->lse_parts.buf),
                     p->o_parts.offset, p->o_parts.stride[0], p->o_parts.stride[1], p->o_parts.stride[2],
                     p->o_part_stride, p->lse_parts.offset, p->lse_parts.stride[0], p->lse_parts.stride[1],
                     p->lse_parts.stride[2], p->lse_part_stride, p->parts_dtype, (int)p->num_parts};
  return combine_launch(ctx, p, &c);
}

size_t fa_cl_decode_workspace(fa_context *ctx, const fa_problem *p) {
  fa_cl_decode_choice ch;
  fa_cl_decode_choose(ctx, p, &ch);
  return fa_decode_workspace_bytes(p, &ch.plan);
}

/* The arguments fa_decode and fa_decode_nv share, for p and its plan; ws (NULL with one split) holds the float32
 * partial outputs, then from element part_o the partial log-sum-exps. */
static fa_status decode_args(fa_context *ctx, cl_kernel kern, const fa_problem *p, const fa_decode_plan *plan,
                             cl_mem ws, size_t part_o, const char *what) {
  cl_uint arg = 0;
  fa_status s;
  const fa_view *views[4] = {&p->q, &p->k, &p->v, &p->o};
  for (int x = 0; x < 4; x++)
    if ((s = view_args(ctx, kern, &arg, views[x], NULL, 4, what)) != FA_SUCCESS) return s;
  if ((s = view_args(ctx, kern, &arg, &p->lse, p->q.buf, 4, what)) != FA_SUCCESS) return s;
  cl_mem wsm = ws ? ws : fa_cl_mem(p->q.buf);
  const cl_int has_lse = p->lse.buf != NULL;
  const cl_long plse_off = (cl_long)part_o;
  {
    const size_t sz[4] = {4, sizeof wsm, sizeof wsm, 8};
    const void *val[4] = {&has_lse, &wsm, &wsm, &plse_off};
    if ((s = set_args(ctx, kern, &arg, 4, sz, val, what)) != FA_SUCCESS) return s;
  }
  /* seqlens_k, block_table and alibi_slopes: buffer, offset, strides and a flag (block_table: and the pages). */
  if ((s = view_args(ctx, kern, &arg, &p->seqlens_k, p->q.buf, 2, what)) != FA_SUCCESS) return s;
  const cl_int has_sl = p->seqlens_k.buf != NULL;
  if ((s = fa_cl_arg(ctx, kern, arg++, 4, &has_sl, what)) != FA_SUCCESS) return s;
  if ((s = view_args(ctx, kern, &arg, &p->block_table, p->q.buf, 3, what)) != FA_SUCCESS) return s;
  const cl_int paged[3] = {p->block_table.buf != NULL, (cl_int)(p->block_table.buf ? p->page_size : 1),
                           (cl_int)(p->block_table.buf ? p->num_pages : 1)};
  for (int x = 0; x < 3 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, 4, &paged[x], what);
  if (s == FA_SUCCESS) s = view_args(ctx, kern, &arg, &p->alibi, p->q.buf, 3, what);
  const cl_int has_al = p->alibi.buf != NULL;
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, arg++, 4, &has_al, what);
  /* Varlen offsets: buffer, offset, stride each, then the flag. */
  if (s == FA_SUCCESS) s = view_args(ctx, kern, &arg, &p->cu_seqlens_q, p->q.buf, 2, what);
  if (s == FA_SUCCESS) s = view_args(ctx, kern, &arg, &p->cu_seqlens_k, p->q.buf, 2, what);
  const cl_int varlen = p->cu_seqlens_q.buf != NULL;
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, arg++, 4, &varlen, what);
  if (s != FA_SUCCESS) return s;
  const cl_int ints[9] = {(cl_int)p->batch, (cl_int)p->seqlen_q, (cl_int)p->seqlen_k, (cl_int)p->heads_q,
                          (cl_int)(p->heads_q / p->heads_kv), p->causal, p->window,
                          (cl_int)(p->window ? p->window_left : -1), (cl_int)(p->window ? p->window_right : -1)};
  for (int x = 0; x < 9 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, 4, &ints[x], what);
  const cl_float floats[2] = {p->scale, p->softcap};
  for (int x = 0; x < 2 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, 4, &floats[x], what);
  const cl_int tail[2] = {plan->splits, plan->row_blocks};
  for (int x = 0; x < 2 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, 4, &tail[x], what);
  return s;
}

/* The kernel for a choice: fa_decode_nv, or where it does not serve (or its build was refused, mode on) the
 * portable fa_decode with its own plan; *local is its group size. FLASHATTN_DECODE_KERNEL=nv turns a problem
 * fa_decode_nv cannot serve into FA_ERROR_UNSUPPORTED before anything runs. */
static fa_status decode_kernel(fa_context *ctx, const fa_problem *p, fa_cl_decode_choice *ch, cl_kernel *kern,
                               size_t *local) {
  const char *why = fa_cl_decode_choose(ctx, p, ch);
  if (why && fa_cl_decode_forced())
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_forward: FLASHATTN_DECODE_KERNEL=nv, but the tensor-core decode "
                   "kernel cannot serve this problem: %s", why);
  if (ch->nv) {
    fa_status s = fa_cl_decode_nv_kernel(ctx, p, ch, kern);
    *local = 32 * (size_t)ch->warps;
    if (s != FA_ERROR_UNSUPPORTED) return s;
    /* Refused by the driver: the portable kernel and its plan. */
    memset(ch, 0, sizeof *ch);
    fa_decode_plan_make(p, FA_DECODE_MAX_ROWS, (int)fa_cl_of(ctx)->compute_units, 4, &ch->plan);
  }
  const int mods = p->softcap > 0.0f || p->alibi.buf;
  char options[160];
  snprintf(options, sizeof options, "%s -DHEAD_DIM=%d -DROWS=%d -DWG=%d -DFA_DEC_MODS=%d",
           fa_cl_dtype_define(p->dtype), (int)p->head_dim, ch->plan.rows, WG, mods);
  *local = WG;
  return fa_cl_kernel(ctx, "masks.h decode.h decode.cl", options, "fa_decode", kern);
}

fa_status fa_cl_decode(fa_context *ctx, const fa_problem *p) {
  fa_cl_decode_choice ch;
  cl_kernel kern;
  size_t wg = WG;
  fa_status s = decode_kernel(ctx, p, &ch, &kern, &wg);
  if (s != FA_SUCCESS) return s;
  const fa_decode_plan plan = ch.plan;
  const char *what = ch.nv ? "fa_decode_nv" : "fa_decode";
  const int64_t rows = p->batch * p->heads_q * p->seqlen_q;
  const size_t part_o = (size_t)(plan.splits > 1 ? plan.splits : 0) * (size_t)rows * (size_t)p->head_dim;
  cl_mem ws = NULL;
  if (plan.splits > 1 && (s = fa_cl_workspace(ctx, fa_decode_workspace_bytes(p, &plan), &ws)) != FA_SUCCESS) return s;
  if ((s = decode_args(ctx, kern, p, &plan, ws, part_o, what)) != FA_SUCCESS) return s;
  const int varlen = p->cu_seqlens_q.buf != NULL;
  const size_t local[3] = {wg, 1, 1};
  const size_t global[3] = {(size_t)plan.row_blocks * (size_t)plan.splits * wg, (size_t)p->heads_kv,
                            (size_t)(varlen ? p->seqs : p->batch)};
  if ((s = fa_cl_launch(ctx, kern, 3, global, local, what)) != FA_SUCCESS || plan.splits == 1) return s;
  const int64_t d = p->head_dim, sq = p->seqlen_q, hq = p->heads_q;
  combine_parts c = {ws, ws, 0, hq * sq * d, d, sq * d, rows * d, (cl_long)part_o, hq * sq, sq, 1, rows,
                     FA_F32, plan.splits};
  return combine_launch(ctx, p, &c);
}

fa_status fa_cl_kv_append(fa_context *ctx, const fa_problem *p) {
  cl_kernel kern;
  char options[96];
  snprintf(options, sizeof options, "%s -DHEAD_DIM=8 -DROWS=1 -DWG=%d -DFA_DEC_MODS=0", fa_cl_dtype_define(p->dtype), WG);
  fa_status s = fa_cl_kernel(ctx, "masks.h decode.h decode.cl", options, "fa_kv_append", &kern);
  if (s != FA_SUCCESS) return s;
  cl_uint arg = 0;
  const char *what = "fa_kv_append";
  const fa_view *views[4] = {&p->k, &p->v, &p->k_new, &p->v_new};
  for (int x = 0; x < 4 && s == FA_SUCCESS; x++) s = view_args(ctx, kern, &arg, views[x], NULL, 4, what);
  if (s == FA_SUCCESS) s = view_args(ctx, kern, &arg, &p->seqlens_k, NULL, 2, what);
  if (s == FA_SUCCESS) s = view_args(ctx, kern, &arg, &p->block_table, p->seqlens_k.buf, 3, what);
  const cl_int ints[7] = {p->block_table.buf != NULL, (cl_int)(p->block_table.buf ? p->page_size : 1),
                          (cl_int)(p->block_table.buf ? p->num_pages : 1), (cl_int)p->seqlen_k,
                          (cl_int)p->seqlen_new, (cl_int)p->heads_kv, (cl_int)p->head_dim};
  for (int x = 0; x < 7 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, 4, &ints[x], what);
  const cl_long total = p->batch * p->seqlen_new * p->heads_kv * p->head_dim;
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, arg++, 8, &total, what);
  if (s != FA_SUCCESS) return s;
  const size_t local[1] = {WG}, global[1] = {fa_cl_round_up((size_t)total, WG)};
  return fa_cl_launch(ctx, kern, 1, global, local, what);
}
