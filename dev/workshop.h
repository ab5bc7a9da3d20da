/* What the kernel workshops (dev/fwd.c, bwd.c, decode.c, standard.c) share: their command line, one problem
 * (device tensors from the test harness, tests/harness.h, with the float64 reference of tests/reference.c
 * beside them), the checks against that reference, event timing, and the NVRTC compile loop that each
 * family's `nvrtc` mode feeds with its kernel variants.
 *
 * A workshop runs one configuration per call, picked by options, checks it and times it:
 *   --backend cuda|opencl|auto    (default auto: FLASHATTN_TEST_BACKEND as the suites read it, else
 *                                 FLASHATTN_BACKEND, then CUDA, then OpenCL)
 *   --dtype f32|f16|bf16          --shape B,Sq,Sk,Hq,Hkv,D      --causal 0|1     --scale S (0: 1/sqrt(D))
 *   --layout packed|bhsd|padded|bhsd+padded   (q, k, v, o and the gradients; offsets differ per tensor)
 *   --mask BQxBK:DENSITY          a random block mask, one per query head, broadcast over the batch
 *   --dropout P                   --deterministic 0|1   --seed N
 *   --seqlens-k N|rand            keys in use per sequence (a KV cache's lengths; rand: 1..Sk each)
 *   --window L,R                  sliding window (-1: unbounded)     --splits N (0: the library chooses)
 *   --check 0|1                   compare with the float64 reference (default: when B·Hq·Sq·Sk·D <= 2^30,
 *                                 the size the reference does in seconds)
 *   --iters N --warmup N          timed calls (median, fa_event_*: CUDA events or OpenCL profiling, the host
 *                                 clock where the queue cannot time; 0: no timing) and untimed ones before
 * Knobs the library reads (FLASHATTN_LOCAL_MEM_BYTES, FLASHATTN_CUDA_FWD, FLASHATTN_OPENCL_NV_TC, ...) pick
 * kernel variants; the device line printed first says which kernels the device gets.
 *
 *   <workshop> nvrtc [-a] [-f] [-q] [-o DIR] [-D DEFINES]... [sm_XY ...]
 * compiles the family's CUDA kernel variants the library can ask for through its own NVRTC path
 * (fa_cu_compile) for each arch (default sm_80 sm_90), prints ptxas's registers and spills, and fails on a
 * compile error or more than 64 bytes of spill stores (ptxas spills a few bytes in some tiny-budget CUDA-core
 * variants under NVRTC, not under nvcc). -a: every head dim that is a multiple of 8; -f: with block mask and
 * dropout too; -q: failures and the summary only; -o DIR: each CUBIN to DIR/<n>.cubin (to compare images);
 * -D: only these define strings, for the family's main kernel file. Needs NVRTC, no GPU.
 *
 * Exit status: 0 when every check passed, 1 on a failure, 2 for bad options, 77 when the backend asked for
 * has no device here (or, for nvrtc, when NVRTC cannot be opened). */
#ifndef FA_DEV_WORKSHOP_H
#define FA_DEV_WORKSHOP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "harness.h"
#include "reference.h"

typedef struct ws_opts {
  fa_backend backend;
  fa_dtype dtype;
  int64_t b, sq, sk, hq, hkv, d;
  int causal;
  float scale;
  th_layout layout;
  int64_t block_q, block_k; /* 0: no block mask */
  double density;
  float dropout;
  int deterministic;
  fa_algo algo;
  int64_t seqlens_k; /* 0: every key; -1: random per sequence */
  int window;
  int64_t window_left, window_right;
  int splits;
  int check; /* -1: by size */
  int iters, warmup;
  uint64_t seed;
} ws_opts;

/* Parse the options above into o (which holds the program's defaults); prints usage and exits 2 on a bad
 * one. usage: the program's own lines. */
void ws_parse(int argc, char **argv, ws_opts *o, const char *usage);

/* A context on o's backend, its device described on stdout. NULL (and a message) when none answers;
 * *status says whether that is "no device" (77) or an error (1). */
fa_context *ws_context(const ws_opts *o, int *status);

/* One problem on the device: inputs random (N(0, 1), rounded to the dtype), outputs poisoned. */
typedef struct ws_problem {
  ws_opts o;
  fa_context *ctx;
  fa_attention_desc desc;
  ref_problem ref;
  int grads; /* dout, dq, dk, dv exist */
  th_tensor q, k, v, out, lse, dout, dq, dk, dv, mask;
  fa_buffer *seqlens_buf;
  fa_tensor seqlens;
  int64_t *seqlens_host;
  uint8_t *mask_host;   /* packed [1, Hq, rows, cols] */
  double mask_density;  /* fraction of nonzero blocks (1 without a mask) */
  uint8_t *keep;        /* the reference's expanded mask, made by the checks */
  double *dropout_mult; /* the reference's dropout multipliers, made by the checks */
} ws_problem;

/* Returns FA_SUCCESS or the library's status (with a message printed). */
fa_status ws_problem_init(ws_problem *p, fa_context *ctx, const ws_opts *o, int grads);
void ws_problem_free(ws_problem *p);

/* One line naming the problem ("f16 B=2 Sq=... causal mask=64x64:0.50"), into buf. */
const char *ws_describe(const ws_problem *p, char *buf, size_t len);

/* The calls, as the timing loop takes them. */
fa_status ws_forward(ws_problem *p);
fa_status ws_backward(ws_problem *p);
fa_status ws_forward_backward(ws_problem *p);

/* Whether the checks run (o.check, or by size). */
int ws_should_check(const ws_problem *p);

/* fa_forward, then o and lse against the reference: ‖o − ref‖/‖ref‖ within the dtype's bound (f32 1e-5,
 * f16 2e-3, bf16 1e-2), lse within 1e-3·max(1, |ref|), o exactly 0 on rows that see no key, nothing written
 * outside o's and lse's elements. Prints "ok - ..." or "not ok - ..."; returns 0 when it passed. */
int ws_check_forward(ws_problem *p);

/* fa_forward for o and lse, then fa_backward: dq, dk, dv against the reference within the dtype's bound,
 * nothing written outside them; with o.deterministic a second call must give the same bits. */
int ws_check_backward(ws_problem *p);

/* Median milliseconds of o.iters calls of fn after o.warmup untimed ones (fa_event_*); *cpu_ms the process's
 * CPU time per call (PoCL's worker threads included: on a shared CPU it says what the kernels cost whatever
 * the wall clock says). NAN when a call failed (the message is printed). */
double ws_time(ws_problem *p, fa_status (*fn)(ws_problem *), double *cpu_ms);

/* 4·B·Hq·Sq·Sk·D, halved when causal, times the block mask's density: the forward's FLOPs. */
double ws_forward_flops(const ws_problem *p);

/* ---- nvrtc mode ---- */

typedef struct ws_nvrtc {
  const void *nv; /* the library's NVRTC table */
  int all, features, quiet;
  const char *out_dir;
  const char *defines[16];
  int ndefines;
  const char *archs[16];
  int narch;
  int dims[32], ndims; /* head dims: 16 32 64 80 96 128 160 192 224 256, or -a's 8..256 */
  int compiled, failed, spilled, big_spills, serialized;
  double seconds;
} ws_nvrtc;

/* Parse argv (after "nvrtc") and open NVRTC. Returns 0, or the exit status to leave with (a message
 * printed): 77 without NVRTC or in a build without CUDA, 2 for bad options. */
int ws_nvrtc_begin(ws_nvrtc *t, int argc, char **argv, const char *usage);
/* Compile kernels/<file> with defines for arch (once per distinct triple) and report it; note goes on its line. */
void ws_nvrtc_compile(ws_nvrtc *t, const char *file, const char *arch, const char *defines, const char *note);
/* -D's define strings for file on every arch. */
void ws_nvrtc_compile_given(ws_nvrtc *t, const char *file);
/* The summary line; the exit status (1 on a failure or a spill above 64 bytes). */
int ws_nvrtc_end(ws_nvrtc *t);
/* An arch's opt-in shared memory per block, the budget the library sizes tiles against there ("sm_90": 227
 * KiB, "sm_80": 163 KiB, else 48). */
size_t ws_nvrtc_optin(const char *arch);

#endif
