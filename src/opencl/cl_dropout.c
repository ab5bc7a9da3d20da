/* fa_dropout_mask() on OpenCL: kernels/dropout_mask.cl writes the keep bits of kernels/masks.h, the ones the
 * forward and backward kernels draw, so that tests can hand the same mask to their reference. */
#include <stdint.h>

#include "cl_internal.h"

#define GROUP 256
/* Work-items per launch at most: each loops over its share, so the global size stays legal however large
 * B * Hq * Sq * Sk is, and 2^22 work-items fill any device. */
#define MAX_ITEMS ((size_t)1 << 22)

fa_status fa_cl_dropout_mask(fa_context *ctx, const fa_problem *p) {
  static const char *what = "dropout_mask";
  if (p->seqlen_q > INT32_MAX || p->seqlen_k > INT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_dropout_mask: sequence lengths above 2^31-1 (Sq %lld, Sk %lld)",
                   (long long)p->seqlen_q, (long long)p->seqlen_k);
  const uint64_t bh = (uint64_t)p->batch * (uint64_t)p->heads_q;
  if (bh > UINT32_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "fa_dropout_mask: batch %lld x heads %lld above 2^32-1",
                   (long long)p->batch, (long long)p->heads_q);
  /* Philox groups: rows in pairs (i, i+8) of 16-row blocks, keys in pairs. */
  const uint64_t groups = bh * (uint64_t)((p->seqlen_q + 15) / 16 * 8) * (uint64_t)((p->seqlen_k + 1) / 2);
  if (groups == 0) return FA_SUCCESS;

  cl_kernel kern;
  fa_status s = fa_cl_kernel(ctx, "masks.h dropout_mask.cl", "", "dropout_mask", &kern);
  if (s != FA_SUCCESS) return s;
  cl_uint arg = 0;
  cl_mem keep = fa_cl_mem(p->keep.buf);
  s = fa_cl_arg(ctx, kern, arg++, sizeof keep, &keep, what);
  cl_long longs[5] = {p->keep.offset, p->keep.stride[0], p->keep.stride[1], p->keep.stride[2], p->keep.stride[3]};
  for (int x = 0; x < 5 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, sizeof longs[x], &longs[x], what);
  cl_uint uints[4] = {(cl_uint)p->heads_q, (cl_uint)bh, (cl_uint)p->seqlen_q, (cl_uint)p->seqlen_k};
  for (int x = 0; x < 4 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, sizeof uints[x], &uints[x], what);
  cl_ulong seed = p->dropout_seed;
  cl_uint tail[2] = {p->dropout_offset, p->dropout_threshold};
  if (s == FA_SUCCESS) s = fa_cl_arg(ctx, kern, arg++, sizeof seed, &seed, what);
  for (int x = 0; x < 2 && s == FA_SUCCESS; x++) s = fa_cl_arg(ctx, kern, arg++, sizeof tail[x], &tail[x], what);
  if (s != FA_SUCCESS) return s;

  size_t items = groups < MAX_ITEMS ? (size_t)groups : MAX_ITEMS;
  size_t global[1] = {fa_cl_round_up(items, GROUP)};
  return fa_cl_launch(ctx, kern, 1, global, NULL, what);
}
