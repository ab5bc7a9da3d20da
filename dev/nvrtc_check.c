/* nvrtc_check: compile every CUDA forward kernel variant the library can ask for, through the library's own
 * code path (fa_cu_forward_variant picks the variant, fa_cu_compile runs NVRTC), for each architecture
 * given, and print ptxas's register / spill / shared-memory report per variant. Needs NVRTC, no GPU.
 *
 *   nvrtc_check [-a] [-f] [-q] [arch ...]      archs default to sm_80 sm_90
 *   -a  every head dim that is a multiple of 8 (default: 16 32 64 80 96 128 160 192 224 256)
 *   -f  also each variant with a block mask, with dropout and with both (fa_cu_forward_features), and
 *       kernels/dropout_mask.cu
 *   -q  no ptxas report, only failures and the summary
 *   -d  only the decode kernels (kernels/decode.cu): each dtype and head dim at 1, 4 and 8 rows, with and
 *       without the score modifiers and 16-byte loads, and fa_combine for each pair of dtypes
 * For sm_90 it also compiles the Hopper forward (kernels/flash_fwd_sm90.cu, target sm_90a) for f16/bf16,
 * causal and not (fa_cu_forward_sm90_variant). Budgets tried per arch: the device opt-in shared memory (A100 163 KiB, H100 227 KiB), 49152 (NVIDIA's
 * default, as FLASHATTN_LOCAL_MEM_BYTES=49152 gives) and 8192 (the tests' tiny budget); each with 16-byte
 * aligned rows (cp.async) and without. Exit status 1 when a variant fails to compile or spills more than 64
 * bytes (ptxas spills a few bytes in some tiny-budget CUDA-core variants under NVRTC, not under nvcc). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cu_internal.h"

#define MAX_SEEN 4096

static char *seen[MAX_SEEN];
static int nseen;

static int already(const char *key) {
  for (int i = 0; i < nseen; i++)
    if (strcmp(seen[i], key) == 0) return 1;
  if (nseen < MAX_SEEN) seen[nseen++] = strdup(key);
  return 0;
}

/* The ptxas lines of a log for one function: "Used N registers, ...", "N bytes stack frame, N bytes spill
 * stores, N bytes spill loads". Returns the bytes of spill stores (0 when none). */
static int report(const char *log, int quiet, const char *what) {
  int spills = 0;
  const char *p = strstr(log, "bytes spill stores");
  if (p) {
    const char *q = p;
    while (q > log && q[-1] != ',' && q[-1] != '\n') q--;
    spills = atoi(q);
  }
  if (!quiet || spills) {
    printf("%s\n", what);
    for (const char *line = log; *line;) {
      const char *end = strchr(line, '\n');
      size_t n = end ? (size_t)(end - line) : strlen(line);
      if (memmem(line, n, "Used", 4) || memmem(line, n, "spill", 5)) printf("    %.*s\n", (int)n, line);
      line += n + (end ? 1 : 0);
    }
  }
  return spills;
}

typedef struct tally {
  int compiled, failed, spilled, big_spills;
  double seconds;
} tally;

/* Compile one variant (unless seen before) and report it. */
static void compile_one(const fa_cu_nvrtc *nv, const char *file, const char *arch, const fa_cu_fwd_variant *var,
                        int quiet, tally *t) {
  char key[384], msg[2048];
  snprintf(key, sizeof key, "%s %s %s", arch, var->kernel, var->defines);
  if (already(key)) return;
  void *image = NULL;
  size_t size = 0;
  char *log = NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fa_status st = fa_cu_compile(nv, file, var->defines, arch, 1, &image, &size, &log, msg, sizeof msg);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  t->seconds += s;
  t->compiled++;
  char what[640];
  snprintf(what, sizeof what, "%s: %zu-byte CUBIN, %zu shared bytes, %d threads, %.1f s", key, size,
           var->tiles.local_mem_bytes, var->tiles.threads, s);
  if (st != FA_SUCCESS) {
    t->failed++;
    printf("FAIL %s\n  %s\n", key, msg);
  } else {
    int bytes = report(log ? log : "", quiet, what);
    t->spilled += bytes > 0;
    t->big_spills += bytes > 64;
  }
  free(image);
  free(log);
}

/* The decode kernels' variants (cu_decode.c's defines) and the combine kernel's dtype pairs. */
static void compile_decode(const fa_cu_nvrtc *nv, const char *arch, const int *dims, int ndims, int quiet, tally *t) {
  static const int rows[] = {1, 4, 8};
  static const int forms[][2] = {{0, 1}, {1, 1}, {0, 0}}; /* FA_DEC_MODS, FA_DEC_VEC16 */
  for (int di = 0; di < ndims; di++)
    for (int dt = 0; dt < 3; dt++)
      for (int ri = 0; ri < 3; ri++)
        for (int fi = 0; fi < 3; fi++) {
          fa_cu_fwd_variant var;
          memset(&var, 0, sizeof var);
          var.kernel = "fa_decode";
          var.tiles.threads = 128;
          snprintf(var.defines, sizeof var.defines, "%s -DHEAD_DIM=%d -DROWS=%d -DFA_DEC_MODS=%d -DFA_DEC_VEC16=%d",
                   fa_cu_dtype_define((fa_dtype)dt), dims[di], rows[ri], forms[fi][0], forms[fi][1]);
          compile_one(nv, "decode.cu", arch, &var, quiet, t);
        }
  for (int dt = 0; dt < 3; dt++)
    for (int pt = 0; pt < 3; pt++) {
      fa_cu_fwd_variant var;
      memset(&var, 0, sizeof var);
      var.kernel = "fa_combine";
      var.tiles.threads = 64;
      snprintf(var.defines, sizeof var.defines, "%s -DFA_PART_DTYPE=%d -DHEAD_DIM=8 -DROWS=1",
               fa_cu_dtype_define((fa_dtype)dt), pt);
      compile_one(nv, "decode.cu", arch, &var, quiet, t);
    }
}

int main(int argc, char **argv) {
  int all = 0, quiet = 0, features = 0, decode = 0;
  const char *archs[16];
  int narch = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-a") == 0) all = 1;
    else if (strcmp(argv[i], "-q") == 0) quiet = 1;
    else if (strcmp(argv[i], "-f") == 0) features = 1;
    else if (strcmp(argv[i], "-d") == 0) decode = 1;
    else if (strncmp(argv[i], "sm_", 3) == 0 && narch < 16) archs[narch++] = argv[i];
    else {
      fprintf(stderr, "usage: %s [-a] [-f] [-q] [-d] [sm_XY ...]\n", argv[0]);
      return 2;
    }
  }
  if (!narch) archs[narch++] = "sm_80", archs[narch++] = "sm_90";

  const fa_cu_nvrtc *nv;
  int version;
  char msg[2048];
  if (fa_cu_load_nvrtc(&nv, &version, msg, sizeof msg) != FA_SUCCESS) {
    fprintf(stderr, "nvrtc_check: %s\n", msg);
    return 1;
  }
  printf("NVRTC %d.%d\n", version / 1000, version % 1000 / 10);

  static const int some_dims[] = {16, 32, 64, 80, 96, 128, 160, 192, 224, 256};
  int dims[32], ndims = 0;
  if (all)
    for (int d = 8; d <= 256; d += 8) dims[ndims++] = d;
  else
    for (size_t i = 0; i < sizeof some_dims / sizeof some_dims[0]; i++) dims[ndims++] = some_dims[i];

  tally t = {0};
  if (decode) {
    for (int ai = 0; ai < narch; ai++) compile_decode(nv, archs[ai], dims, ndims, quiet, &t);
    printf("%d variants compiled in %.1f s, %d failed, %d spill (%d more than 64 bytes)\n", t.compiled, t.seconds,
           t.failed, t.spilled, t.big_spills);
    return t.failed || t.big_spills ? 1 : 0;
  }
  for (int ai = 0; ai < narch; ai++) {
    const char *arch = archs[ai];
    int cc_major = atoi(arch + 3) / 10;
    size_t optin = cc_major >= 9 ? 232448 : cc_major == 8 ? 166912 : 49152;
    const size_t budgets[] = {optin, 49152, 8192};
    for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
      fa_tile_limits lim = {budgets[bi], 1024, 32};
      for (int di = 0; di < ndims; di++) {
        for (int dt = 0; dt < 3; dt++) {
          for (int v = 0; v < 2 * (features ? 4 : 1); v++) {
            const int async = 1 - v % 2, feat = v / 2; /* feat: bit 0 block mask, bit 1 dropout */
            fa_cu_fwd_variant var;
            if (fa_cu_forward_variant(&lim, cc_major, dims[di], (fa_dtype)dt, async, &var) != FA_SUCCESS) {
              if (async && !feat) printf("%s budget %zu D %d %s: no tile fits (FA_ERROR_UNSUPPORTED)\n", arch, budgets[bi],
                                dims[di], dt == 0 ? "f32" : dt == 1 ? "f16" : "bf16");
              continue;
            }
            fa_cu_forward_features(&var, feat & 1, (feat & 2) != 0);
            compile_one(nv, "flash_fwd.cu", arch, &var, quiet, &t);
          }
        }
      }
    }
    if (cc_major == 9) { /* the Hopper forward, for the full budget (smaller ones fall back to sm_80's) */
      fa_tile_limits lim = {optin, 1024, 32};
      for (int di = 0; di < ndims; di++)
        for (int dt = 1; dt < 3; dt++)
          for (int causal = 0; causal < 2; causal++)
            for (int feat = 0; feat < (features ? 4 : 1); feat++) {
              fa_cu_fwd_variant var;
              const int mb = feat & 1 ? 128 : 0; /* a block mask takes tiles dividing its blocks */
              if (fa_cu_forward_sm90_variant(&lim, dims[di], (fa_dtype)dt, causal, 0, mb, mb, &var) != FA_SUCCESS) {
                printf("sm_90a D %d: no Hopper tile fits\n", dims[di]);
                continue;
              }
              fa_cu_forward_features(&var, feat & 1, (feat & 2) != 0);
              compile_one(nv, "flash_fwd_sm90.cu", "sm_90a", &var, quiet, &t);
            }
      /* the Hopper backward: its one tile per head dim, deterministic or not, each feature */
      for (int di = 0; di < ndims; di++)
        for (int dt = 1; dt < 3; dt++)
          for (int v = 0; v < 2 * (features ? 4 : 1); v++) {
            fa_cu_fwd_variant var;
            memset(&var, 0, sizeof var);
            if (fa_tiles_cuda_sm90_backward(&lim, dims[di], &var.tiles) != FA_SUCCESS) continue;
            var.kernel = "flash_bwd_sm90";
            snprintf(var.defines, sizeof var.defines,
                     "%s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DFA_DQ_ORDERED=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d",
                     fa_cu_dtype_define((fa_dtype)dt), dims[di], var.tiles.block_q, var.tiles.block_k, v & 1,
                     (v >> 1) & 1, (v >> 2) & 1);
            compile_one(nv, "flash_bwd_sm90.cu", "sm_90a", &var, quiet, &t);
          }
    }
    if (features) { /* the dropout mask's kernel has no variants */
      void *image = NULL;
      size_t size = 0;
      char *log = NULL;
      fa_status st = fa_cu_compile(nv, "dropout_mask.cu", "", arch, 1, &image, &size, &log, msg, sizeof msg);
      t.compiled++;
      if (st != FA_SUCCESS) {
        t.failed++;
        printf("FAIL %s dropout_mask.cu\n  %s\n", arch, msg);
      } else {
        char what[64];
        snprintf(what, sizeof what, "%s dropout_mask.cu: %zu-byte CUBIN", arch, size);
        t.spilled += report(log ? log : "", quiet, what) > 0;
      }
      free(image);
      free(log);
    }
  }
  printf("%d variants compiled in %.1f s, %d failed, %d spill (%d more than 64 bytes)\n", t.compiled, t.seconds,
         t.failed, t.spilled, t.big_spills);
  return t.failed || t.big_spills ? 1 : 0;
}
