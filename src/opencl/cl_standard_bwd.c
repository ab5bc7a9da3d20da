/* FA_ALGO_STANDARD backward on OpenCL: the textbook gradients, with Sq x Sk matrices in device memory.
 *   S  = scale Q K^T, P = softmax(mask(S))   recomputed from q and k (lse is not needed: rows whose keys are
 *                                             all masked come out of the softmax as P = 0 directly)
 *   dV = P^T dO        dP = dO V^T        dS = P o (dP - Di), Di = rowsum(dO o O)
 *   dQ = scale dS K    dK = scale dS^T Q
 * Five batched SGEMMs through CLBlast in float32 workspace, with the layouts and padding of the forward
 * (cl_standard.c, cl_standard.h): per unit u = b * Hkv + kv_head, the M = g * Sq query rows of the group's
 * g = Hq / Hkv query heads. Because a unit's GEMMs run over all M rows, dK and dV come out already summed
 * over the query heads that share a kv head (GQA), with no atomics.
 *
 * CLBlast's fast path wants, in column-major terms, C = A B^T with A and B stored untransposed; copies
 * otherwise (of a whole score matrix, in buffers of its own). dV and dK use P and dS transposed, so they
 * are transposed here explicitly (fa_std_transpose) into a second score-sized region, which is needed anyway
 * for dP: the whole pass holds two Sq x Sk float32 matrices per unit, S and T, in this order:
 *   1  S = scale QT KT^T          softmax in place -> P
 *   2  T = P^T                    dV = T DOR^T            (dV in KT's place)
 *   3  T = dO V^T (DOT, VT)       S = P o (T - Di) = dS   (in place)
 *   4  dQ = scale S KR^T          (in QT's place)
 *   5  T = dS^T                   dK = scale T QR^T       (in VT's place)
 *   6  fa_std_unpack_bwd writes dq, dk and dv: the only launch that touches the caller's outputs.
 * q, k and dout are packed twice, transposed (X as column-major rows x D) and not (X^T), for the products
 * that read them from either side; v once. That is O(N d) beside the O(N^2 d) of the GEMMs. */
#include <stdio.h>

#include "cl_internal.h"
#include "config.h"

#if FA_HAVE_CLBLAST

#include "cl_standard.h"

#define ARG FA_STD_ARG

/* Transpose a score-sized region: src [u][sk_pad][m_pad] -> dst [u][m_pad][sk_pad]. */
static fa_status transpose(fa_context *ctx, cl_kernel kernel, cl_mem ws, const fa_cl_std_region *src,
                           const fa_cl_std_region *dst, const fa_cl_std_plan *pl) {
  int tile, rows;
  fa_cl_std_transpose_shape(ctx, &tile, &rows);
  cl_long s_off = (cl_long)(src->base / sizeof(float)), d_off = (cl_long)(dst->base / sizeof(float));
  cl_long nr = (cl_long)pl->sk_pad, nc = (cl_long)pl->m_pad;
  fa_cl_std_arg args[] = {ARG(ws), ARG(s_off), ARG(ws), ARG(d_off), ARG(nr), ARG(nc)};
  fa_status st = fa_cl_std_set_args(ctx, kernel, args, sizeof args / sizeof args[0], "fa_std_transpose");
  size_t global[3] = {pl->m_pad, pl->sk_pad / (size_t)tile * (size_t)rows, pl->units};
  size_t local[3] = {(size_t)tile, (size_t)rows, 1};
  if (st == FA_SUCCESS) st = fa_cl_launch(ctx, kernel, 3, global, local, "fa_std_transpose");
  return st;
}

/* Regions in workspace order. QT/QR, KT/KR, DOT/DOR: q, k, dout packed transposed / not; VT: v transposed;
 * S, T: the two score matrices; L: the softmax's lse (unused); D: Di. */
enum { QT, QR, KT, KR, VT, DOT, DOR, S, T, L, D, NREG };

static fa_status backward_plan(fa_context *ctx, const fa_problem *p, fa_cl_std_plan *pl, fa_cl_std_region *r) {
  fa_cl_std_shape(p, "fa_backward (standard)", pl);
  r[QT].unit = r[QR].unit = r[DOT].unit = r[DOR].unit = pl->d_pad * pl->m_pad;
  r[KT].unit = r[KR].unit = r[VT].unit = pl->d_pad * pl->sk_pad;
  fa_cl_std_mul(pl->sk_pad, pl->m_pad, &r[S].unit);
  r[T].unit = r[S].unit;
  r[L].unit = r[D].unit = pl->m_pad;
  return fa_cl_std_layout(ctx, p, pl, r, NREG);
}

fa_status fa_cl_standard_backward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  fa_cl_std_plan pl;
  fa_cl_std_region r[NREG];
  fa_status st = backward_plan(ctx, p, &pl, r);
  *bytes = st == FA_SUCCESS ? pl.bytes : 0;
  return st;
}

fa_status fa_cl_standard_backward(fa_context *ctx, const fa_problem *p) {
  fa_cl_std_plan pl;
  fa_cl_std_region r[NREG];
  fa_status st = backward_plan(ctx, p, &pl, r);
  if (st != FA_SUCCESS) return st;

  char options[128];
  fa_cl_std_options(ctx, p->dtype, options, sizeof options);
  cl_kernel k_pack, k_softmax, k_rowdot, k_dscore, k_transpose, k_unpack;
  st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_pack", &k_pack);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_softmax", &k_softmax);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_rowdot", &k_rowdot);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_dscore", &k_dscore);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_transpose", &k_transpose);
  if (st == FA_SUCCESS) st = fa_cl_kernel(ctx, "standard.cl", options, "fa_std_unpack_bwd", &k_unpack);
  if (st != FA_SUCCESS) return st;

  cl_mem ws;
  st = fa_cl_workspace(ctx, pl.bytes, &ws);
  if (st != FA_SUCCESS) return st;

  const cl_long mp = (cl_long)pl.m_pad, skp = (cl_long)pl.sk_pad, dp = (cl_long)pl.d_pad, g = (cl_long)pl.g;
  const cl_long sq = p->seqlen_q, sk = p->seqlen_k, hkv = p->heads_kv, d = p->head_dim;

  /* The last kernel's arguments first, so that nothing short of a failed launch can stop the call after its
   * first launch. dQ lands in QT's region, dK in VT's, dV in KT's. */
  {
    cl_long dq_ws = (cl_long)(r[QT].base / sizeof(float)), dk_ws = (cl_long)(r[VT].base / sizeof(float)),
            dv_ws = (cl_long)(r[KT].base / sizeof(float));
    cl_mem dq = fa_cl_mem(p->dq.buf), dk = fa_cl_mem(p->dk.buf), dv = fa_cl_mem(p->dv.buf);
    cl_long dq_off = p->dq.offset, qb = p->dq.stride[0], qs = p->dq.stride[1], qh = p->dq.stride[2];
    cl_long dk_off = p->dk.offset, kb = p->dk.stride[0], ks = p->dk.stride[1], kh = p->dk.stride[2];
    cl_long dv_off = p->dv.offset, vb = p->dv.stride[0], vs = p->dv.stride[1], vh = p->dv.stride[2];
    fa_cl_std_arg args[] = {ARG(ws), ARG(dq_ws),  ARG(dk_ws), ARG(dv_ws),  ARG(dq),  ARG(dq_off), ARG(qb),
                            ARG(qs), ARG(qh),     ARG(dk),    ARG(dk_off), ARG(kb),  ARG(ks),     ARG(kh),
                            ARG(dv), ARG(dv_off), ARG(vb),    ARG(vs),     ARG(vh),  ARG(mp),     ARG(skp),
                            ARG(dp), ARG(sq),     ARG(sk),    ARG(g),      ARG(hkv), ARG(d)};
    st = fa_cl_std_set_args(ctx, k_unpack, args, sizeof args / sizeof args[0], "fa_std_unpack_bwd");
  }

  /* Packs. q and dout have g heads per unit (M rows), k and v one. */
  const int64_t gq = (int64_t)pl.g;
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->q, ws, &r[QT], &pl, pl.m_pad, p->seqlen_q, gq, p, 1);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->q, ws, &r[QR], &pl, pl.m_pad, p->seqlen_q, gq, p, 0);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->k, ws, &r[KT], &pl, pl.sk_pad, p->seqlen_k, 1, p, 1);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->k, ws, &r[KR], &pl, pl.sk_pad, p->seqlen_k, 1, p, 0);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->v, ws, &r[VT], &pl, pl.sk_pad, p->seqlen_k, 1, p, 1);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->dout, ws, &r[DOT], &pl, pl.m_pad, p->seqlen_q, gq, p, 1);
  if (st == FA_SUCCESS) st = fa_cl_std_pack(ctx, k_pack, &p->dout, ws, &r[DOR], &pl, pl.m_pad, p->seqlen_q, gq, p, 0);

  /* Di from the caller's o and dout. */
  if (st == FA_SUCCESS) {
    cl_mem o = fa_cl_mem(p->o.buf), dout = fa_cl_mem(p->dout.buf);
    cl_long o_off = p->o.offset, ob = p->o.stride[0], os = p->o.stride[1], oh = p->o.stride[2];
    cl_long g_off = p->dout.offset, gb = p->dout.stride[0], gs = p->dout.stride[1], gh = p->dout.stride[2];
    cl_long d_off = (cl_long)(r[D].base / sizeof(float));
    fa_cl_std_arg args[] = {ARG(o),  ARG(o_off), ARG(ob),    ARG(os), ARG(oh), ARG(dout), ARG(g_off), ARG(gb), ARG(gs),
                            ARG(gh), ARG(ws),    ARG(d_off), ARG(mp), ARG(sq), ARG(g),    ARG(hkv),   ARG(d)};
    st = fa_cl_std_set_args(ctx, k_rowdot, args, sizeof args / sizeof args[0], "fa_std_rowdot");
    size_t global[2] = {pl.m_pad, pl.units};
    if (st == FA_SUCCESS) st = fa_cl_launch(ctx, k_rowdot, 2, global, NULL, "fa_std_rowdot");
  }

  /* 1: S = scale Q K^T (column-major m_pad x sk_pad), then P in place. */
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.m_pad, pl.sk_pad, pl.d_pad, p->scale, &r[QT], &r[KT], &r[S], "S = QK^T");
  if (st == FA_SUCCESS) st = fa_cl_std_softmax(ctx, k_softmax, ws, &r[S], &r[L], &pl, p);

  /* 2: dV (column-major sk_pad x d_pad) = P^T dO: A = T = P^T (sk_pad x m_pad), B = DOR read as d_pad x m_pad
   * (dO^T) and transposed. KT is free since GEMM 1. */
  if (st == FA_SUCCESS) st = transpose(ctx, k_transpose, ws, &r[S], &r[T], &pl);
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.sk_pad, pl.d_pad, pl.m_pad, 1.0f, &r[T], &r[DOR], &r[KT], "dV = P^T dO");

  /* 3: dP (m_pad x sk_pad) = dO V^T into T, then dS = P o (dP - Di) over P. */
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.m_pad, pl.sk_pad, pl.d_pad, 1.0f, &r[DOT], &r[VT], &r[T], "dP = dO V^T");
  if (st == FA_SUCCESS) {
    cl_long s_off = (cl_long)(r[S].base / sizeof(float)), t_off = (cl_long)(r[T].base / sizeof(float)),
            d_off = (cl_long)(r[D].base / sizeof(float));
    fa_cl_std_arg args[] = {ARG(ws), ARG(s_off), ARG(ws), ARG(t_off), ARG(ws), ARG(d_off), ARG(mp), ARG(skp)};
    st = fa_cl_std_set_args(ctx, k_dscore, args, sizeof args / sizeof args[0], "fa_std_dscore");
    size_t global[3] = {pl.m_pad, pl.sk_pad, pl.units};
    if (st == FA_SUCCESS) st = fa_cl_launch(ctx, k_dscore, 3, global, NULL, "fa_std_dscore");
  }

  /* 4: dQ (m_pad x d_pad) = scale dS K: B = KR read as d_pad x sk_pad (K^T) and transposed. QT is free. */
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.m_pad, pl.d_pad, pl.sk_pad, p->scale, &r[S], &r[KR], &r[QT], "dQ = dS K");

  /* 5: dK (sk_pad x d_pad) = scale dS^T Q: A = T = dS^T, B = QR read as d_pad x m_pad (Q^T) and transposed.
   * VT is free since GEMM 3. */
  if (st == FA_SUCCESS) st = transpose(ctx, k_transpose, ws, &r[S], &r[T], &pl);
  if (st == FA_SUCCESS)
    st = fa_cl_std_gemm(ctx, ws, &pl, pl.sk_pad, pl.d_pad, pl.m_pad, p->scale, &r[T], &r[QR], &r[VT], "dK = dS^T Q");

  /* 6: the outputs. */
  if (st == FA_SUCCESS) {
    size_t global[3] = {pl.m_pad > pl.sk_pad ? pl.m_pad : pl.sk_pad, pl.d_pad, pl.units};
    st = fa_cl_launch(ctx, k_unpack, 3, global, NULL, "fa_std_unpack_bwd");
  }
  /* As in the forward: a workspace the driver could not back is dropped, so the next call asks afresh. */
  if (st == FA_ERROR_OUT_OF_MEMORY) fa_cl_workspace_release(ctx);
  return st;
}

#else /* !FA_HAVE_CLBLAST */

fa_status fa_cl_standard_backward(fa_context *ctx, const fa_problem *p) {
  (void)p;
  return fa_fail(ctx, FA_ERROR_UNSUPPORTED,
                 "fa_backward: FA_ALGO_STANDARD on OpenCL needs CLBlast, and this build has none "
                 "(install CLBlast and reconfigure)");
}

fa_status fa_cl_standard_backward_workspace(fa_context *ctx, const fa_problem *p, size_t *bytes) {
  *bytes = 0;
  return fa_cl_standard_backward(ctx, p);
}

#endif
