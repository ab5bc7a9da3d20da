/* Kernel arguments set in order, the first failure kept and named after the kernel: the backward's launches
 * (cl_backward.c for the portable kernels, cl_backward_nv.c for the tensor-core ones) share the argument
 * lists of their views and of the walk over the score tiles. */
#ifndef FA_CL_ARGS_H
#define FA_CL_ARGS_H

#include "cl_internal.h"

/* Arguments in order, each failure named after the kernel. */
typedef struct arg_list {
  fa_context *ctx;
  cl_kernel kernel;
  const char *what;
  cl_uint next;
  fa_status status;
} arg_list;

static inline void arg(arg_list *a, size_t size, const void *value) {
  if (a->status == FA_SUCCESS) a->status = fa_cl_arg(a->ctx, a->kernel, a->next, size, value, a->what);
  a->next++;
}
static inline void arg_mem(arg_list *a, cl_mem m) { arg(a, sizeof m, &m); }
static inline void arg_long(arg_list *a, int64_t x) {
  cl_long v = x;
  arg(a, sizeof v, &v);
}
static inline void arg_int(arg_list *a, int64_t x) {
  cl_int v = (cl_int)x;
  arg(a, sizeof v, &v);
}
static inline void arg_float(arg_list *a, float x) {
  cl_float v = x;
  arg(a, sizeof v, &v);
}
/* The arguments that end flash_bwd_dkdv's and flash_bwd_dq's lists alike: the sizes and mask of the walk
 * over the score tiles, and the scale (natural and with log2 e folded in); then, only in the variants built
 * for them (FA_BLOCK_MASK, FA_DROPOUT, FA_INFER), the block mask, the dropout parameters or the inference
 * options (varlen offsets, window, ALiBi, softcap in base 2). */
/* masks.h's FA_INFER_CL_PARAMS, which end the FA_INFER variants' lists (both passes): the varlen offsets, the
 * window, ALiBi's slopes, softcap in base 2. Absent tensors pass q's buffer, which the kernels never read. */
static inline void arg_infer(arg_list *a, const fa_problem *p) {
  const int varlen = p->cu_seqlens_q.buf != NULL;
  const fa_view *cu[2] = {&p->cu_seqlens_q, &p->cu_seqlens_k};
  for (int x = 0; x < 2; x++) {
    arg_mem(a, fa_cl_mem(varlen ? cu[x]->buf : p->q.buf));
    arg_long(a, varlen ? cu[x]->offset : 0);
    arg_long(a, varlen ? cu[x]->stride[0] : 0);
  }
  arg_int(a, varlen);
  arg_int(a, fa_problem_window_left(p));
  arg_int(a, fa_problem_window_right(p));
  arg_mem(a, fa_cl_mem(p->alibi.buf ? p->alibi.buf : p->q.buf));
  arg_long(a, p->alibi.buf ? p->alibi.offset : 0);
  arg_long(a, p->alibi.buf ? p->alibi.stride[0] : 0);
  arg_long(a, p->alibi.buf ? p->alibi.stride[1] : 0);
  arg_int(a, p->alibi.buf != NULL);
  arg_float(a, p->softcap * 1.4426950408889634f);
}

static inline void arg_walk(arg_list *a, const fa_problem *p, int group, float scale_log2) {
  arg_int(a, p->seqlen_q);
  arg_int(a, p->seqlen_k);
  arg_int(a, p->heads_q);
  arg_int(a, group);
  arg_int(a, p->causal != 0);
  arg_float(a, p->scale);
  arg_float(a, scale_log2);
  if (p->mask.buf) {
    arg_mem(a, fa_cl_mem(p->mask.buf));
    arg_long(a, p->mask.offset);
    for (int x = 0; x < 4; x++) arg_long(a, p->mask.stride[x]);
    arg_int(a, p->block_q); /* api.c has clamped both to the sequence lengths: they fit an int */
    arg_int(a, p->block_k);
  }
  if (p->dropout_p > 0.0f) {
    cl_ulong seed = p->dropout_seed;
    arg(a, sizeof seed, &seed);
    cl_uint off = p->dropout_offset, thr = p->dropout_threshold;
    arg(a, sizeof off, &off);
    arg(a, sizeof thr, &thr);
    arg_float(a, p->dropout_scale);
  }
  if (fa_problem_flash_infer(p)) arg_infer(a, p);
}
/* A BSHD view: buffer, offset and the batch, seq and head strides (lse: batch, head, seq). */
static inline void arg_view(arg_list *a, const fa_view *view) {
  arg_mem(a, fa_cl_mem(view->buf));
  arg_long(a, view->offset);
  for (int x = 0; x < 3; x++) arg_long(a, view->stride[x]);
}

static inline arg_list args_of(fa_context *ctx, cl_kernel kernel, const char *what) {
  return (arg_list){ctx, kernel, what, 0, FA_SUCCESS};
}

#endif
