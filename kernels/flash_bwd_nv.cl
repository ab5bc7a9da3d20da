/* Backward attention on NVIDIA tensor cores from OpenCL C (inline PTX mma.sync.m16n8k16, kernels/nv_warp.cl),
 * FlashAttention-2's ordering with the separate dQ pass: no atomics, a fixed summation order, so every call is
 * deterministic. Same tensors and semantics as kernels/flash_bwd.cl:
 *
 *   q, o, dout, dq [B, Sq, Hq, D]; k, v, dk, dv [B, Sk, Hkv, D] (f16 or bf16); lse [B, Hq, Sq] float32 (natural
 *   log); ws: float32 workspace, Di [B, Hq, Sq] at di_off. Query head h reads kv head h / group. Causal
 *   (bottom-right): key j masked for query i when j > i + Sk - Sq. S = scale Q K^T, P = exp(S - lse),
 *   dV = P^T dO, dP = dO V^T, Di = rowsum(dO o O), dS = P o (dP - Di), dK = scale dS^T Q, dQ = scale dS K.
 *   A row with lse = -inf (or past Sq) and a key past Sk or above the causal limit get P = 0 by a select.
 *
 * Kernels, launched in this order by src/opencl/cl_backward_nv.c (groups of 128 work-items = 4 warps):
 *   flash_bwd_nv_pre   Di, one warp per row. Grid (ceil(Sq / 4) * 128, Hq, B).
 *   flash_bwd_nv_dkdv  one group per (BLOCK_KEYS = 64 keys, kv head, batch); warp w owns keys 16 w .. 16 w + 15:
 *                      their K and V as mma A fragments and their dK, dV accumulators in registers (above D 128,
 *                      32 keys per group, warps 2 i and 2 i + 1 owning keys 16 i .. 16 i + 15 and one half of
 *                      the head dim each: NSPLIT below). It walks the BLOCK_M-
 *                      query blocks of every query head of the GQA group (dK and dV sum over the group without
 *                      atomics), skipping those the causal mask hides; per block, Q and dO are in local memory
 *                      row-major (B operands of S^T = K Q^T and dP^T = V dO^T as they are, of dV += P^T dO and
 *                      dK += dS^T Q transposed by the loads), with lse and Di. Grid (ceil(Sk / BLOCK_KEYS) * 128, Hkv, B).
 *   flash_bwd_nv_dq    one group per (BLOCK_ROWS = 64 queries, head, batch), warp w owning 16 of them (above
 *                      D 128: 32 queries, a pair of warps sharing 16 by halves of the head dim): Q and dO as A
 *                      fragments, dQ accumulators in registers; per BLOCK_N-key tile K, V row-major (B operands
 *                      of S = Q K^T, dP = dO V^T; K transposed by the loads for dQ += dS K) in local memory,
 *                      S and dP recomputed (7 matrix products in all instead of 5). Grid (ceil(Sq / BLOCK_ROWS)
 *                      * 128, Hq, B).
 * P and dS are rounded to the storage type before their products, as in FlashAttention-2; accumulation and
 * the softmax are float32. The fragment layouts are flash_fwd_nv.cl's (an accumulator pair of n-tiles is an A
 * fragment); B fragments come through kernels/nv_warp.cl's FRAG_B / FRAG_BT (ldmatrix, or local loads) from
 * rows padded by 8 elements (conflict-free), tiles through nv_fetch / nv_put (cp.async, registers, or element
 * by element).
 *
 * Defines: FA_DTYPE (1 f16, 2 bf16), HEAD_DIM (multiple of 8, <= 256), BLOCK_M and BLOCK_N (16, 32 or 64:
 * the host picks the largest that fits the local memory), FA_ALIGNED (1: offsets and row strides of q, k, v,
 * dout are multiples of 8 elements: 16-byte tile loads), FA_NV_LDMATRIX, FA_NV_CPASYNC, FA_NV_EMULATE
 * (kernels/nv_warp.cl), FA_BLOCK_MASK,
 * FA_DROPOUT (0 or 1, kernels/masks.h before this file): as flash_bwd.cl, each (query block, key block) tile
 * classified with fa_block_tile (a uniform value): SKIP tiles are neither loaded nor computed, PARTIAL ones
 * test fa_block_keep per score; dropout takes the forward's keep bits Z (fa_dropout_words) and s = 1/(1-p):
 * dV uses P Z s, dS = P (dP Z s - Di).
 * FA_INFER (0 or 1, not with the two above; kernels/nv_warp.cl): the inference options of kernels/masks.h, their
 * arguments after the walk's, as flash_bwd.cl's. Varlen: the grid's dimension 2 counts sequences; a group takes
 * its sequence's span and leaves when its block starts past it (Di's rows are the token axis's, as
 * flash_bwd_nv_pre writes them). The band bounds both walks: flash_bwd_nv_dkdv visits only the query blocks
 * whose rows see one of its keys (fa_band_rows), flash_bwd_nv_dq only the key tiles of its rows' band;
 * fa_band_tile spares FULL tiles the per-score test. Softcap and ALiBi modify the base-2 scores before
 * P = exp2(s - lse2), and softcap's factor 1 - tanh^2 multiplies dS. */

#if FA_DTYPE != 1 && FA_DTYPE != 2
#error "flash_bwd_nv needs FA_DTYPE 1 (f16) or 2 (bf16)"
#endif
#ifndef FA_BLOCK_MASK
#define FA_BLOCK_MASK 0
#endif
#ifndef FA_DROPOUT
#define FA_DROPOUT 0
#endif
#if BLOCK_M % 16 != 0 || BLOCK_M > 64 || BLOCK_N % 16 != 0 || BLOCK_N > 64
#error "BLOCK_M and BLOCK_N must be 16, 32 or 64"
#endif

#define BM BLOCK_M
#define BN BLOCK_N
/* Above D 128 the head dim is split between the two warps of a pair (NSPLIT 2): each holds the operands and
 * accumulators of its half (DH columns), so that D 256 fits the registers as D 128 does; the partial S and dP
 * of the two halves are summed through local memory (nv_pair_sum), so that both warps hold the whole scores
 * without computing anything twice. A group then covers 32 keys (dkdv) or queries (dq) instead of 64. */
#define NSPLIT (DP > 128 ? 2 : 1)
#define DH (DP / NSPLIT)
#define BLOCK_KEYS (64 / NSPLIT) /* flash_bwd_nv_dkdv's keys per group */
#define BLOCK_ROWS (64 / NSPLIT) /* flash_bwd_nv_dq's queries per group */

#if NSPLIT > 1
/* a[0 .. nt) and b[0 .. nt) (nt n-tiles of 4 accumulators, nt even) plus the same of the partner warp
 * (warp ^ 1), in rounds of two n-tiles of each through xch (4 warps x 16 words x 32 lanes); both warps end
 * with the same sums (x + y = y + x). Uniform control flow: barriers. */
static inline void nv_pair_sum(float a[][4], float b[][4], int nt, __local float *xch) {
  const int lane = get_local_id(0) & 31, warp = get_local_id(0) >> 5;
NV_UNROLL
  for (int r = 0; r < nt; r += 2) {
NV_UNROLL
    for (int e = 0; e < 8; e++) {
      xch[(warp * 16 + e) * 32 + lane] = a[r + (e >> 2)][e & 3];
      xch[(warp * 16 + 8 + e) * 32 + lane] = b[r + (e >> 2)][e & 3];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
NV_UNROLL
    for (int e = 0; e < 8; e++) {
      a[r + (e >> 2)][e & 3] += xch[((warp ^ 1) * 16 + e) * 32 + lane];
      b[r + (e >> 2)][e & 3] += xch[((warp ^ 1) * 16 + 8 + e) * 32 + lane];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
}
#define NV_XCH_DECL __local float xch[4 * 16 * 32];
#else
#define NV_XCH_DECL
#endif

/* The arguments after scale_log2, in cl_backward.c's arg_walk order: the block mask, then dropout. */
#if FA_BLOCK_MASK
#define FA_BMASK_ARGS                                                                                            \
  , __global const uchar *bmask, long bm_off, long bm_sb, long bm_sh, long bm_sr, long bm_sc, int block_q,      \
      int block_k
#else
#define FA_BMASK_ARGS
#endif
#if FA_DROPOUT
#define FA_DROP_ARGS , ulong drop_seed, uint drop_offset, uint drop_threshold, float drop_scale
#else
#define FA_DROP_ARGS
#endif

/* A 16-bit view: buffer, element offset, batch / sequence / head strides. */
#define VIEW(T, name) __global T *name, long name##_off, long name##_sb, long name##_ss, long name##_sh

__kernel __attribute__((reqd_work_group_size(NTHREADS, 1, 1))) void
flash_bwd_nv_pre(VIEW(const fa_t, o), VIEW(const fa_t, dout), __global float *ws, long di_off, int Sq, int Hq) {
#if FA_NV_EMULATE
  __local uint emul[NTHREADS * 6];
#endif
  const int lane = get_local_id(0) & 31;
  const int i = get_group_id(0) * (NTHREADS / 32) + (get_local_id(0) >> 5);
  const int h = get_group_id(1), b = get_group_id(2);
  float acc = 0.0f;
  if (i < Sq) {
    const long ob = o_off + b * o_sb + h * o_sh + (long)i * o_ss;
    const long gb = dout_off + b * dout_sb + h * dout_sh + (long)i * dout_ss;
    for (int d = lane; d < HEAD_DIM; d += 32) acc = fma(fa_load(o, ob + d), fa_load(dout, gb + d), acc);
  }
  /* Every warp reduces, rows past Sq too: the emulated shuffle holds barriers. */
  for (int m = 16; m > 0; m >>= 1) acc += SHFL_XOR(acc, m);
  if (i < Sq && lane == 0) ws[di_off + ((long)b * Hq + h) * Sq + i] = acc;
}

__kernel __attribute__((reqd_work_group_size(NTHREADS, 1, 1))) void
flash_bwd_nv_dkdv(VIEW(const ushort, q), VIEW(const ushort, k), VIEW(const ushort, v), VIEW(const ushort, dout),
                  VIEW(fa_t, dk), VIEW(fa_t, dv), __global const float *lse, long l_off, long l_sb, long l_sh,
                  long l_ss, __global const float *ws, long di_off, int Sq_all, int Sk_all, int Hq, int group,
                  int causal, float scale, float scale_log2 FA_BMASK_ARGS FA_DROP_ARGS FA_INFER_ARGS) {
  /* Q, dO row-major; uint4 so that 16-byte accesses are aligned. lse2 (+inf: no key seen) and Di of the
   * block's rows. */
  __local uint4 tiles4[2 * BM * DS / 8];
  __local float srow[2 * BM];
  __local ushort *sq = (__local ushort *)tiles4, *sdo = sq + BM * DS;
  uint4 st[NV_STAGED(BM)]; /* staging registers (FA_ALIGNED without cp.async) */
  NV_XCH_DECL
#if FA_NV_EMULATE
  __local uint emul[NTHREADS * 6];
#endif
  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int k0 = get_group_id(0) * BLOCK_KEYS, hk = get_group_id(1), b = get_group_id(2);
  const int kw = k0 + warp / NSPLIT * 16; /* this warp's first key */
  const int c0 = warp % NSPLIT * DH;      /* and its first column */
  NV_SEQ_SETUP(b)
#if FA_INFER
  if (k0 >= Sk) return; /* varlen: past this sequence's keys (the whole group) */
#endif
  const long diag = (long)Sk - Sq;

  uint kf[DH / 16][4], vf[DH / 16][4];
  nv_a_frags(kf, DH / 16, c0, k, k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss, k_ss, kw, Sk);
  nv_a_frags(vf, DH / 16, c0, v, v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss, v_ss, kw, Sk);
  float dka[DH / 8][4], dva[DH / 8][4];
NV_UNROLL
  for (int nd = 0; nd < DH / 8; nd++)
NV_UNROLL
    for (int e = 0; e < 4; e++) dka[nd][e] = dva[nd][e] = 0.0f;

  /* Rows before k0 - diag see no key of this block: start at the query block holding that row (with
   * FA_INFER, the rows [qstart, qend) of the band that see one of the block's keys). */
  int qstart = 0, qend = Sq;
#if FA_INFER
  fa_band_rows(k0, min(k0 + BLOCK_KEYS, Sk), Sq, Sk, causal, wl, wr, &qstart, &qend);
  qstart -= qstart % BM;
#else
  if (causal) {
    const long first = (long)k0 - diag;
    qstart = first < 0 ? 0 : first > Sq ? Sq : (int)first;
    qstart -= qstart % BM;
  }
#endif
  for (int gi = 0; gi < group; gi++) {
    const int h = hk * group + gi;
    const long qb = q_off + bt * q_sb + h * q_sh + (long)qfirst * q_ss;
    const long gb = dout_off + bt * dout_sb + h * dout_sh + (long)qfirst * dout_ss;
#if FA_INFER
    const float slope2 = NV_SLOPE2(b, h);
#endif
#if FA_BLOCK_MASK
    const __global uchar *mh = bmask + bm_off + b * bm_sb + h * bm_sh;
#endif
#if FA_DROPOUT
    const uint bh = (uint)(b * Hq + h);
#endif
    for (int q0 = qstart; q0 < qend; q0 += BM) {
#if FA_INFER
      /* The same value in every work-item. */
      const int tile = fa_band_tile(q0, min(q0 + BM, Sq), k0, k0 + BLOCK_KEYS, Sq, Sk, causal, wl, wr);
#endif
#if FA_BLOCK_MASK
      /* The same value in every work-item: a skipped tile skips its barriers uniformly. */
      const int tile = fa_block_tile(mh, bm_sr, bm_sc, block_q, block_k, q0, min(q0 + BM, Sq), k0,
                                     min(k0 + BLOCK_KEYS, Sk));
      if (tile == FA_TILE_SKIP) continue;
#endif
      const int valid = min(BM, Sq - q0);
      barrier(CLK_LOCAL_MEM_FENCE); /* the previous block's readers are done */
      nv_fetch(st, sq, q, qb + (long)q0 * q_ss, q_ss, BM, valid);
      nv_put(st, sq, q, qb + (long)q0 * q_ss, q_ss, BM, valid);
      nv_fetch(st, sdo, dout, gb + (long)q0 * dout_ss, dout_ss, BM, valid);
      nv_put(st, sdo, dout, gb + (long)q0 * dout_ss, dout_ss, BM, valid);
      for (int r = lid; r < BM; r += NTHREADS) {
        float l2 = INFINITY, di = 0.0f;
        if (r < valid) {
          const float x = lse[l_off + bt * l_sb + h * l_sh + (long)(qfirst + q0 + r) * l_ss];
          if (x != -INFINITY) l2 = x * FA_LOG2E;
          di = ws[di_off + ((long)bt * Hq + h) * Sq_all + qfirst + q0 + r];
        }
        srow[r] = l2, srow[BM + r] = di;
      }
      barrier(CLK_LOCAL_MEM_FENCE);
      /* This lane's fragment pointers: Q, dO as B operands with n = query (S^T, dP^T) and k = query (dK, dV). */
      const __local ushort *qb_l = NV_LANE_B(sq), *ob_l = NV_LANE_B(sdo);
      const __local ushort *qt_l = NV_LANE_BT(sq), *ot_l = NV_LANE_BT(sdo);

      for (int c = 0; c < BM / 16; c++) {
        /* S^T and dP^T for the warp's 16 keys x queries 16 c .. 16 c + 15 (n-tiles 0 and 1):
         * B[k][n] = Q[query n][d k], dO[query n][d k]. */
        float sct[2][4], dpt[2][4];
NV_UNROLL
        for (int nt = 0; nt < 2; nt++)
NV_UNROLL
          for (int e = 0; e < 4; e++) sct[nt][e] = dpt[nt][e] = 0.0f;
NV_UNROLL
        for (int kk = 0; kk < DH / 16; kk++) {
          uint bq[4], bo[4];
          FRAG_B(bq, qb_l, c * 16, c0 + kk * 16);
          FRAG_B(bo, ob_l, c * 16, c0 + kk * 16);
          MMA(sct[0], kf[kk], bq[0], bq[1]);
          MMA(sct[1], kf[kk], bq[2], bq[3]);
          MMA(dpt[0], vf[kk], bo[0], bo[1]);
          MMA(dpt[1], vf[kk], bo[2], bo[3]);
        }
#if NSPLIT > 1
        nv_pair_sum(sct, dpt, 2, xch); /* this half's partial products plus the partner's */
#endif
#if FA_DROPOUT
        /* The keep bits of this lane's 8 scores, bit 4 nt + e (flash_bwd.cu's flash_bwd_dkdv_tc does the
         * same): masks.h groups scores (i, j), (i, j + 1), (i + 8, j), (i + 8, j + 1) (i % 16 < 8, j even)
         * under one Philox call; this lane holds queries i = q0 + 16 c + 2 t + x (x = 0, 1) and i + 8 for
         * keys kw + g and kw + g + 8, the lane across g ^ 1 (lane ^ 4) the other key of each pair. Each lane
         * of the pair draws the groups of x = g & 1 and hands its partner the words of the partner's key. */
        uint zbits = 0;
        {
          const uint par = (uint)g & 1u;
          for (int kh = 0; kh < 2; kh++) {
            uint w[4];
            fa_dropout_words(drop_seed, drop_offset, bh, (uint)(q0 + c * 16 + 2 * t) + par, (uint)(kw + g + 8 * kh),
                             w);
            const uint own0 = par ? w[1] : w[0], own1 = par ? w[3] : w[2];
            const uint give0 = par ? w[0] : w[1], give1 = par ? w[2] : w[3];
            const uint got0 = SHFL_XOR_U(give0, 4), got1 = SHFL_XOR_U(give1, 4);
            const int eo = (int)par + 2 * kh, ep = (int)(par ^ 1u) + 2 * kh;
            zbits |= (uint)(own0 >= drop_threshold) << eo;
            zbits |= (uint)(own1 >= drop_threshold) << (4 + eo);
            zbits |= (uint)(got0 >= drop_threshold) << ep;
            zbits |= (uint)(got1 >= drop_threshold) << (4 + ep);
          }
        }
#endif
        /* P^T and dS^T: element e of n-tile nt is key kw + g + 8 (e / 2), query 16 c + 8 nt + 2 t + e % 2. */
NV_UNROLL
        for (int nt = 0; nt < 2; nt++)
NV_UNROLL
          for (int e = 0; e < 4; e++) {
            const int r = c * 16 + nt * 8 + 2 * t + (e & 1);
            const long key = kw + g + 8 * (e >> 1);
            const float l2 = srow[r];
#if FA_INFER
            /* The modified score; P zero outside the band of query q0 + r; dS takes softcap's factor. */
            float gf;
            const float x = nv_mod_score(sct[nt][e] * scale_log2, softcap2, slope2, (long)(q0 + r) + diag, (int)key, &gf);
            const int visible = l2 != INFINITY && (tile == FA_TILE_FULL || (key >= fa_band_lo(q0 + r, Sq, Sk, wl) &&
                                                                          key < fa_band_hi(q0 + r, Sq, Sk, causal, wr)));
            const float pe = visible ? EXP2(x - l2) : 0.0f;
            sct[nt][e] = pe;
            dpt[nt][e] = pe * (dpt[nt][e] - srow[BM + r]) * gf;
#else
            long last = (long)Sk - 1; /* the last key query q0 + r sees */
            if (causal) last = min(last, (long)(q0 + r) + diag);
            int visible = l2 != INFINITY && key <= last;
#if FA_BLOCK_MASK
            if (visible && tile == FA_TILE_PARTIAL)
              visible = fa_block_keep(mh, bm_sr, bm_sc, block_q, block_k, q0 + r, (int)key);
#endif
            const float pe = visible ? EXP2(sct[nt][e] * scale_log2 - l2) : 0.0f;
#if FA_DROPOUT
            const int z = (zbits >> (4 * nt + e)) & 1u;
            sct[nt][e] = z ? pe * drop_scale : 0.0f;
            dpt[nt][e] = pe * ((z ? dpt[nt][e] * drop_scale : 0.0f) - srow[BM + r]);
#else
            sct[nt][e] = pe;
            dpt[nt][e] = pe * (dpt[nt][e] - srow[BM + r]);
#endif
#endif
          }
        uint ap[4], as[4];
        ap[0] = pack2(sct[0][0], sct[0][1]), ap[1] = pack2(sct[0][2], sct[0][3]);
        ap[2] = pack2(sct[1][0], sct[1][1]), ap[3] = pack2(sct[1][2], sct[1][3]);
        as[0] = pack2(dpt[0][0], dpt[0][1]), as[1] = pack2(dpt[0][2], dpt[0][3]);
        as[2] = pack2(dpt[1][0], dpt[1][1]), as[3] = pack2(dpt[1][2], dpt[1][3]);
        /* dV += P^T dO, dK += dS^T Q over these 16 queries: B[k][n] = dO[query k][d n] = dO^T[n][k]. */
NV_UNROLL
        for (int nd = 0; nd < DH / 8; nd += 2) {
          uint bo[4], bq[4];
          FRAG_BT(bo, ot_l, c * 16, c0 + nd * 8);
          FRAG_BT(bq, qt_l, c * 16, c0 + nd * 8);
          MMA(dva[nd], ap, bo[0], bo[1]);
          MMA(dva[nd + 1], ap, bo[2], bo[3]);
          MMA(dka[nd], as, bq[0], bq[1]);
          MMA(dka[nd + 1], as, bq[2], bq[3]);
        }
      }
    }
  }

  /* dk = scale dS^T Q, dv = P^T dO, summed over the group; keys past Sk are not written. */
NV_UNROLL
  for (int hh = 0; hh < 2; hh++) {
    const int j = kw + g + 8 * hh;
    if (j < Sk) {
      const long kb = dk_off + bt * dk_sb + hk * dk_sh + (long)(kfirst + j) * dk_ss;
      const long vb = dv_off + bt * dv_sb + hk * dv_sh + (long)(kfirst + j) * dv_ss;
NV_UNROLL
      for (int nd = 0; nd < DH / 8; nd++)
        if (c0 + nd * 8 < HEAD_DIM) {
          const int col = c0 + nd * 8 + 2 * t;
          fa_store(dk, kb + col, dka[nd][2 * hh] * scale);
          fa_store(dk, kb + col + 1, dka[nd][2 * hh + 1] * scale);
          fa_store(dv, vb + col, dva[nd][2 * hh]);
          fa_store(dv, vb + col + 1, dva[nd][2 * hh + 1]);
        }
    }
  }
}

__kernel __attribute__((reqd_work_group_size(NTHREADS, 1, 1))) void
flash_bwd_nv_dq(VIEW(const ushort, q), VIEW(const ushort, k), VIEW(const ushort, v), VIEW(const ushort, dout),
                VIEW(fa_t, dq), __global const float *lse, long l_off, long l_sb, long l_sh, long l_ss,
                __global const float *ws, long di_off, int Sq_all, int Sk_all, int Hq, int group, int causal,
                float scale, float scale_log2 FA_BMASK_ARGS FA_DROP_ARGS FA_INFER_ARGS) {
  /* K, V row-major. */
  __local uint4 tiles4[2 * BN * DS / 8];
  __local ushort *sk = (__local ushort *)tiles4, *sv = sk + BN * DS;
  uint4 st[NV_STAGED(BN)]; /* staging registers (FA_ALIGNED without cp.async) */
  NV_XCH_DECL
#if FA_NV_EMULATE
  __local uint emul[NTHREADS * 6];
#endif
  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int g = lane >> 2, t = lane & 3;
  /* Causal groups further down have more keys: start those first so that the tail of the grid is short. */
  const int mb = causal ? (int)(get_num_groups(0) - 1 - get_group_id(0)) : (int)get_group_id(0);
  const int h = get_group_id(1), b = get_group_id(2), hk = h / group;
  const int m0 = mb * BLOCK_ROWS, mw = m0 + warp / NSPLIT * 16, row0 = mw + g; /* this warp's rows */
  const int c0 = warp % NSPLIT * DH;                                            /* and first column */
  NV_SEQ_SETUP(b)
#if FA_INFER
  if (m0 >= Sq) return; /* varlen: past this sequence's rows (the whole group) */
  const float slope2 = NV_SLOPE2(b, h);
#endif
  const long diag = (long)Sk - Sq;
  const long kb = k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss;
  const long vb = v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss;
#if FA_BLOCK_MASK
  const __global uchar *mh = bmask + bm_off + b * bm_sb + h * bm_sh;
#endif
#if FA_DROPOUT
  const uint bh = (uint)(b * Hq + h);
#endif

  uint qf[DH / 16][4], of[DH / 16][4];
  nv_a_frags(qf, DH / 16, c0, q, q_off + bt * q_sb + h * q_sh + (long)qfirst * q_ss, q_ss, mw, Sq);
  nv_a_frags(of, DH / 16, c0, dout, dout_off + bt * dout_sb + h * dout_sh + (long)qfirst * dout_ss, dout_ss, mw, Sq);
  /* lse2 (+inf: no key seen, or past Sq) and Di of rows row0 and row0 + 8 (with FA_INFER, and their bands). */
  float l2[2], di[2];
#if FA_INFER
  int klo[2], khi[2];
#endif
  for (int rr = 0; rr < 2; rr++) {
    const int row = row0 + 8 * rr;
    l2[rr] = INFINITY, di[rr] = 0.0f;
    if (row < Sq) {
      const float x = lse[l_off + bt * l_sb + h * l_sh + (long)(qfirst + row) * l_ss];
      if (x != -INFINITY) l2[rr] = x * FA_LOG2E;
      di[rr] = ws[di_off + ((long)bt * Hq + h) * Sq_all + qfirst + row];
    }
#if FA_INFER
    klo[rr] = fa_band_lo(row, Sq, Sk, wl), khi[rr] = fa_band_hi(row, Sq, Sk, causal, wr);
#endif
  }
  float dqa[DH / 8][4];
NV_UNROLL
  for (int nd = 0; nd < DH / 8; nd++) dqa[nd][0] = dqa[nd][1] = dqa[nd][2] = dqa[nd][3] = 0.0f;

  /* Key tiles j0 .. n_tiles - 1 the block needs: up to the last row's causal limit (with FA_INFER, the band of
   * the block's rows); none when every row is masked. */
#if FA_INFER
  const int qlast = min(m0 + BLOCK_ROWS, Sq);
  const int j0 = fa_band_lo(m0, Sq, Sk, wl) / BN, kend = fa_band_hi(qlast - 1, Sq, Sk, causal, wr);
  const int n_tiles = kend <= j0 * BN ? j0 : (kend + BN - 1) / BN;
#else
  const int j0 = 0;
  long max_key = (long)Sk - 1;
  if (causal) max_key = min(max_key, (long)min(m0 + BLOCK_ROWS, Sq) - 1 + diag);
  const int n_tiles = max_key < 0 ? 0 : (int)(max_key / BN) + 1;
#endif
  for (int j = j0; j < n_tiles; j++) {
    const int n0 = j * BN;
#if FA_INFER
    const int tile = fa_band_tile(m0, qlast, n0, n0 + BN, Sq, Sk, causal, wl, wr); /* uniform */
#endif
#if FA_BLOCK_MASK
    const int tile = fa_block_tile(mh, bm_sr, bm_sc, block_q, block_k, m0, min(m0 + BLOCK_ROWS, Sq), n0,
                                   min(n0 + BN, Sk));
    if (tile == FA_TILE_SKIP) continue;
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile's readers are done */
    nv_fetch(st, sk, k, kb + (long)n0 * k_ss, k_ss, BN, min(BN, Sk - n0));
    nv_put(st, sk, k, kb + (long)n0 * k_ss, k_ss, BN, min(BN, Sk - n0));
    nv_fetch(st, sv, v, vb + (long)n0 * v_ss, v_ss, BN, min(BN, Sk - n0));
    nv_put(st, sv, v, vb + (long)n0 * v_ss, v_ss, BN, min(BN, Sk - n0));
    barrier(CLK_LOCAL_MEM_FENCE);
    const __local ushort *kb_l = NV_LANE_B(sk), *vb_l = NV_LANE_B(sv), *kt_l = NV_LANE_BT(sk);

    /* S = Q K^T and dP = dO V^T for the warp's 16 rows: B[k][n] = K[key n][d k], V[key n][d k]. */
    float s[BN / 8][4], dp[BN / 8][4];
NV_UNROLL
    for (int nt = 0; nt < BN / 8; nt++)
NV_UNROLL
      for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
NV_UNROLL
    for (int kk = 0; kk < DH / 16; kk++)
NV_UNROLL
      for (int nt = 0; nt < BN / 8; nt += 2) {
        uint bk[4], bv[4];
        FRAG_B(bk, kb_l, nt * 8, c0 + kk * 16);
        FRAG_B(bv, vb_l, nt * 8, c0 + kk * 16);
        MMA(s[nt], qf[kk], bk[0], bk[1]);
        MMA(s[nt + 1], qf[kk], bk[2], bk[3]);
        MMA(dp[nt], of[kk], bv[0], bv[1]);
        MMA(dp[nt + 1], of[kk], bv[2], bv[3]);
      }
#if NSPLIT > 1
    nv_pair_sum(s, dp, BN / 8, xch); /* this half's partial products plus the partner's */
#endif

    /* dS = P (dP - Di); element 2 rr + e of n-tile nt is row row0 + 8 rr, key n0 + 8 nt + 2 t + e. */
NV_UNROLL
    for (int nt = 0; nt < BN / 8; nt++) {
#if FA_DROPOUT
      /* row0 % 16 < 8 and the key even: the four scores are one masks.h group, in its word order. */
      uint w[4];
      fa_dropout_words(drop_seed, drop_offset, bh, (uint)row0, (uint)(n0 + nt * 8 + 2 * t), w);
#endif
NV_UNROLL
      for (int e = 0; e < 4; e++) {
        const int rr = e >> 1, row = row0 + 8 * rr;
        const long key = n0 + nt * 8 + 2 * t + (e & 1);
#if FA_INFER
        float gf;
        const float x = nv_mod_score(s[nt][e] * scale_log2, softcap2, slope2, (long)row + diag, (int)key, &gf);
        const int visible = l2[rr] != INFINITY && (tile == FA_TILE_FULL || (key >= klo[rr] && key < khi[rr]));
        const float pe = visible ? EXP2(x - l2[rr]) : 0.0f;
        s[nt][e] = pe * (dp[nt][e] - di[rr]) * gf;
#else
        long last = (long)Sk - 1;
        if (causal) last = min(last, (long)row + diag);
        int visible = l2[rr] != INFINITY && key <= last;
#if FA_BLOCK_MASK
        if (visible && tile == FA_TILE_PARTIAL)
          visible = fa_block_keep(mh, bm_sr, bm_sc, block_q, block_k, row, (int)key);
#endif
        const float pe = visible ? EXP2(s[nt][e] * scale_log2 - l2[rr]) : 0.0f;
#if FA_DROPOUT
        const float dpz = w[e] >= drop_threshold ? dp[nt][e] * drop_scale : 0.0f;
        s[nt][e] = pe * (dpz - di[rr]);
#else
        s[nt][e] = pe * (dp[nt][e] - di[rr]);
#endif
#endif
      }
    }

    /* dQ += dS K: the accumulators of key n-tiles 2 kb2 and 2 kb2 + 1 are the A fragment of k-step kb2;
     * B[k][n] = K[key k][d n] = K^T[n][k]. */
NV_UNROLL
    for (int kb2 = 0; kb2 < BN / 16; kb2++) {
      uint a[4];
      a[0] = pack2(s[2 * kb2][0], s[2 * kb2][1]);
      a[1] = pack2(s[2 * kb2][2], s[2 * kb2][3]);
      a[2] = pack2(s[2 * kb2 + 1][0], s[2 * kb2 + 1][1]);
      a[3] = pack2(s[2 * kb2 + 1][2], s[2 * kb2 + 1][3]);
NV_UNROLL
      for (int nd = 0; nd < DH / 8; nd += 2) {
        uint bk[4];
        FRAG_BT(bk, kt_l, kb2 * 16, c0 + nd * 8);
        MMA(dqa[nd], a, bk[0], bk[1]);
        MMA(dqa[nd + 1], a, bk[2], bk[3]);
      }
    }
  }

  /* dq = scale dS K; rows past Sq are not written. */
NV_UNROLL
  for (int rr = 0; rr < 2; rr++) {
    const int row = row0 + 8 * rr;
    if (row < Sq) {
      const long ob = dq_off + bt * dq_sb + h * dq_sh + (long)(qfirst + row) * dq_ss;
NV_UNROLL
      for (int nd = 0; nd < DH / 8; nd++)
        if (c0 + nd * 8 < HEAD_DIM) {
          const int col = c0 + nd * 8 + 2 * t;
          fa_store(dq, ob + col, dqa[nd][2 * rr] * scale);
          fa_store(dq, ob + col + 1, dqa[nd][2 * rr + 1] * scale);
        }
    }
  }
}
