/* Workshop for the flash backward kernels: kernels/flash_bwd.cu (sm_80: dK/dV on tensor cores or CUDA cores,
 * dQ by atomics or in key-block order), flash_bwd_sm90.cu (Hopper: TMA, wgmma, bulk-reduced dQ),
 * flash_bwd.cl (portable OpenCL: the row layout and the GPU "split" layout) and flash_bwd_nv.cl (OpenCL on
 * NVIDIA's tensor cores), with their block-mask, dropout and deterministic variants. One configuration per
 * call: o and lse from the library's forward, then dq, dk, dv against the float64 reference (with
 * --deterministic 1 a second call must give the same bits), then the forward, the backward alone and both
 * timed (options: dev/workshop.h):
 *   dev/bwd --backend opencl --dtype f32 --shape 1,1024,1024,8,8,64 --iters 5
 *   dev/bwd --backend cuda --dtype bf16 --shape 1,16384,16384,16,16,128 --causal 1 --deterministic 1
 *   dev/bwd nvrtc [-a] [-f] [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]   every backward variant through NVRTC
 *                                                                        (-D: kernels/flash_bwd.cu)
 * Variants are picked by the library's knobs: FLASHATTN_CUDA_BWD=sm80|sm90|simt, FLASHATTN_CUDA_BWD_DQ=separate,
 * FLASHATTN_CUDA_BWD_DEFINES (e.g. -DFA_BWD_PIPELINE=0, -DMIN_BLOCKS=2), FLASHATTN_OPENCL_BWD_LAYOUT=row|split,
 * FLASHATTN_OPENCL_BWD_TILES=BRxBCxR, FLASHATTN_OPENCL_BWD_DQ=atomic, FLASHATTN_OPENCL_NV_TC, FLASHATTN_OPENCL_TILES,
 * FLASHATTN_LOCAL_MEM_BYTES. FLOPs: backward 2.5×, forward + backward 3.5× the forward's 4·B·Hq·Sq·Sk·D
 * (halved when causal, times the mask's block density).
 *
 * Versions tried (docs/PERFORMANCE.md has the full tables, machines and dates):
 *
 * flash_bwd.cl on PoCL, B 1 H 8 S 1024 D 64 f32, CPU-seconds of the backward (lower is better):
 *   1  a work-item per key row (dkdv) / query row (dq), float8, scalar exp2   0.416 (separate dQ), 0.308 (atomic)
 *   2  exp2 on float8 vectors                                                0.257, 0.234
 *   3  RPW rows per work-item: 1 / 2 / 4 / 8                                  0.266 / 0.190 / 0.167 / 0.207
 *   4  tile loads as float8                                                  ≈ 5 %, kept
 *   5  fma() for mad() (PoCL lowered mad to mul + add)                        0.175-0.205 → 0.127-0.155
 *   6  staging whole rows per work-item                                      no gain, dropped
 *   7  tiles swept; 64x128x4 kept                                            0.122-0.132
 *   dQ: a second kernel (7 products, no atomics) 0.125-0.135 against atomic_cmpxchg adds 0.186-0.203: default
 * flash_bwd.cl GPU layout (TPR 8, H100 f16 B 1 H 16, backward TFLOP/s): row layout D 64 S 16384 4.9; split, a
 *   row per work-item 8.7; split, 2 rows (32x32x2, default) 13.0; D 128: split 16x16 7.9, 16x16x2 10.1
 * flash_bwd_nv.cl v1 (issue 12, H200 bf16 fwd+bwd S 16384): D 64 107 TFLOP/s, D 128 91 (0.53× CUDA sm80)
 * flash_bwd.cu (H100 f16 D 128 S 8192 B 2 H 16, backward / fwd+bwd TFLOP/s):
 *   v0  CUDA cores only                               17.9 / 24.5
 *   v1  dK/dV on tensor cores                         110.8 / 134.7
 *   v2  cp.async double buffering of Q/dO             132.5 / 157.9 (0.52× FlashAttention-2); deterministic 21.4
 *   then (the H200 table's "sm80 v2") every D on tensor cores, deterministic by semaphore: H200 bf16 D 128
 *       S 16384 fwd+bwd 192 / 187 (causal), 0.61× FA2
 * flash_bwd_sm90.cu (H200 bf16 D 128 S 16384 fwd+bwd, non-causal / causal):
 *   v1  TMA ring, wgmma for all five products, bulk-reduced dQ   496 / 506 (1.57-1.65× FA2, 0.82-0.88× cuDNN)
 *   v1 deterministic, key blocks in increasing order             361 / 227
 *   v2 deterministic, causal key blocks from the last down       357 / 341
 *   v3 deterministic, the ordered dQ addition on writer warps      490 / 489
 *   v4  D > 128: 64-key blocks, the warpgroups split the head dim  D 256: 379 / 380 (was 152 / 152 on sm80)
 * Block masks in flash_bwd.cl's row layout: one mask byte per block a row crosses (mask_line), blocks of 64 at
 *   density 1/2: 1.24× → 1.02× of dense. Dropout there: a call per score 2.4× dense, float8 vectors 1.47×,
 *   the keep bits in local memory 1.36× */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workshop.h"

#if FA_HAVE_CUDA
#include "cu_internal.h"
#define FA_BWD_PARAMS_ONLY
#include "kernels/flash_bwd.cu"
#endif

static const char usage[] =
    "usage: bwd [--backend B] [--dtype T] [--shape B,Sq,Sk,Hq,Hkv,D] [--causal 0|1] [--scale S] [--layout L]\n"
    "           [--mask BQxBK:DENSITY] [--dropout P] [--deterministic 0|1] [--check 0|1] [--iters N]\n"
    "           [--warmup N] [--seed N]\n"
    "       bwd nvrtc [-a] [-f] [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]\n"
    "(dev/workshop.h says what each does)\n";

/* The sm_80 backward's variants as src/cuda/cu_backward.c forms them, at three budgets: CUDA cores with
 * atomic and separate dQ, and where tensor cores serve (16-bit, sm_80+) separate, atomic and ordered dQ;
 * the Hopper backward for sm_90 (deterministic or not, and each feature with -f). */
static int nvrtc(int argc, char **argv) {
  ws_nvrtc t;
  int rc = ws_nvrtc_begin(&t, argc, argv, usage);
  if (rc) return rc;
#if FA_HAVE_CUDA
  if (t.ndefines) {
    ws_nvrtc_compile_given(&t, "flash_bwd.cu");
    return ws_nvrtc_end(&t);
  }
  for (int ai = 0; ai < t.narch; ai++) {
    const char *arch = t.archs[ai];
    const int cc_major = atoi(arch + 3) / 10;
    const size_t budgets[] = {ws_nvrtc_optin(arch), 49152, 8192};
    for (int bi = 0; bi < 3; bi++) {
      fa_tile_limits lim = {budgets[bi], 1024, 32};
      for (int di = 0; di < t.ndims; di++) {
        const int d = t.dims[di];
        fa_tiles st;
        if (fa_tiles_cuda_backward(&lim, d, FA_F32, &st) != FA_SUCCESS) {
          printf("%s budget %zu D %d: no tile fits\n", arch, budgets[bi], d);
          continue;
        }
        for (int dt = 0; dt < 3; dt++) {
          if (bi > 0 && dt != 1) continue; /* the small budgets: f16 only (the layout does not depend on it) */
          fa_tiles tt;
          const int tc = dt != 0 && cc_major >= 8 && fa_tiles_cuda_backward_tc(&lim, d, &tt) == FA_SUCCESS;
          const int pipe = tc && fa_tiles_cuda_backward_tc_bytes(d, tt.block_q, tt.block_k, tt.threads / 32, 2) <=
                                     lim.local_mem_bytes;
          for (int v = 0; v < (tc ? 5 : 2); v++) {
            const int atomic = v == 0 || v >= 3, is_tc = v >= 2;
            char defines[256], note[96];
            if (is_tc)
              snprintf(defines, sizeof defines, FA_BWD_TC_DEFINES_FMT, fa_cu_dtype_define((fa_dtype)dt), d,
                       tt.block_q, tt.block_k, atomic, tt.threads / 32, v == 4, pipe);
            else
              snprintf(defines, sizeof defines, FA_BWD_DEFINES_FMT, fa_cu_dtype_define((fa_dtype)dt), d, st.block_q,
                       st.block_k, atomic);
            snprintf(note, sizeof note, "budget %zu, %zu shared bytes", budgets[bi],
                     is_tc ? tt.local_mem_bytes : st.local_mem_bytes);
            ws_nvrtc_compile(&t, "flash_bwd.cu", arch, defines, note);
          }
        }
      }
    }
    if (cc_major == 9) {
      fa_tile_limits lim = {budgets[0], 1024, 32};
      for (int di = 0; di < t.ndims; di++)
        for (int dt = 1; dt < 3; dt++)
          for (int v = 0; v < 2 * (t.features ? 6 : 1); v++) {
            fa_tiles ht;
            if (fa_tiles_cuda_sm90_backward(&lim, t.dims[di], &ht) != FA_SUCCESS) continue;
            /* v & 1 deterministic; feat < 4: bit 0 block mask, bit 1 dropout; 4, 5 FA_INFER (5 with softcap or ALiBi) */
            const int feat = v >> 1;
            char defines[256];
            snprintf(defines, sizeof defines,
                     "%s -DHEAD_DIM=%d -DBLOCK_M=%d -DBLOCK_N=%d -DFA_DQ_ORDERED=%d -DFA_BLOCK_MASK=%d -DFA_DROPOUT=%d "
                     "-DFA_INFER=%d -DFA_INFER_MODS=%d",
                     fa_cu_dtype_define((fa_dtype)dt), t.dims[di], ht.block_q, ht.block_k, v & 1, feat < 4 && (feat & 1),
                     feat < 4 && (feat & 2), feat >= 4, feat == 5);
            ws_nvrtc_compile(&t, "flash_bwd_sm90.cu", "sm_90a", defines, "");
          }
    }
  }
#endif
  return ws_nvrtc_end(&t);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "nvrtc")) return nvrtc(argc - 1, argv + 1);
  ws_opts o = {.dtype = FA_F32, .b = 1, .sq = 300, .sk = 300, .hq = 2, .hkv = 1, .d = 64, .check = -1,
               .iters = 5, .warmup = 1, .seed = 1};
  ws_parse(argc, argv, &o, usage);
  int status;
  fa_context *ctx = ws_context(&o, &status);
  if (!ctx) return status;
  ws_problem p;
  int rc = 1;
  if (ws_problem_init(&p, ctx, &o, 1) == FA_SUCCESS) {
    rc = ws_should_check(&p) ? ws_check_backward(&p) : 0;
    if (o.iters > 0) {
      char name[512];
      const double flops = ws_forward_flops(&p);
      double cf, cb, cfb;
      const double f = ws_time(&p, ws_forward, &cf), b = ws_time(&p, ws_backward, &cb);
      const double fb = ws_time(&p, ws_forward_backward, &cfb);
      printf("time - %s: fwd %.3f ms %.3g TFLOP/s; bwd %.3f ms %.3g TFLOP/s; fwd+bwd %.3f ms %.3g TFLOP/s; "
             "GFLOP per CPU-second: bwd %.2f, fwd+bwd %.2f\n",
             ws_describe(&p, name, sizeof name), f, flops / f * 1e-9, b, 2.5 * flops / b * 1e-9, fb,
             3.5 * flops / fb * 1e-9, 2.5 * flops / cb * 1e-6, 3.5 * flops / cfb * 1e-6);
      rc |= f != f || b != b || fb != fb;
    }
  }
  ws_problem_free(&p);
  fa_context_destroy(ctx);
  return rc;
}
