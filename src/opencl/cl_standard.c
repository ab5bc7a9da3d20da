/* FA_ALGO_STANDARD forward on OpenCL: the textbook algorithm, with the Sq x Sk scores in device memory; also
 * the helpers that the backward (cl_standard_bwd.c) shares with it, declared in cl_standard.h.
 *   S = scale * Q K^T   (CLBlast batched SGEMM)
 *   P = softmax(mask(S)) in place, lse per row   (kernels/standard.cl)
 *   O = P V             (CLBlast batched SGEMM)
 * It is the baseline that the flash kernels are measured against, so it aims to be a fair one: one batched
 * GEMM for each product, no hidden copies of the score matrix.
 *
 * Everything runs in float32 workspace. CLBlast's half-precision GEMM needs cl_khr_fp16, which PoCL and
 * NVIDIA's OpenCL lack (and bfloat16 has no GEMM at all), so q, k and v are converted into float32 first by
 * fa_std_pack, which also gathers them from any strides into a packed layout: then one strided-batched
 * call covers every batch entry and head, GQA included. The packing is O(N d) work beside the GEMMs' O(N^2 d).
 *
 * The layouts are chosen for CLBlast's fast ("indirect") GEMM, which otherwise copies operands into padded
 * or transposed temporary buffers of its own: in column-major terms it wants A untransposed, B transposed,
 * C untransposed, every dimension a multiple of its tile sizes and ld = rows. So the query rows and keys are
 * padded to multiples of 128 and the head dim to a multiple of 32 (the largest tiles in CLBlast's tuning
 * database), q and k are stored transposed, and the scores as S[key][query] (column-major M x Sk): GEMM 1
 * writes them, GEMM 2 reads them as its A, and neither needs a copy. What CLBlast still allocates (for
 * example for d = 80, or on a device tuned differently) it reports through CLBlastSGemmTempBufferSize; that
 * is counted in fa_context_memory() while the call is enqueued.
 *
 * Workspace, per unit u = b * Hkv + kv_head (the g = Hq / Hkv query heads that read one kv head, M = g * Sq
 * query rows), region by region so that each GEMM operand has a constant stride between units:
 *   QT [u][d_pad][m_pad], then OT in its place | KT [u][d_pad][sk_pad] | V [u][sk_pad][d_pad] |
 *   S [u][sk_pad][m_pad] | L [u][m_pad]
 * CLBlast passes sizes and offsets to its kernels as 32-bit ints, so a GEMM call covers at most 2^31 - 1
 * elements of each operand: larger problems are cut into several calls on sub-buffers. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "cl_internal.h"
#include "config.h"

#if FA_HAVE_CLBLAST

#include "cl_standard.h"

static const char *clblast_status_name(CLBlastStatusCode s) {
  switch (s) {
  case CLBlastInvalidLocalMemUsage: return "CLBlastInvalidLocalMemUsage";
  case CLBlastInsufficientMemoryA: return "CLBlastInsufficientMemoryA";
  case CLBlastInsufficientMemoryB: return "CLBlastInsufficientMemoryB";
  case CLBlastInsufficientMemoryC: return "CLBlastInsufficientMemoryC";
  case CLBlastInvalidDimension: return "CLBlastInvalidDimension";
  case CLBlastDatabaseError: return "CLBlastDatabaseError";
  case CLBlastUnknownError: return "CLBlastUnknownError";
  case CLBlastUnexpectedError: return "CLBlastUnexpectedError";
  default:
    /* CLBlast reuses OpenCL's codes where they mean the same */
    return s > -1000 ? fa_cl_error_name((cl_int)s) : "CLBlast error";
  }
}

static fa_status clblast_fail(fa_context *ctx, const char *call, const char *what, CLBlastStatusCode s) {
  int oom = s == CLBlastTempBufferAllocFailure || s == CLBlastOpenCLOutOfResources || s == CLBlastOpenCLOutOfHostMemory;
  return fa_fail(ctx, oom ? FA_ERROR_OUT_OF_MEMORY : FA_ERROR_DEVICE, "%s: %s: %s (%d)", call, what,
                 clblast_status_name(s), (int)s);
}

void fa_cl_std_shape(const fa_problem *p, const char *call, fa_cl_std_plan *pl) {
  pl->call = call;
  pl->units = (size_t)(p->batch * p->heads_kv);
  pl->g = (size_t)(p->heads_q / p->heads_kv);
  pl->m = pl->g * (size_t)p->seqlen_q;
  pl->m_pad = fa_cl_round_up(pl->m, FA_STD_ROW_PAD);
  pl->sk_pad = fa_cl_round_up((size_t)p->seqlen_k, FA_STD_ROW_PAD);
  pl->d_pad = fa_cl_round_up((size_t)p->head_dim, FA_STD_DIM_PAD);
  pl->bytes = 0;
  pl->units_per_call = 0;
}

fa_status fa_cl_std_layout(fa_context *ctx, const fa_problem *p, fa_cl_std_plan *pl, fa_cl_std_region *regions, int n) {
  const fa_cl *cl = fa_cl_of(ctx);
  fa_status loaded = fa_clblast_load(ctx, pl->call);
  if (loaded != FA_SUCCESS) return loaded;
  size_t at = 0, largest = 1;
  int ok = 1;
  for (int i = 0; ok && i < n; i++) {
    size_t bytes;
    regions[i].base = at;
    ok = fa_cl_std_mul(regions[i].unit, pl->units, &bytes) && fa_cl_std_mul(bytes, sizeof(float), &bytes) &&
         bytes <= SIZE_MAX - FA_STD_ALIGN && at <= SIZE_MAX - FA_STD_ALIGN - bytes;
    if (ok) at = fa_cl_round_up(at + bytes, FA_STD_ALIGN);
    if (regions[i].unit > largest) largest = regions[i].unit;
  }
  pl->bytes = at;
  if (!ok || at > cl->global_mem_bytes)
    return fa_fail(ctx, FA_ERROR_OUT_OF_MEMORY,
                   "%s: the score matrices of B=%lld, Hq=%lld, Sq=%lld, Sk=%lld need %s%zu bytes of workspace; the "
                   "device has %llu",
                   pl->call, (long long)p->batch, (long long)p->heads_q, (long long)p->seqlen_q, (long long)p->seqlen_k,
                   ok ? "" : "more than ", ok ? at : (size_t)SIZE_MAX, (unsigned long long)cl->global_mem_bytes);
  pl->units_per_call = (size_t)INT_MAX / largest;
  if (pl->units_per_call == 0)
    return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                   "%s: one score matrix of %zu x %zu elements is beyond CLBlast's 32-bit indexing", pl->call,
                   pl->m_pad, pl->sk_pad);
  return FA_SUCCESS;
}

int fa_cl_std_vec(const fa_context *ctx) { return fa_cl_std_vec_for(fa_cl_of(ctx)->is_cpu); }

void fa_cl_std_transpose_shape(const fa_context *ctx, int *tile, int *rows) {
  fa_cl_std_transpose_for(fa_cl_of(ctx)->max_group_size, tile, rows);
}

void fa_cl_std_options(const fa_context *ctx, fa_dtype dtype, char *buf, size_t len) {
  const fa_cl *cl = fa_cl_of(ctx);
  fa_cl_std_options_for(cl->is_cpu, cl->max_group_size, dtype, buf, len);
}

/* A sub-buffer of the workspace for units [u0, u0 + n) of a region. */
static fa_status sub_buffer(fa_context *ctx, const char *call, cl_mem ws, const fa_cl_std_region *r, size_t u0,
                            size_t n, cl_mem *out) {
  cl_buffer_region reg = {r->base + u0 * r->unit * sizeof(float), n * r->unit * sizeof(float)};
  cl_int err;
  *out = clCreateSubBuffer(ws, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &reg, &err);
  if (err != CL_SUCCESS) {
    *out = NULL;
    char what[96];
    snprintf(what, sizeof what, "%s: clCreateSubBuffer", call);
    return fa_cl_fail(ctx, what, err);
  }
  return FA_SUCCESS;
}

fa_status fa_cl_std_gemm(fa_context *ctx, cl_mem ws, const fa_cl_std_plan *pl, size_t m, size_t n, size_t k,
                         float alpha, const fa_cl_std_region *a, const fa_cl_std_region *b, const fa_cl_std_region *c,
                         const char *what) {
  fa_cl *cl = fa_cl_of(ctx);
  fa_status st = FA_SUCCESS;
  for (size_t u0 = 0; u0 < pl->units && st == FA_SUCCESS; u0 += pl->units_per_call) {
    size_t nu = pl->units - u0 < pl->units_per_call ? pl->units - u0 : pl->units_per_call;
    cl_mem ma = NULL, mb = NULL, mc = NULL;
    st = sub_buffer(ctx, pl->call, ws, a, u0, nu, &ma);
    if (st == FA_SUCCESS) st = sub_buffer(ctx, pl->call, ws, b, u0, nu, &mb);
    if (st == FA_SUCCESS) st = sub_buffer(ctx, pl->call, ws, c, u0, nu, &mc);

    /* What CLBlast will allocate for itself, counted while the call is in flight. */
    size_t temp = 0;
    if (st == FA_SUCCESS) {
      CLBlastStatusCode s = CLBlastSGemmTempBufferSize(CLBlastLayoutColMajor, CLBlastTransposeNo, CLBlastTransposeYes,
                                                       m, n, k, 0, m, 0, n, 0, m, &cl->queue, &temp);
      if (s != CLBlastSuccess) temp = 0; /* only an estimate for the memory report */
      if (!fa_cl_std_mul(temp, nu, &temp)) temp = 0;
    }
    /* CLBlast enqueues without a wait list: on an out-of-order queue, fence it from our kernels. */
    if (st == FA_SUCCESS && !cl->in_order) {
      cl_int err = clEnqueueBarrierWithWaitList(cl->queue, 0, NULL, NULL);
      if (err != CL_SUCCESS) st = fa_cl_fail(ctx, "clEnqueueBarrierWithWaitList", err);
    }
    if (st == FA_SUCCESS) {
      fa_mem_track(ctx, (int64_t)temp);
      CLBlastStatusCode s =
          CLBlastSgemmStridedBatched(CLBlastLayoutColMajor, CLBlastTransposeNo, CLBlastTransposeYes, m, n, k, alpha, ma,
                                     0, m, a->unit, mb, 0, n, b->unit, 0.0f, mc, 0, m, c->unit, nu, &cl->queue, NULL);
      fa_mem_track(ctx, -(int64_t)temp);
      if (s != CLBlastSuccess) st = clblast_fail(ctx, pl->call, what, s);
    }
    if (st == FA_SUCCESS && !cl->in_order) {
      cl_int err = clEnqueueBarrierWithWaitList(cl->queue, 0, NULL, NULL);
      if (err != CL_SUCCESS) st = fa_cl_fail(ctx, "clEnqueueBarrierWithWaitList", err);
    }
    /* The driver keeps the sub-buffers alive until the commands that use them have finished. */
    if (ma) clReleaseMemObject(ma);
    if (mb) clReleaseMemObject(mb);
    if (mc) clReleaseMemObject(mc);
  }
  return st;
}

fa_status fa_cl_std_set_args(fa_context *ctx, cl_kernel k, const fa_cl_std_arg *args, cl_uint n, const char *what) {
  for (cl_uint i = 0; i < n; i++) {
    fa_status st = fa_cl_arg(ctx, k, i, args[i].size, args[i].value, what);
    if (st != FA_SUCCESS) return st;
  }
  return FA_SUCCESS;
}

#define ARG FA_STD_ARG

fa_status fa_cl_std_pack(fa_context *ctx, cl_kernel kernel, const fa_view *src, cl_mem ws, const fa_cl_std_region *r,
                         const fa_cl_std_plan *pl, size_t rows_pad, int64_t seqlen, int64_t g, const fa_problem *p,
                         int transposed) {
  cl_mem mem = fa_cl_mem(src->buf);
  cl_long off = src->offset, sb = src->stride[0], ss = src->stride[1], sh = src->stride[2];
  cl_long dst_off = (cl_long)(r->base / sizeof(float)), rp = (cl_long)rows_pad, dp = (cl_long)pl->d_pad;
  cl_long sl = seqlen, gg = g, hkv = p->heads_kv, d = p->head_dim;
  cl_int tr = transposed;
  fa_cl_std_arg args[] = {ARG(mem), ARG(off), ARG(sb), ARG(ss), ARG(sh),  ARG(ws), ARG(dst_off),
                          ARG(rp),  ARG(dp),  ARG(sl), ARG(gg), ARG(hkv), ARG(d),  ARG(tr)};
  fa_status st = fa_cl_std_set_args(ctx, kernel, args, sizeof args / sizeof args[0], "fa_std_pack");
  size_t global[3] = {rows_pad, pl->d_pad, pl->units};
  if (st == FA_SUCCESS) st = fa_cl_launch(ctx, kernel, 3, global, NULL, "fa_std_pack");
  return st;
}

fa_status fa_cl_std_softmax(fa_context *ctx, cl_kernel kernel, cl_mem ws, const fa_cl_std_region *s,
                            const fa_cl_std_region *l, const fa_cl_std_plan *pl, const fa_problem *p) {
  cl_long s_off = (cl_long)(s->base / sizeof(float)), l_off = (cl_long)(l->base / sizeof(float));
  cl_long mp = (cl_long)pl->m_pad, skp = (cl_long)pl->sk_pad;
  /* below 2^31: fa_cl_std_layout keeps m_pad * sk_pad within CLBlast's int range */
  cl_int sq = (cl_int)p->seqlen_q, sk = (cl_int)p->seqlen_k, causal = p->causal != 0;
  fa_cl_std_arg args[] = {ARG(ws), ARG(s_off), ARG(ws), ARG(l_off), ARG(mp), ARG(skp), ARG(sq), ARG(sk), ARG(causal)};
  fa_status st = fa_cl_std_set_args(ctx, kernel, args, sizeof args / sizeof args[0], "fa_std_softmax");
  size_t global[2] = {pl->m_pad / (size_t)fa_cl_std_vec(ctx), pl->units};
  if (st == FA_SUCCESS) st = fa_cl_launch(ctx, kernel, 2, global, NULL, "fa_std_softmax");
  return st;
}

/* Regions in workspace order; OT takes QT's place once GEMM 1 has read it. */
enum { QO, KT, V, S, L, NREG };

static fa_status forward_plan(fa_context *ctx, const fa_problem *p, fa_cl_std_plan *pl, fa_cl_std_region *r) {
  fa_cl_std_shape(p, "fa_forward (standard)", pl);
  r[QO].unit = pl->d_pad * pl->m_pad;
  r[KT].unit = pl->d_pad * pl->sk_pad;
  r[V].unit = pl->sk_pad * pl->d_pad;
  fa_cl_std_mul(pl->sk_pad, pl->m_pad, &r[S].unit);
  r[L].unit = pl->m_pad;
  return fa_cl_std_layout(ctx, p, pl, r, NREG);
}

fa_status fa_cl_standard_forward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  fa_cl_std_plan pl;
  fa_cl_std_region r[NREG];
  fa_status st = forward_plan(ctx, p, &pl, r);
  *bytes = st == FA_SUCCESS ? pl.bytes : 0;
  return st;
}

fa_status fa_cl_standard_forward(fa_context *ctx, const fa_problem *p) {
  fa_cl_std_plan pl;
  fa_cl_std_region r[NREG];
  fa_status st = forward_plan(ctx, p, &pl, r);
  if (st != FA_SUCCESS) return st;

  char options[128];
  fa_cl_std_options(ctx, p->dtype, options, sizeof options);
  cl_kernel k_pack, k_softmax, k_unpack;
  st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_pack", &k_pack);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_softmax", &k_softmax);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_unpack", &k_unpack);
  if (st != FA_SUCCESS) return st;

  cl_mem ws;
  st = fa_cl_workspace(ctx, pl.bytes, &ws);
  if (st != FA_SUCCESS) return st;

  /* The last kernel's arguments first: nothing that can fail short of a launch is left after the first one. */
  cl_long ot_off = (cl_long)(r[QO].base / sizeof(float)), l_off = (cl_long)(r[L].base / sizeof(float));
  cl_mem o = fa_cl_mem(p->o.buf), lse = p->lse.buf ? fa_cl_mem(p->lse.buf) : NULL;
  cl_long o_off = p->o.offset, ob = p->o.stride[0], os = p->o.stride[1], oh = p->o.stride[2];
  cl_long lse_off = p->lse.buf ? p->lse.offset : 0, lb = p->lse.buf ? p->lse.stride[0] : 0,
          lh = p->lse.buf ? p->lse.stride[1] : 0, ls = p->lse.buf ? p->lse.stride[2] : 0;
  cl_int has_lse = p->lse.buf != NULL;
  cl_long mp = (cl_long)pl.m_pad, dp = (cl_long)pl.d_pad, sq = p->seqlen_q, g = (cl_long)pl.g, hkv = p->heads_kv,
          d = p->head_dim;
  fa_cl_std_arg args[] = {ARG(ws),      ARG(ot_off), ARG(ws),  ARG(l_off),   ARG(o),  ARG(o_off), ARG(ob),
                          ARG(os),      ARG(oh),     ARG(lse), ARG(lse_off), ARG(lb), ARG(lh),    ARG(ls),
                          ARG(has_lse), ARG(mp),     ARG(dp),  ARG(sq),      ARG(g),  ARG(hkv),   ARG(d)};
  st = fa_cl_std_set_args(ctx, k_unpack, args, sizeof args / sizeof args[0], "fa_std_unpack");

  /* q -> QT, k -> KT (both transposed), v -> V */
  if (st == FA_SUCCESS)
    st = fa_cl_std_pack(ctx, k_pack, &p->q, ws, &r[QO], &pl, pl.m_pad, p->seqlen_q, (int64_t)pl.g, p, 1);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->k, ws, &r[KT], &pl, pl.sk_pad, p->seqlen_k, 1, p, 1);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->v, ws, &r[V], &pl, pl.sk_pad, p->seqlen_k, 1, p, 0);

  /* S = scale * Q K^T, column-major m_pad x sk_pad: A = QT read as m_pad x d_pad, B = KT read as
   * sk_pad x d_pad and transposed. */
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.m_pad, pl.sk_pad, pl.d_pad, p->scale, &r[QO], &r[KT], &r[S], "S = QK^T");
  if (st == FA_SUCCESS) st = fa_cl_std_softmax(ctx, k_softmax, ws, &r[S], &r[L], &pl, p);

  /* OT (m_pad x d_pad) = P V: A = S as m_pad x sk_pad, B = V stored d_pad x sk_pad (column-major) and
   * transposed. OT takes QT's place, which GEMM 1 no longer needs. */
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.m_pad, pl.d_pad, pl.sk_pad, 1.0f, &r[S], &r[V], &r[QO], "O = PV");

  if (st == FA_SUCCESS) {
    size_t global[3] = {pl.m_pad, pl.d_pad, pl.units};
    st = fa_cl_launch(ctx, k_unpack, 3, global, NULL, "fa_std_unpack");
  }
  /* Drivers that allocate on first use report a workspace they cannot back only at a launch: drop it, so
   * that the next call asks afresh instead of reusing a buffer that has no memory behind it. */
  if (st == FA_ERROR_OUT_OF_MEMORY) fa_cl_workspace_release(ctx);
  return st;
}

#else /* !FA_HAVE_CLBLAST */

fa_status fa_cl_standard_forward(fa_context *ctx, const fa_problem *p) {
  (void)p;
  return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                 "fa_forward: FA_ALGO_STANDARD on OpenCL needs CLBlast, and this build has none "
                 "(install CLBlast and reconfigure)");
}

fa_status fa_cl_standard_forward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  *bytes = 0;
  return fa_cl_standard_forward(ctx, p);
}

#endif
