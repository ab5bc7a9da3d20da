/* Workshop for the flash forward kernels: kernels/flash_fwd.cu (sm_80, mma.sync), flash_fwd_sm90.cu (Hopper:
 * TMA, wgmma), flash_fwd.cl (portable OpenCL: CPU and GPU layouts) and flash_fwd_nv.cl (OpenCL on NVIDIA's
 * tensor cores through inline PTX), with their block-mask and dropout variants. One configuration per call,
 * checked against the float64 reference and timed (options: dev/workshop.h):
 *   dev/fwd --backend opencl --dtype f32 --shape 1,1024,1024,8,8,64 --iters 10
 *   dev/fwd --backend cuda --dtype bf16 --shape 1,16384,16384,16,16,128 --causal 1 --mask 128x128:0.5
 *   dev/fwd nvrtc [-a] [-f] [-q] [-D DEFINES]... [sm_XY ...]    every forward variant through NVRTC
 * Variants are picked by the library's knobs: FLASHATTN_CUDA_FWD=sm80|sm90, FLASHATTN_SM90_TILE=BMxBN,
 * FLASHATTN_SM90_DEFINES, FLASHATTN_CUDA_DEFINES (e.g. -DMIN_BLOCKS=2: registers per thread),
 * FLASHATTN_OPENCL_NV_TC=0|force|emulate, FLASHATTN_OPENCL_TILES=cpu|gpu, FLASHATTN_OPENCL_VEC=1|4|8|16,
 * FLASHATTN_LOCAL_MEM_BYTES. FLOPs: 4·B·Hq·Sq·Sk·D, halved when causal, times the mask's block density.
 *
 * Versions tried (docs/PERFORMANCE.md has the full tables, machines and dates):
 *
 * flash_fwd.cl on PoCL (2-core EPYC), B 1 H 8 S 1024 D 64 f32; each step kept the one before:
 *   1  a work-item per query row, Kᵀ in local memory, float8 FMAs, Br 64 Bc 128   9.1 / 10.9 GFLOP/s (causal)
 *   2  softmax on float8 (PoCL calls SLEEF's vector exp only on vectors)          39.4 / 35.7 GFLOP/s
 *   3  tiles swept: Br 128, Bc 64                                                 ≈ 59 GFLOP/s wall
 *   4  fma() for mad()                                                            no change: not FMA-bound
 *   5  staging copies whole rows with 8-wide loads on CPUs                       28 → 38 GFLOP per CPU-second
 *   6  two query rows per work-item (RPT 2)                                       31.8 → 41.4 per CPU-second
 *   7  causal and tail masks on vectors                                          causal within 10-25 %
 *   now: 96-107 GFLOP/s on two quiet cores, 45-53 GFLOP per CPU-second (68 % of the FMA peak)
 * flash_fwd.cl's GPU layout on NVIDIA's OpenCL (H100): Qs and Ps rows padded by one float (4-way bank
 *   conflicts gone): D 128 5.1 → 9.1 TFLOP/s, D 64 5.7 → 8.5
 * flash_fwd_nv.cl (H100 f16, S 8192): v1 mma.sync through inline PTX, 64 rows per group: D 64 105.1 TFLOP/s,
 *   D 128 71.9 (9.3× and 7.8× the portable kernel); v2 (issue 12) Q fragments straight from global memory,
 *   key tile shrinks to fit, D 256 on tensor cores: H200 bf16 S 16384 D 64 133, D 128 122 (0.41× CUDA sm80)
 * flash_fwd.cu sm80 v1 (H100 f16 D 128 S 8192): FA2's structure, cp.async double buffering, ldmatrix, P
 *   from registers: 302 TFLOP/s, 0.94× FlashAttention-2
 * flash_fwd_sm90.cu v1 (H200 bf16 D 128 S 16384): TMA + mbarrier ring, two wgmma warpgroups, ping-pong,
 *   setmaxnreg: 723 TFLOP/s, 1.06× cuDNN. Tile at D 64 causal S 1024 / 4096 (bf16 TFLOP/s): 192x128
 *   (default) 240 / 424, 128x128 270 / 395, 192x96 242 / 406, 128x96 240 / 364, 128x64 239 / 337
 * Block masks, butterfly S 65536 (2 % dense): flash_fwd_nv.cl tiles classified one at a time 15.7 ms, 128 at
 *   once into local memory 6.8 ms; flash_fwd.cu by warp vote ahead of the prefetch 1.96 ms (H100)
 * Dropout's Philox (H100 B2 H16 S4096 f16 p 0.1, ms; dense 0.481 CUDA D 64): 64-bit products 1.017, 32-bit
 *   mul_hi and low product 0.928; flash_fwd.cl CPU layout one call per score +110 %, four scores a call in
 *   uint8 vectors +42 % (PoCL B1 H8 S2048 D64 f32) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workshop.h"

#if FA_HAVE_CUDA
#include "cu_internal.h"
#endif

static const char usage[] =
    "usage: fwd [--backend B] [--dtype T] [--shape B,Sq,Sk,Hq,Hkv,D] [--causal 0|1] [--scale S] [--layout L]\n"
    "           [--mask BQxBK:DENSITY] [--dropout P] [--check 0|1] [--iters N] [--warmup N] [--seed N]\n"
    "       fwd nvrtc [-a] [-f] [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]\n"
    "(dev/workshop.h says what each does)\n";

/* Every forward variant the library can ask for: sm_80's kernel at three budgets, aligned rows (cp.async)
 * or not, with the features when -f (block mask, dropout, both, the inference options); the Hopper kernel for
 * sm_90 (the same features); the dropout mask's kernel with -f. */
static int nvrtc(int argc, char **argv) {
  ws_nvrtc t;
  int rc = ws_nvrtc_begin(&t, argc, argv, usage);
  if (rc) return rc;
#if FA_HAVE_CUDA
  if (t.ndefines) {
    ws_nvrtc_compile_given(&t, "flash_fwd.cu");
    return ws_nvrtc_end(&t);
  }
  for (int ai = 0; ai < t.narch; ai++) {
    const char *arch = t.archs[ai];
    const int cc_major = atoi(arch + 3) / 10;
    const size_t budgets[] = {ws_nvrtc_optin(arch), 49152, 8192};
    for (int bi = 0; bi < 3; bi++) {
      fa_tile_limits lim = {budgets[bi], 1024, 32};
      for (int di = 0; di < t.ndims; di++)
        for (int dt = 0; dt < 3; dt++)
          for (int v = 0; v < 2 * (t.features ? 6 : 1); v++) {
            const int async = 1 - v % 2, feat = v / 2; /* feat < 4: bit 0 block mask, bit 1 dropout; 4, 5 FA_INFER */
            fa_cu_fwd_variant var;
            if (fa_cu_forward_variant(&lim, cc_major, t.dims[di], (fa_dtype)dt, async, &var) != FA_SUCCESS) {
              if (async && !feat)
                printf("%s budget %zu D %d %s: no tile fits\n", arch, budgets[bi], t.dims[di], fa_dtype_name((fa_dtype)dt));
              continue;
            }
            fa_cu_forward_features(&var, feat < 4 && (feat & 1), feat < 4 && (feat & 2));
            if (feat >= 4) fa_cu_forward_infer(&var, feat == 5); /* 5: with softcap or ALiBi */
            char note[128];
            snprintf(note, sizeof note, "budget %zu, %zu shared bytes, %d threads", budgets[bi],
                     var.tiles.local_mem_bytes, var.tiles.threads);
            ws_nvrtc_compile(&t, "flash_fwd.cu", arch, var.defines, note);
          }
    }
    if (cc_major == 9) { /* the Hopper forward at the full budget (smaller ones take sm_80's) */
      fa_tile_limits lim = {budgets[0], 1024, 32};
      for (int di = 0; di < t.ndims; di++)
        for (int dt = 1; dt < 3; dt++)
          for (int causal = 0; causal < 2; causal++)
            for (int feat = 0; feat < (t.features ? 6 : 1); feat++) {
              fa_cu_fwd_variant var;
              const int mb = feat == 1 || feat == 3 ? 128 : 0; /* a block mask takes tiles dividing its blocks */
              if (fa_cu_forward_sm90_variant(&lim, t.dims[di], (fa_dtype)dt, causal, feat >= 4 ? feat - 3 : 0, 0, mb, mb,
                                             &var) !=
                  FA_SUCCESS) {
                printf("sm_90a D %d: no Hopper tile fits\n", t.dims[di]);
                continue;
              }
              fa_cu_forward_features(&var, feat < 4 && (feat & 1), feat < 4 && (feat & 2));
              if (feat >= 4) fa_cu_forward_infer(&var, feat == 5);
              ws_nvrtc_compile(&t, "flash_fwd_sm90.cu", "sm_90a", var.defines, "");
            }
    }
    if (t.features) ws_nvrtc_compile(&t, "dropout_mask.cu", arch, "", "fa_dropout_mask");
  }
#endif
  return ws_nvrtc_end(&t);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "nvrtc")) return nvrtc(argc - 1, argv + 1);
  ws_opts o = {.dtype = FA_F32, .b = 1, .sq = 1000, .sk = 1000, .hq = 2, .hkv = 1, .d = 64, .check = -1,
               .iters = 10, .warmup = 1, .seed = 1};
  ws_parse(argc, argv, &o, usage);
  int status;
  fa_context *ctx = ws_context(&o, &status);
  if (!ctx) return status;
  fa_tiles tl;
  if (fa_context_tiles(ctx, (int)o.d, o.dtype, &tl) == FA_SUCCESS)
    printf("tiles: Br %d Bc %d, %d threads, %zu bytes on chip\n", tl.block_q, tl.block_k, tl.threads, tl.local_mem_bytes);
  ws_problem p;
  int rc = 1;
  if (ws_problem_init(&p, ctx, &o, 0) == FA_SUCCESS) {
    rc = ws_should_check(&p) ? ws_check_forward(&p) : 0;
    if (o.iters > 0) {
      double cpu, ms = ws_time(&p, ws_forward, &cpu), flops = ws_forward_flops(&p);
      char name[512];
      printf("time - forward %s: %.3f ms, %.3g TFLOP/s, %.2f GFLOP per CPU-second\n", ws_describe(&p, name, sizeof name),
             ms, flops / ms * 1e-9, flops / cpu * 1e-6);
      rc |= ms != ms; /* NaN: a call failed */
    }
  }
  ws_problem_free(&p);
  fa_context_destroy(ctx);
  return rc;
}
