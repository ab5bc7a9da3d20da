/* The OpenCL forward pass, portable kernels: tiles for the context's device, the build options of
 * kernels/flash_fwd.cl, and its launch; a block mask or dropout selects a variant of the kernel (FA_BLOCK_MASK,
 * FA_DROPOUT), the inference options another (FA_INFER: varlen, window, ALiBi, softcap), with their arguments
 * after the dense ones. Which forward runs is chosen in cl_backend.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_args.h"
#include "cl_internal.h"
#include "tiling.h"

fa_status fa_cl_tiles(fa_context *ctx, int head_dim, fa_dtype dtype, fa_tiles *out) {
  (void)dtype; /* tiles hold float32 in local memory whatever the storage type */
  fa_tile_limits lim;
  fa_cl_tile_limits(ctx, &lim);
  fa_status s = fa_tiles_opencl_forward(&lim, head_dim, out);
  if (s != FA_SUCCESS)
    return fa_fail(ctx, s, "flash forward: head dim %d: no tile fits in %zu bytes of local memory (the smallest needs %d)",
                   head_dim, lim.local_mem_bytes, 12 * head_dim);
  return FA_SUCCESS;
}

static fa_status view_args(fa_context *ctx, cl_kernel kern, cl_uint *arg, const fa_view *view, int with_buffer,
                           const char *what) {
  fa_status s = FA_SUCCESS;
  if (with_buffer) {
    cl_mem mem = fa_cl_mem(view->buf);
    s = fa_cl_arg(ctx, kern, (*arg)++, sizeof mem, &mem, what);
  }
  cl_long vals[4] = {view->offset, view->stride[0], view->stride[1], view->stride[2]};
  for (int x = 0; x < 4 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, (*arg)++, sizeof vals[x], &vals[x], what);
  return s;
}

/* FA_MASK_ARGS of flash_fwd.cl and flash_fwd_nv.cl: mask, its byte offset and four byte strides, block_q,
 * block_k, then dropout's seed, offset, threshold and scale (whichever feature is off gets harmless values). */
static fa_status mask_args(fa_context *ctx, cl_kernel kern, cl_uint *arg, const fa_problem *p, const char *what) {
  /* Without a mask the kernel never reads its pointer: q's buffer keeps the argument valid. */
  cl_mem mask = fa_cl_mem(p->mask.buf ? p->mask.buf : p->q.buf);
  fa_status s = fa_cl_arg(ctx, kern, (*arg)++, sizeof mask, &mask, what);
  const int has_mask = p->mask.buf != NULL;
  cl_long longs[5] = {0, 0, 0, 0, 0};
  if (has_mask) {
    longs[0] = p->mask.offset;
    for (int x = 0; x < 4; x++) longs[x + 1] = p->mask.stride[x];
  }
  for (int x = 0; x < 5 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, (*arg)++, sizeof longs[x], &longs[x], what);
  cl_int blocks[2] = {has_mask ? (cl_int)p->block_q : 1, has_mask ? (cl_int)p->block_k : 1};
  for (int x = 0; x < 2 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, (*arg)++, sizeof blocks[x], &blocks[x], what);
  cl_ulong seed = p->dropout_seed;
  cl_uint uints[2] = {p->dropout_offset, p->dropout_threshold};
  cl_float scale = p->dropout_p > 0.0f ? p->dropout_scale : 1.0f;
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, (*arg)++, sizeof seed, &seed, what);
  for (int x = 0; x < 2 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, (*arg)++, sizeof uints[x], &uints[x], what);
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, (*arg)++, sizeof scale, &scale, what);
  return s;
}

fa_status fa_cl_forward_args(fa_context *ctx, cl_kernel kern, const fa_problem *p, const char *what) {
  cl_uint arg = 0;
  fa_status s = FA_SUCCESS;
  const fa_view *views[4] = {&p->q, &p->k, &p->v, &p->o};
  for (int x = 0; x < 4 && s == FA_SUCCESS; x++) s = view_args(ctx, kern, &arg, views[x], 1, what);
  if (s != FA_SUCCESS) return s;
  /* Without lse, the kernel never touches its pointer: pass q's buffer so that the argument is valid. */
  cl_int has_lse = p->lse.buf != NULL;
  cl_mem lse_mem = has_lse ? fa_cl_mem(p->lse.buf) : fa_cl_mem(p->q.buf);
  if ((s = fa_cl_arg(ctx, kern, arg++, sizeof lse_mem, &lse_mem, what)) != FA_SUCCESS) return s;
  const fa_view lse_view = has_lse ? p->lse : (fa_view){0};
  if ((s = view_args(ctx, kern, &arg, &lse_view, 0, what)) != FA_SUCCESS) return s;
  cl_int ints[5] = {has_lse, (cl_int)p->seqlen_q, (cl_int)p->seqlen_k, (cl_int)(p->heads_q / p->heads_kv),
                    p->causal != 0};
  for (int x = 0; x < 5 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, sizeof ints[x], &ints[x], what);
  cl_float scale_log2 = p->scale * 1.4426950408889634f;
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, arg++, sizeof scale_log2, &scale_log2, what);
  if (s == FA_SUCCESS && (p->mask.buf || p->dropout_p > 0.0f)) s = mask_args(ctx, kern, &arg, p, what);
  if (s == FA_SUCCESS && fa_problem_flash_infer(p)) { /* FA_INFER_ARGS: cl_args.h's list, as the backward's */
    arg_list a = {ctx, kern, what, arg, FA_SUCCESS};
    arg_infer(&a, p);
    s = a.status;
  }
  return s;
}

fa_status fa_cl_flash_forward(fa_context *ctx, const fa_problem *p) {
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "flash forward: sequence lengths above 2^31-1 (Sq %lld, Sk %lld)",
                   (long long)p->seqlen_q, (long long)p->seqlen_k);
  const int d = (int)p->head_dim;
  fa_tile_limits lim;
  fa_cl_tile_limits(ctx, &lim);
  fa_cl_variant v;
  cl_kernel kern;
  fa_status s;
  /* Smaller tiles, built again, while the kernel as built needs more work-items or local memory than granted. */
  for (int fits = 0; !fits;) {
    if (lim.max_group_size < 1 ||
        fa_cl_forward_variant(&lim, d, p->dtype, p->mask.buf != NULL, p->dropout_p > 0.0f, &v) != FA_SUCCESS)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                     "flash forward: head dim %d: no tile fits in %zu bytes of local memory and %d work-items",
                     d, lim.local_mem_bytes, lim.max_group_size);
    if (fa_problem_flash_infer(p)) fa_cl_variant_infer(&v);
    if ((s = fa_cl_kernel(ctx, v.files, v.options, v.kernels[0], &kern)) != FA_SUCCESS) return s;
    if ((s = fa_cl_fit_kernel(ctx, kern, (size_t)v.tiles.threads, &lim, &fits)) != FA_SUCCESS) return s;
  }
  const fa_tiles tiles = v.tiles;
  const int br = tiles.block_q;

  if ((s = fa_cl_forward_args(ctx, kern, p, "flash_fwd")) != FA_SUCCESS) return s;

  /* Varlen: a row of groups per sequence, enough for the longest; groups past their sequence's rows leave. */
  const int varlen = p->cu_seqlens_q.buf != NULL;
  size_t blocks = (size_t)(((varlen ? p->max_seqlen_q : p->seqlen_q) + br - 1) / br);
  size_t local[3] = {(size_t)tiles.threads, 1, 1};
  size_t global[3] = {blocks * (size_t)tiles.threads, (size_t)p->heads_q, (size_t)(varlen ? p->seqs : p->batch)};
  if (!blocks) return FA_SUCCESS; /* every sequence empty: nothing to write */
  return fa_cl_launch(ctx, kern, 3, global, local, "flash_fwd");
}
