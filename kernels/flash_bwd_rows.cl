/* The OpenCL backward's row layout (TPR = 1, the default on CPUs): flash_bwd_dkdv and flash_bwd_dq with one
 * work-item per RPW rows and explicit VEC-wide vectors, and dQ by atomics when DQ_ATOMIC. Appended by
 * src/opencl/cl_backward.c after kernels/flash_bwd.cl, whose header comment describes the algorithm, the
 * parameters and the local memory; the helpers and flash_bwd_pre / flash_bwd_dq_convert live there. */
#if TPR != 1
#error "flash_bwd_rows.cl is the TPR = 1 layout; TPR > 1 is flash_bwd_tiles.cl"
#endif

/* dK and dV (and with DQ_ATOMIC, dQ) for one block of BC keys. Grid (ceil(Sk / BC) * WGK, Hkv, B). Work-item w
 * owns keys k0 + w + r * WGK, r < RPW. */
__kernel __attribute__((reqd_work_group_size(WGK, 1, 1))) void
flash_bwd_dkdv(BWD_DKDV_PARAMS) {
  __local float Qs[BR * D];
  __local float QT[D * BR];
  __local float Gs[BR * D]; /* dO */
  __local float GT[D * BR];
  __local float L2[BR];
  __local float Di[BR];
#if DQ_ATOMIC
  __local float Ks[BC * D];
  __local float dSs[BR * BC];
#endif
#if FA_DROPOUT && DROP_TILE
  __local uchar Zs[BR * BC]; /* the tile's keep bits */
#endif

  const int lid = get_local_id(0);
  const int k0 = get_group_id(0) * BC;
  const int hk = get_group_id(1), b = get_group_id(2);
  SEQ_SETUP(b)
#if FA_INFER
  if (k0 >= Sk) return; /* varlen: past this sequence's keys (the whole group) */
#endif
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */

  /* This work-item's key rows (zero past Sk), and their dK, dV accumulators. */
  float kr[RPW * D], vr[RPW * D], dka[RPW * D], dva[RPW * D];
  for (int r = 0; r < RPW; r++) {
    const int j = k0 + lid + r * WGK;
    const long kb = k_off + bt * k_sb + (long)(kfirst + j) * k_ss + hk * k_sh;
    const long vb = v_off + bt * v_sb + (long)(kfirst + j) * v_ss + hk * v_sh;
    for (int d = 0; d < D; d++) {
      kr[r * D + d] = j < Sk ? fa_load(k, kb + d) : 0.0f;
      vr[r * D + d] = j < Sk ? fa_load(v, vb + d) : 0.0f;
      dka[r * D + d] = 0.0f;
      dva[r * D + d] = 0.0f;
#if DQ_ATOMIC
      Ks[(lid + r * WGK) * D + d] = kr[r * D + d];
#endif
    }
  }

  /* Rows before k0 - diag see no key of this block: start at the query block holding that row. */
  int qstart = 0, qend = Sq;
#if FA_INFER
  /* The rows the band lets see this block's keys (and their per-key ranges, below). */
  fa_band_rows(k0, min(k0 + BC, Sk), Sq, Sk, causal, wl, wr, &qstart, &qend);
  qstart -= qstart % BR;
  int rlo[RPW], rhi[RPW];
  for (int r = 0; r < RPW; r++) {
    const int j = k0 + lid + r * WGK;
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
    const long rowb = ((long)bt * Hq + h) * Sq_all + qfirst; /* this head's first row in the workspace */
#if FA_BLOCK_MASK
    const __global uchar *mh = MASK_AT(b, h);
#endif
#if FA_INFER
    const float slope2 = SLOPE2(b, h);
#endif

    for (int q0 = qstart; q0 < qend; q0 += BR) {
#if FA_INFER
      const int tile = fa_band_tile(q0, min(q0 + BR, Sq), k0, k0 + BC, Sq, Sk, causal, wl, wr);
#endif
#if FA_BLOCK_MASK
      /* The same value in every work-item, so a skipped tile skips its barriers in all of them. */
      const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
      if (tile == FA_TILE_SKIP) continue;
#endif
      barrier(CLK_LOCAL_MEM_FENCE); /* the previous block's readers are done */
      for (int x = lid; x < BR * DV; x += WGK) {
        const int rr = x / DV, c = (x - rr * DV) * VEC, i = q0 + rr;
        floatv qx = (floatv)(0.0f), gx = (floatv)(0.0f);
        if (i < Sq) {
          qx = LOADV(q, qb + (long)i * q_ss + c);
          gx = LOADV(dout, gb + (long)i * g_ss + c);
        }
        VST(qx, Qs + rr * D + c);
        VST(gx, Gs + rr * D + c);
        float qe[VEC], ge[VEC];
        VST(qx, qe);
        VST(gx, ge);
        for (int e = 0; e < VEC; e++) {
          QT[(c + e) * BR + rr] = qe[e];
          GT[(c + e) * BR + rr] = ge[e];
        }
      }
      for (int x = lid; x < BR; x += WGK) {
        const int i = q0 + x;
        L2[x] = i < Sq ? row_lse2(lse[lb + (long)i * l_ss]) : INFINITY;
        Di[x] = i < Sq ? ws[di_off + rowb + i] : 0.0f;
      }
#if FA_DROPOUT && DROP_TILE
      drop_tile(Zs, lid, WGK, seed, drop_off, drop_thr, (uint)(b * Hq + h), q0, k0);
#endif
      barrier(CLK_LOCAL_MEM_FENCE);

      /* s = K Q^T, then dp = V dO^T, for the RPW keys over the block's queries, VEC queries per vector:
       * per step d, RB vectors of the tile feed RPW * RB multiply-adds. */
      float s[RPW * BR], dp[RPW * BR];
      for (int pass = 0; pass < 2; pass++) {
        const float *a = pass ? vr : kr;
        const __local float *bt = pass ? GT : QT;
        float *out = pass ? dp : s;
        for (int c0 = 0; c0 < RV; c0 += RB) {
          floatv acc[RPW][RB];
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < RB; u++) acc[r][u] = (floatv)(0.0f);
#pragma unroll 2
          for (int dd = 0; dd < D; dd++) {
            floatv t[RB];
#pragma unroll
            for (int u = 0; u < RB; u++) t[u] = VLD(bt + dd * BR + (c0 + u) * VEC);
#pragma unroll
            for (int r = 0; r < RPW; r++) {
              const floatv ad = (floatv)(a[r * D + dd]);
#pragma unroll
              for (int u = 0; u < RB; u++) acc[r][u] = MAD(ad, t[u], acc[r][u]);
            }
          }
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < RB; u++) VST(acc[r][u], out + r * BR + (c0 + u) * VEC);
        }
      }

      /* P and dS, VEC queries per vector (the vector exp2 is what keeps this step cheap on CPUs). Key j is
       * visible to row i when i >= j - diag (causal) and j < Sk; padding rows have lse2 = +inf. */
#if FA_INFER
      float gf[RPW * BR]; /* softcap's factor on dS */
#endif
      for (int r = 0; r < RPW; r++) {
        const int j = k0 + lid + r * WGK;
#if FA_INFER
        /* The modified base-2 scores, then P; the band zeroes rows outside [rlo, rhi) (all of them past Sk). */
        for (int x = 0; x < BR; x++)
          s[r * BR + x] = mod_score(s[r * BR + x], scale_log2, softcap2, slope2, q0 + x + diag, j, &gf[r * BR + x]);
        for (int c = 0; c < RV; c++)
          VST(exp2(VLD(s + r * BR + c * VEC) - VLD(L2 + c * VEC)), s + r * BR + c * VEC);
        if (tile != FA_TILE_FULL)
          for (int x = 0; x < BR; x++)
            if (q0 + x < rlo[r] || q0 + x >= rhi[r]) s[r * BR + x] = 0.0f;
        for (int x = 0; x < BR; x++) dp[r * BR + x] = (dp[r * BR + x] - Di[x]) * gf[r * BR + x]; /* (dP - Di) g */
#else
        for (int c = 0; c < RV; c++) {
          const floatv p = exp2(MAD(VLD(s + r * BR + c * VEC), (floatv)(scale_log2), -VLD(L2 + c * VEC)));
          VST(p, s + r * BR + c * VEC);
        }
        const long first = causal ? (long)j - diag : LONG_MIN;
        if (j >= Sk || q0 < first)
          for (int x = 0; x < BR; x++)
            if (j >= Sk || q0 + x < first) s[r * BR + x] = 0.0f;
#endif
#if FA_BLOCK_MASK
        if (tile == FA_TILE_PARTIAL && j < Sk)
          mask_line(s + r * BR, min(BR, Sq - q0), mh + (long)(j / bk) * m_sc, m_sr, bq, q0);
#endif
#if FA_DROPOUT
        /* dS = P o (dP o Z s - Di), then P o Z s for dV. */
        float z[BR];
#if DROP_TILE
        for (int x = 0; x < BR; x++) z[x] = Zs[x * BC + lid + r * WGK] ? drop_scale : 0.0f;
#else
        drop_line(z, BR, seed, drop_off, drop_thr, drop_scale, (uint)(b * Hq + h), q0, 1, j, 0);
#endif
        for (int c = 0; c < RV; c++) {
          const floatv p = VLD(s + r * BR + c * VEC), zv = VLD(z + c * VEC);
          VST(p * MAD(VLD(dp + r * BR + c * VEC), zv, -VLD(Di + c * VEC)), dp + r * BR + c * VEC);
          VST(p * zv, s + r * BR + c * VEC);
        }
#elif FA_INFER
        for (int c = 0; c < RV; c++) VST(VLD(s + r * BR + c * VEC) * VLD(dp + r * BR + c * VEC), dp + r * BR + c * VEC);
#else
        for (int c = 0; c < RV; c++)
          VST(VLD(s + r * BR + c * VEC) * (VLD(dp + r * BR + c * VEC) - VLD(Di + c * VEC)), dp + r * BR + c * VEC);
#endif
      }

      /* dV += P^T dO, then dK += dS^T Q (scale applied at the end), VEC columns per vector: per query x, DB
       * vectors of the tile feed RPW * DB multiply-adds. */
      for (int pass = 0; pass < 2; pass++) {
        const float *w = pass ? dp : s;
        const __local float *tile = pass ? Qs : Gs;
        float *accum = pass ? dka : dva;
        for (int c0 = 0; c0 < DV; c0 += DB) {
          floatv acc[RPW][DB];
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < DB; u++) acc[r][u] = VLD(accum + r * D + (c0 + u) * VEC);
#pragma unroll 2
          for (int x = 0; x < BR; x++) {
            floatv t[DB];
#pragma unroll
            for (int u = 0; u < DB; u++) t[u] = VLD(tile + x * D + (c0 + u) * VEC);
#pragma unroll
            for (int r = 0; r < RPW; r++) {
              const floatv wx = (floatv)(w[r * BR + x]);
#pragma unroll
              for (int u = 0; u < DB; u++) acc[r][u] = MAD(wx, t[u], acc[r][u]);
            }
          }
#pragma unroll
          for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int u = 0; u < DB; u++) VST(acc[r][u], accum + r * D + (c0 + u) * VEC);
        }
      }

#if DQ_ATOMIC
      /* dQ_i += dS_i K over this block's keys: the BR x DV output vectors spread over the group. */
      for (int r = 0; r < RPW; r++)
        for (int x = 0; x < BR; x++) dSs[x * BC + lid + r * WGK] = dp[r * BR + x];
      barrier(CLK_LOCAL_MEM_FENCE);
      for (int y = lid; y < BR * DV; y += WGK) {
        const int rr = y / DV, cv = y - rr * DV, i = q0 + rr;
        if (i >= Sq) continue;
        floatv acc = (floatv)(0.0f);
        for (int jj = 0; jj < BC; jj++) acc = MAD((floatv)(dSs[rr * BC + jj]), VLD(Ks + jj * D + cv * VEC), acc);
        float accs[VEC];
        VST(acc, accs);
        volatile __global float *dst = ws + dq_off + (rowb + i) * D + cv * VEC;
        for (int e = 0; e < VEC; e++)
          if (accs[e] != 0.0f) atomic_add_f32(dst + e, accs[e]);
      }
#endif
    }
  }

  for (int r = 0; r < RPW; r++) {
    const int j = k0 + lid + r * WGK;
    if (j >= Sk) continue;
    const long kb = dk_off + bt * dk_sb + (long)(kfirst + j) * dk_ss + hk * dk_sh;
    const long vb = dv_off + bt * dv_sb + (long)(kfirst + j) * dv_ss + hk * dv_sh;
    for (int d = 0; d < D; d++) {
      fa_store(dk, kb + d, dka[r * D + d] * scale);
      fa_store(dv, vb + d, dva[r * D + d]);
    }
  }
}

#if !DQ_ATOMIC
/* dq for one block of BR queries, walking the key blocks. Grid (ceil(Sq / BR) * WGQ, Hq, B). Work-item w owns
 * queries q0 + w + r * WGQ, r < RPW. */
__kernel __attribute__((reqd_work_group_size(WGQ, 1, 1))) void
flash_bwd_dq(BWD_DQ_PARAMS) {
  __local float KT[D * BC];
  __local float VT[D * BC];
  __local float Ks[BC * D];
#if FA_DROPOUT && DROP_TILE
  __local uchar Zs[BR * BC]; /* the tile's keep bits */
#endif

  const int lid = get_local_id(0);
  const int q0 = get_group_id(0) * BR;
  const int h = get_group_id(1), b = get_group_id(2);
  const int hk = h / group;
  SEQ_SETUP(b)
#if FA_INFER
  if (q0 >= Sq) return; /* varlen: past this sequence's rows (the whole group) */
  const float slope2 = SLOPE2(b, h);
#endif
  const long diag = (long)Sk - Sq;

  /* This work-item's query and dO rows (zero past Sq), their lse2 and Di, and the dQ accumulators. */
  float qr[RPW * D], gr[RPW * D], dqa[RPW * D], l2[RPW], di[RPW];
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + lid + r * WGQ;
    const long qb = q_off + bt * q_sb + (long)(qfirst + i) * q_ss + h * q_sh;
    const long gb = g_off + bt * g_sb + (long)(qfirst + i) * g_ss + h * g_sh;
    for (int d = 0; d < D; d++) {
      qr[r * D + d] = i < Sq ? fa_load(q, qb + d) : 0.0f;
      gr[r * D + d] = i < Sq ? fa_load(dout, gb + d) : 0.0f;
      dqa[r * D + d] = 0.0f;
    }
    l2[r] = i < Sq ? row_lse2(lse[l_off + bt * l_sb + h * l_sh + (long)(qfirst + i) * l_ss]) : INFINITY;
    di[r] = i < Sq ? ws[di_off + ((long)bt * Hq + h) * Sq_all + qfirst + i] : 0.0f;
  }

  const long kb = k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss;
  const long vb = v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss;
  /* Keys past the last row's diagonal are masked for the whole block: those tiles are never visited. */
  int kbeg = 0, kend = Sk;
#if FA_INFER
  /* The band of the block's rows, and each row's keys [lo, hi). */
  const int qlast = min(q0 + BR, Sq);
  kbeg = fa_band_lo(q0, Sq, Sk, wl) / BC * BC;
  kend = fa_band_hi(qlast - 1, Sq, Sk, causal, wr);
  int klo[RPW], khi[RPW];
  for (int r = 0; r < RPW; r++) {
    const int i = q0 + lid + r * WGQ;
    klo[r] = fa_band_lo(i, Sq, Sk, wl);
    khi[r] = fa_band_hi(i, Sq, Sk, causal, wr);
  }
#else
  if (causal) kend = (int)clamp((long)min(q0 + BR, Sq) + diag, 0L, (long)Sk);
#endif
#if FA_BLOCK_MASK
  const __global uchar *mh = MASK_AT(b, h);
#endif

  for (int k0 = kbeg; k0 < kend; k0 += BC) {
#if FA_INFER
    const int tile = fa_band_tile(q0, qlast, k0, k0 + BC, Sq, Sk, causal, wl, wr);
#endif
#if FA_BLOCK_MASK
    const int tile = fa_block_tile(mh, m_sr, m_sc, bq, bk, q0, min(q0 + BR, Sq), k0, min(k0 + BC, Sk));
    if (tile == FA_TILE_SKIP) continue;
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int x = lid; x < BC * DV; x += WGQ) {
      const int jj = x / DV, c = (x - jj * DV) * VEC, kj = k0 + jj;
      floatv kx = (floatv)(0.0f), vx = (floatv)(0.0f);
      if (kj < Sk) {
        kx = LOADV(k, kb + (long)kj * k_ss + c);
        vx = LOADV(v, vb + (long)kj * v_ss + c);
      }
      VST(kx, Ks + jj * D + c);
      float ke[VEC], ve[VEC];
      VST(kx, ke);
      VST(vx, ve);
      for (int e = 0; e < VEC; e++) {
        KT[(c + e) * BC + jj] = ke[e];
        VT[(c + e) * BC + jj] = ve[e];
      }
    }
#if FA_DROPOUT && DROP_TILE
    drop_tile(Zs, lid, WGQ, seed, drop_off, drop_thr, (uint)(b * Hq + h), q0, k0);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);

    /* s = Q K^T, then dp = dO V^T, for the RPW queries over the block's keys, VEC keys per vector. */
    float s[RPW * BC], dp[RPW * BC];
    for (int pass = 0; pass < 2; pass++) {
      const float *a = pass ? gr : qr;
      const __local float *bt = pass ? VT : KT;
      float *out = pass ? dp : s;
      for (int c0 = 0; c0 < CV; c0 += CB) {
        floatv acc[RPW][CB];
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
          for (int u = 0; u < CB; u++) acc[r][u] = (floatv)(0.0f);
#pragma unroll 2
        for (int dd = 0; dd < D; dd++) {
          floatv t[CB];
#pragma unroll
          for (int u = 0; u < CB; u++) t[u] = VLD(bt + dd * BC + (c0 + u) * VEC);
#pragma unroll
          for (int r = 0; r < RPW; r++) {
            const floatv ad = (floatv)(a[r * D + dd]);
#pragma unroll
            for (int u = 0; u < CB; u++) acc[r][u] = MAD(ad, t[u], acc[r][u]);
          }
        }
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
          for (int u = 0; u < CB; u++) VST(acc[r][u], out + r * BC + (c0 + u) * VEC);
      }
    }

    /* P and dS, VEC keys per vector. Keys past Sk and, causal, past i + diag are masked. */
    for (int r = 0; r < RPW; r++) {
      const int i = q0 + lid + r * WGQ;
#if FA_INFER
      /* The modified base-2 scores, then P, zero outside the row's keys [klo, khi); dP takes softcap's factor. */
      float gf[BC];
      for (int x = 0; x < BC; x++) s[r * BC + x] = mod_score(s[r * BC + x], scale_log2, softcap2, slope2, i + diag, k0 + x, &gf[x]);
      for (int c = 0; c < CV; c++) VST(exp2(VLD(s + r * BC + c * VEC) - (floatv)(l2[r])), s + r * BC + c * VEC);
      if (tile != FA_TILE_FULL)
        for (int x = 0; x < BC; x++)
          if (k0 + x < klo[r] || k0 + x >= khi[r]) s[r * BC + x] = 0.0f;
      for (int x = 0; x < BC; x++) dp[r * BC + x] = (dp[r * BC + x] - di[r]) * gf[x]; /* (dP - Di) g */
      for (int c = 0; c < CV; c++) VST(VLD(s + r * BC + c * VEC) * VLD(dp + r * BC + c * VEC), dp + r * BC + c * VEC);
#else
      for (int c = 0; c < CV; c++) {
        const floatv p = exp2(MAD(VLD(s + r * BC + c * VEC), (floatv)(scale_log2), (floatv)(-l2[r])));
        VST(p, s + r * BC + c * VEC);
      }
      const long last = causal ? min((long)i + diag, (long)Sk - 1) : (long)Sk - 1; /* last visible key */
      if (k0 + BC - 1 > last)
        for (int x = 0; x < BC; x++)
          if (k0 + x > last) s[r * BC + x] = 0.0f;
#endif
#if FA_BLOCK_MASK
      if (tile == FA_TILE_PARTIAL && i < Sq)
        mask_line(s + r * BC, min(BC, Sk - k0), mh + (long)(i / bq) * m_sr, m_sc, bk, k0);
#endif
#if FA_DROPOUT
      float z[BC];
#if DROP_TILE
      for (int x = 0; x < BC; x++) z[x] = Zs[(lid + r * WGQ) * BC + x] ? drop_scale : 0.0f;
#else
      drop_line(z, BC, seed, drop_off, drop_thr, drop_scale, (uint)(b * Hq + h), i, 0, k0, 1);
#endif
      for (int c = 0; c < CV; c++)
        VST(VLD(s + r * BC + c * VEC) * MAD(VLD(dp + r * BC + c * VEC), VLD(z + c * VEC), (floatv)(-di[r])),
            dp + r * BC + c * VEC);
#elif !FA_INFER
      for (int c = 0; c < CV; c++)
        VST(VLD(s + r * BC + c * VEC) * (VLD(dp + r * BC + c * VEC) - (floatv)(di[r])), dp + r * BC + c * VEC);
#endif
    }

    /* dQ += dS K, VEC columns per vector. */
    for (int c0 = 0; c0 < DV; c0 += DB) {
      floatv acc[RPW][DB];
#pragma unroll
      for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int u = 0; u < DB; u++) acc[r][u] = VLD(dqa + r * D + (c0 + u) * VEC);
#pragma unroll 2
      for (int x = 0; x < BC; x++) {
        floatv t[DB];
#pragma unroll
        for (int u = 0; u < DB; u++) t[u] = VLD(Ks + x * D + (c0 + u) * VEC);
#pragma unroll
        for (int r = 0; r < RPW; r++) {
          const floatv wx = (floatv)(dp[r * BC + x]);
#pragma unroll
          for (int u = 0; u < DB; u++) acc[r][u] = MAD(wx, t[u], acc[r][u]);
        }
      }
#pragma unroll
      for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int u = 0; u < DB; u++) VST(acc[r][u], dqa + r * D + (c0 + u) * VEC);
    }
  }

  for (int r = 0; r < RPW; r++) {
    const int i = q0 + lid + r * WGQ;
    if (i >= Sq) continue;
    const long ob = dq_off + bt * dq_sb + (long)(qfirst + i) * dq_ss + h * dq_sh;
    for (int d = 0; d < D; d++) fa_store(dq, ob + d, dqa[r * D + d] * scale);
  }
}
#endif
