/* FA_ALGO_STANDARD on CUDA: the textbook algorithm with the Sq x Sk matrices in device memory, the products
 * through cuBLAS (opened at run time, cu_cublas.c), the rest in kernels/standard.cu.
 *   forward   S = scale Q K^T, P = softmax(mask(S)), O = P V
 *   backward  S, P recomputed from q and k; dV = P^T dO, dP = dO V^T, dS = P o (dP - Di) with
 *             Di = rowsum(dO o O), dQ = scale dS K, dK = scale dS^T Q
 * It is the baseline the flash kernels are measured against, so it aims to be a fair one: one strided-batched
 * GEMM per product (cuBLAS takes transposed operands without copies), f16/bf16 operands on the tensor cores
 * with float32 accumulation, no TF32 for float32.
 *
 * q, k, v (and dout) are first gathered from any strides into packed workspace in their own dtype, per unit
 * u = b * Hkv + kv_head, with the g = Hq / Hkv query heads of the unit stacked into M = g Sq rows: then one
 * batched call covers every batch entry and head, GQA included, and dK, dV come out of their GEMMs already
 * summed over the group. The gather is O(N d) beside the GEMMs' O(N^2 d). Scores are float32; the GEMMs that
 * read P or dS read them in the storage dtype (cuBLAS wants both operands of one type), as the flash kernels'
 * tensor-core products do. Layout and kernels: see kernels/standard.cu.
 *
 * Workspace (bytes per unit; e = element size, ld_d = D rounded up to 8, ld_k = Sk rounded up to 8):
 *   forward   Q, K, V e (M + 2 Sk) ld_d, S 4 M ld_k, P e M ld_k (float32: S itself), O 4 M ld_d, L 4 M
 *   backward  Q, dO, K, V e (2 M + 2 Sk) ld_d, S/dP 4 M ld_k, P/dS e M ld_k, dQ 4 M ld_d, dK, dV 4 Sk ld_d,
 *             D 4 M
 * Only the last launch of each pass writes the caller's outputs, so that an error before it leaves them
 * unwritten. Called with the context current (cu_context.c pushes it). */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cu_cublas.h"
#include "cu_internal.h"

#define STD_THREADS 256 /* FA_STD_THREADS of kernels/standard.cu */
#define STD_ALIGN 256   /* region starts, bytes */
#define STD_LD_PAD 8    /* 16-byte rows of 16-bit elements: cuBLAS's tensor-core paths want them */

/* A region of the workspace: `unit` elements of `es` bytes per unit. */
typedef struct std_region {
  size_t base, unit, es;
} std_region;

typedef struct std_plan {
  const char *call; /* "fa_forward (standard)" */
  size_t units, g, m, sk, d, ld_d, ld_k, es;
  size_t bytes;
  CUdeviceptr ws;
} std_plan;

static size_t round_up(size_t n, size_t k) { return (n + k - 1) / k * k; }

static void plan_shape(const fa_problem *p, const char *call, std_plan *pl) {
  memset(pl, 0, sizeof *pl);
  pl->call = call;
  pl->units = (size_t)(p->batch * p->heads_kv);
  pl->g = (size_t)(p->heads_q / p->heads_kv);
  pl->m = pl->g * (size_t)p->seqlen_q;
  pl->sk = (size_t)p->seqlen_k;
  pl->d = (size_t)p->head_dim;
  pl->ld_d = round_up(pl->d, STD_LD_PAD);
  pl->ld_k = round_up(pl->sk, STD_LD_PAD);
  pl->es = fa_dtype_size(p->dtype);
}

/* rows * cols into *out, 0 on overflow. */
static int mul2(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Place the regions (rows x cols each, es-byte elements, per unit) one after another; OUT_OF_MEMORY with a
 * sentence when the total overflows or exceeds the device; UNSUPPORTED past cuBLAS's int dimensions. */
static fa_status layout(fa_context *ctx, const fa_problem *p, std_plan *pl, std_region *r, const size_t (*dims)[3],
                        int n) {
  if (pl->m > INT_MAX || pl->sk > INT_MAX || pl->ld_k > INT_MAX || pl->units > INT_MAX)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "%s: %zu query rows per kv head (Hq/Hkv x Sq), Sk = %zu or %zu kv heads in all exceed cuBLAS's int "
                   "dimensions",
                   pl->call, pl->m, pl->sk, pl->units);
  size_t at = 0;
  int ok = 1;
  for (int i = 0; ok && i < n; i++) {
    size_t unit, bytes;
    r[i].base = at;
    r[i].es = dims[i][2];
    ok = mul2(dims[i][0], dims[i][1], &unit) && mul2(unit, pl->units, &bytes) && mul2(bytes, r[i].es, &bytes) &&
         at <= SIZE_MAX - STD_ALIGN && bytes <= SIZE_MAX - STD_ALIGN - at;
    r[i].unit = unit;
    if (ok) at = round_up(at + bytes, STD_ALIGN);
  }
  pl->bytes = at;
  if (!ok || at > ctx->info.global_mem_bytes)
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY,
                   "%s: the score matrices of B=%lld, Hq=%lld, Sq=%lld, Sk=%lld need %s%zu bytes of workspace; the "
                   "device has %zu",
                   pl->call, (long long)p->batch, (long long)p->heads_q, (long long)p->seqlen_q, (long long)p->seqlen_k,
                   ok ? "" : "more than ", ok ? at : (size_t)SIZE_MAX, ctx->info.global_mem_bytes);
  return FA_SUCCESS;
}

static CUdeviceptr at(const std_plan *pl, const std_region *r) { return pl->ws + r->base; }

static int cuda_type(fa_dtype dt) {
  return dt == FA_F16 ? FA_CUDA_R_16F : dt == FA_BF16 ? FA_CUDA_R_16BF : FA_CUDA_R_32F;
}

/* Row-major C (m x n, ldc, float32) = alpha op(A) op(B), batched over the units with each region's unit as the
 * stride; A and B of cuBLAS type `in`. cuBLAS is column-major: a row-major matrix is its transpose there, so
 * this asks for C^T = op(B)^T op(A)^T, which is the same call with the operands swapped. */
static fa_status gemm(fa_context *ctx, const fa_cu_cublas *a, void *h, const std_plan *pl, int ta, int tb, size_t m,
                      size_t n, size_t k, float alpha, const std_region *ra, size_t lda, const std_region *rb,
                      size_t ldb, const std_region *rc, size_t ldc, int in, const char *what) {
  const float beta = 0.0f;
  int s = a->GemmStridedBatchedEx(h, tb, ta, (int)n, (int)m, (int)k, &alpha, (const void *)(uintptr_t)at(pl, rb), in,
                                  (int)ldb, (long long)rb->unit, (const void *)(uintptr_t)at(pl, ra), in, (int)lda,
                                  (long long)ra->unit, &beta, (void *)(uintptr_t)at(pl, rc), FA_CUDA_R_32F, (int)ldc,
                                  (long long)rc->unit, (int)pl->units, FA_CUBLAS_COMPUTE_32F, FA_CUBLAS_GEMM_DEFAULT);
  if (s == FA_CUBLAS_STATUS_SUCCESS) return FA_SUCCESS;
  return fa_fail(ctx, s == FA_CUBLAS_STATUS_ALLOC_FAILED ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE,
                 "%s: cublasGemmStridedBatchedEx(%s, m=%zu n=%zu k=%zu, batch %zu): %s (%d)", pl->call, what, m, n, k,
                 pl->units, fa_cu_cublas_status_name(a, s), s);
}

/* Launch over x blocks per unit and the units, in pieces of at most 65535 units (grid y); the kernel's last
 * parameter is the first unit of the piece, and args[n_args - 1] must point at *u0. */
static fa_status launch_units(fa_context *ctx, CUfunction fn, size_t blocks_x, const std_plan *pl, void **args,
                              long long *u0, const char *what) {
  if (blocks_x > 0x7fffffffu)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED, "%s: %s needs %zu blocks per kv head, above CUDA's 2^31 - 1", pl->call,
                   what, blocks_x);
  for (size_t u = 0; u < pl->units; u += 65535) {
    *u0 = (long long)u;
    const unsigned grid[3] = {(unsigned)blocks_x, (unsigned)(pl->units - u < 65535 ? pl->units - u : 65535), 1};
    fa_status st = fa_cu_launch(ctx, fn, grid, STD_THREADS, 0, args, what);
    if (st != FA_SUCCESS) return st;
  }
  return FA_SUCCESS;
}

static size_t blocks_for(size_t n) { return (n + STD_THREADS - 1) / STD_THREADS; }

/* Gather q, k, v or dout into region r: [u][g * seqlen][ld_d], same dtype. */
static fa_status pack(fa_context *ctx, CUfunction fn, const std_plan *pl, const fa_view *src, const std_region *r,
                      int64_t seqlen, int64_t g, const fa_problem *p) {
  CUdeviceptr s = fa_cu_addr(src, pl->es), d = at(pl, r);
  long long sb = src->stride[0], ss = src->stride[1], sh = src->stride[2], ld = (long long)pl->ld_d;
  long long sl = seqlen, gg = g, hkv = p->heads_kv, hd = p->head_dim, u0 = 0;
  void *args[] = {&s, &sb, &ss, &sh, &d, &ld, &sl, &gg, &hkv, &hd, &u0};
  return launch_units(ctx, fn, blocks_for((size_t)(g * seqlen) * pl->d), pl, args, &u0, "fa_std_pack");
}

/* Softmax of S into P (L: lse, or NULL). */
static fa_status softmax(fa_context *ctx, CUfunction fn, const std_plan *pl, const std_region *s, const std_region *pr,
                         const std_region *l, const fa_problem *p) {
  CUdeviceptr sp = at(pl, s), pp = at(pl, pr), lp = l ? at(pl, l) : 0;
  long long ld = (long long)pl->ld_k, rows = (long long)pl->m, u0 = 0;
  int sq = (int)p->seqlen_q, sk = (int)p->seqlen_k, causal = p->causal != 0;
  void *args[] = {&sp, &pp, &lp, &ld, &rows, &sq, &sk, &causal, &u0};
  return launch_units(ctx, fn, pl->m, pl, args, &u0, "fa_std_softmax");
}

/* Common start of both passes: the plan's workspace, the cuBLAS handle and the kernels. */
static fa_status setup(fa_context *ctx, const fa_problem *p, std_plan *pl, const fa_cu_cublas **a, void **h,
                       const char *const *names, CUfunction *fns, int n) {
  fa_status st = fa_cu_cublas_handle(ctx, pl->call, a, h);
  for (int i = 0; i < n && st == FA_SUCCESS; i++)
    st = fa_cu_function(ctx, "standard.cu", fa_cu_dtype_define(p->dtype), names[i], 0, &fns[i]);
  if (st == FA_SUCCESS) st = fa_cu_workspace(ctx, pl->bytes, &pl->ws);
  return st;
}

/* Both passes plan their workspace first; a workspace-size query (plan_bytes not NULL) stops there. */
static fa_status planned(fa_status st, const std_plan *pl, size_t *plan_bytes) {
  *plan_bytes = st == FA_SUCCESS ? pl->bytes : 0;
  return st;
}

static fa_status standard_forward(fa_context *ctx, const fa_problem *p, size_t *plan_bytes) {
  std_plan pl;
  plan_shape(p, "fa_forward (standard)", &pl);
  const int f32 = p->dtype == FA_F32;
  enum { Q, K, V, S, P, O, L, NREG };
  const size_t dims[NREG][3] = {{pl.m, pl.ld_d, pl.es},
                                {pl.sk, pl.ld_d, pl.es},
                                {pl.sk, pl.ld_d, pl.es},
                                {pl.m, pl.ld_k, 4},
                                {pl.m, f32 ? 0 : pl.ld_k, pl.es}, /* float32: P is S */
                                {pl.m, pl.ld_d, 4},
                                {pl.m, 1, 4}};
  std_region r[NREG];
  fa_status st = layout(ctx, p, &pl, r, dims, NREG);
  if (st != FA_SUCCESS || plan_bytes) return plan_bytes ? planned(st, &pl, plan_bytes) : st;
  const std_region *pr = f32 ? &r[S] : &r[P];

  static const char *const names[] = {"fa_std_pack", "fa_std_softmax", "fa_std_unpack"};
  CUfunction fn[3];
  const fa_cu_cublas *a;
  void *h;
  if ((st = setup(ctx, p, &pl, &a, &h, names, fn, 3)) != FA_SUCCESS) return st;

  const int in = cuda_type(p->dtype);
  const size_t ld_d = pl.ld_d, ld_k = pl.ld_k, m = pl.m, sk = pl.sk, d = pl.d;
  st = pack(ctx, fn[0], &pl, &p->q, &r[Q], p->seqlen_q, (int64_t)pl.g, p);
  if (st == FA_SUCCESS) st = pack(ctx, fn[0], &pl, &p->k, &r[K], p->seqlen_k, 1, p);
  if (st == FA_SUCCESS) st = pack(ctx, fn[0], &pl, &p->v, &r[V], p->seqlen_k, 1, p);
  /* S (M x Sk) = scale Q K^T */
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_N, FA_CUBLAS_OP_T, m, sk, d, p->scale, &r[Q], ld_d, &r[K], ld_d, &r[S], ld_k,
              in, "S = QK^T");
  if (st == FA_SUCCESS) st = softmax(ctx, fn[1], &pl, &r[S], pr, &r[L], p);
  /* O (M x D) = P V */
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_N, FA_CUBLAS_OP_N, m, d, sk, 1.0f, pr, ld_k, &r[V], ld_d, &r[O], ld_d, in,
              "O = PV");
  if (st == FA_SUCCESS) {
    CUdeviceptr op = at(&pl, &r[O]), lp = at(&pl, &r[L]), o = fa_cu_addr(&p->o, pl.es);
    CUdeviceptr lse = p->lse.buf ? fa_cu_addr(&p->lse, sizeof(float)) : 0;
    long long ld = (long long)ld_d, ob = p->o.stride[0], os = p->o.stride[1], oh = p->o.stride[2];
    long long lb = p->lse.buf ? p->lse.stride[0] : 0, lh = p->lse.buf ? p->lse.stride[1] : 0,
              ls = p->lse.buf ? p->lse.stride[2] : 0;
    long long sq = p->seqlen_q, g = (long long)pl.g, hkv = p->heads_kv, hd = p->head_dim, u0 = 0;
    void *args[] = {&op, &lp, &ld, &o, &ob, &os, &oh, &lse, &lb, &lh, &ls, &sq, &g, &hkv, &hd, &u0};
    st = launch_units(ctx, fn[2], blocks_for(m * d), &pl, args, &u0, "fa_std_unpack");
  }
  /* A workspace the size of the scores is dropped after a failure rather than kept for the next call. */
  if (st == FA_ERROR_OUT_OF_MEMORY) fa_cu_workspace_release(ctx);
  return st;
}

static fa_status standard_backward(fa_context *ctx, const fa_problem *p, size_t *plan_bytes) {
  std_plan pl;
  plan_shape(p, "fa_backward (standard)", &pl);
  /* S holds the scores, then dP; P the probabilities, then dS (in place). */
  enum { Q, DO, K, V, S, P, DQ, DK, DV, D, NREG };
  const size_t dims[NREG][3] = {{pl.m, pl.ld_d, pl.es},  {pl.m, pl.ld_d, pl.es},
                                {pl.sk, pl.ld_d, pl.es}, {pl.sk, pl.ld_d, pl.es},
                                {pl.m, pl.ld_k, 4},      {pl.m, pl.ld_k, pl.es},
                                {pl.m, pl.ld_d, 4},      {pl.sk, pl.ld_d, 4},
                                {pl.sk, pl.ld_d, 4},     {pl.m, 1, 4}};
  std_region r[NREG];
  fa_status st = layout(ctx, p, &pl, r, dims, NREG);
  if (st != FA_SUCCESS || plan_bytes) return plan_bytes ? planned(st, &pl, plan_bytes) : st;

  static const char *const names[] = {"fa_std_pack", "fa_std_softmax", "fa_std_rowdot", "fa_std_dscore",
                                      "fa_std_unpack_bwd"};
  CUfunction fn[5];
  const fa_cu_cublas *a;
  void *h;
  if ((st = setup(ctx, p, &pl, &a, &h, names, fn, 5)) != FA_SUCCESS) return st;

  const int in = cuda_type(p->dtype);
  const size_t ld_d = pl.ld_d, ld_k = pl.ld_k, m = pl.m, sk = pl.sk, d = pl.d;
  const int64_t g = (int64_t)pl.g;
  st = pack(ctx, fn[0], &pl, &p->q, &r[Q], p->seqlen_q, g, p);
  if (st == FA_SUCCESS) st = pack(ctx, fn[0], &pl, &p->dout, &r[DO], p->seqlen_q, g, p);
  if (st == FA_SUCCESS) st = pack(ctx, fn[0], &pl, &p->k, &r[K], p->seqlen_k, 1, p);
  if (st == FA_SUCCESS) st = pack(ctx, fn[0], &pl, &p->v, &r[V], p->seqlen_k, 1, p);
  if (st == FA_SUCCESS) { /* Di from the caller's o and dout */
    CUdeviceptr o = fa_cu_addr(&p->o, pl.es), dout = fa_cu_addr(&p->dout, pl.es), dp = at(&pl, &r[D]);
    long long ob = p->o.stride[0], os = p->o.stride[1], oh = p->o.stride[2];
    long long gb = p->dout.stride[0], gs = p->dout.stride[1], gh = p->dout.stride[2];
    long long sq = p->seqlen_q, gg = g, hkv = p->heads_kv, hd = p->head_dim, u0 = 0;
    void *args[] = {&o, &ob, &os, &oh, &dout, &gb, &gs, &gh, &dp, &sq, &gg, &hkv, &hd, &u0};
    st = launch_units(ctx, fn[2], (m + STD_THREADS / 32 - 1) / (STD_THREADS / 32), &pl, args, &u0, "fa_std_rowdot");
  }
  /* S = scale Q K^T, P = softmax(S) */
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_N, FA_CUBLAS_OP_T, m, sk, d, p->scale, &r[Q], ld_d, &r[K], ld_d, &r[S], ld_k,
              in, "S = QK^T");
  if (st == FA_SUCCESS) st = softmax(ctx, fn[1], &pl, &r[S], &r[P], NULL, p);
  /* dV (Sk x D) = P^T dO */
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_T, FA_CUBLAS_OP_N, sk, d, m, 1.0f, &r[P], ld_k, &r[DO], ld_d, &r[DV], ld_d,
              in, "dV = P^T dO");
  /* dP (M x Sk) = dO V^T into S, then dS = P o (dP - Di) over P */
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_N, FA_CUBLAS_OP_T, m, sk, d, 1.0f, &r[DO], ld_d, &r[V], ld_d, &r[S], ld_k,
              in, "dP = dO V^T");
  if (st == FA_SUCCESS) {
    CUdeviceptr pp = at(&pl, &r[P]), sp = at(&pl, &r[S]), dp = at(&pl, &r[D]);
    long long ld = (long long)ld_k, rows = (long long)m, u0 = 0;
    int skk = (int)sk;
    void *args[] = {&pp, &sp, &dp, &ld, &rows, &skk, &u0};
    st = launch_units(ctx, fn[3], m, &pl, args, &u0, "fa_std_dscore");
  }
  /* dQ (M x D) = scale dS K, dK (Sk x D) = scale dS^T Q */
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_N, FA_CUBLAS_OP_N, m, d, sk, p->scale, &r[P], ld_k, &r[K], ld_d, &r[DQ],
              ld_d, in, "dQ = dS K");
  if (st == FA_SUCCESS)
    st = gemm(ctx, a, h, &pl, FA_CUBLAS_OP_T, FA_CUBLAS_OP_N, sk, d, m, p->scale, &r[P], ld_k, &r[Q], ld_d, &r[DK],
              ld_d, in, "dK = dS^T Q");
  if (st == FA_SUCCESS) {
    CUdeviceptr dqw = at(&pl, &r[DQ]), dkw = at(&pl, &r[DK]), dvw = at(&pl, &r[DV]);
    CUdeviceptr dq = fa_cu_addr(&p->dq, pl.es), dk = fa_cu_addr(&p->dk, pl.es), dv = fa_cu_addr(&p->dv, pl.es);
    long long ld = (long long)ld_d, qb = p->dq.stride[0], qs = p->dq.stride[1], qh = p->dq.stride[2];
    long long kb = p->dk.stride[0], ks = p->dk.stride[1], kh = p->dk.stride[2];
    long long vb = p->dv.stride[0], vs = p->dv.stride[1], vh = p->dv.stride[2];
    long long sq = p->seqlen_q, skl = p->seqlen_k, gg = g, hkv = p->heads_kv, hd = p->head_dim, u0 = 0;
    void *args[] = {&dqw, &dkw, &dvw, &ld, &dq, &qb, &qs,  &qh, &dk,  &kb, &ks,
                    &kh,  &dv,  &vb,  &vs, &vh, &sq, &skl, &gg, &hkv, &hd, &u0};
    st = launch_units(ctx, fn[4], blocks_for((m > sk ? m : sk) * d), &pl, args, &u0, "fa_std_unpack_bwd");
  }
  if (st == FA_ERROR_OUT_OF_MEMORY) fa_cu_workspace_release(ctx);
  return st;
}

fa_status fa_cu_standard_forward(fa_context *ctx, const fa_problem *p) { return standard_forward(ctx, p, NULL); }

fa_status fa_cu_standard_backward(fa_context *ctx, const fa_problem *p) { return standard_backward(ctx, p, NULL); }

fa_status fa_cu_standard_workspace(fa_context *ctx, const fa_problem *p, int backward, size_t *bytes) {
  return backward ? standard_backward(ctx, p, bytes) : standard_forward(ctx, p, bytes);
}
