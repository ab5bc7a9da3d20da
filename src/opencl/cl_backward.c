/* The OpenCL backward pass: FA_ALGO_FLASH here (tiles, build options and the launches of kernels/flash_bwd.cl),
 * FA_ALGO_STANDARD in cl_standard_bwd.c.
 *
 * Three launches, FlashAttention-2's order: flash_bwd_pre (Di = rowsum(dO o O) into the workspace), then
 * flash_bwd_dkdv (dK, dV per block of keys) and the dQ part, one of two schemes:
 *   separate  flash_bwd_dq, one group per block of queries walking the key blocks; it recomputes S and dP
 *             (7 matrix products in all instead of 5) but needs no atomics and writes dq directly, in a fixed
 *             order: deterministic. Workspace B*Hq*Sq floats.
 *   atomic    flash_bwd_dkdv adds dS K into a float32 accumulator with compare-and-swap loops, then
 *             flash_bwd_dq_convert writes dq. Workspace B*Hq*Sq*(D+1) floats. Not deterministic.
 * p->deterministic always takes the separate scheme; otherwise FA_CL_BWD_DEFAULT_ATOMIC decides (see
 * docs/PERFORMANCE.md for the measurement behind it). For measurements, FLASHATTN_OPENCL_BWD_DQ=atomic|separate
 * picks the scheme of non-deterministic calls, FLASHATTN_OPENCL_BWD_TILES=BRxBC[xRPW] the tiles and rows per
 * work-item (when they fit), FLASHATTN_OPENCL_VEC the vector width (when it divides BR, BC and D),
 * FLASHATTN_OPENCL_BWD_LAYOUT=row|split the row layout (one work-item per row, RPW rows) or the GPU one (8
 * work-items per row, the default on GPUs; separate dQ only) in kernels/flash_bwd.cl.
 *
 * A block mask or dropout (p->mask.buf, p->dropout_p) builds its own variant of the kernels (FA_BLOCK_MASK,
 * FA_DROPOUT, with kernels/masks.h), whose dK/dV and dQ kernels take the mask and dropout arguments after the
 * usual ones; dense calls build and run exactly the dense kernels.
 *
 * Everything that can fail short of the driver's launch (tiles, kernels, workspace, arguments) is done before
 * the first launch, so that an error leaves every output untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_args.h"
#include "cl_internal.h"
#include "tiling.h"

#define FA_CL_BWD_DEFAULT_ATOMIC 0

/* The tiles for this context, after the FLASHATTN_OPENCL_BWD_LAYOUT and FLASHATTN_OPENCL_BWD_TILES overrides,
 * and the layout: *tpr = 8 work-items per row (the GPU layout, src/tiling.c picks it where simd_width > 1;
 * out->threads = 8 * BC / RPW) or 1 (the row layout: out->threads = BC / RPW). FLASHATTN_OPENCL_BWD_LAYOUT=row
 * takes the row layout with RPW = 1 on GPUs (the layout before the GPU one, for comparisons), =split the GPU
 * layout on any device. */
static fa_status bwd_tiles(fa_context *ctx, int d, int dropout, fa_tiles *out, int *tpr) {
  fa_tile_limits lim;
  fa_cl_tile_limits(ctx, &lim);
  const char *layout = getenv("FLASHATTN_OPENCL_BWD_LAYOUT");
  const int row_gpu = layout && strcmp(layout, "row") == 0 && lim.simd_width > 1;
  /* The row layout's dropout variant keeps a BR x BC tile of keep bytes in local memory, which the tiles of
   * src/tiling.c do not count: leave room for the largest (64 x 128). */
  if (dropout && (lim.simd_width == 1 || row_gpu) && lim.local_mem_bytes > 2 * 64 * 128)
    lim.local_mem_bytes -= 64 * 128;
  if (layout && strcmp(layout, "split") == 0) {
    lim.simd_width = 32;
    if (lim.max_group_size > 256) lim.max_group_size = 256;
  }
  if (row_gpu) lim.simd_width = 1; /* the row tiles; RPW = 1 below */
  fa_status s = fa_tiles_opencl_backward(&lim, d, out);
  if (s != FA_SUCCESS)
    return fa_fail(ctx, s, "flash backward: head dim %d: no tile fits in %zu bytes of local memory (the smallest needs %d)",
                   d, lim.local_mem_bytes, (5 * d + 3) * (int)sizeof(float));
  if (row_gpu) out->threads = out->block_k;
  *tpr = out->threads > out->block_k ? 8 : 1;
  const char *env = getenv("FLASHATTN_OPENCL_BWD_TILES");
  int br, bc, rpw = *tpr > 1 ? 8 * out->block_k / out->threads : out->block_k / out->threads;
  int n = env ? sscanf(env, "%dx%dx%d", &br, &bc, &rpw) : 0;
  if (n >= 2 && *tpr > 1) {
    /* src/tiling.c's GPU layout: multiples of 8, 8 work-items per row, RPW 1, 2 or 4 rows per work-item. */
    size_t rl = (size_t)d + 1;
    size_t dkdv = 2 * (size_t)bc * rl + 2 * (size_t)br * rl + 2 * (size_t)bc * (br + 1) + 2 * (size_t)br;
    size_t dq = 2 * (size_t)br * rl + 2 * (size_t)bc * rl + (size_t)br * (bc + 1);
    size_t bytes = (dkdv > dq ? dkdv : dq) * sizeof(float);
    if (br >= 8 && bc >= 8 && br % 8 == 0 && bc % 8 == 0 && (rpw == 1 || rpw == 2 || rpw == 4) &&
        br % rpw == 0 && bc % rpw == 0 && 8 * br / rpw <= lim.max_group_size &&
        8 * bc / rpw <= lim.max_group_size && bytes <= lim.local_mem_bytes)
      *out = (fa_tiles){br, bc, 8 * bc / rpw, bytes};
  } else if (n >= 2 && br >= 1 && bc >= 1 && rpw >= 1 && br % rpw == 0 && bc % rpw == 0 &&
             br <= lim.max_group_size && bc <= lim.max_group_size) {
    size_t dkdv = 4 * (size_t)br * d + 2 * (size_t)br + (size_t)bc * d + (size_t)br * bc, dq = 3 * (size_t)bc * d;
    size_t bytes = (dkdv > dq ? dkdv : dq) * sizeof(float);
    if (bytes <= lim.local_mem_bytes) *out = (fa_tiles){br, bc, bc / rpw, bytes};
  }
  return FA_SUCCESS;
}

/* Floats per vector: the widest of 8/4/2/1 that divides BR, BC and D, or FLASHATTN_OPENCL_VEC where it does. */
static int pick_vec(int br, int bc, int d) {
  const char *env = getenv("FLASHATTN_OPENCL_VEC");
  if (env && *env) {
    int want = atoi(env);
    if ((want == 1 || want == 2 || want == 4 || want == 8) && br % want == 0 && bc % want == 0 && d % want == 0)
      return want;
  }
  for (int vec = 8; vec > 1; vec /= 2)
    if (br % vec == 0 && bc % vec == 0 && d % vec == 0) return vec;
  return 1;
}

static int use_atomic(const fa_problem *p, int tpr) {
  if (p->deterministic || tpr > 1) return 0; /* the GPU layout has only the separate scheme */
  const char *env = getenv("FLASHATTN_OPENCL_BWD_DQ");
  if (env && strcmp(env, "atomic") == 0) return 1;
  if (env && strcmp(env, "separate") == 0) return 0;
  return FA_CL_BWD_DEFAULT_ATOMIC;
}

/* A kernel whose private arrays leave the device fewer work-items per group than the tiles ask would fail
 * at launch, after the kernels before it wrote their outputs: check before launching anything. */
fa_status fa_cl_check_group(fa_context *ctx, cl_kernel kernel, size_t local, const char *what) {
  size_t most = 0;
  cl_int err = clGetKernelWorkGroupInfo(kernel, fa_cl_of(ctx)->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof most, &most,
                                        NULL);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetKernelWorkGroupInfo(CL_KERNEL_WORK_GROUP_SIZE)", err);
  if (local > most)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "flash backward: %s needs groups of %zu work-items, the device allows %zu for it (lower "
                   "FLASHATTN_LOCAL_MEM_BYTES for smaller tiles)",
                   what, local, most);
  return FA_SUCCESS;
}

static fa_status flash_backward(fa_context *ctx, const fa_problem *p) {
  fa_cl *cl = fa_cl_of(ctx);
  const int d = (int)p->head_dim;
  fa_tiles tiles;
  int tpr = 1;
  fa_status s = bwd_tiles(ctx, d, p->dropout_p > 0.0f, &tiles, &tpr);
  if (s != FA_SUCCESS) return s;
  const int br = tiles.block_q, bc = tiles.block_k, rpw = tiles.block_k * tpr / tiles.threads;
  const int atomic = use_atomic(p, tpr);
  /* Hardware fma: one instruction on PoCL's CPUs where mad() becomes two (about 20 % of the backward). */
  cl_device_fp_config fp = 0;
  cl_int err = clGetDeviceInfo(cl->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetDeviceInfo(CL_DEVICE_SINGLE_FP_CONFIG)", err);
  /* The block mask and dropout are variants of their own (kernels/masks.h before the kernels): dense calls
   * build exactly the program they always did. */
  const int masked = p->mask.buf != NULL, dropout = p->dropout_p > 0.0f;
  const char *files = masked || dropout ? "masks.h flash_bwd.cl" : "flash_bwd.cl";
  char options[320];
  int n = snprintf(options, sizeof options,
                   "%s -DHEAD_DIM=%d -DBR=%d -DBC=%d -DRPW=%d -DTPR=%d -DVEC=%d -DHAS_FMA=%d -DDQ_ATOMIC=%d",
                   fa_cl_dtype_define(p->dtype), d, br, bc, rpw, tpr, pick_vec(br, bc, d), (fp & CL_FP_FMA) != 0,
                   atomic);
  if (masked || dropout)
    snprintf(options + n, sizeof options - (size_t)n, " -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d", masked, dropout);
  cl_kernel pre, dkdv, dq;
  if ((s = fa_cl_kernel(ctx, files, options, "flash_bwd_pre", &pre)) != FA_SUCCESS) return s;
  if ((s = fa_cl_kernel(ctx, files, options, "flash_bwd_dkdv", &dkdv)) != FA_SUCCESS) return s;
  if ((s = fa_cl_kernel(ctx, files, options, atomic ? "flash_bwd_dq_convert" : "flash_bwd_dq", &dq)) != FA_SUCCESS)
    return s;

  /* Workspace: Di [B, Hq, Sq], then (atomic) the dQ accumulator [B, Hq, Sq, D], float32. */
  size_t rows, floats, bytes;
  if (__builtin_mul_overflow((size_t)p->batch, (size_t)p->heads_q, &rows) ||
      __builtin_mul_overflow(rows, (size_t)p->seqlen_q, &rows) ||
      __builtin_mul_overflow(rows, atomic ? (size_t)d + 1 : 1, &floats) ||
      __builtin_mul_overflow(floats, sizeof(float), &bytes))
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "flash backward: workspace for %lld x %lld x %lld rows overflows size_t",
                   (long long)p->batch, (long long)p->heads_q, (long long)p->seqlen_q);
  cl_mem ws;
  if ((s = fa_cl_workspace(ctx, bytes, &ws)) != FA_SUCCESS) return s;
  const int64_t di_off = 0, dq_off = (int64_t)rows;

  const int group = (int)(p->heads_q / p->heads_kv);
  const float scale_log2 = p->scale * 1.4426950408889634f;

  arg_list a = args_of(ctx, pre, "flash_bwd_pre");
  arg_view(&a, &p->o);
  arg_view(&a, &p->dout);
  arg_mem(&a, ws);
  arg_long(&a, di_off);
  arg_long(&a, dq_off);
  arg_int(&a, atomic);
  arg_int(&a, p->seqlen_q);
  arg_int(&a, p->heads_q);
  if (a.status != FA_SUCCESS) return a.status;

  a = args_of(ctx, dkdv, "flash_bwd_dkdv");
  arg_view(&a, &p->q);
  arg_view(&a, &p->k);
  arg_view(&a, &p->v);
  arg_view(&a, &p->dout);
  arg_view(&a, &p->dk);
  arg_view(&a, &p->dv);
  arg_view(&a, &p->lse);
  arg_mem(&a, ws);
  arg_long(&a, di_off);
  arg_long(&a, dq_off);
  arg_walk(&a, p, group, scale_log2);
  if (a.status != FA_SUCCESS) return a.status;

  if (atomic) {
    a = args_of(ctx, dq, "flash_bwd_dq_convert");
    arg_mem(&a, ws);
    arg_long(&a, dq_off);
    arg_view(&a, &p->dq);
    arg_int(&a, p->seqlen_q);
    arg_int(&a, p->heads_q);
    arg_float(&a, p->scale);
  } else {
    a = args_of(ctx, dq, "flash_bwd_dq");
    arg_view(&a, &p->q);
    arg_view(&a, &p->k);
    arg_view(&a, &p->v);
    arg_view(&a, &p->dout);
    arg_view(&a, &p->dq);
    arg_view(&a, &p->lse);
    arg_mem(&a, ws);
    arg_long(&a, di_off);
    arg_walk(&a, p, group, scale_log2);
  }
  if (a.status != FA_SUCCESS) return a.status;

  /* Row-wise kernels: groups of up to 64 work-items over the rows. */
  size_t row_local = cl->max_group_size < 64 ? cl->max_group_size : 64;
  size_t row_global[3] = {fa_cl_round_up((size_t)p->seqlen_q, row_local), (size_t)p->heads_q, (size_t)p->batch};
  size_t row_local3[3] = {row_local, 1, 1};
  size_t kv_blocks = (size_t)((p->seqlen_k + bc - 1) / bc), q_blocks = (size_t)((p->seqlen_q + br - 1) / br);
  size_t kv_local[3] = {(size_t)(bc * tpr / rpw), 1, 1};
  size_t kv_global[3] = {kv_blocks * kv_local[0], (size_t)p->heads_kv, (size_t)p->batch};
  size_t q_local[3] = {(size_t)(br * tpr / rpw), 1, 1};
  size_t q_global[3] = {q_blocks * q_local[0], (size_t)p->heads_q, (size_t)p->batch};
  if ((s = fa_cl_check_group(ctx, pre, row_local, "flash_bwd_pre")) != FA_SUCCESS) return s;
  if ((s = fa_cl_check_group(ctx, dkdv, kv_local[0], "flash_bwd_dkdv")) != FA_SUCCESS) return s;
  if ((s = fa_cl_check_group(ctx, dq, atomic ? row_local : q_local[0], atomic ? "flash_bwd_dq_convert" : "flash_bwd_dq")) !=
      FA_SUCCESS)
    return s;

  if ((s = fa_cl_launch(ctx, pre, 3, row_global, row_local3, "flash_bwd_pre")) != FA_SUCCESS) return s;
  if ((s = fa_cl_launch(ctx, dkdv, 3, kv_global, kv_local, "flash_bwd_dkdv")) != FA_SUCCESS) return s;
  if (atomic) return fa_cl_launch(ctx, dq, 3, row_global, row_local3, "flash_bwd_dq_convert");
  return fa_cl_launch(ctx, dq, 3, q_global, q_local, "flash_bwd_dq");
}

fa_status fa_cl_backward(fa_context *ctx, const fa_problem *p) {
  if (p->algo == FA_ALGO_STANDARD) return fa_cl_standard_backward(ctx, p);
  /* f16/bf16: the tensor-core kernels first (cl_backward_nv.c, NVIDIA or FLASHATTN_OPENCL_NV_TC=emulate);
   * what they do not serve (FA_ERROR_UNSUPPORTED) runs here. */
  if (p->dtype == FA_F16 || p->dtype == FA_BF16) {
    fa_status s = fa_cl_flash_nv_backward(ctx, p);
    if (s != FA_ERROR_UNSUPPORTED) return s;
  }
  return flash_backward(ctx, p);
}
