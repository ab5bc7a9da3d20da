/* The -D options of every OpenCL program the backend builds, from the device's limits and a call's features:
 * pure functions (no OpenCL calls), shared by the backend and by tools/cl_variants.c, which lists the whole
 * variant space for offline compilers. */
#ifndef FA_CL_OPTIONS_H
#define FA_CL_OPTIONS_H

#include <stddef.h>

#include "backend.h"
#include "tiling.h"

/* A program of the flash kernels: its files (after kernels/common.cl), build options, kernel names, tiles. */
typedef struct fa_cl_variant {
  const char *files;      /* space-separated names under kernels/ */
  const char *kernels[3]; /* the kernels the host creates from it (NULL after the last) */
  char options[320];
  fa_tiles tiles;
  int tpr;    /* work-items per row: 8 in the GPU layout, else 1 */
  int rows;   /* rows per work-item: RPT of the forward, RPW of the backward */
  int atomic; /* backward: dQ accumulated with atomics (flash_bwd_dq_convert) instead of flash_bwd_dq */
} fa_cl_variant;

/* The -D define that selects the storage type in kernels/common.cl: "-DFA_DTYPE=0|1|2" (f32, f16, bf16). */
FA_HIDDEN const char *fa_cl_dtype_define(fa_dtype dtype);

/* kernels/flash_fwd.cl for head dim d under lim; mask, dropout: the FA_BLOCK_MASK, FA_DROPOUT variants.
 * FA_ERROR_UNSUPPORTED when no tile fits. FLASHATTN_OPENCL_VEC is honoured (see cl_options.c). */
FA_HIDDEN fa_status fa_cl_forward_variant(const fa_tile_limits *lim, int d, fa_dtype dtype, int mask, int dropout,
                                          fa_cl_variant *v);

/* kernels/flash_bwd.cl likewise; has_fma: the device's CL_FP_FMA. The FLASHATTN_OPENCL_BWD_* overrides of
 * cl_backward.c are honoured. FA_ERROR_UNSUPPORTED when no tile fits. */
FA_HIDDEN fa_status fa_cl_backward_variant(const fa_tile_limits *lim, int d, fa_dtype dtype, int mask, int dropout,
                                           int deterministic, int has_fma, fa_cl_variant *v);

/* The FA_INFER variant (varlen, window, ALiBi, softcap; kernels/masks.h before the kernels) of a forward or
 * backward variant from the two functions above, built without a block mask or dropout; a backward takes the
 * separate dQ kernel. */
FA_HIDDEN void fa_cl_variant_infer(fa_cl_variant *v);

/* kernels/standard.cl: rows per work-item of fa_std_softmax, the fa_std_transpose group shape (a tile x tile
 * block per group of tile x rows work-items; tile divides 128) and the program's options (buf >= 96 bytes). */
FA_HIDDEN int fa_cl_std_vec_for(int is_cpu);
FA_HIDDEN void fa_cl_std_transpose_for(size_t max_group_size, int *tile, int *rows);
FA_HIDDEN void fa_cl_std_options_for(int is_cpu, size_t max_group_size, fa_dtype dtype, char *buf, size_t len);

#endif
