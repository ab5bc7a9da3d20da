/* The OpenCL backend table: the state entries of cl_context.c and the operations, bound together here so
 * that neither depends on the other's file (the operations use the context; the context knows no
 * operation). Which forward serves a problem is chosen here, from the device's properties. */
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"
#include "decode.h"

/* The context, then which kernels serve it: the operations' knowledge, which the context file does not have. */
static fa_status cl_create(fa_context *ctx, int device, void *native_queue) {
  fa_status st = fa_cl_create(ctx, device, native_queue);
  if (st != FA_SUCCESS) return st;
  const fa_cl *cl = fa_cl_of(ctx);
  ctx->info.tensor_cores = cl->is_nvidia && fa_cl_nv_mode_of(cl) != FA_CL_NV_OFF;
  fa_cl_nv_describe(cl, ctx->info.kernels, sizeof ctx->info.kernels);
  return FA_SUCCESS;
}

static fa_status cl_forward(fa_context *ctx, const fa_problem *p) {
  if (fa_decode_wanted(p, FA_DECODE_MAX_ROWS)) return fa_cl_decode(ctx, p);
  if (p->algo == FA_ALGO_STANDARD) return fa_cl_standard_forward(ctx, p);
  /* f16/bf16 on NVIDIA: tensor cores first (cl_flash_nv.c, which also serves FLASHATTN_OPENCL_NV_TC=emulate
   * anywhere), unless FLASHATTN_OPENCL_NV_TC=0; what that path does not serve (FA_ERROR_UNSUPPORTED) runs on
   * the portable kernels. Verified on an H100: the forward suite passes and it runs 7-10x the portable kernel
   * (PERFORMANCE.md). */
  const char *nv_tc = getenv("FLASHATTN_OPENCL_NV_TC");
  const int nv_try = fa_cl_of(ctx)->is_nvidia ? !(nv_tc && strcmp(nv_tc, "0") == 0) : nv_tc && strcmp(nv_tc, "emulate") == 0;
  if ((p->dtype == FA_F16 || p->dtype == FA_BF16) && nv_try) {
    fa_status s = fa_cl_flash_nv_forward(ctx, p);
    if (s != FA_ERROR_UNSUPPORTED) return s;
  }
  return fa_cl_flash_forward(ctx, p);
}

/* Workspace: the standard passes' matrices, the flash backward's, split-KV decode's partials; the flash forward
 * keeps everything on chip. */
static fa_status cl_workspace_size(fa_context *ctx, const fa_problem *p, int backward, size_t *bytes) {
  if (backward) return fa_cl_backward_workspace(ctx, p, bytes);
  *bytes = fa_decode_wanted(p, FA_DECODE_MAX_ROWS) ? fa_cl_decode_workspace(ctx, p) : 0;
  return p->algo == FA_ALGO_STANDARD ? fa_cl_standard_forward_workspace(ctx, p, bytes) : FA_SUCCESS;
}

const fa_backend_ops fa_opencl_ops = {
    .kind = FA_BACKEND_OPENCL,
    .name = "opencl",
    .device_count = fa_cl_device_count,
    .create = cl_create,
    .destroy = fa_cl_destroy,
    .synchronize = fa_cl_synchronize,
    .tiles = fa_cl_tiles,
    .buffer_alloc = fa_cl_buffer_alloc,
    .buffer_origin = fa_cl_buffer_origin,
    .buffer_free = fa_cl_buffer_free,
    .buffer_wrap = fa_cl_buffer_wrap,
    .buffer_unwrap = fa_cl_buffer_unwrap,
    .buffer_write = fa_cl_buffer_write,
    .buffer_read = fa_cl_buffer_read,
    .forward = cl_forward,
    .backward = fa_cl_backward,
    .dropout_mask = fa_cl_dropout_mask,
    .combine = fa_cl_combine,
    .kv_append = fa_cl_kv_append,
    .event_record = fa_cl_event_record,
    .event_elapsed = fa_cl_event_elapsed,
    .event_destroy = fa_cl_event_destroy,
    .workspace_size = cl_workspace_size,
};
