/* cl-variants: every OpenCL program the backend can build for a device with the given limits, one line each:
 *   <files after common.cl> TAB <kernel names, space-separated> TAB <build options>
 * The options come from the backend's own functions (src/opencl/cl_options.c) over the whole space the host
 * requests: flash forward and backward for f32/f16/bf16, every head dim the API accepts (8..256, multiples of
 * 8), with and without a block mask and dropout, deterministic or not; the standard path's helpers; the
 * dropout mask and timing marker kernels, and the inference options' variants (fa_cl_variant_infer). Duplicates are printed once. flash_fwd_nv.cl is left out: the host
 * builds it only on NVIDIA platforms (inline PTX). tools/cl_offline_build.py compiles the list.
 *
 * usage: cl-variants [--local-mem BYTES] [--group N] [--simd N] [--fma 0|1] [--cpu 0|1]
 * The defaults describe the Intel and AMD GPUs of CI: 64 KiB, 1024 work-items (the host caps GPUs at 256),
 * SIMD 64 (the host's value for non-NVIDIA GPUs), hardware fma, a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_options.h"

#define MAX_LINES 8192

static char *seen[MAX_LINES];
static int n_seen;

static int emit(const char *files, const char *const *kernels, int n_kernels, const char *options) {
  char line[1024];
  int n = snprintf(line, sizeof line, "%s\t", files);
  for (int k = 0; k < n_kernels && kernels[k]; k++)
    n += snprintf(line + n, sizeof line - (size_t)n, "%s%s", k ? " " : "", kernels[k]);
  snprintf(line + n, sizeof line - (size_t)n, "\t%s", options);
  for (int i = 0; i < n_seen; i++)
    if (strcmp(seen[i], line) == 0) return 0;
  if (n_seen == MAX_LINES || !(seen[n_seen] = strdup(line))) {
    fprintf(stderr, "cl-variants: too many variants\n");
    return 1;
  }
  n_seen++;
  puts(line);
  return 0;
}

int main(int argc, char **argv) {
  long local_mem = 65536, group = 1024, simd = 64, fma = 1, cpu = 0;
  for (int i = 1; i < argc; i++) {
    long *dst = NULL;
    if (strcmp(argv[i], "--local-mem") == 0) dst = &local_mem;
    else if (strcmp(argv[i], "--group") == 0) dst = &group;
    else if (strcmp(argv[i], "--simd") == 0) dst = &simd;
    else if (strcmp(argv[i], "--fma") == 0) dst = &fma;
    else if (strcmp(argv[i], "--cpu") == 0) dst = &cpu;
    char *end = NULL;
    if (!dst || i + 1 == argc || (*dst = strtol(argv[++i], &end, 10), *end != '\0') || *dst < 0) {
      fprintf(stderr, "usage: %s [--local-mem BYTES] [--group N] [--simd N] [--fma 0|1] [--cpu 0|1]\n", argv[0]);
      return 2;
    }
  }
  /* What fa_cl_tile_limits() makes of such a device: GPUs are capped at 256 work-items. */
  fa_tile_limits lim = {(size_t)local_mem, (int)(!cpu && group > 256 ? 256 : group > 4096 ? 4096 : group),
                        (int)(cpu ? 1 : simd)};
  static const fa_dtype dtypes[] = {FA_F32, FA_F16, FA_BF16};
  int failed = 0;
  for (int t = 0; t < 3; t++) {
    for (int d = 8; d <= 256; d += 8) {
      /* mask, dropout, and (feature 4) the inference options, which take neither */
      for (int feat = 0; feat < 5; feat++) {
        const int mask = feat & 1, dropout = (feat >> 1) & 1, infer = feat == 4;
        fa_cl_variant v;
        if (fa_cl_forward_variant(&lim, d, dtypes[t], mask, dropout, &v) == FA_SUCCESS) {
          if (infer) fa_cl_variant_infer(&v);
          failed |= emit(v.files, v.kernels, 3, v.options);
        } else {
          fprintf(stderr, "cl-variants: forward %s d=%d: no tile fits\n", fa_dtype_name(dtypes[t]), d);
        }
        for (int det = 0; det < 2; det++) {
          if (fa_cl_backward_variant(&lim, d, dtypes[t], mask, dropout, det, (int)fma, &v) == FA_SUCCESS) {
            if (infer) fa_cl_variant_infer(&v);
            failed |= emit(v.files, v.kernels, 3, v.options);
          } else {
            fprintf(stderr, "cl-variants: backward %s d=%d: no tile fits\n", fa_dtype_name(dtypes[t]), d);
          }
        }
      }
    }
    char options[128];
    fa_cl_std_options_for((int)cpu, (size_t)group, dtypes[t], options, sizeof options);
    static const char *const std_kernels[] = {"fa_std_pack", "fa_std_softmax", "fa_std_unpack", "fa_std_rowdot",
                                              "fa_std_dscore", "fa_std_transpose", "fa_std_unpack_bwd"};
    failed |= emit("standard.cl", std_kernels, 7, options);
  }
  static const char *const dropout_kernel[] = {"dropout_mask"}, *const marker_kernel[] = {"fa_marker"};
  failed |= emit("masks.h dropout_mask.cl", dropout_kernel, 1, "");
  failed |= emit("marker.cl", marker_kernel, 1, "");
  return failed;
}
