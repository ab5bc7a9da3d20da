/* The OpenCL backward pass: FA_ALGO_FLASH here (tiles, build options and the launches of kernels/flash_bwd.cl
 * followed by the layout's flash_bwd_rows.cl or flash_bwd_tiles.cl),
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
 * work-items per row, the default on GPUs; separate dQ only): kernels/flash_bwd_rows.cl or flash_bwd_tiles.cl.
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

/* Workspace: Di [B, Hq, Sq] (`rows` floats), then (atomic) the dQ accumulator [B, Hq, Sq, D], float32. */
fa_status fa_cl_flash_bwd_workspace(fa_context *ctx, const fa_problem *p, int atomic, size_t *rows, size_t *bytes) {
  size_t floats;
  if (__builtin_mul_overflow((size_t)p->batch, (size_t)p->heads_q, rows) ||
      __builtin_mul_overflow(*rows, (size_t)p->seqlen_q, rows) ||
      __builtin_mul_overflow(*rows, atomic ? (size_t)p->head_dim + 1 : 1, &floats) ||
      __builtin_mul_overflow(floats, sizeof(float), bytes))
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY, "flash backward: workspace for %lld x %lld x %lld rows overflows size_t",
                   (long long)p->batch, (long long)p->heads_q, (long long)p->seqlen_q);
  return FA_SUCCESS;
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

/* The program for the tiles that the device allows, rebuilt with smaller tiles while a kernel needs more work-items
 * or local memory than the device grants it as built: known before anything is launched, so that an error
 * leaves every output untouched. */
static fa_status build_kernels(fa_context *ctx, const fa_problem *p, fa_cl_variant *v, cl_kernel kern[3]) {
  fa_cl *cl = fa_cl_of(ctx);
  const int d = (int)p->head_dim;
  /* Hardware fma: one instruction on PoCL's CPUs where mad() becomes two (about 20 % of the backward). */
  cl_device_fp_config fp = 0;
  cl_int err = clGetDeviceInfo(cl->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
  if (err != CL_SUCCESS) return fa_cl_fail(ctx, "clGetDeviceInfo(CL_DEVICE_SINGLE_FP_CONFIG)", err);
  fa_tile_limits lim;
  fa_cl_tile_limits(ctx, &lim);
  for (;;) {
    if (lim.max_group_size < 1)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "flash backward: the device grants its kernels no work-items");
    if (fa_cl_backward_variant(&lim, d, p->dtype, p->mask.buf != NULL, p->dropout_p > 0.0f, p->deterministic,
                               (fp & CL_FP_FMA) != 0, v) != FA_SUCCESS)
      return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                     "flash backward: head dim %d: no tile fits in %zu bytes of local memory and %d work-items (the "
                     "smallest needs %d bytes)",
                     d, lim.local_mem_bytes, lim.max_group_size, (5 * d + 3) * (int)sizeof(float));
    if (fa_problem_flash_infer(p)) fa_cl_variant_infer(v);
    fa_status s = FA_SUCCESS;
    for (int x = 0; x < 3 && s == FA_SUCCESS; x++) s = fa_cl_kernel(ctx, v->files, v->options, v->kernels[x], &kern[x]);
    if (s != FA_SUCCESS) return s;
    int fits_kv = 1, fits_q = 1;
    if ((s = fa_cl_fit_kernel(ctx, kern[1], (size_t)v->tiles.threads, &lim, &fits_kv)) != FA_SUCCESS) return s;
    const size_t q_local = (size_t)(v->tiles.block_q * v->tpr / v->rows);
    if (!v->atomic && (s = fa_cl_fit_kernel(ctx, kern[2], q_local, &lim, &fits_q)) != FA_SUCCESS) return s;
    if (fits_kv && fits_q) return FA_SUCCESS;
  }
}

/* Work-items per group of the row-wise kernels (flash_bwd_pre, flash_bwd_dq_convert): up to 64, as many as
 * the device grants both as built. */
static fa_status row_group(fa_context *ctx, cl_kernel pre, cl_kernel convert, size_t *out) {
  fa_tile_limits row = {0, 64, 1};
  int fits;
  fa_status s = fa_cl_fit_kernel(ctx, pre, 64, &row, &fits);
  if (s == FA_SUCCESS && convert) s = fa_cl_fit_kernel(ctx, convert, (size_t)row.max_group_size, &row, &fits);
  if (s != FA_SUCCESS) return s;
  if (row.max_group_size < 1)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "flash backward: the device grants flash_bwd_pre no work-items");
  *out = (size_t)row.max_group_size;
  return FA_SUCCESS;
}

static fa_status flash_backward(fa_context *ctx, const fa_problem *p) {
  fa_cl_variant v;
  cl_kernel kern[3];
  fa_status s = build_kernels(ctx, p, &v, kern);
  if (s != FA_SUCCESS) return s;
  cl_kernel pre = kern[0], dkdv = kern[1], dq = kern[2];
  const int br = v.tiles.block_q, bc = v.tiles.block_k, rpw = v.rows, tpr = v.tpr, atomic = v.atomic;
  size_t row_local = 1;
  if ((s = row_group(ctx, pre, atomic ? dq : NULL, &row_local)) != FA_SUCCESS) return s;

  size_t rows = 0, bytes = 0;
  if ((s = fa_cl_flash_bwd_workspace(ctx, p, atomic, &rows, &bytes)) != FA_SUCCESS) return s;
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

  /* Varlen: the block kernels' grids cover the longest sequence, once per sequence (groups past their own
   * sequence leave); the row kernels cover the token axis. */
  const int varlen = p->cu_seqlens_q.buf != NULL;
  const int64_t sq = varlen ? p->max_seqlen_q : p->seqlen_q, sk = varlen ? p->max_seqlen_k : p->seqlen_k;
  const size_t seqs = (size_t)(varlen ? p->seqs : p->batch);
  size_t row_global[3] = {fa_cl_round_up((size_t)p->seqlen_q, row_local), (size_t)p->heads_q, (size_t)p->batch};
  size_t row_local3[3] = {row_local, 1, 1};
  size_t kv_blocks = (size_t)((sk + bc - 1) / bc), q_blocks = (size_t)((sq + br - 1) / br);
  size_t kv_local[3] = {(size_t)(bc * tpr / rpw), 1, 1};
  size_t kv_global[3] = {kv_blocks * kv_local[0], (size_t)p->heads_kv, seqs};
  size_t q_local[3] = {(size_t)(br * tpr / rpw), 1, 1};
  size_t q_global[3] = {q_blocks * q_local[0], (size_t)p->heads_q, seqs};

  if ((s = fa_cl_launch(ctx, pre, 3, row_global, row_local3, "flash_bwd_pre")) != FA_SUCCESS) return s;
  /* Varlen whose sequences are all empty on one side: no group on that side (the other writes its zeros). */
  if (kv_blocks && (s = fa_cl_launch(ctx, dkdv, 3, kv_global, kv_local, "flash_bwd_dkdv")) != FA_SUCCESS) return s;
  if (atomic) return fa_cl_launch(ctx, dq, 3, row_global, row_local3, "flash_bwd_dq_convert");
  return q_blocks ? fa_cl_launch(ctx, dq, 3, q_global, q_local, "flash_bwd_dq") : FA_SUCCESS;
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

fa_status fa_cl_backward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  *bytes = 0;
  if (p->algo == FA_ALGO_STANDARD) return fa_cl_standard_backward_workspace(ctx, p, bytes);
  /* The workspace depends on the dQ scheme alone, which the variant the call would build first decides. */
  fa_tile_limits lim;
  fa_cl_tile_limits(ctx, &lim);
  fa_cl_variant v;
  if (fa_cl_backward_variant(&lim, (int)p->head_dim, p->dtype, p->mask.buf != NULL, p->dropout_p > 0.0f,
                             p->deterministic, 1, &v) != FA_SUCCESS)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "flash backward: head dim %lld: no tile fits in %zu bytes of local memory",
                   (long long)p->head_dim, lim.local_mem_bytes);
  if (fa_problem_flash_infer(p)) fa_cl_variant_infer(&v);
  size_t rows;
  return fa_cl_flash_bwd_workspace(ctx, p, v.atomic, &rows, bytes);
}
