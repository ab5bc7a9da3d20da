/* The CUDA backend table: the state entries of cu_context.c and the operations, bound together here so that
 * neither depends on the other's file (the operations use the context; the context knows no operation).
 * The operation entries push the context's CUDA context around the call. */
#include "cu_cublas.h"
#include "cu_internal.h"
#include "decode.h"

static fa_status cu_create(fa_context *ctx, int device, void *native_queue) {
  fa_status st = fa_cu_create(ctx, device, native_queue);
  if (st == FA_SUCCESS) fa_cu_describe_kernels(ctx, ctx->info.kernels, sizeof ctx->info.kernels);
  return st;
}

/* What the operations keep in the context (modules, workspace, the cuBLAS handle) goes first, with the
 * context's CUDA context current, then the context itself. */
static void cu_destroy(fa_context *ctx) {
  const fa_cu *c = fa_cu_of(ctx);
  if (c && c->context && fa_cu_push(ctx) == FA_SUCCESS) {
    if (c->stream) c->cu->StreamSynchronize(c->stream);
    fa_cu_modules_release(ctx);
    fa_cu_workspace_release(ctx);
    fa_cu_cublas_release(ctx);
    fa_cu_pop(ctx);
  }
  fa_cu_context_destroy(ctx);
}

typedef fa_status (*cu_op)(fa_context *ctx, const fa_problem *p);

/* An operation with the context's CUDA context current. */
static fa_status pushed(fa_context *ctx, cu_op op, const fa_problem *p) {
  fa_status st = fa_cu_push(ctx);
  if (st != FA_SUCCESS) return st;
  st = op(ctx, p);
  fa_cu_pop(ctx);
  return st;
}

static fa_status cu_forward(fa_context *ctx, const fa_problem *p) {
  const cu_op op = fa_decode_wanted(p, fa_cu_decode_max_rows(ctx, p)) ? fa_cu_decode
                   : p->algo == FA_ALGO_STANDARD               ? fa_cu_standard_forward
                                                               : fa_cu_forward;
  return pushed(ctx, op, p);
}

static fa_status cu_backward(fa_context *ctx, const fa_problem *p) {
  return pushed(ctx, p->algo == FA_ALGO_STANDARD ? fa_cu_standard_backward : fa_cu_backward, p);
}

static fa_status cu_combine(fa_context *ctx, const fa_problem *p) { return pushed(ctx, fa_cu_combine, p); }
static fa_status cu_kv_append(fa_context *ctx, const fa_problem *p) { return pushed(ctx, fa_cu_kv_append, p); }

/* The flash backward's workspace, for fa_backward_workspace_size(): the family fa_cu_backward would take. */
static fa_status cu_backward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  const int sm90 = fa_cu_backward_sm90_choice(ctx, p);
  if (sm90 < 0) return FA_ERROR_UNSUPPORTED;
  return sm90 ? fa_cu_backward_sm90_workspace(ctx, p, bytes) : fa_cu_backward_sm80_workspace(ctx, p, bytes);
}

/* Workspace: the standard passes' matrices, the flash backward's accumulators, split-KV decode's partials;
 * the flash forward keeps everything on chip. No device call. */
static fa_status cu_workspace_size(fa_context *ctx, const fa_problem *p, int backward, size_t *bytes) {
  *bytes = 0;
  if (p->algo == FA_ALGO_STANDARD) return fa_cu_standard_workspace(ctx, p, backward, bytes);
  if (backward) return cu_backward_workspace(ctx, p, bytes);
  if (fa_decode_wanted(p, fa_cu_decode_max_rows(ctx, p))) *bytes = fa_cu_decode_workspace(ctx, p);
  return FA_SUCCESS;
}

const fa_backend_ops fa_cuda_ops = {
    .kind = FA_BACKEND_CUDA,
    .name = "cuda",
    .device_count = fa_cu_device_count,
    .create = cu_create,
    .destroy = cu_destroy,
    .synchronize = fa_cu_synchronize,
    .tiles = fa_cu_tiles,
    .buffer_alloc = fa_cu_buffer_alloc,
    .buffer_origin = fa_cu_buffer_origin,
    .buffer_free = fa_cu_buffer_free,
    .buffer_wrap = fa_cu_buffer_wrap,
    .buffer_unwrap = fa_cu_buffer_unwrap,
    .buffer_write = fa_cu_buffer_write,
    .buffer_read = fa_cu_buffer_read,
    .forward = cu_forward,
    .backward = cu_backward,
    .dropout_mask = fa_cu_dropout_mask,
    .combine = cu_combine,
    .kv_append = cu_kv_append,
    .event_record = fa_cu_event_record,
    .event_elapsed = fa_cu_event_elapsed,
    .event_destroy = fa_cu_event_destroy,
    .workspace_size = cu_workspace_size,
};
