/* The OpenCL forward pass on NVIDIA tensor cores (kernels/flash_fwd_nv.cl: inline PTX mma in OpenCL C), for
 * f16/bf16 and head dims up to 256 on sm_80+, and what the tensor-core kernels of both passes share: the mode,
 * the build with its fallback, the description for fa_device_info.kernels. Anything a kernel does not serve
 * returns FA_ERROR_UNSUPPORTED so that the caller falls back to the portable kernel, and so does a failed
 * build (a driver that rejects the PTX): the reason is kept in fa_device_info.kernels.
 *
 * FLASHATTN_OPENCL_NV_TC: "0" disables these kernels; "force" makes a failed build an error
 * (FA_ERROR_KERNEL_BUILD with the log's head) instead of a silent fallback; "emulate" (same) runs the kernels on
 * any OpenCL device with the warp primitives done through local memory (-DFA_NV_EMULATE=1), to test the
 * fragment bookkeeping where there is no NVIDIA GPU. Slow; for tests only.
 *
 * The kernels use ldmatrix for their mma operands and cp.async for their tiles (-DFA_NV_LDMATRIX=1
 * -DFA_NV_CPASYNC=1, kernels/nv_warp.cl) unless FLASHATTN_OPENCL_NV_LDMATRIX=0 or FLASHATTN_OPENCL_NV_CPASYNC=0
 * (then 32-bit local loads, and tiles staged through registers). In mode on, a build the driver refuses is
 * tried again without cp.async, then without ldmatrix, then without both, before the portable kernel; what
 * was dropped, and the first refusal's log, go into fa_device_info.kernels, and later builds on the device
 * leave it out at once. FLASHATTN_OPENCL_NV_DEFINES: more build options appended (measurements; NVIDIA's
 * compiler rejects -cl-nv-maxrregcount); FLASHATTN_OPENCL_NV_BLOCK_N (16, 32, 48): the forward's key tile (below). */
#include <stdarg.h>
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

int fa_cl_nv_dp(int d) { return d <= 128 ? (d + 15) / 16 * 16 : (d + 31) / 32 * 32; }

int fa_cl_nv_aligned8(const fa_view *view) {
  return view->offset % 8 == 0 && view->stride[0] % 8 == 0 && view->stride[1] % 8 == 0 && view->stride[2] % 8 == 0;
}

/* The instructions a build asks for (bits), and those the driver of the last device that refused one turned
 * down. */
enum { NV_LDMATRIX = 1, NV_CPASYNC = 2 };
static _Atomic uintptr_t nv_refused_device;
static _Atomic unsigned nv_refused;

static unsigned nv_wanted(void) {
  const char *l = getenv("FLASHATTN_OPENCL_NV_LDMATRIX"), *c = getenv("FLASHATTN_OPENCL_NV_CPASYNC");
  return (l && strcmp(l, "0") == 0 ? 0u : NV_LDMATRIX) | (c && strcmp(c, "0") == 0 ? 0u : NV_CPASYNC);
}

static const char *nv_names(unsigned bits) {
  return bits == (NV_LDMATRIX | NV_CPASYNC) ? "ldmatrix and cp.async" : bits == NV_LDMATRIX ? "ldmatrix"
                                                                       : bits == NV_CPASYNC  ? "cp.async"
                                                                                             : "neither";
}

/* Append a sentence to fa_device_info.kernels, cut to the room left. */
static void nv_note(fa_context *ctx, const char *fmt, ...) {
  char *k = ctx->info.kernels;
  const size_t used = strlen(k);
  va_list ap;
  va_start(ap, fmt);
  if (used + 1 < sizeof ctx->info.kernels) vsnprintf(k + used, sizeof ctx->info.kernels - used, fmt, ap);
  va_end(ap);
}

fa_status fa_cl_nv_kernel(fa_context *ctx, fa_cl_nv_mode mode, _Atomic uintptr_t *failed, const char *files,
                          const char *options, const char *name, cl_kernel *out) {
  const uintptr_t dev = (uintptr_t)fa_cl_of(ctx)->device;
  if (mode == FA_CL_NV_ON && atomic_load(failed) == dev) return FA_ERROR_UNSUPPORTED;
  const unsigned want = nv_wanted() & (mode == FA_CL_NV_ON && atomic_load(&nv_refused_device) == dev
                                           ? ~atomic_load(&nv_refused)
                                           : ~0u);
  const char *extra = getenv("FLASHATTN_OPENCL_NV_DEFINES");
  /* The builds tried in mode on: as asked, without cp.async, without ldmatrix, without both. */
  const unsigned tries[4] = {want, want & ~(unsigned)NV_CPASYNC, want & ~(unsigned)NV_LDMATRIX, 0};
  char first_log[600] = "";
  for (int i = 0; i < 4; i++) {
    int seen = 0;
    for (int j = 0; j < i; j++) seen |= tries[j] == tries[i];
    if (seen) continue;
    char full[600];
    snprintf(full, sizeof full, "%s -DFA_NV_LDMATRIX=%d -DFA_NV_CPASYNC=%d%s%s", options, (tries[i] & NV_LDMATRIX) != 0,
             (tries[i] & NV_CPASYNC) != 0, extra ? " " : "", extra ? extra : "");
    fa_status s = fa_cl_kernel(ctx, files, full, name, out);
    if (s != FA_ERROR_KERNEL_BUILD || mode != FA_CL_NV_ON) {
      if (s == FA_SUCCESS && tries[i] != want) {
        /* Built without some of what was asked: later builds leave it out at once; say so where
         * flashattn-info looks. */
        atomic_store(&nv_refused, want & ~tries[i]);
        atomic_store(&nv_refused_device, dev);
        nv_note(ctx, "; %s built without %s, which the driver refused: %s", name, nv_names(want & ~tries[i]),
                first_log);
      }
      return s;
    }
    if (i == 0) snprintf(first_log, sizeof first_log, "%.500s", ctx->last_error);
  }
  atomic_store(failed, dev);
  if (!strstr(ctx->info.kernels, "refused by the driver"))
    nv_note(ctx, "; %s refused by the driver, portable kernel instead: %s", name, first_log);
  return FA_ERROR_UNSUPPORTED;
}

void fa_cl_nv_describe(const fa_cl *cl, char *buf, size_t len) {
  const fa_cl_nv_mode mode = fa_cl_nv_mode_of(cl);
  if (mode == FA_CL_NV_EMULATE)
    snprintf(buf, len, "forward and backward: the tensor-core kernels' structure with emulated warp primitives "
                       "(FLASHATTN_OPENCL_NV_TC=emulate, for tests) for f16/bf16, the decode kernel's too (fa_decode_nv), "
                       "portable kernels otherwise");
  else if (mode == FA_CL_NV_OFF)
    snprintf(buf, len, "forward and backward: portable OpenCL C kernels%s",
             nv_has_mma(cl) ? " (FLASHATTN_OPENCL_NV_TC=0)" : "");
  else
    snprintf(buf, len,
             "forward: inline-PTX mma.sync tensor cores for f16/bf16 at D <= 256, portable kernel otherwise; "
             "backward: inline-PTX mma.sync tensor cores for f16/bf16 at D <= %d, portable kernels otherwise; "
             "operands and tiles through %s; decode: inline-PTX tensor cores (fa_decode_nv) for f16/bf16 at D a "
             "multiple of 16 up to 128 with 16-byte K/V rows, portable kernel otherwise",
             FA_CL_NV_BWD_MAX_D, nv_names(nv_wanted()));
}

/* The last device whose driver refused to build the kernel: later calls fall back at once instead of paying
 * for a failing build each time (one device remembered is enough for the usual one-GPU process). */
static _Atomic uintptr_t nv_failed_device;
/* The same for the block-mask / dropout / inference variants, so that a driver refusing those keeps the dense
 * path. */
static _Atomic uintptr_t nv_failed_device_masked;

#define NV_BM 64 /* query rows per group, as in the kernel */
#define NV_THREADS 128

/* The widest key tile, a multiple of 16 up to bn_max, whose `stages` K and V buffers (BN x (D+8) 16-bit
 * elements each) and `extra` bytes fit `budget`; 0 when none does. */
static int fwd_block_n(int stages, int bn_max, int dp, size_t budget, size_t extra) {
  for (int bn = bn_max; bn >= 16; bn -= 16)
    if ((size_t)stages * 2 * bn * (dp + 8) * 2 + extra <= budget) return bn;
  return 0;
}

fa_status fa_cl_flash_nv_forward(fa_context *ctx, const fa_problem *p) {
  const fa_cl *cl = fa_cl_of(ctx);
  const fa_cl_nv_mode mode = fa_cl_nv_mode_of(cl);
  if (mode == FA_CL_NV_OFF) return FA_ERROR_UNSUPPORTED;
  const int emulate = mode == FA_CL_NV_EMULATE;
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERROR_UNSUPPORTED;
  if (p->head_dim > 256 || p->head_dim % 8 != 0) return FA_ERROR_UNSUPPORTED;
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX) return FA_ERROR_UNSUPPORTED;
  const int has_mask = p->mask.buf != NULL, has_dropout = p->dropout_p > 0.0f, infer = fa_problem_flash_infer(p);
  const int masked = has_mask || has_dropout || infer;
  /* Local memory: K and V, BN x (D+8) 16-bit elements each: 34 KB at D = 128, BN = 64; the widest key tile
   * that fits (32 at D = 256 in 48 KiB). */
  const int d = (int)p->head_dim, dp = fa_cl_nv_dp(d);
  const size_t budget = fa_env_local_mem((size_t)cl->local_mem_bytes);
  /* FLASHATTN_OPENCL_NV_BLOCK_N=16|32|48: a narrower key tile, for measurements (fewer registers). */
  const char *bn_env = getenv("FLASHATTN_OPENCL_NV_BLOCK_N");
  const int bn_max = bn_env && (strcmp(bn_env, "16") == 0 || strcmp(bn_env, "32") == 0 || strcmp(bn_env, "48") == 0)
                       ? atoi(bn_env)
                       : 64;
  /* FLASHATTN_OPENCL_NV_STAGES=2: K and V double-buffered (the kernel's FA_NV_STAGES), where that still leaves
   * a key tile of 32 or more; not with a block mask. */
  const char *st_env = getenv("FLASHATTN_OPENCL_NV_STAGES");
  const size_t extra = (emulate ? NV_THREADS * 24 : 0) + (p->mask.buf ? NV_THREADS : 0); /* the mask's tile classes */
  int stages = st_env && strcmp(st_env, "2") == 0 && !has_mask ? 2 : 1;
  int bn = stages == 2 ? fwd_block_n(2, bn_max, dp, budget, extra) : 0;
  if (bn < 32) stages = 1, bn = fwd_block_n(1, bn_max, dp, budget, extra);
  if (!bn) return FA_ERROR_UNSUPPORTED;

  const int aligned = fa_cl_nv_aligned8(&p->q) && fa_cl_nv_aligned8(&p->k) && fa_cl_nv_aligned8(&p->v);
  char options[256];
  snprintf(options, sizeof options,
           "%s -DHEAD_DIM=%d -DBLOCK_N=%d -DFA_ALIGNED=%d -DFA_NV_EMULATE=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d "
           "-DFA_INFER=%d -DFA_NV_STAGES=%d",
           fa_cl_dtype_define(p->dtype), d, bn, aligned, emulate, has_mask, has_dropout, infer, stages);
  cl_kernel kern;
  fa_status s = fa_cl_nv_kernel(ctx, mode, masked ? &nv_failed_device_masked : &nv_failed_device,
                                "masks.h nv_warp.cl flash_fwd_nv.cl", options, "flash_fwd_nv", &kern);
  if (s != FA_SUCCESS) return s;

  /* The same arguments as the portable kernel (cl_flash.c). */
  if ((s = fa_cl_forward_args(ctx, kern, p, "flash_fwd_nv")) != FA_SUCCESS) return s;

  /* Varlen: a row of groups per sequence, enough for the longest; groups past their sequence's rows leave. */
  const int varlen = p->cu_seqlens_q.buf != NULL;
  size_t blocks = (size_t)(((varlen ? p->max_seqlen_q : p->seqlen_q) + NV_BM - 1) / NV_BM);
  size_t local[3] = {NV_THREADS, 1, 1};
  size_t global[3] = {blocks * NV_THREADS, (size_t)p->heads_q, (size_t)(varlen ? p->seqs : p->batch)};
  if (!blocks) return FA_SUCCESS; /* every sequence empty: nothing to write */
  return fa_cl_launch(ctx, kern, 3, global, local, "flash_fwd_nv");
}
