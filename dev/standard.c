/* Workshop for standard attention (FA_ALGO_STANDARD: the N×N scores in device memory; the GEMMs through cuBLAS
 * or CLBlast, softmax and packing in kernels/standard.cu / standard.cl), the baseline FlashAttention is
 * measured against. One configuration per call (options: dev/workshop.h):
 *   dev/standard [options]          forward and backward against the float64 reference (outputs poisoned,
 *                                   gaps of strided layouts untouched), then standard beside flash: forward
 *                                   and backward times and the peak of fa_context_memory() for each
 *   dev/standard oom [--backend B]  score matrices that cannot fit (Sq = Sk = 2^20): both passes return
 *                                   FA_ERROR_OUT_OF_MEMORY and write nothing, and the context still works
 *   dev/standard nvrtc [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]   kernels/standard.cu for each dtype
 *
 * Measured (docs/BENCHMARKS.md, f16 B 1 H 16 D 64 non-causal, fwd / fwd+bwd):
 *   cuBLAS, H100, S 16384: 25.7 / 79.0 ms and 24.6 GiB, against flash 3.58 / 25.5 ms and 322 MiB; S 32768
 *     needs 97 GiB: FA_ERROR_OUT_OF_MEMORY
 *   CLBlast, H100's OpenCL, S 16384: forward 69.1 ms; its backward's 49 GiB pass the driver's 20 GiB
 *     single-allocation limit
 *   CLBlast on PoCL (f32 B 1 H 4, S 1024): 228 / 705 ms against flash 17.6 / 80 ms; its SGEMM does 5-7 GFLOP
 *     per CPU-second where the flash kernels do 45-53 (docs/PERFORMANCE.md) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workshop.h"

static const char usage[] =
    "usage: standard [--backend B] [--dtype T] [--shape B,Sq,Sk,Hq,Hkv,D] [--causal 0|1] [--scale S] [--layout L]\n"
    "                [--check 0|1] [--iters N] [--warmup N] [--seed N]\n"
    "       standard oom [--backend B]\n"
    "       standard nvrtc [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]\n"
    "(dev/workshop.h says what each does)\n";

static int nvrtc(int argc, char **argv) {
  ws_nvrtc t;
  int rc = ws_nvrtc_begin(&t, argc, argv, usage);
  if (rc) return rc;
  if (t.ndefines) {
    ws_nvrtc_compile_given(&t, "standard.cu");
  } else {
    static const char *dtypes[] = {"-DFA_DTYPE=0", "-DFA_DTYPE=1", "-DFA_DTYPE=2"};
    for (int a = 0; a < t.narch; a++)
      for (int dt = 0; dt < 3; dt++) ws_nvrtc_compile(&t, "standard.cu", t.archs[a], dtypes[dt], "");
  }
  return ws_nvrtc_end(&t);
}

/* Flash, then standard, on the same tensors: forward and backward times and the context's peak memory. */
static int bench(ws_problem *p) {
  int rc = 0;
  for (int algo = 0; algo < 2; algo++) { /* flash first: the standard's workspace stays in the context */
    p->desc.algo = algo ? FA_ALGO_STANDARD : FA_ALGO_FLASH;
    p->o.algo = p->desc.algo;
    size_t cur, peak_f = 0, peak_b = 0;
    double cpu, f = NAN, b = NAN;
    if (fa_synchronize(p->ctx) == FA_SUCCESS && fa_context_reset_peak_memory(p->ctx) == FA_SUCCESS) {
      f = ws_time(p, ws_forward, &cpu);
      fa_context_memory(p->ctx, &cur, &peak_f);
    }
    if (f == f && fa_context_reset_peak_memory(p->ctx) == FA_SUCCESS) {
      b = ws_time(p, ws_backward, &cpu);
      fa_context_memory(p->ctx, &cur, &peak_b);
    }
    char name[512];
    const double flops = ws_forward_flops(p);
    printf("time - %s%s: fwd %.3f ms %.3g TFLOP/s, peak %.1f MiB; bwd %.3f ms %.3g TFLOP/s, peak %.1f MiB\n",
           algo ? "" : "flash ", ws_describe(p, name, sizeof name), f, flops / f * 1e-9, peak_f / 1048576.0,
           b, 2.5 * flops / b * 1e-9, peak_b / 1048576.0);
    rc |= f != f || b != b;
  }
  return rc;
}

/* Scores far beyond any device: both passes refuse with FA_ERROR_OUT_OF_MEMORY before writing anything. */
static int oom(fa_context *ctx, const ws_opts *base) {
  ws_opts o = *base;
  o.algo = FA_ALGO_STANDARD, o.dtype = FA_F16, o.b = 1, o.sq = o.sk = 1 << 20, o.hq = o.hkv = 1, o.d = 8;
  ws_problem p;
  int bad = 1;
  if (ws_problem_init(&p, ctx, &o, 1) == FA_SUCCESS) {
    fa_status sf = ws_forward(&p);
    printf("forward  Sq = Sk = 2^20: %s: %s\n", fa_status_string(sf), fa_context_last_error(ctx));
    fa_status sb = ws_backward(&p);
    printf("backward Sq = Sk = 2^20: %s: %s\n", fa_status_string(sb), fa_context_last_error(ctx));
    const int unchanged = th_tensor_unchanged(&p.out) == 1 && th_tensor_unchanged(&p.lse) == 1 &&
                          th_tensor_unchanged(&p.dq) == 1 && th_tensor_unchanged(&p.dk) == 1 &&
                          th_tensor_unchanged(&p.dv) == 1;
    bad = sf != FA_ERROR_OUT_OF_MEMORY || sb != FA_ERROR_OUT_OF_MEMORY || !unchanged;
    printf("%s - oom: both passes refused%s\n", bad ? "not ok" : "ok", unchanged ? "" : ", an output was written");
  }
  ws_problem_free(&p);
  /* The context still works: a small case. */
  o = *base;
  o.algo = FA_ALGO_STANDARD, o.b = 1, o.sq = 70, o.sk = 90, o.hq = 2, o.hkv = 1, o.d = 32, o.causal = 1;
  if (ws_problem_init(&p, ctx, &o, 1) == FA_SUCCESS) bad |= ws_check_forward(&p) | ws_check_backward(&p);
  else bad = 1;
  ws_problem_free(&p);
  return bad;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "nvrtc")) return nvrtc(argc - 1, argv + 1);
  const int oom_mode = argc > 1 && !strcmp(argv[1], "oom");
  ws_opts o = {.dtype = FA_F32, .b = 2, .sq = 77, .sk = 131, .hq = 4, .hkv = 2, .d = 64, .causal = 1,
               .algo = FA_ALGO_STANDARD, .check = -1, .iters = 5, .warmup = 1, .seed = 1};
  ws_parse(argc - oom_mode, argv + oom_mode, &o, usage);
  int status;
  fa_context *ctx = ws_context(&o, &status);
  if (!ctx) return status;
  int rc = 1;
  if (oom_mode) {
    rc = oom(ctx, &o);
  } else {
    ws_problem p;
    if (ws_problem_init(&p, ctx, &o, 1) == FA_SUCCESS) {
      rc = ws_should_check(&p) ? ws_check_forward(&p) | ws_check_backward(&p) : 0;
      if (o.iters > 0) rc |= bench(&p);
    }
    ws_problem_free(&p);
  }
  fa_context_destroy(ctx);
  return rc;
}
