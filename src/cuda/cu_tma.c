/* TMA maps for the Hopper kernels (kernels/flash_fwd_sm90.cu, flash_bwd_sm90.cu): which views TMA can read,
 * and the 4-D tiled maps they read them through. */
#include <stdint.h>
#include <stdio.h>

#include "cu_internal.h"

_Static_assert(sizeof(fa_tmap) == sizeof(CUtensorMap), "fa_tmap is a CUtensorMap");

const char *fa_cu_tma_unfit(const fa_view *v, const int64_t shape3[3], size_t elem_bytes) {
  if (fa_cu_addr(v, elem_bytes) % 16) return "its first element is not 16-byte aligned";
  for (int i = 0; i < 3; i++) {
    const uint64_t bytes = (uint64_t)v->stride[i] * elem_bytes;
    if (shape3[i] > 1 && (v->stride[i] <= 0 || bytes % 16 || bytes >= (1ull << 40)))
      return "a batch, sequence or head stride is not a positive multiple of 16 bytes";
  }
  return NULL;
}

fa_status fa_cu_tma_map(fa_context *ctx, fa_tmap *map, const fa_view *v, fa_dtype dtype, int64_t b, int64_t s,
                        int64_t h, int64_t d, int rows, const char *name) {
  const fa_cu *c = fa_cu_of(ctx);
  /* A dimension of size 1 is never stepped: its stride only has to be valid. */
  const int64_t shape[3] = {b, s, h};
  cuuint64_t stride[3];
  for (int i = 0; i < 3; i++) stride[i] = shape[i] > 1 ? (cuuint64_t)v->stride[i] * 2 : 16;
  const cuuint64_t dims[4] = {(cuuint64_t)d, (cuuint64_t)s, (cuuint64_t)h, (cuuint64_t)b};
  const cuuint64_t strides[3] = {stride[1], stride[2], stride[0]};
  const cuuint32_t box[4] = {64, (cuuint32_t)rows, 1, 1}, estr[4] = {1, 1, 1, 1};
  CUresult r = c->cu->TensorMapEncodeTiled(
      (CUtensorMap *)map, dtype == FA_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      (void *)(uintptr_t)fa_cu_addr(v, 2), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    char text[256];
    fa_cu_result_text(c->cu, r, text, sizeof text);
    return fa_fail(ctx, FA_ERROR_DEVICE, "cuTensorMapEncodeTiled(%s: %lld x %lld x %lld x %lld): %s", name,
                   (long long)b, (long long)s, (long long)h, (long long)d, text);
  }
  return FA_SUCCESS;
}
