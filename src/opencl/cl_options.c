/* The -D options of every OpenCL program the backend builds, as pure functions of the device's limits and the
 * call's features: the backend builds exactly these, and tools/cl_variants.c lists them all for offline
 * compilers (Intel's ocloc, clang for AMD GPUs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_options.h"

/* See cl_backward.c for the measurement behind the default (separate dQ). */
#define FA_CL_BWD_DEFAULT_ATOMIC 0

const char *fa_cl_dtype_define(fa_dtype dtype) {
  switch (dtype) {
  case FA_F16: return "-DFA_DTYPE=1";
  case FA_BF16: return "-DFA_DTYPE=2";
  default: return "-DFA_DTYPE=0";
  }
}

/* Floats per vector: scalar in the GPU layout (several work-items per row, interleaved); in the CPU layout
 * the widest of 8/4/2/1 that divides BC and D. FLASHATTN_OPENCL_VEC (1, 2, 4, 8, 16) overrides it where it
 * divides both, for measurements (docs/PERFORMANCE.md compares them). */
static int fwd_vec(int bc, int d, int tpr) {
  if (tpr > 1) return 1;
  const char *env = getenv("FLASHATTN_OPENCL_VEC");
  if (env && *env) {
    int want = atoi(env);
    if ((want == 1 || want == 2 || want == 4 || want == 8 || want == 16) && bc % want == 0 && d % want == 0)
      return want;
  }
  for (int vec = 8; vec > 1; vec /= 2)
    if (bc % vec == 0 && d % vec == 0) return vec;
  return 1;
}

fa_status fa_cl_forward_variant(const fa_tile_limits *lim, int d, fa_dtype dtype, int mask, int dropout,
                                fa_cl_variant *v) {
  fa_status s = fa_tiles_opencl_forward(lim, d, &v->tiles);
  if (s != FA_SUCCESS) return s;
  /* Work-items per row (GPU layout) or rows per work-item (CPU layout), from the group size. */
  const int br = v->tiles.block_q, bc = v->tiles.block_k, threads = v->tiles.threads;
  v->tpr = threads >= br ? threads / br : 1;
  v->rows = threads < br ? br / threads : 1;
  v->atomic = 0;
  v->files = "masks.h flash_fwd.cl";
  v->kernels[0] = "flash_fwd";
  v->kernels[1] = v->kernels[2] = NULL;
  /* Block mask and dropout are variants of the kernel, so the dense one stays as it was. */
  snprintf(v->options, sizeof v->options,
           "%s -DHEAD_DIM=%d -DBR=%d -DBC=%d -DTPR=%d -DRPT=%d -DVEC=%d -DKT_PAD=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d",
           fa_cl_dtype_define(dtype), d, br, bc, v->tpr, v->rows, fwd_vec(bc, d, v->tpr), v->tpr > 1 ? 1 : 0,
           mask != 0, dropout != 0);
  return FA_SUCCESS;
}

/* The backward tiles for these limits, after the FLASHATTN_OPENCL_BWD_LAYOUT and FLASHATTN_OPENCL_BWD_TILES overrides,
 * and the layout: *tpr = 8 work-items per row (the GPU layout, src/tiling.c picks it where simd_width > 1;
 * out->threads = 8 * BC / RPW) or 1 (the row layout: out->threads = BC / RPW). FLASHATTN_OPENCL_BWD_LAYOUT=row
 * takes the row layout with RPW = 1 on GPUs (the layout before the GPU one, for comparisons), =split the GPU
 * layout on any device. */
static fa_status bwd_tiles(const fa_tile_limits *base, int d, int dropout, fa_tiles *out, int *tpr) {
  fa_tile_limits lim = *base;
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
  if (s != FA_SUCCESS) return s;
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
static int bwd_vec(int br, int bc, int d) {
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

static int use_atomic(int deterministic, int tpr) {
  if (deterministic || tpr > 1) return 0; /* the GPU layout has only the separate scheme */
  const char *env = getenv("FLASHATTN_OPENCL_BWD_DQ");
  if (env && strcmp(env, "atomic") == 0) return 1;
  if (env && strcmp(env, "separate") == 0) return 0;
  return FA_CL_BWD_DEFAULT_ATOMIC;
}

fa_status fa_cl_backward_variant(const fa_tile_limits *lim, int d, fa_dtype dtype, int mask, int dropout,
                                 int deterministic, int has_fma, fa_cl_variant *v) {
  fa_status s = bwd_tiles(lim, d, dropout, &v->tiles, &v->tpr);
  if (s != FA_SUCCESS) return s;
  const int br = v->tiles.block_q, bc = v->tiles.block_k;
  v->rows = bc * v->tpr / v->tiles.threads;
  v->atomic = use_atomic(deterministic, v->tpr);
  /* The block mask and dropout are variants of their own (kernels/masks.h before the kernels): dense calls
   * build exactly the program they always did. */
  static const char *const files[2][2] = {{"flash_bwd.cl flash_bwd_rows.cl", "flash_bwd.cl flash_bwd_tiles.cl"},
                                          {"masks.h flash_bwd.cl flash_bwd_rows.cl", "masks.h flash_bwd.cl flash_bwd_tiles.cl"}};
  v->files = files[mask || dropout][v->tpr > 1];
  v->kernels[0] = "flash_bwd_pre";
  v->kernels[1] = "flash_bwd_dkdv";
  v->kernels[2] = v->atomic ? "flash_bwd_dq_convert" : "flash_bwd_dq";
  int n = snprintf(v->options, sizeof v->options,
                   "%s -DHEAD_DIM=%d -DBR=%d -DBC=%d -DRPW=%d -DTPR=%d -DVEC=%d -DHAS_FMA=%d -DDQ_ATOMIC=%d",
                   fa_cl_dtype_define(dtype), d, br, bc, v->rows, v->tpr, bwd_vec(br, bc, d), has_fma != 0, v->atomic);
  if (mask || dropout)
    snprintf(v->options + n, sizeof v->options - (size_t)n, " -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d", mask != 0,
             dropout != 0);
  return FA_SUCCESS;
}

void fa_cl_variant_infer(fa_cl_variant *v) {
  static const char *const bwd[2] = {"masks.h flash_bwd.cl flash_bwd_rows.cl", "masks.h flash_bwd.cl flash_bwd_tiles.cl"};
  if (strcmp(v->kernels[0], "flash_bwd_pre") == 0) {
    v->files = bwd[v->tpr > 1];
    /* The separate dQ kernel, whatever FLASHATTN_OPENCL_BWD_DQ says: with varlen it writes exactly the
     * sequences' rows, where flash_bwd_dq_convert would write every row of the token axis. */
    char *atomic = strstr(v->options, "-DDQ_ATOMIC=1");
    if (atomic) atomic[strlen("-DDQ_ATOMIC=")] = '0';
    v->atomic = 0;
    v->kernels[2] = "flash_bwd_dq";
  }
  const size_t n = strlen(v->options);
  snprintf(v->options + n, sizeof v->options - n, " -DFA_INFER=1");
}

int fa_cl_std_vec_for(int is_cpu) {
  /* SIMD width on a CPU (see fa_std_softmax in kernels/standard.cl), one row per work-item on a GPU. */
  return is_cpu ? 8 : 1;
}

void fa_cl_std_transpose_for(size_t max_group_size, int *tile, int *rows) {
  int t = 32;
  while (t > 1 && (size_t)t > max_group_size) t /= 2;
  size_t r = max_group_size / (size_t)t;
  *tile = t;
  *rows = r >= 8 ? 8 : (int)r; /* 32 x 8: each work-item moves 4 elements */
  if (*rows > t) *rows = t;
}

void fa_cl_std_options_for(int is_cpu, size_t max_group_size, fa_dtype dtype, char *buf, size_t len) {
  int tile, rows;
  fa_cl_std_transpose_for(max_group_size, &tile, &rows);
  snprintf(buf, len, "%s -DFA_STD_VEC=%d -DFA_TR_TILE=%d -DFA_TR_ROWS=%d", fa_cl_dtype_define(dtype),
           fa_cl_std_vec_for(is_cpu), tile, rows);
}
