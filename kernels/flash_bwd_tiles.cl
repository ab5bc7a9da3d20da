/* The OpenCL backward's GPU layout (TPR > 1 work-items per row, the default on GPUs): flash_bwd_dkdv and
 * flash_bwd_dq, separate dQ only. Appended by src/opencl/cl_backward.c after kernels/flash_bwd.cl, whose
 * header comment describes the algorithm, the parameters and the local memory; the helpers and
 * flash_bwd_pre live there. */
#if TPR == 1
#error "flash_bwd_tiles.cl is the TPR > 1 layout; TPR = 1 is flash_bwd_rows.cl"
#endif
/* The GPU layout, in the style of flash_fwd.cl's: TPR work-items share a row (a key in flash_bwd_dkdv, a query
 * in flash_bwd_dq), and each work-item has RPW such rows (1 by default; 2 makes every local load feed twice the
 * multiply-adds, at twice the private accumulators). Each owns its rows' interleaved columns t, t + TPR, ...
 * (D / TPR accumulators per row of dK and dV, or of dQ: no D-float private arrays, which NVIDIA's compiler
 * would spill) and every TPR-th score of a block. The other operand's rows sit in local memory, padded by one
 * float so that the TPR lanes of a row, reading different rows at the same column, fall in different banks; P
 * and dS go through local memory to the lanes that own the columns. Whole dot products per work-item: no
 * reduction across lanes. No DQ_ATOMIC (the host takes the separate dQ kernel with this layout).
 * Deterministic: every sum has a fixed order.
 *
 * Local floats: dkdv Ks, Vs 2*BC*(D+1), Qs, dOs 2*BR*(D+1), Ps, dSs 2*BC*(BR+1), lse2, Di 2*BR; dq Qs, dOs
 * 2*BR*(D+1), Ks, Vs 2*BC*(D+1), dSs BR*(BC+1). fa_tiles_opencl_backward() counts the larger. */
#if DQ_ATOMIC
#error "the GPU layout (TPR > 1) has no DQ_ATOMIC"
#endif
#if BR % TPR != 0 || BC % TPR != 0 || D % TPR != 0
#error "BR, BC and D must be multiples of TPR"
#endif
#define RL (D + 1)          /* padded row of a D-wide tile */
#define SK (BR / TPR)       /* flash_bwd_dkdv: queries per row per block */
#define SQ (BC / TPR)       /* flash_bwd_dq: keys per row per block */
#define CN (D / TPR)        /* accumulator columns per row */
#define KR (BC / RPW)       /* flash_bwd_dkdv: work-items' row groups; a work-item's rows are KR apart */
#define QR (BR / RPW)       /* flash_bwd_dq: the same */
#define GK (KR * TPR)       /* work-items of flash_bwd_dkdv */
#define GQ (QR * TPR)       /* work-items of flash_bwd_dq */

/* Grid (ceil(Sk / BC) * GK, Hkv, B). Work-item (jr, t) = (lid / TPR, lid % TPR) owns keys k0 + jr + r * KR
 * (r < RPW), columns c * TPR + t of their dK and dV, and queries c * TPR + t of each query block. */
__kernel __attribute__((reqd_work_group_size(GK, 1, 1))) void
flash_bwd_dkdv(BWD_DKDV_PARAMS) {
  __local float Ks[BC * RL];
  __local float Vs[BC * RL];
  __local float Qs[BR * RL];
  __local float Gs[BR * RL]; /* dO */
  __local float Ps[BC * (BR + 1)];
  __local float dSs[BC * (BR + 1)];
  __local float L2[BR];
  __local float Di[BR];

  const int lid = get_local_id(0), jr = lid / TPR, t = lid % TPR;
  const int k0 = get_group_id(0) * BC;
  const int hk = get_group_id(1), b = get_group_id(2);
  SEQ_SETUP(b)
#if FA_INFER
  if (k0 >= Sk) return; /* varlen: past this sequence's keys (the whole group) */
#endif
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */

  /* The block's K and V rows, zero past Sk; neighbouring work-items read neighbouring elements. */
  const long kb = k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss;
  const long vb = v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss;
  for (int x = lid; x < BC * D; x += GK) {
    const int jj = x / D, dd = x - jj * D, kj = k0 + jj;
    Ks[jj * RL + dd] = kj < Sk ? fa_load(k, kb + (long)kj * k_ss + dd) : 0.0f;
    Vs[jj * RL + dd] = kj < Sk ? fa_load(v, vb + (long)kj * v_ss + dd) : 0.0f;
  }
  float dka[RPW * CN], dva[RPW * CN];
#pragma unroll
  for (int c = 0; c < RPW * CN; c++) dka[c] = dva[c] = 0.0f;

  int qstart = 0, qend = Sq;
#if FA_INFER
  /* The rows the band lets see this block's keys, and the rows [rlo, rhi) that see each of this work-item's. */
  fa_band_rows(k0, min(k0 + BC, Sk), Sq, Sk, causal, wl, wr, &qstart, &qend);
  qstart -= qstart % BR;
  int rlo[RPW], rhi[RPW];
#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int j = k0 + jr + r * KR;
    rlo[r] = rhi[r] = 0;
    if (j < Sk) fa_band_rows(j, j + 1, Sq, Sk, causal, wl, wr, &rlo[r], &rhi[r]);
  }
#else
  if (causal) {
    qstart = (int)clamp((long)k0 - diag, 0L, (long)Sq);
    qstart -= qstart % BR;
  }
#endif

  for (int g = 0; g < group; g++) {
    const int h = hk * group + g;
    const long qb = q_off + bt * q_sb + h * q_sh + (long)qfirst * q_ss;
    const long gb = g_off + bt * g_sb + h * g_sh + (long)qfirst * g_ss;
    const long lb = l_off + bt * l_sb + h * l_sh + (long)qfirst * l_ss;
    const long rowb = ((long)bt * Hq + h) * Sq_all + qfirst;
#if FA_BLOCK_MASK
    const __global uchar *mh = MASK_AT(b, h);
#endif
#if FA_INFER
    const float slope2 = SLOPE2(b, h);
#endif

    for (int q0 = qstart; q0 < qend; q0 += BR) {
#if FA_BLOCK_MASK
      const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
      if (tile == FA_TILE_SKIP) continue; /* uniform: every work-item skips the same barriers */
#endif
      barrier(CLK_LOCAL_MEM_FENCE); /* K, V staged (first block); the previous block's readers done */
      for (int x = lid; x < BR * D; x += GK) {
        const int rr = x / D, dd = x - rr * D, i = q0 + rr;
        Qs[rr * RL + dd] = i < Sq ? fa_load(q, qb + (long)i * q_ss + dd) : 0.0f;
        Gs[rr * RL + dd] = i < Sq ? fa_load(dout, gb + (long)i * g_ss + dd) : 0.0f;
      }
      for (int x = lid; x < BR; x += GK) {
        const int i = q0 + x;
        L2[x] = i < Sq ? row_lse2(lse[lb + (long)i * l_ss]) : INFINITY;
        Di[x] = i < Sq ? ws[di_off + rowb + i] : 0.0f;
      }
      barrier(CLK_LOCAL_MEM_FENCE);

      /* s = K_j . Q_i and dp = V_j . dO_i for this work-item's keys j and queries i = c * TPR + t. */
      float s[RPW * SK], dp[RPW * SK];
#pragma unroll
      for (int c = 0; c < RPW * SK; c++) s[c] = dp[c] = 0.0f;
#pragma unroll 4
      for (int dd = 0; dd < D; dd++) {
        float kd[RPW], vd[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) kd[r] = Ks[(jr + r * KR) * RL + dd], vd[r] = Vs[(jr + r * KR) * RL + dd];
#pragma unroll
        for (int c = 0; c < SK; c++) {
          const float qv = Qs[(c * TPR + t) * RL + dd], gv = Gs[(c * TPR + t) * RL + dd];
#pragma unroll
          for (int r = 0; r < RPW; r++) {
            s[r * SK + c] = MAD(kd[r], qv, s[r * SK + c]);
            dp[r * SK + c] = MAD(vd[r], gv, dp[r * SK + c]);
          }
        }
      }
      /* P (0 for masked keys, padding keys and rows: lse2 = +inf) and dS, into local memory for the lanes
       * that own the columns. */
#pragma unroll
      for (int r = 0; r < RPW; r++) {
        const int jl = jr + r * KR, j = k0 + jl;
        const long first = causal ? (long)j - diag : LONG_MIN; /* the first row that sees key j */
#if FA_DROPOUT
        float z[SK];
        drop_line(z, SK, seed, drop_off, drop_thr, drop_scale, (uint)(b * Hq + h), q0 + t, TPR, j, 0);
#endif
#pragma unroll
        for (int c = 0; c < SK; c++) {
          const int x = c * TPR + t;
#if FA_INFER
          /* The modified base-2 score; P zero outside the rows [rlo, rhi) that see key j; dS takes softcap's g. */
          float gf;
          float p = exp2(mod_score(s[r * SK + c], scale_log2, softcap2, slope2, q0 + x + diag, j, &gf) - L2[x]);
          if (q0 + x < rlo[r] || q0 + x >= rhi[r]) p = 0.0f;
          dp[r * SK + c] = (dp[r * SK + c] - Di[x]) * gf + Di[x]; /* so that p (dp - Di) below is P (dP - Di) g */
          (void)first;
#else
          float p = exp2(MAD(s[r * SK + c], scale_log2, -L2[x]));
          if (j >= Sk || q0 + x < first) p = 0.0f;
#endif
#if FA_BLOCK_MASK
          if (tile == FA_TILE_PARTIAL && j < Sk && q0 + x < Sq && !fa_block_keep(mh, m_sr, m_sc, bq, bk, q0 + x, j))
            p = 0.0f;
#endif
#if FA_DROPOUT
          Ps[jl * (BR + 1) + x] = p * z[c];
          dSs[jl * (BR + 1) + x] = p * MAD(dp[r * SK + c], z[c], -Di[x]);
#else
          Ps[jl * (BR + 1) + x] = p;
          dSs[jl * (BR + 1) + x] = p * (dp[r * SK + c] - Di[x]);
#endif
        }
      }
      barrier(CLK_LOCAL_MEM_FENCE);

      /* dV_j += P_j,x dO_x and dK_j += dS_j,x Q_x over the block's queries, for this work-item's columns. */
      for (int x = 0; x < BR; x++) {
        float p[RPW], ds[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
          p[r] = Ps[(jr + r * KR) * (BR + 1) + x];
          ds[r] = dSs[(jr + r * KR) * (BR + 1) + x];
        }
#pragma unroll
        for (int c = 0; c < CN; c++) {
          const float gv = Gs[x * RL + c * TPR + t], qv = Qs[x * RL + c * TPR + t];
#pragma unroll
          for (int r = 0; r < RPW; r++) {
            dva[r * CN + c] = MAD(p[r], gv, dva[r * CN + c]);
            dka[r * CN + c] = MAD(ds[r], qv, dka[r * CN + c]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int j = k0 + jr + r * KR;
    const long kd = dk_off + bt * dk_sb + (long)(kfirst + j) * dk_ss + hk * dk_sh;
    const long vd = dv_off + bt * dv_sb + (long)(kfirst + j) * dv_ss + hk * dv_sh;
#pragma unroll
    for (int c = 0; c < CN; c++)
      if (j < Sk) {
        fa_store(dk, kd + c * TPR + t, dka[r * CN + c] * scale);
        fa_store(dv, vd + c * TPR + t, dva[r * CN + c]);
      }
  }
}

/* Grid (ceil(Sq / BR) * GQ, Hq, B). Work-item (ir, t) owns queries q0 + ir + r * QR (r < RPW), columns
 * c * TPR + t of their dQ, and keys c * TPR + t of each key block. */
__kernel __attribute__((reqd_work_group_size(GQ, 1, 1))) void
flash_bwd_dq(BWD_DQ_PARAMS) {
  __local float Qs[BR * RL];
  __local float Gs[BR * RL];
  __local float Ks[BC * RL];
  __local float Vs[BC * RL];
  __local float dSs[BR * (BC + 1)];
#if FA_DROPOUT
  /* The tile's keep bits: a lane's keys are TPR apart, so it could draw only one per Philox call; the group
   * draws four per call here instead (within the local memory flash_bwd_dkdv takes beyond this kernel's). */
  __local uchar Zs[BR * BC];
#endif

  const int lid = get_local_id(0), ir = lid / TPR, t = lid % TPR;
  const int q0 = get_group_id(0) * BR;
  const int h = get_group_id(1), b = get_group_id(2);
  const int hk = h / group;
  SEQ_SETUP(b)
#if FA_INFER
  if (q0 >= Sq) return; /* varlen: past this sequence's rows (the whole group) */
  const float slope2 = SLOPE2(b, h);
#endif
  const long diag = (long)Sk - Sq;

  const long qb = q_off + bt * q_sb + h * q_sh + (long)qfirst * q_ss;
  const long gb = g_off + bt * g_sb + h * g_sh + (long)qfirst * g_ss;
  for (int x = lid; x < BR * D; x += GQ) {
    const int rr = x / D, dd = x - rr * D, qi = q0 + rr;
    Qs[rr * RL + dd] = qi < Sq ? fa_load(q, qb + (long)qi * q_ss + dd) : 0.0f;
    Gs[rr * RL + dd] = qi < Sq ? fa_load(dout, gb + (long)qi * g_ss + dd) : 0.0f;
  }
  float l2[RPW], di[RPW];
  long last[RPW]; /* the last key each row sees */
#if FA_INFER
  int klo[RPW]; /* and the first */
#endif
#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + ir + r * QR;
    l2[r] = i < Sq ? row_lse2(lse[l_off + bt * l_sb + h * l_sh + (long)(qfirst + i) * l_ss]) : INFINITY;
    di[r] = i < Sq ? ws[di_off + ((long)bt * Hq + h) * Sq_all + qfirst + i] : 0.0f;
#if FA_INFER
    klo[r] = fa_band_lo(i, Sq, Sk, wl);
    last[r] = (long)fa_band_hi(i, Sq, Sk, causal, wr) - 1;
#else
    last[r] = causal ? min((long)i + diag, (long)Sk - 1) : (long)Sk - 1;
#endif
  }
  float dqa[RPW * CN];
#pragma unroll
  for (int c = 0; c < RPW * CN; c++) dqa[c] = 0.0f;

  const long kb = k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss;
  const long vb = v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss;
  int kbeg = 0, kend = Sk;
#if FA_INFER
  /* The band of the block's rows: tiles outside it are never loaded. */
  kbeg = fa_band_lo(q0, Sq, Sk, wl) / BC * BC;
  kend = fa_band_hi(min(q0 + BR, Sq) - 1, Sq, Sk, causal, wr);
#else
  if (causal) kend = (int)clamp((long)min(q0 + BR, Sq) + diag, 0L, (long)Sk);
#endif
#if FA_BLOCK_MASK
  const __global uchar *mh = MASK_AT(b, h);
#endif

  for (int k0 = kbeg; k0 < kend; k0 += BC) {
#if FA_BLOCK_MASK
    const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
    if (tile == FA_TILE_SKIP) continue; /* uniform: every work-item skips the same barriers */
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* Q, dO staged (first block); the previous block's readers done */
    for (int x = lid; x < BC * D; x += GQ) {
      const int jj = x / D, dd = x - jj * D, kj = k0 + jj;
      Ks[jj * RL + dd] = kj < Sk ? fa_load(k, kb + (long)kj * k_ss + dd) : 0.0f;
      Vs[jj * RL + dd] = kj < Sk ? fa_load(v, vb + (long)kj * v_ss + dd) : 0.0f;
    }
#if FA_DROPOUT
    /* One Philox call per group of rows (i, i + 8) and keys (j, j + 1) (masks.h), by the group's first row in
     * the tile; BC is even, so key pairs never straddle it. */
    for (int y = lid; y < BR * (BC / 2); y += GQ) {
      const int rr = y / (BC / 2), jj = 2 * (y - rr * (BC / 2)), i = q0 + rr;
      if ((i & 8) && rr >= 8) continue; /* drawn with row i - 8 */
      uint w[4];
      fa_dropout_words(seed, drop_off, (uint)(b * Hq + h), (uint)i, (uint)(k0 + jj), w);
      const int e = (i & 8) ? 2 : 0; /* the words of row i; row i + 8 (when i % 16 < 8) has 2 and 3 */
      Zs[rr * BC + jj] = w[e] >= drop_thr;
      Zs[rr * BC + jj + 1] = w[e + 1] >= drop_thr;
      if (!(i & 8) && rr + 8 < BR) {
        Zs[(rr + 8) * BC + jj] = w[2] >= drop_thr;
        Zs[(rr + 8) * BC + jj + 1] = w[3] >= drop_thr;
      }
    }
#endif
    barrier(CLK_LOCAL_MEM_FENCE);

    /* s = Q_i . K_j and dp = dO_i . V_j for this work-item's queries i and keys j = c * TPR + t. */
    float s[RPW * SQ], dp[RPW * SQ];
#pragma unroll
    for (int c = 0; c < RPW * SQ; c++) s[c] = dp[c] = 0.0f;
#pragma unroll 4
    for (int dd = 0; dd < D; dd++) {
      float qd[RPW], gd[RPW];
#pragma unroll
      for (int r = 0; r < RPW; r++) qd[r] = Qs[(ir + r * QR) * RL + dd], gd[r] = Gs[(ir + r * QR) * RL + dd];
#pragma unroll
      for (int c = 0; c < SQ; c++) {
        const float kv = Ks[(c * TPR + t) * RL + dd], vv = Vs[(c * TPR + t) * RL + dd];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
          s[r * SQ + c] = MAD(qd[r], kv, s[r * SQ + c]);
          dp[r * SQ + c] = MAD(gd[r], vv, dp[r * SQ + c]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
#if FA_BLOCK_MASK
      const int i = q0 + ir + r * QR;
#endif
#pragma unroll
      for (int c = 0; c < SQ; c++) {
        const int x = c * TPR + t;
#if FA_INFER
        /* The modified base-2 score; P zero outside the row's keys; dS takes softcap's factor. */
        float gf;
        float p = exp2(mod_score(s[r * SQ + c], scale_log2, softcap2, slope2, q0 + ir + r * QR + diag, k0 + x, &gf) - l2[r]);
        if (k0 + x < klo[r] || k0 + x > last[r]) p = 0.0f;
        dp[r * SQ + c] = (dp[r * SQ + c] - di[r]) * gf + di[r];
#else
        float p = exp2(MAD(s[r * SQ + c], scale_log2, -l2[r]));
        if (k0 + x > last[r]) p = 0.0f;
#endif
#if FA_BLOCK_MASK
        if (tile == FA_TILE_PARTIAL && i < Sq && k0 + x < Sk && !fa_block_keep(mh, m_sr, m_sc, bq, bk, i, k0 + x))
          p = 0.0f;
#endif
#if FA_DROPOUT
        const float z = Zs[(ir + r * QR) * BC + x] ? drop_scale : 0.0f;
        dSs[(ir + r * QR) * (BC + 1) + x] = p * MAD(dp[r * SQ + c], z, -di[r]);
#else
        dSs[(ir + r * QR) * (BC + 1) + x] = p * (dp[r * SQ + c] - di[r]);
#endif
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* dQ_i += dS_i,x K_x over the block's keys, for this work-item's columns. */
    for (int x = 0; x < BC; x++) {
      float ds[RPW];
#pragma unroll
      for (int r = 0; r < RPW; r++) ds[r] = dSs[(ir + r * QR) * (BC + 1) + x];
#pragma unroll
      for (int c = 0; c < CN; c++) {
        const float kv = Ks[x * RL + c * TPR + t];
#pragma unroll
        for (int r = 0; r < RPW; r++) dqa[r * CN + c] = MAD(ds[r], kv, dqa[r * CN + c]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + ir + r * QR;
    const long ob = dq_off + bt * dq_sb + (long)(qfirst + i) * dq_ss + h * dq_sh;
#pragma unroll
    for (int c = 0; c < CN; c++)
      if (i < Sq) fa_store(dq, ob + c * TPR + t, dqa[r * CN + c] * scale);
  }
}
