/* Which decode kernel an OpenCL problem takes, and the tensor-core one's shape (kernels/decode_nv.cl,
 * fa_decode_nv: fa_decode_mma's structure in OpenCL C with inline PTX, for NVIDIA sm_80+ and, emulated, for the
 * tests). cl_decode.c sets the arguments (the same as fa_decode's) and launches.
 *
 * Knobs, read per call, with the CUDA backend's names: FLASHATTN_DECODE_KERNEL (simple: the portable kernel
 * wherever; nv: the tensor-core kernel or FA_ERROR_UNSUPPORTED where it cannot serve the problem, for tests and
 * measurements that must know which kernel ran), FLASHATTN_DECODE_WARPS (1, 2, 4, 8; default 1),
 * FLASHATTN_DECODE_STAGES (2..8; default 4), both lowered until the group's local memory fits the device's
 * (NVIDIA's OpenCL: 48 KiB a group, so at D 128 one warp holds 5 stages of 8.5 KiB at most),
 * FLASHATTN_DECODE_WAVES (1: the split count fills the device's resident groups about once). */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"
#include "decode.h"

#ifndef CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV
#define CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001
#endif

/* The last device whose driver refused fa_decode_nv: later calls take the portable kernel at once. */
static _Atomic uintptr_t nv_dec_failed;

/* Registers per work-item assumed for the residency estimate: clang 15's PTX of fa_decode_nv through ptxas
 * -arch=sm_90 at D 128 (dev/nv_ptx.sh) takes 200 (213 with softcap or ALiBi), no spills; NVIDIA's compiler may
 * differ. At one warp a group, shared memory (6 groups of 35 KiB per H200 SM) binds before registers do. */
#define DEC_NV_REGS 216

static int env_int(const char *name, int def, int lo, int hi) {
  const char *e = getenv(name);
  if (!e || !*e) return def;
  const long v = strtol(e, NULL, 10);
  return v >= lo && v <= hi ? (int)v : def;
}

int fa_cl_decode_forced(void) {
  const char *e = getenv("FLASHATTN_DECODE_KERNEL");
  return e && strcmp(e, "nv") == 0;
}

/* Local memory of a group: the rings (warps x stages x K and V x 16 rows of D + 8 16-bit elements; the merge's
 * 16 rows of D + 4 floats per warp fit in them), the merge's maxima and sums, and the emulation's scratch. */
static size_t nv_local_bytes(int warps, int stages, int d, int emulate) {
  return (size_t)warps * (size_t)stages * 2 * 16 * (size_t)(d + 8) * 2 + (size_t)warps * 16 * 2 * 4 +
         (emulate ? (size_t)warps * 32 * 6 * 4 : 0);
}

/* Shared memory per SM by compute capability (what several groups of 48 KiB share); the emulation takes 4
 * groups' worth. */
static size_t sm_shared_bytes(const fa_cl *cl, int emulate, size_t budget) {
  if (emulate) return 4 * budget;
  cl_uint major = 0, minor = 0;
  clGetDeviceInfo(cl->device, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major, &major, NULL);
  clGetDeviceInfo(cl->device, CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof minor, &minor, NULL);
  if (major == 9 || major == 10) return 228 * 1024;
  if (major == 8 && (minor == 0 || minor == 7)) return 164 * 1024;
  return 100 * 1024;
}

/* Why fa_decode_nv cannot serve p (NULL: it can), the mode and failed builds aside. */
static const char *nv_misfit(const fa_problem *p) {
  const int64_t most = (INT32_MAX - p->head_dim) / 15;
  if (p->dtype != FA_F16 && p->dtype != FA_BF16) return "it takes f16 and bf16";
  if (p->head_dim % 16 || p->head_dim > 128) return "it takes head dims that are multiples of 16 up to 128";
  if (!fa_cl_nv_aligned8(&p->k) || !fa_cl_nv_aligned8(&p->v))
    return "it takes k and v whose offsets and strides are multiples of 8 elements (16-byte rows)";
  if (p->k.stride[1] < 0 || p->k.stride[1] > most || p->v.stride[1] < 0 || p->v.stride[1] > most)
    return "it takes row strides of k and v whose 16 rows fit 32-bit offsets";
  return NULL;
}

const char *fa_cl_decode_choose(fa_context *ctx, const fa_problem *p, fa_cl_decode_choice *ch) {
  const fa_cl *cl = fa_cl_of(ctx);
  memset(ch, 0, sizeof *ch);
  const fa_cl_nv_mode mode = fa_cl_nv_mode_of(cl);
  const char *kern = getenv("FLASHATTN_DECODE_KERNEL");
  const char *why = NULL;
  if (kern && strcmp(kern, "simple") == 0) why = "FLASHATTN_DECODE_KERNEL=simple";
  else if (mode == FA_CL_NV_OFF) why = "the device has no mma.sync tensor cores (or FLASHATTN_OPENCL_NV_TC=0)";
  else if (mode == FA_CL_NV_ON && atomic_load(&nv_dec_failed) == (uintptr_t)cl->device)
    why = "the driver refused to build it";
  else why = nv_misfit(p);
  if (why) {
    fa_decode_plan_make(p, FA_DECODE_MAX_ROWS, (int)cl->compute_units, 4, &ch->plan);
    return why;
  }
  const int emulate = mode == FA_CL_NV_EMULATE, d = (int)p->head_dim;
  const size_t budget = fa_env_local_mem((size_t)cl->local_mem_bytes);
  ch->nv = 1;
  ch->mode = mode;
  ch->warps = env_int("FLASHATTN_DECODE_WARPS", 1, 1, 8);
  if (ch->warps & (ch->warps - 1)) ch->warps = 1;
  ch->stages = env_int("FLASHATTN_DECODE_STAGES", 4, 2, 8);
  while (nv_local_bytes(ch->warps, ch->stages, d, emulate) > budget && (ch->stages > 2 || ch->warps > 1)) {
    if (ch->stages > 2) ch->stages--;
    else ch->warps /= 2;
  }
  ch->local_bytes = nv_local_bytes(ch->warps, ch->stages, d, emulate);
  if (ch->local_bytes > budget) { /* not even one warp with two stages */
    ch->nv = 0;
    fa_decode_plan_make(p, FA_DECODE_MAX_ROWS, (int)cl->compute_units, 4, &ch->plan);
    return "its smallest ring does not fit the device's local memory";
  }
  /* Resident groups per SM: by shared memory (1 KiB reserved a group), warps (64) and registers (64 K). */
  int per_sm = (int)(sm_shared_bytes(cl, emulate, budget) / (ch->local_bytes + 1024));
  if (per_sm > 64 / ch->warps) per_sm = 64 / ch->warps;
  if (per_sm > 65536 / (32 * ch->warps * DEC_NV_REGS)) per_sm = 65536 / (32 * ch->warps * DEC_NV_REGS);
  if (per_sm < 1) per_sm = 1;
  ch->per_unit = per_sm * env_int("FLASHATTN_DECODE_WAVES", 1, 1, 64);
  fa_decode_plan_make(p, FA_DECODE_MAX_ROWS, (int)cl->compute_units, ch->per_unit, &ch->plan);
  return NULL;
}

fa_status fa_cl_decode_nv_kernel(fa_context *ctx, const fa_problem *p, const fa_cl_decode_choice *ch, cl_kernel *out) {
  const int mods = p->softcap > 0.0f || p->alibi.buf;
  char options[256];
  snprintf(options, sizeof options,
           "%s -DHEAD_DIM=%d -DFA_DEC_MODS=%d -DFA_DEC_WARPS=%d -DFA_DEC_STAGES=%d -DFA_DEC_PENDING=%d "
           "-DFA_NV_EMULATE=%d",
           fa_cl_dtype_define(p->dtype), (int)p->head_dim, mods, ch->warps, ch->stages, ch->stages - 1,
           ch->mode == FA_CL_NV_EMULATE);
  /* Forced (FLASHATTN_DECODE_KERNEL=nv): a refused build is an error with its log, as in mode force. */
  const fa_cl_nv_mode mode = fa_cl_decode_forced() && ch->mode == FA_CL_NV_ON ? FA_CL_NV_FORCE : ch->mode;
  return fa_cl_nv_kernel(ctx, mode, &nv_dec_failed, "masks.h decode.h nv_warp.cl decode_nv.cl", options,
                         "fa_decode_nv", out);
}
