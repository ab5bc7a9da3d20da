/* The OpenCL forward pass on NVIDIA tensor cores (kernels/flash_fwd_nv.cl: inline PTX mma in OpenCL C), for
 * f16/bf16 and head dims up to 128 on sm_80+. Anything it does not serve returns FA_ERROR_UNSUPPORTED so that
 * cl_flash.c falls back to the portable kernel, and so does a failed build (a driver that rejects the PTX).
 *
 * FLASHATTN_OPENCL_NV_TC: "0" disables this path (cl_flash.c checks it); "force" makes a failed build an error
 * (FA_ERROR_KERNEL_BUILD with the log's head) instead of a silent fallback; "emulate" (same) runs the kernel on any
 * OpenCL device with the warp primitives done through local memory (-DFA_NV_EMULATE=1), to test the fragment
 * bookkeeping where there is no NVIDIA GPU. Slow; for tests only. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"

#ifndef CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV
#define CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#endif

/* The last device whose driver refused to build the kernel: later calls fall back at once instead of paying
 * for a failing build each time (one device remembered is enough for the usual one-GPU process). */
static _Atomic uintptr_t nv_failed_device;
/* The same for the block-mask / dropout variants, so that a driver refusing those keeps the dense path. */
static _Atomic uintptr_t nv_failed_device_masked;

#define NV_BM 64 /* query rows per group, as in the kernel */
#define NV_THREADS 128

/* Whether the device has mma.m16n8k16 with f16 and bf16 inputs: NVIDIA, compute capability 8.0 or more. */
static int nv_has_mma(const fa_cl *cl) {
  if (!cl->is_nvidia || !cl->is_gpu) return 0;
  cl_uint major = 0;
  if (clGetDeviceInfo(cl->device, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major, &major, NULL) != CL_SUCCESS)
    return 0;
  return major >= 8;
}

/* Whether a view's offset and batch/seq/head strides are multiples of 8 elements (16 bytes at 16 bits): the
 * kernel then moves tiles as 16-byte vectors. Buffers themselves are aligned far beyond that. */
static int aligned8(const fa_view *view) {
  return view->offset % 8 == 0 && view->stride[0] % 8 == 0 && view->stride[1] % 8 == 0 && view->stride[2] % 8 == 0;
}

fa_status fa_cl_flash_nv_forward(fa_context *ctx, const fa_problem *p) {
  const char *env = getenv("FLASHATTN_OPENCL_NV_TC");
  const int emulate = env && strcmp(env, "emulate") == 0;
  const fa_cl *cl = fa_cl_of(ctx);
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERROR_UNSUPPORTED;
  if (p->head_dim > 128 || p->head_dim % 8 != 0) return FA_ERROR_UNSUPPORTED;
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX) return FA_ERROR_UNSUPPORTED;
  const int force = env && strcmp(env, "force") == 0;
  if (!emulate && !nv_has_mma(cl)) return FA_ERROR_UNSUPPORTED;
  if (!emulate && !force && atomic_load(&nv_failed_device) == (uintptr_t)cl->device) return FA_ERROR_UNSUPPORTED;
  const int has_mask = p->mask.buf != NULL, has_dropout = p->dropout_p > 0.0f, masked = has_mask || has_dropout;
  if (masked && !emulate && !force && atomic_load(&nv_failed_device_masked) == (uintptr_t)cl->device)
    return FA_ERROR_UNSUPPORTED;
  /* Local memory: K (Q first) 64 x (D+8) and V^T D x (BN+8) 16-bit elements: 36 KB at D = 128, BN = 64. */
  const int d = (int)p->head_dim, dp = (d + 15) / 16 * 16, bn = 64;
  const size_t local_bytes = (size_t)NV_BM * (dp + 8) * 2 + (size_t)dp * (bn + 8) * 2 + (emulate ? NV_THREADS * 24 : 0) +
                             (p->mask.buf ? NV_THREADS : 0); /* the block mask's tile classes */
  if (local_bytes > fa_env_local_mem((size_t)cl->local_mem_bytes)) return FA_ERROR_UNSUPPORTED;

  const int aligned = aligned8(&p->q) && aligned8(&p->k) && aligned8(&p->v);
  char options[256];
  snprintf(options, sizeof options,
           "%s -DHEAD_DIM=%d -DBLOCK_N=%d -DFA_ALIGNED=%d -DFA_NV_EMULATE=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d",
           fa_cl_dtype_define(p->dtype), d, bn, aligned, emulate, has_mask, has_dropout);
  cl_kernel kern;
  fa_status s = fa_cl_kernel(ctx, "masks.h flash_fwd_nv.cl", options, "flash_fwd_nv", &kern);
  if (s == FA_ERROR_KERNEL_BUILD && !emulate && !force) {
    atomic_store(masked ? &nv_failed_device_masked : &nv_failed_device, (uintptr_t)cl->device);
    return FA_ERROR_UNSUPPORTED; /* the portable kernel takes over */
  }
  if (s != FA_SUCCESS) return s;

  /* The same arguments as the portable kernel (cl_flash.c). */
  if ((s = fa_cl_forward_args(ctx, kern, p, "flash_fwd_nv")) != FA_SUCCESS) return s;

  size_t blocks = (size_t)((p->seqlen_q + NV_BM - 1) / NV_BM);
  size_t local[3] = {NV_THREADS, 1, 1};
  size_t global[3] = {blocks * NV_THREADS, (size_t)p->heads_q, (size_t)p->batch};
  return fa_cl_launch(ctx, kern, 3, global, local, "flash_fwd_nv");
}
