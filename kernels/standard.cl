/* Standard attention (FA_ALGO_STANDARD) around CLBlast GEMMs: packing of q, k, v (and dout) into float32
 * workspace, the masked softmax of the score matrix, the write of o and lse; for the backward
 * (src/opencl/cl_standard_bwd.c) also Di, dS, a transpose and the write of dq, dk, dv. See src/opencl/cl_standard.c
 * for the workspace layout; in short, per unit u = b * Hkv + kv_head (a kv head and the g = Hq / Hkv query
 * heads that read it), with M = g * Sq query rows ordered (query head in group, query position):
 *   QT [u][d_pad][m_pad]   q transposed, zero padded   (GEMM 1's A, column-major m_pad x d_pad)
 *   KT [u][d_pad][sk_pad]  k transposed, zero padded   (GEMM 1's B, transposed)
 *   V  [u][sk_pad][d_pad]  v, zero padded               (GEMM 2's B, transposed)
 *   S  [u][sk_pad][m_pad]  scores, then probabilities   (GEMM 1's C, GEMM 2's A)
 *   OT [u][d_pad][m_pad]   o transposed, in QT's place  (GEMM 2's C)
 *   L  [u][m_pad]          lse of each row, until fa_std_unpack copies it out
 * Sizes and strides are 64-bit: a score matrix easily has more than 2^31 elements. */

/* Gather one operand into float32 workspace, zero padded.
 * src: [B, S, H, D] of this program's dtype at element offset `off` with strides sb, ss, sh (elements).
 * dst: transposed ? [u][d_pad][rows_pad] : [u][rows_pad][d_pad], rows = g * S, row r = (r / S)-th head of the
 *      unit's group at position r % S; head = kv_head * g + r / S. For k and v, g = 1.
 * Global size: (rows_pad, d_pad, units). */
__kernel void fa_std_pack(const __global fa_t *src, long off, long sb, long ss, long sh, __global float *dst,
                          long dst_off, long rows_pad, long d_pad, long seqlen, long g, long heads_kv, long head_dim,
                          int transposed) {
  const long r = get_global_id(0), d = get_global_id(1), u = get_global_id(2);
  float x = 0.0f;
  if (r < g * seqlen && d < head_dim) {
    const long b = u / heads_kv, h = (u % heads_kv) * g + r / seqlen, s = r % seqlen;
    x = fa_load(src, off + b * sb + s * ss + h * sh + d);
  }
  const long i = transposed ? (u * d_pad + d) * rows_pad + r : (u * rows_pad + r) * d_pad + d;
  dst[dst_off + i] = x;
}

/* The softmax below handles FA_STD_VEC neighbouring query rows per work-item with vector types: PoCL turns
 * them into SIMD code (it does not vectorise across work-items here, since each one loops over the keys),
 * while on a GPU FA_STD_VEC = 1 keeps one row per work-item and neighbouring work-items still read
 * neighbouring addresses. m_pad is a multiple of 128, so a vector never leaves its unit. */
#ifndef FA_STD_VEC
#define FA_STD_VEC 1
#endif
#define FA_CAT_(a, b) a##b
#define FA_CAT(a, b) FA_CAT_(a, b)
#if FA_STD_VEC == 1
typedef float fa_vf;
typedef int fa_vi;
#define FA_VLOAD(p) (*(p))
#define FA_VSTORE(x, p) (*(p) = (x))
#define FA_IOTA 0
#else
typedef FA_CAT(float, FA_STD_VEC) fa_vf;
typedef FA_CAT(int, FA_STD_VEC) fa_vi;
#define FA_VLOAD(p) FA_CAT(vload, FA_STD_VEC)(0, p)
#define FA_VSTORE(x, p) FA_CAT(vstore, FA_STD_VEC)(x, 0, p)
#if FA_STD_VEC == 2
#define FA_IOTA ((int2)(0, 1))
#elif FA_STD_VEC == 4
#define FA_IOTA ((int4)(0, 1, 2, 3))
#elif FA_STD_VEC == 8
#define FA_IOTA ((int8)(0, 1, 2, 3, 4, 5, 6, 7))
#elif FA_STD_VEC == 16
#define FA_IOTA ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#else
#error "FA_STD_VEC must be 1, 2, 4, 8 or 16"
#endif
#endif

/* Masked softmax over the keys of each query row, in place, and the row's log-sum-exp.
 * S: [u][sk_pad][m_pad] at element offset s_off: row i of unit u is the column S[u][.][i]. Keys j >= limit are
 * masked, limit = Sk, or with causal min(Sk, pos + Sk - Sq + 1) (bottom-right aligned), pos = i % Sq; masked
 * and padded keys get p = 0. A row with every key masked gets p = 0 and lse = -inf, so o = 0.
 * Padded rows (i >= g * Sq) are computed like the others: their scores are zeros, their results unused.
 * The scores already carry the softmax scale (GEMM 1's alpha). Global size: (m_pad / FA_STD_VEC, units). */
__kernel void fa_std_softmax(__global float *S, long s_off, __global float *L, long l_off, long m_pad, long sk_pad,
                             int seqlen_q, int seqlen_k, int causal) {
  const long i = get_global_id(0) * FA_STD_VEC, u = get_global_id(1);
  __global float *col = S + s_off + u * sk_pad * m_pad + i;
  const int pos = (int)(i % seqlen_q);
  /* per-row limits, and the largest of them for the loops (the vector may wrap into the next head) */
  fa_vi limit = (fa_vi)seqlen_k;
  int jmax = seqlen_k;
  if (causal) {
    const fa_vi p = ((fa_vi)pos + FA_IOTA) % (fa_vi)seqlen_q;
    limit = min((fa_vi)seqlen_k, p + (seqlen_k - seqlen_q + 1));
    const int last = pos + FA_STD_VEC - 1 >= seqlen_q ? seqlen_q - 1 : pos + FA_STD_VEC - 1;
    jmax = min(seqlen_k, last + seqlen_k - seqlen_q + 1);
  }

  fa_vf m = (fa_vf)FA_MAX_INIT; /* finite, so that x - m is never inf - inf */
  for (int j = 0; j < jmax; j++)
    m = select(m, fmax(m, FA_VLOAD(col + j * m_pad)), (fa_vi)j < limit);
  fa_vf l = (fa_vf)0.0f;
  for (int j = 0; j < jmax; j++)
    l += select((fa_vf)0.0f, exp(FA_VLOAD(col + j * m_pad) - m), (fa_vi)j < limit);
  const fa_vf inv = select((fa_vf)0.0f, (fa_vf)1.0f / l, limit > (fa_vi)0);
  for (int j = 0; j < jmax; j++) {
    __global float *x = col + j * m_pad;
    FA_VSTORE(select((fa_vf)0.0f, exp(FA_VLOAD(x) - m) * inv, (fa_vi)j < limit), x);
  }
  for (long j = jmax > 0 ? jmax : 0; j < sk_pad; j++) FA_VSTORE((fa_vf)0.0f, col + j * m_pad);
  FA_VSTORE(select((fa_vf)(-INFINITY), m + log(l), limit > (fa_vi)0), L + l_off + u * m_pad + i);
}

/* Write o (and lse) from the workspace: the only kernel that touches the caller's outputs, and the last
 * one enqueued, so that a failure anywhere before it leaves them unwritten.
 * OT: [u][d_pad][m_pad] at element offset ot_off; o: [B, Sq, Hq, D] at `o_off` with strides ob, os, oh;
 * L: [u][m_pad]; lse: [B, Hq, Sq] at lse_off with strides lb, lh, ls, written when has_lse.
 * Global size: (m_pad, d_pad, units). */
__kernel void fa_std_unpack(const __global float *OT, long ot_off, const __global float *L, long l_off,
                            __global fa_t *o, long o_off, long ob, long os, long oh, __global float *lse, long lse_off,
                            long lb, long lh, long ls, int has_lse, long m_pad, long d_pad, long seqlen_q, long g,
                            long heads_kv, long head_dim) {
  const long i = get_global_id(0), d = get_global_id(1), u = get_global_id(2);
  if (i >= g * seqlen_q || d >= head_dim) return;
  const long b = u / heads_kv, h = (u % heads_kv) * g + i / seqlen_q, s = i % seqlen_q;
  fa_store(o, o_off + b * ob + s * os + h * oh + d, OT[ot_off + (u * d_pad + d) * m_pad + i]);
  if (has_lse && d == 0) lse[lse_off + b * lb + h * lh + s * ls] = L[l_off + u * m_pad + i];
}

/* ---- backward (src/opencl/cl_standard_bwd.c) ----
 * Per unit, besides the packs: S [u][sk_pad][m_pad] holds P, then dS; T [u][sk_pad][m_pad] (same size) holds
 * the transposes and dP; D [u][m_pad] holds Di = rowsum(dO o O). */

/* Di of each query row, from the caller's o and dout: the softmax term of dS = P o (dP - Di).
 * o, dout: [B, Sq, Hq, D] at their offsets with strides (b, s, h). D: [u][m_pad] at d_off; padded rows get 0.
 * Global size: (m_pad, units). */
__kernel void fa_std_rowdot(const __global fa_t *o, long o_off, long ob, long os, long oh, const __global fa_t *dout,
                            long g_off, long gb, long gs, long gh, __global float *D, long d_off, long m_pad,
                            long seqlen_q, long g, long heads_kv, long head_dim) {
  const long i = get_global_id(0), u = get_global_id(1);
  float acc = 0.0f;
  if (i < g * seqlen_q) {
    const long b = u / heads_kv, h = (u % heads_kv) * g + i / seqlen_q, s = i % seqlen_q;
    const long at_o = o_off + b * ob + s * os + h * oh, at_g = g_off + b * gb + s * gs + h * gh;
    for (long d = 0; d < head_dim; d++) acc += fa_load(dout, at_g + d) * fa_load(o, at_o + d);
  }
  D[d_off + u * m_pad + i] = acc;
}

/* dS = P o (dP - Di), in place over P. S (P) and T (dP): [u][sk_pad][m_pad]; D: [u][m_pad]. Masked and padded
 * entries have P = 0, so they get dS = 0. Global size: (m_pad, sk_pad, units). */
__kernel void fa_std_dscore(__global float *S, long s_off, const __global float *T, long t_off,
                            const __global float *D, long d_off, long m_pad, long sk_pad) {
  const long i = get_global_id(0), j = get_global_id(1), u = get_global_id(2);
  const long at = (u * sk_pad + j) * m_pad + i;
  S[s_off + at] *= T[t_off + at] - D[d_off + u * m_pad + i];
}

/* dst[u][c][r] = src[u][r][c] for rows x cols matrices, through a tile in local memory so that both the reads
 * and the writes are contiguous along dim 0. rows and cols are multiples of FA_TR_TILE (they are padded to
 * 128). Work-group (FA_TR_TILE, FA_TR_ROWS); global size (cols, rows / FA_TR_TILE * FA_TR_ROWS, units). */
#ifndef FA_TR_TILE
#define FA_TR_TILE 32
#endif
#ifndef FA_TR_ROWS
#define FA_TR_ROWS 8
#endif
__kernel void fa_std_transpose(const __global float *src, long src_off, __global float *dst, long dst_off, long rows,
                               long cols) {
  __local float tile[FA_TR_TILE][FA_TR_TILE + 1]; /* + 1: the column reads below hit distinct banks */
  const int tx = get_local_id(0), ty = get_local_id(1);
  const long c0 = (long)get_group_id(0) * FA_TR_TILE, r0 = (long)get_group_id(1) * FA_TR_TILE, u = get_global_id(2);
  const __global float *s = src + src_off + u * rows * cols;
  __global float *d = dst + dst_off + u * rows * cols;
  for (int y = ty; y < FA_TR_TILE; y += FA_TR_ROWS) tile[y][tx] = s[(r0 + y) * cols + c0 + tx];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int y = ty; y < FA_TR_TILE; y += FA_TR_ROWS) d[(c0 + y) * rows + r0 + tx] = tile[tx][y];
}

/* Write dq, dk and dv from the workspace in one launch, the last one enqueued: a failure anywhere before it
 * leaves every output unwritten. dQT: [u][d_pad][m_pad] at dq_ws; dKT, dVT: [u][d_pad][sk_pad] at dk_ws, dv_ws
 * (column-major rows x D, the GEMMs' C). dq: [B, Sq, Hq, D]; dk, dv: [B, Sk, Hkv, D], each at its offset with
 * strides (b, s, h). With GQA the GEMMs have already summed dk and dv over the group's query heads.
 * Global size: (max(m_pad, sk_pad), d_pad, units). */
__kernel void fa_std_unpack_bwd(const __global float *W, long dq_ws, long dk_ws, long dv_ws, __global fa_t *dq,
                                long dq_off, long qb, long qs, long qh, __global fa_t *dk, long dk_off, long kb, long ks,
                                long kh, __global fa_t *dv, long dv_off, long vb, long vs, long vh, long m_pad,
                                long sk_pad, long d_pad, long seqlen_q, long seqlen_k, long g, long heads_kv,
                                long head_dim) {
  const long i = get_global_id(0), d = get_global_id(1), u = get_global_id(2);
  if (d >= head_dim) return;
  const long b = u / heads_kv, kv = u % heads_kv;
  if (i < g * seqlen_q) {
    const long h = kv * g + i / seqlen_q, s = i % seqlen_q;
    fa_store(dq, dq_off + b * qb + s * qs + h * qh + d, W[dq_ws + (u * d_pad + d) * m_pad + i]);
  }
  if (i < seqlen_k) {
    const long at = (u * d_pad + d) * sk_pad + i;
    fa_store(dk, dk_off + b * kb + i * ks + kv * kh + d, W[dk_ws + at]);
    fa_store(dv, dv_off + b * vb + i * vs + kv * vh + d, W[dv_ws + at]);
  }
}
