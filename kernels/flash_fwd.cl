/* Forward attention, FlashAttention Algorithm 1 (Dao et al. 2022): one pass over key/value tiles held in local
 * memory, online softmax (running max m and sum l per query row), O accumulated in float32 registers, the
 * Sq x Sk scores never stored.
 *
 *   q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D], o like q, lse [B, Hq, Sq] float32 (natural log); any strides
 *   (elements, 64-bit), the last dimension contiguous.
 *   Grid: (ceil(Sq / BR) * WG, Hq, B) work-items in groups of WG = BR * TPR / RPT: one group per (block of BR
 *   query rows, head, batch). Query head h reads key/value head h / group. Key j is masked for row i when
 *   causal and j > i + (Sk - Sq); key tiles wholly above the block's last diagonal are skipped. A row with
 *   every key masked gets o = 0 and lse = -inf.
 *
 * Compile-time parameters (the host's -D defines; src/tiling.c sizes BR and BC for the local memory):
 *   HEAD_DIM  D, a multiple of 8
 *   BR, BC    query rows per group, keys per tile
 *   TPR, RPT  the two layouts. CPU (TPR = 1): a work-item owns RPT whole rows (RPT = 2 when BR is even): their
 *             D accumulators and BC scores are private, the arithmetic is explicit vectors of VEC floats
 *             (PoCL turns them into AVX; it does not vectorise this code across work-items), each K and V
 *             vector loaded serves the RPT rows, and there is no barrier inside a tile's arithmetic.
 *             GPU (TPR = 8, RPT = 1): a row's keys and columns are interleaved across its TPR work-items
 *             (D / TPR accumulators each, no large private arrays), the row max is reduced through local
 *             memory and P is shared through local memory for O += P V.
 *   VEC       floats per vector (1, 2, 4, 8, 16); BC and D are multiples of TPR * VEC
 *   KT_PAD    padding of the rows of KT, Qs and Ps (1 on GPUs: the rows a warp reads at once, or the transposed
 *             K it writes, fall in different banks; 0 on CPUs)
 *   FA_BLOCK_MASK, FA_DROPOUT  (0 or 1) the block-sparse mask and dropout of kernels/masks.h, which the host
 *             puts before this file. Either adds the arguments after scale_log2; with both 0 the kernel is the
 *             dense one, argument for argument. Block mask: each key tile is classified over the group's rows
 *             (fa_block_tile, the same value in every work-item): skipped tiles load and compute nothing, full
 *             ones run the dense code, partial ones mask score by score like the causal mask. Dropout: P is
 *             multiplied by the keep bit after the row sum l is taken (dropout leaves l and lse alone), and
 *             the final 1/l by 1/(1-p).
 *   FA_INFER  (0 or 1) the inference options of kernels/masks.h (not with the two above): varlen, the band of
 *             causal and sliding window, ALiBi and softcap, their arguments after scale_log2 (FA_INFER_ARGS).
 *             Varlen: the grid's dimension 2 counts sequences, a group reads its sequence's span from cu_q
 *             and cu_k and leaves when its rows start past it; q, o, lse and k, v are then the packed token
 *             axes (batch 0). The key loop runs over the band of the group's rows only (tiles outside it are
 *             never loaded), tiles wholly inside need no per-score test (fa_band_tile), and the modifiers act
 *             on the base-2 scores (softcap2 = softcap log2 e, ALiBi's slopes times log2 e).
 *
 * Local memory, floats: Qs BR*(D+pad) (q pre-scaled by scale*log2 e, so exp2 gives the softmax), KT D*(BC+pad)
 * (K transposed: the scores of VEC consecutive keys are one vector FMA per d), Vs BC*D, and with TPR > 1
 * Ps BR*(BC+pad) and red BR*TPR. fa_tiles_opencl_forward() counts the same.
 *
 * Work per group and key tile: 4*BR*BC*D flops against 2*BC*D elements staged: the intensity grows with BR.
 * docs/PERFORMANCE.md has the measurements behind these choices. */

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#define D HEAD_DIM
#ifndef RPT
#define RPT 1
#endif
#if RPT > 1 && TPR > 1
#error "RPT > 1 only with TPR = 1"
#endif
#if BR % RPT != 0
#error "BR must be a multiple of RPT"
#endif
#define WG (BR * TPR / RPT)
#define KT_LD (BC + KT_PAD)
#define Q_LD (D + KT_PAD)
#define P_LD (BC + KT_PAD)
#define SN (BC / TPR) /* scores per work-item per tile */
#define ON (D / TPR)  /* output columns per work-item */

#if VEC == 1
typedef float floatv;
typedef int intv;
#define IOTA 0
#define VLD(p) (*(p))
#define VST(x, p) (*(p) = (x))
#elif VEC == 2
typedef float2 floatv;
typedef int2 intv;
#define IOTA (int2)(0, 1)
#define VLD(p) vload2(0, p)
#define VST(x, p) vstore2(x, 0, p)
#elif VEC == 4
typedef float4 floatv;
typedef int4 intv;
#define IOTA (int4)(0, 1, 2, 3)
#define VLD(p) vload4(0, p)
#define VST(x, p) vstore4(x, 0, p)
#elif VEC == 8
typedef float8 floatv;
typedef int8 intv;
#define IOTA (int8)(0, 1, 2, 3, 4, 5, 6, 7)
#define VLD(p) vload8(0, p)
#define VST(x, p) vstore8(x, 0, p)
#elif VEC == 16
typedef float16 floatv;
typedef int16 intv;
#define IOTA (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define VLD(p) vload16(0, p)
#define VST(x, p) vstore16(x, 0, p)
#else
#error "VEC must be 1, 2, 4, 8 or 16"
#endif

#if SN % VEC != 0 || ON % VEC != 0
#error "BC / TPR and D / TPR must be multiples of VEC"
#endif
#define SV (SN / VEC) /* score vectors per work-item */
#define OV (ON / VEC) /* output vectors per work-item */

#ifndef FA_BLOCK_MASK
#define FA_BLOCK_MASK 0
#endif
#ifndef FA_DROPOUT
#define FA_DROPOUT 0
#endif
/* A work-item's rows are r0 + u * RSTEP, u < RPT. With dropout in the CPU layout they are i and i + 8 (i % 16
 * < 8), the two rows of one Philox call (masks.h), which then serves four scores instead of two; otherwise
 * neighbours, as in the dense kernel. */
#if FA_DROPOUT && TPR == 1 && RPT == 2 && BR % 16 == 0
#define RSTEP 8
#else
#define RSTEP 1
#endif
#ifndef FA_INFER
#define FA_INFER 0
#endif
#if FA_INFER && (FA_BLOCK_MASK || FA_DROPOUT)
#error "FA_INFER does not combine with FA_BLOCK_MASK or FA_DROPOUT"
#endif
#if FA_INFER
#define FA_INFER_ARGS FA_INFER_CL_PARAMS /* masks.h */
#if VEC == 1
#define CONVERT_FLOATV(x) ((float)(x))
#else
#define CONVERT_FLOATV_(n) convert_float##n
#define CONVERT_FLOATV__(n) CONVERT_FLOATV_(n)
#define CONVERT_FLOATV(x) CONVERT_FLOATV__(VEC)(x)
#endif
#else
#define FA_INFER_ARGS
#endif
#if FA_BLOCK_MASK || FA_DROPOUT
/* The mask (bytes: offset, batch/head strides, 0 where it broadcasts, block row/column strides) and dropout's
 * Philox key, counter offset, threshold and 1/(1-p); unused ones are 0. */
#define FA_MASK_ARGS                                                                                             \
  , __global const uchar *bmask, long bm_off, long bm_sb, long bm_sh, long bm_sr, long bm_sc, int block_q,      \
      int block_k, ulong drop_seed, uint drop_offset, uint drop_threshold, float drop_scale
#else
#define FA_MASK_ARGS
#endif

#if FA_DROPOUT
/* masks.h's Philox-4x32-10 on eight counters at once, one per uint8 lane (mul_hi and the wrapping product
 * are the two halves of its 64-bit products): the same bits, in vectors that PoCL turns into SIMD. */
inline void philox8(uint8 *c0, uint8 *c1, uint8 *c2, uint8 *c3, uint k0, uint k1) {
  for (int r = 0; r < 10; r++) {
    const uint8 hi0 = mul_hi((uint8)(FA_PHILOX_M0), *c0), lo0 = (uint8)(FA_PHILOX_M0) * *c0;
    const uint8 hi1 = mul_hi((uint8)(FA_PHILOX_M1), *c2), lo1 = (uint8)(FA_PHILOX_M1) * *c2;
    *c0 = hi1 ^ *c1 ^ (uint8)(k0);
    *c2 = hi0 ^ *c3 ^ (uint8)(k1);
    *c1 = lo1;
    *c3 = lo0;
    k0 += FA_PHILOX_W0;
    k1 += FA_PHILOX_W1;
  }
}

/* Key 2e of sixteen takes lane e of the even words we, key 2e + 1 lane e of the odd ones wo: zero p's
 * dropped scores, as two 8-wide halves (16-wide vectors would not fit AVX2 registers). */
inline void drop16(float *p, uint8 we, uint8 wo, uint thr) {
  const uint8 lo = shuffle2(we, wo, (uint8)(0, 8, 1, 9, 2, 10, 3, 11)), hi = shuffle2(we, wo, (uint8)(4, 12, 5, 13, 6, 14, 7, 15));
  vstore8(select(vload8(0, p), (float8)(0.0f), lo < (uint8)(thr)), 0, p);
  vstore8(select(vload8(1, p), (float8)(0.0f), hi < (uint8)(thr)), 1, p);
}

/* Zero the dropped ones of the n scores p[0 .. n-1] of row i, keys j0 .. j0+n-1, batch-head bh. Keys come in
 * the pairs (2c, 2c+1) of one Philox call (masks.h): with j0 even and n a multiple of 16, eight pairs run as
 * one vector call, otherwise pair by pair. */
inline void drop_row(float *p, int n, uint i, uint j0, uint bh, ulong seed, uint offset, uint thr) {
  const int hi = (i >> 3) & 1u; /* row i takes words 2 hi (even key) and 2 hi + 1 (odd key) */
  int x = 0;
  if ((j0 & 1u) == 0 && n % 16 == 0) {
    const uint row_ctr = ((i >> 4) << 3) | (i & 7u);
    for (; x < n; x += 16) {
      uint8 c0 = (uint8)((j0 + x) >> 1) + (uint8)(0, 1, 2, 3, 4, 5, 6, 7), c1 = (uint8)(row_ctr);
      uint8 c2 = (uint8)(bh), c3 = (uint8)(offset);
      philox8(&c0, &c1, &c2, &c3, (uint)seed, (uint)(seed >> 32));
      drop16(p + x, hi ? c2 : c0, hi ? c3 : c1, thr);
    }
    return;
  }
  uint w[4];
  for (; x < n; x++) {
    const uint j = j0 + x;
    if (x == 0 || (j & 1u) == 0) fa_dropout_words(seed, offset, bh, i, j, w);
    if (w[fa_dropout_lane(i, j)] < thr) p[x] = 0.0f;
  }
}

/* The same for rows i and i + 8 (i % 16 < 8) at once, p and p8: each vector call serves both. */
inline void drop_rows8(float *p, float *p8, int n, uint i, uint j0, uint bh, ulong seed, uint offset, uint thr) {
  if ((j0 & 1u) != 0 || n % 16 != 0) {
    drop_row(p, n, i, j0, bh, seed, offset, thr);
    drop_row(p8, n, i + 8, j0, bh, seed, offset, thr);
    return;
  }
  const uint row_ctr = ((i >> 4) << 3) | (i & 7u);
  for (int x = 0; x < n; x += 16) {
    uint8 c0 = (uint8)((j0 + x) >> 1) + (uint8)(0, 1, 2, 3, 4, 5, 6, 7), c1 = (uint8)(row_ctr);
    uint8 c2 = (uint8)(bh), c3 = (uint8)(offset);
    philox8(&c0, &c1, &c2, &c3, (uint)seed, (uint)(seed >> 32));
    drop16(p + x, c0, c1, thr);
    drop16(p8 + x, c2, c3, thr);
  }
}
#endif

/* Horizontal max and sum of a floatv. */
#if VEC == 1
#define hmax(x) (x)
#define hsum(x) (x)
#elif VEC == 2
#define hmax(x) fmax((x).s0, (x).s1)
#define hsum(x) ((x).s0 + (x).s1)
#elif VEC == 4
#define hmax(x) fmax(fmax((x).s0, (x).s1), fmax((x).s2, (x).s3))
#define hsum(x) (((x).s0 + (x).s1) + ((x).s2 + (x).s3))
#elif VEC == 8
inline float hmax(float8 x) { float4 y = fmax(x.lo, x.hi); return fmax(fmax(y.s0, y.s1), fmax(y.s2, y.s3)); }
inline float hsum(float8 x) { float4 y = x.lo + x.hi; return (y.s0 + y.s1) + (y.s2 + y.s3); }
#else
inline float hmax(float16 x) { float8 z = fmax(x.lo, x.hi); float4 y = fmax(z.lo, z.hi); return fmax(fmax(y.s0, y.s1), fmax(y.s2, y.s3)); }
inline float hsum(float16 x) { float8 z = x.lo + x.hi; float4 y = z.lo + z.hi; return (y.s0 + y.s1) + (y.s2 + y.s3); }
#endif

/* Register blocking: SB score vectors and OB output vectors stay in registers across the inner loop. */
#if SV % 4 == 0
#define SB 4
#elif SV % 2 == 0
#define SB 2
#else
#define SB 1
#endif
#if OV % 8 == 0 && RPT == 1
#define OB 8
#elif OV % 4 == 0
#define OB 4
#elif OV % 2 == 0
#define OB 2
#else
#define OB 1
#endif

__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void
flash_fwd(__global const fa_t *q, long q_off, long q_sb, long q_ss, long q_sh,
          __global const fa_t *k, long k_off, long k_sb, long k_ss, long k_sh,
          __global const fa_t *v, long v_off, long v_sb, long v_ss, long v_sh,
          __global fa_t *o, long o_off, long o_sb, long o_ss, long o_sh,
          __global float *lse, long l_off, long l_sb, long l_sh, long l_ss, int has_lse,
          int Sq_all, int Sk_all, int group, int causal, float scale_log2 FA_MASK_ARGS FA_INFER_ARGS) {
  __local float Qs[BR * Q_LD];
  __local float KT[D * KT_LD];
  __local float Vs[BC * D];
#if TPR > 1
  __local float Ps[BR * P_LD];
  __local float red[BR * TPR];
#endif

  const int lid = get_local_id(0);
#if RSTEP == 8
  const int r0 = (lid / 8) * 16 + lid % 8, t = lid % TPR; /* rows r0 and r0 + 8 of the block; t = 0 */
#else
  const int r0 = (lid / TPR) * RPT, t = lid % TPR; /* rows r0 .. r0+RPT-1 of the block; lane t of TPR */
#endif
  const int q0 = get_group_id(0) * BR;
  const int h = get_group_id(1), b = get_group_id(2);
  const int hk = h / group;
  /* This group's sequence: its rows q0 .. of rows qfirst .. qfirst + Sq - 1 (tensor batch bt), its keys
   * kfirst .. kfirst + Sk - 1; all of batch b without varlen. */
  int Sq = Sq_all, Sk = Sk_all, qfirst = 0, kfirst = 0, bt = b;
#if FA_INFER
  if (varlen) {
    fa_seq_span(cu_q + cuq_off, cuq_s, b, Sq_all, &qfirst, &Sq);
    fa_seq_span(cu_k + cuk_off, cuk_s, b, Sk_all, &kfirst, &Sk);
    bt = 0;
    if (q0 >= Sq) return; /* the whole group: no barrier is left waiting */
  }
  /* ALiBi's slope of this head in base 2 (0: none). */
  const float slope2 = has_alibi ? alibi[al_off + b * al_sb + h * al_sh] * FA_LOG2E : 0.0f;
#endif
  const long diag = (long)Sk - Sq; /* row i sees keys j <= i + diag */

  const long qb = q_off + bt * q_sb + h * q_sh + (long)qfirst * q_ss;
  const long kb = k_off + bt * k_sb + hk * k_sh + (long)kfirst * k_ss;
  const long vb = v_off + bt * v_sb + hk * v_sh + (long)kfirst * v_ss;
#if FA_BLOCK_MASK
  const __global uchar *mb = bmask + bm_off + b * bm_sb + h * bm_sh; /* this batch and head's block (0, 0) */
  const int q1 = min(q0 + BR, Sq);
#endif
#if FA_DROPOUT
  const uint bh = (uint)b * get_num_groups(1) + h; /* the grid's dimension 1 is Hq */
#endif
#if FA_DROPOUT && !FA_BLOCK_MASK /* the other feature's arguments, unused in this variant */
  (void)bmask, (void)bm_off, (void)bm_sb, (void)bm_sh, (void)bm_sr, (void)bm_sc, (void)block_q, (void)block_k;
#elif FA_BLOCK_MASK && !FA_DROPOUT
  (void)drop_seed, (void)drop_offset, (void)drop_threshold, (void)drop_scale;
#endif

#if TPR == 1
  /* CPU layout: work-items run one after another, so each copies whole rows (sequential reads). */
  for (int rr = lid; rr < BR; rr += WG)
    for (int dd = 0; dd < D; dd += 8) {
      float8 x = q0 + rr < Sq ? fa_load8(q, qb + (long)(q0 + rr) * q_ss + dd) * scale_log2 : (float8)(0.0f);
      vstore8(x, 0, Qs + rr * Q_LD + dd);
    }
#else
  /* GPU layout: neighbouring work-items read neighbouring elements (coalesced). */
  for (int x = lid; x < BR * D; x += WG) {
    int rr = x / D, dd = x - rr * D;
    Qs[rr * Q_LD + dd] = q0 + rr < Sq ? fa_load(q, qb + (long)(q0 + rr) * q_ss + dd) * scale_log2 : 0.0f;
  }
#endif

  float oacc[RPT * ON]; /* row u's columns at oacc[u * ON ..] */
  for (int x = 0; x < RPT * ON; x++) oacc[x] = 0.0f;
  float m[RPT], l[RPT];
  for (int u = 0; u < RPT; u++) m[u] = FA_MAX_INIT, l[u] = 0.0f;

  /* Keys past the last row's diagonal are masked for the whole block: those tiles are never visited. */
  int kbeg = 0, kend = Sk;
#if FA_INFER
  /* The band of the block's rows: tiles before its first key or after its last are never visited. */
  const int qlast = min(q0 + BR, Sq);
  kbeg = fa_band_lo(q0, Sq, Sk, wl) / BC * BC;
  kend = fa_band_hi(qlast - 1, Sq, Sk, causal, wr);
#else
  if (causal) {
    long last = (long)min(q0 + BR, Sq) - 1 + diag + 1;
    kend = (int)clamp(last, 0L, (long)Sk);
  }
#endif

  for (int k0 = kbeg; k0 < kend; k0 += BC) {
#if FA_INFER
    /* Uniform across the group; within [kbeg, kend) no tile is outside the band (consecutive rows' bands
     * touch), so only FULL (no per-score test) and PARTIAL occur. */
    const int tile = fa_band_tile(q0, qlast, k0, k0 + BC, Sq, Sk, causal, wl, wr);
#endif
#if FA_BLOCK_MASK
    /* The same value in every work-item, so skipping (barriers included) is uniform; the next tile's
     * barrier covers what this one's would have (Qs written, the previous tile's readers done). */
    const int tile = fa_block_tile(mb, bm_sr, bm_sc, block_q, block_k, q0, q1, k0, min(k0 + BC, Sk));
    if (tile == FA_TILE_SKIP) continue;
#endif
    barrier(CLK_LOCAL_MEM_FENCE); /* Qs written (first tile) and the previous tile's readers done */
#if TPR == 1
    for (int jj = lid; jj < BC; jj += WG) {
      const int kj = k0 + jj;
      for (int dd = 0; dd < D; dd += 8) {
        float8 kx = (float8)(0.0f), vx = (float8)(0.0f);
        if (kj < Sk) {
          kx = fa_load8(k, kb + (long)kj * k_ss + dd);
          vx = fa_load8(v, vb + (long)kj * v_ss + dd);
        }
        vstore8(vx, 0, Vs + jj * D + dd);
        __local float *kt = KT + dd * KT_LD + jj;
        kt[0] = kx.s0, kt[KT_LD] = kx.s1, kt[2 * KT_LD] = kx.s2, kt[3 * KT_LD] = kx.s3;
        kt[4 * KT_LD] = kx.s4, kt[5 * KT_LD] = kx.s5, kt[6 * KT_LD] = kx.s6, kt[7 * KT_LD] = kx.s7;
      }
    }
#else
    for (int x = lid; x < BC * D; x += WG) {
      int jj = x / D, dd = x - jj * D;
      int kj = k0 + jj;
      float kx = 0.0f, vx = 0.0f;
      if (kj < Sk) {
        kx = fa_load(k, kb + (long)kj * k_ss + dd);
        vx = fa_load(v, vb + (long)kj * v_ss + dd);
      }
      KT[dd * KT_LD + jj] = kx;
      Vs[x] = vx;
    }
#endif
    barrier(CLK_LOCAL_MEM_FENCE);

    /* S = Q K^T for this work-item's rows and keys: score vector c of row u, at s[u * SN + c * VEC], holds
     * keys (c*TPR + t)*VEC .. +VEC-1 of the tile. Each K vector loaded serves RPT rows. */
    float s[RPT * SN];
    for (int c0 = 0; c0 < SV; c0 += SB) {
      floatv acc[RPT][SB];
#pragma unroll
      for (int u = 0; u < RPT; u++)
#pragma unroll
        for (int w = 0; w < SB; w++) acc[u][w] = (floatv)(0.0f);
      const __local float *kt = KT + ((c0 * TPR + t) * VEC);
#pragma unroll 4
      for (int dd = 0; dd < D; dd++) {
        floatv kv[SB];
#pragma unroll
        for (int w = 0; w < SB; w++) kv[w] = VLD(kt + dd * KT_LD + w * TPR * VEC);
#pragma unroll
        for (int u = 0; u < RPT; u++) {
          floatv qd = (floatv)(Qs[(r0 + u * RSTEP) * Q_LD + dd]);
#pragma unroll
          for (int w = 0; w < SB; w++) acc[u][w] = fma(qd, kv[w], acc[u][w]);
        }
      }
#pragma unroll
      for (int u = 0; u < RPT; u++)
#pragma unroll
        for (int w = 0; w < SB; w++) VST(acc[u][w], s + u * SN + (c0 + w) * VEC);
    }

#if FA_INFER
    /* Softcap and ALiBi on every score (masked ones become -inf after), then the band's per-score test. */
    if (softcap2 > 0.0f || slope2 != 0.0f) {
      for (int u = 0; u < RPT; u++) {
        const long p = (long)(q0 + r0 + u * RSTEP) + diag - k0; /* the row's diagonal, relative to k0 */
        for (int c = 0; c < SV; c++) {
          floatv x = VLD(s + u * SN + c * VEC);
          if (softcap2 > 0.0f) x = softcap2 * tanh(x / softcap2);
          const intv key = (intv)((c * TPR + t) * VEC) + IOTA;
          x -= slope2 * fabs((floatv)((float)p) - CONVERT_FLOATV(key));
          VST(x, s + u * SN + c * VEC);
        }
      }
    }
    if (tile != FA_TILE_FULL) {
      for (int u = 0; u < RPT; u++) {
        const int i = q0 + r0 + u * RSTEP;
        const int lo = fa_band_lo(i, Sq, Sk, wl) - k0, hi = fa_band_hi(i, Sq, Sk, causal, wr) - k0;
        for (int c = 0; c < SV; c++) {
          intv key = (intv)((c * TPR + t) * VEC) + IOTA;
          VST(select(VLD(s + u * SN + c * VEC), (floatv)(-INFINITY), (key < (intv)(lo)) | (key >= (intv)(hi))),
              s + u * SN + c * VEC);
        }
      }
    }
#else
    /* Mask keys past Sk and, on tiles that reach past the block's first diagonal, the causal ones. */
    if (k0 + BC > Sk || (causal && k0 + BC - 1 > q0 + diag)) {
      for (int u = 0; u < RPT; u++) {
        /* the last key row u sees, relative to k0, clamped to [-1, BC] so that it fits an int */
        const long last = causal ? min((long)(q0 + r0 + u * RSTEP) + diag, (long)Sk - 1) : (long)Sk - 1;
        const int lim = (int)clamp(last - k0, -1L, (long)BC);
        for (int c = 0; c < SV; c++) {
          intv key = (intv)((c * TPR + t) * VEC) + IOTA;
          VST(select(VLD(s + u * SN + c * VEC), (floatv)(-INFINITY), key > (intv)(lim)), s + u * SN + c * VEC);
        }
      }
    }
#endif
#if FA_BLOCK_MASK
    /* Tiles the mask covers only in part: the scores of fa_block_keep() = 0, found block column by block
     * column (one byte per block, no division per score) rather than score by score. Rows past Sq and keys
     * past Sk have no mask byte; those keys are -inf already. Tile key x sits in lane (x / VEC) % TPR, at
     * s[(x / (VEC * TPR)) * VEC + x % VEC] (x itself when TPR = 1). */
    if (tile == FA_TILE_PARTIAL) {
      const int kmax = min(k0 + BC, Sk);
      for (int u = 0; u < RPT; u++) {
        const int i = q0 + r0 + u * RSTEP;
        if (i >= Sq) break;
        const __global uchar *mrow = mb + (long)(i / block_q) * bm_sr;
        for (int bj = k0 / block_k; bj <= (kmax - 1) / block_k; bj++) {
          if (mrow[bj * bm_sc]) continue;
          const int lo = (int)max((long)bj * block_k, (long)k0) - k0, hi = (int)min((long)(bj + 1) * block_k, (long)kmax) - k0;
          for (int x = lo; x < hi; x++)
            if ((x / VEC) % TPR == t) s[u * SN + (x / (VEC * TPR)) * VEC + x % VEC] = -INFINITY;
        }
      }
    }
#endif

    /* Online softmax per row, on whole vectors (PoCL vectorises exp2 only when it is given vectors):
     * m_new = max(m, rowmax), p = exp2(s - m_new), l = l * alpha + rowsum(p), O *= alpha. */
    float alpha[RPT];
    for (int u = 0; u < RPT; u++) {
      floatv mv = (floatv)(FA_MAX_INIT);
      for (int c = 0; c < SV; c++) mv = fmax(mv, VLD(s + u * SN + c * VEC));
      float mt = hmax(mv);
#if TPR > 1
      red[lid] = mt;
      barrier(CLK_LOCAL_MEM_FENCE);
      for (int w = 0; w < TPR; w++) mt = fmax(mt, red[(r0 + u) * TPR + w]);
#endif
      const float mnew = fmax(m[u], mt);
      alpha[u] = exp2(m[u] - mnew); /* both finite */
      floatv lv = (floatv)(0.0f);
      for (int c = 0; c < SV; c++) {
        floatv p = exp2(VLD(s + u * SN + c * VEC) - mnew);
        VST(p, s + u * SN + c * VEC);
        lv += p;
      }
      l[u] = l[u] * alpha[u] + hsum(lv); /* with TPR > 1 a partial sum over this lane's keys, summed at the end */
      m[u] = mnew;
    }

#if FA_DROPOUT && TPR == 1
    /* P for O += P V loses its dropped scores; l above has them all. */
#if RSTEP == 8
    drop_rows8(s, s + SN, BC, (uint)(q0 + r0), (uint)k0, bh, drop_seed, drop_offset, drop_threshold);
#else
    for (int u = 0; u < RPT; u++) drop_row(s + u * SN, BC, (uint)(q0 + r0 + u), (uint)k0, bh, drop_seed, drop_offset, drop_threshold);
#endif
#endif

#if TPR > 1
    for (int c = 0; c < SV; c++)
      for (int e = 0; e < VEC; e++) Ps[r0 * P_LD + (c * TPR + t) * VEC + e] = s[c * VEC + e];
    barrier(CLK_LOCAL_MEM_FENCE);
#if FA_DROPOUT
    /* A row's keys are spread over its TPR work-items, so dropout works on Ps instead: one Philox call per
     * group of four scores (rows i, i+8 with i % 16 < 8, keys 2c, 2c+1), the groups that meet the tile's
     * rows [q0, q0+BR) and keys [k0, k0+BC) dealt out over the work-group. */
    {
      const int gr0 = q0 / 16, c0p = k0 / 2;
      const int npair = (k0 + BC - 1) / 2 - c0p + 1, ngroup = ((q0 + BR - 1) / 16 - gr0 + 1) * 8 * npair;
      for (int x = lid; x < ngroup; x += WG) {
        const int slot = x / npair, pc = x - slot * npair;
        const int i = (gr0 + slot / 8) * 16 + slot % 8, j = 2 * (c0p + pc);
        if (i + 8 < q0 || i >= q0 + BR) continue;
        uint w[4];
        fa_dropout_words(drop_seed, drop_offset, bh, (uint)i, (uint)j, w);
        for (int e = 0; e < 4; e++) {
          const int row = i + 8 * (e >> 1) - q0, key = j + (e & 1) - k0;
          if (row >= 0 && row < BR && key >= 0 && key < BC && w[e] < drop_threshold) Ps[row * P_LD + key] = 0.0f;
        }
      }
      barrier(CLK_LOCAL_MEM_FENCE);
    }
#endif
#endif

    /* O = diag(alpha) O + P V for this work-item's rows and columns: output vector c holds columns
     * (c*TPR + t)*VEC .. +VEC-1. Each V vector loaded serves RPT rows. */
    for (int c0 = 0; c0 < OV; c0 += OB) {
      floatv acc[RPT][OB];
#pragma unroll
      for (int u = 0; u < RPT; u++)
#pragma unroll
        for (int w = 0; w < OB; w++) acc[u][w] = VLD(oacc + u * ON + (c0 + w) * VEC) * alpha[u];
      const __local float *vs = Vs + ((c0 * TPR + t) * VEC);
      for (int j = 0; j < BC; j++) {
        floatv vv[OB];
#pragma unroll
        for (int w = 0; w < OB; w++) vv[w] = VLD(vs + j * D + w * TPR * VEC);
#pragma unroll
        for (int u = 0; u < RPT; u++) {
#if TPR > 1
          floatv pj = (floatv)(Ps[r0 * P_LD + j]);
#else
          floatv pj = (floatv)(s[u * SN + j]);
#endif
#pragma unroll
          for (int w = 0; w < OB; w++) acc[u][w] = fma(pj, vv[w], acc[u][w]);
        }
      }
#pragma unroll
      for (int u = 0; u < RPT; u++)
#pragma unroll
        for (int w = 0; w < OB; w++) VST(acc[u][w], oacc + u * ON + (c0 + w) * VEC);
    }
  }

#if TPR > 1
  barrier(CLK_LOCAL_MEM_FENCE); /* everyone is done reading red in the last tile */
  red[lid] = l[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  l[0] = 0.0f;
  for (int w = 0; w < TPR; w++) l[0] += red[r0 * TPR + w];
#endif

  for (int u = 0; u < RPT; u++) {
    const int i = q0 + r0 + u * RSTEP;
    if (i >= Sq) break;
    /* l > 0 exactly when some key was visible (its p is 1); otherwise o = 0 and lse = -inf. */
#if FA_DROPOUT
    const float inv = l[u] > 0.0f ? drop_scale / l[u] : 0.0f; /* kept P scaled by 1/(1-p) */
#else
    const float inv = l[u] > 0.0f ? 1.0f / l[u] : 0.0f;
#endif
    const long ob = o_off + bt * o_sb + (long)(qfirst + i) * o_ss + h * o_sh;
    for (int c = 0; c < OV; c++)
      for (int e = 0; e < VEC; e++) fa_store(o, ob + (c * TPR + t) * VEC + e, oacc[u * ON + c * VEC + e] * inv);
    if (has_lse && t == 0)
      lse[l_off + bt * l_sb + h * l_sh + (long)(qfirst + i) * l_ss] = l[u] > 0.0f ? (m[u] + log2(l[u])) * FA_LN2 : -INFINITY;
  }
}
