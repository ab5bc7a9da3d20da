/* Workshop for the decode kernels: kernels/decode.cu and decode.cl (split-KV attention for few query rows per
 * KV head, with every inference option) and the combine kernel that merges the splits (fa_combine's). One
 * configuration per call: a KV cache [B, Sk, Hkv, D] of which seqlens_k keys per sequence are in use, checked
 * against the float64 reference and timed; the rate is K and V bytes in use per second, read once
 * (options: dev/workshop.h; --seqlens-k, --window and --splits are the decode ones):
 *   dev/decode --backend cuda --dtype f16 --shape 8,1,131072,32,8,128 --seqlens-k 131072 --check 0
 *   dev/decode --backend opencl --shape 2,4,1000,8,2,64 --seqlens-k rand --window 100,0 --splits 3
 *   dev/decode nvrtc [-a] [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]   every decode.cu variant through NVRTC
 * Paged caches (block tables) are timed by tools/flashattn-decode-bench and checked by tests/test_decode.c.
 * Knobs: FLASHATTN_NUM_SPLITS, FLASHATTN_LOCAL_MEM_BYTES.
 *
 * Versions tried (docs/PERFORMANCE.md, H200, f16, Hq 32, Hkv 8, D 128, TB/s of K and V):
 *   v1  a group per (KV head, split) holding the GQA group's rows, float32 partials and the combine kernel:
 *       Sq 1: CUDA B 8 1.21-1.43, B 64 1.34-1.70 (PyTorch's cuDNN 3.2-4.5); OpenCL 0.41-0.74× CUDA;
 *       paged (page 64, B 8) 0.94-1.06; a 4096-key window over a 128k cache 0.129 ms against 3.0 ms whole;
 *       Sq 4 (16 rows a KV head, read in two blocks of 8) 0.45-0.57
 *   v1 + a plain CUDA forward takes the decode kernel only up to 8 rows per KV head: Sq 4 then runs the flash
 *       forward, B 8 1.35-1.53, B 64 1.37-1.44 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workshop.h"

static const char usage[] =
    "usage: decode [--backend B] [--dtype T] [--shape B,Sq,Sk,Hq,Hkv,D] [--seqlens-k N|rand] [--window L,R]\n"
    "              [--splits N] [--causal 0|1] [--scale S] [--layout L] [--check 0|1] [--iters N] [--warmup N]\n"
    "              [--seed N]\n"
    "       decode nvrtc [-a] [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]\n"
    "(dev/workshop.h says what each does)\n";

/* src/cuda/cu_decode.c's variants: each dtype and head dim at 1, 4 and 8 rows, with the score modifiers and
 * 16-byte loads, with either off; fa_combine for each pair of dtypes. */
static int nvrtc(int argc, char **argv) {
  ws_nvrtc t;
  int rc = ws_nvrtc_begin(&t, argc, argv, usage);
  if (rc) return rc;
  static const char *dtypes[] = {"-DFA_DTYPE=0", "-DFA_DTYPE=1", "-DFA_DTYPE=2"};
  if (t.ndefines) {
    ws_nvrtc_compile_given(&t, "decode.cu");
    return ws_nvrtc_end(&t);
  }
  static const int rows[] = {1, 4, 8};
  static const int forms[][2] = {{0, 1}, {1, 1}, {0, 0}}; /* FA_DEC_MODS, FA_DEC_VEC16 */
  for (int a = 0; a < t.narch; a++) {
    for (int di = 0; di < t.ndims; di++)
      for (int dt = 0; dt < 3; dt++)
        for (int ri = 0; ri < 3; ri++)
          for (int fi = 0; fi < 3; fi++) {
            char defines[192];
            snprintf(defines, sizeof defines, "%s -DHEAD_DIM=%d -DROWS=%d -DFA_DEC_MODS=%d -DFA_DEC_VEC16=%d",
                     dtypes[dt], t.dims[di], rows[ri], forms[fi][0], forms[fi][1]);
            ws_nvrtc_compile(&t, "decode.cu", t.archs[a], defines, "fa_decode");
          }
    for (int dt = 0; dt < 3; dt++)
      for (int pt = 0; pt < 3; pt++) {
        char defines[96];
        snprintf(defines, sizeof defines, "%s -DFA_PART_DTYPE=%d -DHEAD_DIM=8 -DROWS=1", dtypes[dt], pt);
        ws_nvrtc_compile(&t, "decode.cu", t.archs[a], defines, "fa_combine");
      }
  }
  return ws_nvrtc_end(&t);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "nvrtc")) return nvrtc(argc - 1, argv + 1);
  ws_opts o = {.dtype = FA_F16, .b = 2, .sq = 1, .sk = 1000, .hq = 8, .hkv = 2, .d = 64, .seqlens_k = -1,
               .check = -1, .iters = 10, .warmup = 1, .seed = 1};
  ws_parse(argc, argv, &o, usage);
  int status;
  fa_context *ctx = ws_context(&o, &status);
  if (!ctx) return status;
  ws_problem p;
  int rc = 1;
  if (ws_problem_init(&p, ctx, &o, 0) == FA_SUCCESS) {
    rc = ws_should_check(&p) ? ws_check_forward(&p) : 0;
    if (o.iters > 0) {
      double keys = 0, cpu, ms = ws_time(&p, ws_forward, &cpu);
      for (int64_t b = 0; b < o.b; b++) keys += (double)(p.seqlens_host ? p.seqlens_host[b] : o.sk);
      const double bytes = 2.0 * keys * (double)o.hkv * (double)o.d * (double)fa_dtype_size(o.dtype);
      char name[512];
      printf("time - decode %s: %.4f ms, %.3g TB/s of K and V in use\n", ws_describe(&p, name, sizeof name), ms,
             bytes / ms * 1e-9);
      rc |= ms != ms;
    }
  }
  ws_problem_free(&p);
  fa_context_destroy(ctx);
  return rc;
}
