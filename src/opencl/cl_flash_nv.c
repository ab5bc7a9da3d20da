/* The OpenCL forward pass on NVIDIA tensor cores (kernels/flash_fwd_nv.cl: inline PTX mma in OpenCL C), for
 * f16/bf16 and head dims up to 256 on sm_80+, and what the tensor-core kernels of both passes share: the mode,
 * the build with its fallback, the description for fa_device_info.kernels. Anything a kernel does not serve
 * returns FA_ERROR_UNSUPPORTED so that the caller falls back to the portable kernel, and so does a failed
 * build (a driver that rejects the PTX): the reason is kept in fa_device_info.kernels.
 *
 * FLASHATTN_OPENCL_NV_TC: "0" disables these kernels; "force" makes a failed build an error
 * (FA_ERROR_KERNEL_BUILD with the log's head) instead of a silent fallback; "emulate" (same) runs the kernels on
 * any OpenCL device with the warp primitives done through local memory (-DFA_NV_EMULATE=1), to test the
 * fragment bookkeeping where there is no NVIDIA GPU. Slow; for tests only. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"

#ifndef CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV
#define CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#endif

/* Whether the device has mma.m16n8k16 with f16 and bf16 inputs: NVIDIA, compute capability 8.0 or more. */
static int nv_has_mma(const fa_cl *cl) {
  if (!cl->is_nvidia || !cl->is_gpu) return 0;
  cl_uint major = 0;
  if (clGetDeviceInfo(cl->device, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major, &major, NULL) != CL_SUCCESS)
    return 0;
  return major >= 8;
}

fa_cl_nv_mode fa_cl_nv_mode_of(const fa_cl *cl) {
  const char *env = getenv("FLASHATTN_OPENCL_NV_TC");
  if (env && strcmp(env, "emulate") == 0) return FA_CL_NV_EMULATE;
  if ((env && strcmp(env, "0") == 0) || !nv_has_mma(cl)) return FA_CL_NV_OFF;
  return env && strcmp(env, "force") == 0 ? FA_CL_NV_FORCE : FA_CL_NV_ON;
}

int fa_cl_nv_aligned8(const fa_view *view) {
  return view->offset % 8 == 0 && view->stride[0] % 8 == 0 && view->stride[1] % 8 == 0 && view->stride[2] % 8 == 0;
}

fa_status fa_cl_nv_kernel(fa_context *ctx, fa_cl_nv_mode mode, _Atomic uintptr_t *failed, const char *files,
                          const char *options, const char *name, cl_kernel *out) {
  const uintptr_t dev = (uintptr_t)fa_cl_of(ctx)->device;
  if (mode == FA_CL_NV_ON && atomic_load(failed) == dev) return FA_ERROR_UNSUPPORTED;
  fa_status s = fa_cl_kernel(ctx, files, options, name, out);
  if (s != FA_ERROR_KERNEL_BUILD || mode != FA_CL_NV_ON) return s;
  atomic_store(failed, dev);
  /* Say so where flashattn-info looks: the first failure's reason, cut to the room left. */
  char *k = ctx->info.kernels;
  const size_t used = strlen(k);
  if (!strstr(k, "refused"))
    snprintf(k + used, sizeof ctx->info.kernels - used, "; %s refused by the driver, portable kernel instead: %s", name,
             ctx->last_error);
  return FA_ERROR_UNSUPPORTED;
}

void fa_cl_nv_describe(const fa_cl *cl, char *buf, size_t len) {
  const fa_cl_nv_mode mode = fa_cl_nv_mode_of(cl);
  if (mode == FA_CL_NV_EMULATE)
    snprintf(buf, len, "forward and backward: the tensor-core kernels' structure with emulated warp primitives "
                       "(FLASHATTN_OPENCL_NV_TC=emulate, for tests) for f16/bf16, portable kernels otherwise");
  else if (mode == FA_CL_NV_OFF)
    snprintf(buf, len, "forward and backward: portable OpenCL C kernels%s",
             nv_has_mma(cl) ? " (FLASHATTN_OPENCL_NV_TC=0)" : "");
  else
    snprintf(buf, len,
             "forward: inline-PTX mma.sync tensor cores for f16/bf16 at D <= 256, portable kernel otherwise; "
             "backward: inline-PTX mma.sync tensor cores for f16/bf16 at D <= 128, portable kernels otherwise");
}

/* The last device whose driver refused to build the kernel: later calls fall back at once instead of paying
 * for a failing build each time (one device remembered is enough for the usual one-GPU process). */
static _Atomic uintptr_t nv_failed_device;
/* The same for the block-mask / dropout variants, so that a driver refusing those keeps the dense path. */
static _Atomic uintptr_t nv_failed_device_masked;

#define NV_BM 64 /* query rows per group, as in the kernel */
#define NV_THREADS 128

fa_status fa_cl_flash_nv_forward(fa_context *ctx, const fa_problem *p) {
  const fa_cl *cl = fa_cl_of(ctx);
  const fa_cl_nv_mode mode = fa_cl_nv_mode_of(cl);
  if (mode == FA_CL_NV_OFF) return FA_ERROR_UNSUPPORTED;
  const int emulate = mode == FA_CL_NV_EMULATE;
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERROR_UNSUPPORTED;
  if (p->head_dim > 256 || p->head_dim % 8 != 0) return FA_ERROR_UNSUPPORTED;
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX) return FA_ERROR_UNSUPPORTED;
  const int has_mask = p->mask.buf != NULL, has_dropout = p->dropout_p > 0.0f, masked = has_mask || has_dropout;
  /* Local memory: K BN x (D+8) and V^T D x (BN+8) 16-bit elements: 36 KB at D = 128, BN = 64; the widest key
   * tile that fits (32 at D = 256 in 48 KiB). */
  const int d = (int)p->head_dim, dp = (d + 15) / 16 * 16;
  const size_t budget = fa_env_local_mem((size_t)cl->local_mem_bytes);
  int bn = 64;
  for (; bn >= 16; bn /= 2) {
    const size_t bytes = (size_t)bn * (dp + 8) * 2 + (size_t)dp * (bn + 8) * 2 + (emulate ? NV_THREADS * 24 : 0) +
                         (p->mask.buf ? NV_THREADS : 0); /* the block mask's tile classes */
    if (bytes <= budget) break;
  }
  if (bn < 16) return FA_ERROR_UNSUPPORTED;

  const int aligned = fa_cl_nv_aligned8(&p->q) && fa_cl_nv_aligned8(&p->k) && fa_cl_nv_aligned8(&p->v);
  char options[256];
  snprintf(options, sizeof options,
           "%s -DHEAD_DIM=%d -DBLOCK_N=%d -DFA_ALIGNED=%d -DFA_NV_EMULATE=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d",
           fa_cl_dtype_define(p->dtype), d, bn, aligned, emulate, has_mask, has_dropout);
  cl_kernel kern;
  fa_status s = fa_cl_nv_kernel(ctx, mode, masked ? &nv_failed_device_masked : &nv_failed_device,
                                "masks.h nv_warp.cl flash_fwd_nv.cl", options, "flash_fwd_nv", &kern);
  if (s != FA_SUCCESS) return s;

  /* The same arguments as the portable kernel (cl_flash.c). */
  if ((s = fa_cl_forward_args(ctx, kern, p, "flash_fwd_nv")) != FA_SUCCESS) return s;

  size_t blocks = (size_t)((p->seqlen_q + NV_BM - 1) / NV_BM);
  size_t local[3] = {NV_THREADS, 1, 1};
  size_t global[3] = {blocks * NV_THREADS, (size_t)p->heads_q, (size_t)p->batch};
  return fa_cl_launch(ctx, kern, 3, global, local, "flash_fwd_nv");
}
