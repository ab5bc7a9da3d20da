/* What the OpenCL standard-attention forward (cl_standard.c) and backward (cl_standard_bwd.c) share: the
 * float32 workspace plan, the CLBlast GEMM over units, and the launches of the kernels/standard.cl helpers
 * that both passes use. Only built with CLBlast (FA_HAVE_CLBLAST).
 *
 * A unit u = b * Hkv + kv_head is one kv head and the g = Hq / Hkv query heads that read it: M = g * Sq query
 * rows, ordered (query head in the group, position). Every operand is padded (rows and keys to multiples of
 * 128, the head dim to a multiple of 32) so that CLBlast takes its fast path without copies of its own, and
 * lives in a region of one workspace buffer with a constant number of elements per unit. */
#ifndef FA_CL_STANDARD_H
#define FA_CL_STANDARD_H

#include <stdint.h>

#include "cl_internal.h"

#define FA_STD_ROW_PAD 128 /* query rows and keys */
#define FA_STD_DIM_PAD 32  /* head dim */
#define FA_STD_ALIGN 4096  /* region starts, in bytes: a multiple of every device's CL_DEVICE_MEM_BASE_ADDR_ALIGN */

/* a * b into *out, or 0 (and *out = SIZE_MAX) when it overflows size_t. */
static inline int fa_cl_std_mul(size_t a, size_t b, size_t *out) {
  if (a && b > SIZE_MAX / a) {
    *out = SIZE_MAX;
    return 0;
  }
  *out = a * b;
  return 1;
}

/* One operand's region of the workspace: `unit` float32 elements per unit, starting `base` bytes in. */
typedef struct fa_cl_std_region {
  size_t base;
  size_t unit;
} fa_cl_std_region;

/* The shape of one call and the size of its workspace. */
typedef struct fa_cl_std_plan {
  const char *call; /* "fa_forward (standard)": starts every error sentence */
  size_t units, g, m, m_pad, sk_pad, d_pad;
  size_t bytes;          /* workspace */
  size_t units_per_call; /* CLBlast indexes with 32-bit ints: a GEMM call covers at most this many units */
} fa_cl_std_plan;

/* The shape part of a plan (units, g, m and the padded sizes). */
FA_HIDDEN void fa_cl_std_shape(const fa_problem *p, const char *call, fa_cl_std_plan *pl);

/* Place `n` regions (their `unit` already set; SIZE_MAX for one that overflowed) one after another, aligned,
 * and fill pl->bytes and pl->units_per_call. FA_ERROR_OUT_OF_MEMORY with a sentence when the total
 * overflows or exceeds the device's global memory; FA_ERROR_UNSUPPORTED when one unit of an operand is beyond
 * CLBlast's 32-bit indexing. */
FA_HIDDEN fa_status fa_cl_std_layout(fa_context *ctx, const fa_problem *p, fa_cl_std_plan *pl,
                                     fa_cl_std_region *regions, int n);

/* The build options of kernels/standard.cl for this context and dtype (every kernel of both passes comes from
 * one program). buf holds at least 96 bytes. */
FA_HIDDEN void fa_cl_std_options(const fa_context *ctx, fa_dtype dtype, char *buf, size_t len);

/* C = alpha A op(B) in CLBlast's column-major terms, batched over the units: A untransposed (m x k, ld m),
 * B transposed (stored n x k, ld n), C (m x n, ld m), each region's unit stride between units. `what`
 * names the product in error sentences ("S = QK^T"). */
FA_HIDDEN fa_status fa_cl_std_gemm(fa_context *ctx, cl_mem ws, const fa_cl_std_plan *pl, size_t m, size_t n, size_t k,
                                   float alpha, const fa_cl_std_region *a, const fa_cl_std_region *b,
                                   const fa_cl_std_region *c, const char *what);

/* Gather q, k, v or dout (`src`, `seqlen` positions, g heads per unit) into region r as float32, zero padded
 * to rows_pad x d_pad: transposed [u][d_pad][rows_pad] (column-major rows x D) or not [u][rows_pad][d_pad]
 * (column-major D x rows). kernel: fa_std_pack. */
FA_HIDDEN fa_status fa_cl_std_pack(fa_context *ctx, cl_kernel kernel, const fa_view *src, cl_mem ws,
                                   const fa_cl_std_region *r, const fa_cl_std_plan *pl, size_t rows_pad, int64_t seqlen,
                                   int64_t g, const fa_problem *p, int transposed);

/* Masked softmax of region s ([u][sk_pad][m_pad], scaled scores) in place, the rows' lse into region l
 * ([u][m_pad]). kernel: fa_std_softmax. */
FA_HIDDEN fa_status fa_cl_std_softmax(fa_context *ctx, cl_kernel kernel, cl_mem ws, const fa_cl_std_region *s,
                                      const fa_cl_std_region *l, const fa_cl_std_plan *pl, const fa_problem *p);

/* Rows per work-item of fa_std_softmax on this device (the FA_STD_VEC of fa_cl_std_options). */
FA_HIDDEN int fa_cl_std_vec(const fa_context *ctx);

/* The work-group shape of fa_std_transpose on this device (FA_TR_TILE, FA_TR_ROWS of fa_cl_std_options): a
 * tile x tile block per group of tile x rows work-items; tile divides 128, so it divides every padded size. */
FA_HIDDEN void fa_cl_std_transpose_shape(const fa_context *ctx, int *tile, int *rows);

/* Kernel arguments in order; `what` names the kernel in error sentences. */
typedef struct fa_cl_std_arg {
  size_t size;
  const void *value;
} fa_cl_std_arg;
#define FA_STD_ARG(x) {sizeof(x), &(x)}

FA_HIDDEN fa_status fa_cl_std_set_args(fa_context *ctx, cl_kernel k, const fa_cl_std_arg *args, cl_uint n,
                                       const char *what);

#endif
